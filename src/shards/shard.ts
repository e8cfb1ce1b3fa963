// Owns one shard actor's state: the memory of the accounts it owns (and nothing else), its
// mailbox, the events it decided that wait for the next group commit and who waits on them, and
// the inbox of tip credits other shards sent it once their debits were durable.
import { SYSTEM_ACCOUNT_KINDS, type SystemAccountKind, systemAccountId } from "../ledger/accounts.ts";
import type { WalEvent } from "../ledger/events.ts";
import type { AccountMem } from "../ledger/state.ts";
import type { CreditItem, StatusResult, TxResult, UserCommand } from "../ledger/types.ts";
import type { AppError } from "../errors.ts";

export type Result = TxResult | StatusResult;

export interface Waiter {
  resolve(r: Result): void;
  reject(e: Error): void;
  result: Result | null;
  error: AppError | null;
}

/** A tip entry whose recipient credits are not yet durable; the persister must not trim it. */
export interface CreditHold {
  shard: number;
  entryId: string;
  outstanding: number;
}

export interface PendingCredit extends CreditItem {
  hold: CreditHold | null;
}

export class Shard {
  /** The accounts this shard owns that are in memory. */
  readonly accounts = new Map<string, AccountMem>();
  readonly lookup = (id: string): AccountMem | undefined => this.accounts.get(id);
  readonly system: Readonly<Record<SystemAccountKind, string>>;
  mailbox: Array<{ cmd: UserCommand; waiter: Waiter }> = [];
  draining = false;
  /** Events decided but not yet handed to a flush, and who waits on them. */
  events: WalEvent[] = [];
  waiters: Waiter[] = [];
  /** Inbox: tip credits owed to accounts of this shard, by recipient. */
  readonly credits = new Map<string, PendingCredit[]>();
  /** Holds released when the credit events of the pending batch are durable. */
  creditHolds: CreditHold[] = [];
  /** Sequence of the last flush that confirmed an entry of this shard. */
  flushSeq = 0;
  /** Tip entries of this shard's WAL whose credits are not durable yet, oldest first. */
  holds: CreditHold[] = [];
  /** The newest WAL entry id whose append reply (or replay) this ledger has processed. */
  lastEntryId: string | null = null;

  constructor(readonly id: number) {
    const system = {} as Record<SystemAccountKind, string>;
    for (const kind of SYSTEM_ACCOUNT_KINDS) system[kind] = systemAccountId(kind, id);
    this.system = system;
  }

  receiveCredit(accountId: string, item: PendingCredit): void {
    const list = this.credits.get(accountId);
    if (list) list.push(item);
    else this.credits.set(accountId, [item]);
  }

  /** Nothing decided, queued or owed. */
  idle(): boolean {
    return (
      this.mailbox.length === 0 &&
      this.events.length === 0 &&
      this.credits.size === 0 &&
      this.holds.length === 0
    );
  }

  /** Drops everything not confirmed (before recovery rebuilds it), rejecting who waits. */
  reset(reject: (w: Waiter) => void): void {
    for (const m of this.mailbox.splice(0)) reject(m.waiter);
    for (const w of this.waiters) reject(w);
    this.waiters = [];
    this.events = [];
    this.credits.clear();
    this.creditHolds = [];
    this.holds = [];
    this.accounts.clear();
  }

  releaseHold(h: CreditHold): void {
    if (--h.outstanding > 0) return;
    const i = this.holds.indexOf(h);
    if (i >= 0) this.holds.splice(i, 1);
  }
}
