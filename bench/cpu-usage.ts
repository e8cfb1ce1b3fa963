// Owns accounting for where the machine's CPU went during a scenario (Linux /proc): the server
// under test thread by thread (its main thread, the WAL persister's thread, and the rest: V8's GC
// helpers, libuv's pool, other workers), Postgres, Redis, the load generator (this process and
// the children it started), and everything else. The last one is the noise: a scenario that
// shared the machine with someone else's work says so.
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { cpus } from "node:os";

/** Where the CPU went, in microseconds over the scenario. */
export interface CpuMicros {
  serverMain: number;
  serverPersister: number;
  serverOther: number;
  postgres: number;
  redis: number;
  loadGenerator: number;
  others: number;
}

export interface CpuUsage {
  /** Each in percent of one core over the scenario (100 = one core busy throughout). */
  serverPct: number;
  loadGeneratorPct: number;
  databasesPct: number;
  othersPct: number;
  idlePct: number;
  /** The same CPU split finer, in microseconds: divided by the acknowledged operations, the
   *  cost of one operation per component (bench/report.ts). */
  micros: CpuMicros;
}

interface ProcStat {
  comm: string;
  ppid: number;
  ticks: number;
}

interface Snapshot {
  total: number;
  idle: number;
  procs: Map<number, ProcStat>;
  /** The server's threads: tid -> CPU ticks. */
  serverThreads: Map<number, number>;
}

const CLOCK_TICKS_PER_S = (() => {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
  } catch {
    return 100;
  }
})();
const MICROS_PER_TICK = 1e6 / CLOCK_TICKS_PER_S;

/** Named threads of server processes (pid -> name -> tid), learned from their logs. */
const namedThreads = new Map<number, Map<string, number>>();

/** Tells the accounting which kernel thread of `pid` is `name` (the server reports its persister's). */
export function nameServerThread(pid: number, name: string, tid: number): void {
  let m = namedThreads.get(pid);
  if (!m) {
    m = new Map();
    namedThreads.set(pid, m);
  }
  m.set(name, tid);
}

/** The named threads a 3AM server reports in /metrics (threeam_thread_cpu_seconds{thread,tid}). */
export async function threadsFromMetrics(base: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  try {
    const text = await (await fetch(`${base}/metrics`)).text();
    for (const m of text.matchAll(/^threeam_thread_cpu_seconds\{thread="([^"]+)",tid="(\d+)"\}/gm)) {
      out.set(m[1]!, Number(m[2]));
    }
  } catch {
    // not a 3AM server, or no metrics: its threads are counted together
  }
  return out;
}

function readStat(path: string): ProcStat | null {
  try {
    const s = readFileSync(path, "utf8");
    const close = s.lastIndexOf(")");
    const comm = s.slice(s.indexOf("(") + 1, close);
    const f = s.slice(close + 2).split(" ");
    // After "pid (comm) ": state is field 0, ppid 1, utime 11, stime 12.
    return { comm, ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) };
  } catch {
    return null;
  }
}

function snapshot(serverPid: number | null): Snapshot | null {
  try {
    const line = readFileSync("/proc/stat", "utf8").split("\n", 1)[0]!;
    const v = line.trim().split(/\s+/).slice(1, 9).map(Number);
    const total = v.reduce((a, b) => a + b, 0);
    const idle = (v[3] ?? 0) + (v[4] ?? 0);
    const procs = new Map<number, ProcStat>();
    for (const d of readdirSync("/proc")) {
      if (!/^\d+$/.test(d)) continue;
      const p = readStat(`/proc/${d}/stat`);
      if (p) procs.set(Number(d), p);
    }
    const serverThreads = new Map<number, number>();
    if (serverPid !== null) {
      for (const t of readdirSync(`/proc/${serverPid}/task`)) {
        const p = readStat(`/proc/${serverPid}/task/${t}/stat`);
        if (p) serverThreads.set(Number(t), p.ticks);
      }
    }
    return { total, idle, procs, serverThreads };
  } catch {
    return null;
  }
}

/** Is `pid` this process or started by it (ws load children, the AI side load), not a server? */
function isLoadGenerator(pid: number, procs: Map<number, ProcStat>, serverPid: number | null): boolean {
  for (let p = pid, hops = 0; p > 1 && hops < 8; hops++) {
    if (p === serverPid) return false;
    if (p === process.pid) return true;
    p = procs.get(p)?.ppid ?? 0;
  }
  return false;
}

/** Starts measuring; the returned function ends it. Null where /proc is not available. */
export function measureCpu(serverPid: number | null): () => CpuUsage | null {
  const a = snapshot(serverPid);
  return () => {
    const b = snapshot(serverPid);
    if (!a || !b) return null;
    const delta = (pid: number) => (b.procs.get(pid)?.ticks ?? 0) - (a.procs.get(pid)?.ticks ?? 0);
    const ticks = {
      serverMain: 0,
      serverPersister: 0,
      serverOther: 0,
      postgres: 0,
      redis: 0,
      loadGenerator: 0,
    };
    const persisterTid = serverPid === null ? undefined : namedThreads.get(serverPid)?.get("persister");
    for (const [tid, t] of b.serverThreads) {
      const d = t - (a.serverThreads.get(tid) ?? 0);
      if (tid === serverPid) ticks.serverMain += d;
      else if (tid === persisterTid) ticks.serverPersister += d;
      else ticks.serverOther += d;
    }
    for (const [pid, p] of b.procs) {
      if (pid === serverPid) continue;
      if (p.comm === "postgres") ticks.postgres += delta(pid);
      else if (p.comm === "redis-server") ticks.redis += delta(pid);
      else if (isLoadGenerator(pid, b.procs, serverPid)) ticks.loadGenerator += delta(pid);
    }
    const elapsed = b.total - a.total;
    if (elapsed <= 0) return null;
    const server = ticks.serverMain + ticks.serverPersister + ticks.serverOther;
    const databases = ticks.postgres + ticks.redis;
    const busy = elapsed - (b.idle - a.idle);
    const others = Math.max(0, busy - server - ticks.loadGenerator - databases);
    // /proc/stat counts every core; per-core percent = ticks / (elapsed / cores) * 100.
    const pct = (t: number) => Math.round((t / elapsed) * cpus().length * 100);
    const us = (t: number) => t * MICROS_PER_TICK;
    return {
      serverPct: pct(server),
      loadGeneratorPct: pct(ticks.loadGenerator),
      databasesPct: pct(databases),
      othersPct: pct(others),
      idlePct: pct(b.idle - a.idle),
      micros: {
        serverMain: us(ticks.serverMain),
        serverPersister: us(ticks.serverPersister),
        serverOther: us(ticks.serverOther),
        postgres: us(ticks.postgres),
        redis: us(ticks.redis),
        loadGenerator: us(ticks.loadGenerator),
        others: us(others),
      },
    };
  };
}

/** Moves CPU measured elsewhere (children gone before the end snapshot) to the load generator. */
export function addLoadGeneratorMicros(cpu: CpuUsage, micros: number, durationS: number): void {
  const pct = Math.round((micros / 1e6 / durationS) * 100);
  cpu.loadGeneratorPct += pct;
  cpu.othersPct = Math.max(0, cpu.othersPct - pct);
  cpu.micros.loadGenerator += micros;
  cpu.micros.others = Math.max(0, cpu.micros.others - micros);
}
