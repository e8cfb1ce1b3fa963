// Owns the HTTP server: uWebSockets.js (native only), the services routes need, every route,
// and starting/stopping it.
import { timingSafeEqual } from "node:crypto";
import type { Logger } from "pino";
import type { TemplatedApp, us_listen_socket } from "uWebSockets.js";
import { adminRoutes } from "../admin/routes.ts";
import type { Core } from "../main/core.ts";
import { type IdentityProvider, LocalIdentity, SupabaseIdentity } from "../auth/identity.ts";
import { PasswordHasher } from "../auth/passwords.ts";
import { DEV_JWT_SECRET, TokenService } from "../auth/tokens.ts";
import type { Config } from "../config.ts";
import { ConfigError } from "../config.ts";
import { AppError } from "../errors.ts";
import { MoneyIn } from "../payments/money-in.ts";
import { moneyInRoutes } from "../payments/money-in-routes.ts";
import { paymentRoutes } from "../payments/routes.ts";
import type { StripeSetup } from "../payments/stripe.ts";
import { userRoutes } from "../users/routes.ts";
import { UserStore } from "../users/user-store.ts";
import { corsPolicy } from "./cors.ts";
import { Metrics } from "./metrics.ts";
import { nativeUws } from "./native.ts";
import { RateLimits } from "./rate-limit.ts";
import { type Reply, sendError, sendJson, sendText } from "./respond.ts";
import { type RouteDef, type RouterDeps, registerFallbacks, registerRoute } from "./router.ts";

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

/** The JWT secret: configured, or in development a fixed one with a loud warning. */
export function jwtSecret(config: Config, logger: Logger): string {
  if (config.SUPABASE_JWT_SECRET) return config.SUPABASE_JWT_SECRET;
  if (config.NODE_ENV === "production") {
    throw new ConfigError("invalid configuration: SUPABASE_JWT_SECRET is required when NODE_ENV=production");
  }
  logger.warn(
    "SUPABASE_JWT_SECRET is not set: signing tokens with a DEVELOPMENT secret; never run like this in production",
  );
  return DEV_JWT_SECRET;
}

export function createHttpServer(deps: HttpDeps): HttpServer {
  const { config, logger, core, stripe } = deps;
  const uws = nativeUws();
  const app: TemplatedApp = uws.App();
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
  const routerDeps: RouterDeps = {
    logger,
    tokens,
    limits: new RateLimits(core.limitsRedis, config),
    cors: corsPolicy(config.CORS_ORIGINS),
    bodyLimitBytes: config.BODY_LIMIT_BYTES,
    metrics,
  };

  app.get("/healthz", (res) => {
    const reply: Reply = { res, aborted: false };
    sendJson(reply, 200, { status: "ok" });
  });
  app.get("/readyz", (res) => {
    const reply: Reply = { res, aborted: false };
    res.onAborted(() => {
      reply.aborted = true;
    });
    void readiness(core).then((r) => sendJson(reply, r.status === "ready" ? 200 : 503, r));
  });

  // Prometheus scrapes this; with METRICS_TOKEN set it must send it as a bearer token.
  const metricsAuth = config.METRICS_TOKEN ? `Bearer ${config.METRICS_TOKEN}` : null;
  app.get("/metrics", (res, req) => {
    const reply: Reply = { res, aborted: false };
    res.onAborted(() => {
      reply.aborted = true;
    });
    if (metricsAuth && !safeEqual(req.getHeader("authorization"), metricsAuth)) {
      sendError(
        reply,
        new AppError("unauthorized", "GET /metrics needs Authorization: Bearer <METRICS_TOKEN>"),
        logger,
      );
      return;
    }
    metrics.text().then(
      (text) => sendText(reply, 200, metrics.contentType, text),
      (err) => sendError(reply, err, logger),
    );
  });

  const routes: RouteDef[] = [
    ...userRoutes({ users, identity, tokens, ledger: core.ledger }),
    ...paymentRoutes({ ledger: core.ledger, users, tipAmountsUsd: config.TIP_AMOUNTS_USD }),
    ...moneyInRoutes({ moneyIn, users, minUsd: config.PURCHASE_MIN_USD, maxUsd: config.PURCHASE_MAX_USD }),
    ...adminRoutes({ ledger: core.ledger, users, pool: core.pool }),
  ];
  for (const r of routes) registerRoute(app, r, routerDeps);
  registerFallbacks(app, routerDeps);

  let token: us_listen_socket | null = null;
  return {
    tokens,
    users,
    moneyIn,
    listen(port, host = "0.0.0.0") {
      return new Promise((resolve, reject) => {
        app.listen(host, port, (t) => {
          if (!t) return reject(new Error(`cannot listen on ${host}:${port}`));
          token = t;
          resolve(uws.us_socket_local_port(t as never));
        });
      });
    },
    async close() {
      if (token) uws.us_listen_socket_close(token);
      token = null;
      await hasher.close();
    },
  };
}

async function readiness(core: Core) {
  const within = <T>(p: Promise<T>) =>
    Promise.race([p, new Promise<never>((_, rej) => setTimeout(() => rej(new Error("timeout")), 2000))]).then(
      () => true,
      () => false,
    );
  const separate = core.limitsRedis !== core.redis;
  const [pg, redis, limits] = await Promise.all([
    within(core.pool.query("SELECT 1")),
    within(core.redis.ping()),
    separate ? within(core.limitsRedis.ping()) : Promise.resolve(true),
  ]);
  const ledger = core.ledger.health();
  const persist = core.persister.health();
  const ready = pg && redis && limits && !ledger.recovering && persist.halted.length === 0;
  return {
    status: ready ? "ready" : "not_ready",
    postgres: pg ? "up" : "down",
    redis: redis ? "up" : "down",
    ...(separate ? { rate_limit_redis: limits ? "up" : "down" } : {}),
    ledger: { recovering: ledger.recovering },
    wal: {
      lag_ms: persist.walLagMs,
      unpersisted_entries: persist.unpersistedEntries,
      halted_shards: persist.halted,
    },
  };
}

function safeEqual(given: string, expected: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}
