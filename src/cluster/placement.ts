// Owns dividing the shards between the live processes of a deployment (LEDGER_SPREAD): each
// process says it is alive (a sorted set scored by when that word expires, plus its internal
// address), works out its share from the live count (the shards split as evenly as they go, the
// larger shares to the processes first in owner-id order), takes free shard leases up to it and
// gives back what is beyond it when another process joins. Giving a shard back is done in order:
// the ledger stops deciding for it and rebuilds its memory without it, its persister lanes stop,
// and only then is its lease released, so there is never a moment with two owners; taking a shard
// is a lease with a new fencing token and a recovery of the ledger with it. It also knows which
// process owns each shard now (from the leases) and where that process listens, for forwarding.
import type { Logger } from "pino";
import type { RedisClient } from "../redis/connect.ts";
import { type RedisKeys, redisKeys } from "../redis/keys.ts";
import type { ShardLeases } from "../wal/lease.ts";
import { holderProvenDead } from "../wal/process-identity.ts";

/** What placement drives in the ledger. */
export interface PlacedLedger {
  ownedShards(): number[];
  health(): { recovering: boolean };
  /** Rebuilds memory for the shards whose leases this process holds now. */
  recover(why: string): Promise<void>;
  /** Stops owning `shards`; memory is rebuilt without them (their leases are still held). */
  give(shards: readonly number[]): Promise<void>;
}

export interface PlacementOptions {
  redis: RedisClient;
  prefix: string;
  leases: ShardLeases;
  shards: number;
  leaseMs: number;
  /** This process's internal address, as the others reach it. */
  url: string;
  logger: Logger;
  /** Told the shards this process owns whenever they change (its persister follows them). */
  onOwned: (shards: number[]) => Promise<void>;
}

/** Longest time between two looks at the membership (a lease lifetime is usually longer). */
const TICK_MAX_MS = 1000;

export class Placement {
  private readonly keys: RedisKeys;
  private ledger: PlacedLedger | null = null;
  private members: string[] = [];
  private readonly urls = new Map<string, string>();
  private holders = new Map<number, string | null>();
  private timer: NodeJS.Timeout | null = null;
  private beat: NodeJS.Timeout | null = null;
  private ticking: Promise<void> | null = null;
  private stopped = false;
  private url: string;

  constructor(private readonly o: PlacementOptions) {
    this.keys = redisKeys(o.prefix);
    this.url = o.url;
  }

  /** Where this process listens for the others (said with the next heartbeat). */
  setUrl(url: string): void {
    this.url = url;
    void this.o.redis.hset(this.keys.memberUrls, this.owner, url).catch(() => {});
  }

  get owner(): string {
    return this.o.leases.owner;
  }

  /** The processes alive now, by owner id, and this one's share of the shards among them. */
  view(): { members: number; share: number } {
    return { members: this.members.length, share: this.share() };
  }

  /** Says this process is alive and takes its share of the free shards (before the ledger starts). */
  async join(): Promise<void> {
    await this.heartbeat();
    await this.takeFree();
  }

  /** Looks again every TICK_MAX_MS (or a third of a lease, if shorter). */
  start(ledger: PlacedLedger): void {
    this.ledger = ledger;
    const every = Math.max(50, Math.min(TICK_MAX_MS, Math.floor(this.o.leaseMs / 3)));
    this.timer = setInterval(() => void this.tick(), every);
    this.timer.unref();
    // Said on a timer of its own: a rebalance (a recovery, a persister restart) may take longer
    // than a membership lives.
    this.beat = setInterval(() => {
      this.heartbeat().catch((err) =>
        this.o.logger.warn({ err: (err as Error).message }, "shard placement: heartbeat failed"),
      );
    }, every);
    this.beat.unref();
  }

  /** One look: alive, routes, then take or give shards toward this process's share. */
  tick(): Promise<void> {
    if (this.ticking || this.stopped) return this.ticking ?? Promise.resolve();
    this.ticking = this.rebalance()
      .catch((err) => this.o.logger.warn({ err: (err as Error).message }, "shard placement: a look failed"))
      .finally(() => {
        this.ticking = null;
      });
    return this.ticking;
  }

  private async rebalance(): Promise<void> {
    const ledger = this.ledger;
    if (!ledger || this.stopped) return;
    // Shards move between other processes too (one left, another took its shards): forwarding
    // follows the leases as they are now, not as they were at this process's last change.
    await this.refreshRoutes();
    const owned = [...this.o.leases.shards];
    const share = this.share();
    if (owned.length > share) {
      const giving = owned.slice(share);
      this.o.logger.info({ giving, share, members: this.members.length }, "giving shards to other processes");
      await ledger.give(giving);
      // The persister stops writing them before another process may take them (the recovery
      // inside give() asked for that; this waits for it).
      await this.o.onOwned(ledger.ownedShards());
      await this.o.leases.give(giving);
      await this.refreshRoutes();
      return;
    }
    if (owned.length < share && (await this.takeFree()) > 0) {
      // The recovery tells the persister what the ledger owns now (Ledger.onOwnership).
      await ledger.recover("took shards over");
      await this.refreshRoutes();
      return;
    }
    // Nothing changed hands: the persister is kept in step all the same, so one whose restart
    // failed (Redis away during a handover) is started again (a no-op when it already runs).
    if (!ledger.health().recovering) await this.o.onOwned(ledger.ownedShards());
  }

  /** Takes free shards (lowest first) up to this process's share; the number taken. */
  private async takeFree(): Promise<number> {
    await this.refreshRoutes();
    let want = this.share() - this.o.leases.shards.length;
    let taken = 0;
    for (let s = 0; s < this.o.shards && want > 0; s++) {
      if (this.o.leases.shards.includes(s)) continue;
      const holder = this.holders.get(s) ?? null;
      if (holder !== null && !holderProvenDead(holder)) continue;
      if (await this.o.leases.tryAcquire(s)) {
        taken++;
        want--;
      }
    }
    if (taken > 0) {
      this.o.logger.info({ taken, owned: this.o.leases.shards.length }, "took free shards");
      await this.refreshRoutes();
    }
    return taken;
  }

  /** This process's share: the shards split over the live processes, larger shares first. */
  private share(): number {
    const n = this.members.length;
    const i = this.members.indexOf(this.owner);
    if (n === 0 || i < 0) return this.o.leases.shards.length;
    return Math.floor(this.o.shards / n) + (i < this.o.shards % n ? 1 : 0);
  }

  /** Renews this process's membership and reads who else is alive (a process proven dead is not). */
  private async heartbeat(): Promise<void> {
    const now = Date.now();
    const { members, memberUrls } = this.keys;
    await this.o.redis.zadd(members, now + this.o.leaseMs, this.owner);
    await this.o.redis.hset(memberUrls, this.owner, this.url);
    await this.o.redis.zremrangebyscore(members, "-inf", now);
    const alive = (await this.o.redis.zrangebyscore(members, now, "+inf")).filter(
      (m) => m === this.owner || !holderProvenDead(m),
    );
    this.members = alive.sort();
    const urls = await this.o.redis.hgetall(memberUrls);
    this.urls.clear();
    for (const [owner, url] of Object.entries(urls)) this.urls.set(owner, url);
    // Addresses of processes gone for good are dropped now and then, by whoever sees them.
    const gone = Object.keys(urls).filter((o) => !alive.includes(o));
    if (gone.length > 0 && Math.random() < 0.1) await this.o.redis.hdel(memberUrls, ...gone);
  }

  /** Reads which process holds each shard's lease now. */
  async refreshRoutes(): Promise<void> {
    this.holders = await this.o.leases.holders([...Array(this.o.shards).keys()]);
  }

  /** Where the owner of `shard` listens (null: nobody owns it now, or it is this process). */
  ownerUrl(shard: number): string | null {
    const holder = this.holders.get(shard) ?? null;
    if (holder === null || holder === this.owner) return null;
    return this.urls.get(holder) ?? null;
  }

  /** The shard's owner as last read (null: free). */
  holderOf(shard: number): string | null {
    return this.holders.get(shard) ?? null;
  }

  /** Leaves: no more looks, and the others stop counting this process at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    if (this.beat) clearInterval(this.beat);
    this.timer = null;
    this.beat = null;
    await this.ticking;
    await this.o.redis.zrem(this.keys.members, this.owner).catch(() => {});
  }
}
