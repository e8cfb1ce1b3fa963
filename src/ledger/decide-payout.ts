// Owns a payout's life in the creator's shard. Reserve (available and earned drop, balance stays;
// counts toward the velocity rules; only earned money, never purchased credits), then the
// provider's outcomes: processing (no money), paid (post: balance and reserve drop, the money moves
// to payouts clearing), failed (void: the reserve is released), returned (a paid payout sent back:
// credited back as its own transaction). States only move forward; an outcome that would move one
// back, or repeats one, changes nothing. An admin may retry a failed payout (a new round). Pure.
import {
  bump,
  checkAmount,
  checkOutgoing,
  type DecideContext,
  type Decision,
  refuse,
  sysAccount,
  txDecision,
  txRecord,
} from "./decision.ts";
import { type AccountMem, LedgerInvariantError, viewOf, withdrawableOf } from "./state.ts";
import type {
  AccountState,
  AccountStatus,
  PayoutOutcomeCommand,
  PayoutRecord,
  PayoutStatus,
  PostPayoutCommand,
  Posting,
  ReservePayoutCommand,
  RetryPayoutCommand,
  TransactionRecord,
  VoidPayoutCommand,
} from "./types.ts";

export function decideReserve(
  cmd: ReservePayoutCommand,
  user: AccountMem,
  hash: string,
  ctx: DecideContext,
): Decision {
  const bad = checkAmount(cmd.amountCents);
  if (bad) return bad;
  if (user.payouts.has(cmd.payoutId) || user.payoutRecords.has(cmd.payoutId)) {
    return refuse("conflict", "a payout with this id already exists", { payout_id: cmd.payoutId });
  }
  const extra = { payout_id: cmd.payoutId };
  const checked = checkOutgoing(
    ctx,
    user,
    cmd.amountCents,
    null,
    extra,
    "not enough earned balance for this payout (purchased credits cannot be withdrawn)",
    withdrawableOf(user.state),
  );
  if ("refused" in checked) return checked.refused;
  const tx = txRecord(ctx, "payout", "pending", user.state.id, {
    id: cmd.payoutId,
    fromAccountId: user.state.id,
    toAccountId: null,
    amountCents: cmd.amountCents,
    netAmountCents: cmd.amountCents,
    metadata: cmd.metadata ?? {},
  });
  const state = bump(user.state, {
    reservedCents: user.state.reservedCents + cmd.amountCents,
    earnedCents: user.state.earnedCents - cmd.amountCents,
  });
  const payout: PayoutRecord = {
    id: cmd.payoutId,
    userId: user.state.id,
    amountCents: cmd.amountCents,
    provider: cmd.provider ?? null,
    providerRecipientId: cmd.providerRecipientId ?? null,
    providerTransferId: null,
    status: "pending",
    failureReason: null,
    attempts: 0,
    round: 1,
    seq: 1,
    createdAt: ctx.at,
    updatedAt: ctx.at,
    paidAt: null,
    returnTxId: null,
  };
  return withPayout(txDecision(tx, [], [state], cmd.key, hash, checked.allowed), payout);
}

/**
 * The outcome's key is kept on the payout itself (metadata.finish, with the account right after)
 * so that it replays its first answer however long after: the payout row keeps the reserve's key.
 */
export interface PayoutFinish {
  key: string;
  hash: string;
  at: string;
  balance_after_cents: number;
  reserved_after_cents: number;
  debt_after_cents: number;
  earned_after_cents?: number;
  version_after: number;
  status_after: AccountStatus;
}

export function decideFinishPayout(
  cmd: PostPayoutCommand | VoidPayoutCommand,
  user: AccountMem,
  hash: string,
  ctx: DecideContext,
): Decision {
  const payout = user.payouts.get(cmd.payoutId);
  if (!payout) return refuse("not_found", "payout not found", { payout_id: cmd.payoutId });
  if (payout.status !== "pending") {
    return refuse("conflict", `payout is already ${payout.status}`, {
      payout_id: cmd.payoutId,
      status: payout.status,
    });
  }
  const post = cmd.kind === "post_payout";
  const reason = cmd.kind === "void_payout" ? (cmd.reason ?? null) : null;
  return finish(user, payout, post, post ? "paid" : "failed", reason, {}, cmd.key, hash, ctx);
}

/** Which outcome may follow which status: forward only; a returned payout before it was known
 * paid is released like a failed one (money-wise: paid, then credited back). */
const NEXT: Record<PayoutStatus, ReadonlyArray<PayoutOutcomeCommand["state"]>> = {
  pending: ["processing", "paid", "failed", "returned"],
  processing: ["paid", "failed", "returned"],
  paid: ["returned"],
  failed: [],
  returned: [],
};

/**
 * Outcomes are idempotent by state, not by key: the answer is the payout as it stands, with
 * `applied` false when the outcome changed nothing (late, repeated, out of order, an earlier
 * round). The key (derived from payout id, round and state) is kept on the payout's row for audit.
 */
export function decidePayoutOutcome(
  cmd: PayoutOutcomeCommand,
  user: AccountMem,
  ctx: DecideContext,
): Decision {
  const rec = user.payoutRecords.get(cmd.payoutId);
  if (!rec) return refuse("not_found", "payout not found", { payout_id: cmd.payoutId });
  if (cmd.round !== rec.round || !NEXT[rec.status].includes(cmd.state)) return unchanged(user, rec);
  const details: Partial<PayoutRecord> = {
    providerTransferId: cmd.providerTransferId ?? rec.providerTransferId,
    attempts: Math.max(rec.attempts, cmd.attempts ?? 0),
  };
  if (cmd.state === "processing") {
    const payout = next(rec, ctx, { ...details, status: "processing" });
    return {
      ok: true,
      event: { t: "payout", payout },
      result: { payout, account: viewOf(user.state), applied: true, replayed: false },
    };
  }
  const hash = `outcome|${cmd.payoutId}|${cmd.round}|${cmd.state}`;
  if (rec.status === "paid") return asPayoutAnswer(payoutReturn(cmd, user, rec, details, hash, ctx));
  const tx = user.payouts.get(cmd.payoutId);
  if (tx?.status !== "pending") {
    throw new LedgerInvariantError(
      `ledger invariant: payout ${cmd.payoutId} is ${rec.status} but its transaction is ${tx?.status}`,
    );
  }
  const post = cmd.state === "paid";
  const reason = cmd.failureReason ?? null;
  return asPayoutAnswer(finish(user, tx, post, cmd.state, reason, details, cmd.key, hash, ctx));
}

/** A failed payout reserved again for a new round (`cmd.round` is the round that failed; a
 * retry of a round already retried changes nothing). Idempotent by round, like outcomes. */
export function decideRetryPayout(cmd: RetryPayoutCommand, user: AccountMem, ctx: DecideContext): Decision {
  const rec = user.payoutRecords.get(cmd.payoutId);
  const tx = user.payouts.get(cmd.payoutId);
  if (!rec || !tx) return refuse("not_found", "payout not found", { payout_id: cmd.payoutId });
  if (rec.round > cmd.round) return unchanged(user, rec);
  if (rec.status !== "failed") {
    return refuse("conflict", `payout is ${rec.status}; only a failed payout can be retried`, {
      payout_id: rec.id,
      status: rec.status,
    });
  }
  const checked = checkOutgoing(
    ctx,
    user,
    rec.amountCents,
    null,
    { payout_id: rec.id, retry_round: rec.round + 1 },
    "not enough earned balance to retry this payout",
    withdrawableOf(user.state),
  );
  if ("refused" in checked) return checked.refused;
  const state = bump(user.state, {
    reservedCents: user.state.reservedCents + rec.amountCents,
    earnedCents: user.state.earnedCents - rec.amountCents,
  });
  // The row goes back to what its reserve answered (a replay of the reserve's key says pending).
  const { finish: _f, void_reason: _r, ...metadata } = tx.metadata;
  const again: TransactionRecord = { ...tx, status: "pending", metadata };
  const payout = next(rec, ctx, { status: "pending", round: rec.round + 1, failureReason: null });
  return asPayoutAnswer(
    withPayout(txDecision(again, [], [state], cmd.key, "retry", checked.allowed), payout),
  );
}

function finish(
  user: AccountMem,
  payout: TransactionRecord,
  post: boolean,
  status: PayoutStatus,
  reason: string | null,
  details: Partial<PayoutRecord>,
  key: string,
  hash: string,
  ctx: DecideContext,
): Decision {
  const amount = payout.amountCents;
  // A released reserve was earned money: it is withdrawable again.
  const state = post
    ? bump(user.state, {
        balanceCents: user.state.balanceCents - amount,
        reservedCents: user.state.reservedCents - amount,
      })
    : bump(user.state, {
        reservedCents: user.state.reservedCents - amount,
        earnedCents: user.state.earnedCents + amount,
      });
  const fin: PayoutFinish = {
    key,
    hash,
    at: ctx.at,
    balance_after_cents: state.balanceCents,
    reserved_after_cents: state.reservedCents,
    debt_after_cents: state.debtCents,
    earned_after_cents: state.earnedCents,
    version_after: state.version,
    status_after: state.status,
  };
  const metadata: Record<string, unknown> = { ...payout.metadata, finish: fin };
  if (!post && reason) metadata.void_reason = reason;
  const tx: TransactionRecord = { ...payout, status: post ? "completed" : "failed", metadata };
  const rec = user.payoutRecords.get(payout.id);
  const record = rec
    ? next(rec, ctx, {
        ...details,
        status,
        ...(post ? { paidAt: ctx.at } : { failureReason: reason ?? rec.failureReason }),
      })
    : undefined;
  if (!post) return withPayout(txDecision(tx, [], [state], key, hash, []), record);
  const clearing = sysAccount(ctx, "payouts_clearing");
  const postings: Posting[] = [
    { accountId: user.state.id, amountCents: -amount },
    { accountId: clearing.state.id, amountCents: amount },
  ];
  const states = [state, bump(clearing.state, { balanceCents: clearing.state.balanceCents + amount })];
  return withPayout(txDecision(tx, postings, states, key, hash, []), record);
}

/** A paid payout the bank sent back: payouts clearing -> creator, earned again. */
function payoutReturn(
  cmd: PayoutOutcomeCommand,
  user: AccountMem,
  rec: PayoutRecord,
  details: Partial<PayoutRecord>,
  hash: string,
  ctx: DecideContext,
): Decision {
  const amount = rec.amountCents;
  const tx = txRecord(ctx, "payout_return", "completed", user.state.id, {
    fromAccountId: null,
    toAccountId: user.state.id,
    amountCents: amount,
    netAmountCents: amount,
    metadata: {
      payout_id: rec.id,
      outcome_key: cmd.key,
      ...(cmd.failureReason ? { reason: cmd.failureReason } : {}),
    },
  });
  const clearing = sysAccount(ctx, "payouts_clearing");
  const postings: Posting[] = [
    { accountId: clearing.state.id, amountCents: -amount },
    { accountId: user.state.id, amountCents: amount },
  ];
  const states: AccountState[] = [
    bump(user.state, {
      balanceCents: user.state.balanceCents + amount,
      earnedCents: user.state.earnedCents + amount,
    }),
    bump(clearing.state, { balanceCents: clearing.state.balanceCents - amount }),
  ];
  const payout = next(rec, ctx, {
    ...details,
    status: "returned",
    returnTxId: tx.id,
    failureReason: cmd.failureReason ?? rec.failureReason,
  });
  return withPayout(txDecision(tx, postings, states, cmd.key, hash, []), payout);
}

function next(rec: PayoutRecord, ctx: DecideContext, change: Partial<PayoutRecord>): PayoutRecord {
  return { ...rec, ...change, seq: rec.seq + 1, updatedAt: ctx.at };
}

function unchanged(user: AccountMem, rec: PayoutRecord): Decision {
  return {
    ok: true,
    event: null,
    result: { payout: rec, account: viewOf(user.state), applied: false, replayed: false },
  };
}

/** An outcome's or retry's decision: its key is not remembered (state makes it idempotent) and
 * it answers with the payout. */
function asPayoutAnswer(d: Decision): Decision {
  if (!d.ok || d.event?.t !== "tx" || !d.event.payout) return d;
  const ev = d.event;
  return {
    ok: true,
    event: { ...ev, key: null, hash: null },
    result: { payout: ev.payout!, account: viewOf(ev.states[0]!), applied: true, replayed: false },
  };
}

/** Attaches the payout's record to a transaction decision. */
function withPayout(d: Decision, payout: PayoutRecord | undefined): Decision {
  if (!d.ok || !payout || d.event?.t !== "tx") return d;
  return { ...d, event: { ...d.event, payout } };
}
