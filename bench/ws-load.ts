// Owns the WebSocket load of ws-tip-uniform, ws-tip-hot and ws-feed: viewers tipping over /ws,
// each socket with a window of tips in flight, and (ws-feed) overlay subscribers of the hot
// creator counting what they receive. The fraud rule allows a viewer 10 tips an hour, so a socket
// sends its viewer's share and gives its place to the next viewer's socket, as a stream's
// audience would. Latency is from sending a tip to its ack; a feed's from the ack to receipt.
//
// Why the tipping lanes use a raw client (bench/ws-frames.ts, RFC 6455 over node:net) and not
// the `ws` package: the load generator shares the 2 cores with the server, Postgres and Redis,
// so every microsecond it spends is taken from the server it measures. Measured with
// `npm run bench -- --scenario tip-uniform,ws-tip-uniform --duration 8` (2 runs each, CPU per
// acknowledged tip, the "load gen" column of "cpu us per 2xx"):
//   `ws` client, objects per ack over IPC:  56-65 us (printed 108-124: the children's CPU was
//                                           counted twice, see below), 8,100-9,000 tips/s
//   raw client, packed acks:                28-29 us, 10,200-10,600 tips/s (server ~93-95 us)
// Where it went: against a stub uWS server that acks at once (50 sockets in one process, 100k
// tips), `ws` lanes cost ~45 us a tip (its per-socket set-up, per-frame events and Buffers,
// JSON.parse of every ack) and the raw client's ~13 us: one Buffer per batch of masked frames, a
// shared read buffer (net's onread), acks read by position (JSON.parse only for what does not
// have the server's layout), random bytes from a pool. What is left is mostly the kernel's and
// net.Socket's per-socket cost (connect, handshake, close: a socket per 10 tips by design).
// IPC: a report's acks go as a few strings and number arrays (PackedAcks, about half the cost of
// objects; serialization "advanced" would save ~0.3 us a tip more), and viewers ride on the
// reports instead of a `take` message per socket (~100 us of the child's CPU a message).
// The load generator's CPU: the children report theirs and the parent now waits until they have
// exited before the end snapshot; before, a child still exiting was also counted from /proc.
import { type ChildProcess, fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import { addLoadGeneratorMicros, measureCpu } from "./cpu-usage.ts";
import { HandshakeRefused, parseAck, RawWebSocket, wsTarget } from "./ws-frames.ts";
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

/** One answered tip, positional (a lane allocates nothing per ack for it): its idempotency key,
 * the transaction id when acked 201, the status, the error code otherwise, latency and arrival. */
export type AckSink = (
  key: string,
  txId: string | null,
  status: number,
  errorCode: string | null,
  latencyMs: number,
  atMs: number,
) => void;

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
  /** `n` tips sent. */
  onSent(n: number): void;
  /** One answered tip. */
  onAck: AckSink;
  /** Tips left unanswered by a socket that died, and socket errors. */
  onErrors(n: number): void;
}

const WELCOME = Buffer.from('{"op":"welcome",');

/** Is this (non-ack) frame the server's welcome? As JSON.parse reads it, once per socket. */
function isWelcome(buf: Buffer, start: number, end: number): boolean {
  // The server's own layout: op first.
  if (
    end - start > WELCOME.length &&
    buf.compare(WELCOME, 0, WELCOME.length, start, start + WELCOME.length) === 0
  )
    return true;
  try {
    return (JSON.parse(buf.toString("utf8", start, end)) as { op?: unknown } | null)?.op === "welcome";
  } catch {
    return false;
  }
}

/** Runs `sockets` lanes: each opens a viewer's socket, sends its tips with a window in flight, and
 * takes the next viewer, until `stopping()`; resolves once every lane's socket has closed. The
 * sockets are RawWebSocket (bench/ws-frames.ts), not `ws`: see this file's header. */
export async function runLanes(o: LaneOptions): Promise<void> {
  const hotCreator = o.creators[0]!;
  const keyPrefix = `wsbench-${runTag}-${o.keyTag}`;
  const target = wsTarget(o.wsBase);
  const lane = async (): Promise<void> => {
    while (!o.stopping()) {
      const v = await o.take();
      if (!v) return;
      await new Promise<void>((resolve) => {
        const due = new Map<string, number>();
        let mine = 0;
        let closing = false;
        let welcomed = false;
        /** An ack of this chunk freed a place in the window: pump once the chunk is read. */
        let freed = false;
        /** Arrival time of this chunk's acks (read once per chunk). */
        let nowPerf = -1;
        let nowMs = 0;
        // Everything one pump sends goes out in one write.
        const pump = () => {
          if (closing) return;
          const batch: string[] = [];
          let sentAt = -1;
          while (!o.stopping() && mine < v.tips && due.size < o.window) {
            const id = keyPrefix + keySeq++;
            const creator = o.hot ? hotCreator : o.creators[Math.floor(Math.random() * o.creators.length)]!;
            if (sentAt < 0) sentAt = performance.now();
            due.set(id, sentAt);
            mine++;
            batch.push(
              `{"op":"tip","id":"${id}","to_creator_username":"${creator.username}","amount":${o.amountUsd}}`,
            );
          }
          if (batch.length > 0) {
            o.onSent(batch.length);
            ws.send(batch);
          }
          if (due.size === 0) {
            closing = true;
            ws.close();
          }
        };
        const ws = new RawWebSocket(target, `/ws?access_token=${v.token}`, {
          open: () => {},
          text: (buf, start, end) => {
            if (!welcomed) {
              // The first frame after the upgrade: nothing is in flight before it.
              if (isWelcome(buf, start, end)) {
                welcomed = true;
                pump();
              }
              return;
            }
            const a = parseAck(buf, start, end);
            if (a === null) return;
            const t0 = due.get(a.id);
            if (t0 === undefined) return;
            due.delete(a.id);
            if (nowPerf < 0) {
              nowPerf = performance.now();
              nowMs = Date.now();
            }
            const ok = a.status === 201;
            o.onAck(
              a.id,
              ok ? a.txId : null,
              a.status,
              ok ? null : (a.errorCode ?? `ws_${a.status}`),
              nowPerf - t0,
              nowMs,
            );
            freed = true;
          },
          chunkRead: () => {
            nowPerf = -1;
            if (freed) {
              freed = false;
              pump();
            }
          },
          error: () => {
            o.onErrors(1);
          },
          closed: () => {
            // Unanswered tips of a socket that died count as errors (they may still have committed).
            o.onErrors(due.size);
            resolve();
          },
        });
      });
    }
  };
  await Promise.all(Array.from({ length: o.sockets }, () => lane()));
}

/** The acks of one report, packed (index i of each field is one ack): an array of objects costs
 * the child and the parent several times more to serialize and read. Keys, transaction ids and
 * error codes never contain a newline. */
export interface PackedAcks {
  /** Idempotency keys, "\n"-joined. */
  keys: string;
  /** Transaction ids ("" for none), "\n"-joined. */
  txIds: string;
  /** Error codes ("" for none: the 201s), "\n"-joined. */
  codes: string;
  status: number[];
  latencyMs: number[];
  atMs: number[];
}

/** Collects acks and packs them for a report. */
export class AckPacker {
  private keys: string[] = [];
  private txIds: string[] = [];
  private codes: string[] = [];
  private status: number[] = [];
  private latencyMs: number[] = [];
  private atMs: number[] = [];

  get size(): number {
    return this.keys.length;
  }

  add: AckSink = (key, txId, status, errorCode, latencyMs, atMs) => {
    this.keys.push(key);
    this.txIds.push(txId ?? "");
    this.codes.push(errorCode ?? "");
    this.status.push(status);
    this.latencyMs.push(latencyMs);
    this.atMs.push(atMs);
  };

  /** The packed acks so far; starts over. */
  take(): PackedAcks {
    const p: PackedAcks = {
      keys: this.keys.join("\n"),
      txIds: this.txIds.join("\n"),
      codes: this.codes.join("\n"),
      status: this.status,
      latencyMs: this.latencyMs,
      atMs: this.atMs,
    };
    this.keys = [];
    this.txIds = [];
    this.codes = [];
    this.status = [];
    this.latencyMs = [];
    this.atMs = [];
    return p;
  }
}

/** Calls `ack` for each packed ack, in order. */
export function unpackAcks(p: PackedAcks, ack: AckSink): void {
  const n = p.status.length;
  if (n === 0) return;
  const keys = p.keys.split("\n");
  const txIds = p.txIds.split("\n");
  const codes = p.codes.split("\n");
  if (
    keys.length !== n ||
    txIds.length !== n ||
    codes.length !== n ||
    p.latencyMs.length !== n ||
    p.atMs.length !== n
  )
    throw new Error(
      `ws load report: ${n} acks but ${keys.length} keys, ${txIds.length} tx ids, ${codes.length} codes`,
    );
  for (let i = 0; i < n; i++) {
    const tx = txIds[i]!;
    const code = codes[i]!;
    ack(
      keys[i]!,
      tx === "" ? null : tx,
      p.status[i]!,
      code === "" ? null : code,
      p.latencyMs[i]!,
      p.atMs[i]!,
    );
  }
}

/** Messages between runWsTips and its load-generator children (bench/ws-load-child.ts). */
export type ToChild =
  | { type: "start"; lanes: Omit<LaneOptions, "take" | "stopping" | "onSent" | "onAck" | "onErrors"> }
  /** Answers a `take` of `asked`; fewer (none) once the run is stopping. */
  | { type: "viewers"; people: Allowance[]; asked: number }
  | { type: "stop" };
export type FromChild =
  /** The child has loaded and waits for `start`: the measured window begins once all are ready. */
  | { type: "ready" }
  | { type: "take"; n: number }
  /** `take`: viewers wanted besides (0: none), so refills mostly ride on reports. */
  | { type: "report"; sent: number; errors: number; acks: PackedAcks; take: number }
  /** `cpuMicros`: the child's own CPU time (user + system), counted as the load generator's. */
  | { type: "done"; cpuMicros: number };

/** Resolves once `c` has exited (and been reaped: gone from /proc); kills it after `timeoutMs`. */
function exited(c: ChildProcess, timeoutMs: number): Promise<void> {
  if (c.exitCode !== null || c.signalCode !== null) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const t = setTimeout(() => {
      console.error(`[bench] ws load child ${c.pid} did not exit ${timeoutMs} ms after done: killed`);
      c.kill("SIGKILL");
    }, timeoutMs);
    c.once("exit", () => {
      clearTimeout(t);
      resolve();
    });
  });
}

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
  const ack: AckSink = (key, txId, status, errorCode, latencyMs, atMs) => {
    answered++;
    latencies.push(latencyMs);
    statusCodes[String(status)] = (statusCodes[String(status)] ?? 0) + 1;
    if (txId !== null) {
      ok++;
      tally.ackedKeys.push(key);
      o.onAck?.(txId, atMs);
    } else {
      const code = errorCode ?? `ws_${status}`;
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
      onSent: (n) => {
        sent += n;
        tally.issued += n;
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
        const handOut = (n: number) => {
          const people = stopping ? [] : Array.from({ length: n }, () => o.cursor.takeAllowance(tally));
          send({ type: "viewers", people, asked: n });
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
            else if (m.type === "take") handOut(m.n);
            else if (m.type === "report") {
              sent += m.sent;
              tally.issued += m.sent;
              errors += m.errors;
              unpackAcks(m.acks, ack);
              if (m.take > 0) handOut(m.take);
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
  // The children's CPU is what they reported (from `start`), so they must be gone before the end
  // snapshot, or /proc counts them a second time: a child still exiting when `done` arrived
  // doubled the load generator's figure (it did in most runs before this wait).
  await Promise.all(children.map((c) => exited(c, 5000)));
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
  /** Upgrades refused with 503 or 429 and retried after their Retry-After. */
  handshakesRetried: number;
  /** Frames the subscribers received (welcomes and the rest included). */
  frames: number;
  deliveryMs: LoadStats["latencyMs"];
}

/** `n` overlay subscribers of the creator (key from POST overlay-key), subscribed before the load. */
const MAX_HANDSHAKE_ATTEMPTS = 5;

export async function watchFeed(
  base: string,
  overlayKey: string,
  n: number,
  batch: boolean,
): Promise<FeedWatch> {
  // Raw sockets (bench/ws-frames.ts), as the tipping lanes: 1,000 subscribers receive 1,000 frames
  // per tip, and the `ws` package's per-message cost (~2.5 us of this process's CPU per frame)
  // made this watcher the bottleneck of ws-tip-hot. Tip frames are read in place (seq, tip id).
  const target = wsTarget(base);
  const path = `/ws?overlay_key=${encodeURIComponent(overlayKey)}`;
  const acks = new Map<string, number>();
  /** Receipts of tips whose ack has not reached this process yet, counted per tip. */
  const early = new Map<string, number>();
  const delivery: number[] = [];
  let frames = 0;
  const subscribeFrame = batch
    ? '{"op":"subscribe","channel":"tips","batch":true}'
    : '{"op":"subscribe","channel":"tips"}';
  const received = (seqs: number[], seq: number, tipId: string, now: number) => {
    seqs.push(seq);
    const at = acks.get(tipId);
    if (at !== undefined) delivery.push(Math.max(0, now - at));
    else early.set(tipId, (early.get(tipId) ?? 0) + 1);
  };
  type Sub = { ws: RawWebSocket; from: number; seqs: number[]; closed: boolean };
  let handshakesRetried = 0;
  // A refused upgrade that says "retry" (503, 429: the server's Postgres pool or rate limiter was
  // busy while a thousand overlays connected at once) is retried after its Retry-After, as the
  // overlay page does; anything else, or a fifth refusal, aborts the scenario.
  const subscribe = (attempt: number): Promise<Sub> =>
    new Promise<Sub>((resolve, reject) => {
      const s: Sub = { ws: null as unknown as RawWebSocket, from: -1, seqs: [], closed: false };
      s.ws = new RawWebSocket(target, path, {
        open: () => {},
        text: (buf, start, end) => {
          frames++;
          const now = Date.now(); // every tip of a frame arrived together
          const tip = parseTipFrame(buf, start, end);
          if (tip) {
            received(s.seqs, tip.seq, tip.id, now);
            return;
          }
          if (isBatchFrame(buf, start, end)) {
            // Each tip inside is the server's tip frame: read in place, one after the other.
            for (let at = buf.indexOf(TIP_FRAME_HEAD, start); at >= 0 && at < end; ) {
              const t = parseTipFrame(buf, at, end);
              if (!t) throw new Error("a batch frame holds a tip the reader does not know");
              received(s.seqs, t.seq, t.id, now);
              at = buf.indexOf(TIP_FRAME_HEAD, at + TIP_FRAME_HEAD.length);
            }
            return;
          }
          const f = JSON.parse(buf.toString("utf8", start, end)) as {
            op: string;
            seq?: number;
            tip?: { id: string };
          };
          if (f.op === "welcome") s.ws.send([subscribeFrame]);
          else if (f.op === "subscribed") {
            s.from = f.seq!;
            resolve(s);
          } else if (f.op === "tip") received(s.seqs, f.seq!, f.tip!.id, now);
        },
        chunkRead: () => {},
        error: (err) => {
          const retry =
            err instanceof HandshakeRefused &&
            (err.status === 503 || err.status === 429) &&
            attempt < MAX_HANDSHAKE_ATTEMPTS;
          if (!retry) {
            reject(err);
            return;
          }
          handshakesRetried++;
          setTimeout(() => subscribe(attempt + 1).then(resolve, reject), (err.retryAfterS ?? 1) * 1000);
        },
        closed: () => {
          s.closed = true;
        },
      });
    });
  const subs = await Promise.all(Array.from({ length: n }, () => subscribe(1)));
  return {
    onAck(txId, atMs) {
      acks.set(txId, atMs);
      const n = early.get(txId);
      if (n !== undefined) {
        // Received before its ack reached the load generator: delivered no later than the ack.
        for (let i = 0; i < n; i++) delivery.push(0);
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
      for (const s of subs) s.ws.close();
      return {
        subscribers: subs.length,
        expectedEach,
        lost,
        duplicated,
        outOfOrder,
        closedEarly,
        handshakesRetried,
        frames,
        deliveryMs: latencyStats(delivery),
      };
    },
  };
}

const TIP_FRAME_HEAD = Buffer.from('{"op":"tip","seq":');
const BATCH_FRAME_HEAD = Buffer.from('{"op":"batch","frames":[');

/** A `batch` frame (subscribe with batch: true), by its head as the server writes it. */
export function isBatchFrame(buf: Buffer, start: number, end: number): boolean {
  return end - start > BATCH_FRAME_HEAD.length && startsWith(buf, start, BATCH_FRAME_HEAD);
}

/** Whether `buf` holds `head` at `at` (a byte loop: Buffer#compare's argument checks cost more
 * than comparing a few bytes, a million times a second here). The caller checks the length. */
function startsWith(buf: Buffer, at: number, head: Buffer): boolean {
  for (let k = 0; k < head.length; k++) if (buf[at + k] !== head[k]) return false;
  return true;
}
const TIP_ID_HEAD = Buffer.from(',"tip":{"id":"');

/** A feed frame's number and tip id, read in place when it has the server's layout
 * (`{"op":"tip","seq":N,"tip":{"id":"<uuid>",...`); null otherwise (the caller parses it). */
export function parseTipFrame(buf: Buffer, start: number, end: number): { seq: number; id: string } | null {
  if (end - start < TIP_FRAME_HEAD.length + TIP_ID_HEAD.length + 38) return null;
  if (!startsWith(buf, start, TIP_FRAME_HEAD)) return null;
  let i = start + TIP_FRAME_HEAD.length;
  let seq = 0;
  const digitsFrom = i;
  for (; i < end; i++) {
    const c = buf[i]!;
    if (c < 0x30 || c > 0x39) break;
    seq = seq * 10 + (c - 0x30);
  }
  if (i === digitsFrom || i - digitsFrom > 15) return null;
  if (i + TIP_ID_HEAD.length > end || !startsWith(buf, i, TIP_ID_HEAD)) return null;
  const idStart = i + TIP_ID_HEAD.length;
  if (idStart + 37 > end || buf[idStart + 36] !== 0x22) return null;
  return { seq, id: buf.toString("latin1", idStart, idStart + 36) };
}
