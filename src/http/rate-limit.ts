// Owns request rate limits, counted in Redis so they hold across processes and restarts: per
// client IP on every route, per user on authenticated ones, and a much stricter per-IP budget on
// login and register against password guessing. Each budget is a fixed one-minute window per key
// (INCR, and PEXPIRE when the window opens). Setting both RATE_LIMIT_IP_PER_MIN and
// RATE_LIMIT_USER_PER_MIN to 0 disables every limit.
//
// Checks are group-committed like the WAL: every check made in one event-loop turn goes to Redis
// as ONE command. rate-limiter-flexible sent one command per check, and with two checks per tip
// those writes cost about a quarter of tip throughput (bench, limits on vs off); a library that
// batches across requests does not exist, and the window logic is the four lines of Lua below.
import type { Redis } from "ioredis";
import type { Config } from "../config.ts";
import { AppError } from "../errors.ts";

export type LimitKind = "ip" | "user" | "auth";

const WINDOW_MS = 60_000;
const MAX_KEYS_PER_COMMAND = 4096;

/**
 * KEYS: the counters. ARGV[1]: the window in ms; ARGV[i + 1]: KEYS[i]'s budget. Returns, per key,
 * {count, ms until the window ends} (the second only when over budget, else 0).
 */
const CONSUME_SCRIPT = `
local out = {}
for i = 1, #KEYS do
  local n = redis.call('INCR', KEYS[i])
  if n == 1 then redis.call('PEXPIRE', KEYS[i], ARGV[1]) end
  local wait = 0
  if n > tonumber(ARGV[i + 1]) then
    wait = redis.call('PTTL', KEYS[i])
    if wait < 0 then redis.call('PEXPIRE', KEYS[i], ARGV[1]); wait = tonumber(ARGV[1]) end
  end
  out[i] = {n, wait}
end
return out`;

type ConsumingRedis = Redis & {
  rateLimitConsume(numKeys: number, ...args: Array<string | number>): Promise<Array<[number, number]>>;
};

interface Check {
  key: string;
  kind: LimitKind;
  budget: number;
  resolve(): void;
  reject(err: AppError): void;
}

export class RateLimits {
  private readonly budgets: Record<LimitKind, number>;
  private readonly redis: ConsumingRedis;
  private readonly prefix: string;
  private pending: Check[] = [];
  private scheduled = false;
  /** Keys known to be over budget, until their window ends: refused without asking Redis. */
  private readonly blockedUntil = new Map<string, number>();

  constructor(redis: Redis, config: Config) {
    // Both per-minute limits at 0 switch every limit off, the stricter auth one included.
    const on = config.RATE_LIMIT_IP_PER_MIN > 0 || config.RATE_LIMIT_USER_PER_MIN > 0;
    this.budgets = {
      ip: on ? config.RATE_LIMIT_IP_PER_MIN : 0,
      user: on ? config.RATE_LIMIT_USER_PER_MIN : 0,
      auth: on ? config.RATE_LIMIT_AUTH_PER_MIN : 0,
    };
    this.prefix = `${config.REDIS_PREFIX}rl:`;
    // defineCommand sends EVALSHA and falls back to EVAL once if Redis lost the script.
    if (!("rateLimitConsume" in redis)) redis.defineCommand("rateLimitConsume", { lua: CONSUME_SCRIPT });
    this.redis = redis as ConsumingRedis;
  }

  /** Spends one request of `key`'s budget; AppError rate_limited (with retry_after_s) when spent. */
  consume(kind: LimitKind, key: string): Promise<void> {
    const budget = this.budgets[kind];
    if (budget <= 0) return Promise.resolve();
    const redisKey = `${this.prefix}${kind}:${key}`;
    const until = this.blockedUntil.get(redisKey);
    if (until !== undefined) {
      const waitMs = until - Date.now();
      if (waitMs > 0) return Promise.reject(limited(kind, waitMs));
      this.blockedUntil.delete(redisKey);
    }
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
    // A bounded number of keys per command keeps the argument list far from the engine's limits.
    for (let i = 0; i < all.length; i += MAX_KEYS_PER_COMMAND) {
      void this.send(all.slice(i, i + MAX_KEYS_PER_COMMAND));
    }
  }

  private async send(batch: Check[]): Promise<void> {
    let replies: Array<[number, number]>;
    try {
      replies = await this.redis.rateLimitConsume(
        batch.length,
        ...batch.map((c) => c.key),
        WINDOW_MS,
        ...batch.map((c) => c.budget),
      );
    } catch {
      for (const c of batch) c.reject(new AppError("unavailable", "rate limiter unavailable; retry shortly"));
      return;
    }
    const now = Date.now();
    batch.forEach((c, i) => {
      const [count, waitMs] = replies[i] ?? [Number.POSITIVE_INFINITY, WINDOW_MS];
      if (Number(count) <= c.budget) {
        c.resolve();
        return;
      }
      if (this.blockedUntil.size >= 100_000) this.blockedUntil.clear();
      this.blockedUntil.set(c.key, now + Number(waitMs));
      c.reject(limited(c.kind, Number(waitMs)));
    });
  }
}

function limited(kind: LimitKind, waitMs: number): AppError {
  return new AppError("rate_limited", "too many requests; slow down", {
    limit: kind,
    retry_after_s: Math.max(1, Math.ceil(waitMs / 1000)),
  });
}
