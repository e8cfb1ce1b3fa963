// Per-shard leases (src/wal/lease.ts) against the real Redis: two standbys racing for the shards of
// an owner that went away end with one owning every shard and the other waiting, never with the
// shards split between them (each would wait for the other's forever).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { redisKeys } from "../../src/redis/keys.ts";
import { ShardLeases } from "../../src/wal/lease.ts";
import { createTestEnv, type TestEnv, waitFor } from "../helpers/env.ts";

const SHARDS = Array.from({ length: 64 }, (_, s) => s);
let env: TestEnv;

beforeAll(async () => {
  env = await createTestEnv("shard_leases");
});
afterAll(async () => {
  await env.cleanup();
});

describe("shard leases", () => {
  it("gives all of a departed owner's shards to one of two racing standbys", async () => {
    const keys = redisKeys(env.redisPrefix);
    // An owner on another machine (nothing here can prove it dead): its leases run out one after
    // the other over 300-940 ms, as renewals that stopped at slightly different moments would.
    for (const s of SHARDS) {
      await env.redis.set(keys.shardLease(s), "1:elsewhere@other-boot/1/1/1", "PX", 300 + 10 * s);
      await env.redis.set(keys.shardFence(s), "1");
    }
    // Each on its own connection, polling out of step with the other.
    const conns = [env.redis.duplicate(), env.redis.duplicate()];
    const standbys = conns.map((c) => new ShardLeases(c, env.redisPrefix, SHARDS, 1000, () => {}));
    const first = standbys[0]!.acquire({ standby: true }).then(() => 0);
    await new Promise((r) => setTimeout(r, 90));
    const done = [first, standbys[1]!.acquire({ standby: true }).then(() => 1)];
    const split = new Promise<number>((_, reject) => {
      setTimeout(() => {
        const held = standbys.map((l) => l.owned().length);
        reject(new Error(`no standby took every shard within 5 s (shards held: ${held.join(" and ")})`));
      }, 5000).unref();
    });
    const winner = await Promise.race([...done, split]);
    const other = standbys[1 - winner]!;
    expect(standbys[winner]!.owned().map((o) => o.shard)).toEqual(SHARDS);
    expect(standbys[winner]!.owned().every((o) => o.token === 2)).toBe(true);
    // The other one holds nothing and is still waiting, well past the leases' renewal period.
    await new Promise((r) => setTimeout(r, 1200));
    expect(other.owned()).toEqual([]);
    // When the winner lets go, the other takes them all.
    await standbys[winner]!.release();
    await waitFor(
      async () => (await Promise.race([done[1 - winner]!, Promise.resolve(-1)])) !== -1,
      5000,
      "the other standby",
    );
    expect(other.owned().map((o) => o.shard)).toEqual(SHARDS);
    await other.release();
    for (const c of conns) c.disconnect();
  });
});
