// Owns the creators' live tip feeds: every tip credit the WAL confirmed (or recovery replayed)
// becomes an entry of its creator's feed under the number the credit decided, written to the
// creator's stream (FeedStore) and only then handed to live delivery, one creator's entries in
// order. It also runs a subscriber's catch-up (`since`) so that it joins live delivery exactly at
// the entry it reached: no gap, no duplicate.
//
// Every number a creator's feed reaches is in the WAL and then in Postgres (tip_feed, written with
// the credit), so the stream can always be completed from there: an entry arriving after a hole
// (credits replayed before this process listened, entries dropped from a full queue, a lost
// stream) first fills the hole from Postgres, waiting until the persister has written it.
//
// Across processes (LEDGER_SPREAD: a creator's feed is written by the process owning its shard,
// its subscribers may be on any): each written batch is published on one Redis channel, and every
// process delivers the entries of the creators it tracks in the same order, exactly once: an entry
// is handed to live delivery only as the creator's next number, whichever path brings it, and an
// entry after a lost message (pub/sub is at most once) first fills the gap from the stream.
import { randomUUID } from "node:crypto";
import type pg from "pg";
import type { Logger } from "pino";
import type { WalEvent } from "../ledger/events.ts";
import { centsToDollars } from "../ledger/money.ts";
import type { TransactionRecord } from "../ledger/types.ts";
import type { RedisClient } from "../redis/connect.ts";
import type { FeedAppendItem, FeedEntry, FeedStore, FeedTip } from "./feed-store.ts";
import type { WordFilter } from "./word-filter.ts";

/** Tips remembered between their debit and their credit (the credit comes one flush later). */
const TX_CACHE_MAX = 200_000;
/**
 * Senders' names remembered (as many as accounts in memory). In one process every rename goes
 * through it (forgetName), so a name is good until then; across processes (LEDGER_SPREAD) a
 * rename elsewhere is not heard, and a name is read again after USER_CACHE_TTL_MS.
 */
const USER_CACHE_MAX = 200_000;
const USER_CACHE_TTL_MS = 60_000;
/** Renames remembered this long: a read of names that began before one is not kept. */
const RENAMED_KEEP_MS = 300_000;
/** Creators whose newest number is kept in memory; beyond, the map is rebuilt from the streams. */
const TOPS_MAX = 100_000;
/** Credits waiting to be written; beyond, new ones are dropped and later filled from Postgres. */
const QUEUE_MAX = 1_000_000;
/** Entries per append round trip, and per catch-up page. */
const BATCH_MAX = 1000;
const PAGE_MAX = 500;
/** Entries of one creator received while its gap is read from the stream; beyond, the read goes
 * on to the stream's end instead (every published entry is in the stream). */
const LIVE_WAITING_MAX = 10_000;
/** How long a resuming client waits for this process to deliver up to where it left off elsewhere. */
const REACH_WAIT_MS = 5000;

interface TipInfo {
  id: string;
  kind: "tip" | "superlike";
  fromUserId: string;
  amountCents: number;
  netAmountCents: number;
  message: string | null;
  createdAt: string;
}

/** A hole's entries or a tip are not in Postgres yet: the persister will write them; try again. */
class NotPersistedYet extends Error {}

interface Pending {
  creatorId: string;
  seq: number;
  txId: string;
}

/** Where a subscriber's frames go; `send` answers false once the socket is gone or cut off. */
export interface FeedSink {
  send(frame: string): boolean;
  /** Joins live delivery; called synchronously right after the last replayed entry. */
  join(): void;
}

/** Live delivery across processes: where written batches are published and heard. */
export interface FeedCrossProcess {
  /** Publishes each written batch: the feed's own connection, so a publish follows its append. */
  publisher: RedisClient;
  /** A connection of its own, in subscriber mode from `listen()` on (nothing else goes over it). */
  subscriber: RedisClient;
  /** redisKeys(prefix).feedLive */
  channel: string;
}

export interface TipFeedDeps {
  store: FeedStore;
  pool: pg.Pool;
  logger: Logger;
  filter: WordFilter;
  /** FEED_RETENTION: a hole is filled no further back than the stream keeps. */
  retention: number;
  /** Set with LEDGER_SPREAD; null or absent: one process writes and delivers every feed. */
  crossProcess?: FeedCrossProcess | null;
}

/** One entry as published: creator, number, live frame. */
type LiveEntry = [creatorId: string, seq: number, frame: string];

/**
 * A published batch: the TipFeed that wrote it (`o`), its entries (`e`), each creator's in order,
 * and creators whose stream is known to reach a number without those entries in hand (`r`).
 */
interface LiveBatch {
  o: string;
  e: LiveEntry[];
  r?: Array<[creatorId: string, seq: number]>;
}

/** A creator's gap being read from the stream; entries received meanwhile wait behind it. */
interface LiveGap {
  waiting: Array<{ seq: number; frame: string }>;
  /** Read on to the stream's end (a reconnect, or entries dropped from `waiting`). */
  toEnd: boolean;
}

export class TipFeed {
  private queue: Pending[] = [];
  private running = false;
  private readonly txs = new Map<string, TipInfo>();
  private readonly users = new Map<string, { username: string; displayName: string; atMs: number }>();
  /** When each recently renamed user was renamed (forgetName). */
  private readonly renamedAt = new Map<string, number>();
  /** How long a remembered name is believed: forever in one process (renames reach it), else a TTL. */
  private readonly namesTtlMs: number;
  /** Per creator: the newest number written to its stream AND handed to live delivery. */
  private readonly tops = new Map<string, number>();
  private readonly topLoads = new Map<string, Promise<number>>();
  private stopped = false;
  /** Catch-ups in progress: they read `tops` synchronously, so it is never cleared under them. */
  private following = 0;
  /** Live delivery of one entry to every subscriber of its creator (uWS publish). */
  deliver: (creatorId: string, seq: number, frame: string) => void = () => {};
  /** After each delivered batch: the creators it reached (their subscribers' queues just grew). */
  delivered: (creatorIds: Set<string>) => void = () => {};
  /** Whether the creator has subscribers in this process (their creators' `tops` are never dropped). */
  followedHere: (creatorId: string) => boolean = () => false;

  private readonly cross: FeedCrossProcess | null;
  /** This instance in published batches: its own batches come back and are skipped. */
  readonly origin = randomUUID();
  /** Per creator whose top is loading (cross-process only): entries received meanwhile. */
  private readonly liveDuringLoad = new Map<string, { entries: LiveEntry[]; overflow: boolean }>();
  private readonly gaps = new Map<string, LiveGap>();
  private listening = false;

  constructor(private readonly d: TipFeedDeps) {
    this.cross = d.crossProcess ?? null;
    this.namesTtlMs = this.cross ? USER_CACHE_TTL_MS : Number.POSITIVE_INFINITY;
  }

  /**
   * Names read from Postgres at `readAtMs` (an account load): remembered, so a tip from that
   * account needs no lookup of its sender; a name renamed since the read began is not kept.
   */
  learnNames(names: Array<{ id: string; username: string; displayName: string }>, readAtMs: number): void {
    const now = Date.now();
    for (const n of names) this.keepName(n.id, n.username, n.displayName, readAtMs, now);
  }

  /** The user's display name changed: the next tip shows the new one. */
  forgetName(id: string): void {
    this.users.delete(id);
    const now = Date.now();
    if (this.renamedAt.size >= 10_000) {
      for (const [u, at] of this.renamedAt) if (now - at > RENAMED_KEEP_MS) this.renamedAt.delete(u);
    }
    this.renamedAt.set(id, now);
  }

  private keepName(id: string, username: string, displayName: string, readAtMs: number, now: number): void {
    const renamed = this.renamedAt.get(id);
    if (renamed !== undefined && renamed >= readAtMs) return; // read before the rename: stale
    if (this.users.size >= USER_CACHE_MAX) this.users.delete(this.users.keys().next().value!);
    this.users.delete(id);
    this.users.set(id, { username, displayName, atMs: now });
  }

  /**
   * Cross-process mode: subscribes to the channel (resolves once subscribed). After a reconnect the
   * messages sent meanwhile are lost, so every followed creator is read on from the stream.
   */
  async listen(): Promise<void> {
    const cross = this.cross;
    if (!cross || this.listening) return;
    this.listening = true;
    cross.subscriber.on("message", this.onMessage);
    let first = true;
    cross.subscriber.on("ready", () => {
      if (first || this.stopped) return;
      cross.subscriber.subscribe(cross.channel).then(
        () => this.resync(),
        (err: Error) => this.d.logger.warn({ err: err.message }, "tip feed: resubscribing failed"),
      );
    });
    await cross.subscriber.subscribe(cross.channel);
    first = false;
  }

  /** The ledger's durable observer: remembers tips, queues credits as feed entries. */
  readonly durable = (events: WalEvent[]): void => {
    if (this.stopped) return;
    for (const ev of events) {
      if (ev.t === "tx") {
        this.rememberTip(ev.tx);
      } else if (ev.t === "credit" && ev.feedSeq !== undefined) {
        const first = ev.feedSeq - ev.items.length + 1;
        if (this.queue.length + ev.items.length > QUEUE_MAX) continue; // filled from Postgres later
        for (let i = 0; i < ev.items.length; i++) {
          this.queue.push({ creatorId: ev.accountId, seq: first + i, txId: ev.items[i]!.txId });
        }
      }
    }
    if (this.queue.length > 0) this.kick();
  };

  stop(): void {
    this.stopped = true;
    this.cross?.subscriber.off("message", this.onMessage);
  }

  /**
   * Remembers a tip between its debit and its credit, so its feed entry needs no Postgres read
   * (the durable observer does this for tips it sees; a credit from another process needs it called).
   */
  rememberTip(tx: TransactionRecord): void {
    if ((tx.type !== "tip" && tx.type !== "superlike") || !tx.toAccountId) return;
    if (this.txs.size >= TX_CACHE_MAX) this.txs.delete(this.txs.keys().next().value!);
    this.txs.set(tx.id, infoOf(tx));
  }

  /** The creator's newest number handed to live delivery (loading it from the stream once). */
  topOf(creatorId: string): Promise<number> {
    const known = this.tops.get(creatorId);
    if (known !== undefined) return Promise.resolve(known);
    let p = this.topLoads.get(creatorId);
    if (!p) {
      // An entry published while the top loads may reach us before the top does (another
      // connection): it is kept and taken once the top is known, instead of being lost.
      if (this.cross) this.liveDuringLoad.set(creatorId, { entries: [], overflow: false });
      p = this.d.store.top(creatorId).then(
        (top) => {
          this.topLoads.delete(creatorId);
          // The loop may have written meanwhile (it waits for this same load first): keep the max.
          const now = Math.max(top, this.tops.get(creatorId) ?? 0);
          this.tops.set(creatorId, now);
          if (this.cross) this.takeLoaded(creatorId);
          return this.tops.get(creatorId)!;
        },
        (err) => {
          this.topLoads.delete(creatorId);
          this.liveDuringLoad.delete(creatorId);
          throw err;
        },
      );
      this.topLoads.set(creatorId, p);
    }
    return p;
  }

  /** The live frame of an entry, with the message filtered. */
  frameOf(e: FeedEntry): string {
    const tip = e.tip.message === null ? e.tip : { ...e.tip, message: this.d.filter(e.tip.message) };
    return JSON.stringify({ op: "tip", seq: e.seq, tip });
  }

  /**
   * A subscriber's start: `subscribed` with the newest number, then (with `since`) every entry after
   * it, then live delivery from exactly the next entry. A `since` older than the stream keeps (or
   * ahead of it) answers `reset` with the oldest kept, and the replay starts there.
   */
  async follow(creatorId: string, since: number | undefined, sink: FeedSink): Promise<void> {
    this.following++;
    try {
      await this.catchUp(creatorId, since, sink);
    } finally {
      this.following--;
    }
  }

  private async catchUp(creatorId: string, since: number | undefined, sink: FeedSink): Promise<void> {
    await this.topOf(creatorId);
    if (!sink.send(JSON.stringify({ op: "subscribed", channel: "tips", seq: this.tops.get(creatorId) ?? 0 })))
      return;
    if (since === undefined) {
      sink.join();
      return;
    }
    let last = since;
    const top = this.tops.get(creatorId) ?? 0;
    if (last < top) {
      const oldest = await this.d.store.oldest(creatorId);
      if (oldest > 0 && last < oldest - 1) {
        if (!sink.send(JSON.stringify({ op: "reset", seq: oldest }))) return;
        last = oldest - 1;
      }
    } else if (last > top && !(await this.reach(creatorId, last))) {
      // Ahead of the feed (a client of another deployment, or a lost stream): start over from what is kept.
      const oldest = await this.d.store.oldest(creatorId);
      if (!sink.send(JSON.stringify({ op: "reset", seq: oldest }))) return;
      last = Math.max(0, oldest - 1);
    }
    for (;;) {
      // Everything handed to live delivery so far is in the stream; entries after `cur` reach the
      // subscriber live once it joins, so it joins the moment it has sent `cur`, in the same turn.
      const cur = this.tops.get(creatorId) ?? 0;
      if (last >= cur) {
        sink.join();
        return;
      }
      const page = await this.d.store.after(creatorId, last, Math.min(PAGE_MAX, cur - last));
      if (page.length === 0 || page[0]!.seq > last + 1) {
        // Trimmed while we read: the client refetches the hole over HTTP.
        const oldest = page.length > 0 ? page[0]!.seq : await this.d.store.oldest(creatorId);
        if (oldest === 0) {
          sink.join();
          return;
        }
        if (!sink.send(JSON.stringify({ op: "reset", seq: oldest }))) return;
        last = oldest - 1;
        if (page.length === 0) continue;
      }
      const limit = this.tops.get(creatorId) ?? 0;
      for (const e of page) {
        if (e.seq <= last || e.seq > limit) continue;
        if (!sink.send(this.frameOf(e))) return;
        last = e.seq;
      }
    }
  }

  /**
   * Across processes, a client resuming here may have seen entries this process has not delivered
   * yet (it comes from the process that wrote them, whose messages are still on their way, or were
   * never sent because it died). When the stream holds them, this process reads on to them and
   * answers true once its own delivery has reached `seq`; false when they are not in the stream.
   */
  private async reach(creatorId: string, seq: number): Promise<boolean> {
    if (!this.cross || (await this.d.store.top(creatorId)) < seq) return false;
    const deadline = Date.now() + REACH_WAIT_MS;
    for (;;) {
      if ((this.tops.get(creatorId) ?? 0) >= seq) return true;
      if (this.stopped || Date.now() > deadline) return false;
      this.readOn(creatorId);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** Tips of a creator from Postgres (persisted ones), for GET /api/payments/tips. */
  async history(
    creatorId: string,
    afterSeq: number | undefined,
    limit: number,
  ): Promise<Array<{ seq: number; tip: FeedTip }>> {
    const rows = await this.d.pool.query<{ seq: string; transaction_id: string }>(
      afterSeq === undefined
        ? "SELECT seq, transaction_id FROM tip_feed WHERE creator_id = $1 ORDER BY seq DESC LIMIT $2"
        : "SELECT seq, transaction_id FROM tip_feed WHERE creator_id = $1 AND seq > $3 ORDER BY seq LIMIT $2",
      afterSeq === undefined ? [creatorId, limit] : [creatorId, limit, afterSeq],
    );
    const infos = await this.tipInfos(rows.rows.map((r) => r.transaction_id));
    const names = await this.names([...infos.values()].map((t) => t.fromUserId));
    const out: Array<{ seq: number; tip: FeedTip }> = [];
    for (const r of rows.rows) {
      const t = infos.get(r.transaction_id);
      if (!t) continue;
      const tip = this.tipOf(t, names);
      out.push({
        seq: Number(r.seq),
        tip: tip.message === null ? tip : { ...tip, message: this.d.filter(tip.message) },
      });
    }
    return out;
  }

  // --- the writer loop ------------------------------------------------------------------------

  private kick(): void {
    if (this.running) return;
    this.running = true;
    void this.loop().finally(() => {
      this.running = false;
      if (this.queue.length > 0 && !this.stopped) this.kick();
    });
  }

  private async loop(): Promise<void> {
    let backoffMs = 50;
    while (this.queue.length > 0 && !this.stopped) {
      this.trimTops();
      const batch = this.queue.slice(0, BATCH_MAX);
      try {
        await this.write(batch);
        this.queue.splice(0, batch.length);
        backoffMs = 50;
      } catch (err) {
        // Redis or Postgres unavailable, or a hole not persisted yet: keep the order, try again.
        if (err instanceof NotPersistedYet)
          this.d.logger.debug({ err: err.message }, "tip feed: waiting for the persister");
        else this.d.logger.error({ err }, "tip feed: writing entries failed; retrying");
        await new Promise((r) => setTimeout(r, backoffMs));
        backoffMs = Math.min(2000, backoffMs * 2);
      }
    }
  }

  private async write(batch: Pending[]): Promise<void> {
    const creators = [...new Set(batch.map((p) => p.creatorId))];
    await Promise.all(creators.map((c) => this.topOf(c)));
    // Entries to write, in order: new ones only; a hole before one (entries persisted but never
    // written to the stream, e.g. a crash between the credit and the stream) is filled from Postgres.
    const expected = new Map(creators.map((c) => [c, this.tops.get(c)!]));
    const todo: Pending[] = [];
    // Cross-process: entries already in the stream (a new owner replaying what the old one wrote):
    // the old one may have died before publishing them, so the others are told how far it goes.
    let replayed: Map<string, number> | null = null;
    for (const p of batch) {
      const last = expected.get(p.creatorId)!;
      if (p.seq <= last) {
        if (this.cross) {
          replayed ??= new Map();
          replayed.set(p.creatorId, Math.max(p.seq, replayed.get(p.creatorId) ?? 0));
        }
        continue;
      }
      if (p.seq > last + 1)
        todo.push(...(await this.hole(p.creatorId, Math.max(last, p.seq - 1 - this.d.retention), p.seq)));
      todo.push(p);
      expected.set(p.creatorId, p.seq);
    }
    if (replayed) this.publish([], [...replayed]);
    if (todo.length === 0) return;
    const infos = await this.tipInfos(todo.map((p) => p.txId));
    const names = await this.names([...infos.values()].map((t) => t.fromUserId));
    const items: FeedAppendItem[] = [];
    const tips: FeedTip[] = [];
    for (const p of todo) {
      const t = infos.get(p.txId);
      if (!t)
        throw new NotPersistedYet(
          `tip ${p.txId} of feed entry ${p.creatorId}#${p.seq} is not in Postgres yet`,
        );
      const tip = this.tipOf(t, names);
      tips.push(tip);
      items.push({ creatorId: p.creatorId, seq: p.seq, tipJson: JSON.stringify(tip) });
    }
    const results = await this.d.store.append(items);
    const reached = new Set<string>();
    // Cross-process: the batch's entries (those in the stream) for the other processes.
    const live: LiveEntry[] | null = this.cross ? [] : null;
    try {
      for (let i = 0; i < items.length; i++) {
        const r = results[i]!;
        if (r !== true) throw r; // later entries wait for this one: their order is the feed's
        const { creatorId, seq, tipJson } = items[i]!;
        const tip = tips[i]!;
        this.txs.delete(todo[i]!.txId);
        // Without a message there is nothing to filter: the frame wraps the JSON already made,
        // exactly as frameOf would write it (same keys, same order).
        const frame =
          tip.message === null ? `{"op":"tip","seq":${seq},"tip":${tipJson}}` : this.frameOf({ seq, tip });
        if (live !== null) {
          live.push([creatorId, seq, frame]);
          // Another process's batch (a shard changing owner) or a gap read delivered it meanwhile.
          if (seq <= (this.tops.get(creatorId) ?? 0)) continue;
        }
        this.tops.set(creatorId, seq);
        this.deliver(creatorId, seq, frame);
        reached.add(creatorId);
      }
    } finally {
      if (live !== null && live.length > 0) this.publish(live);
      if (reached.size > 0) this.delivered(reached);
    }
  }

  /** Drops the tops of creators nobody here follows once there are too many (reloaded when needed). */
  private trimTops(): void {
    if (this.tops.size <= TOPS_MAX || this.topLoads.size > 0 || this.following > 0 || this.gaps.size > 0)
      return;
    // A followed creator keeps its top: across processes it is what says which entries are next.
    for (const c of this.tops.keys()) if (!this.followedHere(c)) this.tops.delete(c);
  }

  // --- across processes ----------------------------------------------------------------------

  /** One PUBLISH per written batch, not awaited: a lost one is a gap the receivers fill. */
  private publish(entries: LiveEntry[], reached?: Array<[string, number]>): void {
    const cross = this.cross!;
    const batch: LiveBatch = reached
      ? { o: this.origin, e: entries, r: reached }
      : { o: this.origin, e: entries };
    cross.publisher.publish(cross.channel, JSON.stringify(batch)).catch((err: Error) => {
      this.d.logger.warn({ err: err.message }, "tip feed: publishing a batch failed; receivers fill it in");
    });
  }

  private readonly onMessage = (channel: string, message: string): void => {
    if (this.stopped || channel !== this.cross?.channel) return;
    let batch: LiveBatch;
    try {
      batch = JSON.parse(message) as LiveBatch;
    } catch (err) {
      this.d.logger.error({ err }, "tip feed: a published batch is not JSON");
      return;
    }
    if (batch.o === this.origin) return;
    if (!this.running) this.trimTops();
    const reached = new Set<string>();
    try {
      for (const [creatorId, seq, frame] of batch.e) this.receive(creatorId, seq, frame, reached);
      // Creators' feeds known to reach these numbers: read on to them where delivery is behind.
      for (const [creatorId, seq] of batch.r ?? []) {
        if (this.followedHere(creatorId) && (this.tops.get(creatorId) ?? seq) < seq) this.readOn(creatorId);
      }
    } finally {
      if (reached.size > 0) this.delivered(reached);
    }
  };

  /**
   * An entry another process wrote: delivered if it is the creator's next number, skipped if it
   * was delivered already; after a gap, the gap is read from the stream first. Only creators whose
   * top this process tracks (followed here, or written here) are delivered.
   */
  private receive(creatorId: string, seq: number, frame: string, reached: Set<string>): void {
    const loading = this.liveDuringLoad.get(creatorId);
    if (loading) {
      if (loading.entries.length < LIVE_WAITING_MAX) loading.entries.push([creatorId, seq, frame]);
      else loading.overflow = true;
      return;
    }
    const top = this.tops.get(creatorId);
    if (top === undefined) return;
    const gap = this.gaps.get(creatorId);
    if (gap) {
      if (seq <= top) return;
      if (gap.waiting.length < LIVE_WAITING_MAX) gap.waiting.push({ seq, frame });
      else gap.toEnd = true;
      return;
    }
    if (seq <= top) return;
    if (seq === top + 1) {
      this.tops.set(creatorId, seq);
      this.deliver(creatorId, seq, frame);
      reached.add(creatorId);
      return;
    }
    this.readGap(creatorId, { waiting: [{ seq, frame }], toEnd: false });
  }

  /** A top just loaded: the entries received while it loaded, now that it is known. */
  private takeLoaded(creatorId: string): void {
    const loading = this.liveDuringLoad.get(creatorId);
    if (!loading) return;
    this.liveDuringLoad.delete(creatorId);
    const reached = new Set<string>();
    try {
      for (const [c, seq, frame] of loading.entries) this.receive(c, seq, frame, reached);
      if (loading.overflow) this.readOn(creatorId);
    } finally {
      if (reached.size > 0) this.delivered(reached);
    }
  }

  /** Reads the creator's stream on to its end (after a reconnect or dropped entries). */
  private readOn(creatorId: string): void {
    if (!this.tops.has(creatorId)) return;
    const gap = this.gaps.get(creatorId);
    if (gap) gap.toEnd = true;
    else this.readGap(creatorId, { waiting: [], toEnd: true });
  }

  /** After a reconnect of the subscriber: every followed creator's entries published meanwhile. */
  private resync(): void {
    for (const c of this.tops.keys()) if (this.followedHere(c)) this.readOn(c);
  }

  private readGap(creatorId: string, gap: LiveGap): void {
    this.gaps.set(creatorId, gap);
    this.fillGap(creatorId, gap)
      .catch((err: unknown) => this.d.logger.error({ err, creatorId }, "tip feed: filling a live gap failed"))
      .finally(() => this.gaps.delete(creatorId));
  }

  /**
   * Delivers, in order, the entries missing before those waiting, read from the stream (every
   * published entry is in it), then the waiting ones. Each entry is delivered only as the next
   * number, so entries the writer path (or a late message) delivered meanwhile are skipped.
   */
  private async fillGap(creatorId: string, gap: LiveGap): Promise<void> {
    let backoffMs = 50;
    while (!this.stopped) {
      let top = this.tops.get(creatorId);
      if (top === undefined) return;
      const reached = new Set([creatorId]);
      let sent = false;
      gap.waiting.sort((a, b) => a.seq - b.seq);
      while (gap.waiting.length > 0 && gap.waiting[0]!.seq <= top + 1) {
        const w = gap.waiting.shift()!;
        if (w.seq !== top + 1) continue;
        this.tops.set(creatorId, w.seq);
        this.deliver(creatorId, w.seq, w.frame);
        sent = true;
        top = w.seq;
      }
      if (sent) this.delivered(reached);
      if (gap.waiting.length === 0 && !gap.toEnd) return;
      const next = gap.waiting[0]?.seq;
      const want = next === undefined ? PAGE_MAX : Math.min(PAGE_MAX, next - 1 - top);
      let page: FeedEntry[];
      try {
        page = await this.d.store.after(creatorId, top, want);
        backoffMs = 50;
      } catch (err) {
        this.d.logger.warn(
          { err, creatorId },
          "tip feed: reading a live gap from the stream failed; retrying",
        );
        await new Promise((r) => setTimeout(r, backoffMs));
        backoffMs = Math.min(2000, backoffMs * 2);
        continue;
      }
      top = this.tops.get(creatorId);
      if (top === undefined) return;
      sent = false;
      for (const e of page) {
        if (e.seq <= top) continue;
        if (e.seq > top + 1)
          this.d.logger.warn(
            { creatorId, from: top + 1, to: e.seq - 1 },
            "tip feed: live entries trimmed from the stream before they were read; skipped",
          );
        this.tops.set(creatorId, e.seq);
        this.deliver(creatorId, e.seq, this.frameOf(e));
        sent = true;
        top = e.seq;
      }
      if (sent) this.delivered(reached);
      if (page.length < want) {
        // The stream ends here: read on only as far as the entries waiting.
        gap.toEnd = false;
        const w = gap.waiting[0];
        if (w && w.seq > top + 1) {
          this.d.logger.warn(
            { creatorId, from: top + 1, to: w.seq - 1 },
            "tip feed: live entries missing from the stream (trimmed or lost); skipped",
          );
          gap.waiting.shift();
          this.tops.set(creatorId, w.seq);
          this.deliver(creatorId, w.seq, w.frame);
          this.delivered(reached);
        }
      }
    }
  }

  private async hole(creatorId: string, last: number, next: number): Promise<Pending[]> {
    const r = await this.d.pool.query<{ seq: string; transaction_id: string }>(
      "SELECT seq, transaction_id FROM tip_feed WHERE creator_id = $1 AND seq > $2 AND seq < $3 ORDER BY seq",
      [creatorId, last, next],
    );
    if (r.rows.length !== next - last - 1) {
      throw new NotPersistedYet(
        `feed ${creatorId}: ${next - last - 1 - r.rows.length} entries between ${last} and ${next} not in Postgres yet`,
      );
    }
    return r.rows.map((x) => ({ creatorId, seq: Number(x.seq), txId: x.transaction_id }));
  }

  private async tipInfos(ids: string[]): Promise<Map<string, TipInfo>> {
    const out = new Map<string, TipInfo>();
    const missing: string[] = [];
    for (const id of ids) {
      const t = this.txs.get(id);
      if (t) out.set(id, t);
      else missing.push(id);
    }
    if (missing.length > 0) {
      const r = await this.d.pool.query<{
        id: string;
        type: "tip" | "superlike";
        from_user_id: string;
        amount_cents: string;
        net_amount_cents: string;
        metadata: Record<string, unknown> | null;
        created_at: Date;
      }>(
        `SELECT id, type, from_user_id, amount_cents, net_amount_cents, metadata, created_at
           FROM transactions WHERE id = ANY($1::uuid[])`,
        [missing],
      );
      for (const x of r.rows) {
        out.set(x.id, {
          id: x.id,
          kind: x.type,
          fromUserId: x.from_user_id,
          amountCents: Number(x.amount_cents),
          netAmountCents: Number(x.net_amount_cents),
          message: typeof x.metadata?.message === "string" ? x.metadata.message : null,
          createdAt: x.created_at.toISOString(),
        });
      }
    }
    return out;
  }

  private async names(ids: string[]): Promise<Map<string, { username: string; displayName: string }>> {
    const now = Date.now();
    const out = new Map<string, { username: string; displayName: string }>();
    const missing = new Set<string>();
    for (const id of ids) {
      const u = this.users.get(id);
      if (!u || now - u.atMs > this.namesTtlMs) missing.add(id);
      else out.set(id, u);
    }
    if (missing.size > 0) {
      const r = await this.d.pool.query<{ id: string; username: string; display_name: string }>(
        "SELECT id, username, display_name FROM users WHERE id = ANY($1::uuid[])",
        [[...missing]],
      );
      const at = Date.now();
      for (const x of r.rows) {
        out.set(x.id, { username: x.username, displayName: x.display_name });
        this.keepName(x.id, x.username, x.display_name, now, at);
      }
    }
    return out;
  }

  private tipOf(t: TipInfo, names: Map<string, { username: string; displayName: string }>): FeedTip {
    const n = names.get(t.fromUserId);
    return {
      id: t.id,
      kind: t.kind,
      from_username: n?.username ?? "",
      from_display_name: n?.displayName ?? "",
      amount: centsToDollars(t.amountCents),
      net_amount: centsToDollars(t.netAmountCents),
      message: t.message,
      created_at: t.createdAt,
    };
  }
}

function infoOf(tx: TransactionRecord): TipInfo {
  const m = tx.metadata?.message;
  return {
    id: tx.id,
    kind: tx.type === "superlike" ? "superlike" : "tip",
    fromUserId: tx.fromAccountId!,
    amountCents: tx.amountCents,
    netAmountCents: tx.netAmountCents,
    message: typeof m === "string" ? m : null,
    createdAt: tx.createdAt,
  };
}
