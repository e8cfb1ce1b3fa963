// Owns what operators watch of the ledger: every command's outcome and every fraud trigger,
// counted in /metrics and written as log events with stable names (the README's "Log events"
// table). Wired once, by the composition root, to the ledger's hooks.
import type { Logger } from "pino";
import { isAppError } from "../errors.ts";
import { LOG_EVENTS } from "../log-events.ts";
import type { Metrics } from "../http/metrics.ts";
import type { UserCommand } from "../ledger/types.ts";
import type { Ledger } from "../shards/ledger.ts";

export { LOG_EVENTS };

/** The transaction type a command makes (a superlike is a tip of its own type). */
export function commandType(cmd: UserCommand): string {
  if (cmd.kind === "tip") return (cmd as { type?: string }).type ?? "tip";
  return cmd.kind;
}

/** Refusals that are the client's (4xx) are counted; only failures the client cannot fix are logged. */
const FAILED = new Set(["unavailable", "internal"]);

export function observeLedger(ledger: Ledger, metrics: Metrics, logger: Logger): void {
  ledger.onOutcome = (cmd, err, result) => {
    const type = commandType(cmd);
    if (err === null) {
      // A retried key answers the first result again: counted apart, so rates are not doubled.
      const replayed = (result as { replayed?: boolean } | undefined)?.replayed === true;
      return metrics.transaction(type, replayed ? "replayed" : "completed");
    }
    const code = isAppError(err) ? err.code : "internal";
    if (!FAILED.has(code)) return metrics.transaction(type, "refused", code);
    metrics.transaction(type, "failed", code);
    logger.warn(
      {
        event: LOG_EVENTS.transactionFailed,
        type,
        code,
        key: cmd.key,
        err: err instanceof Error ? err.message : String(err),
      },
      "transaction failed",
    );
  };
  // One observer among others (the live feed, the status broadcast): each sees every durable event.
  ledger.observeDurable((events) => {
    // Recovery replays events already counted by the process that made them durable.
    if (ledger.health().recovering) return;
    for (const ev of events) {
      if (!("fraud" in ev)) continue;
      for (const f of ev.fraud) {
        metrics.fraudTriggered(f.rule, f.severity, f.action);
        logger.warn(
          {
            event: LOG_EVENTS.fraudTriggered,
            user_id: f.userId,
            rule: f.rule,
            severity: f.severity,
            action: f.action,
            amount_cents: f.amountCents,
            fraud_log_id: f.id,
          },
          "fraud rule triggered",
        );
      }
    }
  });
}
