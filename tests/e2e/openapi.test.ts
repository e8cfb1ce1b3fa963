// GET /openapi.json against the server's own endpoint table: every API route is in it with its
// method and auth (and the auth is what the server enforces), every error code with its status,
// real answers match the documented shapes, and the README's curl examples send bodies the
// routes' own schemas accept.
import { readFileSync } from "node:fs";
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { API_RESPONSES } from "../../src/main/api-doc.ts";
import { httpStatusOf } from "../../src/http/errors.ts";
import { openApiPath, operationKey } from "../../src/http/openapi.ts";
import { type Api, startApi } from "../helpers/api.ts";
import { createTestEnv, type TestEnv } from "../helpers/env.ts";

const HTTP = { get: "get", post: "post", put: "put", del: "delete" } as const;

/** The curl commands of the README's bash blocks: method, path and -d body, shell quoting undone. */
function readmeCurls(readme: string, vars: Record<string, string>) {
  const blocks = [...readme.matchAll(/```bash\n([\s\S]*?)```/g)].map((m) => m[1]!);
  const out: Array<{ method: string; path: string; body: string | null; line: string }> = [];
  for (const block of blocks) {
    for (let i = block.indexOf("curl "); i !== -1; i = block.indexOf("curl ", i)) {
      // One command: tokens until an unquoted newline, pipe or ';'.
      const words: string[] = [];
      let w = "";
      let inWord = false;
      let j = i;
      const flush = () => {
        if (inWord) words.push(w);
        w = "";
        inWord = false;
      };
      for (; j < block.length; j++) {
        const c = block[j]!;
        if (c === "\\" && block[j + 1] === "\n") {
          j++;
          flush();
          continue;
        }
        if (c === "\n" || c === "|" || c === ";" || c === ")") break;
        if (c === " " || c === "\t") {
          flush();
          continue;
        }
        inWord = true;
        if (c === "'") {
          const end = block.indexOf("'", j + 1);
          w += block.slice(j + 1, end);
          j = end;
        } else if (c === '"') {
          j++;
          for (; block[j] !== '"'; j++) {
            if (block[j] === "\\" && /["\\$`]/.test(block[j + 1]!)) w += block[++j];
            else if (block[j] === "$") {
              const name = /^\$([A-Za-z_]+)/.exec(block.slice(j))?.[1];
              if (name) {
                w += vars[name] ?? `$${name}`;
                j += name.length;
              } else w += "$";
            } else w += block[j];
          }
        } else if (c === "$") {
          const name = /^\$([A-Za-z_]+)/.exec(block.slice(j))?.[1];
          if (name) {
            w += vars[name] ?? `$${name}`;
            j += name.length;
          } else w += c;
        } else w += c;
      }
      flush();
      i = j;
      let method: string | null = null;
      let url: string | null = null;
      let body: string | null = null;
      for (let k = 1; k < words.length; k++) {
        const t = words[k]!;
        if (t === "-X") method = words[++k]!;
        else if (t === "-d") body = words[++k]!;
        else if (t === "-H") k++;
        else if (/^https?:\/\//.test(t)) url = t;
      }
      if (!url) continue;
      const u = new URL(url);
      out.push({
        method: method ?? (body !== null ? "POST" : "GET"),
        path: u.pathname,
        body,
        line: words.join(" ").slice(0, 160),
      });
    }
  }
  return out;
}

describe("the API document", () => {
  let env: TestEnv;
  let api: Api;
  let doc: any;
  beforeAll(async () => {
    env = await createTestEnv("openapi");
    api = await startApi(env);
    const r = await fetch(`${api.base}/openapi.json`);
    expect(r.status).toBe(200);
    expect(r.headers.get("content-type")).toMatch(/^application\/json/);
    doc = await r.json();
  });
  afterAll(async () => {
    await api?.close();
    await env?.cleanup();
  });

  it("lists every route of the server's table with its method, auth and request schema", () => {
    expect(doc.openapi).toBe("3.1.0");
    const routes = api.http.endpoints.filter((e) => e.pipeline);
    expect(routes.length).toBeGreaterThan(25);
    let documented = 0;
    for (const e of routes) {
      const op = doc.paths[openApiPath(e.path)]?.[HTTP[e.method]];
      expect(op, `${operationKey(e)} is missing`).toBeDefined();
      expect(e.doc, `${operationKey(e)} has no doc`).toBeDefined();
      expect(op.security).toEqual(e.auth === "user" ? [{ bearer: [] }] : []);
      if (e.body === "json" && e.doc?.body)
        expect(op.requestBody.content["application/json"].schema.type).toBe("object");
      documented++;
    }
    // Nothing documented that the server does not serve.
    const ops = Object.values(doc.paths).flatMap((p: any) => Object.keys(p));
    expect(ops.length).toBe(documented);
    expect(doc.paths["/api/payments/tip"].post.parameters.map((p: any) => p.name)).toContain(
      "Idempotency-Key",
    );
    const withdraw = doc.paths["/api/payments/withdraw"].post;
    expect(withdraw.parameters.find((p: any) => p.name === "Idempotency-Key").required).toBe(true);
    expect(
      withdraw.responses["422"].content["application/json"].schema.properties.error.properties.code.enum,
    ).toEqual(expect.arrayContaining(["insufficient_funds", "below_minimum", "payout_method_required"]));
    expect(withdraw.responses["429"].headers["Retry-After"]).toBeDefined();
    expect(
      doc.paths["/api/payments/tip"].post.requestBody.content["application/json"].schema.properties.amount,
    ).toEqual({
      type: "number",
    });
  });

  it("says which auth each route needs, and the server enforces exactly that", async () => {
    const viewer = await api.register();
    for (const e of api.http.endpoints.filter((x) => x.pipeline)) {
      const op = doc.paths[openApiPath(e.path)][HTTP[e.method]];
      const path = e.path.replace(/:([A-Za-z_]+)/g, (_, n: string) =>
        /id$/i.test(n) ? randomUUID() : "nobody_here",
      );
      const method = { get: "GET", post: "POST", put: "PUT", del: "DELETE" }[e.method];
      const body = e.body === "none" ? {} : { body: {} };
      const anon = await api.call(method, path, body);
      if (op["x-auth"] === "none") expect(anon.status, operationKey(e)).not.toBe(401);
      else expect(anon.status, operationKey(e)).toBe(401);
      if (op["x-auth"] === "admin") {
        const asViewer = await api.call(method, path, { ...body, token: viewer.token });
        expect(asViewer.status, operationKey(e)).toBe(403);
      }
    }
    expect(doc.paths["/api/admin/fraud-logs"].get["x-auth"]).toBe("admin");
    expect(doc.paths["/api/payments/reconcile"].post["x-auth"]).toBe("admin");
  });

  it("lists every error code with the status the server answers it with", () => {
    expect(doc["x-error-codes"].length).toBeGreaterThan(15);
    for (const { code, status } of doc["x-error-codes"]) expect(status).toBe(httpStatusOf(code));
    expect(doc.components.schemas.Error.properties.error.properties.code.enum).toContain("fraud_blocked");
  });

  it("describes answers as the server gives them", async () => {
    const creator = await api.register("creator");
    const viewer = await api.register();
    await api.fund(viewer.id, 500);
    const check = (key: string, body: unknown) => {
      const r = API_RESPONSES[key]!.safeParse(body);
      expect(r.success, `${key}: ${JSON.stringify(r.error?.issues)}`).toBe(true);
    };
    const tip = await api.call("POST", "/api/payments/tip", {
      token: viewer.token,
      body: { from_user_id: viewer.id, to_creator_username: creator.username, amount: 1 },
    });
    expect(tip.status).toBe(201);
    check("POST /api/payments/tip", tip.body);
    check(
      "GET /api/payments/balance/:userId",
      (await api.call("GET", `/api/payments/balance/${viewer.id}`, { token: viewer.token })).body,
    );
    check("GET /api/users/:username", (await api.call("GET", `/api/users/${creator.username}`)).body);
    const login = await api.call("POST", "/api/users/login", {
      body: { email: viewer.email, password: "securepass123" },
    });
    check("POST /api/users/login", login.body);
    const key = await api.call("POST", `/api/users/${creator.id}/overlay-key`, { token: creator.token });
    check("POST /api/users/:userId/overlay-key", key.body);
    // A schema that would accept anything proves nothing.
    expect(API_RESPONSES["POST /api/payments/tip"]!.safeParse({ transaction: {} }).success).toBe(false);
    const ws = doc["x-websocket"];
    expect(Object.keys(ws.client_frames)).toEqual(["tip", "subscribe"]);
    expect(ws.server_frames.ack.properties.op.const).toBe("ack");
  });

  it("accepts the README's curl example bodies with the routes' own schemas", () => {
    const readme = readFileSync(new URL("../../README.md", import.meta.url), "utf8");
    const vars = {
      API: "http://localhost:4000",
      VIEWER: randomUUID(),
      CREATOR: randomUUID(),
      PAYOUT: randomUUID(),
    };
    const curls = readmeCurls(readme, vars).filter((c) => c.path.startsWith("/api/"));
    expect(curls.length).toBeGreaterThan(15);
    const routes = api.http.endpoints.filter((e) => e.pipeline);
    let bodies = 0;
    for (const c of curls) {
      const route = routes.find(
        (e) =>
          e.method ===
            ({ GET: "get", POST: "post", PUT: "put", DELETE: "del" } as const)[c.method as "GET"] &&
          new RegExp(`^${e.path.replace(/:[A-Za-z_]+/g, "[^/]+")}$`).test(c.path),
      );
      expect(route, `README: no route for ${c.method} ${c.path} (${c.line})`).toBeDefined();
      if (c.body === null || route!.body !== "json") continue;
      expect(route!.doc?.body, `${c.method} ${c.path} has no body schema`).toBeDefined();
      const parsed = route!.doc!.body!.safeParse(JSON.parse(c.body));
      expect(parsed.success, `README ${c.line}: ${JSON.stringify(parsed.error?.issues)}`).toBe(true);
      bodies++;
    }
    expect(bodies).toBeGreaterThan(10);
  });
});
