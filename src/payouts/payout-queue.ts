// Owns handing a reserved payout to the payout worker: a BullMQ job on queue `payouts` whose id
// is the payout id (so a repeated enqueue of one round is one job), carrying what the worker needs
// to call the provider. Enqueued only after the reserve is durable in the ledger's WAL.
import { openRedis, type RedisClient, type RedisTarget, redisTarget } from "../redis/connect.ts";
import { Queue } from "bullmq";
import type { Logger } from "pino";
import type { Config } from "../config.ts";
import { AppError } from "../errors.ts";
import type { PayoutRecord } from "../ledger/types.ts";
import { PAYOUT_QUEUE, redisKeys } from "../redis/keys.ts";

/** A payout job's data. `round` tells an admin retry's job from the failed one before it. */
export interface PayoutJobData {
  payoutId: string;
  userId: string;
  round: number;
  amountCents: number;
  currency: "USD";
  provider: string | null;
  providerRecipientId: string | null;
  /** When the payout was made (ISO): a lost transfer is looked for from then (an admin retry's
   * job is newer than the transfer an earlier round may have made). */
  createdAt?: string;
  /** Set by the worker once the provider accepted the transfer (a later attempt then never
   * declares the payout failed on its own). */
  providerTransferId?: string;
  /** Set by the worker when the attempts ran out and the provider could not say whether it made
   * a transfer: the payout stays pending and the sweeper asks the provider again. */
  unconfirmed?: boolean;
}

export interface PayoutJobs {
  /** Queues the payout's current round (again: no effect while that round's job exists). */
  enqueue(p: PayoutRecord): Promise<void>;
  close(): Promise<void>;
}

export interface PayoutQueueOptions {
  /** Told of the queue's Redis connection errors (an 'error' nobody listens to ends the process). */
  onError?: (err: Error) => void;
  redis: RedisTarget;
  prefix: string;
  attempts: number;
  backoffMs: number;
  keep: number;
}

export const payoutJobData = (p: PayoutRecord): PayoutJobData => ({
  payoutId: p.id,
  userId: p.userId,
  round: p.round,
  amountCents: p.amountCents,
  currency: "USD",
  provider: p.provider,
  providerRecipientId: p.providerRecipientId,
  createdAt: p.createdAt,
});

export class BullPayoutJobs implements PayoutJobs {
  readonly queue: Queue<PayoutJobData>;
  private readonly connection: RedisClient;

  constructor(o: PayoutQueueOptions) {
    // A request waiting on the queue's Redis fails fast rather than hanging the answer.
    this.connection = openRedis(o.redis, { maxRetriesPerRequest: 1 });
    this.connection.on("error", () => {}); // reported by the queue's own error event below
    this.queue = new Queue<PayoutJobData>(PAYOUT_QUEUE, {
      connection: this.connection,
      prefix: redisKeys(o.prefix).bullPrefix,
      defaultJobOptions: {
        attempts: o.attempts,
        backoff: { type: "exponential", delay: o.backoffMs },
        removeOnComplete: { count: o.keep },
        removeOnFail: { count: o.keep },
      },
    });
    this.queue.on("error", (err) => o.onError?.(err));
  }

  async enqueue(p: PayoutRecord): Promise<void> {
    const existing = await this.queue.getJob(p.id);
    if (existing) {
      if (existing.data.round >= p.round) return; // this round is queued, running or done
      // An earlier round's job (failed, or finished) holds the id: a retry replaces it.
      const state = await existing.getState();
      if (state !== "failed" && state !== "completed") {
        throw new AppError("unavailable", "the payout's previous attempt is still finishing; retry shortly");
      }
      await existing.remove();
    }
    await this.queue.add("payout", payoutJobData(p), { jobId: p.id });
  }

  async close(): Promise<void> {
    await this.queue.close();
    this.connection.disconnect();
  }
}

/** The `payouts` queue as configured (the API enqueues to it; the worker process sweeps it). */
export function payoutJobsFromConfig(config: Config, logger: Logger): BullPayoutJobs {
  return new BullPayoutJobs({
    onError: (err) => logger.warn({ err: err.message }, "payout queue Redis error"),
    redis: redisTarget(config),
    prefix: config.REDIS_PREFIX,
    attempts: config.PAYOUT_JOB_ATTEMPTS,
    backoffMs: config.PAYOUT_JOB_BACKOFF_MS,
    keep: config.PAYOUT_JOBS_KEPT,
  });
}
