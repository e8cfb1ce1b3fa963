// The seed's monitoring list in /metrics (transactions by type and outcome, fraud triggers by
// rule/severity/action, every BullMQ queue's jobs by state, WebSocket connections and feed
// subscribers, reconcile discrepancies), and the Grafana dashboard and Prometheus alert rules in
// src/ops/monitoring/ querying only metrics a started server exposes.
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { type Api, startApi } from "../helpers/api.ts";
import { createTestEnv, type TestEnv, waitFor } from "../helpers/env.ts";
import { connectLive } from "../helpers/live.ts";

const OPS = new URL("../../src/ops/monitoring/", import.meta.url);

function sample(text: string, series: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

/** Metric names a PromQL expression uses (identifiers not followed by '(' and not keywords or labels). */
function metricNames(expr: string): string[] {
  const noStrings = expr
    .replace(/"[^"]*"/g, '""')
    .replace(/\{[^}]*\}/g, "")
    .replace(/\[[^\]]*\]/g, "");
  const words = [...noStrings.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*/g)]
    .filter((m) => noStrings.slice(m.index + m[0].length).trimStart()[0] !== "(")
    .map((m) => m[0]);
  const skip = new Set([
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "or",
    "and",
    "unless",
    "bool",
    "offset",
  ]);
  return words.filter((w) => !skip.has(w) && /_/.test(w) && !/^\d/.test(w));
}

/** The base names /metrics exposes (a histogram's _bucket/_sum/_count included). */
function exposed(text: string): Set<string> {
  const names = new Set<string>();
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]/.exec(line);
    if (m && !line.startsWith("#")) names.add(m[1]!);
    const t = /^# TYPE (\S+)/.exec(line);
    if (t) names.add(t[1]!);
  }
  return names;
}

describe("monitoring", () => {
  let env: TestEnv;
  let api: Api;
  beforeAll(async () => {
    env = await createTestEnv("monitoring");
    api = await startApi(env);
  });
  afterAll(async () => {
    await api?.close();
    await env?.cleanup();
  });

  it("counts transactions by outcome, fraud triggers, queues, sockets and subscribers", async () => {
    const creator = await api.register("creator");
    const viewer = await api.register();
    const broke = await api.register();
    await api.fund(viewer.id, 1000);
    const tip = (from: { id: string; token: string }, to: string) =>
      api.call("POST", "/api/payments/tip", {
        token: from.token,
        body: { from_user_id: from.id, to_creator_username: to, amount: 1 },
      });
    expect((await tip(viewer, creator.username)).status).toBe(201);
    expect((await tip(broke, creator.username)).status).toBe(422);
    await api.fund(creator.id, 500);
    const self = await tip(creator, creator.username);
    expect(self.body.error.code).toBe("fraud_blocked");

    const sub = await connectLive(api.base, `access_token=${creator.token}`);
    const plain = await connectLive(api.base, `access_token=${viewer.token}`);
    sub.send({ op: "subscribe", channel: "tips" });
    await sub.next((f) => f.op === "subscribed");

    const text = await (await fetch(`${api.base}/metrics`)).text();
    expect(sample(text, 'threeam_transactions_total{type="tip",outcome="completed",code="none"}')).toBe(1);
    expect(
      sample(text, 'threeam_transactions_total{type="tip",outcome="refused",code="insufficient_funds"}'),
    ).toBe(1);
    expect(
      sample(text, 'threeam_transactions_total{type="tip",outcome="refused",code="fraud_blocked"}'),
    ).toBe(1);
    expect(sample(text, 'threeam_transactions_total{type="deposit",outcome="completed",code="none"}')).toBe(
      2,
    );
    await waitFor(
      async () => {
        const t = await (await fetch(`${api.base}/metrics`)).text();
        return (
          sample(
            t,
            'threeam_fraud_triggers_total{rule="self_transfer",severity="critical",action="blocked"}',
          ) === 1
        );
      },
      5000,
      "the self-tip's fraud trigger in /metrics",
    );
    expect(sample(text, "threeam_ws_connections")).toBe(2);
    expect(sample(text, "threeam_feed_subscribers")).toBe(1);
    for (const queue of ["payouts", "email"]) {
      for (const state of ["waiting", "active", "delayed", "failed"]) {
        expect(
          sample(text, `threeam_queue_jobs{queue="${queue}",state="${state}"}`),
          `${queue} ${state}`,
        ).toBeGreaterThanOrEqual(0);
      }
    }
    expect(sample(text, 'threeam_reconcile_discrepancies{kind="total"}')).toBe(0);
    await sub.close();
    await plain.close();
    await waitFor(
      async () => {
        const t = await (await fetch(`${api.base}/metrics`)).text();
        return sample(t, "threeam_ws_connections") === 0 && sample(t, "threeam_feed_subscribers") === 0;
      },
      5000,
      "sockets counted down",
    );
  });

  it("runs reconcile on a schedule (a BullMQ job scheduler) and reports it to /metrics", async () => {
    const jobs = api.http.reconcileJobs;
    // RECONCILE_EVERY's schedule (default 1 h) is set at start, its first run one period later.
    await waitFor(async () => (await jobs.queue.getJobSchedulers()).length === 1, 5000, "the schedule");
    expect((await jobs.queue.getJobSchedulers())[0]).toMatchObject({
      key: "reconcile-every",
      every: 3_600_000,
    });
    await jobs.schedule(300);
    let done: string | undefined;
    await waitFor(
      async () => {
        const [job] = await jobs.queue.getJobs(["completed"]);
        done = job?.id;
        return done !== undefined;
      },
      20_000,
      "a scheduled reconcile run",
    );
    await jobs.schedule(0);
    const status = await jobs.status(done!);
    expect(status).toMatchObject({ status: "completed", scheduled: true, error: null });
    expect(status!.report!.ledger_invariants.ok).toBe(true);
    const text = await (await fetch(`${api.base}/metrics`)).text();
    expect(sample(text, 'threeam_reconcile_runs_total{result="ok"}')).toBeGreaterThanOrEqual(1);
    expect(sample(text, "threeam_reconcile_last_run_timestamp_seconds")).toBeGreaterThan(
      Date.now() / 1000 - 60,
    );
    expect(sample(text, 'threeam_queue_jobs{queue="reconcile",state="failed"}')).toBe(0);
  });

  it("the dashboard and the alert rules query only metrics the server exposes", async () => {
    const text = await (await fetch(`${api.base}/metrics`)).text();
    const have = exposed(text);
    const dashboard = JSON.parse(readFileSync(new URL("grafana-dashboard.json", OPS), "utf8"));
    const exprs: Array<[string, string]> = dashboard.panels.flatMap(
      (p: { title: string; targets: Array<{ expr: string }> }) =>
        p.targets.map((t) => [p.title, t.expr] as [string, string]),
    );
    const alerts = parse(readFileSync(new URL("alerts.yml", OPS), "utf8"));
    for (const g of alerts.groups) for (const r of g.rules) exprs.push([r.alert, r.expr]);
    expect(exprs.length).toBeGreaterThan(20);
    const titles = dashboard.panels.map((p: { title: string }) => p.title).join("\n");
    for (const want of [
      /success rate/i,
      /payout time/i,
      /fraud/i,
      /latency/i,
      /queue/i,
      /WebSocket/i,
      /reconcile/i,
    ]) {
      expect(titles).toMatch(want);
    }
    const alertNames = alerts.groups.flatMap((g: { rules: Array<{ alert: string }> }) =>
      g.rules.map((r) => r.alert),
    );
    expect(alertNames).toEqual(
      expect.arrayContaining([
        "PersistenceHalted",
        "WalLagHigh",
        "PayoutFailures",
        "ReconcileDiscrepancy",
        "FraudSpike",
      ]),
    );
    let checked = 0;
    for (const [what, expr] of exprs) {
      const names = metricNames(expr);
      expect(names.length, `${what}: ${expr}`).toBeGreaterThan(0);
      for (const n of names) {
        expect(have.has(n), `${what} queries ${n}, which /metrics does not expose`).toBe(true);
        checked++;
      }
    }
    expect(checked).toBeGreaterThan(20);
    // The checker itself: a misspelt metric is caught.
    expect(metricNames('sum(rate(threeam_tranzactions_total{outcome="failed"}[5m]))')).toEqual([
      "threeam_tranzactions_total",
    ]);
  });
});
