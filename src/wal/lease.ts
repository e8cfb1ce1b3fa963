// Owns the single-writer guarantee per shard: each shard has its own Redis lease, renewed well
// within its lifetime, and a process holds the leases of the shards it owns. Every new owner of a
// shard gets a fencing token one above the shard's last (lua/lease-acquire-2.lua), and the WAL
// append checks the shard's lease value it carries in the same script as its XADD (wal-writer.ts):
// a process that stalls past its lease (GC pause, SIGSTOP, a frozen VM) finds every later append
// refused, whatever it believes. A shard's lease, fencing counter and WAL stream share the hash
// tag `{shard}`, so that script runs on a Redis Cluster too.
//
// A lease that lapses (Redis was away longer than the lease, or the process stalled) is not lost
// while nobody else holds it: ensure() takes it again with a NEW token, and the ledger rebuilds
// its memory from Postgres + WAL before it appends under that token (shards/ledger.ts). Only a
// lease held by another owner ends this process's ownership.
import { randomUUID } from "node:crypto";
import { execSpread, type RedisClient } from "../redis/connect.ts";
import { type RedisKeys, redisKeys } from "../redis/keys.ts";
import { defineScript } from "../redis/scripts.ts";
import { type Ownership, OwnershipLostError } from "../shards/ports.ts";
import { holderProvenDead, processTag } from "./process-identity.ts";

type LeaseRedis = RedisClient & {
  leaseAcquire(lease: string, fence: string, owner: string, ttlMs: number): Promise<string | null>;
  leaseReplace(
    lease: string,
    fence: string,
    seen: string,
    owner: string,
    ttlMs: number,
  ): Promise<string | null>;
  leaseRenew(lease: string, value: string, ttlMs: number): Promise<number>;
  leaseRelease(lease: string, value: string): Promise<number>;
};

export class ShardLeases implements Ownership {
  /** Unique per process, with where it runs, so a restart can tell its crashed predecessor. */
  readonly owner = `${randomUUID()}${processTag()}`;
  private readonly redis: LeaseRedis;
  private readonly keys: RedisKeys;
  /** The lease value held per owned shard. */
  private readonly held = new Map<number, string>();
  private timer: NodeJS.Timeout | null = null;

  /** The shards this process owns (or means to: their leases may be in the taking). */
  private wanted: number[];

  constructor(
    redis: RedisClient,
    prefix: string,
    shards: readonly number[],
    private readonly ttlMs: number,
    /** A renewal found a lease no longer this process's: ownership must be checked again. */
    private readonly onLapsed: () => void,
    /**
     * Shards spread over processes (LEDGER_SPREAD): a shard whose lease another process holds is
     * given up by ensure() instead of ending this process's ownership of the ledger.
     */
    private readonly spread = false,
  ) {
    this.wanted = [...shards].sort((a, b) => a - b);
    defineScript(redis, "leaseAcquire", "lease-acquire-2.lua");
    defineScript(redis, "leaseReplace", "lease-replace-2.lua");
    defineScript(redis, "leaseRenew", "lease-renew-1.lua");
    defineScript(redis, "leaseRelease", "lease-release-1.lua");
    this.redis = redis as LeaseRedis;
    this.keys = redisKeys(prefix);
  }

  /** The shards this process owns, in order. */
  get shards(): readonly number[] {
    return this.wanted;
  }

  /** The lease value ("<fencing token>:<owner id>") a WAL append to `shard` must carry. */
  readonly value = (shard: number): string => {
    const v = this.held.get(shard);
    // Not held (never taken, or given up): an append under it is as good as fenced.
    if (v === undefined) throw new OwnershipLostError(`the lease of shard ${shard} is not held`);
    return v;
  };

  /** The shards whose leases this process holds now, each with its fencing token. */
  owned(): Array<{ shard: number; token: number }> {
    return [...this.held.keys()].sort((a, b) => a - b).map((shard) => ({ shard, token: this.token(shard) }));
  }

  /** The fencing token this process holds for `shard` (0: none). */
  token(shard: number): number {
    const v = this.held.get(shard);
    return v === undefined ? 0 : Number(v.slice(0, v.indexOf(":")));
  }

  /**
   * Takes every owned shard's lease, waiting up to two lease lifetimes for a crashed owner's lease
   * to expire (a standby: as long as it takes); at once when the owner is proven dead (a process
   * of this machine that is gone, see process-identity.ts), as after a crash and restart in place.
   */
  async acquire(opts: { standby?: boolean; onWaiting?: (holder: string) => void } = {}): Promise<void> {
    const deadline = opts.standby ? Number.POSITIVE_INFINITY : Date.now() + 2 * this.ttlMs + 500;
    let told = false;
    const waiting = (holder: string) => {
      if (told) return;
      told = true;
      opts.onWaiting?.(holder);
    };
    // Renewing from the start: a lease taken early must not lapse while another is waited for.
    this.startRenewing();
    try {
      // One shard after the other, in shard order, as locks are taken to avoid a deadlock: two
      // standbys racing for a dead owner's shards would otherwise each take some and wait for
      // the other's forever. Whoever takes the lowest shard takes them all.
      for (const s of [...this.shards].sort((a, b) => a - b)) await this.acquireOne(s, deadline, waiting);
    } catch (err) {
      await this.release();
      throw err;
    }
  }

  private async acquireOne(
    shard: number,
    deadline: number,
    waiting: (holder: string) => void,
  ): Promise<void> {
    const lease = this.keys.shardLease(shard);
    const fence = this.keys.shardFence(shard);
    for (;;) {
      let got = await this.redis.leaseAcquire(lease, fence, this.owner, this.ttlMs);
      if (!got) {
        const holder = await this.redis.get(lease);
        if (holder !== null && this.isMine(holder)) got = holder;
        else if (holder !== null && holderProvenDead(holder)) {
          got = await this.redis.leaseReplace(lease, fence, holder, this.owner, this.ttlMs);
        }
      }
      if (got) {
        this.held.set(shard, got);
        return;
      }
      const holder = await this.redis.get(lease);
      if (holder !== null) waiting(holder);
      if (Date.now() > deadline) {
        throw new Error(
          `another process owns the ledger (shard ${shard}: lease ${lease} held by ${holder}); stop it first, or give this one its own REDIS_PREFIX`,
        );
      }
      await new Promise((r) => setTimeout(r, Math.min(200, this.ttlMs / 4)));
    }
  }

  /**
   * Makes sure this process holds every owned shard's lease now, each under a NEW fencing token:
   * a lease is rotated when it is still this process's, taken again when it is free (it lapsed,
   * say through a Redis outage longer than the lease), and OwnershipLostError is thrown when
   * another owner holds one. Any other error (Redis unreachable or hung) is passing: the caller
   * retries.
   *
   * Why always a new token: the ledger calls this before it re-reads the WAL, after a flush whose
   * outcome it does not know (a timeout, a dropped connection). An append of the old token still
   * on its way to Redis then either landed before the rotation, so the re-read sees it, or lands
   * after it and is refused as fenced. It can never land unseen behind the rebuilt memory.
   */
  async ensure(): Promise<readonly number[]> {
    this.stopRenewing();
    const lost = new Set<number>();
    await Promise.all(
      this.wanted.map((s) =>
        this.ensureOne(s).catch((err) => {
          if (!(this.spread && err instanceof OwnershipLostError)) throw err;
          lost.add(s);
        }),
      ),
    );
    if (lost.size > 0) {
      // Spread: another process took these shards while this one stalled; the rest stay ours.
      this.wanted = this.wanted.filter((s) => !lost.has(s));
      for (const s of lost) this.held.delete(s);
    }
    this.startRenewing();
    return this.wanted;
  }

  /**
   * Takes a free shard's lease at once (or one whose holder is proven dead), without waiting:
   * true when this process owns the shard now. Its memory must be rebuilt (ledger recovery)
   * before anything is appended to it.
   */
  async tryAcquire(shard: number): Promise<boolean> {
    const lease = this.keys.shardLease(shard);
    const fence = this.keys.shardFence(shard);
    let got = await this.redis.leaseAcquire(lease, fence, this.owner, this.ttlMs);
    if (!got) {
      const holder = await this.redis.get(lease);
      if (holder !== null && holderProvenDead(holder)) {
        got = await this.redis.leaseReplace(lease, fence, holder, this.owner, this.ttlMs);
      }
    }
    if (!got) return false;
    this.held.set(shard, got);
    if (!this.wanted.includes(shard)) this.wanted = [...this.wanted, shard].sort((a, b) => a - b);
    if (!this.timer) this.startRenewing();
    return true;
  }

  /**
   * Stops owning `shards` and releases their leases, so another process can take them at once.
   * The ledger must have stopped appending to them first (its recovery without them).
   */
  async give(shards: readonly number[]): Promise<void> {
    const gone = new Set(shards);
    this.wanted = this.wanted.filter((s) => !gone.has(s));
    await Promise.all(
      shards.map((shard) => {
        const value = this.held.get(shard);
        this.held.delete(shard);
        return value === undefined
          ? Promise.resolve()
          : this.redis.leaseRelease(this.keys.shardLease(shard), value).catch(() => {});
      }),
    );
  }

  /** The owner id holding each of `shards` now (null: free), read from the leases. */
  async holders(shards: readonly number[]): Promise<Map<number, string | null>> {
    const replies = await execSpread(
      this.redis,
      shards.map((s) => ["get", this.keys.shardLease(s)]),
    );
    const out = new Map<number, string | null>();
    shards.forEach((s, i) => {
      const [err, v] = replies[i]!;
      if (err) throw err;
      out.set(s, typeof v === "string" ? v.slice(v.indexOf(":") + 1) : null);
    });
    return out;
  }

  private async ensureOne(shard: number): Promise<void> {
    const lease = this.keys.shardLease(shard);
    const fence = this.keys.shardFence(shard);
    for (let tries = 0; tries < 4; tries++) {
      const mine = this.held.get(shard);
      const rotated =
        mine !== undefined ? await this.redis.leaseReplace(lease, fence, mine, this.owner, this.ttlMs) : null;
      const got = rotated ?? (await this.redis.leaseAcquire(lease, fence, this.owner, this.ttlMs));
      if (got) {
        this.held.set(shard, got);
        return;
      }
      const holder = await this.redis.get(lease);
      if (holder !== null && this.isMine(holder)) {
        // A rotation or acquisition of ours whose answer was lost (it timed out): rotate it again.
        this.held.set(shard, holder);
        continue;
      }
      // Held by someone else: they own the shard. Expired between the two calls: try again.
      if (holder !== null) {
        throw new OwnershipLostError(`the lease of shard ${shard} is held by another process (${holder})`);
      }
    }
    throw new Error(`the lease of shard ${shard} kept changing hands; retrying`);
  }

  /** A lease value naming this process (owner ids are unique per process). */
  private isMine(value: string): boolean {
    return value.slice(value.indexOf(":") + 1) === this.owner;
  }

  private startRenewing(): void {
    this.stopRenewing();
    this.timer = setInterval(() => void this.renew(), Math.max(50, Math.floor(this.ttlMs / 3)));
    this.timer.unref();
  }

  private async renew(): Promise<void> {
    const values = [...this.held];
    let lapsed = false;
    await Promise.all(
      values.map(async ([shard, value]) => {
        try {
          const ok = await this.redis.leaseRenew(this.keys.shardLease(shard), value, this.ttlMs);
          // A rotation meanwhile made that value stale: nothing was lost.
          if (ok !== 1 && this.held.get(shard) === value) lapsed = true;
        } catch {
          // Redis unreachable: the WAL fails too and the ledger recovers, through ensure().
        }
      }),
    );
    if (lapsed && this.timer) {
      this.stopRenewing();
      this.onLapsed();
    }
  }

  private stopRenewing(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  async release(): Promise<void> {
    this.stopRenewing();
    await Promise.all(
      [...this.held].map(([shard, value]) =>
        this.redis.leaseRelease(this.keys.shardLease(shard), value).catch(() => {}),
      ),
    );
    this.held.clear();
  }
}
