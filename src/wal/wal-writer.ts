// Owns the Redis WAL behind the shard runtime's WalLog port. An append sends each shard's entry
// to its stream, all shards of a flush in ONE Redis command (lua/wal-append.lua), and only while
// this process holds the ledger lease: the script checks the lease value (with its fencing
// token) atomically with the XADDs, so a process that stalled past its lease can never append.
// With appendfsync always, Redis answers only once the entries are in its AOF. Reads page
// through a stream with XRANGE, so recovery holds one page at a time.
import type { Redis } from "ioredis";
import { redisKeys, type RedisKeys } from "../redis/keys.ts";
import { defineScript } from "../redis/scripts.ts";
import type { WalAppend, WalAppendResult, WalEntry, WalLog } from "../shards/ports.ts";
import {
  compareStreamIds,
  decodeEntry,
  encodeEntry,
  nextStreamId,
  streamIdMs,
  WAL_FORMAT_VERSION,
} from "./wal-codec.ts";

type AppendingRedis = Redis & {
  walAppend(numKeys: number, ...args: Array<string | Buffer>): Promise<Array<[number, string]>>;
};

/** The error Redis answers when the lease the append carries is not the current one. */
export const isFencedError = (err: unknown): boolean =>
  String((err as Error)?.message ?? "").startsWith("FENCED");

export class RedisWal implements WalLog {
  private readonly redis: AppendingRedis;
  private readonly keys: RedisKeys;

  /** `lease()` is the lease value this process holds now (changes when recovery takes a new token). */
  constructor(
    redis: Redis,
    prefix: string,
    private readonly lease: () => string,
  ) {
    defineScript(redis, "walAppend", "wal-append.lua");
    this.redis = redis as AppendingRedis;
    this.keys = redisKeys(prefix);
  }

  async append(batch: WalAppend[]): Promise<WalAppendResult[]> {
    const args: Array<string | Buffer> = [this.keys.ledgerLease];
    for (const b of batch) args.push(this.keys.walStream(b.shard));
    args.push(this.lease(), WAL_FORMAT_VERSION);
    for (const b of batch) args.push(encodeEntry(b.events));
    let replies: Array<[number, string]>;
    try {
      replies = await this.redis.walAppend(batch.length + 1, ...args);
    } catch (err) {
      const fenced = isFencedError(err);
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
    const pipe = this.redis.pipeline();
    for (let s = 0; s < shards; s++) pipe.xlen(this.keys.walStream(s));
    const replies = (await pipe.exec()) ?? [];
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
