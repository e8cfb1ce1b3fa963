// Owns the `email` BullMQ queue: its name and job options (retries with exponential backoff,
// finished jobs kept so their ids keep deduplicating), enqueueEmail (the producer: one job per
// event, by the event's job id), and EmailNotifier, which producers on the request path use so
// that a Redis hiccup never fails a request whose money change is already durable.
import { openRedis, redisTarget } from "../redis/connect.ts";
import { type JobsOptions, Queue } from "bullmq";
import type { Logger } from "pino";
import type { Config } from "../config.ts";
import { AppError } from "../errors.ts";
import { EMAIL_QUEUE, redisKeys } from "../redis/keys.ts";
import { type EmailEvent, emailEventShape, emailJobId } from "./events.ts";

/** The queue's name (its Redis keys are "<REDIS_PREFIX>bull:email:..."). */
export { EMAIL_QUEUE };

export function emailJobOptions(config: Config): JobsOptions {
  const keep = { age: config.EMAIL_KEEP_JOBS_S, count: config.EMAIL_KEEP_JOBS };
  return {
    attempts: config.EMAIL_ATTEMPTS,
    backoff: { type: "exponential", delay: config.EMAIL_BACKOFF_MS },
    // A finished job's id is what refuses a second job for the same event: keep it (bounded).
    removeOnComplete: keep,
    removeOnFail: keep,
  };
}

export interface EmailQueueHandle {
  queue: Queue;
  close(): Promise<void>;
}

/** The email queue over its own Redis connection (REDIS_URL, REDIS_PREFIX). */
export function createEmailQueue(config: Config, logger?: Logger): EmailQueueHandle {
  const connection = openRedis(redisTarget(config), { maxRetriesPerRequest: 2, lazyConnect: false });
  connection.on("error", () => {}); // reported by the calls that fail
  const queue = new Queue(EMAIL_QUEUE, {
    connection,
    prefix: redisKeys(config.REDIS_PREFIX).bullPrefix,
    defaultJobOptions: emailJobOptions(config),
  });
  // An 'error' event without a listener would end the process; the failed add() is what reports.
  queue.on("error", (err) => logger?.warn({ err: err.message }, "email queue: Redis error"));
  return {
    queue,
    async close() {
      await queue.close();
      connection.disconnect();
    },
  };
}

/**
 * Enqueues the email of one event, once: a second call for the same event (same job id) adds
 * nothing while the first job is kept (EMAIL_KEEP_JOBS_S). Call it only once the change the
 * email tells of is durable.
 */
export async function enqueueEmail(queue: Queue, event: EmailEvent): Promise<string> {
  const e = emailEventShape.parse(event);
  const jobId = emailJobId(e);
  await queue.add(e.kind, e, { jobId });
  return jobId;
}

/** The producer request handlers use. */
export class EmailNotifier {
  constructor(
    private readonly queue: Queue,
    private readonly logger: Logger,
  ) {}

  /**
   * Enqueues before the caller answers; a failure is 503 unavailable, so the caller's retry
   * (a webhook redelivery, a purchase retried with its key: both replay the durable deposit)
   * enqueues again, under the same job id.
   */
  async notify(event: EmailEvent): Promise<void> {
    try {
      await enqueueEmail(this.queue, event);
    } catch (err) {
      this.logger.error({ err, kind: event.kind, job_id: emailJobId(event) }, "email could not be enqueued");
      throw new AppError("unavailable", "the email queue is unavailable; retry with the same key");
    }
  }

  /** For effects that cannot be retried by the caller (a registration is not replayed): logged, never thrown. */
  notifyLater(event: EmailEvent): void {
    this.notify(event).catch(() => {});
  }
}
