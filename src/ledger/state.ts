// Owns what a shard keeps in memory per account, and applyEvent: the one way that memory
// changes. The live path and crash recovery both go through applyEvent, so a replayed WAL
// rebuilds exactly the state that was acknowledged.
import { countsForVelocity, emptyWindow, recordOutgoing, type VelocityWindow } from "./fraud.ts";
import type { WalEvent } from "./events.ts";
import type {
  AccountState,
  AccountView,
  PayoutRecord,
  PayoutResult,
  StatusResult,
  TransactionRecord,
  TxResult,
} from "./types.ts";

export interface KeyRecord {
  hash: string;
  atMs: number;
  result: TxResult | StatusResult | PayoutResult;
}

export interface AccountMem {
  state: AccountState;
  system: boolean;
  window: VelocityWindow;
  /** Idempotency keys of this account's commands, kept IDEMPOTENCY_TTL_MS. */
  keys: Map<string, KeyRecord>;
  /** Payouts by id (the transaction id) that are pending, or finished recently. */
  payouts: Map<string, TransactionRecord>;
  /** Payout lifecycles by payout id: open ones always, finished ones while loaded. */
  payoutRecords: Map<string, PayoutRecord>;
  /** Flush sequence of the last WAL entry that changed it; it may be evicted once persisted. */
  lastFlushSeq: number;
  /** The last tip-feed sequence number credited to it (tips it received, 1, 2, 3...). */
  feedSeq: number;
}

export function newAccountMem(state: AccountState, system: boolean, feedSeq = 0): AccountMem {
  return {
    state,
    system,
    window: emptyWindow(),
    keys: new Map(),
    payouts: new Map(),
    payoutRecords: new Map(),
    lastFlushSeq: 0,
    feedSeq,
  };
}

/**
 * Forgets keys older than the TTL. The map is in the order keys were used, so expired ones sit at
 * its front: memory stays bounded by the traffic of one TTL however long the account stays loaded.
 * A key that must never expire (money in, payouts) is found again in Postgres if it is reused.
 */
export function pruneKeys(mem: AccountMem, nowMs: number, ttlMs: number): void {
  for (const [key, record] of mem.keys) {
    if (nowMs - record.atMs < ttlMs) return;
    mem.keys.delete(key);
  }
}

/** What a payout may take: what the account earned and holds, minus chargeback debt. */
export const withdrawableOf = (s: AccountState): number => Math.max(0, s.earnedCents - s.debtCents);

/** Earned money left after the available balance dropped to `availableCents` (spending and
 * reversals take purchased credits first). */
export const earnedWithin = (earnedCents: number, availableCents: number): number =>
  Math.max(0, Math.min(earnedCents, availableCents));

export function viewOf(s: AccountState): AccountView {
  return {
    id: s.id,
    balanceCents: s.balanceCents,
    reservedCents: s.reservedCents,
    availableCents: s.balanceCents - s.reservedCents,
    debtCents: s.debtCents,
    withdrawableCents: withdrawableOf(s),
    currency: "USD",
    status: s.status,
    version: s.version,
  };
}

export type AccountLookup = (id: string) => AccountMem | undefined;

/** Raised when an event would break an invariant: the ledger must stop, never carry on. */
export class LedgerInvariantError extends Error {
  override name = "LedgerInvariantError";
}

/**
 * Applies an event to the memory of the accounts it names, all or nothing: every state is
 * checked before any is written, so a failed assertion throws LedgerInvariantError and leaves
 * memory exactly as it was. States carry versions: a state at or below the version in memory is
 * already there (replay) and is skipped. Returns false, changing nothing, if an account is missing.
 */
export function applyEvent(get: AccountLookup, ev: WalEvent, flushSeq: number): boolean {
  switch (ev.t) {
    case "fraud":
      return true;
    case "payout": {
      const mem = get(ev.payout.userId);
      if (!mem) return false;
      rememberPayout(mem, ev.payout);
      return true;
    }
    case "credit":
    case "status": {
      const mem = get(ev.state.id);
      if (!mem) return false;
      if (ev.state.version <= mem.state.version) return true;
      assertNextState(mem, ev.state);
      mem.state = ev.state;
      mem.lastFlushSeq = flushSeq;
      if (ev.t === "credit" && ev.feedSeq !== undefined && ev.feedSeq > mem.feedSeq) mem.feedSeq = ev.feedSeq;
      if (ev.t === "status") {
        remember(mem, ev.key, {
          hash: ev.hash,
          atMs: Date.parse(ev.at),
          result: { account: viewOf(ev.state), replayed: false },
        });
      }
      return true;
    }
    case "tx": {
      const owner = get(ev.tx.accountId);
      if (!owner) return false;
      const changes: Array<{ mem: AccountMem; next: AccountState }> = [];
      for (const s of ev.states) {
        const mem = get(s.id);
        if (!mem) return false;
        if (s.version <= mem.state.version) continue;
        assertNextState(mem, s);
        changes.push({ mem, next: s });
      }
      if (changes.length === 0) return true; // the whole event was already in memory
      // Checked; from here on nothing throws.
      for (const c of changes) {
        c.mem.state = c.next;
        c.mem.lastFlushSeq = flushSeq;
      }
      const tx = ev.tx;
      const atMs = Date.parse(tx.createdAt);
      const created = tx.type !== "payout" || !owner.payouts.has(tx.id);
      if (created && countsForVelocity(tx.type)) recordOutgoing(owner.window, atMs, tx.amountCents);
      if (tx.type === "payout") owner.payouts.set(tx.id, tx);
      if (ev.payout) rememberPayout(owner, ev.payout);
      if (ev.key !== null && ev.hash !== null) {
        const ownerState = ev.states.find((s) => s.id === owner.state.id) ?? owner.state;
        remember(owner, ev.key, {
          hash: ev.hash,
          atMs,
          result: { transaction: tx, account: viewOf(ownerState), replayed: false },
        });
      }
      return true;
    }
  }
}

/** A payout record replaces the one in memory only if it is newer (replay skips the older). */
export function rememberPayout(mem: AccountMem, p: PayoutRecord): void {
  const cur = mem.payoutRecords.get(p.id);
  if (!cur || p.seq > cur.seq) mem.payoutRecords.set(p.id, p);
}

function remember(mem: AccountMem, key: string, record: KeyRecord): void {
  mem.keys.delete(key); // re-inserted at the end: the map stays in order of use
  mem.keys.set(key, record);
}

function assertNextState(mem: AccountMem, next: AccountState): void {
  if (next.version !== mem.state.version + 1) {
    throw new LedgerInvariantError(
      `ledger invariant: account ${mem.state.id} version ${mem.state.version} -> ${next.version} skips a change`,
    );
  }
  if (
    !mem.system &&
    (next.balanceCents < 0 ||
      next.reservedCents > next.balanceCents ||
      next.reservedCents < 0 ||
      next.debtCents < 0 ||
      next.earnedCents < 0 ||
      next.earnedCents > next.balanceCents - next.reservedCents)
  ) {
    throw new LedgerInvariantError(`ledger invariant: account ${next.id} would hold an impossible balance`);
  }
}
