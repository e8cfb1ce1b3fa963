// Owns suspension and reinstatement: the account's own shard decides it, and the runtime then
// tells the directory, which is what other shards' tip decisions read. Pure.
import type { StatusEvent } from "./events.ts";
import { bump, type DecideContext, type Decision } from "./decision.ts";
import { type AccountMem, viewOf } from "./state.ts";
import type { SetStatusCommand } from "./types.ts";

export function decideStatus(
  cmd: SetStatusCommand,
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
    at: ctx.at,
  };
  return { ok: true, event, result: { account: viewOf(state), replayed: false } };
}
