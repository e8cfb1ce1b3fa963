// Owns money in: credit purchases through Stripe PaymentIntents, the signed webhooks that report
// what happened to them (succeeded, failed, refunded, disputed), and reconciliation against
// Stripe. Each piece of Stripe news maps to one ledger command with a key derived from Stripe's
// own id, so a deposit happens exactly once per PaymentIntent however the news arrives: the
// synchronous confirm, a webhook, a replayed or reordered webhook, or a reconcile fix.
import { createHash, randomUUID } from "node:crypto";
import type pg from "pg";
import type { Logger } from "pino";
import Stripe from "stripe";
import { z } from "zod";
import { AppError } from "../errors.ts";
import { nestsDeeperThan } from "../http/request.ts";
import { isUuid } from "../ledger/accounts.ts";
import { centsToDollars } from "../ledger/money.ts";
import type { Ledger } from "../shards/ledger.ts";
import type { AccountView, TxResult } from "../ledger/types.ts";
import { reconcileLedger } from "../persist/reconcile.ts";

export interface MoneyInOptions {
  stripe: Stripe;
  webhookSecret: string;
  ledger: Ledger;
  pool: pg.Pool;
  logger: Logger;
  /** Persists what the WAL holds, so Postgres can be compared with Stripe. */
  drainWal(): Promise<void>;
  /**
   * Told after a PaymentIntent's deposit is durable (the receipt email), on its first
   * application and on every replay of it: listeners key their effect by the PaymentIntent.
   */
  onDeposited?: (pi: Stripe.PaymentIntent, result: TxResult) => Promise<void>;
  /** Told after a chargeback is durable, with the account as it left it (debt in debtCents). */
  onChargeback?: (dispute: Stripe.Dispute, pi: Stripe.PaymentIntent, result: TxResult) => Promise<void>;
}

export interface PurchaseResult {
  paymentIntent: Stripe.PaymentIntent;
  account: AccountView;
}

/** The ledger keys of Stripe's news: one per PaymentIntent, refund, dispute. */
export const stripeKeys = {
  deposit: (paymentIntentId: string) => `stripe:pi:${paymentIntentId}`,
  refund: (refundId: string) => `stripe:refund:${refundId}`,
  dispute: (disputeId: string) => `stripe:dispute:${disputeId}`,
  disputeWon: (disputeId: string) => `stripe:dispute_won:${disputeId}`,
};

/** Every item of a Stripe list, following has_more/starting_after (the SDK's auto-pagination). */
async function all<T>(list: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of list) out.push(item);
  return out;
}

type Outcome = "applied" | "ignored" | `error: ${string}`;

const PRINTABLE_ID = /^[\x21-\x7e]{1,255}$/;

/** What a verified event must hold before it is stored and acted on (Stripe's own always do). */
const eventShape = z.object({
  id: z.string().regex(PRINTABLE_ID),
  type: z.string().regex(/^[a-z_.]{1,100}$/),
  // Seconds since 1970, no later than 2100: Postgres' to_timestamp takes it as it is.
  created: z.number().int().min(0).max(4_102_444_800),
  data: z.object({ object: z.looseObject({ id: z.string().regex(PRINTABLE_ID) }) }),
});

/** Why an event cannot be taken, or null: its shape, or a NUL that no jsonb column can hold. */
/** How deep a webhook event may nest. */
const WEBHOOK_MAX_DEPTH = 64;

function malformedEvent(event: unknown, raw: Buffer): string | null {
  // Stripe's events nest a dozen levels at most. Thousands (a forged or fuzzed body that passes
  // the signature) overflow the stack where the event is stored (a 500, found by api-fuzz).
  if (nestsDeeperThan(raw.toString("utf8"), WEBHOOK_MAX_DEPTH))
    return `it nests deeper than ${WEBHOOK_MAX_DEPTH} levels`;
  const r = eventShape.safeParse(event);
  if (!r.success) return r.error.issues.map((i) => `${i.path.join(".") || "event"}: ${i.message}`).join("; ");
  if (raw.includes("\\u0000")) return "it holds a NUL character";
  return null;
}

/**
 * The answer to a purchase whose card was charged but whose deposit the ledger could not make
 * durable: 503 (retry) naming the PaymentIntent, and that the credit is not lost. Its deposit is
 * keyed by the PaymentIntent, so Stripe's webhook (retried until it succeeds), the admin
 * reconcile with `fix`, or the client's retry with the same key deposits it exactly once.
 */
function chargedNotCredited(pi: Stripe.PaymentIntent, cause: unknown): AppError {
  if (cause instanceof AppError && cause.code !== "unavailable" && cause.code !== "internal") return cause;
  return new AppError(
    "unavailable",
    "the card was charged but the credits could not be recorded yet; they will be credited by Stripe's webhook or reconciliation, and retrying with the same idempotency key is safe",
    {
      payment_intent_id: pi.id,
      charged: true,
      amount: centsToDollars(pi.amount_received),
      credit: "pending",
    },
  );
}

/** Stripe's limit on an Idempotency-Key. */
const STRIPE_KEY_MAX = 255;

/**
 * The key a request of ours carries to Stripe: scoped by what it is and whose, so a client's key
 * cannot collide with another user's. A client key long enough to push it past Stripe's limit is
 * carried as its SHA-256 instead (deterministic, so a retry still matches); shorter ones as they
 * are, as before.
 */
export function stripeIdempotencyKey(what: "intent" | "purchase", userId: string, key: string): string {
  const plain = `3am:${what}:${userId}:${key}`;
  if (plain.length <= STRIPE_KEY_MAX) return plain;
  return `3am:${what}:${userId}:sha256:${createHash("sha256").update(key).digest("hex")}`;
}

export class MoneyIn {
  constructor(private readonly o: MoneyInOptions) {}

  /** Creates a PaymentIntent for the client to confirm; the deposit follows its webhook. */
  async createIntent(userId: string, amountCents: number, key: string): Promise<Stripe.PaymentIntent> {
    await this.chargeable(userId);
    const pi = await this.stripeCall(() =>
      this.o.stripe.paymentIntents.create(
        {
          amount: amountCents,
          currency: "usd",
          automatic_payment_methods: { enabled: true, allow_redirects: "never" },
          metadata: { user_id: userId },
          description: "3AM credits",
        },
        { idempotencyKey: stripeIdempotencyKey("intent", userId, key) },
      ),
    );
    await this.recordIntent(pi, userId);
    return pi;
  }

  /**
   * Creates and confirms a PaymentIntent server-side. When it succeeds the credits are deposited
   * before answering (the webhook that follows finds the deposit done). A decline is a 402
   * carrying Stripe's decline code.
   */
  async purchase(
    userId: string,
    amountCents: number,
    paymentMethod: string,
    key: string,
  ): Promise<PurchaseResult> {
    await this.chargeable(userId);
    let pi: Stripe.PaymentIntent;
    try {
      pi = await this.o.stripe.paymentIntents.create(
        {
          amount: amountCents,
          currency: "usd",
          automatic_payment_methods: { enabled: true, allow_redirects: "never" },
          payment_method: paymentMethod,
          confirm: true,
          metadata: { user_id: userId },
          description: "3AM credits",
        },
        { idempotencyKey: stripeIdempotencyKey("purchase", userId, key) },
      );
    } catch (err) {
      if (err instanceof Stripe.errors.StripeCardError) {
        const failed = err.payment_intent;
        if (failed) await this.recordIntent(failed, userId, err.decline_code ?? err.code ?? "card_declined");
        throw new AppError("card_declined", err.message || "the card was declined", {
          decline_code: err.decline_code ?? err.code ?? null,
          stripe_code: err.code ?? null,
          payment_intent_id: failed?.id ?? null,
        });
      }
      throw this.stripeError(err);
    }
    if (pi.status !== "succeeded") {
      await this.recordIntent(pi, userId);
      return { paymentIntent: pi, account: await this.o.ledger.getAccount(userId) };
    }
    // The card is charged: from here a failure must say so. The deposit comes first (the ledger
    // does not need Postgres); the PaymentIntent's row is a record the webhook writes too.
    let r: TxResult;
    try {
      r = await this.submitDeposit(pi);
    } catch (err) {
      throw chargedNotCredited(pi, err);
    }
    // The credits are in: a receipt that cannot be enqueued now is enqueued by the webhook's
    // replay of this deposit (same job id), so it does not fail the purchase.
    await this.o
      .onDeposited?.(pi, r)
      .catch((err) =>
        this.o.logger.warn({ err, paymentIntent: pi.id }, "receipt not enqueued; the webhook enqueues it"),
      );
    await this.recordIntent(pi, userId).catch((err) =>
      this.o.logger.warn({ err, paymentIntent: pi.id }, "PaymentIntent not recorded; its webhook records it"),
    );
    return { paymentIntent: pi, account: r.account };
  }

  /**
   * Nobody is charged who could not be credited: the user and their ledger account must exist
   * (a token outlives a deleted user) and the ledger must not have them suspended.
   */
  private async chargeable(userId: string): Promise<void> {
    const row = await this.o.pool.query("SELECT 1 FROM users WHERE id = $1", [userId]);
    if (row.rowCount === 0) throw new AppError("not_found", "user not found");
    const account = await this.o.ledger.getAccount(userId);
    if (account.status === "suspended") {
      throw new AppError("account_suspended", "a suspended account cannot buy credits");
    }
  }

  /** Verifies a webhook delivery's signature and applies it once; returns what was done. */
  async handleWebhook(
    raw: Buffer,
    signature: string | undefined,
  ): Promise<{ duplicate: boolean; outcome: string }> {
    if (!signature) throw new AppError("invalid_signature", "the Stripe-Signature header is missing");
    let event: Stripe.Event;
    try {
      event = this.o.stripe.webhooks.constructEvent(raw, signature, this.o.webhookSecret);
    } catch (err) {
      throw new AppError("invalid_signature", "the webhook signature does not verify", {
        reason: (err as Error).message,
      });
    }
    const malformed = malformedEvent(event, raw);
    if (malformed) {
      // Refused, and on record as refused when it names an id we can key it by: it is never
      // left half-processed, and a redelivery is refused again.
      const id = (event as { id?: unknown } | null)?.id;
      if (typeof id === "string" && PRINTABLE_ID.test(id)) {
        await this.o.pool.query(
          `INSERT INTO stripe_events (id, type, stripe_created_at, payload, processed_at, outcome)
           VALUES ($1, 'malformed', now(), '{}'::jsonb, now(), $2) ON CONFLICT (id) DO NOTHING`,
          [id, `refused: ${malformed}`],
        );
      }
      throw new AppError("validation_error", `the webhook event is malformed: ${malformed}`);
    }
    const seen = await this.o.pool.query<{ processed_at: Date | null; outcome: string | null }>(
      `INSERT INTO stripe_events (id, type, stripe_created_at, payload) VALUES ($1, $2, to_timestamp($3), $4)
       ON CONFLICT (id) DO UPDATE SET deliveries = stripe_events.deliveries + 1
       RETURNING processed_at, outcome`,
      [event.id, event.type, event.created, event],
    );
    const row = seen.rows[0]!;
    if (row.processed_at) return { duplicate: true, outcome: row.outcome ?? "applied" };
    // Concurrent deliveries of one event may both get here; every ledger command they make is
    // keyed by Stripe's ids, so the second one changes nothing.
    let outcome: Outcome;
    try {
      outcome = await this.applyEvent(event);
    } catch (err) {
      // Passing problems (the ledger or Stripe unreachable) answer 503 so Stripe retries.
      if (err instanceof AppError && err.code === "unavailable") throw err;
      if (!(err instanceof AppError)) throw err;
      outcome = `error: ${err.code}: ${err.message}`;
      this.o.logger.error({ event: event.id, type: event.type, err }, "webhook event could not be applied");
    }
    await this.o.pool.query("UPDATE stripe_events SET processed_at = now(), outcome = $2 WHERE id = $1", [
      event.id,
      outcome,
    ]);
    return { duplicate: false, outcome };
  }

  /**
   * A webhook is a hint, Stripe is the truth: a signed event only says which object changed, and
   * that object is fetched from Stripe before anything is credited or taken back. A leaked
   * webhook secret is then no way to mint credits: a forged amount, status or owner in the body
   * is never read.
   */
  private async applyEvent(event: Stripe.Event): Promise<Outcome> {
    const id = (event.data.object as { id: string }).id;
    const { stripe } = this.o;
    switch (event.type) {
      case "payment_intent.succeeded": {
        const pi = await this.stripeCall(() => stripe.paymentIntents.retrieve(id));
        await this.deposit(pi);
        await this.recordIntent(pi);
        return "applied";
      }
      case "payment_intent.payment_failed": {
        const pi = await this.stripeCall(() => stripe.paymentIntents.retrieve(id));
        await this.recordIntent(
          pi,
          undefined,
          pi.last_payment_error?.decline_code ?? pi.last_payment_error?.code,
        );
        return "applied";
      }
      case "charge.refunded":
        return this.applyRefunds(await this.stripeCall(() => stripe.charges.retrieve(id)));
      case "charge.dispute.created":
        return this.applyDispute(await this.stripeCall(() => stripe.disputes.retrieve(id)));
      case "charge.dispute.closed":
        return this.applyDisputeClosed(await this.stripeCall(() => stripe.disputes.retrieve(id)));
      default:
        return "ignored";
    }
  }

  /** The deposit of a succeeded PaymentIntent: once, under the PaymentIntent's own key. */
  async deposit(pi: Stripe.PaymentIntent): Promise<TxResult> {
    const result = await this.submitDeposit(pi);
    // Throws (503) when the receipt cannot be enqueued, so a webhook is redelivered and enqueues it.
    await this.o.onDeposited?.(pi, result);
    return result;
  }

  private async submitDeposit(pi: Stripe.PaymentIntent): Promise<TxResult> {
    const userId = pi.metadata?.user_id ?? "";
    if (!isUuid(userId)) {
      throw new AppError("validation_error", `PaymentIntent ${pi.id} has no valid metadata.user_id`);
    }
    if (pi.status !== "succeeded") {
      throw new AppError("conflict", `PaymentIntent ${pi.id} has not succeeded (${pi.status})`);
    }
    if (pi.currency !== "usd") {
      throw new AppError("validation_error", `PaymentIntent ${pi.id} is in ${pi.currency}; credits are USD`);
    }
    return (await this.o.ledger.submit({
      kind: "deposit",
      key: stripeKeys.deposit(pi.id),
      accountId: userId.toLowerCase(),
      amountCents: pi.amount_received,
      stripePaymentId: pi.id,
    })) as TxResult;
  }

  /** The PaymentIntent of a charge or dispute, with its deposit made sure of first. */
  private async depositedIntent(
    paymentIntent: string | Stripe.PaymentIntent | null,
  ): Promise<Stripe.PaymentIntent> {
    if (!paymentIntent) throw new AppError("validation_error", "the charge has no PaymentIntent");
    // Always Stripe's own copy, even when an expanded object came along.
    const piId = typeof paymentIntent === "string" ? paymentIntent : paymentIntent.id;
    const pi = await this.stripeCall(() => this.o.stripe.paymentIntents.retrieve(piId));
    // News can arrive out of order: a refund before the success it refunds. Depositing first
    // (a no-op when done) keeps the account from going into debt for credits it is owed.
    if (pi.status === "succeeded") await this.deposit(pi);
    return pi;
  }

  private async applyRefunds(charge: Stripe.Charge): Promise<Outcome> {
    const pi = await this.depositedIntent(charge.payment_intent);
    const refunds = await this.stripeCall(() =>
      all(this.o.stripe.refunds.list({ charge: charge.id, limit: 100 })),
    );
    for (const refund of refunds) await this.applyRefund(refund, pi);
    return "applied";
  }

  /** Takes back one refund's credits; what was already spent becomes debt (and a fraud_logs row). */
  async applyRefund(refund: Stripe.Refund, pi: Stripe.PaymentIntent): Promise<TxResult | null> {
    if (refund.status === "failed" || refund.status === "canceled") return null;
    return (await this.o.ledger.submit({
      kind: "reversal",
      key: stripeKeys.refund(refund.id),
      accountId: this.userOf(pi),
      amountCents: refund.amount,
      type: "refund",
      stripePaymentId: pi.id,
    })) as TxResult;
  }

  private async applyDispute(dispute: Stripe.Dispute): Promise<Outcome> {
    const pi = await this.depositedIntent(await this.intentOfDispute(dispute));
    const result = (await this.o.ledger.submit({
      kind: "reversal",
      key: stripeKeys.dispute(dispute.id),
      accountId: this.userOf(pi),
      amountCents: dispute.amount,
      type: "chargeback",
      stripePaymentId: pi.id,
    })) as TxResult;
    await this.o.onChargeback?.(dispute, pi, result);
    return "applied";
  }

  /** A dispute won gives the disputed credits back (repaying any debt first); a lost one keeps them taken. */
  private async applyDisputeClosed(dispute: Stripe.Dispute): Promise<Outcome> {
    if (dispute.status !== "won") return "ignored";
    const pi = await this.depositedIntent(await this.intentOfDispute(dispute));
    // The dispute's reversal first, in case "created" has not arrived yet: both are keyed, so
    // whichever order they come in, the account ends where Stripe's money is.
    await this.applyDispute(dispute);
    await this.o.ledger.submit({
      kind: "deposit",
      key: stripeKeys.disputeWon(dispute.id),
      accountId: this.userOf(pi),
      amountCents: dispute.amount,
      stripePaymentId: pi.id,
      metadata: { reason: "dispute_won", dispute_id: dispute.id },
    });
    return "applied";
  }

  private async intentOfDispute(dispute: Stripe.Dispute): Promise<string | Stripe.PaymentIntent | null> {
    if (dispute.payment_intent) return dispute.payment_intent;
    const chargeId = typeof dispute.charge === "string" ? dispute.charge : dispute.charge.id;
    const charge = await this.stripeCall(() => this.o.stripe.charges.retrieve(chargeId));
    return charge.payment_intent;
  }

  private userOf(pi: Stripe.PaymentIntent): string {
    const userId = pi.metadata?.user_id ?? "";
    if (!isUuid(userId)) {
      throw new AppError("validation_error", `PaymentIntent ${pi.id} has no valid metadata.user_id`);
    }
    return userId.toLowerCase();
  }

  private async recordIntent(
    pi: Stripe.PaymentIntent,
    userId?: string,
    errorCode?: string | null,
  ): Promise<void> {
    const owner = userId ?? pi.metadata?.user_id;
    if (!owner || !isUuid(owner)) return;
    await this.o.pool.query(
      `INSERT INTO stripe_payment_intents (id, user_id, amount_cents, currency, status, last_error_code)
       VALUES ($1, $2, $3, $4, $5, $6)
       ON CONFLICT (id) DO UPDATE SET
         -- A succeeded intent stays succeeded whatever older news arrives after.
         status = CASE WHEN stripe_payment_intents.status = 'succeeded' THEN 'succeeded' ELSE EXCLUDED.status END,
         last_error_code = coalesce(EXCLUDED.last_error_code, stripe_payment_intents.last_error_code),
         updated_at = now()`,
      [pi.id, owner.toLowerCase(), pi.amount, pi.currency, pi.status, errorCode ?? null],
    );
  }

  /**
   * Compares Stripe with the ledger for PaymentIntents and refunds created in [from, to]: deposits
   * missing or of the wrong amount, deposits Stripe does not know, refunds not taken back, and
   * the ledger's own invariants. With `fix`, missing deposits are applied through the normal
   * keyed path. The report is stored in reconcile_reports.
   */
  async reconcile(opts: { from: Date; to: Date; fix: boolean; requestedBy?: string }) {
    await this.o.drainWal();
    const created = {
      gte: Math.floor(opts.from.getTime() / 1000),
      lte: Math.floor(opts.to.getTime() / 1000),
    };
    const intents = await this.stripeCall(() =>
      all(this.o.stripe.paymentIntents.list({ created, limit: 100 })),
    );
    const succeeded = intents.filter((pi) => pi.status === "succeeded");
    const deposits = await this.o.pool.query<{
      stripe_payment_id: string;
      account_id: string;
      amount_cents: string;
      created_at: Date;
    }>(
      `SELECT stripe_payment_id, account_id, amount_cents, created_at FROM transactions
        WHERE type = 'purchase' AND idempotency_key LIKE 'stripe:pi:%'
          AND (stripe_payment_id = ANY($1::text[]) OR created_at BETWEEN $2 AND $3)`,
      [succeeded.map((pi) => pi.id), opts.from, opts.to],
    );
    const byIntent = new Map(deposits.rows.map((r) => [r.stripe_payment_id, r]));

    const missingDeposits: Array<{
      payment_intent_id: string;
      user_id: string | null;
      amount_cents: number;
    }> = [];
    const amountMismatches: Array<{ payment_intent_id: string; stripe_cents: number; ledger_cents: number }> =
      [];
    for (const pi of succeeded) {
      const d = byIntent.get(pi.id);
      if (!d) {
        missingDeposits.push({
          payment_intent_id: pi.id,
          user_id: pi.metadata?.user_id ?? null,
          amount_cents: pi.amount_received,
        });
      } else if (Number(d.amount_cents) !== pi.amount_received) {
        amountMismatches.push({
          payment_intent_id: pi.id,
          stripe_cents: pi.amount_received,
          ledger_cents: Number(d.amount_cents),
        });
      }
    }
    // Deposits for money Stripe never received: the PaymentIntent is not succeeded (listed in the
    // window, or fetched when created outside it), or Stripe does not know it at all.
    const unknownToStripe: Array<{
      payment_intent_id: string;
      user_id: string;
      amount_cents: number;
      reason: string;
    }> = [];
    const flag = (d: (typeof deposits.rows)[number], reason: string) =>
      unknownToStripe.push({
        payment_intent_id: d.stripe_payment_id,
        user_id: d.account_id,
        amount_cents: Number(d.amount_cents),
        reason,
      });
    const listed = new Map(intents.map((pi) => [pi.id, pi]));
    for (const d of deposits.rows) {
      let status = listed.get(d.stripe_payment_id)?.status;
      if (status === undefined) {
        try {
          status = (await this.o.stripe.paymentIntents.retrieve(d.stripe_payment_id)).status;
        } catch (err) {
          if (!(err instanceof Stripe.errors.StripeInvalidRequestError && err.statusCode === 404)) {
            throw this.stripeError(err);
          }
          flag(d, "no such PaymentIntent at Stripe");
          continue;
        }
      }
      if (status !== "succeeded") flag(d, `stripe says ${status}`);
    }

    const refunds = await this.stripeCall(() => all(this.o.stripe.refunds.list({ created, limit: 100 })));
    const live = refunds.filter((r) => r.status !== "failed" && r.status !== "canceled");
    const taken = await this.o.pool.query<{ idempotency_key: string }>(
      "SELECT idempotency_key FROM transactions WHERE type = 'refund' AND idempotency_key = ANY($1::text[])",
      [live.map((r) => stripeKeys.refund(r.id))],
    );
    const takenKeys = new Set(taken.rows.map((r) => r.idempotency_key));
    const missingRefunds = live
      .filter((r) => !takenKeys.has(stripeKeys.refund(r.id)))
      .map((r) => ({
        refund_id: r.id,
        payment_intent_id:
          typeof r.payment_intent === "string" ? r.payment_intent : (r.payment_intent?.id ?? null),
        amount_cents: r.amount,
      }));

    const fixed: Array<{ payment_intent_id: string; transaction_id: string }> = [];
    const fixErrors: Array<{ payment_intent_id: string; error: string }> = [];
    if (opts.fix) {
      const byId = new Map(succeeded.map((pi) => [pi.id, pi]));
      for (const m of missingDeposits) {
        try {
          const r = await this.deposit(byId.get(m.payment_intent_id)!);
          fixed.push({ payment_intent_id: m.payment_intent_id, transaction_id: r.transaction.id });
        } catch (err) {
          fixErrors.push({ payment_intent_id: m.payment_intent_id, error: (err as Error).message });
        }
      }
      if (fixed.length > 0) await this.o.drainWal();
    }
    const ledger = await reconcileLedger(this.o.pool);
    const ok =
      missingDeposits.length === fixed.length &&
      amountMismatches.length === 0 &&
      unknownToStripe.length === 0 &&
      missingRefunds.length === 0 &&
      ledger.ok;
    const report = {
      id: randomUUID(),
      ok,
      window: { from: opts.from.toISOString(), to: opts.to.toISOString() },
      stripe: { payment_intents: intents.length, succeeded: succeeded.length, refunds: refunds.length },
      ledger_deposits: deposits.rows.length,
      missing_deposits: missingDeposits,
      amount_mismatches: amountMismatches,
      unknown_to_stripe: unknownToStripe,
      missing_refunds: missingRefunds,
      fix: opts.fix,
      fixed,
      fix_errors: fixErrors,
      ledger_invariants: {
        ok: ledger.ok,
        total_balance_cents: ledger.totalBalanceCents,
        entry_mismatches: ledger.entryMismatches,
        unbalanced_transactions: ledger.unbalancedTransactions,
        debt_cents: ledger.debtCents,
        receivables_cents: ledger.receivablesCents,
      },
      created_at: new Date().toISOString(),
    };
    await this.o.pool.query(
      `INSERT INTO reconcile_reports (id, window_from, window_to, ok, fix, report, requested_by)
       VALUES ($1, $2, $3, $4, $5, $6, $7)`,
      [report.id, opts.from, opts.to, ok, opts.fix, report, opts.requestedBy ?? null],
    );
    return report;
  }

  private async stripeCall<T>(f: () => Promise<T>): Promise<T> {
    try {
      return await f();
    } catch (err) {
      throw this.stripeError(err);
    }
  }

  /** Stripe's errors as ours: their request errors are 4xx, anything else a retryable 503. */
  private stripeError(err: unknown): AppError {
    if (err instanceof AppError) return err;
    if (err instanceof Stripe.errors.StripeIdempotencyError) {
      return new AppError("idempotency_conflict", "this idempotency key was used with a different request");
    }
    if (err instanceof Stripe.errors.StripeCardError) {
      return new AppError("card_declined", err.message, {
        decline_code: err.decline_code ?? err.code ?? null,
      });
    }
    if (err instanceof Stripe.errors.StripeInvalidRequestError) {
      return new AppError("validation_error", err.message, {
        stripe_code: err.code ?? null,
        param: err.param ?? null,
      });
    }
    this.o.logger.error({ err }, "Stripe request failed");
    return new AppError("unavailable", "the payment provider could not be reached; retry with the same key");
  }
}
