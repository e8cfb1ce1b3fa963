// Concurrency against the real WAL and Postgres: conservation, exact balances, no double spend.
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Core } from "../../src/main/core.ts";
import type { TxResult } from "../../src/ledger/types.ts";
import { reconcileLedger } from "../../src/persist/reconcile.ts";
import { createTestEnv, type TestEnv } from "../helpers/env.ts";
import { createUsers, key, settle, startTestCore } from "../helpers/ledger.ts";

let env: TestEnv;
let core: Core;

beforeAll(async () => {
  env = await createTestEnv("concurrency");
  // Velocity limits would refuse most of these bursts; fraud rules have their own tests.
  core = await startTestCore(env, {
    FRAUD_MAX_TX_PER_HOUR: "100000",
    FRAUD_MAX_VOLUME_PER_HOUR_USD: "100000000",
    SHARDS: "16",
  });
});
afterAll(async () => {
  await core?.stop();
  await env?.cleanup();
});

async function fund(ids: string[], cents: number) {
  await Promise.all(
    ids.map((id) => core.ledger.submit({ kind: "deposit", key: key(), accountId: id, amountCents: cents })),
  );
}

async function sumUserBalances(ids: string[]): Promise<number> {
  const r = await env.pool.query(
    "SELECT coalesce(sum(balance_cents),0)::bigint AS s FROM ledger WHERE id = ANY($1)",
    [ids],
  );
  return Number(r.rows[0].s);
}

describe("ledger under concurrency", () => {
  it("keeps every cent through 10,000 random concurrent tips over 1,000 accounts", async () => {
    const ids = await createUsers(env.pool, 1000);
    await fund(ids, 1000);
    const seed = Date.now() % 1_000_000;
    const rnd = fc.sample(fc.tuple(fc.nat(999), fc.nat(998), fc.integer({ min: 1, max: 400 })), {
      numRuns: 10_000,
      seed,
    });
    const results = await Promise.allSettled(
      rnd.map(([a, b, amount]) => {
        const to = b >= a ? b + 1 : b;
        return core.ledger.submit({
          kind: "tip",
          key: key(),
          fromAccountId: ids[a]!,
          toAccountId: ids[to]!,
          amountCents: amount,
        });
      }),
    );
    const ok = results.filter((r) => r.status === "fulfilled").length;
    const refused = results.filter(
      (r) => r.status === "rejected" && (r.reason as { code?: string }).code === "insufficient_funds",
    ).length;
    expect(ok + refused, `seed ${seed}`).toBe(10_000);
    expect(ok).toBeGreaterThan(5000);
    await settle(core);
    const fees = results
      .filter((r): r is PromiseFulfilledResult<TxResult> => r.status === "fulfilled")
      .reduce((a, r) => a + (r.value as TxResult).transaction.platformFeeCents, 0);
    // Users started with 1,000,000 cents in all; only the fees left them.
    expect(await sumUserBalances(ids)).toBe(1_000_000 - fees);
    const neg = await env.pool.query(
      "SELECT count(*)::int AS n FROM ledger WHERE kind='user' AND balance_cents < 0",
    );
    expect(neg.rows[0].n).toBe(0);
    const report = await reconcileLedger(env.pool, core.ledger.snapshot());
    expect(report.memoryMismatches).toEqual([]);
    expect(report).toMatchObject({ ok: true, totalBalanceCents: 0 });
    const txs = await env.pool.query(
      "SELECT count(*)::int AS n FROM transactions WHERE type='tip' AND from_user_id = ANY($1)",
      [ids],
    );
    expect(txs.rows[0].n).toBe(ok);
  });

  it("credits one creator exactly for 5,000 concurrent tips from different viewers", async () => {
    const viewers = await createUsers(env.pool, 5000);
    const [creator] = await createUsers(env.pool, 1);
    await fund(viewers, 100);
    const results = await Promise.all(
      viewers.map((v) =>
        core.ledger.submit({
          kind: "tip",
          key: key(),
          fromAccountId: v,
          toAccountId: creator!,
          amountCents: 100,
        }),
      ),
    );
    expect(results).toHaveLength(5000);
    await settle(core);
    expect((await core.ledger.getAccount(creator!)).balanceCents).toBe(5000 * 97);
    const row = await env.pool.query("SELECT balance_cents, version FROM ledger WHERE id = $1", [creator]);
    expect(row.rows[0].balance_cents).toBe(5000 * 97);
    const entries = await env.pool.query(
      "SELECT count(*)::int AS n, sum(amount_cents)::bigint AS s FROM ledger_entries WHERE account_id = $1",
      [creator],
    );
    expect(entries.rows[0]).toEqual({ n: 5000, s: 5000 * 97 });
    expect((await reconcileLedger(env.pool, core.ledger.snapshot())).ok).toBe(true);
  });

  it("lets exactly 100 of 1,000 racing $1 tips through on a $100 balance", async () => {
    const [viewer, creator] = await createUsers(env.pool, 2);
    await fund([viewer!], 10_000);
    const results = await Promise.allSettled(
      Array.from({ length: 1000 }, () =>
        core.ledger.submit({
          kind: "tip",
          key: key(),
          fromAccountId: viewer!,
          toAccountId: creator!,
          amountCents: 100,
        }),
      ),
    );
    const ok = results.filter((r) => r.status === "fulfilled").length;
    expect(ok).toBe(100);
    for (const r of results) {
      if (r.status === "rejected") expect((r.reason as { code: string }).code).toBe("insufficient_funds");
    }
    await settle(core);
    expect((await core.ledger.getAccount(viewer!)).balanceCents).toBe(0);
    expect((await core.ledger.getAccount(creator!)).balanceCents).toBe(9700);
    expect((await reconcileLedger(env.pool, core.ledger.snapshot())).ok).toBe(true);
  });
});
