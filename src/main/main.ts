// Process entry point (`npm start`): configuration, the ledger core (Postgres, Redis WAL,
// persister), then the HTTP server. Exits with one clear line when a dependency is missing.
import { DependencyError, startCore } from "./core.ts";
import { ConfigError, loadConfig } from "../config.ts";
import { createHttpServer } from "./http-app.ts";
import { createLogger } from "./logger.ts";
import { setUpStripe } from "../payments/stripe.ts";
import { createEmailWorker } from "../email/worker.ts";
import { setUpPayoutProviders } from "../payouts/setup.ts";
import { startQueueDashboard } from "../admin/queue-dashboard.ts";
import { startPayoutWorkers } from "../workers/payout-workers.ts";

async function main(): Promise<void> {
  const config = loadConfig();
  const logger = createLogger(config.LOG_LEVEL);
  const core = await startCore(config, logger);
  const stripe = await setUpStripe(config, logger);
  const payouts = await setUpPayoutProviders(config, logger);
  const http = createHttpServer({
    config,
    logger,
    core,
    stripe,
    payoutProviders: payouts.providers,
    payoutWebhooks: payouts.webhooks,
  });
  // One command runs everything locally; RUN_WORKERS=false leaves the workers to `npm run worker`.
  const workers = config.RUN_WORKERS
    ? startPayoutWorkers({
        config,
        logger,
        outcomes: core.redis,
        pool: core.pool,
        jobs: http.payoutJobs,
        providers: payouts.providers,
        onProviderError: (provider, code) => http.metrics.providerError(provider, code),
      })
    : null;
  const email = config.RUN_WORKERS ? createEmailWorker({ config, logger, pool: core.pool }) : null;
  const port = await http.listen(config.PORT, config.HOST);
  stripe.setWebhookUrl(`http://127.0.0.1:${port}/api/payments/webhook`);
  // Stand-ins deliver their signed webhooks here (a real provider's is set in its dashboard).
  for (const p of payouts.standins)
    payouts.setWebhookUrl(p, `http://127.0.0.1:${port}/api/payments/webhooks/${p}`);
  logger.info({ port, shards: config.SHARDS }, "3AM backend listening");
  const dashboard =
    config.BULL_BOARD_PORT > 0
      ? await startQueueDashboard(
          {
            queues: [http.payoutJobs.queue, http.emailQueue],
            tokens: http.tokens,
            roles: http.roles,
            logger,
            secureCookie: config.NODE_ENV === "production",
          },
          config.BULL_BOARD_PORT,
          config.BULL_BOARD_HOST,
        )
      : null;

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, "shutting down: closing HTTP, flushing the ledger, draining the WAL");
    await dashboard?.close();
    await http.close();
    await workers?.close();
    await email?.close();
    await stripe.close();
    await payouts.close();
    await core.ledger.stop();
    await core.persister
      .drain()
      .catch((err) => logger.warn({ err }, "WAL not fully drained; it is persisted on the next start"));
    await core.stop();
    process.exit(0);
  };
  process.on("SIGINT", () => void shutdown("SIGINT"));
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
}

main().catch((err) => {
  if (err instanceof ConfigError || err instanceof DependencyError) {
    console.error(`3am: ${err.message}`);
  } else {
    console.error("3am: failed to start:", err);
  }
  process.exit(1);
});
