// Owns turning one round's WAL entries into one Batch of rows: the final state of each account the
// round changed (with the version it continues from), each transaction once, its ledger legs,
// fraud logs and status changes. Pure: no Postgres, no Redis, so it is unit-tested on its own.
//
// A tip's legs are implied by its rows (sql/007_lean_journal.sql): its sender-side legs by the
// transaction row and the shard that decided it (legs_shard), its creator leg by the feed row that
// carries the amount. Only postings that are not implied become Leg rows.
import type { WalEvent } from "../ledger/events.ts";
import { systemAccountId } from "../ledger/accounts.ts";
import { tipPostings } from "../ledger/decide-tip.ts";
import { splitTip } from "../ledger/fee-split.ts";
import type {
  AccountState,
  FraudLogRecord,
  PayoutRecord,
  Posting,
  TransactionRecord,
} from "../ledger/types.ts";

/** One WAL stream entry, decoded. */
export interface Entry {
  shard: number;
  id: string;
  events: WalEvent[];
}

/** An account's last state in the round, applied only on top of `fromVersion - 1`. */
export interface AccountUpdate {
  shard: number;
  fromVersion: number;
  last: AccountState;
}

/** A ledger_postings row: a posting not implied by its transaction's rows. */
export interface Leg {
  txId: string;
  accountId: string;
  amountCents: number;
  at: string;
}

/** An account_status_changes row. */
export interface StatusRow {
  id: string;
  accountId: string;
  status: string;
  reason: string | null;
  key: string;
  hash: string;
  version: number;
  /** The account right after the change: what a replay of its key answers. */
  after: AccountState;
  at: string;
}

/** A transactions row: the record, its idempotency key and hash, the account's balance after it. */
export interface TxRow {
  tx: TransactionRecord;
  key: string | null;
  hash: string | null;
  after: AccountState | null;
  /** The deciding shard when the postings are implied by the row (a tip's sender-side legs, on
   * that shard's system accounts) and not stored as Legs; null for explicit postings. */
  legsShard: number | null;
}

/** A tip_feed row: the tip that took number `seq` of its creator's feed, and its creator leg. */
export interface FeedRow {
  creatorId: string;
  seq: number;
  txId: string;
  /** The creator's leg (+net amount) of the tip. */
  amountCents: number;
  at: string;
}

/**
 * True when `postings` are exactly the legs a tip row implies (tipPostings, as decideTip made them,
 * on the deciding shard's system accounts). Anything else keeps explicit postings, so the view
 * never invents a leg.
 */
export function tipLegsImplied(tx: TransactionRecord, shard: number, postings: Posting[]): boolean {
  if ((tx.type !== "tip" && tx.type !== "superlike") || tx.fromAccountId !== tx.accountId) return false;
  let split: ReturnType<typeof splitTip>;
  try {
    split = splitTip(tx.amountCents);
  } catch {
    return false;
  }
  if (
    split.platformFeeCents !== tx.platformFeeCents ||
    split.charityFeeCents !== tx.charityFeeCents ||
    split.netAmountCents !== tx.netAmountCents
  ) {
    return false;
  }
  const implied = tipPostings(
    tx.accountId,
    split,
    systemAccountId("platform_revenue", shard),
    systemAccountId("charity", shard),
  );
  return (
    implied.length === postings.length &&
    implied.every(
      (p, i) => p.accountId === postings[i]!.accountId && p.amountCents === postings[i]!.amountCents,
    )
  );
}

export interface Batch {
  accounts: Map<string, AccountUpdate>;
  txs: TxRow[];
  legs: Leg[];
  fraud: FraudLogRecord[];
  statusRows: StatusRow[];
  /** Accounts whose status changed this round, for the users.status mirror. */
  statusAccounts: Set<string>;
  /** Each payout's newest record of the round. */
  payouts: Map<string, PayoutRecord>;
  feed: FeedRow[];
}

export function buildBatch(entries: Entry[]): Batch {
  const accounts = new Map<string, AccountUpdate>();
  const txs = new Map<string, TxRow>();
  const legs = new Map<string, Leg>();
  const fraud: FraudLogRecord[] = [];
  const statusRows: StatusRow[] = [];
  const statusAccounts = new Set<string>();
  const payouts = new Map<string, PayoutRecord>();
  const setPayout = (p: PayoutRecord) => {
    const cur = payouts.get(p.id);
    if (!cur || p.seq > cur.seq) payouts.set(p.id, p);
  };
  const feed: FeedRow[] = [];
  const setState = (shard: number, s: AccountState) => {
    const cur = accounts.get(s.id);
    if (!cur) accounts.set(s.id, { shard, fromVersion: s.version, last: s });
    else if (s.version > cur.last.version) cur.last = s;
  };
  const addLeg = (txId: string, accountId: string, amountCents: number, at: string) => {
    legs.set(`${txId}:${accountId}`, { txId, accountId, amountCents, at });
  };
  for (const e of entries) {
    for (const ev of e.events) {
      switch (ev.t) {
        case "tx": {
          for (const s of ev.states) setState(e.shard, s);
          const prev = txs.get(ev.tx.id);
          const after = ev.states.find((s) => s.id === ev.tx.accountId) ?? null;
          // A payout appears twice (reserved, then posted or voided): keep the first key and
          // balance-after, and the latest status.
          const legsShard = prev
            ? prev.legsShard
            : tipLegsImplied(ev.tx, e.shard, ev.postings)
              ? e.shard
              : null;
          if (prev) prev.tx = ev.tx;
          else txs.set(ev.tx.id, { tx: ev.tx, key: ev.key, hash: ev.hash, after, legsShard });
          if (legsShard === null) {
            for (const p of ev.postings) addLeg(ev.tx.id, p.accountId, p.amountCents, ev.tx.createdAt);
          }
          fraud.push(...ev.fraud);
          if (ev.payout) setPayout(ev.payout);
          break;
        }
        case "payout":
          setPayout(ev.payout);
          break;
        case "credit":
          setState(e.shard, ev.state);
          if (ev.feedSeq !== undefined) {
            // Each credited tip's feed row is its creator leg.
            const first = ev.feedSeq - ev.items.length + 1;
            for (let i = 0; i < ev.items.length; i++) {
              const it = ev.items[i]!;
              feed.push({
                creatorId: ev.accountId,
                seq: first + i,
                txId: it.txId,
                amountCents: it.amountCents,
                at: ev.at,
              });
            }
          } else {
            // A credit from a WAL written before feeds: its legs are explicit postings.
            for (const it of ev.items) addLeg(it.txId, ev.accountId, it.amountCents, ev.at);
          }
          break;
        case "status":
          setState(e.shard, ev.state);
          statusAccounts.add(ev.state.id);
          statusRows.push({
            id: ev.id,
            accountId: ev.state.id,
            status: ev.status,
            reason: ev.reason,
            key: ev.key,
            hash: ev.hash,
            version: ev.state.version,
            after: ev.state,
            at: ev.at,
          });
          break;
        case "fraud":
          fraud.push(...ev.fraud);
          break;
      }
    }
  }
  return {
    accounts,
    txs: [...txs.values()],
    legs: [...legs.values()],
    fraud,
    statusRows,
    statusAccounts,
    payouts,
    feed,
  };
}
