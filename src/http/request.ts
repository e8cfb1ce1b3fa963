// Owns turning a uWS request into a plain object. uWS requests are only valid synchronously
// inside the handler, so everything a route may need is copied out before the first await; the
// body is then streamed with a hard size limit.
import { visit } from "jsonc-parser";
import type { HttpRequest, HttpResponse } from "uWebSockets.js";
import { AppError } from "../errors.ts";

export interface Req {
  method: string;
  url: string;
  query: URLSearchParams;
  params: string[];
  headers: Map<string, string>;
  ip: string;
}

/**
 * Headers that must come once. uWS answers getHeader() with the first copy and this snapshot
 * keeps the last: given twice with different values, two readers would disagree (which body length,
 * which token, which key), so such a request is refused. Lists (Accept, Cookie...) may repeat.
 */
const SINGLE_HEADERS: ReadonlySet<string> = new Set([
  "host",
  "content-length",
  "transfer-encoding",
  "content-type",
  "authorization",
  "idempotency-key",
  "stripe-signature",
  "origin",
]);

export function snapshotRequest(res: HttpResponse, req: HttpRequest, paramCount: number): Req {
  const headers = new Map<string, string>();
  let count = 0;
  req.forEach((k, v) => {
    count++;
    headers.set(k, v);
  });
  // Fewer names than headers: some header repeats (a count, not a lookup per header).
  if (count !== headers.size) refuseRepeatedHeader(req);
  const params: string[] = [];
  for (let i = 0; i < paramCount; i++) params.push(decodePathSegment(req.getParameter(i) ?? ""));
  const rawQuery = req.getQuery() ?? "";
  let query: URLSearchParams | null = null;
  return {
    method: req.getMethod().toUpperCase(),
    url: req.getUrl(),
    // Parsed on first use: the tip path never reads a query string.
    get query() {
      if (query === null) {
        const parsed = new URLSearchParams(rawQuery);
        for (const [k, v] of parsed) {
          if (k.includes("\0") || v.includes("\0")) throw nulRefused("the query string");
        }
        query = parsed;
      }
      return query;
    },
    params,
    headers,
    ip: Buffer.from(res.getRemoteAddressAsText()).toString(),
  };
}

function refuseRepeatedHeader(req: HttpRequest): void {
  const seen = new Set<string>();
  let repeated: string | null = null;
  req.forEach((k) => {
    if (repeated === null && seen.has(k) && SINGLE_HEADERS.has(k)) repeated = k;
    seen.add(k);
  });
  if (repeated !== null) {
    throw new AppError("validation_error", `the ${repeated} header is given more than once`, {
      header: repeated,
    });
  }
}

/** A percent-encoded path segment; a malformed escape (say "%E0%A4%A") is the client's error. */
function decodePathSegment(raw: string): string {
  let decoded: string;
  try {
    decoded = decodeURIComponent(raw);
  } catch {
    throw new AppError("validation_error", "the path holds a malformed percent-encoding", {
      segment: raw.slice(0, 200),
    });
  }
  if (decoded.includes("\0")) throw nulRefused("the path");
  return decoded;
}

/**
 * No text we keep may hold a NUL: Postgres refuses it in text columns (22021), which would turn
 * the client's mistake into a 500. Refused at the edge, for the path, the query and JSON bodies.
 */
function nulRefused(where: string): AppError {
  return new AppError("validation_error", `${where} holds a NUL character (\\u0000), which no field accepts`);
}

/**
 * How deep a JSON body may nest. Every body of this API is a flat object (a webhook's raw body
 * is not parsed here); the checks below walk a parsed value recursively, and thousands of levels
 * would overflow the stack (a RangeError answered 500), so deeper text is refused before parsing.
 */
export const JSON_MAX_DEPTH = 32;

/** True if `text` opens more than `max` arrays or objects inside each other (strings skipped). */
export function nestsDeeperThan(text: string, max: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      // A backslash escapes the next character (which may be a quote).
      if (c === 0x5c) i++;
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x7b || c === 0x5b) {
      if (++depth > max) return true;
    } else if (c === 0x7d || c === 0x5d) depth--;
  }
  return false;
}

function colons(text: string): number {
  let n = 0;
  for (let i = text.indexOf(":"); i !== -1; i = text.indexOf(":", i + 1)) n++;
  return n;
}

function keyCount(v: unknown): number {
  if (v === null || typeof v !== "object") return 0;
  if (Array.isArray(v)) return v.reduce((n: number, x) => n + keyCount(x), 0);
  let n = 0;
  for (const x of Object.values(v)) n += 1 + keyCount(x);
  return n;
}

/** The first key that appears twice in one object of a JSON text, or null. */
function duplicateKey(text: string): string | null {
  const open: Array<Set<string>> = [];
  let found: string | null = null;
  visit(text, {
    onObjectBegin: () => {
      open.push(new Set());
    },
    onObjectEnd: () => {
      open.pop();
    },
    onObjectProperty: (key) => {
      const keys = open[open.length - 1];
      if (!keys || found !== null) return;
      if (keys.has(key)) found = key;
      keys.add(key);
    },
  });
  return found;
}

function holdsNul(v: unknown): boolean {
  if (typeof v === "string") return v.includes("\0");
  if (v === null || typeof v !== "object") return false;
  if (Array.isArray(v)) return v.some(holdsNul);
  for (const [k, x] of Object.entries(v)) if (k.includes("\0") || holdsNul(x)) return true;
  return false;
}

/**
 * Reads the body, refusing more than `limitBytes` as soon as it is exceeded (413) instead of
 * buffering it. Resolves with null if the client went away.
 */
export function readBody(
  res: HttpResponse,
  limitBytes: number,
  isAborted: () => boolean,
): Promise<Buffer | null> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    res.onData((chunk, isLast) => {
      if (done) return;
      if (isAborted()) {
        done = true;
        return resolve(null);
      }
      size += chunk.byteLength;
      if (size > limitBytes) {
        done = true;
        return reject(new AppError("payload_too_large", `request body is larger than ${limitBytes} bytes`));
      }
      // uWS reuses the chunk's memory after this callback returns: copy it.
      chunks.push(Buffer.from(new Uint8Array(chunk).slice()));
      if (isLast) {
        done = true;
        resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks));
      }
    });
  });
}

/** Parses a JSON object body; anything else is a clear 400. */
export function parseJsonObject(body: Buffer | null): Record<string, unknown> {
  if (!body || body.length === 0) return {};
  let value: unknown;
  const text = body.toString("utf8");
  if (nestsDeeperThan(text, JSON_MAX_DEPTH)) {
    throw new AppError("validation_error", `the request body nests deeper than ${JSON_MAX_DEPTH} levels`);
  }
  try {
    value = JSON.parse(text);
  } catch {
    throw new AppError("validation_error", "the request body is not valid JSON");
  }
  // JSON can only carry a NUL as the escape \u0000 ("u" is lowercase in JSON, "0" has no case),
  // so the walk runs only for bodies that contain it.
  if (text.includes("\\u0000") && holdsNul(value)) throw nulRefused("the request body");
  // A key given twice (`"amount":1000,"amount":1`) is refused: two parsers in a chain may pick
  // different ones. Every key has a colon after it, so only a body with more colons than the
  // parsed value has keys can hold one; only those are scanned.
  if (colons(text) > keyCount(value)) {
    const duplicate = duplicateKey(text);
    if (duplicate !== null) {
      throw new AppError(
        "validation_error",
        `the request body gives the key "${duplicate.slice(0, 100)}" twice`,
      );
    }
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new AppError("validation_error", "the request body must be a JSON object");
  }
  return value as Record<string, unknown>;
}
