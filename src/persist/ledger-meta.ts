// Owns the ledger_meta table (sql/001_ledger.sql): facts the ledger records about itself, such as
// the shard count, which WAL entries depend on (accounts are placed by hash mod SHARDS).
import type pg from "pg";

export async function readLedgerMeta(pool: pg.Pool, key: string): Promise<string | null> {
  const r = await pool.query<{ value: string }>("SELECT value FROM ledger_meta WHERE key = $1", [key]);
  return r.rows[0]?.value ?? null;
}

export async function writeLedgerMeta(pool: pg.Pool, key: string, value: string): Promise<void> {
  await pool.query(
    `INSERT INTO ledger_meta (key, value) VALUES ($1, $2)
     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value WHERE ledger_meta.value <> EXCLUDED.value`,
    [key, value],
  );
}
