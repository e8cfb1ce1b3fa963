// The tip feed completes itself from Postgres: credits the feed never saw (decided before it was
// attached, as at a restart where recovery replays the WAL before the server listens) and a lost
// stream are filled in, in order, before the next entry, once the persister has written them.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FeedStore } from "../../src/live/feed-store.ts";
import { TipFeed } from "../../src/live/tip-feed.ts";
import { wordFilter } from "../../src/live/word-filter.ts";
import type { Core } from "../../src/main/core.ts";
import { redisKeys } from "../../src/redis/keys.ts";
import { createTestEnv, type TestEnv, waitFor } from "../helpers/env.ts";
import { createUsers, deposit, silentLogger, startTestCore, tip } from "../helpers/ledger.ts";

let env: TestEnv;
let core: Core;

beforeAll(async () => {
  env = await createTestEnv("feedholes");
  core = await startTestCore(env, { FRAUD_MAX_TX_PER_HOUR: "100000" });
});
afterAll(async () => {
  await core.stop();
  await env.cleanup();
});

describe("tip feed holes", () => {
  it("fills credits it never saw, and a lost stream, from Postgres before the next entry", async () => {
    const [viewer] = await createUsers(env.pool, 1);
    const [creator] = await createUsers(env.pool, 1, "cr");
    await deposit(core, viewer!, 100_000);
    const before = [];
    for (let i = 0; i < 20; i++) before.push((await tip(core, viewer!, creator!, 100)).transaction.id);
    await waitFor(() => core.ledger.probe().quiescent(), 10_000, "the 20 credits to be durable");

    const store = new FeedStore(env.redis, env.redisPrefix, 10);
    const feed = new TipFeed({
      store,
      pool: env.pool,
      logger: silentLogger,
      filter: wordFilter([]),
      retention: 10,
    });
    const delivered: number[] = [];
    feed.deliver = (_c, seq) => delivered.push(seq);
    let unobserve = core.ledger.observeDurable(feed.durable);
    try {
      const after = [];
      for (let i = 0; i < 5; i++) after.push((await tip(core, viewer!, creator!, 300)).transaction.id);
      await waitFor(() => delivered.includes(25), 20_000, "entry 25");
      // Before entry 21, the hole is filled as far back as the retention (10): 11..20; then 21..25.
      expect(delivered).toEqual(Array.from({ length: 15 }, (_, i) => 11 + i));
      const kept = await store.after(creator!, 0, 100);
      expect(kept.map((e) => e.seq)).toEqual(delivered);
      const ids = [...before, ...after];
      expect(kept.map((e) => e.tip.id)).toEqual(ids.slice(10));
      expect(kept.map((e) => e.tip.amount)).toEqual([...Array(10).fill("1.00"), ...Array(5).fill("3.00")]);

      // The stream is lost (a Redis without AOF restarted): the next entry rebuilds what is kept.
      await env.redis.del(redisKeys(env.redisPrefix).tipFeed(creator!));
      delivered.length = 0;
      const fresh = new TipFeed({
        store,
        pool: env.pool,
        logger: silentLogger,
        filter: wordFilter([]),
        retention: 10,
      });
      fresh.deliver = (_c, seq) => delivered.push(seq);
      unobserve();
      unobserve = core.ledger.observeDurable(fresh.durable);
      await tip(core, viewer!, creator!, 100);
      await waitFor(() => delivered.includes(26), 20_000, "entry 26");
      expect(delivered).toEqual(Array.from({ length: 11 }, (_, i) => 16 + i));
      expect((await store.after(creator!, 0, 100)).map((e) => e.seq)).toEqual(delivered);
    } finally {
      unobserve();
    }
  });
});
