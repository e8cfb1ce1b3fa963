// Owns schema migrations: numbered files in sql/ applied in order, each once, each in its own
// transaction, under an advisory lock so two processes starting together do not race.
import { readdir, readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import type pg from "pg";
import { withClient } from "./pool.ts";

const SQL_DIR = fileURLToPath(new URL("../../sql/", import.meta.url));
const LOCK_ID = 0x3a3a_0001;

export async function migrate(pool: pg.Pool): Promise<string[]> {
  return withClient(pool, async (client) => {
    try {
      await client.query("SELECT pg_advisory_lock($1)", [LOCK_ID]);
      await client.query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
      );
      const done = new Set(
        (await client.query<{ name: string }>("SELECT name FROM schema_migrations")).rows.map((r) => r.name),
      );
      const files = (await readdir(SQL_DIR)).filter((f) => /^\d+_.*\.sql$/.test(f)).sort();
      const applied: string[] = [];
      for (const file of files) {
        if (done.has(file)) continue;
        const sql = await readFile(SQL_DIR + file, "utf8");
        await client.query("BEGIN");
        try {
          await client.query(sql);
          await client.query("INSERT INTO schema_migrations (name) VALUES ($1)", [file]);
          await client.query("COMMIT");
        } catch (err) {
          await client.query("ROLLBACK");
          throw new Error(`migration ${file} failed: ${(err as Error).message}`);
        }
        applied.push(file);
      }
      return applied;
    } finally {
      await client.query("SELECT pg_advisory_unlock($1)", [LOCK_ID]).catch(() => {});
    }
  });
}
