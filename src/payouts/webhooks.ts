// Owns the checking of payout providers' signed webhooks, as pure functions over the raw body and
// headers: Wise signs `transfers#state-change` with RSA-SHA256 (base64, `X-Signature-SHA256`)
// verified with Wise's public key; Airwallex signs `payout.transfer.*` with HMAC-SHA256 (hex,
// `x-signature`) of `x-timestamp` + body, and a stale timestamp is refused so a captured delivery
// cannot be replayed. What comes out is a hint: the status is confirmed with the provider's API.
import {
  createHash,
  createHmac,
  createPublicKey,
  type KeyObject,
  timingSafeEqual,
  verify,
} from "node:crypto";
import type { PayoutProviderName, PayoutWebhookHint } from "./provider.ts";

/** Largest webhook body accepted for verification; providers' events are a few KB. */
export const PAYOUT_WEBHOOK_BODY_MAX_BYTES = 256 * 1024;

export type PayoutWebhookErrorCode =
  | "signature_missing"
  | "signature_invalid"
  | "timestamp_missing"
  | "timestamp_stale"
  | "body_too_large"
  | "malformed_body";

/** A webhook refused: forged, stale or malformed. Answer 400 (or 401) and change nothing. */
export class PayoutWebhookError extends Error {
  override name = "PayoutWebhookError";
  constructor(
    readonly provider: PayoutProviderName,
    readonly code: PayoutWebhookErrorCode,
    message: string,
  ) {
    super(`${provider} webhook refused: ${message}`);
  }
}

export interface PayoutWebhookConfig {
  /** PEM of the key Wise signs with (Wise publishes it; the stand-in has its own). */
  wisePublicKeyPem: string;
  /** The Airwallex endpoint's webhook secret. */
  airwallexSecret: string;
  /** How far an Airwallex `x-timestamp` may be from now, either way. */
  toleranceMs: number;
}

/** Header values as node:http gives them (lower-case names), or a Headers object. */
export type WebhookHeaders = Headers | Record<string, string | string[] | undefined>;

function header(h: WebhookHeaders, name: string): string | undefined {
  if (h instanceof Headers) return h.get(name) ?? undefined;
  const v = h[name] ?? h[name.toLowerCase()];
  return Array.isArray(v) ? v[0] : v;
}

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

function bodyBuffer(provider: PayoutProviderName, raw: Buffer | string): Buffer {
  const buf = typeof raw === "string" ? Buffer.from(raw, "utf8") : raw;
  if (buf.length > PAYOUT_WEBHOOK_BODY_MAX_BYTES) {
    throw new PayoutWebhookError(
      provider,
      "body_too_large",
      `body over ${PAYOUT_WEBHOOK_BODY_MAX_BYTES} bytes`,
    );
  }
  return buf;
}

function parseJson(provider: PayoutProviderName, buf: Buffer): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(buf.toString("utf8"));
  } catch {
    throw new PayoutWebhookError(provider, "malformed_body", "the body is not JSON");
  }
  if (!isObject(v)) throw new PayoutWebhookError(provider, "malformed_body", "the body is not a JSON object");
  return v;
}

const keyCache = new Map<string, KeyObject>();

/** Reads a PEM public key once (env values often carry `\n` escapes instead of newlines). */
export function wisePublicKey(pem: string): KeyObject {
  let key = keyCache.get(pem);
  if (!key) {
    key = createPublicKey(pem.includes("\\n") ? pem.replace(/\\n/g, "\n") : pem);
    if (keyCache.size > 16) keyCache.clear();
    keyCache.set(pem, key);
  }
  return key;
}

/**
 * Verifies a Wise webhook and reads a `transfers#state-change` event. Answers null for a genuine
 * event of another type (or a test notification without a transfer): acknowledge and ignore.
 */
export function verifyWiseWebhook(
  rawBody: Buffer | string,
  headers: WebhookHeaders,
  publicKeyPem: string,
): PayoutWebhookHint | null {
  const buf = bodyBuffer("wise", rawBody);
  const sig = header(headers, "x-signature-sha256");
  if (!sig) throw new PayoutWebhookError("wise", "signature_missing", "no X-Signature-SHA256 header");
  const sigBytes = Buffer.from(sig, "base64");
  if (
    sigBytes.length === 0 ||
    sigBytes.toString("base64").replace(/=+$/, "") !== sig.trim().replace(/=+$/, "")
  ) {
    throw new PayoutWebhookError("wise", "signature_invalid", "X-Signature-SHA256 is not base64");
  }
  if (!verify("sha256", buf, wisePublicKey(publicKeyPem), sigBytes)) {
    throw new PayoutWebhookError("wise", "signature_invalid", "the signature does not match the body");
  }
  const event = parseJson("wise", buf);
  if (event.event_type !== "transfers#state-change") return null;
  const data = event.data;
  const resource = isObject(data) ? data.resource : undefined;
  if (!isObject(data) || !isObject(resource)) {
    throw new PayoutWebhookError("wise", "malformed_body", "no data.resource");
  }
  if (resource.type !== undefined && resource.type !== "transfer") return null;
  const id = resource.id;
  if (
    (typeof id !== "number" || !Number.isSafeInteger(id)) &&
    (typeof id !== "string" || !/^\d+$/.test(id))
  ) {
    throw new PayoutWebhookError("wise", "malformed_body", "data.resource.id is not a transfer id");
  }
  if (typeof data.current_state !== "string" || !data.current_state) {
    throw new PayoutWebhookError("wise", "malformed_body", "no data.current_state");
  }
  // Wise names each delivery; without the header, the body's hash dedupes identical redeliveries.
  const deliveryId =
    header(headers, "x-delivery-id") || `sha256:${createHash("sha256").update(buf).digest("hex")}`;
  return {
    provider: "wise",
    deliveryId,
    providerTransferId: String(id),
    claimedStatus: data.current_state,
  };
}

/** The `x-signature` Airwallex sends: hex HMAC-SHA256 of `${timestamp}${body}`. */
export function signAirwallexPayload(body: string | Buffer, secret: string, timestamp: string): string {
  return createHmac("sha256", secret).update(timestamp, "utf8").update(body).digest("hex");
}

/**
 * Verifies an Airwallex webhook and reads a `payout.transfer.*` event. Answers null for a genuine
 * event of another kind (acknowledge and ignore).
 */
export function verifyAirwallexWebhook(
  rawBody: Buffer | string,
  headers: WebhookHeaders,
  secret: string,
  opts: { toleranceMs: number; nowMs?: number },
): PayoutWebhookHint | null {
  const buf = bodyBuffer("airwallex", rawBody);
  const sig = header(headers, "x-signature");
  if (!sig) throw new PayoutWebhookError("airwallex", "signature_missing", "no x-signature header");
  const ts = header(headers, "x-timestamp");
  if (!ts || !/^\d{1,16}$/.test(ts)) {
    throw new PayoutWebhookError("airwallex", "timestamp_missing", "no numeric x-timestamp header");
  }
  if (!/^[0-9a-f]{64}$/i.test(sig)) {
    throw new PayoutWebhookError("airwallex", "signature_invalid", "x-signature is not a hex SHA-256");
  }
  const expected = Buffer.from(signAirwallexPayload(buf, secret, ts), "hex");
  if (!timingSafeEqual(expected, Buffer.from(sig, "hex"))) {
    throw new PayoutWebhookError("airwallex", "signature_invalid", "the signature does not match the body");
  }
  // Airwallex sends milliseconds; a seconds value is read as seconds.
  const n = Number(ts);
  const tsMs = n < 1e11 ? n * 1000 : n;
  const now = opts.nowMs ?? Date.now();
  if (Math.abs(now - tsMs) > opts.toleranceMs) {
    throw new PayoutWebhookError(
      "airwallex",
      "timestamp_stale",
      `x-timestamp is ${Math.round((now - tsMs) / 1000)} s from now (tolerance ${opts.toleranceMs / 1000} s)`,
    );
  }
  const event = parseJson("airwallex", buf);
  const name = event.name;
  if (typeof name !== "string") throw new PayoutWebhookError("airwallex", "malformed_body", "no event name");
  if (!name.startsWith("payout.transfer.") || name.startsWith("payout.transfer.funding.")) return null;
  if (typeof event.id !== "string" || !event.id) {
    throw new PayoutWebhookError("airwallex", "malformed_body", "no event id");
  }
  const obj = isObject(event.data) ? event.data.object : undefined;
  if (!isObject(obj) || typeof obj.id !== "string" || !obj.id) {
    throw new PayoutWebhookError("airwallex", "malformed_body", "no data.object.id");
  }
  const claimed =
    typeof obj.status === "string" && obj.status
      ? obj.status
      : name.slice("payout.transfer.".length).toUpperCase();
  return {
    provider: "airwallex",
    deliveryId: event.id,
    providerTransferId: obj.id,
    ...(typeof obj.request_id === "string" && obj.request_id ? { payoutId: obj.request_id } : {}),
    claimedStatus: claimed,
  };
}
