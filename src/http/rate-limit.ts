// Owns request rate limits, counted in Redis so they hold across processes and restarts: per
// client IP on every route, per user on authenticated ones, and a much stricter per-IP budget on
// login and register against password guessing. Each budget is a fixed one-minute window per key
// (INCR, and PEXPIRE when the window opens). Setting both RATE_LIMIT_IP_PER_MIN and
// RATE_LIMIT_USER_PER_MIN to 0 disables every limit.
//
// Checks are group-committed like the WAL: every check made in one event-loop turn goes to Redis
// as ONE command. rate-limiter-flexible sent one command per check, and with two checks per tip
// those writes cost about a quarter of tip throughput (bench, limits on vs off); a library that
// batches across requests does not exist, and the window logic is a few lines of Lua
// (src/redis/lua/rate-limit-consume.lua).
import type { Redis } from "ioredis";
import type { Config } from "../config.ts";
import { AppError } from "../errors.ts";
import { type RedisKeys, redisKeys } from "../redis/keys.ts";
import { defineScript } from "../redis/scripts.ts";

export type LimitKind = "ip" | "user" | "auth" | "ai";

const WINDOW_MS = 60_000;
const MAX_KEYS_PER_COMMAND = 4096;

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
  private readonly keys: RedisKeys;
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
      ai: on ? config.RATE_LIMIT_AI_PER_MIN : 0,
    };
    this.keys = redisKeys(config.REDIS_PREFIX);
    // Variadic: the number of counters is passed with each call.
    defineScript(redis, "rateLimitConsume", "rate-limit-consume.lua");
    this.redis = redis as ConsumingRedis;
  }

  /** Spends one request of `key`'s budget; AppError rate_limited (with retry_after_s) when spent. */
  consume(kind: LimitKind, key: string): Promise<void> {
    const budget = this.budgets[kind];
    if (budget <= 0) return Promise.resolve();
    const redisKey = this.keys.rateLimit(kind, key);
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
