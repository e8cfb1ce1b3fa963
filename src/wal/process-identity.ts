// Owns recognising, after a crash, that the process holding the ledger lease is dead, so a
// restart on the same machine need not wait for the lease to expire. The owner id in the lease
// carries where its process runs: the kernel's boot id, its pid namespace, its pid and the pid's
// start time (clock ticks since boot, /proc/<pid>/stat field 22). On the same boot and in the same
// pid namespace, a pid with that start time is that process: if /proc has no such pid, or the pid
// started at another time (reused), the owner is dead, proven. Anything else (another machine,
// another container, no /proc) proves nothing and the caller waits for the lease to expire.
import { readFileSync, readlinkSync } from "node:fs";

interface Where {
  boot: string;
  pidNs: string;
  pid: number;
  start: string;
}

function startTimeOf(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name (field 2) is in parentheses and may hold spaces or parentheses itself.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return fields[19] ?? null; // field 22 overall: fields after the name start at field 3
  } catch {
    return null;
  }
}

function here(): Where | null {
  try {
    const boot = readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
    const pidNs = /^pid:\[(\d+)\]$/.exec(readlinkSync("/proc/self/ns/pid"))?.[1];
    const start = startTimeOf(process.pid);
    if (!/^[0-9a-f-]{36}$/.test(boot) || !pidNs || !start) return null;
    return { boot, pidNs, pid: process.pid, start };
  } catch {
    return null;
  }
}

const self = here();

/** This process's place, to append to its owner id ("" where it cannot be told). */
export function processTag(): string {
  return self ? `@${self.boot}/${self.pidNs}/${self.pid}/${self.start}` : "";
}

/** True only when the lease value names a process on this machine that is proven gone. */
export function holderProvenDead(leaseValue: string): boolean {
  if (!self) return false;
  const m = /@([0-9a-f-]{36})\/(\d+)\/(\d+)\/(\d+)$/.exec(leaseValue);
  if (!m || m[1] !== self.boot || m[2] !== self.pidNs) return false;
  const pid = Number(m[3]);
  const startedNow = startTimeOf(pid);
  // No such process, or the pid now belongs to a process started at another time.
  return startedNow === null || startedNow !== m[4];
}
