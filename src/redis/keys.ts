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
  /** A creator's live tip feed: a stream whose entry ids are `<seq>-1`, the last FEED_RETENTION kept. */
  tipFeed(creatorId: string): string;
}

export function redisKeys(prefix: string): RedisKeys {
  return {
    walStream: (shard) => `${prefix}wal:${shard}`,
    ledgerLease: `${prefix}ledger:owner`,
    ledgerFence: `${prefix}ledger:fence`,
    rateLimit: (kind, client) => `${prefix}rl:${kind}:${client}`,
    tipFeed: (creatorId) => `${prefix}feed:${creatorId}`,
  };
}

/** The shard number of a WAL stream key (the digits after its last colon). */
export const shardOfWalStream = (key: string): number => Number(key.slice(key.lastIndexOf(":") + 1));

/** The persister's consumer group on every WAL stream. */
export const PERSIST_GROUP = "persister";
