import { afterEach, beforeAll, afterAll, describe, expect, it } from "vitest";
import type { Core } from "../../src/main/core.ts";
import { redisKeys } from "../../src/redis/keys.ts";
import { createTestEnv, type TestEnv, waitFor } from "../helpers/env.ts";
import { createUsers, key, settle, startTestCore } from "../helpers/ledger.ts";

// A version conflict stops persisting its shard. When that leaves a persister lane with no shard
// at all (here: one shard, one lane), the lane must idle, not spin: a spinning loop of rounds that
// return at once never yields its thread, so the halt would never be reported (thread) or the
// whole server would stop answering (main thread).
// The thread variant first: without the fix it fails cleanly; the main-thread one hangs.
describe.each([{ PERSIST_THREAD: "true" }, { PERSIST_THREAD: "false" }])(
  "persister with every shard halted, PERSIST_THREAD=$PERSIST_THREAD",
  ({ PERSIST_THREAD }) => {
    let env: TestEnv;
    let core: Core | null = null;
    beforeAll(async () => {
      env = await createTestEnv("persist_halt");
    });
    afterEach(async () => {
      await core?.stop();
      core = null;
    });
    afterAll(async () => {
      await env?.cleanup();
    });

    it("reports the halt and keeps the process responsive", async () => {
      core = await startTestCore(env, {
        PERSIST_THREAD,
        SHARDS: "1",
        PERSIST_LANES: "1",
        PERSIST_RETRY_MS: "50",
      });
      const [viewer, creator] = await createUsers(env.pool, 2);
      const c = core;
      const tip = () =>
        c.ledger.submit({
          kind: "tip",
          key: key(),
          fromAccountId: viewer!,
          toAccountId: creator!,
          amountCents: 100,
        });
      await c.ledger.submit({ kind: "deposit", key: key(), accountId: viewer!, amountCents: 1000 });
      await tip();
      await settle(core);
      // Postgres one version behind what the WAL follows: the next write to it halts shard 0.
      await env.pool.query("UPDATE ledger SET version = version - 1 WHERE id = $1", [viewer]);
      await tip();
      await waitFor(() => c.persister.health().halted.length > 0, 10_000, "the halt to be reported");
      expect(core.persister.health().halted).toEqual([0]);
      // Timers still fire on time, and the process is not busy.
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      await new Promise((r) => setTimeout(r, 500));
      const elapsed = performance.now() - t0;
      const used = process.cpuUsage(cpu0);
      expect(elapsed).toBeLessThan(2000);
      expect((used.user + used.system) / 1000 / elapsed).toBeLessThan(0.5);
      // Tips are still taken (they wait in the WAL for the operator).
      const r = await tip();
      expect("transaction" in r).toBe(true);
      expect(await env.redis.xlen(redisKeys(env.redisPrefix).walStream(0))).toBeGreaterThan(0);
      await env.pool.query("UPDATE ledger SET version = version + 1 WHERE id = $1", [viewer]);
    });
  },
);

// Issue 12 item 4: a ledger row deleted by hand under an account the ledger still holds. A request
// can touch that account (a tip to a creator still in memory); that must not stop persisting the
// shard, whose other accounts keep going to Postgres, and the tip's postings are kept.
describe("a ledger row missing under an account in memory", () => {
  let env: TestEnv;
  let core: Core | null = null;
  beforeAll(async () => {
    env = await createTestEnv("persist_missing");
  });
  afterAll(async () => {
    await core?.stop();
    await env?.cleanup();
  });

  it("does not halt the shard: the rest is persisted, the tip's postings too", async () => {
    core = await startTestCore(env, { PERSIST_THREAD: "false", SHARDS: "1", PERSIST_LANES: "1" });
    const c = core;
    const [viewer, creator, other] = await createUsers(env.pool, 3);
    const tip = (to: string) =>
      c.ledger.submit({ kind: "tip", key: key(), fromAccountId: viewer!, toAccountId: to, amountCents: 100 });
    await c.ledger.submit({ kind: "deposit", key: key(), accountId: viewer!, amountCents: 1000 });
    await tip(creator!);
    await settle(c);
    // The operator deletes the creator (row and user) while the ledger still holds the account.
    await env.pool.query("DELETE FROM ledger WHERE id = $1", [creator]);
    await env.pool.query("DELETE FROM users WHERE id = $1", [creator]);
    const gone = (await tip(creator!)) as { transaction: { id: string } };
    const later = (await tip(other!)) as { transaction: { id: string } };
    await settle(c);
    expect(c.persister.health().halted).toEqual([]);
    const versions = await env.pool.query<{ id: string; version: string; balance_cents: string }>(
      "SELECT id, version, balance_cents FROM ledger WHERE id = ANY($1::uuid[])",
      [[viewer, other]],
    );
    const byId = new Map(versions.rows.map((r) => [r.id, r]));
    // The viewer's three tips and the deposit are in Postgres, and the other creator's credit.
    expect(Number(byId.get(viewer!)!.balance_cents)).toBe(700);
    expect(Number(byId.get(other!)!.balance_cents)).toBe(97); // net of fees
    const legs = await env.pool.query<{ transaction_id: string; n: string; sum: string }>(
      `SELECT transaction_id, count(*) AS n, sum(amount_cents) AS sum FROM ledger_entries
        WHERE transaction_id = ANY($1::uuid[]) GROUP BY transaction_id`,
      [[gone.transaction.id, later.transaction.id]],
    );
    expect(legs.rows).toHaveLength(2);
    for (const r of legs.rows) expect(Number(r.sum)).toBe(0);
  });
});
