// Owns the endpoints the processes of a deployment call on each other (LEDGER_SPREAD), outside
// the public API pipeline (no per-IP budget, no user token: the shared INTERNAL_TOKEN instead):
// POST /internal/ledger runs a batch of commands and reads for shards this process owns (each
// answered on its own, in order), POST /internal/credits takes tip credits for accounts of its
// shards. Neither ever sends a call on: a shard this process does not own is answered `not_owner`
// (409, or that call's result in a batch), and the caller looks again.
import { timingSafeEqual } from "node:crypto";
import type { Logger } from "pino";
import { z } from "zod";
import { AppError } from "../errors.ts";
import { parseJsonObject, readBody } from "../http/request.ts";
import { errorAnswer, type Reply, sendError, sendJson } from "../http/respond.ts";
import type { HttpApp } from "../http/server.ts";
import { NotOwnerError, type PeerOp, type RemoteCredit } from "../shards/ports.ts";
import { INTERNAL_TOKEN_HEADER, PEER_BATCH_MAX, type PeerResult } from "./peers.ts";

/** What the internal endpoints need of the ledger. */
export interface PeerServedLedger {
  runForPeer(op: PeerOp): Promise<unknown>;
  acceptCredits(credits: RemoteCredit[]): Promise<void>;
}

/** Largest internal call: a batch of credits of one flush with their tips' details. */
const INTERNAL_BODY_LIMIT_BYTES = 8 * 1024 * 1024;

const uuid = z.uuid();
const opSchema = z.discriminatedUnion("op", [
  z.object({ op: z.literal("submit"), cmd: z.looseObject({ kind: z.string(), key: z.string() }) }),
  z.object({ op: z.literal("account"), accountId: z.string() }),
  z.object({ op: z.literal("payout"), accountId: z.string(), payoutId: z.string() }),
  z.object({ op: z.literal("payouts"), accountId: z.string() }),
]);
const batchSchema = z.object({ calls: z.array(z.unknown()).min(1).max(PEER_BATCH_MAX) });
const creditsSchema = z.object({
  credits: z
    .array(
      z.object({
        accountId: uuid,
        txId: uuid,
        amountCents: z.number().int().positive(),
        atMs: z.number().int().nonnegative(),
        check: z.boolean().optional(),
        tx: z.looseObject({ id: uuid }).optional(),
      }),
    )
    .min(1)
    .max(100_000),
});

export function registerInternalRoutes(
  http: Pick<HttpApp, "post">,
  d: { ledger: PeerServedLedger; token: string; logger: Logger },
): void {
  const expected = Buffer.from(d.token);
  const authorised = (given: string) => {
    const b = Buffer.from(given);
    return b.length === expected.length && timingSafeEqual(b, expected);
  };
  const endpoint = (path: string, run: (body: Record<string, unknown>) => Promise<unknown>) =>
    http.post(path, (res, req) => {
      const reply: Reply = { res, aborted: false };
      res.onAborted(() => {
        reply.aborted = true;
      });
      const given = req.getHeader(INTERNAL_TOKEN_HEADER);
      // The body must be subscribed to before this handler returns, or uWS drops it.
      const bodyP = readBody(res, INTERNAL_BODY_LIMIT_BYTES, () => reply.aborted);
      bodyP.catch(() => {});
      void (async () => {
        if (!authorised(given))
          throw new AppError("unauthorized", "internal calls need the deployment's internal token");
        const body = parseJsonObject(await bodyP);
        const answer = await run(body);
        sendJson(reply, 200, answer);
      })().catch((err) => {
        if (err instanceof NotOwnerError) {
          sendJson(reply, 409, { error: { code: "not_owner", message: err.message } });
          return;
        }
        sendError(reply, err, d.logger);
      });
    });
  // Every call of a batch runs at once (commands of one turn share the owner's next group commit);
  // the answer waits for the slowest.
  const one = async (raw: unknown): Promise<PeerResult> => {
    try {
      return { ok: (await d.ledger.runForPeer(opSchema.parse(raw) as PeerOp)) ?? null };
    } catch (err) {
      if (err instanceof NotOwnerError) return { error: { code: "not_owner", message: err.message } };
      return { error: errorAnswer(err, d.logger).body.error };
    }
  };
  endpoint("/internal/ledger", async (body) => ({
    results: await Promise.all(batchSchema.parse(body).calls.map(one)),
  }));
  endpoint("/internal/credits", async (body) => {
    await d.ledger.acceptCredits(creditsSchema.parse(body).credits as RemoteCredit[]);
    return { ok: null };
  });
}
