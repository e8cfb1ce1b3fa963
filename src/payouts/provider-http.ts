// Owns the one HTTP call both payout clients make: JSON over fetch with a bounded time, and the
// mapping of whatever goes wrong to a PayoutProviderError that says whether to retry (5xx, 429,
// 409-in-progress, timeouts, network) or not (other 4xx), keeping the provider's request id.
import { type PayoutProviderName, PayoutProviderError } from "./provider.ts";

/** Largest answer body read from a provider; a bigger one is a provider fault, retried. */
export const PROVIDER_RESPONSE_MAX_BYTES = 2_000_000;

export interface ProviderResponse {
  status: number;
  /** The parsed JSON body, or null when it was empty or not JSON. */
  body: unknown;
  requestId: string | undefined;
}

export interface ProviderRequest {
  method: "GET" | "POST";
  url: string;
  headers: Record<string, string>;
  body?: unknown;
  timeoutMs: number;
}

/** Headers a provider puts its request/trace id in, first found wins. */
const REQUEST_ID_HEADERS = ["x-trace-id", "x-request-id", "x-awx-traceid", "x-awx-request-id", "request-id"];

export function requestIdOf(headers: Headers): string | undefined {
  for (const h of REQUEST_ID_HEADERS) {
    const v = headers.get(h);
    if (v) return v;
  }
  return undefined;
}

/**
 * Sends one request; answers any HTTP status (the caller maps non-2xx with `httpError`), and
 * throws a retryable PayoutProviderError for timeouts, network failures and unreadable bodies.
 */
export async function providerRequest(
  provider: PayoutProviderName,
  req: ProviderRequest,
): Promise<ProviderResponse> {
  let res: Response;
  try {
    res = await fetch(req.url, {
      method: req.method,
      headers: {
        accept: "application/json",
        ...(req.body !== undefined ? { "content-type": "application/json" } : {}),
        ...req.headers,
      },
      ...(req.body !== undefined ? { body: JSON.stringify(req.body) } : {}),
      signal: AbortSignal.timeout(req.timeoutMs),
    });
  } catch (err) {
    const e = err as Error;
    const timedOut = e.name === "TimeoutError" || e.name === "AbortError";
    throw new PayoutProviderError(
      `${provider} ${req.method} ${new URL(req.url).pathname}: ${timedOut ? `no answer within ${req.timeoutMs} ms` : `network error: ${e.message}`}`,
      provider,
      true,
      timedOut ? "timeout" : "network_error",
    );
  }
  const requestId = requestIdOf(res.headers);
  let text: string;
  try {
    text = await res.text();
  } catch (err) {
    throw new PayoutProviderError(
      `${provider}: the answer body could not be read: ${(err as Error).message}`,
      provider,
      true,
      (err as Error).name === "TimeoutError" ? "timeout" : "network_error",
      res.status,
      requestId,
    );
  }
  if (text.length > PROVIDER_RESPONSE_MAX_BYTES) {
    throw new PayoutProviderError(
      `${provider}: answer larger than ${PROVIDER_RESPONSE_MAX_BYTES} bytes`,
      provider,
      true,
      "response_too_large",
      res.status,
      requestId,
    );
  }
  let body: unknown = null;
  if (text.length > 0) {
    try {
      body = JSON.parse(text);
    } catch {
      body = null;
    }
  }
  return { status: res.status, body, requestId };
}

/**
 * Whether an HTTP failure is worth another attempt: 5xx, 429 (rate limited), 408 and a 409 that
 * says the same request is still in progress are; every other 4xx says the request itself is wrong.
 */
export function isRetryableStatus(status: number, code: string): boolean {
  if (status >= 500 || status === 429 || status === 408) return true;
  if (status === 409) return /in_progress|in-progress|processing|concurrent|locked/i.test(code);
  return false;
}

/** A non-2xx answer as a PayoutProviderError (`code` and `message` as the provider worded them). */
export function httpError(
  provider: PayoutProviderName,
  what: string,
  res: ProviderResponse,
  code: string,
  message: string,
): PayoutProviderError {
  const retryable = isRetryableStatus(res.status, code);
  return new PayoutProviderError(
    `${provider} ${what}: HTTP ${res.status} ${code}: ${message}`,
    provider,
    retryable,
    code,
    res.status,
    res.requestId,
  );
}

/** A 2xx answer whose body is not what the provider documents: a provider fault, retried. */
export function malformed(
  provider: PayoutProviderName,
  what: string,
  res: ProviderResponse,
): PayoutProviderError {
  return new PayoutProviderError(
    `${provider} ${what}: the answer (HTTP ${res.status}) is not the documented shape`,
    provider,
    true,
    "malformed_response",
    res.status,
    res.requestId,
  );
}

export const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

/** Cents to the decimal number both providers take (1234 -> 12.34). */
export function centsToDecimal(amountCents: number): number {
  if (!Number.isSafeInteger(amountCents) || amountCents <= 0) {
    throw new RangeError(`amountCents must be a positive integer, got ${amountCents}`);
  }
  return Number((amountCents / 100).toFixed(2));
}
