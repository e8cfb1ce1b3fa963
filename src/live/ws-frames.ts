// Owns the frames of the WebSocket protocol (`/ws`) as zod schemas: the client's frames are the
// ones ws-server.ts parses with, the server's frames are what it sends (tests check real frames
// against them), and the API document (GET /openapi.json, x-websocket) is generated from both.
import { z } from "zod";
import { idempotencyKeySchema } from "../http/idempotency.ts";
import { tipFields } from "../payments/tip.ts";

/** The frames a client sends; amounts depend on the configured tip and superlike amounts. */
export function clientFrames(s: { tipAmountsUsd: number[]; superlikeAmountsUsd: number[] }) {
  const fields = tipFields(s);
  return {
    tip: z
      .strictObject({ op: z.literal("tip"), id: idempotencyKeySchema, ...fields.shape })
      .superRefine(fields.refine),
    subscribe: z.strictObject({
      op: z.literal("subscribe"),
      channel: z.literal("tips"),
      since: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).optional(),
      /** Live tips as one `batch` frame per delivered batch instead of a frame each. */
      batch: z.boolean().optional(),
    }),
  };
}

const money = z.string().regex(/^-?\d+\.\d{2}$/);
const errorBody = z.object({ code: z.string(), message: z.string(), details: z.unknown().optional() });

/** A tip as the feed shows it (the overlay's input). */
export const feedTipSchema = z.object({
  id: z.string(),
  kind: z.enum(["tip", "superlike"]),
  from_username: z.string(),
  from_display_name: z.string(),
  amount: money,
  net_amount: money,
  message: z.string().nullable().optional(),
  created_at: z.string(),
});

/** The frames the server sends. */
export const serverFrames = {
  welcome: z.object({
    op: z.literal("welcome"),
    user_id: z.string(),
    keepalive_s: z.number(),
    read_only: z.boolean(),
  }),
  ack: z.object({
    op: z.literal("ack"),
    id: z.string(),
    status: z.number().int(),
    transaction: z.record(z.string(), z.unknown()).optional(),
    balance: z.record(z.string(), z.unknown()).optional(),
    error: errorBody.optional(),
  }),
  subscribed: z.object({ op: z.literal("subscribed"), channel: z.literal("tips"), seq: z.number().int() }),
  reset: z.object({ op: z.literal("reset"), seq: z.number().int() }),
  tip: z.object({ op: z.literal("tip"), seq: z.number().int().min(1), tip: feedTipSchema }),
  batch: z.object({
    op: z.literal("batch"),
    frames: z
      .array(z.object({ op: z.literal("tip"), seq: z.number().int().min(1), tip: feedTipSchema }))
      .min(1),
  }),
  error: z.object({ op: z.literal("error"), id: z.string().optional(), error: errorBody }),
};

/** Close codes a client acts on, with what to do. */
export const WS_CLOSE_CODES: Record<number, string> = {
  1003: "a binary frame: send JSON text",
  1009: "a frame over WS_MAX_MESSAGE_BYTES",
  4001: "the overlay key was replaced: get the new overlay URL",
  4002: "the access token expired: reconnect with a fresh token (and since, to resume a feed)",
  1013: "the rate limiter could not be asked: reconnect shortly",
  4008: "too slow: reconnect and subscribe with the last seq seen as since",
  4029: "this address is past its request budget (RATE_LIMIT_IP_PER_MIN): reconnect after a while",
};
