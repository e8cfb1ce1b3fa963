// Owns talking to the other processes of a deployment whose shards are spread (LEDGER_SPREAD):
// a command, a read or a batch of tip credits for a shard this process does not own goes to that
// shard's owner over HTTP (its internal address, internal-routes.ts there), with the shared
// internal token. A shard that moved (the old owner answers not_owner, or nobody answers) is
// looked up again and the call tried again, a few times over about two seconds; commands carry
// their idempotency key, so a call whose answer was lost is safe to send again. The owner's
// refusal comes back as the same AppError, so the HTTP edge answers exactly as the owner would.
import type { Logger } from "pino";
import { AppError, type ErrorCode } from "../errors.ts";
import type { PeerLedger, PeerOp, RemoteCredit } from "../shards/ports.ts";
import type { Placement } from "./placement.ts";

/** Header carrying the shared secret of internal calls. */
export const INTERNAL_TOKEN_HEADER = "x-internal-token";

/** Longest wait for one internal call's answer (the owner waits for its WAL within this). */
const CALL_TIMEOUT_MS = 10_000;
/** Pauses between tries when the shard's owner is unknown or moved: ~2.5 s in all. */
const RETRY_PAUSES_MS = [0, 50, 100, 200, 400, 700, 1000];

/** The answer of an owner that no longer owns the shard: look it up again. */
class Moved extends Error {}

export class PeerClient implements PeerLedger {
  constructor(
    private readonly placement: Pick<Placement, "ownerUrl" | "refreshRoutes">,
    private readonly token: string,
    private readonly logger: Logger,
  ) {}

  call(shard: number, op: PeerOp): Promise<unknown> {
    return this.send(shard, "/internal/ledger", op);
  }

  async credit(shard: number, credits: RemoteCredit[]): Promise<void> {
    await this.send(shard, "/internal/credits", { credits });
  }

  private async send(shard: number, path: string, body: unknown): Promise<unknown> {
    const payload = JSON.stringify(body);
    let last = "";
    for (const pause of RETRY_PAUSES_MS) {
      if (pause > 0) {
        await new Promise((r) => setTimeout(r, pause));
        await this.placement.refreshRoutes().catch(() => {});
      }
      const url = this.placement.ownerUrl(shard);
      if (url === null) {
        last = `no process owns shard ${shard} now`;
        continue;
      }
      try {
        return await this.post(url + path, payload);
      } catch (err) {
        // An answer the owner gave (a refusal) is final; not reaching it, or a moved shard, is not.
        if (err instanceof AppError) throw err;
        last = (err as Error).message;
      }
    }
    this.logger.warn({ shard, why: last }, "the owner of a shard could not be reached");
    throw new AppError(
      "unavailable",
      "the owner of this account's shard is not reachable now; retry shortly",
    );
  }

  private async post(url: string, payload: string): Promise<unknown> {
    const res = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json", [INTERNAL_TOKEN_HEADER]: this.token },
      body: payload,
      signal: AbortSignal.timeout(CALL_TIMEOUT_MS),
    });
    const text = await res.text();
    let json: { ok?: unknown; error?: { code?: string; message?: string; details?: unknown } };
    try {
      json = JSON.parse(text);
    } catch {
      throw new Error(`${url} answered ${res.status} without JSON`);
    }
    if (res.ok) return json.ok ?? null;
    const e = json.error;
    if (e?.code === "not_owner") throw new Moved(e.message ?? "moved");
    // Its own 503 (recovering, taking the shard over): worth another try, like a moved shard.
    if (res.status === 503 || !e?.code)
      throw new Error(`${url} answered ${res.status}: ${e?.message ?? text}`);
    throw new AppError(e.code as ErrorCode, e.message ?? "refused by the shard's owner", e.details);
  }
}
