// The feed streams' append (lua/feed-append.lua on a single Redis): a batch for several creators
// in one call keeps each creator's order, a replayed entry counts as written, and one entry Redis
// refuses fails only itself. Against the real Redis.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type FeedAppendItem, FeedStore, type FeedTip } from "../../src/live/feed-store.ts";
import { redisKeys } from "../../src/redis/keys.ts";
import { createTestEnv, type TestEnv } from "../helpers/env.ts";

let env: TestEnv;

beforeAll(async () => {
  env = await createTestEnv("feedstore");
});
afterAll(async () => {
  await env.cleanup();
});

const tipOf = (n: number): FeedTip => ({
  id: `00000000-0000-4000-8000-${String(n).padStart(12, "0")}`,
  kind: "tip",
  from_username: `viewer${n}`,
  from_display_name: `Viewer "${n}"`,
  amount: "1.00",
  net_amount: "0.97",
  message: n % 2 === 0 ? `hi\t${n}` : null,
  created_at: "2026-12-07T10:00:00.000Z",
});
const item = (creatorId: string, seq: number): FeedAppendItem => ({
  creatorId,
  seq,
  tipJson: JSON.stringify(tipOf(seq)),
});

describe("feed store append", () => {
  it("writes a batch over several creators in one call, each creator's entries in order", async () => {
    const store = new FeedStore(env.redis, env.redisPrefix, 1000);
    const items = [item("a", 1), item("b", 1), item("a", 2), item("b", 2), item("a", 3)];
    expect(await store.append(items)).toEqual([true, true, true, true, true]);
    expect((await store.after("a", 0, 10)).map((e) => e.seq)).toEqual([1, 2, 3]);
    expect((await store.after("b", 0, 10)).map((e) => e.tip)).toEqual([tipOf(1), tipOf(2)]);
    expect(await store.top("a")).toBe(3);
    expect(await store.oldest("b")).toBe(1);
  });

  it("answers true for an entry already written (a replay) and writes the new ones after it", async () => {
    const store = new FeedStore(env.redis, env.redisPrefix, 1000);
    await store.append([item("c", 1), item("c", 2)]);
    expect(await store.append([item("c", 2), item("c", 3)])).toEqual([true, true]);
    expect((await store.after("c", 0, 10)).map((e) => e.seq)).toEqual([1, 2, 3]);
  });

  it("fails only the entry Redis refuses, with Redis's error", async () => {
    const store = new FeedStore(env.redis, env.redisPrefix, 1000);
    await env.redis.set(redisKeys(env.redisPrefix).tipFeed("broken"), "not a stream");
    const out = await store.append([item("d", 1), item("broken", 1), item("d", 2)]);
    expect(out[0]).toBe(true);
    expect(out[1]).toBeInstanceOf(Error);
    expect(String(out[1])).toMatch(/WRONGTYPE/);
    expect(out[2]).toBe(true);
    expect((await store.after("d", 0, 10)).map((e) => e.seq)).toEqual([1, 2]);
  });

  it("keeps about the retention's newest entries", async () => {
    const store = new FeedStore(env.redis, env.redisPrefix, 10);
    const items = Array.from({ length: 500 }, (_, i) => item("e", i + 1));
    expect((await store.append(items)).every((r) => r === true)).toBe(true);
    const kept = await env.redis.xlen(redisKeys(env.redisPrefix).tipFeed("e"));
    // MAXLEN ~ trims whole listpack nodes: at least the retention, far fewer than written.
    expect(kept).toBeGreaterThanOrEqual(10);
    expect(kept).toBeLessThan(500);
    expect(await store.top("e")).toBe(500);
  });
});
