// Shards spread over processes (LEDGER_SPREAD, issue 17): two, then three API servers on one
// database and Redis divide the shards between them. A command for a shard another process owns
// is forwarded to it and answered as the owner answers (idempotency intact, whichever process a
// retry reaches); a tip's credit for a recipient owned elsewhere is sent to that owner and lands
// exactly once; a third process joining mid-burst takes its share without two owners at any
// moment; the books balance to the cent, every tip once in Postgres. On one Redis, and on a real
// three-master Redis Cluster (membership, leases, WAL streams, the feed's channel on it).
import { spawnSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { TxResult } from "../../src/ledger/types.ts";
import { reconcileLedger } from "../../src/persist/reconcile.ts";
import { type Api, startApi } from "../helpers/api.ts";
import { createTestEnv, type TestEnv, waitFor } from "../helpers/env.ts";
import { createUsers, settle } from "../helpers/ledger.ts";
import { RedisCluster } from "../helpers/redis-cluster.ts";
import { waitForBalance } from "../helpers/spread.ts";

let env: TestEnv;
let apis: Api[] = [];
let cluster: RedisCluster | null = null;
const hasRedisServer = spawnSync("redis-server", ["--version"]).status === 0;

const SHARDS = 8;
const spreadVars = {
  SHARDS: String(SHARDS),
  LEDGER_SPREAD: "true",
  INTERNAL_TOKEN: "spread-test-internal-token",
  // Starting an API server in this process blocks its event loop for ~0.5 s: a lease of 600 ms could lapse.
  LEDGER_LEASE_MS: "2000",
  FRAUD_MAX_TX_PER_HOUR: "1000000",
  FRAUD_MAX_VOLUME_PER_HOUR_USD: "100000000",
};

async function startProcess(): Promise<Api> {
  const api = await startApi(
    env,
    cluster ? { ...spreadVars, REDIS_CLUSTER_NODES: cluster.nodes } : spreadVars,
  );
  apis.push(api);
  return api;
}

const owned = (a: Api) => a.core.ledger.ownedShards();

describe.each([
  ["one Redis", false],
  ["a Redis Cluster", true],
])("shards spread over processes, on %s", (_, onCluster) => {
  beforeAll(async () => {
    if (onCluster) cluster = await RedisCluster.start(3);
    env = await createTestEnv(onCluster ? "spread_cluster" : "spread");
  }, 60_000);
  afterAll(async () => {
    for (const a of apis.reverse()) await a.close().catch(() => {});
    apis = [];
    await env.cleanup();
    await cluster?.destroy();
    cluster = null;
  });

  it.runIf(hasRedisServer || !onCluster)(
    "forwards commands and credits between two processes, and a third joins mid-burst",
    async () => {
      const a = await startProcess();
      expect(owned(a)).toHaveLength(SHARDS);
      const viewers = await createUsers(env.pool, 24);
      const creators = await createUsers(env.pool, 6, "cr");
      await env.pool.query("UPDATE users SET role = 'creator' WHERE id = ANY($1::uuid[])", [creators]);
      for (const v of viewers) {
        await a.core.ledger.submit({
          kind: "deposit",
          key: randomUUID(),
          accountId: v,
          amountCents: 100_000,
        });
      }

      const b = await startProcess();
      await waitForBalance([a, b]);
      // A shard given away is never trimmed by its old owner: its credit holds went with it.
      for (const s of owned(b)) expect(a.core.ledger.trimFloor(s)).toBe("0-1");
      const ready = await (await fetch(`${b.base}/readyz`)).json();
      expect(ready.ledger.processes).toBe(2);
      expect(ready.ledger.shards_owned).toEqual(owned(b));

      // Every viewer tips every creator once, through alternating processes: most commands and
      // most credits cross from one process to the other.
      const sent: Array<{ key: string; from: string; to: string; via: number }> = [];
      for (const v of viewers)
        for (const c of creators) sent.push({ key: randomUUID(), from: v, to: c, via: sent.length % 2 });
      const results = new Map<string, TxResult>();
      const tipVia = async (procs: Api[], t: (typeof sent)[number], attempt = 0): Promise<void> => {
        const p = procs[(t.via + attempt) % procs.length]!;
        try {
          const r = (await p.core.ledger.submit({
            kind: "tip",
            key: t.key,
            fromAccountId: t.from,
            toAccountId: t.to,
            amountCents: 100,
          })) as TxResult;
          results.set(t.key, r);
        } catch (err) {
          // A shard changing hands answers 503: the client retries with the same key, anywhere.
          if ((err as { code?: string }).code !== "unavailable" || attempt > 50) throw err;
          await new Promise((r) => setTimeout(r, 20));
          await tipVia(procs, t, attempt + 1);
        }
      };
      const firstHalf = sent.slice(0, sent.length / 2);
      await Promise.all(firstHalf.map((t) => tipVia([a, b], t)));
      expect(results.size).toBe(firstHalf.length);

      // A retried key answers the original transaction, whichever process it reaches.
      const again = firstHalf[3]!;
      const replay = (await [a, b][1 - again.via]!.core.ledger.submit({
        kind: "tip",
        key: again.key,
        fromAccountId: again.from,
        toAccountId: again.to,
        amountCents: 100,
      })) as TxResult;
      expect(replay.transaction.id).toBe(results.get(again.key)!.transaction.id);
      expect(replay.replayed).toBe(true);

      // A third process joins while the second half flows.
      const secondHalf = sent.slice(sent.length / 2);
      const flowing = Promise.all(secondHalf.map((t) => tipVia([a, b], t)));
      const c = await startProcess();
      await flowing;
      await waitForBalance([a, b, c]);
      expect(results.size).toBe(sent.length);

      // Balances as every process sees them (each asks the owner): exact, from any process.
      for (const p of [a, b, c]) {
        const creator = await p.core.ledger.getAccount(creators[0]!);
        expect(creator.balanceCents).toBe(viewers.length * 97);
        const viewer = await p.core.ledger.getAccount(viewers[0]!);
        expect(viewer.balanceCents).toBe(100_000 - creators.length * 100);
      }

      for (const p of [a, b, c]) await settle(p.core);
      await waitFor(
        async () => {
          const r = await env.pool.query<{ n: string }>(
            "SELECT count(*) AS n FROM tip_feed WHERE amount_cents IS NOT NULL AND creator_id = ANY($1::uuid[])",
            [creators],
          );
          return Number(r.rows[0]!.n) === sent.length;
        },
        15_000,
        "every credit in Postgres",
      );
      for (const p of [a, b, c]) await settle(p.core);
      const tips = await env.pool.query<{ key: string; n: string }>(
        `SELECT idempotency_key AS key, count(*) AS n FROM transactions WHERE type = 'tip' GROUP BY 1`,
      );
      expect(tips.rows).toHaveLength(sent.length);
      expect(tips.rows.every((r) => Number(r.n) === 1)).toBe(true);
      const credited = await env.pool.query<{ id: string; balance_cents: string }>(
        "SELECT id, balance_cents FROM ledger WHERE id = ANY($1::uuid[])",
        [creators],
      );
      for (const r of credited.rows) expect(Number(r.balance_cents)).toBe(viewers.length * 97);
      // The paths under test were taken: commands forwarded, credits sent across and taken once.
      const stats = [a, b, c].map((p) => p.core.ledger.peerStats);
      const sum = (k: keyof (typeof stats)[number]) => stats.reduce((n, s) => n + s[k], 0);
      expect(sum("forwarded")).toBeGreaterThan(sent.length / 4);
      expect(sum("creditsSent")).toBeGreaterThan(sent.length / 4);
      expect(sum("creditsAccepted")).toBe(sum("creditsSent") - sum("creditsAlreadyHad"));
      const memory = new Map([
        ...a.core.ledger.snapshot(),
        ...b.core.ledger.snapshot(),
        ...c.core.ledger.snapshot(),
      ]);
      const report = await reconcileLedger(env.pool, memory);
      expect(report.ok, JSON.stringify(report)).toBe(true);
      expect(report.totalBalanceCents).toBe(0);
    },
  );

  it.runIf(hasRedisServer || !onCluster)(
    "stops tips decided on one process as soon as another suspends their recipient, and resumes them",
    async () => {
      for (const p of apis.splice(0).reverse()) await p.close(); // the last case's processes
      const a = await startProcess();
      const b = await startProcess();
      await waitForBalance([a, b]);
      const viewers = await createUsers(env.pool, 16);
      const creators = await createUsers(env.pool, 16, "cr");
      const ownedBy = (p: Api, id: string) => p.core.ledger.owns(p.core.ledger.shardOf(id));
      // The tips are decided by a (the viewer's owner); the creator's status by b (its owner).
      const viewer = viewers.find((v) => ownedBy(a, v))!;
      const creator = creators.find((c) => ownedBy(b, c))!;
      expect(viewer && creator).toBeTruthy();
      await a.core.ledger.submit({
        kind: "deposit",
        key: randomUUID(),
        accountId: viewer,
        amountCents: 100_000,
      });
      const tip = () =>
        a.core.ledger.submit({
          kind: "tip",
          key: randomUUID(),
          fromAccountId: viewer,
          toAccountId: creator,
          amountCents: 100,
        });
      /** Tips until one is refused (true) or accepted (false), per `refused`, within `ms`. */
      const tipsUntil = async (refused: boolean, ms: number): Promise<number> => {
        const from = Date.now();
        await waitFor(
          async () => {
            try {
              await tip();
              return !refused;
            } catch (err) {
              if ((err as { code?: string }).code !== "fraud_blocked") throw err;
              expect((err as { details?: { rule?: string } }).details?.rule).toBe("suspended_account");
              return refused;
            }
          },
          ms,
          refused ? "a tip refused on the process deciding it" : "a tip accepted again",
        );
        return Date.now() - from;
      };
      // a knows the creator now (a directory entry it would otherwise believe for 5 s).
      await tip();

      await b.core.ledger.submit({
        kind: "set_status",
        key: randomUUID(),
        accountId: creator,
        status: "suspended",
      });
      const refusedAfterMs = await tipsUntil(true, 1000);
      await b.core.ledger.submit({
        kind: "set_status",
        key: randomUUID(),
        accountId: creator,
        status: "active",
      });
      const acceptedAfterMs = await tipsUntil(false, 1000);
      console.log(
        `status across processes: refused ${refusedAfterMs} ms after the suspension, accepted ${acceptedAfterMs} ms after the reinstatement`,
      );
    },
  );
});
