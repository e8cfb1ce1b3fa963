// Payouts across restarts: a payout's lifecycle comes back from Postgres plus the WAL, an
// outcome that is the only WAL entry naming its account is replayed, and an old payout that left
// memory is read back when an outcome names it.
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Core } from "../../src/main/core.ts";
import type { PayoutResult } from "../../src/ledger/types.ts";
import { reconcileLedger } from "../../src/persist/reconcile.ts";
import { createTestEnv, type TestEnv } from "../helpers/env.ts";
import { createUsers, deposit, settle, TestCores, tip } from "../helpers/ledger.ts";

let env: TestEnv;
const cores = new TestCores();
const start = (persist = true): Promise<Core> =>
  cores.start(env, { PERSIST_THREAD: "false", PERSIST_LINGER_MS: "0" }, persist);
const stop = (c: Core) => cores.stop(c);

beforeAll(async () => {
  env = await createTestEnv("payout_recovery");
});
afterAll(async () => {
  await cores.stopAll();
  await env?.cleanup();
});

const outcome = (c: Core, accountId: string, payoutId: string, state: "processing" | "paid" | "returned") =>
  c.ledger.submit({
    kind: "payout_outcome",
    key: `payout-${payoutId}-1-${state}`,
    accountId,
    payoutId,
    round: 1,
    state,
  }) as Promise<PayoutResult>;

describe("payouts after a restart", () => {
  it("replays an outcome whose WAL entry is the only one naming its account", async () => {
    const [fan, creator] = await createUsers(env.pool, 2);
    const a = await start();
    await deposit(a, fan!, 10_000);
    await tip(a, fan!, creator!, 10_000); // 9700 earned
    const payoutId = randomUUID();
    await a.ledger.submit({
      kind: "reserve_payout",
      key: randomUUID(),
      accountId: creator!,
      payoutId,
      amountCents: 5000,
      provider: "wise",
      providerRecipientId: "rcp_1",
    });
    await settle(a); // persisted and trimmed: the WAL no longer names the creator
    await stop(a);

    // A process that never persists: its outcome stays only in the WAL.
    const b = await start(false);
    expect(await outcome(b, creator!, payoutId, "processing")).toMatchObject({ applied: true });
    await stop(b);

    const c = await start();
    expect(await c.ledger.getPayout(creator!, payoutId)).toMatchObject({ status: "processing", seq: 2 });
    expect(await outcome(c, creator!, payoutId, "paid")).toMatchObject({
      applied: true,
      payout: { status: "paid" },
    });
    await settle(c);
    const row = await env.pool.query(
      "SELECT status, seq, provider, provider_recipient_id FROM payouts WHERE id = $1",
      [payoutId],
    );
    expect(row.rows).toEqual([{ status: "paid", seq: 3, provider: "wise", provider_recipient_id: "rcp_1" }]);
    expect(await c.ledger.getAccount(creator!)).toMatchObject({
      balanceCents: 4700,
      reservedCents: 0,
      withdrawableCents: 4700,
    });
    expect(await reconcileLedger(env.pool, c.ledger.snapshot())).toMatchObject({ ok: true });
    await stop(c);
  });

  it("reads back a paid payout that left memory when its return arrives long after", async () => {
    const [fan, creator] = await createUsers(env.pool, 2);
    const a = await start();
    await deposit(a, fan!, 10_000);
    await tip(a, fan!, creator!, 10_000);
    const payoutId = randomUUID();
    await a.ledger.submit({
      kind: "reserve_payout",
      key: randomUUID(),
      accountId: creator!,
      payoutId,
      amountCents: 5000,
    });
    await outcome(a, creator!, payoutId, "paid");
    await settle(a);
    await stop(a);
    // Make the payout old: a fresh load reads only open and recent payouts.
    await env.pool.query(
      "UPDATE payouts SET updated_at = now() - interval '30 days', created_at = now() - interval '30 days' WHERE id = $1",
      [payoutId],
    );
    await env.pool.query("UPDATE transactions SET created_at = now() - interval '30 days' WHERE id = $1", [
      payoutId,
    ]);

    const b = await start();
    await b.ledger.getAccount(creator!);
    expect(b.ledger.probe().memoryOf(creator!)!.payoutRecords.has(payoutId)).toBe(false);
    expect(await outcome(b, creator!, payoutId, "returned")).toMatchObject({
      applied: true,
      payout: { status: "returned" },
    });
    expect(await outcome(b, creator!, payoutId, "returned")).toMatchObject({ applied: false });
    await settle(b);
    expect(await b.ledger.getAccount(creator!)).toMatchObject({
      balanceCents: 9700,
      withdrawableCents: 9700,
    });
    const r = await env.pool.query(
      "SELECT count(*)::int AS n FROM transactions WHERE type = 'payout_return' AND account_id = $1",
      [creator],
    );
    expect(r.rows[0].n).toBe(1);
    expect(await reconcileLedger(env.pool, b.ledger.snapshot())).toMatchObject({ ok: true });
    await stop(b);
  });
});
