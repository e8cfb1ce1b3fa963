// Owns the single-writer guarantee at process level: one process at a time owns the ledger's
// shards (a Redis lease, renewed). A second `npm start` on the same Redis waits for the lease and
// then refuses to start, rather than writing the same WAL streams; Postgres' version checks stay
// the last line of defence.
import { randomUUID } from "node:crypto";
import type { Redis } from "ioredis";

const RENEW = `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end`;
const RELEASE = `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end`;

export class OwnershipLease {
  private readonly token = randomUUID();
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly redis: Redis,
    private readonly key: string,
    private readonly ttlMs: number,
    private readonly onLost: () => void,
  ) {}

  /** Takes the lease, waiting up to two lease lifetimes for a crashed owner's lease to expire. */
  async acquire(): Promise<void> {
    const deadline = Date.now() + 2 * this.ttlMs + 500;
    for (;;) {
      const ok = await this.redis.set(this.key, this.token, "PX", this.ttlMs, "NX");
      if (ok === "OK") break;
      if (Date.now() > deadline) {
        const holder = await this.redis.get(this.key);
        throw new Error(
          `another process owns the ledger (lease ${this.key} held by ${holder}); stop it first, or give this one its own REDIS_PREFIX`,
        );
      }
      await new Promise((r) => setTimeout(r, Math.min(200, this.ttlMs / 4)));
    }
    this.timer = setInterval(() => void this.renew(), Math.max(50, Math.floor(this.ttlMs / 3)));
    this.timer.unref();
  }

  private async renew(): Promise<void> {
    try {
      const ok = await this.redis.eval(RENEW, 1, this.key, this.token, String(this.ttlMs));
      if (ok !== 1) {
        this.stopRenewing();
        this.onLost();
      }
    } catch {
      // Redis unreachable: the WAL fails too and the ledger recovers; the lease is retried.
    }
  }

  private stopRenewing(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  async release(): Promise<void> {
    this.stopRenewing();
    await this.redis.eval(RELEASE, 1, this.key, this.token).catch(() => {});
  }
}
