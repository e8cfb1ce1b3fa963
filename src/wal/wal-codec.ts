// Owns the WAL's wire format: one Redis stream entry per shard flush, with fields "v" (the
// format version), "f" (the writer's fencing token) and "e" (the JSON array of that flush's
// events). One XADD carrying many events is what makes group commit cheap.
import type { CreditEvent, TxEvent, WalEvent } from "../ledger/events.ts";
import { tipHash } from "../ledger/decide.ts";
import type { AccountState, PayoutRecord, TransactionRecord } from "../ledger/types.ts";

export const WAL_FIELD = "e";
export const WAL_VERSION_FIELD = "v";
/** Bumped when the encoding changes incompatibly; a reader refuses versions it does not know.
 * Entries without a version field predate it and are version 1. */
export const WAL_FORMAT_VERSION = "1";

// Transactions and credits, the bulk of the WAL, travel as positional arrays: no repeated key
// names, which makes encoding about twice as fast and entries about half the size. Rarer events
// (status changes, refused commands' fraud logs) stay plain objects.
// The 7th element (earned cents) is absent in entries written before it existed: read as 0, so
// nothing older than the tracking becomes withdrawable by accident.
type StateTuple = [string, number, number, number, AccountState["status"], number, number?];
type TxTuple = [
  string,
  TransactionRecord["type"],
  TransactionRecord["status"],
  string | null,
  string | null,
  string | null,
  number,
  number,
  number,
  number,
  string | null,
  Record<string, unknown>,
  string,
];
type PackedTx = [
  "x",
  TxTuple,
  number[] | Array<[string, number]>,
  StateTuple[],
  string | null,
  string | null,
  Array<[string, string, number]> | number,
  TxEvent["fraud"],
  PayoutRecord?,
];
type PackedCredit = ["c", string, Array<[string, number]>, StateTuple, string, number?];
type Packed = PackedTx | PackedCredit | WalEvent;

const packState = (s: AccountState): StateTuple => [
  s.id,
  s.balanceCents,
  s.reservedCents,
  s.debtCents,
  s.status,
  s.version,
  s.earnedCents,
];
const unpackState = (t: StateTuple): AccountState => ({
  id: t[0],
  balanceCents: t[1],
  reservedCents: t[2],
  debtCents: t[3],
  status: t[4],
  version: t[5],
  earnedCents: t[6] ?? 0,
});

function pack(ev: WalEvent): Packed {
  if (ev.t === "tx") {
    const x = ev.tx;
    // What a tip repeats is left out and re-derived on decode (null marks "derived"): the owner
    // (the sender), the postings' accounts (the states' accounts, in order), the credit (to the
    // recipient, for this tx) and the request fingerprint.
    const derivable = x.type === "tip" && x.accountId === x.fromAccountId && x.toAccountId !== null;
    const postingsFollowStates =
      derivable &&
      ev.postings.length === ev.states.length &&
      ev.postings.every((p, i) => p.accountId === ev.states[i]!.id);
    const creditDerived =
      derivable &&
      ev.credits.length === 1 &&
      ev.credits[0]!.accountId === x.toAccountId &&
      ev.credits[0]!.txId === x.id;
    const hashDerived =
      derivable && ev.hash === tipHash(x.fromAccountId!, x.toAccountId!, x.amountCents, x.metadata);
    const packed: PackedTx = [
      "x",
      [
        x.id,
        x.type,
        x.status,
        derivable ? null : x.accountId,
        x.fromAccountId,
        x.toAccountId,
        x.amountCents,
        x.platformFeeCents,
        x.charityFeeCents,
        x.netAmountCents,
        x.stripePaymentId,
        x.metadata,
        x.createdAt,
      ],
      postingsFollowStates
        ? ev.postings.map((p) => p.amountCents)
        : ev.postings.map((p): [string, number] => [p.accountId, p.amountCents]),
      ev.states.map(packState),
      ev.key,
      hashDerived ? null : ev.hash,
      creditDerived
        ? ev.credits[0]!.amountCents
        : ev.credits.map((c): [string, string, number] => [c.accountId, c.txId, c.amountCents]),
      ev.fraud,
    ];
    if (ev.payout) packed.push(ev.payout);
    return packed;
  }
  if (ev.t === "credit") {
    const packed: PackedCredit = [
      "c",
      ev.accountId,
      ev.items.map((i): [string, number] => [i.txId, i.amountCents]),
      packState(ev.state),
      ev.at,
    ];
    if (ev.feedSeq !== undefined) packed.push(ev.feedSeq);
    return packed;
  }
  return ev;
}

function unpack(p: Packed): WalEvent {
  if (!Array.isArray(p)) return p;
  if (p[0] === "x") {
    const [, t, postings, states, key, hash, credits, fraud, payout] = p;
    const tx: TransactionRecord = {
      id: t[0],
      type: t[1],
      status: t[2],
      accountId: t[3] ?? t[4]!,
      fromAccountId: t[4],
      toAccountId: t[5],
      amountCents: t[6],
      platformFeeCents: t[7],
      charityFeeCents: t[8],
      netAmountCents: t[9],
      currency: "USD",
      stripePaymentId: t[10],
      metadata: t[11],
      createdAt: t[12],
    };
    const st = states.map(unpackState);
    return {
      t: "tx",
      tx,
      postings: (postings as Array<number | [string, number]>).map((p, i) =>
        typeof p === "number"
          ? { accountId: st[i]!.id, amountCents: p }
          : { accountId: p[0], amountCents: p[1] },
      ),
      states: st,
      key,
      hash:
        hash ??
        (t[3] === null ? tipHash(tx.fromAccountId!, tx.toAccountId!, tx.amountCents, tx.metadata) : null),
      credits:
        typeof credits === "number"
          ? [{ accountId: tx.toAccountId!, txId: tx.id, amountCents: credits }]
          : credits.map(([accountId, txId, amountCents]) => ({ accountId, txId, amountCents })),
      fraud,
      ...(payout ? { payout } : {}),
    };
  }
  const [, accountId, items, state, at, feedSeq] = p;
  const ev: CreditEvent = {
    t: "credit",
    accountId,
    items: items.map(([txId, amountCents]) => ({ txId, amountCents })),
    state: unpackState(state),
    at,
  };
  if (typeof feedSeq === "number") ev.feedSeq = feedSeq;
  return ev;
}

export function encodeEntry(events: WalEvent[]): string {
  return JSON.stringify(events.map(pack));
}

export function decodeEntry(fields: string[]): WalEvent[] {
  let payload: string | null = null;
  for (let i = 0; i + 1 < fields.length; i += 2) {
    if (fields[i] === WAL_VERSION_FIELD && fields[i + 1] !== WAL_FORMAT_VERSION) {
      throw new Error(
        `WAL entry of format version ${fields[i + 1]}; this build reads version ${WAL_FORMAT_VERSION} (run the build that wrote it until the WAL is persisted)`,
      );
    }
    if (fields[i] === WAL_FIELD) payload = fields[i + 1]!;
  }
  if (payload === null) throw new Error("WAL entry without an events field");
  return (JSON.parse(payload) as Packed[]).map(unpack);
}

/** Stream ids order as (ms, seq); the id right after `id`, for XTRIM MINID (which keeps >=). */
export function nextStreamId(id: string): string {
  const [ms, seq] = id.split("-");
  return `${ms}-${BigInt(seq ?? "0") + 1n}`;
}

export function compareStreamIds(a: string, b: string): number {
  const [am, as] = a.split("-");
  const [bm, bs] = b.split("-");
  const d = BigInt(am!) - BigInt(bm!);
  if (d !== 0n) return d < 0n ? -1 : 1;
  const e = BigInt(as ?? "0") - BigInt(bs ?? "0");
  return e === 0n ? 0 : e < 0n ? -1 : 1;
}

export const streamIdMs = (id: string): number => Number(id.slice(0, id.indexOf("-")));
