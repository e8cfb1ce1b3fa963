// The Stripe stand-in, driven through the real `stripe` SDK over HTTP, with a real webhook
// receiver that verifies every delivery with stripe.webhooks.constructEvent.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import Stripe from "stripe";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import {
  DEFAULT_ENABLED_EVENTS,
  parseStripeForm,
  type StripeStandin,
  StripeStandinError,
  signStripePayload,
  startStripeStandin,
} from "../../src/standins/stripe-standin.ts";

const SECRET = "whsec_standin_test_secret";
const KEY = "sk_test_standin";

interface Received {
  raw: string;
  signature: string;
  event: Stripe.Event | null;
  error: string | null;
}

interface Receiver {
  url: string;
  received: Received[];
  /** Answer 500 to this many deliveries before accepting again. */
  failNext: number;
  close(): Promise<void>;
}

async function startReceiver(stripe: Stripe): Promise<Receiver> {
  const r: Receiver = { url: "", received: [], failNext: 0, close: async () => {} };
  const server: Server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const raw = Buffer.concat(chunks).toString("utf8");
    const signature = String(req.headers["stripe-signature"] ?? "");
    if (r.failNext > 0) {
      r.failNext--;
      res.writeHead(500).end();
      return;
    }
    try {
      const event = stripe.webhooks.constructEvent(raw, signature, SECRET);
      r.received.push({ raw, signature, event, error: null });
      res.writeHead(200, { "content-type": "application/json" }).end("{}");
    } catch (err) {
      r.received.push({ raw, signature, event: null, error: (err as Error).message });
      res.writeHead(400).end();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  r.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/webhooks/stripe`;
  r.close = () => new Promise<void>((resolve) => server.close(() => resolve()));
  return r;
}

const nowS = () => Math.floor(Date.now() / 1000);

let standin: StripeStandin;
let stripe: Stripe;
let receiver: Receiver;

const eventsFor = (objectId: string, type?: string) =>
  receiver.received
    .map((r) => r.event!)
    .filter(
      (e) => (e.data.object as { id: string }).id === objectId && (type === undefined || e.type === type),
    );

async function paidIntent(
  amount: number,
  metadata: Record<string, string> = {},
): Promise<Stripe.PaymentIntent> {
  return stripe.paymentIntents.create({
    amount,
    currency: "usd",
    metadata,
    payment_method: "pm_card_visa",
    confirm: true,
  });
}

beforeAll(async () => {
  standin = await startStripeStandin({ webhookSecret: SECRET });
  stripe = new Stripe(KEY, { ...standin.sdkOptions, telemetry: false });
  receiver = await startReceiver(stripe);
  standin.setWebhookUrl(receiver.url);
});

afterAll(async () => {
  await standin.close();
  await receiver.close();
});

beforeEach(async () => {
  await standin.flushWebhooks();
  standin.configureWebhooks({
    duplicate: 1,
    reorder: false,
    paused: false,
    enabledEvents: [...DEFAULT_ENABLED_EVENTS],
  });
  receiver.received.length = 0;
  receiver.failNext = 0;
});

describe("Stripe stand-in: payment intents", () => {
  it("creates, confirms with pm_card_visa and delivers a signed payment_intent.succeeded", async () => {
    const created = await stripe.paymentIntents.create({
      amount: 500,
      currency: "USD",
      metadata: { user_id: "u_1", purpose: "credits" },
      automatic_payment_methods: { enabled: true, allow_redirects: "never" },
    });
    expect(created.id).toMatch(/^pi_[0-9A-Za-z]{24}$/);
    expect(created).toMatchObject({
      object: "payment_intent",
      amount: 500,
      amount_received: 0,
      currency: "usd",
      status: "requires_payment_method",
      metadata: { user_id: "u_1", purpose: "credits" },
      livemode: false,
      latest_charge: null,
    });
    expect(created.client_secret).toMatch(new RegExp(`^${created.id}_secret_[0-9A-Za-z]+$`));
    expect(Math.abs(created.created - nowS())).toBeLessThanOrEqual(2);

    const pi = await stripe.paymentIntents.confirm(created.id, { payment_method: "pm_card_visa" });
    expect(pi.status).toBe("succeeded");
    expect(pi.amount_received).toBe(500);
    expect(pi.latest_charge).toMatch(/^ch_/);
    expect(pi.payment_method).toMatch(/^pm_/);

    const charge = await stripe.charges.retrieve(pi.latest_charge as string);
    expect(charge).toMatchObject({
      object: "charge",
      amount: 500,
      amount_refunded: 0,
      refunded: false,
      status: "succeeded",
      paid: true,
      payment_intent: pi.id,
    });
    expect(charge.payment_method_details?.card?.last4).toBe("4242");

    const again = await stripe.paymentIntents.retrieve(pi.id, { expand: ["latest_charge"] });
    expect((again.latest_charge as Stripe.Charge).id).toBe(charge.id);

    await standin.flushWebhooks();
    const [received] = eventsFor(pi.id, "payment_intent.succeeded");
    expect(received).toBeDefined();
    const event = received!;
    expect(event.id).toMatch(/^evt_/);
    expect(event).toMatchObject({ object: "event", livemode: false, api_version: Stripe.API_VERSION });
    expect(event.request?.id).toMatch(/^req_/);
    const object = event.data.object as Stripe.PaymentIntent;
    expect(object).toMatchObject({ id: pi.id, status: "succeeded", amount: 500, amount_received: 500 });
    expect(object.metadata).toEqual({ user_id: "u_1", purpose: "credits" });
    expect(receiver.received.every((r) => r.error === null)).toBe(true);
    // payment_intent.created and charge.succeeded happen, but are not among the enabled events.
    expect(eventsFor(pi.id, "payment_intent.created")).toHaveLength(0);
    const all = await stripe.events.list({ type: "payment_intent.*", created: { gte: created.created } });
    expect(all.data.map((e) => e.type)).toEqual(
      expect.arrayContaining(["payment_intent.created", "payment_intent.succeeded"]),
    );
  });

  it("answers a decline with a StripeCardError and returns the intent to requires_payment_method", async () => {
    const err = await stripe.paymentIntents
      .create({ amount: 700, currency: "usd", payment_method: "pm_card_chargeDeclined", confirm: true })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Stripe.errors.StripeCardError);
    const card = err as Stripe.errors.StripeCardError;
    expect(card.statusCode).toBe(402);
    expect(card.code).toBe("card_declined");
    expect(card.decline_code).toBe("generic_decline");
    expect(card.message).toBe("Your card was declined.");
    const piId = card.payment_intent!.id;
    expect(card.payment_intent!.status).toBe("requires_payment_method");

    const pi = await stripe.paymentIntents.retrieve(piId);
    expect(pi.status).toBe("requires_payment_method");
    expect(pi.last_payment_error).toMatchObject({ type: "card_error", code: "card_declined" });
    const failed = await stripe.charges.retrieve(pi.latest_charge as string);
    expect(failed).toMatchObject({ status: "failed", failure_code: "card_declined", paid: false });

    const poor = await stripe.paymentIntents
      .confirm(piId, { payment_method: "pm_card_chargeDeclinedInsufficientFunds" })
      .catch((e: unknown) => e as Stripe.errors.StripeCardError);
    expect(poor).toMatchObject({ code: "card_declined", decline_code: "insufficient_funds" });

    // A new card on the same intent still succeeds.
    const ok = await stripe.paymentIntents.confirm(piId, { payment_method: "pm_card_visa" });
    expect(ok.status).toBe("succeeded");

    await standin.flushWebhooks();
    const failedEvents = eventsFor(piId, "payment_intent.payment_failed");
    expect(
      failedEvents.map((e) => (e.data.object as Stripe.PaymentIntent).last_payment_error?.decline_code),
    ).toEqual(["generic_decline", "insufficient_funds"]);
    expect(eventsFor(piId, "payment_intent.succeeded")).toHaveLength(1);
  });

  it("answers Stripe's errors: unknown payment method, missing intent, unknown parameter, bad key", async () => {
    const noPm = await stripe.paymentIntents
      .create({ amount: 500, currency: "usd", payment_method: "pm_card_nonsense", confirm: true })
      .catch((e: unknown) => e as Stripe.errors.StripeInvalidRequestError);
    expect(noPm).toBeInstanceOf(Stripe.errors.StripeInvalidRequestError);
    expect(noPm).toMatchObject({ statusCode: 400, code: "resource_missing", param: "payment_method" });

    const missing = await stripe.paymentIntents.retrieve("pi_doesnotexist").catch((e: unknown) => e);
    expect(missing).toMatchObject({
      statusCode: 404,
      code: "resource_missing",
      type: "StripeInvalidRequestError",
    });

    const unknown = await stripe.paymentIntents
      .create({ amount: 500, currency: "usd", colour: "red" } as Stripe.PaymentIntentCreateParams)
      .catch((e: unknown) => e);
    expect(unknown).toMatchObject({ statusCode: 400, code: "parameter_unknown", param: "colour" });

    const tooSmall = await stripe.paymentIntents
      .create({ amount: 20, currency: "usd" })
      .catch((e: unknown) => e);
    expect(tooSmall).toMatchObject({ code: "amount_too_small", param: "amount" });

    // Not a key: any live-mode key must be refused, so the value only needs Stripe's prefix.
    const live = new Stripe(`sk_live_${"0".repeat(24)}`, { ...standin.sdkOptions, telemetry: false });
    const denied = await live.paymentIntents.list().catch((e: unknown) => e);
    expect(denied).toBeInstanceOf(Stripe.errors.StripeAuthenticationError);
    expect((denied as Stripe.errors.StripeError).statusCode).toBe(401);

    const redirects = await stripe.paymentIntents
      .create({
        amount: 500,
        currency: "usd",
        automatic_payment_methods: { enabled: true },
        payment_method: "pm_card_visa",
        confirm: true,
      })
      .catch((e: unknown) => e);
    expect(redirects).toMatchObject({ statusCode: 400, param: "return_url" });
  });

  it("replays a repeated Idempotency-Key and refuses the key with different parameters", async () => {
    const key = `tip-${Date.now()}`;
    const first = await stripe.paymentIntents.create(
      { amount: 1500, currency: "usd", metadata: { tip: "1" } },
      { idempotencyKey: key },
    );
    const second = await stripe.paymentIntents.create(
      { amount: 1500, currency: "usd", metadata: { tip: "1" } },
      { idempotencyKey: key },
    );
    expect(second.id).toBe(first.id);
    expect(second.lastResponse.headers["idempotent-replayed"]).toBe("true");
    expect(first.lastResponse.headers["idempotent-replayed"]).toBeUndefined();

    const conflicting = await stripe.paymentIntents
      .create({ amount: 2500, currency: "usd", metadata: { tip: "1" } }, { idempotencyKey: key })
      .catch((e: unknown) => e);
    expect(conflicting).toBeInstanceOf(Stripe.errors.StripeIdempotencyError);
    expect(conflicting).toMatchObject({ statusCode: 400, rawType: "idempotency_error" });

    // A decline is saved under its key too: the retry gets the same 402, not a second attempt.
    const declineKey = `decline-${Date.now()}`;
    const params = { amount: 900, currency: "usd", payment_method: "pm_card_chargeDeclined", confirm: true };
    const a = (await stripe.paymentIntents
      .create(params, { idempotencyKey: declineKey })
      .catch((e: unknown) => e)) as Stripe.errors.StripeCardError;
    const b = (await stripe.paymentIntents
      .create(params, { idempotencyKey: declineKey })
      .catch((e: unknown) => e)) as Stripe.errors.StripeCardError;
    expect(b.payment_intent!.id).toBe(a.payment_intent!.id);
    expect(b.headers!["idempotent-replayed"]).toBe("true");
  });

  it("cancels an open intent and refuses to cancel a succeeded one", async () => {
    const open = await stripe.paymentIntents.create({ amount: 500, currency: "usd" });
    const canceled = await stripe.paymentIntents.cancel(open.id, { cancellation_reason: "abandoned" });
    expect(canceled).toMatchObject({ status: "canceled", cancellation_reason: "abandoned" });
    expect(canceled.canceled_at).toBeGreaterThan(0);

    const paid = await paidIntent(500);
    const refused = await stripe.paymentIntents.cancel(paid.id).catch((e: unknown) => e);
    expect(refused).toMatchObject({ statusCode: 400, code: "payment_intent_unexpected_state" });
  });
});

describe("Stripe stand-in: lists", () => {
  it("pages through every intent newest first with the SDK's auto-pagination", async () => {
    // Its own stand-in, so no other test's intents share the created window.
    const own = await startStripeStandin({ webhookSecret: SECRET });
    try {
      const sdk = new Stripe(KEY, { ...own.sdkOptions, telemetry: false });
      const since = nowS();
      const ids: string[] = [];
      for (let i = 0; i < 8; i++) {
        ids.push((await sdk.paymentIntents.create({ amount: 100 + i, currency: "usd" })).id);
      }
      const newestFirst = [...ids].reverse();

      const seen: string[] = [];
      for await (const pi of sdk.paymentIntents.list({ limit: 3, created: { gte: since } })) seen.push(pi.id);
      expect(seen).toEqual(newestFirst);

      const first = await sdk.paymentIntents.list({ limit: 3 });
      expect(first).toMatchObject({ object: "list", has_more: true, url: "/v1/payment_intents" });
      expect(first.data.map((p) => p.id)).toEqual(newestFirst.slice(0, 3));

      const older = await sdk.paymentIntents.list({ limit: 3, starting_after: newestFirst[5] });
      expect(older.data.map((p) => p.id)).toEqual(newestFirst.slice(6));
      expect(older.has_more).toBe(false);

      // ending_before: the page just newer than the cursor, still newest first.
      const newer = await sdk.paymentIntents.list({ limit: 2, ending_before: newestFirst[4] });
      expect(newer.data.map((p) => p.id)).toEqual(newestFirst.slice(2, 4));
      expect(newer.has_more).toBe(true);
      const backwards = await sdk.paymentIntents
        .list({ limit: 2, ending_before: newestFirst[7] })
        .autoPagingToArray({
          limit: 100,
        });
      expect(backwards.map((p) => p.id)).toEqual(ids.slice(1));

      expect((await sdk.paymentIntents.list({ created: { lt: since } })).data).toHaveLength(0);
      expect((await sdk.paymentIntents.list({ created: { lte: nowS() }, limit: 100 })).data).toHaveLength(8);
    } finally {
      await own.close();
    }
  });
});

describe("Stripe stand-in: refunds", () => {
  it("refunds part then the rest, updates the charge and sends charge.refunded each time", async () => {
    const pi = await paidIntent(1000);
    const partial = await stripe.refunds.create({ payment_intent: pi.id, amount: 300 });
    expect(partial).toMatchObject({
      object: "refund",
      amount: 300,
      status: "succeeded",
      payment_intent: pi.id,
      charge: pi.latest_charge,
    });
    let charge = await stripe.charges.retrieve(pi.latest_charge as string);
    expect(charge).toMatchObject({ amount_refunded: 300, refunded: false });

    const rest = await stripe.refunds.create({ charge: charge.id });
    expect(rest.amount).toBe(700);
    charge = await stripe.charges.retrieve(charge.id);
    expect(charge).toMatchObject({ amount_refunded: 1000, refunded: true });

    const again = await stripe.refunds.create({ payment_intent: pi.id }).catch((e: unknown) => e);
    expect(again).toMatchObject({ statusCode: 400, code: "charge_already_refunded" });

    const listed = await stripe.refunds.list({ payment_intent: pi.id });
    expect(listed.data.map((r) => r.id)).toEqual([rest.id, partial.id]);
    expect((await stripe.refunds.retrieve(partial.id)).amount).toBe(300);

    await standin.flushWebhooks();
    const refunded = eventsFor(charge.id, "charge.refunded").map((e) => e.data.object as Stripe.Charge);
    expect(refunded.map((c) => [c.amount_refunded, c.refunded])).toEqual([
      [300, false],
      [1000, true],
    ]);
    expect(refunded[1]!.refunds!.data.map((r) => r.amount)).toEqual([700, 300]);
  });

  it("refuses a refund above what is left, and takes refunds made outside our API", async () => {
    const pi = await paidIntent(800);
    const tooMuch = await stripe.refunds
      .create({ payment_intent: pi.id, amount: 801 })
      .catch((e: unknown) => e);
    expect(tooMuch).toMatchObject({ statusCode: 400, param: "amount", code: "amount_too_large" });

    const outside = standin.refund(pi.id, 200);
    expect(outside).toMatchObject({ amount: 200, payment_intent: pi.id });
    expect(() => standin.refund(pi.id, 700)).toThrow(StripeStandinError);
    await standin.flushWebhooks();
    const [event] = eventsFor(pi.latest_charge as string, "charge.refunded");
    expect((event!.data.object as Stripe.Charge).amount_refunded).toBe(200);
    expect(event!.request).toEqual({ id: null, idempotency_key: null });

    const open = await stripe.paymentIntents.create({ amount: 500, currency: "usd" });
    const nothing = await stripe.refunds.create({ payment_intent: open.id }).catch((e: unknown) => e);
    expect(nothing).toMatchObject({ statusCode: 400, param: "payment_intent" });
  });
});

describe("Stripe stand-in: disputes", () => {
  it("opens and closes a dispute with charge.dispute.created and charge.dispute.closed", async () => {
    const pi = await paidIntent(2000);
    const dispute = standin.createDispute(pi.id, { reason: "fraudulent" });
    expect(dispute).toMatchObject({
      object: "dispute",
      amount: 2000,
      charge: pi.latest_charge,
      payment_intent: pi.id,
      status: "needs_response",
      reason: "fraudulent",
    });
    expect(dispute.id).toMatch(/^dp_/);
    expect((await stripe.charges.retrieve(pi.latest_charge as string)).disputed).toBe(true);

    const refused = await stripe.refunds.create({ payment_intent: pi.id }).catch((e: unknown) => e);
    expect(refused).toMatchObject({ code: "charge_disputed" });

    const closed = standin.closeDispute(dispute.id, "lost");
    expect(closed.status).toBe("lost");
    expect(() => standin.closeDispute(dispute.id, "won")).toThrow(/already closed/);

    await standin.flushWebhooks();
    const types = eventsFor(dispute.id).map((e) => [e.type, (e.data.object as Stripe.Dispute).status]);
    expect(types).toEqual([
      ["charge.dispute.created", "needs_response"],
      ["charge.dispute.closed", "lost"],
    ]);
  });
});

describe("Stripe stand-in: webhook delivery", () => {
  it("delivers each event three times with duplicate: 3", async () => {
    standin.configureWebhooks({ duplicate: 3 });
    const pi = await paidIntent(500);
    await standin.flushWebhooks();
    const copies = eventsFor(pi.id, "payment_intent.succeeded");
    expect(copies).toHaveLength(3);
    expect(new Set(copies.map((e) => e.id)).size).toBe(1);
    const records = standin.deliveries().filter((d) => d.eventId === copies[0]!.id);
    expect(records.map((d) => [d.copy, d.state]).sort()).toEqual([
      [1, "delivered"],
      [2, "delivered"],
      [3, "delivered"],
    ]);
  });

  it("delivers held events in a different order with reorder: true", async () => {
    standin.configureWebhooks({ reorder: true, reorderHoldMs: 5_000 });
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await paidIntent(500 + i)).id);
    expect(receiver.received).toHaveLength(0);
    await standin.flushWebhooks();
    const arrived = receiver.received
      .map((r) => r.event!)
      .filter((e) => e.type === "payment_intent.succeeded")
      .map((e) => (e.data.object as Stripe.PaymentIntent).id);
    expect([...arrived].sort()).toEqual([...ids].sort());
    expect(arrived).not.toEqual(ids);
  });

  it("holds events while paused and delivers them on resume", async () => {
    standin.pauseWebhooks();
    const pi = await paidIntent(500);
    await standin.flushWebhooks();
    expect(eventsFor(pi.id)).toHaveLength(0);
    standin.resumeWebhooks();
    await standin.flushWebhooks();
    expect(eventsFor(pi.id, "payment_intent.succeeded")).toHaveLength(1);
  });

  it("retries a delivery the receiver failed, with a fresh signature", async () => {
    receiver.failNext = 2;
    const pi = await paidIntent(500);
    await standin.flushWebhooks();
    const [event] = eventsFor(pi.id, "payment_intent.succeeded");
    const record = standin.deliveries().find((d) => d.eventId === event!.id)!;
    expect(record.state).toBe("delivered");
    expect(record.attempts.map((a) => a.status)).toEqual([500, 500, 200]);
  });

  it("resends a stored event with the same id", async () => {
    const pi = await paidIntent(500);
    await standin.flushWebhooks();
    const [event] = eventsFor(pi.id, "payment_intent.succeeded");
    standin.resendEvent(event!.id);
    await standin.flushWebhooks();
    expect(eventsFor(pi.id, "payment_intent.succeeded").map((e) => e.id)).toEqual([event!.id, event!.id]);
    expect((await stripe.events.retrieve(event!.id)).type).toBe("payment_intent.succeeded");
  });

  it("signs so that constructEvent accepts the real thing and rejects forged or stale signatures", () => {
    const payload = JSON.stringify({ id: "evt_test", object: "event", type: "payment_intent.succeeded" });
    const verify =
      (header: string, body = payload) =>
      () =>
        stripe.webhooks.constructEvent(body, header, SECRET);
    expect(verify(standin.signPayload(payload))()).toMatchObject({ id: "evt_test" });
    expect(verify(signStripePayload(payload, SECRET))()).toMatchObject({ id: "evt_test" });

    const forged = standin.signPayload(payload, { secret: "whsec_someone_else" });
    expect(verify(forged)).toThrow(Stripe.errors.StripeSignatureVerificationError);
    const stale = standin.signPayload(payload, { timestamp: nowS() - 600 });
    expect(verify(stale)).toThrow(/tolerance/);
    const tampered = payload.replace("evt_test", "evt_evil");
    expect(verify(standin.signPayload(payload), tampered)).toThrow(
      Stripe.errors.StripeSignatureVerificationError,
    );
  });
});

describe("Stripe stand-in: control over HTTP and form parsing", () => {
  it("opens a dispute, refunds and configures webhooks through /_standin", async () => {
    const pi = await paidIntent(1200);
    const post = async (path: string, body: unknown) => {
      const res = await fetch(`${standin.url}${path}`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    };
    const refund = await post("/_standin/refunds", { payment_intent: pi.id, amount: 200 });
    expect(refund).toMatchObject({ status: 200, body: { object: "refund", amount: 200 } });
    const dispute = await post("/_standin/disputes", { payment_intent: pi.id, amount: 1000 });
    expect(dispute.body).toMatchObject({ object: "dispute", amount: 1000, status: "needs_response" });
    const closed = await post(`/_standin/disputes/${dispute.body.id as string}/close`, { status: "won" });
    expect(closed.body).toMatchObject({ status: "won" });
    const bad = await post("/_standin/disputes", { payment_intent: "pi_nope" });
    expect(bad).toMatchObject({ status: 404, body: { error: { code: "resource_missing" } } });

    const config = await post("/_standin/webhooks", { duplicate: 2, enabled_events: ["*"] });
    expect(config.body).toMatchObject({ duplicate: 2, enabledEvents: ["*"], url: receiver.url });
    const flushed = await post("/_standin/webhooks/flush", {});
    expect(flushed.status).toBe(200);
    const signed = await post("/_standin/sign", { payload: "{}", timestamp: 1 });
    expect(signed.body.header).toBe(signStripePayload("{}", SECRET, 1));
  });

  it("parses Stripe's bracket-nested form encoding", () => {
    expect(
      parseStripeForm(
        "amount=500&metadata[user_id]=u%201&metadata[0]=zero&expand[]=a&expand[]=b&created[gte]=5&items[0][price]=p&items[1][price]=q",
      ),
    ).toEqual({
      amount: "500",
      metadata: { user_id: "u 1", "0": "zero" },
      expand: ["a", "b"],
      created: { gte: "5" },
      items: [{ price: "p" }, { price: "q" }],
    });
    expect(() => parseStripeForm("__proto__[x]=1")).toThrow(StripeStandinError);
  });
});
