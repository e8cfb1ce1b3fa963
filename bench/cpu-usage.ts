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

/** One server process's share of the CPU, when a scenario runs against several. */
export interface ServerCpuMicros {
  pid: number;
  main: number;
  persister: number;
  other: number;
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
  /** Each server process apart (their sum is micros.server*), in the order they were given. */
  perServer: ServerCpuMicros[];
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
  /** Each server's threads: pid -> tid -> CPU ticks. */
  serverThreads: Map<number, Map<number, number>>;
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

function snapshot(serverPids: readonly number[]): Snapshot | null {
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
    const serverThreads = new Map<number, Map<number, number>>();
    for (const pid of serverPids) {
      const threads = new Map<number, number>();
      for (const t of readdirSync(`/proc/${pid}/task`)) {
        const p = readStat(`/proc/${pid}/task/${t}/stat`);
        if (p) threads.set(Number(t), p.ticks);
      }
      serverThreads.set(pid, threads);
    }
    return { total, idle, procs, serverThreads };
  } catch {
    return null;
  }
}

/** Is `pid` this process or started by it (ws load children, the AI side load), not a server? */
function isLoadGenerator(pid: number, procs: Map<number, ProcStat>, serverPids: readonly number[]): boolean {
  for (let p = pid, hops = 0; p > 1 && hops < 8; hops++) {
    if (serverPids.includes(p)) return false;
    if (p === process.pid) return true;
    p = procs.get(p)?.ppid ?? 0;
  }
  return false;
}

/** Starts measuring; the returned function ends it. Null where /proc is not available. Several
 * server pids: a scenario against several server processes, each accounted for apart. */
export function measureCpu(serverPid: number | readonly number[] | null): () => CpuUsage | null {
  const serverPids = serverPid === null ? [] : typeof serverPid === "number" ? [serverPid] : [...serverPid];
  const a = snapshot(serverPids);
  return () => {
    const b = snapshot(serverPids);
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
    const perServerTicks = serverPids.map((pid) => {
      const one = { pid, main: 0, persister: 0, other: 0 };
      // Named when the server reported it; a persister restarted since (its shards changed) is a
      // new thread, so the bench names threads again right before it measures.
      const persisterTid = namedThreads.get(pid)?.get("persister");
      const before = a.serverThreads.get(pid) ?? new Map<number, number>();
      for (const [tid, t] of b.serverThreads.get(pid) ?? []) {
        const d = t - (before.get(tid) ?? 0);
        if (tid === pid) one.main += d;
        else if (tid === persisterTid) one.persister += d;
        else one.other += d;
      }
      ticks.serverMain += one.main;
      ticks.serverPersister += one.persister;
      ticks.serverOther += one.other;
      return one;
    });
    for (const [pid, p] of b.procs) {
      if (serverPids.includes(pid)) continue;
      if (p.comm === "postgres") ticks.postgres += delta(pid);
      else if (p.comm === "redis-server") ticks.redis += delta(pid);
      else if (isLoadGenerator(pid, b.procs, serverPids)) ticks.loadGenerator += delta(pid);
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
      perServer: perServerTicks.map((t) => ({
        pid: t.pid,
        main: us(t.main),
        persister: us(t.persister),
        other: us(t.other),
      })),
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
