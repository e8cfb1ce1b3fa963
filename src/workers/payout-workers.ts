// Owns starting money out's background side from configuration: the payout worker (jobs to the
// providers) and the sweeper (payouts without a live job, processing ones asked of the provider).
// Both entry points use it: `npm start` (RUN_WORKERS) and `npm run worker`.
import { type RedisClient, redisTarget } from "../redis/connect.ts";
import type pg from "pg";
import type { Logger } from "pino";
import type { Config } from "../config.ts";
import { LOG_EVENTS } from "../log-events.ts";
import type { PayoutProvider, PayoutProviderName } from "../payouts/provider.ts";
import type { BullPayoutJobs } from "../payouts/payout-queue.ts";
import { PayoutSweeper } from "./payout-sweeper.ts";
import { PayoutWorker, pauseForTests } from "./payout-worker.ts";

export interface PayoutWorkersDeps {
  config: Config;
  logger: Logger;
  /** Where outcomes are published (the WAL's Redis). */
  outcomes: RedisClient;
  pool: pg.Pool;
  jobs: BullPayoutJobs;
  providers: Record<PayoutProviderName, PayoutProvider>;
  /** Counted in /metrics where the process serves it; the log event is written either way. */
  onProviderError?: (provider: string, code: string) => void;
}

export interface PayoutWorkers {
  /** Stops taking jobs and lets the active ones finish. */
  close(): Promise<void>;
}

export function startPayoutWorkers(d: PayoutWorkersDeps): PayoutWorkers {
  const { config, logger } = d;
  const worker = new PayoutWorker({
    redis: redisTarget(config),
    outcomes: d.outcomes,
    prefix: config.REDIS_PREFIX,
    providers: d.providers,
    logger,
    concurrency: config.PAYOUT_WORKER_CONCURRENCY,
    statusPollMs: config.PAYOUT_STATUS_POLL_MS,
    statusWaitMs: config.PAYOUT_STATUS_WAIT_MS,
    lockMs: config.PAYOUT_JOB_LOCK_MS,
    ...(config.PAYOUT_TEST_PAUSE_AFTER_SEND ? { pauseAfterSend: pauseForTests } : {}),
    onProviderError: (provider, code) => {
      d.onProviderError?.(provider, code);
      logger.warn({ event: LOG_EVENTS.payoutError, provider, code }, "payout provider call failed");
    },
  });
  const sweeper = new PayoutSweeper({
    pool: d.pool,
    jobs: d.jobs,
    providers: d.providers,
    outcomes: d.outcomes,
    prefix: config.REDIS_PREFIX,
    logger,
    staleMs: config.PAYOUT_SWEEP_STALE_MS,
    batch: config.PAYOUT_SWEEP_BATCH,
  });
  sweeper.start(config.PAYOUT_SWEEP_MS);
  return {
    async close() {
      await sweeper.stop();
      await worker.close();
    },
  };
}
