import { afterEach, beforeAll, afterAll, describe, expect, it } from "vitest";
import type { Core } from "../../src/main/core.ts";
import { createTestEnv, type TestEnv, waitFor } from "../helpers/env.ts";
import { createUsers, key, settle, startTestCore } from "../helpers/ledger.ts";

// PERSIST_LINGER_MS: while the persister keeps up it waits out the linger between rounds, so each
// Postgres write carries more; a round that read all it asked for means a backlog and goes again
// at once.
describe("persister linger", () => {
  let env: TestEnv;
  let core: Core | null = null;
  beforeAll(async () => {
    env = await createTestEnv("persist_linger");
  });
  afterEach(async () => {
    await core?.stop();
    core = null;
  });
  afterAll(async () => {
    await env?.cleanup();
  });

  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  const tip = async (c: Core, from: string, to: string) => {
    const r = await c.ledger.submit({
      kind: "tip",
      key: key(),
      fromAccountId: from,
      toAccountId: to,
      amountCents: 1,
    });
    if (!("transaction" in r)) throw new Error(`tip refused: ${JSON.stringify(r)}`);
  };
  const persistedTips = async (from: string) =>
    Number(
      (
        await env.pool.query(
          "SELECT count(*) AS n FROM transactions WHERE type = 'tip' AND from_user_id = $1",
          [from],
        )
      ).rows[0].n,
    );
  const start = (linger: number, readCount: number) =>
    startTestCore(env, {
      PERSIST_THREAD: "false",
      PERSIST_LANES: "1",
      PERSIST_LINGER_MS: String(linger),
      PERSIST_READ_COUNT: String(readCount),
      FRAUD_MAX_TX_PER_HOUR: "1000",
    });
  const fund = async (c: Core, id: string) => {
    await c.ledger.submit({ kind: "deposit", key: key(), accountId: id, amountCents: 10_000 });
    await settle(c);
  };

  it("groups a trickle of tips into few rounds while it keeps up", async () => {
    core = await start(400, 1000);
    const [viewer, creator] = await createUsers(env.pool, 2);
    await fund(core, viewer!);
    const before = core.persister.stats.rounds;
    const t0 = Date.now();
    // One tip every 20 ms for 1.2 s: without the linger, about one round per tip.
    for (let i = 0; i < 60; i++) {
      await tip(core, viewer!, creator!);
      await sleep(20);
    }
    const rounds = core.persister.stats.rounds - before;
    expect(rounds).toBeGreaterThan(0);
    // At most one round per linger (plus the one under way at each end), however slow the
    // machine; without the linger it would be about one per tip (60).
    expect(rounds).toBeLessThanOrEqual(Math.ceil((Date.now() - t0) / 400) + 2);
    await settle(core);
    expect(await persistedTips(viewer!)).toBe(60);
  });

  it("does not linger behind a backlog: full reads go again at once", async () => {
    core = await start(2000, 5);
    const [viewer, creator] = await createUsers(env.pool, 2);
    await fund(core, viewer!);
    // A first tip makes a round that persists something, then the persister lingers 2 s.
    await tip(core, viewer!, creator!);
    await waitFor(async () => (await persistedTips(viewer!)) >= 1, 5000, "the first tip in Postgres");
    // 40 more on the viewer's one stream: 8 full reads of 5. Lingering after each would take
    // 16 s; going again at once after full reads, about one linger.
    for (let i = 0; i < 40; i++) await tip(core, viewer!, creator!);
    const t0 = Date.now();
    await waitFor(async () => (await persistedTips(viewer!)) >= 41, 8000, "the backlog in Postgres");
    expect(Date.now() - t0).toBeLessThan(8000);
  }, 20_000);
});
