import { randomUUID } from "node:crypto";
import { describe, expect, it } from "vitest";
import { SYSTEM_ACCOUNT_KINDS, type SystemAccountKind, systemAccountId } from "../../src/ledger/accounts.ts";
import { type DecideContext, decide, decideCredit } from "../../src/ledger/decide.ts";
import type { TxEvent } from "../../src/ledger/events.ts";
import { type AccountMem, applyEvent, newAccountMem, pruneKeys } from "../../src/ledger/state.ts";
import type { DirectoryEntry, UserCommand } from "../../src/ledger/types.ts";

const limits = { largeTxCents: 50_000, maxTxPerHour: 10, maxVolumePerHourCents: 100_000 };
const NOW = Date.parse("2026-11-25T12:00:00Z");

/** Accounts with these balances; `earned` says how much of each was earned (withdrawable). */
function world(balances: Record<string, number>, earned: Record<string, number> = {}) {
  const accounts = new Map<string, AccountMem>();
  for (const kind of SYSTEM_ACCOUNT_KINDS) {
    const id = systemAccountId(kind, 0);
    accounts.set(
      id,
      newAccountMem(
        { id, balanceCents: 0, reservedCents: 0, debtCents: 0, status: "active", version: 0, earnedCents: 0 },
        true,
      ),
    );
  }
  const ids: Record<string, string> = {};
  for (const [name, bal] of Object.entries(balances)) {
    const id = randomUUID();
    ids[name] = id;
    accounts.set(
      id,
      newAccountMem(
        {
          id,
          balanceCents: bal,
          reservedCents: 0,
          debtCents: 0,
          status: "active",
          version: 0,
          earnedCents: earned[name] ?? 0,
        },
        false,
      ),
    );
  }
  let now = NOW;
  const system = Object.fromEntries(SYSTEM_ACCOUNT_KINDS.map((k) => [k, systemAccountId(k, 0)])) as Record<
    SystemAccountKind,
    string
  >;
  /** The directory as a shard sees it: every account's kind and status, read-only. */
  const directory = (id: string): DirectoryEntry | undefined => {
    const m = accounts.get(id);
    return m && { kind: m.system ? "system" : "user", status: m.state.status, version: m.state.version };
  };
  const ctx = (): DecideContext => ({
    get: (id) => accounts.get(id),
    directory,
    system,
    nowMs: now,
    at: new Date(now).toISOString(),
    newId: randomUUID,
    limits,
    idempotencyTtlMs: 86_400_000,
  });
  /** Decides and, on success, applies: what a shard does (minus the WAL). */
  const run = (cmd: UserCommand) => {
    const d = decide(cmd, ctx());
    if (d.ok && d.event) applyEvent((id) => accounts.get(id), d.event, 1);
    return d;
  };
  const tip = (from: string, to: string, amountCents: number, key: string = randomUUID()) =>
    run({ kind: "tip", key, fromAccountId: ids[from]!, toAccountId: ids[to]!, amountCents });
  return {
    accounts,
    ids,
    run,
    tip,
    bal: (n: string) => accounts.get(ids[n]!)!.state.balanceCents,
    advance: (ms: number) => {
      now += ms;
    },
  };
}

describe("tip decisions", () => {
  it("debits the sender, posts fee legs, and owes the recipient the net once durable", () => {
    const w = world({ viewer: 1000, creator: 0 });
    const d = w.tip("viewer", "creator", 300);
    expect(d.ok).toBe(true);
    const ev = (d as { event: TxEvent }).event;
    expect(ev.postings.map((p) => p.amountCents)).toEqual([-300, 6, 3]);
    expect(ev.credits).toEqual([{ accountId: w.ids.creator, txId: ev.tx.id, amountCents: 291 }]);
    expect(w.bal("viewer")).toBe(700);
    // The recipient is credited by its own shard after the WAL confirms, not by the decision.
    expect(w.bal("creator")).toBe(0);
  });

  it("refuses a tip larger than the available balance without any event", () => {
    const w = world({ viewer: 99, creator: 0 });
    const d = w.tip("viewer", "creator", 100);
    expect(d).toMatchObject({ ok: false, event: null, refusal: { code: "insufficient_funds" } });
    expect(w.bal("viewer")).toBe(99);
  });

  it("returns the original result for a repeated key and refuses the key with other content", () => {
    const w = world({ viewer: 1000, creator: 0, other: 0 });
    const first = w.tip("viewer", "creator", 100, "k1");
    const again = w.tip("viewer", "creator", 100, "k1");
    expect(again).toMatchObject({ ok: true, event: null });
    expect((again as { result: { replayed: boolean } }).result.replayed).toBe(true);
    expect((again as { result: unknown }).result).toMatchObject({
      transaction: (first as { result: { transaction: unknown } }).result.transaction,
    });
    // The key's record is kept packed (PackedKeyRecord): the replay is the whole original answer.
    expect((again as { result: unknown }).result).toEqual({
      ...(first as { result: object }).result,
      replayed: true,
    });
    expect(w.bal("viewer")).toBe(900);
    expect(w.tip("viewer", "other", 100, "k1")).toMatchObject({
      ok: false,
      refusal: { code: "idempotency_conflict" },
    });
  });
});

describe("fraud rules", () => {
  const blockedBy = (d: ReturnType<ReturnType<typeof world>["tip"]>) =>
    d.ok ? null : (d.refusal.details as { rule: string; severity: string } | undefined);

  it("logs a tip of exactly $500 nothing, and one of $500.01 as medium while allowing it", () => {
    const w = world({ viewer: 200_000, viewer2: 200_000, creator: 0 });
    const at = w.tip("viewer", "creator", 50_000);
    expect(at.ok && (at.event as TxEvent).fraud).toEqual([]);
    const over = w.tip("viewer2", "creator", 50_001);
    expect(over.ok).toBe(true);
    expect((over as { event: TxEvent }).event.fraud).toMatchObject([
      { rule: "large_transaction", severity: "medium", action: "allowed", amountCents: 50_001 },
    ]);
  });

  it("allows the 10th outgoing transaction in an hour and blocks the 11th as high", () => {
    const w = world({ viewer: 10_000, creator: 0 });
    for (let i = 0; i < 10; i++) expect(w.tip("viewer", "creator", 100).ok).toBe(true);
    const eleventh = w.tip("viewer", "creator", 100);
    expect(blockedBy(eleventh)).toMatchObject({ rule: "high_velocity", severity: "high" });
    expect(eleventh.ok ? null : eleventh.event?.fraud).toMatchObject([
      { rule: "high_velocity", action: "blocked" },
    ]);
    expect(w.bal("viewer")).toBe(9000);
    // An hour after the first, the window has room again.
    w.advance(3_600_001);
    expect(w.tip("viewer", "creator", 100).ok).toBe(true);
  });

  it("allows exactly $1000 sent in an hour and blocks one cent more as high volume", () => {
    const w = world({ viewer: 300_000, creator: 0 });
    expect(w.tip("viewer", "creator", 60_000).ok).toBe(true);
    expect(blockedBy(w.tip("viewer", "creator", 40_001))).toMatchObject({
      rule: "high_volume",
      severity: "high",
    });
    expect(w.tip("viewer", "creator", 40_000).ok).toBe(true);
    expect(blockedBy(w.tip("viewer", "creator", 1))).toMatchObject({ rule: "high_volume" });
  });

  it("blocks a self tip as critical", () => {
    const w = world({ viewer: 1000 });
    expect(blockedBy(w.tip("viewer", "viewer", 100))).toEqual({
      rule: "self_transfer",
      severity: "critical",
    });
  });

  it("blocks tips from and to suspended accounts as critical", () => {
    const w = world({ viewer: 1000, creator: 0 });
    expect(w.run({ kind: "set_status", key: "s1", accountId: w.ids.creator!, status: "suspended" }).ok).toBe(
      true,
    );
    expect(blockedBy(w.tip("viewer", "creator", 100))).toEqual({
      rule: "suspended_account",
      severity: "critical",
      suspended: "recipient",
    });
    w.run({ kind: "set_status", key: "s2", accountId: w.ids.creator!, status: "active" });
    expect(w.tip("viewer", "creator", 100).ok).toBe(true);
    w.run({ kind: "set_status", key: "s3", accountId: w.ids.viewer!, status: "suspended" });
    expect(blockedBy(w.tip("viewer", "creator", 100))).toMatchObject({
      rule: "suspended_account",
      suspended: "sender",
    });
  });

  it("counts payouts toward velocity but not deposits", () => {
    const w = world({ viewer: 10_000, creator: 0 }, { viewer: 10_000 });
    for (let i = 0; i < 20; i++) {
      expect(w.run({ kind: "deposit", key: `d${i}`, accountId: w.ids.viewer!, amountCents: 100 }).ok).toBe(
        true,
      );
    }
    for (let i = 0; i < 9; i++) expect(w.tip("viewer", "creator", 100).ok).toBe(true);
    const p = w.run({
      kind: "reserve_payout",
      key: "p",
      accountId: w.ids.viewer!,
      payoutId: randomUUID(),
      amountCents: 100,
    });
    expect(p.ok).toBe(true);
    expect(blockedBy(w.tip("viewer", "creator", 100))).toMatchObject({ rule: "high_velocity" });
  });
});

describe("payouts and reversals", () => {
  it("reserves, then posts: balance and reserve drop together and legs balance", () => {
    const w = world({ creator: 5000, other: 0 }, { creator: 5000 });
    const payoutId = randomUUID();
    w.run({ kind: "reserve_payout", key: "r", accountId: w.ids.creator!, payoutId, amountCents: 2000 });
    const mem = w.accounts.get(w.ids.creator!)!;
    expect(mem.state).toMatchObject({ balanceCents: 5000, reservedCents: 2000 });
    // Reserved money is not available: 3000 of the 5000 may be tipped, 3001 may not.
    const tipTo = (amountCents: number, key: string) =>
      w.run({ kind: "tip", key, fromAccountId: w.ids.creator!, toAccountId: w.ids.other!, amountCents });
    expect(tipTo(3001, "t1")).toMatchObject({
      ok: false,
      refusal: { code: "insufficient_funds", details: { available_cents: 3000, amount_cents: 3001 } },
    });
    expect(mem.state).toMatchObject({ balanceCents: 5000, reservedCents: 2000, version: 1 });
    const posted = w.run({ kind: "post_payout", key: "p", accountId: w.ids.creator!, payoutId });
    expect(posted.ok && (posted.event as TxEvent).postings.reduce((a, p) => a + p.amountCents, 0)).toBe(0);
    expect(mem.state).toMatchObject({ balanceCents: 3000, reservedCents: 0 });
    expect(w.run({ kind: "void_payout", key: "v", accountId: w.ids.creator!, payoutId })).toMatchObject({
      ok: false,
      refusal: { code: "conflict" },
    });
  });

  it("voids a reservation: the reserve is released and the balance untouched", () => {
    const w = world({ creator: 5000 }, { creator: 5000 });
    const payoutId = randomUUID();
    w.run({ kind: "reserve_payout", key: "r", accountId: w.ids.creator!, payoutId, amountCents: 2000 });
    expect(w.run({ kind: "void_payout", key: "v", accountId: w.ids.creator!, payoutId }).ok).toBe(true);
    expect(w.accounts.get(w.ids.creator!)!.state).toMatchObject({ balanceCents: 5000, reservedCents: 0 });
  });

  it("takes back what it can on a refund, records the rest as debt, and the next purchase repays it", () => {
    const w = world({ viewer: 1500 });
    const d = w.run({
      kind: "reversal",
      key: "x",
      accountId: w.ids.viewer!,
      amountCents: 5000,
      type: "refund",
    });
    expect(d.ok).toBe(true);
    const ev = (d as { event: TxEvent }).event;
    expect(ev.postings.reduce((a, p) => a + p.amountCents, 0)).toBe(0);
    expect(ev.fraud).toMatchObject([{ rule: "chargeback_debt", action: "flagged", amountCents: 3500 }]);
    const mem = w.accounts.get(w.ids.viewer!)!;
    expect(mem.state).toMatchObject({ balanceCents: 0, debtCents: 3500 });
    w.run({ kind: "deposit", key: "d", accountId: w.ids.viewer!, amountCents: 5000 });
    expect(mem.state).toMatchObject({ balanceCents: 1500, debtCents: 0 });
    const recv = w.accounts.get(systemAccountId("receivables", 0))!;
    expect(recv.state.balanceCents).toBe(0);
  });
});

describe("earned money and the payout lifecycle", () => {
  const reserve = (w: ReturnType<typeof world>, who: string, amountCents: number, payoutId = randomUUID()) =>
    w.run({ kind: "reserve_payout", key: randomUUID(), accountId: w.ids[who]!, payoutId, amountCents });
  const outcome = (
    w: ReturnType<typeof world>,
    who: string,
    payoutId: string,
    state: "processing" | "paid" | "failed" | "returned",
    round = 1,
  ) =>
    w.run({
      kind: "payout_outcome",
      key: `payout-${payoutId}-${round}-${state}`,
      accountId: w.ids[who]!,
      payoutId,
      round,
      state,
    });
  const st = (w: ReturnType<typeof world>, who: string) => w.accounts.get(w.ids[who]!)!.state;
  const rec = (w: ReturnType<typeof world>, who: string, id: string) =>
    w.accounts.get(w.ids[who]!)!.payoutRecords.get(id);
  /** A tip whose credit is delivered at once (what the recipient's shard does once it is durable). */
  const tipCredited = (w: ReturnType<typeof world>, from: string, to: string, amountCents: number) => {
    const d = w.tip(from, to, amountCents);
    expect(d.ok).toBe(true);
    for (const c of (d as { event: TxEvent }).event.credits) {
      const mem = w.accounts.get(c.accountId)!;
      const ev = decideCredit(
        { kind: "credit", accountId: c.accountId, items: [c] },
        mem,
        "2026-11-25T12:00:00Z",
      );
      applyEvent((id) => w.accounts.get(id), ev, 1);
    }
  };

  it("makes only tips received withdrawable, never purchased credits", () => {
    const w = world({ viewer: 0, creator: 0 });
    w.run({ kind: "deposit", key: "d", accountId: w.ids.viewer!, amountCents: 10_000 });
    expect(reserve(w, "viewer", 1000)).toMatchObject({
      ok: false,
      refusal: { code: "insufficient_funds", details: { withdrawable_cents: 0, available_cents: 10_000 } },
    });
    tipCredited(w, "viewer", "creator", 1000); // creator earns 970
    expect(st(w, "creator")).toMatchObject({ balanceCents: 970, earnedCents: 970 });
    expect(reserve(w, "creator", 971)).toMatchObject({
      ok: false,
      refusal: { code: "insufficient_funds", details: { withdrawable_cents: 970 } },
    });
    expect(reserve(w, "creator", 970).ok).toBe(true);
    expect(st(w, "creator")).toMatchObject({ balanceCents: 970, reservedCents: 970, earnedCents: 0 });
  });

  it("spends purchased credits before earned money, and keeps earned within what is available", () => {
    const w = world({ creator: 0, fan: 0, other: 0 });
    w.run({ kind: "deposit", key: "d1", accountId: w.ids.fan!, amountCents: 10_000 });
    tipCredited(w, "fan", "creator", 1000); // creator earned 970
    w.run({ kind: "deposit", key: "d2", accountId: w.ids.creator!, amountCents: 500 }); // bought 500
    expect(st(w, "creator")).toMatchObject({ balanceCents: 1470, earnedCents: 970 });
    tipCredited(w, "creator", "other", 300); // from the 500 bought
    expect(st(w, "creator")).toMatchObject({ balanceCents: 1170, earnedCents: 970 });
    tipCredited(w, "creator", "other", 300); // 200 bought left: 100 comes out of earned
    expect(st(w, "creator")).toMatchObject({ balanceCents: 870, earnedCents: 870 });
  });

  it("subtracts chargeback debt from what may be withdrawn", () => {
    const w = world({ creator: 0, fan: 0 });
    w.run({ kind: "deposit", key: "d1", accountId: w.ids.fan!, amountCents: 10_000 });
    tipCredited(w, "fan", "creator", 1000); // earned 970
    w.run({ kind: "deposit", key: "d2", accountId: w.ids.creator!, amountCents: 2000 });
    // The creator's 2000 purchase is charged back after everything available is gone to a tip.
    tipCredited(w, "creator", "fan", 2970);
    w.run({ kind: "reversal", key: "cb", accountId: w.ids.creator!, amountCents: 2000, type: "chargeback" });
    expect(st(w, "creator")).toMatchObject({ balanceCents: 0, debtCents: 2000, earnedCents: 0 });
    tipCredited(w, "fan", "creator", 3000); // earns 2910, but owes 2000
    expect(st(w, "creator")).toMatchObject({ earnedCents: 2910, debtCents: 2000 });
    expect(reserve(w, "creator", 911)).toMatchObject({
      ok: false,
      refusal: { code: "insufficient_funds", details: { withdrawable_cents: 910 } },
    });
    expect(reserve(w, "creator", 910).ok).toBe(true);
  });

  it("walks pending -> processing -> paid once; late, repeated and backward outcomes change nothing", () => {
    const w = world({ creator: 5000 }, { creator: 5000 });
    const id = randomUUID();
    expect(reserve(w, "creator", 2000, id).ok).toBe(true);
    expect(rec(w, "creator", id)).toMatchObject({ status: "pending", round: 1, seq: 1 });
    expect(outcome(w, "creator", id, "processing")).toMatchObject({ ok: true, result: { applied: true } });
    expect(rec(w, "creator", id)).toMatchObject({ status: "processing", seq: 2 });
    const paid = outcome(w, "creator", id, "paid");
    expect(paid).toMatchObject({ ok: true, result: { applied: true, payout: { status: "paid" } } });
    expect((paid as { event: TxEvent }).event.key).toBeNull();
    expect(st(w, "creator")).toMatchObject({ balanceCents: 3000, reservedCents: 0, earnedCents: 3000 });
    for (const again of ["paid", "processing", "failed"] as const) {
      const d = outcome(w, "creator", id, again);
      expect(d, again).toMatchObject({ ok: true, event: null, result: { applied: false } });
      expect(st(w, "creator")).toMatchObject({ balanceCents: 3000, reservedCents: 0, version: 2 });
    }
    expect(w.accounts.get(systemAccountId("payouts_clearing", 0))!.state.balanceCents).toBe(2000);
  });

  it("releases the reserve of a failed payout (withdrawable again) and ignores a later paid", () => {
    const w = world({ creator: 5000 }, { creator: 5000 });
    const id = randomUUID();
    reserve(w, "creator", 2000, id);
    expect(outcome(w, "creator", id, "failed")).toMatchObject({ ok: true, result: { applied: true } });
    expect(st(w, "creator")).toMatchObject({ balanceCents: 5000, reservedCents: 0, earnedCents: 5000 });
    expect(outcome(w, "creator", id, "paid")).toMatchObject({ ok: true, event: null });
    expect(st(w, "creator")).toMatchObject({ balanceCents: 5000, reservedCents: 0 });
  });

  it("credits a returned payout back once, as its own transaction, withdrawable again", () => {
    const w = world({ creator: 5000 }, { creator: 5000 });
    const id = randomUUID();
    reserve(w, "creator", 2000, id);
    outcome(w, "creator", id, "paid");
    const back = outcome(w, "creator", id, "returned");
    expect(back.ok).toBe(true);
    const ev = (back as { event: TxEvent }).event;
    expect(ev.tx).toMatchObject({ type: "payout_return", amountCents: 2000, toAccountId: w.ids.creator });
    expect(ev.postings.reduce((a, p) => a + p.amountCents, 0)).toBe(0);
    expect(st(w, "creator")).toMatchObject({ balanceCents: 5000, reservedCents: 0, earnedCents: 5000 });
    expect(rec(w, "creator", id)).toMatchObject({ status: "returned", returnTxId: ev.tx.id });
    expect(outcome(w, "creator", id, "returned")).toMatchObject({ ok: true, event: null });
    expect(st(w, "creator").balanceCents).toBe(5000);
  });

  it("treats a return heard before paid as a release (money-wise: paid, then credited back)", () => {
    const w = world({ creator: 5000 }, { creator: 5000 });
    const id = randomUUID();
    reserve(w, "creator", 2000, id);
    outcome(w, "creator", id, "returned");
    expect(st(w, "creator")).toMatchObject({ balanceCents: 5000, reservedCents: 0, earnedCents: 5000 });
    expect(outcome(w, "creator", id, "paid")).toMatchObject({ ok: true, event: null });
    expect(w.accounts.get(systemAccountId("payouts_clearing", 0))!.state.balanceCents).toBe(0);
  });

  it("retries a failed payout in a new round; the old round's outcomes change nothing", () => {
    const w = world({ creator: 5000 }, { creator: 5000 });
    const id = randomUUID();
    reserve(w, "creator", 2000, id);
    const retry = (round: number) =>
      w.run({ kind: "retry_payout", key: randomUUID(), accountId: w.ids.creator!, payoutId: id, round });
    expect(retry(1)).toMatchObject({ ok: false, refusal: { code: "conflict" } });
    outcome(w, "creator", id, "failed");
    expect(retry(1)).toMatchObject({
      ok: true,
      result: { applied: true, payout: { round: 2, status: "pending" } },
    });
    expect(st(w, "creator")).toMatchObject({ reservedCents: 2000, earnedCents: 3000 });
    expect(retry(1)).toMatchObject({ ok: true, event: null, result: { applied: false } });
    expect(outcome(w, "creator", id, "paid", 1)).toMatchObject({ ok: true, event: null });
    expect(outcome(w, "creator", id, "paid", 2)).toMatchObject({ ok: true, result: { applied: true } });
    expect(st(w, "creator")).toMatchObject({ balanceCents: 3000, reservedCents: 0, earnedCents: 3000 });
  });

  it("refuses a payout of a suspended account by the fraud rule, as for tips", () => {
    const w = world({ creator: 5000 }, { creator: 5000 });
    w.run({ kind: "set_status", key: "s", accountId: w.ids.creator!, status: "suspended" });
    expect(reserve(w, "creator", 1000)).toMatchObject({
      ok: false,
      refusal: { code: "fraud_blocked", details: { rule: "suspended_account" } },
    });
  });

  it("asserts earned money stays within what is available", () => {
    const w = world({ creator: 5000 }, { creator: 5000 });
    const mem = w.accounts.get(w.ids.creator!)!;
    const bad = { ...mem.state, version: 1, earnedCents: 5001 };
    expect(() =>
      applyEvent(
        (id) => w.accounts.get(id),
        {
          t: "status",
          id: "x",
          state: bad,
          status: "active",
          reason: null,
          key: "k",
          hash: "h",
          at: new Date(NOW).toISOString(),
        },
        1,
      ),
    ).toThrow(/impossible balance/);
  });
});

describe("idempotency keys over time", () => {
  const DAY = 86_400_000;

  it("replays a money-in key however old it is, but treats a tip key past the TTL as new", () => {
    const w = world({ viewer: 1000, creator: 0 });
    const deposit = {
      kind: "deposit",
      key: "stripe:pi:old",
      accountId: w.ids.viewer!,
      amountCents: 500,
    } as const;
    expect(w.run(deposit).ok).toBe(true);
    expect(w.tip("viewer", "creator", 100, "tip-old").ok).toBe(true);
    expect(w.bal("viewer")).toBe(1400);

    w.advance(DAY + 1);
    const again = w.run(deposit);
    expect(again).toMatchObject({ ok: true, event: null, result: { replayed: true } });
    expect(w.bal("viewer")).toBe(1400);
    const tipAgain = w.tip("viewer", "creator", 100, "tip-old");
    expect(tipAgain).toMatchObject({ ok: true, result: { replayed: false } });
    expect(w.bal("viewer")).toBe(1300);
  });

  it("forgets keys past the TTL from memory, oldest first, keeping the recent ones", () => {
    const w = world({ viewer: 100_000, creator: 0 });
    const viewer = w.accounts.get(w.ids.viewer!)!;
    for (let i = 0; i < 5; i++) {
      w.tip("viewer", "creator", 100, `early-${i}`);
      w.advance(60_000);
    }
    // At NOW + DAY + 150 s, early-0..2 (used at +0, +60 s, +120 s) are past the TTL; early-3
    // (+180 s) and early-4 (+240 s) are not.
    w.advance(DAY - 150_000);
    w.tip("viewer", "creator", 100, "late");
    pruneKeys(viewer, NOW + DAY + 150_000, DAY);
    expect([...viewer.keys.keys()]).toEqual(["early-3", "early-4", "late"]);
  });
});
