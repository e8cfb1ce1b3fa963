import { randomUUID } from "node:crypto";
import { describe, expect, it } from "vitest";
import type { WalEvent } from "../../src/ledger/events.ts";
import {
  compareStreamIds,
  decodeEntry,
  encodeEntry,
  nextStreamId,
  WAL_FIELD,
  WAL_FORMAT_VERSION,
  WAL_VERSION_FIELD,
} from "../../src/wal/wal-codec.ts";

const state = (v: number) => ({
  id: randomUUID(),
  balanceCents: 100,
  reservedCents: 5,
  debtCents: 0,
  status: "active" as const,
  version: v,
  earnedCents: 3,
});

describe("WAL codec", () => {
  it("round-trips every kind of event exactly", () => {
    const txId = randomUUID();
    const events: WalEvent[] = [
      {
        t: "tx",
        tx: {
          id: txId,
          type: "tip",
          status: "completed",
          accountId: "a",
          fromAccountId: "a",
          toAccountId: "b",
          amountCents: 100,
          platformFeeCents: 3,
          charityFeeCents: 1,
          netAmountCents: 97,
          currency: "USD",
          stripePaymentId: null,
          metadata: { stream: "x" },
          createdAt: "2026-11-25T00:00:00.000Z",
        },
        postings: [{ accountId: "a", amountCents: -100 }],
        states: [state(3), state(9)],
        key: "k",
        hash: "h",
        credits: [{ accountId: "b", txId, amountCents: 97 }],
        fraud: [],
      },
      {
        t: "credit",
        accountId: "b",
        items: [{ txId, amountCents: 97 }],
        state: state(2),
        at: "2026-11-25T00:00:00.000Z",
      },
      { t: "fraud", fraud: [] },
      {
        t: "status",
        id: "s",
        state: state(4),
        status: "suspended",
        reason: null,
        key: "k",
        hash: "h",
        at: "x",
      },
    ];
    expect(decodeEntry([WAL_FIELD, encodeEntry(events)])).toEqual(events);
  });

  it("carries a payout's record with its transaction and alone, and reads old states as nothing earned", () => {
    const id = randomUUID();
    const payout = {
      id,
      userId: "a",
      amountCents: 2000,
      provider: "wise",
      providerRecipientId: "r1",
      providerTransferId: null,
      status: "pending" as const,
      failureReason: null,
      attempts: 0,
      round: 1,
      seq: 1,
      createdAt: "2026-11-25T00:00:00.000Z",
      updatedAt: "2026-11-25T00:00:00.000Z",
      paidAt: null,
      returnTxId: null,
    };
    const events: WalEvent[] = [
      {
        t: "tx",
        tx: {
          id,
          type: "payout",
          status: "pending",
          accountId: "a",
          fromAccountId: "a",
          toAccountId: null,
          amountCents: 2000,
          platformFeeCents: 0,
          charityFeeCents: 0,
          netAmountCents: 2000,
          currency: "USD",
          stripePaymentId: null,
          metadata: {},
          createdAt: "2026-11-25T00:00:00.000Z",
        },
        postings: [],
        states: [state(2)],
        key: "k",
        hash: "h",
        credits: [],
        fraud: [],
        payout,
      },
      { t: "payout", payout: { ...payout, status: "processing", seq: 2 } },
    ];
    expect(decodeEntry([WAL_FIELD, encodeEntry(events)])).toEqual(events);
    // A state written before earned money was tracked (six elements) carries none.
    const old = JSON.stringify([["c", "b", [["t", 97]], ["b", 97, 0, 0, "active", 2], "x"]]);
    expect(decodeEntry([WAL_FIELD, old])[0]).toMatchObject({ state: { balanceCents: 97, earnedCents: 0 } });
  });

  it("re-derives what a tip repeats, and keeps what differs from the derivation", () => {
    const txId = randomUUID();
    const [from, to] = [randomUUID(), randomUUID()];
    const sender = { ...state(5), id: from };
    const tip: WalEvent = {
      t: "tx",
      tx: {
        id: txId,
        type: "tip",
        status: "completed",
        accountId: from,
        fromAccountId: from,
        toAccountId: to,
        amountCents: 300,
        platformFeeCents: 9,
        charityFeeCents: 3,
        netAmountCents: 291,
        currency: "USD",
        stripePaymentId: null,
        metadata: {},
        createdAt: "2026-11-25T00:00:00.000Z",
      },
      postings: [{ accountId: from, amountCents: -300 }],
      states: [sender],
      key: "k",
      hash: `tip|${from}|${to}|300|{}`,
      credits: [{ accountId: to, txId, amountCents: 291 }],
      fraud: [],
    };
    const encoded = encodeEntry([tip]);
    expect(encoded).not.toContain(`tip|${from}`);
    expect(decodeEntry([WAL_FIELD, encoded])).toEqual([tip]);
    const odd = {
      ...tip,
      hash: "something else",
      postings: [{ accountId: to, amountCents: -300 }],
    } as WalEvent;
    expect(decodeEntry([WAL_FIELD, encodeEntry([odd])])).toEqual([odd]);
  });

  describe("format version", () => {
    const events: WalEvent[] = [
      {
        t: "credit",
        accountId: "b",
        items: [{ txId: "t", amountCents: 97 }],
        state: state(2),
        at: "2026-11-25T00:00:00.000Z",
      },
    ];

    it("refuses an entry of a format version it does not know, naming the version", () => {
      const fields = [WAL_VERSION_FIELD, "2", WAL_FIELD, encodeEntry(events)];
      expect(() => decodeEntry(fields)).toThrow(/format version 2\b/);
      // Whatever the field order: the version is checked before the events are trusted.
      expect(() => decodeEntry([WAL_FIELD, encodeEntry(events), WAL_VERSION_FIELD, "2"])).toThrow(
        /format version 2\b/,
      );
    });

    it("decodes an entry of the current version and one written before the field existed", () => {
      // Entries without "v" are version 1: they decode only while this build reads version 1.
      expect(WAL_FORMAT_VERSION).toBe("1");
      expect(decodeEntry([WAL_VERSION_FIELD, "1", "f", "7", WAL_FIELD, encodeEntry(events)])).toEqual(events);
      expect(decodeEntry([WAL_FIELD, encodeEntry(events)])).toEqual(events);
    });
  });

  it("orders stream ids numerically and finds the next one", () => {
    expect(compareStreamIds("10-0", "9-5")).toBe(1);
    expect(compareStreamIds("5-10", "5-9")).toBe(1);
    expect(compareStreamIds("5-1", "5-1")).toBe(0);
    expect(nextStreamId("1700000000000-9")).toBe("1700000000000-10");
  });
});
