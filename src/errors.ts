// Owns the one error type for expected failures: a stable code and details for the client. The
// HTTP status of each code is chosen at the HTTP edge (src/http/errors.ts), not here, so the
// ledger core can reject with the same codes without knowing about HTTP. Anything else thrown is
// a bug and is answered as a bare 500.

export type ErrorCode =
  | "validation_error"
  | "unauthorized"
  | "forbidden"
  | "not_found"
  | "conflict"
  | "email_taken"
  | "username_taken"
  | "idempotency_conflict"
  | "insufficient_funds"
  | "fraud_blocked"
  | "card_declined"
  | "payment_failed"
  | "invalid_signature"
  | "account_suspended"
  | "below_minimum"
  | "payout_method_required"
  | "payout_method_rejected"
  | "payload_too_large"
  | "rate_limited"
  | "unavailable"
  | "internal";

export class AppError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
    this.name = "AppError";
  }

  toJSON(): { error: { code: ErrorCode; message: string; details?: unknown } } {
    return this.details === undefined
      ? { error: { code: this.code, message: this.message } }
      : { error: { code: this.code, message: this.message, details: this.details } };
  }
}

export const isAppError = (e: unknown): e is AppError => e instanceof AppError;
