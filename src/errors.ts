// Owns the one error type for expected failures: a stable code, the HTTP status it maps to, and
// details for the client. Anything else thrown is a bug and is answered as a bare 500.

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
  | "payload_too_large"
  | "rate_limited"
  | "unavailable"
  | "internal";

const STATUS: Record<ErrorCode, number> = {
  validation_error: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  conflict: 409,
  email_taken: 409,
  username_taken: 409,
  idempotency_conflict: 409,
  insufficient_funds: 422,
  fraud_blocked: 422,
  card_declined: 402,
  payment_failed: 402,
  invalid_signature: 400,
  account_suspended: 422,
  payload_too_large: 413,
  rate_limited: 429,
  unavailable: 503,
  internal: 500,
};

export class AppError extends Error {
  readonly status: number;
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
    this.name = "AppError";
    this.status = STATUS[code];
  }

  toJSON(): { error: { code: ErrorCode; message: string; details?: unknown } } {
    return this.details === undefined
      ? { error: { code: this.code, message: this.message } }
      : { error: { code: this.code, message: this.message, details: this.details } };
  }
}

export const isAppError = (e: unknown): e is AppError => e instanceof AppError;
