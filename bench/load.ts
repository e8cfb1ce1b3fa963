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
}

const newTally = (): Tally => ({ ackedKeys: [], issued: 0, overCap: 0, errorCodes: {} });

function countErrorCode(t: Tally, status: number, body: string): void {
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
      return () => {
        const v = o.cursor.take(tally);
        const creator = o.hot ? hotCreator : o.creators[Math.floor(Math.random() * o.creators.length)]!;
        tally.issued++;
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
  url: string;
  source: LoadSource;
  connections: number;
  durationS?: number;
  /** Stop after this many responses instead of after a duration. */
  amount?: number;
  overallRate?: number;
  /** The server process, for the CPU accounting. */
  serverPid?: number;
}

export function runLoad(o: RunLoadOptions): Promise<LoadStats> {
  const tally = o.source.tally;
  const next = o.source.writer(new URL(o.url).host);
  return new Promise((resolve, reject) => {
    const opts: autocannon.Options = {
      url: o.url,
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
        c.getRequestBuffer = next;
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
    autocannon(opts, (err, r) => {
      const cpu = endCpu();
      if (err) return reject(err);
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
      });
    });
  });
}
