// Live delivery across processes (LEDGER_SPREAD): a creator's feed is written by the process that
// owns its shard, and its subscribers may be connected to any other. Two TipFeeds on the same
// database and Redis prefix stand for two processes, each with its own connections: entries the
// writer appends and publishes reach a follower on the other exactly once and in order, a catch-up
// joins live delivery with no gap, a lost message is filled from the stream, and without
// cross-process mode nothing is published. Against the real Redis and Postgres.
import { randomUUID } from "node:crypto";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { WalEvent } from "../../src/ledger/events.ts";
import type { AccountState, TransactionRecord } from "../../src/ledger/types.ts";
import { FeedStore } from "../../src/live/feed-store.ts";
import { TipFeed } from "../../src/live/tip-feed.ts";
import { wordFilter } from "../../src/live/word-filter.ts";
import { redisKeys } from "../../src/redis/keys.ts";
import { createTestEnv, REDIS_URL, type TestEnv, waitFor } from "../helpers/env.ts";
import { createUsers, silentLogger } from "../helpers/ledger.ts";

let env: TestEnv;
let viewer: string;
const connections: Redis[] = [];
const feeds: TipFeed[] = [];

beforeAll(async () => {
  env = await createTestEnv("livecross");
  [viewer] = (await createUsers(env.pool, 1)) as [string];
});
afterAll(async () => {
  for (const f of feeds) f.stop();
  for (const c of connections) c.disconnect();
  await env.cleanup();
});

const connect = (): Redis => {
  const r = new Redis(REDIS_URL, { maxRetriesPerRequest: 2 });
  connections.push(r);
  return r;
};

/** What a process would see of one creator's subscriber: the frames it was sent, in order. */
class Follower {
  readonly frames: Array<Record<string, unknown>> = [];
  joined = false;
  sink = {
    send: (frame: string) => {
      this.frames.push(JSON.parse(frame));
      return true;
    },
    join: () => {
      this.joined = true;
    },
  };
  /** The seq of every tip frame, in the order received. */
  seqs(): number[] {
    return this.frames.filter((f) => f.op === "tip").map((f) => f.seq as number);
  }
}

/** One "process": a TipFeed with its own connections, delivering to its followers as uWS would. */
async function startProcess(cross = true) {
  const redis = connect();
  const subscriber = connect();
  const followers = new Map<string, Follower[]>();
  const delivered = new Map<string, number[]>();
  const store = new FeedStore(redis, env.redisPrefix, 1000);
  const feed = new TipFeed({
    store,
    pool: env.pool,
    logger: silentLogger,
    filter: wordFilter(["darn"]),
    retention: 1000,
    crossProcess: cross
      ? { publisher: redis, subscriber, channel: redisKeys(env.redisPrefix).feedLive }
      : null,
  });
  feeds.push(feed);
  feed.deliver = (creatorId, seq, frame) => {
    delivered.set(creatorId, [...(delivered.get(creatorId) ?? []), seq]);
    for (const f of followers.get(creatorId) ?? []) if (f.joined) f.sink.send(frame);
  };
  feed.followedHere = (creatorId) => (followers.get(creatorId) ?? []).some((f) => f.joined);
  await feed.listen();
  return {
    feed,
    store,
    redis,
    subscriber,
    delivered: (creatorId: string) => delivered.get(creatorId) ?? [],
    /** A subscriber of the creator's feed on this process, from `since` (undefined: live only). */
    async follow(creatorId: string, since?: number): Promise<Follower> {
      const f = new Follower();
      followers.set(creatorId, [...(followers.get(creatorId) ?? []), f]);
      await feed.follow(creatorId, since, f.sink);
      return f;
    },
  };
}

/** A tip of the viewer to the creator, as its TransactionRecord. */
function tipTx(creatorId: string, n: number): TransactionRecord {
  return {
    id: randomUUID(),
    type: n % 5 === 0 ? "superlike" : "tip",
    status: "completed",
    accountId: viewer,
    fromAccountId: viewer,
    toAccountId: creatorId,
    amountCents: 100,
    platformFeeCents: 3,
    charityFeeCents: 1,
    netAmountCents: 97,
    currency: "USD",
    stripePaymentId: null,
    metadata: n % 3 === 0 ? { message: `gg darn ${n}` } : {},
    createdAt: new Date(Date.UTC(2026, 0, 1, 0, 0, n)).toISOString(),
  };
}

/** A tip's event in the sender's shard (the feed remembers the tip from it). */
const tipEvent = (tx: TransactionRecord): WalEvent => ({
  t: "tx",
  tx,
  postings: [],
  states: [],
  key: null,
  hash: null,
  credits: [],
  fraud: [],
});

/** The creator's credit of `txs`, the last of them numbered `feedSeq` in its feed. */
function creditEvent(creatorId: string, txs: TransactionRecord[], feedSeq: number): WalEvent {
  const state: AccountState = {
    id: creatorId,
    balanceCents: 97 * feedSeq,
    reservedCents: 0,
    debtCents: 0,
    status: "active",
    version: feedSeq,
    earnedCents: 97 * feedSeq,
  };
  return {
    t: "credit",
    accountId: creatorId,
    items: txs.map((tx) => ({ txId: tx.id, amountCents: tx.netAmountCents })),
    state,
    at: new Date().toISOString(),
    feedSeq,
  };
}

/** What the ledger's durable observer hands the feed for tips `first..last` to the creator. */
function durableTips(creatorId: string, first: number, last: number): WalEvent[] {
  const txs = Array.from({ length: last - first + 1 }, (_, i) => tipTx(creatorId, first + i));
  return [...txs.map(tipEvent), creditEvent(creatorId, txs, last)];
}

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/**
 * A (the writer) wrote entries 1..8 to the stream and delivered them; B, with a follower, heard
 * only 1..5: A's publish of 6..8 never left (it died, or the message was lost).
 */
async function unheardSixToEight() {
  const a = await startProcess();
  const b = await startProcess();
  const [creator] = await createUsers(env.pool, 1, "cr");
  const onB = await b.follow(creator!);
  a.feed.durable(durableTips(creator!, 1, 5));
  await waitFor(() => onB.seqs().length >= 5, 10_000, "entries 1..5 on B");
  a.redis.publish = (() => Promise.resolve(0)) as typeof a.redis.publish; // never leaves A
  a.feed.durable(durableTips(creator!, 6, 8));
  await waitFor(() => a.delivered(creator!).length === 8, 10_000, "entries 6..8 written on A");
  expect(b.delivered(creator!)).toEqual(range(1, 5));
  return { a, b, creator: creator!, onB };
}

describe("live feed across processes", () => {
  it("delivers every entry written on A to a follower on B exactly once, in order", async () => {
    const a = await startProcess();
    const b = await startProcess();
    const [creator, other] = await createUsers(env.pool, 2, "cr");
    const onB = await b.follow(creator!);
    const onA = await a.follow(creator!);
    expect(onB.frames).toEqual([{ op: "subscribed", channel: "tips", seq: 0 }]);

    // Several batches, two creators interleaved (only `creator` is followed).
    for (let i = 0; i < 10; i++) {
      a.feed.durable([
        ...durableTips(creator!, i * 12 + 1, i * 12 + 12),
        ...durableTips(other!, i + 1, i + 1),
      ]);
    }
    // A tip whose tx event another process saw: its credit arrives here, the tip was remembered.
    const tx = tipTx(creator!, 121);
    a.feed.rememberTip(tx);
    a.feed.durable([creditEvent(creator!, [tx], 121)]);

    await waitFor(() => onB.seqs().length >= 121, 10_000, "121 entries on B");
    await waitFor(() => onA.seqs().length >= 121, 10_000, "121 entries on A");
    expect(onB.seqs()).toEqual(range(1, 121));
    expect(onA.seqs()).toEqual(range(1, 121));
    // Entries of a creator nobody on B follows are not delivered there.
    expect(b.delivered(other!)).toEqual([]);
    // B sends exactly the frames A's followers got (the message filtered, the sender named).
    expect(onB.frames.slice(1)).toEqual(onA.frames.slice(1));
    const third = onB.frames.find((f) => f.seq === 3) as { tip: Record<string, unknown> };
    expect(third.tip).toMatchObject({
      kind: "tip",
      amount: "1.00",
      net_amount: "0.97",
      message: "gg **** 3",
    });
    expect(third.tip.from_username).toMatch(/^u/);
    const last = onB.frames.at(-1) as { tip: Record<string, unknown> };
    expect(last.tip).toMatchObject({ id: tx.id, amount: "1.00" });
  });

  it("joins a follower on B with since mid-stream: the catch-up, then live, no gap, no duplicate", async () => {
    const a = await startProcess();
    const b = await startProcess();
    const [creator] = await createUsers(env.pool, 1, "cr");
    a.feed.durable(durableTips(creator!, 1, 20));
    await waitFor(() => a.delivered(creator!).length === 20, 10_000, "20 entries written");

    // The follower joins while A goes on writing, one entry per batch.
    let n = 21;
    a.feed.durable(durableTips(creator!, n, n));
    n++;
    const joining = b.follow(creator!, 10);
    while (n <= 60) {
      a.feed.durable(durableTips(creator!, n, n));
      n++;
      if (n % 5 === 0) await new Promise((r) => setImmediate(r));
    }
    const f = await joining;
    await waitFor(() => f.seqs().length >= 50, 10_000, "entries 11..60 on B");
    expect(f.frames[0]).toMatchObject({ op: "subscribed", channel: "tips" });
    expect(f.seqs()).toEqual(range(11, 60));
    // More after the catch-up: live only.
    a.feed.durable(durableTips(creator!, 61, 70));
    await waitFor(() => f.seqs().length >= 60, 10_000, "entries 61..70 on B");
    expect(f.seqs()).toEqual(range(11, 70));
  });

  it("keeps an entry published while B loads the creator's top (it may arrive before the top)", async () => {
    const a = await startProcess();
    const b = await startProcess();
    const [creator] = await createUsers(env.pool, 1, "cr");
    a.feed.durable(durableTips(creator!, 1, 5));
    await waitFor(() => a.delivered(creator!).length === 5, 10_000, "entries 1..5 written");
    // B reads the top (5); before B sees that answer, A writes 6 and B hears its publish.
    const heard: string[] = [];
    b.subscriber.on("message", (_ch: string, message: string) => heard.push(message));
    const top = b.store.top.bind(b.store);
    b.store.top = async (creatorId) => {
      const t = await top(creatorId);
      a.feed.durable(durableTips(creator!, 6, 6));
      await waitFor(() => heard.some((m) => m.includes(`"${creator}",6,`)), 10_000, "entry 6 heard on B");
      return t;
    };
    const f = await b.follow(creator!, 3);
    expect(f.frames[0]).toEqual({ op: "subscribed", channel: "tips", seq: 6 });
    expect(f.seqs()).toEqual([4, 5, 6]);
    a.feed.durable(durableTips(creator!, 7, 7));
    await waitFor(() => f.seqs().length >= 4, 10_000, "entry 7 on B");
    expect(f.seqs()).toEqual([4, 5, 6, 7]);
  });

  it("fills a lost message's entries from the stream before the next entry", async () => {
    const a = await startProcess();
    const b = await startProcess();
    const [creator] = await createUsers(env.pool, 1, "cr");
    const f = await b.follow(creator!);
    // Pub/sub is at most once: A's next publish is lost.
    const publish = a.redis.publish.bind(a.redis);
    let drop = 1;
    a.redis.publish = ((channel: string, message: string) => {
      if (drop > 0) {
        drop--;
        return Promise.resolve(0);
      }
      return publish(channel, message);
    }) as typeof a.redis.publish;

    a.feed.durable(durableTips(creator!, 1, 5));
    await waitFor(() => a.delivered(creator!).length === 5, 10_000, "entries 1..5 written");
    expect(drop).toBe(0);
    a.feed.durable(durableTips(creator!, 6, 8));
    await waitFor(() => f.seqs().length >= 8, 10_000, "entries 1..8 on B");
    expect(f.seqs()).toEqual(range(1, 8));
    expect(b.delivered(creator!)).toEqual(range(1, 8));

    // Lost while nothing follows it, then B's subscriber reconnects: B reads on from the stream.
    drop = 1;
    a.feed.durable(durableTips(creator!, 9, 10));
    await waitFor(() => a.delivered(creator!).length === 10, 10_000, "entries 9..10 written");
    expect(drop).toBe(0);
    b.subscriber.disconnect(true);
    await waitFor(() => f.seqs().length >= 10, 10_000, "entries 9..10 on B after its reconnect");
    expect(f.seqs()).toEqual(range(1, 10));
    a.feed.durable(durableTips(creator!, 11, 11));
    await waitFor(() => f.seqs().length >= 11, 10_000, "entry 11 on B");
    expect(f.seqs()).toEqual(range(1, 11));
  });

  it("resumes a client that saw on A entries B has not heard yet: the rest exactly, no reset", async () => {
    // A failover: the client followed on A (the writer), which delivered 1..8 and died before its
    // publish of 6..8 left; the client reconnects to B (which has delivered 1..5) with since=8.
    const { b, creator, onB } = await unheardSixToEight();
    const resumed = await b.follow(creator, 8);
    expect(resumed.frames.filter((f) => f.op === "reset")).toEqual([]);
    expect(resumed.joined).toBe(true);
    expect(resumed.seqs()).toEqual([]);
    // B delivered 6..8 from the stream on its way to the client's place: its other follower has them.
    expect(b.delivered(creator!)).toEqual(range(1, 8));
    expect(onB.seqs()).toEqual(range(1, 8));
    // The next entry, written by another process (the new owner), reaches the client once.
    const c = await startProcess();
    c.feed.durable(durableTips(creator!, 9, 10));
    await waitFor(() => resumed.seqs().length >= 2, 10_000, "entries 9..10 on B");
    expect(resumed.seqs()).toEqual([9, 10]);
    expect(onB.seqs()).toEqual(range(1, 10));

    // A since beyond anything in the stream is still a reset to what is kept.
    const ahead = await b.follow(creator!, 50);
    expect(ahead.frames[1]).toEqual({ op: "reset", seq: 1 });
    expect(ahead.seqs()).toEqual(range(1, 10));
  });

  it("delivers entries the old owner wrote but never published once the new owner replays them", async () => {
    // A failover with nothing after it: A wrote 6..8 to the stream and died before publishing
    // them; no further tip comes. C, the new owner, replays the credits of 1..8: all are in the
    // stream already, so it writes nothing, but it says how far the feed goes and B reads on.
    const { a, creator, onB } = await unheardSixToEight();
    a.feed.stop();

    const c = await startProcess();
    c.feed.durable(durableTips(creator!, 1, 8));
    await waitFor(() => onB.seqs().length >= 8, 10_000, "entries 6..8 on B without another tip");
    expect(onB.seqs()).toEqual(range(1, 8));
    c.feed.durable(durableTips(creator!, 9, 9));
    await waitFor(() => onB.seqs().length >= 9, 10_000, "entry 9 on B");
    expect(onB.seqs()).toEqual(range(1, 9));
  });

  it("delivers each entry once when a process writes entries another one published meanwhile", async () => {
    // A shard changing owner: A and C both write the same credits (the old owner and the new one
    // replaying them). In each round C's append is on its way when A's publish of the same entries
    // reaches C and is delivered there; C's writer then finds them delivered and must not repeat them.
    const a = await startProcess();
    const c = await startProcess();
    const b = await startProcess();
    const [creator] = await createUsers(env.pool, 1, "cr");
    const held: Array<[string, string]> = [];
    const publish = a.redis.publish.bind(a.redis);
    a.redis.publish = ((channel: string, message: string) => {
      held.push([channel, message]);
      return Promise.resolve(1);
    }) as typeof a.redis.publish;
    let cAppending = 0;
    let cAppended = 0;
    const append = c.store.append.bind(c.store);
    c.store.append = async (items) => {
      const written = await append(items);
      const last = items.at(-1)!.seq;
      cAppending = last;
      await waitFor(() => c.delivered(creator!).includes(last), 10_000, `entry ${last} from A on C`);
      cAppended = last;
      return written;
    };
    const onA = await a.follow(creator!);
    const onB = await b.follow(creator!);
    const onC = await c.follow(creator!);
    for (let round = 0; round < 10; round++) {
      const last = round * 5 + 5;
      const events = durableTips(creator!, round * 5 + 1, last);
      a.feed.durable(events);
      c.feed.durable(events);
      await waitFor(
        () => a.delivered(creator!).includes(last) && cAppending === last,
        10_000,
        "both appends",
      );
      for (const [channel, message] of held.splice(0)) await publish(channel, message);
      await waitFor(() => cAppended === last, 10_000, `C's append of ${last}`);
    }
    for (const f of [onA, onB, onC]) await waitFor(() => f.seqs().length >= 50, 10_000, "50 entries");
    for (const f of [onA, onB, onC]) expect(f.seqs()).toEqual(range(1, 50));
    expect(c.delivered(creator!)).toEqual(range(1, 50));
  });

  it("publishes nothing without cross-process mode", async () => {
    const single = await startProcess(false);
    const listener = connect();
    const heard: string[] = [];
    const channel = redisKeys(env.redisPrefix).feedLive;
    listener.on("message", (_ch: string, message: string) => heard.push(message));
    await listener.subscribe(channel);
    const [creator] = await createUsers(env.pool, 1, "cr");
    const f = await single.follow(creator!);
    single.feed.durable(durableTips(creator!, 1, 30));
    await waitFor(() => f.seqs().length >= 30, 10_000, "30 entries delivered locally");
    expect(f.seqs()).toEqual(range(1, 30));
    // A marker sent after the writes on the feed's own connection arrives after anything it published.
    await single.redis.publish(channel, `marker ${creator}`);
    await waitFor(() => heard.includes(`marker ${creator}`), 10_000, "the marker");
    expect(heard.filter((m) => m.includes(creator!))).toEqual([`marker ${creator}`]);
  });
});
