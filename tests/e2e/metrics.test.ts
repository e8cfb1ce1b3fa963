// GET /metrics: Prometheus text with the process's own metrics, every request counted by route
// and status, WAL group commits, and the ledger's and persister's state; and METRICS_TOKEN.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Api, startApi } from "../helpers/api.ts";
import { createTestEnv, type TestEnv } from "../helpers/env.ts";

/** The value of one sample line, e.g. `name{label="x"} 3`; undefined if absent. */
function sample(text: string, series: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe("metrics, open", () => {
  let env: TestEnv;
  let api: Api;
  beforeAll(async () => {
    env = await createTestEnv("metrics");
    api = await startApi(env);
  });
  afterAll(async () => {
    await api?.close();
    await env?.cleanup();
  });

  it("counts requests by route and status, WAL commits and ledger state", async () => {
    const creator = await api.register("creator");
    const viewer = await api.register();
    await api.fund(viewer.id, 1000);
    const tip = (amount: number) =>
      api.call("POST", "/api/payments/tip", {
        token: viewer.token,
        body: { from_user_id: viewer.id, to_creator_username: creator.username, amount },
      });
    expect((await tip(1)).status).toBe(201);
    expect((await tip(1)).status).toBe(201);
    expect((await tip(2)).status).toBe(400);
    expect((await api.call("GET", "/api/nope")).status).toBe(404);

    const r = await fetch(`${api.base}/metrics`);
    expect(r.status).toBe(200);
    expect(r.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(r.headers.get("x-content-type-options")).toBe("nosniff");
    const text = await r.text();

    const route = 'route="POST /api/payments/tip"';
    expect(sample(text, `threeam_http_requests_total{${route},status="201"}`)).toBe(2);
    expect(sample(text, `threeam_http_requests_total{${route},status="400"}`)).toBe(1);
    expect(sample(text, 'threeam_http_requests_total{route="POST /api/users/register",status="201"}')).toBe(
      2,
    );
    expect(sample(text, 'threeam_http_requests_total{route="unmatched",status="404"}')).toBe(1);
    expect(sample(text, `threeam_http_request_duration_seconds_count{${route}}`)).toBe(3);

    // Two tips, each a debit event and a credit event, plus the deposit: at least five events.
    expect(sample(text, "threeam_wal_events_total")).toBeGreaterThanOrEqual(5);
    expect(sample(text, "threeam_wal_flush_duration_seconds_count")).toBeGreaterThanOrEqual(1);
    expect(sample(text, "threeam_wal_flush_failures_total")).toBe(0);
    expect(sample(text, "threeam_persist_halted_streams")).toBe(0);
    expect(sample(text, "threeam_ledger_recovering")).toBe(0);
    expect(sample(text, "threeam_ledger_accounts_in_memory")).toBeGreaterThanOrEqual(2);
    expect(sample(text, "threeam_shards_owned")).toBe(8);
    expect(sample(text, 'threeam_shard_fencing_token{shard="7"}')).toBe(2);
    expect(sample(text, "threeam_wal_lag_seconds")).toBeGreaterThanOrEqual(0);
    // The process's own: event-loop lag and heap from prom-client's defaults.
    expect(text).toContain("nodejs_eventloop_lag_p99_seconds");
    expect(text).toContain("nodejs_heap_size_used_bytes");
    // CPU by thread: the event loop's (the process id) and the WAL persister's own thread.
    const main = `threeam_thread_cpu_seconds{thread="main",tid="${process.pid}"}`;
    expect(sample(text, main)).toBeGreaterThan(0);
    const persister = /^threeam_thread_cpu_seconds\{thread="persister",tid="(\d+)"\} /m.exec(text);
    expect(persister, "the persister thread's CPU is reported").not.toBeNull();
    expect(Number(persister![1])).not.toBe(process.pid);
  });
});

describe("metrics, with METRICS_TOKEN", () => {
  const token = "metrics-token-0123456789abcdef";
  let env: TestEnv;
  let api: Api;
  beforeAll(async () => {
    env = await createTestEnv("metrics_token");
    api = await startApi(env, { METRICS_TOKEN: token });
  });
  afterAll(async () => {
    await api?.close();
    await env?.cleanup();
  });

  it("refuses a scrape without the token or with a wrong one, and serves it with the token", async () => {
    const none = await fetch(`${api.base}/metrics`);
    expect(none.status).toBe(401);
    expect((await none.json()).error.code).toBe("unauthorized");
    const wrong = await fetch(`${api.base}/metrics`, { headers: { authorization: `Bearer ${token}x` } });
    expect(wrong.status).toBe(401);
    const ok = await fetch(`${api.base}/metrics`, { headers: { authorization: `Bearer ${token}` } });
    expect(ok.status).toBe(200);
    expect(await ok.text()).toContain("threeam_http_requests_total");
  });
});
