// Owns wiring the core together: Postgres (database created and migrated), Redis, the ledger
// (recovered from Postgres + WAL before it takes commands) and the WAL persister.
import type { RedisOptions } from "ioredis";
import {
  duplicateRedis,
  openRedis,
  type RedisClient,
  type RedisTarget,
  redisTarget,
} from "../redis/connect.ts";
import { redisKeys } from "../redis/keys.ts";
import { adoptLegacyLayout } from "../wal/legacy-layout.ts";
import type pg from "pg";
import type { Logger } from "pino";
import type { Config } from "../config.ts";
import { createPool, ensureDatabase } from "../db/pool.ts";
import { migrate } from "../db/migrate.ts";
import { fraudLimits } from "../config.ts";
import type { LedgerSettings } from "../shards/ports.ts";
import { Ledger } from "../shards/ledger.ts";
import { RedisWal } from "../wal/wal-writer.ts";
import { checkShardCount, ShardCountError } from "./shard-count.ts";
import { ShardLeases } from "../wal/lease.ts";
import { AccountStore } from "../persist/account-store.ts";
import { Persister } from "../persist/persister.ts";
import { type PersisterLike, PersisterThread } from "../persist/persister-thread.ts";
import { PersisterSwitch } from "../persist/persister-switch.ts";
import { PeerClient } from "../cluster/peers.ts";
import { Placement } from "../cluster/placement.ts";
import { StatusBroadcast } from "../cluster/status-broadcast.ts";

export interface Core {
  config: Config;
  pool: pg.Pool;
  /** The WAL's Redis (REDIS_URL), or the Redis Cluster of REDIS_CLUSTER_NODES. */
  redis: RedisClient;
  /**
   * The rate limiters' Redis (RATE_LIMIT_REDIS_URL, default REDIS_URL), always on a connection of
   * its own that fails fast: no offline queue and a command timeout, so a request whose limiter
   * cannot be asked answers 503 at once instead of waiting for a reconnect.
   */
  limitsRedis: RedisClient;
  ledger: Ledger;
  /** Where the ledger loads accounts from (Postgres); the live feed hears the names it reads. */
  accounts: AccountStore;
  persister: PersisterLike;
  /** Which shards this process owns (their leases), for /readyz and /metrics. */
  ownership: ShardOwnership;
  /** Shards spread over processes (LEDGER_SPREAD): who is alive and who owns what; null otherwise. */
  placement: Placement | null;
  stop(): Promise<void>;
}

export interface ShardOwnership {
  /** This process's owner id, as its lease values carry it. */
  readonly owner: string;
  /** The shards whose leases it holds now, each with its fencing token. */
  owned(): Array<{ shard: number; token: number }>;
}

/** A dependency the process cannot start without, with the one line that says how to get it. */
export class DependencyError extends Error {}

export async function startCore(
  config: Config,
  logger: Logger,
  opts: {
    persist?: boolean;
    /** Called once when this process stops owning the ledger (default: log and exit(1)). */
    onOwnershipLost?: (why: string) => void;
  } = {},
): Promise<Core> {
  try {
    await ensureDatabase(config.DATABASE_URL);
  } catch (err) {
    throw new DependencyError(
      `cannot reach Postgres at ${redactUrl(config.DATABASE_URL)} (${(err as Error).message}); start one with ` +
        "`docker compose up -d postgres` or the Debian package postgresql, or set DATABASE_URL",
    );
  }
  const pool = createPool(config.DATABASE_URL, 10, {
    connectTimeoutMs: config.PG_CONNECT_TIMEOUT_MS,
    statementTimeoutMs: config.PG_STATEMENT_TIMEOUT_MS,
    idleInTransactionTimeoutMs: config.PG_IDLE_IN_TRANSACTION_TIMEOUT_MS,
  });
  pool.on("error", (err) => logger.error({ err }, "idle Postgres client error"));
  if (config.MIGRATE_ON_START) {
    const applied = await migrate(pool);
    if (applied.length > 0) logger.info({ applied }, "migrations applied");
  }
  let redis: RedisClient;
  let limitsRedis: RedisClient;
  const target = redisTarget(config);
  try {
    redis = await connectRedis(target, "REDIS_URL", "redis connection error", logger, {
      // Back soon after Redis is: the ledger answers 503 until then.
      retryStrategy: (times: number) => Math.min(50 * times, 500),
      commandTimeout: config.WAL_COMMAND_TIMEOUT_MS,
    });
  } catch (err) {
    await pool.end();
    throw err;
  }
  try {
    const own = config.RATE_LIMIT_REDIS_URL !== undefined;
    limitsRedis = await connectRedis(
      own ? { url: config.RATE_LIMIT_REDIS_URL!, clusterNodes: null } : target,
      own ? "RATE_LIMIT_REDIS_URL" : "REDIS_URL",
      "rate-limit redis connection error",
      logger,
      {
        enableOfflineQueue: false,
        maxRetriesPerRequest: 0,
        commandTimeout: config.RATE_LIMIT_REDIS_TIMEOUT_MS,
        // Reconnect soon after it is back: every request waits on it.
        retryStrategy: (times: number) => Math.min(50 * times, 500),
      },
    );
  } catch (err) {
    redis.disconnect();
    await pool.end();
    throw err;
  }
  const disconnectRedis = () => {
    redis.disconnect();
    limitsRedis.disconnect();
  };
  // Losing the lease to another process stops the ledger first, so nothing more is acknowledged,
  // then tells the entry point. A lease that merely lapsed (the WAL's Redis was away longer than
  // LEDGER_LEASE_MS) is taken back by the ledger's recovery, with a new fencing token.
  let ledger: Ledger | null = null;
  let lostAlready = false;
  const lost = (why: string) => {
    // Both the lease renewal and a refused append may notice; the first one acts.
    if (lostAlready) return;
    lostAlready = true;
    ledger?.stopOwning(why);
    // The new owner persists the WAL from here; this one's lanes would only compete with it.
    void persister?.stop().catch(() => {});
    (opts.onOwnershipLost ?? defaultOwnershipLost(logger))(why);
  };
  const allShards = Array.from({ length: config.SHARDS }, (_, s) => s);
  const spread = config.LEDGER_SPREAD;
  const lease = new ShardLeases(
    redis,
    config.REDIS_PREFIX,
    // Spread over processes: placement takes this process's share once it knows who is alive.
    spread ? [] : allShards,
    config.LEDGER_LEASE_MS,
    () => {
      if (!ledger) return;
      logger.warn("a shard lease is no longer this process's; checking ownership and recovering");
      void ledger
        .recover("the lease renewal found the ledger lease gone")
        .catch((err) => logger.fatal({ err }, "ledger recovery failed"));
    },
    spread,
  );
  let persister: PersisterLike | null = null;
  let broadcast: StatusBroadcast | null = null;
  const placement = spread
    ? new Placement({
        redis,
        prefix: config.REDIS_PREFIX,
        leases: lease,
        shards: config.SHARDS,
        leaseMs: config.LEDGER_LEASE_MS,
        url: config.INTERNAL_URL ?? `http://127.0.0.1:${config.PORT}`,
        logger,
        onOwned: (shards) => (persister as PersisterSwitch).assign(shards),
      })
    : null;
  try {
    await adoptLegacyLayout(redis, config.REDIS_PREFIX, config.LEDGER_LEASE_MS, logger);
    if (placement) await placement.join();
    else
      await lease.acquire({
        standby: config.LEDGER_STANDBY,
        onWaiting: (holder) =>
          config.LEDGER_STANDBY &&
          logger.info({ holder }, "standby: another process owns the ledger; taking over when its leases go"),
      });
  } catch (err) {
    disconnectRedis();
    await pool.end();
    throw new DependencyError((err as Error).message);
  }
  const wal = new RedisWal(redis, config.REDIS_PREFIX, lease.value);
  try {
    await checkShardCount(pool, wal, config.SHARDS);
  } catch (err) {
    await lease.release();
    disconnectRedis();
    await pool.end();
    throw err instanceof ShardCountError ? new DependencyError(err.message) : err;
  }
  const store = new AccountStore(pool);
  ledger = new Ledger({
    settings: ledgerSettings(config),
    wal,
    store,
    logger,
    ownership: lease,
    onFenced: (why) => lost(why),
    ...(placement ? { peers: new PeerClient(placement, config.INTERNAL_TOKEN!, logger) } : {}),
  });
  const persistOptions = {
    prefix: config.REDIS_PREFIX,
    shards: config.SHARDS,
    readCount: config.PERSIST_READ_COUNT,
    blockMs: config.PERSIST_BLOCK_MS,
    lingerMs: config.PERSIST_LINGER_MS,
    retryMs: config.PERSIST_RETRY_MS,
    lanes: config.PERSIST_LANES,
  };
  let ownPersistPool: pg.Pool | null = null;
  const persistPool = () => {
    ownPersistPool = createPool(config.DATABASE_URL, config.PERSIST_LANES + 2, {
      connectTimeoutMs: config.PG_CONNECT_TIMEOUT_MS,
      idleInTransactionTimeoutMs: config.PG_IDLE_IN_TRANSACTION_TIMEOUT_MS,
    });
    ownPersistPool.on("error", (err) => logger.error({ err }, "idle Postgres client error (persister)"));
    return ownPersistPool;
  };
  const owner = ledger;
  const trimFloor = (s: number) => owner.trimFloor(s);
  const makePersister = (only?: number[]): PersisterLike => {
    const options = only ? { ...persistOptions, only } : persistOptions;
    return config.PERSIST_THREAD
      ? new PersisterThread({
          logger,
          trimFloor,
          data: {
            redis: target,
            databaseUrl: config.DATABASE_URL,
            logLevel: config.LOG_LEVEL,
            lanes: config.PERSIST_LANES,
            reportMs: 100,
            options,
          },
        })
      : // Its own pool without a statement timeout: a round after a long outage may be big.
        new Persister({ ...options, redis, pool: ownPersistPool ?? persistPool(), logger, trimFloor });
  };
  // Spread over processes: the persister writes exactly the shards this process owns.
  const switcher = placement ? new PersisterSwitch(makePersister, [...lease.shards]) : null;
  const persisting: PersisterLike = switcher ?? makePersister();
  persister = persisting;
  ledger.persistHealth = () => persisting.health();
  await persisting.init();
  await ledger.start();
  if (opts.persist !== false) persisting.start();
  if (placement) {
    // The shards taken at join may have changed hands while the ledger recovered; and a recovery
    // may find some taken by another process (this one stalled past their leases): the persister
    // writes exactly what the ledger owns.
    await switcher!.assign(ledger.ownedShards());
    ledger.onOwnership = (shards) => {
      switcher!.assign(shards).catch((err) => logger.error({ err }, "restarting the persister failed"));
    };
    placement.start(ledger);
    // A suspension decided here reaches the other processes' tip decisions at once.
    const subscriber = duplicateRedis(redis, { maxRetriesPerRequest: null });
    subscriber.on("error", (err: Error) =>
      logger.warn({ err: err.message }, "status broadcast subscriber redis connection error"),
    );
    broadcast = new StatusBroadcast({
      publisher: redis,
      subscriber,
      channel: redisKeys(config.REDIS_PREFIX).accountStatus,
      ledger: {
        recovering: () => ledger.health().recovering,
        learnStatus: (id, status, version) => ledger.learnStatus(id, status, version),
      },
      logger,
    });
    ledger.observeDurable(broadcast.durable);
    await broadcast.start();
  }
  const evictTimer = setInterval(() => {
    ledger.evictIdle().catch((err) => logger.warn({ err }, "evicting idle accounts failed"));
  }, 5000);
  evictTimer.unref();
  return {
    config,
    pool,
    redis,
    limitsRedis,
    ledger,
    accounts: store,
    persister: persisting,
    ownership: lease,
    placement,
    async stop() {
      clearInterval(evictTimer);
      broadcast?.stop();
      await placement?.stop();
      await ledger.stop();
      await persisting.stop();
      await lease.release();
      disconnectRedis();
      await ownPersistPool?.end();
      await pool.end();
    },
  };
}

/** The shard runtime's settings, from the process configuration. */
export function ledgerSettings(config: Config): LedgerSettings {
  return {
    shards: config.SHARDS,
    walBatchMax: config.WAL_BATCH_MAX,
    mailboxMax: config.MAILBOX_MAX,
    accountCacheMax: config.ACCOUNT_CACHE_MAX,
    idempotencyTtlMs: config.IDEMPOTENCY_TTL_MS,
    recoveryPageEntries: config.RECOVERY_PAGE_ENTRIES,
    limits: fraudLimits(config),
    spread: config.LEDGER_SPREAD,
  };
}

function defaultOwnershipLost(logger: Logger): (why: string) => void {
  return (why) => {
    logger.fatal({ why }, "this process no longer owns the ledger; exiting");
    // A moment for the log line and the refused callers' answers to go out.
    setTimeout(() => process.exit(1), 100).unref();
  };
}

/** Connects and pings, or says in one line which variable names the Redis that is not there. */
async function connectRedis(
  target: RedisTarget,
  variable: string,
  dropMessage: string,
  logger: Logger,
  options: RedisOptions = {},
): Promise<RedisClient> {
  const redis = openRedis(target, {
    lazyConnect: true,
    maxRetriesPerRequest: 1,
    enableAutoPipelining: false,
    ...options,
  });
  let connected = false;
  // Before the first connect the failure is reported once, below; after it, every drop is logged.
  redis.on("error", (err) => {
    if (connected) logger.warn({ err: err.message }, dropMessage);
  });
  try {
    await redis.connect();
    await redis.ping();
    connected = true;
    return redis;
  } catch (err) {
    redis.disconnect();
    const where = target.clusterNodes
      ? `the Redis Cluster at ${target.clusterNodes.join(",")}`
      : `Redis at ${redactUrl(target.url)}`;
    throw new DependencyError(
      `cannot reach ${where} (${(err as Error).message}); start one with ` +
        `\`docker compose up -d redis\` or the Debian package redis-server, or set ${target.clusterNodes ? "REDIS_CLUSTER_NODES" : variable}`,
    );
  }
}

function redactUrl(u: string): string {
  try {
    const url = new URL(u);
    if (url.password) url.password = "***";
    return url.toString();
  } catch {
    return "(unparseable URL)";
  }
}
