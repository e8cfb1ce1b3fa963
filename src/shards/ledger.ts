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
import type {
  AccountStatus,
  AccountView,
  PayoutRecord,
  TransactionRecord,
  UserCommand,
} from "../ledger/types.ts";
import { AccountLoader } from "./account-loader.ts";
import { Directory } from "./directory.ts";
import { type DurableObserver, type FlushObserver, GroupCommit } from "./group-commit.ts";
import {
  type AccountSource,
  type LedgerSettings,
  NotOwnerError,
  type Ownership,
  OwnershipLostError,
  type PeerLedger,
  type PeerOp,
  type RemoteCredit,
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

/**
 * Shards spread over processes: how long what this process knows of another process's account
 * (a tip recipient's status) is believed before it is read again. A suspension decided in another
 * process is published to every process at once (src/cluster/status-broadcast.ts); this time plus
 * the WAL's lag into Postgres only bounds it when that message is lost.
 */
const REMOTE_DIRECTORY_TTL_MS = 5_000;

/** Longest pause before credits for another process's shard are sent again after a failure. */
const CREDIT_RETRY_MAX_MS = 2000;

/**
 * A logged credit is forgotten this long after the oldest entry the persister has not written
 * was appended: by then Postgres holds it (covers an append's longest wait, WAL_COMMAND_TIMEOUT_MS).
 */
const CREDIT_LOG_MARGIN_MS = 70_000;

/**
 * A credit whose debit is older than this when it arrives may have been delivered before and
 * forgotten since (see CREDIT_LOG_MARGIN_MS, well above it, clocks' skew included): Postgres is
 * asked. A younger one first delivered is recognised from memory alone.
 */
const CREDIT_CHECK_AFTER_MS = 30_000;

/** How far the WAL's clock (a tip's time) may be from this process's. */
const CLOCK_SKEW_MS = 5_000;

/** A credit for an account of a shard another process owns, waiting to be sent there. */
interface OutgoingCredit {
  shard: number;
  credit: RemoteCredit;
  hold: CreditHold;
  /** The recovery it was derived in: a later recovery derives it again, so this copy is dropped. */
  epoch: number;
}

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
  /**
   * Shards spread over processes (LEDGER_SPREAD): commands, reads and credits for shards this
   * process does not own go to their owners through these.
   */
  peers?: PeerLedger;
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
  /** The shards this process owns (all of them unless spread over processes). */
  private owned: Set<number>;
  /** Shards being given to another process: no longer this one's, though their leases still are. */
  private readonly giving = new Set<number>();
  /** Counts recoveries: what was derived before one is derived again by it. */
  private epoch = 0;
  /** Credits for other processes' shards, waiting to be sent, and how many sends are out. */
  private outbox: OutgoingCredit[] = [];
  private outboxScheduled = false;
  private sendsOut = 0;
  private creditRetryMs = 100;
  persistHealth: () => { walLagMs: number; unpersistedEntries: number };
  /** Spread over processes: calls sent to other shards' owners, and credits sent and taken. */
  readonly peerStats = { forwarded: 0, creditsSent: 0, creditsAccepted: 0, creditsAlreadyHad: 0 };
  /** Told the shards this process owns after every recovery (its persister follows them). */
  onOwnership: ((shards: number[]) => void) | null = null;
  /** A tip credited here that another process decided (its feed shows it without Postgres). */
  onRemoteTip: ((tx: TransactionRecord) => void) | null = null;

  constructor(private readonly opts: LedgerOptions) {
    this.settings = opts.settings;
    this.wal = opts.wal;
    this.now = opts.now ?? (() => Date.now());
    this.directory = new Directory(
      Math.max(1024, 2 * opts.settings.accountCacheMax),
      opts.settings.spread ? REMOTE_DIRECTORY_TTL_MS : 0,
      this.now,
    );
    this.loader = new AccountLoader(
      opts.store,
      (id) => this.shardFor(id),
      this.directory,
      opts.settings.idempotencyTtlMs,
      this.now,
      (shard) => this.owned.has(shard),
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
    this.owned = new Set(this.shards.map((s) => s.id));
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

  /** Whether this process owns `shard` now. */
  owns(shard: number): boolean {
    return this.owned.has(shard);
  }

  /** The shards this process owns now, in order. */
  ownedShards(): number[] {
    return [...this.owned].sort((a, b) => a - b);
  }

  /**
   * A status change another process decided and published (LEDGER_SPREAD): tips decided here
   * read it from the directory at once instead of after the next read of the account.
   */
  learnStatus(id: string, status: AccountStatus, version: number): void {
    if (!isUuid(id) || this.owned.has(this.shardOf(id))) return;
    this.directory.learn(id, { kind: "user", status, version }, false);
  }

  /** The owner of `accountId`'s shard is another process (whom peers reach). */
  private elsewhere(accountId: string): number | null {
    if (!this.opts.peers || this.halted || this.stopped) return null;
    const shard = this.shardOf(accountId);
    if (this.owned.has(shard)) return null;
    this.peerStats.forwarded++;
    return shard;
  }

  private shardFor(accountId: string): ShardActor {
    return this.shards[shardOf(accountId, this.shards.length)]!;
  }

  /** Metrics hook: called after every group commit. */
  set onFlush(f: FlushObserver | null) {
    this.commit.onFlush = f;
  }

  /**
   * Adds an observer of durable events: the ones the WAL confirmed, and every event recovery
   * replays (again). Observers are called in the order they were added; answers the removal.
   */
  observeDurable(f: DurableObserver): () => void {
    this.durableObservers.add(f);
    this.commit.onDurable = this.notifyDurable;
    return () => {
      this.durableObservers.delete(f);
      if (this.durableObservers.size === 0) this.commit.onDurable = null;
    };
  }

  private readonly durableObservers = new Set<DurableObserver>();
  private readonly notifyDurable: DurableObserver = (events) => {
    for (const o of this.durableObservers) o(events);
  };

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

  /**
   * Submits a command to the shard owning its account (in another process: to that process);
   * resolves once its effect is durable.
   */
  submit(cmd: UserCommand): Promise<Result> {
    if (this.opts.peers && validateCommand(cmd) === null) {
      const shard = this.elsewhere(ownerOf(cmd));
      if (shard !== null) return this.opts.peers.call(shard, { op: "submit", cmd }) as Promise<Result>;
    }
    return this.submitHere(cmd);
  }

  /**
   * What another process asks of a shard this one owns (the internal endpoint): run here, never
   * sent on; NotOwnerError when the shard is not (or no longer) this process's.
   */
  runForPeer(op: PeerOp): Promise<unknown> {
    // Stopping: its leases are about to go (or gone), and its memory may already be behind the
    // next owner's; the caller looks the owner up again.
    if (this.stopped) return Promise.reject(new NotOwnerError(-1));
    const id = op.op === "submit" ? ownerOf(op.cmd) : op.accountId;
    if (typeof id === "string" && isUuid(id) && !this.owned.has(this.shardOf(id))) {
      return Promise.reject(new NotOwnerError(this.shardOf(id)));
    }
    switch (op.op) {
      case "submit":
        return this.submitHere(op.cmd);
      case "account":
        return this.accountHere(op.accountId);
      case "payout":
        return this.payoutHere(op.accountId, op.payoutId);
      case "payouts":
        return this.payoutsHere(op.accountId);
    }
  }

  private submitHere(cmd: UserCommand): Promise<Result> {
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

  getAccount(accountId: string): Promise<AccountView> {
    if (!isUuid(accountId)) return Promise.reject(new AppError("not_found", "account not found"));
    const shard = this.elsewhere(accountId);
    if (shard !== null)
      return this.opts.peers!.call(shard, { op: "account", accountId }) as Promise<AccountView>;
    return this.accountHere(accountId);
  }

  private async accountHere(accountId: string): Promise<AccountView> {
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
  getPayout(accountId: string, payoutId: string): Promise<PayoutRecord | null> {
    const shard = isUuid(accountId) && isUuid(payoutId) ? this.elsewhere(accountId) : null;
    if (shard !== null) {
      return this.opts.peers!.call(shard, {
        op: "payout",
        accountId,
        payoutId,
      }) as Promise<PayoutRecord | null>;
    }
    return this.payoutHere(accountId, payoutId);
  }

  private async payoutHere(accountId: string, payoutId: string): Promise<PayoutRecord | null> {
    if (!isUuid(accountId) || !isUuid(payoutId)) return null;
    const mem = await this.loaded(accountId);
    if (!mem) return null;
    await this.loader.checkPayout(mem, payoutId);
    return mem.payoutRecords.get(payoutId) ?? null;
  }

  /** The payouts of an account that its shard holds: open ones, and recent or recently read ones. */
  payoutsInMemory(accountId: string): Promise<PayoutRecord[]> {
    const shard = isUuid(accountId) ? this.elsewhere(accountId) : null;
    if (shard !== null)
      return this.opts.peers!.call(shard, { op: "payouts", accountId }) as Promise<PayoutRecord[]>;
    return this.payoutsHere(accountId);
  }

  private async payoutsHere(accountId: string): Promise<PayoutRecord[]> {
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
    // A shard given away (or taken by another while this process stalled): its holds went with
    // its memory, so nothing here may say its entries' credits are durable. Its next owner replays
    // what is left and re-derives them; its own persister trims.
    if (!this.owned.has(shard)) return KEEP_EVERYTHING;
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
    if (this.settings.spread) {
      const before = this.now() - this.persistHealth().walLagMs - CREDIT_LOG_MARGIN_MS;
      for (const s of this.shards) s.pruneCreditLog(before);
    }
    return this.loader.evictIdle(this.shards, this.settings.accountCacheMax, this.commit.count - 100);
  }

  /** The test and benchmark seam: read-only views production code has no use for. */
  probe(): LedgerProbe {
    return {
      memoryOf: (id) => this.shardFor(id).accounts.get(id),
      quiescent: () =>
        !this.commit.busy &&
        !this.recovering &&
        this.outbox.length === 0 &&
        this.sendsOut === 0 &&
        this.shards.every((s) => s.idle()),
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
        hold = { shard: shard.id, entryId, outstanding: 0, remote: 0 };
        shard.holds.push(hold);
      }
      for (const c of ev.credits) {
        const tip = ev.tx.type === "tip" || ev.tx.type === "superlike" ? ev.tx : undefined;
        this.deliverCredit(c.accountId, { txId: c.txId, amountCents: c.amountCents }, hold, tip);
      }
    }
    if (hold) this.commit.schedule();
  }

  /** A credit under `hold`: into its shard's inbox here, or out to the process that owns it. */
  private deliverCredit(
    accountId: string,
    item: { txId: string; amountCents: number },
    hold: CreditHold,
    tx?: TransactionRecord,
    again = false,
  ): void {
    hold.outstanding++;
    const target = this.shardOf(accountId);
    if (this.owned.has(target)) {
      this.shards[target]!.receiveCredit(accountId, { ...item, hold });
      return;
    }
    hold.remote++;
    const atMs = this.wal.idTimeMs(hold.entryId);
    const credit: RemoteCredit = {
      accountId,
      ...item,
      atMs,
      ...(again ? { check: true } : {}),
      ...(tx ? { tx } : {}),
    };
    this.outbox.push({ shard: target, credit, hold, epoch: this.epoch });
    this.scheduleOutbox(0);
  }

  private scheduleOutbox(delayMs: number): void {
    if (this.outboxScheduled) return;
    this.outboxScheduled = true;
    const run = () => {
      this.outboxScheduled = false;
      this.sendOutbox();
    };
    if (delayMs === 0) setImmediate(run);
    else setTimeout(run, delayMs).unref();
  }

  /**
   * Sends the waiting credits, one call per recipient shard. A hold is released once the owner
   * says its credit is durable; a failed send is tried again (the owner recognises a credit it has
   * already), unless a recovery since derived it again.
   */
  private sendOutbox(): void {
    const peers = this.opts.peers;
    const epoch = this.epoch;
    const waiting = this.outbox.filter((o) => o.epoch === epoch);
    this.outbox = [];
    if (waiting.length === 0 || !peers || this.halted) return;
    const byShard = new Map<number, OutgoingCredit[]>();
    for (const o of waiting) {
      const list = byShard.get(o.shard);
      if (list) list.push(o);
      else byShard.set(o.shard, [o]);
    }
    for (const [shard, list] of byShard) {
      this.sendsOut++;
      const credits = list.map((o) => o.credit);
      // A shard taken over by this process meanwhile is credited here, with the same checks.
      const sent = this.owned.has(shard) ? this.acceptCredits(credits) : peers.credit(shard, credits);
      sent.then(
        () => {
          this.sendsOut--;
          this.peerStats.creditsSent += list.length;
          this.creditRetryMs = 100;
          for (const o of list) {
            o.hold.remote--;
            this.shards[o.hold.shard]!.releaseHold(o.hold);
          }
        },
        (err) => {
          this.sendsOut--;
          if (this.epoch !== epoch || this.halted) return;
          this.opts.logger.warn(
            { err: (err as Error).message, shard, credits: list.length },
            "sending tip credits to the shard's owner failed; retrying",
          );
          // The owner may have taken them before the failure: it recognises them, from Postgres too.
          for (const o of list) o.credit.check = true;
          this.outbox.push(...list);
          this.scheduleOutbox(this.creditRetryMs);
          this.creditRetryMs = Math.min(CREDIT_RETRY_MAX_MS, this.creditRetryMs * 2);
        },
      );
    }
  }

  /**
   * Credits sent by another process (or meant for one, for a shard this process took over):
   * resolves once each is durable here. A credit this shard already has (in memory, or in
   * Postgres) is not applied again; NotOwnerError when a recipient's shard is not this process's.
   */
  async acceptCredits(credits: RemoteCredit[]): Promise<void> {
    if (this.stopped) throw new NotOwnerError(-1);
    const refused = this.refusal();
    if (refused) throw refused;
    for (const c of credits) {
      if (
        !isUuid(c.accountId) ||
        !isUuid(c.txId) ||
        !Number.isSafeInteger(c.amountCents) ||
        c.amountCents <= 0
      )
        throw new AppError("validation_error", "a credit needs an account id, a transaction id and cents");
      const shard = this.shardOf(c.accountId);
      if (!this.owned.has(shard)) throw new NotOwnerError(shard);
    }
    const epoch = this.epoch;
    const logged = (c: RemoteCredit) => this.shardFor(c.accountId).creditLog.has(c.txId);
    const fresh = credits.filter((c) => !logged(c));
    const nowMs = this.now();
    // Asked in Postgres too: a credit that may have come before (sent again, re-derived), an old
    // one, or one whose tip is older than the shard's last rebuild (its log kept only what the
    // WAL still held then: an earlier delivery, persisted, is in Postgres alone).
    const ask = fresh.filter(
      (c) =>
        c.check === true ||
        nowMs - c.atMs > CREDIT_CHECK_AFTER_MS ||
        c.atMs <= this.shardFor(c.accountId).creditLogSinceMs + CLOCK_SKEW_MS,
    );
    const posted =
      ask.length === 0
        ? new Set<string>()
        : await this.opts.store.postedLegs(ask.map((c) => ({ txId: c.txId, accountId: c.accountId })));
    await this.loader.ensureLoaded([...new Set(fresh.map((c) => c.accountId))]);
    // Re-checked after the reads: a recovery meanwhile dropped what they were checked against.
    if (this.epoch !== epoch || this.refusal())
      throw new AppError("unavailable", "ledger is recovering; retry shortly");
    const waits: Promise<unknown>[] = [];
    for (const c of credits) {
      const shard = this.shardFor(c.accountId);
      if (!this.owned.has(shard.id)) throw new NotOwnerError(shard.id);
      const waiter = newWaiter(waits);
      if (logged(c) || posted.has(`${c.txId}:${c.accountId}`)) {
        // Already credited: answered once what holds it is durable (the shard's next flush).
        shard.waiters.push(waiter);
        this.peerStats.creditsAlreadyHad++;
        continue;
      }
      if (!shard.accounts.has(c.accountId)) {
        this.opts.logger.error(
          { accountId: c.accountId, txId: c.txId },
          "ALARM: a tip credit names an unknown account",
        );
        throw new AppError("not_found", "credited account not found");
      }
      shard.receiveCredit(c.accountId, { txId: c.txId, amountCents: c.amountCents, hold: null, waiter });
      this.peerStats.creditsAccepted++;
      if (c.tx) this.onRemoteTip?.(c.tx);
    }
    this.commit.schedule();
    await Promise.all(waits);
  }

  /**
   * Gives `shards` away (another process joined): they stop being this process's at once, and
   * memory is rebuilt without them. The caller releases their leases afterwards.
   */
  async give(shards: readonly number[]): Promise<void> {
    for (const s of shards) this.giving.add(s);
    try {
      await this.recover("shards given to another process");
    } finally {
      for (const s of shards) this.giving.delete(s);
    }
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
      this.epoch++;
      for (const s of this.shards) s.reset((w) => w.reject(unavailable()));
      this.directory.clear();
      try {
        // Memory is dropped above before a new token can be taken: nothing decided under the old
        // one is appended under the new one, and everything is re-read as at start.
        const held = await this.opts.ownership?.ensure();
        if (held) this.owned = new Set(held.filter((s) => !this.giving.has(s)));
        const report = await replayWal({
          shards: this.shards.filter((s) => this.owned.has(s.id)),
          // Re-derived: a previous owner of the debit's shard may have delivered it already.
          deliver: (accountId, item, hold) => this.deliverCredit(accountId, item, hold, undefined, true),
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
          // Credits for other processes' shards are sent meanwhile; their holds wait for them.
          if (this.shards.some((s) => s.holds.some((h) => h.outstanding > h.remote) || s.credits.size > 0)) {
            throw new Error("re-delivered tip credits were not confirmed by the WAL");
          }
        }
        this.opts.logger.info({ ...report, shards: this.owned.size }, "ledger recovered from WAL");
        this.onOwnership?.(this.ownedShards());
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

/** A waiter that only says when it is answered (a credit's), its promise added to `waits`. */
function newWaiter(waits: Promise<unknown>[]): Waiter {
  const w: Waiter = { resolve: () => {}, reject: () => {}, result: null, error: null };
  waits.push(
    new Promise<void>((resolve, reject) => {
      w.resolve = () => resolve();
      w.reject = reject;
    }),
  );
  return w;
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
