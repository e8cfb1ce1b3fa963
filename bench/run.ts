// The benchmark suite (`npm run bench`): each scenario for a fixed time against a server running
// alone as a child process (a bare uWS echo, the 3AM server, the seed's architecture as a peer),
// then the checks that nothing acknowledged went missing and that money is conserved. Prints a
// table, ratios, targets and checks; writes JSON and an SVG chart to bench/results/.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { Redis } from "ioredis";
import pg from "pg";
import { TokenService } from "../src/auth/tokens.ts";
import { loadConfig } from "../src/config.ts";
import { createPool } from "../src/db/pool.ts";
import { migrate } from "../src/db/migrate.ts";
import { shardOf } from "../src/ledger/accounts.ts";
import { nameServerThread, threadsFromMetrics } from "./cpu-usage.ts";
import { type Check, creatorBalancesCheck, ledgerChecks, peerChecks, type TipAccounting } from "./checks.ts";
import {
  balanceRequests,
  type LoadStats,
  type RouteTally,
  runLoad,
  type Tally,
  tipRequests,
  ViewerCursor,
} from "./load.ts";
import {
  type BenchOptions,
  MIN_VIEWERS,
  parseOptions,
  type ScenarioName,
  TIPS_PER_VIEWER_MAX,
  viewersNeeded,
} from "./options.ts";
import {
  adminUrl,
  databaseUrl,
  dropDatabase,
  makePopulation,
  type Population,
  recreateDatabase,
  seedLedger,
  seedPeer,
} from "./population.ts";
import { runPaced } from "./paced.ts";
import { type BenchRedis, type ChildServer, startBenchRedisServer, startServer } from "./processes.ts";
import {
  type BenchReport,
  computeRatios,
  computeTargets,
  cpuPerOp,
  formatReport,
  type ScenarioResult,
  serverCpuPerOp,
  writeResults,
} from "./report.ts";
import { type CommandStats, commandStatsDelta, formatPerOp, readCommandStats } from "./redis-commandstats.ts";
import { WalMonitor } from "./wal-monitor.ts";
import { type FeedWatch, runWsTips, watchFeed } from "./ws-load.ts";

/** The Redis of `--redis shared`. */
const SHARED_REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const RATE_LIMIT_BENCH = "1000000000";

/** The AI side load: connections kept busy with quality requests while tips are paced. */
const AI_LOAD_CONNECTIONS = 8;
const AI_LOAD_TEXT = (
  "Tonight we build a small home battery from recycled laptop cells, test how long it keeps a fridge " +
  "running through a blackout, and compare it with a store-bought power station. Bring questions! "
).repeat(20);

/** Runs autocannon's CLI in a process of its own (so its work is not the tip load generator's). */
async function runAiLoad(
  base: string,
  token: string,
  durationS: number,
): Promise<{ ok: number; non2xx: number; p99Ms: number }> {
  const cli = join(process.cwd(), "node_modules", "autocannon", "autocannon.js");
  const body = JSON.stringify({ title: "A home battery from laptop cells", text: AI_LOAD_TEXT });
  const args = [cli, "-j", "-c", String(AI_LOAD_CONNECTIONS), "-d", String(durationS), "-m", "POST"];
  args.push("-H", `authorization=Bearer ${token}`, "-H", "content-type=application/json", "-b", body);
  const child = spawn(process.execPath, [...args, `${base}/api/ai/quality`], {
    stdio: ["ignore", "pipe", "ignore"],
  });
  let out = "";
  child.stdout.on("data", (d) => {
    out += d;
  });
  await new Promise((r) => child.once("exit", r));
  try {
    const j = JSON.parse(out) as { "2xx": number; non2xx: number; latency: { p99: number } };
    return { ok: j["2xx"], non2xx: j.non2xx, p99Ms: j.latency.p99 };
  } catch {
    return { ok: 0, non2xx: 0, p99Ms: 0 };
  }
}
/** Tokens outlive any run; the server checks exp, and a run must not see them expire. */
const TOKEN_TTL_S = 6 * 3600;
/** Longest the WAL may take to drain after a tip scenario before the run calls it a failure. */
const DRAIN_TIMEOUT_MS = 60_000;
/** Other processes' CPU (percent of a core) above which a scenario's figures are flagged noisy. */
const NOISY_OTHERS_PCT = 15;

const log = (msg: string) => console.log(`[bench] ${msg}`);
const secondsSince = (t0: number) => ((performance.now() - t0) / 1000).toFixed(1);
const fmtInt = (n: number) => n.toLocaleString("en-US");

/** Every child still running, so an interrupted run stops them (and only them). */
const children = new Set<ChildServer>();

async function start(o: Parameters<typeof startServer>[0]): Promise<ChildServer> {
  const child = await startServer(o);
  children.add(child);
  // The server reports its WAL persister thread's kernel id: its CPU is counted apart from the main thread's.
  for (const [name, tid] of await threadsFromMetrics(child.base))
    nameServerThread(child.proc.pid!, name, tid);
  return child;
}

async function stop(child: ChildServer): Promise<number | null> {
  const code = await child.stop();
  children.delete(child);
  return code;
}

/** The WAL Redis's command time per tip over a scenario and its drain (INFO commandstats): which
 * commands a tip costs and how many; its CPU as a whole is in the scenario's CPU table. */
async function walRedisNote(redis: Redis, before: CommandStats, ok: number): Promise<string> {
  const delta = commandStatsDelta(before, await readCommandStats(redis));
  return `WAL Redis command time per 2xx (a script's includes the commands it calls): ${formatPerOp(delta, ok)}`;
}

async function deleteRedisKeys(redis: Redis, prefix: string): Promise<number> {
  let cursor = "0";
  let n = 0;
  do {
    const [next, keys] = await redis.scan(cursor, "MATCH", `${prefix}*`, "COUNT", 1000);
    cursor = next;
    if (keys.length > 0) n += await redis.unlink(...keys);
  } while (cursor !== "0");
  return n;
}

/** Pino lines at warn (40) and above in a server's log: a clean run logs none. */
function logProblems(file: string): {
  warn: number;
  error: number;
  first: string | null;
  firstWarn: string | null;
} {
  let warn = 0;
  let error = 0;
  let first: string | null = null;
  let firstWarn: string | null = null;
  for (const line of readFileSync(file, "utf8").split("\n")) {
    if (!line.startsWith("{")) continue;
    try {
      const e = JSON.parse(line) as { level?: number; msg?: string };
      if ((e.level ?? 0) >= 50) {
        error++;
        first ??= e.msg ?? line.slice(0, 200);
      } else if ((e.level ?? 0) >= 40) {
        warn++;
        firstWarn ??= line.slice(0, 300);
      }
    } catch {
      // not a pino line
    }
  }
  return { warn, error, first, firstWarn };
}

function scenarioResult(
  name: ScenarioName,
  server: string,
  stats: LoadStats,
  tally: Tally | null,
  notes: string[],
): ScenarioResult {
  const out: ScenarioResult = {
    name,
    server,
    ...stats,
    okPerSec: Math.round(stats.status2xx / Math.max(stats.durationS, 1e-3)),
    cpuPerOpUs: cpuPerOp(stats.cpu?.micros, stats.status2xx),
    notes: [...notes],
  };
  if (tally && tally.overCap > 0) {
    out.notes.push(
      `${tally.overCap} tips from viewers past ${TIPS_PER_VIEWER_MAX}/hour: seed more with --viewers`,
    );
  }
  if (stats.cpu) {
    const c = stats.cpu;
    out.notes.push(
      `cpu % of a core: ${server} ${c.serverPct}, client ${c.loadGeneratorPct}, pg+redis ${c.databasesPct}, others ${c.othersPct}`,
    );
    if (c.othersPct > NOISY_OTHERS_PCT)
      out.notes.push(`NOISY: other processes took ${c.othersPct}% of a core`);
  }
  const codes = Object.entries(stats.errorCodes);
  if (codes.length > 0) out.notes.push(`non-2xx: ${codes.map(([c, n]) => `${c} ${n}`).join(", ")}`);
  if (tally?.errorSamples?.length) out.notes.push(`first non-2xx answers: ${tally.errorSamples.join(" | ")}`);
  if (stats.timeouts > 0) out.notes.push(`${stats.timeouts} timeouts`);
  return out;
}

interface RunState {
  o: BenchOptions;
  results: ScenarioResult[];
  checks: Check[];
  failures: string[];
  setup: string[];
  redis: Redis;
  redisUrl: string;
  /** The rate limiters' own Redis (RATE_LIMIT_REDIS_URL), or null: they share the WAL's. */
  limitsRedisUrl: string | null;
  secret: string;
}

async function runEcho(s: RunState, pop: Population): Promise<void> {
  const echo = await start({
    name: "echo",
    script: "bench/echo-server.ts",
    env: { NODE_ENV: "production" },
    logDir: `${s.o.outDir}logs/`,
    profileDir: s.o.profileDir,
    readyPath: "/healthz",
  });
  try {
    log(`echo: ${s.o.durationS} s, ${s.o.connections} connections`);
    // The very requests tip-uniform sends (own cursor: echo spends no viewer's fraud budget).
    const source = tipRequests({
      cursor: new ViewerCursor(pop.viewers),
      creators: pop.creators,
      hot: false,
      amountUsd: s.o.tipUsd,
    });
    const stats = await runLoad({
      url: echo.base,
      source,
      serverPid: echo.proc.pid!,
      connections: s.o.connections,
      durationS: s.o.durationS,
    });
    s.results.push(
      scenarioResult("echo", "echo", stats, null, [
        "bare uWS parsing the tip body: this client's ceiling here",
      ]),
    );
  } finally {
    await stop(echo);
  }
}

/** The 3AM server's environment for the bench: database `dbName`, Redis keys under `prefix`. */
function ledgerServerEnv(s: RunState, dbName: string, prefix: string): Record<string, string> {
  return {
    // production would demand real Stripe keys; nothing a tip or a balance read does depends on it.
    NODE_ENV: "development",
    LOG_LEVEL: "warn",
    HOST: "127.0.0.1",
    DATABASE_URL: databaseUrl(dbName),
    REDIS_URL: s.redisUrl,
    ...(s.limitsRedisUrl ? { RATE_LIMIT_REDIS_URL: s.limitsRedisUrl } : {}),
    ...(s.limitsRedisUrl && s.o.feedRedis === "volatile" ? { FEED_REDIS_URL: s.limitsRedisUrl } : {}),
    REDIS_PREFIX: prefix,
    SUPABASE_JWT_SECRET: s.secret,
    // Any free port for the in-process Stripe stand-in, so a running dev server is no obstacle.
    STRIPE_STANDIN_PORT: "0",
    // Rate limits stay on (per IP in Redis, per user in memory): they are part of what a request costs; the
    // budgets are too big to refuse anything (all load comes from one IP).
    RATE_LIMIT_IP_PER_MIN: RATE_LIMIT_BENCH,
    RATE_LIMIT_USER_PER_MIN: RATE_LIMIT_BENCH,
    RATE_LIMIT_AI_PER_MIN: RATE_LIMIT_BENCH,
    // The API process alone: the payout and email workers idle here and would only add noise.
    RUN_WORKERS: "false",
    WISE_STANDIN_PORT: "0",
    AIRWALLEX_STANDIN_PORT: "0",
    // Every AI request is analysed (the AI load repeats one body, which the cache would answer).
    AI_CACHE_MAX: "0",
  };
}

/** A fresh ledger database `dbName` with the population's deposits, and no Redis key under `prefix`. */
async function seededLedgerDatabase(
  s: RunState,
  pop: Population,
  dbName: string,
  prefix: string,
  shards: number,
): Promise<pg.Pool> {
  const t0 = performance.now();
  await recreateDatabase(dbName);
  await deleteRedisKeys(s.redis, prefix);
  const pool = createPool(databaseUrl(dbName), 4);
  pool.on("error", (err) => log(`bench pool (${dbName}): idle connection lost: ${err.message}`));
  try {
    await migrate(pool);
    await seedLedger(pool, pop, shards);
  } catch (err) {
    await pool.end();
    throw err;
  }
  s.setup.push(
    `ledger database ${dbName}: ${pop.viewers.length} viewers with a $${pop.depositCents / 100} deposit each, ${pop.creators.length} creators, seeded in ${secondsSince(t0)} s`,
  );
  log(`seeded ${dbName} in ${secondsSince(t0)} s`);
  return pool;
}

async function runLedgerServer(s: RunState, pop: Population): Promise<void> {
  const { o } = s;
  const prefix = `${o.dbName}:`;
  const serverEnv = ledgerServerEnv(s, o.dbName, prefix);
  const config = loadConfig({ ...process.env, ...serverEnv });
  s.setup.push(
    `3AM server: SHARDS=${config.SHARDS}, PERSIST_LANES=${config.PERSIST_LANES}, WAL_BATCH_MAX=${config.WAL_BATCH_MAX}, fraud rules at their defaults (${config.FRAUD_MAX_TX_PER_HOUR} tips/hour, $${config.FRAUD_MAX_VOLUME_PER_HOUR_USD}/hour), NODE_ENV=development (production insists on real Stripe keys)`,
    `rate limits on (per IP counted in Redis, per user in the server's memory; RATE_LIMIT_IP_PER_MIN=RATE_LIMIT_USER_PER_MIN=${RATE_LIMIT_BENCH}): budgets too big to refuse the bench's single IP, so every request pays for both checks as in production; ${s.limitsRedisUrl ? "per-IP counters in a second redis-server of the bench's, without persistence (RATE_LIMIT_REDIS_URL), so no fsync is on their path" : "per-IP counters in the same Redis as the WAL"}; ${s.limitsRedisUrl && o.feedRedis === "volatile" ? "the creators' live feed streams in that Redis too (FEED_REDIS_URL: they are refilled from Postgres if lost)" : "the creators' live feed streams in the WAL's Redis"}`,
  );

  const pool = await seededLedgerDatabase(s, pop, o.dbName, prefix, config.SHARDS);
  try {
    await runLedgerScenarios(s, pop, pool, serverEnv, config.SHARDS);
  } finally {
    await pool.end();
  }
}

async function runLedgerScenarios(
  s: RunState,
  pop: Population,
  pool: pg.Pool,
  serverEnv: Record<string, string>,
  shards: number,
): Promise<void> {
  const { o } = s;
  const server = await start({
    name: "server",
    script: "src/main/main.ts",
    env: serverEnv,
    logDir: `${o.outDir}logs/`,
    profileDir: o.profileDir,
    readyPath: "/readyz",
  });
  const monitor = new WalMonitor(s.redis, serverEnv.REDIS_PREFIX!, shards, `${server.base}/readyz`);
  const cursor = new ViewerCursor(pop.viewers);
  const acc: TipAccounting = { ackedKeys: [], issued: 0, unansweredBound: 0 };
  const want = (n: ScenarioName) => o.scenarios.includes(n);
  let stopped = false;
  try {
    // Warm-up, not measured: every creator's and viewer's account and token loaded once, so the
    // scenarios measure the steady state rather than first touches (reported as a setup line).
    const tw = performance.now();
    const everyone = [...pop.creators, ...pop.viewers];
    const warm = balanceRequests(everyone);
    const warmStats = await runLoad({
      url: server.base,
      source: warm,
      serverPid: server.proc.pid!,
      connections: o.connections,
      amount: everyone.length,
    });
    s.setup.push(
      `warm-up (not measured): one GET balance per creator and viewer, ${warmStats.status2xx} ok / ${warmStats.non2xx} non-2xx in ${secondsSince(tw)} s (${warmStats.reqPerSec} req/s, p99 ${warmStats.latencyMs.p99} ms: first touches load accounts from Postgres)`,
    );
    if (warmStats.non2xx > 0 || warmStats.errors > 0) {
      s.failures.push(`warm-up: ${warmStats.non2xx} non-2xx, ${warmStats.errors} errors`);
    }

    if (want("balance")) {
      log(`balance: ${o.durationS} s`);
      const b = balanceRequests(pop.viewers);
      const stats = await runLoad({
        url: server.base,
        source: b,
        serverPid: server.proc.pid!,
        connections: o.connections,
        durationS: o.durationS,
      });
      s.results.push(
        scenarioResult("balance", "3am", stats, b.tally, ["GET balance, each viewer with its own token"]),
      );
    }

    const tipScenario = async (
      name: ScenarioName,
      hot: boolean,
      rate: { perS: number; paced: boolean } | null,
      notes: string[],
    ): Promise<ScenarioResult> => {
      log(`${name}: ${o.durationS} s${rate ? ` at ${rate.perS} req/s` : ""}`);
      const t = tipRequests({ cursor, creators: pop.creators, hot, amountUsd: o.tipUsd });
      if (name === "tip-uniform") monitor.start(250);
      const redisBefore = await readCommandStats(s.redis);
      const load = {
        url: server.base,
        source: t,
        serverPid: server.proc.pid!,
        connections: o.connections,
        durationS: o.durationS,
      };
      // Paced latency counts from when a request was due, so a stall of the load generator's own
      // event loop (its GC, say) shows up as server latency: measure it to tell the two apart.
      const clientDelay = rate?.paced ? monitorEventLoopDelay({ resolution: 1 }) : null;
      clientDelay?.enable();
      const stats = rate?.paced
        ? await runPaced({ ...load, ratePerS: rate.perS })
        : await runLoad({ ...load, ...(rate ? { overallRate: rate.perS } : {}) });
      if (clientDelay) {
        clientDelay.disable();
        const ms = (ns: number) => (ns / 1e6).toFixed(1);
        notes.push(
          `load generator's own event-loop delay p99 ${ms(clientDelay.percentile(99))} ms, max ${ms(clientDelay.max)} ms (counted in this latency)`,
        );
      }
      const endedAt = Date.now();
      const wal = name === "tip-uniform" ? await monitor.stop() : null;
      const drainMs = await monitor.waitDrained(endedAt, DRAIN_TIMEOUT_MS);
      if (drainMs === null) s.failures.push(`${name}: the WAL did not drain within ${DRAIN_TIMEOUT_MS} ms`);
      for (const k of t.tally.ackedKeys) acc.ackedKeys.push(k); // a spread of 100k+ overflows the stack
      acc.issued += t.tally.issued;
      // autocannon drops what is in flight when its time is up (one per connection); the paced
      // load waits for every answer, so only its timeouts can be committed but unanswered.
      acc.unansweredBound += (rate?.paced ? 0 : o.connections) + stats.timeouts;
      const r = scenarioResult(name, "3am", stats, t.tally, notes);
      r.notes.push(await walRedisNote(s.redis, redisBefore, stats.status2xx));
      if (wal) {
        r.wal = { ...wal, drainMs };
        r.notes.push(
          `WAL lag max ${wal.lagMaxMs} ms (/readyz ${wal.readyzLagMaxMs ?? "n/a"} ms), ${wal.unpersistedMax} entries max, drained ${drainMs ?? "never"} ms after`,
        );
      } else {
        r.notes.push(`WAL drained ${drainMs ?? "never"} ms after`);
      }
      s.results.push(r);
      return r;
    };

    let uniform: ScenarioResult | null = null;
    if (want("tip-uniform")) {
      uniform = await tipScenario("tip-uniform", false, null, [
        `${pop.viewers.length} viewers round-robin -> ${pop.creators.length} creators at random`,
      ]);
    }
    const half = uniform ? Math.max(1, Math.floor(uniform.reqPerSec / 2)) : 0;
    if (want("tip-uniform-half") && uniform) {
      await tipScenario("tip-uniform-half", false, { perS: half, paced: false }, [
        `autocannon overallRate ${half} req/s (half of tip-uniform): each connection sends its second's budget back to back, so this p99 is close to full load's`,
      ]);
    }
    if (want("tip-uniform-half-paced") && uniform) {
      await tipScenario("tip-uniform-half-paced", false, { perS: half, paced: true }, [
        `${half} req/s evenly paced, open loop (bench/paced.ts), latency from when each request was due`,
      ]);
    }
    if (want("tip-uniform-half-paced-ai") && uniform) {
      const ai = runAiLoad(server.base, pop.viewers[0]!.token, o.durationS);
      const r = await tipScenario("tip-uniform-half-paced-ai", false, { perS: half, paced: true }, [
        `${half} req/s evenly paced as tip-uniform-half-paced, while ${AI_LOAD_CONNECTIONS} other connections (autocannon in its own process) send POST /api/ai/quality with a ${AI_LOAD_TEXT.length}-character text back to back (cache off: every one analysed on the AI pool)`,
      ]);
      const a = await ai;
      r.notes.push(
        `AI load: ${a.ok} quality answers 2xx (${(a.ok / o.durationS).toFixed(1)}/s), ${a.non2xx} non-2xx, p99 ${a.p99Ms} ms`,
      );
      const base = s.results.find((x) => x.name === "tip-uniform-half-paced");
      if (base) {
        r.notes.push(
          `tip p99 with AI load / without (same run): ${(r.latencyMs.p99 / Math.max(base.latencyMs.p99, 0.001)).toFixed(2)} (${r.latencyMs.p99} vs ${base.latencyMs.p99} ms)`,
        );
      }
    }
    if (want("tip-hot")) {
      await tipScenario("tip-hot", true, null, [`every tip to ${pop.creators[0]!.username}`]);
    }

    // WebSocket tipping: each socket a viewer's, a window of TIPS_PER_VIEWER_MAX tips in flight.
    const wsScenario = async (
      name: ScenarioName,
      hot: boolean,
      feed: FeedWatch | null,
    ): Promise<ScenarioResult> => {
      log(
        `${name}: ${o.durationS} s, ${o.connections} sockets${feed ? ` (+ ${o.feedSubscribers} feed subscribers)` : ""}`,
      );
      const tally: Tally = { ackedKeys: [], issued: 0, overCap: 0, errorCodes: {} };
      const redisBefore = await readCommandStats(s.redis);
      const stats = await runWsTips(
        {
          base: server.base,
          cursor,
          creators: pop.creators,
          hot,
          amountUsd: o.tipUsd,
          sockets: o.connections,
          window: TIPS_PER_VIEWER_MAX,
          durationS: o.durationS,
          serverPid: server.proc.pid!,
          processes: o.wsProcesses,
          ...(feed ? { onAck: (id: string, at: number) => feed.onAck(id, at) } : {}),
        },
        tally,
      );
      const drainMs = await monitor.waitDrained(Date.now(), DRAIN_TIMEOUT_MS);
      if (drainMs === null) s.failures.push(`${name}: the WAL did not drain within ${DRAIN_TIMEOUT_MS} ms`);
      for (const k of tally.ackedKeys) acc.ackedKeys.push(k);
      acc.issued += tally.issued;
      // Every ack is awaited; only tips of a socket that died unanswered may be committed unseen.
      acc.unansweredBound += stats.errors;
      const http = s.results.find((r) => r.name === (hot ? "tip-hot" : "tip-uniform"));
      const r = scenarioResult(name, "3am", stats, tally, [
        `${o.connections} sockets at once, ${TIPS_PER_VIEWER_MAX} tips in flight each (a viewer's hourly allowance), then the next viewer's socket; latency from send to ack; ${Math.min(o.wsProcesses, o.connections)} load-generator process(es)`,
        `WAL drained ${drainMs ?? "never"} ms after`,
        ...(http
          ? [
              `${(stats.status2xx / Math.max(stats.durationS, 1e-3) / Math.max(http.okPerSec, 1)).toFixed(2)}x the HTTP ${http.name} tips/s of this run`,
            ]
          : []),
      ]);
      r.notes.push(await walRedisNote(s.redis, redisBefore, stats.status2xx));
      s.results.push(r);
      return r;
    };
    if (want("ws-tip-uniform")) await wsScenario("ws-tip-uniform", false, null);
    if (want("ws-tip-hot")) {
      let feed: FeedWatch | null = null;
      const hotCreator = pop.creators[0]!;
      if (want("ws-feed")) {
        const made = await fetch(`${server.base}/api/users/${hotCreator.id}/overlay-key`, {
          method: "POST",
          headers: { authorization: `Bearer ${hotCreator.token}` },
        });
        const key = ((await made.json()) as { overlay_key: string }).overlay_key;
        feed = await watchFeed(server.base, key, o.feedSubscribers, o.feedBatch);
      }
      const hot = await wsScenario("ws-tip-hot", true, feed);
      if (feed) {
        // The feed's newest number once every credit of the burst reached it.
        const feedKey = `${serverEnv.REDIS_PREFIX}feed:${hotCreator.id}`;
        const feedRedis = serverEnv.FEED_REDIS_URL ? new Redis(serverEnv.FEED_REDIS_URL) : s.redis;
        const top = async () => {
          const r = (await feedRedis.xrevrange(feedKey, "+", "-", "COUNT", 1)) as Array<[string, string[]]>;
          return r.length > 0 ? Number(r[0]![0].split("-")[0]) : 0;
        };
        let last = -1;
        try {
          for (let i = 0; i < 100; i++) {
            const t = await top();
            if (t === last) break;
            last = t;
            await new Promise((r) => setTimeout(r, 200));
          }
        } finally {
          if (feedRedis !== s.redis) feedRedis.disconnect();
        }
        const f = await feed.finish(last, 30_000);
        s.results.push({
          name: "ws-feed",
          server: "3am",
          connections: f.subscribers,
          durationS: hot.durationS,
          overallRate: null,
          requests: f.subscribers * f.expectedEach - f.lost,
          sent: f.subscribers * f.expectedEach,
          reqPerSec: Math.round((f.subscribers * f.expectedEach) / Math.max(hot.durationS, 1e-3)),
          okPerSec: Math.round((f.subscribers * f.expectedEach) / Math.max(hot.durationS, 1e-3)),
          latencyMs: f.deliveryMs,
          status2xx: f.subscribers * f.expectedEach - f.lost,
          non2xx: 0,
          errors: f.closedEarly,
          timeouts: 0,
          statusCodes: {},
          errorCodes: {},
          cpu: null,
          notes: [
            `${f.subscribers} overlay subscribers of ${hotCreator.username} during ws-tip-hot, ${f.expectedEach} tips each; latency from the tipper's ack to receipt (same process); ${o.feedBatch ? `subscribed with batch: ${f.frames} frames, ${((f.subscribers * f.expectedEach) / Math.max(f.frames, 1)).toFixed(1)} tips per frame` : `a frame per tip (--feed-frames tip): ${f.frames} frames`}`,
            `lost ${f.lost}, duplicated ${f.duplicated}, out of order ${f.outOfOrder}, closed early ${f.closedEarly}`,
            ...(f.handshakesRetried > 0
              ? [`${f.handshakesRetried} subscriber upgrades answered 503/429 and retried after Retry-After`]
              : []),
          ],
        });
        s.checks.push({
          name: "ws-feed: every subscriber got every tip of the burst once, in order",
          ok:
            f.lost === 0 &&
            f.duplicated === 0 &&
            f.outOfOrder === 0 &&
            f.closedEarly === 0 &&
            f.expectedEach > 0,
          detail: `${f.subscribers} subscribers x ${f.expectedEach} tips: lost ${f.lost}, duplicated ${f.duplicated}, out of order ${f.outOfOrder}, closed early ${f.closedEarly}`,
        });
      }
    }

    const tipsRan = want("tip-uniform") || want("tip-hot") || want("ws-tip-uniform") || want("ws-tip-hot");
    if (tipsRan) s.checks.push(await creatorBalancesCheck(server.base, pool, pop));
    const code = await stop(server);
    stopped = true;
    s.checks.push({
      name: "ledger: server stopped cleanly on SIGTERM (HTTP closed, WAL drained)",
      ok: code === 0,
      detail: `exit code ${code}`,
    });
    const problems = logProblems(server.logFile);
    s.checks.push({
      name: "ledger: server logged no errors",
      ok: problems.error === 0,
      detail: `${problems.error} error and ${problems.warn} warning lines in ${server.logFile}${problems.first ? `; first error: ${problems.first}` : ""}`,
    });
    if (tipsRan) s.checks.push(...(await ledgerChecks(pool, acc, pop)));
  } finally {
    if (!stopped) {
      await stop(server);
      // Aborted: what the server said is the first clue.
      const p = logProblems(server.logFile);
      s.failures.push(
        `3AM server's log at the abort: ${p.error} error and ${p.warn} warning lines in ${server.logFile}; first error: ${p.first ?? "none"}; first warning: ${p.firstWarn ?? "none"}`,
      );
    }
  }
}

/** tip-uniform-spread2: server processes sharing the shards (LEDGER_SPREAD), and how long they
 * may take to divide them once all are up (a membership beat and a lease handover each). */
const SPREAD_PROCESSES = 2;
const SPREAD_DIVIDE_TIMEOUT_MS = 60_000;

interface SpreadView {
  ready: boolean;
  owned: number[];
  processes: number | null;
  share: number | null;
}

async function spreadView(base: string): Promise<SpreadView> {
  try {
    const r = await fetch(`${base}/readyz`);
    const body = (await r.json()) as {
      status?: string;
      ledger?: { shards_owned?: number[]; processes?: number; share?: number };
    };
    return {
      ready: body.status === "ready",
      owned: body.ledger?.shards_owned ?? [],
      processes: body.ledger?.processes ?? null,
      share: body.ledger?.share ?? null,
    };
  } catch {
    return { ready: false, owned: [], processes: null, share: null };
  }
}

/** Waits until every server sees all of them alive, owns exactly its share, and together they own
 * every shard once; the shards each owns then. */
async function waitForDivision(
  servers: ChildServer[],
  shards: number,
  timeoutMs: number,
): Promise<number[][]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const views = await Promise.all(servers.map((sv) => spreadView(sv.base)));
    const all = views.flatMap((v) => v.owned);
    const divided =
      views.every((v) => v.ready && v.processes === servers.length && v.owned.length === v.share) &&
      all.length === shards &&
      new Set(all).size === shards;
    if (divided) return views.map((v) => v.owned);
    if (Date.now() > deadline) {
      throw new Error(
        `the ${servers.length} spread servers did not divide the ${shards} shards within ${timeoutMs} ms: ${JSON.stringify(views)}`,
      );
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * tip-uniform against SPREAD_PROCESSES server processes with LEDGER_SPREAD=true on one database
 * and Redis (a database of their own, seeded as tip-uniform's), the load's connections split
 * evenly between them: a tip whose sender's shard the other process owns is forwarded to it, and
 * a credit for a creator owned elsewhere is sent there. Each process's answers and CPU are
 * reported apart; the checks are tip-uniform's, on this database.
 */
async function runSpread(s: RunState, pop: Population): Promise<void> {
  const { o } = s;
  const dbName = `${o.dbName}_spread`;
  const prefix = `${dbName}:`;
  const env: Record<string, string> = {
    ...ledgerServerEnv(s, dbName, prefix),
    LEDGER_SPREAD: "true",
    INTERNAL_TOKEN: randomBytes(16).toString("hex"),
  };
  const config = loadConfig({ ...process.env, ...env });
  const pool = await seededLedgerDatabase(s, pop, dbName, prefix, config.SHARDS);
  const servers: ChildServer[] = [];
  let stopped = false;
  try {
    // One after the other, as a deployment scales out: the first takes every shard, the next
    // joins and the first gives it its share.
    for (let i = 0; i < SPREAD_PROCESSES; i++) {
      servers.push(
        await start({
          name: `server-spread-${String.fromCharCode(97 + i)}`,
          script: "src/main/main.ts",
          env,
          logDir: `${o.outDir}logs/`,
          profileDir: o.profileDir,
          readyPath: "/readyz",
        }),
      );
    }
    const td = performance.now();
    const owned = await waitForDivision(servers, config.SHARDS, SPREAD_DIVIDE_TIMEOUT_MS);
    const ownerOfShard = new Map<number, number>();
    owned.forEach((list, i) => {
      for (const shard of list) ownerOfShard.set(shard, i);
    });
    const ownerIndex = (id: string) => ownerOfShard.get(shardOf(id, config.SHARDS))!;
    const hosts = servers.map((sv) => new URL(sv.base).host);
    s.setup.push(
      `tip-uniform-spread2: ${SPREAD_PROCESSES} 3AM servers with LEDGER_SPREAD=true (SHARDS=${config.SHARDS}, an INTERNAL_TOKEN shared, INTERNAL_URL their own listen address) on database ${dbName} and Redis prefix ${prefix}; shards divided ${owned.map((l, i) => `${servers[i]!.name} [${l.join(",")}]`).join(", ")} ${secondsSince(td)} s after the last one was ready`,
    );

    // Warm-up, not measured: every account read once through each process (each one's token cache
    // then knows every viewer, as the single server's does; a read of an account owned by the
    // other process is forwarded and loads it there).
    const tw = performance.now();
    const everyone = [...pop.creators, ...pop.viewers];
    const warm = await Promise.all(
      servers.map((sv) =>
        runLoad({
          url: sv.base,
          source: balanceRequests(everyone),
          connections: Math.max(1, Math.floor(o.connections / servers.length)),
          amount: everyone.length,
        }),
      ),
    );
    const warmOk = warm.reduce((n, w) => n + w.status2xx, 0);
    const warmBad = warm.reduce((n, w) => n + w.non2xx + w.errors, 0);
    const warmWhy = warm
      .map(
        (w, i) =>
          `${servers[i]!.name}: ${w.non2xx} non-2xx (${JSON.stringify(w.errorCodes)}), ${w.errors} errors of which ${w.timeouts} timeouts, p99 ${w.latencyMs.p99} ms`,
      )
      .join("; ");
    s.setup.push(
      `tip-uniform-spread2 warm-up (not measured): one GET balance per creator and viewer through each process, ${warmOk} ok / ${warmBad} non-2xx or errors in ${secondsSince(tw)} s (${warmWhy})`,
    );
    if (warmBad > 0)
      s.failures.push(`tip-uniform-spread2 warm-up: ${warmBad} non-2xx or errors (${warmWhy})`);

    // A persister restarted when its shards changed is a new thread: named again before measuring.
    for (const sv of servers) {
      for (const [name, tid] of await threadsFromMetrics(sv.base)) nameServerThread(sv.proc.pid!, name, tid);
    }

    const name: ScenarioName = "tip-uniform-spread2";
    log(`${name}: ${o.durationS} s, ${o.connections} connections over ${servers.length} servers`);
    const routes = new Map<string, RouteTally>();
    const t = tipRequests({
      cursor: new ViewerCursor(pop.viewers),
      creators: pop.creators,
      hot: false,
      amountUsd: o.tipUsd,
      ownerHost: (id) => hosts[ownerIndex(id)]!,
      routes,
    });
    const redisBefore = await readCommandStats(s.redis);
    const stats = await runLoad({
      url: servers.map((sv) => sv.base),
      source: t,
      serverPid: servers.map((sv) => sv.proc.pid!),
      connections: o.connections,
      durationS: o.durationS,
    });
    const endedAt = Date.now();
    const after = await Promise.all(servers.map((sv) => spreadView(sv.base)));
    const monitor = new WalMonitor(s.redis, prefix, config.SHARDS, null);
    const drainMs = await monitor.waitDrained(endedAt, DRAIN_TIMEOUT_MS);
    if (drainMs === null) s.failures.push(`${name}: the WAL did not drain within ${DRAIN_TIMEOUT_MS} ms`);
    const acc: TipAccounting = {
      ackedKeys: t.tally.ackedKeys,
      issued: t.tally.issued,
      unansweredBound: o.connections + stats.timeouts,
    };

    const sent = [...routes.values()].reduce((n, r) => n + r.sent, 0);
    const forwarded = [...routes.values()].reduce((n, r) => n + r.senderElsewhere, 0);
    const crossing = [...routes.values()].reduce((n, r) => n + r.creditElsewhere, 0);
    const pct = (x: number, of: number) => `${((100 * x) / Math.max(of, 1)).toFixed(1)}%`;
    const moved = after.some((v, i) => v.owned.join(",") !== owned[i]!.join(","));
    const r = scenarioResult(name, "3am", stats, t.tally, [
      `${pop.viewers.length} viewers round-robin -> ${pop.creators.length} creators at random, as tip-uniform; ${servers.length} LEDGER_SPREAD processes, ${o.connections} connections taking them in turn`,
      `forwarded (sender's shard owned by the other process, by the placement read from /readyz): ${pct(forwarded, sent)} of ${sent} tips sent; credits crossing to the other process: ${pct(crossing, sent)}`,
      moved
        ? `SHARDS MOVED during the load: before ${JSON.stringify(owned)}, after ${JSON.stringify(after.map((v) => v.owned))}`
        : "no shard changed hands during the load",
      `WAL drained ${drainMs ?? "never"} ms after`,
    ]);
    r.perServer = servers.map((sv, i) => {
      const part = stats.perUrl?.[i];
      const route = routes.get(hosts[i]!);
      return {
        name: sv.name,
        url: sv.base,
        connections: part?.connections ?? 0,
        requests: part?.requests ?? 0,
        reqPerSec: part?.reqPerSec ?? 0,
        status2xx: part?.status2xx ?? 0,
        non2xx: part?.non2xx ?? 0,
        latencyMs: part?.latencyMs ?? { p50: 0, p90: 0, p99: 0, max: 0, mean: 0 },
        shards: owned[i]!,
        cpuPerOpUs: serverCpuPerOp(stats.cpu?.perServer[i], stats.status2xx),
        forwardedShare:
          route && route.sent > 0 ? Math.round((route.senderElsewhere / route.sent) * 1000) / 1000 : null,
      };
    });
    for (const p of r.perServer) {
      const c = p.cpuPerOpUs;
      r.notes.push(
        `${p.name} (shards ${p.shards.join(",")}): ${fmtInt(p.reqPerSec)} req/s over ${p.connections} connections, ${p.status2xx} 2xx, ${p.non2xx} non-2xx, p50 ${p.latencyMs.p50} ms, p99 ${p.latencyMs.p99} ms, ${p.forwardedShare === null ? "?" : (p.forwardedShare * 100).toFixed(1)}% forwarded; cpu us per 2xx of the scenario: ${c ? `${c.server} (main ${c.serverMain}, persister ${c.serverPersister}, other ${c.serverOther})` : "n/a"}`,
      );
    }
    const uniform = s.results.find((x) => x.name === "tip-uniform");
    if (uniform) {
      const a = r.cpuPerOpUs?.server;
      const b = uniform.cpuPerOpUs?.server;
      r.notes.push(
        `${(r.okPerSec / Math.max(uniform.okPerSec, 1)).toFixed(2)}x the tips/s of tip-uniform (one process) in this run${a && b ? `; server CPU per tip ${a} us over both processes against ${b} us (${(a / b).toFixed(2)}x)` : ""}`,
      );
    }
    r.notes.push(await walRedisNote(s.redis, redisBefore, stats.status2xx));
    s.results.push(r);

    s.checks.push(
      await creatorBalancesCheck((id) => servers[ownerIndex(id)]!.base, pool, pop, "ledger-spread"),
    );
    // Stopped together, as a deployment is: neither takes over the other's shards on its way out.
    const codes = await Promise.all(servers.map((sv) => stop(sv)));
    stopped = true;
    s.checks.push({
      name: "ledger-spread: both servers stopped cleanly on SIGTERM (HTTP closed, WAL drained)",
      ok: codes.every((c) => c === 0),
      detail: servers.map((sv, i) => `${sv.name} exit code ${codes[i]}`).join(", "),
    });
    const problems = servers.map((sv) => ({ sv, p: logProblems(sv.logFile) }));
    s.checks.push({
      name: "ledger-spread: servers logged no errors",
      ok: problems.every(({ p }) => p.error === 0),
      detail: problems
        .map(
          ({ sv, p }) =>
            `${p.error} error and ${p.warn} warning lines in ${sv.logFile}${p.first ? `; first error: ${p.first}` : ""}`,
        )
        .join("; "),
    });
    s.checks.push(...(await ledgerChecks(pool, acc, pop, "ledger-spread")));
  } finally {
    if (!stopped) for (const sv of servers) await stop(sv);
    await pool.end();
  }
}

async function peerStats(base: string): Promise<{ conflicts: number; gaveUp: number; fraudBlocked: number }> {
  const r = await fetch(`${base}/bench/stats`);
  return (await r.json()) as { conflicts: number; gaveUp: number; fraudBlocked: number };
}

async function runPeer(s: RunState, pop: Population): Promise<void> {
  const { o } = s;
  const name = `${o.dbName}_peer`;
  const t0 = performance.now();
  await recreateDatabase(name);
  const pool = createPool(databaseUrl(name), 4);
  pool.on("error", (err) => log(`bench pool (${name}): idle connection lost: ${err.message}`));
  let peer: ChildServer | null = null;
  try {
    await seedPeer(pool, pop);
    s.setup.push(
      `peer-seed database ${name}: the seed brief's schema (DECIMAL dollars, version column), same people and deposits, seeded in ${secondsSince(t0)} s`,
      "peer-seed: Express 5 + pg (default pool of 10), per tip: creator lookup, velocity/volume fraud query, then BEGIN; read sender balance+version; UPDATE ... WHERE version matches; same for the creator; INSERT transaction; COMMIT (a 0-row UPDATE rolls back and retries, up to 10 times, then 409); JWT verified with jose on every request",
    );
    log(`seeded ${name} in ${secondsSince(t0)} s`);
    peer = await start({
      name: "peer-seed",
      script: "bench/peers/peer-seed.ts",
      env: { NODE_ENV: "production", DATABASE_URL: databaseUrl(name), SUPABASE_JWT_SECRET: s.secret },
      logDir: `${o.outDir}logs/`,
      profileDir: o.profileDir,
      readyPath: "/healthz",
    });
    const cursor = new ViewerCursor(pop.viewers);
    const acc: TipAccounting = { ackedKeys: [], issued: 0, unansweredBound: 0 };
    for (const [scenario, hot] of [
      ["peer-seed-uniform", false],
      ["peer-seed-hot", true],
    ] as const) {
      if (!o.scenarios.includes(scenario)) continue;
      log(`${scenario}: ${o.durationS} s`);
      const before = await peerStats(peer.base);
      const t = tipRequests({ cursor, creators: pop.creators, hot, amountUsd: o.tipUsd });
      const stats = await runLoad({
        url: peer.base,
        source: t,
        serverPid: peer.proc.pid!,
        connections: o.connections,
        durationS: o.durationS,
      });
      const after = await peerStats(peer.base);
      for (const k of t.tally.ackedKeys) acc.ackedKeys.push(k); // a spread of 100k+ overflows the stack
      acc.issued += t.tally.issued;
      acc.unansweredBound += o.connections + stats.timeouts;
      const diff = {
        conflicts: after.conflicts - before.conflicts,
        gaveUp: after.gaveUp - before.gaveUp,
        fraudBlocked: after.fraudBlocked - before.fraudBlocked,
      };
      const r = scenarioResult(scenario, "peer-seed", stats, t.tally, [
        hot ? `every tip to ${pop.creators[0]!.username}` : `random creator of ${pop.creators.length}`,
        `${diff.conflicts} version conflicts retried, ${diff.gaveUp} gave up`,
      ]);
      r.peer = diff;
      s.results.push(r);
    }
    const code = await stop(peer);
    peer = null;
    s.checks.push({ name: "peer-seed: stopped cleanly", ok: code === 0, detail: `exit code ${code}` });
    if (acc.issued > 0) s.checks.push(...(await peerChecks(pool, acc, pop)));
  } finally {
    if (peer) await stop(peer);
    await pool.end();
  }
}

async function machineInfo(redis: Redis): Promise<Record<string, unknown>> {
  const cfg = async (k: string) => ((await redis.config("GET", k)) as string[])[1] ?? "?";
  const info = await redis.info("server");
  return {
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model ?? "?",
    node: process.version,
    redisVersion: /redis_version:(\S+)/.exec(info)?.[1] ?? "?",
    redisAppendonly: await cfg("appendonly").catch(() => "?"),
    redisAppendfsync: await cfg("appendfsync").catch(() => "?"),
  };
}

/** Postgres and Redis must be there before anything starts; one line says which is not. */
async function preflight(redis: Redis, redisUrl: string): Promise<void> {
  const admin = new pg.Client({ connectionString: adminUrl() });
  try {
    await admin.connect();
    await admin.query("SELECT 1");
  } catch (err) {
    throw new Error(
      `cannot reach Postgres at ${adminUrl()} (${(err as Error).message}); set BENCH_PG_ADMIN_URL`,
    );
  } finally {
    await admin.end().catch(() => {});
  }
  try {
    await redis.connect();
    await redis.ping();
  } catch (err) {
    throw new Error(`cannot reach Redis at ${redisUrl} (${(err as Error).message}); set REDIS_URL`);
  }
}

async function main(): Promise<number> {
  const o = parseOptions(process.argv.slice(2));
  const own = o.redis === "durable" ? await startBenchRedises(o) : null;
  // However the bench ends (a crash, a closed stdout, a signal), no server or Redis it started
  // outlives it.
  const orphans = () => {
    for (const c of children) c.proc.kill("SIGKILL");
    own?.wal.kill();
    own?.limits.kill();
    if (own && !o.keep) rmSync(own.wal.dir, { recursive: true, force: true });
  };
  process.once("exit", orphans);
  try {
    return await runAll(o, own);
  } finally {
    await Promise.all([own?.wal.stop(), own?.limits.stop()]);
    if (own && !o.keep) rmSync(own.wal.dir, { recursive: true, force: true });
    else if (own) log(`kept the bench Redis's AOF in ${own.wal.dir}`);
    process.off("exit", orphans);
  }
}

/** --redis durable: the WAL's redis-server (appendfsync always) and the rate limiters' (none). */
async function startBenchRedises(o: BenchOptions): Promise<{ wal: BenchRedis; limits: BenchRedis }> {
  mkdirSync(`${o.outDir}logs/`, { recursive: true });
  const dir = mkdtempSync(join(tmpdir(), "3am-bench-redis-"));
  let wal: BenchRedis | null = null;
  try {
    wal = await startBenchRedisServer(dir, `${o.outDir}logs/redis-wal.log`, true);
    const limits = await startBenchRedisServer(dir, `${o.outDir}logs/redis-limits.log`, false);
    return { wal, limits };
  } catch (err) {
    await wal?.stop();
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

async function runAll(o: BenchOptions, own: { wal: BenchRedis; limits: BenchRedis } | null): Promise<number> {
  const redisUrl = own?.wal.url ?? SHARED_REDIS_URL;
  const redis = new Redis(redisUrl, {
    lazyConnect: true,
    maxRetriesPerRequest: 2,
    retryStrategy: (attempt) => (attempt > 3 ? null : 200),
  });
  redis.on("error", () => {}); // failures surface from the commands that hit them
  try {
    await preflight(redis, redisUrl);
  } catch (err) {
    redis.disconnect();
    throw err;
  }
  const s: RunState = {
    o,
    results: [],
    checks: [],
    failures: [],
    setup: [],
    redis,
    redisUrl,
    limitsRedisUrl: own?.limits.url ?? null,
    secret: randomBytes(32).toString("hex"),
  };
  const machine = await machineInfo(redis);
  const at = new Date().toISOString();
  const needSpread = o.scenarios.includes("tip-uniform-spread2");
  const needServer = o.scenarios.some(
    (n) => n !== "tip-uniform-spread2" && (n === "balance" || n.startsWith("tip-") || n.startsWith("ws-")),
  );
  const needPeer = o.scenarios.some((n) => n.startsWith("peer-seed"));
  const viewers = needServer || needSpread || needPeer ? viewersNeeded(o) : 1000;

  log(`scenarios: ${o.scenarios.join(", ")}; ${o.durationS} s each, ${o.connections} connections`);
  s.setup.push(
    `machine: ${machine.cpus} cores (${machine.cpuModel}), ${machine.node}; load generator (autocannon, in this process), server, Postgres and Redis share them`,
    machine.redisAppendonly === "yes"
      ? `Redis ${machine.redisVersion} with appendonly yes, appendfsync ${machine.redisAppendfsync}${own ? ` (the bench's own redis-server, --redis durable: an acknowledged tip is fsynced in its AOF)` : " (--redis shared)"}`
      : `Redis ${machine.redisVersion} has no AOF (appendonly ${machine.redisAppendonly}): "acknowledged" here means Redis-acknowledged (in memory), not on disk`,
  );
  if (viewers < MIN_VIEWERS && (needServer || needSpread || needPeer)) {
    s.setup.push(`only ${viewers} viewers (--viewers): fewer than the ${MIN_VIEWERS} the issue asks for`);
  }

  const t0 = performance.now();
  const pop = makePopulation(viewers, o.creators, o.depositCents, s.secret, TOKEN_TTL_S);
  // The tokens must be ones the server accepts; a mismatch would measure 401s.
  await new TokenService({ secret: s.secret, expiresInS: 3600 }).verify(pop.viewers[0]!.token);
  log(`${viewers} viewers and ${o.creators} creators with tokens in ${secondsSince(t0)} s`);

  const interrupted = () => {
    process.exit(130); // the exit handler stops the servers and the bench's Redis
  };
  process.once("SIGINT", interrupted);
  process.once("SIGTERM", interrupted);
  // A phase that fails is reported and the next one still runs.
  const phase = async (name: string, fn: () => Promise<void>) => {
    try {
      await fn();
    } catch (err) {
      s.failures.push(`${name} aborted: ${(err as Error).stack ?? String(err)}`);
    }
  };
  try {
    if (o.scenarios.includes("echo")) await phase("echo", () => runEcho(s, pop));
    if (needServer) await phase("3AM server", () => runLedgerServer(s, pop));
    if (needSpread) await phase("3AM servers spread", () => runSpread(s, pop));
    if (needPeer) await phase("peer-seed", () => runPeer(s, pop));
  } finally {
    for (const c of [...children]) await stop(c);
    if (!o.keep) {
      await dropDatabase(o.dbName).catch(() => {});
      await dropDatabase(`${o.dbName}_peer`).catch(() => {});
      await dropDatabase(`${o.dbName}_spread`).catch(() => {});
      await deleteRedisKeys(redis, `${o.dbName}:`).catch(() => {});
      await deleteRedisKeys(redis, `${o.dbName}_spread:`).catch(() => {});
    }
    redis.disconnect();
    process.off("SIGINT", interrupted);
    process.off("SIGTERM", interrupted);
  }

  for (const r of s.results) {
    if (r.status2xx === 0) s.failures.push(`${r.name}: no 2xx answers`);
  }
  const report: BenchReport = {
    at,
    command: ["npm run bench", ...(process.argv.length > 2 ? ["--", ...process.argv.slice(2)] : [])].join(
      " ",
    ),
    machine,
    options: {
      durationS: o.durationS,
      connections: o.connections,
      scenarios: o.scenarios,
      quick: o.quick,
      viewers,
      creators: o.creators,
      tipUsd: o.tipUsd,
      depositCents: o.depositCents,
      redis: o.redis,
    },
    setup: s.setup,
    scenarios: s.results,
    ratios: computeRatios(s.results),
    targets: computeTargets(s.results),
    checks: s.checks,
    failures: s.failures,
  };
  console.log(`\nsetup:\n${s.setup.map((l) => `  - ${l}`).join("\n")}`);
  console.log(formatReport(report));
  const files = writeResults(o.outDir, report);
  console.log(`\nwrote ${files.json}, ${o.outDir}latest.json and ${files.svg}`);
  const ok = s.failures.length === 0 && s.checks.every((c) => c.ok);
  return ok ? 0 : 1;
}

try {
  process.exitCode = await main();
} catch (err) {
  console.error(`bench: ${(err as Error).message}`);
  process.exitCode = 1;
}
