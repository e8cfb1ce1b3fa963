// Owns the name of every Redis key this backend writes, in one place (BullMQ's queue-keys habit).
// Every key starts with REDIS_PREFIX, so one Redis can hold many isolated deployments or tests.

export interface RedisKeys {
  /** A shard's write-ahead log stream. */
  walStream(shard: number): string;
  /** The ledger owner's lease: "<fencing token>:<owner id>", with a TTL. */
  ledgerLease: string;
  /** The fencing-token counter: INCR'd by every new owner, so tokens only grow. */
  ledgerFence: string;
  /** A rate-limit counter of one client (ip, user or auth budget) for the current window. */
  rateLimit(kind: string, client: string): string;
  /** Payout outcomes (processing, paid, failed, returned) from the payout worker to the ledger. */
  payoutOutcomes: string;
  /** BullMQ's prefix for its queues (BullMQ builds its own keys under it). */
  bullPrefix: string;
  /** A creator's live tip feed: a stream whose entry ids are `<seq>-1`, the last FEED_RETENTION kept. */
  tipFeed(creatorId: string): string;
}

export function redisKeys(prefix: string): RedisKeys {
  return {
    walStream: (shard) => `${prefix}wal:${shard}`,
    ledgerLease: `${prefix}ledger:owner`,
    ledgerFence: `${prefix}ledger:fence`,
    rateLimit: (kind, client) => `${prefix}rl:${kind}:${client}`,
    payoutOutcomes: `${prefix}payouts:outcomes`,
    bullPrefix: `${prefix}bull`,
    tipFeed: (creatorId) => `${prefix}feed:${creatorId}`,
  };
}

/** The shard number of a WAL stream key (the digits after its last colon). */
export const shardOfWalStream = (key: string): number => Number(key.slice(key.lastIndexOf(":") + 1));

/** The ledger owner's consumer group on the payout outcome stream. */
export const PAYOUT_OUTCOME_GROUP = "ledger";

/** The BullMQ queue that carries withdrawals to the payout worker (job id = payout id). */
export const PAYOUT_QUEUE = "payouts";

/** The BullMQ queue of transactional emails (job id derived from the event that causes one). */
export const EMAIL_QUEUE = "email";

/** The BullMQ queue of reconcile runs (scheduled every RECONCILE_EVERY, or asked for by an admin). */
export const RECONCILE_QUEUE = "reconcile";

/** The persister's consumer group on every WAL stream. */
export const PERSIST_GROUP = "persister";
