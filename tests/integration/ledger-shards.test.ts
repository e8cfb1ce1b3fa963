// Shards that own their accounts, against the real WAL and Postgres: placement, a suspension
// racing tips in flight, recovery that pages through a WAL larger than a page, the shard count
// recorded in ledger_meta, and payout keys that never expire.
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { shardOf } from "../../src/ledger/accounts.ts";
import type { StatusResult, TxResult, UserCommand } from "../../src/ledger/types.ts";
import { type Core, DependencyError } from "../../src/main/core.ts";
import { readLedgerMeta } from "../../src/persist/ledger-meta.ts";
import { reconcileLedger } from "../../src/persist/reconcile.ts";
import { redisKeys } from "../../src/redis/keys.ts";
import { decodeEntry } from "../../src/wal/wal-codec.ts";
import { createTestEnv, type TestEnv, waitFor } from "../helpers/env.ts";
import { createUsers, deposit, key, settle, startTestCore, tip } from "../helpers/ledger.ts";

const envs: TestEnv[] = [];
const cores: Core[] = [];
let env: TestEnv;

beforeAll(async () => {
  env = await newEnv("shards");
});
afterAll(async () => {
  for (const c of cores.splice(0)) await c.stop().catch(() => {});
  for (const e of envs) await e.cleanup();
});

async function newEnv(label: string): Promise<TestEnv> {
  const e = await createTestEnv(label);
  envs.push(e);
  return e;
}
async function start(e: TestEnv, overrides: Record<string, string> = {}, persist = true): Promise<Core> {
  const c = await startTestCore(e, overrides, persist);
  cores.push(c);
  return c;
}
async function stop(c: Core): Promise<void> {
  cores.splice(cores.indexOf(c), 1);
  await c.stop();
}

const setStatus = (c: Core, accountId: string, status: "active" | "suspended") =>
  c.ledger.submit({ kind: "set_status", key: key(), accountId, status }) as Promise<StatusResult>;

/** Postgres equals memory, every account's entries sum to its balance, and all money sums to 0. */
async function expectReconciled(c: Core): Promise<void> {
  const report = await reconcileLedger(c.pool, c.ledger.snapshot());
  expect(report.memoryMismatches).toEqual([]);
  expect(report).toMatchObject({ ok: true, totalBalanceCents: 0 });
}

async function walLengths(e: TestEnv, shards: number): Promise<number[]> {
  return Promise.all(
    Array.from({ length: shards }, (_, s) => e.redis.xlen(redisKeys(e.redisPrefix).walStream(s))),
  );
}

describe("shards own their accounts", () => {
  it("holds in each shard only the accounts placed on it, a tip's recipient only in its own", async () => {
    const c = await start(env);
    const n = c.ledger.shards.length;
    const viewers = await createUsers(env.pool, 24);
    // Creators nobody has touched yet: the tip is what brings them into memory.
    const creators = await createUsers(env.pool, 8);
    await Promise.all(viewers.map((v) => deposit(c, v, 10_000)));
    const everyone = [...creators, ...viewers];
    const pairs: Array<[string, string]> = viewers.map((v, i) => {
      for (let j = 1; ; j++) {
        const to = everyone[(i + j) % everyone.length]!;
        if (shardOf(to, n) !== shardOf(v, n)) return [v, to];
      }
    });
    const acked = await Promise.all(pairs.map(([from, to]) => tip(c, from, to, 100)));
    expect(acked).toHaveLength(24);
    await settle(c);

    for (const [i, shard] of c.ledger.shards.entries()) {
      const misplaced = [...shard.accounts.keys()].filter((id) => shardOf(id, n) !== i);
      expect(misplaced, `shard ${i}`).toEqual([]);
    }
    for (const [from, to] of pairs) {
      expect(shardOf(from, n)).not.toBe(shardOf(to, n));
      const holders = c.ledger.shards.filter((s) => s.accounts.has(to)).map((s) => s.id);
      expect(holders).toEqual([shardOf(to, n)]);
      expect(c.ledger.shards[shardOf(from, n)]!.accounts.has(to)).toBe(false);
    }
    // A tip of 100 leaves 97 to its recipient.
    for (const id of everyone) {
      const received = pairs.filter(([, to]) => to === id).length;
      const start = creators.includes(id) ? 0 : 10_000 - 100;
      expect((await c.ledger.getAccount(id)).balanceCents).toBe(start + 97 * received);
    }
    await expectReconciled(c);
    await stop(c);
  });
});

describe("a suspension racing tips in flight", () => {
  it("refuses every tip after the suspension, credits every acknowledged one, and reinstates", async () => {
    const limits = { FRAUD_MAX_TX_PER_HOUR: "1000" };
    const first = await start(env, limits);
    const n = first.ledger.shards.length;
    const [creator] = await createUsers(env.pool, 1);
    const home = shardOf(creator!, n);
    // Warm viewers (in memory when the burst starts) and cold ones (loaded first) on disjoint
    // shards, so the warm ones' tips are decided the moment they are submitted.
    const others = (await createUsers(env.pool, 400)).filter((v) => shardOf(v, n) !== home);
    const warm = others.filter((v) => shardOf(v, n) % 2 === 0).slice(0, 75);
    const cold = others.filter((v) => shardOf(v, n) % 2 === 1).slice(0, 75);
    expect([warm.length, cold.length]).toEqual([75, 75]);
    const viewers = [...warm, ...cold];
    await Promise.all(viewers.map((v) => deposit(first, v, 10_000)));
    await settle(first);
    await stop(first);

    // A fresh process: the cold viewers' tips wait in a mailbox for their accounts to load while
    // the suspension is decided; the warm viewers' tips just before it are still on their way to
    // the WAL, so their credits reach a creator who is already suspended.
    const c = await start(env, limits);
    await c.ledger.getAccount(creator!);
    await Promise.all(warm.map((v) => c.ledger.getAccount(v)));

    const sent: Array<{ from: string; amountCents: number; done: Promise<TxResult> }> = [];
    let suspension: Promise<StatusResult> | null = null;
    let creditedBeforeSuspension = -1;
    for (let round = 0; round < 10; round++) {
      for (let j = 0; j < 30; j++) {
        const i = round * 30 + j;
        const from = viewers[(i * 7) % 150]!;
        const amountCents = 100 + (i % 37);
        const done = tip(c, from, creator!, amountCents);
        done.catch(() => {}); // inspected below, once all have settled
        sent.push({ from, amountCents, done });
      }
      if (round === 4) {
        creditedBeforeSuspension = c.ledger.probe().memoryOf(creator!)!.state.balanceCents;
        suspension = setStatus(c, creator!, "suspended");
      }
      // Let flushes and credits of earlier rounds interleave with later submissions.
      await new Promise((r) => setImmediate(r));
    }
    const suspended = await suspension!;
    expect(suspended.account.status).toBe("suspended");

    // Submitted once the suspension was answered: refused, whichever shard decides it.
    const late = await Promise.allSettled(viewers.slice(0, 50).map((v) => tip(c, v, creator!, 100)));
    for (const r of late) {
      expect(r.status).toBe("rejected");
      expect((r as PromiseRejectedResult).reason).toMatchObject({
        code: "fraud_blocked",
        details: { rule: "suspended_account", severity: "critical", suspended: "recipient" },
      });
    }

    const outcomes = await Promise.allSettled(sent.map((s) => s.done));
    const acked: Array<{ from: string; amountCents: number; tx: TxResult }> = [];
    let refused = 0;
    for (const [i, r] of outcomes.entries()) {
      if (r.status === "fulfilled") {
        acked.push({ ...sent[i]!, tx: r.value });
      } else {
        refused++;
        expect(r.reason).toMatchObject({ code: "fraud_blocked", details: { rule: "suspended_account" } });
      }
    }
    // Both sides of the race happened: some tips got in before the suspension, some did not.
    expect(acked.length).toBeGreaterThan(0);
    expect(refused).toBeGreaterThan(0);

    await settle(c);
    const net = acked.reduce((a, t) => a + t.tx.transaction.netAmountCents, 0);
    const creatorView = await c.ledger.getAccount(creator!);
    expect(creatorView).toMatchObject({ balanceCents: net, status: "suspended" });
    // Acknowledged tips were credited after the suspension was decided: the race happened.
    expect(net).toBeGreaterThan(creditedBeforeSuspension);
    const spent = new Map<string, number>();
    for (const t of acked) spent.set(t.from, (spent.get(t.from) ?? 0) + t.amountCents);
    for (const v of viewers) {
      expect((await c.ledger.getAccount(v)).balanceCents).toBe(10_000 - (spent.get(v) ?? 0));
    }
    const pg = await env.pool.query(
      `SELECT (SELECT balance_cents FROM ledger WHERE id = $1) AS balance,
              (SELECT count(*)::int FROM transactions WHERE to_user_id = $1) AS tips,
              (SELECT count(*)::int FROM fraud_logs WHERE rule = 'suspended_account' AND action = 'blocked'
                  AND context->>'to_user_id' = $1::text) AS blocked`,
      [creator],
    );
    expect(pg.rows[0]).toEqual({ balance: net, tips: acked.length, blocked: refused + late.length });
    await expectReconciled(c);

    await setStatus(c, creator!, "active");
    const again = await tip(c, viewers[0]!, creator!, 1_000);
    await settle(c);
    expect((await c.ledger.getAccount(creator!)).balanceCents).toBe(net + again.transaction.netAmountCents);
    await expectReconciled(c);
    await stop(c);
  });
});

describe("recovery pages through the WAL", () => {
  it("rebuilds every balance from a WAL several pages long, crediting every tip exactly once", async () => {
    const e = await newEnv("shards_paged");
    const settings = { RECOVERY_PAGE_ENTRIES: "5", FRAUD_MAX_TX_PER_HOUR: "1000" };
    const a = await start(e, settings, false);
    const users = await createUsers(e.pool, 24);
    // Receives one tip and nothing after it, so its credit entry can go missing at the end.
    const [lonely] = await createUsers(e.pool, 1);
    const model = new Map<string, number>([[lonely!, 0]]);
    await Promise.all(users.map((u) => deposit(a, u, 5_000)));
    for (const u of users) model.set(u, 5_000);
    const tips: TxResult[] = [];
    let lone: TxResult | null = null;
    const quiet = () => waitFor(() => a.ledger.probe().quiescent(), 5_000, "ledger quiescent");
    for (let round = 0; round < 8; round++) {
      // One batch at a time: each round's debits and then its credits are entries of their own.
      const batch = await Promise.all(
        users.map((u, i) => tip(a, u, users[(i + 1 + round) % users.length]!, 1 + ((round * 13 + i) % 90))),
      );
      tips.push(...batch);
      await quiet();
      if (round === 3) {
        lone = await tip(a, users[5]!, lonely!, 777);
        tips.push(lone);
        await quiet();
      }
    }
    for (const t of tips) {
      const x = t.transaction;
      model.set(x.fromAccountId!, model.get(x.fromAccountId!)! - x.amountCents);
      model.set(x.toAccountId!, model.get(x.toAccountId!)! + x.netAmountCents);
    }
    const lengths = await walLengths(e, a.ledger.shards.length);
    expect(lengths.filter((l) => l > 5).length, `stream lengths ${lengths}`).toBeGreaterThanOrEqual(3);
    await stop(a);

    // The lonely credit never made it: its debit is durable, its credit entry is gone.
    const stream = redisKeys(e.redisPrefix).walStream(shardOf(lonely!, a.ledger.shards.length));
    const entries = (await e.redis.xrange(stream, "-", "+")) as Array<[string, string[]]>;
    const credit = entries.find(([, f]) =>
      decodeEntry(f).some((ev) => ev.t === "credit" && ev.items.some((i) => i.txId === lone!.transaction.id)),
    )!;
    expect(decodeEntry(credit[1])).toHaveLength(1);
    await e.redis.xdel(stream, credit[0]);

    const b = await start(e, settings);
    for (const [id, cents] of model) expect((await b.ledger.getAccount(id)).balanceCents, id).toBe(cents);
    await settle(b);
    await expectReconciled(b);
    const legs = await e.pool.query<{ tx: string; account: string; amount: number }>(
      `SELECT transaction_id::text AS tx, account_id::text AS account, amount_cents AS amount
         FROM ledger_entries WHERE transaction_id = ANY($1::uuid[])`,
      [tips.map((t) => t.transaction.id)],
    );
    for (const t of tips) {
      const x = t.transaction;
      const of = (id: string) =>
        legs.rows.filter((r) => r.tx === x.id && r.account === id).map((r) => r.amount);
      expect(of(x.toAccountId!), `credit of ${x.id}`).toEqual([x.netAmountCents]);
      expect(of(x.fromAccountId!), `debit of ${x.id}`).toEqual([-x.amountCents]);
    }
    const count = await e.pool.query("SELECT count(*)::int AS n FROM transactions WHERE type = 'tip'");
    expect(count.rows[0].n).toBe(tips.length);
    await stop(b);
  });
});

describe("the shard count", () => {
  it("refuses another SHARDS while the WAL holds entries, and takes it once they are persisted", async () => {
    const e = await newEnv("shards_count");
    const a = await start(e, { SHARDS: "8" }, false);
    const [viewer, creator] = await createUsers(e.pool, 2);
    await deposit(a, viewer!, 1_000);
    const t = await tip(a, viewer!, creator!, 300);
    await waitFor(() => a.ledger.probe().quiescent(), 5_000, "ledger quiescent");
    await stop(a);
    expect((await walLengths(e, 8)).reduce((x, y) => x + y, 0)).toBeGreaterThan(0);

    await expectRefusedStart(e, 16, 8);
    expect(await readLedgerMeta(e.pool, "shards")).toBe("8");

    const b = await start(e, { SHARDS: "8" });
    await settle(b);
    await waitFor(
      async () => (await walLengths(e, 16)).every((l) => l === 0),
      10_000,
      "WAL trimmed after persisting",
    );
    await stop(b);

    const c = await start(e, { SHARDS: "16" });
    expect(c.ledger.shards).toHaveLength(16);
    expect(await readLedgerMeta(e.pool, "shards")).toBe("16");
    expect((await c.ledger.getAccount(viewer!)).balanceCents).toBe(700);
    expect((await c.ledger.getAccount(creator!)).balanceCents).toBe(t.transaction.netAmountCents);
    await tip(c, viewer!, creator!, 100);
    await settle(c);
    expect((await c.ledger.getAccount(creator!)).balanceCents).toBe(t.transaction.netAmountCents + 97);
    await expectReconciled(c);
    await stop(c);

    // And back: entries only in streams 8-15, which SHARDS=8 would never read.
    const d = await start(e, { SHARDS: "16" }, false);
    const high = (await createUsers(e.pool, 64)).filter((id) => shardOf(id, 16) >= 8);
    await deposit(d, high[0]!, 1_000);
    await tip(d, high[0]!, high[1]!, 100);
    await waitFor(() => d.ledger.probe().quiescent(), 5_000, "ledger quiescent");
    await stop(d);
    const lengths = await walLengths(e, 16);
    expect(lengths.slice(0, 8).every((l) => l === 0) && lengths.slice(8).some((l) => l > 0)).toBe(true);
    await expectRefusedStart(e, 8, 16);
    const f = await start(e, { SHARDS: "16" });
    await settle(f);
    await expectReconciled(f);
    await stop(f);
  });
});

/** Starting with SHARDS=`wanted` fails in one line that names both counts; nothing is left running. */
async function expectRefusedStart(e: TestEnv, wanted: number, recorded: number): Promise<void> {
  const refused = await startTestCore(e, { SHARDS: String(wanted) }).then(
    async (c) => {
      await c.stop();
      return null;
    },
    (err: unknown) => err,
  );
  expect(refused).toBeInstanceOf(DependencyError);
  expect((refused as Error).message).toMatch(new RegExp(`SHARDS=${wanted}\\b`));
  expect((refused as Error).message).toMatch(new RegExp(`SHARDS=${recorded}\\b`));
}

describe("payout keys never expire", () => {
  it("replays a payout's post past IDEMPOTENCY_TTL_MS and after a restart, and refuses another post", async () => {
    const ttl = { IDEMPOTENCY_TTL_MS: "60000" };
    const a = await start(env, ttl);
    const [creator, fan] = await createUsers(env.pool, 2);
    // Only earned money may be paid out: the creator earns 50.00 net of a 51.55 tip.
    await deposit(a, fan!, 5_155);
    await a.ledger.submit({
      kind: "tip",
      key: key(),
      fromAccountId: fan!,
      toAccountId: creator!,
      amountCents: 5_155,
    });
    await waitFor(async () => (await a.ledger.getAccount(creator!)).balanceCents === 5_000, 10_000, "credit");
    const payoutId = randomUUID();
    const post: UserCommand = { kind: "post_payout", key: key(), accountId: creator!, payoutId };
    await a.ledger.submit({
      kind: "reserve_payout",
      key: key(),
      accountId: creator!,
      payoutId,
      amountCents: 2_000,
    });
    const posted = (await a.ledger.submit(post)) as TxResult;
    expect(posted).toMatchObject({
      replayed: false,
      transaction: { id: payoutId, status: "completed" },
      account: { balanceCents: 3_000, reservedCents: 0 },
    });
    await settle(a);
    await stop(a);

    const realNow = Date.now;
    try {
      for (const laterMs of [61_000, 25 * 3_600_000]) {
        Date.now = () => realNow() + laterMs;
        const b = await start(env, ttl);
        const again = (await b.ledger.submit(post)) as TxResult;
        expect(again, `after ${laterMs} ms`).toEqual({ ...posted, replayed: true });
        // Another outcome key for the same payout is not a second post. Past the velocity hour a
        // finished payout is no longer loaded, and the refusal says not_found rather than conflict.
        const other = b.ledger.submit({ ...post, key: key() });
        if (laterMs < 3_600_000) await expect(other).rejects.toMatchObject({ code: "conflict" });
        else
          await expect(other).rejects.toMatchObject({
            code: expect.stringMatching(/^(conflict|not_found)$/),
          });
        expect((await b.ledger.getAccount(creator!)).balanceCents).toBe(3_000);
        await settle(b);
        await expectReconciled(b);
        await stop(b);
      }
    } finally {
      Date.now = realNow;
    }
  });
});
