// Owns what the Wise and Airwallex stand-ins share: reading a bounded JSON body, answering JSON
// with the provider's trace header, the test account numbers' behaviours, timers that close with
// the server, and a signed-webhook sender that POSTs each event off the request path with retries.
import { randomBytes } from "node:crypto";
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { StandinLog } from "./stripe-webhooks.ts";

export type { StandinLog } from "./stripe-webhooks.ts";

/** Largest request body a stand-in reads. */
export const STANDIN_BODY_LIMIT_BYTES = 256 * 1024;
/** Objects of one kind held in memory; past this, creating one is refused (restart the stand-in). */
export const STANDIN_OBJECTS_MAX = 200_000;
/** Webhook delivery records kept (oldest dropped first). */
export const STANDIN_DELIVERIES_MAX = 20_000;
/** Default time from funding to paid (PAYOUT_STANDIN_DELAY_MS). */
export const DEFAULT_STANDIN_DELAY_MS = 1000;

/**
 * What a test account number does, by its last four digits (README "Money out: providers and
 * test account numbers"): 0002 fails the transfer call twice with a 5xx, 0003 is refused with a
 * validation error, 0004 is sent then bounced back, 0005 makes the transfer but every answer to
 * the transfer call is a 5xx (the answer lost: the transfer goes ahead), 0006 answers every
 * transfer call with a 5xx and makes nothing (the provider down), 0007 accepts the transfer and
 * then fails it before sending (Wise `cancelled`, Airwallex `FAILED` with no dispatch date);
 * anything else is paid after the delay.
 */
export type TestAccountBehaviour = "paid" | "flaky" | "refused" | "bounced" | "lost" | "down" | "cancelled";

export function testAccountBehaviour(accountNumber: string): TestAccountBehaviour {
  if (accountNumber.endsWith("0002")) return "flaky";
  if (accountNumber.endsWith("0003")) return "refused";
  if (accountNumber.endsWith("0004")) return "bounced";
  if (accountNumber.endsWith("0005")) return "lost";
  if (accountNumber.endsWith("0006")) return "down";
  if (accountNumber.endsWith("0007")) return "cancelled";
  return "paid";
}

/** How many 5xx answers a `flaky` account's transfer call gets before it succeeds. */
export const FLAKY_FAILURES = 2;

/** Counts a `flaky` account's transfer calls per idempotency key: true while this call must fail. */
export class FlakyCalls {
  private readonly failures = new Map<string, number>();
  failNow(key: string): boolean {
    const n = this.failures.get(key) ?? 0;
    if (n >= FLAKY_FAILURES) return false;
    this.failures.set(key, n + 1);
    return true;
  }
}

export class BodyError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** An answer a stand-in's handler throws: the status and the body in the provider's own error format. */
export class StandinHttpError extends Error {
  constructor(
    readonly status: number,
    readonly body: unknown,
  ) {
    super(`HTTP ${status}`);
  }
}

export async function readJsonBody(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > STANDIN_BODY_LIMIT_BYTES) throw new BodyError(413, "request body too large");
    chunks.push(c as Buffer);
  }
  const text = Buffer.concat(chunks).toString("utf8");
  if (text.trim() === "") return {};
  try {
    return JSON.parse(text);
  } catch {
    throw new BodyError(400, "request body is not valid JSON");
  }
}

export function sendJson(res: ServerResponse, status: number, body: unknown, traceHeader: string): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
    [traceHeader]: randomBytes(8).toString("hex"),
  });
  res.end(text);
}

/** A path segment decoded, or null when its percent-encoding is malformed (answered as not found). */
export function decodeSegment(s: string): string | null {
  try {
    return decodeURIComponent(s);
  } catch {
    return null;
  }
}

/** A positive decimal with at most two places, as cents (at most 100_000_000); null otherwise. */
export function decimalCents(v: unknown): number | null {
  if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) return null;
  const c = Math.round(v * 100);
  return Math.abs(c - v * 100) < 1e-6 && c <= 100_000_000 ? c : null;
}

/**
 * The payout id of the test-only inspection request GET /__standin/payouts/{payoutId} (outside
 * the provider's paths), or null when the request is not one.
 */
export function inspectionPayoutId(method: string, parts: string[]): string | null {
  if (parts[0] === "__standin" && parts[1] === "payouts" && parts[2] && method === "GET") {
    return decodeSegment(parts[2]) ?? "";
  }
  return null;
}

/** The inspection answer: a payout's transfers with their status history, and its transfer calls. */
export function inspectionBody(
  transfers: { id: string | number; status: string; history: string[] }[],
  transferCalls: number,
): unknown {
  return {
    transfers: transfers.map((t) => ({ id: t.id, status: t.status, history: t.history })),
    transfer_calls: transferCalls,
  };
}

export const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

/** The ABA routing number checksum: 3*(d1+d4+d7) + 7*(d2+d5+d8) + (d3+d6+d9) divisible by 10. */
export function validAba(routing: string): boolean {
  if (!/^\d{9}$/.test(routing)) return false;
  const d = [...routing].map(Number);
  const sum = 3 * (d[0]! + d[3]! + d[6]!) + 7 * (d[1]! + d[4]! + d[7]!) + (d[2]! + d[5]! + d[8]!);
  return sum % 10 === 0;
}

/** Timers that all stop when the stand-in closes. */
export class Timers {
  private readonly set = new Set<NodeJS.Timeout>();
  private closed = false;
  after(ms: number, fn: () => void): void {
    if (this.closed) return;
    const t = setTimeout(() => {
      this.set.delete(t);
      fn();
    }, ms);
    this.set.add(t);
  }
  /** Runs `fn` for each step in turn, each `delayMs` after the one before. */
  chain<T>(steps: [delayMs: number, step: T][], fn: (step: T) => void): void {
    const next = (i: number) => {
      const step = steps[i];
      if (!step) return;
      this.after(step[0], () => {
        fn(step[1]);
        next(i + 1);
      });
    };
    next(0);
  }
  close(): void {
    this.closed = true;
    for (const t of this.set) clearTimeout(t);
    this.set.clear();
  }
}

/** Listens on `host` (default 127.0.0.1) and `port` (default 0, a free one); answers the port and base URL. */
export async function listenStandin(
  server: Server,
  port: number | undefined,
  host: string | undefined,
): Promise<{ port: number; url: string }> {
  const h = host ?? "127.0.0.1";
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port ?? 0, h, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const p = (server.address() as AddressInfo).port;
  return { port: p, url: `http://${h.includes(":") ? `[${h}]` : h}:${p}` };
}

/** A close() for a stand-in: timers stopped, webhooks under way settled, then the server shut; once. */
export function standinCloser(server: Server, timers: Timers, webhooks: WebhookSender): () => Promise<void> {
  let closing: Promise<void> | null = null;
  return () => {
    closing ??= (async () => {
      timers.close();
      await webhooks.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    })();
    return closing;
  };
}

export interface PayoutWebhookDelivery {
  /** The stand-in's id of the delivery (Wise X-Delivery-Id; Airwallex event id). */
  id: string;
  body: string;
  url: string | null;
  state: "pending" | "delivered" | "failed" | "no_url";
  /** The receiver's status per attempt, or null for a connection error. */
  attempts: (number | null)[];
}

export interface WebhookSenderOptions {
  /** Headers carrying the signature, made for each attempt (Airwallex signs the send time). */
  sign(body: string, deliveryId: string): Record<string, string>;
  log?: StandinLog | undefined;
  maxAttempts?: number;
  retryBaseMs?: number;
  timeoutMs?: number;
}

/** POSTs signed events to one URL, off the caller's path, retrying non-2xx and connection errors. */
export class WebhookSender {
  private url: string | null = null;
  private readonly records: PayoutWebhookDelivery[] = [];
  private readonly inFlight = new Set<Promise<void>>();
  private readonly timers = new Timers();
  /** Retry backoffs under way, ended early by close(). */
  private readonly waiting = new Set<() => void>();
  private closed = false;

  constructor(private readonly o: WebhookSenderOptions) {}

  setUrl(url: string | null): void {
    if (url !== null) new URL(url); // a malformed URL throws now, not at delivery
    this.url = url;
  }

  send(deliveryId: string, body: string): void {
    if (this.closed) return;
    const rec: PayoutWebhookDelivery = {
      id: deliveryId,
      body,
      url: this.url,
      state: "pending",
      attempts: [],
    };
    this.records.push(rec);
    if (this.records.length > STANDIN_DELIVERIES_MAX) this.records.shift();
    if (!this.url) {
      rec.state = "no_url";
      return;
    }
    const p = this.deliver(rec).finally(() => this.inFlight.delete(p));
    this.inFlight.add(p);
  }

  /** Sends a recorded delivery again with the same id and body; false when it is not (or no longer) kept. */
  resend(deliveryId: string): boolean {
    const rec = this.records.find((r) => r.id === deliveryId);
    if (!rec) return false;
    this.send(rec.id, rec.body);
    return true;
  }

  deliveries(): PayoutWebhookDelivery[] {
    return this.records.map((r) => ({ ...r, attempts: [...r.attempts] }));
  }

  /** Resolves once every delivery under way has settled, retries included. */
  async flush(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const wake of [...this.waiting]) wake();
    this.timers.close();
    await this.flush();
  }

  private async deliver(rec: PayoutWebhookDelivery): Promise<void> {
    const maxAttempts = this.o.maxAttempts ?? 4;
    for (let attempt = 1; attempt <= maxAttempts && !this.closed; attempt++) {
      let status: number | null = null;
      try {
        const res = await fetch(rec.url!, {
          method: "POST",
          headers: { "content-type": "application/json", ...this.o.sign(rec.body, rec.id) },
          body: rec.body,
          signal: AbortSignal.timeout(this.o.timeoutMs ?? 5000),
        });
        status = res.status;
        await res.arrayBuffer().catch(() => undefined);
      } catch (err) {
        this.o.log?.debug({ err, url: rec.url }, "payout stand-in webhook delivery failed");
      }
      rec.attempts.push(status);
      if (status !== null && status >= 200 && status <= 299) {
        rec.state = "delivered";
        return;
      }
      if (attempt < maxAttempts) {
        await new Promise<void>((resolve) => {
          const wake = () => {
            this.waiting.delete(wake);
            resolve();
          };
          this.waiting.add(wake);
          this.timers.after((this.o.retryBaseMs ?? 50) * 2 ** (attempt - 1), wake);
        });
      }
    }
    rec.state = "failed";
    this.o.log?.warn({ url: rec.url, id: rec.id }, "payout stand-in webhook not delivered");
  }
}
