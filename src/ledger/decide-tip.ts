// Owns a tip's decision, in the sender's shard: the fraud rules, the balance check, the fee legs
// on this shard's system accounts, and the net amount owed to the recipient as a credit that the
// recipient's shard applies once this event is durable. Pure.
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
import { type FeeSplit, splitTip } from "./fee-split.ts";
import type { AccountMem } from "./state.ts";
import type { Posting, TipCommand } from "./types.ts";

export function decideTip(cmd: TipCommand, sender: AccountMem, hash: string, ctx: DecideContext): Decision {
  const bad = checkAmount(cmd.amountCents);
  if (bad) return bad;
  // The recipient belongs to another shard (or this one): its existence, kind and status come
  // from the directory, never from its memory. In one process the directory learns a status
  // change the moment the recipient's shard decides it, so a tip decided after a suspension is
  // decided is refused; one decided just before is credited, as it was acknowledged first.
  const self = cmd.toAccountId === sender.state.id;
  const recipient = self ? undefined : ctx.directory(cmd.toAccountId);
  if (!self && recipient?.kind !== "user") return refuse("not_found", "recipient account not found");
  const extra = { to_user_id: cmd.toAccountId };
  const to = { id: cmd.toAccountId, status: recipient?.status ?? sender.state.status };
  const checked = checkOutgoing(ctx, sender, cmd.amountCents, to, extra, "not enough credits for this tip");
  if ("refused" in checked) return checked.refused;
  const split = splitTip(cmd.amountCents);
  const tx = txRecord(ctx, cmd.type ?? "tip", "completed", sender.state.id, {
    fromAccountId: sender.state.id,
    toAccountId: cmd.toAccountId,
    amountCents: split.amountCents,
    platformFeeCents: split.platformFeeCents,
    charityFeeCents: split.charityFeeCents,
    netAmountCents: split.netAmountCents,
    metadata: cmd.metadata ?? {},
  });
  const postings = tipPostings(sender.state.id, split, ctx.system.platform_revenue, ctx.system.charity);
  const states = [bump(sender.state, { balanceCents: sender.state.balanceCents - split.amountCents })];
  if (split.platformKeepsCents > 0) {
    const platform = sysAccount(ctx, "platform_revenue");
    states.push(
      bump(platform.state, { balanceCents: platform.state.balanceCents + split.platformKeepsCents }),
    );
  }
  if (split.charityFeeCents > 0) {
    const charity = sysAccount(ctx, "charity");
    states.push(bump(charity.state, { balanceCents: charity.state.balanceCents + split.charityFeeCents }));
  }
  const credits = [{ accountId: cmd.toAccountId, txId: tx.id, amountCents: split.netAmountCents }];
  return txDecision(tx, postings, states, cmd.key, hash, checked.allowed, credits);
}

/**
 * A tip's sender-side legs: the sender -amount, the deciding shard's platform account +(fee -
 * charity) and its charity account +charity, a leg of 0 left out. The persister stores no row for
 * postings that are exactly these (round-batch tipLegsImplied; sql/007_lean_journal.sql).
 */
export function tipPostings(
  senderId: string,
  split: FeeSplit,
  platformId: string,
  charityId: string,
): Posting[] {
  const postings: Posting[] = [{ accountId: senderId, amountCents: -split.amountCents }];
  if (split.platformKeepsCents > 0)
    postings.push({ accountId: platformId, amountCents: split.platformKeepsCents });
  if (split.charityFeeCents > 0) postings.push({ accountId: charityId, amountCents: split.charityFeeCents });
  return postings;
}
