// Owns the WAL's wire format: one Redis stream entry per shard flush, field "e" holding the JSON
// array of that flush's events. One XADD carrying many events is what makes group commit cheap.
import type { WalEvent } from "../ledger/events.ts";

export const WAL_FIELD = "e";

export function encodeEntry(events: WalEvent[]): string {
  return JSON.stringify(events);
}

export function decodeEntry(fields: string[]): WalEvent[] {
  for (let i = 0; i + 1 < fields.length; i += 2) {
    if (fields[i] === WAL_FIELD) return JSON.parse(fields[i + 1]!) as WalEvent[];
  }
  throw new Error("WAL entry without an events field");
}

export const walStreamKey = (prefix: string, shard: number): string => `${prefix}wal:${shard}`;

/** Stream ids order as (ms, seq); the id right after `id`, for XTRIM MINID (which keeps >=). */
export function nextStreamId(id: string): string {
  const [ms, seq] = id.split("-");
  return `${ms}-${BigInt(seq ?? "0") + 1n}`;
}

export function compareStreamIds(a: string, b: string): number {
  const [am, as] = a.split("-");
  const [bm, bs] = b.split("-");
  const d = BigInt(am!) - BigInt(bm!);
  if (d !== 0n) return d < 0n ? -1 : 1;
  const e = BigInt(as ?? "0") - BigInt(bs ?? "0");
  return e === 0n ? 0 : e < 0n ? -1 : 1;
}

export const streamIdMs = (id: string): number => Number(id.slice(0, id.indexOf("-")));
