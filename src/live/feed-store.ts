// Owns the durable half of the creators' tip feeds: one Redis stream per creator whose entry id
// is `<seq>-1`, so an append is idempotent (Redis refuses an id at or below the stream's top) and
// a range read by seq is a range read by id. The stream keeps the last FEED_RETENTION entries.
import { execSpread, isCluster, type RedisClient, type SpreadCommand } from "../redis/connect.ts";
import { redisKeys, type RedisKeys } from "../redis/keys.ts";
import { defineScript } from "../redis/scripts.ts";

type AppendingRedis = RedisClient & {
  feedAppend(numKeys: number, ...args: Array<string | number>): Promise<Array<1 | string>>;
};

/** One feed entry: its number and the tip as the feed shows it (message not yet filtered). */
export interface FeedEntry {
  seq: number;
  tip: FeedTip;
}

export interface FeedTip {
  id: string;
  kind: "tip" | "superlike";
  from_username: string;
  from_display_name: string;
  amount: string;
  net_amount: string;
  message: string | null;
  created_at: string;
}

/** An entry to append: its creator, its number and its tip as JSON (the FeedTip). */
export interface FeedAppendItem {
  creatorId: string;
  seq: number;
  tipJson: string;
}

const idOf = (seq: number): string => `${seq}-1`;
const seqOf = (id: string): number => Number(id.slice(0, id.indexOf("-")));

function entriesOf(raw: Array<[string, string[]]>): FeedEntry[] {
  const out: FeedEntry[] = [];
  for (const [id, fields] of raw) {
    const i = fields.indexOf("t");
    if (i >= 0 && i + 1 < fields.length) out.push({ seq: seqOf(id), tip: JSON.parse(fields[i + 1]!) });
  }
  return out;
}

export class FeedStore {
  private readonly keys: RedisKeys;

  constructor(
    /** The one connection every feed command goes over, so replies come back in command order. */
    private readonly redis: RedisClient,
    prefix: string,
    private readonly retention: number,
  ) {
    this.keys = redisKeys(prefix);
    defineScript(redis, "feedAppend", "feed-append.lua");
  }

  /**
   * Appends entries (in order) in one round trip. Per entry: true when it is in the stream now,
   * whether this call or an earlier one (a replay) wrote it; an Error when Redis refused otherwise.
   */
  async append(items: FeedAppendItem[]): Promise<Array<true | Error>> {
    if (items.length === 0) return [];
    if (!isCluster(this.redis)) {
      // One script call for the whole batch instead of an XADD each: measured at full tip rate,
      // one feed entry per tip made the pipeline's per-command objects a tenth of the server's
      // allocations and its commands a third of Redis's calls.
      const args: Array<string | number> = [];
      for (const { creatorId } of items) args.push(this.keys.tipFeed(creatorId));
      args.push(this.retention);
      for (const { seq, tipJson } of items) args.push(idOf(seq), tipJson);
      const out = await (this.redis as AppendingRedis).feedAppend(items.length, ...args);
      return out.map((r) => (r === 1 ? true : new Error(String(r))));
    }
    const replies = await execSpread(
      this.redis,
      items.map(
        ({ creatorId, seq, tipJson }): SpreadCommand => [
          "xadd",
          this.keys.tipFeed(creatorId),
          "MAXLEN",
          "~",
          this.retention,
          idOf(seq),
          "t",
          tipJson,
        ],
      ),
    );
    return items.map((_, i) => {
      const err = replies[i]?.[0];
      if (!err) return true;
      // "The ID specified in XADD is equal or smaller than the target stream top item": written before.
      if (/equal or smaller/i.test(err.message)) return true;
      return err;
    });
  }

  /** The newest seq in the creator's stream (0: none). */
  async top(creatorId: string): Promise<number> {
    const r = (await this.redis.xrevrange(this.keys.tipFeed(creatorId), "+", "-", "COUNT", 1)) as Array<
      [string, string[]]
    >;
    return r.length > 0 ? seqOf(r[0]![0]) : 0;
  }

  /** The oldest seq still kept (0: none). */
  async oldest(creatorId: string): Promise<number> {
    const r = (await this.redis.xrange(this.keys.tipFeed(creatorId), "-", "+", "COUNT", 1)) as Array<
      [string, string[]]
    >;
    return r.length > 0 ? seqOf(r[0]![0]) : 0;
  }

  /** Up to `count` entries after `afterSeq`, oldest first. */
  async after(creatorId: string, afterSeq: number, count: number): Promise<FeedEntry[]> {
    const r = (await this.redis.xrange(
      this.keys.tipFeed(creatorId),
      `(${idOf(afterSeq)}`,
      "+",
      "COUNT",
      count,
    )) as Array<[string, string[]]>;
    return entriesOf(r);
  }
}
