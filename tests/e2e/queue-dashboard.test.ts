// The queue dashboard (bull-board over the `payouts` queue) on its own port: refused without a
// token, with a bad one and for a non-admin; an admin's token is exchanged for an HttpOnly cookie
// and the dashboard's API then lists the payouts queue with its jobs.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runAdminCli } from "../../src/admin/cli.ts";
import { type QueueDashboard, startQueueDashboard } from "../../src/admin/queue-dashboard.ts";
import { type Api, startApi } from "../helpers/api.ts";
import { creatorWithMethod, withdraw20 } from "../helpers/payout-creator.ts";
import { createTestEnv, type TestEnv } from "../helpers/env.ts";
import { silentLogger } from "../helpers/ledger.ts";

let env: TestEnv;
let api: Api;
let board: QueueDashboard;
let base: string;

beforeAll(async () => {
  env = await createTestEnv("queue_dashboard");
  api = await startApi(env);
  board = await startQueueDashboard(
    {
      queues: [api.http.payoutJobs.queue],
      tokens: api.http.tokens,
      roles: api.http.roles,
      logger: silentLogger,
      secureCookie: false,
    },
    0,
    "127.0.0.1",
  );
  base = `http://127.0.0.1:${board.port}`;
});
afterAll(async () => {
  await board?.close();
  await api?.close();
  await env?.cleanup();
});

const get = (path: string, headers: Record<string, string> = {}) =>
  fetch(`${base}${path}`, { headers, redirect: "manual" });

describe("the queue dashboard", () => {
  it("refuses a request without a token, with a forged one, and a non-admin's", async () => {
    for (const path of ["/", "/api/queues"]) {
      const none = await get(path);
      expect(none.status).toBe(401);
      expect((await none.json()).error.code).toBe("unauthorized");
      expect((await get(`${path}?token=not-a-jwt`)).status).toBe(401);
      expect((await get(path, { cookie: "threeam_board=forged" })).status).toBe(401);
    }
    const creator = await api.register("creator");
    for (const r of [
      await get(`/?token=${creator.token}`),
      await get("/api/queues", { authorization: `Bearer ${creator.token}` }),
      await get("/api/queues", { cookie: `threeam_board=${creator.token}` }),
    ]) {
      expect(r.status).toBe(403);
      expect(r.headers.get("set-cookie")).toBeNull();
      expect((await r.json()).error.code).toBe("forbidden");
    }
  });

  it("lets an admin in through a token exchanged for a cookie, and shows the payouts queue and its jobs", async () => {
    const admin = await api.register();
    expect(await runAdminCli(["grant", admin.email], env.databaseUrl)).toMatchObject({ code: 0 });
    // A payout waiting in the queue (no worker runs here).
    await withdraw20(api, await creatorWithMethod(api, "wise", "000123456789"));

    const exchange = await get(`/?token=${admin.token}`);
    expect(exchange.status).toBe(303);
    expect(exchange.headers.get("location")).toBe("/");
    const setCookie = exchange.headers.get("set-cookie") ?? "";
    expect(setCookie).toMatch(/^threeam_board=[^;]+; HttpOnly; SameSite=Strict; Path=\/; Max-Age=\d+/);
    const cookie = setCookie.split(";")[0]!;

    const page = await get("/", { cookie });
    expect(page.status).toBe(200);
    expect(await page.text()).toMatch(/<html/i);
    const queues = await get("/api/queues", { cookie });
    expect(queues.status).toBe(200);
    const body = (await queues.json()) as {
      queues: Array<{ name: string; counts: Record<string, number>; jobs: Array<{ id: string }> }>;
    };
    const payouts = body.queues.find((q) => q.name === "payouts");
    expect(payouts, JSON.stringify(body.queues.map((q) => q.name))).toBeDefined();
    expect(payouts!.counts.waiting).toBeGreaterThanOrEqual(1);
    // An admin's bearer token works too (scripts).
    expect((await get("/api/queues", { authorization: `Bearer ${admin.token}` })).status).toBe(200);
  });
});
