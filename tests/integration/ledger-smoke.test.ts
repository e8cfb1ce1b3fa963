import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { redisKeys } from "../../src/redis/keys.ts";
import type { Core } from "../../src/main/core.ts";
import { PersisterThread } from "../../src/persist/persister-thread.ts";
import { reconcileLedger } from "../../src/persist/reconcile.ts";
import { createTestEnv, type TestEnv } from "../helpers/env.ts";
import { createUsers, key, settle, startTestCore } from "../helpers/ledger.ts";

// The persister runs in a worker thread by default (PERSIST_THREAD), or on the main thread.
describe.each([
  { PERSIST_THREAD: "true", thread: true },
  { PERSIST_THREAD: "false", thread: false },
])("ledger end to end, PERSIST_THREAD=$PERSIST_THREAD", ({ PERSIST_THREAD, thread }) => {
  let env: TestEnv;
  let core: Core;
  beforeAll(async () => {
    env = await createTestEnv("smoke");
    core = await startTestCore(env, { PERSIST_THREAD });
    expect(core.persister instanceof PersisterThread).toBe(thread);
  });
  afterAll(async () => {
    await core?.stop();
    await env?.cleanup();
  });

  it("deposits, tips with the fee split, and persists balances that reconcile", async () => {
    const [viewer, creator] = await createUsers(env.pool, 2);
    const dep = await core.ledger.submit({
      kind: "deposit",
      key: key(),
      accountId: viewer!,
      amountCents: 5000,
    });
    expect("transaction" in dep && dep.account.balanceCents).toBe(5000);
    const tip = await core.ledger.submit({
      kind: "tip",
      key: key(),
      fromAccountId: viewer!,
      toAccountId: creator!,
      amountCents: 100,
    });
    if (!("transaction" in tip)) throw new Error("expected a transaction");
    expect(tip.transaction).toMatchObject({
      amountCents: 100,
      platformFeeCents: 3,
      charityFeeCents: 1,
      netAmountCents: 97,
    });
    expect(tip.account.balanceCents).toBe(4900);
    await settle(core);
    expect((await core.ledger.getAccount(creator!)).balanceCents).toBe(97);
    const report = await reconcileLedger(env.pool, core.ledger.snapshot());
    expect(report).toMatchObject({ ok: true, totalBalanceCents: 0 });
    const row = await env.pool.query("SELECT balance_cents FROM ledger WHERE id = $1", [creator]);
    expect(row.rows[0].balance_cents).toBe(97);
    // Persisted and past every credit hold: the WAL is trimmed behind the persister.
    await settle(core);
    const left = await Promise.all(
      [...Array(core.config.SHARDS).keys()].map((s) =>
        env.redis.xlen(redisKeys(env.redisPrefix).walStream(s)),
      ),
    );
    expect(core.persister.health()).toMatchObject({ unpersistedEntries: 0, halted: [] });
    expect(core.persister.stats.entries).toBeGreaterThan(0);
    expect(left.reduce((a, b) => a + b, 0)).toBe(0);
  });
});
