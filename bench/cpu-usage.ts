// Owns accounting for where the machine's CPU went during a scenario (Linux /proc): the server
// under test, this process (the load generator), Postgres and Redis, and everything else. The
// last one is the noise: a scenario that shared the machine with someone else's work says so.
import { readdirSync, readFileSync } from "node:fs";
import { cpus } from "node:os";

export interface CpuUsage {
  /** Each in percent of one core over the scenario (100 = one core busy throughout). */
  serverPct: number;
  loadGeneratorPct: number;
  databasesPct: number;
  othersPct: number;
  idlePct: number;
}

interface Snapshot {
  total: number;
  idle: number;
  procs: Map<number, { comm: string; ticks: number }>;
}

function readProcStat(pid: number | "self"): { comm: string; ticks: number } | null {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, "utf8");
    const close = s.lastIndexOf(")");
    const comm = s.slice(s.indexOf("(") + 1, close);
    const f = s.slice(close + 2).split(" ");
    // After "pid (comm) ": state is field 0, utime 11, stime 12.
    return { comm, ticks: Number(f[11]) + Number(f[12]) };
  } catch {
    return null;
  }
}

function snapshot(): Snapshot | null {
  try {
    const line = readFileSync("/proc/stat", "utf8").split("\n", 1)[0]!;
    const v = line.trim().split(/\s+/).slice(1, 9).map(Number);
    const total = v.reduce((a, b) => a + b, 0);
    const idle = (v[3] ?? 0) + (v[4] ?? 0);
    const procs = new Map<number, { comm: string; ticks: number }>();
    for (const d of readdirSync("/proc")) {
      if (!/^\d+$/.test(d)) continue;
      const p = readProcStat(Number(d));
      if (p) procs.set(Number(d), p);
    }
    return { total, idle, procs };
  } catch {
    return null;
  }
}

const DATABASE_COMMS = new Set(["postgres", "redis-server"]);

/** Starts measuring; the returned function ends it. Null where /proc is not available. */
export function measureCpu(serverPid: number | null): () => CpuUsage | null {
  const a = snapshot();
  return () => {
    const b = snapshot();
    if (!a || !b) return null;
    const delta = (pid: number) => (b.procs.get(pid)?.ticks ?? 0) - (a.procs.get(pid)?.ticks ?? 0);
    let server = 0;
    let bench = 0;
    let databases = 0;
    for (const [pid, p] of b.procs) {
      if (pid === serverPid) server += delta(pid);
      else if (pid === process.pid) bench += delta(pid);
      else if (DATABASE_COMMS.has(p.comm)) databases += delta(pid);
    }
    const elapsed = b.total - a.total;
    if (elapsed <= 0) return null;
    const busy = elapsed - (b.idle - a.idle);
    const others = Math.max(0, busy - server - bench - databases);
    // /proc/stat counts every core; per-core percent = ticks / (elapsed / cores) * 100.
    const pct = (t: number) => Math.round((t / elapsed) * cpus().length * 100);
    return {
      serverPct: pct(server),
      loadGeneratorPct: pct(bench),
      databasesPct: pct(databases),
      othersPct: pct(others),
      idlePct: pct(b.idle - a.idle),
    };
  };
}
