// A local stand-in for the slice of Stripe's API our backend uses, spoken on the wire so the
// official `stripe` SDK talks to it through its normal host/port/protocol options: form-encoded
// requests with bracket nesting, Bearer sk_test_ keys, Idempotency-Key replay, Stripe's error
// JSON and status codes, PaymentIntents with Stripe's test payment methods, refunds, disputes,
// cursor-paginated lists, and signed webhook events. State is in memory; no real money moves.
import { randomInt } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import Stripe from "stripe";
import {
  type StandinLog,
  signStripePayload,
  type WebhookBehaviour,
  type WebhookDelivery,
  WebhookDispatcher,
} from "./stripe-webhooks.ts";

export { signStripePayload } from "./stripe-webhooks.ts";
export type { StandinLog, WebhookBehaviour, WebhookDelivery } from "./stripe-webhooks.ts";

// ---------------------------------------------------------------------------------------------
// Limits

/** Largest request body accepted, form or JSON. */
export const BODY_LIMIT_BYTES = 1_000_000;
/** Idempotency keys remembered (least recently used dropped first) and for how long (Stripe: 24 h). */
export const IDEMPOTENCY_KEYS_MAX = 20_000;
export const IDEMPOTENCY_TTL_MS = 24 * 60 * 60 * 1000;
/** Objects of one kind held in memory; past this, creating one is refused (restart the stand-in). */
export const OBJECTS_MAX_PER_KIND = 500_000;
/** Events kept for GET /v1/events and resending; the oldest are dropped (Stripe keeps 30 days). */
export const EVENTS_MAX = 100_000;
const LIST_LIMIT_MAX = 100;
const LIST_LIMIT_DEFAULT = 10;
const METADATA_KEYS_MAX = 50;
const METADATA_KEY_CHARS_MAX = 40;
const METADATA_VALUE_CHARS_MAX = 500;
const AMOUNT_MAX_CENTS = 99_999_999;
/** Stripe's minimum charge per currency, in the currency's minor unit. */
const AMOUNT_MIN_BY_CURRENCY: Record<string, number> = {
  usd: 50,
  eur: 50,
  cad: 50,
  aud: 50,
  chf: 50,
  gbp: 30,
};

/** The events a webhook endpoint receives unless configured otherwise (its `enabled_events`). */
export const DEFAULT_ENABLED_EVENTS: readonly string[] = [
  "payment_intent.succeeded",
  "payment_intent.payment_failed",
  "payment_intent.canceled",
  "charge.refunded",
  "charge.dispute.created",
  "charge.dispute.closed",
];

// ---------------------------------------------------------------------------------------------
// Public shapes

export interface StripeStandinOptions {
  /** 0 (the default) picks a free port. */
  port?: number;
  host?: string;
  /** The endpoint secret (`whsec_...`) events are signed with. */
  webhookSecret: string;
  webhookUrl?: string;
  log?: StandinLog;
  /** Event types delivered to the webhook URL; "*" for all. Default DEFAULT_ENABLED_EVENTS. */
  enabledEvents?: readonly string[];
  webhooks?: Partial<WebhookBehaviour>;
  /** The api_version stamped on events; default the SDK's pinned version. */
  apiVersion?: string;
}

export interface StandinEvent {
  id: string;
  object: "event";
  api_version: string;
  created: number;
  data: { object: unknown; previous_attributes?: Record<string, unknown> };
  livemode: false;
  pending_webhooks: number;
  request: { id: string | null; idempotency_key: string | null };
  type: string;
}

export interface WebhookSettings extends WebhookBehaviour {
  url: string | null;
  enabledEvents: string[];
}

export type DisputeOutcome = "won" | "lost" | "warning_closed";

export interface StripeStandin {
  /** Base URL, e.g. http://127.0.0.1:41234 */
  readonly url: string;
  readonly port: number;
  readonly webhookSecret: string;
  /** Options for `new Stripe(key, ...)` that point the SDK here. */
  readonly sdkOptions: { host: string; port: number; protocol: "http" };
  close(): Promise<void>;
  setWebhookUrl(url: string | null): void;
  configureWebhooks(change: Partial<WebhookSettings>): WebhookSettings;
  /** The same as configureWebhooks. */
  configure(change: Partial<WebhookSettings>): WebhookSettings;
  webhookSettings(): WebhookSettings;
  pauseWebhooks(): void;
  resumeWebhooks(): void;
  /** Resolves when every delivery that can run has completed, retries included (paused ones stay held). */
  flushWebhooks(): Promise<void>;
  deliveries(): WebhookDelivery[];
  /** Every event emitted, oldest first. */
  events(): StandinEvent[];
  /** A snapshot of any stored object by id (pi_, ch_, re_, dp_, pm_, evt_), or undefined. */
  retrieve(id: string): unknown;
  /** Opens a dispute on a PaymentIntent's (or a charge's) successful charge; emits charge.dispute.created. */
  createDispute(
    paymentIntentOrChargeId: string,
    opts?: { status?: string; reason?: string; amount?: number },
  ): Stripe.Dispute;
  /** Closes a dispute; emits charge.dispute.closed. */
  closeDispute(disputeId: string, outcome: DisputeOutcome): Stripe.Dispute;
  /** A refund made outside our API (as from the Dashboard); same rules as POST /v1/refunds. */
  refund(paymentIntentId: string, amount?: number): Stripe.Refund;
  /** Delivers a stored event again (regardless of enabled events). */
  resendEvent(eventId: string): void;
  /** A Stripe-Signature header for `payload`; defaults to now and the stand-in's secret. */
  signPayload(payload: string, opts?: { timestamp?: number; secret?: string }): string;
}

/** Stripe's error body; thrown by control methods and answered by the HTTP API. */
export interface StripeErrorBody {
  type: "invalid_request_error" | "card_error" | "idempotency_error" | "api_error";
  message: string;
  code?: string;
  decline_code?: string;
  param?: string;
  doc_url?: string;
  charge?: string;
  payment_intent?: Stripe.PaymentIntent;
  payment_method?: Stripe.PaymentMethod;
}

export class StripeStandinError extends Error {
  constructor(
    readonly status: number,
    readonly error: StripeErrorBody,
    /** False when Stripe would not save the result under the idempotency key (validation failures). */
    readonly saved = true,
  ) {
    super(error.message);
    this.name = "StripeStandinError";
  }
}

// ---------------------------------------------------------------------------------------------
// Errors as Stripe words them

const docUrl = (code: string) => `https://stripe.com/docs/error-codes/${code.replace(/_/g, "-")}`;

function invalid(message: string, param?: string, code?: string): StripeStandinError {
  const error: StripeErrorBody = { type: "invalid_request_error", message };
  if (code) Object.assign(error, { code, doc_url: docUrl(code) });
  if (param) error.param = param;
  return new StripeStandinError(400, error, false);
}

function noSuch(kind: string, id: string, param: string, status: 400 | 404): StripeStandinError {
  return new StripeStandinError(status, {
    type: "invalid_request_error",
    code: "resource_missing",
    doc_url: docUrl("resource_missing"),
    message: `No such ${kind}: '${id}'`,
    param,
  });
}

function conflict(message: string, code: string, extra: Partial<StripeErrorBody> = {}): StripeStandinError {
  return new StripeStandinError(400, {
    type: "invalid_request_error",
    code,
    doc_url: docUrl(code),
    message,
    ...extra,
  });
}

// ---------------------------------------------------------------------------------------------
// Form parameters: Stripe's bracket nesting (`metadata[k]=v`, `expand[]=x`, `expand[0]=x`)

export type ParamValue = string | ParamValue[] | Params;
export interface Params {
  [key: string]: ParamValue;
}

/** Parses a form-encoded body or query string into nested params. */
export function parseStripeForm(text: string): Params {
  const root: Params = {};
  for (const [rawKey, value] of new URLSearchParams(text)) {
    const m = /^([^[\]]+)((?:\[[^[\]]*\])*)$/.exec(rawKey);
    const path = m ? [m[1]!, ...[...m[2]!.matchAll(/\[([^[\]]*)\]/g)].map((x) => x[1]!)] : [rawKey];
    setPath(root, path, value);
  }
  return root;
}

const UNSAFE_KEYS = new Set(["__proto__", "constructor", "prototype"]);
const isIndex = (s: string) => s === "" || /^\d+$/.test(s);

function setPath(root: Params, path: string[], value: string): void {
  if (path.some((s) => UNSAFE_KEYS.has(s))) throw invalid(`Invalid parameter: ${path.join(".")}`);
  // Metadata keys are free text, so `metadata[0]` is a key, not an index.
  const arraysAllowed = path[0] !== "metadata";
  let node: Params | ParamValue[] = root;
  for (let i = 0; i < path.length; i++) {
    const seg = path[i]!;
    const last = i === path.length - 1;
    const next = path[i + 1];
    if (Array.isArray(node)) {
      if (!isIndex(seg)) throw invalid(`Invalid array index in ${path.join("")}`);
      const idx: number = seg === "" ? node.length : Number(seg);
      if (idx > node.length + 1000) throw invalid(`Array index too large: ${path.join("")}`);
      if (last) {
        node[idx] = value;
        return;
      }
      node[idx] ??= arraysAllowed && next !== undefined && isIndex(next) ? [] : {};
      const child: ParamValue | undefined = node[idx];
      if (typeof child === "string") throw invalid(`Invalid parameter nesting at ${path.join("")}`);
      node = child!;
    } else {
      if (last) {
        node[seg] = value;
        return;
      }
      if (node[seg] === undefined || typeof node[seg] === "string") {
        node[seg] = arraysAllowed && next !== undefined && isIndex(next) ? [] : {};
      }
      node = node[seg] as Params | ParamValue[];
    }
  }
}

/** A stable rendering of params, so the same request always compares equal. */
function canonical(v: ParamValue | undefined): string {
  if (v === undefined) return "null";
  if (typeof v === "string") return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map((x) => canonical(x)).join(",")}]`;
  return `{${Object.keys(v)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`)
    .join(",")}}`;
}

function checkKnown(p: Params, allowed: ReadonlySet<string>): void {
  for (const k of Object.keys(p)) {
    if (k !== "expand" && !allowed.has(k)) {
      throw invalid(`Received unknown parameter: ${k}`, k, "parameter_unknown");
    }
  }
}

function str(p: Params, name: string): string | undefined {
  const v = p[name];
  if (v === undefined) return undefined;
  if (typeof v !== "string") throw invalid(`Invalid string: ${canonical(v)}`, name);
  return v;
}

function reqStr(p: Params, name: string): string {
  const v = str(p, name);
  if (v === undefined || v === "") {
    throw invalid(`Missing required param: ${name}.`, name, "parameter_missing");
  }
  return v;
}

function int(p: Params, name: string): number | undefined {
  const v = str(p, name);
  if (v === undefined) return undefined;
  if (!/^-?\d{1,15}$/.test(v)) throw invalid(`Invalid integer: ${v}`, name, "parameter_invalid_integer");
  return Number(v);
}

function bool(p: Params, name: string): boolean | undefined {
  const v = str(p, name);
  if (v === undefined) return undefined;
  if (v !== "true" && v !== "false") throw invalid(`Invalid boolean: ${v}`, name);
  return v === "true";
}

function oneOf<T extends string>(p: Params, name: string, values: readonly T[]): T | undefined {
  const v = str(p, name);
  if (v === undefined) return undefined;
  if (!(values as readonly string[]).includes(v)) {
    throw invalid(`Invalid ${name}: must be one of ${values.join(", ")}`, name);
  }
  return v as T;
}

function obj(p: Params, name: string): Params | undefined {
  const v = p[name];
  if (v === undefined || v === "") return v === "" ? {} : undefined;
  if (typeof v === "string" || Array.isArray(v)) throw invalid(`Invalid object`, name);
  return v;
}

function strList(p: Params, name: string): string[] {
  const v = p[name];
  if (v === undefined || v === "") return [];
  if (typeof v === "string") return [v];
  const items = Array.isArray(v) ? v : Object.values(v);
  return items.map((x) => {
    if (typeof x !== "string") throw invalid(`Invalid array`, name);
    return x;
  });
}

/** Metadata as sent; an empty value means "unset this key" (and `metadata=` means "unset all"). */
function metadataParam(p: Params): Record<string, string> | undefined {
  const m = obj(p, "metadata");
  if (m === undefined) return undefined;
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(m)) {
    if (typeof v !== "string") throw invalid(`Invalid metadata[${k}]: must be a string`, `metadata[${k}]`);
    if (k.length > METADATA_KEY_CHARS_MAX) {
      throw invalid(
        `Metadata keys can have up to ${METADATA_KEY_CHARS_MAX} characters, but you passed in a key that is ${k.length} characters.`,
        "metadata",
      );
    }
    if (v.length > METADATA_VALUE_CHARS_MAX) {
      throw invalid(
        `Metadata values can have up to ${METADATA_VALUE_CHARS_MAX} characters, but you passed in a value that is ${v.length} characters.`,
        `metadata[${k}]`,
      );
    }
    out[k] = v;
  }
  return out;
}

function mergeMetadata(into: Record<string, string>, change: Record<string, string>, clearAll: boolean) {
  if (clearAll) for (const k of Object.keys(into)) delete into[k];
  for (const [k, v] of Object.entries(change)) {
    if (v === "") delete into[k];
    else into[k] = v;
  }
  if (Object.keys(into).length > METADATA_KEYS_MAX) {
    throw invalid(`You can have at most ${METADATA_KEYS_MAX} metadata keys.`, "metadata");
  }
}

interface CreatedRange {
  gt?: number;
  gte?: number;
  lt?: number;
  lte?: number;
}

function createdRange(p: Params): CreatedRange | undefined {
  const v = p.created;
  if (v === undefined) return undefined;
  if (typeof v === "string") {
    const t = int(p, "created")!;
    return { gte: t, lte: t };
  }
  if (Array.isArray(v)) throw invalid("Invalid created", "created");
  const out: CreatedRange = {};
  for (const k of Object.keys(v)) {
    if (k !== "gt" && k !== "gte" && k !== "lt" && k !== "lte") {
      throw invalid(`Received unknown parameter: created[${k}]`, `created[${k}]`, "parameter_unknown");
    }
    const n = int(v, k);
    if (n !== undefined) out[k] = n;
  }
  return out;
}

function inRange(t: number, r: CreatedRange | undefined): boolean {
  if (!r) return true;
  return (
    (r.gt === undefined || t > r.gt) &&
    (r.gte === undefined || t >= r.gte) &&
    (r.lt === undefined || t < r.lt) &&
    (r.lte === undefined || t <= r.lte)
  );
}

// ---------------------------------------------------------------------------------------------
// Ids and time

const BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
function randomId(length: number): string {
  let s = "";
  for (let i = 0; i < length; i++) s += BASE62[randomInt(62)];
  return s;
}
const newId = (prefix: string) => `${prefix}_${randomId(24)}`;
const nowS = () => Math.floor(Date.now() / 1000);

// ---------------------------------------------------------------------------------------------
// Stores: insertion order is creation order, so lists need no sort and cursors are positions.

interface Listable {
  id: string;
  created: number;
}

interface ListQuery {
  limit: number;
  startingAfter: string | undefined;
  endingBefore: string | undefined;
  created: CreatedRange | undefined;
}

class Store<T extends Listable> {
  private items: T[] = [];
  private index = new Map<string, number>();
  private dropped = 0;

  constructor(
    readonly kind: string,
    readonly url: string,
    /** Drop the oldest past the limit (events) instead of refusing new objects. */
    private readonly evictOldest = false,
    private readonly max = OBJECTS_MAX_PER_KIND,
  ) {}

  add(item: T): void {
    if (this.items.length >= this.max) {
      if (!this.evictOldest) {
        throw new StripeStandinError(400, {
          type: "invalid_request_error",
          message: `The Stripe stand-in holds at most ${this.max} ${this.kind} objects; restart it.`,
        });
      }
      const drop = Math.ceil(this.max / 10);
      this.items = this.items.slice(drop);
      this.dropped += drop;
      this.index = new Map(this.items.map((x, i) => [x.id, i + this.dropped]));
    }
    this.index.set(item.id, this.items.length + this.dropped);
    this.items.push(item);
  }

  get(id: string): T | undefined {
    const i = this.index.get(id);
    return i === undefined ? undefined : this.items[i - this.dropped];
  }

  all(): T[] {
    return [...this.items];
  }

  /** Newest first, like Stripe; `ending_before` pages towards newer objects. */
  list(q: ListQuery, keep: (item: T) => boolean): { data: T[]; has_more: boolean } {
    const match = (x: T) => inRange(x.created, q.created) && keep(x);
    const cursorId = q.startingAfter ?? q.endingBefore;
    let from = this.items.length - 1;
    if (cursorId !== undefined) {
      const at = this.index.get(cursorId);
      if (at === undefined) {
        throw noSuch(
          this.kind,
          cursorId,
          q.startingAfter !== undefined ? "starting_after" : "ending_before",
          400,
        );
      }
      from = at - this.dropped + (q.startingAfter !== undefined ? -1 : 1);
    }
    const found: T[] = [];
    if (q.endingBefore !== undefined) {
      for (let i = from; i < this.items.length && found.length <= q.limit; i++) {
        const x = this.items[i]!;
        if (match(x)) found.push(x);
      }
      const has_more = found.length > q.limit;
      return { data: found.slice(0, q.limit).reverse(), has_more };
    }
    for (let i = from; i >= 0 && found.length <= q.limit; i--) {
      const x = this.items[i]!;
      if (match(x)) found.push(x);
    }
    return { data: found.slice(0, q.limit), has_more: found.length > q.limit };
  }
}

function listQuery(p: Params): ListQuery {
  const limit = int(p, "limit") ?? LIST_LIMIT_DEFAULT;
  if (limit < 1) throw invalid("This value must be greater than or equal to 1.", "limit");
  if (limit > LIST_LIMIT_MAX)
    throw invalid(`This value must be less than or equal to ${LIST_LIMIT_MAX}.`, "limit");
  const startingAfter = str(p, "starting_after") || undefined;
  const endingBefore = str(p, "ending_before") || undefined;
  if (startingAfter && endingBefore) {
    throw invalid(
      "You may only specify one of these parameters: ending_before, starting_after.",
      "ending_before",
    );
  }
  return { limit, startingAfter, endingBefore, created: createdRange(p) };
}

// ---------------------------------------------------------------------------------------------
// Stripe's test payment methods

interface TestCard {
  brand: string;
  last4: string;
  funding: "credit" | "debit";
  decline?: { code: string; declineCode: string; message: string; blocked?: boolean };
}

const DECLINED = "Your card was declined.";
const TEST_CARDS: Record<string, TestCard> = {
  pm_card_visa: { brand: "visa", last4: "4242", funding: "credit" },
  pm_card_visa_debit: { brand: "visa", last4: "5556", funding: "debit" },
  pm_card_mastercard: { brand: "mastercard", last4: "4444", funding: "credit" },
  pm_card_amex: { brand: "amex", last4: "8431", funding: "credit" },
  pm_card_chargeDeclined: {
    brand: "visa",
    last4: "0002",
    funding: "credit",
    decline: { code: "card_declined", declineCode: "generic_decline", message: DECLINED },
  },
  pm_card_chargeDeclinedInsufficientFunds: {
    brand: "visa",
    last4: "9995",
    funding: "credit",
    decline: {
      code: "card_declined",
      declineCode: "insufficient_funds",
      message: "Your card has insufficient funds.",
    },
  },
  pm_card_chargeDeclinedLostCard: {
    brand: "visa",
    last4: "9987",
    funding: "credit",
    decline: { code: "card_declined", declineCode: "lost_card", message: DECLINED },
  },
  pm_card_chargeDeclinedStolenCard: {
    brand: "visa",
    last4: "9979",
    funding: "credit",
    decline: { code: "card_declined", declineCode: "stolen_card", message: DECLINED },
  },
  pm_card_chargeDeclinedFraudulent: {
    brand: "visa",
    last4: "0019",
    funding: "credit",
    decline: { code: "card_declined", declineCode: "fraudulent", message: DECLINED, blocked: true },
  },
  pm_card_chargeDeclinedExpiredCard: {
    brand: "visa",
    last4: "0069",
    funding: "credit",
    decline: { code: "expired_card", declineCode: "expired_card", message: "Your card has expired." },
  },
  pm_card_chargeDeclinedIncorrectCvc: {
    brand: "visa",
    last4: "0127",
    funding: "credit",
    decline: {
      code: "incorrect_cvc",
      declineCode: "incorrect_cvc",
      message: "Your card's security code is incorrect.",
    },
  },
  pm_card_chargeDeclinedProcessingError: {
    brand: "visa",
    last4: "0119",
    funding: "credit",
    decline: {
      code: "processing_error",
      declineCode: "processing_error",
      message: "An error occurred while processing your card. Try again in a little bit.",
    },
  },
};

const NO_ADDRESS: Stripe.Address = {
  city: null,
  country: null,
  line1: null,
  line2: null,
  postal_code: null,
  state: null,
};

// ---------------------------------------------------------------------------------------------
// The model: objects, their state machines, and the events they emit

interface Origin {
  requestId: string | null;
  idempotencyKey: string | null;
}
const AUTOMATIC: Origin = { requestId: null, idempotencyKey: null };

/** Top-level parameters each endpoint accepts, from the SDK's *Params types; others get parameter_unknown. */
const words = (s: string): ReadonlySet<string> => new Set(s.split(" "));

const PI_CREATE = words(
  "amount currency allowed_payment_method_types amount_details application_fee_amount " +
    "automatic_payment_methods capture_method confirm confirmation_method confirmation_token customer " +
    "customer_account description error_on_requires_action excluded_payment_method_types hooks " +
    "mandate mandate_data metadata off_session on_behalf_of payment_details payment_method " +
    "payment_method_configuration payment_method_data payment_method_options payment_method_types " +
    "radar_options receipt_email return_url setup_future_usage shipping statement_descriptor " +
    "statement_descriptor_suffix transfer_data transfer_group use_stripe_sdk",
);
const PI_CONFIRM = words(
  "allowed_payment_method_types amount_details amount_to_confirm capture_method confirmation_token " +
    "error_on_requires_action excluded_payment_method_types hooks mandate mandate_data off_session " +
    "payment_details payment_method payment_method_data payment_method_options radar_options " +
    "receipt_email return_url setup_future_usage shipping use_stripe_sdk",
);
const PI_UPDATE = words(
  "amount currency customer description metadata payment_method receipt_email statement_descriptor " +
    "statement_descriptor_suffix transfer_group allowed_payment_method_types amount_details " +
    "application_fee_amount capture_method customer_account excluded_payment_method_types hooks " +
    "payment_details payment_method_configuration payment_method_data payment_method_options " +
    "setup_future_usage shipping transfer_data",
);
const REFUND_CREATE = words(
  "amount charge currency customer instructions_email metadata origin payment_intent reason " +
    "refund_application_fee reverse_transfer",
);
const PAGE = ["limit", "starting_after", "ending_before", "created"];

const CONFIRMABLE: readonly string[] = [
  "requires_payment_method",
  "requires_confirmation",
  "requires_action",
];
const CANCELABLE: readonly string[] = [
  "requires_payment_method",
  "requires_capture",
  "requires_confirmation",
  "requires_action",
  "processing",
];
const OPEN_DISPUTE: readonly string[] = [
  "needs_response",
  "under_review",
  "warning_needs_response",
  "warning_under_review",
];

class StripeModel {
  readonly paymentIntents = new Store<Stripe.PaymentIntent>("payment_intent", "/v1/payment_intents");
  readonly charges = new Store<Stripe.Charge>("charge", "/v1/charges");
  readonly refunds = new Store<Stripe.Refund>("refund", "/v1/refunds");
  readonly disputes = new Store<Stripe.Dispute>("dispute", "/v1/disputes");
  readonly paymentMethods = new Store<Stripe.PaymentMethod>("PaymentMethod", "/v1/payment_methods");
  readonly events = new Store<StandinEvent>("event", "/v1/events", true, EVENTS_MAX);
  private readonly cardOf = new Map<string, TestCard>();
  private readonly returnUrlOf = new Map<string, string>();
  private readonly refundsOf = new Map<string, string[]>();
  private readonly disputeOf = new Map<string, string>();

  constructor(
    private readonly apiVersion: string,
    private readonly onEvent: (e: StandinEvent) => void,
  ) {}

  find(id: string): Listable | undefined {
    const prefix = id.slice(0, id.indexOf("_") + 1);
    switch (prefix) {
      case "pi_":
        return this.paymentIntents.get(id);
      case "ch_":
        return this.charges.get(id);
      case "re_":
        return this.refunds.get(id);
      case "dp_":
        return this.disputes.get(id);
      case "pm_":
        return this.paymentMethods.get(id);
      case "evt_":
        return this.events.get(id);
      default:
        return undefined;
    }
  }

  /** A charge as the API shows it; `refunds` only when asked for (and in charge.refunded events). */
  chargeWithRefunds(ch: Stripe.Charge): Stripe.Charge {
    const ids = this.refundsOf.get(ch.id) ?? [];
    const data = ids.map((id) => structuredClone(this.refunds.get(id)!)).reverse();
    return {
      ...structuredClone(ch),
      refunds: { object: "list", data, has_more: false, url: `/v1/charges/${ch.id}/refunds` },
    };
  }

  private emit(
    type: string,
    object: unknown,
    origin: Origin,
    previous?: Record<string, unknown>,
  ): StandinEvent {
    const event: StandinEvent = {
      id: newId("evt"),
      object: "event",
      api_version: this.apiVersion,
      created: nowS(),
      data: { object: structuredClone(object) },
      livemode: false,
      pending_webhooks: 0,
      request: { id: origin.requestId, idempotency_key: origin.idempotencyKey },
      type,
    };
    if (previous) event.data.previous_attributes = previous;
    this.events.add(event);
    this.onEvent(event);
    return event;
  }

  // -- PaymentIntents ------------------------------------------------------------------------

  createPaymentIntent(p: Params, origin: Origin): Stripe.PaymentIntent {
    checkKnown(p, PI_CREATE);
    const amount = this.amountParam(p, true)!;
    const currency = this.currencyParam(p, true)!;
    const metadata = metadataParam(p) ?? {};
    for (const [k, v] of Object.entries(metadata)) if (v === "") delete metadata[k];
    if (Object.keys(metadata).length > METADATA_KEYS_MAX) {
      throw invalid(`You can have at most ${METADATA_KEYS_MAX} metadata keys.`, "metadata");
    }
    const captureMethod =
      oneOf(p, "capture_method", ["automatic", "automatic_async", "manual"] as const) ?? "automatic_async";
    if (captureMethod === "manual") {
      throw invalid(
        "The Stripe stand-in does not model manual capture (capture_method=manual).",
        "capture_method",
      );
    }
    const confirmationMethod =
      oneOf(p, "confirmation_method", ["automatic", "manual"] as const) ?? "automatic";
    const confirm = bool(p, "confirm") ?? false;
    const paymentMethod = str(p, "payment_method") || null;
    const apm = this.automaticPaymentMethodsParam(p);
    const types = strList(p, "payment_method_types");
    const returnUrl = str(p, "return_url");
    if (returnUrl !== undefined && !confirm) {
      throw invalid("You can only pass in return_url when confirm=true.", "return_url");
    }
    const fee = int(p, "application_fee_amount");
    const id = newId("pi");
    const pi: Stripe.PaymentIntent = {
      id,
      object: "payment_intent",
      allowed_payment_method_types: null,
      amount,
      amount_capturable: 0,
      amount_details: { tip: {} },
      amount_received: 0,
      application: null,
      application_fee_amount: fee ?? null,
      automatic_payment_methods: apm,
      canceled_at: null,
      cancellation_reason: null,
      capture_method: captureMethod,
      client_secret: `${id}_secret_${randomId(25)}`,
      confirmation_method: confirmationMethod,
      created: nowS(),
      currency,
      customer: str(p, "customer") || null,
      customer_account: null,
      description: str(p, "description") || null,
      excluded_payment_method_types: null,
      last_payment_error: null,
      latest_charge: null,
      livemode: false,
      managed_payments: null,
      metadata,
      next_action: null,
      on_behalf_of: null,
      payment_method: null,
      payment_method_configuration_details: null,
      payment_method_options: null,
      payment_method_types: types.length > 0 ? types : ["card"],
      payment_record: null,
      processing: null,
      receipt_email: str(p, "receipt_email") || null,
      review: null,
      setup_future_usage: null,
      shipping: null,
      source: null,
      statement_descriptor: str(p, "statement_descriptor") || null,
      statement_descriptor_suffix: str(p, "statement_descriptor_suffix") || null,
      status: "requires_payment_method",
      transfer_data: null,
      transfer_group: str(p, "transfer_group") || null,
    };
    // Resolve the payment method before storing anything, so a bad one creates nothing.
    if (paymentMethod) {
      pi.payment_method = this.paymentMethodFor(paymentMethod).id;
      pi.status = "requires_confirmation";
    }
    if (confirm && !pi.payment_method) throw this.missingPaymentMethod(pi);
    if (confirm) this.checkReturnUrl(pi, returnUrl);
    this.paymentIntents.add(pi);
    if (returnUrl) this.returnUrlOf.set(pi.id, returnUrl);
    this.emit("payment_intent.created", pi, origin);
    if (confirm) this.runConfirm(pi, undefined, origin);
    return pi;
  }

  updatePaymentIntent(id: string, p: Params): Stripe.PaymentIntent {
    checkKnown(p, PI_UPDATE);
    const pi = this.paymentIntentAt(id);
    const amount = this.amountParam(p, false);
    const currency = this.currencyParam(p, false);
    const paymentMethod = str(p, "payment_method");
    const metadata = metadataParam(p);
    const settled = pi.status === "succeeded" || pi.status === "canceled" || pi.status === "processing";
    if (settled && (amount !== undefined || currency !== undefined || paymentMethod !== undefined)) {
      throw conflict(
        `You cannot update this PaymentIntent because it has a status of ${pi.status}.`,
        "payment_intent_unexpected_state",
        { payment_intent: structuredClone(pi) },
      );
    }
    if (amount !== undefined) pi.amount = amount;
    if (currency !== undefined) pi.currency = currency;
    if (paymentMethod !== undefined) {
      pi.payment_method = paymentMethod ? this.paymentMethodFor(paymentMethod).id : null;
      pi.status = pi.payment_method ? "requires_confirmation" : "requires_payment_method";
    }
    if (metadata !== undefined) mergeMetadata(pi.metadata, metadata, p.metadata === "");
    for (const k of [
      "description",
      "receipt_email",
      "statement_descriptor",
      "statement_descriptor_suffix",
    ] as const) {
      const v = str(p, k);
      if (v !== undefined) pi[k] = v || null;
    }
    const customer = str(p, "customer");
    if (customer !== undefined) pi.customer = customer || null;
    return pi;
  }

  confirmPaymentIntent(id: string, p: Params, origin: Origin): Stripe.PaymentIntent {
    checkKnown(p, PI_CONFIRM);
    const pi = this.paymentIntentAt(id);
    const returnUrl = str(p, "return_url");
    const paymentMethod = str(p, "payment_method") || undefined;
    if (pi.status === "succeeded") {
      throw conflict(
        "You cannot confirm this PaymentIntent because it has already succeeded after being previously confirmed.",
        "payment_intent_unexpected_state",
        { payment_intent: structuredClone(pi) },
      );
    }
    if (!CONFIRMABLE.includes(pi.status)) {
      throw conflict(
        `You cannot confirm this PaymentIntent because it has a status of ${pi.status}. Only a PaymentIntent with one of the following statuses may be confirmed: ${CONFIRMABLE.join(", ")}.`,
        "payment_intent_unexpected_state",
        { payment_intent: structuredClone(pi) },
      );
    }
    if (!paymentMethod && !pi.payment_method) throw this.missingPaymentMethod(pi);
    this.checkReturnUrl(pi, returnUrl);
    if (returnUrl) this.returnUrlOf.set(pi.id, returnUrl);
    this.runConfirm(pi, paymentMethod, origin);
    return pi;
  }

  cancelPaymentIntent(id: string, p: Params, origin: Origin): Stripe.PaymentIntent {
    checkKnown(p, new Set(["cancellation_reason"]));
    const pi = this.paymentIntentAt(id);
    const reason = oneOf(p, "cancellation_reason", [
      "duplicate",
      "fraudulent",
      "requested_by_customer",
      "abandoned",
    ] as const);
    if (!CANCELABLE.includes(pi.status)) {
      throw conflict(
        `You cannot cancel this PaymentIntent because it has a status of ${pi.status}. Only a PaymentIntent with one of the following statuses may be canceled: ${CANCELABLE.join(", ")}.`,
        "payment_intent_unexpected_state",
        { payment_intent: structuredClone(pi) },
      );
    }
    pi.status = "canceled";
    pi.canceled_at = nowS();
    pi.cancellation_reason = reason ?? null;
    this.emit("payment_intent.canceled", pi, origin);
    return pi;
  }

  /**
   * Stripe refuses to confirm an intent that allows redirect-based methods without a return_url.
   * Checked only when automatic_payment_methods is explicit: otherwise it depends on Dashboard
   * settings the stand-in does not model.
   */
  private checkReturnUrl(pi: Stripe.PaymentIntent, returnUrl: string | undefined): void {
    const apm = pi.automatic_payment_methods;
    if (apm?.enabled && apm.allow_redirects !== "never" && !returnUrl && !this.returnUrlOf.has(pi.id)) {
      throw invalid(
        "A `return_url` must be specified because this Payment Intent is configured to automatically accept the payment methods enabled in the Dashboard, some of which may require a full page redirect to succeed. If you do not want to accept redirect-based payment methods, set `automatic_payment_methods[enabled]` to `true` and `automatic_payment_methods[allow_redirects]` to `never` when creating Setup Intents and Payment Intents.",
        "return_url",
      );
    }
  }

  /** Charges the card: success moves the intent to succeeded, a decline back to requires_payment_method and throws Stripe's 402. */
  private runConfirm(pi: Stripe.PaymentIntent, paymentMethodParam: string | undefined, origin: Origin): void {
    const pm = paymentMethodParam
      ? this.paymentMethodFor(paymentMethodParam)
      : this.paymentMethods.get(pi.payment_method as string)!;
    const card = this.cardOf.get(pm.id)!;
    const charge = this.newCharge(pi, pm, card);
    this.charges.add(charge);
    pi.latest_charge = charge.id;
    if (card.decline) {
      const d = card.decline;
      pi.status = "requires_payment_method";
      pi.payment_method = null;
      pi.last_payment_error = {
        type: "card_error",
        charge: charge.id,
        code: d.code as Stripe.PaymentIntent.LastPaymentError.Code,
        decline_code: d.declineCode,
        doc_url: docUrl(d.code),
        message: d.message,
        payment_method: structuredClone(pm),
      };
      this.emit("charge.failed", charge, origin);
      this.emit("payment_intent.payment_failed", pi, origin);
      throw new StripeStandinError(402, {
        type: "card_error",
        code: d.code,
        decline_code: d.declineCode,
        doc_url: docUrl(d.code),
        message: d.message,
        charge: charge.id,
        payment_intent: structuredClone(pi),
        payment_method: structuredClone(pm),
      });
    }
    pi.status = "succeeded";
    pi.payment_method = pm.id;
    pi.amount_received = pi.amount;
    pi.last_payment_error = null;
    this.emit("charge.succeeded", charge, origin);
    this.emit("payment_intent.succeeded", pi, origin);
  }

  private newCharge(pi: Stripe.PaymentIntent, pm: Stripe.PaymentMethod, card: TestCard): Stripe.Charge {
    const d = card.decline;
    const ok = d === undefined;
    const pmCard = pm.card!;
    return {
      id: newId("ch"),
      object: "charge",
      amount: pi.amount,
      amount_captured: ok ? pi.amount : 0,
      amount_refunded: 0,
      application: null,
      application_fee: null,
      application_fee_amount: null,
      balance_transaction: ok ? newId("txn") : null,
      billing_details: { address: { ...NO_ADDRESS }, email: null, name: null, phone: null, tax_id: null },
      calculated_statement_descriptor: pi.statement_descriptor ?? "STRIPE STAND-IN",
      captured: ok,
      created: nowS(),
      currency: pi.currency,
      customer: pi.customer,
      description: pi.description,
      disputed: false,
      failure_balance_transaction: null,
      failure_code: d?.code ?? null,
      failure_message: d?.message ?? null,
      fraud_details: {},
      livemode: false,
      metadata: { ...pi.metadata },
      on_behalf_of: null,
      outcome: ok
        ? {
            advice_code: null,
            network_advice_code: null,
            network_decline_code: null,
            network_status: "approved_by_network",
            reason: null,
            risk_level: "normal",
            risk_score: 20,
            seller_message: "Payment complete.",
            type: "authorized",
          }
        : {
            advice_code: null,
            network_advice_code: null,
            network_decline_code: null,
            network_status: d.blocked ? "not_sent_to_network" : "declined_by_network",
            reason: d.blocked ? "highest_risk_level" : d.declineCode,
            risk_level: d.blocked ? "highest" : "normal",
            risk_score: d.blocked ? 95 : 20,
            seller_message: d.blocked
              ? "Stripe blocked this payment as too risky."
              : "The bank did not return any further details with this decline.",
            type: d.blocked ? "blocked" : "issuer_declined",
          },
      paid: ok,
      payment_intent: pi.id,
      payment_method: pm.id,
      payment_method_details: {
        type: "card",
        card: {
          amount_authorized: ok ? pi.amount : null,
          authorization_code: ok ? String(randomInt(100_000, 999_999)) : null,
          brand: pmCard.brand,
          checks: { address_line1_check: null, address_postal_code_check: null, cvc_check: "pass" },
          country: pmCard.country,
          electronic_commerce_indicator: null,
          exp_month: pmCard.exp_month,
          exp_year: pmCard.exp_year,
          funding: pmCard.funding,
          installments: null,
          last4: pmCard.last4,
          mandate: null,
          network: pmCard.brand,
          network_transaction_id: ok ? randomId(15) : null,
          regulated_status: "unregulated",
          three_d_secure: null,
          transaction_link_id: null,
          wallet: null,
        },
      },
      receipt_email: pi.receipt_email,
      receipt_number: null,
      receipt_url: null,
      refunded: false,
      review: null,
      shipping: null,
      source: null,
      source_transfer: null,
      statement_descriptor: pi.statement_descriptor,
      statement_descriptor_suffix: pi.statement_descriptor_suffix,
      status: ok ? "succeeded" : "failed",
      transfer_data: null,
      transfer_group: null,
    };
  }

  /** A magic test token (pm_card_visa, ...) becomes a new PaymentMethod, as in Stripe; an id is looked up. */
  private paymentMethodFor(ref: string): Stripe.PaymentMethod {
    const existing = this.paymentMethods.get(ref);
    if (existing) return existing;
    const card = TEST_CARDS[ref];
    if (!card) throw noSuch("PaymentMethod", ref, "payment_method", 400);
    const now = new Date();
    const pm: Stripe.PaymentMethod = {
      id: newId("pm"),
      object: "payment_method",
      allow_redisplay: "unspecified",
      billing_details: { address: { ...NO_ADDRESS }, email: null, name: null, phone: null, tax_id: null },
      card: {
        brand: card.brand,
        checks: { address_line1_check: null, address_postal_code_check: null, cvc_check: "unchecked" },
        country: "US",
        display_brand: card.brand,
        exp_month: now.getUTCMonth() + 1,
        exp_year: now.getUTCFullYear() + 1,
        fingerprint: randomId(16),
        funding: card.funding,
        generated_from: null,
        last4: card.last4,
        networks: { available: [card.brand], preferred: null },
        regulated_status: "unregulated",
        three_d_secure_usage: { supported: true },
        wallet: null,
      },
      created: nowS(),
      customer: null,
      customer_account: null,
      livemode: false,
      metadata: {},
      type: "card",
    };
    this.paymentMethods.add(pm);
    this.cardOf.set(pm.id, card);
    return pm;
  }

  private missingPaymentMethod(pi: Stripe.PaymentIntent): StripeStandinError {
    return conflict(
      "You cannot confirm this PaymentIntent because it's missing a payment method. You can either update the PaymentIntent with a payment method and then confirm it again, or confirm it again directly with a payment method.",
      "payment_intent_unexpected_state",
      { payment_intent: structuredClone(pi) },
    );
  }

  private paymentIntentAt(id: string): Stripe.PaymentIntent {
    const pi = this.paymentIntents.get(id);
    if (!pi) throw noSuch("payment_intent", id, "intent", 404);
    return pi;
  }

  private amountParam(p: Params, required: boolean): number | undefined {
    if (required) reqStr(p, "amount");
    const amount = int(p, "amount");
    if (amount === undefined) return undefined;
    if (amount < 1)
      throw invalid("This value must be greater than or equal to 1.", "amount", "parameter_invalid_integer");
    if (amount > AMOUNT_MAX_CENTS) {
      throw invalid("Amount must be no more than $999,999.99", "amount", "amount_too_large");
    }
    const currency = str(p, "currency")?.toLowerCase();
    const min = currency ? AMOUNT_MIN_BY_CURRENCY[currency] : undefined;
    if (min !== undefined && amount < min) {
      const shown = `${currency === "usd" ? "$" : ""}${(min / 100).toFixed(2)}`;
      throw invalid(`Amount must be at least ${shown} ${currency}`, "amount", "amount_too_small");
    }
    return amount;
  }

  private currencyParam(p: Params, required: boolean): string | undefined {
    const v = required ? reqStr(p, "currency") : str(p, "currency");
    if (v === undefined) return undefined;
    if (!/^[a-z]{3}$/i.test(v)) throw invalid(`Invalid currency: ${v.toLowerCase()}.`, "currency");
    return v.toLowerCase();
  }

  private automaticPaymentMethodsParam(p: Params): Stripe.PaymentIntent.AutomaticPaymentMethods | null {
    const apm = obj(p, "automatic_payment_methods");
    if (!apm) return null;
    checkKnown(apm, new Set(["enabled", "allow_redirects"]));
    const enabled = bool(apm, "enabled");
    if (enabled === undefined) {
      throw invalid(
        "Missing required param: automatic_payment_methods[enabled].",
        "automatic_payment_methods[enabled]",
        "parameter_missing",
      );
    }
    const allowRedirects = oneOf(apm, "allow_redirects", ["always", "never"] as const);
    return allowRedirects ? { allow_redirects: allowRedirects, enabled } : { enabled };
  }

  // -- Refunds ---------------------------------------------------------------------------------

  createRefund(p: Params, origin: Origin): Stripe.Refund {
    checkKnown(p, REFUND_CREATE);
    const piId = str(p, "payment_intent") || undefined;
    const chId = str(p, "charge") || undefined;
    const amountParam = int(p, "amount");
    if (amountParam !== undefined && amountParam < 1) {
      throw invalid("Invalid positive integer", "amount", "parameter_invalid_integer");
    }
    const reason = oneOf(p, "reason", ["duplicate", "fraudulent", "requested_by_customer"] as const);
    const metadata = metadataParam(p) ?? {};
    if (!piId && !chId) {
      throw invalid(
        "One of the following params should be provided for this request: payment_intent or charge.",
        "payment_intent",
        "parameter_missing",
      );
    }
    let charge: Stripe.Charge | undefined;
    if (piId) {
      const pi = this.paymentIntents.get(piId);
      if (!pi) throw noSuch("payment_intent", piId, "payment_intent", 400);
      const latest = pi.latest_charge ? this.charges.get(pi.latest_charge as string) : undefined;
      if (pi.status !== "succeeded" || !latest || latest.status !== "succeeded") {
        throw invalid(
          `This PaymentIntent (${pi.id}) does not have a successful charge to refund.`,
          "payment_intent",
          "charge_not_refundable",
        );
      }
      charge = latest;
      if (chId && chId !== charge.id) {
        throw invalid(`Charge ${chId} does not belong to PaymentIntent ${pi.id}.`, "charge");
      }
    } else {
      charge = this.charges.get(chId!);
      if (!charge) throw noSuch("charge", chId!, "charge", 400);
      if (charge.status !== "succeeded") {
        throw invalid(
          `Charge ${charge.id} has not succeeded; there is nothing to refund.`,
          "charge",
          "charge_not_refundable",
        );
      }
    }
    const disputeId = this.disputeOf.get(charge.id);
    const dispute = disputeId ? this.disputes.get(disputeId) : undefined;
    if (dispute && !dispute.is_charge_refundable) {
      throw conflict(`Charge ${charge.id} has been charged back; cannot issue a refund.`, "charge_disputed");
    }
    const remaining = charge.amount - charge.amount_refunded;
    if (remaining <= 0) {
      throw conflict(`Charge ${charge.id} has already been refunded.`, "charge_already_refunded");
    }
    const amount = amountParam ?? remaining;
    if (amount > remaining) {
      const money = (c: number) => `$${(c / 100).toFixed(2)}`;
      throw conflict(
        `Refund amount (${money(amount)}) is greater than unrefunded amount on charge (${money(remaining)})`,
        "amount_too_large",
        { param: "amount" },
      );
    }
    const refund: Stripe.Refund = {
      id: newId("re"),
      object: "refund",
      amount,
      balance_transaction: newId("txn"),
      charge: charge.id,
      created: nowS(),
      currency: charge.currency,
      customer: charge.customer as string | null,
      customer_account: null,
      destination_details: {
        card: { reference_status: "pending", reference_type: "acquirer_reference_number", type: "refund" },
        type: "card",
      },
      metadata,
      payment_intent: charge.payment_intent as string,
      payment_method: charge.payment_method,
      reason: reason ?? null,
      receipt_number: null,
      source_transfer_reversal: null,
      status: "succeeded",
      transfer_reversal: null,
    };
    this.refunds.add(refund);
    this.refundsOf.set(charge.id, [...(this.refundsOf.get(charge.id) ?? []), refund.id]);
    const previous = { amount_refunded: charge.amount_refunded, refunded: charge.refunded };
    charge.amount_refunded += amount;
    charge.refunded = charge.amount_refunded === charge.amount;
    this.emit("charge.refunded", this.chargeWithRefunds(charge), origin, previous);
    this.emit("refund.created", refund, origin);
    return refund;
  }

  // -- Disputes --------------------------------------------------------------------------------

  createDispute(target: string, opts: { status?: string; reason?: string; amount?: number }): Stripe.Dispute {
    let charge: Stripe.Charge | undefined;
    if (target.startsWith("pi_")) {
      const pi = this.paymentIntents.get(target);
      if (!pi) throw noSuch("payment_intent", target, "payment_intent", 404);
      charge = pi.latest_charge ? this.charges.get(pi.latest_charge as string) : undefined;
    } else {
      charge = this.charges.get(target);
      if (!charge) throw noSuch("charge", target, "charge", 404);
    }
    if (charge?.status !== "succeeded") {
      throw invalid(`${target} has no successful charge to dispute.`, "charge");
    }
    if (this.disputeOf.has(charge.id)) throw invalid(`Charge ${charge.id} is already disputed.`, "charge");
    const status = opts.status ?? "needs_response";
    if (!OPEN_DISPUTE.includes(status)) {
      throw invalid(`A new dispute's status is one of ${OPEN_DISPUTE.join(", ")}; got ${status}.`, "status");
    }
    const amount = opts.amount ?? charge.amount;
    if (!Number.isInteger(amount) || amount < 1 || amount > charge.amount) {
      throw invalid(`A dispute's amount is an integer from 1 to the charge's ${charge.amount}.`, "amount");
    }
    const inquiry = status.startsWith("warning_");
    const created = nowS();
    const pmCard = charge.payment_method_details?.card;
    const dispute: Stripe.Dispute = {
      id: newId("dp"),
      object: "dispute",
      amount,
      balance_transactions: [],
      charge: charge.id,
      created,
      currency: charge.currency,
      enhanced_eligibility_types: [],
      evidence: {
        access_activity_log: null,
        billing_address: null,
        cancellation_policy: null,
        cancellation_policy_disclosure: null,
        cancellation_rebuttal: null,
        customer_communication: null,
        customer_email_address: null,
        customer_name: null,
        customer_purchase_ip: null,
        customer_signature: null,
        duplicate_charge_documentation: null,
        duplicate_charge_explanation: null,
        duplicate_charge_id: null,
        enhanced_evidence: {},
        product_description: null,
        receipt: null,
        refund_policy: null,
        refund_policy_disclosure: null,
        refund_refusal_explanation: null,
        service_date: null,
        service_documentation: null,
        shipping_address: null,
        shipping_carrier: null,
        shipping_date: null,
        shipping_documentation: null,
        shipping_tracking_number: null,
        uncategorized_file: null,
        uncategorized_text: null,
      },
      evidence_details: {
        due_by: created + 7 * 24 * 3600,
        enhanced_eligibility: {},
        has_evidence: false,
        past_due: false,
        submission_count: 0,
        submission_method: "not_submitted",
      },
      intended_submission_method: null,
      is_charge_refundable: inquiry,
      livemode: false,
      metadata: {},
      payment_intent: charge.payment_intent as string | null,
      payment_method_details: {
        type: "card",
        card: {
          brand: pmCard?.brand ?? "visa",
          case_type: inquiry ? "inquiry" : "chargeback",
          network: pmCard?.network ?? "visa",
          network_reason_code: "10.4",
        },
      },
      reason: opts.reason ?? "fraudulent",
      status: status as Stripe.Dispute.Status,
    };
    this.disputes.add(dispute);
    this.disputeOf.set(charge.id, dispute.id);
    charge.disputed = true;
    this.emit("charge.dispute.created", dispute, AUTOMATIC);
    if (!inquiry) this.emit("charge.dispute.funds_withdrawn", dispute, AUTOMATIC);
    return dispute;
  }

  closeDispute(id: string, outcome: DisputeOutcome): Stripe.Dispute {
    const dispute = this.disputes.get(id);
    if (!dispute) throw noSuch("dispute", id, "dispute", 404);
    if (!OPEN_DISPUTE.includes(dispute.status)) {
      throw invalid(`Dispute ${id} is already closed (${dispute.status}).`, "dispute");
    }
    const inquiry = dispute.status.startsWith("warning_");
    if (outcome !== "won" && outcome !== "lost" && outcome !== "warning_closed") {
      throw invalid(`A dispute closes as won, lost or warning_closed; got ${String(outcome)}.`, "status");
    }
    if ((outcome === "warning_closed") !== inquiry) {
      throw invalid(
        inquiry ? "An inquiry closes as warning_closed." : "A chargeback closes as won or lost.",
        "status",
      );
    }
    const previous = { status: dispute.status };
    dispute.status = outcome;
    dispute.is_charge_refundable = false;
    this.emit("charge.dispute.closed", dispute, AUTOMATIC, previous);
    if (outcome === "won") this.emit("charge.dispute.funds_reinstated", dispute, AUTOMATIC);
    return dispute;
  }
}

// ---------------------------------------------------------------------------------------------
// Expansion (`expand[]=latest_charge`, `expand[]=data.latest_charge`)

const EXPAND_DEPTH_MAX = 4;

function expand(model: StripeModel, body: unknown, paths: string[]): unknown {
  for (const path of paths) {
    const segs = path.split(".");
    if (segs.length > EXPAND_DEPTH_MAX) {
      throw invalid(`You cannot expand more than ${EXPAND_DEPTH_MAX} levels of a property.`, "expand");
    }
    expandAt(model, body, segs, path);
  }
  return body;
}

function expandAt(model: StripeModel, node: unknown, segs: string[], path: string): void {
  if (node === null || typeof node !== "object") return;
  const o = node as Record<string, unknown>;
  const [key, ...rest] = segs;
  if (key === undefined) return;
  if (Array.isArray(o[key]) && key === "data") {
    for (const item of o[key] as unknown[]) expandAt(model, item, rest, path);
    return;
  }
  if (key === "refunds" && o.object === "charge") {
    o.refunds = (model.chargeWithRefunds(model.charges.get(o.id as string)!) as { refunds: unknown }).refunds;
  } else if (typeof o[key] === "string") {
    const found = model.find(o[key] as string);
    if (!found) throw invalid(`This property cannot be expanded (${path}).`, "expand");
    o[key] = structuredClone(found);
  } else if (o[key] === undefined || (typeof o[key] !== "object" && o[key] !== null)) {
    throw invalid(`This property cannot be expanded (${path}).`, "expand");
  }
  expandAt(model, o[key], rest, path);
}

// ---------------------------------------------------------------------------------------------
// HTTP: routes, auth, idempotency

interface ApiCall {
  params: Params;
  args: string[];
  origin: Origin;
}
interface Route {
  method: "GET" | "POST";
  pattern: RegExp;
  run(c: ApiCall): { status?: number; body: unknown };
}

function apiRoutes(model: StripeModel): Route[] {
  const render = (obj: Listable, c: ApiCall) =>
    expand(model, structuredClone(obj), strList(c.params, "expand"));
  const get =
    <T extends Listable>(store: Store<T>, param: string) =>
    (c: ApiCall) => {
      checkKnown(c.params, new Set(param === "intent" ? ["client_secret"] : []));
      const obj = store.get(c.args[0]!);
      if (!obj) throw noSuch(store.kind, c.args[0]!, param, 404);
      return { body: render(obj, c) };
    };
  const list =
    <T extends Listable>(
      store: Store<T>,
      filters: string[],
      keep: (x: T, p: Params) => boolean = () => true,
    ) =>
    (c: ApiCall) => {
      checkKnown(c.params, new Set([...PAGE, ...filters]));
      const q = listQuery(c.params);
      for (const f of filters) if (f !== "types") str(c.params, f);
      const page = store.list(q, (x) => keep(x, c.params));
      const body = {
        object: "list",
        data: page.data.map((x) => structuredClone(x)),
        has_more: page.has_more,
        url: store.url,
      };
      return { body: expand(model, body, strList(c.params, "expand")) };
    };
  const eq = (p: Params, name: string, actual: unknown) => {
    const want = p[name];
    return want === undefined || want === "" || want === actual;
  };
  const id = "([^/]+)";
  return [
    {
      method: "POST",
      pattern: /^\/v1\/payment_intents$/,
      run: (c) => ({ body: render(model.createPaymentIntent(c.params, c.origin), c) }),
    },
    {
      method: "GET",
      pattern: /^\/v1\/payment_intents$/,
      run: list(model.paymentIntents, ["customer", "customer_account"], (x, p) =>
        eq(p, "customer", x.customer),
      ),
    },
    {
      method: "GET",
      pattern: new RegExp(`^/v1/payment_intents/${id}$`),
      run: get(model.paymentIntents, "intent"),
    },
    {
      method: "POST",
      pattern: new RegExp(`^/v1/payment_intents/${id}$`),
      run: (c) => ({ body: render(model.updatePaymentIntent(c.args[0]!, c.params), c) }),
    },
    {
      method: "POST",
      pattern: new RegExp(`^/v1/payment_intents/${id}/confirm$`),
      run: (c) => ({ body: render(model.confirmPaymentIntent(c.args[0]!, c.params, c.origin), c) }),
    },
    {
      method: "POST",
      pattern: new RegExp(`^/v1/payment_intents/${id}/cancel$`),
      run: (c) => ({ body: render(model.cancelPaymentIntent(c.args[0]!, c.params, c.origin), c) }),
    },
    {
      method: "POST",
      pattern: /^\/v1\/refunds$/,
      run: (c) => ({ body: render(model.createRefund(c.params, c.origin), c) }),
    },
    {
      method: "GET",
      pattern: /^\/v1\/refunds$/,
      run: list(
        model.refunds,
        ["charge", "payment_intent"],
        (x, p) => eq(p, "charge", x.charge) && eq(p, "payment_intent", x.payment_intent),
      ),
    },
    { method: "GET", pattern: new RegExp(`^/v1/refunds/${id}$`), run: get(model.refunds, "id") },
    {
      method: "GET",
      pattern: /^\/v1\/charges$/,
      run: list(
        model.charges,
        ["customer", "payment_intent", "transfer_group"],
        (x, p) => eq(p, "payment_intent", x.payment_intent) && eq(p, "customer", x.customer),
      ),
    },
    { method: "GET", pattern: new RegExp(`^/v1/charges/${id}$`), run: get(model.charges, "id") },
    {
      method: "GET",
      pattern: new RegExp(`^/v1/payment_methods/${id}$`),
      run: get(model.paymentMethods, "id"),
    },
    {
      method: "GET",
      pattern: /^\/v1\/disputes$/,
      run: list(
        model.disputes,
        ["charge", "payment_intent"],
        (x, p) => eq(p, "charge", x.charge) && eq(p, "payment_intent", x.payment_intent),
      ),
    },
    { method: "GET", pattern: new RegExp(`^/v1/disputes/${id}$`), run: get(model.disputes, "id") },
    {
      method: "GET",
      pattern: /^\/v1\/events$/,
      run: list(model.events, ["type", "types", "delivery_success"], (x, p) => {
        const types = strList(p, "types");
        if (types.length > 0 && !types.includes(x.type)) return false;
        const type = p.type;
        if (typeof type !== "string" || type === "") return true;
        if (!type.includes("*")) return x.type === type;
        const re = new RegExp(`^${type.split("*").map(escapeRegExp).join("[^]*")}$`);
        return re.test(x.type);
      }),
    },
    { method: "GET", pattern: new RegExp(`^/v1/events/${id}$`), run: get(model.events, "id") },
  ];
}

const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

interface Saved {
  endpoint: string;
  fingerprint: string;
  status: number;
  body: string;
  requestId: string;
  savedAtMs: number;
}

/** Idempotency results, least recently used dropped first past IDEMPOTENCY_KEYS_MAX. */
class IdempotencyStore {
  private readonly saved = new Map<string, Saved>();

  get(key: string): Saved | undefined {
    const s = this.saved.get(key);
    if (!s) return undefined;
    this.saved.delete(key);
    if (Date.now() - s.savedAtMs > IDEMPOTENCY_TTL_MS) return undefined;
    this.saved.set(key, s);
    return s;
  }

  set(key: string, s: Saved): void {
    this.saved.delete(key);
    this.saved.set(key, s);
    if (this.saved.size > IDEMPOTENCY_KEYS_MAX) this.saved.delete(this.saved.keys().next().value!);
  }
}

function authFailure(header: string | undefined): string | null {
  let key: string | undefined;
  const bearer = header && /^Bearer\s+(\S+)\s*$/i.exec(header);
  const basic = header && /^Basic\s+(\S+)\s*$/i.exec(header);
  if (bearer) key = bearer[1];
  else if (basic) key = Buffer.from(basic[1]!, "base64").toString("utf8").split(":")[0];
  if (!key) {
    return "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for details, or we can help at https://support.stripe.com/.";
  }
  if (key.startsWith("sk_test_") && key.length > "sk_test_".length) return null;
  const shown =
    key.length > 12
      ? `${key.slice(0, 8)}${"*".repeat(key.length - 12)}${key.slice(-4)}`
      : "*".repeat(key.length);
  return `Invalid API Key provided: ${shown}`;
}

class BodyTooLarge extends Error {}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > BODY_LIMIT_BYTES) throw new BodyTooLarge();
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString("utf8");
}

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

// ---------------------------------------------------------------------------------------------
// Start

export async function startStripeStandin(opts: StripeStandinOptions): Promise<StripeStandin> {
  if (!opts.webhookSecret) throw new Error("startStripeStandin: webhookSecret is required");
  const log = opts.log;
  const apiVersion = opts.apiVersion ?? Stripe.API_VERSION;
  let enabledEvents = [...(opts.enabledEvents ?? DEFAULT_ENABLED_EVENTS)];
  const wantsEvent = (type: string) => enabledEvents.includes("*") || enabledEvents.includes(type);

  // Assigned right below; events are only emitted once requests arrive, after both exist.
  let model: StripeModel;
  const dispatcher = new WebhookDispatcher({
    secret: opts.webhookSecret,
    url: opts.webhookUrl ?? null,
    behaviour: opts.webhooks ?? {},
    log,
    onSettled: (eventId, delivered) => {
      const e = model.events.get(eventId);
      if (e && delivered) e.pending_webhooks = 0;
    },
  });
  const deliver = (e: StandinEvent) => dispatcher.enqueue(e.id, e.type, JSON.stringify(e, null, 2));
  model = new StripeModel(apiVersion, (e) => {
    if (dispatcher.targetUrl === null || !wantsEvent(e.type)) return;
    e.pending_webhooks = 1;
    deliver(e);
  });
  const routes = apiRoutes(model);
  const idempotency = new IdempotencyStore();

  const settings = (): WebhookSettings => ({
    ...dispatcher.settings(),
    url: dispatcher.targetUrl,
    enabledEvents: [...enabledEvents],
  });
  const configureWebhooks = (change: Partial<WebhookSettings>): WebhookSettings => {
    const { url, enabledEvents: events, ...behaviour } = change;
    if (url !== undefined) dispatcher.setUrl(url);
    if (events !== undefined) enabledEvents = [...events];
    dispatcher.configure(behaviour);
    return settings();
  };
  const refund = (paymentIntentId: string, amount?: number): Stripe.Refund => {
    const p: Params = { payment_intent: paymentIntentId };
    if (amount !== undefined) p.amount = String(amount);
    return structuredClone(model.createRefund(p, AUTOMATIC));
  };
  const resendEvent = (eventId: string) => {
    const e = model.events.get(eventId);
    if (!e) throw noSuch("event", eventId, "id", 404);
    deliver(e);
  };
  const signPayload = (payload: string, o: { timestamp?: number; secret?: string } = {}) =>
    signStripePayload(payload, o.secret ?? opts.webhookSecret, o.timestamp);

  const sendJson = (
    res: ServerResponse,
    status: number,
    body: unknown,
    headers: Record<string, string> = {},
  ) => {
    const text = typeof body === "string" ? body : JSON.stringify(body, null, 2);
    res.writeHead(status, {
      "content-type": "application/json",
      "content-length": Buffer.byteLength(text),
      ...headers,
    });
    res.end(text);
  };

  /** The `/_standin/...` control API: JSON in and out, no Stripe key needed. */
  const control = async (
    method: string,
    path: string,
    raw: string,
  ): Promise<{ status: number; body: unknown }> => {
    let b: Record<string, unknown>;
    try {
      b = raw.trim() === "" ? {} : (JSON.parse(raw) as Record<string, unknown>);
    } catch {
      throw invalid("The control API takes a JSON body.");
    }
    const optInt = (k: string) => {
      const v = b[k];
      if (v !== undefined && typeof v !== "number") throw invalid(`${k} must be a number`, k);
      return v as number | undefined;
    };
    const optStr = (k: string) => {
      const v = b[k];
      if (v !== undefined && typeof v !== "string") throw invalid(`${k} must be a string`, k);
      return v as string | undefined;
    };
    const disputeClose = /^\/_standin\/disputes\/([^/]+)\/close$/.exec(path);
    const eventResend = /^\/_standin\/events\/([^/]+)\/resend$/.exec(path);
    if (method === "GET" && path === "/_standin/health") return { status: 200, body: { ok: true } };
    if (method === "POST" && path === "/_standin/disputes") {
      const target = optStr("payment_intent") ?? optStr("charge");
      if (!target) throw invalid("payment_intent or charge is required", "payment_intent");
      const o: { status?: string; reason?: string; amount?: number } = {};
      const status = optStr("status");
      const reason = optStr("reason");
      const amount = optInt("amount");
      if (status !== undefined) o.status = status;
      if (reason !== undefined) o.reason = reason;
      if (amount !== undefined) o.amount = amount;
      return { status: 200, body: model.createDispute(target, o) };
    }
    if (method === "POST" && disputeClose) {
      return { status: 200, body: model.closeDispute(disputeClose[1]!, optStr("status") as DisputeOutcome) };
    }
    if (method === "POST" && path === "/_standin/refunds") {
      const pi = optStr("payment_intent");
      if (!pi) throw invalid("payment_intent is required", "payment_intent");
      return { status: 200, body: refund(pi, optInt("amount")) };
    }
    if (method === "POST" && eventResend) {
      resendEvent(eventResend[1]!);
      return { status: 200, body: { ok: true } };
    }
    if (method === "GET" && path === "/_standin/webhooks") return { status: 200, body: settings() };
    if (method === "POST" && path === "/_standin/webhooks") {
      const change: Partial<WebhookSettings> = {};
      if (b.url !== undefined) change.url = b.url as string | null;
      if (b.enabled_events !== undefined) change.enabledEvents = b.enabled_events as string[];
      for (const k of [
        "duplicate",
        "reorder",
        "paused",
        "maxAttempts",
        "retryBaseMs",
        "timeoutMs",
        "reorderHoldMs",
      ]) {
        if (b[k] !== undefined) Object.assign(change, { [k]: b[k] });
      }
      try {
        return { status: 200, body: configureWebhooks(change) };
      } catch (err) {
        throw invalid(err instanceof Error ? err.message : String(err));
      }
    }
    if (method === "POST" && path === "/_standin/webhooks/flush") {
      await dispatcher.flush();
      return { status: 200, body: { ok: true, held: dispatcher.heldCount() } };
    }
    if (method === "GET" && path === "/_standin/webhooks/deliveries") {
      return { status: 200, body: { data: dispatcher.deliveries() } };
    }
    if (method === "POST" && path === "/_standin/sign") {
      const payload = optStr("payload");
      if (payload === undefined) throw invalid("payload is required", "payload");
      const o: { timestamp?: number; secret?: string } = {};
      const timestamp = optInt("timestamp");
      const secret = optStr("secret");
      if (timestamp !== undefined) o.timestamp = timestamp;
      if (secret !== undefined) o.secret = secret;
      return { status: 200, body: { header: signPayload(payload, o) } };
    }
    throw new StripeStandinError(404, {
      type: "invalid_request_error",
      message: `Unrecognized control URL (${method}: ${path}).`,
    });
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const startedMs = Date.now();
    const method = req.method ?? "GET";
    const url = new URL(req.url ?? "/", "http://standin.invalid");
    const path = url.pathname;
    const requestId = `req_${randomId(14)}`;
    const stripeVersion = header(req, "stripe-version") ?? apiVersion;
    const baseHeaders: Record<string, string> = { "request-id": requestId, "stripe-version": stripeVersion };
    let status = 500;
    try {
      let raw: string;
      try {
        raw = await readBody(req);
      } catch (err) {
        if (!(err instanceof BodyTooLarge)) throw err;
        status = 413;
        sendJson(
          res,
          status,
          { error: { type: "invalid_request_error", message: "Request body too large." } },
          baseHeaders,
        );
        return;
      }

      if (path.startsWith("/_standin/")) {
        try {
          const out = await control(method, path, raw);
          status = out.status;
          sendJson(res, status, out.body, baseHeaders);
        } catch (err) {
          if (!(err instanceof StripeStandinError)) throw err;
          status = err.status;
          sendJson(res, status, { error: err.error }, baseHeaders);
        }
        return;
      }

      const authError = authFailure(header(req, "authorization"));
      if (authError) {
        status = 401;
        sendJson(
          res,
          status,
          { error: { type: "invalid_request_error", message: authError } },
          {
            ...baseHeaders,
            "www-authenticate": 'Basic realm="Stripe"',
          },
        );
        return;
      }

      let route: Route | undefined;
      let args: string[] = [];
      for (const r of routes) {
        const m = r.method === method ? r.pattern.exec(path) : null;
        if (m) {
          route = r;
          args = m.slice(1).map((s) => decodeURIComponent(s));
          break;
        }
      }
      if (!route) {
        status = 404;
        sendJson(
          res,
          status,
          {
            error: {
              type: "invalid_request_error",
              message: `Unrecognized request URL (${method}: ${path}). Please see https://stripe.com/docs or we can help at https://support.stripe.com/.`,
            },
          },
          baseHeaders,
        );
        return;
      }

      const idemKey = method === "POST" ? header(req, "idempotency-key") : undefined;
      const headers = { ...baseHeaders };
      if (idemKey !== undefined) headers["idempotency-key"] = idemKey;
      let params: Params;
      try {
        params = parseStripeForm(method === "POST" ? raw : url.search.slice(1));
      } catch (err) {
        if (!(err instanceof StripeStandinError)) throw err;
        status = err.status;
        sendJson(res, status, { error: err.error }, headers);
        return;
      }

      const endpoint = `${method} ${path}`;
      const fingerprint = canonical(params);
      if (idemKey !== undefined) {
        if (idemKey.length > 255) {
          status = 400;
          const error = {
            type: "invalid_request_error",
            message: "Idempotency keys must be no longer than 255 characters.",
          };
          sendJson(res, status, { error }, headers);
          return;
        }
        const saved = idempotency.get(idemKey);
        if (saved) {
          const tryOther = `Try using a key other than '${idemKey}' if you meant to execute a different request.`;
          let message: string | null = null;
          if (saved.endpoint !== endpoint) {
            message = `Keys for idempotent requests can only be used for the same endpoint they were first used for ('${saved.endpoint}' vs '${endpoint}'). ${tryOther}`;
          } else if (saved.fingerprint !== fingerprint) {
            message = `Keys for idempotent requests can only be used with the same parameters they were first used with. ${tryOther}`;
          }
          if (message) {
            status = 400;
            sendJson(res, status, { error: { type: "idempotency_error", message } }, headers);
            return;
          }
          status = saved.status;
          sendJson(res, status, saved.body, {
            ...headers,
            "idempotent-replayed": "true",
            "original-request": saved.requestId,
          });
          return;
        }
      }

      const origin: Origin = { requestId, idempotencyKey: idemKey ?? null };
      let body: string;
      let save = true;
      try {
        const out = route.run({ params, args, origin });
        status = out.status ?? 200;
        body = JSON.stringify(out.body, null, 2);
      } catch (err) {
        if (!(err instanceof StripeStandinError)) throw err;
        status = err.status;
        save = err.saved;
        body = JSON.stringify({ error: err.error }, null, 2);
      }
      if (idemKey !== undefined && save) {
        idempotency.set(idemKey, { endpoint, fingerprint, status, body, requestId, savedAtMs: Date.now() });
      }
      sendJson(res, status, body, headers);
    } catch (err) {
      // A bug in the stand-in: say so loudly, and tell the SDK not to retry it.
      status = 500;
      log?.error({ err, method, path }, "stripe stand-in: unexpected error");
      if (!res.headersSent) {
        sendJson(
          res,
          status,
          { error: { type: "api_error", message: "An unknown error occurred in the Stripe stand-in." } },
          {
            ...baseHeaders,
            "stripe-should-retry": "false",
          },
        );
      } else {
        res.destroy();
      }
    } finally {
      log?.debug({ method, path, status, ms: Date.now() - startedMs }, "stripe stand-in request");
    }
  };

  const server = createServer((req, res) => {
    void handle(req, res);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port ?? 0, opts.host ?? "127.0.0.1", () => {
      server.off("error", reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const host = opts.host ?? "127.0.0.1";
  const urlHost = host.includes(":") ? `[${host}]` : host;
  const baseUrl = `http://${urlHost}:${address.port}`;
  log?.warn({ url: baseUrl }, "Stripe stand-in listening: payments are simulated, no real money moves");

  let closing: Promise<void> | null = null;
  return {
    url: baseUrl,
    port: address.port,
    webhookSecret: opts.webhookSecret,
    sdkOptions: { host, port: address.port, protocol: "http" },
    close() {
      closing ??= (async () => {
        await dispatcher.close();
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeAllConnections(); // the SDK's keep-alive sockets would hold close() open
        });
      })();
      return closing;
    },
    setWebhookUrl: (u) => {
      dispatcher.setUrl(u);
    },
    configureWebhooks,
    configure: configureWebhooks,
    webhookSettings: settings,
    pauseWebhooks: () => {
      dispatcher.configure({ paused: true });
    },
    resumeWebhooks: () => {
      dispatcher.configure({ paused: false });
    },
    flushWebhooks: () => dispatcher.flush(),
    deliveries: () => dispatcher.deliveries(),
    events: () => model.events.all().map((e) => structuredClone(e)),
    retrieve: (id) => {
      const found = model.find(id);
      if (found && (found as { object?: string }).object === "charge")
        return model.chargeWithRefunds(found as Stripe.Charge);
      return found === undefined ? undefined : structuredClone(found);
    },
    createDispute: (target, o = {}) => structuredClone(model.createDispute(target, o)),
    closeDispute: (id, outcome) => structuredClone(model.closeDispute(id, outcome)),
    refund,
    resendEvent,
    signPayload,
  };
}
