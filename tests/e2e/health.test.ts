import { spawnSync } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Core } from "../../src/main/core.ts";
import { createHttpServer, type HttpServer } from "../../src/main/http-app.ts";
import { SECURITY_HEADERS } from "../../src/http/respond.ts";
import { stripeClient } from "../../src/payments/stripe.ts";
import { createTestEnv, type TestEnv } from "../helpers/env.ts";
import { silentLogger, startTestCore } from "../helpers/ledger.ts";

let env: TestEnv;
let core: Core;
let http: HttpServer;
let base: string;

beforeAll(async () => {
  env = await createTestEnv("health");
  core = await startTestCore(env);
  // Health needs no payments: a Stripe client that is never called.
  const stripe = {
    stripe: stripeClient("sk_test_unused", "http://127.0.0.1:9"),
    webhookSecret: "whsec_unused",
    setWebhookUrl: () => {},
    close: async () => {},
  };
  http = createHttpServer({ config: core.config, logger: silentLogger, core, stripe });
  base = `http://127.0.0.1:${await http.listen(0, "127.0.0.1")}`;
});
afterAll(async () => {
  await http?.close();
  await core?.stop();
  await env?.cleanup();
});

describe("health endpoints", () => {
  it("answers /healthz with the security headers on every response", async () => {
    const r = await fetch(`${base}/healthz`);
    expect(r.status).toBe(200);
    expect(await r.json()).toEqual({ status: "ok" });
    for (const [k, v] of SECURITY_HEADERS) expect(r.headers.get(k)).toBe(v);
    expect(r.headers.get("content-type")).toBe("application/json; charset=utf-8");
  });

  it("reports Postgres, Redis and WAL persistence on /readyz", async () => {
    const r = await fetch(`${base}/readyz`);
    const body = await r.json();
    expect(r.status, JSON.stringify(body)).toBe(200);
    expect(body).toMatchObject({
      status: "ready",
      postgres: "up",
      redis: "up",
      ledger: { recovering: false, halted: null },
      wal: { halted_shards: [] },
    });
    // This process owns every shard (SHARDS=8 in tests), each under the token its start-up
    // recovery took (acquire, then rotate: 2).
    expect(body.ledger.shards_owned).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(Object.values(body.ledger.fencing_tokens)).toEqual(Array(8).fill(2));
    expect(body.ledger.owner).toMatch(/^[0-9a-f-]{36}/);
  });

  it("answers an unknown route with 404 in the error shape", async () => {
    const r = await fetch(`${base}/api/nope`, { method: "POST" });
    expect(r.status).toBe(404);
    expect(await r.json()).toEqual({ error: { code: "not_found", message: "no route for POST /api/nope" } });
  });
});

describe("start-up", () => {
  const start = (env: Record<string, string>) =>
    spawnSync(process.execPath, ["--import", "tsx", "src/main/main.ts"], {
      env: { ...process.env, LOG_LEVEL: "silent", ...env },
      encoding: "utf8",
      timeout: 30_000,
    });

  it("exits with one line naming Postgres and how to get it when it cannot be reached", () => {
    const r = start({ DATABASE_URL: "postgres://postgres@127.0.0.1:1/none" });
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toMatch(/cannot reach Postgres.*docker compose up -d postgres/);
  });

  it("exits with one line naming Redis when it cannot be reached", () => {
    const r = start({ DATABASE_URL: env.databaseUrl, REDIS_URL: "redis://127.0.0.1:1" });
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toMatch(/cannot reach Redis.*docker compose up -d redis/);
  });

  it("exits with one line naming a bad variable", () => {
    const r = start({ SHARDS: "-3" });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^3am: invalid configuration: SHARDS/);
  });
});
