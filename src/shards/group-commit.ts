// Owns the group commit: every shard's pending events go to the WAL in ONE append per flush
// (once per event-loop turn while there is work), and callers are answered only after the WAL
// confirms their shard's entry. An entry the WAL did not confirm is an unknown outcome: its
// callers get `unavailable` and the ledger rebuilds from the source + WAL; an append refused
// because another process holds the lease (fenced) stops this ledger for good.
import type { WalEvent } from "../ledger/events.ts";
import { AppError } from "../errors.ts";
import type { WalAppend, WalLog } from "./ports.ts";
import type { CreditHold, ShardActor, Waiter } from "./shard-actor.ts";

/** Told about every group commit: how long the WAL took, how many events, whether it confirmed. */
export type FlushObserver = (seconds: number, events: number, ok: boolean) => void;
/** Told about events once the WAL confirmed them (and about every event recovery replays). */
export type DurableObserver = (events: WalEvent[]) => void;

export interface CommitHost {
  readonly shards: ShardActor[];
  /** Turns a shard's credit inbox into credit events, before its batch is taken. */
  processCredits(shard: ShardActor): void;
  /** The debits of these events are durable: send their credits to the recipients' shards. */
  creditRecipients(shard: ShardActor, entryId: string, events: WalEvent[]): void;
  releaseHold(h: CreditHold): void;
  /** True while recovering: confirmed entries then send no credits (recovery re-derives them). */
  isRecovering(): boolean;
  /** The WAL did not confirm: rebuild memory. */
  failed(): void;
  /** The WAL refused this process as a stale owner: stop. */
  fenced(error: Error): void;
}

interface ShardBatch {
  shard: ShardActor;
  append: WalAppend[];
  waiters: Waiter[];
  holds: CreditHold[];
}

export class GroupCommit {
  private scheduled = false;
  private flushing: Promise<void> | null = null;
  /** Flushes so far; a shard's flushSeq is the last one that confirmed an entry of it. */
  count = 0;
  onFlush: FlushObserver | null = null;
  onDurable: DurableObserver | null = null;

  constructor(
    private readonly host: CommitHost,
    private readonly wal: WalLog,
    private readonly batchMax: number,
  ) {}

  get busy(): boolean {
    return this.flushing !== null || this.scheduled;
  }

  /** Resolves when no flush is running. */
  settled(): Promise<void> {
    return this.flushing ?? Promise.resolve();
  }

  schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      if (!this.flushing) this.flushing = this.loop().finally(() => (this.flushing = null));
    });
  }

  /** Flushes until nothing is pending; recovery awaits it directly for re-delivered credits. */
  async loop(): Promise<void> {
    for (;;) {
      const batch = this.take();
      if (batch.length === 0) return;
      const seq = ++this.count;
      const appends = batch.flatMap((b) => b.append);
      const started = performance.now();
      const results = appends.length > 0 ? await this.wal.append(appends) : [];
      const flushSeconds = (performance.now() - started) / 1000;
      let failed = false;
      let fenced: Error | null = null;
      let k = 0;
      for (const b of batch) {
        const mine = results.slice(k, k + b.append.length);
        k += b.append.length;
        const bad = mine.find((r) => !r.ok);
        if (bad && !bad.ok) {
          failed = true;
          if (bad.fenced) fenced = bad.error;
          for (const w of b.waiters) {
            w.reject(
              new AppError("unavailable", "could not make the change durable; retry with the same key"),
            );
          }
          continue;
        }
        b.shard.flushSeq = seq;
        if (mine.length > 0) b.shard.lastEntryId = (mine[mine.length - 1] as { ok: true; id: string }).id;
        for (const h of b.holds) this.host.releaseHold(h);
        for (const w of b.waiters) {
          if (w.error) w.reject(w.error);
          else w.resolve(w.result!);
        }
        if (this.onDurable) for (const a of b.append) this.onDurable(a.events);
        if (failed || this.host.isRecovering()) continue;
        // The debits are durable: now, and only now, the recipients are credited.
        for (let i = 0; i < b.append.length; i++) {
          const entryId = (mine[i] as { ok: true; id: string }).id;
          this.host.creditRecipients(b.shard, entryId, b.append[i]!.events);
        }
      }
      if (this.onFlush && appends.length > 0) {
        let events = 0;
        for (const a of appends) events += a.events.length;
        this.onFlush(flushSeconds, events, !failed);
      }
      if (fenced) {
        this.host.fenced(fenced);
        return;
      }
      if (failed) {
        this.host.failed();
        return;
      }
    }
  }

  private take(): ShardBatch[] {
    const batch: ShardBatch[] = [];
    for (const shard of this.host.shards) {
      this.host.processCredits(shard);
      if (shard.events.length === 0 && shard.waiters.length === 0) continue;
      const append: WalAppend[] = [];
      for (let i = 0; i < shard.events.length; i += this.batchMax) {
        append.push({ shard: shard.id, events: shard.events.slice(i, i + this.batchMax) });
      }
      batch.push({ shard, append, waiters: shard.waiters, holds: shard.creditHolds });
      shard.events = [];
      shard.waiters = [];
      shard.creditHolds = [];
    }
    return batch;
  }
}
