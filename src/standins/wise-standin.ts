// A local stand-in for the slice of Wise's API our payouts use, spoken on the wire: Bearer API
// token, USD (ABA) recipient accounts, v3 quotes, transfers keyed by customerTransactionId (a
// repeat answers the transfer made the first time), balance funding, transfer states walked on
// timers, and `transfers#state-change` webhooks signed with the stand-in's own RSA key
// (X-Signature-SHA256, base64 RSA-SHA256 over the body). State is in memory; no real money moves.
import { generateKeyPairSync, type KeyObject, randomUUID, sign } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { wiseCustomerTransactionId } from "../payouts/wise.ts";
import {
  BodyError,
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

export interface WiseStandinOptions {
  /** 0 (the default) picks a free port. */
  port?: number;
  host?: string;
  /** The API token accepted as Bearer. */
  apiKey: string;
  /** The numeric profile id accepted in paths and bodies. */
  profileId: string;
  /** Time from funding to outgoing_payment_sent (PAYOUT_STANDIN_DELAY_MS). */
  delayMs?: number;
  webhookUrl?: string | null;
  log?: StandinLog;
  /** Backoff of the first webhook retry (doubles each time). */
  webhookRetryBaseMs?: number;
}

export interface WiseStandinTransfer {
  id: number;
  customerTransactionId: string;
  targetAccount: number;
  targetValue: number;
  status: string;
  /** Every status it went through, oldest first. */
  history: string[];
}

export interface WiseStandin {
  readonly url: string;
  readonly port: number;
  /** PEM (SPKI) of the key the stand-in signs webhooks with: WISE_WEBHOOK_PUBLIC_KEY. */
  readonly publicKeyPem: string;
  setWebhookUrl(url: string | null): void;
  /** Transfers made for a payout id (its customerTransactionId); a correct client makes at most one. */
  transfersFor(payoutId: string): WiseStandinTransfer[];
  /** Calls to POST /v1/transfers for a payout id, refused and repeated ones included. */
  transferCallsFor(payoutId: string): number;
  deliveries(): PayoutWebhookDelivery[];
  /** Delivers a webhook again, same body and X-Delivery-Id (as a provider's redelivery); false if unknown. */
  resendWebhook(deliveryId: string): boolean;
  /** Resolves once every webhook delivery under way has settled (retries included). */
  flushWebhooks(): Promise<void>;
  /** The X-Signature-SHA256 the stand-in would send for `body`. */
  signPayload(body: string): string;
  close(): Promise<void>;
}

interface Account {
  id: number;
  profile: number;
  accountHolderName: string;
  currency: string;
  type: string;
  details: Record<string, unknown>;
  accountNumber: string;
}

interface Quote {
  id: string;
  targetAmount: number;
  targetAccount: number | null;
  usedBy: number | null;
}

interface Transfer {
  id: number;
  targetAccount: number;
  quoteUuid: string;
  customerTransactionId: string;
  status: string;
  history: string[];
  reference: string;
  value: number;
  created: string;
  createdMs: number;
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const TRACE = "x-trace-id";

function notValid(path: string, message: string, code = "NOT_VALID", status = 422): StandinHttpError {
  return new StandinHttpError(status, { errors: [{ code, message, path, arguments: [] }] });
}

function notFound(what: string): StandinHttpError {
  return new StandinHttpError(404, {
    errors: [{ code: "NOT_FOUND", message: `${what} not found`, arguments: [] }],
  });
}

/** What a 0005 account's transfer call answers, the transfer made or not (an answer lost on the way). */
const lostAnswer = () =>
  new StandinHttpError(502, {
    timestamp: new Date().toISOString(),
    status: 502,
    error: "Bad Gateway",
    message: "stand-in test account 0005: the transfer was made but this answer is lost",
    path: "/v1/transfers",
  });

const wiseTime = (d = new Date()) => d.toISOString().replace("T", " ").slice(0, 19);

export async function startWiseStandin(opts: WiseStandinOptions): Promise<WiseStandin> {
  if (!/^\d+$/.test(opts.profileId)) throw new RangeError("profileId must be numeric");
  const profile = Number(opts.profileId);
  const delayMs = opts.delayMs ?? DEFAULT_STANDIN_DELAY_MS;
  const log = opts.log;
  const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const publicKeyPem = publicKey.export({ type: "spki", format: "pem" }).toString();
  const signPayload = (body: string) =>
    sign("sha256", Buffer.from(body, "utf8"), privateKey as KeyObject).toString("base64");

  const accounts = new Map<number, Account>();
  const quotes = new Map<string, Quote>();
  const transfers = new Map<number, Transfer>();
  const byCustomerTx = new Map<string, number>();
  const transferCalls = new Map<string, number>();
  const flaky = new FlakyCalls();
  let nextId = 40_000_000 + Math.floor(Math.random() * 1_000_000);
  const timers = new Timers();
  const webhooks = new WebhookSender({
    sign: (body, deliveryId) => ({ "X-Signature-SHA256": signPayload(body), "X-Delivery-Id": deliveryId }),
    log,
    ...(opts.webhookRetryBaseMs !== undefined ? { retryBaseMs: opts.webhookRetryBaseMs } : {}),
  });
  webhooks.setUrl(opts.webhookUrl ?? null);

  const view = (t: Transfer) => ({
    id: t.id,
    user: 1,
    targetAccount: t.targetAccount,
    sourceAccount: null,
    quote: null,
    quoteUuid: t.quoteUuid,
    status: t.status,
    reference: t.reference,
    rate: 1,
    created: t.created,
    business: null,
    transferRequest: null,
    details: { reference: t.reference },
    hasActiveIssues: false,
    sourceCurrency: "USD",
    sourceValue: t.value,
    targetCurrency: "USD",
    targetValue: t.value,
    customerTransactionId: t.customerTransactionId,
  });

  function moveTo(t: Transfer, status: string): void {
    const previous = t.status;
    t.status = status;
    t.history.push(status);
    notify(t, previous);
  }

  /** A transfers#state-change event; previous_state is null for a transfer just created, as Wise's. */
  function notify(t: Transfer, previous: string | null): void {
    const body = JSON.stringify({
      data: {
        resource: { type: "transfer", id: t.id, profile_id: profile, account_id: t.targetAccount },
        current_state: t.status,
        previous_state: previous,
        occurred_at: new Date().toISOString(),
      },
      subscription_id: "00000000-0000-4000-8000-000000000001",
      event_type: "transfers#state-change",
      schema_version: "2.0.0",
      sent_at: new Date().toISOString(),
    });
    webhooks.send(randomUUID(), body);
  }

  /** Funded: processing -> funds_converted -> outgoing_payment_sent (-> bounced_back -> funds_refunded). */
  function walk(t: Transfer, bounced: boolean, cancelled = false): void {
    const steps: [number, string][] = cancelled
      ? [[delayMs / 2, "cancelled"]]
      : [
          [delayMs / 3, "funds_converted"],
          [delayMs - delayMs / 3, "outgoing_payment_sent"],
          ...(bounced
            ? ([
                [delayMs / 2, "bounced_back"],
                [delayMs / 2, "funds_refunded"],
              ] as [number, string][])
            : []),
        ];
    moveTo(t, "processing");
    timers.chain(steps, (status) => moveTo(t, status));
  }

  function checkProfile(p: string | undefined): void {
    if (p !== opts.profileId) {
      throw new StandinHttpError(403, { error: "forbidden", error_description: "No access to this profile" });
    }
  }

  function full(): void {
    if (
      accounts.size >= STANDIN_OBJECTS_MAX ||
      quotes.size >= STANDIN_OBJECTS_MAX ||
      transfers.size >= STANDIN_OBJECTS_MAX
    ) {
      throw new StandinHttpError(500, {
        error: "Internal Server Error",
        message: "stand-in full: restart it",
      });
    }
  }

  function createAccount(b: Record<string, unknown>): unknown {
    full();
    if (b.currency !== "USD") throw notValid("currency", "Only USD recipients are supported by the stand-in");
    if (b.type !== "aba") throw notValid("type", "Recipient type must be aba for USD");
    if (b.profile !== undefined && Number(b.profile) !== profile)
      throw notValid("profile", "Unknown profile");
    if (typeof b.accountHolderName !== "string" || b.accountHolderName.trim().length < 2) {
      throw notValid("accountHolderName", "Please enter the recipient's full name");
    }
    const d = isObject(b.details) ? b.details : {};
    if (d.legalType !== "PRIVATE" && d.legalType !== "BUSINESS")
      throw notValid("legalType", "Choose PRIVATE or BUSINESS");
    if (typeof d.accountNumber !== "string" || !/^\d{4,17}$/.test(d.accountNumber)) {
      throw notValid("accountNumber", "Please specify a valid account number");
    }
    if (typeof d.abartn !== "string" || !validAba(d.abartn)) {
      throw notValid("abartn", "Please specify a valid ACH routing number");
    }
    if (d.accountType !== "CHECKING" && d.accountType !== "SAVINGS") {
      throw notValid("accountType", "Choose CHECKING or SAVINGS");
    }
    const a: Account = {
      id: nextId++,
      profile,
      accountHolderName: b.accountHolderName,
      currency: "USD",
      type: "aba",
      details: d,
      accountNumber: d.accountNumber,
    };
    accounts.set(a.id, a);
    return {
      id: a.id,
      business: null,
      profile: a.profile,
      accountHolderName: a.accountHolderName,
      currency: a.currency,
      country: "US",
      type: a.type,
      details: { ...d, accountNumber: d.accountNumber },
      active: true,
      ownedByCustomer: false,
    };
  }

  function createQuote(b: Record<string, unknown>): unknown {
    full();
    if (b.sourceCurrency !== "USD" || b.targetCurrency !== "USD") {
      throw notValid("targetCurrency", "The stand-in quotes USD to USD only");
    }
    const amount = decimalCents(b.targetAmount ?? b.sourceAmount);
    if (amount === null)
      throw notValid("targetAmount", "Please specify a positive amount with at most 2 decimals");
    let targetAccount: number | null = null;
    if (b.targetAccount !== undefined && b.targetAccount !== null) {
      if (typeof b.targetAccount !== "number" || !accounts.has(b.targetAccount)) {
        throw notValid("targetAccount", "Recipient account not found");
      }
      targetAccount = b.targetAccount;
    }
    const q: Quote = { id: randomUUID(), targetAmount: amount / 100, targetAccount, usedBy: null };
    quotes.set(q.id, q);
    return {
      id: q.id,
      sourceCurrency: "USD",
      targetCurrency: "USD",
      sourceAmount: q.targetAmount,
      targetAmount: q.targetAmount,
      payOut: typeof b.payOut === "string" ? b.payOut : "BANK_TRANSFER",
      rate: 1,
      createdTime: new Date().toISOString(),
      profile,
      targetAccount,
      rateType: "FIXED",
      status: "PENDING",
      expirationTime: new Date(Date.now() + 30 * 60_000).toISOString(),
    };
  }

  function createTransfer(b: Record<string, unknown>): { status: number; body: unknown } {
    const ctid = b.customerTransactionId;
    if (typeof ctid !== "string" || !UUID_RE.test(ctid)) {
      throw notValid("customerTransactionId", "customerTransactionId must be a UUID");
    }
    const key = ctid.toLowerCase();
    transferCalls.set(key, (transferCalls.get(key) ?? 0) + 1);
    // The idempotency check comes first: a repeat answers the transfer made the first time.
    const existing = byCustomerTx.get(key);
    if (existing !== undefined) {
      const first = transfers.get(existing)!;
      if (testAccountBehaviour(accounts.get(first.targetAccount)?.accountNumber ?? "") === "lost") {
        throw lostAnswer();
      }
      return { status: 200, body: view(first) };
    }
    full();
    if (typeof b.targetAccount !== "number" || !accounts.has(b.targetAccount)) {
      throw notValid("targetAccount", "Recipient account not found");
    }
    const account = accounts.get(b.targetAccount)!;
    const quote = typeof b.quoteUuid === "string" ? quotes.get(b.quoteUuid) : undefined;
    if (!quote) throw notValid("quoteUuid", "Quote not found");
    if (quote.usedBy !== null)
      throw notValid("quoteUuid", "Quote has already been used for a transfer", "QUOTE_ALREADY_USED");
    if (quote.targetAccount !== null && quote.targetAccount !== account.id) {
      throw notValid("targetAccount", "The quote was made for another recipient");
    }
    const behaviour = testAccountBehaviour(account.accountNumber);
    if (behaviour === "flaky" && flaky.failNow(key)) {
      throw new StandinHttpError(500, {
        timestamp: new Date().toISOString(),
        status: 500,
        error: "Internal Server Error",
        message: "stand-in test account 0002: failing this transfer call",
        path: "/v1/transfers",
      });
    }
    if (behaviour === "down") {
      throw new StandinHttpError(503, {
        timestamp: new Date().toISOString(),
        status: 503,
        error: "Service Unavailable",
        message: "stand-in test account 0006: the transfer service is down",
        path: "/v1/transfers",
      });
    }
    if (behaviour === "refused") {
      throw notValid(
        "targetAccount",
        "The recipient's bank details were refused (stand-in test account 0003)",
      );
    }
    const reference =
      isObject(b.details) && typeof b.details.reference === "string" ? b.details.reference : "";
    const t: Transfer = {
      id: nextId++,
      targetAccount: account.id,
      quoteUuid: quote.id,
      customerTransactionId: key,
      status: "incoming_payment_waiting",
      history: ["incoming_payment_waiting"],
      reference,
      value: quote.targetAmount,
      created: wiseTime(),
      createdMs: Date.now(),
    };
    quote.usedBy = t.id;
    transfers.set(t.id, t);
    byCustomerTx.set(key, t.id);
    notify(t, null);
    // Test account 0005: the transfer is made (waiting for funding), but its answer is lost.
    if (behaviour === "lost") throw lostAnswer();
    return { status: 200, body: view(t) };
  }

  function fund(id: number, b: Record<string, unknown>): { status: number; body: unknown } {
    const t = transfers.get(id);
    if (!t) throw notFound("Transfer");
    if (b.type !== "BALANCE") throw notValid("type", "Only BALANCE funding is supported by the stand-in");
    if (t.status !== "incoming_payment_waiting") {
      return {
        status: 200,
        body: {
          type: "BALANCE",
          status: "REJECTED",
          errorCode: "transfer.already_funded",
          errorMessage: null,
        },
      };
    }
    const account = accounts.get(t.targetAccount)!;
    const behaviour = testAccountBehaviour(account.accountNumber);
    walk(t, behaviour === "bounced", behaviour === "cancelled");
    return {
      status: 201,
      body: { type: "BALANCE", status: "COMPLETED", errorCode: null, errorMessage: null },
    };
  }

  async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://standin");
    const parts = url.pathname.split("/").filter(Boolean);
    const method = req.method ?? "GET";
    // Test-only inspection, outside Wise's paths: GET /__standin/payouts/{payoutId}
    const payoutId = inspectionPayoutId(method, parts);
    if (payoutId !== null) {
      const key = wiseCustomerTransactionId(payoutId);
      const list = [...transfers.values()].filter((t) => t.customerTransactionId === key);
      return sendJson(res, 200, inspectionBody(list, transferCalls.get(key) ?? 0), TRACE);
    }
    const auth = req.headers.authorization ?? "";
    if (auth !== `Bearer ${opts.apiKey}`) {
      sendJson(res, 401, { error: "invalid_token", error_description: "Invalid token" }, TRACE);
      return;
    }
    const body = method === "POST" ? await readJsonBody(req) : {};
    if (method === "POST" && !isObject(body)) throw notValid("", "The request body must be a JSON object");
    const b = body as Record<string, unknown>;
    const p = parts.join("/");
    if (method === "POST" && p === "v1/accounts") return sendJson(res, 200, createAccount(b), TRACE);
    if (method === "POST" && parts.length === 4 && p.startsWith("v3/profiles/") && parts[3] === "quotes") {
      checkProfile(parts[2]);
      return sendJson(res, 200, createQuote(b), TRACE);
    }
    if (method === "POST" && p === "v1/transfers") {
      const r = createTransfer(b);
      return sendJson(res, r.status, r.body, TRACE);
    }
    if (
      method === "POST" &&
      parts.length === 6 &&
      parts[0] === "v3" &&
      parts[1] === "profiles" &&
      parts[3] === "transfers" &&
      parts[5] === "payments"
    ) {
      checkProfile(parts[2]);
      const r = fund(Number(parts[4]), b);
      return sendJson(res, r.status, r.body, TRACE);
    }
    if (method === "GET" && p === "v1/transfers") {
      // Wise's transfer list: the profile's transfers created since createdDateStart, newest first.
      checkProfile(url.searchParams.get("profile") ?? undefined);
      const since = Date.parse(url.searchParams.get("createdDateStart") ?? "");
      const limit = Math.min(Math.max(Number(url.searchParams.get("limit") ?? 10) || 10, 1), 100);
      const offset = Math.max(Number(url.searchParams.get("offset") ?? 0) || 0, 0);
      const list = [...transfers.values()]
        .filter((t) => !Number.isFinite(since) || t.createdMs >= since)
        .sort((a, b) => b.id - a.id)
        .slice(offset, offset + limit)
        .map(view);
      return sendJson(res, 200, list, TRACE);
    }
    if (method === "GET" && parts.length === 3 && parts[0] === "v1" && parts[1] === "transfers") {
      const t = /^\d+$/.test(parts[2]!) ? transfers.get(Number(parts[2])) : undefined;
      if (!t) throw notFound("Transfer");
      return sendJson(res, 200, view(t), TRACE);
    }
    throw new StandinHttpError(404, {
      error: "Not Found",
      message: `No handler for ${method} ${url.pathname}`,
    });
  }

  const server = createServer((req, res) => {
    route(req, res).catch((err: unknown) => {
      if (res.headersSent) return;
      if (err instanceof StandinHttpError) return sendJson(res, err.status, err.body, TRACE);
      if (err instanceof BodyError)
        return sendJson(
          res,
          err.status,
          { errors: [{ code: "BAD_REQUEST", message: err.message, arguments: [] }] },
          TRACE,
        );
      log?.error({ err }, "Wise stand-in: unexpected error");
      sendJson(res, 500, { error: "Internal Server Error", message: "stand-in error" }, TRACE);
    });
  });
  const { port, url } = await listenStandin(server, opts.port, opts.host);

  const snapshot = (t: Transfer): WiseStandinTransfer => ({
    id: t.id,
    customerTransactionId: t.customerTransactionId,
    targetAccount: t.targetAccount,
    targetValue: t.value,
    status: t.status,
    history: [...t.history],
  });
  return {
    url,
    port,
    publicKeyPem,
    setWebhookUrl: (u) => webhooks.setUrl(u),
    transfersFor: (payoutId) => {
      const key = wiseCustomerTransactionId(payoutId);
      return [...transfers.values()].filter((t) => t.customerTransactionId === key).map(snapshot);
    },
    transferCallsFor: (payoutId) => transferCalls.get(wiseCustomerTransactionId(payoutId)) ?? 0,
    deliveries: () => webhooks.deliveries(),
    resendWebhook: (id) => webhooks.resend(id),
    flushWebhooks: () => webhooks.flush(),
    signPayload,
    close: standinCloser(server, timers, webhooks),
  };
}
