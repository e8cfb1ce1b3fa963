// A payout outcome read by another process that then died (read under the shared consumer name,
// never acknowledged) is applied by a running consumer when it reads its pending list again,
// without a restart: with shards spread over processes every process reads the outcome stream.
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Core } from "../../src/main/core.ts";
import { PayoutOutcomeConsumer } from "../../src/payouts/outcomes.ts";
import { duplicateRedis } from "../../src/redis/connect.ts";
import { PAYOUT_OUTCOME_GROUP, redisKeys } from "../../src/redis/keys.ts";
import { createTestEnv, type TestEnv, waitFor } from "../helpers/env.ts";
import { createUsers, deposit, silentLogger, startTestCore, tip } from "../helpers/ledger.ts";

let env: TestEnv;
let core: Core;
let consumer: PayoutOutcomeConsumer | null = null;

beforeAll(async () => {
  env = await createTestEnv("outcome_reread");
  core = await startTestCore(env);
});
afterAll(async () => {
  await consumer?.stop();
  await core.stop();
  await env.cleanup();
});

describe("payout outcomes left pending by another reader", () => {
  it("are applied when the pending list is read again", async () => {
    const [viewer, creator] = await createUsers(env.pool, 2);
    await deposit(core, viewer!, 10_000);
    for (let i = 0; i < 5; i++) await tip(core, viewer!, creator!, 300);
    const payoutId = randomUUID();
    await core.ledger.submit({
      kind: "reserve_payout",
      key: randomUUID(),
      accountId: creator!,
      payoutId,
      amountCents: 1000,
    });

    consumer = new PayoutOutcomeConsumer({
      redis: core.redis,
      prefix: env.redisPrefix,
      ledger: core.ledger,
      logger: silentLogger,
      readCount: 100,
      blockMs: 50,
      pendingRereadMs: 300,
    });
    await consumer.start();
    // Another process reads the outcome (same group, same consumer name) and dies before
    // acknowledging it: appended and read in one transaction, so the running consumer, blocked on
    // new entries, never gets it: only the pending list has it now.
    const other = duplicateRedis(core.redis);
    const key = redisKeys(env.redisPrefix).payoutOutcomes;
    const outcome = { payoutId, userId: creator!, round: 1, state: "processing" };
    const replies = await other
      .multi()
      .xadd(key, "*", "o", JSON.stringify(outcome))
      .xreadgroup("GROUP", PAYOUT_OUTCOME_GROUP, "ledger-owner", "COUNT", 10, "STREAMS", key, ">")
      .exec();
    other.disconnect();
    const stolen = replies![1]![1] as Array<[string, Array<[string, unknown[]]>]>;
    expect(stolen[0]![1]).toHaveLength(1);
    await waitFor(() => consumer!.applied === 1, 10_000, "the outcome to be applied");
    expect((await core.ledger.getPayout(creator!, payoutId))?.status).toBe("processing");
    await waitFor(async () => (await core.redis.xlen(key)) === 0, 5_000, "the outcome to be acknowledged");
  });
});
