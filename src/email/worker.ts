// Owns sending the email jobs: createEmailWorker is what the worker process hosts (and tests run
// in-process). Each job names an event and a user; the worker reads the user's address and
// display name, renders the templates and sends through the Mailer. An SMTP server that is down
// or answers 4xx is retried with the job's backoff; a 5xx is permanent (UnrecoverableError: the
// job goes to failed at once, visible in the queue's failed set and job counts).
import { openRedis, redisTarget } from "../redis/connect.ts";
import { UnrecoverableError, Worker } from "bullmq";
import type pg from "pg";
import type { Logger } from "pino";
import type { Config } from "../config.ts";
import { redisKeys } from "../redis/keys.ts";
import { emailEventShape, emailJobId } from "./events.ts";
import { createMailer, isPermanentSmtpError, type Mailer } from "./mailer.ts";
import { EMAIL_QUEUE } from "./queue.ts";
import { type Recipient, renderEmail } from "./templates.ts";

export interface EmailWorkerOptions {
  config: Config;
  logger: Logger;
  /** Reads users' email and display_name. */
  pool: pg.Pool;
  /** Default: createMailer(config) (SMTP_URL, or the local catcher). */
  mailer?: Mailer;
  /** Jobs sent at once (default 4). */
  concurrency?: number;
}

export interface EmailWorker {
  readonly worker: Worker;
  readonly mailer: Mailer;
  close(): Promise<void>;
}

async function recipientOf(pool: pg.Pool, userId: string): Promise<Recipient | null> {
  const r = await pool.query<{ email: string; display_name: string }>(
    "SELECT email, display_name FROM users WHERE id = $1",
    [userId],
  );
  const row = r.rows[0];
  return row ? { email: row.email, displayName: row.display_name } : null;
}

export function createEmailWorker(o: EmailWorkerOptions): EmailWorker {
  const { config, logger, pool } = o;
  const mailer = o.mailer ?? createMailer(config, logger);
  // BullMQ's blocking reads need a connection that retries forever.
  const connection = openRedis(redisTarget(config), { maxRetriesPerRequest: null });
  connection.on("error", () => {});
  const worker = new Worker(
    EMAIL_QUEUE,
    async (job) => {
      const parsed = emailEventShape.safeParse(job.data);
      if (!parsed.success) throw new UnrecoverableError(`not an email event: ${parsed.error.message}`);
      const event = parsed.data;
      const to = await recipientOf(pool, event.userId);
      if (!to) throw new UnrecoverableError(`user ${event.userId} not found`);
      const rendered = renderEmail(event, to);
      const domain = /@([^>\s]+)>?\s*$/.exec(config.EMAIL_FROM)?.[1] ?? "3am.local";
      try {
        const info = await mailer.send({
          from: config.EMAIL_FROM,
          to: { name: to.displayName, address: to.email },
          ...rendered,
          messageId: `<${emailJobId(event)}@${domain}>`,
        });
        return { messageId: info.messageId };
      } catch (err) {
        const e = err as { responseCode?: number; code?: string; message?: string };
        if (isPermanentSmtpError(err)) {
          throw new UnrecoverableError(
            `SMTP refused permanently: ${e.responseCode} ${e.message ?? ""}`.trim(),
          );
        }
        throw err;
      }
    },
    {
      connection,
      prefix: redisKeys(config.REDIS_PREFIX).bullPrefix,
      concurrency: o.concurrency ?? 4,
    },
  );
  worker.on("failed", (job, err) => {
    if (!job) return;
    const final = err instanceof UnrecoverableError || job.attemptsMade >= (job.opts.attempts ?? 1);
    logger[final ? "error" : "warn"](
      { job_id: job.id, kind: job.name, attempt: job.attemptsMade, err: err.message },
      final ? "email failed for good" : "email not sent yet; retrying with backoff",
    );
  });
  worker.on("error", (err) => logger.warn({ err }, "email worker error"));
  return {
    worker,
    mailer,
    async close() {
      await worker.close();
      await mailer.close();
      connection.disconnect();
    },
  };
}
