// Owns the WebSocket load of ws-tip-uniform, ws-tip-hot and ws-feed: viewers tipping over /ws,
// each socket with a window of tips in flight, and (ws-feed) overlay subscribers of the hot
// creator counting what they receive. The fraud rule allows a viewer 10 tips an hour, so a socket
// sends its viewer's share and gives its place to the next viewer's socket, as a stream's
// audience would. Latency is from sending a tip to its ack; a feed's from the ack to receipt.
import { type ChildProcess, fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";
import { addLoadGeneratorMicros, measureCpu } from "./cpu-usage.ts";
import type { Allowance, LoadStats, Tally, ViewerCursor } from "./load.ts";
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
  /** Load-generator processes the sockets are spread over (1: this process). */
  processes?: number;
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

/** What one tipping socket's lane reports per answered tip. */
export interface WsAck {
  key: string;
  /** The transaction's id when the tip was acked 201. */
  txId: string | null;
  status: number;
  errorCode: string | null;
  latencyMs: number;
  atMs: number;
}

export interface LaneOptions {
  wsBase: string;
  creators: Person[];
  hot: boolean;
  amountUsd: number;
  sockets: number;
  window: number;
  /** Makes idempotency keys unique across the load generator's processes. */
  keyTag: string;
  /** The next viewer to tip as (null: no more lanes start). */
  take(): Promise<Allowance | null>;
  stopping(): boolean;
  onSent(): void;
  onAck(a: WsAck): void;
  /** Tips left unanswered by a socket that died, and socket errors. */
  onErrors(n: number): void;
}

/** Runs `sockets` lanes: each opens a viewer's socket, sends its tips with a window in flight, and
 * takes the next viewer, until `stopping()`; resolves once every lane's socket has closed. */
export async function runLanes(o: LaneOptions): Promise<void> {
  const hotCreator = o.creators[0]!;
  const lane = async (): Promise<void> => {
    while (!o.stopping()) {
      const v = await o.take();
      if (!v) return;
      await new Promise<void>((resolve) => {
        const ws = new WebSocket(`${o.wsBase}/ws?access_token=${v.token}`);
        const due = new Map<string, number>();
        let mine = 0;
        const pump = () => {
          while (!o.stopping() && mine < v.tips && due.size < o.window) {
            const id = `wsbench-${runTag}-${o.keyTag}${keySeq++}`;
            const creator = o.hot ? hotCreator : o.creators[Math.floor(Math.random() * o.creators.length)]!;
            due.set(id, performance.now());
            mine++;
            o.onSent();
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
          o.onAck({
            key: f.id,
            txId: f.status === 201 ? f.transaction!.id : null,
            status: f.status ?? 0,
            errorCode: f.status === 201 ? null : (f.error?.code ?? `ws_${f.status}`),
            latencyMs: performance.now() - t0,
            atMs: Date.now(),
          });
          pump();
        });
        ws.on("error", () => {
          o.onErrors(1);
        });
        ws.on("close", () => {
          // Unanswered tips of a socket that died count as errors (they may still have committed).
          o.onErrors(due.size);
          resolve();
        });
      });
    }
  };
  await Promise.all(Array.from({ length: o.sockets }, () => lane()));
}

/** Messages between runWsTips and its load-generator children (bench/ws-load-child.ts). */
export type ToChild =
  | { type: "start"; lanes: Omit<LaneOptions, "take" | "stopping" | "onSent" | "onAck" | "onErrors"> }
  /** Answers a `take`; fewer than asked (none) once the run is stopping. */
  | { type: "viewers"; people: Allowance[] }
  | { type: "stop" };
export type FromChild =
  /** The child has loaded and waits for `start`: the measured window begins once all are ready. */
  | { type: "ready" }
  | { type: "take"; n: number }
  | { type: "report"; sent: number; errors: number; acks: WsAck[] }
  /** `cpuMicros`: the child's own CPU time (user + system), counted as the load generator's. */
  | { type: "done"; cpuMicros: number };

/** Runs the tipping sockets for `durationS`, then waits for every outstanding ack. With
 * `processes` > 1 the sockets are spread over that many child processes (one Node process's
 * event loop cannot open, parse and time tens of thousands of frames a second and also be the
 * clock); viewers are still handed out here, one at a time, so the fraud cap and the
 * exactly-once checks see one load generator (a child holds a few viewers ahead, one per socket,
 * so a new socket does not wait for a round trip). */
export async function runWsTips(o: WsLoadOptions, tally: Tally): Promise<LoadStats> {
  const wsBase = o.base.replace(/^http/, "ws");
  const latencies: number[] = [];
  const statusCodes: Record<string, number> = {};
  let sent = 0;
  let answered = 0;
  let ok = 0;
  let errors = 0;
  let stopping = false;
  const ack = (a: WsAck) => {
    answered++;
    latencies.push(a.latencyMs);
    statusCodes[String(a.status)] = (statusCodes[String(a.status)] ?? 0) + 1;
    if (a.txId !== null) {
      ok++;
      tally.ackedKeys.push(a.key);
      o.onAck?.(a.txId, a.atMs);
    } else {
      const code = a.errorCode ?? `ws_${a.status}`;
      tally.errorCodes[code] = (tally.errorCodes[code] ?? 0) + 1;
    }
  };
  const processes = Math.max(1, Math.min(o.processes ?? 1, o.sockets));
  const lanes = {
    wsBase,
    creators: o.creators,
    hot: o.hot,
    amountUsd: o.amountUsd,
    window: o.window,
  };
  let running: Promise<unknown>;
  let childCpuMicros = 0;
  let endCpu: ReturnType<typeof measureCpu> = () => null;
  let started = performance.now();
  /** Starts the clock and the CPU sample: once every load-generator child has loaded, so a slow
   * start (tsx compiling the child on a busy machine) is not counted as a quiet window. */
  const startClock = () => {
    endCpu = measureCpu(o.serverPid);
    started = performance.now();
  };
  const reportErr = (err: Error) => console.error(`[bench] ws load child: ${err.message}`);
  const children: ChildProcess[] = [];
  if (processes === 1) {
    startClock();
    running = runLanes({
      ...lanes,
      sockets: o.sockets,
      keyTag: "",
      take: async () => o.cursor.takeAllowance(tally),
      stopping: () => stopping,
      onSent: () => {
        sent++;
        tally.issued++;
      },
      onAck: ack,
      onErrors: (n) => {
        errors += n;
      },
    });
  } else {
    const child = fileURLToPath(new URL("./ws-load-child.ts", import.meta.url));
    const ready: Array<Promise<void>> = [];
    const starts: Array<() => void> = [];
    running = Promise.all(
      Array.from({ length: processes }, (_, k) => {
        const sockets = Math.floor(o.sockets / processes) + (k < o.sockets % processes ? 1 : 0);
        const proc = fork(child, [], { execArgv: ["--import", "tsx"], stdio: "inherit" });
        children.push(proc);
        // A child that is done disconnects; an answer to its last `take` may find it gone.
        const send = (m: ToChild) => {
          if (proc.connected)
            proc.send(m, (err) => {
              if (err && proc.connected) reportErr(err);
            });
        };
        let readyNow: () => void = () => {};
        ready.push(
          new Promise<void>((r) => {
            readyNow = r;
          }),
        );
        starts.push(() => send({ type: "start", lanes: { ...lanes, sockets, keyTag: `p${k}-` } }));
        return new Promise<void>((resolve, reject) => {
          let done = false;
          proc.on("message", (m: FromChild) => {
            if (m.type === "ready") readyNow();
            else if (m.type === "take") {
              const people = stopping ? [] : Array.from({ length: m.n }, () => o.cursor.takeAllowance(tally));
              send({ type: "viewers", people });
            } else if (m.type === "report") {
              sent += m.sent;
              tally.issued += m.sent;
              errors += m.errors;
              for (const a of m.acks) ack(a);
            } else if (m.type === "done") {
              childCpuMicros += m.cpuMicros;
              done = true;
              proc.disconnect();
              resolve();
            }
          });
          // "close", not "exit": it comes after the IPC channel delivered every message.
          proc.on("close", (code) => {
            if (!done) reject(new Error(`ws load child ${k} exited with ${code} before it was done`));
          });
        });
      }),
    );
    // A child that dies before it is ready rejects `running`: do not wait for it forever.
    await Promise.race([Promise.all(ready), running]);
    startClock();
    for (const start of starts) start();
  }
  await new Promise((r) => setTimeout(r, o.durationS * 1000));
  stopping = true;
  for (const c of children) if (c.connected) c.send({ type: "stop" } satisfies ToChild);
  await running;
  const durationS = (performance.now() - started) / 1000;
  const cpu = endCpu();
  // The children are gone before the end snapshot: their CPU moves from "others" to the generator.
  if (cpu && childCpuMicros > 0) addLoadGeneratorMicros(cpu, childCpuMicros, durationS);
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
