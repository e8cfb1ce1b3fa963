// Owns the API document (OpenAPI 3.1, GET /openapi.json), built from the server's endpoint table:
// each route's method, path, auth and the zod schemas its handler parses with (RouteDef.doc), the
// error codes with their statuses (errors.ts), Idempotency-Key, Retry-After. Nothing is written
// by hand per route beyond its summary, so the document follows the code.
import { z } from "zod";
import type { ErrorCode } from "../errors.ts";
import { errorStatuses } from "./errors.ts";
import { IDEMPOTENCY_KEY_RULE } from "./idempotency.ts";
import type { Endpoint } from "./router.ts";

export interface OpenApiInput {
  title: string;
  version: string;
  description: string;
  endpoints: readonly Endpoint[];
  /** Success answer shapes by "METHOD /path" (the routes' presenters), where the route declares none. */
  responses?: Readonly<Record<string, z.ZodType>>;
  /** Extra top-level members (x-websocket: the live protocol). */
  extensions?: Record<string, unknown>;
}

const METHOD = { get: "GET", post: "POST", put: "PUT", del: "DELETE" } as const;

/** "GET /api/x/:id" (the key of responses, metrics' route label). */
export const operationKey = (e: Pick<Endpoint, "method" | "path">) => `${METHOD[e.method]} ${e.path}`;

/** OpenAPI's path syntax: /api/users/{userId}. */
export const openApiPath = (path: string) => path.replace(/:([A-Za-z_]+)/g, "{$1}");

/** JSON Schema (draft 2020-12, OpenAPI 3.1's dialect) of what a request may send. */
export function requestSchema(s: z.ZodType): Record<string, unknown> {
  const { $schema: _drop, ...rest } = z.toJSONSchema(s, { io: "input", unrepresentable: "any" }) as Record<
    string,
    unknown
  >;
  return rest;
}

function responseSchema(s: z.ZodType): Record<string, unknown> {
  const { $schema: _drop, ...rest } = z.toJSONSchema(s, { io: "output", unrepresentable: "any" }) as Record<
    string,
    unknown
  >;
  return rest;
}

/** The codes any route of this kind may answer, beyond what it declares itself. */
function commonErrors(e: Endpoint): ErrorCode[] {
  const doc = e.doc;
  const codes: ErrorCode[] = ["rate_limited", "unavailable", "internal"];
  const hasParams = e.path.includes("/:");
  if (e.body !== "none" || doc?.query || hasParams || doc?.idempotency) codes.push("validation_error");
  if (e.body !== "none") codes.push("payload_too_large");
  if (e.auth === "user") codes.push("unauthorized", "forbidden");
  if (hasParams) codes.push("not_found");
  return codes;
}

export function buildOpenApi(input: OpenApiInput): Record<string, unknown> {
  const statusOf = new Map(errorStatuses());
  const paths: Record<string, Record<string, unknown>> = {};
  for (const e of input.endpoints) {
    if (!e.pipeline) continue;
    const doc = e.doc;
    const key = operationKey(e);
    const params: unknown[] = [];
    for (const m of e.path.matchAll(/:([A-Za-z_]+)/g)) {
      const name = m[1]!;
      params.push({
        name,
        in: "path",
        required: true,
        schema: /id$/i.test(name) ? { type: "string", format: "uuid" } : { type: "string" },
      });
    }
    if (doc?.query) {
      const q = requestSchema(doc.query) as { properties?: Record<string, unknown>; required?: string[] };
      for (const [name, schema] of Object.entries(q.properties ?? {})) {
        params.push({ name, in: "query", required: (q.required ?? []).includes(name), schema });
      }
    }
    if (doc?.idempotency) {
      params.push({
        name: "Idempotency-Key",
        in: "header",
        required: doc.idempotency === "required",
        description: `${IDEMPOTENCY_KEY_RULE}. The same key with the same request answers the first result without a second effect; with a different request, 409 idempotency_conflict.${doc.idempotency === "optional" ? " Made by the server when absent." : ""}`,
        schema: { $ref: "#/components/schemas/IdempotencyKey" },
      });
    }
    const responses: Record<string, unknown> = {};
    const ok = doc?.response ?? { status: 200, description: "OK" };
    const okSchema = ok.schema ?? input.responses?.[key];
    responses[String(ok.status)] = {
      description: ok.description,
      ...(doc?.idempotency
        ? { headers: { "Idempotency-Key": { $ref: "#/components/headers/IdempotencyKey" } } }
        : {}),
      content: { "application/json": { schema: okSchema ? responseSchema(okSchema) : { type: "object" } } },
    };
    const byStatus = new Map<number, Set<ErrorCode>>();
    for (const code of [...commonErrors(e), ...(doc?.errors ?? [])]) {
      const st = statusOf.get(code)!;
      if (!byStatus.has(st)) byStatus.set(st, new Set());
      byStatus.get(st)!.add(code);
    }
    for (const [st, codes] of [...byStatus].sort((a, b) => a[0] - b[0])) {
      const list = [...codes];
      responses[String(st)] = {
        description: list.join(", "),
        ...(st === 429 || st === 503
          ? { headers: { "Retry-After": { $ref: "#/components/headers/RetryAfter" } } }
          : {}),
        content: {
          "application/json": {
            schema: {
              allOf: [{ $ref: "#/components/schemas/Error" }],
              properties: { error: { properties: { code: { enum: list } } } },
            },
          },
        },
      };
    }
    const op: Record<string, unknown> = {
      operationId: key.replace(/[^A-Za-z0-9]+/g, "_").replace(/^_|_$/g, ""),
      summary: doc?.summary ?? key,
      ...(doc?.description ? { description: doc.description } : {}),
      tags: [tagOf(e.path)],
      security: e.auth === "user" ? [{ bearer: [] }] : [],
      "x-auth": e.auth === "user" ? (doc?.admin ? "admin" : "user") : "none",
      ...(params.length ? { parameters: params } : {}),
      responses,
    };
    if (e.body === "json" && doc?.body) {
      op.requestBody = {
        required: true,
        content: { "application/json": { schema: requestSchema(doc.body) } },
      };
    } else if (e.body === "raw") {
      op.requestBody = {
        required: true,
        description: "the provider's signed event, verified on the raw bytes",
        content: { "application/json": { schema: { type: "object" } } },
      };
    }
    paths[openApiPath(e.path)] ??= {};
    paths[openApiPath(e.path)]![METHOD[e.method].toLowerCase()] = op;
  }
  const codes = errorStatuses();
  return {
    openapi: "3.1.0",
    info: { title: input.title, version: input.version, description: input.description },
    servers: [{ url: "/" }],
    tags: ["payments", "payouts", "users", "admin", "ai"].map((name) => ({ name })),
    paths,
    components: {
      securitySchemes: {
        bearer: {
          type: "http",
          scheme: "bearer",
          bearerFormat: "JWT",
          description: "The session's access_token from register or login (Supabase-shaped HS256 JWT).",
        },
      },
      schemas: {
        Error: {
          type: "object",
          required: ["error"],
          properties: {
            error: {
              type: "object",
              required: ["code", "message"],
              properties: {
                code: { type: "string", enum: codes.map(([c]) => c) },
                message: { type: "string" },
                details: {},
              },
            },
          },
        },
        IdempotencyKey: { type: "string", pattern: "^[\\x21-\\x7e]{1,255}$" },
      },
      headers: {
        IdempotencyKey: { description: "the key the request ran under", schema: { type: "string" } },
        RetryAfter: {
          description: "seconds to wait before retrying with the same key",
          schema: { type: "integer" },
        },
      },
    },
    "x-error-codes": codes.map(([code, status]) => ({ code, status })),
    ...input.extensions,
  };
}

function tagOf(path: string): string {
  if (path.startsWith("/api/admin/")) return "admin";
  if (path.startsWith("/api/ai/")) return "ai";
  if (path.startsWith("/api/users/")) return "users";
  if (/payout|withdraw|webhooks\//.test(path)) return "payouts";
  return "payments";
}
