// Webhook verification of the payout providers as pure functions: Wise's RSA-SHA256 over the raw
// body, Airwallex's HMAC of x-timestamp + body with a freshness window; forged, stale and
// malformed deliveries are refused with a code, other event types are acknowledged as null.
import { createHmac, generateKeyPairSync, sign } from "node:crypto";
import { describe, expect, it } from "vitest";
import { isRetryableStatus } from "../../src/payouts/provider-http.ts";
import { airwallexTransferState, parseAirwallexTime } from "../../src/payouts/airwallex.ts";
import {
  PayoutWebhookError,
  signAirwallexPayload,
  verifyAirwallexWebhook,
  verifyWiseWebhook,
} from "../../src/payouts/webhooks.ts";
import { wiseCustomerTransactionId, wiseTransferState } from "../../src/payouts/wise.ts";

const wiseKeys = generateKeyPairSync("rsa", { modulusLength: 2048 });
const WISE_PEM = wiseKeys.publicKey.export({ type: "spki", format: "pem" }).toString();
const other = generateKeyPairSync("rsa", { modulusLength: 2048 });
const wiseSign = (body: string, key = wiseKeys.privateKey) =>
  sign("sha256", Buffer.from(body), key).toString("base64");

const wiseEvent = (over: Record<string, unknown> = {}) =>
  JSON.stringify({
    data: {
      resource: { type: "transfer", id: 40000123, profile_id: 1000001, account_id: 40000001 },
      current_state: "outgoing_payment_sent",
      previous_state: "funds_converted",
      occurred_at: "2026-12-02T10:00:00.000Z",
    },
    subscription_id: "00000000-0000-4000-8000-000000000001",
    event_type: "transfers#state-change",
    schema_version: "2.0.0",
    sent_at: "2026-12-02T10:00:00.100Z",
    ...over,
  });

function refusal(fn: () => unknown): PayoutWebhookError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(PayoutWebhookError);
    return err as PayoutWebhookError;
  }
  throw new Error("expected the webhook to be refused");
}

describe("verifyWiseWebhook", () => {
  it("reads a genuine transfers#state-change as a hint with the delivery id", () => {
    const body = wiseEvent();
    const hint = verifyWiseWebhook(
      body,
      { "x-signature-sha256": wiseSign(body), "x-delivery-id": "d-1" },
      WISE_PEM,
    );
    expect(hint).toEqual({
      provider: "wise",
      deliveryId: "d-1",
      providerTransferId: "40000123",
      claimedStatus: "outgoing_payment_sent",
    });
  });

  it("accepts the key with \\n escapes (as env files carry it) and a Headers object", () => {
    const body = wiseEvent();
    const headers = new Headers({ "X-Signature-SHA256": wiseSign(body), "X-Delivery-Id": "d-2" });
    expect(verifyWiseWebhook(Buffer.from(body), headers, WISE_PEM.replace(/\n/g, "\\n"))?.deliveryId).toBe(
      "d-2",
    );
  });

  it("without X-Delivery-Id, dedupes identical redeliveries by the body's hash", () => {
    const body = wiseEvent();
    const a = verifyWiseWebhook(body, { "x-signature-sha256": wiseSign(body) }, WISE_PEM);
    const b = verifyWiseWebhook(body, { "x-signature-sha256": wiseSign(body) }, WISE_PEM);
    expect(a?.deliveryId).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(b?.deliveryId).toBe(a?.deliveryId);
  });

  it("refuses a body changed after signing, another key's signature, a missing or non-base64 signature", () => {
    const body = wiseEvent();
    const sig = wiseSign(body);
    const tampered = body.replace("outgoing_payment_sent", "outgoing_payment_sent ");
    expect(refusal(() => verifyWiseWebhook(tampered, { "x-signature-sha256": sig }, WISE_PEM)).code).toBe(
      "signature_invalid",
    );
    expect(
      refusal(() =>
        verifyWiseWebhook(body, { "x-signature-sha256": wiseSign(body, other.privateKey) }, WISE_PEM),
      ).code,
    ).toBe("signature_invalid");
    expect(refusal(() => verifyWiseWebhook(body, {}, WISE_PEM)).code).toBe("signature_missing");
    expect(refusal(() => verifyWiseWebhook(body, { "x-signature-sha256": "%%%" }, WISE_PEM)).code).toBe(
      "signature_invalid",
    );
  });

  it("refuses a signed body that is not JSON or lacks the transfer, and ignores other event types", () => {
    for (const body of [
      "not json",
      "[1,2]",
      JSON.stringify({ event_type: "transfers#state-change", data: {} }),
    ]) {
      expect(
        refusal(() => verifyWiseWebhook(body, { "x-signature-sha256": wiseSign(body) }, WISE_PEM)).code,
      ).toBe("malformed_body");
    }
    const noState = wiseEvent({ data: { resource: { type: "transfer", id: 1 } } });
    expect(
      refusal(() => verifyWiseWebhook(noState, { "x-signature-sha256": wiseSign(noState) }, WISE_PEM)).code,
    ).toBe("malformed_body");
    const badId = wiseEvent({ data: { resource: { type: "transfer", id: "1; drop" }, current_state: "x" } });
    expect(
      refusal(() => verifyWiseWebhook(badId, { "x-signature-sha256": wiseSign(badId) }, WISE_PEM)).code,
    ).toBe("malformed_body");
    const balance = wiseEvent({ event_type: "balances#credit" });
    expect(verifyWiseWebhook(balance, { "x-signature-sha256": wiseSign(balance) }, WISE_PEM)).toBeNull();
  });
});

const SECRET = "awx_test_secret_0123456789";
const awxEvent = (over: Record<string, unknown> = {}) =>
  JSON.stringify({
    id: "evt-1",
    name: "payout.transfer.paid",
    account_id: "acct_1",
    data: { object: { id: "tr-1", request_id: "payout-1", status: "PAID" } },
    created_at: "2026-12-02T10:00:00Z",
    version: "2024-09-27",
    ...over,
  });
const NOW = 1_796_000_000_000;
const awxHeaders = (body: string, ts = String(NOW), secret = SECRET) => ({
  "x-timestamp": ts,
  "x-signature": signAirwallexPayload(body, secret, ts),
});

describe("verifyAirwallexWebhook", () => {
  const opts = { toleranceMs: 300_000, nowMs: NOW };

  it("reads a genuine payout.transfer event as a hint: event id, transfer id, payout id, claimed status", () => {
    const body = awxEvent();
    expect(verifyAirwallexWebhook(body, awxHeaders(body), SECRET, opts)).toEqual({
      provider: "airwallex",
      deliveryId: "evt-1",
      providerTransferId: "tr-1",
      payoutId: "payout-1",
      claimedStatus: "PAID",
    });
    // The signature is Airwallex's documented one: hex HMAC-SHA256 of timestamp then body.
    expect(awxHeaders(body)["x-signature"]).toBe(
      createHmac("sha256", SECRET).update(`${NOW}${body}`).digest("hex"),
    );
  });

  it("refuses a forged signature, another secret, a changed body, and missing headers", () => {
    const body = awxEvent();
    const h = awxHeaders(body);
    expect(
      refusal(() => verifyAirwallexWebhook(body, { ...h, "x-signature": "0".repeat(64) }, SECRET, opts)).code,
    ).toBe("signature_invalid");
    expect(
      refusal(() => verifyAirwallexWebhook(body, awxHeaders(body, String(NOW), "wrong-secret"), SECRET, opts))
        .code,
    ).toBe("signature_invalid");
    expect(refusal(() => verifyAirwallexWebhook(`${body} `, h, SECRET, opts)).code).toBe("signature_invalid");
    expect(
      refusal(() => verifyAirwallexWebhook(body, { ...h, "x-signature": "xyz" }, SECRET, opts)).code,
    ).toBe("signature_invalid");
    expect(
      refusal(() => verifyAirwallexWebhook(body, { "x-timestamp": h["x-timestamp"] }, SECRET, opts)).code,
    ).toBe("signature_missing");
    expect(
      refusal(() => verifyAirwallexWebhook(body, { "x-signature": h["x-signature"] }, SECRET, opts)).code,
    ).toBe("timestamp_missing");
  });

  it("refuses a correctly signed but stale (or far-future) timestamp: a replayed capture", () => {
    const body = awxEvent();
    const old = String(NOW - 300_001);
    expect(refusal(() => verifyAirwallexWebhook(body, awxHeaders(body, old), SECRET, opts)).code).toBe(
      "timestamp_stale",
    );
    const future = String(NOW + 300_001);
    expect(refusal(() => verifyAirwallexWebhook(body, awxHeaders(body, future), SECRET, opts)).code).toBe(
      "timestamp_stale",
    );
    const edge = String(NOW - 299_000);
    expect(verifyAirwallexWebhook(body, awxHeaders(body, edge), SECRET, opts)?.deliveryId).toBe("evt-1");
  });

  it("refuses signed bodies that are not an event with ids, and ignores other events", () => {
    for (const body of ["{", "[]", awxEvent({ id: "" }), awxEvent({ data: {} }), awxEvent({ name: 7 })]) {
      expect(refusal(() => verifyAirwallexWebhook(body, awxHeaders(body), SECRET, opts)).code).toBe(
        "malformed_body",
      );
    }
    const deposit = awxEvent({ name: "deposit.settled" });
    expect(verifyAirwallexWebhook(deposit, awxHeaders(deposit), SECRET, opts)).toBeNull();
    const funding = awxEvent({ name: "payout.transfer.funding.funded" });
    expect(verifyAirwallexWebhook(funding, awxHeaders(funding), SECRET, opts)).toBeNull();
  });
});

describe("provider status words and errors", () => {
  it("maps Wise states, never guessing a final state for an unknown one", () => {
    expect(wiseTransferState("incoming_payment_waiting")).toBe("processing");
    expect(wiseTransferState("funds_converted")).toBe("processing");
    expect(wiseTransferState("outgoing_payment_sent")).toBe("paid");
    expect(wiseTransferState("bounced_back")).toBe("returned");
    expect(wiseTransferState("funds_refunded")).toBe("returned");
    expect(wiseTransferState("cancelled")).toBe("failed");
    expect(wiseTransferState("something_new")).toBe("processing");
  });

  it("maps Airwallex statuses: FAILED after SENT (dispatched) is a return", () => {
    expect(airwallexTransferState("SCHEDULED", false)).toBe("processing");
    expect(airwallexTransferState("APPROVAL_REJECTED", false)).toBe("processing");
    expect(airwallexTransferState("SENT", true)).toBe("paid");
    expect(airwallexTransferState("PAID", true)).toBe("paid");
    expect(airwallexTransferState("FAILED", false)).toBe("failed");
    expect(airwallexTransferState("FAILED", true)).toBe("returned");
    expect(airwallexTransferState("CANCELLED", false)).toBe("failed");
    expect(airwallexTransferState("NEW_THING", false)).toBe("processing");
    expect(parseAirwallexTime("2026-05-12T00:00:00+0000")).toBe(Date.parse("2026-05-12T00:00:00Z"));
  });

  it("retries 5xx, 429, 408 and a 409 in progress; not other 4xx", () => {
    for (const s of [500, 502, 503, 429, 408]) expect(isRetryableStatus(s, "x")).toBe(true);
    expect(isRetryableStatus(409, "request_in_progress")).toBe(true);
    for (const s of [400, 401, 403, 404, 422]) expect(isRetryableStatus(s, "x")).toBe(false);
    expect(isRetryableStatus(409, "conflict")).toBe(false);
  });

  it("keys a Wise transfer by the payout id: a UUID as is, anything else by a stable v5 UUID", () => {
    const u = "3f2b8c1e-5a4d-4e7f-9b0a-1c2d3e4f5a6b";
    expect(wiseCustomerTransactionId(u.toUpperCase())).toBe(u);
    const a = wiseCustomerTransactionId("po_123");
    expect(a).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(wiseCustomerTransactionId("po_123")).toBe(a);
    expect(wiseCustomerTransactionId("po_124")).not.toBe(a);
  });
});
