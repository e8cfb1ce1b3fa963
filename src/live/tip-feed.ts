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
import type pg from "pg";
import type { Logger } from "pino";
import type { WalEvent } from "../ledger/events.ts";
import { centsToDollars } from "../ledger/money.ts";
import type { TransactionRecord } from "../ledger/types.ts";
import type { FeedAppendItem, FeedEntry, FeedStore, FeedTip } from "./feed-store.ts";
import type { WordFilter } from "./word-filter.ts";

/** Tips remembered between their debit and their credit (the credit comes one flush later). */
const TX_CACHE_MAX = 200_000;
/** Senders' names remembered, and for how long (a renamed user shows the new name after this). */
const USER_CACHE_MAX = 100_000;
const USER_CACHE_TTL_MS = 60_000;
/** Creators whose newest number is kept in memory; beyond, the map is rebuilt from the streams. */
const TOPS_MAX = 100_000;
/** Credits waiting to be written; beyond, new ones are dropped and later filled from Postgres. */
const QUEUE_MAX = 1_000_000;
/** Entries per append round trip, and per catch-up page. */
const BATCH_MAX = 1000;
const PAGE_MAX = 500;

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

export interface TipFeedDeps {
  store: FeedStore;
  pool: pg.Pool;
  logger: Logger;
  filter: WordFilter;
  /** FEED_RETENTION: a hole is filled no further back than the stream keeps. */
  retention: number;
}

export class TipFeed {
  private queue: Pending[] = [];
  private running = false;
  private readonly txs = new Map<string, TipInfo>();
  private readonly users = new Map<string, { username: string; displayName: string; atMs: number }>();
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

  constructor(private readonly d: TipFeedDeps) {}

  /** The ledger's durable observer: remembers tips, queues credits as feed entries. */
  readonly durable = (events: WalEvent[]): void => {
    if (this.stopped) return;
    for (const ev of events) {
      if (ev.t === "tx") {
        if ((ev.tx.type === "tip" || ev.tx.type === "superlike") && ev.tx.toAccountId) this.remember(ev.tx);
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
  }

  /** The creator's newest number handed to live delivery (loading it from the stream once). */
  topOf(creatorId: string): Promise<number> {
    const known = this.tops.get(creatorId);
    if (known !== undefined) return Promise.resolve(known);
    let p = this.topLoads.get(creatorId);
    if (!p) {
      p = this.d.store.top(creatorId).then(
        (top) => {
          this.topLoads.delete(creatorId);
          // The loop may have written meanwhile (it waits for this same load first): keep the max.
          const now = Math.max(top, this.tops.get(creatorId) ?? 0);
          this.tops.set(creatorId, now);
          return now;
        },
        (err) => {
          this.topLoads.delete(creatorId);
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
    } else if (last > top) {
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

  private remember(tx: TransactionRecord): void {
    if (this.txs.size >= TX_CACHE_MAX) this.txs.delete(this.txs.keys().next().value!);
    this.txs.set(tx.id, infoOf(tx));
  }

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
      if (this.tops.size > TOPS_MAX && this.topLoads.size === 0 && this.following === 0) this.tops.clear();
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
    for (const p of batch) {
      const last = expected.get(p.creatorId)!;
      if (p.seq <= last) continue;
      if (p.seq > last + 1)
        todo.push(...(await this.hole(p.creatorId, Math.max(last, p.seq - 1 - this.d.retention), p.seq)));
      todo.push(p);
      expected.set(p.creatorId, p.seq);
    }
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
    try {
      for (let i = 0; i < items.length; i++) {
        const r = results[i]!;
        if (r !== true) throw r; // later entries wait for this one: their order is the feed's
        const { creatorId, seq, tipJson } = items[i]!;
        const tip = tips[i]!;
        this.tops.set(creatorId, seq);
        this.txs.delete(todo[i]!.txId);
        // Without a message there is nothing to filter: the frame wraps the JSON already made,
        // exactly as frameOf would write it (same keys, same order).
        const frame =
          tip.message === null ? `{"op":"tip","seq":${seq},"tip":${tipJson}}` : this.frameOf({ seq, tip });
        this.deliver(creatorId, seq, frame);
        reached.add(creatorId);
      }
    } finally {
      if (reached.size > 0) this.delivered(reached);
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
    const missing = new Set<string>();
    for (const id of ids) {
      const u = this.users.get(id);
      if (!u || now - u.atMs > USER_CACHE_TTL_MS) missing.add(id);
    }
    if (missing.size > 0) {
      const r = await this.d.pool.query<{ id: string; username: string; display_name: string }>(
        "SELECT id, username, display_name FROM users WHERE id = ANY($1::uuid[])",
        [[...missing]],
      );
      for (const x of r.rows) {
        if (this.users.size >= USER_CACHE_MAX) this.users.delete(this.users.keys().next().value!);
        this.users.delete(x.id);
        this.users.set(x.id, { username: x.username, displayName: x.display_name, atMs: now });
      }
    }
    return this.users;
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
