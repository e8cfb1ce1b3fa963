// Rate limits against the real Redis: every check of one event-loop turn is one Redis command,
// budgets hold exactly under concurrency, a spent key is refused from memory until its window
// ends, windows expire in Redis, and a Redis failure answers unavailable. Per-user budgets are
// counted in the process (UserWindows) and never reach Redis.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RateLimits, UserWindows } from "../../src/http/rate-limit.ts";
import { createTestEnv, type TestEnv } from "../helpers/env.ts";

let env: TestEnv;
beforeAll(async () => {
  env = await createTestEnv("ratelimit_unit");
});
afterAll(async () => {
  await env?.cleanup();
});

/** Counts the Redis commands limiters send through env.redis (the real command still runs). */
function countCommands(): { n: number; restore(): void } {
  const redis = env.redis as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>;
  const original = redis.rateLimitConsume!;
  const counter = {
    n: 0,
    restore: () => {
      redis.rateLimitConsume = original;
    },
  };
  redis.rateLimitConsume = (...a: unknown[]) => {
    counter.n++;
    return original.apply(env.redis, a);
  };
  return counter;
}

/** A client of a Redis that is not there: every command fails at once. */
async function deadRedis() {
  const { Redis } = await import("ioredis");
  const dead = new Redis("redis://127.0.0.1:1", {
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  dead.on("error", () => {});
  return dead;
}

const outcome = (p: Promise<void>) =>
  p.then(
    () => "ok",
    (e: { code: string; details: { limit: string; retry_after_s: number } }) => e,
  );

describe("rate limits", () => {
  it("spends budgets exactly under concurrency, in one Redis command per event-loop turn", async () => {
    const limits = new RateLimits(
      env.redis,
      env.config({ RATE_LIMIT_IP_PER_MIN: "30", RATE_LIMIT_USER_PER_MIN: "5" }),
    );
    const sent = countCommands();
    const ip = Array.from({ length: 50 }, () => outcome(limits.consume("ip", "203.0.113.7")));
    const user = Array.from({ length: 8 }, () => outcome(limits.consume("user", "u-1")));
    const other = outcome(limits.consume("ip", "203.0.113.8"));
    const [ipR, userR, otherR] = await Promise.all([Promise.all(ip), Promise.all(user), other]);
    expect(sent.n).toBe(1);
    expect(ipR.filter((r) => r === "ok")).toHaveLength(30);
    expect(userR.filter((r) => r === "ok")).toHaveLength(5);
    expect(otherR).toBe("ok");
    const refused = ipR.find((r) => r !== "ok") as {
      code: string;
      details: { limit: string; retry_after_s: number };
    };
    expect(refused.code).toBe("rate_limited");
    expect(refused.details.limit).toBe("ip");
    expect(refused.details.retry_after_s).toBeGreaterThanOrEqual(1);
    expect(refused.details.retry_after_s).toBeLessThanOrEqual(60);

    // The window lives in Redis with the minute's expiry.
    const ttl = await env.redis.pttl(`${env.redisPrefix}rl:ip:203.0.113.7`);
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(60_000);
    expect(await env.redis.get(`${env.redisPrefix}rl:ip:203.0.113.7`)).toBe("50");
    // The user's budget was counted in memory: no key of it in Redis.
    expect(await env.redis.exists(`${env.redisPrefix}rl:user:u-1`)).toBe(0);

    // Spent: refused from memory, without another command, until the window ends.
    const again = await outcome(limits.consume("ip", "203.0.113.7"));
    expect(again).toMatchObject({ code: "rate_limited", details: { limit: "ip" } });
    expect(sent.n).toBe(1);
    sent.restore();
  });

  it("splits a very large turn into bounded commands and still counts every check", async () => {
    const limits = new RateLimits(env.redis, env.config({ RATE_LIMIT_IP_PER_MIN: "9000" }));
    const sent = countCommands();
    const results = await Promise.all(
      Array.from({ length: 10_000 }, (_, i) => outcome(limits.consume("ip", `10.1.${i >> 8}.${i & 255}`))),
    );
    expect(sent.n).toBe(3); // 4096 + 4096 + 1808 distinct keys
    expect(results.every((r) => r === "ok")).toBe(true);
    expect(await env.redis.get(`${env.redisPrefix}rl:ip:10.1.7.1`)).toBe("1");
    sent.restore();
  });

  it("sends the checks of one turn that share a key as one counter, and answers them in order", async () => {
    const limits = new RateLimits(env.redis, env.config({ RATE_LIMIT_IP_PER_MIN: "25" }));
    const redis = env.redis as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>;
    const original = redis.rateLimitConsume!;
    const calls: unknown[][] = [];
    redis.rateLimitConsume = (...a: unknown[]) => {
      calls.push(a);
      return original.apply(env.redis, a);
    };
    try {
      // 20 checks of one address now, then 10 more in a later turn: 25 fit in the minute.
      const first = await Promise.all(
        Array.from({ length: 20 }, () => outcome(limits.consume("ip", "198.51.100.9"))),
      );
      const second = await Promise.all(
        Array.from({ length: 10 }, () => outcome(limits.consume("ip", "198.51.100.9"))),
      );
      expect(calls).toHaveLength(2);
      // One key per call (numKeys 1), spent by 20 and then by 10.
      expect(calls[0]).toEqual([1, `${env.redisPrefix}rl:ip:198.51.100.9`, 60_000, 25, 20]);
      expect(calls[1]).toEqual([1, `${env.redisPrefix}rl:ip:198.51.100.9`, 60_000, 25, 10]);
      expect(first.every((r) => r === "ok")).toBe(true);
      // The first five of the later turn fit, the rest are refused with the window's wait.
      expect(second.slice(0, 5)).toEqual(["ok", "ok", "ok", "ok", "ok"]);
      for (const r of second.slice(5))
        expect(r).toMatchObject({ code: "rate_limited", details: { limit: "ip" } });
      expect(await env.redis.get(`${env.redisPrefix}rl:ip:198.51.100.9`)).toBe("30");
    } finally {
      redis.rateLimitConsume = original;
    }
  });

  it("holds a per-IP budget across limiter instances (another process) because it is in Redis", async () => {
    const config = env.config({ RATE_LIMIT_IP_PER_MIN: "3", RATE_LIMIT_USER_PER_MIN: "3" });
    const a = new RateLimits(env.redis, config);
    const b = new RateLimits(env.redis, config);
    expect(await outcome(a.consume("ip", "192.0.2.50"))).toBe("ok");
    expect(await outcome(b.consume("ip", "192.0.2.50"))).toBe("ok");
    expect(await outcome(a.consume("ip", "192.0.2.50"))).toBe("ok");
    expect(await outcome(b.consume("ip", "192.0.2.50"))).toMatchObject({ code: "rate_limited" });
  });

  it("holds a user's budget across processes in Redis when shards are spread over them", async () => {
    const config = env.config({
      RATE_LIMIT_USER_PER_MIN: "3",
      LEDGER_SPREAD: "true",
      INTERNAL_TOKEN: "rate-limit-test-internal-token",
    });
    const a = new RateLimits(env.redis, config);
    const b = new RateLimits(env.redis, config);
    expect(await outcome(a.consume("user", "u-spread"))).toBe("ok");
    expect(await outcome(b.consume("user", "u-spread"))).toBe("ok");
    expect(await outcome(a.consume("user", "u-spread"))).toBe("ok");
    expect(await outcome(b.consume("user", "u-spread"))).toMatchObject({
      code: "rate_limited",
      details: { limit: "user" },
    });
    // Known to be past its budget: refused at once, without asking Redis again.
    expect(b.knownLimited("user", "u-spread")).toMatchObject({ code: "rate_limited" });
    expect(await env.redis.get(`${env.redisPrefix}rl:user:u-spread`)).toBe("4");
  });

  it("counts a user's budget in the process, synchronously, without Redis", async () => {
    // A Redis that cannot answer: the user budget must not need it.
    const dead = await deadRedis();
    const limits = new RateLimits(dead, env.config({ RATE_LIMIT_USER_PER_MIN: "2" }));
    expect(await outcome(limits.consume("user", "u-9"))).toBe("ok");
    expect(await outcome(limits.consume("user", "u-9"))).toBe("ok");
    expect(await outcome(limits.consume("user", "u-9"))).toMatchObject({
      code: "rate_limited",
      details: { limit: "user" },
    });
    expect(await outcome(limits.consume("user", "u-10"))).toBe("ok");
    dead.disconnect();
  });

  it("checks nothing when both per-minute limits are 0, the auth limit included", async () => {
    const limits = new RateLimits(
      env.redis,
      env.config({ RATE_LIMIT_IP_PER_MIN: "0", RATE_LIMIT_USER_PER_MIN: "0", RATE_LIMIT_AUTH_PER_MIN: "1" }),
    );
    for (let i = 0; i < 5; i++) expect(await outcome(limits.consume("auth", "198.51.100.1"))).toBe("ok");
    expect(await env.redis.exists(`${env.redisPrefix}rl:auth:198.51.100.1`)).toBe(0);
  });

  it("answers unavailable when Redis cannot be asked", async () => {
    const dead = await deadRedis();
    const limits = new RateLimits(dead, env.config({ RATE_LIMIT_IP_PER_MIN: "10" }));
    expect(await outcome(limits.consume("ip", "192.0.2.1"))).toMatchObject({ code: "unavailable" });
    dead.disconnect();
  });
});

describe("UserWindows", () => {
  it("opens a one-minute window per user and refuses past the budget until it ends", () => {
    const w = new UserWindows();
    const t0 = 1_000_000;
    expect(w.take("a", 2, t0)).toBe(0);
    expect(w.take("a", 2, t0 + 10)).toBe(0);
    expect(w.take("a", 2, t0 + 20_000)).toBe(40_000);
    expect(w.take("b", 2, t0 + 20_000)).toBe(0);
    // The window ends a minute after it opened: a new one starts with a fresh budget.
    expect(w.take("a", 2, t0 + 60_000)).toBe(0);
    expect(w.take("a", 2, t0 + 60_001)).toBe(0);
    expect(w.take("a", 2, t0 + 60_002)).toBe(59_998);
  });

  it("stays bounded: ended windows go first, then the oldest, which only lets a user through sooner", () => {
    const w = new UserWindows(3);
    const t0 = 5_000_000;
    w.take("a", 1, t0);
    w.take("b", 1, t0 + 1);
    w.take("c", 1, t0 + 2);
    expect(w.size).toBe(3);
    // A fourth user at the cap: the oldest window ("a") is dropped.
    expect(w.take("d", 1, t0 + 3)).toBe(0);
    expect(w.size).toBe(3);
    expect(w.take("b", 1, t0 + 4)).toBeGreaterThan(0); // still counted
    expect(w.take("a", 1, t0 + 5)).toBe(0); // forgotten: a fresh window
    // A minute later every window has ended: opening one drops the ended ones.
    expect(w.take("e", 1, t0 + 70_000)).toBe(0);
    expect(w.size).toBe(1);
  });
});
