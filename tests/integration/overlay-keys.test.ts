// Overlay keys on a real Postgres: the sockets a stream's start opens with one key at once share
// one lookup, and a key replaced by a new one stops working for every lookup that starts after.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { migrate } from "../../src/db/migrate.ts";
import { OverlayKeys } from "../../src/live/overlay-keys.ts";
import { createTestEnv, type TestEnv } from "../helpers/env.ts";
import { createUsers } from "../helpers/ledger.ts";

let env: TestEnv;

beforeAll(async () => {
  env = await createTestEnv("overlay_keys");
  await migrate(env.pool);
});
afterAll(async () => {
  await env.cleanup();
});

/** Counts the queries that reach the pool (the pool itself is real). */
function countQueries(pool: TestEnv["pool"]): { n: number } {
  const count = { n: 0 };
  const query = pool.query.bind(pool) as (...args: unknown[]) => unknown;
  (pool as unknown as { query: (...args: unknown[]) => unknown }).query = (...args: unknown[]) => {
    count.n++;
    return query(...args);
  };
  return count;
}

describe("OverlayKeys", () => {
  it("answers many concurrent lookups of one key with one query", async () => {
    const [creator] = await createUsers(env.pool, 1, "ovl");
    await env.pool.query("UPDATE users SET role = 'creator' WHERE id = $1", [creator]);
    const keys = new OverlayKeys(env.pool);
    const key = await keys.create(creator!);
    const count = countQueries(env.pool);
    const answers = await Promise.all(Array.from({ length: 500 }, () => keys.resolve(key)));
    expect(count.n).toBe(1);
    expect(new Set(answers.map((a) => a?.userId))).toEqual(new Set([creator]));
    // Once answered, the next lookup asks again (nothing is cached past the query).
    await keys.resolve(key);
    expect(count.n).toBe(2);
    // An unknown key and a malformed one: null, the malformed one without a query.
    expect(await keys.resolve("ovl_nope")).toBeNull();
    expect(await keys.resolve("x".repeat(201))).toBeNull();
    expect(count.n).toBe(3);
  });

  it("does not let a lookup started after a replacement join one begun before it", async () => {
    const [creator] = await createUsers(env.pool, 1, "ovl");
    await env.pool.query("UPDATE users SET role = 'creator' WHERE id = $1", [creator]);
    const keys = new OverlayKeys(env.pool);
    const old = await keys.create(creator!);
    const before = keys.resolve(old);
    await keys.create(creator!);
    const after = keys.resolve(old);
    expect(after).not.toBe(before);
    expect(await after).toBeNull();
    await before;
  });
});
