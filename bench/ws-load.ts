// Owns the WebSocket load of ws-tip-uniform, ws-tip-hot and ws-feed: viewers tipping over /ws,
// each socket with a window of tips in flight, and (ws-feed) overlay subscribers of the hot
// creator counting what they receive. The fraud rule allows a viewer 10 tips an hour, so a socket
// sends its viewer's share and gives its place to the next viewer's socket, as a stream's
// audience would. Latency is from sending a tip to its ack; a feed's from the ack to receipt.
import WebSocket from "ws";
import { measureCpu } from "./cpu-usage.ts";
import type { LoadStats, Tally, ViewerCursor } from "./load.ts";
import { TIPS_PER_VIEWER_MAX } from "./options.ts";
import type { Person } from "./population.ts";

export interface WsLoadOptions {
  base: string;
  cursor: ViewerCursor;
  creators: Person[];
  hot: boolean;
  amountUsd: number;
  /** Sockets open at once. */
  sockets: number;
  /** Tips in flight per socket. */
  window: number;
  durationS: number;
  serverPid: number;
  /** Called with each acknowledged tip's transaction id and when its ack arrived. */
  onAck?: (txId: string, atMs: number) => void;
}

let keySeq = 0;
const runTag = Date.now().toString(36);

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return 0;
  return Math.round(sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]! * 100) / 100;
}

export function latencyStats(samples: number[]): LoadStats["latencyMs"] {
  const a = Float64Array.from(samples).sort();
  const mean = samples.length > 0 ? samples.reduce((x, y) => x + y, 0) / samples.length : 0;
  return {
    p50: percentile(a, 50),
    p90: percentile(a, 90),
    p99: percentile(a, 99),
    p99_9: percentile(a, 99.9),
    max: a.length > 0 ? Math.round(a[a.length - 1]! * 100) / 100 : 0,
    mean: Math.round(mean * 100) / 100,
  };
}

/** Runs the tipping sockets for `durationS`, then waits for every outstanding ack. */
export async function runWsTips(o: WsLoadOptions, tally: Tally): Promise<LoadStats> {
  const wsBase = o.base.replace(/^http/, "ws");
  const hotCreator = o.creators[0]!;
  const latencies: number[] = [];
  const statusCodes: Record<string, number> = {};
  let sent = 0;
  let answered = 0;
  let ok = 0;
  let errors = 0;
  let stopping = false;
  const endCpu = measureCpu(o.serverPid);
  const started = performance.now();

  const lane = async (): Promise<void> => {
    while (!stopping) {
      const v = o.cursor.take(tally);
      await new Promise<void>((resolve) => {
        const ws = new WebSocket(`${wsBase}/ws?access_token=${v.token}`);
        const due = new Map<string, number>();
        let mine = 0;
        const pump = () => {
          while (!stopping && mine < TIPS_PER_VIEWER_MAX && due.size < o.window) {
            const id = `wsbench-${runTag}-${keySeq++}`;
            const creator = o.hot ? hotCreator : o.creators[Math.floor(Math.random() * o.creators.length)]!;
            due.set(id, performance.now());
            mine++;
            sent++;
            tally.issued++;
            ws.send(
              `{"op":"tip","id":"${id}","to_creator_username":"${creator.username}","amount":${o.amountUsd}}`,
            );
          }
          if (due.size === 0) ws.close();
        };
        ws.on("message", (data) => {
          const f = JSON.parse(data.toString()) as {
            op: string;
            id?: string;
            status?: number;
            transaction?: { id: string };
            error?: { code: string };
          };
          if (f.op === "welcome") return pump();
          if (f.op !== "ack" || !f.id) return;
          const t0 = due.get(f.id);
          if (t0 === undefined) return;
          due.delete(f.id);
          answered++;
          const now = performance.now();
          latencies.push(now - t0);
          statusCodes[String(f.status)] = (statusCodes[String(f.status)] ?? 0) + 1;
          if (f.status === 201) {
            ok++;
            tally.ackedKeys.push(f.id);
            o.onAck?.(f.transaction!.id, Date.now());
          } else {
            const code = f.error?.code ?? `ws_${f.status}`;
            tally.errorCodes[code] = (tally.errorCodes[code] ?? 0) + 1;
          }
          pump();
        });
        ws.on("error", () => {
          errors++;
        });
        ws.on("close", () => {
          // Unanswered tips of a socket that died count as errors (they may still have committed).
          errors += due.size;
          resolve();
        });
      });
    }
  };
  const lanes = Array.from({ length: o.sockets }, () => lane());
  await new Promise((r) => setTimeout(r, o.durationS * 1000));
  stopping = true;
  await Promise.all(lanes);
  const durationS = (performance.now() - started) / 1000;
  const cpu = endCpu();
  return {
    connections: o.sockets,
    durationS: Math.round(durationS * 100) / 100,
    overallRate: null,
    requests: answered,
    sent,
    reqPerSec: Math.round(answered / Math.max(durationS, 1e-3)),
    latencyMs: latencyStats(latencies),
    status2xx: ok,
    non2xx: answered - ok,
    errors,
    timeouts: 0,
    statusCodes,
    errorCodes: { ...tally.errorCodes },
    cpu,
  };
}

export interface FeedWatch {
  /** Resolves when every subscriber received the feed up to `top`, or after `timeoutMs`. */
  finish(top: number, timeoutMs: number): Promise<FeedResult>;
  /** The tips' ack times, for delivery latency (filled by runWsTips' onAck). */
  onAck(txId: string, atMs: number): void;
}

export interface FeedResult {
  subscribers: number;
  /** Tips each subscriber should have received. */
  expectedEach: number;
  lost: number;
  duplicated: number;
  outOfOrder: number;
  closedEarly: number;
  deliveryMs: LoadStats["latencyMs"];
}

/** `n` overlay subscribers of the creator (key from POST overlay-key), subscribed before the load. */
export async function watchFeed(base: string, overlayKey: string, n: number): Promise<FeedWatch> {
  const wsBase = base.replace(/^http/, "ws");
  const acks = new Map<string, number>();
  const early = new Map<string, number[]>();
  const delivery: number[] = [];
  const subs = await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<{ ws: WebSocket; from: number; seqs: number[]; closed: boolean }>((resolve, reject) => {
          const ws = new WebSocket(`${wsBase}/ws?overlay_key=${encodeURIComponent(overlayKey)}`);
          const s = { ws, from: -1, seqs: [] as number[], closed: false };
          ws.on("message", (data) => {
            const f = JSON.parse(data.toString()) as { op: string; seq?: number; tip?: { id: string } };
            if (f.op === "welcome") ws.send('{"op":"subscribe","channel":"tips"}');
            else if (f.op === "subscribed") {
              s.from = f.seq!;
              resolve(s);
            } else if (f.op === "tip") {
              s.seqs.push(f.seq!);
              const now = Date.now();
              const at = acks.get(f.tip!.id);
              if (at !== undefined) delivery.push(Math.max(0, now - at));
              else {
                const list = early.get(f.tip!.id) ?? [];
                list.push(now);
                early.set(f.tip!.id, list);
              }
            }
          });
          ws.on("close", () => {
            s.closed = true;
          });
          ws.on("error", reject);
        }),
    ),
  );
  return {
    onAck(txId, atMs) {
      acks.set(txId, atMs);
      const list = early.get(txId);
      if (list) {
        // Received before its ack reached the load generator: delivered no later than the ack.
        for (const _ of list) delivery.push(0);
        early.delete(txId);
      }
    },
    async finish(top, timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      const done = () => subs.every((s) => s.closed || s.seqs.length >= top - s.from);
      while (!done() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      let lost = 0;
      let duplicated = 0;
      let outOfOrder = 0;
      let expectedEach = 0;
      for (const s of subs) {
        const expected = top - s.from;
        expectedEach = Math.max(expectedEach, expected);
        const distinct = new Set(s.seqs);
        duplicated += s.seqs.length - distinct.size;
        for (let q = s.from + 1; q <= top; q++) if (!distinct.has(q)) lost++;
        for (let i = 1; i < s.seqs.length; i++) if (s.seqs[i]! <= s.seqs[i - 1]!) outOfOrder++;
      }
      const closedEarly = subs.filter((s) => s.closed).length;
      for (const s of subs) s.ws.terminate();
      return {
        subscribers: subs.length,
        expectedEach,
        lost,
        duplicated,
        outOfOrder,
        closedEarly,
        deliveryMs: latencyStats(delivery),
      };
    },
  };
}
