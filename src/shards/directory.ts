// Owns the directory: what any shard may know about any account it does not own (kind and
// status), read-only to decisions. It learns from account loads (Postgres) and from status
// events as their owning shard applies them; a newer version always wins, so a Postgres read
// that raced a suspension cannot bring back the old status.
//
// How stale it may be: in one process, not at all for status changes (the owner's shard updates
// it synchronously when it decides the change, before any later command is decided). An entry
// loaded from Postgres for an account that no shard holds is current, because a shard evicts an
// account only once Postgres has its exact state.
import type { DirectoryEntry } from "../ledger/types.ts";

interface Slot extends DirectoryEntry {
  /** The owning shard holds the account in memory: keep the entry, it may be ahead of Postgres. */
  held: boolean;
  /** When it was learned (only kept with a TTL for unheld entries). */
  atMs: number;
}

export class Directory {
  private readonly entries = new Map<string, Slot>();
  private trimAt: number;

  /**
   * Keeps at most about `max` entries, dropping the oldest of those no shard holds. With shards
   * spread over processes, an account of another process's shard may change there unseen: its
   * entry (never held here) is read again once older than `unheldTtlMs` (0: never). Until the
   * new read is in, decisions go on with the old entry: an account never stops existing.
   */
  constructor(
    private readonly max: number,
    private readonly unheldTtlMs = 0,
    private readonly now: () => number = Date.now,
  ) {
    this.trimAt = max;
  }

  readonly get = (id: string): DirectoryEntry | undefined => this.entries.get(id);

  /** Known, and recently enough when it is another process's account: no read is due. */
  current(id: string): boolean {
    const slot = this.entries.get(id);
    if (!slot) return false;
    return this.unheldTtlMs === 0 || slot.held || this.now() - slot.atMs <= this.unheldTtlMs;
  }

  /** Takes what a load or a status event says of an account, unless it already knows newer. */
  learn(id: string, entry: DirectoryEntry, held: boolean): void {
    const cur = this.entries.get(id);
    if (cur && cur.version > entry.version) {
      if (held) cur.held = true;
      if (this.unheldTtlMs > 0) cur.atMs = this.now();
      return;
    }
    const slot: Slot = {
      kind: entry.kind,
      status: entry.status,
      version: entry.version,
      held: held || (cur?.held ?? false),
      atMs: this.unheldTtlMs > 0 ? this.now() : 0,
    };
    this.entries.set(id, slot);
    if (this.entries.size > this.trimAt) this.trim();
  }

  /** The owning shard evicted the account: Postgres has its state, the entry may go. */
  released(id: string): void {
    const cur = this.entries.get(id);
    if (cur) cur.held = false;
  }

  clear(): void {
    this.entries.clear();
    this.trimAt = this.max;
  }

  /** Drops the oldest unheld entries down to 90% of the maximum; if held ones alone exceed it,
   * the next trim waits for another tenth to arrive, so trimming stays amortised O(1). */
  private trim(): void {
    const target = Math.floor(this.max * 0.9);
    for (const [id, slot] of this.entries) {
      if (this.entries.size <= target) break;
      if (!slot.held) this.entries.delete(id);
    }
    this.trimAt = Math.max(this.max, this.entries.size + Math.ceil(this.max / 10));
  }
}
