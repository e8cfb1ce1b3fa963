// Owns the start-up check that SHARDS matches the WAL: accounts are placed by hash mod SHARDS,
// so entries written under one count cannot be replayed under another. The count is recorded in
// ledger_meta; a different one is taken only once the WAL holds no entries.
import type pg from "pg";
import { readLedgerMeta, writeLedgerMeta } from "../persist/ledger-meta.ts";
import type { RedisWal } from "../wal/wal-writer.ts";

export class ShardCountError extends Error {}

export async function checkShardCount(pool: pg.Pool, wal: RedisWal, shards: number): Promise<void> {
  const recorded = await readLedgerMeta(pool, "shards");
  if (recorded !== null && Number(recorded) !== shards) {
    const counts = await wal.entryCounts(Math.max(Number(recorded), shards));
    const waiting = counts.reduce((a, b) => a + b, 0);
    if (waiting > 0) {
      throw new ShardCountError(
        `SHARDS=${shards}, but the WAL holds ${waiting} entries written with SHARDS=${recorded}: start with SHARDS=${recorded} until they are persisted (GET /readyz: wal.unpersisted_entries 0, then stop), then change it`,
      );
    }
  }
  await writeLedgerMeta(pool, "shards", String(shards));
}
