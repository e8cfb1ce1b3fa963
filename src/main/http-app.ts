// Owns wiring the HTTP side of the process: the services routes need (tokens, identity, users,
// money in, metrics), every feature's routes, and the src/http library that serves them. The one
// place that knows both the features and the server; nothing imports it but entry points.
import { type RedisClient, redisTarget } from "../redis/connect.ts";
import type { Queue } from "bullmq";
import type { Logger } from "pino";
import { adminRoutes } from "../admin/routes.ts";
import { aiRoutes } from "../ai/routes.ts";
import { registerAiMetrics } from "../ai/metrics.ts";
import { createTextModel } from "../ai/setup.ts";
import type { TextModel } from "../ai/text-model.ts";
import { type IdentityProvider, LocalIdentity, SupabaseIdentity } from "../auth/identity.ts";
import { PasswordHasher } from "../auth/passwords.ts";
import { DEV_JWT_SECRET, TokenService } from "../auth/tokens.ts";
import type { RoleSource } from "../http/access.ts";
import type { Config } from "../config.ts";
import { createEmailQueue, EmailNotifier } from "../email/queue.ts";
import { corsPolicy } from "../http/cors.ts";
import { registerDocs } from "../http/docs.ts";
import { type ReadinessProbes, registerHealth, registerMetrics } from "../http/health.ts";
import { Metrics } from "../http/metrics.ts";
import { createLive } from "../live/live.ts";
import { registerInternalRoutes } from "../cluster/internal-routes.ts";
import { RateLimits } from "../http/rate-limit.ts";
import type { Endpoint } from "../http/router.ts";
import { createHttpApp } from "../http/server.ts";
import { MoneyIn } from "../payments/money-in.ts";
import { moneyInRoutes } from "../payments/money-in-routes.ts";
import { ReconcileJobs, reconcileFindings } from "../payments/reconcile-jobs.ts";
import { paymentRoutes } from "../payments/routes.ts";
import type { StripeSetup } from "../payments/stripe.ts";
import { type BullPayoutJobs, payoutJobsFromConfig } from "../payouts/payout-queue.ts";
import { PayoutStore } from "../payouts/payout-store.ts";
import { PayoutOutcomeConsumer } from "../payouts/outcomes.ts";
import type { PayoutProvider, PayoutProviderName } from "../payouts/provider.ts";
import { payoutRoutes } from "../payouts/routes.ts";
import { payoutWebhookRoutes } from "../payouts/webhook-routes.ts";
import type { PayoutWebhookConfig } from "../payouts/webhooks.ts";
import { userRoutes } from "../users/routes.ts";
import { Roles } from "../users/roles.ts";
import { UserStore } from "../users/user-store.ts";
import { apiDocument } from "./api-doc.ts";
import type { Core } from "./core.ts";
import { LOG_EVENTS, observeLedger } from "./observe.ts";

export interface HttpDeps {
  config: Config;
  logger: Logger;
  core: Core;
  stripe: StripeSetup;
  /** Payout providers by name (Wise, Airwallex); one that is absent cannot take payout methods. */
  payoutProviders?: Partial<Record<PayoutProviderName, PayoutProvider>>;
  /** How providers' webhooks are verified; without it the webhook routes are not served. */
  payoutWebhooks?: PayoutWebhookConfig;
}

export interface HttpServer {
  /** Listens; port 0 picks a free one. Resolves to the port. */
  listen(port: number, host?: string): Promise<number>;
  close(): Promise<void>;
  readonly tokens: TokenService;
  readonly users: UserStore;
  /** Roles and statuses as authorization reads them (the queue dashboard's admin check). */
  readonly roles: RoleSource;
  readonly moneyIn: MoneyIn;
  /** The server's endpoint table (API routes and health/metrics), for tests to enumerate. */
  readonly endpoints: readonly Endpoint[];
  readonly payoutJobs: BullPayoutJobs;
  readonly payoutOutcomes: PayoutOutcomeConsumer;
  readonly metrics: Metrics;
  readonly textModel: TextModel;
  readonly reconcileJobs: ReconcileJobs;
  /** The `email` queue this server enqueues to. */
  readonly emailQueue: Queue;
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
  // Emails are enqueued here once the change they tell of is durable; the worker sends them.
  const emailQueue = createEmailQueue(config, logger);
  const emails = new EmailNotifier(emailQueue.queue, logger);
  const moneyIn = new MoneyIn({
    stripe: stripe.stripe,
    webhookSecret: stripe.webhookSecret,
    ledger: core.ledger,
    pool: core.pool,
    logger,
    drainWal: () => core.persister.drain(),
    onDeposited: async (pi, r) => {
      // A replay (Stripe's redelivery, a refund's check) enqueues again under the same job id,
      // which covers an enqueue lost after the deposit; past the window finished jobs are kept,
      // the id no longer deduplicates, so a deposit that old is not told of again.
      if (r.replayed && Date.now() - Date.parse(r.transaction.createdAt) > config.EMAIL_KEEP_JOBS_S * 1000) {
        return;
      }
      await emails.notify({
        kind: "purchase_receipt",
        userId: r.account.id,
        paymentIntentId: pi.id,
        amountCents: pi.amount_received,
        balanceCents: r.account.balanceCents,
      });
    },
    onChargeback: async (dispute, _pi, r) => {
      if (r.account.debtCents > 0) {
        await emails.notify({
          kind: "chargeback_debt",
          userId: r.account.id,
          disputeId: dispute.id,
          amountCents: dispute.amount,
          debtCents: r.account.debtCents,
        });
      }
    },
  });
  const reconcileJobs = new ReconcileJobs({
    redis: redisTarget(config),
    prefix: config.REDIS_PREFIX,
    keep: config.RECONCILE_JOBS_KEPT,
    logger,
  });
  // Built before the queue below: the metric sources read it at scrape time only.
  let jobsForMetrics: BullPayoutJobs | null = null;
  let liveForMetrics: {
    stats(): { connections: number; subscribers: number };
    feedRedis: RedisClient | null;
  } | null = null;
  const metrics = new Metrics({
    payouts: {
      byStatus: async () => {
        const r = await core.pool.query<{ status: string; n: number }>(
          "SELECT status, count(*)::int AS n FROM payouts GROUP BY status",
        );
        return Object.fromEntries(r.rows.map((x) => [x.status, x.n]));
      },
      jobs: async () =>
        jobsForMetrics ? jobsForMetrics.queue.getJobCounts("waiting", "active", "delayed", "failed") : {},
    },
    queues: {
      email: () => emailQueue.queue.getJobCounts("waiting", "active", "delayed", "failed"),
      reconcile: () => reconcileJobs.queue.getJobCounts("waiting", "active", "delayed", "failed"),
    },
    live: () => liveForMetrics?.stats() ?? { connections: 0, subscribers: 0 },
    threads: () => ({ main: process.pid, persister: core.persister.threadId }),
    persist: () => core.persister.health(),
    ledger: () => ({
      recovering: core.ledger.health().recovering,
      accountsInMemory: core.ledger.accountsInMemory,
      shardsOwned: core.ownership.owned(),
      ...(core.placement ? { peers: core.ledger.peerStats } : {}),
    }),
  });
  core.ledger.onFlush = (seconds, events, ok) => metrics.walFlush(seconds, events, ok);
  const payoutStore = new PayoutStore(core.pool);
  const payoutJobs = payoutJobsFromConfig(config, logger);
  jobsForMetrics = payoutJobs;
  // This process owns the ledger: it applies what the payout worker learned from providers.
  const payoutOutcomes = new PayoutOutcomeConsumer({
    redis: core.redis,
    prefix: config.REDIS_PREFIX,
    ledger: core.ledger,
    logger,
    readCount: config.PAYOUT_OUTCOME_READ_COUNT,
    blockMs: config.PAYOUT_OUTCOME_BLOCK_MS,
    onApplied: (o, r) => {
      if (o.state === "paid" && r.applied) {
        metrics.payoutPaid((Date.now() - Date.parse(r.payout.createdAt)) / 1000);
      }
      // The outcome is durable in the ledger: tell the creator once (job id: payout, state, round).
      if (r.applied && o.state !== "processing") {
        const base = {
          userId: o.userId,
          payoutId: o.payoutId,
          amountCents: r.payout.amountCents,
          round: o.round,
        };
        if (o.state === "failed") {
          emails.notifyLater({
            kind: "payout_failed",
            ...base,
            reason: r.payout.failureReason ?? "refused by the provider",
          });
        } else if (o.state === "returned") {
          emails.notifyLater({
            kind: "payout_returned",
            ...base,
            ...(r.payout.failureReason ? { reason: r.payout.failureReason } : {}),
          });
        } else {
          emails.notifyLater({ kind: "payout_paid", ...base });
        }
      }
    },
  });
  void payoutOutcomes.start().catch((err) => logger.error({ err }, "payout outcome consumer did not start"));

  const limits = new RateLimits(core.limitsRedis, config);
  const ai = createTextModel(config, logger);
  registerAiMetrics(metrics.registry, ai);
  const textModel = ai.model;
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
    ...(config.RATE_LIMIT_REDIS_URL ? { rateLimitRedis: () => core.limitsRedis.ping() } : {}),
    ...(config.FEED_REDIS_URL
      ? { feedRedis: () => liveForMetrics?.feedRedis?.ping() ?? Promise.reject(new Error("not started")) }
      : {}),
    ledger: () => core.ledger.health(),
    shards: () => ({
      owner: core.ownership.owner,
      owned: core.ownership.owned(),
      ...(core.placement ? { spread: core.placement.view() } : {}),
    }),
    persist: () => core.persister.health(),
  };
  registerHealth(http, probes);
  registerMetrics(http, metrics, config.METRICS_TOKEN, logger);
  const live = createLive({ app: http.app, config, logger, core, tokens, users, roles, limits });
  liveForMetrics = live;
  // A tip's sender is named in its creator's feed: from the account load that preceded the tip,
  // and forgotten when the user is renamed here.
  core.accounts.onNames = (names, readAtMs) => live.feed.learnNames(names, readAtMs);
  users.onRenamed = (id) => live.feed.forgetName(id);
  if (config.LEDGER_SPREAD) {
    // Shards spread over processes: the others call this one for its shards, and send it credits.
    registerInternalRoutes(http, { ledger: core.ledger, token: config.INTERNAL_TOKEN!, logger });
    core.ledger.onRemoteTip = (tx) => live.feed.rememberTip(tx);
  }
  observeLedger(core.ledger, metrics, logger);
  http.register([
    ...userRoutes({
      users,
      roles,
      identity,
      tokens,
      ledger: core.ledger,
      onRegistered: (u) => emails.notifyLater({ kind: "welcome", userId: u.id }),
    }),
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
      reconcileJobs,
    }),
    ...adminRoutes({ ledger: core.ledger, users, roles, pool: core.pool }),
    ...(deps.payoutWebhooks
      ? payoutWebhookRoutes({
          pool: core.pool,
          ledger: core.ledger,
          store: payoutStore,
          providers: deps.payoutProviders ?? {},
          webhooks: deps.payoutWebhooks,
          redis: core.redis,
          prefix: config.REDIS_PREFIX,
          logger,
        })
      : []),
    ...payoutRoutes({
      ledger: core.ledger,
      roles,
      store: payoutStore,
      // A payout's job is enqueued once its reserve is durable: then the creator hears it is on its way.
      jobs: {
        async enqueue(p) {
          await payoutJobs.enqueue(p);
          emails.notifyLater({
            kind: "payout_requested",
            userId: p.userId,
            payoutId: p.id,
            amountCents: p.amountCents,
            round: p.round,
          });
        },
        close: () => payoutJobs.close(),
      },
      providers: deps.payoutProviders ?? {},
      logger,
      minUsd: config.PAYOUT_MIN_USD,
      maxUsd: config.PAYOUT_MAX_USD,
      listMax: config.PAYOUT_LIST_MAX,
    }),
    ...aiRoutes({ model: textModel, limits }),
    ...live.routes,
  ]);
  registerDocs(http, () => apiDocument(http.endpoints, config));
  // The reconcile worker runs here, in the process that owns the ledger (it drains the WAL and
  // fixes deposits through the ledger), whatever RUN_WORKERS says; the schedule is kept in Redis.
  reconcileJobs.startWorker({
    moneyIn,
    windowMs: config.RECONCILE_WINDOW_MS,
    done: (jobId, report, err) => {
      if (!report) {
        metrics.reconciled(null);
        logger.error(
          { event: LOG_EVENTS.reconcileFailed, job_id: jobId, err: err?.message },
          "reconcile failed",
        );
        return;
      }
      const findings = reconcileFindings(report);
      metrics.reconciled(findings);
      for (const [kind, count] of Object.entries(findings)) {
        if (count > 0) {
          logger.error(
            { event: LOG_EVENTS.reconcileDiscrepancy, kind, count, job_id: jobId, report_id: report.id },
            "reconcile found discrepancies",
          );
        }
      }
    },
  });
  void reconcileJobs
    .schedule(config.RECONCILE_EVERY)
    .catch((err) => logger.warn({ err: err.message }, "reconcile schedule not set (Redis unreachable?)"));

  return {
    tokens,
    users,
    roles,
    moneyIn,
    endpoints: http.endpoints,
    payoutJobs,
    payoutOutcomes,
    metrics,
    textModel,
    emailQueue: emailQueue.queue,
    reconcileJobs,
    async listen(port, host) {
      const bound = await http.listen(port, host);
      // Spread over processes without INTERNAL_URL: the others reach this one where it listens.
      if (core.placement && !config.INTERNAL_URL) core.placement.setUrl(`http://127.0.0.1:${bound}`);
      return bound;
    },
    async close() {
      http.close();
      await payoutOutcomes.stop();
      await payoutJobs.close();
      live.close();
      await reconcileJobs.close();
      await hasher.close();
      await textModel.close();
      await emailQueue.close();
    },
  };
}
