// Owns presenting a run: the table, the ratios against their targets, the checks, the JSON written
// to the results directory and a dependency-free SVG chart of throughput and p99 per scenario.
import { mkdirSync, writeFileSync } from "node:fs";
import type { Check } from "./checks.ts";
import type { CpuMicros, ServerCpuMicros } from "./cpu-usage.ts";
import type { LoadStats, UrlStats } from "./load.ts";
import type { ScenarioName } from "./options.ts";
import type { WalSummary } from "./wal-monitor.ts";

export interface ScenarioResult extends LoadStats {
  name: ScenarioName;
  /** Which server answered: echo, 3am or peer-seed. */
  server: string;
  /** 2xx answers per second: the throughput ratios compare, so failures never count as work. */
  okPerSec: number;
  notes: string[];
  wal?: WalSummary;
  /** CPU microseconds per 2xx answer (an acknowledged tip), by component; null without /proc. */
  cpuPerOpUs?: CpuPerOp | null;
  peer?: { conflicts: number; gaveUp: number; fraudBlocked: number };
  /** Several server processes sharing the ledger (LEDGER_SPREAD): each one's part. */
  perServer?: ServerPart[];
}

/** One of several server processes under the same load: what it answered and what it cost. */
export interface ServerPart extends UrlStats {
  name: string;
  /** The ledger shards it owned through the load. */
  shards: number[];
  /** Its CPU per 2xx of the whole scenario (so the processes' figures add up to the server column). */
  cpuPerOpUs: { server: number; serverMain: number; serverPersister: number; serverOther: number } | null;
  /** Requests it received whose sender's shard the other process owned (forwarded), of all it received. */
  forwardedShare: number | null;
}

/** A server process's CPU per acknowledged operation of the whole scenario. */
export function serverCpuPerOp(m: ServerCpuMicros | undefined, ok: number): ServerPart["cpuPerOpUs"] {
  if (!m || ok <= 0) return null;
  const per = (x: number) => Math.round((x / ok) * 10) / 10;
  return {
    server: per(m.main + m.persister + m.other),
    serverMain: per(m.main),
    serverPersister: per(m.persister),
    serverOther: per(m.other),
  };
}

export interface Ratio {
  name: string;
  value: number | null;
  target: string;
  met: boolean | null;
}

export interface Target {
  name: string;
  value: string;
  met: boolean | null;
}

export interface BenchReport {
  at: string;
  command: string;
  machine: Record<string, unknown>;
  options: Record<string, unknown>;
  setup: string[];
  scenarios: ScenarioResult[];
  ratios: Ratio[];
  targets: Target[];
  checks: Check[];
  failures: string[];
}

const byName = (r: ScenarioResult[], n: ScenarioName) => r.find((s) => s.name === n);

/** CPU per acknowledged operation, in microseconds, by component. */
export interface CpuPerOp {
  serverMain: number;
  serverPersister: number;
  serverOther: number;
  /** The three above: everything the server process spent. */
  server: number;
  postgres: number;
  redis: number;
  loadGenerator: number;
  others: number;
}

/** Divides a scenario's measured CPU by its acknowledged operations. */
export function cpuPerOp(m: CpuMicros | undefined, ok: number): CpuPerOp | null {
  if (!m || ok <= 0) return null;
  const per = (x: number) => Math.round((x / ok) * 10) / 10;
  return {
    serverMain: per(m.serverMain),
    serverPersister: per(m.serverPersister),
    serverOther: per(m.serverOther),
    server: per(m.serverMain + m.serverPersister + m.serverOther),
    postgres: per(m.postgres),
    redis: per(m.redis),
    loadGenerator: per(m.loadGenerator),
    others: per(m.others),
  };
}

function ratio(results: ScenarioResult[], a: ScenarioName, b: ScenarioName, min: number | null): Ratio {
  const x = byName(results, a);
  const y = byName(results, b);
  const value = x && y && y.okPerSec > 0 ? Math.round((x.okPerSec / y.okPerSec) * 100) / 100 : null;
  return {
    name: `${a} / ${b}`,
    value,
    target: min === null ? "-" : `>= ${min}`,
    met: value === null || min === null ? null : value >= min,
  };
}

/** The targets are the lean-durable-path issue's (issue 16), for this two-core machine. */
export function computeRatios(results: ScenarioResult[]): Ratio[] {
  return [
    ratio(results, "tip-uniform", "echo", 0.4),
    ratio(results, "tip-hot", "tip-uniform", 0.95),
    ratio(results, "tip-uniform", "peer-seed-uniform", 30),
    ratio(results, "tip-hot", "peer-seed-hot", null),
    // WS tips/s over HTTP tips/s from the same run.
    ratio(results, "ws-tip-uniform", "tip-uniform", 3),
    ratio(results, "ws-tip-hot", "ws-tip-uniform", 0.95),
    ratio(results, "ws-tip-hot", "tip-hot", null),
    // Two processes sharing the shards against one, on the same two cores (issue 17).
    ratio(results, "tip-uniform-spread2", "tip-uniform", null),
  ];
}

/** Server CPU per HTTP tip (us) the issue asks for at most, and Postgres + Redis CPU per tip. */
const SERVER_US_PER_TIP_MAX = 45;
const DATABASES_US_PER_TIP_MAX = 20;

/** The issue's targets for later work: shown met or not, never a reason for the run to fail. */
export function computeTargets(results: ScenarioResult[]): Target[] {
  const out: Target[] = [];
  const hot = byName(results, "tip-hot");
  if (hot) {
    const conflicts = hot.statusCodes["409"] ?? 0;
    out.push({
      name: "tip-hot: zero conflicts (409), zero non-2xx, zero errors",
      value: `${conflicts} conflicts, ${hot.non2xx} non-2xx, ${hot.errors} errors`,
      met: conflicts === 0 && hot.non2xx === 0 && hot.errors === 0,
    });
  }
  const half = byName(results, "tip-uniform-half");
  if (half) {
    out.push({
      name: "tip p99 at half the maximum rate <= 5 ms (autocannon)",
      value: `${half.latencyMs.p99} ms at ${half.overallRate} req/s`,
      met: half.latencyMs.p99 <= 5,
    });
  }
  const paced = byName(results, "tip-uniform-half-paced");
  if (paced) {
    out.push({
      name: "the same, requests evenly paced (open loop)",
      value: `${paced.latencyMs.p99} ms at ${paced.overallRate} req/s`,
      met: paced.latencyMs.p99 <= 5,
    });
  }
  const uni = byName(results, "tip-uniform");
  const echo = byName(results, "echo");
  if (uni?.cpuPerOpUs) {
    const c = uni.cpuPerOpUs;
    const e = echo?.cpuPerOpUs?.server;
    out.push({
      name: `tip-uniform: server CPU per tip <= ${SERVER_US_PER_TIP_MAX} us`,
      value: `${c.server} us${e ? ` (${(c.server / e).toFixed(1)}x echo's ${e} us per request)` : ""}`,
      met: c.server <= SERVER_US_PER_TIP_MAX,
    });
    out.push({
      name: `tip-uniform: Postgres + Redis CPU per tip <= ${DATABASES_US_PER_TIP_MAX} us`,
      value: `${Math.round((c.postgres + c.redis) * 10) / 10} us`,
      met: c.postgres + c.redis <= DATABASES_US_PER_TIP_MAX,
    });
  }
  const feed = byName(results, "ws-feed");
  if (feed) {
    out.push({
      name: "ws-feed: delivery p99 <= 50 ms",
      value: `${feed.latencyMs.p99} ms to ${feed.connections} subscribers`,
      met: feed.latencyMs.p99 <= 50,
    });
  }
  if (uni?.wal) {
    out.push({
      name: "WAL lag during tip-uniform < 1 s",
      value: `${uni.wal.lagMaxMs} ms (server's /readyz: ${uni.wal.readyzLagMaxMs ?? "n/a"} ms)`,
      met: uni.wal.lagMaxMs < 1000,
    });
    out.push({
      name: "WAL drains within 2 s after tip-uniform",
      value: uni.wal.drainMs === null ? "did not drain" : `${uni.wal.drainMs} ms`,
      met: uni.wal.drainMs !== null && uni.wal.drainMs <= 2000,
    });
  }
  return out;
}

const pad = (s: string, n: number) => (s.length >= n ? s : s + " ".repeat(n - s.length));
const lpad = (s: string, n: number) => (s.length >= n ? s : " ".repeat(n - s.length) + s);
const fmt = (n: number) => n.toLocaleString("en-US");

export function formatTable(results: ScenarioResult[]): string {
  const head = ["scenario", "req/s", "p50 ms", "p99 ms", "2xx", "non-2xx", "errors", "notes"];
  const rows = results.map((r) => [
    r.name,
    fmt(r.reqPerSec),
    String(r.latencyMs.p50),
    String(r.latencyMs.p99),
    fmt(r.status2xx),
    fmt(r.non2xx),
    fmt(r.errors),
    r.notes.join("; "),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) =>
        i === 0 || i === cells.length - 1
          ? pad(c, i === cells.length - 1 ? 0 : widths[i]!)
          : lpad(c, widths[i]!),
      )
      .join("  ")
      .trimEnd();
  return [line(head), line(widths.map((w) => "-".repeat(Math.min(w, 60)))), ...rows.map(line)].join("\n");
}

/** CPU microseconds per acknowledged operation (per request for echo), by component. */
export function formatCpuTable(results: ScenarioResult[]): string {
  const head = [
    "cpu us per 2xx",
    "server",
    "main",
    "persister",
    "other",
    "postgres",
    "redis",
    "load gen",
    "others",
  ];
  const rows = results.flatMap((r) => {
    const c = r.cpuPerOpUs!;
    const cells = [c.server, c.serverMain, c.serverPersister, c.serverOther, c.postgres, c.redis];
    const own = [r.name, ...[...cells, c.loadGenerator, c.others].map((x) => x.toFixed(1))];
    // Several server processes: each one's row under the scenario's (per 2xx of the whole scenario).
    const parts = (r.perServer ?? []).map((p) => {
      const q = p.cpuPerOpUs;
      const mine = q
        ? [q.server, q.serverMain, q.serverPersister, q.serverOther].map((x) => x.toFixed(1))
        : [];
      return [`  ${p.name}`, ...(q ? mine : ["-", "-", "-", "-"]), "", "", "", ""];
    });
    return [own, ...parts];
  });
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i === 0 ? pad(c, widths[i]!) : lpad(c, widths[i]!))).join("  ");
  return [line(head), line(widths.map((w) => "-".repeat(w))), ...rows.map(line)].join("\n");
}

export function formatReport(r: BenchReport): string {
  const mark = (m: boolean | null) => (m === null ? "  " : m ? "ok" : "no");
  const lines: string[] = [];
  lines.push("", formatTable(r.scenarios), "");
  const costed = r.scenarios.filter((s) => s.cpuPerOpUs);
  if (costed.length > 0) lines.push(formatCpuTable(costed), "");
  lines.push("ratios (2xx answers per second):");
  for (const x of r.ratios) {
    lines.push(
      `  ${mark(x.met)}  ${pad(x.name, 38)} ${lpad(x.value === null ? "n/a" : x.value.toFixed(2), 8)}   target ${x.target}`,
    );
  }
  if (r.targets.length > 0) {
    lines.push("", "targets (later work; informational):");
    for (const t of r.targets) lines.push(`  ${mark(t.met)}  ${pad(t.name, 56)} ${t.value}`);
  }
  lines.push("", "checks:");
  for (const c of r.checks) lines.push(`  ${c.ok ? "PASS" : "FAIL"}  ${c.name}\n        ${c.detail}`);
  if (r.failures.length > 0) {
    lines.push("", "failures:");
    for (const f of r.failures) lines.push(`  ${f}`);
  }
  return lines.join("\n");
}

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

/** Two horizontal bar charts side by side: 2xx-inclusive req/s, and p99 latency, per scenario. */
export function chartSvg(results: ScenarioResult[], title: string): string {
  const rowH = 30;
  const top = 70;
  const labelW = 170;
  const panelW = 300;
  const gap = 70;
  const width = labelW + 2 * panelW + gap + 90;
  const height = top + results.length * rowH + 40;
  const maxRps = Math.max(1, ...results.map((r) => r.reqPerSec));
  const maxP99 = Math.max(1, ...results.map((r) => r.latencyMs.p99));
  const x1 = labelW;
  const x2 = labelW + panelW + gap;
  const colour = (s: ScenarioResult) =>
    s.server === "echo" ? "#8a8a8a" : s.server === "peer-seed" ? "#d9822b" : "#2b6cb0";
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="#ffffff"/>`,
    `<text x="10" y="22" font-size="15" font-weight="bold">${esc(title)}</text>`,
    `<text x="${x1}" y="${top - 12}" font-weight="bold">throughput (req/s)</text>`,
    `<text x="${x2}" y="${top - 12}" font-weight="bold">p99 latency (ms)</text>`,
  ];
  results.forEach((r, i) => {
    const y = top + i * rowH;
    const w1 = Math.max(1, (r.reqPerSec / maxRps) * panelW);
    const w2 = Math.max(1, (r.latencyMs.p99 / maxP99) * panelW);
    parts.push(
      `<text x="${labelW - 8}" y="${y + 17}" text-anchor="end">${esc(r.name)}</text>`,
      `<rect x="${x1}" y="${y + 4}" width="${w1.toFixed(1)}" height="${rowH - 10}" fill="${colour(r)}"/>`,
      `<text x="${(x1 + w1 + 4).toFixed(1)}" y="${y + 17}">${fmt(r.reqPerSec)}</text>`,
      `<rect x="${x2}" y="${y + 4}" width="${w2.toFixed(1)}" height="${rowH - 10}" fill="${colour(r)}" fill-opacity="0.7"/>`,
      `<text x="${(x2 + w2 + 4).toFixed(1)}" y="${y + 17}">${r.latencyMs.p99}</text>`,
    );
  });
  const ly = top + results.length * rowH + 22;
  [
    ["#8a8a8a", "echo (bare uWS)"],
    ["#2b6cb0", "3AM server"],
    ["#d9822b", "peer-seed (Express + pg)"],
  ].forEach(([c, label], i) => {
    const lx = labelW + i * 190;
    parts.push(
      `<rect x="${lx}" y="${ly - 10}" width="12" height="12" fill="${c}"/>`,
      `<text x="${lx + 18}" y="${ly}">${esc(label!)}</text>`,
    );
  });
  parts.push("</svg>");
  return `${parts.join("\n")}\n`;
}

export function writeResults(outDir: string, report: BenchReport): { json: string; svg: string } {
  mkdirSync(outDir, { recursive: true });
  const stamp = report.at.replace(/[:.]/g, "-");
  const text = `${JSON.stringify(report, null, 2)}\n`;
  const json = `${outDir}bench-${stamp}.json`;
  writeFileSync(json, text);
  writeFileSync(`${outDir}latest.json`, text);
  const svg = `${outDir}latest.svg`;
  writeFileSync(
    svg,
    chartSvg(
      report.scenarios,
      `npm run bench, ${report.at} (${String(report.options.durationS)} s per scenario)`,
    ),
  );
  return { json, svg };
}
