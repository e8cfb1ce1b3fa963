// Owns the ledger's decisions: a command and the shard's in-memory state in, an event and the
// caller's result (or an expected error) out. No I/O and no mutation: the shard applies the event
// with applyEvent only once it has decided, and answers the caller only after the WAL confirms.
import type { FraudLimits } from "../config.ts";
import { AppError } from "../errors.ts";
import { type SystemAccountKind, systemAccountId } from "./accounts.ts";
import type { FraudEvent, StatusEvent, TxEvent, WalEvent } from "./events.ts";
import { evaluateFraud, type FraudHit } from "./fraud.ts";
import { splitTip } from "./fee-split.ts";
import { type AccountLookup, type AccountMem, viewOf } from "./state.ts";
import type {
  AccountState,
  CreditCommand,
  FraudLogRecord,
  Posting,
  StatusResult,
  TransactionRecord,
  TxResult,
  TxType,
  UserCommand,
} from "./types.ts";

export interface DecideContext {
  get: AccountLookup;
  shard: number;
  nowMs: number;
  newId: () => string;
  limits: FraudLimits;
  idempotencyTtlMs: number;
}

/** A null event on success is a replayed key: nothing to write, but the answer still waits for
 * the shard's next flush, so the original is durable before anyone hears about it. */
export type Decision =
  | { ok: true; event: WalEvent | null; result: TxResult | StatusResult }
  | { ok: false; error: AppError; event: FraudEvent | null };

/** The request fingerprint an idempotency key is bound to: everything but the key. */
export function requestHash(cmd: UserCommand): string {
  switch (cmd.kind) {
    case "tip":
      return tipHash(cmd.fromAccountId, cmd.toAccountId, cmd.amountCents, cmd.metadata ?? {});
    case "deposit":
      return `deposit|${cmd.accountId}|${cmd.amountCents}|${cmd.stripePaymentId ?? ""}|${stable(cmd.metadata)}`;
    case "reserve_payout":
      return `reserve|${cmd.accountId}|${cmd.payoutId}|${cmd.amountCents}|${stable(cmd.metadata)}`;
    case "post_payout":
      return `post|${cmd.accountId}|${cmd.payoutId}`;
    case "void_payout":
      return `void|${cmd.accountId}|${cmd.payoutId}`;
    case "reversal":
      return `${cmd.type}|${cmd.accountId}|${cmd.amountCents}|${cmd.stripePaymentId ?? ""}|${stable(cmd.metadata)}`;
    case "set_status":
      return `status|${cmd.accountId}|${cmd.status}`;
  }
}

/** A tip's fingerprint; absent metadata counts as empty, so the WAL can re-derive it from the tx. */
export function tipHash(
  from: string,
  to: string,
  amountCents: number,
  metadata: Record<string, unknown>,
): string {
  return `tip|${from}|${to}|${amountCents}|${stable(metadata)}`;
}

function stable(v: unknown): string {
  if (v === undefined) return "";
  if (v === null || typeof v !== "object") return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(stable).join(",")}]`;
  const o = v as Record<string, unknown>;
  return `{${Object.keys(o)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${stable(o[k])}`)
    .join(",")}}`;
}

/** The account whose shard decides a command: the one whose money leaves or is changed. */
/**
 * Commands whose key must never be honoured twice (money in, payouts): a key older than the
 * in-memory TTL is looked up in Postgres before deciding, and one in memory always replays.
 */
export function keyNeverExpires(cmd: UserCommand): boolean {
  return cmd.kind === "deposit" || cmd.kind === "reversal" || cmd.kind === "reserve_payout";
}

export function ownerOf(cmd: UserCommand | CreditCommand): string {
  return cmd.kind === "tip" ? cmd.fromAccountId : cmd.accountId;
}

export function decide(cmd: UserCommand, ctx: DecideContext): Decision {
  const owner = ctx.get(ownerOf(cmd));
  if (!owner || owner.system) return fail(new AppError("not_found", "account not found"));
  const hash = requestHash(cmd);
  const seen = owner.keys.get(cmd.key);
  // Money in and payouts never repeat, however old their key: only other keys expire.
  if (seen && (keyNeverExpires(cmd) || ctx.nowMs - seen.atMs < ctx.idempotencyTtlMs)) {
    if (seen.hash !== hash) {
      return fail(
        new AppError(
          "idempotency_conflict",
          "this idempotency key was already used with a different request",
          {
            key: cmd.key,
          },
        ),
      );
    }
    return { ok: true, event: null, result: { ...seen.result, replayed: true } };
  }
  switch (cmd.kind) {
    case "tip":
      return decideTip(cmd, owner, hash, ctx);
    case "deposit":
      return decideDeposit(cmd, owner, hash, ctx);
    case "reserve_payout":
      return decideReserve(cmd, owner, hash, ctx);
    case "post_payout":
    case "void_payout":
      return decideFinishPayout(cmd, owner, hash, ctx);
    case "reversal":
      return decideReversal(cmd, owner, hash, ctx);
    case "set_status":
      return decideStatus(cmd, owner, hash, ctx);
  }
}

const fail = (error: AppError, event: FraudEvent | null = null): Decision => ({ ok: false, error, event });

function checkAmount(amountCents: number): AppError | null {
  if (!Number.isSafeInteger(amountCents) || amountCents <= 0) {
    return new AppError("validation_error", "amount must be a positive whole number of cents", {
      amountCents,
    });
  }
  return null;
}

function decideTip(
  cmd: Extract<UserCommand, { kind: "tip" }>,
  sender: AccountMem,
  hash: string,
  ctx: DecideContext,
): Decision {
  const bad = checkAmount(cmd.amountCents);
  if (bad) return fail(bad);
  const recipient = ctx.get(cmd.toAccountId);
  if (!recipient || recipient.system) return fail(new AppError("not_found", "recipient account not found"));
  const verdict = evaluateFraud({
    amountCents: cmd.amountCents,
    senderId: sender.state.id,
    senderStatus: sender.state.status,
    recipientId: recipient.state.id,
    recipientStatus: recipient.state.status,
    window: sender.window,
    nowMs: ctx.nowMs,
    limits: ctx.limits,
  });
  const refused = refuseIfBlocked(verdict.block, verdict.hits, sender, cmd.amountCents, ctx, {
    to_user_id: recipient.state.id,
  });
  if (refused) return refused;
  const available = sender.state.balanceCents - sender.state.reservedCents;
  if (available < cmd.amountCents) {
    return fail(
      new AppError("insufficient_funds", "not enough credits for this tip", {
        available_cents: available,
        amount_cents: cmd.amountCents,
      }),
    );
  }
  const split = splitTip(cmd.amountCents);
  const platform = sysAccount(ctx, "platform_revenue");
  const charity = sysAccount(ctx, "charity");
  const tx = txRecord(ctx, "tip", "completed", sender.state.id, {
    fromAccountId: sender.state.id,
    toAccountId: recipient.state.id,
    amountCents: split.amountCents,
    platformFeeCents: split.platformFeeCents,
    charityFeeCents: split.charityFeeCents,
    netAmountCents: split.netAmountCents,
    metadata: cmd.metadata ?? {},
  });
  const postings: Posting[] = [{ accountId: sender.state.id, amountCents: -split.amountCents }];
  const states = [bump(sender.state, { balanceCents: sender.state.balanceCents - split.amountCents })];
  if (split.platformKeepsCents > 0) {
    postings.push({ accountId: platform.state.id, amountCents: split.platformKeepsCents });
    states.push(
      bump(platform.state, { balanceCents: platform.state.balanceCents + split.platformKeepsCents }),
    );
  }
  if (split.charityFeeCents > 0) {
    postings.push({ accountId: charity.state.id, amountCents: split.charityFeeCents });
    states.push(bump(charity.state, { balanceCents: charity.state.balanceCents + split.charityFeeCents }));
  }
  const event: TxEvent = {
    t: "tx",
    tx,
    postings,
    states,
    key: cmd.key,
    hash,
    credits: [{ accountId: recipient.state.id, txId: tx.id, amountCents: split.netAmountCents }],
    fraud: fraudLogs(verdict.hits, sender.state.id, cmd.amountCents, "allowed", ctx, {
      to_user_id: recipient.state.id,
    }),
  };
  return { ok: true, event, result: { transaction: tx, account: viewOf(states[0]!), replayed: false } };
}

function decideDeposit(
  cmd: Extract<UserCommand, { kind: "deposit" }>,
  user: AccountMem,
  hash: string,
  ctx: DecideContext,
): Decision {
  const bad = checkAmount(cmd.amountCents);
  if (bad) return fail(bad);
  // Credits bought while in debt (after a chargeback) repay the debt first.
  const repay = Math.min(user.state.debtCents, cmd.amountCents);
  const clearing = sysAccount(ctx, "stripe_clearing");
  const tx = txRecord(ctx, "purchase", "completed", user.state.id, {
    fromAccountId: null,
    toAccountId: user.state.id,
    amountCents: cmd.amountCents,
    netAmountCents: cmd.amountCents,
    stripePaymentId: cmd.stripePaymentId ?? null,
    metadata: repay > 0 ? { ...cmd.metadata, debt_repaid_cents: repay } : (cmd.metadata ?? {}),
  });
  const postings: Posting[] = [{ accountId: clearing.state.id, amountCents: -cmd.amountCents }];
  const userState = bump(user.state, {
    balanceCents: user.state.balanceCents + cmd.amountCents - repay,
    debtCents: user.state.debtCents - repay,
  });
  if (cmd.amountCents - repay > 0)
    postings.push({ accountId: user.state.id, amountCents: cmd.amountCents - repay });
  const states = [
    userState,
    bump(clearing.state, { balanceCents: clearing.state.balanceCents - cmd.amountCents }),
  ];
  if (repay > 0) {
    const recv = sysAccount(ctx, "receivables");
    postings.push({ accountId: recv.state.id, amountCents: repay });
    states.push(bump(recv.state, { balanceCents: recv.state.balanceCents + repay }));
  }
  return txDecision(tx, postings, states, cmd.key, hash, []);
}

function decideReserve(
  cmd: Extract<UserCommand, { kind: "reserve_payout" }>,
  user: AccountMem,
  hash: string,
  ctx: DecideContext,
): Decision {
  const bad = checkAmount(cmd.amountCents);
  if (bad) return fail(bad);
  if (user.payouts.has(cmd.payoutId)) {
    return fail(
      new AppError("conflict", "a payout with this id already exists", { payout_id: cmd.payoutId }),
    );
  }
  const verdict = evaluateFraud({
    amountCents: cmd.amountCents,
    senderId: user.state.id,
    senderStatus: user.state.status,
    recipientId: null,
    recipientStatus: null,
    window: user.window,
    nowMs: ctx.nowMs,
    limits: ctx.limits,
  });
  const ctxInfo = { payout_id: cmd.payoutId };
  const refused = refuseIfBlocked(verdict.block, verdict.hits, user, cmd.amountCents, ctx, ctxInfo);
  if (refused) return refused;
  const available = user.state.balanceCents - user.state.reservedCents;
  if (available < cmd.amountCents) {
    return fail(
      new AppError("insufficient_funds", "not enough available balance for this payout", {
        available_cents: available,
        amount_cents: cmd.amountCents,
      }),
    );
  }
  const tx = txRecord(ctx, "payout", "pending", user.state.id, {
    id: cmd.payoutId,
    fromAccountId: user.state.id,
    toAccountId: null,
    amountCents: cmd.amountCents,
    netAmountCents: cmd.amountCents,
    metadata: cmd.metadata ?? {},
  });
  const state = bump(user.state, { reservedCents: user.state.reservedCents + cmd.amountCents });
  const fraud = fraudLogs(verdict.hits, user.state.id, cmd.amountCents, "allowed", ctx, ctxInfo);
  return txDecision(tx, [], [state], cmd.key, hash, fraud);
}

function decideFinishPayout(
  cmd: Extract<UserCommand, { kind: "post_payout" | "void_payout" }>,
  user: AccountMem,
  hash: string,
  ctx: DecideContext,
): Decision {
  const payout = user.payouts.get(cmd.payoutId);
  if (!payout) return fail(new AppError("not_found", "payout not found", { payout_id: cmd.payoutId }));
  const target = cmd.kind === "post_payout" ? "completed" : "failed";
  if (payout.status !== "pending") {
    return fail(
      new AppError("conflict", `payout is already ${payout.status}`, {
        payout_id: cmd.payoutId,
        status: payout.status,
      }),
    );
  }
  const amount = payout.amountCents;
  const metadata =
    cmd.kind === "void_payout" && cmd.reason
      ? { ...payout.metadata, void_reason: cmd.reason }
      : payout.metadata;
  const tx: TransactionRecord = { ...payout, status: target, metadata };
  if (cmd.kind === "void_payout") {
    const state = bump(user.state, { reservedCents: user.state.reservedCents - amount });
    return txDecision(tx, [], [state], cmd.key, hash, []);
  }
  const clearing = sysAccount(ctx, "payouts_clearing");
  const state = bump(user.state, {
    balanceCents: user.state.balanceCents - amount,
    reservedCents: user.state.reservedCents - amount,
  });
  const postings: Posting[] = [
    { accountId: user.state.id, amountCents: -amount },
    { accountId: clearing.state.id, amountCents: amount },
  ];
  const states = [state, bump(clearing.state, { balanceCents: clearing.state.balanceCents + amount })];
  return txDecision(tx, postings, states, cmd.key, hash, []);
}

function decideReversal(
  cmd: Extract<UserCommand, { kind: "reversal" }>,
  user: AccountMem,
  hash: string,
  ctx: DecideContext,
): Decision {
  const bad = checkAmount(cmd.amountCents);
  if (bad) return fail(bad);
  // Take back what is available; money reserved for a payout in flight is left to that payout.
  // What cannot be taken back becomes debt, repaid by the next purchase.
  const available = user.state.balanceCents - user.state.reservedCents;
  const taken = Math.min(available, cmd.amountCents);
  const debt = cmd.amountCents - taken;
  const clearing = sysAccount(ctx, "stripe_clearing");
  const tx = txRecord(ctx, cmd.type, "completed", user.state.id, {
    fromAccountId: user.state.id,
    toAccountId: null,
    amountCents: cmd.amountCents,
    netAmountCents: taken,
    stripePaymentId: cmd.stripePaymentId ?? null,
    metadata: { ...cmd.metadata, taken_back_cents: taken, debt_cents: debt },
  });
  const postings: Posting[] = [{ accountId: clearing.state.id, amountCents: cmd.amountCents }];
  const states: AccountState[] = [
    bump(user.state, {
      balanceCents: user.state.balanceCents - taken,
      debtCents: user.state.debtCents + debt,
    }),
    bump(clearing.state, { balanceCents: clearing.state.balanceCents + cmd.amountCents }),
  ];
  if (taken > 0) postings.push({ accountId: user.state.id, amountCents: -taken });
  if (debt > 0) {
    const recv = sysAccount(ctx, "receivables");
    postings.push({ accountId: recv.state.id, amountCents: -debt });
    states.push(bump(recv.state, { balanceCents: recv.state.balanceCents - debt }));
  }
  const fraud: FraudLogRecord[] =
    debt > 0
      ? [
          {
            id: ctx.newId(),
            userId: user.state.id,
            rule: "chargeback_debt",
            severity: "high",
            amountCents: debt,
            action: "flagged",
            context: {
              type: cmd.type,
              stripe_payment_id: cmd.stripePaymentId ?? null,
              reversed_cents: cmd.amountCents,
            },
            createdAt: tx.createdAt,
          },
        ]
      : [];
  return txDecision(tx, postings, states, cmd.key, hash, fraud);
}

function decideStatus(
  cmd: Extract<UserCommand, { kind: "set_status" }>,
  user: AccountMem,
  hash: string,
  ctx: DecideContext,
): Decision {
  const state = bump(user.state, { status: cmd.status });
  const event: StatusEvent = {
    t: "status",
    id: ctx.newId(),
    state,
    status: cmd.status,
    reason: cmd.reason ?? null,
    key: cmd.key,
    hash,
    at: isoAt(ctx.nowMs),
  };
  return { ok: true, event, result: { account: viewOf(state), replayed: false } };
}

/** The recipient shard's side of tips: one event crediting many tips at once. */
export function decideCredit(cmd: CreditCommand, mem: AccountMem, nowMs: number) {
  let total = 0;
  for (const it of cmd.items) total += it.amountCents;
  const state = bump(mem.state, { balanceCents: mem.state.balanceCents + total });
  return {
    t: "credit" as const,
    accountId: mem.state.id,
    items: cmd.items,
    state,
    at: isoAt(nowMs),
  };
}

function refuseIfBlocked(
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
  return fail(
    new AppError("fraud_blocked", `refused by fraud rule ${block.rule}`, {
      rule: block.rule,
      severity: block.severity,
      ...block.context,
    }),
    event,
  );
}

function fraudLogs(
  hits: FraudHit[],
  userId: string,
  amountCents: number,
  action: "allowed" | "blocked",
  ctx: DecideContext,
  extra: Record<string, unknown>,
): FraudLogRecord[] {
  if (hits.length === 0) return NO_FRAUD;
  const at = isoAt(ctx.nowMs);
  return hits.map((h) => ({
    id: ctx.newId(),
    userId,
    rule: h.rule,
    severity: h.severity,
    amountCents,
    action,
    context: { ...extra, ...h.context },
    createdAt: at,
  }));
}

const sysIds = new Map<string, string>();
function sysAccount(ctx: DecideContext, kind: SystemAccountKind): AccountMem {
  const k = `${kind}:${ctx.shard}`;
  let id = sysIds.get(k);
  if (id === undefined) {
    id = systemAccountId(kind, ctx.shard);
    sysIds.set(k, id);
  }
  const mem = ctx.get(id);
  if (!mem) throw new Error(`ledger invariant: system account ${kind}:${ctx.shard} not loaded`);
  return mem;
}

function bump(s: AccountState, change: Partial<AccountState>): AccountState {
  return { ...s, ...change, version: s.version + 1 };
}

function txRecord(
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
    createdAt: isoAt(ctx.nowMs),
  };
}

const NO_FRAUD: FraudLogRecord[] = Object.freeze([]) as unknown as FraudLogRecord[];
let lastIsoMs = -1;
let lastIso = "";
/** Timestamps repeat within a millisecond thousands of times under load; format each once. */
function isoAt(ms: number): string {
  if (ms !== lastIsoMs) {
    lastIsoMs = ms;
    lastIso = new Date(ms).toISOString();
  }
  return lastIso;
}

function txDecision(
  tx: TransactionRecord,
  postings: Posting[],
  states: AccountState[],
  key: string,
  hash: string,
  fraud: FraudLogRecord[],
): Decision {
  let sum = 0;
  for (const p of postings) sum += p.amountCents;
  // A tip's recipient leg is posted by the recipient's shard; everything else balances here.
  if (tx.type !== "tip" && sum !== 0) throw new Error(`ledger invariant: postings of ${tx.id} sum to ${sum}`);
  const event: TxEvent = { t: "tx", tx, postings, states, key, hash, credits: [], fraud };
  return { ok: true, event, result: { transaction: tx, account: viewOf(states[0]!), replayed: false } };
}
