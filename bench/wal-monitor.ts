// Owns watching the WAL from outside the server: how many entries Redis holds that the persister
// has not yet written to Postgres and how old the oldest is (read from the streams' consumer group,
// independent of what the server reports), next to the server's own view on GET /readyz.
import type { Redis } from "ioredis";
import { PERSIST_GROUP } from "../src/persist/persister.ts";
import { redisKeys } from "../src/redis/keys.ts";

export interface WalSample {
  atMs: number;
  /** Entries read by nobody yet plus entries read but not acknowledged, over every shard. */
  unpersistedEntries: number;
  /** Age of the oldest such entry (0 when there is none). */
  oldestAgeMs: number;
}

export interface WalSummary {
  samples: number;
  /** Redis view: the oldest unpersisted entry's age, at its worst during the run. */
  lagMaxMs: number;
  unpersistedMax: number;
  /** The server's view (GET /readyz wal.lag_ms), at its worst. */
  readyzLagMaxMs: number | null;
  /** From the end of the load until Redis holds nothing unpersisted; null if not within the limit. */
  drainMs: number | null;
}

const idMs = (id: string) => Number(id.slice(0, id.indexOf("-")));

function groupInfo(reply: unknown): { pending: number; lag: number | null; lastDelivered: string } | null {
  if (!Array.isArray(reply)) return null;
  for (const g of reply as unknown[][]) {
    const o: Record<string, unknown> = {};
    for (let i = 0; i + 1 < g.length; i += 2) o[String(g[i])] = g[i + 1];
    if (o.name !== PERSIST_GROUP) continue;
    return {
      pending: Number(o.pending ?? 0),
      lag: o.lag === null || o.lag === undefined ? null : Number(o.lag),
      lastDelivered: String(o["last-delivered-id"] ?? "0-0"),
    };
  }
  return null;
}

export class WalMonitor {
  private timer: NodeJS.Timeout | null = null;
  private inFlight: Promise<void> | null = null;
  private summary: WalSummary = this.empty();

  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly shards: number,
    private readonly readyzUrl: string | null,
  ) {}

  private empty(): WalSummary {
    return { samples: 0, lagMaxMs: 0, unpersistedMax: 0, readyzLagMaxMs: null, drainMs: null };
  }

  async sample(): Promise<WalSample> {
    const keys = Array.from({ length: this.shards }, (_, s) => redisKeys(this.prefix).walStream(s));
    const pipe = this.redis.pipeline();
    for (const k of keys) {
      pipe.xinfo("GROUPS", k);
      pipe.xpending(k, PERSIST_GROUP);
    }
    const replies = (await pipe.exec()) ?? [];
    const now = Date.now();
    let unpersisted = 0;
    let oldest = Number.POSITIVE_INFINITY;
    const undelivered: Array<{ key: string; after: string; lagKnown: boolean }> = [];
    for (let s = 0; s < keys.length; s++) {
      const [infoErr, info] = replies[2 * s] ?? [null, null];
      const [pendErr, pend] = replies[2 * s + 1] ?? [null, null];
      if (infoErr || pendErr) continue; // stream or group not created yet
      const g = groupInfo(info);
      if (!g) continue;
      unpersisted += g.pending;
      const minPending = Array.isArray(pend) ? (pend[1] as string | null) : null;
      if (g.pending > 0 && minPending) oldest = Math.min(oldest, idMs(minPending));
      // lag is null when Redis cannot tell (entries deleted past the group's position): look.
      if (g.lag === null || g.lag > 0) {
        unpersisted += g.lag ?? 0;
        undelivered.push({ key: keys[s]!, after: g.lastDelivered, lagKnown: g.lag !== null });
      }
    }
    if (undelivered.length > 0) {
      const p2 = this.redis.pipeline();
      for (const u of undelivered) p2.xrange(u.key, `(${u.after}`, "+", "COUNT", 1);
      const firsts = (await p2.exec()) ?? [];
      firsts.forEach(([err, entries], i) => {
        const first =
          !err && Array.isArray(entries) ? (entries[0] as [string, string[]] | undefined) : undefined;
        if (!first) return;
        if (!undelivered[i]!.lagKnown) unpersisted += 1; // at least this one
        oldest = Math.min(oldest, idMs(first[0]));
      });
    }
    return {
      atMs: now,
      unpersistedEntries: unpersisted,
      oldestAgeMs: Number.isFinite(oldest) ? Math.max(0, now - oldest) : 0,
    };
  }

  private async readyzLag(): Promise<number | null> {
    if (!this.readyzUrl) return null;
    try {
      const r = await fetch(this.readyzUrl);
      const body = (await r.json()) as { wal?: { lag_ms?: number } };
      return typeof body.wal?.lag_ms === "number" ? body.wal.lag_ms : null;
    } catch {
      return null;
    }
  }

  /** Samples every `intervalMs` until stop(); one sample at a time. */
  start(intervalMs = 250): void {
    this.summary = this.empty();
    this.timer = setInterval(() => {
      if (this.inFlight) return;
      this.inFlight = Promise.all([this.sample(), this.readyzLag()])
        .then(([s, readyz]) => {
          this.summary.samples++;
          this.summary.lagMaxMs = Math.max(this.summary.lagMaxMs, s.oldestAgeMs);
          this.summary.unpersistedMax = Math.max(this.summary.unpersistedMax, s.unpersistedEntries);
          if (readyz !== null)
            this.summary.readyzLagMaxMs = Math.max(this.summary.readyzLagMaxMs ?? 0, readyz);
        })
        .catch(() => {})
        .finally(() => {
          this.inFlight = null;
        });
    }, intervalMs);
  }

  async stop(): Promise<WalSummary> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.inFlight;
    return { ...this.summary };
  }

  /**
   * Polls until Redis holds nothing unpersisted, twice in a row 100 ms apart (a tip's credit is
   * appended just after its debit is acknowledged); returns ms since `sinceMs`, or null at timeout.
   */
  async waitDrained(sinceMs: number, timeoutMs = 60_000): Promise<number | null> {
    const deadline = Date.now() + timeoutMs;
    let firstEmptyAt: number | null = null;
    while (Date.now() < deadline) {
      const s = await this.sample();
      if (s.unpersistedEntries === 0) {
        if (firstEmptyAt === null) firstEmptyAt = s.atMs;
        else if (s.atMs - firstEmptyAt >= 100) return firstEmptyAt - sinceMs;
      } else {
        firstEmptyAt = null;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    return null;
  }
}
