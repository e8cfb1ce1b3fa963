// Helpers for tests of shards spread over processes (LEDGER_SPREAD, issue 17): several API servers,
// each with its own Core, started in one test process on one database and Redis prefix.
import type { Api } from "./api.ts";
import { waitFor } from "./env.ts";

/**
 * Waits until every shard is owned by exactly one of `procs`, each holding its share, and none of
 * them is still recovering the shards it took: from then on a command reaches an owner that
 * answers it (a recovering owner answers 503).
 */
export async function waitForBalance(procs: Api[], timeoutMs = 30_000): Promise<void> {
  const shards = procs[0]!.core.config.SHARDS;
  const share = Math.floor(shards / procs.length);
  await waitFor(
    () => {
      const owned = procs.map((p) => p.core.ledger.ownedShards());
      const all = owned.flat();
      return (
        all.length === shards &&
        new Set(all).size === shards &&
        owned.every((o) => o.length >= share && o.length <= share + 1) &&
        procs.every((p) => !p.core.ledger.health().recovering)
      );
    },
    timeoutMs,
    `${procs.length} processes to share ${shards} shards`,
  );
}
