// Kill -9 at random moments: the ledger runs in a child process against a Redis with
// appendfsync always, is killed mid-burst several times (Redis too, once), and after the last
// restart every acknowledged tip is in Postgres exactly once and the books balance. The same
// test runs against a single Redis and against a three-master Redis Cluster (every node killed
// at once, as a power cut would).
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startCore } from "../../src/main/core.ts";
import { loadConfig } from "../../src/config.ts";
import { reconcileLedger } from "../../src/persist/reconcile.ts";
import { createTestEnv, type TestEnv, waitFor } from "../helpers/env.ts";
import { createUsers, key, settle, silentLogger } from "../helpers/ledger.ts";
import { RedisCluster } from "../helpers/redis-cluster.ts";
import { RedisServer } from "../helpers/redis-server.ts";

const hasRedisServer = spawnSync("redis-server", ["--version"]).status === 0;

/** The WAL's Redis under test: killed and restarted from its append-only files. */
interface WalRedis {
  vars: Record<string, string>;
  kill(): Promise<void>;
  start(): Promise<void>;
  destroy(): Promise<void>;
  /** Keys per cluster node, to show the shards really spread over the masters. */
  keysPerNode?(): Promise<number[]>;
}

const single = async (): Promise<WalRedis> => {
  const r = await RedisServer.start(true);
  return {
    vars: { REDIS_URL: r.url },
    kill: () => r.kill(),
    start: () => r.start(),
    destroy: () => r.destroy(),
  };
};

const cluster = async (): Promise<WalRedis> => {
  const c = await RedisCluster.start(3);
  return {
    vars: { REDIS_CLUSTER_NODES: c.nodes },
    kill: () => c.kill(),
    start: () => c.start(),
    destroy: () => c.destroy(),
    keysPerNode: () => c.keysPerNode(),
  };
};

describe.runIf(hasRedisServer).each([
  ["one Redis", single],
  ["a three-master Redis Cluster", cluster],
] as const)("crash safety on %s", (_, open) => {
  let env: TestEnv;
  let dir: string;
  let redis: WalRedis | null = null;

  beforeAll(async () => {
    env = await createTestEnv("crash");
    dir = mkdtempSync(join(tmpdir(), "threeam-crash-"));
    redis = await open();
  });
  afterAll(async () => {
    await redis?.destroy();
    rmSync(dir, { recursive: true, force: true });
    await env?.cleanup();
  });

  it("keeps every acknowledged tip exactly once across repeated SIGKILLs", async () => {
    const vars = {
      NODE_ENV: "test",
      DATABASE_URL: env.databaseUrl,
      ...redis!.vars,
      REDIS_PREFIX: env.redisPrefix,
      SHARDS: "8",
      LEDGER_LEASE_MS: "2000", // a killed child's lease is taken over at once (its pid is gone); long enough that a loaded machine does not lapse it
      LOG_LEVEL: "silent",
      FRAUD_MAX_TX_PER_HOUR: "1000000",
      FRAUD_MAX_VOLUME_PER_HOUR_USD: "100000000",
    };
    const viewers = await createUsers(env.pool, 200);
    const creators = await createUsers(env.pool, 5);
    const setup = await startCore(loadConfig(vars), silentLogger);
    await Promise.all(
      viewers.map((v) =>
        setup.ledger.submit({ kind: "deposit", key: key(), accountId: v, amountCents: 1_000_000 }),
      ),
    );
    await settle(setup);
    await setup.stop();

    const acked = new Map<string, string>();
    const runs = 4;
    for (let run = 0; run < runs; run++) {
      const plan = join(dir, `plan-${run}.json`);
      writeFileSync(plan, JSON.stringify({ viewers, creators, run }));
      const child = spawn(process.execPath, ["--import", "tsx", "tests/helpers/crash-child.ts"], {
        env: { ...process.env, ...vars, CRASH_PLAN: plan },
        stdio: ["ignore", "pipe", "inherit"],
      });
      const exited = new Promise((r) => child.once("exit", r));
      let ready = false;
      let count = 0;
      createInterface({ input: child.stdout! }).on("line", (line) => {
        if (line === "READY") ready = true;
        const m = /^ACK (\S+) (\S+)$/.exec(line);
        if (m) {
          acked.set(m[1]!, m[2]!);
          count++;
        }
      });
      await waitFor(() => ready && count > 200, 60_000, "child taking tips");
      await new Promise((r) => setTimeout(r, 50 + Math.random() * 400)); // a random moment mid-burst
      child.kill("SIGKILL");
      await exited;
      if (run === 1) {
        // Once, Redis dies too: what it acknowledged must come back from its append-only file.
        await redis!.kill();
        await redis!.start();
      }
    }
    expect(acked.size).toBeGreaterThan(runs * 200);
    if (redis!.keysPerNode) {
      const perNode = await redis!.keysPerNode();
      expect(
        perNode.every((n) => n > 0),
        `keys per node: ${perNode.join(", ")}`,
      ).toBe(true);
    }

    const final = await startCore(loadConfig(vars), silentLogger);
    try {
      await settle(final);
      const rows = await env.pool.query<{ id: string; idempotency_key: string }>(
        "SELECT id, idempotency_key FROM transactions WHERE type = 'tip'",
      );
      const byKey = new Map<string, string[]>();
      for (const r of rows.rows)
        byKey.set(r.idempotency_key, [...(byKey.get(r.idempotency_key) ?? []), r.id]);
      const missing = [...acked].filter(([k, id]) => byKey.get(k)?.[0] !== id);
      expect(missing).toEqual([]);
      const dupes = [...byKey].filter(([, ids]) => ids.length > 1);
      expect(dupes).toEqual([]);
      const report = await reconcileLedger(env.pool, final.ledger.snapshot());
      expect(report.memoryMismatches).toEqual([]);
      expect(report).toMatchObject({ ok: true, totalBalanceCents: 0 });
      // Every viewer paid exactly for its tips in Postgres, and every creator got the net of them.
      const paid = await env.pool.query<{ n: string }>(
        `SELECT count(*) AS n FROM ledger l
           LEFT JOIN (SELECT from_user_id, sum(amount_cents) AS s FROM transactions WHERE type = 'tip' GROUP BY 1) t
             ON t.from_user_id = l.id
          WHERE l.id = ANY($1) AND l.balance_cents <> 1000000 - coalesce(t.s, 0)`,
        [viewers],
      );
      expect(Number(paid.rows[0]!.n)).toBe(0);
      const got = await env.pool.query<{ n: string }>(
        `SELECT count(*) AS n FROM ledger l
           LEFT JOIN (SELECT to_user_id, sum(net_amount_cents) AS s FROM transactions WHERE type = 'tip' GROUP BY 1) t
             ON t.to_user_id = l.id
          WHERE l.id = ANY($1) AND l.balance_cents <> coalesce(t.s, 0)`,
        [creators],
      );
      expect(Number(got.rows[0]!.n)).toBe(0);
    } finally {
      await final.stop();
    }
  });
});
