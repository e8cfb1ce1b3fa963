// Entry point of `npm run worker`: the payout worker alone, for deployments that run workers
// apart from the API (the API process owns the ledger and applies the outcomes the worker
// publishes). Graceful shutdown: stop taking jobs, let the active ones finish.
import { Redis } from "ioredis";
import pino from "pino";
import { ConfigError, loadConfig } from "../config.ts";
import { setUpPayoutProviders } from "../payouts/setup.ts";
import { PayoutWorker } from "./payout-worker.ts";

async function main(): Promise<void> {
  const config = loadConfig();
  const logger = pino({ level: config.LOG_LEVEL });
  const payouts = await setUpPayoutProviders(config, logger);
  const outcomes = new Redis(config.REDIS_URL, { maxRetriesPerRequest: 3 });
  outcomes.on("error", (err) => logger.warn({ err: err.message }, "outcome Redis connection error"));
  const worker = new PayoutWorker({
    redisUrl: config.REDIS_URL,
    outcomes,
    prefix: config.REDIS_PREFIX,
    providers: payouts.providers,
    logger,
    concurrency: config.PAYOUT_WORKER_CONCURRENCY,
    statusPollMs: config.PAYOUT_STATUS_POLL_MS,
    statusWaitMs: config.PAYOUT_STATUS_WAIT_MS,
  });
  logger.info({ concurrency: config.PAYOUT_WORKER_CONCURRENCY }, "payout worker running");
  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, "payout worker stopping: no new jobs, finishing the active ones");
    await worker.close();
    await payouts.close();
    outcomes.disconnect();
    process.exit(0);
  };
  process.on("SIGINT", () => void shutdown("SIGINT"));
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
}

main().catch((err) => {
  console.error(
    err instanceof ConfigError ? `3am worker: ${err.message}` : "3am worker: failed to start:",
    err,
  );
  process.exit(1);
});
