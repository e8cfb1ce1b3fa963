// Owns the process configuration: every setting comes from the environment, parsed once with
// zod at start. A bad value is one error naming the variable, never a silent default.
import { createPublicKey } from "node:crypto";
import { z } from "zod";
import type { FraudLimits } from "./ledger/types.ts";

const RATE_LIMIT_REDIS_TIMEOUT_MAX_MS = 10_000;
const WAL_COMMAND_TIMEOUT_MAX_MS = 60_000;

const int = (def: number, min = 0) => z.coerce.number().int().min(min).default(def);
const bool = (def: boolean) =>
  z
    .enum(["true", "false", "1", "0"])
    .default(def ? "true" : "false")
    .transform((v) => v === "true" || v === "1");

/** Comma-separated positive dollar amounts (whole cents). */
const dollarList = (def: string) =>
  z
    .string()
    .default(def)
    .transform((s, ctx) => {
      const xs = s.split(",").map((x) => Number(x.trim()));
      if (xs.some((x) => !Number.isFinite(x) || x <= 0 || Math.round(x * 100) !== x * 100)) {
        ctx.addIssue({ code: "custom", message: "comma-separated positive dollar amounts" });
      }
      return xs;
    });

/** An empty value (`NAME=` as in .env.example) means unset. */
const optional = <T extends z.ZodType>(t: T) => z.preprocess((v) => (v === "" ? undefined : v), t.optional());

/** Named maxima of the money-out settings. */
export const PAYOUT_STANDIN_DELAY_MS_MAX = 600_000;
export const PAYOUT_PROVIDER_TIMEOUT_MS_MAX = 120_000;
export const PAYOUT_WEBHOOK_TOLERANCE_MS_MAX = 3_600_000;

/** Named maxima of the AI and email settings. */
export const AI_THREADS_MAX = 16;
export const AI_QUEUE_MAX = 10_000;
export const AI_CACHE_MAX = 100_000;
export const OPENAI_TIMEOUT_MS_MAX = 60_000;
export const EMAIL_ATTEMPTS_MAX = 50;
/** Longest reconcile window (90 days): Stripe's lists are paged through for the whole window. */
export const RECONCILE_WINDOW_MS_MAX = 90 * 86_400_000;
export const EMAIL_BACKOFF_MS_MAX = 600_000;
export const EMAIL_KEEP_JOBS_MAX = 1_000_000;
export const SMTP_TIMEOUT_MS_MAX = 120_000;

const bounded = (def: number, min: number, max: number) =>
  z.coerce.number().int().min(min).max(max).default(def);
/** Named maxima of the live limits (the config refuses more). */
export const WS_IDLE_TIMEOUT_S_MAX = 960;
export const WS_MAX_MESSAGE_BYTES_MAX = 64 * 1024;
export const WS_MAX_BACKPRESSURE_BYTES_MAX = 64 * 1024 * 1024;
export const WS_MAX_IN_FLIGHT_MAX = 65_536;
export const FEED_RETENTION_MAX = 1_000_000;

export const configSchema = z.object({
  NODE_ENV: z.enum(["development", "production", "test"]).default("development"),
  PORT: int(4000),
  HOST: z.string().default("0.0.0.0"),
  DATABASE_URL: z.string().url().default("postgres://postgres@127.0.0.1:5432/threeam"),
  REDIS_URL: z.string().url().default("redis://127.0.0.1:6379"),
  /**
   * Seed nodes ("host:port,host:port") of a Redis Cluster that then holds the WAL, lease, feed
   * streams and queues instead of REDIS_URL (whose user and password it still uses).
   */
  REDIS_CLUSTER_NODES: optional(
    z.string().regex(/^\s*[^\s,:]+:\d+\s*(,\s*[^\s,:]+:\d+\s*)*$/, "host:port, comma-separated"),
  ),
  /**
   * Prefix for every Redis key this process writes (WAL streams, rate limits, queues). No braces:
   * the keys' own hash tags place them in a Redis Cluster's slots.
   */
  REDIS_PREFIX: z
    .string()
    .regex(/^[^{}]*$/, "no { or }: keys carry their own hash tags")
    .default(""),
  /**
   * Redis for the rate limiters' counters (default: REDIS_URL). They need no durability: on a Redis
   * without AOF they keep an fsync off every request's path, since the WAL's Redis fsyncs every
   * write before it answers.
   */
  RATE_LIMIT_REDIS_URL: optional(z.string().url()),
  /**
   * Redis for the creators' live feed streams and, with LEDGER_SPREAD, the channel that carries
   * them between processes (default: the ledger's Redis). They need no durability: every feed
   * entry is in the WAL and then Postgres before it is written there, and a lost stream is filled
   * again from Postgres, so on a Redis without AOF they keep an fsync off every tip's path. A
   * single Redis (not a cluster); without it, the feeds live wherever REDIS_URL or
   * REDIS_CLUSTER_NODES put the WAL.
   */
  FEED_REDIS_URL: optional(z.string().url()),
  /**
   * Longest wait for the rate limiters' Redis before a request answers 503 with Retry-After; while
   * that Redis is down, requests answer 503 at once and it is reconnected within half a second.
   */
  RATE_LIMIT_REDIS_TIMEOUT_MS: int(500, 10).refine(
    (n) => n <= RATE_LIMIT_REDIS_TIMEOUT_MAX_MS,
    "at most 10000",
  ),
  LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),

  /** Logical ledger shards; each owns its accounts, mailbox and WAL stream wal:{shard}. */
  /**
   * Ledger shards. Each flush writes one WAL entry per shard it touched, so fewer shards put more
   * tips in each entry: 16 against 64 measured WAL Redis command time 26-30 -> 16-17 us per HTTP
   * tip and 12-13 -> 8-9 us per WebSocket tip, Redis CPU 41-50 -> 34-37 us per HTTP tip. 16 still
   * spreads over several processes (issue 17's placement unit).
   */
  SHARDS: int(16, 1).refine((n) => n <= 4096, "at most 4096"),
  /** Most events one WAL stream entry carries; a bigger batch is split over entries. */
  WAL_BATCH_MAX: int(1000, 1),
  /** Most commands waiting in one shard's mailbox before new ones are refused (503). */
  MAILBOX_MAX: int(100_000, 1),
  /** Accounts kept in memory; above this, idle accounts whose state Postgres already has are evicted. */
  ACCOUNT_CACHE_MAX: int(200_000, 16),
  /** How long a completed command's idempotency key answers from memory (Stripe keeps 24 h). */
  IDEMPOTENCY_TTL_MS: int(24 * 3600 * 1000, 60_000),

  /** Most WAL entries per shard held in memory at once while recovery replays the WAL. */
  RECOVERY_PAGE_ENTRIES: int(1000, 1),
  /**
   * Longest wait for an answer of the WAL's Redis (a hung one: connections open, no answers).
   * A WAL append that times out has an unknown outcome: its callers get 503, and the ledger
   * rotates its fencing token before it re-reads the WAL, so the late append lands before the
   * re-read or is refused.
   */
  WAL_COMMAND_TIMEOUT_MS: int(5000, 100).refine((n) => n <= WAL_COMMAND_TIMEOUT_MAX_MS, "at most 60000"),
  /** Lifetime of each shard's owner lease; a crashed owner blocks a restart this long. */
  LEDGER_LEASE_MS: int(10_000, 200),
  /**
   * A hot standby: while another process owns the shards, wait for their leases as long as it
   * takes (instead of giving up after two lease lifetimes), then recover and serve. Behind a load
   * balancer that sends traffic to whoever answers /readyz, a SIGKILLed owner is replaced within
   * its lease plus recovery.
   */
  LEDGER_STANDBY: bool(false),
  /**
   * Shards spread over every process of the deployment (issue 17): each live process takes its
   * share of the shard leases (and gives some back when another joins), forwards a command for a
   * shard it does not own to that shard's owner over INTERNAL_URL, and sends tip credits for
   * recipients it does not own to their owner. Off: one process owns every shard (others wait as
   * standbys with LEDGER_STANDBY).
   */
  LEDGER_SPREAD: bool(false),
  /** This process's address as the other processes reach it (default http://127.0.0.1:<the port it listens on>). */
  INTERNAL_URL: optional(z.string().url()),
  /** Shared secret of the processes' internal calls (/internal/*); required with LEDGER_SPREAD. */
  INTERNAL_TOKEN: optional(z.string().min(16)),
  /** Persister: most stream entries read per shard per round, and the idle block time. */
  PERSIST_READ_COUNT: int(200, 1),
  PERSIST_BLOCK_MS: int(50, 1),
  PERSIST_RETRY_MS: int(500, 10),
  /**
   * Least time between the starts of two persister rounds while it keeps up: small rounds cost
   * Postgres nearly as much as full ones, so lingering lets each carry more (0: no wait). 200 ms
   * measured at full HTTP tip rate against 20: Postgres 76-87 -> 42-50 us per tip, the persister
   * thread 59-67 -> 25-30 us, WAL lag max 0.13-0.19 -> 0.27-0.33 s; 400 gained little more and
   * let the lag reach 0.6-0.8 s.
   */
  PERSIST_LINGER_MS: int(200, 0),
  /** Persister lanes writing to Postgres in parallel, each over its own subset of shards. */
  PERSIST_LANES: int(2, 1),
  /** Run the persister in a worker thread (its own core) instead of the event loop's thread. */
  PERSIST_THREAD: bool(true),

  FRAUD_LARGE_TX_USD: z.coerce.number().positive().default(500),
  FRAUD_MAX_TX_PER_HOUR: int(10, 1),
  FRAUD_MAX_VOLUME_PER_HOUR_USD: z.coerce.number().positive().default(1000),

  // --- HTTP, auth and API (issue 3). ---
  /** Largest request body accepted; bigger answers 413. */
  BODY_LIMIT_BYTES: int(16 * 1024, 256),
  /** Comma-separated allowed CORS origins; "*" allows any. */
  CORS_ORIGINS: z.string().default("*"),
  /** When set, GET /metrics (Prometheus) asks for it as a bearer token; unset, it is open. */
  METRICS_TOKEN: optional(z.string().min(16, "at least 16 characters")),
  /** Requests per minute per client IP and per authenticated user; both 0 disables every limit. */
  RATE_LIMIT_IP_PER_MIN: int(6000),
  RATE_LIMIT_USER_PER_MIN: int(600),
  /** Login/register attempts per minute per IP (password guessing). */
  RATE_LIMIT_AUTH_PER_MIN: int(20),
  /** Tip amounts allowed, in whole dollars, comma-separated. */
  TIP_AMOUNTS_USD: dollarList("1,3"),
  /** HS256 secret of Supabase-shaped JWTs. Unset: a development secret (refused in production). */
  SUPABASE_JWT_SECRET: optional(z.string().min(32)),
  SUPABASE_URL: optional(z.string().url()),
  SUPABASE_SERVICE_KEY: optional(z.string()),
  /** Access token lifetime. */
  JWT_EXPIRES_IN_S: int(3600, 60),
  /** Verified tokens remembered until they expire (about 0.5 KB each); sized like ACCOUNT_CACHE_MAX. */
  TOKEN_CACHE_MAX: int(200_000, 0),
  /** Worker threads hashing passwords (scrypt) off the event loop. */
  PASSWORD_HASH_THREADS: int(2, 1),

  // --- Money in: Stripe (issue 4). ---
  /** Unset: the local Stripe stand-in is started in-process and no real money moves. */
  STRIPE_SECRET_KEY: optional(
    z.string().regex(/^(sk|rk)_(test|live)_/, "a Stripe secret key (sk_test_... or sk_live_...)"),
  ),
  /** Signing secret of webhook events (whsec_...); required with STRIPE_SECRET_KEY. */
  STRIPE_WEBHOOK_SECRET: optional(z.string().min(8)),
  /** Where the Stripe SDK sends requests (default Stripe's own API); e.g. a stand-in's URL. */
  STRIPE_API_URL: optional(z.string().url()),
  /** Port of the in-process stand-in when STRIPE_SECRET_KEY is unset (0: any free port). */
  STRIPE_STANDIN_PORT: int(12111),
  /** Smallest and largest credit purchase, in dollars. */
  PURCHASE_MIN_USD: z.coerce.number().positive().default(1),
  PURCHASE_MAX_USD: z.coerce.number().positive().default(500),

  // --- Money out: payouts (issue 13). ---
  /** Smallest and largest withdrawal, in dollars. */
  PAYOUT_MIN_USD: z.coerce.number().positive().default(10),
  PAYOUT_MAX_USD: z.coerce.number().positive().default(10_000),
  /** Most payouts one list request answers. */
  PAYOUT_LIST_MAX: int(100, 1),
  /** Outcome channel: most outcomes the ledger's consumer reads at once, and its idle block time. */
  PAYOUT_OUTCOME_READ_COUNT: int(100, 1),
  PAYOUT_OUTCOME_BLOCK_MS: int(1000, 1),
  /** Payout jobs: provider attempts per round, and the first backoff (doubling each attempt). */
  PAYOUT_JOB_ATTEMPTS: int(5, 1),
  PAYOUT_JOB_BACKOFF_MS: int(2000, 1),
  /** A running payout job's lock: a worker that dies (SIGKILL) leaves its job to be taken again
   * this long after (BullMQ's lockDuration and stalled-job check interval). */
  PAYOUT_JOB_LOCK_MS: int(30_000, 500).refine((n) => n <= 600_000, "at most 600000"),
  /** Test-only: the worker pauses for good right after a provider accepted a transfer, printing
   * `PAUSED_AFTER_SEND <payoutId>`, so a test can kill it in that window. Refused in production. */
  PAYOUT_TEST_PAUSE_AFTER_SEND: bool(false),
  /** Finished payout jobs BullMQ keeps (for the dashboard and to see a job id was used). */
  PAYOUT_JOBS_KEPT: int(10_000, 1),
  /** Payout jobs one worker process runs at once. */
  PAYOUT_WORKER_CONCURRENCY: int(8, 1).refine((n) => n <= 256, "at most 256"),
  /** After sending, the worker asks the provider this often how the transfer stands, for at most
   * PAYOUT_STATUS_WAIT_MS (a webhook or a later check finishes the rest). */
  PAYOUT_STATUS_POLL_MS: int(500, 10),
  PAYOUT_STATUS_WAIT_MS: int(30_000, 0).refine((n) => n <= 600_000, "at most 600000"),
  /** The payout sweeper: how often it runs, how long a payout must not have moved, and how many
   * it looks at per run (pending without a job: queued again; processing: the provider asked). */
  PAYOUT_SWEEP_MS: int(60_000, 100),
  PAYOUT_SWEEP_STALE_MS: int(120_000, 0),
  PAYOUT_SWEEP_BATCH: int(500, 1).refine((n) => n <= 10_000, "at most 10000"),
  /** The queue dashboard (bull-board, admins only) on its own port in `npm start`; 0 = off. */
  BULL_BOARD_PORT: int(0).refine((n) => n <= 65_535, "at most 65535"),
  BULL_BOARD_HOST: z.string().min(1).default("127.0.0.1"),
  /** Run the workers (payouts) inside `npm start`; false leaves them to `npm run worker`. */
  RUN_WORKERS: bool(true),
  /** How often the scheduled reconcile job runs (ms; 0: never, only on request). Its window is the
   * RECONCILE_WINDOW_MS before each run. */
  RECONCILE_EVERY: int(3_600_000, 0).refine((n) => n === 0 || n >= 60_000, "0 or at least 60000"),
  RECONCILE_WINDOW_MS: int(7 * 86_400_000, 60_000).refine(
    (n) => n <= RECONCILE_WINDOW_MS_MAX,
    `at most ${RECONCILE_WINDOW_MS_MAX}`,
  ),
  /** Finished reconcile jobs kept (their status and report answer GET /api/payments/reconcile/:id). */
  RECONCILE_JOBS_KEPT: int(1000, 1).refine((n) => n <= 100_000, "at most 100000"),

  // --- Money out: Wise and Airwallex (issue 13). Unset keys: local stand-ins, no real money moves. ---
  /** Wise API token (Bearer); with WISE_PROFILE_ID and WISE_WEBHOOK_PUBLIC_KEY. */
  WISE_API_KEY: optional(z.string().min(8)),
  /** The numeric Wise profile (business) that pays out. */
  WISE_PROFILE_ID: optional(z.string().regex(/^\d+$/, "the numeric Wise profile id")),
  WISE_API_URL: z.string().url().default("https://api.wise.com"),
  /** PEM of Wise's webhook signing key (newlines may be written as \n). */
  WISE_WEBHOOK_PUBLIC_KEY: optional(z.string().includes("PUBLIC KEY", { message: "a PEM public key" })),
  AIRWALLEX_CLIENT_ID: optional(z.string().min(4)),
  AIRWALLEX_API_KEY: optional(z.string().min(8)),
  AIRWALLEX_API_URL: z.string().url().default("https://api.airwallex.com"),
  /** The Airwallex webhook endpoint's secret (x-signature HMAC key). */
  AIRWALLEX_WEBHOOK_SECRET: optional(z.string().min(8)),
  /** A stand-in's time from funding to paid (bounces follow half as much later). */
  PAYOUT_STANDIN_DELAY_MS: z.coerce.number().int().min(0).max(PAYOUT_STANDIN_DELAY_MS_MAX).default(1000),
  /** Ports of the in-process stand-ins (0: any free port; a busy port falls back to a free one). */
  WISE_STANDIN_PORT: int(12112),
  AIRWALLEX_STANDIN_PORT: int(12113),
  /** Bound on one provider HTTP call (a timeout is retried by the payout worker). */
  PAYOUT_PROVIDER_TIMEOUT_MS: z.coerce
    .number()
    .int()
    .min(100)
    .max(PAYOUT_PROVIDER_TIMEOUT_MS_MAX)
    .default(15_000),
  /** How old (or early) an Airwallex webhook's x-timestamp may be before it is refused as stale. */
  PAYOUT_WEBHOOK_TOLERANCE_MS: z.coerce
    .number()
    .int()
    .min(1000)
    .max(PAYOUT_WEBHOOK_TOLERANCE_MS_MAX)
    .default(300_000),

  /**
   * How long a request may wait for Postgres before it answers 503 with Retry-After: a new
   * connection, a statement (server-side, and client-side a second later for an answer lost on
   * the network), and a transaction left idle (server-side, releasing its locks).
   */
  PG_CONNECT_TIMEOUT_MS: int(3000, 100),
  PG_STATEMENT_TIMEOUT_MS: int(10_000, 100),
  PG_IDLE_IN_TRANSACTION_TIMEOUT_MS: int(30_000, 100),

  // --- AI suggestions and email (issue 15). ---
  /** Worker threads running the local text model (wink-nlp), off the event loop. */
  AI_THREADS: bounded(1, 1, AI_THREADS_MAX),
  /** Most AI tasks waiting for a thread; beyond it AI requests answer 503. */
  AI_QUEUE_MAX: bounded(256, 1, AI_QUEUE_MAX),
  /** Identical AI requests answered from memory: most answers kept (0: no cache), and for how long. */
  AI_CACHE_MAX: bounded(1000, 0, AI_CACHE_MAX),
  AI_CACHE_TTL_MS: int(600_000, 1000),
  /** AI requests per minute per user (0: no AI-specific limit; the per-user limit still counts them). */
  RATE_LIMIT_AI_PER_MIN: int(30),
  /** Set: titles and CTAs come from OpenAI (the local model answers when it fails). Unset: local only. */
  OPENAI_API_KEY: optional(z.string().min(8)),
  OPENAI_MODEL: z.string().min(1).default("gpt-4o-mini"),
  /** Where the SDK sends requests (default OpenAI's API); any Chat Completions server. */
  OPENAI_BASE_URL: optional(z.string().url()),
  /** Bound on one OpenAI request; past it the local model answers. */
  OPENAI_TIMEOUT_MS: bounded(10_000, 100, OPENAI_TIMEOUT_MS_MAX),
  /** smtp://user:pass@host:587 or smtps://...; unset: mail is written to MAIL_CATCHER_DIR instead. */
  SMTP_URL: optional(z.string().regex(/^smtps?:\/\//, "an smtp:// or smtps:// URL")),
  /** The From of every email. */
  EMAIL_FROM: z.string().min(3).default("3AM <no-reply@3am.local>"),
  /** Folder (in .gitignore) the local catcher writes .eml files to when SMTP_URL is unset. */
  MAIL_CATCHER_DIR: z.string().min(1).default(".mail"),
  /** Tries of one email while the SMTP server is down or answers 4xx; first retry after EMAIL_BACKOFF_MS, doubling. */
  EMAIL_ATTEMPTS: bounded(10, 1, EMAIL_ATTEMPTS_MAX),
  EMAIL_BACKOFF_MS: bounded(5000, 10, EMAIL_BACKOFF_MS_MAX),
  /**
   * Sent and failed email jobs kept (their ids are what makes a repeated event send nothing):
   * at most this many, for at most EMAIL_KEEP_JOBS_S seconds.
   */
  EMAIL_KEEP_JOBS: bounded(100_000, 100, EMAIL_KEEP_JOBS_MAX),
  EMAIL_KEEP_JOBS_S: int(30 * 24 * 3600, 60),
  /** Bound on connecting to and talking with the SMTP server. */
  SMTP_TIMEOUT_MS: bounded(10_000, 100, SMTP_TIMEOUT_MS_MAX),
  // --- Live: WebSocket tipping, tip feeds, overlay (issue 14). ---
  /** Superlike amounts allowed, in whole dollars, comma-separated (a superlike is a highlighted tip). */
  SUPERLIKE_AMOUNTS_USD: dollarList("3"),
  /** A socket with no frame either way for this long is closed; uWS pings it well before. */
  WS_IDLE_TIMEOUT_S: int(60, 8).refine((n) => n <= WS_IDLE_TIMEOUT_S_MAX, `at most ${WS_IDLE_TIMEOUT_S_MAX}`),
  /** Largest frame a client may send; a bigger one closes the socket with 1009. */
  WS_MAX_MESSAGE_BYTES: int(4096, 256).refine(
    (n) => n <= WS_MAX_MESSAGE_BYTES_MAX,
    `at most ${WS_MAX_MESSAGE_BYTES_MAX}`,
  ),
  /** Bytes queued to a slow socket before it is closed (4008: reconnect with since). */
  WS_MAX_BACKPRESSURE_BYTES: int(1024 * 1024, 4096).refine(
    (n) => n <= WS_MAX_BACKPRESSURE_BYTES_MAX,
    `at most ${WS_MAX_BACKPRESSURE_BYTES_MAX}`,
  ),
  /** Tips one socket may have waiting for their ack; more are answered 429 at once. */
  WS_MAX_IN_FLIGHT: int(4096, 1).refine((n) => n <= WS_MAX_IN_FLIGHT_MAX, `at most ${WS_MAX_IN_FLIGHT_MAX}`),
  /** Tips kept per creator in the live feed (a Redis stream); an older `since` gets a reset. */
  FEED_RETENTION: int(1000, 10).refine((n) => n <= FEED_RETENTION_MAX, `at most ${FEED_RETENTION_MAX}`),
  /** Words masked with asterisks in tip messages shown on feeds and overlays (comma-separated). */
  FEED_BLOCKED_WORDS: z
    .string()
    .default("")
    .transform((s) =>
      s
        .split(",")
        .map((w) => w.trim())
        .filter((w) => w.length > 0),
    ),
  /** Base URL of this server as creators' OBS reaches it, for overlay_url (default: the request's Host). */
  PUBLIC_BASE_URL: optional(z.string().url()),

  /** Apply migrations in sql/ on start. */
  MIGRATE_ON_START: bool(true),
});

export type Config = z.infer<typeof configSchema>;

export class ConfigError extends Error {}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const parsed = configSchema.safeParse(env);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`);
    throw new ConfigError(`invalid configuration: ${lines.join("; ")}`);
  }
  if (parsed.data.NODE_ENV === "production" && !parsed.data.SUPABASE_JWT_SECRET) {
    throw new ConfigError(
      "invalid configuration: SUPABASE_JWT_SECRET is required when NODE_ENV=production (the development secret is public)",
    );
  }
  const c = parsed.data;
  if (c.NODE_ENV === "production" && c.PAYOUT_TEST_PAUSE_AFTER_SEND) {
    throw new ConfigError("invalid configuration: PAYOUT_TEST_PAUSE_AFTER_SEND is for tests only");
  }
  if (c.STRIPE_SECRET_KEY && !c.STRIPE_WEBHOOK_SECRET) {
    throw new ConfigError(
      "invalid configuration: STRIPE_WEBHOOK_SECRET is required with STRIPE_SECRET_KEY (webhooks are verified with it)",
    );
  }
  if (c.NODE_ENV === "production" && !c.STRIPE_SECRET_KEY) {
    throw new ConfigError(
      "invalid configuration: STRIPE_SECRET_KEY is required when NODE_ENV=production (without it a local stand-in takes payments)",
    );
  }
  const wise = [c.WISE_API_KEY, c.WISE_PROFILE_ID, c.WISE_WEBHOOK_PUBLIC_KEY];
  if (c.WISE_API_KEY && wise.some((v) => !v)) {
    throw new ConfigError(
      "invalid configuration: WISE_PROFILE_ID and WISE_WEBHOOK_PUBLIC_KEY are required with WISE_API_KEY (transfers are made for the profile; webhooks are verified with the key)",
    );
  }
  if (c.WISE_WEBHOOK_PUBLIC_KEY) {
    try {
      createPublicKey(c.WISE_WEBHOOK_PUBLIC_KEY.replace(/\\n/g, "\n"));
    } catch {
      throw new ConfigError(
        "invalid configuration: WISE_WEBHOOK_PUBLIC_KEY is not a readable PEM public key",
      );
    }
  }
  const airwallex = [c.AIRWALLEX_CLIENT_ID, c.AIRWALLEX_API_KEY, c.AIRWALLEX_WEBHOOK_SECRET];
  if ((c.AIRWALLEX_CLIENT_ID || c.AIRWALLEX_API_KEY) && airwallex.some((v) => !v)) {
    throw new ConfigError(
      "invalid configuration: AIRWALLEX_CLIENT_ID, AIRWALLEX_API_KEY and AIRWALLEX_WEBHOOK_SECRET are required together",
    );
  }
  if (c.NODE_ENV === "production" && (!c.WISE_API_KEY || !c.AIRWALLEX_API_KEY)) {
    throw new ConfigError(
      "invalid configuration: WISE_API_KEY and AIRWALLEX_API_KEY are required when NODE_ENV=production (without them local stand-ins take payouts)",
    );
  }
  if (c.LEDGER_SPREAD && !c.INTERNAL_TOKEN) {
    throw new ConfigError(
      "invalid configuration: INTERNAL_TOKEN (16 characters or more, the same in every process) is required with LEDGER_SPREAD=true",
    );
  }
  if (c.LEDGER_SPREAD && c.LEDGER_STANDBY) {
    throw new ConfigError(
      "invalid configuration: LEDGER_SPREAD and LEDGER_STANDBY exclude each other (a spread process takes its share at once)",
    );
  }
  if (c.PURCHASE_MIN_USD > c.PURCHASE_MAX_USD) {
    throw new ConfigError("invalid configuration: PURCHASE_MIN_USD is larger than PURCHASE_MAX_USD");
  }
  return c;
}

/** Ledger thresholds in cents, derived once from the dollar settings. */
export function fraudLimits(c: Config): FraudLimits {
  return {
    largeTxCents: Math.round(c.FRAUD_LARGE_TX_USD * 100),
    maxTxPerHour: c.FRAUD_MAX_TX_PER_HOUR,
    maxVolumePerHourCents: Math.round(c.FRAUD_MAX_VOLUME_PER_HOUR_USD * 100),
  };
}
