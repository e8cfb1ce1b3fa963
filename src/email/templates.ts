// Owns the text of every email: a subject, a plain-text part and an HTML part per kind, made with
// Handlebars. HTML templates escape every value by default ({{name}}), so a display name like
// `<b>Ann</b>` arrives as text, never as markup; text parts and subjects are compiled without
// HTML escaping (they are not HTML; nodemailer encodes headers).
import Handlebars from "handlebars";
import { centsToDollars } from "../ledger/money.ts";
import type { EmailEvent, EmailKind } from "./events.ts";

export interface Recipient {
  email: string;
  displayName: string;
}

export interface RenderedEmail {
  subject: string;
  text: string;
  html: string;
}

interface Template {
  subject: string;
  /** Lines of the body; the text part joins them with blank lines, the HTML part wraps each in <p>. */
  lines: string[];
}

const TEMPLATES: Record<EmailKind, Template> = {
  welcome: {
    subject: "Welcome to 3AM, {{name}}",
    lines: [
      "Hi {{name}},",
      "Welcome to 3AM. Buy credits to tip your favourite creators during their live streams, or become a creator and get tipped yourself.",
      "See you at 3AM.",
    ],
  },
  purchase_receipt: {
    subject: "Your 3AM receipt: {{amount}} USD of credits",
    lines: [
      "Hi {{name}},",
      "Thank you for your purchase. Here is your receipt.",
      "Credits bought: {{amount}} USD",
      "Payment: {{paymentIntentId}}",
      "New balance: {{balance}} USD",
    ],
  },
  payout_requested: {
    subject: "Your 3AM payout of {{amount}} USD is on its way",
    lines: [
      "Hi {{name}},",
      "We received your payout request of {{amount}} USD and are sending it to your bank account.",
      "Payout: {{payoutId}}",
    ],
  },
  payout_paid: {
    subject: "Your 3AM payout of {{amount}} USD was paid",
    lines: [
      "Hi {{name}},",
      "Your payout of {{amount}} USD was paid to your bank account.",
      "Payout: {{payoutId}}",
    ],
  },
  payout_failed: {
    subject: "Your 3AM payout of {{amount}} USD failed",
    lines: [
      "Hi {{name}},",
      "Your payout of {{amount}} USD could not be made, and the money is back in your 3AM balance.",
      "Reason: {{reason}}",
      "Payout: {{payoutId}}",
    ],
  },
  payout_returned: {
    subject: "Your 3AM payout of {{amount}} USD was returned",
    lines: [
      "Hi {{name}},",
      "Your bank returned your payout of {{amount}} USD; the money is back in your 3AM balance. Please check your bank details.",
      "Reason: {{reason}}",
      "Payout: {{payoutId}}",
    ],
  },
  chargeback_debt: {
    subject: "A chargeback left your 3AM account owing {{debt}} USD",
    lines: [
      "Hi {{name}},",
      "Your bank disputed a payment of {{amount}} USD, so the credits it bought were taken back. Credits already spent left your account owing {{debt}} USD.",
      "Your next purchase repays it first.",
      "Dispute: {{disputeId}}",
    ],
  },
};

const LAYOUT = `<!doctype html>
<html><head><meta charset="utf-8"><title>{{subject}}</title></head>
<body style="margin:0;padding:24px;background:#f4f4f5;font-family:Helvetica,Arial,sans-serif;color:#18181b">
<div style="max-width:560px;margin:0 auto;background:#ffffff;border-radius:8px;padding:24px">
<h1 style="font-size:20px;margin:0 0 16px">3AM</h1>
{{#each lines}}<p style="font-size:15px;line-height:1.5;margin:0 0 12px">{{this}}</p>
{{/each}}</div></body></html>`;

const hbs = Handlebars.create();
const layout = hbs.compile(LAYOUT, { strict: true });
const compiled = Object.fromEntries(
  Object.entries(TEMPLATES).map(([kind, t]) => [
    kind,
    {
      subject: hbs.compile(t.subject, { noEscape: true, strict: true }),
      // Text and HTML are rendered from the same lines: text without escaping, HTML escaped.
      textLines: t.lines.map((l) => hbs.compile(l, { noEscape: true, strict: true })),
    },
  ]),
) as Record<EmailKind, { subject: HandlebarsTemplateDelegate; textLines: HandlebarsTemplateDelegate[] }>;

function valuesOf(e: EmailEvent, to: Recipient): Record<string, string> {
  const v: Record<string, string> = { name: to.displayName };
  if ("amountCents" in e) v.amount = centsToDollars(e.amountCents);
  if (e.kind === "purchase_receipt") {
    v.paymentIntentId = e.paymentIntentId;
    v.balance = centsToDollars(e.balanceCents);
  }
  if ("payoutId" in e) v.payoutId = e.payoutId;
  if (e.kind === "payout_failed") v.reason = e.reason;
  if (e.kind === "payout_returned") v.reason = e.reason ?? "returned by the receiving bank";
  if (e.kind === "chargeback_debt") {
    v.disputeId = e.disputeId;
    v.debt = centsToDollars(e.debtCents);
  }
  return v;
}

export function renderEmail(e: EmailEvent, to: Recipient): RenderedEmail {
  const t = compiled[e.kind];
  const values = valuesOf(e, to);
  // Header values must stay on one line.
  const subject = t.subject(values).replace(/[\r\n]+/g, " ");
  const lines = t.textLines.map((f) => f(values));
  return {
    subject,
    text: `${lines.join("\n\n")}\n\n-- \n3AM\n`,
    // The layout escapes the subject and every line: values reach HTML only through it.
    html: layout({ subject, lines }),
  };
}
