// Owns the HTTP status of every expected error code: the one place a domain outcome becomes a
// status, so the core and the services reject with codes and never with HTTP numbers.
import type { ErrorCode } from "../errors.ts";

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
  below_minimum: 422,
  payout_method_required: 422,
  payout_method_rejected: 422,
  payload_too_large: 413,
  rate_limited: 429,
  unavailable: 503,
  internal: 500,
};

/** The HTTP status an AppError with this code is answered with. */
export const httpStatusOf = (code: ErrorCode): number => STATUS[code];

/** Every error code with its status, for the API document. */
export const errorStatuses = (): ReadonlyArray<readonly [ErrorCode, number]> =>
  Object.entries(STATUS) as Array<[ErrorCode, number]>;
