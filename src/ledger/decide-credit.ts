// Owns the recipient shard's side of tips: one event crediting many tips at once, decided only
// after the tips' debits are durable in their senders' WAL streams. Pure.
import type { CreditEvent } from "./events.ts";
import { bump } from "./decision.ts";
import type { AccountMem } from "./state.ts";
import type { CreditCommand } from "./types.ts";

export function decideCredit(cmd: CreditCommand, mem: AccountMem, at: string): CreditEvent {
  let total = 0;
  for (const it of cmd.items) total += it.amountCents;
  // Tips received are earned: the only money a payout may take.
  const state = bump(mem.state, {
    balanceCents: mem.state.balanceCents + total,
    earnedCents: mem.state.earnedCents + total,
  });
  // Every credited item is a tip: each takes the next number of the recipient's feed.
  return {
    t: "credit",
    accountId: mem.state.id,
    items: cmd.items,
    state,
    at,
    feedSeq: mem.feedSeq + cmd.items.length,
  };
}
