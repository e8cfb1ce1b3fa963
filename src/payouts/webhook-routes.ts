// Owns the payout providers' webhooks: POST /api/payments/webhooks/wise and /airwallex. A
// delivery is verified (signature, and Airwallex's timestamp), deduplicated by its delivery id,
// and treated as a hint: the transfer's status is asked of the provider's API, and only what the
// API says is published to the outcome channel (so a forged, replayed or lying webhook moves no
// money, and an event delivered late or out of order changes nothing the ledger has passed).
import type { RedisClient } from "../redis/connect.ts";
import type pg from "pg";
import type { Logger } from "pino";
import { AppError } from "../errors.ts";
import type { RouteContext, RouteDef } from "../http/router.ts";
import { isUuid } from "../ledger/accounts.ts";
import type { Ledger } from "../shards/ledger.ts";
import { outcomesOf, publishPayoutOutcome } from "./outcomes.ts";
import type { PayoutStore } from "./payout-store.ts";
import {
  type PayoutProvider,
  PayoutProviderError,
  type PayoutProviderName,
  type PayoutWebhookHint,
} from "./provider.ts";
import {
  type PayoutWebhookConfig,
  PayoutWebhookError,
  verifyAirwallexWebhook,
  verifyWiseWebhook,
} from "./webhooks.ts";

export interface PayoutWebhookDeps {
  pool: pg.Pool;
  ledger: Ledger;
  store: PayoutStore;
  providers: Partial<Record<PayoutProviderName, PayoutProvider>>;
  webhooks: PayoutWebhookConfig;
  /** The outcome channel's Redis (the ledger's). */
  redis: RedisClient;
  prefix: string;
  logger: Logger;
}

export function payoutWebhookRoutes(d: PayoutWebhookDeps): RouteDef[] {
  const route = (provider: PayoutProviderName): RouteDef => ({
    method: "post",
    path: `/api/payments/webhooks/${provider}`,
    auth: "none",
    doc: {
      summary: `${provider === "wise" ? "Wise" : "Airwallex"} webhook (signed; the provider calls it)`,
      response: { status: 200, description: "received" },
      errors: ["invalid_signature"],
    },
    body: "raw",
    async handler(ctx) {
      const hint = verify(provider, ctx, d.webhooks);
      if (!hint) return { status: 200, body: { received: true, ignored: true } };
      return { status: 200, body: await handle(d, hint) };
    },
  });
  return [route("wise"), route("airwallex")];
}

function verify(
  provider: PayoutProviderName,
  ctx: RouteContext,
  w: PayoutWebhookConfig,
): PayoutWebhookHint | null {
  const headers = Object.fromEntries(ctx.req.headers);
  try {
    return provider === "wise"
      ? verifyWiseWebhook(ctx.raw!, headers, w.wisePublicKeyPem)
      : verifyAirwallexWebhook(ctx.raw!, headers, w.airwallexSecret, { toleranceMs: w.toleranceMs });
  } catch (err) {
    if (!(err instanceof PayoutWebhookError)) throw err;
    const malformed = err.code === "malformed_body" || err.code === "body_too_large";
    throw new AppError(malformed ? "validation_error" : "invalid_signature", err.message, {
      reason: err.code,
    });
  }
}

async function handle(d: PayoutWebhookDeps, hint: PayoutWebhookHint): Promise<Record<string, unknown>> {
  const seen = await d.pool.query<{ processed_at: Date | null }>(
    `INSERT INTO payout_webhook_events (provider, delivery_id, provider_transfer_id, claimed_status)
     VALUES ($1, $2, $3, $4)
     ON CONFLICT (provider, delivery_id) DO UPDATE SET deliveries = payout_webhook_events.deliveries + 1
     RETURNING processed_at`,
    [hint.provider, hint.deliveryId, hint.providerTransferId, hint.claimedStatus.slice(0, 100)],
  );
  if (seen.rows[0]?.processed_at) return { received: true, duplicate: true };
  const done = (outcome: string, payoutId: string | null) =>
    d.pool.query(
      `UPDATE payout_webhook_events SET processed_at = now(), outcome = $3, payout_id = $4
        WHERE provider = $1 AND delivery_id = $2`,
      [hint.provider, hint.deliveryId, outcome, payoutId],
    );
  // Which payout: the id the event carries (Airwallex request_id), or the transfer's.
  if (hint.payoutId !== undefined && !isUuid(hint.payoutId))
    return { received: true, unknown_transfer: true };
  const found = await d.pool.query<{ id: string; user_id: string }>(
    hint.payoutId
      ? "SELECT id, user_id FROM payouts WHERE id = $1 AND provider = $2"
      : "SELECT id, user_id FROM payouts WHERE provider_transfer_id = $1 AND provider = $2",
    [hint.payoutId ?? hint.providerTransferId, hint.provider],
  );
  const row = found.rows[0];
  // Not ours, or not yet in Postgres: left unprocessed, so a redelivery is looked at again.
  if (!row) return { received: true, unknown_transfer: true };
  const payout = await d.ledger.getPayout(row.user_id, row.id);
  const provider = d.providers[hint.provider];
  if (!payout || !provider) return { received: true, unknown_transfer: true };
  let status: Awaited<ReturnType<PayoutProvider["getTransfer"]>>;
  try {
    status = await provider.getTransfer(hint.providerTransferId);
  } catch (err) {
    if (err instanceof PayoutProviderError && err.retryable) {
      throw new AppError("unavailable", `${hint.provider} is unavailable; deliver again`);
    }
    d.logger.warn(
      { provider: hint.provider, transfer: hint.providerTransferId, code: (err as PayoutProviderError).code },
      "a payout webhook names a transfer the provider does not confirm; ignored",
    );
    await done("not_confirmed", payout.id);
    return { received: true, ignored: true };
  }
  const knownPaid = payout.status === "paid" || (payout.status === "returned" && payout.paidAt !== null);
  const outcomes = outcomesOf(status, knownPaid);
  for (const o of outcomes) {
    await publishPayoutOutcome(d.redis, d.prefix, {
      payoutId: payout.id,
      userId: payout.userId,
      round: payout.round,
      providerTransferId: status.providerTransferId,
      ...o,
    });
  }
  await done(outcomes[outcomes.length - 1]!.state, payout.id);
  return { received: true };
}
