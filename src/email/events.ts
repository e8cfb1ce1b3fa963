// Owns what can cause an email, and the job id each cause gets: one id per event (a purchase's
// PaymentIntent, a payout id and status, a dispute), so a retried webhook, a replayed deposit or
// a re-run job finds the job already there and sends nothing more. No email per tip.
import { createHash } from "node:crypto";
import { z } from "zod";

const userId = z.string().uuid();
const cents = z.number().int().min(0);
const id = z.string().min(1).max(255);
/** A payout's round: 1, plus one per admin retry (each round's emails are their own). */
const round = z.number().int().min(1).optional();

export const emailEventShape = z.discriminatedUnion("kind", [
  z.object({ kind: z.literal("welcome"), userId }),
  z.object({
    kind: z.literal("purchase_receipt"),
    userId,
    paymentIntentId: id,
    amountCents: cents,
    balanceCents: cents,
  }),
  z.object({ kind: z.literal("payout_requested"), userId, payoutId: id, amountCents: cents, round }),
  z.object({ kind: z.literal("payout_paid"), userId, payoutId: id, amountCents: cents, round }),
  z.object({
    kind: z.literal("payout_failed"),
    userId,
    payoutId: id,
    amountCents: cents,
    reason: z.string().min(1).max(500),
    round,
  }),
  z.object({
    kind: z.literal("payout_returned"),
    userId,
    payoutId: id,
    amountCents: cents,
    reason: z.string().max(500).optional(),
    round,
  }),
  z.object({
    kind: z.literal("chargeback_debt"),
    userId,
    disputeId: id,
    amountCents: cents,
    debtCents: cents,
  }),
]);

export type EmailEvent = z.infer<typeof emailEventShape>;
export type EmailKind = EmailEvent["kind"];

/** BullMQ job ids may not hold ':' (and must not look like integers): safe characters pass, others are hashed. */
function safe(part: string): string {
  return /^[A-Za-z0-9_.-]{1,200}$/.test(part) ? part : `h${createHash("sha256").update(part).digest("hex")}`;
}

/** The one job id of the email an event causes. */
export function emailJobId(e: EmailEvent): string {
  switch (e.kind) {
    case "welcome":
      return `welcome-${safe(e.userId)}`;
    case "purchase_receipt":
      return `receipt-${safe(e.paymentIntentId)}`;
    case "payout_requested":
    case "payout_paid":
    case "payout_failed":
    case "payout_returned":
      return `payout-${safe(e.payoutId)}-${e.kind.slice("payout_".length)}${e.round && e.round > 1 ? `-r${e.round}` : ""}`;
    case "chargeback_debt":
      return `chargeback-${safe(e.disputeId)}`;
  }
}
