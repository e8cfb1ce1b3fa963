// Shards spread over three server processes (LEDGER_SPREAD, issue 17), each a child process on the
// same database and Redis. Tips go to whichever process a client picks; a creator's feed is
// followed on a process that does NOT own the creator's shard (its entries come from another
// process). Mid-burst, the process owning the creator's shard is SIGKILLed: the two others take its
// shards within the lease plus recovery, re-deliver the credits it left owed, and clients retry
// what went unanswered with the same keys, on any process. In the end every key is one tip in
// Postgres with the answer the client got, the creator is credited for each once, and the books
// balance to the cent. Two followers of the creator's feed saw 1..N without a hole or a duplicate:
// one on a process that survives, one on the killed process, which reconnects to another and
// resumes with `since`.
import type { ChildProcess } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { shardOf } from "../../src/ledger/accounts.ts";
import { startCore } from "../../src/main/core.ts";
import { reconcileLedger } from "../../src/persist/reconcile.ts";
import { createTestEnv, type TestEnv, waitFor } from "../helpers/env.ts";
import { settle, silentLogger } from "../helpers/ledger.ts";
import { type FeedFollower, followFeed } from "../helpers/live.ts";
import { fundedViewersAndCreator, liveChildVars, startLiveChild } from "../helpers/live-server.ts";
import { RedisCluster } from "../helpers/redis-cluster.ts";

let env: TestEnv;
const children: ChildProcess[] = [];
let follower: FeedFollower | null = null;
let moving: FeedFollower | null = null;
/** Set while a case runs on a real three-master Redis Cluster. */
let cluster: RedisCluster | null = null;

const SHARDS = 12;
const LEASE_MS = 1500;

beforeAll(async () => {
  env = await createTestEnv("spread_failover");
});
afterAll(async () => {
  await follower?.stop();
  await moving?.stop();
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  await env.cleanup();
  await cluster?.destroy();
});

const vars = (extra: Record<string, string> = {}) =>
  liveChildVars(env, {
    FRAUD_MAX_TX_PER_HOUR: "1000000",
    FRAUD_MAX_VOLUME_PER_HOUR_USD: "100000000",
    LEDGER_LEASE_MS: String(LEASE_MS),
    SHARDS: String(SHARDS),
    LEDGER_SPREAD: "true",
    INTERNAL_TOKEN: "spread-failover-internal-token",
    ...(cluster ? { REDIS_CLUSTER_NODES: cluster.nodes } : {}),
    ...extra,
  });

interface Proc {
  child: ChildProcess;
  base: string;
  alive: boolean;
}

async function readyz(
  p: Proc,
): Promise<{ shards_owned: number[]; processes: number; fencing_tokens: Record<string, number> }> {
  return (await (await fetch(`${p.base}/readyz`)).json()).ledger;
}

/** Every shard owned by exactly one of `procs`, as their /readyz say. */
async function waitForBalance(procs: Proc[], timeoutMs: number): Promise<number[][]> {
  let owned: number[][] = [];
  await waitFor(
    async () => {
      owned = await Promise.all(procs.map(async (p) => (await readyz(p)).shards_owned));
      const all = owned.flat();
      return all.length === SHARDS && new Set(all).size === SHARDS && owned.every((o) => o.length > 0);
    },
    timeoutMs,
    `${procs.length} processes to divide ${SHARDS} shards`,
  );
  return owned;
}

type Funded = Awaited<ReturnType<typeof fundedViewersAndCreator>>;

/** Three server children spread over the shards, once they have divided them. */
async function startThree(): Promise<{ procs: Proc[]; owned: number[][] }> {
  const procs: Proc[] = [];
  for (let i = 0; i < 3; i++) {
    const { child, port } = await startLiveChild(vars());
    children.push(child);
    procs.push({ child, base: `http://127.0.0.1:${port}`, alive: true });
  }
  return { procs, owned: await waitForBalance(procs, 30_000) };
}

/**
 * Tippers sending $1 tips from the funded viewers to the creator, each key (`<tag>-<tipper>-<n>`)
 * again and again until answered 201, each try through a live process (another one each time).
 */
function tipBurst(procs: Proc[], f: Funded, tag: string, tippers: number, timeoutMs: number) {
  const answers = new Map<string, string>();
  const firstAnswers = new Map<string, number>();
  const send = async (k: string, viewer: number, attempt: number) => {
    const live = procs.filter((p) => p.alive);
    const p = live[(viewer + attempt) % live.length]!;
    try {
      const r = await fetch(`${p.base}/api/payments/tip`, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          authorization: `Bearer ${f.viewerTokens[viewer]}`,
          "idempotency-key": k,
        },
        body: JSON.stringify({
          from_user_id: f.viewers[viewer],
          to_creator_username: f.creatorName,
          amount: 1,
        }),
        signal: AbortSignal.timeout(timeoutMs),
      });
      const body = (await r.json()) as { transaction?: { id: string } };
      return { status: r.status, txId: body.transaction?.id ?? null };
    } catch {
      return { status: 0, txId: null }; // its process died, or it hung
    }
  };
  let stopped = false;
  let n = 0;
  const loops = Array.from({ length: tippers }, async (_, t) => {
    while (!stopped) {
      const i = n++;
      const k = `${tag}-${t}-${i}`;
      const viewer = i % f.viewers.length;
      for (let attempt = 0; ; attempt++) {
        const r = await send(k, viewer, attempt);
        if (!firstAnswers.has(k)) firstAnswers.set(k, r.status);
        if (r.status === 201) {
          answers.set(k, r.txId!);
          break;
        }
        if (attempt > 400) throw new Error(`key ${k} never answered: last ${r.status}`);
        await new Promise((res) => setTimeout(res, 25));
      }
    }
  });
  return {
    answers,
    firstAnswers,
    /** The same key again, from its viewer: the answer the key has. */
    resend: (k: string) => send(k, Number(k.split("-")[2]) % f.viewers.length, 0),
    async stop() {
      stopped = true;
      await Promise.all(loops);
    },
  };
}

const tipsTo = async (creator: string) =>
  Number(
    (await env.pool.query("SELECT count(*) AS n FROM transactions WHERE to_user_id = $1", [creator])).rows[0]
      .n,
  );

/** Every answered key is one tip in Postgres, with the transaction the client was answered. */
async function expectEachKeyOnce(
  creator: string,
  answers: Map<string, string>,
): Promise<Map<string, string>> {
  const rows = await env.pool.query<{ id: string; idempotency_key: string }>(
    "SELECT id, idempotency_key FROM transactions WHERE to_user_id = $1",
    [creator],
  );
  const byKey = new Map(rows.rows.map((r) => [r.idempotency_key, r.id]));
  expect(byKey.size).toBe(rows.rows.length);
  for (const [k, txId] of answers) expect(byKey.get(k), k).toBe(txId);
  return byKey;
}

/**
 * The processes stop (SIGTERM drains their WAL); the books are checked from Postgres plus the WAL
 * by a core that then owns every shard: the creator credited once per tip, reconcile to the cent.
 */
async function stopAndReconcile(procs: Proc[], creator: string, tips: number): Promise<void> {
  for (const p of procs) {
    const exited = new Promise((r) => p.child.once("exit", r));
    p.child.kill("SIGTERM");
    await exited;
  }
  const final = await startCore(env.config({ ...vars(), LEDGER_SPREAD: "false" }), silentLogger);
  try {
    await settle(final);
    expect((await final.ledger.getAccount(creator)).balanceCents).toBe(tips * 97);
    const report = await reconcileLedger(env.pool, final.ledger.snapshot());
    expect(report.memoryMismatches).toEqual([]);
    expect(report).toMatchObject({ ok: true, totalBalanceCents: 0 });
  } finally {
    await final.stop();
  }
}

/** What is wrong with a follower's frames: numbers out of order, repeated or skipped ("" if none). */
function feedFaults(frames: Array<{ seq: number }>): string {
  const faults: string[] = [];
  for (let i = 0; i < frames.length; i++) {
    const want = i === 0 ? 1 : frames[i - 1]!.seq + 1;
    const seq = frames[i]!.seq;
    if (seq !== want) faults.push(`#${i}: ${seq} after ${i === 0 ? "nothing" : frames[i - 1]!.seq}`);
  }
  return faults.slice(0, 10).join(", ") + (faults.length > 10 ? ` (${faults.length} in all)` : "");
}

/**
 * The creator's owner SIGKILLed mid-burst: every key once, the feed whole (see the file's header).
 */
async function survivesOwnerKill(): Promise<void> {
  const f = await fundedViewersAndCreator(env, vars(), 24);
  const { creator, creatorToken } = f;
  const { procs, owned } = await startThree();
  const ownerIndex = owned.findIndex((o) => o.includes(shardOf(creator, SHARDS)));
  const victim = procs[ownerIndex]!;
  const watcher = procs[(ownerIndex + 1) % 3]!;
  // The follower sits on a process that does not write the creator's feed.
  follower = followFeed(() => watcher.base, creatorToken);
  const received = follower.received;
  // This one sits on the process that will be killed, then on any survivor.
  moving = followFeed(() => (victim.alive ? victim.base : watcher.base), creatorToken);
  // Subscribed before the first tip: each must see the feed from 1.
  await waitFor(
    () => follower!.subscriptions() > 0 && moving!.subscriptions() > 0,
    10_000,
    "the followers to subscribe",
  );

  const burst = tipBurst(procs, f, "sf", 8, 8000);
  const { answers } = burst;
  await waitFor(() => answers.size >= 300 && received.length >= 100, 60_000, "tips on three processes").catch(
    (err) => {
      throw new Error(
        `${err.message}: ${answers.size} answered, followers ${received.length}, ${moving!.received.length}`,
      );
    },
  );
  const beforeKill = answers.size;

  const killedAt = Date.now();
  victim.alive = false;
  victim.child.kill("SIGKILL");
  const survivors = procs.filter((p) => p.alive);
  await waitForBalance(survivors, 30_000);
  const rebalancedMs = Date.now() - killedAt;
  await waitFor(() => answers.size >= beforeKill + 300, 60_000, "tips after the kill");
  await burst.stop();

  // Keys answered before the kill, sent again to a survivor: the original answers.
  for (const [k, txId] of [...answers].slice(0, 30)) {
    expect(await burst.resend(k), k).toEqual({ status: 201, txId });
  }

  await waitFor(
    async () =>
      (await tipsTo(creator)) === answers.size &&
      received.length === answers.size &&
      moving!.received.length === answers.size,
    60_000,
    "Postgres and the feed to hold every answered tip",
  ).catch(async (err) => {
    const wal = await Promise.all(
      survivors.map(async (p) => JSON.stringify(await (await fetch(`${p.base}/readyz`)).json())),
    );
    throw new Error(
      `${err.message}: postgres ${await tipsTo(creator)}, answered ${answers.size}, received ${received.length} (${feedFaults(received)}) and ${moving!.received.length} (${feedFaults(moving!.received)}); survivors: ${wal.join(" | ")}`,
    );
  });
  await follower.stop();
  await moving.stop();
  expect(feedFaults(received), "the follower on a survivor").toBe("");
  expect(feedFaults(moving.received), "the follower that moved").toBe("");
  expect(moving.connects()).toBeGreaterThan(1);
  expect(moving.received).toEqual(received);

  const byKey = await expectEachKeyOnce(creator, answers);
  expect(received.map((r) => r.seq)).toEqual(Array.from({ length: received.length }, (_, i) => i + 1));
  expect(new Set(received.map((r) => r.id))).toEqual(new Set(byKey.values()));
  const unanswered = [...burst.firstAnswers.values()].filter((s) => s !== 201).length;
  console.log(
    `spread failover: survivors held all ${SHARDS} shards ${rebalancedMs} ms after the SIGKILL (lease ${LEASE_MS} ms); ${beforeKill} tips before, ${answers.size - beforeKill} after; ${unanswered} first tries unanswered and retried`,
  );
  await stopAndReconcile(survivors, creator, answers.size);
}

/** Runs `scenario` with the children's WAL, leases and feeds on a real three-master Redis Cluster. */
async function onCluster(scenario: () => Promise<void>): Promise<void> {
  cluster = await RedisCluster.start(3);
  try {
    await scenario();
  } finally {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
    await cluster.destroy();
    cluster = null;
  }
}

describe("shards spread over three processes", () => {
  it(
    "survives the SIGKILL of the creator's owner mid-burst: every key once, the feed whole",
    () => survivesOwnerKill(),
    240_000,
  );

  it(
    "does the same with the WAL, leases, feeds and live channel on a three-master Redis Cluster",
    () => onCluster(survivesOwnerKill),
    240_000,
  );

  it(
    "refuses a stalled process's late appends (SIGSTOP past its leases), then gives it a share again",
    () => survivesStall(),
    240_000,
  );

  it(
    "does the same with the WAL and leases on a three-master Redis Cluster",
    () => onCluster(survivesStall),
    240_000,
  );
});

/** A process SIGSTOPped past its leases mid-burst: its late appends refused, every key once. */
async function survivesStall(): Promise<void> {
  const f = await fundedViewersAndCreator(env, vars(), 24);
  const { creator } = f;
  const { procs, owned } = await startThree();
  const stalled = procs[owned.findIndex((o) => o.includes(shardOf(creator, SHARDS)))]!;
  const tokensBefore = (await readyz(stalled)).fencing_tokens;

  // Tips go to the stalled process too: what it acknowledged before the stop counts, what it
  // holds when stopped must never be acknowledged once others own its shards. While it is
  // stopped, new tries go to the others (those it holds wait for it, then time out).
  const burst = tipBurst(procs, f, "ss", 6, 3 * LEASE_MS);
  const { answers } = burst;
  await waitFor(() => answers.size >= 200, 60_000, "tips on three processes");
  stalled.child.kill("SIGSTOP");
  stalled.alive = false;
  const stoppedAt = Date.now();
  const others = procs.filter((p) => p !== stalled);
  await waitForBalance(others, 30_000);
  const takenMs = Date.now() - stoppedAt;
  const countAtThaw = answers.size;
  await waitFor(() => answers.size >= countAtThaw + 150, 60_000, "tips while it is stopped");
  stalled.child.kill("SIGCONT");
  stalled.alive = true;
  // Back: its shards are others' now; it takes a share again (with new fencing tokens).
  const thawedAt = Date.now();
  await waitForBalance(procs, 30_000);
  const backMs = Date.now() - thawedAt;
  const after = await readyz(stalled);
  for (const s of after.shards_owned) {
    if (tokensBefore[s] !== undefined) expect(after.fencing_tokens[s]).toBeGreaterThan(tokensBefore[s]!);
  }
  await waitFor(() => answers.size >= countAtThaw + 300, 60_000, "tips after the thaw");
  await burst.stop();
  expect(stalled.child.exitCode).toBeNull();

  await waitFor(
    async () => (await tipsTo(creator)) === answers.size,
    60_000,
    "Postgres to hold every answered tip",
  ).catch(async (err) => {
    throw new Error(`${err.message}: postgres ${await tipsTo(creator)}, answered ${answers.size}`);
  });
  await expectEachKeyOnce(creator, answers);
  console.log(
    `spread stall: the others held every shard ${takenMs} ms after the SIGSTOP (lease ${LEASE_MS} ms), and gave it a share again ${backMs} ms after the SIGCONT; ${answers.size} tips, each once`,
  );
  await stopAndReconcile(procs, creator, answers.size);
}
