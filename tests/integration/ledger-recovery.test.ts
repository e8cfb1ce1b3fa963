// Restarts, replays and failures: what was acknowledged survives, nothing is applied twice,
// and fraud windows and idempotency keys outlive the process.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Core } from "../../src/main/core.ts";
import type { TxResult } from "../../src/ledger/types.ts";
import { reconcileLedger } from "../../src/persist/reconcile.ts";
import { redisKeys } from "../../src/redis/keys.ts";
import { decodeEntry } from "../../src/wal/wal-codec.ts";
import pg from "pg";
import { createTestEnv, PG_ADMIN_URL, type TestEnv, waitFor } from "../helpers/env.ts";
import { createUsers, key, settle, startTestCore, TestCores, tip } from "../helpers/ledger.ts";

let env: TestEnv;
const cores = new TestCores();
const start = (persist = true): Promise<Core> => cores.start(env, {}, persist);
const stop = (c: Core) => cores.stop(c);

beforeAll(async () => {
  env = await createTestEnv("recovery");
});
afterAll(async () => {
  await cores.stopAll();
  await env?.cleanup();
});

describe("idempotency", () => {
  it("keeps only the keys of the last TTL in memory, and a money-in key replays past it", async () => {
    const c = await startTestCore(env, { IDEMPOTENCY_TTL_MS: "60000" });
    cores.add(c);
    try {
      const [viewer, creator] = await createUsers(env.pool, 2);
      const depositKey = key();
      await c.ledger.submit({ kind: "deposit", key: depositKey, accountId: viewer!, amountCents: 1000 });
      for (let i = 0; i < 3; i++) await tip(c, viewer!, creator!, 100, `old-${i}`);
      const keysOf = (id: string) => [...c.ledger.probe().memoryOf(id)!.keys.keys()];
      expect(keysOf(viewer!)).toEqual([depositKey, "old-0", "old-1", "old-2"]);

      const realNow = Date.now;
      const later = realNow() + 61_000;
      Date.now = () => later;
      try {
        await tip(c, viewer!, creator!, 100, "new");
        expect(keysOf(viewer!)).toEqual(["new"]);
        // The deposit's key left memory, but money in never repeats: Postgres still knows it.
        await settle(c);
        const replay = await c.ledger.submit({
          kind: "deposit",
          key: depositKey,
          accountId: viewer!,
          amountCents: 1000,
        });
        expect(replay).toMatchObject({ replayed: true });
        expect((await c.ledger.getAccount(viewer!)).balanceCents).toBe(600);
      } finally {
        Date.now = realNow;
      }
    } finally {
      await stop(c);
    }
  });

  it("answers a repeated key with the original result, before and after a restart, persisted or not", async () => {
    for (const persisted of [true, false]) {
      const a = await start(persisted);
      const [viewer, creator] = await createUsers(env.pool, 2);
      await a.ledger.submit({ kind: "deposit", key: key(), accountId: viewer!, amountCents: 1000 });
      const k = key();
      const first = await tip(a, viewer!, creator!, 100, k);
      const again = await tip(a, viewer!, creator!, 100, k);
      expect(again).toEqual({ ...first, replayed: true });
      await expect(tip(a, viewer!, creator!, 300, k)).rejects.toMatchObject({ code: "idempotency_conflict" });
      if (persisted) await settle(a);
      await stop(a);
      const b = await start();
      const afterRestart = await tip(b, viewer!, creator!, 100, k);
      expect(afterRestart).toEqual({ ...first, replayed: true });
      await expect(tip(b, viewer!, creator!, 300, k)).rejects.toMatchObject({ code: "idempotency_conflict" });
      await settle(b);
      expect((await b.ledger.getAccount(viewer!)).balanceCents).toBe(900);
      const n = await env.pool.query(
        "SELECT count(*)::int AS n FROM transactions WHERE account_id = $1 AND type = 'tip'",
        [viewer],
      );
      expect(n.rows[0].n).toBe(1);
      await stop(b);
    }
  });

  it("never deposits twice for one key, even once the key has left memory", async () => {
    const a = await start();
    const [viewer] = await createUsers(env.pool, 1);
    const k = "pi_test_123";
    const first = await a.ledger.submit({ kind: "deposit", key: k, accountId: viewer!, amountCents: 5000 });
    await settle(a);
    // Forget every key in memory, as after IDEMPOTENCY_TTL_MS: the durable check must find it.
    a.ledger.probe().memoryOf(viewer!)!.keys.clear();
    const again = await a.ledger.submit({ kind: "deposit", key: k, accountId: viewer!, amountCents: 5000 });
    expect(again).toMatchObject({ replayed: true, transaction: { id: (first as TxResult).transaction.id } });
    expect((await a.ledger.getAccount(viewer!)).balanceCents).toBe(5000);
    await stop(a);
  });
});

describe("fraud windows across restarts", () => {
  it("still refuses the 11th tip in the hour after a restart, persisted or not", async () => {
    for (const persisted of [true, false]) {
      const a = await start(persisted);
      const [viewer, creator] = await createUsers(env.pool, 2);
      await a.ledger.submit({ kind: "deposit", key: key(), accountId: viewer!, amountCents: 10_000 });
      for (let i = 0; i < 6; i++) await tip(a, viewer!, creator!, 100);
      if (persisted) await settle(a);
      await stop(a);
      const b = await start();
      for (let i = 0; i < 4; i++) await tip(b, viewer!, creator!, 100);
      await expect(tip(b, viewer!, creator!, 100)).rejects.toMatchObject({
        code: "fraud_blocked",
        details: { rule: "high_velocity", severity: "high" },
      });
      await settle(b);
      const logs = await env.pool.query("SELECT rule, severity, action FROM fraud_logs WHERE user_id = $1", [
        viewer,
      ]);
      expect(logs.rows).toEqual([{ rule: "high_velocity", severity: "high", action: "blocked" }]);
      await stop(b);
    }
  });
});

describe("tip credits", () => {
  it("re-delivers a credit whose debit was durable when the process died before crediting", async () => {
    const a = await start(false);
    const [viewer, creator] = await createUsers(env.pool, 2);
    await a.ledger.submit({ kind: "deposit", key: key(), accountId: viewer!, amountCents: 1000 });
    const t = await tip(a, viewer!, creator!, 300);
    await waitFor(() => a.ledger.probe().quiescent(), 5000, "ledger quiescent");
    await stop(a);
    // Remove the recipient's credit entry, as if the process died between the two writes.
    const stream = redisKeys(env.redisPrefix).walStream(a.ledger.shardOf(creator!));
    const entries = (await env.redis.xrange(stream, "-", "+")) as Array<[string, string[]]>;
    const credit = entries.find(([, f]) =>
      decodeEntry(f).some((ev) => ev.t === "credit" && ev.items.some((i) => i.txId === t.transaction.id)),
    );
    expect(credit).toBeDefined();
    await env.redis.xdel(stream, credit![0]);
    const b = await start();
    expect((await b.ledger.getAccount(creator!)).balanceCents).toBe(291);
    await settle(b);
    const report = await reconcileLedger(env.pool, b.ledger.snapshot());
    expect(report).toMatchObject({ ok: true });
    const legs = await env.pool.query(
      "SELECT amount_cents FROM ledger_entries WHERE transaction_id = $1 AND account_id = $2",
      [t.transaction.id, creator],
    );
    expect(legs.rows).toEqual([{ amount_cents: 291 }]);
    await stop(b);
  });
});

describe("failures", () => {
  it("answers unavailable when Redis refuses the WAL write, recovers, and the retry applies once", async () => {
    const a = await start();
    const [viewer, creator] = await createUsers(env.pool, 2);
    await a.ledger.submit({ kind: "deposit", key: key(), accountId: viewer!, amountCents: 1000 });
    await settle(a);
    const stream = redisKeys(env.redisPrefix).walStream(a.ledger.shardOf(viewer!));
    await env.redis.del(stream);
    await env.redis.set(stream, "not a stream"); // every XADD on it now fails with WRONGTYPE
    const k = key();
    await expect(tip(a, viewer!, creator!, 100, k)).rejects.toMatchObject({ code: "unavailable" });
    await expect(tip(a, viewer!, creator!, 100, k)).rejects.toMatchObject({ code: "unavailable" });
    expect(a.ledger.health().recovering).toBe(true);
    await env.redis.del(stream);
    await waitFor(() => !a.ledger.health().recovering, 10_000, "recovery");
    const ok = await tip(a, viewer!, creator!, 100, k);
    expect(ok.account.balanceCents).toBe(900);
    expect((await tip(a, viewer!, creator!, 100, k)).replayed).toBe(true);
    await settle(a);
    expect(await reconcileLedger(env.pool, a.ledger.snapshot())).toMatchObject({ ok: true });
    await stop(a);
  });

  it("keeps taking tips while Postgres is unreachable and persists them when it returns", async () => {
    const a = await start();
    const viewers = await createUsers(env.pool, 50);
    const [creator] = await createUsers(env.pool, 1);
    await Promise.all(
      viewers.map((v) => a.ledger.submit({ kind: "deposit", key: key(), accountId: v, amountCents: 1000 })),
    );
    await a.ledger.getAccount(creator!); // in memory: the ledger needs Postgres only to load accounts
    await settle(a);
    const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
    await admin.connect();
    await admin.query(`ALTER DATABASE ${env.name} ALLOW_CONNECTIONS false`);
    await admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", [
      env.name,
    ]);
    const acked = await Promise.all(viewers.map((v) => tip(a, v, creator!, 300)));
    expect(acked).toHaveLength(50);
    await waitFor(() => a.ledger.probe().quiescent(), 5000, "credits durable");
    // The persister (in its thread) reports every 100 ms: the lag shows up, and keeps growing.
    await waitFor(() => a.persister.health().walLagMs > 0, 5000, "WAL lag reported");
    // And the backlog: every entry the tips wrote is unpersisted, not just the last round's.
    await waitFor(() => a.persister.health().unpersistedEntries > 0, 5000, "unpersisted entries reported");
    await admin.query(`ALTER DATABASE ${env.name} ALLOW_CONNECTIONS true`);
    await admin.end();
    await settle(a);
    const n = await env.pool.query("SELECT count(*)::int AS n FROM transactions WHERE to_user_id = $1", [
      creator,
    ]);
    expect(n.rows[0].n).toBe(50);
    expect(await reconcileLedger(env.pool, a.ledger.snapshot())).toMatchObject({ ok: true });
    await stop(a);
  });

  it("stops persisting a shard whose Postgres version is behind the WAL and overwrites nothing", async () => {
    const a = await start();
    const [viewer, creator] = await createUsers(env.pool, 2);
    await a.ledger.submit({ kind: "deposit", key: key(), accountId: viewer!, amountCents: 1000 });
    await tip(a, viewer!, creator!, 100);
    await settle(a);
    // A second writer (or lost update) left Postgres one version behind what the WAL follows.
    await env.pool.query("UPDATE ledger SET version = version - 1, balance_cents = 12345 WHERE id = $1", [
      viewer,
    ]);
    await tip(a, viewer!, creator!, 100);
    await waitFor(() => a.persister.health().halted.length > 0, 10_000, "halt");
    expect(a.persister.health().halted).toEqual([a.ledger.shardOf(viewer!)]);
    const row = await env.pool.query("SELECT balance_cents FROM ledger WHERE id = $1", [viewer]);
    expect(row.rows[0].balance_cents).toBe(12345);
    // The WAL entry is kept for an operator, not acknowledged.
    const len = await env.redis.xlen(redisKeys(env.redisPrefix).walStream(a.ledger.shardOf(viewer!)));
    expect(len).toBeGreaterThan(0);
    await stop(a);
    await env.pool.query("UPDATE ledger SET version = version + 1, balance_cents = 900 WHERE id = $1", [
      viewer,
    ]);
  });
});

describe("memory bounds", () => {
  it("evicts idle, fully persisted accounts beyond ACCOUNT_CACHE_MAX and reloads them intact", async () => {
    const a = await startTestCore(env, { ACCOUNT_CACHE_MAX: "16" });
    cores.add(a);
    const users = await createUsers(env.pool, 40);
    const [busy] = await createUsers(env.pool, 1);
    for (const u of users)
      await a.ledger.submit({ kind: "deposit", key: key(), accountId: u, amountCents: 500 });
    const [first] = users;
    const firstTip = await tip(a, first!, users[1]!, 100, "evict-key");
    // Age everything: accounts unchanged for 100 flushes count as idle.
    for (let i = 0; i < 101; i++)
      await a.ledger.submit({ kind: "deposit", key: key(), accountId: busy!, amountCents: 1 });
    await settle(a);
    const before = a.ledger.snapshot().size;
    const evicted = await a.ledger.evictIdle();
    expect(evicted).toBeGreaterThan(0);
    expect(a.ledger.snapshot().size).toBe(before - evicted);
    expect(a.ledger.snapshot().has(first!)).toBe(false);
    // Reloaded from Postgres: same balance, same idempotency answer, same velocity window.
    expect((await a.ledger.getAccount(first!)).balanceCents).toBe(400);
    expect(await tip(a, first!, users[1]!, 100, "evict-key")).toEqual({ ...firstTip, replayed: true });
    await settle(a);
    expect(await reconcileLedger(env.pool, a.ledger.snapshot())).toMatchObject({ ok: true });
    await stop(a);
  });
});

describe("single owner", () => {
  it("refuses to start a second ledger on the same WAL while the first one runs", async () => {
    const a = await startTestCore(env, { LEDGER_LEASE_MS: "300" });
    cores.add(a);
    await expect(startTestCore(env, { LEDGER_LEASE_MS: "300" })).rejects.toThrow(
      /another process owns the ledger/,
    );
    await stop(a);
    const b = await startTestCore(env, { LEDGER_LEASE_MS: "300" });
    cores.add(b);
    await stop(b);
  });
});
