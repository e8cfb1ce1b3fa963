// Fenced WAL writes with two real processes: A owns the ledger and tips; A is frozen (SIGSTOP)
// past its lease; B takes over with a higher fencing token and tips; A is thawed (SIGCONT) with
// tips waiting for it and tries to flush them: the WAL refuses, nothing A tried after losing the
// lease exists, and every tip acknowledged by either process is in Postgres exactly once. On one
// Redis and on a three-master Redis Cluster.
import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openRedis, type RedisClient } from "../../src/redis/connect.ts";
import { redisKeys } from "../../src/redis/keys.ts";
import { createTestEnv, REDIS_URL, type TestEnv, waitFor } from "../helpers/env.ts";
import { createUsers } from "../helpers/ledger.ts";
import { RedisCluster } from "../helpers/redis-cluster.ts";

// A long lease, expired by the test while A is frozen (what a long enough stall does), so that A's
// renewal is not due when it thaws: its first move is then to flush, and the WAL itself must say no.
const LEASE_MS = 30_000;
let env: TestEnv;
const children: ChildProcess[] = [];
/** REDIS_CLUSTER_NODES while the cluster variant runs (empty: the machine's Redis). */
let clusterNodes = "";

interface Child {
  proc: ChildProcess;
  lines: string[];
  /** Resolves once the line is in the pipe (handed to the OS), even if the child is frozen. */
  send(line: string): Promise<void>;
  /** Resolves with the first line (from the start) matching, waiting for it if need be. */
  line(match: (l: string) => boolean, what: string, timeoutMs?: number): Promise<string>;
}

function startChild(name: string): Child {
  const proc = spawn(process.execPath, ["--import", "tsx", "tests/helpers/fence-child.ts"], {
    env: {
      ...process.env,
      NODE_ENV: "test",
      DATABASE_URL: env.databaseUrl,
      REDIS_URL,
      REDIS_CLUSTER_NODES: clusterNodes,
      REDIS_PREFIX: env.redisPrefix,
      SHARDS: "8",
      LEDGER_LEASE_MS: String(LEASE_MS),
      LOG_LEVEL: "silent",
    },
    stdio: ["pipe", "pipe", "pipe"],
  });
  children.push(proc);
  const lines: string[] = [];
  createInterface({ input: proc.stdout! }).on("line", (l) => lines.push(l));
  createInterface({ input: proc.stderr! }).on("line", (l) => lines.push(`stderr: ${l}`));
  return {
    proc,
    lines,
    send: (l) =>
      new Promise((resolve, reject) => proc.stdin!.write(`${l}\n`, (err) => (err ? reject(err) : resolve()))),
    async line(match, what, timeoutMs = 20_000) {
      try {
        await waitFor(() => lines.some(match), timeoutMs, `${name}: ${what}`);
      } catch (err) {
        throw new Error(
          `${(err as Error).message}; ${name} said: ${JSON.stringify(lines)}, exit ${proc.exitCode}`,
        );
      }
      return lines.find(match)!;
    },
  };
}

async function stopChild(c: ChildProcess): Promise<void> {
  if (c.exitCode !== null || c.signalCode !== null) return;
  const exited = new Promise((r) => c.once("exit", r));
  c.kill("SIGCONT");
  c.kill("SIGKILL");
  await exited;
}

describe.each([
  ["one Redis", false],
  ["a three-master Redis Cluster", true],
] as const)("fenced WAL appends on %s", (_, onCluster) => {
  let cluster: RedisCluster | null = null;
  /** The test's own view of the WAL's Redis (leases, streams). */
  let r: RedisClient;

  beforeAll(async () => {
    env = await createTestEnv("fencing");
    if (onCluster) {
      cluster = await RedisCluster.start(3);
      clusterNodes = cluster.nodes;
      r = openRedis({ url: REDIS_URL, clusterNodes: clusterNodes.split(",") }, { maxRetriesPerRequest: 2 });
    } else r = env.redis;
  }, 60_000);
  afterAll(async () => {
    for (const c of children.splice(0)) await stopChild(c);
    if (r !== env.redis) r.disconnect();
    await cluster?.destroy();
    clusterNodes = "";
    await env.cleanup();
  });

  it("refuses a stalled owner's appends once another process holds the lease", async () => {
    const [viewer, creator] = await createUsers(env.pool, 2);
    // Every shard has its lease; one process took them all at once, so their tokens are equal.
    const leases = Array.from({ length: 8 }, (_, s) => redisKeys(env.redisPrefix).shardLease(s));
    const tip = (c: Child, k: string) => c.send(`TIP ${k} ${viewer} ${creator} 100`);
    const acked = (c: Child, k: string) =>
      c.line((l) => l.startsWith(`ACK ${k} `) || l.startsWith(`ERR ${k} `), k);

    const a = startChild("A");
    const tokenA = Number((await a.line((l) => l.startsWith("READY"), "ready")).split(" ")[1]);
    a.send(`DEP dep-1 ${viewer} 100000`);
    expect(await acked(a, "dep-1")).toMatch(/^ACK/);
    // Few enough tips from one viewer to stay under the 10-per-hour fraud rule: 4 by A, 4 by B.
    const before = ["a-1", "a-2", "a-3", "a-4"];
    for (const k of before) tip(a, k);
    for (const k of before) expect(await acked(a, k)).toMatch(/^ACK/);

    // Freeze A past its lease: its renewals stop and the lease expires (sped up: a stall of
    // LEASE_MS would do the same).
    a.proc.kill("SIGSTOP");
    for (const l of leases) await r.pexpire(l, 1);
    const held = async () => (await Promise.all(leases.map((l) => r.exists(l)))).reduce((a, b) => a + b, 0);
    await waitFor(async () => (await held()) === 0, 5000, "A's leases to expire");

    const b = startChild("B");
    const tokenB = Number((await b.line((l) => l.startsWith("READY"), "ready")).split(" ")[1]);
    expect(tokenB).toBeGreaterThan(tokenA);
    const byB = ["b-1", "b-2", "b-3", "b-4"];
    for (const k of byB) tip(b, k);
    for (const k of byB) expect(await acked(b, k)).toMatch(/^ACK/);

    // Thaw A with tips already waiting on its stdin: it decides them and tries to flush before it
    // can hear that its lease is gone (the renewal's answer takes a round trip).
    const after = ["late-1", "late-2", "late-3"];
    await Promise.all(after.map((k) => tip(a, k)));
    a.proc.kill("SIGCONT");
    for (const k of after) expect(await acked(a, k)).toBe(`ERR ${k} unavailable`);
    const lost = await a.line((l) => l.startsWith("LOST"), "A to stop owning");
    expect(lost, "the WAL refused A's append, before A's renewal could notice").toContain("WAL_refused");
    // B still owns the ledger, untouched by A's attempt.
    for (const l of leases) expect((await r.get(l))?.split(":")[0]).toBe(String(tokenB));

    b.send("DRAIN");
    await b.line((l) => l === "DRAINED", "drained");
    const rows = await env.pool.query<{ idempotency_key: string; n: string }>(
      "SELECT idempotency_key, count(*) AS n FROM transactions WHERE type = 'tip' GROUP BY idempotency_key",
    );
    const inPg = new Map(rows.rows.map((r) => [r.idempotency_key, Number(r.n)]));
    for (const k of [...before, ...byB]) expect(inPg.get(k), k).toBe(1);
    for (const k of after) expect(inPg.has(k), k).toBe(false);
    expect(inPg.size).toBe(before.length + byB.length);
    const creatorRow = await env.pool.query<{ balance_cents: string }>(
      "SELECT balance_cents FROM ledger WHERE id = $1",
      [creator],
    );
    expect(Number(creatorRow.rows[0]!.balance_cents)).toBe(97 * (before.length + byB.length));
    const sum = await env.pool.query<{ total: string }>("SELECT sum(balance_cents) AS total FROM ledger");
    expect(Number(sum.rows[0]!.total)).toBe(0);
    // Every WAL entry still in the streams carries the token of the process that wrote it.
    for (let s = 0; s < 8; s++) {
      const entries = (await r.xrange(redisKeys(env.redisPrefix).walStream(s), "-", "+")) as Array<
        [string, string[]]
      >;
      for (const [, f] of entries) expect([String(tokenA), String(tokenB)]).toContain(f[f.indexOf("f") + 1]);
    }
  });
});
