// Owns the name of every Redis key this backend writes, in one place (BullMQ's queue-keys habit).
// Every key starts with REDIS_PREFIX, so one Redis can hold many isolated deployments or tests.
// Keys that one script or transaction touches together share a hash tag, so they land in one
// slot of a Redis Cluster: `{<shard>}` for a shard's WAL stream, lease and fencing counter, and
// `{bull}` for BullMQ's queues (BullMQ's own advice: a hash tag in the prefix).

export interface RedisKeys {
  /** A shard's write-ahead log stream. */
  walStream(shard: number): string;
  /** A shard's owner lease: "<fencing token>:<owner id>", with a TTL. */
  shardLease(shard: number): string;
  /** A shard's fencing-token counter: INCR'd by every new owner of the shard, so tokens only grow. */
  shardFence(shard: number): string;
  /** Before per-shard leases and hash tags: one lease for the whole ledger, untagged WAL streams. */
  legacy: { ledgerLease: string; walStream(shard: number): string };
  /** A rate-limit counter of one client (ip, user or auth budget) for the current window. */
  rateLimit(kind: string, client: string): string;
  /** Payout outcomes (processing, paid, failed, returned) from the payout worker to the ledger. */
  payoutOutcomes: string;
  /** BullMQ's prefix for its queues (BullMQ builds its own keys under it). */
  bullPrefix: string;
  /** A creator's live tip feed: a stream whose entry ids are `<seq>-1`, the last FEED_RETENTION kept. */
  tipFeed(creatorId: string): string;
  /** The pub/sub channel on which each process publishes the feed entries it wrote (LEDGER_SPREAD). */
  feedLive: string;
  /** The pub/sub channel on which each process publishes the status changes it decided (LEDGER_SPREAD). */
  accountStatus: string;
  /** Shards spread over processes: the live processes (owner id, scored by when it expires). */
  members: string;
  /** Shards spread over processes: each live process's internal address, by owner id. */
  memberUrls: string;
}

export function redisKeys(prefix: string): RedisKeys {
  return {
    walStream: (shard) => `${prefix}wal:{${shard}}`,
    shardLease: (shard) => `${prefix}lease:{${shard}}`,
    shardFence: (shard) => `${prefix}fence:{${shard}}`,
    legacy: { ledgerLease: `${prefix}ledger:owner`, walStream: (shard) => `${prefix}wal:${shard}` },
    rateLimit: (kind, client) => `${prefix}rl:${kind}:${client}`,
    payoutOutcomes: `${prefix}payouts:outcomes`,
    bullPrefix: `${prefix}{bull}`,
    tipFeed: (creatorId) => `${prefix}feed:${creatorId}`,
    feedLive: `${prefix}feed-live`,
    accountStatus: `${prefix}account-status`,
    members: `${prefix}members`,
    memberUrls: `${prefix}member-urls`,
  };
}

/** The shard number of a WAL stream key (the digits of its hash tag, the key's last `{...}`). */
export const shardOfWalStream = (key: string): number => Number(key.slice(key.lastIndexOf("{") + 1, -1));

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
