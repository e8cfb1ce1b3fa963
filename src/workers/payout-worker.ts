// Owns the payout worker: a BullMQ Worker on queue `payouts` that sends each reserved payout to
// its provider and reports what the provider says through the outcome channel
// (publishPayoutOutcome; the ledger-owning process applies it). The provider call carries the
// payout id as its idempotency key, so a job that runs twice (BullMQ is at-least-once: a stalled
// job is run again) moves money once. A provider's 4xx is final (UnrecoverableError: the payout
// fails and its reserve is released); 5xx, timeouts and network errors are retried with
// exponential backoff until the job's attempts run out; then the payout fails only once the
// provider confirms it made no transfer for the payout id (findTransfer): an answer lost after the
// provider made the transfer must not release the reserve while the money still goes out. When the
// provider cannot tell, the job ends `unconfirmed` and the sweeper keeps asking.
import { openRedis, type RedisClient, type RedisTarget } from "../redis/connect.ts";
import { type Job, UnrecoverableError, Worker } from "bullmq";
import type { Logger } from "pino";
import { outcomesOf, type PayoutOutcome, publishPayoutOutcome } from "../payouts/outcomes.ts";
import type { PayoutJobData } from "../payouts/payout-queue.ts";
import {
  type PayoutProvider,
  PayoutProviderError,
  type PayoutProviderName,
  type TransferRequest,
  type TransferStatus,
} from "../payouts/provider.ts";
import { PAYOUT_QUEUE, redisKeys } from "../redis/keys.ts";

export interface PayoutWorkerOptions {
  /** BullMQ's Redis (the queue's). */
  redis: RedisTarget;
  /** The outcome channel's Redis (the ledger's; REDIS_URL). */
  outcomes: RedisClient;
  prefix: string;
  providers: Partial<Record<PayoutProviderName, PayoutProvider>>;
  logger: Logger;
  concurrency: number;
  /** While a transfer is processing, ask the provider this often, for at most statusWaitMs. */
  statusPollMs: number;
  statusWaitMs: number;
  /** The job lock (ms): a job whose worker died is taken again this long after. */
  lockMs?: number;
  /** Test-only (PAYOUT_TEST_PAUSE_AFTER_SEND): awaited right after the provider accepted a transfer. */
  pauseAfterSend?: (payoutId: string) => Promise<void>;
  /** Told of every failed provider call (metrics). */
  onProviderError?: (provider: string, code: string) => void;
}

export interface PayoutJobResult {
  state: TransferStatus["state"];
  providerTransferId: string;
}

/** PAYOUT_TEST_PAUSE_AFTER_SEND: says where it stopped, then never goes on (the test kills the process). */
export const pauseForTests = (payoutId: string): Promise<void> => {
  process.stdout.write(`PAUSED_AFTER_SEND ${payoutId}\n`);
  return new Promise<void>(() => {});
};

export class PayoutWorker {
  readonly worker: Worker<PayoutJobData, PayoutJobResult>;
  private readonly connection: RedisClient;

  constructor(private readonly o: PayoutWorkerOptions) {
    this.connection = openRedis(o.redis, { maxRetriesPerRequest: null });
    this.connection.on("error", () => {}); // reported by the worker's own error event below
    this.worker = new Worker<PayoutJobData, PayoutJobResult>(PAYOUT_QUEUE, (job) => this.process(job), {
      connection: this.connection,
      prefix: redisKeys(o.prefix).bullPrefix,
      concurrency: o.concurrency,
      ...(o.lockMs ? { lockDuration: o.lockMs, stalledInterval: o.lockMs } : {}),
    });
    this.worker.on("error", (err) => o.logger.error({ err }, "payout worker error"));
  }

  /** Stops taking jobs and waits for the active ones to finish (graceful shutdown). */
  async close(): Promise<void> {
    await this.worker.close();
    this.connection.disconnect();
  }

  private publish(
    d: PayoutJobData,
    o: Omit<PayoutOutcome, "payoutId" | "userId" | "round">,
  ): Promise<string> {
    return publishPayoutOutcome(this.o.outcomes, this.o.prefix, {
      payoutId: d.payoutId,
      userId: d.userId,
      round: d.round,
      ...o,
    });
  }

  async process(job: Job<PayoutJobData, PayoutJobResult>): Promise<PayoutJobResult> {
    const d = job.data;
    const attempt = job.attemptsMade + 1;
    const last = attempt >= (job.opts.attempts ?? 1);
    const log = this.o.logger.child({ payout_id: d.payoutId, attempt, round: d.round });
    const provider = d.provider ? this.o.providers[d.provider as PayoutProviderName] : undefined;
    if (!provider || !d.providerRecipientId) {
      await this.publish(d, {
        state: "failed",
        failureReason: "no payout provider for this payout",
        attempts: attempt,
      });
      throw new UnrecoverableError(`no provider ${d.provider ?? "(none)"} for payout ${d.payoutId}`);
    }
    const req = {
      payoutId: d.payoutId,
      providerRecipientId: d.providerRecipientId,
      amountCents: d.amountCents,
      currency: "USD" as const,
    };
    let status: TransferStatus;
    try {
      status = await provider.sendTransfer(req);
    } catch (err) {
      const pe = err instanceof PayoutProviderError ? err : null;
      this.o.onProviderError?.(d.provider ?? "none", pe?.code ?? "error");
      log.error(
        { err: pe ? pe.message : err, code: pe?.code, status: pe?.httpStatus, request_id: pe?.requestId },
        "payout transfer failed at the provider",
      );
      if (pe && !pe.retryable) {
        await this.publish(d, {
          state: "failed",
          failureReason: `${pe.code}: refused by ${pe.provider}`,
          attempts: attempt,
        });
        throw new UnrecoverableError(pe.message);
      }
      if (!last) throw err;
      // The last attempt's answer is lost too, but the provider may have made the transfer on any
      // attempt: never declare the payout failed before the provider confirms it has none.
      const found = await this.lookUp(job, provider, req, log);
      if (found === undefined) throw err; // cannot tell: the sweeper asks again
      if (found === null) {
        await this.publish(d, {
          state: "failed",
          failureReason: `retries exhausted (${pe?.code ?? "error"}); ${provider.name} has no transfer for the payout`,
          attempts: attempt,
        });
        throw err;
      }
      status = found;
    }
    await this.o.pauseAfterSend?.(d.payoutId);
    if (d.providerTransferId !== status.providerTransferId) {
      await job.updateData({ ...d, providerTransferId: status.providerTransferId });
    }
    let paid = await this.report(d, status, attempt, false);
    // The provider pays asynchronously: follow the transfer for a while (a webhook or the next
    // status check finishes the rest).
    const deadline = Date.now() + this.o.statusWaitMs;
    while (status.state === "processing" && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, this.o.statusPollMs));
      try {
        status = await provider.getTransfer(status.providerTransferId);
      } catch (err) {
        if (err instanceof PayoutProviderError && err.retryable) continue;
        throw err;
      }
      if (status.state !== "processing") paid = await this.report(d, status, attempt, paid);
    }
    return { state: status.state, providerTransferId: status.providerTransferId };
  }

  /**
   * Asks the provider for the transfer made for this payout: its status, null when the provider
   * confirms none exists, undefined when it cannot tell (the job is then marked `unconfirmed`,
   * so the sweeper asks again rather than declaring anything).
   */
  private async lookUp(
    job: Job<PayoutJobData, PayoutJobResult>,
    provider: PayoutProvider,
    req: TransferRequest,
    log: Logger,
  ): Promise<TransferStatus | null | undefined> {
    try {
      const since = job.data.createdAt ? Date.parse(job.data.createdAt) : Number.NaN;
      return await provider.findTransfer(req, new Date(Number.isFinite(since) ? since : job.timestamp));
    } catch (err) {
      const pe = err instanceof PayoutProviderError ? err : null;
      this.o.onProviderError?.(provider.name, pe?.code ?? "error");
      log.error(
        { err: pe ? pe.message : err, code: pe?.code, status: pe?.httpStatus },
        "payout retries exhausted and the provider cannot say whether a transfer exists; left to the sweeper",
      );
      await job.updateData({ ...job.data, unconfirmed: true });
      return undefined;
    }
  }

  /** Publishes what a transfer's status means for the payout; returns whether it is known paid. */
  private async report(
    d: PayoutJobData,
    s: TransferStatus,
    attempt: number,
    paid: boolean,
  ): Promise<boolean> {
    let known = paid;
    for (const o of outcomesOf(s, paid)) {
      await this.publish(d, { ...o, providerTransferId: s.providerTransferId, attempts: attempt });
      if (o.state === "paid" || o.state === "returned") known = true;
    }
    return known;
  }
}
