// Owns the durable channel that carries what happened to a payout at the provider back to the
// ledger: a Redis stream (key payoutOutcomes in src/redis/keys.ts) that the payout worker appends
// to and the ledger-owning process consumes.
//
// Contract of publishPayoutOutcome (the payout worker calls it):
// - Publish every state you learn for a payout: `processing` (the provider accepted the transfer),
//   `paid`, `failed` (refused, or retries exhausted: the reserve is released), `returned` (paid,
//   then sent back). Carry the job's `round` (job data) so a late outcome of an earlier round, after
//   an admin retry, changes nothing.
// - It resolves once Redis has the outcome (XADD confirmed; the WAL's Redis runs with AOF), with
//   the stream entry id. If it throws, nothing is known to be published: publish again (let the job
//   fail and retry). Publishing twice, or out of order, is harmless: the ledger applies each state
//   once and only forward (pending -> processing -> paid | failed; paid -> returned).
// - Only what the provider's API confirmed: a webhook is a hint, confirm it with getTransfer first.
//
// The consumer (PayoutOutcomeConsumer) submits each outcome to the ledger as a payout_outcome
// command and acknowledges (XACK, then XDEL) only once the ledger's change is durable in its WAL;
// an outcome read but not acknowledged (a crash, the ledger unavailable) is read again, from the
// consumer group's pending list, by the next owner.
import { duplicateRedis, type RedisClient } from "../redis/connect.ts";
import type { Logger } from "pino";
import { z } from "zod";
import { isAppError } from "../errors.ts";
import { PAYOUT_OUTCOME_GROUP, redisKeys } from "../redis/keys.ts";
import type { PayoutResult } from "../ledger/types.ts";
import type { Ledger } from "../shards/ledger.ts";
import type { TransferStatus } from "./provider.ts";

export const PAYOUT_OUTCOME_STATES = ["processing", "paid", "failed", "returned"] as const;

export interface PayoutOutcome {
  payoutId: string;
  userId: string;
  round: number;
  state: (typeof PAYOUT_OUTCOME_STATES)[number];
  providerTransferId?: string;
  failureReason?: string;
  attempts?: number;
}

const outcomeSchema = z.strictObject({
  payoutId: z.uuid(),
  userId: z.uuid(),
  round: z.number().int().min(1),
  state: z.enum(PAYOUT_OUTCOME_STATES),
  providerTransferId: z.string().min(1).max(200).optional(),
  failureReason: z.string().max(500).optional(),
  attempts: z.number().int().min(0).max(1000).optional(),
});

const FIELD = "o";

/** Appends an outcome to the channel; resolves once Redis confirmed it (see the contract above). */
export async function publishPayoutOutcome(
  redis: RedisClient,
  prefix: string,
  outcome: PayoutOutcome,
): Promise<string> {
  const o = outcomeSchema.parse(outcome);
  const id = await redis.xadd(redisKeys(prefix).payoutOutcomes, "*", FIELD, JSON.stringify(o));
  if (!id) throw new Error("Redis did not confirm the payout outcome");
  return id;
}

/**
 * What a transfer's status, as the provider's API reports it, means for the payout, in the order
 * to publish: processing first (it was sent), then the final state. A provider's status does not
 * always carry its history (Wise `funds_refunded` follows a bounce or a cancellation): `failed`
 * for a payout already known paid is a return; a return not yet known paid is published as paid
 * then returned (the ledger nets it either way).
 */
export function outcomesOf(
  s: TransferStatus,
  knownPaid: boolean,
): Array<{ state: PayoutOutcome["state"]; failureReason?: string }> {
  const reason = s.failureReason ?? s.providerStatus;
  const out: Array<{ state: PayoutOutcome["state"]; failureReason?: string }> = [{ state: "processing" }];
  if (s.state === "processing") return out;
  if (s.state === "paid") return [...out, { state: "paid" }];
  if (s.state === "returned" || knownPaid) {
    if (!knownPaid) out.push({ state: "paid" });
    return [...out, { state: "returned", failureReason: reason }];
  }
  return [...out, { state: "failed", failureReason: reason }];
}

/** The key of an outcome's ledger command: one per payout, round and state. */
export const outcomeKey = (o: Pick<PayoutOutcome, "payoutId" | "round" | "state">): string =>
  `payout-${o.payoutId}-${o.round}-${o.state}`;

export interface OutcomeConsumerOptions {
  redis: RedisClient;
  prefix: string;
  ledger: Ledger;
  logger: Logger;
  readCount: number;
  blockMs: number;
  /** Wait before reading again after the ledger was unavailable. */
  retryMs?: number;
  /** Told of each outcome the ledger took (applied, or found to change nothing). */
  onApplied?: (o: PayoutOutcome, r: PayoutResult) => void;
  /** How often the pending list is read again (default PENDING_REREAD_MS). */
  pendingRereadMs?: number;
}

/** One consumer name: one process owns the ledger at a time, and a new owner takes over the
 * previous one's pending outcomes by reading this name's pending list first. With shards spread
 * over processes every process reads under this name (each outcome goes to its payout's owner). */
const CONSUMER = "ledger-owner";

/**
 * How often the pending list is read again even when nothing failed here: an outcome another
 * process read and never acknowledged (it died) is applied within this (applying twice is
 * harmless: the outcome's key answers the first result).
 */
const PENDING_REREAD_MS = 15_000;

export class PayoutOutcomeConsumer {
  private running = false;
  private loop: Promise<void> | null = null;
  private blocker: RedisClient | null = null;
  private readonly key: string;
  /** Outcomes applied (or found to change nothing) since start; for tests and metrics. */
  applied = 0;

  constructor(private readonly o: OutcomeConsumerOptions) {
    this.key = redisKeys(o.prefix).payoutOutcomes;
  }

  async start(): Promise<void> {
    if (this.running) return;
    try {
      await this.o.redis.xgroup("CREATE", this.key, PAYOUT_OUTCOME_GROUP, "0", "MKSTREAM");
    } catch (err) {
      if (!String((err as Error).message).includes("BUSYGROUP")) throw err;
    }
    this.running = true;
    // A blocking read holds its connection; keep it off the shared one.
    const blocker = duplicateRedis(this.o.redis);
    blocker.on("error", () => {}); // the loop below reports failed reads
    this.blocker = blocker;
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.blocker?.disconnect();
    await this.loop?.catch(() => {});
    this.loop = null;
    this.blocker = null;
  }

  private async run(): Promise<void> {
    let pending = true;
    let pendingReadAt = 0;
    while (this.running) {
      if (!pending && Date.now() - pendingReadAt > (this.o.pendingRereadMs ?? PENDING_REREAD_MS))
        pending = true;
      if (pending) pendingReadAt = Date.now();
      try {
        const conn = pending ? this.o.redis : this.blocker!;
        const args: (string | number)[] = [
          "GROUP",
          PAYOUT_OUTCOME_GROUP,
          CONSUMER,
          "COUNT",
          this.o.readCount,
        ];
        if (!pending) args.push("BLOCK", this.o.blockMs);
        args.push("STREAMS", this.key, pending ? "0" : ">");
        const xreadgroup = conn.xreadgroup.bind(conn) as unknown as (
          ...a: (string | number)[]
        ) => Promise<Array<[string, Array<[string, string[] | null]>]> | null>;
        const reply = await xreadgroup(...args);
        const entries = reply?.[0]?.[1] ?? [];
        if (pending && entries.length === 0) {
          pending = false;
          continue;
        }
        for (const [id, fields] of entries) {
          if (!this.running) return;
          const ok = await this.handle(id, fields);
          if (!ok) {
            // The ledger could not take it now: read the pending list again after a pause.
            pending = true;
            await new Promise((r) => setTimeout(r, this.o.retryMs ?? 500));
            break;
          }
        }
      } catch (err) {
        if (!this.running) return;
        if (String((err as Error).message).includes("NOGROUP")) {
          await this.o.redis
            .xgroup("CREATE", this.key, PAYOUT_OUTCOME_GROUP, "0", "MKSTREAM")
            .catch(() => {});
        } else {
          this.o.logger.error({ err }, "reading payout outcomes failed; retrying");
        }
        pending = true;
        await new Promise((r) => setTimeout(r, this.o.retryMs ?? 500));
      }
    }
  }

  /** Applies one outcome; true once it may be acknowledged. */
  private async handle(id: string, fields: string[] | null): Promise<boolean> {
    const raw = fields?.[fields.indexOf(FIELD) + 1];
    const parsed = raw === undefined ? null : outcomeSchema.safeParse(safeJson(raw));
    if (!parsed?.success) {
      // Nothing can ever apply it: keep a record in the log and drop it, or it blocks the rest.
      this.o.logger.error({ entry: id, raw }, "malformed payout outcome dropped");
      await this.ack(id);
      return true;
    }
    const o = parsed.data;
    let r: PayoutResult;
    try {
      r = (await this.o.ledger.submit({
        kind: "payout_outcome",
        key: outcomeKey(o),
        accountId: o.userId,
        payoutId: o.payoutId,
        round: o.round,
        state: o.state,
        ...(o.providerTransferId ? { providerTransferId: o.providerTransferId } : {}),
        ...(o.failureReason ? { failureReason: o.failureReason } : {}),
        ...(o.attempts !== undefined ? { attempts: o.attempts } : {}),
      })) as PayoutResult;
    } catch (err) {
      if (isAppError(err) && err.code !== "unavailable" && err.code !== "internal") {
        // A refusal is final (an unknown payout or account): the outcome can never apply.
        this.o.logger.error({ err, outcome: o }, "payout outcome refused by the ledger; dropped");
        await this.ack(id);
        return true;
      }
      this.o.logger.warn({ err, outcome: o }, "payout outcome not applied yet; will retry");
      return false;
    }
    await this.ack(id);
    this.applied++;
    this.o.onApplied?.(o, r);
    return true;
  }

  private async ack(id: string): Promise<void> {
    await this.o.redis.pipeline().xack(this.key, PAYOUT_OUTCOME_GROUP, id).xdel(this.key, id).exec();
  }
}

function safeJson(s: string): unknown {
  try {
    return JSON.parse(s);
  } catch {
    return null;
  }
}
