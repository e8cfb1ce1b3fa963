// Owns the pieces every decision is built from: the context a shard decides in, the Decision it
// returns, and the builders of states, transaction records, refusals and fraud logs. Pure.
import type { SystemAccountKind } from "./accounts.ts";
import type { FraudEvent, TxEvent, WalEvent } from "./events.ts";
import { evaluateFraud, type FraudHit } from "./fraud.ts";
import { type AccountLookup, type AccountMem, earnedWithin, LedgerInvariantError, viewOf } from "./state.ts";
import type {
  AccountState,
  AccountStatus,
  DirectoryEntry,
  FraudLimits,
  FraudLogRecord,
  PayoutResult,
  Posting,
  Refusal,
  RefusalCode,
  StatusResult,
  TransactionRecord,
  TxResult,
  TxType,
} from "./types.ts";

export interface DecideContext {
  /** The accounts this shard owns, in its memory: the only state a decision reads or writes. */
  get: AccountLookup;
  /**
   * What this shard may know of any account, its own or another shard's (kind, status): read-only.
   * Its freshness is the runtime's promise, documented where a rule reads it (decide-tip.ts).
   */
  directory: (id: string) => DirectoryEntry | undefined;
  /** Ids of this shard's system accounts. */
  system: Readonly<Record<SystemAccountKind, string>>;
  nowMs: number;
  /** nowMs as an ISO timestamp (the runtime formats it once per millisecond). */
  at: string;
  newId: () => string;
  limits: FraudLimits;
  idempotencyTtlMs: number;
}

/** A null event on success is a replayed key: nothing to write, but the answer still waits for
 * the shard's next flush, so the original is durable before anyone hears about it. */
export type Decision =
  | { ok: true; event: WalEvent | null; result: TxResult | StatusResult | PayoutResult }
  | { ok: false; refusal: Refusal; event: FraudEvent | null };

export const refuse = (
  code: RefusalCode,
  message: string,
  details?: Record<string, unknown>,
  event: FraudEvent | null = null,
): Decision => ({ ok: false, refusal: details ? { code, message, details } : { code, message }, event });

export function checkAmount(amountCents: number): Decision | null {
  if (!Number.isSafeInteger(amountCents) || amountCents <= 0) {
    return refuse("validation_error", "amount must be a positive whole number of cents", { amountCents });
  }
  return null;
}

/** One of this shard's system accounts; they are loaded before a shard takes commands. */
export function sysAccount(ctx: DecideContext, kind: SystemAccountKind): AccountMem {
  const mem = ctx.get(ctx.system[kind]);
  if (!mem)
    throw new LedgerInvariantError(
      `ledger invariant: system account ${kind} (${ctx.system[kind]}) not loaded`,
    );
  return mem;
}

export function bump(s: AccountState, change: Partial<AccountState>): AccountState {
  const next = { ...s, ...change, version: s.version + 1 };
  // Earned money is part of what is available: whatever lowers the available balance (a tip
  // sent, a reversal) takes purchased credits first and earned money only once they are gone.
  next.earnedCents = earnedWithin(next.earnedCents, next.balanceCents - next.reservedCents);
  return next;
}

export function txRecord(
  ctx: DecideContext,
  type: TxType,
  status: TransactionRecord["status"],
  accountId: string,
  f: Partial<TransactionRecord> & Pick<TransactionRecord, "amountCents" | "netAmountCents">,
): TransactionRecord {
  return {
    id: f.id ?? ctx.newId(),
    type,
    status,
    accountId,
    fromAccountId: f.fromAccountId ?? null,
    toAccountId: f.toAccountId ?? null,
    amountCents: f.amountCents,
    platformFeeCents: f.platformFeeCents ?? 0,
    charityFeeCents: f.charityFeeCents ?? 0,
    netAmountCents: f.netAmountCents,
    currency: "USD",
    stripePaymentId: f.stripePaymentId ?? null,
    metadata: f.metadata ?? {},
    createdAt: ctx.at,
  };
}

/** A transaction decided by this shard alone: its postings must sum to zero. */
export function txDecision(
  tx: TransactionRecord,
  postings: Posting[],
  states: AccountState[],
  key: string,
  hash: string,
  fraud: FraudLogRecord[],
  credits: TxEvent["credits"] = [],
): Decision {
  let sum = 0;
  for (const p of postings) sum += p.amountCents;
  for (const c of credits) sum += c.amountCents;
  // A tip's recipient leg is posted by the recipient's shard; counted here, everything balances.
  if (sum !== 0) throw new LedgerInvariantError(`ledger invariant: postings of ${tx.id} sum to ${sum}`);
  const event: TxEvent = { t: "tx", tx, postings, states, key, hash, credits, fraud };
  return { ok: true, event, result: { transaction: tx, account: viewOf(states[0]!), replayed: false } };
}

const NO_FRAUD: FraudLogRecord[] = Object.freeze([]) as unknown as FraudLogRecord[];

export function fraudLogs(
  hits: FraudHit[],
  userId: string,
  amountCents: number,
  action: "allowed" | "blocked",
  ctx: DecideContext,
  extra: Record<string, unknown>,
): FraudLogRecord[] {
  if (hits.length === 0) return NO_FRAUD;
  return hits.map((h) => ({
    id: ctx.newId(),
    userId,
    rule: h.rule,
    severity: h.severity,
    amountCents,
    action,
    context: { ...extra, ...h.context },
    createdAt: ctx.at,
  }));
}

/** A refusal by a blocking fraud rule; the attempt's fraud logs are still written. */
export function refuseIfBlocked(
  block: FraudHit | null,
  hits: FraudHit[],
  sender: AccountMem,
  amountCents: number,
  ctx: DecideContext,
  extra: Record<string, unknown>,
): Decision | null {
  if (!block) return null;
  const event: FraudEvent = {
    t: "fraud",
    fraud: fraudLogs(hits, sender.state.id, amountCents, "blocked", ctx, extra),
  };
  return refuse(
    "fraud_blocked",
    `refused by fraud rule ${block.rule}`,
    { rule: block.rule, severity: block.severity, ...block.context },
    event,
  );
}

/**
 * The checks money leaving an account passes (a tip, a payout), in order: the fraud rules (a block
 * is refused, its fraud logs still written), then the available balance. On success, the hits to
 * log with the transaction (action "allowed").
 */
export function checkOutgoing(
  ctx: DecideContext,
  sender: AccountMem,
  amountCents: number,
  recipient: { id: string; status: AccountStatus } | null,
  extra: Record<string, unknown>,
  insufficientMessage: string,
  /** A payout may take only what was earned (withdrawableCents), not all that is available. */
  withdrawableCents?: number,
): { refused: Decision } | { allowed: FraudLogRecord[] } {
  const verdict = evaluateFraud({
    amountCents,
    senderId: sender.state.id,
    senderStatus: sender.state.status,
    recipientId: recipient?.id ?? null,
    recipientStatus: recipient?.status ?? null,
    window: sender.window,
    nowMs: ctx.nowMs,
    limits: ctx.limits,
  });
  const blocked = refuseIfBlocked(verdict.block, verdict.hits, sender, amountCents, ctx, extra);
  if (blocked) return { refused: blocked };
  const available = sender.state.balanceCents - sender.state.reservedCents;
  const limit = withdrawableCents === undefined ? available : Math.min(available, withdrawableCents);
  if (limit < amountCents) {
    const details: Record<string, unknown> = { available_cents: available, amount_cents: amountCents };
    if (withdrawableCents !== undefined) details.withdrawable_cents = limit;
    return { refused: refuse("insufficient_funds", insufficientMessage, details) };
  }
  return { allowed: fraudLogs(verdict.hits, sender.state.id, amountCents, "allowed", ctx, extra) };
}
