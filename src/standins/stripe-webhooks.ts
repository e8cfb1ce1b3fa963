// Owns webhook signing and delivery for the Stripe stand-in: Stripe's `t=<unix>,v1=<hex>` HMAC
// scheme, and a dispatcher that POSTs events off the request path with retries, plus the ways
// real Stripe misbehaves (duplicate deliveries, arbitrary order, delays) so receivers are tested
// against them on purpose rather than by luck.
import { createHmac, randomInt } from "node:crypto";
import http from "node:http";
import https from "node:https";
import type { Logger } from "pino";

export type StandinLog = Pick<Logger, "debug" | "info" | "warn" | "error">;

/** The `Stripe-Signature` header Stripe sends: HMAC-SHA256 of `${t}.${payload}` keyed by the endpoint secret. */
export function signStripePayload(payload: string, secret: string, timestampS?: number): string {
  const t = timestampS ?? Math.floor(Date.now() / 1000);
  const v1 = createHmac("sha256", secret).update(`${t}.${payload}`, "utf8").digest("hex");
  return `t=${t},v1=${v1}`;
}

export interface WebhookBehaviour {
  /** Deliver each event this many times, concurrently (Stripe promises at-least-once). */
  duplicate: number;
  /** Hold events for `reorderHoldMs`, then deliver the batch one by one in a shuffled order. */
  reorder: boolean;
  /** Queue events without delivering until resumed. */
  paused: boolean;
  /** Attempts per delivery, first included; non-2xx answers and connection errors are retried. */
  maxAttempts: number;
  /** Backoff before retry n is retryBaseMs * 2^(n-1). */
  retryBaseMs: number;
  timeoutMs: number;
  reorderHoldMs: number;
}

export const DEFAULT_WEBHOOK_BEHAVIOUR: WebhookBehaviour = {
  duplicate: 1,
  reorder: false,
  paused: false,
  maxAttempts: 4,
  retryBaseMs: 20,
  timeoutMs: 5_000,
  reorderHoldMs: 30,
};

/** A bound on memory: the oldest delivery records are dropped past this. */
export const DELIVERY_RECORDS_MAX = 50_000;
/** A bound on memory: events held while paused beyond this are dropped (and logged). */
export const HELD_EVENTS_MAX = 50_000;
const DUPLICATE_MAX = 20;

export interface DeliveryAttempt {
  atMs: number;
  /** The receiver's HTTP status, or null when the connection failed. */
  status: number | null;
  error: string | null;
  signature: string;
}

export interface WebhookDelivery {
  eventId: string;
  type: string;
  /** 1..duplicate: which copy of the event this was. */
  copy: number;
  url: string;
  state: "pending" | "delivered" | "failed";
  attempts: DeliveryAttempt[];
}

interface Job {
  eventId: string;
  type: string;
  payload: string;
}

export interface WebhookDispatcherOptions {
  secret: string;
  url: string | null;
  behaviour?: Partial<WebhookBehaviour>;
  log?: StandinLog | undefined;
  /** Called once per delivery copy when it settles. */
  onSettled?: (eventId: string, delivered: boolean) => void;
}

export class WebhookDispatcher {
  private url: string | null;
  private readonly secret: string;
  private behaviour: WebhookBehaviour;
  private readonly log: StandinLog | undefined;
  private readonly onSettled: ((eventId: string, delivered: boolean) => void) | undefined;
  private readonly records: WebhookDelivery[] = [];
  private held: Job[] = [];
  private reorderBuffer: Job[] = [];
  private reorderTimer: NodeJS.Timeout | null = null;
  private readonly inFlight = new Set<Promise<void>>();
  /** Pending retry backoffs, with the resolver that ends each early on close(). */
  private readonly retryTimers = new Map<NodeJS.Timeout, () => void>();
  private closed = false;

  constructor(o: WebhookDispatcherOptions) {
    this.secret = o.secret;
    this.url = o.url;
    this.behaviour = checkBehaviour({ ...DEFAULT_WEBHOOK_BEHAVIOUR, ...o.behaviour });
    this.log = o.log;
    this.onSettled = o.onSettled;
  }

  get targetUrl(): string | null {
    return this.url;
  }

  setUrl(url: string | null): void {
    if (url !== null) new URL(url); // throws on a malformed URL now rather than at delivery
    this.url = url;
  }

  settings(): WebhookBehaviour {
    return { ...this.behaviour };
  }

  /** Changes behaviour for events from now on; unpausing releases the held events. */
  configure(change: Partial<WebhookBehaviour>): WebhookBehaviour {
    const wasPaused = this.behaviour.paused;
    this.behaviour = checkBehaviour({ ...this.behaviour, ...change });
    if (wasPaused && !this.behaviour.paused) {
      const held = this.held;
      this.held = [];
      for (const job of held) this.route(job);
    }
    if (!this.behaviour.reorder) this.releaseReorderBuffer();
    return this.settings();
  }

  /** Queues one event for delivery; returns at once (delivery never runs on the caller's path). */
  enqueue(eventId: string, type: string, payload: string): void {
    if (this.closed) return;
    this.route({ eventId, type, payload });
  }

  /**
   * Resolves once every delivery that can run has finished (with its retries). Events held by a
   * reorder window are released now; events held while paused stay held.
   */
  async flush(): Promise<void> {
    for (;;) {
      this.releaseReorderBuffer();
      if (this.inFlight.size === 0) return;
      await Promise.allSettled([...this.inFlight]);
    }
  }

  deliveries(): WebhookDelivery[] {
    return this.records.map((r) => ({ ...r, attempts: r.attempts.map((a) => ({ ...a })) }));
  }

  heldCount(): number {
    return this.held.length;
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.reorderTimer) clearTimeout(this.reorderTimer);
    this.reorderTimer = null;
    this.reorderBuffer = [];
    this.held = [];
    for (const [t, wake] of this.retryTimers) {
      clearTimeout(t);
      wake();
    }
    this.retryTimers.clear();
    await Promise.allSettled([...this.inFlight]);
  }

  private route(job: Job): void {
    if (this.behaviour.paused) {
      if (this.held.length >= HELD_EVENTS_MAX) {
        this.log?.warn({ eventId: job.eventId }, "stripe stand-in: held webhook queue full, event dropped");
        return;
      }
      this.held.push(job);
      return;
    }
    if (this.behaviour.reorder) {
      this.reorderBuffer.push(job);
      this.reorderTimer ??= setTimeout(() => this.releaseReorderBuffer(), this.behaviour.reorderHoldMs);
      return;
    }
    // setImmediate: the API response that caused the event is written before delivery starts.
    this.track(new Promise<void>((resolve) => setImmediate(resolve)).then(() => this.deliverCopies(job)));
  }

  private releaseReorderBuffer(): void {
    if (this.reorderTimer) clearTimeout(this.reorderTimer);
    this.reorderTimer = null;
    if (this.reorderBuffer.length === 0) return;
    const batch = shuffleNotIdentity(this.reorderBuffer);
    this.reorderBuffer = [];
    // One after another, so the shuffled order is the order the receiver sees.
    this.track(
      (async () => {
        for (const job of batch) await this.deliverCopies(job);
      })(),
    );
  }

  private track(p: Promise<void>): void {
    const tracked = p.catch((err: unknown) => {
      this.log?.error({ err }, "stripe stand-in: webhook dispatcher bug");
    });
    this.inFlight.add(tracked);
    void tracked.finally(() => this.inFlight.delete(tracked));
  }

  private async deliverCopies(job: Job): Promise<void> {
    const copies = Array.from({ length: this.behaviour.duplicate }, (_, i) => this.deliverOne(job, i + 1));
    await Promise.all(copies);
  }

  private async deliverOne(job: Job, copy: number): Promise<void> {
    const url = this.url;
    const record: WebhookDelivery = {
      eventId: job.eventId,
      type: job.type,
      copy,
      url: url ?? "",
      state: "pending",
      attempts: [],
    };
    this.records.push(record);
    if (this.records.length > DELIVERY_RECORDS_MAX)
      this.records.splice(0, this.records.length - DELIVERY_RECORDS_MAX);
    if (url === null) {
      record.state = "failed";
      record.attempts.push({ atMs: Date.now(), status: null, error: "no webhook url set", signature: "" });
      this.onSettled?.(job.eventId, false);
      return;
    }
    const { maxAttempts, retryBaseMs, timeoutMs } = this.behaviour;
    for (let n = 1; n <= maxAttempts && !this.closed; n++) {
      // Stripe signs every attempt afresh, so a retry carries a current timestamp.
      const signature = signStripePayload(job.payload, this.secret);
      const attempt: DeliveryAttempt = { atMs: Date.now(), status: null, error: null, signature };
      record.attempts.push(attempt);
      try {
        attempt.status = await postJson(url, job.payload, signature, timeoutMs);
      } catch (err) {
        attempt.error = err instanceof Error ? err.message : String(err);
      }
      if (attempt.status !== null && attempt.status >= 200 && attempt.status < 300) {
        record.state = "delivered";
        this.onSettled?.(job.eventId, true);
        return;
      }
      if (n < maxAttempts) await this.sleep(retryBaseMs * 2 ** (n - 1));
    }
    record.state = "failed";
    this.log?.warn(
      { eventId: job.eventId, type: job.type, url, attempts: record.attempts.length },
      "stripe stand-in: webhook delivery failed",
    );
    this.onSettled?.(job.eventId, false);
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.retryTimers.delete(t);
        resolve();
      }, ms);
      this.retryTimers.set(t, resolve);
    });
  }
}

function checkBehaviour(b: WebhookBehaviour): WebhookBehaviour {
  const whole = (n: number, min: number, max: number, name: string) => {
    if (!Number.isInteger(n) || n < min || n > max) {
      throw new RangeError(`webhook ${name} must be an integer from ${min} to ${max}, got ${n}`);
    }
  };
  whole(b.duplicate, 1, DUPLICATE_MAX, "duplicate");
  whole(b.maxAttempts, 1, 20, "maxAttempts");
  whole(b.retryBaseMs, 0, 60_000, "retryBaseMs");
  whole(b.timeoutMs, 1, 120_000, "timeoutMs");
  whole(b.reorderHoldMs, 0, 60_000, "reorderHoldMs");
  return b;
}

/** A Fisher-Yates shuffle that never returns the input order, so "reordered" always means it. */
function shuffleNotIdentity<T>(items: T[]): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = randomInt(i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  if (out.length > 1 && out.every((x, i) => x === items[i])) out.push(out.shift()!);
  return out;
}

function postJson(url: string, body: string, signature: string, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const target = new URL(url);
    const client = target.protocol === "https:" ? https : http;
    const req = client.request(
      target,
      {
        method: "POST",
        agent: false, // a fresh connection per attempt, as Stripe does; nothing pools between tests
        timeout: timeoutMs,
        headers: {
          "content-type": "application/json; charset=utf-8",
          "content-length": Buffer.byteLength(body),
          "stripe-signature": signature,
          "user-agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
          "cache-control": "no-cache",
          accept: "*/*; q=0.5, application/xml",
        },
      },
      (res) => {
        res.resume();
        res.on("end", () => resolve(res.statusCode ?? 0));
        res.on("error", reject);
      },
    );
    req.on("timeout", () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on("error", reject);
    req.end(body);
  });
}
