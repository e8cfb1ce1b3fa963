// Fuzz test of the whole HTTP API (issue 12, "Done means", first bullet). Random paths,
// percent-encodings, query strings, headers, tokens (owner, another user, an admin, forged,
// expired, and valid tokens naming no account) and bodies (JSON with hostile values, deep
// nesting, duplicate keys, prototype keys, control characters, huge and fractional numbers, and
// raw bytes) go to EVERY endpoint of a started server, read from the server's own endpoint
// table (src/http/router.ts Endpoint, HttpServer.endpoints), so a route added later is fuzzed
// without touching this file. Every answer must be a 2xx or a 4xx JSON error of the one shape
// {error:{code,message}} whose status is its code's status; never a 5xx, never silence. A request
// that is refused must change no account (balance, reservation, status, version); a 2xx that may
// move money must keep the books summing to zero. A second property sends batches of 2-8 such
// requests at once (sharing idempotency keys now and then), with the same checks per batch. At the
// end Postgres must equal memory and Object.prototype must be as it was.
//
// Requests are written on raw sockets (tests/helpers/raw-http.ts): fetch would refuse or
// normalise most of them. What the uWS build answers at all bounds what is sent here: header
// names of letters, digits and "-", no control characters in the request line or header values,
// an origin-form target ("/..."), a Host header (see tests/e2e/transport.test.ts for the others).
//
// Budget: FUZZ_RUNS (default 600 single requests, and a tenth as many batches: a few seconds).
// A failure prints the seed and path; replay with
//   FUZZ_SEED=<seed> FUZZ_PATH=<path> npx vitest run --config tests/vitest.config.ts tests/e2e/api-fuzz.test.ts
// and run longer with FUZZ_RUNS=5000. FUZZ_DEBUG=<text> logs every answer to a target containing it.
import { createHmac, randomUUID } from "node:crypto";
import fc from "fast-check";
import { SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ErrorCode } from "../../src/errors.ts";
import { httpStatusOf } from "../../src/http/errors.ts";
import type { Endpoint } from "../../src/http/router.ts";
import { type Api, startApi, TEST_JWT_SECRET } from "../helpers/api.ts";
import { createTestEnv, type TestEnv, waitFor } from "../helpers/env.ts";
import { buildRequest, NoAnswer, type RawAnswer, rawRequest } from "../helpers/raw-http.ts";

const RUNS = Number(process.env.FUZZ_RUNS ?? 600);
const SEED = process.env.FUZZ_SEED === undefined ? undefined : Number(process.env.FUZZ_SEED);
const PATH = process.env.FUZZ_PATH;

let env: TestEnv;
let api: Api;
let port: number;
interface Person {
  id: string;
  token: string;
  username: string;
  email: string;
}
let owner: Person;
let other: Person;
let admin: Person;
const tokens: Record<string, string> = {};

beforeAll(async () => {
  env = await createTestEnv("fuzz");
  api = await startApi(env);
  port = Number(new URL(api.base).port);
  owner = await api.register();
  other = await api.register("creator");
  admin = await api.register();
  await api.core.pool.query("UPDATE users SET role = 'admin' WHERE id = $1", [admin.id]);
  await api.fund(owner.id, 100_000);
  await api.fund(other.id, 5_000);
  const key = new TextEncoder().encode(TEST_JWT_SECRET);
  const sign = (sub: string, expS: number, secret = key) =>
    new SignJWT({ email: "x@example.test", role: "authenticated" })
      .setProtectedHeader({ alg: "HS256", typ: "JWT" })
      .setSubject(sub)
      .setAudience("authenticated")
      .setIssuedAt()
      .setExpirationTime(expS)
      .sign(secret);
  const now = Math.floor(Date.now() / 1000);
  tokens.owner = owner.token;
  tokens.other = other.token;
  tokens.admin = admin.token;
  tokens.expired = await sign(owner.id, now - 60);
  tokens.forged = await sign(
    owner.id,
    now + 3600,
    new TextEncoder().encode("another-secret-another-secret-0123"),
  );
  tokens.noAccount = await sign(randomUUID(), now + 3600);
  tokens.notUuid = await sign("__proto__", now + 3600);
  tokens.algNone = `${Buffer.from('{"alg":"none","typ":"JWT"}').toString("base64url")}.${Buffer.from(
    JSON.stringify({ sub: owner.id, aud: "authenticated", exp: now + 3600 }),
  ).toString("base64url")}.`;
});
afterAll(async () => {
  await api?.close();
  await env?.cleanup();
});

// --- generators ------------------------------------------------------------------------------

/** Percent-encodes what this uWS build would not carry raw (controls, space, DEL); the rest as is. */
const encodeLoose = (s: string) =>
  Array.from(Buffer.from(s, "utf8"))
    .map((b) =>
      b <= 0x20 || b === 0x7f || b === 0x25 || b === 0x3f || b === 0x23 || b === 0x2f
        ? `%${b.toString(16).toUpperCase().padStart(2, "0")}`
        : String.fromCharCode(b),
    )
    .join("");

const MALFORMED_ESCAPES = [
  "%",
  "%zz",
  "%E0%A4%A",
  "%C0%80",
  "%ED%A0%80",
  "%F4%90%80%80",
  "%00",
  "%2F",
  "%2e%2e",
  "..",
  ".",
  "%u0041",
  "%%41",
  "%FF%FE",
  "\u00e9",
];
const segment = fc.oneof(
  fc.constantFrom(...MALFORMED_ESCAPES),
  fc.string({ unit: "binary", maxLength: 12 }).map((s) => {
    try {
      return encodeURIComponent(s);
    } catch {
      return encodeLoose(s); // an unpaired surrogate: encodeURIComponent throws
    }
  }),
  fc.string({ unit: "binary", maxLength: 12 }).map(encodeLoose),
  fc.stringMatching(/^[A-Za-z0-9_]{0,40}$/),
  fc.constant("x".repeat(3000)),
);

const ids = () => [
  owner.id,
  other.id,
  admin.id,
  owner.id.toUpperCase(),
  "00000000-0000-0000-0000-000000000000",
];
const paramValue = (name: string) =>
  name.toLowerCase().includes("id")
    ? fc.oneof(fc.constantFrom(...ids()), fc.uuid(), segment)
    : name.toLowerCase().includes("username")
      ? fc.oneof(fc.constantFrom(other.username, owner.username, admin.username), segment)
      : segment;

const queryPart = fc.oneof(
  fc.constantFrom(
    "__proto__",
    "constructor",
    "limit",
    "since",
    "user_id",
    "rule",
    "severity",
    "from",
    "to",
    "fix",
    "%00",
    "%E0%A4%A",
  ),
  fc.string({ unit: "binary", maxLength: 10 }).map(encodeLoose),
);
const queryValue = fc.oneof(
  queryPart,
  fc.constantFrom(
    "1e400",
    "-1",
    "0",
    "1000",
    "1001",
    "0000-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "2026-01-01T00:00:00Z",
    "%2B",
    "",
  ),
  // The users exist only once beforeAll ran: read them when a value is drawn.
  fc.constant(null).chain(() => fc.constantFrom(...ids())),
);
const query = fc.oneof(
  { weight: 2, arbitrary: fc.constant("") },
  {
    weight: 3,
    arbitrary: fc
      .array(fc.tuple(queryPart, fc.option(queryValue, { nil: undefined })), {
        minLength: 1,
        maxLength: 5,
      })
      .map((pairs) => `?${pairs.map(([k, v]) => (v === undefined ? k : `${k}=${v}`)).join("&")}`),
  },
  {
    weight: 1,
    arbitrary: fc.constantFrom("?", "?&&", "?=", "?a=1&a=2", "?limit=1&limit=1000"),
  },
);

/** A JSON value as text, so that what JSON.stringify cannot write (1e400, -0, duplicate keys) is sent. */
const hostileNumber = fc.oneof(
  fc.constantFrom(
    "1e400",
    "-1e400",
    "1e-400",
    "-0",
    "0",
    "1",
    "5",
    "5.00",
    "5.001",
    "0.1",
    "0.005",
    "-5",
    "-0.01",
    "1e21",
    "1E2",
    "9007199254740993",
    "123456789012345678901234567890",
    "4.999999999999999999",
    "1000000",
    "100000000000",
    "2.675",
    "1e308",
  ),
  fc.double({ noNaN: true, noDefaultInfinity: true }).map((d) => JSON.stringify(d)),
  fc.integer().map(String),
);
const hostileString = fc.oneof(
  fc.string({ unit: "binary", maxLength: 30 }).map((s) => JSON.stringify(s)),
  fc.string({ unit: "grapheme", maxLength: 30 }).map((s) => JSON.stringify(s)),
  fc.constantFrom(
    '"\\u0000"',
    '"a\\u0000b"',
    '"\\ud800"',
    '"\\udfff\\ud800"',
    '"\\u202e\\u200b"',
    '"<script>alert(1)</script>"',
    '"\' OR 1=1 --"',
    '"%00"',
    '"__proto__"',
    '"constructor"',
    '"pm_card_visa"',
    '"pm_card_chargeDeclined"',
    '""',
    '" "',
    `"${"a".repeat(5000)}"`,
    '"inj\\r\\nSet-Cookie: pwned=1"',
  ),
);
const nested = fc
  .tuple(fc.constantFrom("[", '{"a":', '{"__proto__":'), fc.integer({ min: 10, max: 6000 }), fc.boolean())
  .map(([open, depth, nul]) => {
    const close = open === "[" ? "]" : "}";
    return open.repeat(depth) + (nul ? '"\\u0000"' : "1") + close.repeat(depth);
  });
const hostileValue: fc.Arbitrary<string> = fc.oneof(
  { weight: 4, arbitrary: hostileNumber },
  { weight: 4, arbitrary: hostileString },
  {
    weight: 2,
    arbitrary: fc.constantFrom("null", "true", "false", "[]", "{}", "[1,2]", '{"amount":5}'),
  },
  {
    weight: 1,
    arbitrary: fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)),
  },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      '{"__proto__":{"polluted":1}}',
      '{"constructor":{"prototype":{"polluted":1}}}',
      '{"toString":1,"valueOf":2,"hasOwnProperty":3}',
    ),
  },
  { weight: 1, arbitrary: nested },
);

/** A valid value for each field name the API knows: mutations of valid bodies reach the deep checks. */
const validFor = (field: string): fc.Arbitrary<string> => {
  const j = (...v: unknown[]) => fc.constantFrom(...v.map((x) => JSON.stringify(x)));
  switch (field) {
    case "from_user_id":
    case "user_id":
      return j(owner.id, other.id, owner.id.toUpperCase());
    case "to_creator_username":
      return j(other.username, owner.username);
    case "amount":
      return j(...api.core.config.TIP_AMOUNTS_USD, 5, 10.5, 100, 1000);
    case "idempotency_key":
      return fc.stringMatching(/^[!-~]{1,40}$/).map((s) => JSON.stringify(s));
    case "payment_method_id":
      return j("pm_card_visa", "pm_card_chargeDeclined", "pm_x");
    case "email":
      return fc.oneof(
        j(owner.email, other.email),
        fc.uuid().map((u) => JSON.stringify(`${u}@example.test`)),
      );
    case "password":
      return j("securepass123", "short", "x".repeat(129));
    case "username":
      return fc.stringMatching(/^[a-z0-9_]{3,30}$/).map((s) => JSON.stringify(s));
    case "display_name":
    case "bio":
    case "reason":
      return j("Name", "  ", null);
    case "avatar_url":
      return j("https://example.test/a.png", "javascript:alert(1)", null);
    case "role":
      return j("viewer", "creator", "admin");
    case "from":
    case "to":
      return j("2026-01-01T00:00:00Z", "0000-01-01T00:00:00Z", "yesterday");
    case "fix":
      return j(true, false, "true");
    default:
      return hostileValue;
  }
};
const FIELDS = [
  "from_user_id",
  "user_id",
  "to_creator_username",
  "amount",
  "idempotency_key",
  "payment_method_id",
  "email",
  "password",
  "username",
  "display_name",
  "bio",
  "avatar_url",
  "role",
  "reason",
  "from",
  "to",
  "fix",
];
const member = fc
  .tuple(
    fc.oneof(
      { weight: 6, arbitrary: fc.constantFrom(...FIELDS) },
      {
        weight: 1,
        arbitrary: fc.constantFrom("__proto__", "constructor", "prototype", "", "\u0000"),
      },
      { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 8 }) },
    ),
    fc.boolean(),
  )
  .chain(([k, valid]) => (valid ? validFor(k) : hostileValue).map((v) => `${JSON.stringify(k)}:${v}`));
const jsonObject = fc
  .tuple(fc.array(member, { maxLength: 7 }), fc.boolean())
  .map(([members, dup]) => `{${(dup && members.length ? [...members, members[0]!] : members).join(",")}}`);

type Body = { kind: "none" } | { kind: "bytes"; bytes: Buffer; contentType: string | null };
const asBody = (text: string, contentType: string | null = "application/json"): Body => ({
  kind: "bytes",
  bytes: Buffer.from(text, "utf8"),
  contentType,
});
const body: fc.Arbitrary<Body> = fc.oneof(
  { weight: 8, arbitrary: jsonObject.map((t) => asBody(t)) },
  { weight: 2, arbitrary: hostileValue.map((t) => asBody(t)) },
  { weight: 1, arbitrary: nested.map((t) => asBody(t)) },
  {
    weight: 1,
    arbitrary: fc.uint8Array({ maxLength: 200 }).map((b) => ({
      kind: "bytes" as const,
      bytes: Buffer.from(b),
      contentType: "application/json",
    })),
  },
  {
    weight: 1,
    arbitrary: fc
      .tuple(
        jsonObject,
        fc.constantFrom(
          "text/plain",
          "application/x-www-form-urlencoded",
          "application/json; charset=utf-16",
          "",
          "application/jsonx",
          null,
        ),
      )
      .map(([t, ct]) => asBody(t, ct)),
  },
  {
    weight: 1,
    arbitrary: fc
      .constantFrom(
        "",
        " ",
        "\ufeff{}",
        "{}garbage",
        '{"a":1}{"b":2}',
        "[]",
        "null",
        `{"k":"${"x".repeat(20_000)}"}`,
      )
      .map((t) => asBody(t)),
  },
  { weight: 1, arbitrary: fc.constant<Body>({ kind: "none" }) },
);

/**
 * A valid body for the routes there are today, keyed "method path": mutating a valid body reaches
 * the checks behind the schema (ownership, the ledger, Stripe). A route without one is fuzzed with
 * the generic bodies only.
 */
const TEMPLATES: Record<string, () => Record<string, unknown>> = {
  "post /api/payments/tip": () => ({
    from_user_id: owner.id,
    to_creator_username: other.username,
    amount: api.core.config.TIP_AMOUNTS_USD[0],
  }),
  "post /api/payments/intent": () => ({ user_id: owner.id, amount: 5 }),
  "post /api/payments/credits/purchase": () => ({
    user_id: owner.id,
    amount: 5,
    payment_method_id: "pm_card_visa",
  }),
  "post /api/users/register": () => {
    const tag = randomUUID().replaceAll("-", "").slice(0, 12);
    return {
      email: `f${tag}@example.test`,
      username: `f_${tag}`,
      display_name: "Fuzz",
      password: "securepass123",
    };
  },
  "post /api/users/login": () => ({
    email: owner.email,
    password: "securepass123",
  }),
  "put /api/users/:userId": () => ({ bio: "fuzz" }),
  "post /api/users/:userId/upgrade": () => ({}),
  "post /api/admin/users/:userId/suspend": () => ({ reason: "fuzz" }),
  "post /api/admin/users/:userId/unsuspend": () => ({}),
  "post /api/payments/reconcile": () => ({ fix: false }),
  "post /api/payments/webhook": () => ({
    id: `evt_${randomUUID().replaceAll("-", "")}`,
    object: "event",
    type: "payment_intent.succeeded",
    created: Math.floor(Date.now() / 1000),
    data: {
      object: {
        id: `pi_${randomUUID().replaceAll("-", "")}`,
        object: "payment_intent",
        amount: 500_000,
        amount_received: 500_000,
        currency: "usd",
        status: "succeeded",
        metadata: { user_id: owner.id },
      },
    },
  }),
};

type Mutation =
  | { op: "replace"; at: number; value: string }
  | { op: "drop"; at: number }
  | { op: "extra"; key: string; value: string }
  | { op: "duplicate"; at: number; value: string };
const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      op: fc.constant("replace" as const),
      at: fc.nat(),
      value: hostileValue,
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ op: fc.constant("drop" as const), at: fc.nat() }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant("extra" as const),
      key: fc.constantFrom("idempotency_key", "__proto__", "constructor", "role", "balance", "amount_cents"),
      value: hostileValue,
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant("duplicate" as const),
      at: fc.nat(),
      value: hostileValue,
    }),
  },
);

/**
 * No key (the server makes one), a fresh one (undefined), or one of two shared keys, so that
 * replays and conflicts (the same key with another body), also concurrent ones, come up.
 */
const idempotencyKeyChoice: fc.Arbitrary<string | null | undefined> = fc.oneof(
  fc.constant(null),
  fc.constant(undefined),
  fc.constantFrom("fuzz-shared-key-1", "fuzz-shared-key-2"),
);

/** The template's members as JSON text, changed by 0-2 mutations (0: the valid body itself). */
const mutatedTemplate = (template: () => Record<string, unknown>) =>
  fc.tuple(fc.array(mutation, { maxLength: 2 }), idempotencyKeyChoice).map(([mutations, key]) => {
    const members: Array<[string, string]> = Object.entries(template()).map(([k, v]) => [
      k,
      JSON.stringify(v),
    ]);
    if (key !== null) members.push(["idempotency_key", JSON.stringify(key ?? randomUUID())]);
    for (const m of mutations) {
      const at = members.length ? ("at" in m ? m.at % members.length : 0) : 0;
      if (m.op === "replace" && members.length) members[at] = [members[at]![0], m.value];
      else if (m.op === "drop" && members.length) members.splice(at, 1);
      else if (m.op === "extra") members.push([m.key, m.value]);
      else if (m.op === "duplicate" && members.length) members.push([members[at]![0], m.value]);
    }
    return `{${members.map(([k, v]) => `${JSON.stringify(k)}:${v}`).join(",")}}`;
  });

/** Stripe's signature over a raw body, with the server's own webhook secret (or a wrong one). */
function stripeSignature(raw: Buffer, right: boolean): string {
  const t = Math.floor(Date.now() / 1000);
  const secret = right ? api.stripe.webhookSecret : "whsec_wrong";
  const mac = createHmac("sha256", secret).update(`${t}.`).update(raw).digest("hex");
  return `t=${t},v1=${mac}`;
}

const bodyFor = (endpoint: Endpoint | null): fc.Arbitrary<Body> => {
  const template = endpoint ? TEMPLATES[`${endpoint.method} ${endpoint.path}`] : undefined;
  if (!template) return body;
  return fc.oneof(
    { weight: 3, arbitrary: mutatedTemplate(template).map((t) => asBody(t)) },
    { weight: 2, arbitrary: body },
  );
};

const tokenChoice = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom("owner", "other", "admin") },
  {
    weight: 1,
    arbitrary: fc.constantFrom("none", "expired", "forged", "noAccount", "notUuid", "algNone", "garbage"),
  },
);
const authorization = (choice: string): string | null => {
  if (choice === "none") return null;
  if (choice === "garbage") return "Bearer not.a.token";
  return `Bearer ${tokens[choice]}`;
};

const HOP_BY_HOP = /^(host|content-length|transfer-encoding|connection|upgrade|expect|te|keep-alive)$/i;
const headerName = fc.oneof(
  fc.constantFrom(
    "content-type",
    "idempotency-key",
    "origin",
    "authorization",
    "stripe-signature",
    "x-forwarded-for",
    "accept",
    "content-encoding",
    "cookie",
  ),
  fc.stringMatching(/^[A-Za-z0-9-]{1,20}$/).filter((n) => !HOP_BY_HOP.test(n)),
);
const headerValue = fc.oneof(
  fc.stringMatching(/^[ -~\t]{0,60}$/).map((s) => s.trim()),
  fc
    .string({ unit: "grapheme", maxLength: 20 })
    .map((s) => [...s].filter((c) => c.charCodeAt(0) > 0x1f && c !== "\u007f").join("")),
  fc.constantFrom("k".repeat(300), "inj1", "application/json", "http://evil.test", "t=1,v1=00"),
);
const extraHeaders = fc.array(fc.tuple(headerName, headerValue), {
  maxLength: 6,
});

const METHODS = {
  get: "GET",
  post: "POST",
  put: "PUT",
  del: "DELETE",
} as const;

interface FuzzRequest {
  endpoint: Endpoint | null;
  method: string;
  target: string;
  token: string;
  headers: Array<[string, string]>;
  body: Body;
  /** Raw-body routes (Stripe's webhook): signed with the server's secret, a wrong one, or not. */
  signature: "right" | "wrong" | "none";
  /** Send the body chunked (Transfer-Encoding) in pieces of this size, else with Content-Length. */
  chunk: number | undefined;
}

const requestFor = (endpoint: Endpoint | null): fc.Arbitrary<FuzzRequest> => {
  const path: fc.Arbitrary<string> =
    endpoint === null
      ? fc.oneof(
          fc.array(segment, { minLength: 0, maxLength: 4 }).map((s) => `/api/${s.join("/")}`),
          fc.constantFrom(
            "/",
            "/api",
            "/api/",
            "//api/users",
            "/API/USERS/LOGIN",
            "/healthz#x",
            "/%2e%2e/healthz",
          ),
        )
      : fc
          .tuple(
            ...endpoint.path
              .split("/")
              .map((s) => (s.startsWith(":") ? paramValue(s.slice(1)) : fc.constant(s))),
          )
          .chain((parts) =>
            fc.oneof(
              { weight: 12, arbitrary: fc.constant(parts.join("/")) },
              {
                weight: 1,
                arbitrary: fc.constantFrom(
                  `${parts.join("/")}/`,
                  `${parts.join("/")}/extra`,
                  `/${parts.join("/")}`,
                ),
              },
            ),
          );
  const method =
    endpoint === null
      ? fc.constantFrom("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")
      : fc.oneof(
          { weight: 9, arbitrary: fc.constant(METHODS[endpoint.method]) },
          {
            weight: 1,
            arbitrary: fc.constantFrom("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"),
          },
        );
  return fc
    .record({
      path,
      query,
      method,
      token: tokenChoice,
      headers: extraHeaders,
      body: bodyFor(endpoint),
      signature: fc.constantFrom("right", "wrong", "none"),
      chunk: fc.option(fc.integer({ min: 1, max: 64 }), { nil: undefined, freq: 6 }),
      bodyOnRead: fc.nat(5),
    })
    .map((r) => {
      const req: FuzzRequest = {
        endpoint,
        method: r.method,
        target: r.path + r.query,
        token: r.token,
        headers: r.headers,
        // A GET or OPTIONS carries a body now and then (uWS reads it; no route may choke on it).
        body:
          (r.method === "GET" || r.method === "OPTIONS") && r.bodyOnRead !== 0
            ? ({ kind: "none" } as Body)
            : r.body,
        signature: endpoint?.body === "raw" ? r.signature : "none",
        chunk: r.chunk,
      };
      // fast-check prints a counterexample with this: readable, and short for huge bodies.
      Object.defineProperty(req, fc.toStringMethod, {
        value: () => describeRequest(req),
      });
      return req;
    });
};

// --- the property ----------------------------------------------------------------------------

type Books = Map<string, string>;
/** Every account in memory: balance, reserved, status and version, as one comparable string each. */
function books(): Books {
  const out: Books = new Map();
  for (const [id, a] of api.core.ledger.snapshot()) {
    out.set(id, `${a.balanceCents}/${a.reservedCents}/${a.debtCents}/${a.status}/v${a.version}`);
  }
  return out;
}
function sumOfBalances(): number {
  let sum = 0;
  for (const a of api.core.ledger.snapshot().values()) sum += a.balanceCents;
  return sum;
}
const quiet = () => waitFor(() => api.core.ledger.probe().quiescent(), 10_000, "the ledger to be quiescent");

function describeRequest(r: FuzzRequest): string {
  const cut = (s: string) => (s.length > 400 ? `${s.slice(0, 400)}... (${s.length} chars)` : s);
  const b =
    r.body.kind === "none"
      ? "(no body)"
      : `${cut(JSON.stringify(r.body.bytes.toString("utf8")))} as ${r.body.contentType}`;
  return `${r.method} ${cut(r.target)} token=${r.token} signature=${r.signature} chunk=${r.chunk} headers=${cut(JSON.stringify(r.headers))} body=${b}`;
}

function send(r: FuzzRequest): Promise<RawAnswer> {
  const headers: Array<[string, string]> = [];
  const auth = authorization(r.token);
  if (auth) headers.push(["Authorization", auth]);
  if (r.body.kind === "bytes" && r.body.contentType !== null)
    headers.push(["Content-Type", r.body.contentType]);
  if (r.signature !== "none") {
    const raw = r.body.kind === "bytes" ? r.body.bytes : Buffer.alloc(0);
    headers.push(["Stripe-Signature", stripeSignature(raw, r.signature === "right")]);
  }
  headers.push(...r.headers);
  return rawRequest(
    port,
    buildRequest(r.method, r.target, headers, r.body.kind === "bytes" ? r.body.bytes : null, r.chunk),
    5000,
  );
}

const outcomes = new Map<string, number>();

async function sendOrFail(r: FuzzRequest): Promise<RawAnswer> {
  try {
    return await send(r);
  } catch (e) {
    if (e instanceof NoAnswer) throw new Error(`no answer: ${e.message}\n${describeRequest(r)}`);
    throw e;
  }
}

/** The answer alone: 2xx, or a 4xx JSON error of the one shape whose status is its code's. */
function checkAnswer(r: FuzzRequest, answer: RawAnswer): void {
  const what = `${answer.status} for ${describeRequest(r)}`;
  const route = r.endpoint ? `${r.endpoint.method} ${r.endpoint.path}` : "unlisted";
  if (process.env.FUZZ_DEBUG && r.target.includes(process.env.FUZZ_DEBUG))
    console.log(answer.status, answer.body.toString().slice(0, 300), describeRequest(r));
  let code = "";
  if (answer.status >= 400) {
    try {
      code = ` ${String((JSON.parse(answer.body.toString("utf8")) as { error?: { code?: unknown } }).error?.code)}`;
    } catch {
      code = " (not JSON)"; // failed below, with the request
    }
  }
  outcomes.set(
    `${route} ${answer.status}${code}`,
    (outcomes.get(`${route} ${answer.status}${code}`) ?? 0) + 1,
  );
  expect(answer.status >= 500, `a 5xx: ${what} ${answer.body.toString().slice(0, 300)}`).toBe(false);
  expect(answer.status >= 200 && answer.status < 500, what).toBe(true);
  expect(answer.headers.has("set-cookie"), `Set-Cookie in ${what}`).toBe(false);
  const contentType = answer.headers.get("content-type")?.[0] ?? "";
  if (answer.status >= 400) {
    expect(contentType, what).toMatch(/^application\/json/);
    const parsed = JSON.parse(answer.body.toString("utf8")) as {
      error?: { code?: unknown; message?: unknown };
    };
    expect(typeof parsed.error?.code, `error.code in ${what}`).toBe("string");
    expect(typeof parsed.error?.message, `error.message in ${what}`).toBe("string");
    expect(
      httpStatusOf(parsed.error!.code as ErrorCode),
      `status of ${String(parsed.error!.code)}: ${what}`,
    ).toBe(answer.status);
  } else if (answer.body.length > 0 && !/^\/(metrics|docs)(\/|\?|$)/.test(r.target)) {
    // /metrics is Prometheus text, /docs the API reference page and its scripts.
    expect(contentType, what).toMatch(/^application\/json/);
    JSON.parse(answer.body.toString("utf8"));
  }
}

/** A 2xx to a request that may change an account (a valid tip, purchase, suspension...). */
const mayMove = (r: FuzzRequest, answer: RawAnswer) =>
  answer.status < 300 && r.method !== "GET" && r.method !== "OPTIONS" && r.endpoint?.body !== "raw";

/**
 * Sends a batch at once (one request is a batch of one) and checks every answer, then the books:
 * if nothing in the batch may move money, no account changed; in any case they sum to zero.
 */
async function check(batch: FuzzRequest[]): Promise<void> {
  await quiet();
  const before = books();
  const answers = await Promise.all(batch.map(sendOrFail));
  for (const [i, r] of batch.entries()) checkAnswer(r, answers[i]!);
  await quiet();
  const after = books();
  const what = batch.map((r, i) => `${answers[i]!.status} for ${describeRequest(r)}`).join("\n");
  if (!batch.some((r, i) => mayMove(r, answers[i]!))) {
    const moved = [...after].filter(([id, v]) => before.get(id) !== undefined && before.get(id) !== v);
    expect(moved, `accounts changed by ${what}`).toEqual([]);
  }
  expect(sumOfBalances(), `the books do not sum to zero after ${what}`).toBe(0);
}

/** A request to any endpoint of the table, or to a path in none of them. */
const requestToAny = (endpoints: readonly Endpoint[]) =>
  fc.oneof(...endpoints.map((e) => ({ weight: 4, arbitrary: requestFor(e) })), {
    weight: 2,
    arbitrary: requestFor(null),
  });

describe("fuzzing every endpoint of the server", () => {
  it("answers 2xx or a 4xx JSON error, never 5xx or silence, and refused requests move no money", async () => {
    const endpoints = api.http.endpoints;
    // The table is the server's own: every API route is in it (and health/metrics).
    expect(endpoints.filter((e) => e.pipeline).length).toBeGreaterThanOrEqual(12);
    expect(endpoints.map((e) => e.path)).toContain("/api/payments/tip");
    const protoBefore = Object.getOwnPropertyNames(Object.prototype).sort();
    const seed = SEED ?? Math.floor(Math.random() * 2 ** 31);
    console.log(
      `api fuzz: ${RUNS} runs over ${endpoints.length} endpoints, seed ${seed} (replay: FUZZ_SEED=${seed})`,
    );
    const anyRequest = requestToAny(endpoints);
    await fc.assert(
      fc.asyncProperty(anyRequest, (r) => check([r])),
      {
        numRuns: RUNS,
        seed,
        ...(PATH === undefined ? {} : { path: PATH }),
        // Shrinking replays requests against the real server: cap it; the seed and path resume it.
        skipAllAfterTimeLimit: 60_000,
      },
    );
    console.log(
      `api fuzz outcomes: ${[...outcomes]
        .sort()
        .map(([k, n]) => `${k}=${n}`)
        .join(" ")}`,
    );
    // Every endpoint in the table was reached.
    for (const e of endpoints) {
      const seen = [...outcomes.keys()].filter((k) => k.startsWith(`${e.method} ${e.path} `));
      expect(seen.length, `${e.method} ${e.path} was fuzzed`).toBeGreaterThan(0);
    }
    // The process is alive and serving, nothing polluted the prototype, and Postgres agrees.
    expect((await fetch(`${api.base}/healthz`)).status).toBe(200);
    expect(Object.getOwnPropertyNames(Object.prototype).sort()).toEqual(protoBefore);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    await quiet();
    await api.core.persister.drain();
    const pg = await api.core.pool.query<{ id: string; balance_cents: string }>(
      "SELECT id, balance_cents FROM ledger",
    );
    expect(pg.rows.reduce((s, r) => s + Number(r.balance_cents), 0)).toBe(0);
    const memory = api.core.ledger.snapshot();
    for (const row of pg.rows) {
      const m = memory.get(row.id);
      if (m) expect(Number(row.balance_cents), row.id).toBe(m.balanceCents);
    }
  }, 120_000);
});

describe("fuzzing every endpoint with concurrent batches", () => {
  it("answers every request of a batch sent at once, and the books hold", async () => {
    // Two to eight requests in flight together, on the same shared idempotency keys now and then:
    // replays and conflicts race, refusals race valid requests. A tenth of the single-request runs.
    const seed = SEED ?? Math.floor(Math.random() * 2 ** 31);
    const runs = Math.max(10, Math.ceil(RUNS / 10));
    console.log(`api fuzz, concurrent: ${runs} batches, seed ${seed} (replay: FUZZ_SEED=${seed})`);
    await fc.assert(
      fc.asyncProperty(fc.array(requestToAny(api.http.endpoints), { minLength: 2, maxLength: 8 }), check),
      {
        numRuns: runs,
        seed,
        ...(PATH === undefined ? {} : { path: PATH }),
        skipAllAfterTimeLimit: 60_000,
      },
    );
    expect((await fetch(`${api.base}/healthz`)).status).toBe(200);
  }, 120_000);
});

// What the fuzz found, each fixed where every request passes and pinned here by name.
describe("regressions the fuzz found", () => {
  it("a JSON body nested thousands deep answers 400, not 500 (stack overflow in the body checks)", async () => {
    // As deep as the 16 KiB body limit lets each form go.
    const forms = [
      ["[", "]", [33, 3000, 7000]],
      ['{"":', "}", [33, 1000, 2600]],
    ] as const;
    for (const [open, close, depths] of forms) {
      for (const depth of depths) {
        const text = `{"amount":${open.repeat(depth)}"\\u0000"${close.repeat(depth)}}`;
        const r = await api.call("POST", "/api/payments/tip", { token: owner.token, raw: text });
        expect(r.status, `${open} x ${depth}`).toBe(400);
        expect(r.body.error.message).toMatch(/nests deeper than 32/);
      }
    }
    // Brackets inside strings do not count, and 32 levels are still parsed (and then refused by
    // the schema, not by depth).
    const strings = await api.call("POST", "/api/payments/tip", {
      token: owner.token,
      raw: `{"to_creator_username":"${"[".repeat(100)}\\"{{{{"}`,
    });
    expect(strings.status).toBe(400);
    expect(strings.body.error.message).not.toMatch(/nests deeper/);
    const deep32 = await api.call("POST", "/api/payments/tip", {
      token: owner.token,
      raw: `{"amount":${"[".repeat(31)}1${"]".repeat(31)}}`,
    });
    expect(deep32.status).toBe(400);
    expect(deep32.body.error.message).not.toMatch(/nests deeper/);
  });

  it("a signed webhook event holding an unpaired surrogate escape answers 400, not 500, and is not stored", async () => {
    for (const extra of ['"\\ud800"', '"\\udfff\\ud800"', '{"k":["\\udc00"]}']) {
      const id = `evt_${randomUUID().replaceAll("-", "")}`;
      const text = `{"id":"${id}","object":"event","type":"payment_intent.succeeded","created":${Math.floor(
        Date.now() / 1000,
      )},"data":{"object":{"id":"pi_none","object":"payment_intent"}},"extra":${extra}}`;
      const raw = Buffer.from(text);
      const r = await api.call("POST", "/api/payments/webhook", {
        raw: text,
        headers: { "stripe-signature": stripeSignature(raw, true) },
      });
      expect(r.status, extra).toBe(400);
      expect(r.body.error.code).toBe("validation_error");
      const stored = await api.core.pool.query("SELECT 1 FROM stripe_events WHERE id = $1", [id]);
      expect(stored.rowCount).toBe(0);
    }
  });

  it("a signed webhook event nested thousands deep answers 400, not 500 (stack overflow storing it)", async () => {
    const id = `evt_${randomUUID().replaceAll("-", "")}`;
    const text = `{"id":"${id}","object":"event","type":"payment_intent.succeeded","created":${Math.floor(
      Date.now() / 1000,
    )},"data":{"object":{"id":"pi_none","object":"payment_intent"}},"extra":${"[".repeat(5000)}${"]".repeat(5000)}}`;
    const raw = Buffer.from(text);
    const r = await api.call("POST", "/api/payments/webhook", {
      raw: text,
      headers: { "stripe-signature": stripeSignature(raw, true) },
    });
    expect(r.status).toBe(400);
    expect(r.body.error).toMatchObject({ code: "validation_error" });
    expect(r.body.error.message).toMatch(/nests deeper than 64/);
    // On record as refused (a redelivery is refused again), with nothing of the body kept.
    const stored = await api.core.pool.query(
      "SELECT type, payload, outcome FROM stripe_events WHERE id = $1",
      [id],
    );
    expect(stored.rows).toEqual([
      { type: "malformed", payload: {}, outcome: expect.stringMatching(/^refused: /) },
    ]);
  });

  it("a correctly signed token whose subject is not a UUID answers 401 on every user route, not 500", async () => {
    const userRoutes = api.http.endpoints.filter((e) => e.auth === "user");
    expect(userRoutes.length).toBeGreaterThan(5);
    for (const e of userRoutes) {
      const path = e.path.replaceAll(/:[A-Za-z]+/g, owner.id);
      const r = await api.call(METHODS[e.method], path, {
        token: tokens.notUuid!,
        ...(e.body === "none" ? {} : { body: {} }),
      });
      expect(r.status, `${e.method} ${path}`).toBe(401);
      expect(r.body.error.code).toBe("unauthorized");
    }
    // Upper-case UUID subjects are the same user as their lower-case form.
    const upper = await new SignJWT({ email: owner.email, role: "authenticated" })
      .setProtectedHeader({ alg: "HS256", typ: "JWT" })
      .setSubject(owner.id.toUpperCase())
      .setAudience("authenticated")
      .setExpirationTime("1h")
      .sign(new TextEncoder().encode(TEST_JWT_SECRET));
    const mine = await api.call("GET", `/api/payments/balance/${owner.id}`, { token: upper });
    expect(mine.status).toBe(200);
  });
});
