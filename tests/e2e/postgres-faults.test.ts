// Postgres faults (issue 12 item 5): with Postgres refusing connections, and with the network to
// it black-holed (a local TCP proxy that stops forwarding), every route that needs Postgres
// answers 503 with Retry-After within its bound instead of a 500 or no answer; tipping keeps
// working from memory; once Postgres is back, the same requests succeed.
import { createServer, type Server, type Socket, connect } from "node:net";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Api, startApi } from "../helpers/api.ts";
import { createTestEnv, PG_ADMIN_URL, type TestEnv } from "../helpers/env.ts";

const BOUNDS = { PG_CONNECT_TIMEOUT_MS: "1000", PG_STATEMENT_TIMEOUT_MS: "1500" };
/** Connect timeout, then statement timeout plus the client's extra second, plus slack. */
const ANSWER_WITHIN_MS = 6000;

let env: TestEnv;
const apis: Api[] = [];

beforeAll(async () => {
  env = await createTestEnv("pg_faults");
});
afterAll(async () => {
  for (const a of apis) await a.close().catch(() => {});
  await env?.cleanup();
});

/** A user, a creator, the user funded, both in memory, and an admin. */
async function people(api: Api) {
  const admin = await api.register();
  await api.core.pool.query("UPDATE users SET role = 'admin' WHERE id = $1", [admin.id]);
  const viewer = await api.register();
  const creator = await api.register("creator");
  await api.fund(viewer.id, 1000);
  // The first tip puts the creator's username in memory, as a live stream does.
  const first = await api.call("POST", "/api/payments/tip", {
    token: viewer.token,
    body: { from_user_id: viewer.id, to_creator_username: creator.username, amount: 1 },
  });
  expect(first.status).toBe(201);
  return { admin, viewer, creator };
}

/** Routes that read or write Postgres, each expected to fail fast and clearly while it is gone. */
function needingPostgres(api: Api, p: Awaited<ReturnType<typeof people>>) {
  return [
    () =>
      api.call("POST", "/api/users/login", { body: { email: p.viewer.email, password: "securepass123" } }),
    () => api.call("GET", `/api/users/${p.creator.username}`),
    () => api.call("PUT", `/api/users/${p.viewer.id}`, { token: p.viewer.token, body: { bio: "x" } }),
    () => api.call("GET", "/api/admin/fraud-logs", { token: p.admin.token }),
  ];
}

async function expectFast503(calls: Array<() => ReturnType<Api["call"]>>) {
  for (const [i, call] of calls.entries()) {
    const started = Date.now();
    const r = await call();
    const tookMs = Date.now() - started;
    expect({ i, status: r.status, code: r.body?.error?.code }).toEqual({
      i,
      status: 503,
      code: "unavailable",
    });
    expect(r.headers.get("retry-after")).toBe("1");
    expect(tookMs, `call ${i} took ${tookMs} ms`).toBeLessThan(ANSWER_WITHIN_MS);
  }
}

describe("Postgres unavailable", () => {
  it("refusing connections: 503 with Retry-After at once, tips go on, and it recovers by itself", async () => {
    const api = await startApi(env, BOUNDS);
    apis.push(api);
    const p = await people(api);
    const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
    await admin.connect();
    try {
      await admin.query(`ALTER DATABASE ${env.name} ALLOW_CONNECTIONS false`);
      await admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", [
        env.name,
      ]);
      await expectFast503(needingPostgres(api, p));
      const tip = await api.call("POST", "/api/payments/tip", {
        token: p.viewer.token,
        body: { from_user_id: p.viewer.id, to_creator_username: p.creator.username, amount: 1 },
      });
      expect(tip.status).toBe(201);
    } finally {
      await admin.query(`ALTER DATABASE ${env.name} ALLOW_CONNECTIONS true`);
      await admin.end();
    }
    for (const call of needingPostgres(api, p)) expect((await call()).status).toBe(200);
    // One ledger owner per Redis prefix: the next test starts its own.
    await api.close();
    apis.splice(apis.indexOf(api), 1);
  });

  it("black-holed network: 503 within the connect and statement bounds, never a hang", async () => {
    const proxy = await blackholeProxy();
    try {
      const url = new URL(env.databaseUrl);
      url.port = String(proxy.port);
      url.hostname = "127.0.0.1";
      const api = await startApi(env, { ...BOUNDS, DATABASE_URL: url.toString(), PERSIST_THREAD: "false" });
      apis.push(api);
      const p = await people(api);
      proxy.blackhole(true);
      await expectFast503(needingPostgres(api, p));
      proxy.blackhole(false);
      for (const call of needingPostgres(api, p)) expect((await call()).status).toBe(200);
    } finally {
      proxy.blackhole(false);
      await proxy.close();
    }
  });
});

/** A TCP proxy to Postgres that, when black-holed, accepts and reads but forwards nothing. */
async function blackholeProxy(): Promise<{
  port: number;
  blackhole(on: boolean): void;
  close(): Promise<void>;
}> {
  const target = new URL(PG_ADMIN_URL);
  const sockets = new Set<Socket>();
  let holed = false;
  const server: Server = createServer((client) => {
    const upstream = connect(Number(target.port || 5432), target.hostname);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("error", () => {});
      s.on("close", () => {
        sockets.delete(s);
        client.destroy();
        upstream.destroy();
      });
    }
    client.on("data", (d) => {
      if (!holed) upstream.write(d);
    });
    upstream.on("data", (d) => {
      if (!holed) client.write(d);
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    port: (server.address() as { port: number }).port,
    blackhole(on) {
      // Coming back, the connections that lost bytes are broken: reset them, as a real network
      // partition's end would after the lost segments' retransmissions gave up.
      if (!on && holed) for (const s of sockets) s.destroy();
      holed = on;
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
