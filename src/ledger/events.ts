// Owns the events a decision produces: exactly what the WAL carries, what recovery replays into
// memory and what the persister writes to Postgres. Every event carries the absolute state of
// each account it changed (with the new version), so replay and persistence never re-derive.
import type {
  AccountState,
  AccountStatus,
  CreditItem,
  FraudLogRecord,
  PayoutRecord,
  Posting,
  TransactionRecord,
} from "./types.ts";

/** A transaction decided by the shard owning `tx.accountId`. */
export interface TxEvent {
  t: "tx";
  tx: TransactionRecord;
  /** Postings made by this shard (all of them, except a tip's recipient leg). */
  postings: Posting[];
  /** States after this event of the accounts this shard changed. */
  states: AccountState[];
  /** Idempotency key and request fingerprint (scope: tx.accountId). */
  key: string | null;
  hash: string | null;
  /** Recipient legs owed by another shard once this event is durable (a tip's net amount). */
  credits: Array<{ accountId: string } & CreditItem>;
  fraud: FraudLogRecord[];
  /** A payout's record after this transaction (reserve, post, void, return, retry). */
  payout?: PayoutRecord;
}

/** The recipient side of tips: applied by the recipient's shard after the debits are durable. */
export interface CreditEvent {
  t: "credit";
  accountId: string;
  items: CreditItem[];
  state: AccountState;
  at: string;
  /** The recipient's tip-feed sequence after this event: its items are feedSeq - n + 1 .. feedSeq,
   * in order (absent in entries written before the feed existed). Decided here, so a replay repeats it. */
  feedSeq?: number;
}

export interface StatusEvent {
  t: "status";
  id: string;
  state: AccountState;
  status: AccountStatus;
  reason: string | null;
  key: string;
  hash: string;
  at: string;
}

/** Fraud logs of a refused command: no money moved, but the attempt is on record. */
export interface FraudEvent {
  t: "fraud";
  fraud: FraudLogRecord[];
}

/** A payout transition that moves no money (processing): only its record changes. */
export interface PayoutEvent {
  t: "payout";
  payout: PayoutRecord;
}

export type WalEvent = TxEvent | CreditEvent | StatusEvent | FraudEvent | PayoutEvent;
