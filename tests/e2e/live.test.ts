// The WebSocket protocol against a started server: upgrade auth, the welcome, tips and their
// acks (same ledger command and idempotency keys as HTTP), bad frames, limits and fraud rules.
import { randomUUID } from "node:crypto";
import net from "node:net";
import { SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Api, startApi, TEST_JWT_SECRET } from "../helpers/api.ts";
import { createTestEnv, type TestEnv, waitFor } from "../helpers/env.ts";
import { connectLive } from "../helpers/live.ts";

let env: TestEnv;
let api: Api;

beforeAll(async () => {
  env = await createTestEnv("live");
  api = await startApi(env, {
    FRAUD_MAX_TX_PER_HOUR: "100000",
    FRAUD_MAX_VOLUME_PER_HOUR_USD: "1000000",
    WS_MAX_MESSAGE_BYTES: "1024",
  });
});
afterAll(async () => {
  await api.close();
  await env.cleanup();
});

async function token(sub: string, expS: number, secret = TEST_JWT_SECRET): Promise<string> {
  return new SignJWT({ email: "x@example.test", role: "authenticated" })
    .setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .setSubject(sub)
    .setAudience("authenticated")
    .setIssuedAt()
    .setExpirationTime(expS)
    .sign(new TextEncoder().encode(secret));
}

describe("upgrade", () => {
  it("refuses a missing, expired or forged token with 401 and no socket", async () => {
    const v = await api.register();
    const now = Math.floor(Date.now() / 1000);
    await expect(connectLive(api.base, "")).rejects.toMatchObject({ status: 401 });
    await expect(connectLive(api.base, `access_token=${await token(v.id, now - 10)}`)).rejects.toMatchObject({
      status: 401,
    });
    const forged = await token(v.id, now + 600, "another-secret-another-secret-another-secret-0");
    await expect(connectLive(api.base, `access_token=${forged}`)).rejects.toMatchObject({ status: 401 });
    await expect(connectLive(api.base, "access_token=not.a.jwt")).rejects.toMatchObject({ status: 401 });
    await expect(connectLive(api.base, "overlay_key=ovl_nope")).rejects.toMatchObject({ status: 401 });
  });

  it("never opens a socket only to drop it: a handshake without Connection: Upgrade gets 400", async () => {
    // uWS flags `Connection: close` on the request; its cork() epilogue read that flag back after
    // the upgrade and shut the fresh socket down right after the welcome (1006). The same stale read
    // of memory the WebSocket reuses dropped about 1 in 3,000 normal sockets under load.
    const v = await api.register();
    const raw = async (connection: string): Promise<string> => {
      const url = new URL(api.base);
      const sock = net.connect(Number(url.port), url.hostname);
      let got = "";
      sock.on("data", (b) => {
        got += b.toString("latin1");
      });
      sock.write(
        `GET /ws?access_token=${v.token} HTTP/1.1\r\nHost: ${url.host}\r\nUpgrade: websocket\r\n` +
          `Connection: ${connection}\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n` +
          "Sec-WebSocket-Version: 13\r\n\r\n",
      );
      try {
        // Either the welcome came (upgraded) or a whole error answer (JSON body after the headers).
        await waitFor(
          () => got.includes('"op":"welcome"') || /^HTTP\/1\.1 [45]\d\d [\s\S]*\r\n\r\n\{.*\}$/.test(got),
          10_000,
          "the handshake's answer",
        );
      } finally {
        sock.destroy();
      }
      return got;
    };
    const refused = await raw("close");
    expect(refused).toMatch(/^HTTP\/1\.1 400 /);
    expect(refused).not.toContain("101 Switching Protocols");
    expect(refused).toContain("validation_error");
    // A proper handshake (token list, any case) still upgrades and gets its welcome.
    const ok = await raw("keep-alive, UPGRADE");
    expect(ok).toMatch(/^HTTP\/1\.1 101 /);
    expect(ok).toContain('"op":"welcome"');
  });

  it("closes a socket with 4002 when its token expires, and only that socket", async () => {
    const v = await api.register();
    const now = Math.floor(Date.now() / 1000);
    // Opened in this order so the later expiry is armed first and the sweep must re-arm earlier.
    const later = await connectLive(api.base, `access_token=${await token(v.id, now + 4)}`);
    const soon = await connectLive(api.base, "", { protocols: ["bearer", await token(v.id, now + 2)] });
    const lasting = await connectLive(api.base, `access_token=${await token(v.id, now + 600)}`);
    const closedSoon = await soon.waitClosed(10_000);
    expect(closedSoon).toEqual({ code: 4002, reason: "access token expired: reconnect with a fresh token" });
    expect(Date.now()).toBeGreaterThanOrEqual((now + 2) * 1000);
    expect(later.closed).toBeNull();
    expect((await later.waitClosed(10_000)).code).toBe(4002);
    expect(Date.now()).toBeGreaterThanOrEqual((now + 4) * 1000);
    // The long-lived socket is still open and served.
    expect(lasting.closed).toBeNull();
    lasting.send({ op: "nope" });
    expect((await lasting.next((f) => f.op === "error")).error.code).toBe("validation_error");
    await lasting.close();
  });

  it("accepts the token in the URL or as Sec-WebSocket-Protocol: bearer, <jwt>; welcomes", async () => {
    const v = await api.register();
    const a = await connectLive(api.base, `access_token=${v.token}`);
    expect(a.frames[0]).toEqual({ op: "welcome", user_id: v.id, keepalive_s: 60, read_only: false });
    const b = await connectLive(api.base, "", { protocols: ["bearer", v.token] });
    expect(b.ws.protocol).toBe("bearer");
    expect(b.frames[0].user_id).toBe(v.id);
    await a.close();
    await b.close();
  });
});

describe("tips over the socket", () => {
  it("acks 1,000 pipelined tips on one socket with 201, and the balances are exact", async () => {
    const v = await api.register();
    const c = await api.register("creator");
    await api.fund(v.id, 1000 * 300);
    const s = await connectLive(api.base, `access_token=${v.token}`);
    const ids = Array.from({ length: 1000 }, (_, i) => `burst-${i}-${randomUUID()}`);
    for (const [i, id] of ids.entries()) {
      s.send({ op: "tip", id, to_creator_username: c.username, amount: i % 2 === 0 ? 1 : 3 });
    }
    const acks = await Promise.all(ids.map((id) => s.next((f) => f.op === "ack" && f.id === id, 60_000)));
    expect(acks.every((a) => a.status === 201)).toBe(true);
    expect(new Set(acks.map((a) => a.transaction.id)).size).toBe(1000);
    const spent = 500 * 100 + 500 * 300;
    expect((await api.core.ledger.getAccount(v.id)).balanceCents).toBe(1000 * 300 - spent);
    // The creator is credited after the debits are durable; net = amount - 3%.
    const net = 500 * 97 + 500 * 291;
    await expect
      .poll(async () => (await api.core.ledger.getAccount(c.id)).balanceCents, { timeout: 10_000 })
      .toBe(net);
    const last = acks.reduce((m, a) => (a.balance.balance < m ? a.balance.balance : m), "999999");
    expect(Number(last)).toBe((1000 * 300 - spent) / 100);
    await s.close();
  });

  it("shares idempotency keys with HTTP: a key used over WS replays over HTTP, and back", async () => {
    const v = await api.register();
    const c = await api.register("creator");
    await api.fund(v.id, 1000);
    const s = await connectLive(api.base, `access_token=${v.token}`);
    const k1 = `ws-then-http-${randomUUID()}`;
    s.send({ op: "tip", id: k1, to_creator_username: c.username, amount: 1, message: "gg" });
    const ack = await s.next((f) => f.id === k1);
    expect(ack.status).toBe(201);
    const http = await api.call("POST", "/api/payments/tip", {
      token: v.token,
      body: {
        from_user_id: v.id,
        to_creator_username: c.username,
        amount: 1,
        message: "gg",
        idempotency_key: k1,
      },
    });
    expect(http.status).toBe(201);
    expect(http.body.transaction.id).toBe(ack.transaction.id);
    // Same key, different request: a conflict, over either edge.
    s.send({ op: "tip", id: k1, to_creator_username: c.username, amount: 3 });
    expect((await s.next((f) => f.id === k1)).error.code).toBe("idempotency_conflict");
    const k2 = `http-then-ws-${randomUUID()}`;
    const h2 = await api.call("POST", "/api/payments/tip", {
      token: v.token,
      body: { from_user_id: v.id, to_creator_username: c.username, amount: 3, idempotency_key: k2 },
    });
    s.send({ op: "tip", id: k2, to_creator_username: c.username, amount: 3 });
    const a2 = await s.next((f) => f.id === k2);
    expect(a2.status).toBe(201);
    expect(a2.transaction.id).toBe(h2.body.transaction.id);
    expect((await api.core.ledger.getAccount(v.id)).balanceCents).toBe(1000 - 100 - 300);
    await s.close();
  });

  it("answers insufficient funds and fraud with the HTTP codes and statuses", async () => {
    const v = await api.register();
    const c = await api.register("creator");
    const s = await connectLive(api.base, `access_token=${v.token}`);
    s.send({ op: "tip", id: "poor-1", to_creator_username: c.username, amount: 1 });
    const a = await s.next((f) => f.id === "poor-1");
    expect(a).toMatchObject({ op: "ack", status: 422, error: { code: "insufficient_funds" } });
    // Self-transfer is a critical fraud rule: a creator tipping themselves.
    await api.fund(c.id, 500);
    const cs = await connectLive(api.base, `access_token=${c.token}`);
    cs.send({ op: "tip", id: "self-1", to_creator_username: c.username, amount: 1 });
    expect(await cs.next((f) => f.id === "self-1")).toMatchObject({
      status: 422,
      error: { code: "fraud_blocked" },
    });
    s.send({ op: "tip", id: "nobody-1", to_creator_username: "no_such_creator", amount: 1 });
    expect(await s.next((f) => f.id === "nobody-1")).toMatchObject({
      status: 404,
      error: { code: "not_found" },
    });
    s.send({ op: "tip", id: "badamt-1", to_creator_username: c.username, amount: 2 });
    expect(await s.next((f) => f.id === "badamt-1")).toMatchObject({
      status: 400,
      error: { code: "validation_error" },
    });
    s.send({ op: "tip", id: "long-1", to_creator_username: c.username, amount: 1, message: "x".repeat(201) });
    expect(await s.next((f) => f.id === "long-1")).toMatchObject({ status: 400 });
    expect((await api.core.ledger.getAccount(c.id)).balanceCents).toBe(500);
    await s.close();
    await cs.close();
  });

  it("stores superlikes with their own type and amounts, over WS and HTTP", async () => {
    const v = await api.register();
    const c = await api.register("creator");
    await api.fund(v.id, 2000);
    const s = await connectLive(api.base, `access_token=${v.token}`);
    s.send({ op: "tip", id: "sl-1", kind: "superlike", to_creator_username: c.username, amount: 1 });
    expect((await s.next((f) => f.id === "sl-1")).status).toBe(400); // superlikes are $3
    s.send({ op: "tip", id: "sl-2", kind: "superlike", to_creator_username: c.username, amount: 3 });
    const a = await s.next((f) => f.id === "sl-2");
    expect(a.status).toBe(201);
    expect(a.transaction).toMatchObject({ type: "superlike", amount: "3.00", net_amount: "2.91" });
    // A superlike never replays a tip of the same key and amount.
    s.send({ op: "tip", id: "sl-2", to_creator_username: c.username, amount: 3 });
    expect((await s.next((f) => f.id === "sl-2")).error.code).toBe("idempotency_conflict");
    const h = await api.call("POST", "/api/payments/tip", {
      token: v.token,
      body: { from_user_id: v.id, to_creator_username: c.username, amount: 3, kind: "superlike" },
    });
    expect(h.status).toBe(201);
    expect(h.body.transaction.type).toBe("superlike");
    await api.core.persister.drain();
    const rows = await env.pool.query("SELECT type FROM transactions WHERE to_user_id = $1", [c.id]);
    expect(rows.rows.map((r) => r.type)).toEqual(["superlike", "superlike"]);
    await s.close();
  });
});

describe("bad frames", () => {
  it("answers bad JSON and unknown ops with an error frame and keeps the socket open", async () => {
    const v = await api.register();
    const s = await connectLive(api.base, `access_token=${v.token}`);
    s.send("{not json");
    expect((await s.next((f) => f.op === "error")).error.code).toBe("validation_error");
    s.send({ op: "dance" });
    expect((await s.next((f) => f.op === "error")).error.code).toBe("validation_error");
    s.send("[1,2]");
    expect((await s.next((f) => f.op === "error")).error.code).toBe("validation_error");
    s.send({ op: "tip", to_creator_username: "x", amount: 1 }); // no id: nothing to ack
    expect((await s.next((f) => f.op === "error")).error.code).toBe("validation_error");
    s.send({ op: "subscribe", channel: "tips" }); // a viewer has no feed
    expect((await s.next((f) => f.op === "error")).error.code).toBe("forbidden");
    expect(s.closed).toBeNull();
    await s.close();
  });

  it("closes on a binary frame with 1003 and on an oversized one with 1009", async () => {
    const v = await api.register();
    const a = await connectLive(api.base, `access_token=${v.token}`);
    a.ws.send(Buffer.from([1, 2, 3]), { binary: true });
    expect((await a.waitClosed()).code).toBe(1003);
    const b = await connectLive(api.base, `access_token=${v.token}`);
    b.send({ op: "tip", id: "big", message: "x".repeat(2000) });
    expect((await b.waitClosed()).code).toBe(1009);
  });
});

describe("keepalive and rate limits", () => {
  let env2: TestEnv;
  let api2: Api;
  beforeAll(async () => {
    env2 = await createTestEnv("livekeep");
    api2 = await startApi(env2, {
      WS_IDLE_TIMEOUT_S: "8",
      RATE_LIMIT_IP_PER_MIN: "100000",
      RATE_LIMIT_USER_PER_MIN: "5",
    });
  });
  afterAll(async () => {
    await api2.close();
    await env2.cleanup();
  });

  it("pings a quiet socket, which stays open by answering; one that never answers is closed", async () => {
    const v = await api2.register();
    const alive = await connectLive(api2.base, `access_token=${v.token}`);
    let pings = 0;
    alive.ws.on("ping", () => pings++);
    const mute = await connectLive(api2.base, `access_token=${v.token}`, { autoPong: false });
    expect(alive.frames[0].keepalive_s).toBe(8);
    const t0 = Date.now();
    await mute.waitClosed(30_000);
    // Pinged over and over for longer than the idle timeout, and still open.
    await waitFor(() => pings >= 2 && Date.now() - t0 > 9000, 30_000, "two pings past the idle timeout");
    expect(alive.closed).toBeNull();
    await alive.close();
  }, 40_000);

  it("spends the same per-user budget as HTTP: past it, tips are acked 429 rate_limited", async () => {
    const v = await api2.register(); // registering spent none of the user budget
    const c = await api2.register("creator");
    await api2.fund(v.id, 10_000);
    const s = await connectLive(api2.base, `access_token=${v.token}`);
    for (let i = 0; i < 8; i++)
      s.send({ op: "tip", id: `rl-${i}`, to_creator_username: c.username, amount: 1 });
    const acks = await Promise.all(Array.from({ length: 8 }, (_, i) => s.next((f) => f.id === `rl-${i}`)));
    expect(acks.filter((a) => a.status === 201)).toHaveLength(5);
    const limited = acks.filter((a) => a.status === 429);
    expect(limited).toHaveLength(3);
    expect(limited[0].error).toMatchObject({ code: "rate_limited", details: { limit: "user" } });
    // The HTTP budget is the same one: spent.
    const h = await api2.call("GET", `/api/payments/balance/${v.id}`, { token: v.token });
    expect(h.status).toBe(429);
    expect((await api2.core.ledger.getAccount(v.id)).balanceCents).toBe(10_000 - 500);
    await s.close();
  });
});
