// Hostile input that once took the whole process down (issue 12, item 1): a malformed percent-
// encoding in any path parameter threw from decodeURIComponent inside the uWS callback, and an
// exception escaping a uWS callback ends the process. Every such request must get a 400 in the
// error shape, and the server must keep answering.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Api, startApi } from "../helpers/api.ts";
import { createTestEnv, type TestEnv } from "../helpers/env.ts";

let env: TestEnv;
let api: Api;

beforeAll(async () => {
  env = await createTestEnv("hostile");
  api = await startApi(env);
});
afterAll(async () => {
  await api?.close();
  await env?.cleanup();
});

const MALFORMED = ["%E0%A4%A", "%", "%zz", "%C0%80", "abc%", "%ED%A0%80"];
// Every route with a path parameter, before and after authentication matters.
const ROUTES: Array<[string, (seg: string) => string]> = [
  ["GET", (s) => `/api/users/${s}`],
  ["PUT", (s) => `/api/users/${s}`],
  ["POST", (s) => `/api/users/${s}/upgrade`],
  ["GET", (s) => `/api/payments/balance/${s}`],
];

describe("malformed percent-encodings in the path", () => {
  it("answer 400 in the error shape on every route with a parameter, and the server lives on", async () => {
    const viewer = await api.register();
    for (const [method, path] of ROUTES) {
      for (const seg of MALFORMED) {
        for (const token of [undefined, viewer.token]) {
          const r = await api.call(method, path(seg), {
            ...(token ? { token } : {}),
            ...(method === "GET" ? {} : { body: { display_name: "x" } }),
          });
          expect(r.status, `${method} ${path(seg)}`).toBe(400);
          expect(r.body.error.code, `${method} ${path(seg)}`).toBe("validation_error");
          expect(r.headers.get("content-type")).toMatch(/^application\/json/);
        }
      }
    }
    const health = await fetch(`${api.base}/healthz`);
    expect(health.status).toBe(200);
    // A well-formed escape still decodes: a username with a space is looked up (and not found).
    expect((await api.call("GET", "/api/users/no%20such%20user")).status).toBe(404);
  });
});

describe("idempotency keys", () => {
  const BAD = [
    "inj1\r\nSet-Cookie: pwned=1",
    "caf\u00e9",
    "tab\there",
    "with space",
    "",
    "k".repeat(256),
    "nul\u0000",
  ];

  it("are 1-255 visible ASCII characters on every route, in the body field and the header, else 400 that changes nothing", async () => {
    const admin = await api.register();
    await api.core.pool.query("UPDATE users SET role = 'admin' WHERE id = $1", [admin.id]);
    const viewer = await api.register();
    const creator = await api.register("creator");
    await api.fund(viewer.id, 1000);
    const routes: Array<{ path: string; token: string; body: Record<string, unknown> }> = [
      {
        path: "/api/payments/tip",
        token: viewer.token,
        body: { from_user_id: viewer.id, to_creator_username: creator.username, amount: 1 },
      },
      { path: "/api/payments/intent", token: viewer.token, body: { user_id: viewer.id, amount: 5 } },
      {
        path: "/api/payments/credits/purchase",
        token: viewer.token,
        body: { user_id: viewer.id, amount: 5, payment_method_id: "pm_card_visa" },
      },
      { path: `/api/admin/users/${creator.id}/suspend`, token: admin.token, body: {} },
      { path: `/api/admin/users/${creator.id}/unsuspend`, token: admin.token, body: {} },
    ];
    for (const r of routes) {
      for (const bad of BAD) {
        const inBody = await api.call("POST", r.path, {
          token: r.token,
          body: { ...r.body, idempotency_key: bad },
        });
        expect(inBody.status, `${r.path} body ${JSON.stringify(bad)}`).toBe(400);
        expect(inBody.body.error.code).toBe("validation_error");
        // Refused for the key (a NUL anywhere in a body is refused before), not for anything else in
        // an otherwise valid body.
        expect(JSON.stringify(inBody.body.error), `${r.path} ${JSON.stringify(bad)}`).toMatch(
          /idempotency|NUL character/i,
        );
        expect(inBody.headers.get("set-cookie")).toBeNull();
        expect(inBody.headers.get("idempotency-key")).toBeNull();
      }
      // A header value too long (uWS drops bytes outside ASCII from header values before we see them).
      const long = await api.call("POST", r.path, {
        token: r.token,
        body: r.body,
        headers: { "idempotency-key": "k".repeat(256) },
      });
      expect(long.status, `${r.path} header of 256`).toBe(400);
      expect(JSON.stringify(long.body.error)).toMatch(/idempotency/i);
    }
    const balance = await api.call("GET", `/api/payments/balance/${viewer.id}`, { token: viewer.token });
    expect(balance.body.balance).toBe("10.00");
    const profile = await api.call("GET", `/api/users/${creator.username}`);
    expect(profile.body.user.status).toBe("active");
    // The longest allowed key still works end to end, on a purchase too (Stripe's own limit is
    // kept by carrying a long key as its hash).
    const longest = "k".repeat(255);
    const bought = await api.call("POST", "/api/payments/credits/purchase", {
      token: viewer.token,
      body: { user_id: viewer.id, amount: 5, payment_method_id: "pm_card_visa", idempotency_key: longest },
    });
    expect(bought.status).toBe(201);
    expect(bought.headers.get("idempotency-key")).toBe(longest);
    const again = await api.call("POST", "/api/payments/credits/purchase", {
      token: viewer.token,
      body: { user_id: viewer.id, amount: 5, payment_method_id: "pm_card_visa", idempotency_key: longest },
    });
    expect(again.body.payment_intent_id).toBe(bought.body.payment_intent_id);
    expect(again.body.balance.balance).toBe("15.00");
  });
});

describe("text Postgres cannot store", () => {
  it("a NUL anywhere in a body, path or query, and an out-of-range time, answer 400, never 500", async () => {
    const admin = await api.register();
    await api.core.pool.query("UPDATE users SET role = 'admin' WHERE id = $1", [admin.id]);
    const viewer = await api.register();
    await api.fund(viewer.id, 1000);
    const nul = "a\u0000b";
    const cases: Array<[string, string, { token?: string; body?: unknown }]> = [
      [
        "POST",
        "/api/users/register",
        {
          body: {
            email: "n@example.test",
            username: "nul_user",
            display_name: nul,
            password: "securepass123",
          },
        },
      ],
      ["PUT", `/api/users/${viewer.id}`, { token: viewer.token, body: { bio: nul } }],
      ["PUT", `/api/users/${viewer.id}`, { token: viewer.token, body: { [nul]: "x" } }],
      [
        "POST",
        "/api/payments/tip",
        { token: viewer.token, body: { from_user_id: viewer.id, to_creator_username: nul, amount: 1 } },
      ],
      ["GET", "/api/users/a%00b", {}],
      ["GET", "/api/admin/fraud-logs?rule=a%00b", { token: admin.token }],
      ["GET", "/api/admin/fraud-logs?since=0000-01-01T00:00:00Z", { token: admin.token }],
      ["GET", "/api/admin/fraud-logs?since=9999-12-31T23:59:60Z", { token: admin.token }],
    ];
    for (const [method, path, opts] of cases) {
      const r = await api.call(method, path, opts);
      expect(
        r.status,
        `${method} ${path} ${JSON.stringify(opts.body ?? null)}: ${JSON.stringify(r.body)}`,
      ).toBe(400);
      expect(r.body.error.code).toBe("validation_error");
    }
    // An escaped backslash before "u0000" is no NUL: that string is taken as it is.
    const fine = await api.call("PUT", `/api/users/${viewer.id}`, {
      token: viewer.token,
      raw: '{"bio":"\\\\u0000"}',
    });
    expect(fine.status).toBe(200);
    expect(fine.body.user.bio).toBe("\\u0000");
    const balance = await api.call("GET", `/api/payments/balance/${viewer.id}`, { token: viewer.token });
    expect(balance.body.balance).toBe("10.00");
  });
});

describe("who may be charged, and suspensions on every route (issue 12 items 4 and 9)", () => {
  const buy = (u: { id: string; token: string }) =>
    api.call("POST", "/api/payments/credits/purchase", {
      token: u.token,
      body: { user_id: u.id, amount: 5, payment_method_id: "pm_card_visa" },
    });
  const intent = (u: { id: string; token: string }) =>
    api.call("POST", "/api/payments/intent", { token: u.token, body: { user_id: u.id, amount: 5 } });
  const intentsOf = async (id: string) =>
    (await api.core.pool.query("SELECT id FROM stripe_payment_intents WHERE user_id = $1", [id])).rows.length;

  it("charges nobody whose account is gone, with a token still valid", async () => {
    const gone = await api.register();
    await api.core.pool.query("DELETE FROM ledger WHERE id = $1", [gone.id]);
    await api.core.pool.query("DELETE FROM users WHERE id = $1", [gone.id]);
    for (const r of [await buy(gone), await intent(gone)]) {
      expect(r.status).toBe(404);
      expect(r.body.error.code).toBe("not_found");
    }
    expect(await intentsOf(gone.id)).toBe(0);
  });

  it("a suspension takes effect at once: no purchase, no intent, no upgrade, no admin rights", async () => {
    const admin = await api.register();
    const other = await api.register();
    await api.core.pool.query("UPDATE users SET role = 'admin' WHERE id = ANY($1::uuid[])", [
      [admin.id, other.id],
    ]);
    const viewer = await api.register();
    for (const u of [viewer, other]) {
      const s = await api.call("POST", `/api/admin/users/${u.id}/suspend`, { token: admin.token, body: {} });
      expect(s.status).toBe(200);
    }
    // Straight after the answer, before the persister has mirrored it into users.status.
    const refused = [
      await buy(viewer),
      await intent(viewer),
      await api.call("POST", `/api/users/${viewer.id}/upgrade`, { token: viewer.token }),
    ];
    const fraudLogs = await api.call("GET", "/api/admin/fraud-logs", { token: other.token });
    for (const r of refused) {
      expect(r.status, JSON.stringify(r.body)).toBe(422);
      expect(r.body.error.code).toBe("account_suspended");
    }
    expect(fraudLogs.status).toBe(403);
    expect(await intentsOf(viewer.id)).toBe(0);
    const reinstated = await api.call("POST", `/api/admin/users/${viewer.id}/unsuspend`, {
      token: admin.token,
      body: {},
    });
    expect(reinstated.status).toBe(200);
    expect((await buy(viewer)).status).toBe(201);
  });
});

describe("duplicate JSON keys (issue 12 item 10)", () => {
  it("are refused with 400 on every body, at any depth, and change nothing", async () => {
    const viewer = await api.register();
    const creator = await api.register("creator");
    await api.fund(viewer.id, 1000);
    const tip = (raw: string) => api.call("POST", "/api/payments/tip", { token: viewer.token, raw });
    const base = `"from_user_id":"${viewer.id}","to_creator_username":"${creator.username}"`;
    for (const raw of [
      `{${base},"amount":3,"amount":1}`,
      `{${base},"amount":1,"to_creator_username":"${creator.username}"}`,
      `{${base},"amount":1,"x":{"a":1,"a":2}}`,
    ]) {
      const r = await tip(raw);
      expect(r.status, raw).toBe(400);
      expect(r.body.error.code).toBe("validation_error");
      expect(r.body.error.message).toMatch(/twice/);
    }
    const balance = await api.call("GET", `/api/payments/balance/${viewer.id}`, { token: viewer.token });
    expect(balance.body.balance).toBe("10.00");
    // Colons inside strings are no keys: such a body is scanned and taken.
    const fine = await api.call("PUT", `/api/users/${viewer.id}`, {
      token: viewer.token,
      raw: '{"bio":"at 12:30: live","display_name":"a:b"}',
    });
    expect(fine.status).toBe(200);
    expect((await tip(`{${base},"amount":1}`)).status).toBe(201);
  });
});
