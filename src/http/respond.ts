// Owns writing responses: JSON bodies, the security headers every answer carries (the same set
// Helmet sets by default), and mapping any thrown error to the one error shape.
import type { HttpResponse } from "uWebSockets.js";
import { ZodError } from "zod";
import { isDatabaseUnavailable, isUnstorableText } from "../db/errors.ts";
import { AppError } from "../errors.ts";
import { httpStatusOf } from "./errors.ts";

/** Helmet's default headers (v7/v8), set in one place for every response. */
export const SECURITY_HEADERS: ReadonlyArray<readonly [string, string]> = [
  [
    "Content-Security-Policy",
    "default-src 'self';base-uri 'self';font-src 'self' https: data:;form-action 'self';frame-ancestors 'self';img-src 'self' data:;object-src 'none';script-src 'self';script-src-attr 'none';style-src 'self' https: 'unsafe-inline';upgrade-insecure-requests",
  ],
  ["Cross-Origin-Opener-Policy", "same-origin"],
  ["Cross-Origin-Resource-Policy", "same-origin"],
  ["Origin-Agent-Cluster", "?1"],
  ["Referrer-Policy", "no-referrer"],
  ["Strict-Transport-Security", "max-age=31536000; includeSubDomains"],
  ["X-Content-Type-Options", "nosniff"],
  ["X-DNS-Prefetch-Control", "off"],
  ["X-Download-Options", "noopen"],
  ["X-Frame-Options", "SAMEORIGIN"],
  ["X-Permitted-Cross-Domain-Policies", "none"],
  ["X-XSS-Protection", "0"],
];

const STATUS_TEXT: Record<number, string> = {
  200: "200 OK",
  201: "201 Created",
  204: "204 No Content",
  400: "400 Bad Request",
  401: "401 Unauthorized",
  403: "403 Forbidden",
  404: "404 Not Found",
  405: "405 Method Not Allowed",
  409: "409 Conflict",
  413: "413 Payload Too Large",
  422: "422 Unprocessable Entity",
  429: "429 Too Many Requests",
  500: "500 Internal Server Error",
  503: "503 Service Unavailable",
};

export interface Reply {
  res: HttpResponse;
  /** Set by onAborted: the client is gone and res must not be touched. */
  aborted: boolean;
  headers?: Array<[string, string]>;
  /** The status written, once answered (metrics count it). */
  status?: number;
  /** Close the connection after this answer (the rest of the stream cannot be trusted). */
  close?: boolean;
}

/**
 * The constant headers as one writeHeader call: uWS writes `name: value\r\n`, so the value of
 * the first carries the others already formatted. One call into uWS per response instead of 13.
 */
const [FIRST_HEADER, ...REST_HEADERS] = [
  ...SECURITY_HEADERS,
  ["Content-Type", "application/json; charset=utf-8"],
];
const CONSTANT_HEADER_NAME = FIRST_HEADER![0];
const CONSTANT_HEADER_VALUE = [FIRST_HEADER![1], ...REST_HEADERS.map(([k, v]) => `${k}: ${v}`)].join("\r\n");

export function sendJson(r: Reply, status: number, body: unknown): void {
  if (r.aborted) return;
  const text = JSON.stringify(body);
  r.status = status;
  r.res.cork(() => {
    r.res.writeStatus(STATUS_TEXT[status] ?? `${status}`);
    r.res.writeHeader(CONSTANT_HEADER_NAME, CONSTANT_HEADER_VALUE);
    if (r.headers) for (const [k, v] of r.headers) r.res.writeHeader(k, v);
    r.res.end(text, r.close === true);
  });
  r.aborted = true; // ended: nothing more may be written
}

/** A non-JSON answer (the Prometheus text format), with the same security headers. */
export function sendText(r: Reply, status: number, contentType: string, text: string): void {
  if (r.aborted) return;
  r.status = status;
  r.res.cork(() => {
    r.res.writeStatus(STATUS_TEXT[status] ?? `${status}`);
    for (const [k, v] of SECURITY_HEADERS) r.res.writeHeader(k, v);
    r.res.writeHeader("Content-Type", contentType);
    r.res.end(text);
  });
  r.aborted = true;
}

export interface ErrorLogger {
  error(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

/** The one place an error becomes a response: expected errors by code, anything else a 500. */
/** What a 503 tells the client to wait before the retry (with the same idempotency key). */
const UNAVAILABLE_RETRY_AFTER_S = "1";

export function sendError(r: Reply, err: unknown, logger: ErrorLogger): void {
  const a = errorAnswer(err, logger);
  if (a.retryAfterS) r.headers = [...(r.headers ?? []), ["Retry-After", a.retryAfterS]];
  sendJson(r, a.status, a.body);
}

/** An error's status and body (the HTTP answer, and the WebSocket ack of the same request). */
export function errorAnswer(
  err: unknown,
  logger: ErrorLogger,
): {
  status: number;
  body: { error: { code: string; message: string; details?: unknown } };
  retryAfterS?: string;
} {
  if (isDatabaseUnavailable(err)) {
    logger.warn({ err: (err as Error).message }, "Postgres unavailable; answering 503");
    err = new AppError("unavailable", "the database is unavailable; retry shortly with the same key");
  } else if (isUnstorableText(err)) {
    logger.warn(
      { err: (err as Error).message },
      "the request holds text Postgres cannot store; answering 400",
    );
    err = new AppError(
      "validation_error",
      "the request holds text that cannot be stored (a NUL or an unpaired UTF-16 surrogate escape)",
    );
  }
  if (err instanceof AppError) {
    const retry = (err.details as { retry_after_s?: number } | undefined)?.retry_after_s;
    const status = httpStatusOf(err.code);
    if (err.code === "rate_limited" && retry)
      return { status, body: err.toJSON(), retryAfterS: String(retry) };
    if (err.code === "unavailable")
      return { status, body: err.toJSON(), retryAfterS: UNAVAILABLE_RETRY_AFTER_S };
    return { status, body: err.toJSON() };
  }
  if (err instanceof ZodError) {
    return {
      status: 400,
      body: { error: { code: "validation_error", message: "the request is not valid", details: err.issues } },
    };
  }
  logger.error({ err }, "unexpected error handling a request");
  return { status: 500, body: { error: { code: "internal", message: "internal error" } } };
}
