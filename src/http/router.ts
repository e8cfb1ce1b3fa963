// Owns what every API request goes through, in one place: abort tracking, the body size limit,
// JSON parsing, CORS headers, rate limits, bearer-token authentication, and the error shape.
// Routes only see a plain request and return a status and a body.
import type { HttpRequest, HttpResponse, TemplatedApp } from "uWebSockets.js";
import type { Logger } from "pino";
import type { z } from "zod";
import type { TokenClaims, TokenService } from "../auth/tokens.ts";
import { AppError, type ErrorCode } from "../errors.ts";
import type { CorsPolicy } from "./cors.ts";
import type { Metrics } from "./metrics.ts";
import type { RateLimits } from "./rate-limit.ts";
import { parseJsonObject, type Req, readBody, snapshotRequest } from "./request.ts";
import { type Reply, sendError, sendJson } from "./respond.ts";

export interface RouteContext {
  req: Req;
  body: Record<string, unknown>;
  /** The verified token's claims; set on routes with auth "user". */
  user: TokenClaims | null;
  /** Extra response headers (e.g. Idempotency-Key). */
  headers: Array<[string, string]>;
  /** The body exactly as received; set on routes with body "raw" (signed webhooks). */
  raw: Buffer | null;
}

export interface RouteResult {
  status: number;
  body: unknown;
}

/**
 * What the API document (GET /openapi.json) says of a route. The body and query schemas are the
 * ones the handler parses with, so the document cannot drift from the validation.
 */
export interface RouteDoc {
  summary: string;
  description?: string;
  /** The JSON body the handler parses (routes with a body). */
  body?: z.ZodType;
  /** The query string the handler parses. */
  query?: z.ZodType;
  /** The success answer: status, what it is, and its shape when one is declared. */
  response: { status: number; description: string; schema?: z.ZodType };
  /** Codes this route answers beyond the ones every route of its kind may (see openapi.ts). */
  errors?: ErrorCode[];
  /** Takes an Idempotency-Key header: "optional" (made by the server when absent) or "required". */
  idempotency?: "optional" | "required";
  /** Only for users with role admin (the route checks it; the document says so). */
  admin?: boolean;
}

export interface RouteDef {
  method: "get" | "post" | "put" | "del";
  path: string;
  auth: "none" | "user";
  /** "auth" routes (login, register) get the strict per-IP budget against password guessing. */
  limit?: "auth";
  /** "raw": the handler gets the unparsed bytes in ctx.raw (signature checks need them). */
  body?: "json" | "raw";
  handler(ctx: RouteContext): Promise<RouteResult> | RouteResult;
  /** The route's entry in the API document; every API route has one (a test checks it). */
  doc?: RouteDoc;
}

export interface RouterDeps {
  logger: Logger;
  tokens: TokenService;
  limits: RateLimits;
  cors: CorsPolicy;
  bodyLimitBytes: number;
  metrics?: Metrics;
}

const METHOD_NAMES = { get: "GET", post: "POST", put: "PUT", del: "DELETE" } as const;

/**
 * One row of the server's endpoint table: every API route (behind this pipeline) and every
 * operational endpoint outside it (health, metrics). Tests enumerate it (the fuzz test throws
 * hostile requests at each row), so a route added later is covered without a hand-written list.
 */
export interface Endpoint {
  method: RouteDef["method"];
  path: string;
  auth: RouteDef["auth"];
  body: "none" | "json" | "raw";
  /** False for endpoints answered by their own handler, outside the API pipeline. */
  pipeline: boolean;
  doc?: RouteDoc;
}

export function endpointOf(route: RouteDef): Endpoint {
  const hasBody = route.method === "post" || route.method === "put";
  return {
    method: route.method,
    path: route.path,
    auth: route.auth,
    body: hasBody ? (route.body ?? "json") : "none",
    pipeline: true,
    ...(route.doc ? { doc: route.doc } : {}),
  };
}

export function registerRoute(app: TemplatedApp, route: RouteDef, deps: RouterDeps): void {
  const paramCount = (route.path.match(/\/:/g) ?? []).length;
  const hasBody = route.method === "post" || route.method === "put";
  const meter = deps.metrics?.route(`${METHOD_NAMES[route.method]} ${route.path}`);
  app[route.method](route.path, (res: HttpResponse, uReq: HttpRequest) => {
    const started = meter ? performance.now() : 0;
    const reply: Reply = { res, aborted: false, headers: [] };
    res.onAborted(() => {
      reply.aborted = true;
    });
    // An exception escaping a uWS callback ends the process (every connected socket with it):
    // whatever this synchronous part throws is answered like any other error, never rethrown.
    try {
      accept(route, res, uReq, reply, deps, paramCount, hasBody, () => {
        if (meter) meter.done(reply.status, (performance.now() - started) / 1000);
      });
    } catch (err) {
      // Refused before its body was read (a malformed path, a repeated framing header): whatever
      // the client sent after it on this connection is not trusted to be a new request. Answered
      // with "close" on the next turn, not here: uWS goes on parsing what is already buffered
      // after this handler returns (a request smuggled in a second Content-Length's body would
      // run), and a close asked for inside the parser is forgotten when that next request starts.
      // A request that arrives while this one is pending makes uWS close the connection at once
      // instead (no answer, nothing run); otherwise the 400 goes out and the connection closes.
      reply.close = true;
      setImmediate(() => {
        sendError(reply, err, deps.logger);
        meter?.done(reply.status, (performance.now() - started) / 1000);
      });
    }
  });
}

/** The synchronous part of a request: copy it out of uWS, check the declared size, start the body. */
function accept(
  route: RouteDef,
  res: HttpResponse,
  uReq: HttpRequest,
  reply: Reply,
  deps: RouterDeps,
  paramCount: number,
  hasBody: boolean,
  done: () => void,
): void {
  const req = snapshotRequest(res, uReq, paramCount);
  reply.headers = deps.cors.headersFor(req.headers.get("origin"));
  const declared = Number(req.headers.get("content-length") ?? "0");
  if (hasBody && declared > deps.bodyLimitBytes) {
    sendError(
      reply,
      new AppError("payload_too_large", `request body is larger than ${deps.bodyLimitBytes} bytes`),
      deps.logger,
    );
    return;
  }
  // The body must be subscribed to before this handler returns, or uWS drops it.
  const bodyP = hasBody ? readBody(res, deps.bodyLimitBytes, () => reply.aborted) : Promise.resolve(null);
  bodyP.catch(() => {}); // handled below; avoid an unhandled rejection while we await other things
  void handle(route, req, bodyP, reply, deps)
    .catch((err) => sendError(reply, err, deps.logger))
    .then(done);
}

async function handle(
  route: RouteDef,
  req: Req,
  bodyP: Promise<Buffer | null>,
  reply: Reply,
  deps: RouterDeps,
) {
  await deps.limits.consume(route.limit === "auth" ? "auth" : "ip", req.ip);
  if (route.limit === "auth") await deps.limits.consume("ip", req.ip);
  let user: TokenClaims | null = null;
  if (route.auth === "user") {
    const h = req.headers.get("authorization") ?? "";
    const m = /^Bearer\s+(\S+)$/i.exec(h);
    if (!m) throw new AppError("unauthorized", "an Authorization: Bearer <token> header is required");
    user = await deps.tokens.verify(m[1]!);
    await deps.limits.consume("user", user.sub);
  }
  const raw = await bodyP;
  if (reply.aborted) return;
  if (route.body === "raw") {
    const ctx: RouteContext = { req, body: {}, user, headers: [], raw: raw ?? Buffer.alloc(0) };
    const out = await route.handler(ctx);
    reply.headers = [...(reply.headers ?? []), ...ctx.headers];
    sendJson(reply, out.status, out.body);
    return;
  }
  if (
    raw &&
    raw.length > 0 &&
    !/^application\/json\b/i.test(req.headers.get("content-type") ?? "application/json")
  ) {
    throw new AppError("validation_error", "the request body must be application/json");
  }
  const body = parseJsonObject(raw);
  const ctx: RouteContext = { req, body, user, headers: [], raw: null };
  const out = await route.handler(ctx);
  reply.headers = [...(reply.headers ?? []), ...ctx.headers];
  sendJson(reply, out.status, out.body);
}

/** Preflight answers for every path, and JSON 404s for anything no route matched. */
export function registerFallbacks(app: TemplatedApp, deps: RouterDeps): void {
  const unmatched = deps.metrics?.route("unmatched");
  app.options("/*", (res, uReq) => {
    const reply: Reply = { res, aborted: false };
    res.onAborted(() => {
      reply.aborted = true;
    });
    const origin = uReq.getHeader("origin");
    if (!origin || !deps.cors.allowed(origin)) {
      sendError(reply, new AppError("forbidden", "this origin may not call the API"), deps.logger);
      return;
    }
    reply.headers = deps.cors.preflightHeaders(origin);
    reply.aborted = false;
    res.cork(() => {
      res.writeStatus("204 No Content");
      for (const [k, v] of reply.headers!) res.writeHeader(k, v);
      res.end();
    });
  });
  app.any("/*", (res, uReq) => {
    const started = performance.now();
    const reply: Reply = { res, aborted: false };
    res.onAborted(() => {
      reply.aborted = true;
    });
    reply.headers = deps.cors.headersFor(uReq.getHeader("origin") || undefined);
    const what = `${uReq.getMethod().toUpperCase()} ${uReq.getUrl()}`;
    sendError(reply, new AppError("not_found", `no route for ${what}`), deps.logger);
    unmatched?.done(reply.status, (performance.now() - started) / 1000);
  });
}
