// Owns the single-writer guarantee at process level: one process at a time owns the ledger's
// shards, through a Redis lease renewed well within its lifetime. Every new owner gets a fencing
// token one above the last (lua/lease-acquire-2.lua), and the WAL append checks the lease value
// it carries in the same script as its XADDs (wal-writer.ts): a process that stalls past its
// lease (GC pause, SIGSTOP, a frozen VM) finds every later append refused, whatever it believes.
//
// A lease that lapses (Redis was away longer than the lease, or the process stalled) is not lost
// while nobody else holds it: ensure() takes it again with a NEW token, and the ledger rebuilds
// its memory from Postgres + WAL before it appends under that token (shards/ledger.ts). Only a
// lease held by another owner ends this process's ownership.
import { randomUUID } from "node:crypto";
import type { Redis } from "ioredis";
import { redisKeys } from "../redis/keys.ts";
import { defineScript } from "../redis/scripts.ts";
import { type Ownership, OwnershipLostError } from "../shards/ports.ts";
import { holderProvenDead, processTag } from "./process-identity.ts";

type LeaseRedis = Redis & {
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

export class OwnershipLease implements Ownership {
  /** Unique per process, with where it runs, so a restart can tell its crashed predecessor. */
  private readonly owner = `${randomUUID()}${processTag()}`;
  private readonly redis: LeaseRedis;
  private readonly leaseKey: string;
  private readonly fenceKey: string;
  private held: string | null = null;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    redis: Redis,
    prefix: string,
    private readonly ttlMs: number,
    /** The renewal found the lease no longer this process's: ownership must be checked again. */
    private readonly onLapsed: () => void,
  ) {
    defineScript(redis, "leaseAcquire", "lease-acquire-2.lua");
    defineScript(redis, "leaseReplace", "lease-replace-2.lua");
    defineScript(redis, "leaseRenew", "lease-renew-1.lua");
    defineScript(redis, "leaseRelease", "lease-release-1.lua");
    this.redis = redis as LeaseRedis;
    const keys = redisKeys(prefix);
    this.leaseKey = keys.ledgerLease;
    this.fenceKey = keys.ledgerFence;
  }

  /** The lease value ("<fencing token>:<owner id>") the WAL append must carry. */
  readonly value = (): string => {
    if (this.held === null) throw new Error("the ledger lease is not held");
    return this.held;
  };

  /**
   * Takes the lease, waiting up to two lease lifetimes for a crashed owner's lease to expire; at
   * once when the owner is proven dead (a process of this machine that is gone, see
   * process-identity.ts), as after a crash and restart in place.
   */
  async acquire(): Promise<void> {
    const deadline = Date.now() + 2 * this.ttlMs + 500;
    for (;;) {
      let got = await this.redis.leaseAcquire(this.leaseKey, this.fenceKey, this.owner, this.ttlMs);
      if (!got) {
        const holder = await this.redis.get(this.leaseKey);
        if (holder !== null && this.isMine(holder)) got = holder;
        else if (holder !== null && holderProvenDead(holder)) {
          got = await this.redis.leaseReplace(this.leaseKey, this.fenceKey, holder, this.owner, this.ttlMs);
        }
      }
      if (got) {
        this.held = got;
        break;
      }
      if (Date.now() > deadline) {
        const holder = await this.redis.get(this.leaseKey);
        throw new Error(
          `another process owns the ledger (lease ${this.leaseKey} held by ${holder}); stop it first, or give this one its own REDIS_PREFIX`,
        );
      }
      await new Promise((r) => setTimeout(r, Math.min(200, this.ttlMs / 4)));
    }
    this.startRenewing();
  }

  /**
   * Makes sure this process holds the lease now, under a NEW fencing token: the lease is rotated
   * when it is still this process's, taken again when it is free (it lapsed, say through a Redis
   * outage longer than the lease), and OwnershipLostError is thrown only when another owner holds
   * it. Any other error (Redis unreachable or hung) is passing: the caller retries.
   *
   * Why always a new token: the ledger calls this before it re-reads the WAL, after a flush whose
   * outcome it does not know (a timeout, a dropped connection). An append of the old token still
   * on its way to Redis then either landed before the rotation, so the re-read sees it, or lands
   * after it and is refused as fenced. It can never land unseen behind the rebuilt memory.
   */
  async ensure(): Promise<void> {
    for (let tries = 0; tries < 4; tries++) {
      const rotated =
        this.held !== null
          ? await this.redis.leaseReplace(this.leaseKey, this.fenceKey, this.held, this.owner, this.ttlMs)
          : null;
      const got =
        rotated ?? (await this.redis.leaseAcquire(this.leaseKey, this.fenceKey, this.owner, this.ttlMs));
      if (got) {
        this.held = got;
        this.startRenewing();
        return;
      }
      const holder = await this.redis.get(this.leaseKey);
      if (holder !== null && this.isMine(holder)) {
        // A rotation or acquisition of ours whose answer was lost (it timed out): rotate it again.
        this.held = holder;
        continue;
      }
      // Held by someone else: they own the ledger. Expired between the two calls: try again.
      if (holder !== null) {
        throw new OwnershipLostError(`the ledger lease is held by another process (${holder})`);
      }
    }
    throw new Error("the ledger lease kept changing hands; retrying");
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
    const value = this.held;
    if (value === null) return;
    try {
      const ok = await this.redis.leaseRenew(this.leaseKey, value, this.ttlMs);
      // A rotation meanwhile made that value stale: nothing was lost.
      if (ok !== 1 && this.held === value) {
        this.stopRenewing();
        this.onLapsed();
      }
    } catch {
      // Redis unreachable: the WAL fails too and the ledger recovers, through ensure().
    }
  }

  private stopRenewing(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  async release(): Promise<void> {
    this.stopRenewing();
    if (this.held === null) return;
    await this.redis.leaseRelease(this.leaseKey, this.held).catch(() => {});
  }
}
