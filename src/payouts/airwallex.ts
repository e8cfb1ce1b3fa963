// Owns the Airwallex client: an access token from POST /api/v1/authentication/login (reused
// until shortly before it expires, fetched again on a 401), a LOCAL (ACH) USD beneficiary, a
// transfer keyed by `request_id` (Airwallex refuses a repeat with `request_id_duplicate` and
// names the first transfer, which we then read, so a retried or doubled job pays once), and the
// transfer's status in our words.
import {
  centsToDecimal,
  httpError,
  isObject,
  malformed,
  type ProviderResponse,
  providerRequest,
} from "./provider-http.ts";
import {
  type BankDetails,
  type PayoutProvider,
  PayoutProviderError,
  type Recipient,
  type TransferRequest,
  type TransferState,
  type TransferStatus,
} from "./provider.ts";

export interface AirwallexOptions {
  clientId: string;
  apiKey: string;
  /** e.g. https://api.airwallex.com (or the demo environment, or a stand-in's URL). */
  apiUrl: string;
  timeoutMs: number;
  reference?: string;
  /** Clock, for tests of token expiry. */
  nowMs?: () => number;
}

/** A token is fetched again this long before Airwallex says it expires (clock skew, slow requests). */
export const TOKEN_REFRESH_MARGIN_MS = 60_000;
/** Used when a login answer's expires_at cannot be read (Airwallex documents 30 minutes). */
const TOKEN_DEFAULT_TTL_MS = 30 * 60_000;

/** Airwallex's transfer statuses in our words; FAILED is `returned` once the transfer had been sent. */
const AIRWALLEX_STATES: Record<string, TransferState> = {
  NEW: "processing",
  IN_APPROVAL: "processing",
  // Recalled, rejected or blocked approvals can be edited and resubmitted in the web app, so the
  // transfer may still go out: never final on our side.
  APPROVAL_RECALLED: "processing",
  APPROVAL_REJECTED: "processing",
  APPROVAL_BLOCKED: "processing",
  SCHEDULED: "processing",
  OVERDUE: "processing",
  PROCESSING: "processing",
  // SENT: the money has left Airwallex (the counterpart of Wise's outgoing_payment_sent); a
  // later FAILED is a return.
  SENT: "paid",
  PAID: "paid",
  CANCELLATION_REQUESTED: "processing",
  CANCELLED: "failed",
};

/** Maps an Airwallex status; `dispatched` says the transfer had been sent (its dispatch_date is set). */
export function airwallexTransferState(status: string, dispatched: boolean): TransferState {
  if (status === "FAILED") return dispatched ? "returned" : "failed";
  return AIRWALLEX_STATES[status] ?? "processing";
}

/** Airwallex's error body: `{code, message, source, details}`. */
export function airwallexError(body: unknown, status: number): { code: string; message: string } {
  if (isObject(body) && typeof body.code === "string") {
    const source = typeof body.source === "string" && body.source ? ` (${body.source})` : "";
    return { code: body.code, message: `${typeof body.message === "string" ? body.message : ""}${source}` };
  }
  return { code: `http_${status}`, message: "no error body" };
}

/** "2026-05-12T00:00:00+0000" (Airwallex's form) or any ISO time, to epoch ms; NaN if unreadable. */
export function parseAirwallexTime(s: string): number {
  return Date.parse(s.replace(/([+-]\d{2})(\d{2})$/, "$1:$2"));
}

interface AirwallexTransfer {
  id: string;
  status: string;
  request_id?: string;
  beneficiary_id?: string;
  transfer_amount?: number;
  transfer_currency?: string;
  dispatch_date?: string | null;
  failure_reason?: string | null;
}

export class AirwallexClient implements PayoutProvider {
  readonly name = "airwallex" as const;
  private readonly base: string;
  private readonly now: () => number;
  private token: { value: string; expiresAtMs: number } | null = null;
  /** One login at a time: concurrent calls share it instead of each logging in. */
  private loggingIn: Promise<string> | null = null;

  constructor(private readonly o: AirwallexOptions) {
    this.base = o.apiUrl.replace(/\/+$/, "");
    this.now = o.nowMs ?? Date.now;
  }

  async createRecipient(d: BankDetails): Promise<Recipient> {
    const [first, ...rest] = d.accountHolderName.trim().split(/\s+/);
    const res = await this.call("POST", "/api/v1/beneficiaries/create", "create beneficiary", {
      beneficiary: {
        entity_type: "PERSONAL",
        first_name: first ?? d.accountHolderName,
        last_name: rest.join(" ") || (first ?? d.accountHolderName),
        bank_details: {
          account_currency: d.currency,
          account_name: d.accountHolderName,
          account_number: d.accountNumber,
          bank_country_code: d.country,
          account_routing_type1: "aba",
          account_routing_value1: d.routingNumber,
          local_clearing_system: "ACH",
        },
        ...(d.address
          ? {
              address: {
                country_code: d.country,
                street_address: d.address.line1,
                city: d.address.city,
                state: d.address.state,
                postcode: d.address.postalCode,
              },
            }
          : {}),
      },
      transfer_methods: ["LOCAL"],
    });
    if (!isObject(res.body) || typeof res.body.beneficiary_id !== "string") {
      throw malformed("airwallex", "create beneficiary", res);
    }
    return { providerRecipientId: res.body.beneficiary_id };
  }

  async sendTransfer(req: TransferRequest): Promise<TransferStatus> {
    const amount = centsToDecimal(req.amountCents);
    const res = await this.send("POST", "/api/v1/transfers/create", {
      request_id: req.payoutId,
      beneficiary_id: req.providerRecipientId,
      source_currency: req.currency,
      transfer_currency: req.currency,
      transfer_amount: amount,
      transfer_method: "LOCAL",
      reference: this.o.reference ?? "3AM payout",
      reason: "professional_business_services",
    });
    let transfer: AirwallexTransfer;
    if (res.status >= 200 && res.status <= 299) {
      transfer = this.transferOf(res, "create transfer");
    } else {
      const { code, message } = airwallexError(res.body, res.status);
      if (code !== "request_id_duplicate")
        throw httpError("airwallex", "create transfer", res, code, message);
      // The payout was sent before (a retried or doubled job): read the transfer it made.
      transfer = await this.findByRequestId(req.payoutId, res);
    }
    return this.checked(transfer, req, res);
  }

  /** The transfer listed for this payout's request_id (GET /api/v1/transfers?request_id=), or null when Airwallex lists none. */
  async findTransfer(req: TransferRequest, _since: Date): Promise<TransferStatus | null> {
    const list = await this.listByRequestId(req.payoutId);
    const match = list.items.find((t) => isObject(t) && t.request_id === req.payoutId);
    if (!match) return null;
    return this.checked(this.transferOf({ ...list.res, body: match }, "list transfers"), req, list.res);
  }

  private checked(transfer: AirwallexTransfer, req: TransferRequest, res: ProviderResponse): TransferStatus {
    if (
      (transfer.beneficiary_id !== undefined && transfer.beneficiary_id !== req.providerRecipientId) ||
      (typeof transfer.transfer_amount === "number" &&
        Math.round(transfer.transfer_amount * 100) !== req.amountCents)
    ) {
      throw new PayoutProviderError(
        `airwallex: transfer ${transfer.id} found for payout ${req.payoutId} does not match it (beneficiary or amount differ)`,
        "airwallex",
        false,
        "idempotency_mismatch",
        res.status,
        res.requestId,
      );
    }
    return this.statusOf(transfer);
  }

  private async listByRequestId(requestId: string): Promise<{ res: ProviderResponse; items: unknown[] }> {
    const res = await this.call(
      "GET",
      `/api/v1/transfers?request_id=${encodeURIComponent(requestId)}`,
      "list transfers",
    );
    const items = isObject(res.body) && Array.isArray(res.body.items) ? res.body.items : null;
    if (!items) throw malformed("airwallex", "list transfers", res);
    return { res, items };
  }

  async getTransfer(providerTransferId: string): Promise<TransferStatus> {
    const res = await this.call(
      "GET",
      `/api/v1/transfers/${encodeURIComponent(providerTransferId)}`,
      "get transfer",
    );
    return this.statusOf(this.transferOf(res, "get transfer"));
  }

  private async findByRequestId(requestId: string, dup: ProviderResponse): Promise<AirwallexTransfer> {
    const details = isObject(dup.body) && isObject(dup.body.details) ? dup.body.details : {};
    const named = details.transfer_id ?? details.payment_id ?? details.id;
    if (typeof named === "string" && named) {
      const res = await this.call("GET", `/api/v1/transfers/${encodeURIComponent(named)}`, "get transfer");
      return this.transferOf(res, "get transfer");
    }
    const { res: list, items } = await this.listByRequestId(requestId);
    const match = items.find((t) => isObject(t) && t.request_id === requestId);
    if (!match) {
      // Airwallex says the id is taken but lists no transfer for it yet: ask again later.
      throw new PayoutProviderError(
        `airwallex: request_id ${requestId} is taken but no transfer is listed for it`,
        "airwallex",
        true,
        "request_id_duplicate",
        dup.status,
        dup.requestId,
      );
    }
    return this.transferOf({ ...list, body: match }, "list transfers");
  }

  private statusOf(t: AirwallexTransfer): TransferStatus {
    const state = airwallexTransferState(t.status, Boolean(t.dispatch_date));
    const reason = t.failure_reason
      ? `airwallex: ${t.status}: ${t.failure_reason}`
      : `airwallex: ${t.status}`;
    return {
      providerTransferId: t.id,
      state,
      providerStatus: t.status,
      ...(state === "failed" || state === "returned" ? { failureReason: reason } : {}),
    };
  }

  private transferOf(res: ProviderResponse, what: string): AirwallexTransfer {
    const b = res.body;
    if (!isObject(b) || typeof b.id !== "string" || typeof b.status !== "string") {
      throw malformed("airwallex", what, res);
    }
    return b as unknown as AirwallexTransfer;
  }

  /** An authenticated call that must answer 2xx. */
  private async call(method: "GET" | "POST", path: string, what: string, body?: unknown) {
    const res = await this.send(method, path, body);
    if (res.status < 200 || res.status > 299) {
      const { code, message } = airwallexError(res.body, res.status);
      throw httpError("airwallex", what, res, code, message);
    }
    return res;
  }

  /** An authenticated call, any status; a 401 (token expired or revoked) logs in again once. */
  private async send(method: "GET" | "POST", path: string, body?: unknown): Promise<ProviderResponse> {
    for (let attempt = 0; ; attempt++) {
      const token = await this.accessToken();
      const res = await providerRequest("airwallex", {
        method,
        url: `${this.base}${path}`,
        headers: { authorization: `Bearer ${token}` },
        body,
        timeoutMs: this.o.timeoutMs,
      });
      if (res.status !== 401 || attempt > 0) return res;
      if (this.token?.value === token) this.token = null;
    }
  }

  private accessToken(): Promise<string> {
    if (this.token && this.token.expiresAtMs - TOKEN_REFRESH_MARGIN_MS > this.now()) {
      return Promise.resolve(this.token.value);
    }
    this.loggingIn ??= this.login().finally(() => {
      this.loggingIn = null;
    });
    return this.loggingIn;
  }

  private async login(): Promise<string> {
    const res = await providerRequest("airwallex", {
      method: "POST",
      url: `${this.base}/api/v1/authentication/login`,
      headers: { "x-client-id": this.o.clientId, "x-api-key": this.o.apiKey },
      body: {},
      timeoutMs: this.o.timeoutMs,
    });
    if (res.status < 200 || res.status > 299) {
      const { code, message } = airwallexError(res.body, res.status);
      throw httpError("airwallex", "login", res, code, message);
    }
    if (!isObject(res.body) || typeof res.body.token !== "string" || !res.body.token) {
      throw malformed("airwallex", "login", res);
    }
    const parsed =
      typeof res.body.expires_at === "string" ? parseAirwallexTime(res.body.expires_at) : Number.NaN;
    const expiresAtMs = Number.isFinite(parsed) ? parsed : this.now() + TOKEN_DEFAULT_TTL_MS;
    this.token = { value: res.body.token, expiresAtMs };
    return res.body.token;
  }
}
