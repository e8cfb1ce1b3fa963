// Email templates and job ids, pure: every kind renders a subject, a text part and an HTML part
// with amounts as 25.00; whatever a user or a provider wrote (display name, failure reason) is
// text in HTML, never markup, and never breaks the subject's header line; job ids are one per
// event, BullMQ-safe (no ':'), and differ by payout status.
import { describe, expect, it } from "vitest";
import { type EmailEvent, emailJobId } from "../../src/email/events.ts";
import { renderEmail } from "../../src/email/templates.ts";

const USER = "2b1f8a8e-3c55-4f0e-9a51-2f4a0f0a1b2c";
const HOSTILE = `<script>alert("x")</script> & 'Bob'\r\nBcc: evil@example.com`;

const EVENTS: EmailEvent[] = [
  { kind: "welcome", userId: USER },
  {
    kind: "purchase_receipt",
    userId: USER,
    paymentIntentId: "pi_123",
    amountCents: 2500,
    balanceCents: 3507,
  },
  { kind: "payout_requested", userId: USER, payoutId: "po_1", amountCents: 100 },
  { kind: "payout_paid", userId: USER, payoutId: "po_1", amountCents: 100 },
  { kind: "payout_failed", userId: USER, payoutId: "po_1", amountCents: 100, reason: HOSTILE },
  { kind: "payout_returned", userId: USER, payoutId: "po_1", amountCents: 100 },
  { kind: "chargeback_debt", userId: USER, disputeId: "dp_1", amountCents: 2500, debtCents: 1801 },
];

describe("email templates", () => {
  it("render every kind with a text and an HTML part, amounts with two decimals", () => {
    for (const e of EVENTS) {
      const r = renderEmail(e, { email: "a@example.test", displayName: "Ann" });
      expect(r.subject.length).toBeGreaterThan(5);
      expect(r.text).toContain("Hi Ann,");
      expect(r.html).toContain("Hi Ann,");
      expect(r.html).toMatch(/^<!doctype html>/);
      if ("amountCents" in e) {
        const amount = (e.amountCents / 100).toFixed(2);
        expect(r.subject + r.text).toContain(amount);
        expect(r.html).toContain(amount);
      }
    }
    const receipt = renderEmail(EVENTS[1]!, { email: "a@example.test", displayName: "Ann" });
    expect(receipt.text).toContain("Credits bought: 25.00 USD");
    expect(receipt.text).toContain("New balance: 35.07 USD");
    expect(renderEmail(EVENTS[6]!, { email: "a", displayName: "A" }).subject).toContain("18.01 USD");
  });

  it("escape what users and providers wrote in HTML, keep it in text, and keep the subject one line", () => {
    for (const e of EVENTS) {
      const r = renderEmail(e, { email: "a@example.test", displayName: HOSTILE });
      expect(r.html).not.toContain("<script");
      expect(r.html).toContain("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#x27;Bob&#x27;");
      expect(r.text).toContain(`<script>alert("x")</script> & 'Bob'`);
      expect(r.subject).not.toMatch(/[\r\n]/);
    }
  });
});

describe("email job ids", () => {
  it("are one per event, without ':', and differ by payout status", () => {
    const ids = EVENTS.map(emailJobId);
    expect(new Set(ids).size).toBe(ids.length);
    for (const id of ids) expect(id).not.toContain(":");
    expect(emailJobId(EVENTS[1]!)).toBe("receipt-pi_123");
    expect(emailJobId(EVENTS[3]!)).toBe("payout-po_1-paid");
    // The same event twice has the same id; an id with unsafe characters is hashed, not mangled.
    expect(emailJobId({ ...EVENTS[3]! })).toBe(emailJobId(EVENTS[3]!));
    const odd = emailJobId({ kind: "payout_paid", userId: USER, payoutId: "a:b", amountCents: 1 });
    const odd2 = emailJobId({ kind: "payout_paid", userId: USER, payoutId: "a_b", amountCents: 1 });
    expect(odd).not.toContain(":");
    expect(odd).not.toBe(odd2);
  });
});
