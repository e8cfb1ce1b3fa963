// The pure parts of live: the word filter, the feed number a credit decides (and replays), and
// how it travels through the WAL codec and into a persister round's tip_feed rows.
import { randomUUID } from "node:crypto";
import { describe, expect, it, vi } from "vitest";
import { decideCredit } from "../../src/ledger/decide.ts";
import type { CreditEvent } from "../../src/ledger/events.ts";
import { applyEvent, newAccountMem } from "../../src/ledger/state.ts";
import { ExpirySweep } from "../../src/live/expiry-sweep.ts";
import { wordFilter } from "../../src/live/word-filter.ts";
import { buildBatch } from "../../src/persist/round-batch.ts";
import { decodeEntry, encodeEntry, WAL_FIELD } from "../../src/wal/wal-codec.ts";

const state = (id: string, version = 3) => ({
  id,
  balanceCents: 500,
  reservedCents: 0,
  debtCents: 0,
  earnedCents: 0,
  status: "active" as const,
  version,
});

describe("word filter", () => {
  it("masks listed words, whole and in any case, and nothing else", () => {
    const f = wordFilter(["darn", "heck", "a.b"]);
    expect(f("Darn it, HECK! darned checks")).toBe("**** it, ****! darned checks");
    expect(f("a.b axb")).toBe("*** axb");
    expect(f("ünheck heck_x heck")).toBe("ünheck heck_x ****");
    expect(wordFilter([])("darn")).toBe("darn");
  });
});

describe("feed numbers", () => {
  it("a credit takes the next numbers of its recipient's feed, and a replay restores them", () => {
    const id = randomUUID();
    const mem = newAccountMem(state(id), false, 41);
    const items = [
      { txId: randomUUID(), amountCents: 97 },
      { txId: randomUUID(), amountCents: 291 },
    ];
    const ev = decideCredit({ kind: "credit", accountId: id, items }, mem, "2026-12-02T00:00:00.000Z");
    expect(ev.feedSeq).toBe(43);
    expect(applyEvent(() => mem, ev, 1)).toBe(true);
    expect(mem.feedSeq).toBe(43);
    // Recovery: memory loaded from Postgres at the version before, the WAL event replayed.
    const reloaded = newAccountMem(state(id), false, 41);
    const [back] = decodeEntry([WAL_FIELD, encodeEntry([ev])]) as [CreditEvent];
    expect(back).toEqual(ev);
    applyEvent(() => reloaded, back, 0);
    expect(reloaded.feedSeq).toBe(43);
    // A replay of an event already applied changes nothing.
    applyEvent(() => reloaded, back, 0);
    expect(reloaded.feedSeq).toBe(43);
  });

  it("a credit event written before feeds existed decodes without a number", () => {
    const id = randomUUID();
    const old = JSON.stringify([
      ["c", id, [[randomUUID(), 97]], [id, 597, 0, 0, "active", 4], "2026-01-01T00:00:00.000Z"],
    ]);
    const [ev] = decodeEntry([WAL_FIELD, old]) as [CreditEvent];
    expect(ev.feedSeq).toBeUndefined();
    const mem = newAccountMem(state(id), false, 7);
    applyEvent(() => mem, ev, 0);
    expect(mem.feedSeq).toBe(7);
  });

  it("a persister round turns credits into tip_feed rows, one per tip, numbered in order", () => {
    const id = randomUUID();
    const items = [randomUUID(), randomUUID(), randomUUID()].map((txId) => ({ txId, amountCents: 97 }));
    const ev: CreditEvent = {
      t: "credit",
      accountId: id,
      items,
      state: state(id, 4),
      at: "2026-12-02T00:00:00.000Z",
      feedSeq: 12,
    };
    const b = buildBatch([{ shard: 0, id: "1-0", events: [ev] }]);
    expect(b.feed).toEqual(
      items.map((it, i) => ({ creatorId: id, seq: 10 + i, txId: it.txId, amountCents: 97, at: ev.at })),
    );
    // Each feed row is its tip's creator leg: no posting row besides it.
    expect(b.legs).toEqual([]);
  });
});

describe("ExpirySweep", () => {
  it("expires items in deadline order with one timer, and forgets removed ones", () => {
    vi.useFakeTimers({ now: 1_000_000 });
    try {
      const expired: string[] = [];
      const sweep = new ExpirySweep<string>((x) => expired.push(x));
      sweep.add("c", 1_000_300);
      sweep.add("a", 1_000_100);
      sweep.add("gone", 1_000_150);
      sweep.add("b", 1_000_200);
      sweep.add("late", 1_000_000 + 40 * 86_400_000); // past setTimeout's longest delay
      sweep.remove("gone");
      expect(vi.getTimerCount()).toBe(1);
      vi.advanceTimersByTime(99);
      expect(expired).toEqual([]);
      vi.advanceTimersByTime(1);
      expect(expired).toEqual(["a"]);
      vi.advanceTimersByTime(200);
      expect(expired).toEqual(["a", "b", "c"]);
      expect(sweep.size).toBe(1);
      vi.advanceTimersByTime(30 * 86_400_000);
      expect(expired).toEqual(["a", "b", "c"]);
      vi.advanceTimersByTime(10 * 86_400_000);
      expect(expired).toEqual(["a", "b", "c", "late"]);
      sweep.add("past", 0);
      vi.advanceTimersByTime(0);
      expect(expired.at(-1)).toBe("past");
      expect(sweep.size).toBe(0);
      sweep.stop();
    } finally {
      vi.useRealTimers();
    }
  });
});
