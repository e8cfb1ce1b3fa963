// Owns the one small interface money out talks to (Wise and Airwallex behind it): create a
// recipient, send a transfer keyed by our payout id, ask for its status, and read a provider's
// signed webhook as a hint. Errors say whether to retry and keep the provider's request id.

export type PayoutProviderName = "wise" | "airwallex";

/** A US bank account as the creator entered it; never logged or answered whole. */
export interface BankDetails {
  accountHolderName: string;
  country: "US";
  currency: "USD";
  /** 4-17 digits. */
  accountNumber: string;
  /** 9 digits with a valid ABA checksum. */
  routingNumber: string;
  /** The holder's address, sent when given (Wise and Airwallex may ask for it on some routes). */
  address?: BankAddress;
}

export interface BankAddress {
  line1: string;
  city: string;
  /** Two-letter US state code. */
  state: string;
  postalCode: string;
}

export interface Recipient {
  /** The provider's id of the recipient (Wise account id, Airwallex beneficiary id). */
  providerRecipientId: string;
}

export interface TransferRequest {
  /** Our payout id: the provider's idempotency key (Wise customerTransactionId, Airwallex request_id). */
  payoutId: string;
  providerRecipientId: string;
  amountCents: number;
  currency: "USD";
}

/**
 * Where a transfer stands, in our words: `processing` (accepted, money not yet arrived),
 * `paid` (delivered), `failed` (refused or cancelled; nothing left us), `returned` (delivered,
 * then bounced back to us).
 *
 * `failed` and `returned` both say the money is not with the creator; which applies depends on
 * what we already recorded, since a provider's current status does not always carry its history
 * (Wise `funds_refunded` follows a bounce or a cancellation): a payout already `paid` that reads
 * `failed` was returned, and one not yet `paid` that reads `returned` simply failed.
 */
export type TransferState = "processing" | "paid" | "failed" | "returned";

export interface TransferStatus {
  providerTransferId: string;
  state: TransferState;
  /** The provider's own status word (Wise `outgoing_payment_sent`, Airwallex `SENT`, ...). */
  providerStatus: string;
  failureReason?: string;
}

export interface PayoutProvider {
  readonly name: PayoutProviderName;
  createRecipient(details: BankDetails): Promise<Recipient>;
  /**
   * Sends (or, for a payout id already sent, finds again) the transfer. Calling it twice with
   * the same payout id moves money once: that is what makes an at-least-once job pay once.
   */
  sendTransfer(req: TransferRequest): Promise<TransferStatus>;
  getTransfer(providerTransferId: string): Promise<TransferStatus>;
  /**
   * Looks for the transfer made for this payout id (created at or after `since`), when every
   * answer to sendTransfer was lost (5xx, timeouts): the provider may have made it anyway.
   * Resolves with its status (a transfer left half-made, Wise's unfunded one, is finished first),
   * or null when the provider confirms it has none: only then may the payout be declared failed.
   * Throws (retryable) when it cannot tell.
   */
  findTransfer(req: TransferRequest, since: Date): Promise<TransferStatus | null>;
}

/** A provider call that failed: `retryable` for 5xx, timeouts and network errors; not for 4xx. */
export class PayoutProviderError extends Error {
  override name = "PayoutProviderError";
  constructor(
    message: string,
    readonly provider: PayoutProviderName,
    readonly retryable: boolean,
    readonly code: string,
    readonly httpStatus?: number,
    readonly requestId?: string,
  ) {
    super(message);
  }
}

/** What a verified provider webhook says: a hint to confirm with `getTransfer` before money moves. */
export interface PayoutWebhookHint {
  provider: PayoutProviderName;
  /** The delivery's id, for deduplication. */
  deliveryId: string;
  providerTransferId: string;
  /** Our payout id when the event carries it (Wise customerTransactionId, Airwallex request_id). */
  payoutId?: string;
  /** The status word the event claims; never acted on without asking the provider. */
  claimedStatus: string;
}
