// The pure core's contract with the runtime: decide reads its inputs and never writes them,
// applyEvent changes memory all or nothing, and everything a decision depends on (system account
// ids, the time) comes in its context, with no module-level cache in between.
import { randomUUID } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { SYSTEM_ACCOUNT_KINDS, type SystemAccountKind, systemAccountId } from "../../src/ledger/accounts.ts";
import { type DecideContext, decide } from "../../src/ledger/decide.ts";
import type { WalEvent } from "../../src/ledger/events.ts";
import { VELOCITY_WINDOW_MS } from "../../src/ledger/fraud.ts";
import { type AccountMem, applyEvent, LedgerInvariantError, newAccountMem } from "../../src/ledger/state.ts";
import type {
  AccountState,
  DirectoryEntry,
  TransactionRecord,
  TxResult,
  UserCommand,
} from "../../src/ledger/types.ts";

const limits = { largeTxCents: 50_000, maxTxPerHour: 10, maxVolumePerHourCents: 100_000 };
const NOW = Date.parse("2026-11-25T12:00:00Z");
const HOUR = VELOCITY_WINDOW_MS;

const state = (id: string, balanceCents: number, version = 0, over: Partial<AccountState> = {}) =>
  ({
    id,
    balanceCents,
    reservedCents: 0,
    debtCents: 0,
    status: "active",
    version,
    earnedCents: 0,
    ...over,
  }) as AccountState;

const systemIds = (shard: number) =>
  Object.fromEntries(SYSTEM_ACCOUNT_KINDS.map((k) => [k, systemAccountId(k, shard)])) as Record<
    SystemAccountKind,
    string
  >;

/** One shard's memory (its system accounts for `shards` and some users) and a context over it. */
function world(users: Record<string, number>, shards: number[] = [0]) {
  const accounts = new Map<string, AccountMem>();
  for (const s of shards) {
    for (const id of Object.values(systemIds(s))) accounts.set(id, newAccountMem(state(id, 0), true));
  }
  const ids: Record<string, string> = {};
  for (const [name, bal] of Object.entries(users)) {
    const id = randomUUID();
    ids[name] = id;
    accounts.set(id, newAccountMem(state(id, bal), false));
  }
  const directory = (id: string): DirectoryEntry | undefined => {
    const m = accounts.get(id);
    return m && { kind: m.system ? "system" : "user", status: m.state.status, version: m.state.version };
  };
  const ctx = (over: Partial<DecideContext> = {}): DecideContext => ({
    get: (id) => accounts.get(id),
    directory,
    system: systemIds(shards[0]!),
    nowMs: NOW,
    at: new Date(NOW).toISOString(),
    newId: randomUUID,
    limits,
    idempotencyTtlMs: 86_400_000,
    ...over,
  });
  const mem = (name: string) => accounts.get(ids[name]!)!;
  return { accounts, ids, ctx, mem };
}

/** Everything decide could touch, as plain data: states, windows, keys and payouts of every account. */
const copyOf = (accounts: Map<string, AccountMem>) => structuredClone(accounts);

describe("decide never changes its inputs", () => {
  it("leaves every account's memory as it was, for random allowed and refused commands", () => {
    const seed = Number(process.env.FC_SEED ?? Date.now() % 1_000_000_000);
    const seen = { allowed: 0, refused: 0 };
    const payoutIds = [randomUUID(), randomUUID(), randomUUID()];
    const keys = ["k0", "k1", "k2", "k3"];
    const names = ["rich", "poor", "busy", "suspended", "indebted"];
    const amount = fc.oneof(
      fc.integer({ min: 1, max: 2_000 }),
      fc.integer({ min: 40_000, max: 120_000 }),
      fc.constantFrom(0, -5, 1.5),
    );
    const who = fc.constantFrom(...names);
    // Targets include the sender itself, a system account and an account nobody knows.
    const target = fc.constantFrom(...names, "system", "ghost");
    const key = fc.constantFrom(...keys);
    const payout = fc.constantFrom(...payoutIds);
    const command = fc.oneof(
      fc.record({ kind: fc.constant("tip"), from: who, to: target, amount, key }),
      fc.record({ kind: fc.constant("deposit"), from: who, amount, key }),
      fc.record({ kind: fc.constant("reserve_payout"), from: who, amount, key, payout }),
      fc.record({ kind: fc.constant("post_payout"), from: who, key, payout }),
      fc.record({ kind: fc.constant("void_payout"), from: who, key, payout }),
      fc.record({ kind: fc.constant("refund"), from: who, amount, key }),
      fc.record({ kind: fc.constant("chargeback"), from: who, amount, key }),
      fc.record({ kind: fc.constant("set_status"), from: who, key, active: fc.boolean() }),
    );
    const step = fc.record({ cmd: command, advanceMs: fc.constantFrom(0, 1, 60_000, HOUR, 2 * HOUR) });

    fc.assert(
      fc.property(fc.array(step, { minLength: 1, maxLength: 25 }), (steps) => {
        const w = world({ rich: 500_000, poor: 40, busy: 10_000, suspended: 1_000, indebted: 0 });
        // Windows with entries older than the hour (what pruning would drop) and recent ones;
        // busy is at the velocity limit, so its next outgoing command is refused.
        for (const name of names) {
          const win = w.mem(name).window;
          win.atMs.push(NOW - 2 * HOUR, NOW - HOUR - 1);
          win.amountCents.push(700, 300);
        }
        for (let i = 0; i < 10; i++) {
          w.mem("busy").window.atMs.push(NOW - 1000 + i);
          w.mem("busy").window.amountCents.push(10);
        }
        w.mem("suspended").state = state(w.ids.suspended!, 1_000, 0, { status: "suspended" });
        w.mem("indebted").state = state(w.ids.indebted!, 0, 0, { debtCents: 2_500 });
        let now = NOW;
        for (const { cmd: c, advanceMs } of steps) {
          now += advanceMs;
          const from = w.ids[c.from]!;
          const to =
            "to" in c
              ? c.to === "system"
                ? systemAccountId("charity", 0)
                : c.to === "ghost"
                  ? randomUUID()
                  : w.ids[c.to]!
              : from;
          const cmd = ((): UserCommand => {
            switch (c.kind) {
              case "tip":
                return {
                  kind: "tip",
                  key: c.key,
                  fromAccountId: from,
                  toAccountId: to,
                  amountCents: c.amount,
                };
              case "deposit":
                return { kind: "deposit", key: c.key, accountId: from, amountCents: c.amount };
              case "reserve_payout":
                return {
                  kind: "reserve_payout",
                  key: c.key,
                  accountId: from,
                  payoutId: c.payout,
                  amountCents: c.amount,
                };
              case "post_payout":
              case "void_payout":
                return { kind: c.kind, key: c.key, accountId: from, payoutId: c.payout };
              case "set_status":
                return {
                  kind: "set_status",
                  key: c.key,
                  accountId: from,
                  status: c.active ? "active" : "suspended",
                };
              case "refund":
              case "chargeback":
                return { kind: "reversal", key: c.key, accountId: from, amountCents: c.amount, type: c.kind };
            }
          })();
          const before = copyOf(w.accounts);
          const d = decide(cmd, w.ctx({ nowMs: now, at: new Date(now).toISOString() }));
          expect(copyOf(w.accounts), `${d.ok ? "allowed" : d.refusal.code} ${cmd.kind}`).toEqual(before);
          seen[d.ok ? "allowed" : "refused"]++;
          // What the shard does next: the event, not the decision, changes memory.
          if (d.ok && d.event) applyEvent((id) => w.accounts.get(id), d.event, 1);
        }
      }),
      { seed, numRuns: 300 },
    );
    // The property is only worth something if it saw both outcomes many times.
    expect(seen.allowed, `seed ${seed}`).toBeGreaterThan(100);
    expect(seen.refused, `seed ${seed}`).toBeGreaterThan(100);
  });

  it("leaves the sender's velocity window as it was when it refuses a tip, old entries included", () => {
    const w = world({ viewer: 50, creator: 0, busy: 10_000 });
    const win = w.mem("viewer").window;
    win.atMs.push(NOW - 2 * HOUR);
    win.amountCents.push(500);
    const poor = decide(
      { kind: "tip", key: "t1", fromAccountId: w.ids.viewer!, toAccountId: w.ids.creator!, amountCents: 100 },
      w.ctx(),
    );
    expect(poor).toMatchObject({ ok: false, refusal: { code: "insufficient_funds" } });
    expect(w.mem("viewer").window).toEqual({ atMs: [NOW - 2 * HOUR], amountCents: [500] });

    // Refused by a fraud rule (the 11th outgoing transaction in the hour), with an old entry first.
    const busy = w.mem("busy").window;
    busy.atMs.push(NOW - 2 * HOUR, ...Array.from({ length: 10 }, (_, i) => NOW - 60_000 + i));
    busy.amountCents.push(900, ...Array.from({ length: 10 }, () => 10));
    const expected = structuredClone(busy);
    const fast = decide(
      { kind: "tip", key: "t2", fromAccountId: w.ids.busy!, toAccountId: w.ids.creator!, amountCents: 100 },
      w.ctx(),
    );
    expect(fast).toMatchObject({
      ok: false,
      refusal: { code: "fraud_blocked", details: { rule: "high_velocity" } },
    });
    expect(w.mem("busy").window).toEqual(expected);
    expect(w.mem("busy").window.atMs).toHaveLength(11);
  });
});

describe("applyEvent is all or nothing", () => {
  function tipEvent(w: ReturnType<typeof world>, second: AccountState): WalEvent {
    const sender = w.mem("viewer").state;
    const tx: TransactionRecord = {
      id: randomUUID(),
      type: "tip",
      status: "completed",
      accountId: sender.id,
      fromAccountId: sender.id,
      toAccountId: w.ids.creator!,
      amountCents: 100,
      platformFeeCents: 3,
      charityFeeCents: 1,
      netAmountCents: 97,
      currency: "USD",
      stripePaymentId: null,
      metadata: {},
      createdAt: new Date(NOW).toISOString(),
    };
    return {
      t: "tx",
      tx,
      postings: [
        { accountId: sender.id, amountCents: -100 },
        { accountId: second.id, amountCents: 3 },
      ],
      // The first state is a valid next state: it must not be written when the second is refused.
      states: [{ ...sender, balanceCents: sender.balanceCents - 100, version: sender.version + 1 }, second],
      key: "tip-key",
      hash: "h",
      credits: [{ accountId: w.ids.creator!, txId: tx.id, amountCents: 97 }],
      fraud: [],
    };
  }

  /** A world whose accounts already carry history: windows, keys and a pending payout. */
  function used() {
    const w = world({ viewer: 1_000, creator: 500, other: 20 });
    const viewer = w.mem("viewer");
    viewer.state = state(viewer.state.id, 1_000, 3, { reservedCents: 200 });
    viewer.window.atMs.push(NOW - 2 * HOUR, NOW - 10_000);
    viewer.window.amountCents.push(400, 50);
    const payoutId = randomUUID();
    viewer.payouts.set(payoutId, {
      id: payoutId,
      type: "payout",
      status: "pending",
      accountId: viewer.state.id,
      fromAccountId: viewer.state.id,
      toAccountId: null,
      amountCents: 200,
      platformFeeCents: 0,
      charityFeeCents: 0,
      netAmountCents: 200,
      currency: "USD",
      stripePaymentId: null,
      metadata: {},
      createdAt: new Date(NOW - 10_000).toISOString(),
    });
    viewer.keys.set("old-key", {
      hash: "h0",
      atMs: NOW - 10_000,
      result: {
        account: { ...viewer.state, availableCents: 800, withdrawableCents: 0, currency: "USD" },
        replayed: false,
      },
    });
    w.mem("creator").state = state(w.ids.creator!, 500, 5);
    w.mem("other").state = state(w.ids.other!, 20, 2);
    return { w, payoutId };
  }

  const get = (w: ReturnType<typeof world>) => (id: string) => w.accounts.get(id);

  it("throws LedgerInvariantError and changes nothing when the second state skips a version", () => {
    const { w } = used();
    const platform = w.accounts.get(systemAccountId("platform_revenue", 0))!.state;
    const before = copyOf(w.accounts);
    const ev = tipEvent(w, { ...platform, balanceCents: 3, version: platform.version + 2 });
    expect(() => applyEvent(get(w), ev, 7)).toThrow(LedgerInvariantError);
    expect(() => applyEvent(get(w), ev, 7)).toThrow(/skips a change/);
    expect(copyOf(w.accounts)).toEqual(before);
  });

  it("throws LedgerInvariantError and changes nothing when the second state leaves a user negative", () => {
    const { w } = used();
    const other = w.mem("other").state;
    const before = copyOf(w.accounts);
    const ev = tipEvent(w, { ...other, balanceCents: -1, version: other.version + 1 });
    expect(() => applyEvent(get(w), ev, 7)).toThrow(LedgerInvariantError);
    expect(copyOf(w.accounts)).toEqual(before);
  });

  it("leaves the payouts as they were when a payout's second state is refused", () => {
    const { w, payoutId } = used();
    const viewer = w.mem("viewer");
    const clearing = w.accounts.get(systemAccountId("payouts_clearing", 0))!.state;
    const before = copyOf(w.accounts);
    const payout = viewer.payouts.get(payoutId)!;
    const ev: WalEvent = {
      t: "tx",
      tx: { ...payout, status: "completed" },
      postings: [
        { accountId: viewer.state.id, amountCents: -200 },
        { accountId: clearing.id, amountCents: 200 },
      ],
      states: [
        { ...viewer.state, balanceCents: 800, reservedCents: 0, version: viewer.state.version + 1 },
        { ...clearing, balanceCents: 200, version: clearing.version + 3 },
      ],
      key: "post-key",
      hash: "h",
      credits: [],
      fraud: [],
    };
    expect(() => applyEvent(get(w), ev, 7)).toThrow(LedgerInvariantError);
    expect(copyOf(w.accounts)).toEqual(before);
    expect(viewer.payouts.get(payoutId)!.status).toBe("pending");
  });

  it("throws and changes nothing for a status or credit state that skips a version", () => {
    const { w } = used();
    const creator = w.mem("creator").state;
    const before = copyOf(w.accounts);
    const status: WalEvent = {
      t: "status",
      id: randomUUID(),
      state: { ...creator, status: "suspended", version: creator.version + 2 },
      status: "suspended",
      reason: null,
      key: "s",
      hash: "h",
      at: new Date(NOW).toISOString(),
    };
    expect(() => applyEvent(get(w), status, 7)).toThrow(LedgerInvariantError);
    const credit: WalEvent = {
      t: "credit",
      accountId: creator.id,
      items: [{ txId: randomUUID(), amountCents: 97 }],
      state: { ...creator, balanceCents: 597, version: creator.version + 2 },
      at: new Date(NOW).toISOString(),
    };
    expect(() => applyEvent(get(w), credit, 7)).toThrow(LedgerInvariantError);
    expect(copyOf(w.accounts)).toEqual(before);
  });

  it("returns false and changes nothing when a later state names an account not in memory", () => {
    const { w } = used();
    const before = copyOf(w.accounts);
    const ev = tipEvent(w, state(randomUUID(), 3, 1));
    expect(applyEvent(get(w), ev, 7)).toBe(false);
    expect(copyOf(w.accounts)).toEqual(before);
  });

  it("applies a valid event whole: both states, the window, the key", () => {
    const { w } = used();
    const platform = w.accounts.get(systemAccountId("platform_revenue", 0))!.state;
    const ev = tipEvent(w, { ...platform, balanceCents: 3, version: platform.version + 1 });
    expect(applyEvent(get(w), ev, 7)).toBe(true);
    expect(w.mem("viewer").state).toMatchObject({ balanceCents: 900, version: 4 });
    expect(w.accounts.get(platform.id)!.state).toMatchObject({ balanceCents: 3, version: 1 });
    // Recording the tip drops the entry older than the hour before it: pruning happens here.
    expect(w.mem("viewer").window.atMs).toEqual([NOW - 10_000, NOW]);
    expect(w.mem("viewer").keys.has("tip-key")).toBe(true);
  });
});

describe("the core has no module-level caches", () => {
  it("posts a tip's fee legs to the system accounts of the context, decide after decide", () => {
    // One memory holding the system accounts of shards 0 and 5, so only ctx.system can choose.
    const w = world({ viewer: 100_000, creator: 0 }, [0, 5]);
    const tip = (k: string): UserCommand => ({
      kind: "tip",
      key: k,
      fromAccountId: w.ids.viewer!,
      toAccountId: w.ids.creator!,
      amountCents: 1_000,
    });
    for (const shard of [0, 5, 0]) {
      const d = decide(tip(randomUUID()), w.ctx({ system: systemIds(shard) }));
      expect(d.ok && d.event?.t === "tx").toBe(true);
      const ev = d.ok && d.event?.t === "tx" ? d.event : null;
      expect(ev!.postings).toEqual([
        { accountId: w.ids.viewer!, amountCents: -1_000 },
        { accountId: systemAccountId("platform_revenue", shard), amountCents: 20 },
        { accountId: systemAccountId("charity", shard), amountCents: 10 },
      ]);
      expect(ev!.states.slice(1).map((s) => s.id)).toEqual([
        systemAccountId("platform_revenue", shard),
        systemAccountId("charity", shard),
      ]);
    }
  });

  it("stamps transactions and fraud logs with the context's `at`, even at the same nowMs", () => {
    const w = world({ viewer: 500_000, creator: 0 });
    // Same millisecond, different `at`: a cache keyed on nowMs would repeat the first string.
    for (const at of ["2026-11-25T12:00:00.000Z", "2031-01-02T03:04:05.678Z"]) {
      const d = decide(
        {
          kind: "tip",
          key: randomUUID(),
          fromAccountId: w.ids.viewer!,
          toAccountId: w.ids.creator!,
          amountCents: 60_000,
        },
        w.ctx({ nowMs: NOW, at }),
      );
      expect(d.ok).toBe(true);
      const ev = d.ok && d.event?.t === "tx" ? d.event : null;
      expect(ev!.tx.createdAt).toBe(at);
      expect(ev!.fraud.map((f) => [f.rule, f.createdAt])).toEqual([["large_transaction", at]]);
      expect((d.ok ? (d.result as TxResult) : null)!.transaction.createdAt).toBe(at);
    }
  });
});
