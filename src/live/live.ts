// Owns wiring the live part of the app: the tip feed (fed by the ledger's durable observer), the
// WebSocket endpoint, the overlay page and the live HTTP routes, on the HTTP server's uWS app.
import { duplicateRedis, openRedis, type RedisClient } from "../redis/connect.ts";
import { redisKeys } from "../redis/keys.ts";
import type pg from "pg";
import type { Logger } from "pino";
import type { TemplatedApp } from "uWebSockets.js";
import type { TokenService } from "../auth/tokens.ts";
import type { Config } from "../config.ts";
import type { RoleSource } from "../http/access.ts";
import type { RateLimits } from "../http/rate-limit.ts";
import type { RouteDef } from "../http/router.ts";
import { TipDesk } from "../payments/tip.ts";
import type { Ledger } from "../shards/ledger.ts";
import type { UserStore } from "../users/user-store.ts";
import { FeedStore } from "./feed-store.ts";
import { OverlayKeys } from "./overlay-keys.ts";
import { liveRoutes, registerOverlayPage } from "./routes.ts";
import { type FeedCrossProcess, TipFeed } from "./tip-feed.ts";
import { wordFilter } from "./word-filter.ts";
import { registerLive } from "./ws-server.ts";

export interface Live {
  routes: RouteDef[];
  /** The tip feed (rememberTip: a tip whose credit another process sends here). */
  feed: TipFeed;
  /** Open sockets and feed subscribers, for /metrics. */
  stats(): { connections: number; subscribers: number };
  /** The feeds' own Redis (FEED_REDIS_URL), for /readyz; null when they use the ledger's. */
  feedRedis: RedisClient | null;
  close(): void;
}

export function createLive(d: {
  app: TemplatedApp;
  config: Config;
  logger: Logger;
  /** What live needs of the core (the entry point's Core has it): the WAL Redis, Postgres, the ledger. */
  core: { redis: RedisClient; pool: pg.Pool; ledger: Ledger };
  tokens: TokenService;
  users: UserStore;
  roles: RoleSource;
  limits: RateLimits;
}): Live {
  const { config, core } = d;
  // Its own connection: feed appends and catch-up reads must come back in the order they went out.
  // On a Redis of their own (FEED_REDIS_URL, without AOF) the feeds add no fsync to the WAL's.
  const own = config.FEED_REDIS_URL !== undefined;
  const redis = own
    ? openRedis(
        { url: config.FEED_REDIS_URL!, clusterNodes: null },
        // Back soon after Redis is: entries wait in the feed's queue meanwhile.
        { retryStrategy: (times: number) => Math.min(50 * times, 500) },
      )
    : duplicateRedis(core.redis);
  redis.on("error", (err: Error) => d.logger.warn({ err: err.message }, "tip feed redis connection error"));
  // With shards spread over processes a creator's feed is written where its shard lives and its
  // subscribers may be anywhere: written batches are published on the feed's own connection (after
  // their append, in order) and heard on a subscriber connection of their own.
  let crossProcess: FeedCrossProcess | null = null;
  if (config.LEDGER_SPREAD) {
    // Waits for Redis instead of failing its SUBSCRIBE while Redis is away.
    const subscriber = duplicateRedis(redis, { maxRetriesPerRequest: null });
    subscriber.on("error", (err: Error) =>
      d.logger.warn({ err: err.message }, "tip feed subscriber redis connection error"),
    );
    crossProcess = { publisher: redis, subscriber, channel: redisKeys(config.REDIS_PREFIX).feedLive };
  }
  const feed = new TipFeed({
    store: new FeedStore(redis, config.REDIS_PREFIX, config.FEED_RETENTION),
    pool: core.pool,
    logger: d.logger,
    filter: wordFilter(config.FEED_BLOCKED_WORDS),
    retention: config.FEED_RETENTION,
    crossProcess,
  });
  const unobserve = core.ledger.observeDurable(feed.durable);
  feed.listen().catch((err: Error) => {
    d.logger.error({ err: err.message }, "tip feed: subscribing to other processes' entries failed");
  });
  const overlayKeys = new OverlayKeys(core.pool);
  const sockets = registerLive(d.app, {
    tokens: d.tokens,
    limits: d.limits,
    users: d.users,
    desk: new TipDesk({
      ledger: core.ledger,
      users: d.users,
      tipAmountsUsd: config.TIP_AMOUNTS_USD,
      superlikeAmountsUsd: config.SUPERLIKE_AMOUNTS_USD,
    }),
    feed,
    overlayKeys,
    logger: d.logger,
    settings: {
      idleTimeoutS: config.WS_IDLE_TIMEOUT_S,
      maxMessageBytes: config.WS_MAX_MESSAGE_BYTES,
      maxBackpressureBytes: config.WS_MAX_BACKPRESSURE_BYTES,
      maxInFlight: config.WS_MAX_IN_FLIGHT,
      tipAmountsUsd: config.TIP_AMOUNTS_USD,
      superlikeAmountsUsd: config.SUPERLIKE_AMOUNTS_USD,
    },
  });
  registerOverlayPage(d.app, overlayKeys, d.logger);
  return {
    feed,
    stats: () => sockets.stats(),
    feedRedis: own ? redis : null,
    routes: liveRoutes({
      feed,
      users: d.users,
      roles: d.roles,
      overlayKeys,
      revokeOverlay: (id) => sockets.revokeOverlay(id),
      publicBaseUrl: config.PUBLIC_BASE_URL,
    }),
    close() {
      unobserve();
      feed.stop();
      sockets.close();
      redis.disconnect();
      crossProcess?.subscriber.disconnect();
    },
  };
}
