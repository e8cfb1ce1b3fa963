// Owns wiring the HTTP side of the process: the services routes need (tokens, identity, users,
// money in, metrics), every feature's routes, and the src/http library that serves them. The one
// place that knows both the features and the server; nothing imports it but entry points.
import type { Logger } from "pino";
import { adminRoutes } from "../admin/routes.ts";
import { type IdentityProvider, LocalIdentity, SupabaseIdentity } from "../auth/identity.ts";
import { PasswordHasher } from "../auth/passwords.ts";
import { DEV_JWT_SECRET, TokenService } from "../auth/tokens.ts";
import type { Config } from "../config.ts";
import { corsPolicy } from "../http/cors.ts";
import { type ReadinessProbes, registerHealth, registerMetrics } from "../http/health.ts";
import { Metrics } from "../http/metrics.ts";
import { createLive } from "../live/live.ts";
import { RateLimits } from "../http/rate-limit.ts";
import { createHttpApp } from "../http/server.ts";
import { MoneyIn } from "../payments/money-in.ts";
import { moneyInRoutes } from "../payments/money-in-routes.ts";
import { paymentRoutes } from "../payments/routes.ts";
import type { StripeSetup } from "../payments/stripe.ts";
import { userRoutes } from "../users/routes.ts";
import { Roles } from "../users/roles.ts";
import { UserStore } from "../users/user-store.ts";
import type { Core } from "./core.ts";

export interface HttpDeps {
  config: Config;
  logger: Logger;
  core: Core;
  stripe: StripeSetup;
}

export interface HttpServer {
  /** Listens; port 0 picks a free one. Resolves to the port. */
  listen(port: number, host?: string): Promise<number>;
  close(): Promise<void>;
  readonly tokens: TokenService;
  readonly users: UserStore;
  readonly moneyIn: MoneyIn;
}

/**
 * The JWT secret: the configured one, or in development a fixed one with a loud warning.
 * loadConfig already refuses production without SUPABASE_JWT_SECRET.
 */
export function jwtSecret(config: Config, logger: Logger): string {
  if (config.SUPABASE_JWT_SECRET) return config.SUPABASE_JWT_SECRET;
  logger.warn(
    "SUPABASE_JWT_SECRET is not set: signing tokens with a DEVELOPMENT secret; never run like this in production",
  );
  return DEV_JWT_SECRET;
}

export function createHttpServer(deps: HttpDeps): HttpServer {
  const { config, logger, core, stripe } = deps;
  const tokens = new TokenService({
    secret: jwtSecret(config, logger),
    expiresInS: config.JWT_EXPIRES_IN_S,
    cacheMax: config.TOKEN_CACHE_MAX,
    ...(config.SUPABASE_URL ? { supabaseUrl: config.SUPABASE_URL } : {}),
  });
  const hasher = new PasswordHasher(config.PASSWORD_HASH_THREADS);
  const identity: IdentityProvider =
    config.SUPABASE_URL && config.SUPABASE_SERVICE_KEY
      ? new SupabaseIdentity(config.SUPABASE_URL, config.SUPABASE_SERVICE_KEY)
      : new LocalIdentity(hasher);
  const users = new UserStore(core.pool);
  const roles = new Roles(users, core.ledger);
  const moneyIn = new MoneyIn({
    stripe: stripe.stripe,
    webhookSecret: stripe.webhookSecret,
    ledger: core.ledger,
    pool: core.pool,
    logger,
    drainWal: () => core.persister.drain(),
  });
  const metrics = new Metrics({
    persist: () => core.persister.health(),
    ledger: () => ({
      recovering: core.ledger.health().recovering,
      accountsInMemory: core.ledger.accountsInMemory,
    }),
  });
  core.ledger.onFlush = (seconds, events, ok) => metrics.walFlush(seconds, events, ok);

  const limits = new RateLimits(core.limitsRedis, config);
  const http = createHttpApp({
    logger,
    tokens,
    limits,
    cors: corsPolicy(config.CORS_ORIGINS),
    bodyLimitBytes: config.BODY_LIMIT_BYTES,
    metrics,
  });
  const probes: ReadinessProbes = {
    postgres: () => core.pool.query("SELECT 1"),
    redis: () => core.redis.ping(),
    ...(core.limitsRedis !== core.redis ? { rateLimitRedis: () => core.limitsRedis.ping() } : {}),
    ledger: () => core.ledger.health(),
    persist: () => core.persister.health(),
  };
  registerHealth(http.app, probes);
  registerMetrics(http.app, metrics, config.METRICS_TOKEN, logger);
  const live = createLive({ app: http.app, config, logger, core, tokens, users, roles, limits });
  http.register([
    ...userRoutes({ users, roles, identity, tokens, ledger: core.ledger }),
    ...paymentRoutes({
      ledger: core.ledger,
      users,
      roles,
      tipAmountsUsd: config.TIP_AMOUNTS_USD,
      superlikeAmountsUsd: config.SUPERLIKE_AMOUNTS_USD,
    }),
    ...moneyInRoutes({
      moneyIn,
      users,
      roles,
      minUsd: config.PURCHASE_MIN_USD,
      maxUsd: config.PURCHASE_MAX_USD,
    }),
    ...adminRoutes({ ledger: core.ledger, users, roles, pool: core.pool }),
    ...live.routes,
  ]);

  return {
    tokens,
    users,
    moneyIn,
    listen: (port, host) => http.listen(port, host),
    async close() {
      http.close();
      live.close();
      await hasher.close();
    },
  };
}
