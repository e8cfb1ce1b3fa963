// Owns request rate limits: per client IP on every route, per user on authenticated ones, a much
// stricter per-IP budget on login and register against password guessing, and the AI budget.
// Each budget is a fixed one-minute window per key. Setting both RATE_LIMIT_IP_PER_MIN and
// RATE_LIMIT_USER_PER_MIN to 0 disables every limit.
//
// The per-IP, auth and AI budgets are counted in Redis (INCRBY, and PEXPIRE when the window opens),
// so they hold across processes and restarts. The per-user budget is counted here, in memory
// (UserWindows): one process owns every user's ledger shard today, so it already sees each of a
// user's requests, and a distinct Redis key per tipping user was the hot path's largest Redis
// cost (issue 16: about 5% of the main thread's time in socket writes, plus the script's work in
// Redis). A restart forgets the user windows, which only grants a user one fresh minute; the
// per-IP budget still holds. With shards spread over processes (LEDGER_SPREAD) a user's requests
// reach any process, so the per-user budget is counted in Redis there too, like the others.
//
// Checks are group-committed like the WAL: every check made in one event-loop turn goes to Redis
// as ONE command, with the checks that share a key as one counter spent by their number.
// rate-limiter-flexible sent one command per check, and with two checks per tip those writes cost
// about a quarter of tip throughput (bench, limits on vs off); a library that batches across
// requests does not exist, and the window logic is a few lines of Lua
// (src/redis/lua/rate-limit-consume.lua).
import { isCluster, type RedisClient } from "../redis/connect.ts";
import type { Config } from "../config.ts";
import { AppError } from "../errors.ts";
import { type RedisKeys, redisKeys } from "../redis/keys.ts";
import { defineScript } from "../redis/scripts.ts";

export type LimitKind = "ip" | "user" | "auth" | "ai";

const WINDOW_MS = 60_000;
const MAX_KEYS_PER_COMMAND = 4096;

type ConsumingRedis = RedisClient & {
  rateLimitConsume(numKeys: number, ...args: Array<string | number>): Promise<Array<[number, number]>>;
};

interface Check {
  key: string;
  kind: LimitKind;
  budget: number;
  resolve(): void;
  reject(err: AppError): void;
}

/**
 * Fixed one-minute windows per user, counted in this process. The map keeps windows in the order
 * they opened (a window that reopens moves to the end), so ended windows are dropped from its
 * front as new ones open; past `max` users the oldest window is dropped early, which can only
 * let that user through sooner, never refuse anyone wrongly.
 */
export class UserWindows {
  private readonly windows = new Map<string, { start: number; count: number }>();

  constructor(private readonly max = 200_000) {}

  /** Counts one request of `user` at `now`: 0 within `budget`, else the ms until its window ends. */
  take(user: string, budget: number, now: number): number {
    let w = this.windows.get(user);
    if (w === undefined || now - w.start >= WINDOW_MS) {
      if (w !== undefined) this.windows.delete(user);
      this.evict(now);
      w = { start: now, count: 0 };
      this.windows.set(user, w);
    }
    w.count++;
    return w.count > budget ? w.start + WINDOW_MS - now : 0;
  }

  get size(): number {
    return this.windows.size;
  }

  private evict(now: number): void {
    for (const [user, w] of this.windows) {
      if (this.windows.size < this.max && now - w.start < WINDOW_MS) return;
      this.windows.delete(user);
    }
  }
}

export class RateLimits {
  private readonly budgets: Record<LimitKind, number>;
  private readonly redis: ConsumingRedis;
  private readonly keys: RedisKeys;
  private pending: Check[] = [];
  private scheduled = false;
  /** Keys known to be over budget, until their window ends: refused without asking Redis. */
  private readonly blockedUntil = new Map<string, number>();
  private readonly users = new UserWindows();
  private readonly cluster: boolean;
  /** One process sees every request of a user: the per-user budget is counted in memory. */
  private readonly usersHere: boolean;

  constructor(redis: RedisClient, config: Config) {
    // Both per-minute limits at 0 switch every limit off, the stricter auth one included.
    const on = config.RATE_LIMIT_IP_PER_MIN > 0 || config.RATE_LIMIT_USER_PER_MIN > 0;
    this.budgets = {
      ip: on ? config.RATE_LIMIT_IP_PER_MIN : 0,
      user: on ? config.RATE_LIMIT_USER_PER_MIN : 0,
      auth: on ? config.RATE_LIMIT_AUTH_PER_MIN : 0,
      ai: on ? config.RATE_LIMIT_AI_PER_MIN : 0,
    };
    this.keys = redisKeys(config.REDIS_PREFIX);
    // Variadic: the number of counters is passed with each call.
    defineScript(redis, "rateLimitConsume", "rate-limit-consume.lua");
    this.redis = redis as ConsumingRedis;
    this.cluster = isCluster(redis);
    this.usersHere = !config.LEDGER_SPREAD;
  }

  /**
   * The refusal `consume` would answer at once, without Redis: `key` is known to be past its
   * budget until its window ends. Null when it is not known to be (Redis may still refuse it).
   */
  knownLimited(kind: LimitKind, key: string): AppError | null {
    if (this.budgets[kind] <= 0 || (kind === "user" && this.usersHere)) return null;
    return this.blocked(kind, this.keys.rateLimit(kind, key));
  }

  /** The refusal for a Redis key known to be past its budget; an ended block is forgotten. */
  private blocked(kind: LimitKind, redisKey: string): AppError | null {
    const until = this.blockedUntil.get(redisKey);
    if (until === undefined) return null;
    const waitMs = until - Date.now();
    if (waitMs > 0) return limited(kind, waitMs);
    this.blockedUntil.delete(redisKey);
    return null;
  }

  /** Spends one request of `key`'s budget; AppError rate_limited (with retry_after_s) when spent. */
  consume(kind: LimitKind, key: string): Promise<void> {
    const budget = this.budgets[kind];
    if (budget <= 0) return Promise.resolve();
    if (kind === "user" && this.usersHere) {
      const waitMs = this.users.take(key, budget, Date.now());
      return waitMs > 0 ? Promise.reject(limited(kind, waitMs)) : Promise.resolve();
    }
    const redisKey = this.keys.rateLimit(kind, key);
    const refused = this.blocked(kind, redisKey);
    if (refused) return Promise.reject(refused);
    return new Promise((resolve, reject) => {
      this.pending.push({ key: redisKey, kind, budget, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  private flush(): void {
    const all = this.pending;
    this.pending = [];
    this.scheduled = false;
    // The checks of one turn that share a key (a socket's tips, the clients behind one NAT) are
    // one counter in the call, spent by their number.
    const byKey = new Map<string, Check[]>();
    for (const c of all) {
      const same = byKey.get(c.key);
      if (same) same.push(c);
      else byKey.set(c.key, [c]);
    }
    const groups = [...byKey.values()];
    if (this.cluster) {
      // A script may only touch keys of one slot, and each client's counter has a slot of its
      // own: one call per key there (the cluster client still writes them in one go per node).
      for (const g of groups) void this.send([g]);
      return;
    }
    // A bounded number of keys per command keeps the argument list far from the engine's limits.
    for (let i = 0; i < groups.length; i += MAX_KEYS_PER_COMMAND) {
      void this.send(groups.slice(i, i + MAX_KEYS_PER_COMMAND));
    }
  }

  private async send(batch: Check[][]): Promise<void> {
    const args: Array<string | number> = batch.map((g) => g[0]!.key);
    args.push(WINDOW_MS);
    for (const g of batch) args.push(g[0]!.budget, g.length);
    let replies: Array<[number, number]>;
    try {
      replies = await this.redis.rateLimitConsume(batch.length, ...args);
    } catch {
      for (const g of batch)
        for (const c of g) c.reject(new AppError("unavailable", "rate limiter unavailable; retry shortly"));
      return;
    }
    const now = Date.now();
    batch.forEach((g, i) => {
      const [after, waitMs] = replies[i] ?? [Number.POSITIVE_INFINITY, WINDOW_MS];
      // The window's count before this call; the group's checks take the next numbers in order.
      const before = Number(after) - g.length;
      g.forEach((c, j) => {
        if (before + j + 1 <= c.budget) {
          c.resolve();
          return;
        }
        if (this.blockedUntil.size >= 100_000) this.blockedUntil.clear();
        this.blockedUntil.set(c.key, now + Number(waitMs));
        c.reject(limited(c.kind, Number(waitMs)));
      });
    });
  }
}

function limited(kind: LimitKind, waitMs: number): AppError {
  return new AppError("rate_limited", "too many requests; slow down", {
    limit: kind,
    retry_after_s: Math.max(1, Math.ceil(waitMs / 1000)),
  });
}
