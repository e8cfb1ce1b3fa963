// WebSocket test client for the live protocol: connects to /ws of a started server, keeps every
// frame it receives, and waits (with a deadline) for the frames a test expects.
import { randomUUID } from "node:crypto";
import { expect } from "vitest";
import WebSocket from "ws";
import type { Api } from "./api.ts";
import { waitFor } from "./env.ts";

export interface LiveClient {
  ws: WebSocket;
  frames: any[];
  closed: { code: number; reason: string } | null;
  errors: string[];
  send(frame: unknown): void;
  /** Waits for a frame matching `pred` not yet returned by an earlier `next`, and returns it. */
  next(pred: (f: any) => boolean, timeoutMs?: number): Promise<any>;
  waitClosed(timeoutMs?: number): Promise<{ code: number; reason: string }>;
  close(): Promise<void>;
}

export function wsUrl(base: string, query: string): string {
  return `${base.replace(/^http/, "ws")}/ws?${query}`;
}

/** Resolves once open (with the welcome received), or rejects with the refused upgrade's status. */
export function connectLive(
  base: string,
  query: string,
  opts: { protocols?: string[]; maxPayload?: number; autoPong?: boolean } = {},
): Promise<LiveClient> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(wsUrl(base, query), opts.protocols ?? [], {
      maxPayload: opts.maxPayload ?? 100 * 1024 * 1024,
      autoPong: opts.autoPong ?? true,
    });
    const c: LiveClient = {
      ws,
      frames: [],
      closed: null,
      errors: [],
      send: (f) => ws.send(typeof f === "string" ? f : JSON.stringify(f)),
      async next(pred, timeoutMs = 10_000) {
        let found: any;
        await waitFor(
          () => {
            const i = c.frames.findIndex((f) => !taken.has(f) && pred(f));
            if (i < 0) return false;
            found = c.frames[i];
            taken.add(found);
            return true;
          },
          timeoutMs,
          "a websocket frame",
        );
        return found;
      },
      async waitClosed(timeoutMs = 10_000) {
        await waitFor(() => c.closed !== null, timeoutMs, "the socket to close");
        return c.closed!;
      },
      async close() {
        if (c.closed) return;
        ws.close();
        await c.waitClosed();
      },
    };
    const taken = new Set<any>();
    ws.on("message", (data) => c.frames.push(JSON.parse(data.toString())));
    ws.on("close", (code, reason) => {
      c.closed = { code, reason: reason.toString() };
    });
    ws.on("unexpected-response", (_req, res) => {
      reject(Object.assign(new Error(`upgrade refused: ${res.statusCode}`), { status: res.statusCode }));
    });
    ws.on("error", (err) => {
      c.errors.push(err.message);
      reject(err);
    });
    ws.on("open", () => {
      c.next((f) => f.op === "welcome").then(() => resolve(c), reject);
    });
  });
}

/** A creator's feed followed as the protocol asks of a client, across server restarts. */
export interface FeedFollower {
  /** Every tip frame received, in order, across reconnects. */
  readonly received: Array<{ seq: number; id: string }>;
  /** The socket in use now (null before the first connect). */
  current(): LiveClient | null;
  /** Sockets opened so far. */
  connects(): number;
  /** Subscriptions the server confirmed so far (tips from then on reach `received`). */
  subscriptions(): number;
  /** Stops following and closes the socket. */
  stop(): Promise<void>;
}

/**
 * Subscribes to the tips feed of the token's creator at `base()` and, whenever its socket closes
 * (the server killed, or any other drop), reconnects to `base()` (it may have moved) and subscribes
 * with the last seq it saw; while nobody listens there, it tries again every 50 ms.
 */
export function followFeed(
  base: () => string,
  token: string,
  onSubscribe?: (since: number | undefined) => void,
): FeedFollower {
  const received: Array<{ seq: number; id: string }> = [];
  let following = true;
  let sub: LiveClient | null = null;
  let connects = 0;
  let subscriptions = 0;
  const loop = (async () => {
    while (following) {
      try {
        const since = received.length > 0 ? received[received.length - 1]!.seq : undefined;
        const live = await connectLive(base(), `access_token=${token}`);
        sub = live;
        connects++;
        live.ws.on("message", (data) => {
          const f = JSON.parse(data.toString());
          if (f.op === "tip") received.push({ seq: f.seq, id: f.tip.id });
          else if (f.op === "subscribed") subscriptions++;
        });
        live.send({ op: "subscribe", channel: "tips", ...(since !== undefined ? { since } : {}) });
        onSubscribe?.(since);
        await waitFor(() => !following || live.closed !== null, 240_000, "the subscriber's socket to close");
        if (!following) live.ws.terminate();
      } catch {
        await new Promise((r) => setTimeout(r, 50)); // nobody listens at base() yet
      }
    }
  })();
  return {
    received,
    current: () => sub,
    connects: () => connects,
    subscriptions: () => subscriptions,
    async stop() {
      following = false;
      await loop;
    },
  };
}

/**
 * A viewer funded with $100, a creator whose tips feed is subscribed (`sub`), and `tip()`: a $1
 * tip from the viewer to the creator over HTTP, expected 201, answering its transaction id.
 */
export async function tipsToFollowedCreator(api: Api) {
  const viewer = await api.register();
  const creator = await api.register("creator");
  await api.fund(viewer.id, 10_000);
  const sub = await connectLive(api.base, `access_token=${creator.token}`);
  sub.send({ op: "subscribe", channel: "tips" });
  await sub.next((f) => f.op === "subscribed");
  const tip = async (): Promise<string> => {
    const r = await api.call("POST", "/api/payments/tip", {
      token: viewer.token,
      body: { from_user_id: viewer.id, to_creator_username: creator.username, amount: 1 },
      headers: { "idempotency-key": randomUUID() },
    });
    expect(r.status).toBe(201);
    return r.body.transaction.id as string;
  };
  return { viewer, creator, sub, tip };
}
