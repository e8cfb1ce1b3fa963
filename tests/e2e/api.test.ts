// The seed brief's endpoints over HTTP against a real server, Postgres and Redis: exact shapes
// and amounts, who may call what, validation that changes nothing, fraud rules, idempotency.
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runAdminCli } from "../../src/admin/cli.ts";
import { type Api, startApi } from "../helpers/api.ts";
import { createTestEnv, type TestEnv, waitFor } from "../helpers/env.ts";
import { settle } from "../helpers/ledger.ts";

let env: TestEnv;
let api: Api;
let admin: { id: string; token: string; username: string; email: string };

beforeAll(async () => {
  env = await createTestEnv("api");
  api = await startApi(env);
  admin = await api.register();
  const r = await runAdminCli(["grant", admin.email], env.databaseUrl);
  expect(r).toMatchObject({ code: 0 });
});
afterAll(async () => {
  await api?.close();
  await env?.cleanup();
});

const ISO = expect.stringMatching(/^\d{4}-\d{2}-\d{2}T/);
const UUID = expect.stringMatching(/^[0-9a-f-]{36}$/);

async function dbSnapshot() {
  await settle(api.core);
  const r = await env.pool.query(
    "SELECT (SELECT count(*) FROM transactions)::int AS txs, (SELECT count(*) FROM users)::int AS users, (SELECT coalesce(sum(balance_cents),0) FROM ledger WHERE kind='user')::bigint AS bal",
  );
  return r.rows[0];
}

describe("users", () => {
  it("registers a user with a session, and logs them in", async () => {
    const r = await api.call("POST", "/api/users/register", {
      body: {
        email: "Creator@3am.app",
        username: "creator1",
        display_name: "Amazing Creator",
        password: "securepass123",
        role: "creator",
      },
    });
    expect(r.status).toBe(201);
    expect(r.body).toEqual({
      user: {
        id: UUID,
        email: "creator@3am.app",
        username: "creator1",
        display_name: "Amazing Creator",
        bio: null,
        avatar_url: null,
        role: "creator",
        status: "active",
        created_at: ISO,
      },
      session: { access_token: expect.any(String), token_type: "bearer", expires_in: 3600 },
    });
    const login = await api.call("POST", "/api/users/login", {
      body: { email: "creator@3am.app", password: "securepass123" },
    });
    expect(login.status).toBe(200);
    expect(login.body.user).toEqual(r.body.user);
    const bad = await api.call("POST", "/api/users/login", {
      body: { email: "creator@3am.app", password: "wrongpass123" },
    });
    expect(bad.status).toBe(401);
    expect(bad.body.error.code).toBe("unauthorized");
    const ledgerRow = await env.pool.query("SELECT kind, balance_cents FROM ledger WHERE id = $1", [
      r.body.user.id,
    ]);
    expect(ledgerRow.rows).toEqual([{ kind: "user", balance_cents: 0 }]);
  });

  it("refuses a taken email or username with 409 and its own code", async () => {
    const u = await api.register();
    const dupEmail = await api.call("POST", "/api/users/register", {
      body: {
        email: u.email.toUpperCase(),
        username: "another_name",
        display_name: "X",
        password: "securepass123",
      },
    });
    expect(dupEmail.status).toBe(409);
    expect(dupEmail.body.error.code).toBe("email_taken");
    const dupName = await api.call("POST", "/api/users/register", {
      body: {
        email: "fresh@example.test",
        username: u.username,
        display_name: "X",
        password: "securepass123",
      },
    });
    expect(dupName.status).toBe(409);
    expect(dupName.body.error.code).toBe("username_taken");
  });

  it("enforces the password policy and the body schema", async () => {
    const before = await dbSnapshot();
    const base = { email: "p@example.test", username: "p_user", display_name: "P" };
    for (const body of [
      { ...base, password: "short1" },
      { ...base, password: "onlyletterslong" },
      { ...base, password: "12345678901" },
      { ...base, password: "securepass123", role: "admin" },
      { ...base, password: "securepass123", extra: true },
      { ...base, email: "not-an-email", password: "securepass123" },
      { ...base, username: "a b", password: "securepass123" },
      { email: "p@example.test", password: "securepass123" },
    ]) {
      const r = await api.call("POST", "/api/users/register", { body });
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(r.body.error.code).toBe("validation_error");
    }
    expect(await dbSnapshot()).toEqual(before);
  });

  it("shows public profiles without email, and 404s unknown ones", async () => {
    const u = await api.register();
    const r = await api.call("GET", `/api/users/${u.username}`);
    expect(r.status).toBe(200);
    expect(r.body.user).not.toHaveProperty("email");
    expect(r.body.user).toMatchObject({ id: u.id, username: u.username, role: "viewer", status: "active" });
    expect((await api.call("GET", "/api/users/nobody_here")).status).toBe(404);
  });

  it("lets the owner or an admin upgrade to creator, nobody else", async () => {
    const u = await api.register();
    const other = await api.register();
    expect((await api.call("POST", `/api/users/${u.id}/upgrade`)).status).toBe(401);
    expect((await api.call("POST", `/api/users/${u.id}/upgrade`, { token: other.token })).status).toBe(403);
    const own = await api.call("POST", `/api/users/${u.id}/upgrade`, { token: u.token });
    expect(own.status).toBe(200);
    expect(own.body.user.role).toBe("creator");
    expect((await api.call("POST", `/api/users/${u.id}/upgrade`, { token: u.token })).body.user.role).toBe(
      "creator",
    );
    const v = await api.register();
    expect(
      (await api.call("POST", `/api/users/${v.id}/upgrade`, { token: admin.token })).body.user.role,
    ).toBe("creator");
    expect((await api.call("POST", "/api/users/not-a-uuid/upgrade", { token: u.token })).status).toBe(400);
  });

  it("lets the owner or an admin update display_name, bio and avatar_url", async () => {
    const u = await api.register();
    const other = await api.register();
    const body = { display_name: "New Name", bio: "hello", avatar_url: "https://cdn.example/a.png" };
    expect((await api.call("PUT", `/api/users/${u.id}`, { body })).status).toBe(401);
    expect((await api.call("PUT", `/api/users/${u.id}`, { body, token: other.token })).status).toBe(403);
    const own = await api.call("PUT", `/api/users/${u.id}`, { body, token: u.token });
    expect(own.status).toBe(200);
    expect(own.body.user).toMatchObject(body);
    const byAdmin = await api.call("PUT", `/api/users/${u.id}`, { body: { bio: null }, token: admin.token });
    expect(byAdmin.body.user.bio).toBeNull();
    for (const bad of [{}, { email: "x@y.z" }, { avatar_url: "javascript:alert(1)" }, { display_name: "" }]) {
      expect((await api.call("PUT", `/api/users/${u.id}`, { body: bad, token: u.token })).status).toBe(400);
    }
  });
});

describe("tips and balances", () => {
  async function pair(funds = 5000) {
    const viewer = await api.register();
    const creator = await api.register("creator");
    await api.fund(viewer.id, funds);
    return { viewer, creator };
  }
  const tipBody = (from: string, to: string, amount: unknown = 1) => ({
    from_user_id: from,
    to_creator_username: to,
    amount,
  });

  it("tips $1 with the 97/3 split and answers the sender's new balance", async () => {
    const { viewer, creator } = await pair();
    const r = await api.call("POST", "/api/payments/tip", {
      token: viewer.token,
      body: tipBody(viewer.id, creator.username),
      headers: { "idempotency-key": "tip-1" },
    });
    expect(r.status).toBe(201);
    expect(r.headers.get("idempotency-key")).toBe("tip-1");
    expect(r.body).toEqual({
      transaction: {
        id: UUID,
        from_user_id: viewer.id,
        to_user_id: creator.id,
        amount: "1.00",
        platform_fee: "0.03",
        charity_fee: "0.01",
        net_amount: "0.97",
        type: "tip",
        status: "completed",
        created_at: ISO,
      },
      balance: {
        user_id: viewer.id,
        balance: "49.00",
        reserved_balance: "0.00",
        available_balance: "49.00",
        withdrawable_balance: "0.00",
        currency: "USD",
      },
    });
    const three = await api.call("POST", "/api/payments/tip", {
      token: viewer.token,
      body: tipBody(viewer.id, creator.username, 3),
    });
    expect(three.body.transaction).toMatchObject({
      amount: "3.00",
      platform_fee: "0.09",
      charity_fee: "0.03",
      net_amount: "2.91",
    });
    expect(three.headers.get("idempotency-key")).toMatch(/^[0-9a-f-]{36}$/);
    await settle(api.core);
    const bal = await api.call("GET", `/api/payments/balance/${creator.id}`, { token: creator.token });
    expect(bal.body).toEqual({
      user_id: creator.id,
      balance: "3.88",
      reserved_balance: "0.00",
      available_balance: "3.88",
      withdrawable_balance: "3.88",
      currency: "USD",
    });
  });

  it("answers a replayed key with the same body, and one transaction for 20 concurrent copies", async () => {
    const { viewer, creator } = await pair();
    const send = (key: string, amount = 1) =>
      api.call("POST", "/api/payments/tip", {
        token: viewer.token,
        body: tipBody(viewer.id, creator.username, amount),
        headers: { "idempotency-key": key },
      });
    const first = await send("same-key");
    const again = await send("same-key");
    expect(again.status).toBe(201);
    expect(again.body).toEqual(first.body);
    const conflict = await send("same-key", 3);
    expect(conflict.status).toBe(409);
    expect(conflict.body.error.code).toBe("idempotency_conflict");
    const burst = await Promise.all(Array.from({ length: 20 }, () => send("burst-key")));
    expect(new Set(burst.map((r) => r.status))).toEqual(new Set([201]));
    expect(new Set(burst.map((r) => r.body.transaction.id)).size).toBe(1);
    await settle(api.core);
    const n = await env.pool.query("SELECT count(*)::int AS n FROM transactions WHERE from_user_id = $1", [
      viewer.id,
    ]);
    expect(n.rows[0].n).toBe(2);
    expect(
      (await api.call("GET", `/api/payments/balance/${viewer.id}`, { token: viewer.token })).body.balance,
    ).toBe("48.00");
  });

  it("allows only the sender to tip, and only owners and admins to read balances", async () => {
    const { viewer, creator } = await pair();
    const other = await api.register();
    const body = tipBody(viewer.id, creator.username);
    expect((await api.call("POST", "/api/payments/tip", { body })).status).toBe(401);
    expect((await api.call("POST", "/api/payments/tip", { body, token: "not.a.token" })).status).toBe(401);
    expect((await api.call("POST", "/api/payments/tip", { body, token: other.token })).status).toBe(403);
    expect((await api.call("POST", "/api/payments/tip", { body, token: admin.token })).status).toBe(403);
    const path = `/api/payments/balance/${viewer.id}`;
    expect((await api.call("GET", path)).status).toBe(401);
    expect((await api.call("GET", path, { token: other.token })).status).toBe(403);
    expect((await api.call("GET", path, { token: viewer.token })).status).toBe(200);
    expect((await api.call("GET", path, { token: admin.token })).status).toBe(200);
    expect((await api.call("GET", "/api/payments/balance/12345", { token: viewer.token })).status).toBe(400);
  });

  it("refuses bad input with 4xx and the error shape, changing nothing", async () => {
    const { viewer, creator } = await pair();
    const poor = await api.register();
    const before = await dbSnapshot();
    const cases: Array<[unknown, number]> = [
      [tipBody(viewer.id, creator.username, "1"), 400],
      [tipBody(viewer.id, creator.username, 0), 400],
      [tipBody(viewer.id, creator.username, -1), 400],
      [tipBody(viewer.id, creator.username, 1.005), 400],
      [tipBody(viewer.id, creator.username, 2), 400],
      [tipBody(viewer.id, creator.username, 1e12), 400],
      [tipBody(viewer.id, creator.username, null), 400],
      [tipBody("not-a-uuid", creator.username), 400],
      [{ from_user_id: viewer.id, amount: 1 }, 400],
      [{ ...tipBody(viewer.id, creator.username), extra: 1 }, 400],
      [tipBody(viewer.id, "nobody_at_all"), 404],
      [tipBody(viewer.id, viewer.username), 404],
    ];
    for (const [body, status] of cases) {
      const r = await api.call("POST", "/api/payments/tip", { token: viewer.token, body });
      expect(r.status, JSON.stringify(body)).toBe(status);
      expect(r.body.error).toMatchObject({ code: expect.any(String), message: expect.any(String) });
    }
    const malformed = await api.call("POST", "/api/payments/tip", {
      token: viewer.token,
      raw: '{"amount": 1,',
    });
    expect(malformed.status).toBe(400);
    expect(malformed.body.error.code).toBe("validation_error");
    const array = await api.call("POST", "/api/payments/tip", { token: viewer.token, raw: "[1]" });
    expect(array.status).toBe(400);
    const huge = await api.call("POST", "/api/payments/tip", {
      token: viewer.token,
      body: { ...tipBody(viewer.id, creator.username), pad: "x".repeat(64 * 1024) },
    });
    expect(huge.status).toBe(413);
    expect(huge.body.error.code).toBe("payload_too_large");
    const broke = await api.call("POST", "/api/payments/tip", {
      token: poor.token,
      body: tipBody(poor.id, creator.username),
    });
    expect(broke.status).toBe(422);
    expect(broke.body.error.code).toBe("insufficient_funds");
    expect(await dbSnapshot()).toEqual(before);
  });
});

describe("fraud rules through the API", () => {
  const tip = (from: { id: string; token: string }, to: string) =>
    api.call("POST", "/api/payments/tip", {
      token: from.token,
      body: { from_user_id: from.id, to_creator_username: to, amount: 1 },
    });
  const logsOf = async (userId: string, rule: string, atLeast = 1) => {
    let rows: unknown[] = [];
    await waitFor(async () => {
      rows = (
        await env.pool.query(
          "SELECT rule, severity, action FROM fraud_logs WHERE user_id = $1 AND rule = $2",
          [userId, rule],
        )
      ).rows;
      return rows.length >= atLeast;
    });
    return rows;
  };

  it("refuses the 11th tip within the hour", async () => {
    const viewer = await api.register();
    const creator = await api.register("creator");
    await api.fund(viewer.id, 10_000);
    for (let i = 0; i < 10; i++) expect((await tip(viewer, creator.username)).status).toBe(201);
    const r = await tip(viewer, creator.username);
    expect(r.status).toBe(422);
    expect(r.body.error).toMatchObject({
      code: "fraud_blocked",
      details: { rule: "high_velocity", severity: "high" },
    });
    expect(await logsOf(viewer.id, "high_velocity")).toEqual([
      { rule: "high_velocity", severity: "high", action: "blocked" },
    ]);
  });

  it("refuses a creator tipping themselves", async () => {
    const creator = await api.register("creator");
    await api.fund(creator.id, 1000);
    const r = await tip(creator, creator.username);
    expect(r.body.error).toMatchObject({
      code: "fraud_blocked",
      details: { rule: "self_transfer", severity: "critical" },
    });
    expect(await logsOf(creator.id, "self_transfer")).toHaveLength(1);
  });

  it("refuses tips from a suspended viewer and to a suspended creator, until reinstated", async () => {
    const viewer = await api.register();
    const creator = await api.register("creator");
    await api.fund(viewer.id, 1000);
    const suspend = (id: string) =>
      api.call("POST", `/api/admin/users/${id}/suspend`, { token: admin.token, body: { reason: "test" } });
    const unsuspend = (id: string) =>
      api.call("POST", `/api/admin/users/${id}/unsuspend`, { token: admin.token });
    expect((await suspend(creator.id)).body).toEqual({ user_id: creator.id, status: "suspended" });
    let r = await tip(viewer, creator.username);
    expect(r.body.error.details).toMatchObject({
      rule: "suspended_account",
      severity: "critical",
      suspended: "recipient",
    });
    expect((await api.call("GET", `/api/users/${creator.username}`)).body.user.status).toBe("suspended");
    await unsuspend(creator.id);
    expect((await tip(viewer, creator.username)).status).toBe(201);
    await suspend(viewer.id);
    r = await tip(viewer, creator.username);
    expect(r.body.error.details).toMatchObject({ rule: "suspended_account", suspended: "sender" });
    expect(await logsOf(viewer.id, "suspended_account", 2)).toHaveLength(2);
    await waitFor(async () => {
      const u = await env.pool.query("SELECT status FROM users WHERE id = $1", [viewer.id]);
      return u.rows[0].status === "suspended";
    });
  });
});

describe("admin", () => {
  it("is for admins only", async () => {
    const u = await api.register();
    for (const [method, path] of [
      ["POST", `/api/admin/users/${u.id}/suspend`],
      ["POST", `/api/admin/users/${u.id}/unsuspend`],
      ["GET", "/api/admin/fraud-logs"],
    ] as const) {
      expect((await api.call(method, path)).status).toBe(401);
      expect((await api.call(method, path, { token: u.token })).status).toBe(403);
    }
    expect(
      (await api.call("POST", `/api/admin/users/${randomUUID()}/suspend`, { token: admin.token })).status,
    ).toBe(404);
  });

  it("lists fraud logs with filters", async () => {
    const creator = await api.register("creator");
    await api.fund(creator.id, 1000);
    await api.call("POST", "/api/payments/tip", {
      token: creator.token,
      body: { from_user_id: creator.id, to_creator_username: creator.username, amount: 1 },
    });
    let logs: any[] = [];
    await waitFor(async () => {
      const r = await api.call("GET", `/api/admin/fraud-logs?user_id=${creator.id}&rule=self_transfer`, {
        token: admin.token,
      });
      logs = r.body.fraud_logs;
      return logs.length === 1;
    });
    expect(logs[0]).toMatchObject({
      user_id: creator.id,
      rule: "self_transfer",
      severity: "critical",
      amount: "1.00",
      action: "blocked",
    });
    const none = await api.call("GET", `/api/admin/fraud-logs?user_id=${creator.id}&severity=medium`, {
      token: admin.token,
    });
    expect(none.body.fraud_logs).toEqual([]);
    expect((await api.call("GET", "/api/admin/fraud-logs?limit=0", { token: admin.token })).status).toBe(400);
    expect((await api.call("GET", "/api/admin/fraud-logs?bogus=1", { token: admin.token })).status).toBe(400);
  });

  it("grants admin from the command line", async () => {
    expect(await runAdminCli(["grant", "nobody@example.test"], env.databaseUrl)).toMatchObject({ code: 1 });
    expect(await runAdminCli(["frobnicate"], env.databaseUrl)).toMatchObject({ code: 2 });
  });
});

describe("HTTP plumbing", () => {
  it("answers CORS preflights for allowed origins and unknown routes with JSON 404", async () => {
    const pre = await fetch(`${api.base}/api/payments/tip`, {
      method: "OPTIONS",
      headers: { origin: "https://app.3am.test", "access-control-request-method": "POST" },
    });
    expect(pre.status).toBe(204);
    expect(pre.headers.get("access-control-allow-origin")).toBe("*");
    expect(pre.headers.get("access-control-allow-headers")).toContain("Idempotency-Key");
    const nf = await api.call("GET", "/api/nothing");
    expect(nf.status).toBe(404);
    expect(nf.body.error.code).toBe("not_found");
  });
});
