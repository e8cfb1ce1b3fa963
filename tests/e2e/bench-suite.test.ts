// The benchmark suite checks itself: `bench/run.ts --quick` runs every scenario against real
// servers (echo, 3AM, the peer) with a small population, writes its JSON and chart, passes its own
// after-run checks, and leaves no database or Redis key behind. Speed is not judged here.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { TokenService } from "../../src/auth/tokens.ts";
import {
  MIN_VIEWERS,
  parseOptions,
  SCENARIOS,
  TIPS_PER_VIEWER_MAX,
  viewersNeeded,
} from "../../bench/options.ts";
import { makePopulation } from "../../bench/population.ts";
import { PG_ADMIN_URL, REDIS_URL } from "../helpers/env.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const db = `bench_test_${randomBytes(4).toString("hex")}`;
const out = `${mkdtempSync(join(tmpdir(), "bench-suite-"))}/`;
// --redis durable (the default) starts a redis-server of the bench's own.
const hasRedisServer = spawnSync("redis-server", ["--version"]).status === 0;
// The bench's TMPDIR, where its Redis keeps the AOF: empty again once the run is over.
const benchTmp = mkdtempSync(join(tmpdir(), "bench-suite-tmp-"));

async function databasesNamed(prefix: string): Promise<string[]> {
  const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
  await admin.connect();
  try {
    const r = await admin.query<{ datname: string }>(
      "SELECT datname FROM pg_database WHERE datname LIKE $1",
      [`${prefix}%`],
    );
    return r.rows.map((x) => x.datname);
  } finally {
    await admin.end();
  }
}

async function redisKeys(prefix: string): Promise<string[]> {
  const redis = new Redis(REDIS_URL);
  try {
    return await redis.keys(`${prefix}*`);
  } finally {
    redis.disconnect();
  }
}

/** Bench runs still going (a timed-out test): stopped first, so nothing outlives the file. */
const running = new Set<ChildProcess>();

afterAll(async () => {
  for (const child of running) {
    child.kill("SIGTERM"); // the bench kills its servers and its Redis on the way out
    await new Promise((r) => child.once("exit", r));
  }
  // Only if the run died before its own cleanup.
  const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
  await admin.connect();
  for (const name of await databasesNamed(db))
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  await admin.end();
  const keys = [...(await redisKeys(`${db}:`)), ...(await redisKeys(`${db}_spread:`))];
  if (keys.length > 0) {
    const redis = new Redis(REDIS_URL);
    await redis.del(...keys);
    redis.disconnect();
  }
  rmSync(out, { recursive: true, force: true });
  rmSync(benchTmp, { recursive: true, force: true });
});

function runBench(args: string[]): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ["--import", "tsx", "bench/run.ts", ...args], {
      cwd: ROOT,
      env: { ...process.env, BENCH_PG_ADMIN_URL: PG_ADMIN_URL, REDIS_URL, TMPDIR: benchTmp },
      stdio: ["ignore", "pipe", "pipe"],
    });
    running.add(child);
    let output = "";
    child.stdout.on("data", (d) => {
      output += d;
    });
    child.stderr.on("data", (d) => {
      output += d;
    });
    child.on("exit", (code) => {
      running.delete(child);
      resolve({ code, output });
    });
  });
}

describe("bench population", () => {
  it("mints tokens the server's TokenService accepts as the viewer", async () => {
    const secret = "bench-suite-test-secret-0123456789abcdef";
    const pop = makePopulation(3, 2, 100_000, secret, 3600);
    const tokens = new TokenService({ secret, expiresInS: 3600 });
    for (const p of [...pop.viewers, ...pop.creators]) {
      await expect(tokens.verify(p.token)).resolves.toMatchObject({
        sub: p.id,
        email: `${p.username}@bench.test`,
      });
    }
    const other = new TokenService({ secret: "another-secret-another-secret-0123456789", expiresInS: 3600 });
    await expect(other.verify(pop.viewers[0]!.token)).rejects.toMatchObject({ code: "unauthorized" });
  });

  it("seeds at least 100,000 viewers, and enough that none passes 10 tips an hour at 20k tips/s", () => {
    expect(viewersNeeded(parseOptions(["--scenario", "tips"]))).toBe(MIN_VIEWERS);
    const long = parseOptions(["--duration", "60"]);
    // tip-uniform 60 s + the three half-rate runs (two paced, one of them under AI load) 30 s
    // each + tip-hot 60 s + ws-tip-uniform and ws-tip-hot 60 s each, at 20k/s, 20% to spare.
    expect(viewersNeeded(long)).toBe(Math.ceil((330 * 20_000 * 1.2) / TIPS_PER_VIEWER_MAX));
    expect(viewersNeeded(parseOptions(["--viewers", "2000"]))).toBe(2000);
    expect(parseOptions(["--scenario", "tip-uniform-half"]).scenarios).toEqual([
      "tip-uniform",
      "tip-uniform-half",
    ]);
    expect(parseOptions([]).redis).toBe("durable");
    expect(parseOptions([]).wsProcesses).toBe(2);
    expect(parseOptions(["--ws-processes", "3"]).wsProcesses).toBe(3);
    expect(parseOptions(["--redis", "shared"]).redis).toBe("shared");
    expect(() => parseOptions(["--redis", "memory"])).toThrow(/--redis must be durable or shared/);
    // Two spread processes tip into a database of their own, seeded with the same viewers.
    expect(viewersNeeded(parseOptions(["--scenario", "tip-uniform-spread2", "--duration", "60"]))).toBe(
      Math.ceil((60 * 20_000 * 1.2) / TIPS_PER_VIEWER_MAX),
    );
    expect(parseOptions(["--scenario", "peer-seed,echo"]).scenarios).toEqual([
      "echo",
      "peer-seed-uniform",
      "peer-seed-hot",
    ]);
  });
});

describe("npm run bench -- --quick", () => {
  it("runs every scenario, checks acknowledged tips and conservation, writes JSON and SVG, cleans up", async () => {
    const r = await runBench([
      "--quick",
      "--duration",
      "1",
      // Enough allowance (10 tips an hour each) for every tip scenario at full speed: with 2,000
      // the WebSocket scenarios, last in line, sometimes found every viewer spent.
      "--viewers",
      "10000",
      "--creators",
      "100",
      "--out",
      out,
      "--db",
      db,
      "--redis",
      hasRedisServer ? "durable" : "shared",
    ]);
    expect(r.code, r.output).toBe(0);
    const report = JSON.parse(readFileSync(`${out}latest.json`, "utf8"));
    if (hasRedisServer) {
      // Every acknowledged tip was fsynced: the bench's Redis ran with the WAL's durability.
      expect(report.machine).toMatchObject({ redisAppendonly: "yes", redisAppendfsync: "always" });
      expect(report.options.redis).toBe("durable");
      expect(report.setup.join("\n")).toContain("without persistence (RATE_LIMIT_REDIS_URL)");
      expect(readdirSync(benchTmp).filter((f) => f.startsWith("3am-bench-redis-"))).toEqual([]);
    }
    expect(report.scenarios.map((s: { name: string }) => s.name)).toEqual([...SCENARIOS]);
    for (const s of report.scenarios) {
      expect(s.requests, s.name).toBeGreaterThan(0);
      expect(s.status2xx, s.name).toBeGreaterThan(0);
      expect(s.latencyMs.p99, s.name).toBeGreaterThan(0);
    }
    expect(report.failures).toEqual([]);
    const checks = report.checks as Array<{ name: string; ok: boolean; detail: string }>;
    expect(checks.filter((c) => !c.ok)).toEqual([]);
    for (const name of [
      "ledger: every acknowledged tip is in Postgres exactly once",
      "ledger: reconcile (balances sum to zero, each equals its entries, every transaction's entries sum to zero)",
      "ledger: money conserved (deposits = viewers + creators + platform + charity, as the tips say)",
      "ledger-spread: every acknowledged tip is in Postgres exactly once",
      "ledger-spread: tips in Postgres = 2xx answers + requests unanswered when the load stopped",
      "ledger-spread: reconcile (balances sum to zero, each equals its entries, every transaction's entries sum to zero)",
      "ledger-spread: money conserved (deposits = viewers + creators + platform + charity, as the tips say)",
      "ledger-spread: creators' balances in server memory (API, each from the process owning its shard) equal Postgres",
      "ledger-spread: both servers stopped cleanly on SIGTERM (HTTP closed, WAL drained)",
      "ledger-spread: servers logged no errors",
      "peer-seed: every acknowledged tip is in Postgres exactly once",
      "peer-seed: money conserved (deposits = viewers + creators + fees of the tips)",
    ]) {
      expect(checks.map((c) => c.name)).toContain(name);
    }
    const uniform = report.scenarios.find((s: { name: string }) => s.name === "tip-uniform");
    expect(
      report.ratios.map((x: { name: string; value: number | null }) => [x.name, x.value !== null]),
    ).toEqual([
      ["tip-uniform / echo", true],
      ["tip-hot / tip-uniform", true],
      ["tip-uniform / peer-seed-uniform", true],
      ["tip-hot / peer-seed-hot", true],
      ["ws-tip-uniform / tip-uniform", true],
      ["ws-tip-hot / ws-tip-uniform", true],
      ["ws-tip-hot / tip-hot", true],
      ["tip-uniform-spread2 / tip-uniform", true],
    ]);
    // CPU per acknowledged tip, by process and thread: the server's persister thread is told apart.
    const cpu = uniform.cpuPerOpUs;
    expect(cpu.server).toBeGreaterThan(0);
    expect(cpu.serverMain).toBeGreaterThan(0);
    expect(cpu.serverPersister).toBeGreaterThanOrEqual(0);
    expect(cpu.postgres + cpu.redis).toBeGreaterThan(0);
    expect(cpu.loadGenerator).toBeGreaterThan(0);
    // Two processes sharing the shards: each answered its half of the connections, owned half of
    // the shards (together all, once), and its CPU is counted apart (the parts add up to the whole).
    const spread = report.scenarios.find((s: { name: string }) => s.name === "tip-uniform-spread2");
    expect(spread.perServer).toHaveLength(2);
    const owned = spread.perServer
      .flatMap((p: { shards: number[] }) => p.shards)
      .sort((a: number, b: number) => a - b);
    expect(owned).toEqual([...Array(16).keys()]);
    for (const p of spread.perServer) {
      expect(p.connections, p.name).toBe(50);
      expect(p.status2xx, p.name).toBeGreaterThan(0);
      expect(p.latencyMs.p99, p.name).toBeGreaterThan(0);
      expect(p.cpuPerOpUs.serverMain, p.name).toBeGreaterThan(0);
      expect(p.forwardedShare, p.name).toBeGreaterThan(0);
    }
    expect(spread.perServer[0].status2xx + spread.perServer[1].status2xx).toBe(spread.status2xx);
    const parts = spread.perServer[0].cpuPerOpUs.server + spread.perServer[1].cpuPerOpUs.server;
    expect(Math.abs(parts - spread.cpuPerOpUs.server)).toBeLessThan(0.5);
    expect(existsSync(`${out}logs/server-spread-b.log`)).toBe(true);
    expect(checks.map((c) => c.name)).toContain(
      "ws-feed: every subscriber got every tip of the burst once, in order",
    );
    expect(checks.find((c) => c.name.startsWith("ws-feed"))?.ok).toBe(true);
    expect(uniform.wal.drainMs).not.toBeNull();
    const svg = readFileSync(`${out}latest.svg`, "utf8");
    for (const name of SCENARIOS) expect(svg).toContain(`>${name}</text>`);
    expect(existsSync(`${out}logs/server.log`)).toBe(true);
    expect(await databasesNamed(db)).toEqual([]);
    expect(await redisKeys(`${db}:`)).toEqual([]);
    expect(await redisKeys(`${db}_spread:`)).toEqual([]);
  });

  it("--redis shared runs against REDIS_URL and leaves no key there", async () => {
    const r = await runBench([
      "--quick",
      "--scenario",
      "tip-hot",
      "--duration",
      "1",
      "--viewers",
      "2000",
      "--creators",
      "10",
      "--out",
      `${out}shared/`,
      "--db",
      db,
      "--redis",
      "shared",
    ]);
    expect(r.code, r.output).toBe(0);
    const report = JSON.parse(readFileSync(`${out}shared/latest.json`, "utf8"));
    expect(report.options.redis).toBe("shared");
    expect(report.scenarios.map((s: { name: string }) => s.name)).toEqual(["tip-hot"]);
    expect(report.scenarios[0].status2xx).toBeGreaterThan(0);
    expect((report.checks as Array<{ ok: boolean }>).every((c) => c.ok)).toBe(true);
    expect(await redisKeys(`${db}:`)).toEqual([]);
    expect(await databasesNamed(db)).toEqual([]);
  });
});
