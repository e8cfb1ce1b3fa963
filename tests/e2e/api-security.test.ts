// The HTTP API's guards, each against a server configured for it: Redis rate limits (and
// switching them off), CORS with an origin list, tokens that must be refused, production's
// refusal of the development secret, and registration through Supabase Auth (a local GoTrue
// stand-in) with Supabase-issued asymmetric tokens accepted.
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Api, startApi, TEST_JWT_SECRET } from "../helpers/api.ts";
import { createTestEnv, REDIS_URL, type TestEnv } from "../helpers/env.ts";
import { type GoTrueStandin, startGoTrueStandin } from "../../src/standins/gotrue-standin.ts";

const register = (api: Api, tag: string) =>
  api.call("POST", "/api/users/register", {
    body: {
      email: `${tag}@example.test`,
      username: tag,
      display_name: tag,
      password: "securepass123",
    },
  });

describe("rate limits", () => {
  let env: TestEnv;
  let api: Api;
  beforeAll(async () => {
    env = await createTestEnv("ratelimit");
    api = await startApi(env, {
      RATE_LIMIT_IP_PER_MIN: "12",
      RATE_LIMIT_USER_PER_MIN: "3",
      RATE_LIMIT_AUTH_PER_MIN: "2",
    });
  });
  afterAll(async () => {
    await api?.close();
    await env?.cleanup();
  });

  it("limits login and register per IP, authenticated calls per user, everything per IP", async () => {
    // Auth budget 2: one registration and one failed login, then the third try is refused
    // even with the right password.
    const reg = await register(api, "rl_user");
    expect(reg.status).toBe(201);
    const { id } = reg.body.user;
    const token = reg.body.session.access_token;
    const creds = { email: "rl_user@example.test", password: "wrong-password-1" };
    expect((await api.call("POST", "/api/users/login", { body: creds })).status).toBe(401);
    const blocked = await api.call("POST", "/api/users/login", {
      body: { ...creds, password: "securepass123" },
    });
    expect(blocked.status).toBe(429);
    expect(blocked.body.error).toMatchObject({ code: "rate_limited", details: { limit: "auth" } });
    expect(Number(blocked.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);

    // User budget 3 per minute.
    for (let i = 0; i < 3; i++) {
      expect((await api.call("GET", `/api/payments/balance/${id}`, { token })).status).toBe(200);
    }
    const userLimited = await api.call("GET", `/api/payments/balance/${id}`, { token });
    expect(userLimited.status).toBe(429);
    expect(userLimited.body.error.details.limit).toBe("user");

    // IP budget 12 has paid for 6 requests so far (register, the failed login, 4 balance reads;
    // the login refused by the auth budget never reached it); anonymous reads run out the rest.
    let ipLimited: Awaited<ReturnType<Api["call"]>> | null = null;
    for (let i = 0; i < 12 && !ipLimited; i++) {
      const r = await api.call("GET", "/api/users/rl_user");
      if (r.status === 429) ipLimited = r;
      else expect(r.status).toBe(200);
    }
    expect(ipLimited?.body.error.details.limit).toBe("ip");
  });
});

describe("rate limits switched off", () => {
  let env: TestEnv;
  let api: Api;
  beforeAll(async () => {
    env = await createTestEnv("ratelimit_off");
    api = await startApi(env, {
      RATE_LIMIT_IP_PER_MIN: "0",
      RATE_LIMIT_USER_PER_MIN: "0",
      RATE_LIMIT_AUTH_PER_MIN: "1",
    });
  });
  afterAll(async () => {
    await api?.close();
    await env?.cleanup();
  });

  it("disables every limit, the stricter auth one too, when both per-minute limits are 0", async () => {
    expect((await register(api, "free_user")).status).toBe(201);
    const statuses = await Promise.all(
      Array.from({ length: 10 }, () =>
        api.call("POST", "/api/users/login", {
          body: { email: "free_user@example.test", password: "wrong-password-1" },
        }),
      ),
    );
    expect(statuses.map((r) => r.status)).toEqual(Array(10).fill(401));
    expect(await env.redis.keys(`${env.redisPrefix}rl:*`)).toEqual([]);
  });
});

describe("CORS with an origin list, and tokens", () => {
  let env: TestEnv;
  let api: Api;
  let user: { id: string; token: string; email: string };
  beforeAll(async () => {
    env = await createTestEnv("cors");
    api = await startApi(env, { CORS_ORIGINS: "https://app.3am.test, https://studio.3am.test" });
    user = await api.register();
  });
  afterAll(async () => {
    await api?.close();
    await env?.cleanup();
  });

  const preflight = (origin: string) =>
    fetch(`${api.base}/api/payments/tip`, {
      method: "OPTIONS",
      headers: {
        origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type, idempotency-key",
      },
    });

  it("echoes an allowed origin, varies on Origin, and refuses others", async () => {
    const ok = await preflight("https://studio.3am.test");
    expect(ok.status).toBe(204);
    expect(ok.headers.get("access-control-allow-origin")).toBe("https://studio.3am.test");
    expect(ok.headers.get("vary")).toContain("Origin");
    expect(ok.headers.get("access-control-allow-methods")).toContain("POST");
    expect(ok.headers.get("access-control-allow-headers")).toContain("Authorization");

    const bad = await preflight("https://evil.example");
    expect(bad.status).toBe(403);
    expect(bad.headers.get("access-control-allow-origin")).toBeNull();

    const get = await api.call("GET", `/api/payments/balance/${user.id}`, {
      token: user.token,
      headers: { origin: "https://evil.example" },
    });
    expect(get.status).toBe(200); // the browser, not the server, withholds the answer
    expect(get.headers.get("access-control-allow-origin")).toBeNull();
    const allowed = await api.call("GET", `/api/payments/balance/${user.id}`, {
      token: user.token,
      headers: { origin: "https://app.3am.test" },
    });
    expect(allowed.headers.get("access-control-allow-origin")).toBe("https://app.3am.test");
    // Helmet's defaults ride on every answer, errors included.
    const nf = await api.call("GET", "/api/nowhere");
    expect(nf.headers.get("x-content-type-options")).toBe("nosniff");
    expect(nf.headers.get("strict-transport-security")).toContain("max-age=");
  });

  it("refuses expired, forged, wrongly signed, non-user and malformed tokens with 401", async () => {
    const key = (s: string) => new TextEncoder().encode(s);
    const sign = (claims: Record<string, unknown>, secret = TEST_JWT_SECRET, exp: number | string = "1h") =>
      new SignJWT({ email: user.email, role: "authenticated", ...claims })
        .setProtectedHeader({ alg: "HS256" })
        .setSubject(user.id)
        .setAudience("authenticated")
        .setExpirationTime(exp)
        .sign(key(secret));
    const nowS = Math.floor(Date.now() / 1000);
    const [header, payload] = user.token.split(".");
    const tokens = {
      expired: await sign({}, TEST_JWT_SECRET, nowS - 10),
      wrongSecret: await sign({}, "another-secret-another-secret-another-secret"),
      serviceRole: await sign({ role: "service_role" }),
      unsigned: `${Buffer.from('{"alg":"none"}').toString("base64url")}.${payload}.`,
      tampered: `${header}.${Buffer.from(JSON.stringify({ sub: randomUUID(), role: "authenticated", aud: "authenticated", exp: nowS + 600 })).toString("base64url")}.${user.token.split(".")[2]}`,
      garbage: "not-a-jwt",
    };
    for (const [name, token] of Object.entries(tokens)) {
      const r = await api.call("GET", `/api/payments/balance/${user.id}`, { token });
      expect({ name, status: r.status, code: r.body.error?.code }).toEqual({
        name,
        status: 401,
        code: "unauthorized",
      });
    }
    const noHeader = await api.call("GET", `/api/payments/balance/${user.id}`);
    expect(noHeader.status).toBe(401);
    const basic = await api.call("GET", `/api/payments/balance/${user.id}`, {
      headers: { authorization: "Basic dXNlcjpwYXNz" },
    });
    expect(basic.status).toBe(401);
  });
});

describe("production", () => {
  it("refuses to start without SUPABASE_JWT_SECRET, saying which variable", async () => {
    const child = spawn(process.execPath, ["--import", "tsx", "src/main/main.ts"], {
      env: {
        ...process.env,
        NODE_ENV: "production",
        SUPABASE_JWT_SECRET: "",
        DATABASE_URL: "postgres://postgres@127.0.0.1:1/never",
        REDIS_URL,
        PORT: "0",
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stderr = "";
    child.stderr.on("data", (c) => {
      stderr += c;
    });
    const code = await new Promise<number | null>((resolve) => child.on("exit", resolve));
    expect(code).toBe(1);
    expect(stderr).toContain("SUPABASE_JWT_SECRET is required when NODE_ENV=production");
    expect(stderr.trim().split("\n")).toHaveLength(1);
  });
});

describe("Supabase Auth", () => {
  let env: TestEnv;
  let api: Api;
  let gotrue: GoTrueStandin;
  beforeAll(async () => {
    gotrue = await startGoTrueStandin();
    env = await createTestEnv("supabase");
    api = await startApi(env, { SUPABASE_URL: gotrue.url, SUPABASE_SERVICE_KEY: gotrue.serviceKey });
  });
  afterAll(async () => {
    await api?.close();
    await env?.cleanup();
    await gotrue?.close();
  });

  it("registers through auth.admin.createUser and keeps Supabase's user id", async () => {
    const r = await register(api, "supa_user");
    expect(r.status).toBe(201);
    expect(gotrue.calls).toHaveLength(1);
    const call = gotrue.calls[0]!;
    expect(call.authorization).toBe(`Bearer ${gotrue.serviceKey}`);
    expect(call.body).toMatchObject({
      email: "supa_user@example.test",
      password: "securepass123",
      email_confirm: true,
    });
    const row = await env.pool.query("SELECT id, password_hash FROM users WHERE email = $1", [
      "supa_user@example.test",
    ]);
    expect(row.rows[0]).toEqual({ id: r.body.user.id, password_hash: null });

    // Supabase already has this email (registered elsewhere): a clear 409, nothing stored here.
    const before = await env.pool.query("SELECT count(*)::int AS n FROM users");
    const dup = await api.call("POST", "/api/users/register", {
      body: {
        email: "supa_user@example.test",
        username: "supa_other",
        display_name: "x",
        password: "securepass123",
      },
    });
    expect(dup.status).toBe(409);
    await fetch(`${gotrue.url}/auth/v1/admin/users`, {
      method: "POST",
      headers: { authorization: `Bearer ${gotrue.serviceKey}`, "content-type": "application/json" },
      body: JSON.stringify({ email: "elsewhere@example.test", password: "securepass123" }),
    });
    const viaSupabaseOnly = await register(api, "elsewhere");
    expect(viaSupabaseOnly.status).toBe(409);
    expect(viaSupabaseOnly.body.error.code).toBe("email_taken");
    expect((await env.pool.query("SELECT count(*)::int AS n FROM users")).rows[0]).toEqual(before.rows[0]);
  });

  it("leaves login to Supabase and accepts tokens signed with the project's JWKS", async () => {
    const reg = await register(api, "supa_jwks");
    const { id, email } = reg.body.user;
    const login = await api.call("POST", "/api/users/login", {
      body: { email, password: "securepass123" },
    });
    expect(login.status).toBe(403);
    expect(login.body.error.message).toContain("Supabase");

    const token = await gotrue.issueToken(id, email);
    const bal = await api.call("GET", `/api/payments/balance/${id}`, { token });
    expect(bal.status).toBe(200);
    expect(bal.body).toMatchObject({ user_id: id, balance: "0.00" });

    const expired = await gotrue.issueToken(id, email, -60);
    expect((await api.call("GET", `/api/payments/balance/${id}`, { token: expired })).status).toBe(401);
    const other = await startGoTrueStandin(); // same shape, another project's key
    try {
      const foreign = await other.issueToken(id, email);
      expect((await api.call("GET", `/api/payments/balance/${id}`, { token: foreign })).status).toBe(401);
    } finally {
      await other.close();
    }
  });
});
