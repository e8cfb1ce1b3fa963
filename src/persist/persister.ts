// Owns moving the WAL into Postgres: a consumer group over every shard's stream, read by lanes
// (each over its own shards), each round's entries written in one Postgres transaction
// (write-batch.ts), then XACK and trim under the ledger's trim floor. A shard whose WAL does not
// follow Postgres's version halts and keeps its WAL. Postgres being down only makes the WAL grow.
import {
  duplicateRedis,
  execSpread,
  isCluster,
  type RedisClient,
  type SpreadCommand,
} from "../redis/connect.ts";
import type pg from "pg";
import type { Logger } from "pino";
import { PERSIST_GROUP, type RedisKeys, redisKeys, shardOfWalStream } from "../redis/keys.ts";
import { compareStreamIds, decodeEntry, nextStreamId, streamIdMs } from "../wal/wal-codec.ts";
import type { AccountUpdate, Entry } from "./round-batch.ts";
import { VersionGapError, writeEntries } from "./write-batch.ts";

// Callers have imported these from here since before the split.
export { PERSIST_GROUP } from "../redis/keys.ts";
export type { Entry } from "./round-batch.ts";
export { VersionGapError, writeEntries } from "./write-batch.ts";

export interface PersisterOptions {
  redis: RedisClient;
  pool: pg.Pool;
  logger: Logger;
  prefix: string;
  shards: number;
  /** The shards to persist, when not all of them (spread over processes: this process's). */
  only?: number[];
  readCount: number;
  blockMs: number;
  /** Least time between round starts unless the last round was full (PERSIST_LINGER_MS). */
  lingerMs?: number;
  retryMs: number;
  /**
   * Lowest entry id of a shard that must stay in the stream (tip credits not yet durable, or
   * entries the ledger has not yet seen confirmed). Asynchronous when the ledger is in another
   * thread.
   */
  trimFloor?: (shard: number) => string | null | Promise<string | null>;
  /** Parallel writers, each over its own subset of shards (PERSIST_LANES). */
  lanes?: number;
  consumer?: string;
}

/** On a Redis Cluster (no blocking reads): the pause after a round that found every stream empty. */
const CLUSTER_POLL_MS = 10;

type StreamsReply = Array<[string, Array<[string, string[] | null]>]> | null;

export interface PersistStats {
  entries: number;
  events: number;
  rounds: number;
}

/**
 * The persister runs PERSIST_LANES lanes, each reading and writing its own subset of shards over
 * its own Postgres connection. Shards own disjoint accounts and transactions, so lanes never
 * write the same rows, and Postgres gets to use more than one core.
 */
export class Persister {
  /** Shards whose persistence stopped on a version conflict; their WAL is kept for an operator. */
  readonly halted = new Map<number, string>();
  readonly stats: PersistStats = { entries: 0, events: 0, rounds: 0 };
  private readonly lanes: PersistLane[];

  constructor(o: PersisterOptions) {
    const mine = o.only ?? [...Array(o.shards).keys()];
    const n = Math.max(1, Math.min(o.lanes ?? 1, mine.length));
    const base = o.consumer ?? "persister";
    this.lanes = Array.from({ length: n }, (_, i) => {
      const shards = mine.filter((_, k) => k % n === i);
      return new PersistLane(o, shards, `${base}-${i}`, this.halted, this.stats);
    });
  }

  async init(): Promise<void> {
    for (const lane of this.lanes) await lane.init();
  }

  start(): void {
    for (const lane of this.lanes) lane.start();
  }

  async stop(): Promise<void> {
    await Promise.all(this.lanes.map((l) => l.stop()));
  }

  health(): { walLagMs: number; unpersistedEntries: number; halted: number[] } {
    let walLagMs = 0;
    let unpersistedEntries = 0;
    for (const l of this.lanes) {
      const h = l.health();
      walLagMs = Math.max(walLagMs, h.walLagMs);
      unpersistedEntries += h.unpersistedEntries;
    }
    return { walLagMs, unpersistedEntries, halted: [...this.halted.keys()] };
  }

  /** Persists everything currently in the WAL; for tests, benchmarks and shutdown. */
  async drain(): Promise<void> {
    await Promise.all(this.lanes.map((l) => l.drain()));
  }
}

/** How often a lane re-reads its pending list for entries another process read and dropped. */
const PENDING_SWEEP_MS = 5000;

class PersistLane {
  private running = false;
  private loop: Promise<void> | null = null;
  private oldestUnpersistedMs = 0;
  private backlog = 0;
  private pendingFirst = true;
  /** Some stream gave the last round all the entries it asked for: there may be more waiting. */
  private lastRoundFull = false;
  private blocker: RedisClient | null = null;
  private roundLock: Promise<unknown> = Promise.resolve();
  private readonly keys: RedisKeys;
  private readonly missingReported = new Set<string>();

  constructor(
    private readonly o: PersisterOptions,
    private readonly shards: number[],
    private readonly consumer: string,
    private readonly halted: Map<number, string>,
    private readonly stats: PersistStats,
  ) {
    this.keys = redisKeys(o.prefix);
  }

  private key(shard: number): string {
    return this.keys.walStream(shard);
  }

  async init(): Promise<void> {
    for (const s of this.shards) {
      try {
        await this.o.redis.xgroup("CREATE", this.key(s), PERSIST_GROUP, "0", "MKSTREAM");
      } catch (err) {
        if (!String((err as Error).message).includes("BUSYGROUP")) throw err;
      }
      // Entries another consumer name read but never acknowledged (the lane count changed since)
      // become ours, so the pending re-read below sees them.
      let cursor = "0-0";
      do {
        const r = (await this.o.redis.xautoclaim(
          this.key(s),
          PERSIST_GROUP,
          this.consumer,
          0,
          cursor,
          "COUNT",
          1000,
          "JUSTID",
        )) as [string, unknown];
        cursor = r[0];
      } while (cursor !== "0-0");
    }
    this.pendingFirst = true;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    // A blocking XREADGROUP holds its connection; keep it off the WAL writer's connection.
    // Its reads block on purpose (PERSIST_BLOCK_MS): no command timeout of the writer's applies.
    const blocker = duplicateRedis(this.o.redis, { commandTimeout: undefined });
    // While Redis is away its commands fail and the round is retried (logged there); without a
    // listener ioredis would print every reconnect failure as an unhandled error.
    blocker.on("error", () => {});
    this.blocker = blocker;
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.running = false;
    if (isCluster(this.o.redis)) {
      // A Cluster client disconnected under a read in flight never settles it, and the loop would
      // wait on it forever (a stop, or a shard handover, hung): its reads do not block, so the
      // round in progress ends first, then the connection goes.
      await this.loop?.catch(() => {});
      this.blocker?.disconnect();
    } else {
      // One Redis: the blocked read (up to PERSIST_BLOCK_MS) is cut short by the disconnect.
      this.blocker?.disconnect();
      await this.loop?.catch(() => {});
    }
    this.loop = null;
    this.blocker = null;
  }

  health(): { walLagMs: number; unpersistedEntries: number } {
    return {
      walLagMs: this.oldestUnpersistedMs === 0 ? 0 : Math.max(0, Date.now() - this.oldestUnpersistedMs),
      unpersistedEntries: this.backlog,
    };
  }

  async drain(): Promise<void> {
    this.pendingFirst = true;
    while ((await this.serialized(false)) > 0) {}
  }

  /** Rounds never overlap: two readers of one consumer would each see the other's entries as done. */
  private serialized(block: boolean): Promise<number> {
    const next = this.roundLock.then(() => this.round(block));
    this.roundLock = next.catch(() => 0);
    return next;
  }

  private async run(): Promise<void> {
    let sweptAt = Date.now();
    while (this.running) {
      if (Date.now() - sweptAt >= PENDING_SWEEP_MS) {
        // Entries read under this consumer name but never acknowledged: a previous owner's lane
        // (same name) that stalled or died after reading them. Re-reading them is harmless:
        // every write is idempotent.
        this.pendingFirst = true;
        sweptAt = Date.now();
      }
      if (this.shards.every((s) => this.halted.has(s))) {
        // Every stream of this lane is stopped until an operator restarts the process. A round
        // would return at once without touching Redis, and a loop of those never yields the
        // thread: no health report, no timer, no HTTP if the persister runs on the main thread.
        await new Promise((r) => setTimeout(r, this.o.retryMs));
        continue;
      }
      try {
        const started = Date.now();
        const persisted = await this.serialized(true);
        // A round short of a full read means it keeps up: wait out the linger so the next round
        // carries more. A full one means a backlog: go again at once.
        const wait = (this.o.lingerMs ?? 0) - (Date.now() - started);
        if (persisted > 0 && !this.lastRoundFull && wait > 0) await new Promise((r) => setTimeout(r, wait));
      } catch (err) {
        if (!this.running) return;
        this.o.logger.error({ err }, "persisting the WAL failed; retrying");
        await new Promise((r) => setTimeout(r, this.o.retryMs));
      }
    }
  }

  /** One read + write round; returns how many entries it persisted. */
  private async round(block: boolean): Promise<number> {
    const shards = this.shards.filter((s) => !this.halted.has(s));
    if (shards.length === 0) return 0;
    // After a restart, entries delivered to us but never acknowledged come first ("0").
    const from = this.pendingFirst ? "0" : ">";
    let reply: StreamsReply;
    try {
      reply = await this.read(shards, from, block && !this.pendingFirst);
    } catch (err) {
      // A stream deleted by hand loses its group; recreate it rather than fail every round.
      if (!String((err as Error).message).includes("NOGROUP")) throw err;
      await this.init();
      return this.round(block);
    }
    const entries: Entry[] = [];
    this.lastRoundFull = false;
    for (const [key, list] of reply ?? []) {
      if (list.length >= this.o.readCount) this.lastRoundFull = true;
      const shard = shardOfWalStream(key);
      for (const [id, fields] of list) {
        if (!fields) continue; // deleted while pending
        entries.push({ shard, id, events: decodeEntry(fields) });
      }
    }
    if (entries.length === 0) {
      if (this.pendingFirst) {
        this.pendingFirst = false;
        return this.round(block);
      }
      this.oldestUnpersistedMs = 0;
      this.backlog = 0;
      return 0;
    }
    this.oldestUnpersistedMs = Math.min(...entries.map((e) => streamIdMs(e.id)));
    let written: Entry[];
    try {
      written = await this.writeSkippingHalted(entries);
    } catch (err) {
      // These entries are now delivered to us but unacknowledged: re-read them from our pending
      // list ("0") next round, or ">" would skip them for good.
      this.pendingFirst = true;
      // The backlog is the whole WAL of these streams, not just this round (Postgres may be
      // down for long while tips keep coming): what /readyz reports as unpersisted.
      this.backlog = Math.max(entries.length, await this.entriesInStreams().catch(() => 0));
      throw err;
    }
    await this.ackAndTrim(written);
    this.stats.rounds++;
    this.stats.entries += written.length;
    for (const e of written) this.stats.events += e.events.length;
    this.backlog = Math.max(0, entries.length - written.length);
    return written.length;
  }

  /**
   * One XREADGROUP over the lane's streams on a single Redis (blocking up to PERSIST_BLOCK_MS on
   * the lane's own connection). A Redis Cluster answers a command for keys of one slot only, and
   * a blocked read would hold the node's connection from the other shards' reads: there the lane
   * reads each stream without blocking, all at once, and waits CLUSTER_POLL_MS when every stream
   * was empty.
   */
  private async read(shards: number[], from: string, block: boolean): Promise<StreamsReply> {
    const conn = block && this.blocker ? this.blocker : this.o.redis;
    // The typed command (not .call) keeps the [[key, entries], ...] shape under RESP3 too.
    const xreadgroup = conn.xreadgroup.bind(conn) as unknown as (
      ...a: (string | number)[]
    ) => Promise<StreamsReply>;
    const head = ["GROUP", PERSIST_GROUP, this.consumer, "COUNT", this.o.readCount];
    if (!isCluster(this.o.redis)) {
      const args: (string | number)[] = [...head];
      if (block) args.push("BLOCK", this.o.blockMs);
      args.push("STREAMS", ...shards.map((s) => this.key(s)), ...shards.map(() => from));
      return xreadgroup(...args);
    }
    const replies = await Promise.all(shards.map((s) => xreadgroup(...head, "STREAMS", this.key(s), from)));
    const out = replies.flatMap((r) => r ?? []);
    if (block && out.every(([, list]) => list.length === 0)) {
      await new Promise((r) => setTimeout(r, Math.min(this.o.blockMs, CLUSTER_POLL_MS)));
    }
    return out;
  }

  /** Entries in this lane's streams: unpersisted, or persisted and held by a trim floor. */
  private async entriesInStreams(): Promise<number> {
    const replies = await execSpread(
      this.o.redis,
      this.shards.map((s) => ["xlen", this.key(s)]),
    );
    let n = 0;
    for (const [err, len] of replies) if (!err) n += Number(len);
    return n;
  }

  private async writeSkippingHalted(entries: Entry[]): Promise<Entry[]> {
    let todo = entries;
    for (;;) {
      try {
        const missing = await writeEntries(this.o.pool, todo);
        for (const a of missing) this.reportMissing(a);
        return todo;
      } catch (err) {
        if (!(err instanceof VersionGapError)) throw err;
        this.halted.set(err.shard, err.message);
        this.o.logger.fatal(
          { shard: err.shard, account: err.accountId, pgVersion: err.pgVersion },
          "ALARM: version conflict between the WAL and Postgres; persistence of this shard stopped, nothing overwritten",
        );
        todo = todo.filter((e) => e.shard !== err.shard);
        if (todo.length === 0) return [];
      }
    }
  }

  /** Once per account per lane: its row is gone, so its state is only in this alarm and memory. */
  private reportMissing(a: AccountUpdate): void {
    if (this.missingReported.has(a.last.id)) return;
    if (this.missingReported.size >= 10_000) this.missingReported.clear();
    this.missingReported.add(a.last.id);
    this.o.logger.fatal(
      { shard: a.shard, account: a.last.id, state: a.last },
      "ALARM: ledger row missing in Postgres (deleted by hand?) for an account the ledger holds; its transactions and postings are persisted, its balance row cannot be: restore the row with this state",
    );
  }

  private async ackAndTrim(entries: Entry[]): Promise<void> {
    if (entries.length === 0) return;
    const byShard = new Map<number, string[]>();
    for (const e of entries) {
      const list = byShard.get(e.shard);
      if (list) list.push(e.id);
      else byShard.set(e.shard, [e.id]);
    }
    const shards = [...byShard.keys()];
    const floors = await Promise.all(shards.map((s) => this.o.trimFloor?.(s) ?? null));
    const commands: SpreadCommand[] = [];
    for (const [i, shard] of shards.entries()) {
      const ids = byShard.get(shard)!;
      commands.push(["xack", this.key(shard), PERSIST_GROUP, ...ids]);
      let last = ids[0]!;
      for (const id of ids) if (compareStreamIds(id, last) > 0) last = id;
      let minId = nextStreamId(last);
      const floor = floors[i] ?? null;
      if (floor && compareStreamIds(floor, minId) < 0) minId = floor;
      commands.push(["xtrim", this.key(shard), "MINID", minId]);
    }
    await execSpread(this.o.redis, commands);
  }
}
