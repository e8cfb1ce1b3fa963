// Owns finding payouts that stopped moving: a payout `pending` with no live job (the enqueue after
// its reserve failed, or the queue's Redis lost its data) is queued again; one `processing` whose
// transfer the provider knows is asked for its status, and what the provider says is published
// (a webhook that never came). Safe to run anywhere and often: the provider's idempotency key and
// the ledger's forward-only states make a repeat harmless.
import type { RedisClient } from "../redis/connect.ts";
import type pg from "pg";
import type { Logger } from "pino";
import type { PayoutRecord } from "../ledger/types.ts";
import { type PayoutRow, payoutFromRow } from "../persist/account-store.ts";
import { outcomesOf, publishPayoutOutcome } from "../payouts/outcomes.ts";
import type { BullPayoutJobs } from "../payouts/payout-queue.ts";
import { type PayoutProvider, PayoutProviderError, type PayoutProviderName } from "../payouts/provider.ts";

export interface PayoutSweeperOptions {
  pool: pg.Pool;
  jobs: BullPayoutJobs;
  providers: Partial<Record<PayoutProviderName, PayoutProvider>>;
  outcomes: RedisClient;
  prefix: string;
  logger: Logger;
  /** A payout is looked at once it has not moved for this long. */
  staleMs: number;
  /** Most payouts looked at per sweep. */
  batch: number;
}

export interface SweepReport {
  requeued: number;
  checked: number;
  /** Pending payouts whose attempts ran out unconfirmed, settled by asking the provider. */
  confirmed: number;
}

export class PayoutSweeper {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<unknown> = Promise.resolve();

  constructor(private readonly o: PayoutSweeperOptions) {}

  start(everyMs: number): void {
    this.timer = setInterval(() => {
      this.running = this.sweepOnce().catch((err) => this.o.logger.error({ err }, "payout sweep failed"));
    }, everyMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.running;
  }

  async sweepOnce(): Promise<SweepReport> {
    const r = await this.o.pool.query<PayoutRow>(
      `SELECT id, user_id, amount_cents, provider, provider_recipient_id, provider_transfer_id, status,
              failure_reason, attempts, round, seq, return_transaction_id, created_at, updated_at, paid_at
         FROM payouts
        WHERE status IN ('pending', 'processing') AND updated_at < now() - make_interval(secs => $1)
        ORDER BY updated_at LIMIT $2`,
      [this.o.staleMs / 1000, this.o.batch],
    );
    const report: SweepReport = { requeued: 0, checked: 0, confirmed: 0 };
    for (const row of r.rows) {
      const p = payoutFromRow(row);
      try {
        if (p.status === "processing" && p.providerTransferId) {
          if (await this.check(p)) report.checked++;
        } else {
          const r = await this.requeue(p);
          if (r === "requeued") report.requeued++;
          if (r === "confirmed") report.confirmed++;
        }
      } catch (err) {
        this.o.logger.warn({ err, payout_id: p.id }, "sweeping a payout failed; next sweep tries again");
      }
    }
    return report;
  }

  /**
   * Queues a payout again unless a job for its round is waiting, delayed or running. A job whose
   * attempts ran out while the provider could not say whether it made the transfer is settled by
   * asking the provider instead (confirm).
   */
  private async requeue(p: PayoutRecord): Promise<"requeued" | "confirmed" | "none"> {
    const job = await this.o.jobs.queue.getJob(p.id);
    if (job && job.data.round >= p.round) {
      const state = await job.getState();
      if (state !== "completed" && state !== "failed" && state !== "unknown") return "none";
      if (state === "failed" && job.data.unconfirmed) return (await this.confirm(p)) ? "confirmed" : "none";
      // The job ended but the payout did not move: its outcome was lost. Run it again (the
      // provider's idempotency key finds the transfer it made, if any).
      await job.remove();
    }
    await this.o.jobs.enqueue(p);
    this.o.logger.warn({ payout_id: p.id, status: p.status }, "payout without a live job queued again");
    return "requeued";
  }

  /**
   * A pending payout whose attempts ran out unconfirmed: the provider's transfer for it, if any,
   * decides (its status is published); only a provider confirming it has none fails the payout.
   * False (asked again next sweep) while the provider cannot tell.
   */
  private async confirm(p: PayoutRecord): Promise<boolean> {
    const provider = p.provider ? this.o.providers[p.provider as PayoutProviderName] : undefined;
    if (!provider || !p.providerRecipientId) return false;
    let found: Awaited<ReturnType<PayoutProvider["findTransfer"]>>;
    try {
      found = await provider.findTransfer(
        {
          payoutId: p.id,
          providerRecipientId: p.providerRecipientId,
          amountCents: p.amountCents,
          currency: "USD",
        },
        new Date(p.createdAt),
      );
    } catch (err) {
      this.o.logger.warn(
        { err: err instanceof PayoutProviderError ? err.message : err, payout_id: p.id },
        "the provider still cannot say whether it made the payout's transfer; asking again next sweep",
      );
      return false;
    }
    const failed = `retries exhausted; ${provider.name} has no transfer for the payout`;
    const outcomes = found ? outcomesOf(found, false) : [{ state: "failed" as const, failureReason: failed }];
    for (const o of outcomes) {
      await publishPayoutOutcome(this.o.outcomes, this.o.prefix, {
        payoutId: p.id,
        userId: p.userId,
        round: p.round,
        ...(found ? { providerTransferId: found.providerTransferId } : {}),
        ...o,
      });
    }
    this.o.logger.warn(
      { payout_id: p.id, state: found?.state ?? "none" },
      "payout whose attempts ran out unconfirmed settled by asking the provider",
    );
    return true;
  }

  /** Asks the provider how a processing transfer stands and publishes what it says. */
  private async check(p: PayoutRecord): Promise<boolean> {
    const provider = p.provider ? this.o.providers[p.provider as PayoutProviderName] : undefined;
    if (!provider || !p.providerTransferId) return false;
    let status: Awaited<ReturnType<PayoutProvider["getTransfer"]>>;
    try {
      status = await provider.getTransfer(p.providerTransferId);
    } catch (err) {
      if (err instanceof PayoutProviderError) return false;
      throw err;
    }
    if (status.state === "processing") return false;
    for (const o of outcomesOf(status, false)) {
      await publishPayoutOutcome(this.o.outcomes, this.o.prefix, {
        payoutId: p.id,
        userId: p.userId,
        round: p.round,
        providerTransferId: status.providerTransferId,
        ...o,
      });
    }
    return true;
  }
}
