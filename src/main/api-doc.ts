// Owns the content of the API document beyond what routes declare: the success answers' shapes
// (what the features' presenters return; tests check real answers against them), the WebSocket
// protocol from src/live's frame schemas, and the document's front matter.
import { z } from "zod";
import type { Config } from "../config.ts";
import { buildOpenApi, requestSchema } from "../http/openapi.ts";
import type { Endpoint } from "../http/router.ts";
import { clientFrames, serverFrames, WS_CLOSE_CODES } from "../live/ws-frames.ts";

const money = z
  .string()
  .regex(/^-?\d+\.\d{2}$/)
  .describe("dollars with two decimals");
const time = z.string().describe("ISO 8601 time");

const user = z.object({
  id: z.uuid(),
  email: z.email(),
  username: z.string(),
  display_name: z.string(),
  bio: z.string().nullable(),
  avatar_url: z.string().nullable(),
  role: z.enum(["viewer", "creator", "admin"]),
  status: z.enum(["active", "suspended"]),
  created_at: time,
});
const publicUser = user.omit({ email: true });
const session = z.object({
  access_token: z.string(),
  token_type: z.literal("bearer"),
  expires_in: z.number().int(),
});
const balance = z.object({
  user_id: z.uuid(),
  balance: money,
  reserved_balance: money,
  available_balance: money,
  withdrawable_balance: money,
  currency: z.literal("USD"),
});
const transaction = z.object({
  id: z.string(),
  from_user_id: z.string().nullable(),
  to_user_id: z.string().nullable(),
  amount: money,
  platform_fee: money,
  charity_fee: money,
  net_amount: money,
  type: z.string(),
  status: z.string(),
  created_at: time,
});
const payout = z.object({
  id: z.string(),
  user_id: z.uuid(),
  status: z.enum(["pending", "processing", "paid", "failed", "returned"]),
  amount: money,
  currency: z.literal("USD"),
  provider: z.enum(["wise", "airwallex"]).nullable(),
  provider_reference: z.string().nullable(),
  failure_reason: z.string().nullable(),
  attempts: z.number().int(),
  round: z.number().int(),
  created_at: time,
  updated_at: time,
  paid_at: time.nullable(),
});
const payoutMethod = z.object({
  provider: z.enum(["wise", "airwallex"]),
  account_holder_name: z.string(),
  country: z.string(),
  currency: z.string(),
  account_last4: z.string(),
  created_at: time,
});
const suggestions = z.object({ suggestions: z.array(z.string()), source: z.enum(["local", "openai"]) });

/** Success answers by operation ("METHOD /path"). */
export const API_RESPONSES: Readonly<Record<string, z.ZodType>> = {
  "POST /api/users/register": z.object({ user, session }),
  "POST /api/users/login": z.object({ user, session }),
  "GET /api/users/:username": z.object({ user: publicUser }),
  "POST /api/users/:userId/upgrade": z.object({ user }),
  "PUT /api/users/:userId": z.object({ user }),
  "POST /api/payments/tip": z.object({ transaction, balance }),
  "GET /api/payments/balance/:userId": balance,
  "POST /api/payments/intent": z.object({
    payment_intent_id: z.string(),
    client_secret: z.string().nullable(),
    status: z.string(),
    amount: money,
    currency: z.string(),
  }),
  "POST /api/payments/credits/purchase": z.object({
    payment_intent_id: z.string(),
    status: z.string(),
    amount: money,
    balance,
  }),
  "PUT /api/payments/payout-method": z.object({ payout_method: payoutMethod }),
  "GET /api/payments/payout-method/:userId": z.object({ payout_method: payoutMethod }),
  "POST /api/payments/withdraw": z.object({
    payout: z.object({
      id: z.string(),
      status: z.string(),
      amount: money,
      provider: z.string().nullable(),
      created_at: time,
    }),
    balance,
  }),
  "GET /api/payments/payouts/:payoutId": z.object({ payout }),
  "GET /api/payments/payouts": z.object({ payouts: z.array(payout) }),
  "GET /api/admin/payouts": z.object({ payouts: z.array(payout) }),
  "POST /api/admin/payouts/:payoutId/retry": z.object({ payout }),
  "POST /api/admin/users/:userId/suspend": z.object({ user_id: z.uuid(), status: z.literal("suspended") }),
  "POST /api/admin/users/:userId/unsuspend": z.object({ user_id: z.uuid(), status: z.literal("active") }),
  "POST /api/payments/reconcile": z.object({ job: z.object({ id: z.uuid(), status: z.literal("waiting") }) }),
  "POST /api/ai/titles": suggestions,
  "POST /api/ai/cta": suggestions,
  "POST /api/users/:userId/overlay-key": z.object({ overlay_url: z.string(), overlay_key: z.string() }),
};

/** The live protocol: the frames each side sends, as JSON Schema from the zod schemas. */
export function webSocketDoc(config: Pick<Config, "TIP_AMOUNTS_USD" | "SUPERLIKE_AMOUNTS_USD">) {
  const client = clientFrames({
    tipAmountsUsd: config.TIP_AMOUNTS_USD,
    superlikeAmountsUsd: config.SUPERLIKE_AMOUNTS_USD,
  });
  return {
    path: "/ws",
    description:
      "JSON text frames on the API's port. Authenticate at upgrade: ?access_token=<jwt>, or Sec-WebSocket-Protocol: bearer, <jwt>; an overlay connects with ?overlay_key=<key> and may only read its feed. A refused token answers 401 and no socket opens. A tip frame runs the same code as POST /api/payments/tip (id is its idempotency key, in the same namespace) and is acked with HTTP's statuses and error codes once durable.",
    client_frames: Object.fromEntries(Object.entries(client).map(([k, s]) => [k, requestSchema(s)])),
    server_frames: Object.fromEntries(
      Object.entries(serverFrames).map(([k, s]) => [k, z.toJSONSchema(s, { unrepresentable: "any" })]),
    ),
    close_codes: WS_CLOSE_CODES,
  };
}

export function apiDocument(endpoints: readonly Endpoint[], config: Config): Record<string, unknown> {
  return buildOpenApi({
    title: "3AM API",
    version: "1",
    description:
      "Creator monetization: buy credits (Stripe), tip creators over HTTP or WebSocket, withdraw earnings (Wise, Airwallex). Amounts in requests are dollars; in answers, strings with two decimals. Every error is {error: {code, message, details?}}. The WebSocket protocol is under x-websocket.",
    endpoints,
    responses: API_RESPONSES,
    extensions: { "x-websocket": webSocketDoc(config) },
  });
}
