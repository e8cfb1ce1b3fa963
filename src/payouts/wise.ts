// Owns the Wise client: a USD (ABA) recipient account, then per payout a quote, a transfer keyed
// by `customerTransactionId` (Wise answers a repeat with the transfer it already made, so a
// retried or doubled job pays once), funding from the Wise balance, and the transfer's status in
// our words. Plain fetch against WISE_API_URL with the API token as Bearer.
import { createHash } from "node:crypto";
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

export interface WiseOptions {
  apiKey: string;
  profileId: string;
  /** e.g. https://api.wise.com (or the sandbox, or a stand-in's URL). */
  apiUrl: string;
  timeoutMs: number;
  /** What the creator sees on their bank statement. */
  reference?: string;
}

/** Transfers read per page when looking for a payout's lost transfer (Wise's list allows up to 100). */
export const WISE_LIST_PAGE_SIZE = 100;
/** Most pages read before giving up on confirming a payout has no transfer (retried later). */
export const WISE_LIST_PAGES_MAX = 50;
/** The list starts this long before the payout was queued (clock skew between us and Wise). */
export const WISE_LIST_MARGIN_MS = 60 * 60_000;

/** Wise's transfer states, as GET /v1/transfers/{id} answers them, in our words. */
const WISE_STATES: Record<string, TransferState> = {
  incoming_payment_waiting: "processing",
  incoming_payment_initiated: "processing",
  waiting_recipient_input_to_proceed: "processing",
  processing: "processing",
  funds_converted: "processing",
  // Wise's final success state: the money has left Wise for the recipient's bank.
  outgoing_payment_sent: "paid",
  // The money came back after it had been sent (bounced_back, then funds_refunded).
  bounced_back: "returned",
  funds_refunded: "returned",
  charged_back: "returned",
  cancelled: "failed",
};

/** Maps a Wise state; one we do not know stays `processing` (never guess a final state). */
export function wiseTransferState(status: string): TransferState {
  return WISE_STATES[status] ?? "processing";
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[1-8][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/i;
/** Namespace of the name-based UUIDs made from payout ids that are not UUIDs themselves. */
const PAYOUT_NAMESPACE = "6f1c8a52-3d0e-4b7a-9a51-0c2e7d4b9f10";

/**
 * Wise wants a UUID as `customerTransactionId`. A payout id that is one is used as is; any other
 * is turned into a name-based (v5) UUID, the same for the same payout id forever, so the key
 * still identifies exactly one payout.
 */
export function wiseCustomerTransactionId(payoutId: string): string {
  if (UUID_RE.test(payoutId)) return payoutId.toLowerCase();
  const ns = Buffer.from(PAYOUT_NAMESPACE.replace(/-/g, ""), "hex");
  const h = createHash("sha1").update(ns).update(payoutId, "utf8").digest();
  h[6] = (h[6]! & 0x0f) | 0x50;
  h[8] = (h[8]! & 0x3f) | 0x80;
  const x = h.subarray(0, 16).toString("hex");
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

/** Wise's error bodies: `{errors: [{code, message, path}]}`, OAuth's `{error, error_description}`, or Spring's `{error, message}`. */
export function wiseError(body: unknown, status: number): { code: string; message: string } {
  if (isObject(body)) {
    const errors = body.errors;
    if (Array.isArray(errors) && isObject(errors[0])) {
      const e = errors[0];
      const path = typeof e.path === "string" && e.path ? ` (${e.path})` : "";
      return {
        code: typeof e.code === "string" ? e.code : `http_${status}`,
        message: `${typeof e.message === "string" ? e.message : "error"}${path}`,
      };
    }
    if (typeof body.error === "string") {
      const message =
        typeof body.error_description === "string"
          ? body.error_description
          : typeof body.message === "string"
            ? body.message
            : body.error;
      return { code: body.error, message };
    }
  }
  return { code: `http_${status}`, message: "no error body" };
}

interface WiseTransfer {
  id: number;
  status: string;
  targetAccount: number;
  targetValue: number;
  targetCurrency: string;
}

export class WiseClient implements PayoutProvider {
  readonly name = "wise" as const;
  private readonly base: string;

  constructor(private readonly o: WiseOptions) {
    this.base = o.apiUrl.replace(/\/+$/, "");
    if (!/^\d+$/.test(o.profileId)) throw new RangeError("WISE_PROFILE_ID must be the numeric profile id");
  }

  async createRecipient(d: BankDetails): Promise<Recipient> {
    const res = await this.call("POST", "/v1/accounts", "create recipient", {
      currency: d.currency,
      type: "aba",
      profile: Number(this.o.profileId),
      accountHolderName: d.accountHolderName,
      details: {
        legalType: "PRIVATE",
        accountNumber: d.accountNumber,
        abartn: d.routingNumber,
        accountType: "CHECKING",
        ...(d.address
          ? {
              address: {
                country: d.country,
                firstLine: d.address.line1,
                city: d.address.city,
                state: d.address.state,
                postCode: d.address.postalCode,
              },
            }
          : {}),
      },
    });
    if (!isObject(res.body) || typeof res.body.id !== "number")
      throw malformed("wise", "create recipient", res);
    return { providerRecipientId: String(res.body.id) };
  }

  async sendTransfer(req: TransferRequest): Promise<TransferStatus> {
    const targetAccount = Number(req.providerRecipientId);
    if (!Number.isSafeInteger(targetAccount)) {
      throw new PayoutProviderError(
        `wise: recipient id ${req.providerRecipientId} is not a Wise account id`,
        "wise",
        false,
        "invalid_recipient",
      );
    }
    const targetAmount = centsToDecimal(req.amountCents);
    const quote = await this.call("POST", `/v3/profiles/${this.o.profileId}/quotes`, "create quote", {
      sourceCurrency: req.currency,
      targetCurrency: req.currency,
      targetAmount,
      targetAccount,
      payOut: "BANK_TRANSFER",
    });
    if (!isObject(quote.body) || typeof quote.body.id !== "string")
      throw malformed("wise", "create quote", quote);
    const created = await this.call("POST", "/v1/transfers", "create transfer", {
      targetAccount,
      quoteUuid: quote.body.id,
      customerTransactionId: wiseCustomerTransactionId(req.payoutId),
      details: { reference: this.o.reference ?? "3AM payout" },
    });
    return this.finish(this.transferOf(created, "create transfer"), req, created);
  }

  /**
   * Finds the transfer made with this payout's customerTransactionId by listing the profile's
   * transfers created since `since` (GET /v1/transfers, WISE_LIST_PAGES_MAX pages of
   * WISE_LIST_PAGE_SIZE), and finishes it when it was left unfunded.
   */
  async findTransfer(req: TransferRequest, since: Date): Promise<TransferStatus | null> {
    const key = wiseCustomerTransactionId(req.payoutId);
    const start = new Date(since.getTime() - WISE_LIST_MARGIN_MS).toISOString();
    for (let page = 0; page < WISE_LIST_PAGES_MAX; page++) {
      const q = new URLSearchParams({
        profile: this.o.profileId,
        createdDateStart: start,
        limit: String(WISE_LIST_PAGE_SIZE),
        offset: String(page * WISE_LIST_PAGE_SIZE),
      });
      const res = await this.call("GET", `/v1/transfers?${q}`, "list transfers");
      if (!Array.isArray(res.body)) throw malformed("wise", "list transfers", res);
      const match = res.body.find((t) => isObject(t) && t.customerTransactionId === key);
      if (match) return this.finish(this.transferOf({ ...res, body: match }, "list transfers"), req, res);
      if (res.body.length < WISE_LIST_PAGE_SIZE) return null;
    }
    throw new PayoutProviderError(
      `wise: more than ${WISE_LIST_PAGES_MAX * WISE_LIST_PAGE_SIZE} transfers since ${start}; cannot confirm payout ${req.payoutId} has none`,
      "wise",
      true,
      "lookup_incomplete",
    );
  }

  /** Checks a transfer found for a payout is this payout's, funds it if it is not yet, and reads its status. */
  private async finish(
    transfer: WiseTransfer,
    req: TransferRequest,
    res: ProviderResponse,
  ): Promise<TransferStatus> {
    const targetAccount = Number(req.providerRecipientId);
    // A repeated customerTransactionId answers the transfer made the first time: it must be this payout's.
    if (
      transfer.targetAccount !== targetAccount ||
      Math.round(transfer.targetValue * 100) !== req.amountCents ||
      transfer.targetCurrency !== req.currency
    ) {
      throw new PayoutProviderError(
        `wise: transfer ${transfer.id} found for payout ${req.payoutId} does not match it (account or amount differ)`,
        "wise",
        false,
        "idempotency_mismatch",
        res.status,
        res.requestId,
      );
    }
    if (transfer.status === "incoming_payment_waiting") {
      const paid = await this.call(
        "POST",
        `/v3/profiles/${this.o.profileId}/transfers/${transfer.id}/payments`,
        "fund transfer",
        { type: "BALANCE" },
      );
      if (!isObject(paid.body) || typeof paid.body.status !== "string")
        throw malformed("wise", "fund transfer", paid);
      if (paid.body.status !== "COMPLETED") {
        // REJECTED: already funded by a concurrent attempt (fine), or the balance cannot pay.
        const again = await this.getTransfer(String(transfer.id));
        if (again.providerStatus !== "incoming_payment_waiting") return again;
        const code = typeof paid.body.errorCode === "string" ? paid.body.errorCode : "payment_rejected";
        throw new PayoutProviderError(
          `wise fund transfer ${transfer.id}: ${paid.body.status} ${code}`,
          "wise",
          false,
          code,
          paid.status,
          paid.requestId,
        );
      }
      return this.getTransfer(String(transfer.id));
    }
    return this.statusOf(transfer);
  }

  async getTransfer(providerTransferId: string): Promise<TransferStatus> {
    if (!/^\d+$/.test(providerTransferId)) {
      throw new PayoutProviderError(
        `wise: ${providerTransferId} is not a transfer id`,
        "wise",
        false,
        "not_found",
      );
    }
    const res = await this.call("GET", `/v1/transfers/${providerTransferId}`, "get transfer");
    return this.statusOf(this.transferOf(res, "get transfer"));
  }

  private statusOf(t: WiseTransfer): TransferStatus {
    const state = wiseTransferState(t.status);
    return {
      providerTransferId: String(t.id),
      state,
      providerStatus: t.status,
      ...(state === "failed" || state === "returned" ? { failureReason: `wise: ${t.status}` } : {}),
    };
  }

  private transferOf(res: ProviderResponse, what: string): WiseTransfer {
    const b = res.body;
    if (
      !isObject(b) ||
      typeof b.id !== "number" ||
      typeof b.status !== "string" ||
      typeof b.targetAccount !== "number" ||
      typeof b.targetValue !== "number" ||
      typeof b.targetCurrency !== "string"
    ) {
      throw malformed("wise", what, res);
    }
    return b as unknown as WiseTransfer;
  }

  private async call(method: "GET" | "POST", path: string, what: string, body?: unknown) {
    const res = await providerRequest("wise", {
      method,
      url: `${this.base}${path}`,
      headers: { authorization: `Bearer ${this.o.apiKey}` },
      body,
      timeoutMs: this.o.timeoutMs,
    });
    if (res.status < 200 || res.status > 299) {
      const { code, message } = wiseError(res.body, res.status);
      throw httpError("wise", what, res, code, message);
    }
    return res;
  }
}
