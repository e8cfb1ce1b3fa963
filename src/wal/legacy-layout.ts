// Owns the upgrade from the layout before per-shard leases: one lease for the whole ledger
// (`ledger:owner`) and WAL streams without hash tags (`wal:<shard>`). A process of that version
// must be gone before this one appends (two writers under two lease schemes could both
// acknowledge), and WAL entries it left unpersisted move to the tagged streams with RENAME, which
// keeps the entries, their ids and the persister's consumer group. Only a single Redis can hold
// the old layout: a cluster never ran it.
import type { Logger } from "pino";
import { isCluster, type RedisClient } from "../redis/connect.ts";
import { redisKeys } from "../redis/keys.ts";

/** The most shards SHARDS allows (config.ts); every old stream name up to it is looked at. */
const SHARDS_MAX = 4096;

export async function adoptLegacyLayout(
  redis: RedisClient,
  prefix: string,
  leaseMs: number,
  logger: Logger,
): Promise<void> {
  if (isCluster(redis)) return;
  const keys = redisKeys(prefix);
  const deadline = Date.now() + 2 * leaseMs + 500;
  while ((await redis.exists(keys.legacy.ledgerLease)) === 1) {
    if (Date.now() > deadline) {
      throw new Error(
        `a process of the previous version owns the ledger (lease ${keys.legacy.ledgerLease}); stop it first`,
      );
    }
    await new Promise((r) => setTimeout(r, Math.min(200, leaseMs / 4)));
  }
  const pipe = redis.pipeline();
  for (let s = 0; s < SHARDS_MAX; s++) pipe.exists(keys.legacy.walStream(s));
  const found = ((await pipe.exec()) ?? []).flatMap(([err, n], s) => (!err && Number(n) === 1 ? [s] : []));
  for (const s of found) {
    const from = keys.legacy.walStream(s);
    const to = keys.walStream(s);
    // RENAMENX: never over a stream the new layout already wrote.
    if ((await redis.renamenx(from, to)) !== 1) {
      throw new Error(
        `both ${from} (previous layout) and ${to} hold WAL entries of shard ${s}; persist the old ones first`,
      );
    }
    logger.warn({ from, to }, "moved a WAL stream of the previous layout to its hash-tagged name");
  }
}
