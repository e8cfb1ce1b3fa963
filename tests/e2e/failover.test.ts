// Failover to a hot standby (LEDGER_STANDBY=true): process A owns every shard and takes an HTTP
// tip burst while two standbys wait for A's shard leases. A is SIGKILLed mid-burst; one standby
// (B) takes all the leases over, replays the WAL and listens, the other (C) keeps waiting. Clients retry what A left unanswered against B with
// the same idempotency keys; keys A answered replay A's answers from B; the creator's feed
// subscriber reconnects to B and resumes with `since`. In the end every key is one tip in
// Postgres, the feed is 1..N without a hole, and the books balance.
import type { ChildProcess } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startCore } from "../../src/main/core.ts";
import { reconcileLedger } from "../../src/persist/reconcile.ts";
import { createTestEnv, type TestEnv, waitFor } from "../helpers/env.ts";
import { settle, silentLogger } from "../helpers/ledger.ts";
import { type FeedFollower, followFeed } from "../helpers/live.ts";
import {
  fundedViewersAndCreator,
  liveChildVars,
  spawnLiveChild,
  startLiveChild,
} from "../helpers/live-server.ts";

let env: TestEnv;
const children: ChildProcess[] = [];
let follower: FeedFollower | null = null;

beforeAll(async () => {
  env = await createTestEnv("failover");
});
afterAll(async () => {
  await follower?.stop();
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  await env.cleanup();
});

const vars = (extra: Record<string, string> = {}) =>
  liveChildVars(env, {
    FRAUD_MAX_TX_PER_HOUR: "1000000",
    FRAUD_MAX_VOLUME_PER_HOUR_USD: "100000000",
    LEDGER_LEASE_MS: "2000",
    // Many shards, as in production: two standbys racing for them is where a split could happen.
    SHARDS: "64",
    ...extra,
  });

interface Answer {
  status: number;
  txId: string | null;
}

describe("failover to a standby", () => {
  it("takes over a SIGKILLed owner: retried keys answer once, replayed keys answer the same, the feed resumes", async () => {
    const { viewers, creator, creatorName, viewerTokens, creatorToken } = await fundedViewersAndCreator(
      env,
      vars(),
      20,
    );

    const a = await startLiveChild(vars());
    children.push(a.child);
    let base = `http://127.0.0.1:${a.port}`;
    const standbys = [0, 1].map(() => spawnLiveChild(vars({ LEDGER_STANDBY: "true" }), 120_000));
    const bSpawnedAt = Date.now();
    for (const s of standbys) children.push(s.child);
    const ready = await (await fetch(`${base}/readyz`)).json();
    expect(ready.ledger.shards_owned).toHaveLength(64);

    // The creator's feed, followed across the failover as the protocol asks of a client.
    follower = followFeed(() => base, creatorToken);
    const received = follower.received;
    // Subscribed before the first tip: it must see the feed from 1.
    await waitFor(() => follower!.subscriptions() > 0, 10_000, "the follower to subscribe");

    // Tippers: each key is sent until it is answered 201 (on whichever process serves by then).
    const answers = new Map<string, Answer>();
    const firstAnswers = new Map<string, Answer>();
    const send = async (k: string, viewer: number): Promise<Answer> => {
      try {
        const r = await fetch(`${base}/api/payments/tip`, {
          method: "POST",
          headers: {
            "content-type": "application/json",
            authorization: `Bearer ${viewerTokens[viewer]}`,
            "idempotency-key": k,
          },
          body: JSON.stringify({
            from_user_id: viewers[viewer],
            to_creator_username: creatorName,
            amount: 1,
          }),
          signal: AbortSignal.timeout(5000),
        });
        const body = (await r.json()) as { transaction?: { id: string } };
        return { status: r.status, txId: body.transaction?.id ?? null };
      } catch {
        return { status: 0, txId: null }; // the connection died with its process
      }
    };
    let stop = false;
    let n = 0;
    const tippers = Array.from({ length: 8 }, async (_, t) => {
      while (!stop) {
        const i = n++;
        const k = `fo-${t}-${i}`;
        const viewer = i % viewers.length;
        for (;;) {
          const r = await send(k, viewer);
          if (!firstAnswers.has(k)) firstAnswers.set(k, r);
          if (r.status === 201) {
            answers.set(k, r);
            break;
          }
          await new Promise((res) => setTimeout(res, 20));
        }
      }
    });
    // Past the point where a process that is not a standby gives up (two leases and a half second).
    await waitFor(
      () => answers.size >= 300 && received.length >= 100 && Date.now() - bSpawnedAt > 2 * 2000 + 1000,
      60_000,
      "tips through A, with B waiting longer than a non-standby would",
    );
    for (const s of standbys) expect(s.child.exitCode).toBeNull();
    const answeredByA = new Map(answers);

    const killedAt = Date.now();
    a.child.kill("SIGKILL");
    const first = await Promise.race(standbys.map((s, i) => s.port.then((port) => ({ port, i }))));
    const tookOverMs = Date.now() - killedAt;
    const b = standbys[first.i]!;
    const c = standbys[1 - first.i]!;
    const bPort = first.port;
    base = `http://127.0.0.1:${bPort}`;
    await waitFor(() => answers.size >= answeredByA.size + 300, 60_000, "tips through B");
    // B owns every shard; C still waits, owning none (it never listens while it waits).
    const bReady = await (await fetch(`${base}/readyz`)).json();
    expect(bReady.ledger.shards_owned).toHaveLength(64);
    expect(c.child.exitCode).toBeNull();
    expect(await Promise.race([c.port, new Promise((r) => setTimeout(() => r("waiting"), 100))])).toBe(
      "waiting",
    );
    stop = true;
    await Promise.all(tippers);

    // Keys A answered, sent again to B: A's answers, not new tips.
    let replayed = 0;
    for (const [k, r] of [...answeredByA].slice(-50)) {
      // Keys are scoped to the sender: the same viewer as the first time.
      const again = await send(k, Number(k.split("-")[2]) % viewers.length);
      expect(again, k).toEqual(r);
      replayed++;
    }

    const count = async () =>
      Number(
        (await env.pool.query("SELECT count(*) AS n FROM transactions WHERE to_user_id = $1", [creator]))
          .rows[0].n,
      );
    await waitFor(
      async () => {
        const n = await count();
        return n === answers.size && received.length === n;
      },
      60_000,
      "Postgres and the feed to hold every answered tip",
    ).catch(async (err) => {
      throw new Error(
        `${err.message}: postgres ${await count()}, answered ${answers.size}, received ${received.length}`,
      );
    });
    await follower.stop();

    const rows = await env.pool.query<{ id: string; idempotency_key: string }>(
      "SELECT id, idempotency_key FROM transactions WHERE to_user_id = $1",
      [creator],
    );
    const byKey = new Map(rows.rows.map((r) => [r.idempotency_key, r.id]));
    expect(byKey.size).toBe(rows.rows.length); // one row per key
    for (const [k, r] of answers) expect(byKey.get(k), k).toBe(r.txId);
    expect(received.map((r) => r.seq)).toEqual(Array.from({ length: received.length }, (_, i) => i + 1));
    expect(new Set(received.map((r) => r.id))).toEqual(new Set(byKey.values()));
    const unanswered = [...firstAnswers.values()].filter((r) => r.status !== 201).length;
    console.log(
      `failover: B listened ${tookOverMs} ms after A's SIGKILL (lease 2000 ms); ${answeredByA.size} tips answered by A, ${answers.size - answeredByA.size} by B, ${unanswered} first tries unanswered and retried, ${replayed} of A's keys replayed by B with A's answers`,
    );

    // C would take over as soon as B lets go: stop it first (it holds no lease). Then B drains on
    // SIGTERM, and the books are checked from Postgres plus the (empty) WAL.
    const cExited = new Promise((r) => c.child.once("exit", r));
    c.child.kill("SIGKILL");
    await cExited;
    const exited = new Promise((r) => b.child.once("exit", r));
    b.child.kill("SIGTERM");
    await exited;
    const final = await startCore(env.config(vars()), silentLogger);
    try {
      await settle(final);
      const report = await reconcileLedger(env.pool, final.ledger.snapshot());
      expect(report.memoryMismatches).toEqual([]);
      expect(report).toMatchObject({ ok: true, totalBalanceCents: 0 });
    } finally {
      await final.stop();
    }
  }, 240_000);
});
