// Ledger benchmark (`npm run bench:ledger`): acknowledged tips/s through the shard actors with no
// WAL (the decision cost alone), with the Redis WAL (what a caller waits for), and events/s the
// persister writes into Postgres. Fraud rules stay on at their defaults, so every viewer sends a
// few tips only and the run seeds enough viewers. Prints a table and writes bench/results/.
import { randomUUID } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { Redis } from "ioredis";
import pg from "pg";
import pino from "pino";
import { loadConfig } from "../src/config.ts";
import { createPool, ensureDatabase } from "../src/db/pool.ts";
import { migrate } from "../src/db/migrate.ts";
import { ledgerSettings } from "../src/main/core.ts";
import { Ledger } from "../src/shards/ledger.ts";
import type { WalLog } from "../src/shards/ports.ts";
import { redisKeys } from "../src/redis/keys.ts";
import { ShardLeases } from "../src/wal/lease.ts";
import { measureCpu } from "./cpu-usage.ts";
import { WAL_FIELD } from "../src/wal/wal-codec.ts";
import { RedisWal } from "../src/wal/wal-writer.ts";
import { AccountStore } from "../src/persist/account-store.ts";
import { Persister } from "../src/persist/persister.ts";
import { reconcileLedger } from "../src/persist/reconcile.ts";

const { values: args } = parseArgs({
  options: {
    tips: { type: "string", default: "200000" },
    "in-flight": { type: "string", default: "4096" },
    quick: { type: "boolean", default: false },
  },
});
const TIPS = args.quick ? 20_000 : Number(args.tips);
const IN_FLIGHT = Number(args["in-flight"]);
const TIPS_PER_VIEWER = 4; // under the default limit of 10 outgoing per hour
const VIEWERS = Math.ceil(TIPS / TIPS_PER_VIEWER);
const CREATORS = 1000;
const dbName = `threeam_bench_${process.pid}`;
const pgAdmin = process.env.BENCH_PG_ADMIN_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const dbUrl = new URL(pgAdmin);
dbUrl.pathname = `/${dbName}`;
const prefix = `bench:${process.pid}:`;
const log = pino({ level: "warn" });

const config = loadConfig({
  ...process.env,
  DATABASE_URL: dbUrl.toString(),
  REDIS_PREFIX: prefix,
  NODE_ENV: "test",
});

async function seedUsers(pool: pg.Pool, n: number): Promise<string[]> {
  const ids = Array.from({ length: n }, () => randomUUID());
  for (let i = 0; i < n; i += 10_000) {
    const chunk = ids.slice(i, i + 10_000);
    await pool.query(
      `INSERT INTO users (id, email, username, display_name) SELECT id, id::text || '@bench.test', id::text, 'bench'
         FROM unnest($1::uuid[]) AS t(id)`,
      [chunk],
    );
    await pool.query(
      "INSERT INTO ledger (id, user_id, kind) SELECT id, id, 'user' FROM unnest($1::uuid[]) AS t(id)",
      [chunk],
    );
  }
  return ids;
}

/** With BENCH_PROFILE=<dir>, a CPU profile of each measured phase lands there (node:inspector). */
async function profiled<T>(name: string, fn: () => Promise<T>): Promise<T> {
  const dir = process.env.BENCH_PROFILE;
  if (!dir) return fn();
  const { Session } = await import("node:inspector/promises");
  const session = new Session();
  session.connect();
  await session.post("Profiler.enable");
  await session.post("Profiler.start");
  try {
    return await fn();
  } finally {
    const { profile } = await session.post("Profiler.stop");
    mkdirSync(dir, { recursive: true });
    writeFileSync(`${dir}/${name}.cpuprofile`, JSON.stringify(profile));
    session.disconnect();
  }
}

/** Submits `count` commands keeping `IN_FLIGHT` outstanding; returns acknowledged per second. */
async function drive(
  count: number,
  make: (i: number) => Promise<unknown>,
): Promise<{ perSec: number; failed: number }> {
  let next = 0;
  let failed = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: Math.min(IN_FLIGHT, count) }, async () => {
      while (next < count) {
        const i = next++;
        await make(i).catch(() => failed++);
      }
    }),
  );
  const secs = (performance.now() - t0) / 1000;
  return { perSec: Math.round((count - failed) / secs), failed };
}

async function main() {
  await ensureDatabase(config.DATABASE_URL);
  const pool = createPool(config.DATABASE_URL, 10);
  await migrate(pool);
  const redis = new Redis(config.REDIS_URL);
  const store = new AccountStore(pool);
  console.log(`seeding ${VIEWERS} viewers and ${CREATORS} creators...`);
  const viewers = await seedUsers(pool, VIEWERS);
  const creators = await seedUsers(pool, CREATORS);
  const rows: Array<{ scenario: string; value: number; unit: string; note: string }> = [];

  // 1. Decisions only: the WAL sink confirms at once.
  const allShards = Array.from({ length: config.SHARDS }, (_, s) => s);
  const lease = new ShardLeases(redis, prefix, allShards, config.LEDGER_LEASE_MS, () => {
    throw new Error("bench lost its ledger lease");
  });
  await lease.acquire();
  const redisWal = new RedisWal(redis, prefix, lease.value);
  const nullWal: WalLog = {
    append: async (b) => b.map(() => ({ ok: true as const, id: "0-1" })),
    readPage: async () => [],
    compareIds: (a, b) => redisWal.compareIds(a, b),
    idAfter: (id) => redisWal.idAfter(id),
    idTimeMs: (id) => redisWal.idTimeMs(id),
  };
  const settings = ledgerSettings(config);
  {
    const ledger = new Ledger({ settings, wal: nullWal, store, logger: log });
    await ledger.start();
    await drive(VIEWERS, (i) =>
      ledger.submit({ kind: "deposit", key: randomUUID(), accountId: viewers[i]!, amountCents: 100_000 }),
    );
    for (let i = 0; i < CREATORS; i += 1000)
      await Promise.all(creators.slice(i, i + 1000).map((c) => ledger.getAccount(c)));
    const r = await profiled("no-wal", () =>
      drive(TIPS, (i) =>
        ledger.submit({
          kind: "tip",
          key: randomUUID(),
          fromAccountId: viewers[i % VIEWERS]!,
          toAccountId: creators[i % CREATORS]!,
          amountCents: 100,
        }),
      ),
    );
    rows.push({
      scenario: "tips through the actors, no WAL",
      value: r.perSec,
      unit: "tips/s",
      note: `${r.failed} refused`,
    });
    await ledger.stop();
  }

  // 2. Through the Redis WAL, persister paused so the WAL alone is measured.
  const ledger = new Ledger({ settings, wal: redisWal, store, logger: log });
  const persister = new Persister({
    redis,
    pool,
    logger: log,
    prefix,
    shards: config.SHARDS,
    readCount: config.PERSIST_READ_COUNT,
    blockMs: config.PERSIST_BLOCK_MS,
    retryMs: config.PERSIST_RETRY_MS,
    lanes: config.PERSIST_LANES,
    trimFloor: (s) => ledger.trimFloor(s),
  });
  await persister.init();
  await ledger.start();
  await drive(VIEWERS, (i) =>
    ledger.submit({ kind: "deposit", key: randomUUID(), accountId: viewers[i]!, amountCents: 100_000 }),
  );
  for (let i = 0; i < CREATORS; i += 1000)
    await Promise.all(creators.slice(i, i + 1000).map((c) => ledger.getAccount(c)));
  await persister.drain();
  const walRun = await profiled("wal", () =>
    drive(TIPS, (i) =>
      ledger.submit({
        kind: "tip",
        key: randomUUID(),
        fromAccountId: viewers[i % VIEWERS]!,
        toAccountId: creators[i % CREATORS]!,
        amountCents: 100,
      }),
    ),
  );
  let walBytes = 0;
  let walEvents = 0;
  for (let sh = 0; sh < config.SHARDS && walEvents < 5000; sh++) {
    const entries = (await redis.xrange(redisKeys(prefix).walStream(sh), "-", "+", "COUNT", 5)) as Array<
      [string, string[]]
    >;
    for (const [, f] of entries) {
      const payload = f[f.indexOf(WAL_FIELD) + 1]!;
      walBytes += payload.length;
      walEvents += (JSON.parse(payload) as unknown[]).length;
    }
  }
  rows.push({
    scenario: "tips acknowledged through the Redis WAL",
    value: walRun.perSec,
    unit: "tips/s",
    note: `${walRun.failed} refused`,
  });
  while (!ledger.probe().quiescent()) await new Promise((r) => setTimeout(r, 5));

  // 3. The persister drains that backlog into Postgres.
  const before = { ...persister.stats };
  const t0 = performance.now();
  // This process is the persister here (in-process lanes): its CPU and Postgres's, per tip.
  const cpuDone = measureCpu(process.pid);
  await profiled("persist", () => persister.drain());
  const cpu = cpuDone();
  const secs = (performance.now() - t0) / 1000;
  const events = persister.stats.events - before.events;
  const tipsPersisted = TIPS - walRun.failed;
  rows.push({
    scenario: "persister: WAL events into Postgres",
    value: Math.round(events / secs),
    unit: "events/s",
    note: `${events} events (tips + credit batches)`,
  });
  rows.push({
    scenario: "persister: tips into Postgres",
    value: Math.round(tipsPersisted / secs),
    unit: "tips/s",
    note: `${tipsPersisted} tips in ${secs.toFixed(2)} s, ${config.PERSIST_LANES} lanes`,
  });
  if (cpu) {
    const perTip = (us: number) => Math.round((us / Math.max(1, tipsPersisted)) * 10) / 10;
    rows.push({
      scenario: "persister: CPU per tip, Postgres",
      value: perTip(cpu.micros.postgres),
      unit: "us",
      note: `persister (this process) ${perTip(cpu.micros.serverMain + cpu.micros.serverOther)} us; Redis ${perTip(cpu.micros.redis)} us`,
    });
  }

  // Baselines measured in the same run, so ratios survive a noisy machine: what Redis and
  // Postgres do for raw batches of the same size with no ledger around them.
  const tipBytes = Math.round(walBytes / Math.max(1, walEvents));
  const payload = "x".repeat(tipBytes * 500);
  const rawEvents = 500 * 400;
  const t1 = performance.now();
  for (let i = 0; i < rawEvents / 500; i += 64) {
    const pipe = redis.pipeline();
    for (let k = 0; k < 64 && i + k < rawEvents / 500; k++) pipe.xadd(`${prefix}raw:${k}`, "*", "e", payload);
    await pipe.exec();
  }
  const rawXadd = Math.round(rawEvents / ((performance.now() - t1) / 1000));
  rows.push({
    scenario: "baseline: raw XADD, 500 events per entry",
    value: rawXadd,
    unit: "events/s",
    note: `${tipBytes} bytes/event`,
  });
  await pool.query(
    "CREATE TABLE bench_raw (id uuid PRIMARY KEY, account uuid, amount bigint, at timestamptz)",
  );
  const rawRows = 100_000;
  const t2 = performance.now();
  for (let i = 0; i < rawRows; i += 5000) {
    const batch = Array.from({ length: 5000 }, () => ({
      id: randomUUID(),
      a: viewers[i % VIEWERS],
      c: 100,
      at: new Date().toISOString(),
    }));
    await pool.query(
      "INSERT INTO bench_raw SELECT id, a, c, at FROM json_to_recordset($1::json) AS x(id uuid, a uuid, c bigint, at timestamptz)",
      [JSON.stringify(batch)],
    );
  }
  const rawPg = Math.round(rawRows / ((performance.now() - t2) / 1000));
  rows.push({
    scenario: "baseline: raw batched Postgres insert",
    value: rawPg,
    unit: "rows/s",
    note: "1 index, 5000 rows per statement",
  });

  const report = await reconcileLedger(pool, ledger.snapshot());
  console.table(rows);
  console.log(
    `reconcile after drain: ${report.ok ? "ok" : "FAILED"} (total ${report.totalBalanceCents} cents)`,
  );
  mkdirSync(new URL("./results/", import.meta.url), { recursive: true });
  writeFileSync(
    new URL(`./results/ledger-${new Date().toISOString().replace(/[:.]/g, "-")}.json`, import.meta.url),
    JSON.stringify(
      {
        at: new Date().toISOString(),
        tips: TIPS,
        inFlight: IN_FLIGHT,
        shards: config.SHARDS,
        rows,
        reconcileOk: report.ok,
      },
      null,
      2,
    ),
  );

  await ledger.stop();
  await persister.stop();
  await lease.release();
  redis.disconnect();
  await pool.end();
  const admin = new pg.Client({ connectionString: pgAdmin });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
  await admin.end();
  const cleaner = new Redis(config.REDIS_URL);
  const keys = await cleaner.keys(`${prefix}*`);
  if (keys.length) await cleaner.del(...keys);
  cleaner.disconnect();
  if (!report.ok) process.exitCode = 1;
}

await main();
