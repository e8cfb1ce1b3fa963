// Owns making events durable: each shard's pending events go out as one XADD on its stream, all
// shards of a flush in one pipeline (one round trip). A reply per entry says whether Redis took it.
import type { Redis } from "ioredis";
import type { WalEvent } from "../ledger/events.ts";
import { encodeEntry, WAL_FIELD, walStreamKey } from "./wal-codec.ts";

export interface WalAppend {
  shard: number;
  events: WalEvent[];
}

export type WalAppendResult = { ok: true; id: string } | { ok: false; error: Error };

export class WalWriter {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {}

  async append(batch: WalAppend[]): Promise<WalAppendResult[]> {
    const pipe = this.redis.pipeline();
    for (const b of batch)
      pipe.xadd(walStreamKey(this.prefix, b.shard), "*", WAL_FIELD, encodeEntry(b.events));
    let replies: Array<[Error | null, unknown]> | null;
    try {
      replies = await pipe.exec();
    } catch (err) {
      return batch.map(() => ({ ok: false, error: err as Error }));
    }
    return batch.map((_, i) => {
      const r = replies?.[i];
      if (!r) return { ok: false, error: new Error("no reply from Redis") };
      if (r[0]) return { ok: false, error: r[0] };
      return { ok: true, id: String(r[1]) };
    });
  }
}

/** Every entry in a shard's stream, oldest first: what recovery replays. */
export async function readWholeStream(
  redis: Redis,
  prefix: string,
  shard: number,
  pageSize = 1000,
): Promise<Array<{ id: string; fields: string[] }>> {
  const key = walStreamKey(prefix, shard);
  const out: Array<{ id: string; fields: string[] }> = [];
  let start = "-";
  for (;;) {
    const page = (await redis.xrange(key, start, "+", "COUNT", pageSize)) as Array<[string, string[]]>;
    for (const [id, fields] of page) out.push({ id, fields });
    if (page.length < pageSize) return out;
    start = `(${page[page.length - 1]![0]}`;
  }
}
