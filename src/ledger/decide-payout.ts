// Owns the two phases of a payout, in the creator's shard: reserve (available drops, balance
// stays; counts toward the velocity rules) and finish (post: balance and reserve drop and the
// money moves to payouts clearing; void: the reserve is released). Pure.
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
import type { AccountMem } from "./state.ts";
import type {
  AccountStatus,
  PostPayoutCommand,
  Posting,
  ReservePayoutCommand,
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
  if (user.payouts.has(cmd.payoutId)) {
    return refuse("conflict", "a payout with this id already exists", { payout_id: cmd.payoutId });
  }
  const extra = { payout_id: cmd.payoutId };
  const checked = checkOutgoing(
    ctx,
    user,
    cmd.amountCents,
    null,
    extra,
    "not enough available balance for this payout",
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
  const state = bump(user.state, { reservedCents: user.state.reservedCents + cmd.amountCents });
  return txDecision(tx, [], [state], cmd.key, hash, checked.allowed);
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
  const amount = payout.amountCents;
  const post = cmd.kind === "post_payout";
  const state = post
    ? bump(user.state, {
        balanceCents: user.state.balanceCents - amount,
        reservedCents: user.state.reservedCents - amount,
      })
    : bump(user.state, { reservedCents: user.state.reservedCents - amount });
  const finish: PayoutFinish = {
    key: cmd.key,
    hash,
    at: ctx.at,
    balance_after_cents: state.balanceCents,
    reserved_after_cents: state.reservedCents,
    debt_after_cents: state.debtCents,
    version_after: state.version,
    status_after: state.status,
  };
  const metadata: Record<string, unknown> = { ...payout.metadata, finish };
  if (cmd.kind === "void_payout" && cmd.reason) metadata.void_reason = cmd.reason;
  const tx: TransactionRecord = { ...payout, status: post ? "completed" : "failed", metadata };
  if (!post) return txDecision(tx, [], [state], cmd.key, hash, []);
  const clearing = sysAccount(ctx, "payouts_clearing");
  const postings: Posting[] = [
    { accountId: user.state.id, amountCents: -amount },
    { accountId: clearing.state.id, amountCents: amount },
  ];
  const states = [state, bump(clearing.state, { balanceCents: clearing.state.balanceCents + amount })];
  return txDecision(tx, postings, states, cmd.key, hash, []);
}
