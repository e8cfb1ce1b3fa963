// Owns request rate limits, counted in Redis (rate-limiter-flexible) so they hold across
// processes: per client IP on every route, per user on authenticated ones, and a much stricter
// per-IP budget on login and register against password guessing. Setting both
// RATE_LIMIT_IP_PER_MIN and RATE_LIMIT_USER_PER_MIN to 0 disables every limit.
import type { Redis } from "ioredis";
import { RateLimiterRedis, RateLimiterRes } from "rate-limiter-flexible";
import type { Config } from "../config.ts";
import { AppError } from "../errors.ts";

export type LimitKind = "ip" | "user" | "auth";

export class RateLimits {
  private readonly limiters = new Map<LimitKind, RateLimiterRedis>();
  readonly enabled: boolean;

  constructor(redis: Redis, config: Config) {
    this.enabled = config.RATE_LIMIT_IP_PER_MIN > 0 || config.RATE_LIMIT_USER_PER_MIN > 0;
    const make = (kind: LimitKind, points: number) => {
      if (!this.enabled || points <= 0) return;
      this.limiters.set(
        kind,
        new RateLimiterRedis({
          storeClient: redis,
          keyPrefix: `${config.REDIS_PREFIX}rl:${kind}`,
          points,
          duration: 60,
          // Once a key is over its budget, refuse it from memory without asking Redis again.
          inMemoryBlockOnConsumed: points,
          inMemoryBlockDuration: 1,
        }),
      );
    };
    make("ip", config.RATE_LIMIT_IP_PER_MIN);
    make("user", config.RATE_LIMIT_USER_PER_MIN);
    make("auth", config.RATE_LIMIT_AUTH_PER_MIN);
  }

  /** Spends one request of `key`'s budget; AppError rate_limited (with retry_after_s) when spent. */
  async consume(kind: LimitKind, key: string): Promise<void> {
    const limiter = this.limiters.get(kind);
    if (!limiter) return;
    try {
      await limiter.consume(key, 1);
    } catch (err) {
      if (err instanceof RateLimiterRes) {
        throw new AppError("rate_limited", "too many requests; slow down", {
          limit: kind,
          retry_after_s: Math.max(1, Math.ceil(err.msBeforeNext / 1000)),
        });
      }
      throw new AppError("unavailable", "rate limiter unavailable; retry shortly");
    }
  }
}
