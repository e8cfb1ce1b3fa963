// Owns generating load: autocannon, used programmatically, with each scenario's requests built
// here (each tip its own idempotency key and its viewer's token) and a response hook that keeps
// the key of every acknowledged tip, so the checks can find each one in Postgres afterwards.
import autocannon from "autocannon";
import { type CpuUsage, measureCpu } from "./cpu-usage.ts";
import { TIPS_PER_VIEWER_MAX } from "./options.ts";
import type { Person } from "./population.ts";

export interface LoadStats {
  connections: number;
  durationS: number;
  overallRate: number | null;
  /** Responses received (any status). */
  requests: number;
  sent: number;
  reqPerSec: number;
  latencyMs: { p50: number; p90: number; p99: number; p99_9: number; max: number; mean: number };
  status2xx: number;
  non2xx: number;
  /** Connection errors and timeouts (autocannon counts timeouts among errors). */
  errors: number;
  timeouts: number;
  statusCodes: Record<string, number>;
  /** `error.code` of non-2xx bodies, counted. */
  errorCodes: Record<string, number>;
  /** Where the CPU went while the load ran (null off Linux). */
  cpu: CpuUsage | null;
  /** Load against several servers at once: what each answered, in the order of the urls. */
  perUrl?: UrlStats[];
}

/** One server's part of a load spread over several (its connections' responses). */
export interface UrlStats {
  url: string;
  connections: number;
  requests: number;
  reqPerSec: number;
  status2xx: number;
  non2xx: number;
  latencyMs: { p50: number; p90: number; p99: number; max: number; mean: number };
}

/** What a scenario's requests leave behind for the checks. */
export interface Tally {
  /** Idempotency keys of tips answered 2xx. */
  ackedKeys: string[];
  /** Requests built (an upper bound on what the server can have committed). */
  issued: number;
  /** Tips sent from a viewer that had already sent TIPS_PER_VIEWER_MAX (the fraud rule refuses). */
  overCap: number;
  errorCodes: Record<string, number>;
  /** The first few non-2xx answers (status and body), to tell what went wrong. */
  errorSamples?: string[];
}

const newTally = (): Tally => ({ ackedKeys: [], issued: 0, overCap: 0, errorCodes: {}, errorSamples: [] });
const ERROR_SAMPLES_MAX = 5;

function countErrorCode(t: Tally, status: number, body: string): void {
  if (t.errorSamples && t.errorSamples.length < ERROR_SAMPLES_MAX)
    t.errorSamples.push(`${status} ${body.slice(0, 300)}`);
  let code = `http_${status}`;
  try {
    const parsed = JSON.parse(body) as { error?: { code?: string } };
    if (parsed.error?.code) code = parsed.error.code;
  } catch {
    // not JSON: keep the status
  }
  t.errorCodes[code] = (t.errorCodes[code] ?? 0) + 1;
}

const headerValue = (h: Record<string, unknown> | undefined, name: string): string | undefined => {
  if (!h) return undefined;
  for (const k of Object.keys(h)) if (k.toLowerCase() === name) return String(h[k]);
  return undefined;
};

/**
 * Round-robin over the viewers of one database, shared by every tip scenario against it, so the
 * tips of a whole run spread evenly and no viewer passes the fraud rule while others are unused.
 */
export class ViewerCursor {
  private next = 0;
  /** Tips handed out per viewer so far (HTTP takes one at a time, a WebSocket lane the rest). */
  private readonly used: Uint8Array;
  constructor(readonly viewers: Person[]) {
    this.used = new Uint8Array(viewers.length);
  }

  /** The next viewer, for one tip. */
  take(t: Tally): Person {
    const i = this.next++ % this.viewers.length;
    if (this.used[i]! >= TIPS_PER_VIEWER_MAX) t.overCap++;
    else this.used[i]!++;
    return this.viewers[i]!;
  }

  /** The next viewer with tips left under the fraud cap, for all of them (a socket's worth). */
  takeAllowance(t: Tally): Allowance {
    const n = this.viewers.length;
    for (let k = 0; k < n; k++) {
      const i = this.next++ % n;
      const left = TIPS_PER_VIEWER_MAX - this.used[i]!;
      if (left > 0) {
        this.used[i] = TIPS_PER_VIEWER_MAX;
        return { ...this.viewers[i]!, tips: left };
      }
    }
    // Everyone has tipped their cap: this socket's tips will be refused by the fraud rule.
    t.overCap += TIPS_PER_VIEWER_MAX;
    return { ...this.viewers[this.next++ % n]!, tips: TIPS_PER_VIEWER_MAX };
  }
}

/** A viewer and how many tips it may still send before the fraud rule refuses. */
export type Allowance = Person & { tips: number };

let keySeq = 0;
const runTag = Date.now().toString(36);

export interface TipRequestOptions {
  cursor: ViewerCursor;
  creators: Person[];
  /** All tips go to creators[0] (a live-stream burst) instead of a random creator. */
  hot: boolean;
  amountUsd: number;
  /** Servers sharing the ledger's shards: the host owning an account's shard, to count per host
   *  in `routes` how many tips will be forwarded and how many credits cross between processes. */
  ownerHost?: (accountId: string) => string;
  routes?: Map<string, RouteTally>;
}

/**
 * A scenario's requests. autocannon's own per-request hook (setupRequest) rebuilds each request
 * through several object copies and halves what one core can send (measured against echo), so the
 * bytes come from `writer` instead, one template string per request; autocannon still does
 * everything else (connections, timing, histograms, rate).
 */
export interface LoadSource {
  /** The request autocannon validates and attributes responses to (onResponse). */
  request: autocannon.Request;
  tally: Tally;
  /** Returns the function producing the next request's bytes for a server at `host`. */
  writer(host: string): () => Buffer;
}

/** Tips sent to one of several servers sharing the ledger (LEDGER_SPREAD), by where they go. */
export interface RouteTally {
  /** Tips sent to this host (`127.0.0.1:port`). */
  sent: number;
  /** Of them, tips whose sender's shard another process owns: forwarded there (POST /internal/ledger). */
  senderElsewhere: number;
  /** Tips whose creator's shard is owned by another process than the sender's: the credit crosses
   *  (POST /internal/credits), whichever process received the request. */
  creditElsewhere: number;
}

/** POST /api/payments/tip as the real client sends it; also what `echo` receives. */
export function tipRequests(o: TipRequestOptions): LoadSource {
  const tally = newTally();
  const hotCreator = o.creators[0]!;
  return {
    tally,
    request: {
      method: "POST",
      path: "/api/payments/tip",
      onResponse(status, body, _ctx, headers) {
        if (status >= 200 && status < 300) {
          const key = headerValue(headers as Record<string, unknown>, "idempotency-key");
          if (key) tally.ackedKeys.push(key);
        } else {
          countErrorCode(tally, status, body);
        }
      },
    },
    writer(host) {
      const head = `POST /api/payments/tip HTTP/1.1\r\nHost: ${host}\r\nConnection: keep-alive\r\nContent-Type: application/json\r\nAuthorization: Bearer `;
      let route: RouteTally | undefined;
      if (o.ownerHost && o.routes) {
        route = o.routes.get(host) ?? { sent: 0, senderElsewhere: 0, creditElsewhere: 0 };
        o.routes.set(host, route);
      }
      return () => {
        const v = o.cursor.take(tally);
        const creator = o.hot ? hotCreator : o.creators[Math.floor(Math.random() * o.creators.length)]!;
        tally.issued++;
        if (route && o.ownerHost) {
          const senderHost = o.ownerHost(v.id);
          route.sent++;
          if (senderHost !== host) route.senderElsewhere++;
          if (o.ownerHost(creator.id) !== senderHost) route.creditElsewhere++;
        }
        const body = `{"from_user_id":"${v.id}","to_creator_username":"${creator.username}","amount":${o.amountUsd}}`;
        return Buffer.from(
          `${head}${v.token}\r\nIdempotency-Key: bench-${runTag}-${keySeq++}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
        );
      };
    },
  };
}

/** GET /api/payments/balance/:id, each request as the viewer whose balance it reads. */
export function balanceRequests(viewers: Person[]): LoadSource {
  const tally = newTally();
  return {
    tally,
    request: {
      method: "GET",
      path: "/api/payments/balance",
      onResponse(status, body) {
        if (status < 200 || status >= 300) countErrorCode(tally, status, body);
      },
    },
    writer(host) {
      return () => {
        // Reads do not count against the fraud rule: their own round-robin, from the first viewer.
        const v = viewers[tally.issued++ % viewers.length]!;
        return Buffer.from(
          `GET /api/payments/balance/${v.id} HTTP/1.1\r\nHost: ${host}\r\nConnection: keep-alive\r\nAuthorization: Bearer ${v.token}\r\n\r\n`,
        );
      };
    },
  };
}

export interface RunLoadOptions {
  /** Several: the connections take them in turn (autocannon), and each one's answers are counted apart. */
  url: string | string[];
  source: LoadSource;
  connections: number;
  durationS?: number;
  /** Stop after this many responses instead of after a duration. */
  amount?: number;
  overallRate?: number;
  /** The server process(es), for the CPU accounting. */
  serverPid?: number | number[];
}

const round2 = (x: number) => Math.round(x * 100) / 100;
/** Percentile of sorted `xs` (nearest rank). */
const percentile = (xs: number[], p: number) =>
  xs.length === 0 ? 0 : round2(xs[Math.min(xs.length - 1, Math.ceil((p / 100) * xs.length) - 1)]!);

export function runLoad(o: RunLoadOptions): Promise<LoadStats> {
  const tally = o.source.tally;
  const urls = typeof o.url === "string" ? [o.url] : o.url;
  // One request writer per server (each writes its own Host header); a connection takes its server's.
  const writers = new Map(urls.map((u) => [new URL(u).host, o.source.writer(new URL(u).host)]));
  // Several servers: every response's status and time, by server (autocannon reports them together).
  const perHost = new Map(
    urls.map((u) => [new URL(u).host, { connections: 0, times: [] as number[], ok: 0 }]),
  );
  return new Promise((resolve, reject) => {
    const opts: autocannon.Options = {
      // autocannon takes a list too (its types say a string): connection i goes to urls[i % n].
      url: (urls.length === 1 ? urls[0]! : urls) as string,
      connections: o.connections,
      requests: [o.source.request],
      timeout: 10,
      // One request in flight per connection, as a browser or app client tipping would have.
      pipelining: 1,
      setupClient(client) {
        // autocannon writes `client.getRequestBuffer()` for every request (lib/httpClient.js, autocannon 9).
        const c = client as unknown as { getRequestBuffer?: () => Buffer };
        if (typeof c.getRequestBuffer !== "function") {
          throw new Error("this autocannon has no Client.getRequestBuffer; bench/load.ts needs updating");
        }
        const host = (client as unknown as { opts: { host: string } }).opts.host;
        const next = writers.get(host);
        if (!next) throw new Error(`autocannon client for ${host}, not one of ${urls.join(", ")}`);
        c.getRequestBuffer = next;
        perHost.get(host)!.connections++;
      },
    };
    if (o.amount !== undefined) opts.amount = o.amount;
    else opts.duration = o.durationS ?? 10;
    if (o.overallRate) {
      opts.overallRate = o.overallRate;
      // Otherwise autocannon back-fills the histogram at a 1 ms "expected interval" (it computes
      // ceil(1 / rate)), inventing latencies; record what was measured.
      opts.ignoreCoordinatedOmission = true;
    }
    const endCpu = measureCpu(o.serverPid ?? null);
    const instance = autocannon(opts, (err, r) => {
      const cpu = endCpu();
      if (err) return reject(err);
      const perUrl =
        urls.length === 1
          ? undefined
          : urls.map((url): UrlStats => {
              const h = perHost.get(new URL(url).host)!;
              const times = h.times.sort((x, y) => x - y);
              const mean = times.reduce((x, y) => x + y, 0) / Math.max(times.length, 1);
              return {
                url,
                connections: h.connections,
                requests: times.length,
                reqPerSec: Math.round(times.length / Math.max(r.duration, 1e-3)),
                status2xx: h.ok,
                non2xx: times.length - h.ok,
                latencyMs: {
                  p50: percentile(times, 50),
                  p90: percentile(times, 90),
                  p99: percentile(times, 99),
                  max: round2(times.at(-1) ?? 0),
                  mean: round2(mean),
                },
              };
            });
      const statusCodes: Record<string, number> = {};
      for (const [code, s] of Object.entries(r.statusCodeStats ?? {})) statusCodes[code] = s.count ?? 0;
      const requests = r.requests.total;
      resolve({
        connections: o.connections,
        durationS: r.duration,
        overallRate: o.overallRate ?? null,
        requests,
        sent: r.requests.sent,
        reqPerSec: Math.round(requests / Math.max(r.duration, 1e-3)),
        latencyMs: {
          p50: r.latency.p50,
          p90: r.latency.p90,
          p99: r.latency.p99,
          p99_9: r.latency.p99_9,
          max: r.latency.max,
          mean: Math.round(r.latency.mean * 100) / 100,
        },
        status2xx: r["2xx"],
        non2xx: r.non2xx,
        errors: r.errors,
        timeouts: r.timeouts,
        statusCodes,
        errorCodes: { ...tally.errorCodes },
        cpu,
        ...(perUrl ? { perUrl } : {}),
      });
    });
    if (urls.length > 1) {
      instance.on("response", (client, statusCode, _bytes, responseTime) => {
        const h = perHost.get((client as unknown as { opts: { host: string } }).opts.host);
        if (!h) return;
        h.times.push(responseTime);
        if (statusCode >= 200 && statusCode < 300) h.ok++;
      });
    }
  });
}
