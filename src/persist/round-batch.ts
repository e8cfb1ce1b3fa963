// Owns turning one round's WAL entries into one Batch of rows: the final state of each account the
// round changed (with the version it continues from), each transaction once, its ledger legs,
// fraud logs and status changes. Pure: no Postgres, no Redis, so it is unit-tested on its own.
import type { WalEvent } from "../ledger/events.ts";
import type { AccountState, FraudLogRecord, PayoutRecord, TransactionRecord } from "../ledger/types.ts";

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

/** A ledger_entries row. */
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
}

/** A tip_feed row: the tip that took number `seq` of its creator's feed. */
export interface FeedRow {
  creatorId: string;
  seq: number;
  txId: string;
  at: string;
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
          if (prev) prev.tx = ev.tx;
          else txs.set(ev.tx.id, { tx: ev.tx, key: ev.key, hash: ev.hash, after });
          for (const p of ev.postings) addLeg(ev.tx.id, p.accountId, p.amountCents, ev.tx.createdAt);
          fraud.push(...ev.fraud);
          if (ev.payout) setPayout(ev.payout);
          break;
        }
        case "payout":
          setPayout(ev.payout);
          break;
        case "credit":
          setState(e.shard, ev.state);
          for (const it of ev.items) addLeg(it.txId, ev.accountId, it.amountCents, ev.at);
          if (ev.feedSeq !== undefined) {
            const first = ev.feedSeq - ev.items.length + 1;
            for (let i = 0; i < ev.items.length; i++) {
              feed.push({ creatorId: ev.accountId, seq: first + i, txId: ev.items[i]!.txId, at: ev.at });
            }
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
