import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { CreditEvent, TxEvent, WalEvent } from "../../src/ledger/events.ts";
import type { AccountState, TransactionRecord } from "../../src/ledger/types.ts";
import { systemAccountId } from "../../src/ledger/accounts.ts";
import { AccountStore } from "../../src/persist/account-store.ts";
import type { Entry } from "../../src/persist/round-batch.ts";
import { writeEntries } from "../../src/persist/write-batch.ts";
import { createTestEnv, type TestEnv } from "../helpers/env.ts";
import { createUsers } from "../helpers/ledger.ts";

// The persister writes tips and postings with COPY, which cannot skip a row already there; a
// round re-read after a crash (committed, not yet acknowledged) must still be a no-op.
describe("persister writes", () => {
  let env: TestEnv;
  let seq = 0;
  beforeAll(async () => {
    env = await createTestEnv("persist_copy");
  });
  afterAll(async () => {
    await env?.cleanup();
  });

  const at = () => new Date(Date.UTC(2026, 10, 25, 12, 0, 0, seq++)).toISOString();
  const state = (id: string, version: number, balanceCents: number, reservedCents = 0): AccountState => ({
    id,
    balanceCents,
    reservedCents,
    debtCents: 0,
    status: "active",
    version,
    earnedCents: 0,
  });
  const entry = (shard: number, events: WalEvent[]): Entry => ({
    shard,
    id: `${Date.now()}-${seq++}`,
    events,
  });
  const tipEvent = (
    from: string,
    to: string,
    fromVersion: number,
    balanceAfter: number,
    key: string,
    metadata = {},
  ) => {
    const tx: TransactionRecord = {
      id: randomUUID(),
      type: "tip",
      status: "completed",
      accountId: from,
      fromAccountId: from,
      toAccountId: to,
      amountCents: 100,
      platformFeeCents: 3,
      charityFeeCents: 1,
      netAmountCents: 97,
      currency: "USD",
      stripePaymentId: null,
      metadata,
      createdAt: at(),
    };
    const ev: TxEvent = {
      t: "tx",
      tx,
      postings: [
        { accountId: from, amountCents: -100 },
        { accountId: fees, amountCents: 3 },
      ],
      states: [state(from, fromVersion, balanceAfter)],
      key,
      hash: `hash\\${key}`,
      credits: [{ accountId: to, txId: tx.id, amountCents: 97 }],
      fraud: [],
    };
    return ev;
  };
  /** The creator's credit of `tip` (97 cents, the creator's first version), with a feed number or
   * without (a WAL written before feeds). */
  const creditOf = (tip: TxEvent, creator: string, feedSeq?: number): CreditEvent => ({
    t: "credit",
    accountId: creator,
    items: [{ txId: tip.tx.id, amountCents: 97 }],
    state: state(creator, 1, 97),
    at: at(),
    ...(feedSeq !== undefined ? { feedSeq } : {}),
  });
  const fees = randomUUID();
  const count = async (sql: string, args: unknown[]) => Number((await env.pool.query(sql, args)).rows[0].n);

  it("stores every character of keys, hashes and metadata exactly, and a re-written round changes nothing", async () => {
    const [viewer, creator] = await createUsers(env.pool, 2);
    const awkward = "key\twith\ttabs\nlines\r\\backslashes\\N and ünïcode";
    const metadata = { note: 'a\tb\nc\\d "quoted" \\N', n: 1 };
    const tip = tipEvent(viewer!, creator!, 1, 900, awkward, metadata);
    const credit = creditOf(tip, creator!);
    const round = [entry(0, [tip]), entry(1, [credit])];
    await writeEntries(env.pool, round);

    const row = (
      await env.pool.query(
        "SELECT idempotency_key, request_hash, metadata, stripe_payment_id, balance_after_cents, created_at FROM transactions WHERE id = $1",
        [tip.tx.id],
      )
    ).rows[0];
    expect(row).toMatchObject({
      idempotency_key: awkward,
      request_hash: `hash\\${awkward}`,
      metadata,
      stripe_payment_id: null,
      balance_after_cents: 900,
    });
    expect((row.created_at as Date).toISOString()).toBe(tip.tx.createdAt);
    const legs = await env.pool.query(
      "SELECT account_id, amount_cents FROM ledger_entries WHERE transaction_id = $1 ORDER BY amount_cents",
      [tip.tx.id],
    );
    expect(legs.rows).toEqual([
      { account_id: viewer, amount_cents: -100 },
      { account_id: fees, amount_cents: 3 },
      { account_id: creator, amount_cents: 97 },
    ]);

    // The same round again (a crash took the XACK after COMMIT): no error, no second row.
    await writeEntries(env.pool, round);
    expect(await count("SELECT count(*) AS n FROM transactions WHERE id = $1", [tip.tx.id])).toBe(1);
    expect(
      await count("SELECT count(*) AS n FROM ledger_entries WHERE transaction_id = $1", [tip.tx.id]),
    ).toBe(3);
    const balances = await env.pool.query(
      "SELECT id, balance_cents, version FROM ledger WHERE id = ANY($1)",
      [[viewer, creator]],
    );
    expect(Object.fromEntries(balances.rows.map((r) => [r.id, [r.balance_cents, r.version]]))).toEqual({
      [viewer!]: [900, 1],
      [creator!]: [97, 1],
    });
  });

  it("writes a tip as two rows whose legs the ledger_entries view derives, also when re-written", async () => {
    const [viewer, creator] = await createUsers(env.pool, 2);
    const shard = 5;
    const platform = systemAccountId("platform_revenue", shard);
    const charity = systemAccountId("charity", shard);
    const tip: TxEvent = {
      ...tipEvent(viewer!, creator!, 1, 750, `lean-${seq}`),
      postings: [
        { accountId: viewer!, amountCents: -100 },
        { accountId: platform, amountCents: 2 },
        { accountId: charity, amountCents: 1 },
      ],
    };
    const credit = creditOf(tip, creator!, 1);
    const store = new AccountStore(env.pool);
    const creatorLeg = [{ txId: tip.tx.id, accountId: creator! }];
    // Only the sender's side is in: the creator's leg is not posted yet (recovery redelivers it).
    await writeEntries(env.pool, [entry(shard, [tip])]);
    expect([...(await store.postedLegs(creatorLeg))]).toEqual([]);
    const round = [entry(shard, [tip]), entry(1, [credit])];
    await writeEntries(env.pool, round);
    await writeEntries(env.pool, round);

    expect(
      await count("SELECT count(*) AS n FROM ledger_postings WHERE transaction_id = $1", [tip.tx.id]),
    ).toBe(0);
    const row = await env.pool.query("SELECT legs_shard FROM transactions WHERE id = $1", [tip.tx.id]);
    expect(row.rows).toEqual([{ legs_shard: shard }]);
    const feed = await env.pool.query("SELECT seq, amount_cents FROM tip_feed WHERE transaction_id = $1", [
      tip.tx.id,
    ]);
    expect(feed.rows).toEqual([{ seq: 1, amount_cents: 97 }]);
    const legs = await env.pool.query(
      "SELECT account_id, amount_cents, created_at FROM ledger_entries WHERE transaction_id = $1 ORDER BY amount_cents",
      [tip.tx.id],
    );
    expect(legs.rows.map((r) => [r.account_id, Number(r.amount_cents)])).toEqual([
      [viewer, -100],
      [charity, 1],
      [platform, 2],
      [creator, 97],
    ]);
    expect(legs.rows.map((r) => (r.created_at as Date).toISOString())).toEqual([
      tip.tx.createdAt,
      tip.tx.createdAt,
      tip.tx.createdAt,
      credit.at,
    ]);
    // Recovery finds the creator's leg in the feed row.
    expect([...(await store.postedLegs(creatorLeg))]).toEqual([`${tip.tx.id}:${creator}`]);
  });

  it("writes the new part of a round that is partly written already", async () => {
    const [viewer, creator] = await createUsers(env.pool, 2);
    const first = tipEvent(viewer!, creator!, 1, 900, randomUUID());
    const second = tipEvent(viewer!, creator!, 2, 800, randomUUID());
    await writeEntries(env.pool, [entry(0, [first])]);
    // The lane re-reads its pending entries with newer ones behind them.
    await writeEntries(env.pool, [entry(0, [first]), entry(0, [second])]);
    expect(
      await count("SELECT count(*) AS n FROM transactions WHERE id = ANY($1)", [[first.tx.id, second.tx.id]]),
    ).toBe(2);
    expect(
      await count("SELECT count(*) AS n FROM ledger_entries WHERE transaction_id = ANY($1)", [
        [first.tx.id, second.tx.id],
      ]),
    ).toBe(4);
    const v = await env.pool.query("SELECT balance_cents, version FROM ledger WHERE id = $1", [viewer]);
    expect(v.rows[0]).toEqual({ balance_cents: 800, version: 2 });
  });

  it("updates a payout's row when it is posted in a later round", async () => {
    const [user] = await createUsers(env.pool, 1);
    const clearing = randomUUID();
    const payout: TransactionRecord = {
      id: randomUUID(),
      type: "payout",
      status: "pending",
      accountId: user!,
      fromAccountId: user!,
      toAccountId: null,
      amountCents: 500,
      platformFeeCents: 0,
      charityFeeCents: 0,
      netAmountCents: 500,
      currency: "USD",
      stripePaymentId: null,
      metadata: { provider: "wise" },
      createdAt: at(),
    };
    const reserved: TxEvent = {
      t: "tx",
      tx: payout,
      postings: [],
      states: [state(user!, 1, 0, 0)],
      key: randomUUID(),
      hash: "h",
      credits: [],
      fraud: [],
    };
    const posted: TxEvent = {
      ...reserved,
      tx: { ...payout, status: "completed" },
      postings: [
        { accountId: user!, amountCents: -500 },
        { accountId: clearing, amountCents: 500 },
      ],
      states: [state(user!, 2, 0, 0)],
    };
    await writeEntries(env.pool, [entry(0, [reserved])]);
    await writeEntries(env.pool, [entry(0, [posted])]);
    const rows = await env.pool.query("SELECT status FROM transactions WHERE id = $1", [payout.id]);
    expect(rows.rows).toEqual([{ status: "completed" }]);
    expect(
      await count("SELECT count(*) AS n FROM ledger_entries WHERE transaction_id = $1", [payout.id]),
    ).toBe(2);
  });
});
