// FEED_REDIS_URL: the creators' live feed streams in a Redis of their own (one without AOF keeps
// an fsync off every tip's path), the WAL's Redis untouched by them. That Redis is not needed for
// money: while it is down tips are still acknowledged and /readyz stays ready (reporting it down),
// and once it is back the frames held meanwhile reach the subscriber, in order, none lost.
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { redisKeys } from "../../src/redis/keys.ts";
import { type Api, startApi } from "../helpers/api.ts";
import { createTestEnv, type TestEnv, waitFor } from "../helpers/env.ts";
import { tipsToFollowedCreator } from "../helpers/live.ts";
import { RedisServer } from "../helpers/redis-server.ts";

let env: TestEnv;
let api: Api;
let feedServer: RedisServer;
let feedRedis: Redis;

beforeAll(async () => {
  env = await createTestEnv("feed_redis");
  feedServer = await RedisServer.start(false);
  feedRedis = new Redis(feedServer.url, { maxRetriesPerRequest: 1 });
  feedRedis.on("error", () => {}); // down on purpose in the test
  api = await startApi(env, { FEED_REDIS_URL: feedServer.url });
}, 60_000);
afterAll(async () => {
  await api?.close();
  feedRedis?.disconnect();
  await feedServer?.destroy();
  await env?.cleanup();
});

const readyz = async () => (await fetch(`${api.base}/readyz`)).json();

describe("FEED_REDIS_URL", () => {
  it("keeps the feeds in their own Redis, and tips go on while it is down", async () => {
    const { creator, sub, tip } = await tipsToFollowedCreator(api);

    const first = await tip();
    expect((await sub.next((f) => f.op === "tip")).tip.id).toBe(first);
    const feedKey = redisKeys(env.redisPrefix).tipFeed(creator.id);
    expect(await feedRedis.xlen(feedKey)).toBe(1);
    expect(await env.redis.exists(feedKey)).toBe(0); // not in the WAL's Redis
    expect(await readyz()).toMatchObject({ status: "ready", redis: "up", feed_redis: "up" });

    // Down: tips are still acknowledged (the WAL and Postgres do not need it), /readyz says so.
    await feedServer.kill();
    const during = [await tip(), await tip()];
    const r = await readyz();
    expect(r).toMatchObject({ status: "ready", feed_redis: "down" });

    // Back (empty: it kept nothing): the held entries are written and delivered, in order.
    await feedServer.start();
    const frames = [
      await sub.next((f) => f.op === "tip", 15_000),
      await sub.next((f) => f.op === "tip", 15_000),
    ];
    expect(frames.map((f) => f.seq)).toEqual([2, 3]);
    expect(frames.map((f) => f.tip.id)).toEqual(during);
    await waitFor(async () => (await readyz()).feed_redis === "up", 5000, "the feed Redis reported up");
    const after = await tip();
    expect(await sub.next((f) => f.op === "tip")).toMatchObject({ seq: 4, tip: { id: after } });
    await sub.close();
  }, 60_000);
});
