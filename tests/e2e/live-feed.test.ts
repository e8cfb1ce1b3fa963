// A creator's live tip feed over the socket: every credited tip once and in order (seq 1, 2, 3...),
// resume with `since` (no gap, no duplicate), reset for a since older than the retention, the
// history endpoint, a slow subscriber cut off with 4008, 1,000 subscribers of one creator, and
// subscribers that take live tips in batches.
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Api, startApi } from "../helpers/api.ts";
import { createTestEnv, type TestEnv, waitFor } from "../helpers/env.ts";
import { serverFrames } from "../../src/live/ws-frames.ts";
import { connectLive, type LiveClient } from "../helpers/live.ts";

let env: TestEnv;
let api: Api;

beforeAll(async () => {
  env = await createTestEnv("livefeed");
  api = await startApi(env, {
    FRAUD_MAX_TX_PER_HOUR: "100000",
    FRAUD_MAX_VOLUME_PER_HOUR_USD: "1000000",
    FEED_BLOCKED_WORDS: "darn,heck",
    FEED_RETENTION: "100000",
  });
});
afterAll(async () => {
  await api.close();
  await env.cleanup();
});

type User = Awaited<ReturnType<Api["register"]>>;

/** Sends `n` tips over one socket (all in flight at once) and resolves with their acks. */
async function burst(a: Api, from: User, to: User, n: number, tag: string = randomUUID()): Promise<any[]> {
  const s = await connectLive(a.base, `access_token=${from.token}`);
  const ids = Array.from({ length: n }, (_, i) => `${tag}-${i}`);
  for (const id of ids)
    s.send({ op: "tip", id, to_creator_username: to.username, amount: 1, message: `m ${id}` });
  const acks = await Promise.all(ids.map((id) => s.next((f) => f.op === "ack" && f.id === id, 60_000)));
  await s.close();
  for (const ack of acks) if (ack.status !== 201) throw new Error(`tip refused: ${JSON.stringify(ack)}`);
  return acks;
}

const tipsOf = (c: LiveClient) => c.frames.filter((f) => f.op === "tip");

function expectExactly(seqs: number[], from: number, to: number) {
  expect(seqs).toEqual(Array.from({ length: to - from + 1 }, (_, i) => from + i));
}

describe("tip feed", () => {
  it("delivers every credited tip once, in order, numbered 1, 2, 3..., whichever edge sent it", async () => {
    const v = await api.register();
    const c = await api.register("creator");
    await api.fund(v.id, 100_000);
    const sub = await connectLive(api.base, `access_token=${c.token}`);
    sub.send({ op: "subscribe", channel: "tips" });
    expect(await sub.next((f) => f.op === "subscribed")).toEqual({
      op: "subscribed",
      channel: "tips",
      seq: 0,
    });
    const h = await api.call("POST", "/api/payments/tip", {
      token: v.token,
      body: { from_user_id: v.id, to_creator_username: c.username, amount: 3, message: "oh heck, <b>gg</b>" },
    });
    expect(h.status).toBe(201);
    const first = await sub.next((f) => f.op === "tip");
    expect(first).toEqual({
      op: "tip",
      seq: 1,
      tip: {
        id: h.body.transaction.id,
        kind: "tip",
        from_username: v.username,
        from_display_name: expect.any(String),
        amount: "3.00",
        net_amount: "2.91",
        message: "oh ****, <b>gg</b>",
        created_at: h.body.transaction.created_at,
      },
    });
    const acks = await burst(api, v, c, 200);
    await waitFor(() => tipsOf(sub).length === 201, 20_000, "201 feed frames");
    expectExactly(
      tipsOf(sub).map((f) => f.seq),
      1,
      201,
    );
    // Every acknowledged tip is in the feed once.
    expect(new Set(tipsOf(sub).map((f) => f.tip.id))).toEqual(
      new Set([h.body.transaction.id, ...acks.map((a) => a.transaction.id)]),
    );
    await sub.close();
  });

  it("resumes a dropped subscriber with since: no gap, no duplicate", async () => {
    const v = await api.register();
    const c = await api.register("creator");
    await api.fund(v.id, 100_000);
    const sub = await connectLive(api.base, `access_token=${c.token}`);
    sub.send({ op: "subscribe", channel: "tips" });
    await sub.next((f) => f.op === "subscribed");
    const sending = burst(api, v, c, 600);
    await waitFor(() => tipsOf(sub).length >= 50, 20_000, "the burst to start reaching the subscriber");
    sub.ws.terminate(); // dropped mid-burst
    await sub.waitClosed();
    const seen = tipsOf(sub).map((f) => f.seq);
    const last = seen[seen.length - 1]!;
    const again = await connectLive(api.base, `access_token=${c.token}`);
    again.send({ op: "subscribe", channel: "tips", since: last });
    const acks = await sending;
    await waitFor(() => tipsOf(again).length === 600 - last, 20_000, "the rest of the burst");
    const all = [...seen, ...tipsOf(again).map((f) => f.seq)];
    expectExactly(all, 1, 600);
    const ids = [...tipsOf(sub), ...tipsOf(again)].map((f) => f.tip.id);
    expect(new Set(ids)).toEqual(new Set(acks.map((a) => a.transaction.id)));
    expect(ids.length).toBe(600);
    await again.close();
  });

  it("pages the persisted feed over HTTP, owner only", async () => {
    const v = await api.register();
    const c = await api.register("creator");
    await api.fund(v.id, 10_000);
    const acks = await burst(api, v, c, 30);
    await api.core.persister.drain();
    await waitFor(
      async () =>
        (await env.pool.query("SELECT count(*)::int AS n FROM tip_feed WHERE creator_id = $1", [c.id]))
          .rows[0].n === 30,
      10_000,
      "the feed rows",
    );
    const newest = await api.call("GET", `/api/payments/tips?creator_id=${c.id}&limit=5`, { token: c.token });
    expect(newest.status).toBe(200);
    expect(newest.body.tips.map((t: any) => t.seq)).toEqual([30, 29, 28, 27, 26]);
    const page = await api.call("GET", `/api/payments/tips?creator_id=${c.id}&after_seq=10&limit=5`, {
      token: c.token,
    });
    expect(page.body.tips.map((t: any) => t.seq)).toEqual([11, 12, 13, 14, 15]);
    const ackIds = new Set(acks.map((a) => a.transaction.id));
    expect(page.body.tips.every((t: any) => ackIds.has(t.tip.id) && t.tip.amount === "1.00")).toBe(true);
    const other = await api.call("GET", `/api/payments/tips?creator_id=${c.id}`, { token: v.token });
    expect(other.status).toBe(403);
    const bad = await api.call("GET", `/api/payments/tips?creator_id=${c.id}&limit=100000`, {
      token: c.token,
    });
    expect(bad.status).toBe(400);
  });

  it("delivers every tip of a burst to each of 1,000 subscribers of one creator", async () => {
    const v = await api.register();
    const c = await api.register("creator");
    await api.fund(v.id, 100_000);
    // Every socket stays open throughout: none is dropped after its welcome (uWS once closed about
    // 1 in 3,000 fresh sockets when the upgrade ran inside res.cork; see ws-server.ts), and none
    // falls behind, so each holds exactly 1..100 without any reconnection.
    const subs: Array<{ live: LiveClient; seqs: number[] }> = [];
    const follow = async () => {
      const live = await connectLive(api.base, `access_token=${c.token}`);
      const sub = { live, seqs: [] as number[] };
      subs.push(sub);
      live.ws.on("message", (data) => {
        const f = JSON.parse(data.toString());
        if (f.op === "tip") sub.seqs.push(f.seq);
      });
      live.send({ op: "subscribe", channel: "tips" });
      await live.next((f) => f.op === "subscribed", 20_000);
    };
    for (let i = 0; i < 1000; i += 100) await Promise.all(Array.from({ length: 100 }, follow));
    await burst(api, v, c, 100);
    await waitFor(
      () => subs.every((s) => s.seqs.length >= 100 || s.live.closed !== null),
      60_000,
      "the burst at every subscriber",
    );
    const closed = subs.filter((s) => s.live.closed !== null).map((s) => s.live.closed);
    expect(closed).toEqual([]);
    for (const sub of subs) expectExactly(sub.seqs, 1, 100);
    for (const sub of subs) sub.live.ws.terminate();
  }, 120_000);
});

describe("batched feed (subscribe with batch: true)", () => {
  it("delivers the same entries in the same order as one frame per delivered batch, replay as tip frames", async () => {
    const v = await api.register();
    const c = await api.register("creator");
    await api.fund(v.id, 100_000);
    await burst(api, v, c, 5);
    const single = await connectLive(api.base, `access_token=${c.token}`);
    single.send({ op: "subscribe", channel: "tips" });
    await single.next((f) => f.op === "subscribed");
    // A batch subscriber resuming after 2: entries 3..5 replay as tip frames, then live batches.
    const batched = await connectLive(api.base, `access_token=${c.token}`);
    batched.send({ op: "subscribe", channel: "tips", since: 2, batch: true });
    expect((await batched.next((f) => f.op === "subscribed")).seq).toBe(5);
    await waitFor(() => tipsOf(batched).length === 3, 10_000, "the replay");
    await burst(api, v, c, 200);
    const seqsOf = (l: LiveClient) =>
      l.frames
        .flatMap((f) => (f.op === "tip" ? [f] : f.op === "batch" ? f.frames : []))
        .map((t: { seq: number }) => t.seq);
    await waitFor(() => seqsOf(batched).length >= 203 && tipsOf(single).length >= 200, 30_000, "the burst");
    expectExactly(seqsOf(batched), 3, 205);
    expectExactly(seqsOf(single), 6, 205);
    const batches = batched.frames.filter((f) => f.op === "batch");
    // Fewer frames than tips: 200 tips from one socket are credited in a few flushes.
    expect(batches.length).toBeLessThan(200);
    for (const b of batches) {
      expect(serverFrames.batch.safeParse(b).success, JSON.stringify(b)).toBe(true);
      expect(b.frames.length).toBeLessThanOrEqual(32); // BATCH_FRAME_TIPS
    }
    // Each tip inside a batch is the frame a single subscriber got, byte for byte once parsed.
    const bySeq = new Map(tipsOf(single).map((f) => [f.seq, f]));
    for (const b of batches) for (const t of b.frames) expect(t).toEqual(bySeq.get(t.seq));
    // Nothing else reached the batch socket: no single tip frames after the replay.
    expect(tipsOf(batched).map((f) => f.seq)).toEqual([3, 4, 5]);
    await single.close();
    await batched.close();
  });

  it("refuses a batch flag that is not a boolean", async () => {
    const c = await api.register("creator");
    const live = await connectLive(api.base, `access_token=${c.token}`);
    live.send({ op: "subscribe", channel: "tips", batch: "yes" });
    const err = await live.next((f) => f.op === "error");
    expect(err.error.code).toBe("validation_error");
    expect(live.closed).toBeNull();
    await live.close();
  });
});

describe("limits of the feed", () => {
  let env2: TestEnv;
  let small: Api;
  beforeAll(async () => {
    env2 = await createTestEnv("livefeed2");
    small = await startApi(env2, {
      FRAUD_MAX_TX_PER_HOUR: "100000",
      FRAUD_MAX_VOLUME_PER_HOUR_USD: "10000000",
      FEED_RETENTION: "10",
      WS_MAX_BACKPRESSURE_BYTES: "16384",
    });
  });
  afterAll(async () => {
    await small.close();
    await env2.cleanup();
  });

  it("answers reset with the oldest kept for a since older than the retention, then replays from it", async () => {
    const v = await small.register();
    const c = await small.register("creator");
    await small.fund(v.id, 100_000);
    await burst(small, v, c, 200);
    await waitFor(
      async () =>
        (await small.call("GET", `/api/payments/tips?creator_id=${c.id}&limit=1`, { token: c.token })).body
          .tips[0]?.seq === 200,
      10_000,
      "feed top 200",
    );
    const s = await connectLive(small.base, `access_token=${c.token}`);
    s.send({ op: "subscribe", channel: "tips", since: 3 });
    expect(await s.next((f) => f.op === "subscribed")).toMatchObject({ seq: 200 });
    const reset = await s.next((f) => f.op === "reset");
    expect(reset.seq).toBeGreaterThan(4);
    expect(reset.seq).toBeLessThanOrEqual(191); // XTRIM ~ keeps at least FEED_RETENTION
    await waitFor(() => tipsOf(s).length === 200 - reset.seq + 1, 10_000, "the kept tips");
    expectExactly(
      tipsOf(s).map((f) => f.seq),
      reset.seq,
      200,
    );
    // What the reset left out is in the history.
    const hole = await small.call("GET", `/api/payments/tips?creator_id=${c.id}&after_seq=3&limit=200`, {
      token: c.token,
    });
    expect(hole.body.tips.filter((t: any) => t.seq < reset.seq).map((t: any) => t.seq)).toEqual(
      Array.from({ length: reset.seq - 4 }, (_, i) => 4 + i),
    );
    await s.close();
  });

  it("cuts off a subscriber that does not read with 4008, and it resumes with since", async () => {
    const v = await small.register();
    const c = await small.register("creator");
    await small.fund(v.id, 10_000_000);
    const slow = await connectLive(small.base, `access_token=${c.token}`);
    slow.send({ op: "subscribe", channel: "tips" });
    await slow.next((f) => f.op === "subscribed");
    (slow.ws as any)._socket.pause(); // reads nothing more: the server's queue for it grows
    let sent = 0;
    while (sent < 40_000 && !(await closedWithin(slow))) {
      await burst(small, v, c, 1000, `slow-${sent}`);
      sent += 1000;
    }
    (slow.ws as any)._socket.resume();
    const closed = await slow.waitClosed(30_000);
    expect(closed.code).toBe(4008);
    const got = tipsOf(slow).map((f) => f.seq);
    expectExactly(got, 1, got.length);
    const again = await connectLive(small.base, `access_token=${c.token}`);
    again.send({ op: "subscribe", channel: "tips", since: got.length });
    const sub = await again.next((f) => f.op === "subscribed");
    // The retention is 10: a long-gone subscriber is told to refetch.
    if (sub.seq - got.length > 10)
      expect((await again.next((f) => f.op === "reset")).seq).toBeGreaterThan(got.length);
    await again.close();
  }, 120_000);
});

/** True once the server has closed the paused socket (its TCP end shows it). */
async function closedWithin(c: LiveClient): Promise<boolean> {
  await new Promise((r) => setImmediate(r));
  return c.closed !== null || (c.ws as any)._socket.readableEnded === true;
}
