// Owns making events durable: each shard's pending events go out as one entry on its stream,
// all shards of a flush in ONE Redis command (a Lua function running XADD per stream), so a
// flush costs one command however many shards it touches. A result per entry says whether Redis
// took it; with appendfsync always, Redis answers only once the entries are in its AOF.
import type { Redis } from "ioredis";
import type { WalEvent } from "../ledger/events.ts";
import { encodeEntry, WAL_FIELD, walStreamKey } from "./wal-codec.ts";

export interface WalAppend {
  shard: number;
  events: WalEvent[];
}

export type WalAppendResult = { ok: true; id: string } | { ok: false; error: Error };

/**
 * XADD to every key, each independently: pcall keeps one refused stream (say, a key of the wrong
 * type) from failing the others, exactly as separate commands in a pipeline would.
 */
const APPEND_SCRIPT = `
local out = {}
for i = 1, #KEYS do
  local r = redis.pcall('XADD', KEYS[i], '*', ARGV[1], ARGV[i + 1])
  if type(r) == 'table' and r.err then out[i] = {0, r.err} else out[i] = {1, r} end
end
return out`;

type AppendingRedis = Redis & {
  walAppend(numKeys: number, ...args: Array<string | Buffer>): Promise<Array<[number, string]>>;
};

export class WalWriter {
  private readonly redis: AppendingRedis;

  constructor(
    redis: Redis,
    private readonly prefix: string,
  ) {
    // defineCommand sends EVALSHA and falls back to EVAL once if Redis lost the script.
    if (!("walAppend" in redis)) redis.defineCommand("walAppend", { lua: APPEND_SCRIPT });
    this.redis = redis as AppendingRedis;
  }

  async append(batch: WalAppend[]): Promise<WalAppendResult[]> {
    const args: Array<string | Buffer> = [];
    for (const b of batch) args.push(walStreamKey(this.prefix, b.shard));
    args.push(WAL_FIELD);
    for (const b of batch) args.push(encodeEntry(b.events));
    let replies: Array<[number, string]>;
    try {
      replies = await this.redis.walAppend(batch.length, ...args);
    } catch (err) {
      return batch.map(() => ({ ok: false, error: err as Error }));
    }
    return batch.map((_, i) => {
      const r = replies?.[i];
      if (!r) return { ok: false, error: new Error("no reply from Redis") };
      if (Number(r[0]) !== 1) return { ok: false, error: new Error(String(r[1])) };
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
