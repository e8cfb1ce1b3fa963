// HTTP requests malformed below the API (issue 12, item 10, transport half), on raw sockets.
//
// What reaches our code is refused there: a header that must come once and comes twice (two
// Content-Length values, two tokens, two idempotency keys...) answers 400 in the error shape and
// closes the connection, so nothing after it on that stream is run as a request (if more is
// already buffered behind it, uWS closes the connection without an answer instead).
//
// What never reaches our code cannot be answered by it, and nothing in this uWS build lets it
// reach our code. The build we run (@trufflesuite/uws-js-unofficial 20.30.0, the newest build on npm
// we found whose binary loads on glibc 2.36) has no error answer compiled in (`strings` on
// uws_linux_x64_115.node finds no "400 Bad Request" or "431"), reads no UWS_* environment
// variable, and offers no hook before its parser: a request it cannot parse is taken for "not
// complete yet" and buffered. The socket is closed when that buffer passes 4 KiB, or by the idle
// timeout (HTTP_IDLE_TIMEOUT_S = 10, a compile-time constant, on a 4 s timer); the header limit
// (50 slots: request line, 48 headers, end) is a compile-time array size too. Newer builds
// (@btc-vision/uwebsockets.js 20.56/20.57 on npm) carry 400/431/505 answers, but their binaries
// need glibc 2.38 (__isoc23_strtol, __isoc23_strtoul, __isoc23_sscanf), and even upstream 20.48
// still holds a request with too many headers 8-10 s (uNetworking/uWebSockets.js issue 1099). For
// these classes this test pins what we can promise: the server keeps serving everyone else, and
// frees every such socket within a bound, never answering 2xx or 5xx.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Api, startApi } from "../helpers/api.ts";
import { createTestEnv, type TestEnv } from "../helpers/env.ts";
import { parseAnswer, rawExchange } from "../helpers/raw-http.ts";

let env: TestEnv;
let api: Api;
let port: number;

beforeAll(async () => {
  env = await createTestEnv("transport");
  api = await startApi(env);
  port = Number(new URL(api.base).port);
});
afterAll(async () => {
  await api?.close();
  await env?.cleanup();
});

const HOST = "Host: 127.0.0.1\r\n";
/** uWS's idle timeout is 10 s, checked on a 4 s timer: a held socket is closed within about 14 s. */
const FREED_WITHIN_MS = 20_000;

describe("a header that must come once, given twice", () => {
  const tipBody =
    '{"from_user_id":"00000000-0000-4000-8000-000000000000","to_creator_username":"x","amount":1}';
  const cases: Array<[string, (token: string) => string]> = [
    [
      "content-length",
      // uWS frames the body by the first value; the rest would be read as the next request.
      (t) =>
        `POST /api/payments/tip HTTP/1.1\r\n${HOST}Authorization: Bearer ${t}\r\nContent-Type: application/json\r\n` +
        `Content-Length: 0\r\nContent-Length: ${tipBody.length}\r\n\r\n${tipBody}`,
    ],
    [
      "authorization",
      (t) =>
        `GET /api/payments/balance/x HTTP/1.1\r\n${HOST}Authorization: Bearer ${t}\r\nAuthorization: Bearer x\r\n\r\n`,
    ],
    [
      "idempotency-key",
      (t) =>
        `POST /api/payments/tip HTTP/1.1\r\n${HOST}Authorization: Bearer ${t}\r\nIdempotency-Key: a\r\nIdempotency-Key: b\r\n` +
        `Content-Type: application/json\r\nContent-Length: ${tipBody.length}\r\n\r\n${tipBody}`,
    ],
    [
      "content-type",
      (t) =>
        `POST /api/payments/tip HTTP/1.1\r\n${HOST}Authorization: Bearer ${t}\r\nContent-Type: text/plain\r\n` +
        `Content-Type: application/json\r\nContent-Length: ${tipBody.length}\r\n\r\n${tipBody}`,
    ],
    ["host", () => `GET /api/users/nobody_here HTTP/1.1\r\n${HOST}Host: evil.test\r\n\r\n`],
  ];

  it("answers 400 in the error shape and closes the connection, on every class", async () => {
    const viewer = await api.register();
    for (const [header, request] of cases) {
      const x = await rawExchange(port, request(viewer.token), 3000);
      const answer = parseAnswer(x.received);
      expect(answer?.status, `${header}: ${x.received.toString("latin1").slice(0, 200)}`).toBe(400);
      const body = JSON.parse(answer!.body.toString("utf8"));
      expect(body.error.code).toBe("validation_error");
      expect(body.error.details).toEqual({ header });
      expect(x.closedAfterMs, `${header}: the server closes the connection`).not.toBeNull();
      // One answer only: nothing after the refused request was taken for another.
      expect(x.received.toString("latin1").match(/HTTP\/1\.1 /g)?.length, header).toBe(1);
    }
    // A request smuggled as the body of the second Content-Length is never run: uWS frames the
    // body by the first (0) and would parse the smuggled bytes as the next request.
    const username = `smuggled_${Date.now() % 1_000_000}`;
    const inner = JSON.stringify({
      email: `${username}@example.test`,
      username,
      display_name: "Smuggled",
      password: "securepass123",
    });
    const smuggled =
      `POST /api/users/register HTTP/1.1\r\n${HOST}Content-Type: application/json\r\n` +
      `Content-Length: ${inner.length}\r\n\r\n${inner}`;
    const outer =
      `POST /api/users/login HTTP/1.1\r\n${HOST}Content-Type: application/json\r\n` +
      `Content-Length: 0\r\nContent-Length: ${smuggled.length}\r\n\r\n${smuggled}`;
    const smuggling = await rawExchange(port, outer, 3000);
    expect(smuggling.closedAfterMs, "the server closes the connection").not.toBeNull();
    expect(smuggling.received.toString("latin1")).not.toMatch(/HTTP\/1\.1 2\d\d/);
    const registered = await api.core.pool.query("SELECT 1 FROM users WHERE username = $1", [username]);
    expect(registered.rowCount, "the smuggled registration did not run").toBe(0);
    // A list header may repeat.
    const lists = await rawExchange(
      port,
      `GET /api/users/nobody_here HTTP/1.1\r\n${HOST}Accept: a/b\r\nAccept: c/d\r\nConnection: close\r\n\r\n`,
      3000,
    );
    expect(parseAnswer(lists.received)?.status).toBe(404);
  });
});

describe("requests this uWS build never hands to our code", () => {
  const headers = (n: number) => Array.from({ length: n }, (_, i) => `X-H${i}: v\r\n`).join("");
  const UNANSWERED: Array<[string, string]> = [
    // Host + 48 = 49 headers (uWS keeps 50 slots, one for the request line, one for the end).
    ["49 headers", `GET /healthz HTTP/1.1\r\n${HOST}${headers(48)}\r\n`],
    ["a \\x01 in a header value", `GET /healthz HTTP/1.1\r\n${HOST}X-A: a\x01b\r\n\r\n`],
    ["a bare CR in a header", `GET /healthz HTTP/1.1\r\n${HOST}X-A: a\rb\r\n\r\n`],
    ["bare LF line ends", "GET /healthz HTTP/1.1\nHost: 127.0.0.1\n\n"],
    ["a NUL in the URL", `GET /heal\x00thz HTTP/1.1\r\n${HOST}\r\n`],
    ["a space in the URL", `GET /heal thz HTTP/1.1\r\n${HOST}\r\n`],
    ["an HTTP/0.9 request line", "GET /healthz\r\n\r\n"],
    ["no Host header", "GET /healthz HTTP/1.1\r\n\r\n"],
    ["an underscore in a header name", `GET /healthz HTTP/1.1\r\n${HOST}X_A: b\r\n\r\n`],
    ["a folded header line", `GET /healthz HTTP/1.1\r\n${HOST}X-A: a\r\n b\r\n\r\n`],
    ["an asterisk target", `OPTIONS * HTTP/1.1\r\n${HOST}\r\n`],
    ["an absolute-form target", `GET http://127.0.0.1/healthz HTTP/1.1\r\n${HOST}\r\n`],
    // These uWS closes at once, without an answer.
    [
      "Content-Length with Transfer-Encoding",
      `POST /healthz HTTP/1.1\r\n${HOST}Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
    ],
    ["a Content-Length that is no number", `POST /healthz HTTP/1.1\r\n${HOST}Content-Length: abc\r\n\r\n`],
    ["a lower-case method", `get /healthz HTTP/1.1\r\n${HOST}\r\n`],
    ["4 KiB without a line end", `GET /${"a".repeat(5000)}`],
  ];

  it("are answered 4xx or not at all, every socket is freed within the bound, and the server serves others meanwhile", async () => {
    const viewer = await api.register();
    const creator = await api.register("creator");
    await api.fund(viewer.id, 10_000);
    // 48 headers (Host, 46, Connection) are still parsed: the limit is exactly where the table says.
    const at48 = await rawExchange(
      port,
      `GET /healthz HTTP/1.1\r\n${HOST}${headers(46)}Connection: close\r\n\r\n`,
      3000,
    );
    expect(parseAnswer(at48.received)?.status).toBe(200);

    // Five sockets of each class, 80 in all, held at once.
    const held = UNANSWERED.flatMap(([name, bytes]) =>
      Array.from({ length: 5 }, () =>
        rawExchange(port, bytes, FREED_WITHIN_MS).then((x) => ({ name, ...x })),
      ),
    );
    // While those sockets are held, everyone else is served: reads, and tips that move money
    // (eight: the velocity rule allows ten an hour).
    let tips = 0;
    let reads = 0;
    const until = Date.now() + 3000;
    while (Date.now() < until) {
      const [health, balance] = await Promise.all([
        fetch(`${api.base}/healthz`),
        api.call("GET", `/api/payments/balance/${viewer.id}`, { token: viewer.token }),
      ]);
      expect(health.status).toBe(200);
      expect(balance.status).toBe(200);
      reads++;
      if (tips < 8) {
        const tip = await api.call("POST", "/api/payments/tip", {
          token: viewer.token,
          body: { from_user_id: viewer.id, to_creator_username: creator.username, amount: 1 },
        });
        expect(tip.status, JSON.stringify(tip.body)).toBe(201);
        tips++;
      }
    }
    expect(tips).toBe(8);
    expect(reads).toBeGreaterThan(8);

    const results = await Promise.all(held);
    const slowest = new Map<string, number | null>();
    for (const r of results) {
      const was = slowest.get(r.name);
      const now = r.closedAfterMs === null || was === null ? null : Math.max(was ?? 0, r.closedAfterMs);
      slowest.set(r.name, now);
    }
    const report = [...slowest].map(([name, ms]) => `${name}: ${ms === null ? "held" : `${ms} ms`}`);
    console.log(
      `malformed requests (5 sockets each), the last closed by the server after: ${report.join("; ")}`,
    );
    for (const r of results) {
      const text = r.received.toString("latin1");
      // Today nothing is written; a uWS that answers these may only refuse them (4xx, or 505 for
      // an HTTP version it does not speak).
      if (text.length > 0) expect(text, r.name).toMatch(/^HTTP\/1\.1 (4\d\d|505) /);
      expect(r.closedAfterMs, `${r.name}: freed by the server within ${FREED_WITHIN_MS} ms`).not.toBeNull();
    }
    // And the server is still whole afterwards.
    const balance = await api.call("GET", `/api/payments/balance/${viewer.id}`, { token: viewer.token });
    expect(balance.status).toBe(200);
    expect(balance.body.balance).toBe((100 - tips).toFixed(2));
  }, 60_000);
});
