// RATE_LIMIT_REDIS_URL: the rate limiters' counters in a Redis of their own (one without AOF keeps
// an fsync off every request's path), the WAL's Redis untouched by them; /readyz reports both,
// and start-up names the variable when that Redis is not there.
import { spawnSync } from "node:child_process";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Api, startApi } from "../helpers/api.ts";
import { createTestEnv, REDIS_URL, type TestEnv } from "../helpers/env.ts";

const limitsUrl = (() => {
  const u = new URL(REDIS_URL);
  u.pathname = "/1";
  return u.toString();
})();

let env: TestEnv;
let api: Api;
let limitsRedis: Redis;

beforeAll(async () => {
  env = await createTestEnv("limits_redis");
  limitsRedis = new Redis(limitsUrl);
  api = await startApi(env, {
    RATE_LIMIT_IP_PER_MIN: "1000",
    RATE_LIMIT_USER_PER_MIN: "3",
    RATE_LIMIT_REDIS_URL: limitsUrl,
  });
});
afterAll(async () => {
  await api?.http.close();
  await api?.core.stop();
  const keys = await limitsRedis.keys(`${env.redisPrefix}*`);
  if (keys.length > 0) await limitsRedis.del(...keys);
  limitsRedis.disconnect();
  await env?.cleanup();
});

describe("RATE_LIMIT_REDIS_URL", () => {
  it("counts in its own Redis, not the WAL's, and still refuses past the budget", async () => {
    expect(api.core.limitsRedis).not.toBe(api.core.redis);
    const viewer = await api.register();
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) {
      const r = await api.call("GET", `/api/payments/balance/${viewer.id}`, { token: viewer.token });
      statuses.push(r.status);
    }
    // register spent nothing of the user budget (no user yet): three reads pass, the fourth not.
    expect(statuses).toEqual([200, 200, 200, 429]);
    const inLimits = await limitsRedis.keys(`${env.redisPrefix}rl:*`);
    // The user's budget is counted in the server's memory (UserWindows), the IP's in Redis.
    expect(inLimits).not.toContain(`${env.redisPrefix}rl:user:${viewer.id}`);
    expect(inLimits.some((k) => k.startsWith(`${env.redisPrefix}rl:ip:`))).toBe(true);
    expect(await env.redis.keys(`${env.redisPrefix}rl:*`)).toEqual([]);
    // The WAL still goes to REDIS_URL.
    await api.fund(viewer.id, 500);
    const walKeys = await env.redis.keys(`${env.redisPrefix}wal:*`);
    expect(walKeys.length).toBeGreaterThan(0);
    expect(await limitsRedis.keys(`${env.redisPrefix}wal:*`)).toEqual([]);
  });

  it("reports the rate limiters' Redis on /readyz", async () => {
    const r = await fetch(`${api.base}/readyz`);
    expect(r.status).toBe(200);
    expect(await r.json()).toMatchObject({ status: "ready", redis: "up", rate_limit_redis: "up" });
  });

  it("exits with one line naming RATE_LIMIT_REDIS_URL when that Redis cannot be reached", () => {
    const r = spawnSync(process.execPath, ["--import", "tsx", "src/main/main.ts"], {
      env: {
        ...process.env,
        LOG_LEVEL: "silent",
        DATABASE_URL: env.databaseUrl,
        REDIS_URL,
        REDIS_PREFIX: env.redisPrefix,
        RATE_LIMIT_REDIS_URL: "redis://127.0.0.1:1",
        PORT: "0",
      },
      encoding: "utf8",
      timeout: 30_000,
    });
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toMatch(/cannot reach Redis at redis:\/\/127\.0\.0\.1:1.*set RATE_LIMIT_REDIS_URL/);
  });
});
