// Owns reading where a Redis spends its command time during a scenario: INFO commandstats before
// and after, the difference per command, per acknowledged tip. It counts the time inside each
// command only (not parsing, socket I/O or the AOF fsync), so it names the commands a tip costs
// and how many of each, next to the process CPU the suite samples.
import type { Redis } from "ioredis";

export interface CommandStat {
  calls: number;
  usec: number;
}

export type CommandStats = Map<string, CommandStat>;

/** `cmdstat_xadd:calls=12,usec=40,usec_per_call=3.33,...` lines, by command name. */
export function parseCommandStats(info: string): CommandStats {
  const out: CommandStats = new Map();
  for (const line of info.split("\n")) {
    const m = /^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/.exec(line.trim());
    if (m) out.set(m[1]!, { calls: Number(m[2]), usec: Number(m[3]) });
  }
  return out;
}

export async function readCommandStats(redis: Redis): Promise<CommandStats> {
  return parseCommandStats(await redis.info("commandstats"));
}

/** What ran between two readings, busiest first. */
export function commandStatsDelta(before: CommandStats, after: CommandStats): Array<[string, CommandStat]> {
  const out: Array<[string, CommandStat]> = [];
  for (const [name, a] of after) {
    const b = before.get(name) ?? { calls: 0, usec: 0 };
    const d = { calls: a.calls - b.calls, usec: a.usec - b.usec };
    if (d.calls > 0) out.push([name, d]);
  }
  return out.sort((x, y) => y[1].usec - x[1].usec);
}

/**
 * "evalsha 6.1 us (0.21 calls), xadd 2.0 us (1.00 calls), ..." per acknowledged operation. A
 * script's time includes the commands it calls, and Redis counts those on their own lines too, so
 * the figures are not summed.
 */
export function formatPerOp(delta: Array<[string, CommandStat]>, ops: number, top = 6): string {
  if (ops <= 0 || delta.length === 0) return "none";
  return delta
    .slice(0, top)
    .map(([name, d]) => `${name} ${(d.usec / ops).toFixed(1)} us (${(d.calls / ops).toFixed(2)} calls)`)
    .join(", ");
}
