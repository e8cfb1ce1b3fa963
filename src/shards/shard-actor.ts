// Owns one shard actor: the memory of the accounts it owns (and nothing else), its mailbox
// processed one command at a time and in order, each decision applied to its own memory, the
// events waiting for the next group commit and who waits on them, and the inbox of tip credits
// other shards sent it once their debits were durable.
import type { Logger } from "pino";
import { AppError } from "../errors.ts";
import { SYSTEM_ACCOUNT_KINDS, type SystemAccountKind, systemAccountId } from "../ledger/accounts.ts";
import { type Decision, decide, decideCredit, keyNeverExpires, ownerOf, payoutOf } from "../ledger/decide.ts";
import type { WalEvent } from "../ledger/events.ts";
import { newLedgerId } from "../ledger/ids.ts";
import { type AccountMem, applyEvent, LedgerInvariantError, pruneKeys } from "../ledger/state.ts";
import type { CreditItem, PayoutResult, StatusResult, TxResult, UserCommand } from "../ledger/types.ts";
import type { AccountLoader } from "./account-loader.ts";
import type { Directory } from "./directory.ts";
import type { LedgerSettings } from "./ports.ts";

export type Result = TxResult | StatusResult | PayoutResult;

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
  /** Of those, credits sent to another process (shards spread over processes). */
  remote: number;
}

export interface PendingCredit extends CreditItem {
  hold: CreditHold | null;
  /** A credit another process sent: answered once its credit event is durable. */
  waiter?: Waiter;
}

/** What every shard actor shares: the runtime around it. */
export interface ActorEnv {
  readonly settings: LedgerSettings;
  readonly loader: AccountLoader;
  readonly directory: Directory;
  readonly logger: Logger;
  now(): number;
  /** `ms` as an ISO timestamp, formatted once per millisecond. */
  isoAt(ms: number): string;
  /** Asks for a group commit of whatever is pending. */
  schedule(): void;
  /** Recovering or halted: the mailbox waits (recovery rejects it) or is refused. */
  paused(): boolean;
  halted(): boolean;
  /** An impossible state was met: stop the whole ledger, answering `waiter` and every mailbox. */
  halt(err: Error, waiter: Waiter | null): void;
}

export class ShardActor {
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
  /**
   * Shards spread over processes: the tips credited in this shard's memory (in the inbox, decided,
   * or replayed from the WAL) by transaction id, with when, until Postgres surely has them. A
   * credit can then arrive twice (a sender's retry, a new owner of the sender's shard re-delivering
   * what it cannot see was delivered): the second is recognised here or in Postgres.
   */
  readonly creditLog = new Map<string, number>();
  /**
   * Since when the log is whole (memory was last rebuilt): a credit persisted before then is in
   * Postgres only, so one whose tip is older is looked up there too.
   */
  creditLogSinceMs = 0;

  constructor(
    readonly id: number,
    private readonly env: ActorEnv,
  ) {
    const system = {} as Record<SystemAccountKind, string>;
    for (const kind of SYSTEM_ACCOUNT_KINDS) system[kind] = systemAccountId(kind, id);
    this.system = system;
  }

  receiveCredit(accountId: string, item: PendingCredit): void {
    if (this.env.settings.spread) this.creditLog.set(item.txId, this.env.now());
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
    this.creditLog.clear();
    this.creditLogSinceMs = this.env.now();
    this.accounts.clear();
  }

  /** Decides now if nothing is queued ahead and everything the decision reads is in memory;
   * otherwise queues the command behind the others. */
  submit(cmd: UserCommand, waiter: Waiter): void {
    if (!this.draining && this.mailbox.length === 0 && this.ready(cmd)) {
      this.process(cmd, waiter);
      return;
    }
    this.mailbox.push({ cmd, waiter });
    void this.drain();
  }

  /** Everything the decision reads is in memory: the owner's account, a tip recipient's entry,
   * and no durable-key lookup is owed first. */
  private ready(cmd: UserCommand): boolean {
    if (keyNeverExpires(cmd) || payoutOf(cmd) !== null) return false;
    if (!this.accounts.has(ownerOf(cmd))) return false;
    return cmd.kind !== "tip" || this.env.directory.current(cmd.toAccountId);
  }

  private missingFor(cmd: UserCommand, out: Set<string>): void {
    const owner = ownerOf(cmd);
    if (!this.accounts.has(owner)) out.add(owner);
    // A recipient unknown to the directory (or another process's, known for too long) is loaded,
    // which teaches the directory; into its own shard when this process owns it (its credit lands
    // there shortly anyway).
    if (cmd.kind === "tip" && !this.env.directory.current(cmd.toAccountId)) out.add(cmd.toAccountId);
  }

  /** Processes the mailbox in order, loading missing accounts for the next commands in batches. */
  private async drain(): Promise<void> {
    if (this.draining) return;
    this.draining = true;
    const { loader, logger } = this.env;
    try {
      while (this.mailbox.length > 0 && !this.env.paused()) {
        const missing = new Set<string>();
        for (let i = 0; i < this.mailbox.length && i < 512; i++)
          this.missingFor(this.mailbox[i]!.cmd, missing);
        try {
          if (missing.size > 0) await loader.ensureLoaded([...missing]);
          const head = this.mailbox[0]!.cmd;
          const owner = this.accounts.get(ownerOf(head));
          if (owner && keyNeverExpires(head)) await loader.checkDurableKey(owner, head.key);
          const payoutId = payoutOf(head);
          if (owner && payoutId !== null) await loader.checkPayout(owner, payoutId);
        } catch (err) {
          logger.error({ err }, "reading accounts from Postgres failed");
          for (const m of this.mailbox.splice(0)) {
            m.waiter.reject(new AppError("unavailable", "account store unavailable; retry shortly"));
          }
          return;
        }
        if (this.env.paused()) break;
        // The head is ready (an account still missing does not exist: decide says not_found);
        // after it, every command that needs no I/O goes through synchronously, in order.
        const head = this.mailbox.shift()!;
        this.process(head.cmd, head.waiter);
        while (this.mailbox.length > 0 && this.ready(this.mailbox[0]!.cmd)) {
          const next = this.mailbox.shift()!;
          this.process(next.cmd, next.waiter);
        }
      }
    } finally {
      this.draining = false;
    }
    if (this.mailbox.length > 0 && !this.env.paused()) void this.drain();
  }

  private process(cmd: UserCommand, waiter: Waiter): void {
    const { env } = this;
    if (env.halted()) {
      waiter.reject(new AppError("unavailable", "ledger is stopped; see the operator log"));
      return;
    }
    const nowMs = env.now();
    let d: Decision;
    try {
      d = decide(cmd, {
        get: this.lookup,
        directory: env.directory.get,
        system: this.system,
        nowMs,
        at: env.isoAt(nowMs),
        newId: newLedgerId,
        limits: env.settings.limits,
        idempotencyTtlMs: env.settings.idempotencyTtlMs,
      });
    } catch (err) {
      if (err instanceof LedgerInvariantError) {
        env.halt(err, waiter);
        return;
      }
      env.logger.error({ err, cmd: cmd.kind }, "ledger decision failed");
      waiter.reject(new AppError("internal", "internal error"));
      return;
    }
    if (!d.ok) {
      const error = new AppError(d.refusal.code, d.refusal.message, d.refusal.details);
      if (!d.event) {
        waiter.reject(error);
        return;
      }
      waiter.error = error;
      this.events.push(d.event);
    } else {
      waiter.result = d.result;
      if (d.event) {
        try {
          this.apply(d.event, this.flushSeq + 1);
        } catch (err) {
          env.halt(err as Error, waiter);
          return;
        }
        this.events.push(d.event);
        const owner = this.accounts.get(ownerOf(cmd));
        if (owner) pruneKeys(owner, nowMs, env.settings.idempotencyTtlMs);
      }
    }
    this.waiters.push(waiter);
    env.schedule();
  }

  /** Applies an event to this shard's memory; a status change also updates the directory. */
  apply(ev: WalEvent, flushSeq: number): boolean {
    if (!applyEvent(this.lookup, ev, flushSeq)) return false;
    if (ev.t === "credit" && this.env.settings.spread) {
      const at = this.env.now();
      for (const it of ev.items) this.creditLog.set(it.txId, at);
    }
    if (ev.t === "status") {
      const s = ev.state;
      this.env.directory.learn(s.id, { kind: "user", status: s.status, version: s.version }, true);
    }
    return true;
  }

  /** Turns the credit inbox into one credit event per recipient, before a group commit. */
  processCredits(): void {
    const { env } = this;
    if (this.credits.size === 0 || env.halted()) return;
    const at = env.isoAt(env.now());
    for (const [accountId, items] of this.credits) {
      const mem = this.accounts.get(accountId);
      if (!mem) {
        // The recipient was loaded when the tip was decided, but may have been evicted since.
        void env.loader.ensureLoaded([accountId]).then(
          () => env.schedule(),
          (err) => env.logger.error({ err }, "loading a tip recipient failed"),
        );
        continue;
      }
      this.credits.delete(accountId);
      const ev = decideCredit({ kind: "credit", accountId, items }, mem, at);
      try {
        this.apply(ev, this.flushSeq + 1);
      } catch (err) {
        env.halt(err as Error, null);
        return;
      }
      this.events.push(ev);
      for (const it of items) {
        if (it.hold) this.creditHolds.push(it.hold);
        if (it.waiter) this.waiters.push(it.waiter);
      }
    }
  }

  /** Forgets logged credits from before `beforeMs`: Postgres has them by then. */
  pruneCreditLog(beforeMs: number): void {
    for (const [txId, at] of this.creditLog) {
      if (at >= beforeMs) break;
      this.creditLog.delete(txId);
    }
  }

  releaseHold(h: CreditHold): void {
    if (--h.outstanding > 0) return;
    const i = this.holds.indexOf(h);
    if (i >= 0) this.holds.splice(i, 1);
  }
}
