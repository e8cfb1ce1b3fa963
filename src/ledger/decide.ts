// Owns the entry to the ledger's decisions: a command and the shard's own state in, an event and
// the caller's result (or a refusal) out. Idempotency is settled here, before any rule: a key
// already used replays its first answer, or is refused if the request differs. No I/O and no
// mutation: the shard applies the event with applyEvent once decided, and answers the caller
// only after the WAL confirms. One file per command family decides the rest.
import { decideCredit } from "./decide-credit.ts";
import { decideDeposit, decideReversal } from "./decide-money-in.ts";
import {
  decideFinishPayout,
  decidePayoutOutcome,
  decideReserve,
  decideRetryPayout,
} from "./decide-payout.ts";
import { decideStatus } from "./decide-status.ts";
import { decideTip } from "./decide-tip.ts";
import { type DecideContext, type Decision, refuse } from "./decision.ts";
import type { CreditCommand, UserCommand } from "./types.ts";

export type { DecideContext, Decision };
export { decideCredit };

/** The request fingerprint an idempotency key is bound to: everything but the key. */
export function requestHash(cmd: UserCommand): string {
  switch (cmd.kind) {
    case "tip": {
      const h = tipHash(cmd.fromAccountId, cmd.toAccountId, cmd.amountCents, cmd.metadata ?? {});
      // A superlike never replays a tip sent with the same key (the WAL keeps its hash as is).
      return cmd.type === "superlike" ? `${h}|superlike` : h;
    }
    case "deposit":
      return `deposit|${cmd.accountId}|${cmd.amountCents}|${cmd.stripePaymentId ?? ""}|${stable(cmd.metadata)}`;
    case "reserve_payout":
      return `reserve|${cmd.accountId}|${cmd.payoutId}|${cmd.amountCents}|${stable(cmd.metadata)}`;
    case "post_payout":
      return `post|${cmd.accountId}|${cmd.payoutId}`;
    case "void_payout":
      return `void|${cmd.accountId}|${cmd.payoutId}`;
    case "payout_outcome":
      return `outcome|${cmd.payoutId}|${cmd.round}|${cmd.state}`;
    case "retry_payout":
      return `retry|${cmd.payoutId}|${cmd.round}`;
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

/**
 * Commands whose key must never be honoured twice (money in, payouts and their outcome): a key
 * not in memory is looked up in Postgres before deciding, and one in memory always replays.
 */
export function keyNeverExpires(cmd: UserCommand): boolean {
  return (
    cmd.kind === "deposit" ||
    cmd.kind === "reversal" ||
    cmd.kind === "reserve_payout" ||
    cmd.kind === "post_payout" ||
    cmd.kind === "void_payout"
  );
}

/** The payout a command names, which its shard must have in memory before deciding. */
export function payoutOf(cmd: UserCommand): string | null {
  return "payoutId" in cmd ? cmd.payoutId : null;
}

/** The account whose shard decides a command: the one whose money leaves or is changed. */
export function ownerOf(cmd: UserCommand | CreditCommand): string {
  return cmd.kind === "tip" ? cmd.fromAccountId : cmd.accountId;
}

export function decide(cmd: UserCommand, ctx: DecideContext): Decision {
  const owner = ctx.get(ownerOf(cmd));
  if (!owner || owner.system) return refuse("not_found", "account not found");
  // A payout's outcomes and retries are idempotent by the payout's state, not by key.
  if (cmd.kind === "payout_outcome") return decidePayoutOutcome(cmd, owner, ctx);
  if (cmd.kind === "retry_payout") return decideRetryPayout(cmd, owner, ctx);
  const hash = requestHash(cmd);
  const seen = owner.keys.get(cmd.key);
  // Money in and payouts never repeat, however old their key: only other keys expire.
  if (seen && (keyNeverExpires(cmd) || ctx.nowMs - seen.atMs < ctx.idempotencyTtlMs)) {
    if (seen.hash !== hash) {
      return refuse(
        "idempotency_conflict",
        "this idempotency key was already used with a different request",
        {
          key: cmd.key,
        },
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
