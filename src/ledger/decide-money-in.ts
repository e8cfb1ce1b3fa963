// Owns money in and its reversals, in the buyer's shard: a deposit (Stripe clearing -> user,
// repaying chargeback debt first) and a refund or chargeback (what is available is taken back,
// the rest becomes debt). Pure.
import {
  bump,
  checkAmount,
  type DecideContext,
  type Decision,
  sysAccount,
  txDecision,
  txRecord,
} from "./decision.ts";
import type { AccountMem } from "./state.ts";
import type { AccountState, DepositCommand, FraudLogRecord, Posting, ReversalCommand } from "./types.ts";

export function decideDeposit(
  cmd: DepositCommand,
  user: AccountMem,
  hash: string,
  ctx: DecideContext,
): Decision {
  const bad = checkAmount(cmd.amountCents);
  if (bad) return bad;
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

export function decideReversal(
  cmd: ReversalCommand,
  user: AccountMem,
  hash: string,
  ctx: DecideContext,
): Decision {
  const bad = checkAmount(cmd.amountCents);
  if (bad) return bad;
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
