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
