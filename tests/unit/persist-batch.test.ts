import { describe, expect, it } from "vitest";
import type { CreditEvent, TxEvent, WalEvent } from "../../src/ledger/events.ts";
import type { AccountState, FraudLogRecord, TransactionRecord } from "../../src/ledger/types.ts";
import { systemAccountId } from "../../src/ledger/accounts.ts";
import { buildBatch, type Entry, tipLegsImplied } from "../../src/persist/round-batch.ts";

// Fixed ids: the batch is plain data, so exact rows can be compared.
const viewer = "00000000-0000-4000-8000-000000000001";
const creator = "00000000-0000-4000-8000-000000000002";
const fees = "00000000-0000-4000-8000-000000000003";
const clearing = "00000000-0000-4000-8000-000000000004";
const tipId = "00000000-0000-4000-8000-0000000000a1";
const payoutId = "00000000-0000-4000-8000-0000000000a2";

const state = (id: string, version: number, balanceCents: number, reservedCents = 0): AccountState => ({
  id,
  balanceCents,
  reservedCents,
  debtCents: 0,
  status: "active",
  version,
  earnedCents: 0,
});
const fraudLog = (id: string, action: FraudLogRecord["action"]): FraudLogRecord => ({
  id,
  userId: viewer,
  rule: "high_velocity",
  severity: action === "blocked" ? "high" : "medium",
  amountCents: 100,
  action,
  context: { tipsLastHour: 10 },
  createdAt: "2026-11-25T12:00:00.000Z",
});
const tx = (over: Partial<TransactionRecord>): TransactionRecord => ({
  id: tipId,
  type: "tip",
  status: "completed",
  accountId: viewer,
  fromAccountId: viewer,
  toAccountId: creator,
  amountCents: 100,
  platformFeeCents: 3,
  charityFeeCents: 0,
  netAmountCents: 97,
  currency: "USD",
  stripePaymentId: null,
  metadata: {},
  createdAt: "2026-11-25T12:00:00.000Z",
  ...over,
});

/** The creator's credit of the tip `tipId`, with a feed number or without (a WAL before feeds). */
const creditOf = (amountCents: number, after: AccountState, feedSeq?: number): CreditEvent => ({
  t: "credit",
  accountId: creator,
  items: [{ txId: tipId, amountCents }],
  state: after,
  at: "2026-11-25T12:00:00.010Z",
  ...(feedSeq !== undefined ? { feedSeq } : {}),
});

describe("a round's batch of rows", () => {
  it("turns a tip, its credit, a payout reserved then posted, a suspension and fraud logs into rows", () => {
    const flagged = fraudLog("00000000-0000-4000-8000-0000000000f1", "flagged");
    const blocked = fraudLog("00000000-0000-4000-8000-0000000000f2", "blocked");
    const tip: TxEvent = {
      t: "tx",
      tx: tx({}),
      postings: [
        { accountId: viewer, amountCents: -100 },
        { accountId: fees, amountCents: 3 },
      ],
      states: [state(viewer, 5, 900)],
      key: "tip-key",
      hash: "tip-hash",
      credits: [{ accountId: creator, txId: tipId, amountCents: 97 }],
      fraud: [flagged],
    };
    const credit = creditOf(97, state(creator, 3, 5097));
    const payout = tx({
      id: payoutId,
      type: "payout",
      status: "pending",
      accountId: creator,
      fromAccountId: creator,
      toAccountId: null,
      amountCents: 5000,
      platformFeeCents: 0,
      netAmountCents: 5000,
      createdAt: "2026-11-25T12:00:00.020Z",
    });
    const reserved: TxEvent = {
      t: "tx",
      tx: payout,
      postings: [],
      states: [state(creator, 4, 5097, 5000)],
      key: "reserve-key",
      hash: "reserve-hash",
      credits: [],
      fraud: [],
    };
    const posted: TxEvent = {
      t: "tx",
      tx: { ...payout, status: "completed" },
      postings: [
        { accountId: creator, amountCents: -5000 },
        { accountId: clearing, amountCents: 5000 },
      ],
      states: [state(creator, 5, 97, 0)],
      key: "post-key",
      hash: "post-hash",
      credits: [],
      fraud: [],
    };
    const suspended: AccountState = { ...state(creator, 6, 97), status: "suspended" };
    const suspend: WalEvent = {
      t: "status",
      id: "00000000-0000-4000-8000-0000000000b1",
      state: suspended,
      status: "suspended",
      reason: "chargebacks",
      key: "suspend-key",
      hash: "suspend-hash",
      at: "2026-11-25T12:00:00.030Z",
    };
    const refused: WalEvent = { t: "fraud", fraud: [blocked] };
    const entries: Entry[] = [
      { shard: 0, id: "1-0", events: [tip] },
      { shard: 1, id: "1-1", events: [credit] },
      { shard: 1, id: "2-0", events: [reserved, posted] },
      { shard: 1, id: "3-0", events: [suspend] },
      { shard: 0, id: "3-1", events: [refused] },
    ];

    const b = buildBatch(entries);

    // Each account is written once: its last state, applied on top of the version before its first.
    expect([...b.accounts.values()]).toEqual([
      { shard: 0, fromVersion: 5, last: state(viewer, 5, 900) },
      { shard: 1, fromVersion: 3, last: suspended },
    ]);
    // The payout's row keeps the reservation's key, hash and balance-after, and the posted status.
    expect(b.txs).toEqual([
      // Its postings are not the legs a tip implies (a made-up fee account): they stay rows.
      { tx: tip.tx, key: "tip-key", hash: "tip-hash", after: state(viewer, 5, 900), legsShard: null },
      {
        tx: { ...payout, status: "completed" },
        key: "reserve-key",
        hash: "reserve-hash",
        after: state(creator, 4, 5097, 5000),
        legsShard: null,
      },
    ]);
    expect(b.legs).toEqual([
      { txId: tipId, accountId: viewer, amountCents: -100, at: tip.tx.createdAt },
      { txId: tipId, accountId: fees, amountCents: 3, at: tip.tx.createdAt },
      { txId: tipId, accountId: creator, amountCents: 97, at: "2026-11-25T12:00:00.010Z" },
      { txId: payoutId, accountId: creator, amountCents: -5000, at: payout.createdAt },
      { txId: payoutId, accountId: clearing, amountCents: 5000, at: payout.createdAt },
    ]);
    expect(b.fraud).toEqual([flagged, blocked]);
    expect(b.statusRows).toEqual([
      {
        id: "00000000-0000-4000-8000-0000000000b1",
        accountId: creator,
        status: "suspended",
        reason: "chargebacks",
        key: "suspend-key",
        hash: "suspend-hash",
        version: 6,
        after: suspended,
        at: "2026-11-25T12:00:00.030Z",
      },
    ]);
    expect([...b.statusAccounts]).toEqual([creator]);
  });

  it("keeps one leg per transaction and account, and one update per account, when an event comes twice", () => {
    const credit = creditOf(97, state(creator, 3, 97));
    const b = buildBatch([
      { shard: 1, id: "1-0", events: [credit] },
      { shard: 1, id: "1-1", events: [credit] },
    ]);
    expect(b.legs).toHaveLength(1);
    expect([...b.accounts.values()]).toEqual([{ shard: 1, fromVersion: 3, last: state(creator, 3, 97) }]);
  });

  it("stores no postings for a tip whose legs its rows imply: the shard's fee legs, the feed row's creator leg", () => {
    const shard = 7;
    const platform = systemAccountId("platform_revenue", shard);
    const charity = systemAccountId("charity", shard);
    // 250 cents: platform fee 8 (3%, half up), charity 3 (1%, half up), net 242.
    const t = tx({ amountCents: 250, platformFeeCents: 8, charityFeeCents: 3, netAmountCents: 242 });
    const postings = [
      { accountId: viewer, amountCents: -250 },
      { accountId: platform, amountCents: 5 },
      { accountId: charity, amountCents: 3 },
    ];
    const tip: TxEvent = {
      t: "tx",
      tx: t,
      postings,
      states: [state(viewer, 2, 750)],
      key: "k",
      hash: "h",
      credits: [{ accountId: creator, txId: tipId, amountCents: 242 }],
      fraud: [],
    };
    const credit = creditOf(242, state(creator, 9, 242), 4);
    const b = buildBatch([
      { shard, id: "1-0", events: [tip] },
      { shard: 2, id: "1-1", events: [credit] },
    ]);
    expect(b.txs.map((r) => r.legsShard)).toEqual([shard]);
    expect(b.legs).toEqual([]);
    expect(b.feed).toEqual([{ creatorId: creator, seq: 4, txId: tipId, amountCents: 242, at: credit.at }]);

    // Anything but exactly those legs keeps explicit postings.
    expect(tipLegsImplied(t, shard, postings)).toBe(true);
    expect(tipLegsImplied(t, shard + 1, postings)).toBe(false);
    expect(tipLegsImplied(t, shard, postings.slice(0, 2))).toBe(false);
    expect(tipLegsImplied({ ...t, netAmountCents: 241 }, shard, postings)).toBe(false);
    expect(tipLegsImplied({ ...t, type: "purchase" }, shard, postings)).toBe(false);
    expect(tipLegsImplied({ ...t, type: "superlike" }, shard, postings)).toBe(true);
    // A 1-cent tip has no fee legs at all.
    const small = tx({ amountCents: 1, platformFeeCents: 0, charityFeeCents: 0, netAmountCents: 1 });
    expect(tipLegsImplied(small, shard, [{ accountId: viewer, amountCents: -1 }])).toBe(true);
  });
});
