// Owns the running ledger: shard actors (mailbox, accounts in memory, pending WAL batch), group
// commit of all shards' batches to the Redis WAL, crediting tip recipients once the debit is
// durable, and recovery (start-up, or after a flush Redis did not confirm) from Postgres + WAL.
import type { Redis } from "ioredis";
import type { Logger } from "pino";
import type { Config, FraudLimits } from "../config.ts";
import { fraudLimits } from "../config.ts";
import { AppError } from "../errors.ts";
import type { AccountStore } from "../persist/account-store.ts";
import { compareStreamIds, decodeEntry, nextStreamId } from "../wal/wal-codec.ts";
import { readWholeStream, type WalAppend, type WalAppendResult, WalWriter } from "../wal/wal-writer.ts";
import { isUuid, SYSTEM_ACCOUNT_KINDS, shardOf, systemAccountId } from "../ledger/accounts.ts";
import { newLedgerId } from "../ledger/ids.ts";
import { type Decision, decide, decideCredit, keyNeverExpires, ownerOf } from "../ledger/decide.ts";
import type { CreditEvent, TxEvent, WalEvent } from "../ledger/events.ts";
import { type AccountMem, applyEvent, pruneKeys, viewOf } from "../ledger/state.ts";
import type { AccountView, CreditItem, StatusResult, TxResult, UserCommand } from "../ledger/types.ts";

type Result = TxResult | StatusResult;

interface Waiter {
  resolve(r: Result): void;
  reject(e: Error): void;
  result: Result | null;
  error: AppError | null;
}

/** A tip entry whose recipient credits are not yet durable; the persister must not trim it. */
interface CreditHold {
  shard: number;
  entryId: string;
  outstanding: number;
}

interface PendingCredit extends CreditItem {
  hold: CreditHold | null;
}

interface Shard {
  id: number;
  mailbox: Array<{ cmd: UserCommand; waiter: Waiter }>;
  draining: boolean;
  /** Events decided but not yet handed to a flush, and who waits on them. */
  events: WalEvent[];
  waiters: Waiter[];
  /** Tip credits owed to accounts of this shard, by recipient. */
  credits: Map<string, PendingCredit[]>;
  /** Holds released when the credit events of the pending batch are durable. */
  creditHolds: CreditHold[];
  /** Sequence of the last flush that confirmed an entry of this shard. */
  flushSeq: number;
  holds: CreditHold[];
  /** The newest WAL entry id whose XADD reply (or replay) this ledger has processed. */
  lastEntryId: string | null;
}

export interface LedgerHealth {
  recovering: boolean;
  walLagMs: number;
  unpersistedEntries: number;
}

export interface LedgerOptions {
  config: Config;
  redis: Redis;
  store: AccountStore;
  logger: Logger;
  /** Persistence health, reported by the persister. */
  persistHealth?: () => { walLagMs: number; unpersistedEntries: number };
  /** Where flushed batches go; the Redis WAL unless a benchmark measures the ledger without it. */
  wal?: WalSink;
}

export interface WalSink {
  append(batch: WalAppend[]): Promise<WalAppendResult[]>;
}

/** Told about every group commit: how long Redis took, how many events, whether it confirmed. */
export type FlushObserver = (seconds: number, events: number, ok: boolean) => void;

export class Ledger {
  readonly shards: Shard[];
  /** Every account in memory. Placement is by shard; one map makes the hot lookups one probe. */
  private readonly accounts = new Map<string, AccountMem>();
  private readonly lookup = (id: string): AccountMem | undefined => this.accounts.get(id);
  private readonly limits: FraudLimits;
  private readonly wal: WalSink;
  private readonly loading = new Map<string, Promise<void>>();
  private loadBatch: { ids: string[]; promise: Promise<void> } | null = null;
  private flushScheduled = false;
  private flushing: Promise<void> | null = null;
  private flushCount = 0;
  private recovering: Promise<void> | null = null;
  private stopped = false;
  persistHealth: () => { walLagMs: number; unpersistedEntries: number };
  /** Metrics hook: called after every group commit. */
  onFlush: FlushObserver | null = null;

  constructor(private readonly opts: LedgerOptions) {
    const n = opts.config.SHARDS;
    this.shards = Array.from({ length: n }, (_, id) => ({
      id,
      mailbox: [],
      draining: false,
      events: [],
      waiters: [],
      credits: new Map(),
      creditHolds: [],
      flushSeq: 0,
      holds: [],
      lastEntryId: null,
    }));
    this.limits = fraudLimits(opts.config);
    this.wal = opts.wal ?? new WalWriter(opts.redis, opts.config.REDIS_PREFIX);
    this.persistHealth = opts.persistHealth ?? (() => ({ walLagMs: 0, unpersistedEntries: 0 }));
  }

  shardOf(accountId: string): number {
    return shardOf(accountId, this.shards.length);
  }

  /** Runs recovery; the ledger accepts commands once it resolves. */
  async start(): Promise<void> {
    await this.opts.store.ensureSystemAccounts(this.shards.length);
    await this.recover();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.flushing;
  }

  health(): LedgerHealth {
    return { recovering: this.recovering !== null, ...this.persistHealth() };
  }

  get accountsInMemory(): number {
    return this.accounts.size;
  }

  /** Submits a command to the shard owning its account; resolves once its effect is durable. */
  submit(cmd: UserCommand): Promise<Result> {
    if (this.stopped) return Promise.reject(new AppError("unavailable", "ledger is stopping"));
    if (this.recovering)
      return Promise.reject(new AppError("unavailable", "ledger is recovering; retry shortly"));
    const bad = validateCommand(cmd);
    if (bad) return Promise.reject(bad);
    const shard = this.shards[this.shardOf(ownerOf(cmd))]!;
    if (shard.mailbox.length >= this.opts.config.MAILBOX_MAX) {
      return Promise.reject(new AppError("unavailable", "ledger shard is overloaded; retry shortly"));
    }
    return new Promise<Result>((resolve, reject) => {
      const waiter: Waiter = { resolve, reject, result: null, error: null };
      // Fast path: nothing queued ahead and every account needed is in memory.
      const ready = this.missingFor(cmd).length === 0 && !keyNeverExpires(cmd);
      if (!shard.draining && shard.mailbox.length === 0 && ready) {
        this.process(shard, cmd, waiter);
        return;
      }
      shard.mailbox.push({ cmd, waiter });
      void this.drain(shard);
    });
  }

  async getAccount(accountId: string): Promise<AccountView> {
    if (!isUuid(accountId)) throw new AppError("not_found", "account not found");
    if (this.recovering) await this.recovering;
    if (!this.accounts.has(accountId)) await this.ensureLoaded([accountId]);
    const mem = this.accounts.get(accountId);
    if (!mem) throw new AppError("not_found", "account not found");
    return viewOf(mem.state);
  }

  /** An account's memory, if loaded: for diagnostics and tests, never to change it. */
  memoryOf(accountId: string): Readonly<AccountMem> | undefined {
    return this.accounts.get(accountId);
  }

  /** The in-memory state of every loaded account (for reconciliation against Postgres). */
  snapshot(): Map<string, AccountView> {
    const out = new Map<string, AccountView>();
    for (const [id, m] of this.accounts) out.set(id, viewOf(m.state));
    return out;
  }

  /** The lowest WAL entry id of a shard that must not be trimmed yet, if any. */
  trimFloor(shard: number): string | null {
    const s = this.shards[shard]!;
    // An entry newer than the last one whose XADD reply we processed may be a tip whose credit
    // hold is not registered yet (the persister reads on its own connection, maybe first).
    const unseen = s.lastEntryId === null ? "0-1" : nextStreamId(s.lastEntryId);
    const hold = s.holds.length > 0 ? s.holds[0]!.entryId : null;
    return hold !== null && compareStreamIds(hold, unseen) < 0 ? hold : unseen;
  }

  /** True once every decided event has been flushed and every owed credit is durable. */
  quiescent(): boolean {
    if (this.flushing || this.flushScheduled || this.recovering) return false;
    return this.shards.every(
      (s) => s.mailbox.length === 0 && s.events.length === 0 && s.credits.size === 0 && s.holds.length === 0,
    );
  }

  /**
   * Keeps memory bounded (ACCOUNT_CACHE_MAX): evicts accounts unchanged for a while whose state
   * Postgres already holds at the same version, so a later load reads exactly what memory had.
   * Velocity windows and idempotency keys come back from Postgres on that load.
   */
  async evictIdle(): Promise<number> {
    const max = this.opts.config.ACCOUNT_CACHE_MAX;
    const total = this.accounts.size;
    if (total <= max || this.recovering) return 0;
    const idleBefore = this.flushCount - 100;
    const candidates: AccountMem[] = [];
    const target = total - Math.floor(max * 0.9);
    for (const [id, m] of this.accounts) {
      if (m.system || m.lastFlushSeq > idleBefore || this.shards[this.shardOf(id)]!.credits.has(id)) continue;
      if ([...m.payouts.values()].some((p) => p.status === "pending")) continue;
      candidates.push(m);
      if (candidates.length >= target) break;
    }
    if (candidates.length === 0) return 0;
    const versions = await this.opts.store.versions(candidates.map((m) => m.state.id));
    let evicted = 0;
    for (const m of candidates) {
      // Re-checked after the await: only an account still identical to Postgres may go.
      if (versions.get(m.state.id) === m.state.version && this.accounts.get(m.state.id) === m) {
        this.accounts.delete(m.state.id);
        evicted++;
      }
    }
    return evicted;
  }

  // --- shard actor -------------------------------------------------------------------------

  private missingFor(cmd: UserCommand): string[] {
    const out: string[] = [];
    const owner = ownerOf(cmd);
    if (!this.isLoaded(owner)) out.push(owner);
    if (cmd.kind === "tip" && !this.isLoaded(cmd.toAccountId)) out.push(cmd.toAccountId);
    return out;
  }

  private isLoaded(id: string): boolean {
    return this.accounts.has(id);
  }

  /** Processes the mailbox in order, loading missing accounts for the next commands in batches. */
  private async drain(shard: Shard): Promise<void> {
    if (shard.draining) return;
    shard.draining = true;
    try {
      while (shard.mailbox.length > 0 && !this.recovering) {
        const missing = new Set<string>();
        for (let i = 0; i < shard.mailbox.length && i < 512; i++) {
          for (const id of this.missingFor(shard.mailbox[i]!.cmd)) missing.add(id);
        }
        try {
          if (missing.size > 0) await this.ensureLoaded([...missing]);
          await this.checkDurableKey(shard.mailbox[0]!.cmd);
        } catch (err) {
          this.opts.logger.error({ err }, "reading accounts from Postgres failed");
          for (const m of shard.mailbox.splice(0)) {
            m.waiter.reject(new AppError("unavailable", "account store unavailable; retry shortly"));
          }
          return;
        }
        if (this.recovering) break;
        // The head is ready (an account still missing does not exist: decide says not_found);
        // after it, every command that needs no I/O goes through synchronously, in order.
        const head = shard.mailbox.shift()!;
        this.process(shard, head.cmd, head.waiter);
        while (shard.mailbox.length > 0) {
          const next = shard.mailbox[0]!;
          if (this.missingFor(next.cmd).length > 0 || keyNeverExpires(next.cmd)) break;
          shard.mailbox.shift();
          this.process(shard, next.cmd, next.waiter);
        }
      }
    } finally {
      shard.draining = false;
    }
    if (shard.mailbox.length > 0 && !this.recovering) void this.drain(shard);
  }

  /** A money-in or payout key not in memory may still be in Postgres from long ago. */
  private async checkDurableKey(cmd: UserCommand): Promise<void> {
    if (!keyNeverExpires(cmd)) return;
    const mem = this.accounts.get(ownerOf(cmd));
    if (!mem || mem.keys.has(cmd.key)) return;
    const found = await this.opts.store.findKey(mem.state.id, cmd.key);
    if (found && !mem.keys.has(cmd.key)) mem.keys.set(cmd.key, { ...found, atMs: Date.now() });
  }

  private process(shard: Shard, cmd: UserCommand, waiter: Waiter): void {
    let d: Decision;
    const nowMs = Date.now();
    try {
      d = decide(cmd, {
        get: this.lookup,
        shard: shard.id,
        nowMs,
        newId: newLedgerId,
        limits: this.limits,
        idempotencyTtlMs: this.opts.config.IDEMPOTENCY_TTL_MS,
      });
    } catch (err) {
      this.opts.logger.error({ err, cmd: cmd.kind }, "ledger decision failed");
      waiter.reject(new AppError("internal", "internal error"));
      return;
    }
    if (!d.ok) {
      if (!d.event) {
        waiter.reject(d.error);
        return;
      }
      waiter.error = d.error;
      shard.events.push(d.event);
    } else {
      waiter.result = d.result;
      if (d.event) {
        applyEvent(this.lookup, d.event, shard.flushSeq + 1);
        shard.events.push(d.event);
        const owner = this.accounts.get(ownerOf(cmd));
        if (owner) pruneKeys(owner, nowMs, this.opts.config.IDEMPOTENCY_TTL_MS);
      }
    }
    shard.waiters.push(waiter);
    this.scheduleFlush();
  }

  /** Applies owed tip credits as one credit event per recipient. */
  private processCredits(shard: Shard): void {
    if (shard.credits.size === 0) return;
    const now = Date.now();
    for (const [accountId, items] of shard.credits) {
      const mem = this.accounts.get(accountId);
      if (!mem) {
        // Recipients are loaded when a tip is decided, but may have been evicted since.
        void this.ensureLoaded([accountId]).then(
          () => this.scheduleFlush(),
          (err) => this.opts.logger.error({ err }, "loading a tip recipient failed"),
        );
        continue;
      }
      shard.credits.delete(accountId);
      const ev = decideCredit({ kind: "credit", accountId, items }, mem, now);
      applyEvent(this.lookup, ev, shard.flushSeq + 1);
      shard.events.push(ev);
      for (const it of items) if (it.hold) shard.creditHolds.push(it.hold);
    }
  }

  private enqueueCredit(accountId: string, item: PendingCredit): void {
    const shard = this.shards[this.shardOf(accountId)]!;
    const list = shard.credits.get(accountId);
    if (list) list.push(item);
    else shard.credits.set(accountId, [item]);
    this.scheduleFlush();
  }

  private async ensureLoaded(ids: string[]): Promise<void> {
    const waits: Promise<void>[] = [];
    for (const id of ids) {
      if (this.isLoaded(id)) continue;
      const p = this.loading.get(id);
      if (p) waits.push(p);
      else if (isUuid(id)) {
        const done = this.queueLoad(id).finally(() => {
          if (this.loading.get(id) === done) this.loading.delete(id);
        });
        this.loading.set(id, done);
        waits.push(done);
      }
    }
    await Promise.all(waits);
  }

  /**
   * Loads are coalesced: every account asked for in the same event-loop turn (up to 1,000) is
   * read from Postgres in one go, so a burst of first touches costs a few queries, not three
   * per account.
   */
  private queueLoad(id: string): Promise<void> {
    let batch = this.loadBatch;
    if (!batch || batch.ids.length >= 1000) {
      const ids: string[] = [];
      const promise = new Promise<void>((resolve) => setImmediate(resolve)).then(async () => {
        if (this.loadBatch?.ids === ids) this.loadBatch = null;
        const loaded = await this.opts.store.load(ids, Date.now(), this.opts.config.IDEMPOTENCY_TTL_MS);
        for (const [loadedId, mem] of loaded) {
          // Never overwrite memory: once loaded, memory is ahead of Postgres.
          if (!this.accounts.has(loadedId)) this.accounts.set(loadedId, mem);
        }
      });
      batch = { ids, promise };
      this.loadBatch = batch;
    }
    batch.ids.push(id);
    return batch.promise;
  }

  // --- group commit ------------------------------------------------------------------------

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      if (!this.flushing) this.flushing = this.flushLoop().finally(() => (this.flushing = null));
    });
  }

  private async flushLoop(): Promise<void> {
    for (;;) {
      const batch: Array<{ shard: Shard; append: WalAppend[]; waiters: Waiter[]; holds: CreditHold[] }> = [];
      for (const shard of this.shards) {
        this.processCredits(shard);
        if (shard.events.length === 0 && shard.waiters.length === 0) continue;
        const append: WalAppend[] = [];
        const max = this.opts.config.WAL_BATCH_MAX;
        for (let i = 0; i < shard.events.length; i += max) {
          append.push({ shard: shard.id, events: shard.events.slice(i, i + max) });
        }
        batch.push({ shard, append, waiters: shard.waiters, holds: shard.creditHolds });
        shard.events = [];
        shard.waiters = [];
        shard.creditHolds = [];
      }
      if (batch.length === 0) return;
      const seq = ++this.flushCount;
      const appends = batch.flatMap((b) => b.append);
      const started = performance.now();
      const results = appends.length > 0 ? await this.wal.append(appends) : [];
      const flushSeconds = (performance.now() - started) / 1000;
      let failed = false;
      let k = 0;
      for (const b of batch) {
        const mine = results.slice(k, k + b.append.length);
        k += b.append.length;
        const bad = mine.find((r) => !r.ok);
        if (bad && !bad.ok) {
          failed = true;
          this.opts.logger.error({ err: bad.error, shard: b.shard.id }, "WAL flush failed; recovering");
          for (const w of b.waiters) {
            w.reject(
              new AppError("unavailable", "could not make the change durable; retry with the same key"),
            );
          }
          continue;
        }
        b.shard.flushSeq = seq;
        if (mine.length > 0) b.shard.lastEntryId = (mine[mine.length - 1] as { ok: true; id: string }).id;
        for (const h of b.holds) this.releaseHold(h);
        for (const w of b.waiters) {
          if (w.error) w.reject(w.error);
          else w.resolve(w.result!);
        }
        if (failed || this.recovering) continue;
        // The debits are durable: now, and only now, the recipients are credited.
        b.append.forEach((a, i) => {
          const entryId = (mine[i] as { ok: true; id: string }).id;
          this.creditRecipients(b.shard, entryId, a.events);
        });
      }
      if (this.onFlush && appends.length > 0) {
        let events = 0;
        for (const a of appends) events += a.events.length;
        this.onFlush(flushSeconds, events, !failed);
      }
      if (failed) {
        void this.recover().catch((err) => this.opts.logger.fatal({ err }, "ledger recovery failed"));
        return;
      }
    }
  }

  private creditRecipients(shard: Shard, entryId: string, events: WalEvent[]): void {
    let hold: CreditHold | null = null;
    for (const ev of events) {
      if (ev.t !== "tx" || ev.credits.length === 0) continue;
      if (!hold) {
        hold = { shard: shard.id, entryId, outstanding: 0 };
        shard.holds.push(hold);
      }
      for (const c of ev.credits) {
        hold.outstanding++;
        this.enqueueCredit(c.accountId, { txId: c.txId, amountCents: c.amountCents, hold });
      }
    }
  }

  private releaseHold(h: CreditHold): void {
    if (--h.outstanding > 0) return;
    const holds = this.shards[h.shard]!.holds;
    const i = holds.indexOf(h);
    if (i >= 0) holds.splice(i, 1);
  }

  // --- recovery ----------------------------------------------------------------------------

  /**
   * Rebuilds memory from Postgres plus the WAL: drops everything unconfirmed, replays every
   * entry not yet persisted, and re-delivers tip credits whose debit is durable but whose
   * credit is not. Commands are refused with `unavailable` meanwhile.
   */
  recover(): Promise<void> {
    if (this.recovering) return this.recovering;
    this.recovering = this.runRecovery().finally(() => (this.recovering = null));
    return this.recovering;
  }

  private async runRecovery(): Promise<void> {
    await this.flushing;
    const unavailable = () => new AppError("unavailable", "ledger is recovering; retry shortly");
    for (const s of this.shards) {
      for (const m of s.mailbox.splice(0)) m.waiter.reject(unavailable());
      for (const w of s.waiters) w.reject(unavailable());
      s.waiters = [];
      s.events = [];
      s.credits.clear();
      s.creditHolds = [];
      s.holds = [];
      this.accounts.clear();
    }
    for (let attempt = 0; ; attempt++) {
      try {
        await this.replayWal();
        return;
      } catch (err) {
        this.opts.logger.error({ err, attempt }, "ledger recovery attempt failed; retrying");
        for (const s of this.shards) {
          this.accounts.clear();
          s.holds = [];
          s.credits.clear();
          s.events = [];
          s.waiters = [];
        }
        await new Promise((r) => setTimeout(r, Math.min(2000, 100 * 2 ** attempt)));
      }
    }
  }

  private async replayWal(): Promise<void> {
    const { redis, config, store } = this.opts;
    // Read the WAL before Postgres: the persister may persist and trim meanwhile, and state read
    // later from Postgres is then newer than those entries, which replay skips by version.
    const streams = await Promise.all(
      this.shards.map(async (s) => ({
        shard: s,
        entries: (await readWholeStream(redis, config.REDIS_PREFIX, s.id)).map((e) => ({
          id: e.id,
          events: decodeEntry(e.fields),
        })),
      })),
    );
    const ids = new Set<string>();
    for (let s = 0; s < this.shards.length; s++) {
      for (const kind of SYSTEM_ACCOUNT_KINDS) ids.add(systemAccountId(kind, s));
    }
    for (const { entries } of streams) {
      for (const e of entries) {
        for (const ev of e.events) {
          if (ev.t === "tx") {
            ids.add(ev.tx.accountId);
            for (const st of ev.states) ids.add(st.id);
            for (const c of ev.credits) ids.add(c.accountId);
          } else if (ev.t === "credit" || ev.t === "status") ids.add(ev.state.id);
        }
      }
    }
    const loaded = await store.load([...ids], Date.now(), config.IDEMPOTENCY_TTL_MS);
    for (const [id, mem] of loaded) this.accounts.set(id, mem);
    for (const { shard, entries } of streams) {
      if (entries.length > 0) shard.lastEntryId = entries[entries.length - 1]!.id;
    }
    const get = this.lookup;
    let replayed = 0;
    const owed: Array<{ shard: Shard; entryId: string; ev: TxEvent }> = [];
    const delivered = new Set<string>();
    for (const { shard, entries } of streams) {
      for (const e of entries) {
        for (const ev of e.events) {
          if (!applyEvent(get, ev, 0)) {
            throw new Error(`WAL entry ${e.id} of shard ${shard.id} names an account missing from Postgres`);
          }
          if (ev.t === "tx" && ev.credits.length > 0) owed.push({ shard, entryId: e.id, ev });
          if (ev.t === "credit") for (const it of ev.items) delivered.add(`${it.txId}:${ev.accountId}`);
        }
        replayed++;
      }
    }
    const legs = owed.flatMap((o) => o.ev.credits.map((c) => ({ txId: c.txId, accountId: c.accountId })));
    const posted = await store.postedLegs(legs.filter((l) => !delivered.has(`${l.txId}:${l.accountId}`)));
    let redelivered = 0;
    for (const o of owed) {
      const pending = o.ev.credits.filter(
        (c) => !delivered.has(`${c.txId}:${c.accountId}`) && !posted.has(`${c.txId}:${c.accountId}`),
      );
      if (pending.length === 0) continue;
      const hold: CreditHold = { shard: o.shard.id, entryId: o.entryId, outstanding: 0 };
      o.shard.holds.push(hold);
      for (const c of pending) {
        hold.outstanding++;
        redelivered++;
        const target = this.shards[this.shardOf(c.accountId)]!;
        const list = target.credits.get(c.accountId) ?? [];
        list.push({ txId: c.txId, amountCents: c.amountCents, hold });
        target.credits.set(c.accountId, list);
      }
    }
    for (const s of this.shards) s.holds.sort((a, b) => compareStreamIds(a.entryId, b.entryId));
    if (redelivered > 0) {
      // Flush the re-delivered credits before taking traffic; a failure here retries recovery.
      await this.flushLoop();
      if (this.shards.some((s) => s.holds.length > 0 || s.credits.size > 0)) {
        throw new Error("re-delivered tip credits were not confirmed by the WAL");
      }
    }
    this.opts.logger.info(
      { entries: replayed, accounts: loaded.size, redelivered },
      "ledger recovered from WAL",
    );
  }
}

function validateCommand(cmd: UserCommand): AppError | null {
  if (typeof cmd.key !== "string" || cmd.key.length === 0 || cmd.key.length > 255) {
    return new AppError("validation_error", "an idempotency key of 1 to 255 characters is required");
  }
  const owner = ownerOf(cmd);
  if (!isUuid(owner)) return new AppError("not_found", "account not found");
  if (cmd.kind === "tip" && !isUuid(cmd.toAccountId))
    return new AppError("not_found", "recipient account not found");
  return null;
}

export type { CreditEvent };
