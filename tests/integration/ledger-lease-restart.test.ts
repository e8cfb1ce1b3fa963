// A restart after a crash (issue 12 item 7): the crashed owner's lease is still in Redis, and a new
// process on the same machine takes it over at once when it can prove that owner is dead (its pid
// is gone from this boot's pid namespace, or was reused by a process started at another time),
// with a higher fencing token. An owner that is alive is never taken over: the new process waits
// for the lease as before and gives up with one line.
import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../src/config.ts";
import { type Core, DependencyError, startCore } from "../../src/main/core.ts";
import { redisKeys } from "../../src/redis/keys.ts";
import { createTestEnv, REDIS_URL, type TestEnv, waitFor } from "../helpers/env.ts";
import { createUsers, silentLogger } from "../helpers/ledger.ts";

let env: TestEnv;
const children: ChildProcess[] = [];
const cores: Core[] = [];

function config(leaseMs: number) {
  return {
    NODE_ENV: "test",
    DATABASE_URL: env.databaseUrl,
    REDIS_URL,
    REDIS_PREFIX: env.redisPrefix,
    SHARDS: "8",
    LEDGER_LEASE_MS: String(leaseMs),
    LOG_LEVEL: "silent",
  };
}

/** A ledger owner in a child process; resolves with its fencing token once it owns the ledger. */
async function owner(leaseMs: number): Promise<{ proc: ChildProcess; token: number }> {
  const proc = spawn(process.execPath, ["--import", "tsx", "tests/helpers/fence-child.ts"], {
    env: { ...process.env, ...config(leaseMs) },
    stdio: ["pipe", "pipe", "ignore"],
  });
  children.push(proc);
  const lines: string[] = [];
  createInterface({ input: proc.stdout! }).on("line", (l) => lines.push(l));
  await waitFor(() => lines.some((l) => l.startsWith("READY")), 30_000, "the child to own the ledger");
  return { proc, token: Number(lines.find((l) => l.startsWith("READY"))!.split(" ")[1]) };
}

async function kill(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise((r) => proc.once("exit", r));
  proc.kill("SIGKILL");
  await exited;
}

beforeAll(async () => {
  env = await createTestEnv("lease_restart");
});
afterAll(async () => {
  for (const c of cores) await c.stop().catch(() => {});
  for (const c of children) await kill(c);
  await env?.cleanup();
});

describe("restart after a crash", () => {
  it("takes over a dead owner's lease at once, with a new token, instead of waiting it out", async () => {
    const LEASE_MS = 20_000;
    const [viewer] = await createUsers(env.pool, 1);
    const crashed = await owner(LEASE_MS);
    crashed.proc.stdin!.write(`DEP d1 ${viewer} 500\n`);
    await kill(crashed.proc);
    const lease = redisKeys(env.redisPrefix).shardLease(0);
    expect(await env.redis.pttl(lease)).toBeGreaterThan(LEASE_MS / 2);

    const started = Date.now();
    const core = await startCore(loadConfig(config(LEASE_MS)), silentLogger);
    cores.push(core);
    const tookMs = Date.now() - started;
    expect(tookMs, `the restart took ${tookMs} ms`).toBeLessThan(LEASE_MS / 4);
    const token = Number((await env.redis.get(lease))!.split(":")[0]);
    expect(token).toBeGreaterThan(crashed.token);
    // It owns the ledger: a deposit is acknowledged.
    const r = await core.ledger.submit({ kind: "deposit", key: "d2", accountId: viewer!, amountCents: 100 });
    expect("transaction" in r).toBe(true);
    await core.stop();
    cores.splice(cores.indexOf(core), 1);
  }, 60_000);

  it("never takes over an owner that is alive: it waits for the lease and gives up", async () => {
    const LEASE_MS = 1000;
    const alive = await owner(LEASE_MS);
    const lease = redisKeys(env.redisPrefix).shardLease(0);
    const held = await env.redis.get(lease);
    const started = Date.now();
    await expect(startCore(loadConfig(config(LEASE_MS)), silentLogger)).rejects.toThrow(DependencyError);
    expect(Date.now() - started).toBeGreaterThanOrEqual(2 * LEASE_MS);
    expect(await env.redis.get(lease)).toBe(held);
    await kill(alive.proc);
  }, 60_000);
});
