// A local stand-in for the slice of Airwallex's API our payouts use, spoken on the wire: login
// with x-client-id / x-api-key for a Bearer token that expires, LOCAL (ACH) USD beneficiaries,
// transfers keyed by request_id (a repeat is refused with `request_id_duplicate` naming the
// first transfer, as Airwallex does), statuses walked on timers, and `payout.transfer.*` webhooks
// signed with the shared secret (x-signature = hex HMAC-SHA256 of x-timestamp + body). State is
// in memory; no real money moves.
import { randomBytes, randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { signAirwallexPayload } from "../payouts/webhooks.ts";
import {
  BodyError,
  decodeSegment,
  DEFAULT_STANDIN_DELAY_MS,
  decimalCents,
  FlakyCalls,
  inspectionBody,
  inspectionPayoutId,
  isObject,
  listenStandin,
  type PayoutWebhookDelivery,
  readJsonBody,
  STANDIN_OBJECTS_MAX,
  StandinHttpError,
  type StandinLog,
  sendJson,
  standinCloser,
  Timers,
  testAccountBehaviour,
  validAba,
  WebhookSender,
} from "./payout-standin-kit.ts";

/** Airwallex's access tokens last 30 minutes. */
export const AIRWALLEX_TOKEN_TTL_MS = 30 * 60_000;
/** Tokens remembered; the oldest are forgotten past this (their holders log in again on 401). */
const TOKENS_MAX = 10_000;
const REQUEST_ID_CHARS_MAX = 64;

export interface AirwallexStandinOptions {
  /** 0 (the default) picks a free port. */
  port?: number;
  host?: string;
  clientId: string;
  apiKey: string;
  /** The webhook secret events are signed with (AIRWALLEX_WEBHOOK_SECRET). */
  webhookSecret: string;
  /** Time from creation to the final status (PAYOUT_STANDIN_DELAY_MS). */
  delayMs?: number;
  /** How long a token from login lasts; default 30 minutes as Airwallex's. */
  tokenTtlMs?: number;
  webhookUrl?: string | null;
  log?: StandinLog;
  webhookRetryBaseMs?: number;
}

export interface AirwallexStandinTransfer {
  id: string;
  requestId: string;
  beneficiaryId: string;
  transferAmount: number;
  status: string;
  history: string[];
}

export interface AirwallexStandin {
  readonly url: string;
  readonly port: number;
  readonly webhookSecret: string;
  setWebhookUrl(url: string | null): void;
  /** Transfers made for a payout id (its request_id); a correct client makes at most one. */
  transfersFor(payoutId: string): AirwallexStandinTransfer[];
  /** Calls to POST /api/v1/transfers/create for a payout id, refused and repeated ones included. */
  transferCallsFor(payoutId: string): number;
  /** Successful logins so far (a client reusing its token logs in once). */
  loginCount(): number;
  /** Forgets every token issued, as if they had expired: the next call with one answers 401. */
  revokeTokens(): void;
  deliveries(): PayoutWebhookDelivery[];
  /** Delivers an event again, same body and id, freshly signed (as a re-triggered event); false if unknown. */
  resendWebhook(eventId: string): boolean;
  flushWebhooks(): Promise<void>;
  /** The x-signature the stand-in would send for `body` at `timestamp` (ms, as a string). */
  signPayload(body: string, timestamp: string): string;
  close(): Promise<void>;
}

interface Beneficiary {
  id: string;
  accountNumber: string;
  body: Record<string, unknown>;
}

interface Transfer {
  id: string;
  requestId: string;
  beneficiaryId: string;
  amount: number;
  reference: string;
  reason: string;
  status: string;
  history: string[];
  dispatchDate: string | null;
  failureReason: string | null;
  createdAt: string;
  updatedAt: string;
  shortReference: string;
}

const TRACE = "x-awx-traceid";

function invalid(source: string, message: string): StandinHttpError {
  return new StandinHttpError(400, {
    code: "validation_failed",
    source,
    message,
    details: { errors: [{ source, code: "011", message }] },
  });
}

/** What a 0005 account's transfer call answers, the transfer made or not (an answer lost on the way). */
const lostAnswer = () =>
  new StandinHttpError(500, {
    code: "internal_error",
    message: "stand-in test account 0005: the transfer was made but this answer is lost",
  });

const awxTime = (ms: number) => `${new Date(ms).toISOString().slice(0, 19)}+0000`;

export async function startAirwallexStandin(opts: AirwallexStandinOptions): Promise<AirwallexStandin> {
  const delayMs = opts.delayMs ?? DEFAULT_STANDIN_DELAY_MS;
  const tokenTtlMs = opts.tokenTtlMs ?? AIRWALLEX_TOKEN_TTL_MS;
  const log = opts.log;
  const tokens = new Map<string, number>();
  const beneficiaries = new Map<string, Beneficiary>();
  const transfers = new Map<string, Transfer>();
  const byRequestId = new Map<string, string>();
  const transferCalls = new Map<string, number>();
  const flaky = new FlakyCalls();
  let logins = 0;
  const timers = new Timers();
  const signPayload = (body: string, timestamp: string) =>
    signAirwallexPayload(body, opts.webhookSecret, timestamp);
  const webhooks = new WebhookSender({
    sign: (body) => {
      const timestamp = String(Date.now());
      return { "x-timestamp": timestamp, "x-signature": signPayload(body, timestamp) };
    },
    log,
    ...(opts.webhookRetryBaseMs !== undefined ? { retryBaseMs: opts.webhookRetryBaseMs } : {}),
  });
  webhooks.setUrl(opts.webhookUrl ?? null);

  const view = (t: Transfer) => ({
    id: t.id,
    request_id: t.requestId,
    short_reference_id: t.shortReference,
    beneficiary_id: t.beneficiaryId,
    source_currency: "USD",
    source_amount: t.amount,
    transfer_currency: "USD",
    transfer_amount: t.amount,
    transfer_method: "LOCAL",
    amount_beneficiary_receives: t.amount,
    amount_payer_pays: t.amount,
    fee_amount: 0,
    fee_currency: "USD",
    fee_paid_by: "PAYER",
    reference: t.reference,
    reason: t.reason,
    status: t.status,
    dispatch_date: t.dispatchDate,
    failure_reason: t.failureReason,
    failure_type: t.failureReason ? "RETURNED" : null,
    created_at: t.createdAt,
    updated_at: t.updatedAt,
  });

  function moveTo(t: Transfer, status: string): void {
    t.status = status;
    t.history.push(status);
    t.updatedAt = new Date().toISOString();
    if (status === "SENT") t.dispatchDate = t.updatedAt.slice(0, 10);
    if (status === "FAILED")
      t.failureReason = t.dispatchDate
        ? "The beneficiary's bank returned the transfer (stand-in test account 0004)"
        : "The transfer failed before it was sent (stand-in test account 0007)";
    notify(t);
  }

  /** A payout.transfer.<status> event carrying the transfer as GET /api/v1/transfers/{id} shows it. */
  function notify(t: Transfer): void {
    const id = randomUUID();
    const body = JSON.stringify({
      id,
      name: `payout.transfer.${t.status.toLowerCase()}`,
      account_id: "acct_standin",
      data: { object: view(t) },
      created_at: new Date().toISOString(),
      version: "2024-09-27",
    });
    webhooks.send(id, body);
  }

  /** SCHEDULED -> PROCESSING -> SENT -> PAID, or for a bounced account SENT -> FAILED. */
  function walk(t: Transfer, bounced: boolean, cancelled = false): void {
    const steps: [number, string][] = cancelled
      ? [
          [delayMs / 3, "PROCESSING"],
          [delayMs / 3, "FAILED"],
        ]
      : bounced
        ? [
            [delayMs / 3, "PROCESSING"],
            [delayMs / 3, "SENT"],
            [delayMs / 2, "FAILED"],
          ]
        : [
            [delayMs / 3, "PROCESSING"],
            [delayMs / 3, "SENT"],
            [delayMs - (2 * delayMs) / 3, "PAID"],
          ];
    timers.chain(steps, (status) => moveTo(t, status));
  }

  function full(): void {
    if (beneficiaries.size >= STANDIN_OBJECTS_MAX || transfers.size >= STANDIN_OBJECTS_MAX) {
      throw new StandinHttpError(500, { code: "internal_error", message: "stand-in full: restart it" });
    }
  }

  function login(req: IncomingMessage): unknown {
    if (req.headers["x-client-id"] !== opts.clientId || req.headers["x-api-key"] !== opts.apiKey) {
      throw new StandinHttpError(401, {
        code: "credentials_invalid",
        message: "Invalid client id or API key",
      });
    }
    const token = randomBytes(24).toString("base64url");
    const expiresAt = Date.now() + tokenTtlMs;
    tokens.set(token, expiresAt);
    if (tokens.size > TOKENS_MAX) tokens.delete(tokens.keys().next().value!);
    logins++;
    return { token, expires_at: awxTime(expiresAt) };
  }

  function createBeneficiary(b: Record<string, unknown>): unknown {
    full();
    const ben = isObject(b.beneficiary) ? b.beneficiary : null;
    if (!ben) throw invalid("beneficiary", "beneficiary is required");
    if (ben.entity_type !== "PERSONAL" && ben.entity_type !== "COMPANY") {
      throw invalid("beneficiary.entity_type", "entity_type must be PERSONAL or COMPANY");
    }
    const bank = isObject(ben.bank_details) ? ben.bank_details : null;
    if (!bank) throw invalid("beneficiary.bank_details", "bank_details is required");
    if (bank.account_currency !== "USD" || bank.bank_country_code !== "US") {
      throw invalid(
        "beneficiary.bank_details.account_currency",
        "The stand-in takes USD accounts in the US only",
      );
    }
    if (typeof bank.account_name !== "string" || bank.account_name.trim().length < 2) {
      throw invalid("beneficiary.bank_details.account_name", "account_name is required");
    }
    if (typeof bank.account_number !== "string" || !/^\d{4,17}$/.test(bank.account_number)) {
      throw invalid("beneficiary.bank_details.account_number", "account_number must be 4-17 digits");
    }
    if (bank.account_routing_type1 !== "aba") {
      throw invalid("beneficiary.bank_details.account_routing_type1", "account_routing_type1 must be aba");
    }
    if (typeof bank.account_routing_value1 !== "string" || !validAba(bank.account_routing_value1)) {
      throw invalid("beneficiary.bank_details.account_routing_value1", "not a valid ABA routing number");
    }
    const methods = b.transfer_methods;
    if (!Array.isArray(methods) || !methods.includes("LOCAL")) {
      throw invalid("transfer_methods", "transfer_methods must include LOCAL");
    }
    const id = randomUUID();
    beneficiaries.set(id, { id, accountNumber: bank.account_number, body: ben });
    return { beneficiary_id: id, beneficiary: ben, nickname: b.nickname ?? null, transfer_methods: methods };
  }

  function createTransfer(b: Record<string, unknown>): unknown {
    const requestId = b.request_id;
    if (typeof requestId !== "string" || requestId.length === 0 || requestId.length > REQUEST_ID_CHARS_MAX) {
      throw invalid("request_id", `request_id is required (1-${REQUEST_ID_CHARS_MAX} characters)`);
    }
    transferCalls.set(requestId, (transferCalls.get(requestId) ?? 0) + 1);
    const existing = byRequestId.get(requestId);
    if (existing !== undefined) {
      const first = transfers.get(existing)!;
      if (testAccountBehaviour(beneficiaries.get(first.beneficiaryId)?.accountNumber ?? "") === "lost") {
        throw lostAnswer();
      }
      throw new StandinHttpError(400, {
        code: "request_id_duplicate",
        source: "request_id",
        message:
          "The request ID has been used on a transfer which was created successfully. Please use a different request ID if you wish to create a separate transfer.",
        details: { transfer_id: existing },
      });
    }
    full();
    const ben = typeof b.beneficiary_id === "string" ? beneficiaries.get(b.beneficiary_id) : undefined;
    if (!ben) throw invalid("beneficiary_id", "beneficiary not found");
    if (b.source_currency !== "USD" || b.transfer_currency !== "USD") {
      throw invalid("transfer_currency", "The stand-in transfers USD from USD only");
    }
    const amount = decimalCents(b.transfer_amount);
    if (amount === null)
      throw invalid("transfer_amount", "transfer_amount must be positive with at most 2 decimals");
    if (b.transfer_method !== "LOCAL") throw invalid("transfer_method", "transfer_method must be LOCAL");
    if (typeof b.reference !== "string" || !b.reference) throw invalid("reference", "reference is required");
    if (typeof b.reason !== "string" || !b.reason) throw invalid("reason", "reason is required");
    const behaviour = testAccountBehaviour(ben.accountNumber);
    if (behaviour === "flaky" && flaky.failNow(requestId)) {
      throw new StandinHttpError(500, {
        code: "internal_error",
        message: "stand-in test account 0002: failing this transfer call",
      });
    }
    if (behaviour === "down") {
      throw new StandinHttpError(503, {
        code: "service_unavailable",
        message: "stand-in test account 0006: the transfer service is down",
      });
    }
    if (behaviour === "refused") {
      throw invalid(
        "beneficiary_id",
        "The beneficiary's bank details were refused (stand-in test account 0003)",
      );
    }
    const now = new Date().toISOString();
    const t: Transfer = {
      id: randomUUID(),
      requestId,
      beneficiaryId: ben.id,
      amount: amount / 100,
      reference: b.reference,
      reason: b.reason,
      status: "SCHEDULED",
      history: ["SCHEDULED"],
      dispatchDate: null,
      failureReason: null,
      createdAt: now,
      updatedAt: now,
      shortReference: `P${randomBytes(5).toString("hex").toUpperCase()}`,
    };
    transfers.set(t.id, t);
    byRequestId.set(requestId, t.id);
    notify(t);
    walk(t, behaviour === "bounced", behaviour === "cancelled");
    // Test account 0005: the transfer is made and goes ahead, but its answer is lost.
    if (behaviour === "lost") throw lostAnswer();
    return view(t);
  }

  async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://standin");
    const parts = url.pathname.split("/").filter(Boolean);
    const method = req.method ?? "GET";
    const payoutId = inspectionPayoutId(method, parts);
    if (payoutId !== null) {
      const list = [...transfers.values()].filter((t) => t.requestId === payoutId);
      return sendJson(res, 200, inspectionBody(list, transferCalls.get(payoutId) ?? 0), TRACE);
    }
    const p = parts.join("/");
    if (method === "POST" && p === "api/v1/authentication/login") {
      await readJsonBody(req);
      return sendJson(res, 201, login(req), TRACE);
    }
    const auth = req.headers.authorization ?? "";
    const token = auth.startsWith("Bearer ") ? auth.slice(7) : "";
    const expiresAt = tokens.get(token);
    if (expiresAt === undefined || expiresAt <= Date.now()) {
      if (expiresAt !== undefined) tokens.delete(token);
      throw new StandinHttpError(401, {
        code: "unauthorized",
        message: "Access denied, authentication failed",
      });
    }
    const body = method === "POST" ? await readJsonBody(req) : {};
    if (!isObject(body)) throw invalid("body", "The request body must be a JSON object");
    if (method === "POST" && p === "api/v1/beneficiaries/create") {
      return sendJson(res, 201, createBeneficiary(body), TRACE);
    }
    if (method === "POST" && p === "api/v1/transfers/create")
      return sendJson(res, 201, createTransfer(body), TRACE);
    if (method === "GET" && p === "api/v1/transfers") {
      const requestId = url.searchParams.get("request_id");
      const items = [...transfers.values()]
        .filter((t) => requestId === null || t.requestId === requestId)
        .slice(0, 100)
        .map(view);
      return sendJson(res, 200, { items, has_more: false }, TRACE);
    }
    if (method === "GET" && parts.length === 4 && p.startsWith("api/v1/transfers/")) {
      const t = transfers.get(decodeSegment(parts[3]!) ?? "");
      if (!t)
        throw new StandinHttpError(404, {
          code: "resource_not_found",
          message: "The transfer was not found",
        });
      return sendJson(res, 200, view(t), TRACE);
    }
    throw new StandinHttpError(404, {
      code: "not_found",
      message: `No handler for ${method} ${url.pathname}`,
    });
  }

  const server = createServer((req, res) => {
    route(req, res).catch((err: unknown) => {
      if (res.headersSent) return;
      if (err instanceof StandinHttpError) return sendJson(res, err.status, err.body, TRACE);
      if (err instanceof BodyError) {
        return sendJson(res, err.status, { code: "invalid_argument", message: err.message }, TRACE);
      }
      log?.error({ err }, "Airwallex stand-in: unexpected error");
      sendJson(res, 500, { code: "internal_error", message: "stand-in error" }, TRACE);
    });
  });
  const { port, url } = await listenStandin(server, opts.port, opts.host);

  const snapshot = (t: Transfer): AirwallexStandinTransfer => ({
    id: t.id,
    requestId: t.requestId,
    beneficiaryId: t.beneficiaryId,
    transferAmount: t.amount,
    status: t.status,
    history: [...t.history],
  });
  return {
    url,
    port,
    webhookSecret: opts.webhookSecret,
    setWebhookUrl: (u) => webhooks.setUrl(u),
    transfersFor: (payoutId) => [...transfers.values()].filter((t) => t.requestId === payoutId).map(snapshot),
    transferCallsFor: (payoutId) => transferCalls.get(payoutId) ?? 0,
    loginCount: () => logins,
    revokeTokens: () => tokens.clear(),
    deliveries: () => webhooks.deliveries(),
    resendWebhook: (id) => webhooks.resend(id),
    flushWebhooks: () => webhooks.flush(),
    signPayload,
    close: standinCloser(server, timers, webhooks),
  };
}
