// Owns the WebSocket side of the app (`/ws` on the HTTP server's uWS app and port): the token or
// overlay key checked at upgrade (401, no socket, otherwise), the welcome, tip frames sent through
// the same TipDesk as HTTP tips (same ledger command, idempotency keys, rate limits, answers),
// feed subscriptions (TipFeed.follow, then uWS pub/sub on a topic per creator), and the limits of
// a socket: frame size (1009), binary frames (1003), tips in flight, and queued bytes (4008).
// A token verified before upgrades in uWS's own handler; its address's budget is charged once
// the socket is open (4029 past it).
import type { HttpRequest, HttpResponse, TemplatedApp, us_socket_context_t, WebSocket } from "uWebSockets.js";
import { z } from "zod";
import type { Logger } from "pino";
import type { TokenService } from "../auth/tokens.ts";
import { WS_MAX_MESSAGE_BYTES_MAX } from "../config.ts";
import { AppError } from "../errors.ts";
import { idempotencyKeySchema } from "../http/idempotency.ts";
import type { RateLimits } from "../http/rate-limit.ts";
import { parseJsonObject } from "../http/request.ts";
import { errorAnswer } from "../http/respond.ts";
import type { TipDesk } from "../payments/tip.ts";
import type { UserStore } from "../users/user-store.ts";
import { ExpirySweep } from "./expiry-sweep.ts";
import type { OverlayKeys } from "./overlay-keys.ts";
import type { TipFeed } from "./tip-feed.ts";
import { clientFrames } from "./ws-frames.ts";

/** Close codes a client acts on. 4008: you fell behind; reconnect and subscribe with `since`. */
export const CLOSE_SLOW_CONSUMER = 4008;
/** The overlay key this socket used was replaced by a new one. */
export const CLOSE_KEY_REVOKED = 4001;
/** The access token this socket was opened with expired: reconnect with a fresh token. */
export const CLOSE_TOKEN_EXPIRED = 4002;
/** The client's address is past its request budget: reconnect after a while. */
export const CLOSE_RATE_LIMITED = 4029;
/** The rate limiter could not be asked (its Redis is away): retry shortly (RFC 6455's 1013). */
const CLOSE_TRY_AGAIN_LATER = 1013;
const CLOSE_UNSUPPORTED = 1003;
const CLOSE_TOO_BIG = 1009;
/** Room above WS_MAX_BACKPRESSURE_BYTES before uWS itself skips a subscriber (see maxBackpressure). */
const UWS_BACKPRESSURE_HEADROOM_BYTES = 8 * 1024 * 1024;
/** Tips per `batch` frame at most: a frame of a few KB still fits one read of the client's, and
 * its first tip is not held back behind hundreds of others. */
const BATCH_FRAME_TIPS = 32;
/** How often subscribers' queued bytes are checked (uWS publish itself never tells). */
const SWEEP_MS = 50;

export interface LiveSettings {
  idleTimeoutS: number;
  maxMessageBytes: number;
  maxBackpressureBytes: number;
  maxInFlight: number;
  tipAmountsUsd: number[];
  superlikeAmountsUsd: number[];
}

export interface LiveDeps {
  tokens: TokenService;
  limits: RateLimits;
  users: UserStore;
  desk: TipDesk;
  feed: TipFeed;
  overlayKeys: OverlayKeys;
  logger: Logger;
  settings: LiveSettings;
}

interface SocketData {
  userId: string;
  /** Overlay connections only read their creator's feed. */
  readOnly: boolean;
  ip: string;
  inFlight: number;
  closed: boolean;
  subscribed: boolean;
  /** Subscribed with `batch`: live tips come as one `batch` frame per delivered batch. */
  batch: boolean;
  /** When the access token expires (ms since epoch); null for overlay keys (revoked instead). */
  expiresAtMs: number | null;
  /** Opened before the address's budget was charged: charge it once open. */
  chargeIp: boolean;
}

type Ws = WebSocket<SocketData>;

export const tipTopic = (creatorId: string): string => `tips:${creatorId}`;
/** The topic of a creator's subscribers that take live tips in batches. */
export const tipBatchTopic = (creatorId: string): string => `tips-batch:${creatorId}`;

export interface LiveSockets {
  /** Closes the overlay sockets of a creator (their key was replaced). */
  revokeOverlay(creatorId: string): void;
  /** Open sockets and feed subscribers, for /metrics. */
  stats(): { connections: number; subscribers: number };
  close(): void;
}

export function registerLive(app: TemplatedApp, d: LiveDeps): LiveSockets {
  const s = d.settings;
  const { tip: tipFrame, subscribe: subscribeFrame } = clientFrames(s);
  const feedSockets = new Set<Ws>();
  let connections = 0;
  const subscribersOf = new Map<string, Set<Ws>>();
  /** Per creator: how many of its subscribers here take batches. */
  const batchSubscribers = new Map<string, number>();
  /** Per creator: the frames of the batch being delivered, for its batch subscribers. */
  const batchFrames = new Map<string, string[]>();
  const overlays = new Map<string, Set<Ws>>();

  const send = (ws: Ws, frame: string): boolean => {
    if (ws.getUserData().closed) return false;
    ws.send(frame, false);
    if (ws.getBufferedAmount() > s.maxBackpressureBytes) {
      ws.end(CLOSE_SLOW_CONSUMER, "too slow: reconnect and subscribe with since");
      return false;
    }
    return true;
  };
  const sendCorked = (ws: Ws, frame: string) => {
    if (ws.getUserData().closed) return;
    ws.cork(() => send(ws, frame));
  };
  // Tip acks are corked per socket and event-loop turn: one WAL flush answers many tips at once,
  // often several of one socket, and each cork is a socket write. Acks are matched by id, so
  // their order among other frames does not matter.
  const ackQueue = new Map<Ws, string[]>();
  let ackFlushQueued = false;
  const flushAcks = () => {
    ackFlushQueued = false;
    for (const [ws, frames] of ackQueue) {
      // A socket that closed meanwhile left the queue in its close handler.
      ws.cork(() => {
        for (const f of frames) if (!send(ws, f)) break;
      });
    }
    ackQueue.clear();
  };
  const queueAck = (ws: Ws, frame: string) => {
    if (ws.getUserData().closed) return;
    const frames = ackQueue.get(ws);
    if (frames) frames.push(frame);
    else ackQueue.set(ws, [frame]);
    if (!ackFlushQueued) {
      ackFlushQueued = true;
      setImmediate(flushAcks);
    }
  };
  /** An upgrade refused: the error's status and body, no socket. */
  const writeRefusal = (res: HttpResponse, err: unknown) => {
    const a = errorAnswer(err, d.logger);
    res.writeStatus(
      a.status === 401 ? "401 Unauthorized" : a.status === 429 ? "429 Too Many Requests" : `${a.status}`,
    );
    res.writeHeader("Content-Type", "application/json; charset=utf-8");
    if (a.retryAfterS) res.writeHeader("Retry-After", a.retryAfterS);
    res.end(JSON.stringify(a.body));
  };
  /** Charges the address's budget for a socket opened before it was asked (the cached-token path). */
  const chargeIp = (ws: Ws) => {
    const u = ws.getUserData();
    d.limits.consume("ip", u.ip).catch((err: unknown) => {
      if (u.closed) return;
      const code = (err as AppError).code === "rate_limited" ? CLOSE_RATE_LIMITED : CLOSE_TRY_AGAIN_LATER;
      ws.end(code, errorAnswer(err, d.logger).body.error.message);
    });
  };
  const errorFrame = (err: unknown, id?: unknown) => {
    const a = errorAnswer(err, d.logger);
    return JSON.stringify(
      typeof id === "string"
        ? { op: "error", id, error: a.body.error }
        : { op: "error", error: a.body.error },
    );
  };

  d.feed.deliver = (creatorId, _seq, frame) => {
    app.publish(tipTopic(creatorId), frame, false);
    if (!batchSubscribers.has(creatorId)) return;
    const frames = batchFrames.get(creatorId);
    if (frames) frames.push(frame);
    else batchFrames.set(creatorId, [frame]);
  };
  const cutOffSlow = (ws: Ws) => {
    if (ws.getBufferedAmount() > s.maxBackpressureBytes) {
      ws.end(CLOSE_SLOW_CONSUMER, "too slow: reconnect and subscribe with since");
    }
  };
  d.feed.followedHere = (creatorId) => subscribersOf.has(creatorId);
  // Every deliver() of a batch is followed, in the same synchronous run, by delivered(): the
  // batch subscribers' frame goes out there, so they see the same entries in the same order, one
  // frame per batch instead of one per tip (a thousand overlays of a busy creator: the fan-out's
  // cost is per frame). Slow consumers are checked after every delivered batch (a burst can
  // outrun any timer), and by a timer.
  d.feed.delivered = (creatorIds) => {
    for (const [c, frames] of batchFrames) {
      for (let i = 0; i < frames.length; i += BATCH_FRAME_TIPS) {
        const part = frames.slice(i, i + BATCH_FRAME_TIPS);
        app.publish(tipBatchTopic(c), `{"op":"batch","frames":[${part.join(",")}]}`, false);
      }
    }
    batchFrames.clear();
    for (const c of creatorIds) for (const ws of subscribersOf.get(c) ?? []) cutOffSlow(ws);
  };

  // A socket is as good as the token it was opened with: when the token's exp passes, the socket
  // is closed with 4002 (one timer for all sockets, armed for the earliest expiry).
  const expiries = new ExpirySweep<Ws>((ws) => {
    if (ws.getUserData().closed) return;
    ws.end(CLOSE_TOKEN_EXPIRED, "access token expired: reconnect with a fresh token");
  });

  const sweep = setInterval(() => {
    for (const ws of feedSockets) cutOffSlow(ws);
  }, SWEEP_MS);
  sweep.unref();

  async function onTip(ws: Ws, body: Record<string, unknown>): Promise<void> {
    const u = ws.getUserData();
    const id = body.id;
    const parsed = tipFrame.safeParse(body);
    if (!parsed.success) {
      const bad = new z.ZodError(parsed.error.issues);
      if (typeof id === "string" && idempotencyKeySchema.safeParse(id).success) {
        const a = errorAnswer(bad, d.logger);
        sendCorked(ws, JSON.stringify({ op: "ack", id, status: a.status, error: a.body.error }));
      } else sendCorked(ws, errorFrame(bad, id));
      return;
    }
    const b = parsed.data;
    if (u.readOnly) {
      const a = errorAnswer(new AppError("forbidden", "an overlay connection is read-only"), d.logger);
      sendCorked(ws, JSON.stringify({ op: "ack", id: b.id, status: a.status, error: a.body.error }));
      return;
    }
    if (u.inFlight >= s.maxInFlight) {
      const err = new AppError(
        "rate_limited",
        `at most ${s.maxInFlight} tips may wait for their ack on one socket`,
      );
      const a = errorAnswer(err, d.logger);
      sendCorked(ws, JSON.stringify({ op: "ack", id: b.id, status: a.status, error: a.body.error }));
      return;
    }
    u.inFlight++;
    let frame: string;
    try {
      // The same budgets an HTTP tip spends: the client's IP and the user.
      await d.limits.consume("ip", u.ip);
      await d.limits.consume("user", u.userId);
      const r = await d.desk.send(u.userId, b.id, b);
      frame = JSON.stringify({ op: "ack", id: b.id, status: r.status, ...r.body });
    } catch (err) {
      const a = errorAnswer(err, d.logger);
      frame = JSON.stringify({ op: "ack", id: b.id, status: a.status, error: a.body.error });
    } finally {
      u.inFlight--;
    }
    queueAck(ws, frame);
  }

  async function onSubscribe(ws: Ws, body: Record<string, unknown>): Promise<void> {
    const u = ws.getUserData();
    const b = subscribeFrame.parse(body);
    if (u.subscribed) throw new AppError("conflict", "already subscribed to tips");
    if (!u.readOnly) {
      const me = await d.users.byId(u.userId);
      if (me?.role !== "creator") throw new AppError("forbidden", "only creators have a tip feed");
    }
    if (u.closed) return;
    u.subscribed = true;
    const batch = b.batch === true;
    await d.feed.follow(u.userId, b.since, {
      send: (frame) => {
        if (u.closed) return false;
        let ok = false;
        ws.cork(() => {
          ok = send(ws, frame);
        });
        return ok;
      },
      join: () => {
        if (u.closed) return;
        if (batch) {
          u.batch = true;
          batchSubscribers.set(u.userId, (batchSubscribers.get(u.userId) ?? 0) + 1);
          ws.subscribe(tipBatchTopic(u.userId));
        } else ws.subscribe(tipTopic(u.userId));
        feedSockets.add(ws);
        const set = subscribersOf.get(u.userId) ?? new Set<Ws>();
        subscribersOf.set(u.userId, set);
        set.add(ws);
      },
    });
  }

  app.ws<SocketData>("/ws", {
    idleTimeout: s.idleTimeoutS,
    sendPingsAutomatically: true,
    // Frames a little over the limit are read and refused with a proper 1009 (message handler);
    // uWS itself drops far bigger ones without reading them (no close frame then).
    maxPayloadLength: Math.min(WS_MAX_MESSAGE_BYTES_MAX, 4 * s.maxMessageBytes),
    // uWS skips (silently) a subscriber whose queue passes maxBackpressure: that would be a hole
    // in its feed. Our own cut-off (4008, after every delivered batch of at most 1,000 entries of
    // at most ~2 KiB, and every 50 ms) acts first, so uWS's limit sits one batch and more above it.
    // uWS's closeOnBackpressureLimit closes without a close frame (1006): our 4008 says more.
    maxBackpressure: s.maxBackpressureBytes + UWS_BACKPRESSURE_HEADROOM_BYTES,
    closeOnBackpressureLimit: 0,
    upgrade: (res: HttpResponse, req: HttpRequest, context: us_socket_context_t) => {
      let aborted = false;
      res.onAborted(() => {
        aborted = true;
      });
      // RFC 6455 4.2.1: the handshake's Connection header lists "Upgrade". uWS upgrades without it,
      // and with `Connection: close` it opens the socket (open handler, welcome) and then closes it
      // (1006): refused here with 400 instead.
      const connection = req.getHeader("connection");
      if (!connection.split(",").some((t) => t.trim().toLowerCase() === "upgrade")) {
        const a = errorAnswer(
          new AppError("validation_error", 'a WebSocket handshake needs "Connection: Upgrade"'),
          d.logger,
        );
        res.writeStatus("400 Bad Request");
        res.writeHeader("Content-Type", "application/json; charset=utf-8");
        res.end(JSON.stringify(a.body));
        return;
      }
      const query = new URLSearchParams(req.getQuery() ?? "");
      const wsKey = req.getHeader("sec-websocket-key");
      const protocolHeader = req.getHeader("sec-websocket-protocol");
      const extensions = req.getHeader("sec-websocket-extensions");
      const ip = Buffer.from(res.getRemoteAddressAsText()).toString();
      let token = query.get("access_token");
      let protocol = "";
      if (!token && protocolHeader) {
        const parts = protocolHeader.split(",").map((p) => p.trim());
        if (parts[0]?.toLowerCase() === "bearer" && parts[1]) {
          token = parts[1];
          protocol = parts[0];
        }
      }
      // A token verified before (its claims are cached) upgrades here, in uWS's own handler: the
      // asynchronous path below must upgrade outside res.cork (see there), and uWS.js writes such
      // an upgrade's 101 uncorked, with a warning on stderr each time, which measured 222-250 us of
      // CPU per upgrade against 88-95 us for this one. The address's budget is then charged right
      // after the open (a socket past it is closed with 4029); one already known to be past it is
      // refused with 429 here, as the asynchronous path would.
      const socketData = (
        w: Pick<SocketData, "userId" | "readOnly" | "expiresAtMs">,
        chargeIp: boolean,
      ): SocketData => ({ ...w, ip, inFlight: 0, closed: false, subscribed: false, batch: false, chargeIp });
      const cached = token ? d.tokens.cachedClaims(token) : null;
      if (cached) {
        const refused = d.limits.knownLimited("ip", ip);
        if (refused) {
          writeRefusal(res, refused);
          return;
        }
        res.upgrade<SocketData>(
          socketData({ userId: cached.sub, readOnly: false, expiresAtMs: cached.exp * 1000 }, true),
          wsKey,
          protocol,
          extensions,
          context,
        );
        return;
      }
      const overlayKey = query.get("overlay_key");
      const who = async (): Promise<{ userId: string; readOnly: boolean; expiresAtMs: number | null }> => {
        await d.limits.consume("ip", ip);
        if (token) {
          const claims = await d.tokens.verify(token);
          return { userId: claims.sub, readOnly: false, expiresAtMs: claims.exp * 1000 };
        }
        if (overlayKey) {
          const o = await d.overlayKeys.resolve(overlayKey);
          if (!o)
            throw new AppError("unauthorized", "this overlay key is not valid (a newer one replaced it?)");
          return { userId: o.userId, readOnly: true, expiresAtMs: null };
        }
        throw new AppError("unauthorized", "an access_token (or overlay_key) is required to connect");
      };
      who().then(
        (w) => {
          if (aborted) return;
          // NOT inside res.cork. uWS's HttpResponse::cork() runs its HTTP epilogue after the
          // callback and skips it for an upgraded socket by comparing pointers; the upgrade's
          // realloc shrinks the socket in place, so the pointer is the same, and cork() reads
          // HttpResponseData::state from memory that now belongs to the WebSocket (or was freed
          // and reused by anything the open handler allocated). When that reads "Connection:
          // close, response done" it shuts the fresh socket down: 1006 right after the welcome,
          // about 1 in 3,000 sockets under load (uNetworking/uWebSockets#1928, fixed upstream by
          // PR #1929, after the 20.30 binaries we run). Uncorked, the upgrade has no epilogue; uWS.js
          // prints a "writes must be made from within a corked callback" warning for it, which is
          // harmless here (the 101 goes out in a few writes instead of one).
          res.upgrade<SocketData>(socketData(w, false), wsKey, protocol, extensions, context);
        },
        (err) => {
          if (aborted) return;
          res.cork(() => writeRefusal(res, err));
        },
      );
    },
    open: (ws: Ws) => {
      connections++;
      const u = ws.getUserData();
      if (u.expiresAtMs !== null) expiries.add(ws, u.expiresAtMs);
      if (u.readOnly) {
        const set = overlays.get(u.userId) ?? new Set<Ws>();
        overlays.set(u.userId, set);
        set.add(ws);
      }
      ws.send(
        JSON.stringify({
          op: "welcome",
          user_id: u.userId,
          keepalive_s: s.idleTimeoutS,
          read_only: u.readOnly,
        }),
        false,
      );
      if (u.chargeIp) chargeIp(ws);
    },
    message: (ws: Ws, message: ArrayBuffer, isBinary: boolean) => {
      if (isBinary) {
        ws.end(CLOSE_UNSUPPORTED, "binary frames are not accepted; send JSON text");
        return;
      }
      if (message.byteLength > s.maxMessageBytes) {
        ws.end(CLOSE_TOO_BIG, `frames are at most ${s.maxMessageBytes} bytes`);
        return;
      }
      // The buffer is valid only during this call: copy it out before anything awaits.
      let body: Record<string, unknown>;
      try {
        body = parseJsonObject(Buffer.from(Buffer.from(message)));
      } catch (err) {
        send(ws, errorFrame(err));
        return;
      }
      const op = body.op;
      if (op === "tip") {
        onTip(ws, body).catch((err) => sendCorked(ws, errorFrame(err, body.id)));
      } else if (op === "subscribe") {
        onSubscribe(ws, body).catch((err) => sendCorked(ws, errorFrame(err)));
      } else {
        send(
          ws,
          errorFrame(
            new AppError("validation_error", 'unknown op: expected "tip" or "subscribe"', { op: op ?? null }),
          ),
        );
      }
    },
    close: (ws: Ws) => {
      connections--;
      const u = ws.getUserData();
      u.closed = true;
      ackQueue.delete(ws);
      expiries.remove(ws);
      if (feedSockets.delete(ws)) {
        const set = subscribersOf.get(u.userId);
        set?.delete(ws);
        if (set?.size === 0) subscribersOf.delete(u.userId);
        if (u.batch) {
          const n = (batchSubscribers.get(u.userId) ?? 1) - 1;
          if (n > 0) batchSubscribers.set(u.userId, n);
          else batchSubscribers.delete(u.userId);
        }
      }
      if (u.readOnly) {
        const set = overlays.get(u.userId);
        set?.delete(ws);
        if (set?.size === 0) overlays.delete(u.userId);
      }
    },
  });

  return {
    revokeOverlay(creatorId) {
      for (const ws of overlays.get(creatorId) ?? []) ws.end(CLOSE_KEY_REVOKED, "overlay key replaced");
    },
    stats: () => ({ connections, subscribers: feedSockets.size }),
    close() {
      clearInterval(sweep);
      expiries.stop();
    },
  };
}
