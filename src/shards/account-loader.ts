// Owns bringing accounts into their shard's memory and taking them out again: coalesced loads
// from the account source (every account asked for in one event-loop turn, up to 1,000, in one
// read), the durable lookup of keys that never expire, and eviction of idle accounts whose
// state the source already holds. Every load also teaches the directory.
import { isUuid } from "../ledger/accounts.ts";
import type { AccountMem } from "../ledger/state.ts";
import type { Directory } from "./directory.ts";
import type { AccountSource } from "./ports.ts";
import type { ShardActor } from "./shard-actor.ts";

export class AccountLoader {
  private readonly loading = new Map<string, Promise<void>>();
  private batch: { ids: string[]; promise: Promise<void> } | null = null;

  constructor(
    private readonly source: AccountSource,
    private readonly shardFor: (id: string) => ShardActor,
    private readonly directory: Directory,
    private readonly idempotencyTtlMs: number,
    private readonly now: () => number,
    /** Whether this process owns a shard (spread over processes, not every one). */
    private readonly owns: (shard: number) => boolean = () => true,
  ) {}

  /** In its shard's memory; for an account of another process's shard, known to the directory. */
  isLoaded(id: string): boolean {
    const shard = this.shardFor(id);
    return this.owns(shard.id) ? shard.accounts.has(id) : this.directory.current(id);
  }

  /** Loads whichever of `ids` are not in memory yet; ids that do not exist stay absent. */
  async ensureLoaded(ids: string[]): Promise<void> {
    const waits: Promise<void>[] = [];
    for (const id of ids) {
      if (this.isLoaded(id)) continue;
      const p = this.loading.get(id);
      if (p) waits.push(p);
      else if (isUuid(id)) {
        const done = this.queue(id).finally(() => {
          if (this.loading.get(id) === done) this.loading.delete(id);
        });
        this.loading.set(id, done);
        waits.push(done);
      }
    }
    await Promise.all(waits);
  }

  /** Puts loaded accounts into their shards, never over memory: once loaded, memory is ahead. */
  install(loaded: Map<string, AccountMem>): void {
    for (const [id, mem] of loaded) {
      const shard = this.shardFor(id);
      const s = mem.state;
      const entry = { kind: mem.system ? "system" : "user", status: s.status, version: s.version } as const;
      // Another process's account (a tip's recipient): only what the directory may know of it.
      if (!this.owns(shard.id)) {
        this.directory.learn(id, entry, false);
        continue;
      }
      if (shard.accounts.has(id)) continue;
      shard.accounts.set(id, mem);
      this.directory.learn(id, entry, true);
    }
  }

  /** A key that never expires, not in memory, may still be in the source from long ago. */
  async checkDurableKey(mem: AccountMem, key: string): Promise<void> {
    if (mem.keys.has(key)) return;
    const found = await this.source.findKey(mem.state.id, key);
    if (found && !mem.keys.has(key)) mem.keys.set(key, { ...found, atMs: this.now() });
  }

  /** A payout a command names, not in memory, may be in the source (finished long ago). */
  async checkPayout(mem: AccountMem, payoutId: string): Promise<void> {
    if (mem.payoutRecords.has(payoutId) && mem.payouts.has(payoutId)) return;
    const found = await this.source.findPayout(mem.state.id, payoutId);
    // Memory is ahead of the source: only what is still missing after the read is filled in.
    if (found.record && !mem.payoutRecords.has(payoutId)) mem.payoutRecords.set(payoutId, found.record);
    if (found.tx && !mem.payouts.has(payoutId)) mem.payouts.set(payoutId, found.tx);
  }

  private queue(id: string): Promise<void> {
    let batch = this.batch;
    if (!batch || batch.ids.length >= 1000) {
      const ids: string[] = [];
      const promise = new Promise<void>((resolve) => setImmediate(resolve)).then(async () => {
        if (this.batch?.ids === ids) this.batch = null;
        // Another process's accounts (tip recipients): only what the directory may know of them.
        const mine = ids.filter((id) => this.owns(this.shardFor(id).id));
        const others = mine.length === ids.length ? [] : ids.filter((id) => !this.owns(this.shardFor(id).id));
        const [loaded, known] = await Promise.all([
          this.source.load(mine, this.now(), this.idempotencyTtlMs),
          this.source.directory(others),
        ]);
        this.install(loaded);
        for (const [id, entry] of known) this.directory.learn(id, entry, false);
      });
      batch = { ids, promise };
      this.batch = batch;
    }
    batch.ids.push(id);
    return batch.promise;
  }

  /**
   * Keeps memory bounded: evicts accounts unchanged since flush `idleBefore` whose state the
   * source holds at the same version, so a later load reads exactly what memory had. Velocity
   * windows and idempotency keys come back from the source on that load.
   */
  async evictIdle(shards: ShardActor[], max: number, idleBefore: number): Promise<number> {
    let total = 0;
    for (const s of shards) total += s.accounts.size;
    if (total <= max) return 0;
    const target = total - Math.floor(max * 0.9);
    const candidates: Array<{ shard: ShardActor; mem: AccountMem }> = [];
    outer: for (const shard of shards) {
      for (const [id, m] of shard.accounts) {
        if (m.system || m.lastFlushSeq > idleBefore || shard.credits.has(id)) continue;
        if ([...m.payouts.values()].some((p) => p.status === "pending")) continue;
        if ([...m.payoutRecords.values()].some((p) => p.status === "pending" || p.status === "processing"))
          continue;
        candidates.push({ shard, mem: m });
        if (candidates.length >= target) break outer;
      }
    }
    if (candidates.length === 0) return 0;
    const versions = await this.source.versions(candidates.map((c) => c.mem.state.id));
    let evicted = 0;
    for (const { shard, mem } of candidates) {
      const id = mem.state.id;
      // Re-checked after the await: only an account still identical to the source may go.
      if (versions.get(id) === mem.state.version && shard.accounts.get(id) === mem) {
        shard.accounts.delete(id);
        this.directory.released(id);
        evicted++;
      }
    }
    return evicted;
  }
}
