// Owns the small interfaces the shard runtime needs from the outside and nothing else: a WAL it
// appends to and pages through, and a source of account state (Postgres). The adapters in
// src/wal and src/persist implement them; the entry point wires them in.
import type { WalEvent } from "../ledger/events.ts";
import type { AccountMem, KeyRecord } from "../ledger/state.ts";
import type {
  DirectoryEntry,
  FraudLimits,
  PayoutRecord,
  TransactionRecord,
  UserCommand,
} from "../ledger/types.ts";

export interface WalAppend {
  shard: number;
  events: WalEvent[];
}

/** `fenced`: the log refused the append because this process no longer holds the lease. */
export type WalAppendResult = { ok: true; id: string } | { ok: false; error: Error; fenced: boolean };

export interface WalEntry {
  id: string;
  events: WalEvent[];
}

export interface WalLog {
  /** One entry per item, all in one round trip; a result per item, in order. */
  append(batch: WalAppend[]): Promise<WalAppendResult[]>;
  /** Up to `count` entries of a shard's log after `afterId` (null: from the start), oldest first. */
  readPage(shard: number, afterId: string | null, count: number): Promise<WalEntry[]>;
  /** Order of two entry ids (negative: a is older); ids of different shards compare by time. */
  compareIds(a: string, b: string): number;
  /** The smallest possible id after `id`. */
  idAfter(id: string): string;
  /** When the log stamped an entry (its clock, in ms). */
  idTimeMs(id: string): number;
}

export interface AccountSource {
  /** Creates the per-shard system accounts that do not exist yet. */
  ensureSystemAccounts(shards: number): Promise<void>;
  /** Accounts with what a shard needs to decide for them; ids that do not exist are absent. */
  load(ids: string[], nowMs: number, idempotencyTtlMs: number): Promise<Map<string, AccountMem>>;
  /** What the directory may know of accounts another process owns (one light read). */
  directory(ids: string[]): Promise<Map<string, DirectoryEntry>>;
  /** A key that must never expire, used longer ago than memory remembers. */
  findKey(accountId: string, key: string): Promise<KeyRecord | null>;
  /** A payout not in memory: its lifecycle record and its transaction, as stored. */
  findPayout(
    accountId: string,
    payoutId: string,
  ): Promise<{ record: PayoutRecord | null; tx: TransactionRecord | null }>;
  /** The stored versions of these accounts. */
  versions(ids: string[]): Promise<Map<string, number>>;
  /** Which of these (transaction, account) legs are already stored, as "txId:accountId". */
  postedLegs(legs: Array<{ txId: string; accountId: string }>): Promise<Set<string>>;
}

/** Settings of the shard runtime (the entry point derives them from configuration). */
export interface LedgerSettings {
  shards: number;
  walBatchMax: number;
  mailboxMax: number;
  accountCacheMax: number;
  idempotencyTtlMs: number;
  /** Most WAL entries per shard read at once during recovery. */
  recoveryPageEntries: number;
  limits: FraudLimits;
  /** Shards spread over processes (LEDGER_SPREAD): credits are checked against arriving twice. */
  spread?: boolean;
}

/**
 * The shard leases (src/wal/lease.ts). Recovery calls ensure() before it rebuilds memory: it
 * resolves with the shards this process holds now (each lease renewed, or taken again with a new
 * fencing token when it had lapsed), throws OwnershipLostError when another process holds one
 * (spread over processes: that shard is dropped from the answer instead), and any other error when
 * the answer cannot be had now (Redis unreachable: recovery retries).
 */
export interface Ownership {
  ensure(): Promise<readonly number[]>;
}

/** Another process holds the ledger lease: this one must stop owning the ledger. */
export class OwnershipLostError extends Error {}

/** A command or read for a shard this process does not own (its owner is asked instead). */
export class NotOwnerError extends Error {
  /** `shard` -1: this process is stopping and owns none. */
  constructor(readonly shard: number) {
    super(shard < 0 ? "this process is stopping" : `shard ${shard} is not owned by this process`);
  }
}

/** What a process may ask of the owner of another shard (PeerLedger.call). */
export type PeerOp =
  | { op: "submit"; cmd: UserCommand }
  | { op: "account"; accountId: string }
  | { op: "payout"; accountId: string; payoutId: string }
  | { op: "payouts"; accountId: string };

/**
 * A tip credit for a recipient in a shard another process owns. `tx` lets the recipient's process
 * show the tip on its creator's live feed without waiting for Postgres.
 */
export interface RemoteCredit {
  accountId: string;
  txId: string;
  amountCents: number;
  /** When the WAL took the tip's debit (its clock, ms). */
  atMs: number;
  /**
   * It may have been delivered before, long enough ago for the recipient to have forgotten it
   * (sent again after a failure, or re-derived by a recovery): Postgres is asked too.
   */
  check?: boolean;
  tx?: TransactionRecord;
}

/**
 * The other processes of a deployment whose shards are spread (src/cluster/peers.ts). Each call
 * goes to the current owner of `shard`, finding it again when the shard moved, and rejects with
 * the owner's AppError, or `unavailable` when no owner answers.
 */
export interface PeerLedger {
  call(shard: number, op: PeerOp): Promise<unknown>;
  /** Resolves once the owner of `shard` made these credits durable (or had them already). */
  credit(shard: number, credits: RemoteCredit[]): Promise<void>;
}
