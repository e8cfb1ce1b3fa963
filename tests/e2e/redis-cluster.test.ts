// The whole API on a real three-master Redis Cluster (REDIS_CLUSTER_NODES): the WAL, shard leases,
// the persister's consumer groups, the creators' feed streams, the rate limiters, the payout
// outcome stream and BullMQ's queues all live on it, each routed by its key's hash tag. A tip over
// HTTP and one over WebSocket, the feed, an idempotent replay, a withdrawal through the payout
// worker, many clients' rate limits in one turn, and at the end Postgres equals memory and the
// books sum to zero.
import { randomUUID } from "node:crypto";
import { spawnSync } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RateLimits } from "../../src/http/rate-limit.ts";
import { redisKeys } from "../../src/redis/keys.ts";
import { reconcileLedger } from "../../src/persist/reconcile.ts";
import type { PayoutWorker } from "../../src/workers/payout-worker.ts";
import { type Api, startApi } from "../helpers/api.ts";
import { createTestEnv, type TestEnv, waitFor } from "../helpers/env.ts";
import { settle } from "../helpers/ledger.ts";
import { connectLive, tipsToFollowedCreator } from "../helpers/live.ts";
import { creatorWithMethod, withdraw20 } from "../helpers/payout-creator.ts";
import { testPayoutWorker } from "../helpers/payout-worker.ts";
import { RedisCluster } from "../helpers/redis-cluster.ts";

const hasRedisServer = spawnSync("redis-server", ["--version"]).status === 0;

describe.runIf(hasRedisServer)("the API on a Redis Cluster", () => {
  let cluster: RedisCluster;
  let env: TestEnv;
  let api: Api;
  let worker: PayoutWorker;

  beforeAll(async () => {
    cluster = await RedisCluster.start(3);
    env = await createTestEnv("cluster_api");
    api = await startApi(env, {
      REDIS_CLUSTER_NODES: cluster.nodes,
      PAYOUT_OUTCOME_BLOCK_MS: "50",
      PAYOUT_STANDIN_DELAY_MS: "50",
      RATE_LIMIT_AUTH_PER_MIN: "1000",
    });
    // Outcomes go to the ledger's Redis: the cluster.
    worker = testPayoutWorker(api, env, { outcomes: api.core.redis });
  }, 60_000);
  afterAll(async () => {
    await worker?.close();
    await api?.close();
    await env?.cleanup();
    await cluster?.destroy();
  });

  it("takes tips over HTTP and WebSocket, feeds them in order, and replays a key's answer", async () => {
    const { viewer, creator, sub } = await tipsToFollowedCreator(api);

    const key = randomUUID();
    const body = { from_user_id: viewer.id, to_creator_username: creator.username, amount: 3 };
    const first = await api.call("POST", "/api/payments/tip", {
      token: viewer.token,
      body,
      headers: { "idempotency-key": key },
    });
    expect(first.status).toBe(201);
    const again = await api.call("POST", "/api/payments/tip", {
      token: viewer.token,
      body,
      headers: { "idempotency-key": key },
    });
    expect(again.status).toBe(201);
    expect(again.body.transaction.id).toBe(first.body.transaction.id);

    const ws = await connectLive(api.base, `access_token=${viewer.token}`);
    ws.send({ op: "tip", id: "w1", to_creator_username: creator.username, amount: 1 });
    const ack = await ws.next((f) => f.op === "ack" && f.id === "w1");
    expect(ack.transaction.amount).toBe("1.00");

    const t1 = await sub.next((f) => f.op === "tip");
    const t2 = await sub.next((f) => f.op === "tip");
    expect([t1.seq, t2.seq]).toEqual([1, 2]);
    expect([t1.tip.id, t2.tip.id]).toEqual([first.body.transaction.id, ack.transaction.id]);
    // A subscriber that comes back resumes from the feed stream on the cluster.
    const back = await connectLive(api.base, `access_token=${creator.token}`);
    back.send({ op: "subscribe", channel: "tips", since: 1 });
    expect((await back.next((f) => f.op === "tip")).seq).toBe(2);
    for (const c of [sub, ws, back]) await c.close();

    const balance = await api.call("GET", `/api/payments/balance/${creator.id}`, { token: creator.token });
    expect(balance.body.balance).toBe("3.88");
  });

  it("pays a withdrawal through BullMQ and the outcome stream on the cluster", async () => {
    const creator = await creatorWithMethod(api, "wise", "000123456789");
    const payoutId = await withdraw20(api, creator);
    await waitFor(
      async () =>
        (await api.call("GET", `/api/payments/payouts/${payoutId}`, { token: creator.token })).body.payout
          .status === "paid",
      20_000,
      "the payout to be paid",
    );
  });

  it("counts many clients' rate limits in one turn, each counter in its own slot", async () => {
    // Each client's counter hashes to a slot of its own: checks from one event-loop turn cannot
    // share one script call there (they did, and every one answered 503 once two IPs met).
    const limits = new RateLimits(api.core.limitsRedis, { ...api.core.config, RATE_LIMIT_IP_PER_MIN: 3 });
    const ips = Array.from({ length: 20 }, (_, i) => `10.0.${i}.${randomUUID().slice(0, 2)}`);
    for (let round = 0; round < 3; round++) await Promise.all(ips.map((ip) => limits.consume("ip", ip)));
    const fourth = await Promise.allSettled(ips.map((ip) => limits.consume("ip", ip)));
    expect(fourth.map((r) => (r.status === "rejected" ? r.reason.code : "ok"))).toEqual(
      ips.map(() => "rate_limited"),
    );
  });

  it("keeps the WAL on every master, persists it all, and balances to the cent", async () => {
    await settle(api.core);
    const keys = redisKeys(env.redisPrefix);
    const perNode = await cluster.keysPerNode();
    expect(
      perNode.every((n) => n > 0),
      `keys per node: ${perNode.join(", ")}`,
    ).toBe(true);
    // Every shard's stream was persisted and trimmed down to what the trim floor keeps.
    expect(api.core.persister.health()).toMatchObject({ unpersistedEntries: 0 });
    expect(await api.core.redis.exists(keys.shardLease(0))).toBe(1);
    const report = await reconcileLedger(env.pool, api.core.ledger.snapshot());
    expect(report.memoryMismatches).toEqual([]);
    expect(report).toMatchObject({ ok: true, totalBalanceCents: 0 });
  });
});
