// Owns talking to the other processes of a deployment whose shards are spread (LEDGER_SPREAD):
// the commands and reads for shards this process does not own go to those shards' owners over
// HTTP (their internal address, internal-routes.ts there), with the shared internal token, and so
// do batches of tip credits. The calls of one event-loop turn for one owner travel in ONE request
// (a request per tip cost the sender more CPU than the tip itself). A call for a shard that moved
// (the old owner answers not_owner, or nobody answers) is looked up again and sent again, a few
// times over about two seconds; commands carry their idempotency key, so a call whose answer was
// lost is safe to send again. The owner's refusal comes back as the same AppError, so the HTTP
// edge answers exactly as the owner would.
import type { Logger } from "pino";
import { AppError, type ErrorCode } from "../errors.ts";
import type { PeerLedger, PeerOp, RemoteCredit } from "../shards/ports.ts";
import type { Placement } from "./placement.ts";

/** Header carrying the shared secret of internal calls. */
export const INTERNAL_TOKEN_HEADER = "x-internal-token";

/** Most calls in one request (the owner answers them together). */
export const PEER_BATCH_MAX = 2000;

/** One call's answer inside a batch's answer. */
export type PeerResult = { ok: unknown } | { error: { code: string; message: string; details?: unknown } };

/** Longest wait for one internal request's answer (the owner waits for its WAL within this). */
const CALL_TIMEOUT_MS = 10_000;
/** Pauses before each new try when the shard's owner is unknown, moved or busy: ~2.5 s in all. */
const RETRY_PAUSES_MS = [50, 100, 200, 400, 700, 1000];

interface Call {
  shard: number;
  op: PeerOp;
  tries: number;
  resolve(v: unknown): void;
  reject(e: Error): void;
}

interface CreditCall {
  shard: number;
  credits: RemoteCredit[];
  tries: number;
  resolve(): void;
  reject(e: Error): void;
}

export class PeerClient implements PeerLedger {
  /** Calls and credits waiting for this turn's requests, by owner address. */
  private readonly queued = new Map<string, Call[]>();
  private readonly creditsQueued = new Map<string, CreditCall[]>();
  private scheduled = false;
  private refreshing: Promise<void> | null = null;

  constructor(
    private readonly placement: Pick<Placement, "ownerUrl" | "refreshRoutes">,
    private readonly token: string,
    private readonly logger: Logger,
  ) {}

  call(shard: number, op: PeerOp): Promise<unknown> {
    return new Promise((resolve, reject) => {
      this.enqueue({ shard, op, tries: 0, resolve, reject });
    });
  }

  /** The credits of one turn for the shards of one owner go in one request. */
  credit(shard: number, credits: RemoteCredit[]): Promise<void> {
    return new Promise((resolve, reject) => {
      this.enqueueCredits({ shard, credits, tries: 0, resolve, reject });
    });
  }

  private enqueue(c: Call): void {
    this.route(c, this.queued, () => this.enqueue(c));
  }

  private enqueueCredits(c: CreditCall): void {
    this.route(c, this.creditsQueued, () => this.enqueueCredits(c));
  }

  /** Into this turn's request to the shard's owner, or, with no owner known, tried again later. */
  private route<T extends Call | CreditCall>(c: T, queue: Map<string, T[]>, retry: () => void): void {
    const url = this.placement.ownerUrl(c.shard);
    if (url === null) {
      this.again(c, `no process owns shard ${c.shard} now`, retry);
      return;
    }
    const list = queue.get(url);
    if (list) list.push(c);
    else queue.set(url, [c]);
    this.schedule();
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => this.flush());
  }

  private flush(): void {
    this.scheduled = false;
    for (const [url, calls] of this.queued) {
      for (let i = 0; i < calls.length; i += PEER_BATCH_MAX)
        void this.send(url, calls.slice(i, i + PEER_BATCH_MAX));
    }
    this.queued.clear();
    for (const [url, calls] of this.creditsQueued) void this.sendCredits(url, calls);
    this.creditsQueued.clear();
  }

  private async sendCredits(url: string, calls: CreditCall[]): Promise<void> {
    try {
      await this.post(
        `${url}/internal/credits`,
        JSON.stringify({ credits: calls.flatMap((c) => c.credits) }),
      );
    } catch (err) {
      // A refusal of the batch is final for all of it; anything else (moved, busy, not reached)
      // is tried again, each shard's credits on their own.
      for (const c of calls) {
        if (err instanceof AppError) c.reject(err);
        else this.again(c, (err as Error).message, () => this.enqueueCredits(c));
      }
      return;
    }
    for (const c of calls) c.resolve();
  }

  private async send(url: string, calls: Call[]): Promise<void> {
    let results: PeerResult[];
    try {
      const answer = (await this.post(
        `${url}/internal/ledger`,
        JSON.stringify({ calls: calls.map((c) => c.op) }),
      )) as { results?: PeerResult[] };
      if (!Array.isArray(answer.results) || answer.results.length !== calls.length) {
        throw new Error(`${url} answered ${answer.results?.length} results for ${calls.length} calls`);
      }
      results = answer.results;
    } catch (err) {
      // Not reached, or no usable answer: every call of the request is sent again.
      for (const c of calls) this.again(c, (err as Error).message, () => this.enqueue(c));
      return;
    }
    calls.forEach((c, i) => {
      const r = results[i]!;
      if ("ok" in r) {
        c.resolve(r.ok);
        return;
      }
      const e = r.error;
      // Moved, or its owner busy taking it over or recovering: worth another try, elsewhere maybe.
      if (e.code === "not_owner" || e.code === "unavailable") this.again(c, e.message, () => this.enqueue(c));
      else c.reject(new AppError(e.code as ErrorCode, e.message, e.details));
    });
  }

  /** Tries `c` again (`retry`) after the next pause and a fresh look at the owners, or gives up. */
  private again(c: Call | CreditCall, why: string, retry: () => void): void {
    if (c.tries >= RETRY_PAUSES_MS.length) {
      this.logger.warn({ shard: c.shard, why }, "the owner of a shard could not be reached");
      c.reject(
        new AppError("unavailable", "the owner of this account's shard is not reachable now; retry shortly"),
      );
      return;
    }
    const pause = RETRY_PAUSES_MS[c.tries++]!;
    setTimeout(() => {
      this.refresh().then(retry, retry);
    }, pause);
  }

  /** One read of the owners at a time, whoever asks for it. */
  private refresh(): Promise<void> {
    this.refreshing ??= this.placement.refreshRoutes().finally(() => {
      this.refreshing = null;
    });
    return this.refreshing;
  }

  private async post(url: string, payload: string): Promise<unknown> {
    const res = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json", [INTERNAL_TOKEN_HEADER]: this.token },
      body: payload,
      signal: AbortSignal.timeout(CALL_TIMEOUT_MS),
    });
    const text = await res.text();
    let json: {
      ok?: unknown;
      results?: unknown;
      error?: { code?: string; message?: string; details?: unknown };
    };
    try {
      json = JSON.parse(text);
    } catch {
      throw new Error(`${url} answered ${res.status} without JSON`);
    }
    if (res.ok) return json.ok !== undefined ? json.ok : json;
    const e = json.error;
    // Moved, or its own 503 (recovering, taking the shard over): another try, like a moved shard.
    if (e?.code === "not_owner" || res.status === 503 || !e?.code) {
      throw new Error(`${url} answered ${res.status}: ${e?.message ?? text}`);
    }
    throw new AppError(e.code as ErrorCode, e.message ?? "refused by the shard's owner", e.details);
  }
}
