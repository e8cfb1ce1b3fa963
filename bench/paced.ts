// Owns an open-loop, evenly paced load: requests leave at fixed intervals (rate R: one every
// 1000/R ms) whatever the server does, on whichever of the connections is idle, and each latency
// is counted from when the request was due, not when a connection freed up (no coordinated
// omission). autocannon's rate limit instead lets every connection send its whole second's budget
// back to back at the top of each second, so its "half rate" p99 is the full-load p99.
import { connect, type Socket } from "node:net";
import { type CpuUsage, measureCpu } from "./cpu-usage.ts";
import type { LoadSource, LoadStats } from "./load.ts";

export interface PacedOptions {
  url: string;
  source: LoadSource;
  connections: number;
  durationS: number;
  ratePerS: number;
  serverPid?: number;
  /** A response later than this counts as a timeout and its connection is replaced. */
  timeoutMs?: number;
}

interface Conn {
  sock: Socket;
  buf: Buffer;
  /** When the request in flight was due (performance.now() ms), or null when idle. */
  dueAt: number | null;
  timer: NodeJS.Timeout | null;
}

/** One complete response at the start of `buf`, or null until all of it has arrived. */
function parseResponse(buf: Buffer): { status: number; head: string; body: Buffer; length: number } | null {
  const end = buf.indexOf("\r\n\r\n");
  if (end < 0) return null;
  const head = buf.toString("latin1", 0, end);
  if (/\r\ntransfer-encoding:\s*chunked/i.test(head)) {
    throw new Error("paced load: chunked responses are not supported");
  }
  const len = Number(/\r\ncontent-length:\s*(\d+)/i.exec(head)?.[1] ?? 0);
  const total = end + 4 + len;
  if (buf.length < total) return null;
  return { status: Number(head.slice(9, 12)), head, body: buf.subarray(end + 4, total), length: total };
}

function headersOf(head: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of head.split("\r\n").slice(1)) {
    const i = line.indexOf(":");
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1).trim();
  }
  return out;
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return 0;
  const i = Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1);
  return Math.round(sorted[Math.max(0, i)]! * 100) / 100;
}

export function runPaced(o: PacedOptions): Promise<LoadStats> {
  const url = new URL(o.url);
  const port = Number(url.port || 80);
  const next = o.source.writer(url.host);
  const hook = o.source.request.onResponse;
  const onResponse = typeof hook === "function" ? hook : null;
  const timeoutMs = o.timeoutMs ?? 10_000;
  const intervalMs = 1000 / o.ratePerS;
  const latencies: number[] = [];
  const statusCodes: Record<string, number> = {};
  let status2xx = 0;
  let non2xx = 0;
  let errors = 0;
  let timeouts = 0;
  let sent = 0;
  let due = 0;
  const waiting: number[] = [];
  const idle: Conn[] = [];
  const conns = new Set<Conn>();
  let finished = false;
  let endCpu: () => CpuUsage | null = () => null;

  return new Promise((resolve, reject) => {
    let t0 = 0;
    let tEnd = 0;
    let ticker: NodeJS.Timeout | null = null;

    const open = (): Conn => {
      const c: Conn = { sock: connect(port, url.hostname), buf: Buffer.alloc(0), dueAt: null, timer: null };
      c.sock.setNoDelay(true);
      conns.add(c);
      c.sock.on("data", (chunk: Buffer) => {
        c.buf = c.buf.length === 0 ? chunk : Buffer.concat([c.buf, chunk]);
        let r: ReturnType<typeof parseResponse>;
        try {
          r = parseResponse(c.buf);
        } catch (err) {
          finish(err as Error);
          return;
        }
        if (!r || c.dueAt === null) return;
        c.buf = c.buf.subarray(r.length);
        latencies.push(performance.now() - c.dueAt);
        statusCodes[r.status] = (statusCodes[r.status] ?? 0) + 1;
        if (r.status >= 200 && r.status < 300) status2xx++;
        else non2xx++;
        onResponse?.(r.status, r.body.toString("utf8"), {}, headersOf(r.head));
        release(c);
      });
      c.sock.on("error", (err) => {
        if (t0 === 0) finish(err); // the server is not there at all
      });
      c.sock.on("close", () => {
        conns.delete(c);
        const i = idle.indexOf(c);
        if (i >= 0) idle.splice(i, 1);
        if (c.timer) clearTimeout(c.timer);
        if (c.dueAt !== null) errors++;
        c.dueAt = null;
        if (!finished) idle.push(open());
        settle();
      });
      return c;
    };

    const release = (c: Conn) => {
      if (c.timer) clearTimeout(c.timer);
      c.timer = null;
      c.dueAt = null;
      idle.push(c);
      dispatch();
      settle();
    };

    const dispatch = () => {
      while (waiting.length > 0 && idle.length > 0) {
        const c = idle.pop()!;
        if (c.sock.destroyed) continue;
        c.dueAt = waiting.shift()!;
        c.timer = setTimeout(() => {
          timeouts++;
          c.sock.destroy(); // counted as an error by the close handler
        }, timeoutMs);
        sent++;
        c.sock.write(next());
      }
    };

    const tick = () => {
      const now = performance.now();
      for (let at = t0 + due * intervalMs; at <= now && at < tEnd; at = t0 + due * intervalMs) {
        waiting.push(at);
        due++;
      }
      dispatch();
      if (now >= tEnd && ticker) {
        clearInterval(ticker);
        ticker = null;
        // Requests still waiting for a connection at the end were never sent: not part of the run.
        waiting.length = 0;
        settle();
      }
    };

    // Done once the schedule has ended and every request sent has its answer (or its timeout).
    const settle = () => {
      if (finished || ticker || t0 === 0) return;
      for (const c of conns) if (c.dueAt !== null) return;
      finish(null);
    };

    const finish = (err: Error | null) => {
      if (finished) return;
      finished = true;
      if (ticker) clearInterval(ticker);
      const cpu = endCpu();
      for (const c of conns) c.sock.destroy();
      if (err) return reject(err);
      const sorted = Float64Array.from(latencies).sort();
      const mean = latencies.length ? latencies.reduce((a, b) => a + b, 0) / latencies.length : 0;
      resolve({
        connections: o.connections,
        durationS: o.durationS,
        overallRate: o.ratePerS,
        requests: latencies.length,
        sent,
        reqPerSec: Math.round(latencies.length / o.durationS),
        latencyMs: {
          p50: percentile(sorted, 50),
          p90: percentile(sorted, 90),
          p99: percentile(sorted, 99),
          p99_9: percentile(sorted, 99.9),
          max: percentile(sorted, 100),
          mean: Math.round(mean * 100) / 100,
        },
        status2xx,
        non2xx,
        errors,
        timeouts,
        statusCodes,
        errorCodes: { ...o.source.tally.errorCodes },
        cpu,
      });
    };

    for (let i = 0; i < o.connections; i++) idle.push(open());
    // Connections are opened before the clock starts, so connecting is not measured.
    const started = () => {
      endCpu = measureCpu(o.serverPid ?? null);
      t0 = performance.now();
      tEnd = t0 + o.durationS * 1000;
      ticker = setInterval(tick, 1);
    };
    let connected = 0;
    for (const c of idle) {
      c.sock.once("connect", () => {
        if (++connected === o.connections) started();
      });
    }
  });
}
