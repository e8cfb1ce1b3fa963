// Entry point of `npm run worker`: the payout and email workers alone, for deployments that run workers
// apart from the API (the API process owns the ledger and applies the outcomes the worker
// publishes). Graceful shutdown: stop taking jobs, let the active ones finish.
import { openRedis, redisTarget } from "../redis/connect.ts";
import pino from "pino";
import { ConfigError, loadConfig } from "../config.ts";
import { createPool } from "../db/pool.ts";
import { createEmailWorker } from "../email/worker.ts";
import { payoutJobsFromConfig } from "../payouts/payout-queue.ts";
import { setUpPayoutProviders } from "../payouts/setup.ts";
import { startPayoutWorkers } from "./payout-workers.ts";

async function main(): Promise<void> {
  const config = loadConfig();
  const logger = pino({ level: config.LOG_LEVEL });
  const payouts = await setUpPayoutProviders(config, logger);
  const outcomes = openRedis(redisTarget(config), { maxRetriesPerRequest: 3 });
  outcomes.on("error", (err) => logger.warn({ err: err.message }, "outcome Redis connection error"));
  const pool = createPool(config.DATABASE_URL, 2, {
    connectTimeoutMs: config.PG_CONNECT_TIMEOUT_MS,
    statementTimeoutMs: config.PG_STATEMENT_TIMEOUT_MS,
    idleInTransactionTimeoutMs: config.PG_IDLE_IN_TRANSACTION_TIMEOUT_MS,
  });
  pool.on("error", (err) => logger.warn({ err: err.message }, "idle Postgres client error"));
  const jobs = payoutJobsFromConfig(config, logger);
  const workers = startPayoutWorkers({ config, logger, outcomes, pool, jobs, providers: payouts.providers });
  const email = createEmailWorker({ config, logger, pool });
  logger.info({ concurrency: config.PAYOUT_WORKER_CONCURRENCY }, "payout worker running");
  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, "payout worker stopping: no new jobs, finishing the active ones");
    await workers.close();
    await email.close();
    await jobs.close();
    await pool.end();
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
