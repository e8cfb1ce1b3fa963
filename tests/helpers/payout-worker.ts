// A payout worker as the money-out tests run one beside the API: BullMQ on the test's Redis and
// prefix, outcomes on the test's Redis, the API's providers (stand-ins), 4 jobs at a time, a
// transfer's status asked every 25 ms for up to 10 s. `o` overrides or adds options.
import { redisTarget } from "../../src/redis/connect.ts";
import { PayoutWorker, type PayoutWorkerOptions } from "../../src/workers/payout-worker.ts";
import type { Api } from "./api.ts";
import type { TestEnv } from "./env.ts";
import { silentLogger } from "./ledger.ts";

export function testPayoutWorker(api: Api, env: TestEnv, o: Partial<PayoutWorkerOptions> = {}): PayoutWorker {
  return new PayoutWorker({
    redis: redisTarget(api.core.config),
    outcomes: env.redis,
    prefix: env.redisPrefix,
    providers: api.payouts.providers,
    logger: silentLogger,
    concurrency: 4,
    statusPollMs: 25,
    statusWaitMs: 10_000,
    ...o,
  });
}
