// Owns the running ledger: routing each command to the shard actor that owns its account
// (shard-actor.ts), sending tip credits to the recipients' shards once the debit is durable, and
// the ledger's life (start, recovery, fencing, a halt on a broken invariant). The group commit,
// account loading, the directory and recovery each live in a file of their own in this folder.
import type { Logger } from "pino";
import { AppError } from "../errors.ts";
import { isUuid, shardOf } from "../ledger/accounts.ts";
import { ownerOf } from "../ledger/decide.ts";
import type { WalEvent } from "../ledger/events.ts";
import { type AccountMem, LedgerInvariantError, viewOf } from "../ledger/state.ts";
import type { AccountView, PayoutRecord, UserCommand } from "../ledger/types.ts";
import { AccountLoader } from "./account-loader.ts";
import { Directory } from "./directory.ts";
import { type DurableObserver, type FlushObserver, GroupCommit } from "./group-commit.ts";
import {
  type AccountSource,
  type LedgerSettings,
  type Ownership,
  OwnershipLostError,
  type WalLog,
} from "./ports.ts";
import { replayWal } from "./recovery.ts";
import { type ActorEnv, type CreditHold, type Result, ShardActor, type Waiter } from "./shard-actor.ts";

export type { DurableObserver, FlushObserver };

/** How long a read waits for a recovery in progress before it answers `unavailable`. */
const READ_WAITS_FOR_RECOVERY_MS = 500;

/**
 * Longest pause between recovery attempts: while the WAL's Redis is away an attempt fails at
 * once, and once it is back the next attempt should not be far off.
 */
const RECOVERY_RETRY_MAX_MS = 500;

/** A trim floor below every entry id: XTRIM MINID with it removes nothing. */
const KEEP_EVERYTHING = "0-1";

export interface LedgerHealth {
  recovering: boolean;
  /** Set when the ledger stopped for good: fenced by a newer owner, or a broken invariant. */
  halted: string | null;
  walLagMs: number;
  unpersistedEntries: number;
}

export interface LedgerOptions {
  settings: LedgerSettings;
  wal: WalLog;
  store: AccountSource;
  logger: Logger;
  /** Persistence health, reported by the persister. */
  persistHealth?: () => { walLagMs: number; unpersistedEntries: number };
  /**
   * The single-owner lease. With it, a lapsed lease (or an append the WAL refused as fenced) is
   * taken back when free and memory is rebuilt as at start; only another owner stops the ledger.
   * Without it, a fenced append stops the ledger at once.
   */
  ownership?: Ownership;
  /** Called once when another process owns the ledger (with what showed it); this ledger has stopped. */
  onFenced?: (why: string) => void;
  now?: () => number;
}

/** What tests and benchmarks may look at, and nothing production code needs. */
export interface LedgerProbe {
  /** An account's memory, if loaded; never to change it. */
  memoryOf(accountId: string): Readonly<AccountMem> | undefined;
  /** True once every decided event is flushed and every owed credit is durable. */
  quiescent(): boolean;
}

export class Ledger {
  readonly shards: ShardActor[];
  private readonly directory: Directory;
  private readonly settings: LedgerSettings;
  private readonly wal: WalLog;
  private readonly loader: AccountLoader;
  private readonly commit: GroupCommit;
  private readonly now: () => number;
  private recovering: Promise<void> | null = null;
  private stopped = false;
  private halted: string | null = null;
  private doubt: string | null = null;
  private isoMs = -1;
  private iso = "";
  persistHealth: () => { walLagMs: number; unpersistedEntries: number };

  constructor(private readonly opts: LedgerOptions) {
    this.settings = opts.settings;
    this.directory = new Directory(Math.max(1024, 2 * opts.settings.accountCacheMax));
    this.wal = opts.wal;
    this.now = opts.now ?? (() => Date.now());
    this.loader = new AccountLoader(
      opts.store,
      (id) => this.shardFor(id),
      this.directory,
      opts.settings.idempotencyTtlMs,
      this.now,
    );
    const env: ActorEnv = {
      settings: this.settings,
      loader: this.loader,
      directory: this.directory,
      logger: opts.logger,
      now: this.now,
      isoAt: (ms) => this.isoAt(ms),
      schedule: () => this.commit.schedule(),
      paused: () => this.recovering !== null || this.halted !== null,
      halted: () => this.halted !== null,
      halt: (err, waiter) => this.halt(err, waiter),
    };
    this.shards = Array.from({ length: opts.settings.shards }, (_, id) => new ShardActor(id, env));
    this.commit = new GroupCommit(
      {
        shards: this.shards,
        processCredits: (s) => s.processCredits(),
        creditRecipients: (s, entryId, events) => this.creditRecipients(s, entryId, events),
        releaseHold: (h) => this.shards[h.shard]!.releaseHold(h),
        isRecovering: () => this.recovering !== null,
        failed: () => {
          this.opts.logger.error("WAL flush failed; recovering");
          void this.recover().catch((err) => this.opts.logger.fatal({ err }, "ledger recovery failed"));
        },
        fenced: (err) => {
          if (!this.opts.ownership) {
            this.stopOwning(`fenced: ${err.message}`);
            this.opts.onFenced?.(`the WAL refused this process's fencing token: ${err.message}`);
            return;
          }
          // Refused as a stale owner: either another process owns the ledger (recovery finds out
          // and stops), or the lease lapsed and is free (recovery takes it back and rebuilds).
          this.opts.logger.warn(
            { err: err.message },
            "the WAL refused this process's lease; checking ownership",
          );
          void this.recover("the WAL refused this process's fencing token").catch((e) =>
            this.opts.logger.fatal({ err: e }, "ledger recovery failed"),
          );
        },
      },
      this.wal,
      opts.settings.walBatchMax,
    );
    this.persistHealth = opts.persistHealth ?? (() => ({ walLagMs: 0, unpersistedEntries: 0 }));
  }

  shardOf(accountId: string): number {
    return shardOf(accountId, this.shards.length);
  }

  private shardFor(accountId: string): ShardActor {
    return this.shards[shardOf(accountId, this.shards.length)]!;
  }

  /** Metrics hook: called after every group commit. */
  set onFlush(f: FlushObserver | null) {
    this.commit.onFlush = f;
  }

  /** Live feeds hook: events the WAL confirmed, and every event recovery replays (again). */
  set onDurable(f: DurableObserver | null) {
    this.commit.onDurable = f;
  }

  get onDurable(): DurableObserver | null {
    return this.commit.onDurable;
  }

  /** Metrics hook: every submitted command's outcome (a result, or the error it was refused with). */
  onOutcome: ((cmd: UserCommand, error: unknown, result?: Result) => void) | null = null;

  /** Runs recovery; the ledger accepts commands once it resolves. */
  async start(): Promise<void> {
    await this.opts.store.ensureSystemAccounts(this.shards.length);
    await this.recover();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.commit.settled();
  }

  health(): LedgerHealth {
    const p = this.persistHealth();
    return {
      recovering: this.recovering !== null,
      halted: this.halted,
      walLagMs: p.walLagMs,
      unpersistedEntries: p.unpersistedEntries,
    };
  }

  get accountsInMemory(): number {
    let n = 0;
    for (const s of this.shards) n += s.accounts.size;
    return n;
  }

  /** Submits a command to the shard owning its account; resolves once its effect is durable. */
  submit(cmd: UserCommand): Promise<Result> {
    const refused = this.refusal();
    if (refused) {
      this.onOutcome?.(cmd, refused);
      return Promise.reject(refused);
    }
    const bad = validateCommand(cmd);
    if (bad) {
      this.onOutcome?.(cmd, bad);
      return Promise.reject(bad);
    }
    const shard = this.shardFor(ownerOf(cmd));
    if (shard.mailbox.length >= this.settings.mailboxMax) {
      const busy = new AppError("unavailable", "ledger shard is overloaded; retry shortly");
      this.onOutcome?.(cmd, busy);
      return Promise.reject(busy);
    }
    const p = new Promise<Result>((resolve, reject) => {
      shard.submit(cmd, { resolve, reject, result: null, error: null });
    });
    const seen = this.onOutcome;
    if (seen)
      p.then(
        () => seen(cmd, null),
        (err) => seen(cmd, err),
      );
    return p;
  }

  async getAccount(accountId: string): Promise<AccountView> {
    if (!isUuid(accountId)) throw new AppError("not_found", "account not found");
    if (this.recovering) {
      // A short recovery is waited for; a long one (the WAL's Redis is away) answers at once.
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        this.recovering,
        new Promise((r) => {
          timer = setTimeout(r, READ_WAITS_FOR_RECOVERY_MS);
        }),
      ]);
      clearTimeout(timer);
      const refused = this.refusal();
      if (refused) throw refused;
    }
    const shard = this.shardFor(accountId);
    if (!shard.accounts.has(accountId)) await this.loader.ensureLoaded([accountId]);
    const mem = shard.accounts.get(accountId);
    if (!mem) throw new AppError("not_found", "account not found");
    return viewOf(mem.state);
  }

  /** A payout as its owner's shard knows it (ahead of Postgres), or null. */
  async getPayout(accountId: string, payoutId: string): Promise<PayoutRecord | null> {
    if (!isUuid(accountId) || !isUuid(payoutId)) return null;
    const mem = await this.loaded(accountId);
    if (!mem) return null;
    await this.loader.checkPayout(mem, payoutId);
    return mem.payoutRecords.get(payoutId) ?? null;
  }

  /** The payouts of an account that its shard holds: open ones, and recent or recently read ones. */
  async payoutsInMemory(accountId: string): Promise<PayoutRecord[]> {
    const mem = await this.loaded(accountId);
    return mem ? [...mem.payoutRecords.values()] : [];
  }

  private async loaded(accountId: string): Promise<AccountMem | undefined> {
    if (!isUuid(accountId)) return undefined;
    if (this.recovering) await this.recovering;
    const shard = this.shardFor(accountId);
    if (!shard.accounts.has(accountId)) await this.loader.ensureLoaded([accountId]);
    return shard.accounts.get(accountId);
  }

  /** The in-memory state of every loaded account (for reconciliation against Postgres). */
  snapshot(): Map<string, AccountView> {
    const out = new Map<string, AccountView>();
    for (const s of this.shards) for (const [id, m] of s.accounts) out.set(id, viewOf(m.state));
    return out;
  }

  /** The lowest WAL entry id of a shard that must not be trimmed yet, if any. */
  trimFloor(shard: number): string | null {
    // Recovery reads the WAL page by page and rebuilds the credit holds as it goes: until it is
    // done (or when the ledger stopped), no entry may leave, or an owed credit could go with it.
    if (this.recovering || this.halted) return KEEP_EVERYTHING;
    const s = this.shards[shard]!;
    // An entry newer than the last one whose append reply we processed may be a tip whose credit
    // hold is not registered yet (the persister reads on its own connection, maybe first).
    const unseen = s.lastEntryId === null ? KEEP_EVERYTHING : this.wal.idAfter(s.lastEntryId);
    const hold = s.holds.length > 0 ? s.holds[0]!.entryId : null;
    return hold !== null && this.wal.compareIds(hold, unseen) < 0 ? hold : unseen;
  }

  /** Keeps memory bounded (ACCOUNT_CACHE_MAX); see AccountLoader.evictIdle. */
  async evictIdle(): Promise<number> {
    if (this.recovering) return 0;
    return this.loader.evictIdle(this.shards, this.settings.accountCacheMax, this.commit.count - 100);
  }

  /** The test and benchmark seam: read-only views production code has no use for. */
  probe(): LedgerProbe {
    return {
      memoryOf: (id) => this.shardFor(id).accounts.get(id),
      quiescent: () => !this.commit.busy && !this.recovering && this.shards.every((s) => s.idle()),
    };
  }

  // --- shard actor -------------------------------------------------------------------------

  private refusal(): AppError | null {
    if (this.halted) return new AppError("unavailable", "ledger is stopped; see the operator log");
    if (this.stopped) return new AppError("unavailable", "ledger is stopping");
    if (this.recovering) return new AppError("unavailable", "ledger is recovering; retry shortly");
    return null;
  }

  private isoAt(ms: number): string {
    // Timestamps repeat within a millisecond thousands of times under load; format each once.
    if (ms !== this.isoMs) {
      this.isoMs = ms;
      this.iso = new Date(ms).toISOString();
    }
    return this.iso;
  }

  /** An impossible state: memory is as it was before the event; nothing more is decided. */
  private halt(err: Error, waiter: Waiter | null): void {
    this.halted = err.message;
    this.opts.logger.fatal({ err }, "ALARM: ledger invariant broken; the ledger has stopped taking commands");
    const stopped = () => new AppError("unavailable", "ledger is stopped; see the operator log");
    waiter?.reject(stopped());
    for (const s of this.shards) for (const m of s.mailbox.splice(0)) m.waiter.reject(stopped());
  }

  /**
   * Another process owns the ledger now (the lease was lost, or the WAL refused this process's
   * fencing token): nothing more is decided, and whoever waits hears `unavailable`; their retry
   * reaches the new owner with the same key.
   */
  stopOwning(why: string): void {
    if (this.halted) return;
    this.halted = why;
    this.opts.logger.fatal({ why }, "this process stopped owning the ledger");
    const gone = () => new AppError("unavailable", "this process no longer owns the ledger; retry");
    for (const s of this.shards) s.reset((w) => w.reject(gone()));
  }

  // --- credits between shards --------------------------------------------------------------

  /** The debits in `events` are durable: send each credit to its recipient's shard inbox. */
  private creditRecipients(shard: ShardActor, entryId: string, events: WalEvent[]): void {
    let hold: CreditHold | null = null;
    for (const ev of events) {
      if (ev.t !== "tx" || ev.credits.length === 0) continue;
      if (!hold) {
        hold = { shard: shard.id, entryId, outstanding: 0 };
        shard.holds.push(hold);
      }
      for (const c of ev.credits) {
        hold.outstanding++;
        this.shardFor(c.accountId).receiveCredit(c.accountId, {
          txId: c.txId,
          amountCents: c.amountCents,
          hold,
        });
      }
    }
    if (hold) this.commit.schedule();
  }

  // --- recovery ----------------------------------------------------------------------------

  /**
   * Rebuilds memory from the account source plus the WAL: drops everything unconfirmed, makes
   * sure this process owns the ledger (taking a lapsed lease back with a new fencing token),
   * replays every entry not yet persisted, and re-delivers owed tip credits. Commands are refused
   * with `unavailable` meanwhile. Also what the entry point calls when the lease renewal finds the
   * lease no longer this process's.
   */
  recover(doubt?: string): Promise<void> {
    // What made this process doubt its ownership, said when another owner is found.
    if (doubt) this.doubt = doubt;
    if (this.recovering) return this.recovering;
    this.recovering = this.runRecovery().finally(() => (this.recovering = null));
    return this.recovering;
  }

  private async runRecovery(): Promise<void> {
    await this.commit.settled();
    const unavailable = () => new AppError("unavailable", "ledger is recovering; retry shortly");
    for (let attempt = 0; ; attempt++) {
      // Stopped (shutting down) or halted: no more attempts, however long Redis stays away.
      if (this.halted || (this.stopped && attempt > 0)) return;
      for (const s of this.shards) s.reset((w) => w.reject(unavailable()));
      this.directory.clear();
      try {
        // Memory is dropped above before a new token can be taken: nothing decided under the old
        // one is appended under the new one, and everything is re-read as at start.
        await this.opts.ownership?.ensure();
        const report = await replayWal({
          shards: this.shards,
          wal: this.wal,
          source: this.opts.store,
          loader: this.loader,
          pageEntries: this.settings.recoveryPageEntries,
          idempotencyTtlMs: this.settings.idempotencyTtlMs,
          now: this.now,
          apply: (shard, ev) => {
            if (!shard.apply(ev, 0)) return false;
            this.commit.onDurable?.([ev]);
            return true;
          },
        });
        if (report.redelivered > 0) {
          // Flush the re-delivered credits before taking traffic; a failure here retries recovery.
          await this.commit.loop();
          if (this.shards.some((s) => s.holds.length > 0 || s.credits.size > 0)) {
            throw new Error("re-delivered tip credits were not confirmed by the WAL");
          }
        }
        this.opts.logger.info(report, "ledger recovered from WAL");
        this.doubt = null;
        return;
      } catch (err) {
        if (err instanceof LedgerInvariantError) {
          this.halt(err, null);
          return;
        }
        if (err instanceof OwnershipLostError) {
          const why = this.doubt ? `${this.doubt}; ${err.message}` : err.message;
          this.stopOwning(why);
          this.opts.onFenced?.(why);
          return;
        }
        this.opts.logger.error({ err, attempt }, "ledger recovery attempt failed; retrying");
        await new Promise((r) => setTimeout(r, Math.min(RECOVERY_RETRY_MAX_MS, 100 * 2 ** attempt)));
      }
    }
  }
}

function validateCommand(cmd: UserCommand): AppError | null {
  if (typeof cmd.key !== "string" || cmd.key.length === 0 || cmd.key.length > 255) {
    return new AppError("validation_error", "an idempotency key of 1 to 255 characters is required");
  }
  if (!isUuid(ownerOf(cmd))) return new AppError("not_found", "account not found");
  if (cmd.kind === "tip" && !isUuid(cmd.toAccountId))
    return new AppError("not_found", "recipient account not found");
  return null;
}
