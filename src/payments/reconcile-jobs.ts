// Owns reconcile as a BullMQ job (queue `reconcile`): an admin's request enqueues one and gets its
// id at once (202), GET /api/payments/reconcile/:id answers its state and report; a job scheduler
// runs one every RECONCILE_EVERY. The worker runs in the process that owns the ledger (npm start),
// never in `npm run worker`: reconcile drains the WAL and fixes missing deposits through the
// ledger, which only that process holds. Nothing long runs inside an HTTP request.
import { openRedis, type RedisClient, type RedisTarget } from "../redis/connect.ts";
import { randomUUID } from "node:crypto";
import { Queue, Worker } from "bullmq";
import type { Logger } from "pino";
import { RECONCILE_QUEUE, redisKeys } from "../redis/keys.ts";
import type { MoneyIn } from "./money-in.ts";

export interface ReconcileRequest {
  /** ISO times; absent: the configured window ending when the job runs. */
  from?: string;
  to?: string;
  fix: boolean;
  requestedBy?: string;
}

type Report = Awaited<ReturnType<MoneyIn["reconcile"]>>;

/** A report's discrepancies, counted by kind (the metrics' and log events' view of it). */
export function reconcileFindings(r: Report): Record<string, number> {
  return {
    missing_deposits: r.missing_deposits.length - r.fixed.length,
    amount_mismatches: r.amount_mismatches.length,
    unknown_to_stripe: r.unknown_to_stripe.length,
    missing_refunds: r.missing_refunds.length,
    ledger_invariants: r.ledger_invariants.ok ? 0 : 1,
  };
}

export interface ReconcileJobsOptions {
  redis: RedisTarget;
  prefix: string;
  keep: number;
  logger: Logger;
}

export class ReconcileJobs {
  readonly queue: Queue;
  private readonly connection: RedisClient;
  private worker: Worker | null = null;
  private workerConnection: RedisClient | null = null;

  constructor(private readonly o: ReconcileJobsOptions) {
    this.connection = openRedis(o.redis, { maxRetriesPerRequest: 2 });
    this.connection.on("error", () => {}); // reported by the calls that fail
    this.queue = new Queue(RECONCILE_QUEUE, {
      connection: this.connection,
      prefix: redisKeys(o.prefix).bullPrefix,
      defaultJobOptions: {
        attempts: 1,
        removeOnComplete: { count: o.keep },
        removeOnFail: { count: o.keep },
      },
    });
    this.queue.on("error", (err) => o.logger.warn({ err: err.message }, "reconcile queue Redis error"));
  }

  /** Enqueues a run; resolves to its job id. */
  async enqueue(req: ReconcileRequest): Promise<string> {
    const job = await this.queue.add("reconcile", req, { jobId: randomUUID() });
    return job.id!;
  }

  /** A job's state (waiting, active, completed, failed, ...) and, once done, its report or error. */
  async status(id: string) {
    // The state first: a job read before it and finished in between would say completed with no report.
    const state = await this.queue.getJobState(id);
    const job = await this.queue.getJob(id);
    if (!job || state === "unknown") return null;
    return {
      id,
      status: state,
      requested_by: (job.data as ReconcileRequest).requestedBy ?? null,
      scheduled: job.repeatJobKey !== undefined && job.repeatJobKey !== null,
      created_at: new Date(job.timestamp).toISOString(),
      finished_at: job.finishedOn ? new Date(job.finishedOn).toISOString() : null,
      report: state === "completed" ? (job.returnvalue as Report) : null,
      error: state === "failed" ? job.failedReason : null,
    };
  }

  /** Runs one every `everyMs` (0: removes the schedule); the first after `everyMs`, not at start. */
  async schedule(everyMs: number): Promise<void> {
    if (everyMs <= 0) {
      await this.queue.removeJobScheduler("reconcile-every");
      return;
    }
    await this.queue.upsertJobScheduler(
      "reconcile-every",
      { every: everyMs, startDate: Date.now() + everyMs },
      { name: "reconcile", data: { fix: false } satisfies ReconcileRequest },
    );
  }

  /** The worker: one job at a time; a finished run reports to `done` (metrics, log events). */
  startWorker(d: {
    moneyIn: MoneyIn;
    windowMs: number;
    done(jobId: string, report: Report | null, err: Error | null): void;
  }): void {
    const connection = openRedis(this.o.redis, { maxRetriesPerRequest: null });
    connection.on("error", () => {});
    this.workerConnection = connection;
    this.worker = new Worker(
      RECONCILE_QUEUE,
      async (job) => {
        const r = job.data as ReconcileRequest;
        const to = r.to ? new Date(r.to) : new Date();
        const from = r.from ? new Date(r.from) : new Date(to.getTime() - d.windowMs);
        return d.moneyIn.reconcile({
          from,
          to,
          fix: r.fix,
          ...(r.requestedBy ? { requestedBy: r.requestedBy } : {}),
        });
      },
      { connection, prefix: redisKeys(this.o.prefix).bullPrefix, concurrency: 1 },
    );
    this.worker.on("completed", (job, report: Report) => d.done(job.id!, report, null));
    this.worker.on("failed", (job, err) => d.done(job?.id ?? "unknown", null, err));
    this.worker.on("error", (err) =>
      this.o.logger.warn({ err: err.message }, "reconcile worker Redis error"),
    );
  }

  async close(): Promise<void> {
    await this.worker?.close();
    this.workerConnection?.disconnect();
    await this.queue.close().catch(() => {});
    this.connection.disconnect();
  }
}
