// The payout worker end to end: the API (owning the ledger), BullMQ on the real Redis, the worker
// calling the Wise and Airwallex stand-ins over HTTP, and the outcomes coming back through the
// channel to the ledger. Each test account number's path: paid, 5xx twice then paid, refused
// (failed, reserve released); and a job run twice pays once.
import { randomUUID } from "node:crypto";
import type { Job } from "bullmq";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { PayoutJobData } from "../../src/payouts/payout-queue.ts";
import { reconcileLedger } from "../../src/persist/reconcile.ts";
import { signAirwallexPayload } from "../../src/payouts/webhooks.ts";
import { PayoutSweeper } from "../../src/workers/payout-sweeper.ts";
import type { PayoutWorker } from "../../src/workers/payout-worker.ts";
import { publishPayoutOutcome } from "../../src/payouts/outcomes.ts";
import { PayoutProviderError } from "../../src/payouts/provider.ts";
import { type Api, startApi } from "../helpers/api.ts";
import { testPayoutWorker } from "../helpers/payout-worker.ts";
import { creatorWithMethod, withdraw20 } from "../helpers/payout-creator.ts";
import { createTestEnv, type TestEnv, waitFor } from "../helpers/env.ts";
import { settle, silentLogger } from "../helpers/ledger.ts";

let env: TestEnv;
let api: Api;
let worker: PayoutWorker;

beforeAll(async () => {
  env = await createTestEnv("payout_worker");
  api = await startApi(env, {
    PAYOUT_OUTCOME_BLOCK_MS: "50",
    PAYOUT_JOB_BACKOFF_MS: "50",
    PAYOUT_STANDIN_DELAY_MS: "100",
  });
  worker = testPayoutWorker(api, env, {
    onProviderError: (provider, code) => api.http.metrics.providerError(provider, code),
  });
});
afterAll(async () => {
  await worker?.close();
  await api?.close();
  await env?.cleanup();
});

const payoutOf = async (creator: { token: string }, id: string) =>
  (await api.call("GET", `/api/payments/payouts/${id}`, { token: creator.token })).body.payout;

async function finalState(creator: { token: string }, id: string, status: string) {
  await waitFor(async () => (await payoutOf(creator, id)).status === status, 20_000, `payout ${status}`);
  await settle(api.core);
  return payoutOf(creator, id);
}

async function money(userId: string) {
  const r = await env.pool.query(
    "SELECT balance_cents::int AS bal, reserved_balance_cents::int AS res, earned_cents::int AS earned FROM ledger WHERE id = $1",
    [userId],
  );
  return r.rows[0];
}

describe("the payout worker", () => {
  for (const provider of ["wise", "airwallex"] as const) {
    it(`pays through ${provider}: pending -> processing -> paid, posted once`, async () => {
      const creator = await creatorWithMethod(api, provider, "000123456789");
      const id = await withdraw20(api, creator);
      const p = await finalState(creator, id, "paid");
      expect(p).toMatchObject({
        status: "paid",
        provider,
        provider_reference: expect.any(String),
        attempts: 1,
      });
      expect(p.paid_at).not.toBeNull();
      expect(await money(creator.id)).toEqual({ bal: 2850, res: 0, earned: 2850 });
      const posts = await env.pool.query(
        "SELECT count(*)::int AS n FROM ledger_entries WHERE transaction_id = $1 AND account_id = $2",
        [id, creator.id],
      );
      expect(posts.rows[0].n).toBe(1);
      expect(await reconcileLedger(env.pool, api.core.ledger.snapshot())).toMatchObject({ ok: true });
    });
  }

  it("retries a provider's 5xx with backoff (account ending 0002) and pays once", async () => {
    const creator = await creatorWithMethod(api, "wise", "100000000002");
    const id = await withdraw20(api, creator);
    const p = await finalState(creator, id, "paid");
    expect(p.attempts).toBe(3);
    expect(await money(creator.id)).toEqual({ bal: 2850, res: 0, earned: 2850 });
  });

  it("fails a payout the provider refuses (account ending 0003) without retrying, and releases the reserve", async () => {
    const creator = await creatorWithMethod(api, "airwallex", "100000000003");
    const id = await withdraw20(api, creator);
    const p = await finalState(creator, id, "failed");
    expect(p.failure_reason).toMatch(/refused/);
    expect(await money(creator.id)).toEqual({ bal: 4850, res: 0, earned: 4850 });
    const job = await api.http.payoutJobs.queue.getJob(id);
    expect(job?.attemptsMade).toBe(1);
    expect(await job?.getState()).toBe("failed");
  });

  /** What the provider's stand-in holds for a payout: its transfers and the transfer calls made. */
  async function atStandin(provider: "wise" | "airwallex", payoutId: string) {
    const r = await fetch(`${api.payouts.standinUrls[provider]}/__standin/payouts/${payoutId}`);
    return (await r.json()) as { transfers: { id: unknown; status: string }[]; transfer_calls: number };
  }

  for (const provider of ["wise", "airwallex"] as const) {
    it(`never fails a payout whose transfer ${provider} made while every answer was lost (account ending 0005): paid once`, async () => {
      const creator = await creatorWithMethod(api, provider, "100000000005");
      // Every attempt's answer is a 5xx, yet the stand-in made the transfer on the first: the
      // worker finds it by the payout id when the attempts run out (Wise also funds it) and
      // follows it to paid. Declaring it failed would release the reserve while the money goes out.
      // No webhook: the worker alone must find out.
      api.payouts.setWebhookUrl(provider, null);
      let p: Awaited<ReturnType<typeof payoutOf>>;
      let id: string;
      try {
        id = await withdraw20(api, creator);
        p = await finalState(creator, id, "paid");
      } finally {
        api.payouts.setWebhookUrl(provider, `${api.base}/api/payments/webhooks/${provider}`);
      }
      expect(p.attempts).toBe(api.core.config.PAYOUT_JOB_ATTEMPTS);
      expect(await money(creator.id)).toEqual({ bal: 2850, res: 0, earned: 2850 });
      const at = await atStandin(provider, id);
      expect(at.transfers).toHaveLength(1);
      expect(at.transfer_calls).toBe(api.core.config.PAYOUT_JOB_ATTEMPTS);
      expect(p.provider_reference).toBe(String(at.transfers[0]!.id));
      const posts = await env.pool.query(
        "SELECT count(*)::int AS n FROM ledger_entries WHERE transaction_id = $1 AND account_id = $2",
        [id, creator.id],
      );
      expect(posts.rows[0].n).toBe(1);
      expect(await reconcileLedger(env.pool, api.core.ledger.snapshot())).toMatchObject({ ok: true });
    });

    it(`fails a payout only once ${provider} confirms it made no transfer (account ending 0006: always 5xx)`, async () => {
      const creator = await creatorWithMethod(api, provider, "100000000006");
      const id = await withdraw20(api, creator);
      const p = await finalState(creator, id, "failed");
      expect(p.failure_reason).toMatch(/retries exhausted .*has no transfer/);
      expect(await money(creator.id)).toEqual({ bal: 4850, res: 0, earned: 4850 });
      expect((await atStandin(provider, id)).transfers).toHaveLength(0);
    });
  }

  it("pays once when the same job runs twice (a stalled job run again)", async () => {
    const creator = await creatorWithMethod(api, "wise", "000123456789");
    const id = await withdraw20(api, creator);
    await finalState(creator, id, "paid");
    const job = (await api.http.payoutJobs.queue.getJob(id)) as Job<PayoutJobData>;
    // The same job's work done again: the provider's idempotency key finds the same transfer, and
    // the outcomes it publishes again change nothing.
    const again = await worker.process(job);
    expect(again.state).toBe("paid");
    expect(again.providerTransferId).toBe((await payoutOf(creator, id)).provider_reference);
    await waitFor(
      async () => (await env.redis.xlen(`${env.redisPrefix}payouts:outcomes`)) === 0,
      10_000,
      "outcomes consumed",
    );
    await settle(api.core);
    expect(await money(creator.id)).toEqual({ bal: 2850, res: 0, earned: 2850 });
    expect(await reconcileLedger(env.pool, api.core.ledger.snapshot())).toMatchObject({ ok: true });
  });

  it("returns a payout the bank bounces (account ending 0004): credited back once, withdrawable again", async () => {
    const creator = await creatorWithMethod(api, "wise", "100000000004");
    const id = await withdraw20(api, creator);
    // Paid first, then the stand-in bounces it and says so by webhook; the route asks Wise.
    const p = await finalState(creator, id, "returned");
    expect(p.paid_at).not.toBeNull();
    expect(await money(creator.id)).toEqual({ bal: 4850, res: 0, earned: 4850 });
    const returns = await env.pool.query(
      "SELECT amount_cents::int AS a FROM transactions WHERE type = 'payout_return' AND account_id = $1",
      [creator.id],
    );
    expect(returns.rows).toEqual([{ a: 2000 }]);
    expect(await reconcileLedger(env.pool, api.core.ledger.snapshot())).toMatchObject({ ok: true });
  });

  describe("webhooks", () => {
    const secret = () => api.payouts.webhooks.airwallexSecret;
    const deliver = (event: Record<string, unknown>, sign = secret(), ts = String(Date.now())) => {
      const raw = JSON.stringify(event);
      return api.call("POST", "/api/payments/webhooks/airwallex", {
        raw,
        headers: { "x-timestamp": ts, "x-signature": signAirwallexPayload(raw, sign, ts) },
      });
    };
    const deliverWise = (event: Record<string, unknown>) => {
      const raw = JSON.stringify(event);
      return api.call("POST", "/api/payments/webhooks/wise", {
        raw,
        headers: { "x-signature-sha256": api.payouts.standinWiseSign!(raw), "x-delivery-id": randomUUID() },
      });
    };
    const paidEvent = (payoutId: string, transferId: string) => ({
      id: `evt_${randomUUID()}`,
      name: "payout.transfer.paid",
      data: { object: { id: transferId, request_id: payoutId, status: "PAID" } },
    });

    it("refuses forged and stale deliveries, and a genuine one claiming paid moves money only as the provider says", async () => {
      const creator = await creatorWithMethod(api, "airwallex", "100000000003");
      const id = await withdraw20(api, creator);
      await finalState(creator, id, "failed");
      const before = await money(creator.id);
      expect((await deliver(paidEvent(id, "tr_forged"), "not-the-secret")).status).toBe(400);
      expect(
        (await deliver(paidEvent(id, "tr_forged"), secret(), String(Date.now() - 3_600_000))).status,
      ).toBe(400);
      // Signed correctly, but the provider knows no such transfer: nothing is published.
      const lying = await deliver(paidEvent(id, "tr_does_not_exist"));
      expect(lying.status).toBe(200);
      await settle(api.core);
      expect((await payoutOf(creator, id)).status).toBe("failed");
      expect(await money(creator.id)).toEqual(before);
    });

    for (const provider of ["wise", "airwallex"] as const) {
      it(`a genuine ${provider} delivery claiming paid for a transfer the provider says failed (account ending 0007) moves no money`, async () => {
        const creator = await creatorWithMethod(api, provider, "100000000007");
        const id = await withdraw20(api, creator);
        // As soon as the provider has the transfer (it fails it shortly after), a delivery signed
        // with the provider's own key/secret names it and claims it paid.
        await waitFor(async () => (await atStandin(provider, id)).transfers.length === 1, 10_000, "sent");
        const transferId = String((await atStandin(provider, id)).transfers[0]!.id);
        const r =
          provider === "airwallex"
            ? await deliver(paidEvent(id, transferId))
            : await deliverWise({
                data: {
                  resource: { type: "transfer", id: Number(transferId), profile_id: 1000001 },
                  current_state: "outgoing_payment_sent",
                  previous_state: "processing",
                  occurred_at: new Date().toISOString(),
                },
                subscription_id: randomUUID(),
                event_type: "transfers#state-change",
                schema_version: "2.0.0",
                sent_at: new Date().toISOString(),
              });
        expect(r.status, JSON.stringify(r.body)).toBe(200);
        const p = await finalState(creator, id, "failed");
        expect(p.paid_at).toBeNull();
        await waitFor(
          async () => (await env.redis.xlen(`${env.redisPrefix}payouts:outcomes`)) === 0,
          10_000,
          "outcomes consumed",
        );
        await settle(api.core);
        expect((await payoutOf(creator, id)).status).toBe("failed");
        expect(await money(creator.id)).toEqual({ bal: 4850, res: 0, earned: 4850 });
        expect(await reconcileLedger(env.pool, api.core.ledger.snapshot())).toMatchObject({ ok: true });
      });
    }

    it("answers a repeated delivery without effect; a late one changes nothing", async () => {
      const creator = await creatorWithMethod(api, "airwallex", "000123456789");
      const id = await withdraw20(api, creator);
      const p = await finalState(creator, id, "paid");
      const event = paidEvent(id, p.provider_reference);
      const first = await deliver(event);
      expect(first.body).toEqual({ received: true });
      const again = await deliver(event);
      expect(again.body).toEqual({ received: true, duplicate: true });
      // A late "processing" after paid: confirmed with the provider (paid), nothing moves.
      await deliver({ ...event, id: `evt_${randomUUID()}`, name: "payout.transfer.processing" });
      await waitFor(
        async () => (await env.redis.xlen(`${env.redisPrefix}payouts:outcomes`)) === 0,
        10_000,
        "outcomes consumed",
      );
      await settle(api.core);
      expect(await money(creator.id)).toEqual({ bal: 2850, res: 0, earned: 2850 });
      const rows = await env.pool.query(
        "SELECT deliveries FROM payout_webhook_events WHERE delivery_id = $1",
        [event.id],
      );
      expect(rows.rows).toEqual([{ deliveries: 2 }]);
      expect(await reconcileLedger(env.pool, api.core.ledger.snapshot())).toMatchObject({ ok: true });
    });
  });

  describe("the sweeper", () => {
    const sweeper = () =>
      new PayoutSweeper({
        pool: env.pool,
        jobs: api.http.payoutJobs,
        providers: api.payouts.providers,
        outcomes: env.redis,
        prefix: env.redisPrefix,
        logger: silentLogger,
        staleMs: 0,
        batch: 500,
      });

    it("queues again a pending payout whose job was lost, and asks the provider about a processing one", async () => {
      await worker.close(); // nothing takes jobs while the stuck payouts are set up
      // No webhook arrives either: the sweeper is what finds out.
      api.payouts.setWebhookUrl("airwallex", null);
      let a: { id: string; token: string } | null = null;
      let lost = "";
      try {
        // Pending, its job lost (the queue's Redis lost its data).
        a = await creatorWithMethod(api, "wise", "000123456789");
        lost = await withdraw20(api, a);
        await (await api.http.payoutJobs.queue.getJob(lost))!.remove();
        // Processing: the provider has the transfer, the outcome after processing never came.
        const b = await creatorWithMethod(api, "airwallex", "000123456789");
        const stuck = await withdraw20(api, b);
        const job = await api.http.payoutJobs.queue.getJob(stuck);
        await job!.remove();
        const rec = (await api.core.ledger.getPayout(b.id, stuck))!;
        const sent = await api.payouts.providers.airwallex.sendTransfer({
          payoutId: stuck,
          providerRecipientId: rec.providerRecipientId!,
          amountCents: 2000,
          currency: "USD",
        });
        await publishPayoutOutcome(env.redis, env.redisPrefix, {
          payoutId: stuck,
          userId: b.id,
          round: 1,
          state: "processing",
          providerTransferId: sent.providerTransferId,
        });
        await waitFor(async () => (await payoutOf(b, stuck)).status === "processing", 10_000, "processing");
        await settle(api.core);
        // The provider pays it meanwhile (the stand-in's delay).
        await waitFor(
          async () =>
            (await api.payouts.providers.airwallex.getTransfer(sent.providerTransferId)).state === "paid",
          10_000,
          "paid at the provider",
        );
        const report = await sweeper().sweepOnce();
        expect(report).toMatchObject({ requeued: 1, checked: 1 });
        expect((await api.http.payoutJobs.queue.getJob(lost))?.data.round).toBe(1);
        await finalState(b, stuck, "paid");
      } finally {
        api.payouts.setWebhookUrl("airwallex", `${api.base}/api/payments/webhooks/airwallex`);
        worker = testPayoutWorker(api, env);
      }
      // The job queued again is paid by the worker.
      await finalState(a, lost, "paid");
      expect(await money(a.id)).toEqual({ bal: 2850, res: 0, earned: 2850 });
    });

    it("settles a payout whose attempts ran out while the provider could not tell: the sweeper asks again", async () => {
      await worker.close();
      api.payouts.setWebhookUrl("airwallex", null);
      // The provider's lookup is down too (its list call failing), only for this worker.
      const real = api.payouts.providers.airwallex;
      const blind = Object.assign(Object.create(real) as typeof real, {
        findTransfer: async () => {
          throw new PayoutProviderError("list transfers: 503", "airwallex", true, "http_503", 503);
        },
      });
      const blindWorker = testPayoutWorker(api, env, {
        providers: { ...api.payouts.providers, airwallex: blind },
      });
      let creator: { id: string; token: string } | null = null;
      let id = "";
      try {
        creator = await creatorWithMethod(api, "airwallex", "100000000005");
        id = await withdraw20(api, creator);
        await waitFor(
          async () => (await (await api.http.payoutJobs.queue.getJob(id))?.getState()) === "failed",
          20_000,
          "the job's attempts run out",
        );
        await settle(api.core);
        // Not declared failed: the reserve is held and the job says why.
        expect((await payoutOf(creator, id)).status).toBe("pending");
        expect(await money(creator.id)).toEqual({ bal: 4850, res: 2000, earned: 2850 });
        expect((await api.http.payoutJobs.queue.getJob(id))?.data.unconfirmed).toBe(true);
      } finally {
        await blindWorker.close();
        api.payouts.setWebhookUrl("airwallex", `${api.base}/api/payments/webhooks/airwallex`);
        worker = testPayoutWorker(api, env);
      }
      const report = await sweeper().sweepOnce();
      expect(report.confirmed).toBe(1);
      await finalState(creator, id, "paid");
      expect(await money(creator.id)).toEqual({ bal: 2850, res: 0, earned: 2850 });
      expect((await atStandin("airwallex", id)).transfers).toHaveLength(1);
      expect(await reconcileLedger(env.pool, api.core.ledger.snapshot())).toMatchObject({ ok: true });
    });
  });

  it("reports payouts by status, payout time, queue lengths and provider errors in /metrics", async () => {
    const r = await fetch(`${api.base}/metrics`);
    const text = await r.text();
    const value = (re: RegExp) => Number(re.exec(text)?.[1] ?? Number.NaN);
    expect(value(/^threeam_payouts\{status="paid"\} (\d+)/m)).toBeGreaterThanOrEqual(5);
    expect(value(/^threeam_payouts\{status="failed"\} (\d+)/m)).toBeGreaterThanOrEqual(1);
    expect(value(/^threeam_payout_duration_seconds_count (\d+)/m)).toBeGreaterThanOrEqual(5);
    expect(text).toMatch(/^threeam_queue_jobs\{queue="payouts",state="failed"\} \d+/m);
    // Account 0002 answered 5xx twice; 0003 was refused.
    expect(text).toMatch(/^threeam_payout_provider_errors_total\{provider="wise",code="[^"]+"\} [1-9]/m);
    expect(text).toMatch(/^threeam_payout_provider_errors_total\{provider="airwallex",code="[^"]+"\} [1-9]/m);
  });
});
