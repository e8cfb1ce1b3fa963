// Owns the suite's command line: which scenarios run, for how long, how hard, and where the
// results go. Every default is here, so the printed report can say exactly what was measured.
import { parseArgs } from "node:util";

/** Scenarios in the order they run: one server process at a time, so each has the machine (but
 * tip-uniform-spread2, whose two server processes share the shards of their own database). */
export const SCENARIOS = [
  "echo",
  "balance",
  "tip-uniform",
  "tip-uniform-half",
  "tip-uniform-half-paced",
  "tip-uniform-half-paced-ai",
  "tip-hot",
  "ws-tip-uniform",
  "ws-tip-hot",
  "ws-feed",
  "tip-uniform-spread2",
  "peer-seed-uniform",
  "peer-seed-hot",
] as const;
export type ScenarioName = (typeof SCENARIOS)[number];

/** Names that stand for several scenarios on the command line. */
const GROUPS: Record<string, ScenarioName[]> = {
  "peer-seed": ["peer-seed-uniform", "peer-seed-hot"],
  tips: ["tip-uniform", "tip-uniform-half", "tip-uniform-half-paced", "tip-hot"],
  ws: ["ws-tip-uniform", "ws-tip-hot", "ws-feed"],
  all: [...SCENARIOS],
};

/** Viewers the issue asks for at least, so no viewer passes the 10-tips-an-hour fraud rule. */
export const MIN_VIEWERS = 100_000;
/** Rate assumed when sizing the population before anything is measured (the estimate of
 * the server's tips/s); a faster server needs `--viewers`, and the report says when it did. */
export const ASSUMED_MAX_TIPS_PER_S = 20_000;
/** Tips a viewer may send in the hour before the default fraud rule refuses (FRAUD_MAX_TX_PER_HOUR). */
export const TIPS_PER_VIEWER_MAX = 10;

export interface BenchOptions {
  durationS: number;
  connections: number;
  scenarios: ScenarioName[];
  quick: boolean;
  /** Viewers seeded in each database; null sizes it from duration (at least MIN_VIEWERS). */
  viewers: number | null;
  creators: number;
  tipUsd: number;
  depositCents: number;
  outDir: string;
  /** Base name of the bench databases (`<db>` and `<db>_peer`) and of the Redis prefix. */
  dbName: string;
  /** CPU profiles of the server processes go here (node --cpu-prof). */
  profileDir: string | null;
  /** Leave the databases and Redis keys in place after the run, to look at them. */
  keep: boolean;
  /**
   * durable: the bench starts its own redis-servers, the WAL's with appendfsync always (an
   * acknowledged tip is on disk) and the rate limiters' without persistence; shared: the Redis at
   * REDIS_URL for both, however it is configured.
   */
  redis: "durable" | "shared";
  /**
   * With --redis durable, where the live feeds go: volatile (default), the rate limiters' Redis
   * without persistence (FEED_REDIS_URL), as docker-compose deploys them; wal, the WAL's Redis.
   */
  feedRedis: "volatile" | "wal";
  /** ws-feed: overlay subscribers of the hot creator during ws-tip-hot. */
  feedSubscribers: number;
  /** ws-feed: the subscribers take live tips in batches (subscribe with batch: true). */
  feedBatch: boolean;
  /** Processes the WebSocket tippers' sockets are spread over. */
  wsProcesses: number;
}

/** Load-generator processes for the WebSocket scenarios: sized for the 2-core machine the suite
 * runs on (two generators keep up with one server there; more only take its cores). */
export const DEFAULT_WS_PROCESSES = 2;

const USAGE = `npm run bench -- [options]
  --duration N       seconds per scenario (default 10; --quick: 3)
  --quick            every scenario for 3 s: checks the suite works, not for judging speed
  --scenario NAME    run only these (repeatable or comma list): ${SCENARIOS.join(", ")},
                     (tip-uniform-spread2: tip-uniform against two LEDGER_SPREAD processes sharing the shards)
                     or peer-seed (both peer scenarios), tips, all
  --connections N    autocannon connections, and WebSocket tippers' sockets (default 100)
  --feed-subscribers N  ws-feed: overlay subscribers of the hot creator (default 1000)
  --feed-frames F    ws-feed: batch (default: subscribe with batch, one frame per delivered batch,
                     as the overlay page does) or tip (a frame per tip)
  --ws-processes N   processes the WebSocket tippers' sockets are spread over (default ${DEFAULT_WS_PROCESSES})
  --viewers N        viewers to seed (default: enough for the run, at least ${MIN_VIEWERS})
  --creators N       creators to seed (default 1000)
  --out DIR          where results go (default bench/results)
  --db NAME          database / Redis prefix base name (default threeam_bench)
  --profile DIR      run the servers with node --cpu-prof, profiles into DIR
  --keep             keep the bench databases and Redis keys afterwards
  --redis MODE       durable (default): the WAL in the bench's own redis-server with appendonly yes,
                     appendfsync always, so every acknowledged tip is on disk, and the rate limits
                     in a second one without persistence (RATE_LIMIT_REDIS_URL);
                     shared: both in the Redis at REDIS_URL, however it is configured
  --feed-redis WHERE with --redis durable: volatile (default), the creators' feed streams in the
                     Redis without persistence (FEED_REDIS_URL); wal: in the WAL's fsynced Redis
environment: BENCH_NODE_FLAGS="--trace-gc ..." adds node flags to the servers it starts`;

export function parseOptions(argv: string[]): BenchOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      duration: { type: "string" },
      quick: { type: "boolean", default: false },
      scenario: { type: "string", multiple: true },
      connections: { type: "string", default: "100" },
      viewers: { type: "string" },
      creators: { type: "string", default: "1000" },
      out: { type: "string", default: new URL("./results/", import.meta.url).pathname },
      db: { type: "string", default: "threeam_bench" },
      profile: { type: "string" },
      keep: { type: "boolean", default: false },
      redis: { type: "string", default: "durable" },
      "feed-redis": { type: "string", default: "volatile" },
      "feed-subscribers": { type: "string", default: "1000" },
      "feed-frames": { type: "string", default: "batch" },
      "ws-processes": { type: "string", default: String(DEFAULT_WS_PROCESSES) },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const positive = (name: string, raw: string): number => {
    const n = Number(raw);
    if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name} must be a positive number, got ${raw}`);
    return n;
  };
  const picked = new Set<ScenarioName>();
  for (const item of (values.scenario ?? ["all"]).flatMap((s) => s.split(","))) {
    const name = item.trim();
    if (!name) continue;
    const group =
      GROUPS[name] ?? ((SCENARIOS as readonly string[]).includes(name) ? [name as ScenarioName] : null);
    if (!group) throw new Error(`unknown scenario "${name}"\n${USAGE}`);
    for (const s of group) picked.add(s);
  }
  // The half-rate runs are defined by the full-rate run's measured throughput.
  if (picked.has("tip-uniform-half") || picked.has("tip-uniform-half-paced")) picked.add("tip-uniform");
  // Tip latency under AI load is read against the paced run without it, from the same run.
  if (picked.has("tip-uniform-half-paced-ai")) {
    picked.add("tip-uniform");
    picked.add("tip-uniform-half-paced");
  }
  // The feed's subscribers watch the hot creator during ws-tip-hot.
  if (picked.has("ws-feed")) picked.add("ws-tip-hot");
  if (values.redis !== "durable" && values.redis !== "shared") {
    throw new Error(`--redis must be durable or shared, got ${values.redis}`);
  }
  if (values["feed-frames"] !== "batch" && values["feed-frames"] !== "tip") {
    throw new Error(`--feed-frames must be batch or tip, got ${values["feed-frames"]}`);
  }
  if (values["feed-redis"] !== "volatile" && values["feed-redis"] !== "wal") {
    throw new Error(`--feed-redis must be volatile or wal, got ${values["feed-redis"]}`);
  }
  if (!/^[a-z_][a-z0-9_]*$/.test(values.db)) throw new Error("--db must be a lower-case SQL identifier");
  return {
    durationS: values.duration ? positive("duration", values.duration) : values.quick ? 3 : 10,
    connections: Math.round(positive("connections", values.connections)),
    scenarios: SCENARIOS.filter((s) => picked.has(s)),
    quick: values.quick,
    viewers: values.viewers ? Math.round(positive("viewers", values.viewers)) : null,
    creators: Math.round(positive("creators", values.creators)),
    tipUsd: 1,
    depositCents: 100_000,
    outDir: values.out.endsWith("/") ? values.out : `${values.out}/`,
    dbName: values.db,
    profileDir: values.profile ?? null,
    keep: values.keep,
    redis: values.redis,
    feedRedis: values["feed-redis"],
    feedSubscribers: Math.round(positive("feed-subscribers", values["feed-subscribers"])),
    feedBatch: values["feed-frames"] === "batch",
    wsProcesses: Math.round(positive("ws-processes", values["ws-processes"])),
  };
}

/**
 * Viewers to seed: the tips the selected scenarios could send at ASSUMED_MAX_TIPS_PER_S, spread so
 * none passes TIPS_PER_VIEWER_MAX, with a fifth to spare; never fewer than MIN_VIEWERS.
 */
export function viewersNeeded(o: BenchOptions): number {
  if (o.viewers !== null) return o.viewers;
  const tipSeconds =
    (o.scenarios.includes("tip-uniform") ? o.durationS : 0) +
    (o.scenarios.includes("tip-uniform-half") ? o.durationS / 2 : 0) +
    (o.scenarios.includes("tip-uniform-half-paced") ? o.durationS / 2 : 0) +
    (o.scenarios.includes("tip-uniform-half-paced-ai") ? o.durationS / 2 : 0) +
    (o.scenarios.includes("tip-hot") ? o.durationS : 0) +
    (o.scenarios.includes("ws-tip-uniform") ? o.durationS : 0) +
    (o.scenarios.includes("ws-tip-hot") ? o.durationS : 0);
  // tip-uniform-spread2 tips into a database of its own, seeded with the same viewers.
  const spreadSeconds = o.scenarios.includes("tip-uniform-spread2") ? o.durationS : 0;
  const tips = Math.max(tipSeconds, spreadSeconds) * ASSUMED_MAX_TIPS_PER_S * 1.2;
  return Math.max(MIN_VIEWERS, Math.ceil(tips / TIPS_PER_VIEWER_MAX));
}
