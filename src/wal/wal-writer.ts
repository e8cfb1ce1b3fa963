// Owns the Redis WAL behind the shard runtime's WalLog port. An append sends each shard's entry
// to its stream, all shards of a flush in ONE Redis command on a single Redis and one command per
// shard on a Redis Cluster (lua/wal-append.lua), and only while this process holds each shard's
// lease: the script checks the lease values (with their fencing tokens) atomically with the
// XADDs, so a process that stalled past its lease can never append.
// With appendfsync always, Redis answers only once the entries are in its AOF. Reads page
// through a stream with XRANGE, so recovery holds one page at a time.
import { execSpread, isCluster, type RedisClient } from "../redis/connect.ts";
import { redisKeys, type RedisKeys } from "../redis/keys.ts";
import { defineScript } from "../redis/scripts.ts";
import {
  OwnershipLostError,
  type WalAppend,
  type WalAppendResult,
  type WalEntry,
  type WalLog,
} from "../shards/ports.ts";
import {
  compareStreamIds,
  decodeEntry,
  encodeEntry,
  nextStreamId,
  streamIdMs,
  WAL_FORMAT_VERSION,
} from "./wal-codec.ts";

type AppendingRedis = RedisClient & {
  walAppend(numKeys: number, ...args: Array<string | Buffer>): Promise<Array<[number, string]>>;
};

/** The error Redis answers when the lease the append carries is not the current one. */
export const isFencedError = (err: unknown): boolean =>
  String((err as Error)?.message ?? "").startsWith("FENCED");

export class RedisWal implements WalLog {
  private readonly redis: AppendingRedis;
  private readonly keys: RedisKeys;
  /** One script call per shard: a cluster routes a call by its keys' slot. */
  private readonly perShard: boolean;

  /**
   * `lease(shard)` is the lease value this process holds now for a shard (it changes when
   * recovery takes a new token).
   */
  constructor(
    redis: RedisClient,
    prefix: string,
    private readonly lease: (shard: number) => string,
  ) {
    defineScript(redis, "walAppend", "wal-append.lua");
    this.redis = redis as AppendingRedis;
    this.keys = redisKeys(prefix);
    this.perShard = isCluster(redis);
  }

  async append(batch: WalAppend[]): Promise<WalAppendResult[]> {
    if (!this.perShard || batch.length <= 1) return this.appendOnce(batch);
    const byShard = new Map<number, number[]>();
    for (const [i, b] of batch.entries()) {
      const list = byShard.get(b.shard);
      if (list) list.push(i);
      else byShard.set(b.shard, [i]);
    }
    const out = new Array<WalAppendResult>(batch.length);
    await Promise.all(
      [...byShard.values()].map(async (idx) => {
        const results = await this.appendOnce(idx.map((i) => batch[i]!));
        for (const [j, i] of idx.entries()) out[i] = results[j]!;
      }),
    );
    return out;
  }

  private async appendOnce(batch: WalAppend[]): Promise<WalAppendResult[]> {
    const args: Array<string | Buffer> = [];
    for (const b of batch) args.push(this.keys.shardLease(b.shard), this.keys.walStream(b.shard));
    args.push(WAL_FORMAT_VERSION);
    let replies: Array<[number, string]>;
    try {
      for (const b of batch) args.push(this.lease(b.shard));
      for (const b of batch) args.push(encodeEntry(b.events));
      replies = await this.redis.walAppend(2 * batch.length, ...args);
    } catch (err) {
      const fenced = isFencedError(err) || err instanceof OwnershipLostError;
      return batch.map(() => ({ ok: false, error: err as Error, fenced }));
    }
    return batch.map((_, i) => {
      const r = replies?.[i];
      if (!r) return { ok: false, error: new Error("no reply from Redis"), fenced: false };
      if (Number(r[0]) !== 1) return { ok: false, error: new Error(String(r[1])), fenced: false };
      return { ok: true, id: String(r[1]) };
    });
  }

  async readPage(shard: number, afterId: string | null, count: number): Promise<WalEntry[]> {
    const start = afterId === null ? "-" : `(${afterId}`;
    const page = (await this.redis.xrange(this.keys.walStream(shard), start, "+", "COUNT", count)) as Array<
      [string, string[]]
    >;
    return page.map(([id, fields]) => ({ id, events: decodeEntry(fields) }));
  }

  /** How many entries each of the first `shards` streams holds (persisted ones are trimmed). */
  async entryCounts(shards: number): Promise<number[]> {
    const replies = await execSpread(
      this.redis,
      Array.from({ length: shards }, (_, s) => ["xlen", this.keys.walStream(s)]),
    );
    return replies.map(([err, n]) => {
      if (err) throw err;
      return Number(n);
    });
  }

  compareIds(a: string, b: string): number {
    return compareStreamIds(a, b);
  }

  idAfter(id: string): string {
    return nextStreamId(id);
  }

  idTimeMs(id: string): number {
    return streamIdMs(id);
  }
}
