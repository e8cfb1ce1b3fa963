// Test isolation: each test file gets its own Postgres database and Redis key prefix, created
// here and dropped after, so files run in parallel and leave nothing behind.
import { randomBytes } from "node:crypto";
import { Redis } from "ioredis";
import pg from "pg";
import { type Config, loadConfig } from "../../src/config.ts";
import { createPool } from "../../src/db/pool.ts";
import { migrate } from "../../src/db/migrate.ts";

export const PG_ADMIN_URL = process.env.TEST_PG_ADMIN_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
export const REDIS_URL = process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379";

export interface TestEnv {
  name: string;
  databaseUrl: string;
  redisPrefix: string;
  pool: pg.Pool;
  redis: Redis;
  config(overrides?: Record<string, string>): Config;
  cleanup(): Promise<void>;
}

export async function createTestEnv(label = "t"): Promise<TestEnv> {
  const name = `test_${label.replace(/[^a-z0-9]/gi, "_").toLowerCase()}_${randomBytes(4).toString("hex")}`;
  const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = new URL(PG_ADMIN_URL);
  url.pathname = `/${name}`;
  const databaseUrl = url.toString();
  const pool = createPool(databaseUrl, 8);
  pool.on("error", () => {}); // tests that cut Postgres off on purpose see idle clients die
  await migrate(pool);
  const redisPrefix = `${name}:`;
  const redis = new Redis(REDIS_URL, { lazyConnect: false, maxRetriesPerRequest: 2 });
  return {
    name,
    databaseUrl,
    redisPrefix,
    pool,
    redis,
    config(overrides = {}) {
      return loadConfig({
        NODE_ENV: "test",
        DATABASE_URL: databaseUrl,
        REDIS_URL,
        REDIS_PREFIX: redisPrefix,
        LOG_LEVEL: "silent",
        SHARDS: "8",
        ...overrides,
      });
    },
    async cleanup() {
      await pool.end().catch(() => {});
      const keys = await scanKeys(redis, `${redisPrefix}*`);
      for (let i = 0; i < keys.length; i += 500) await redis.del(...keys.slice(i, i + 500));
      redis.disconnect();
      const a = new pg.Client({ connectionString: PG_ADMIN_URL });
      await a.connect();
      await a.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await a.end();
    },
  };
}

async function scanKeys(redis: Redis, pattern: string): Promise<string[]> {
  const out: string[] = [];
  let cursor = "0";
  do {
    const [next, keys] = await redis.scan(cursor, "MATCH", pattern, "COUNT", 1000);
    cursor = next;
    out.push(...keys);
  } while (cursor !== "0");
  return out;
}

/** Waits for `check` to return true, polling, until `timeoutMs`; no fixed sleeps in tests. */
export async function waitFor(
  check: () => boolean | Promise<boolean>,
  timeoutMs = 10_000,
  what = "condition",
) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}
