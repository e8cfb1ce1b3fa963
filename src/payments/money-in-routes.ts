// Owns the money-in endpoints: payment intents, server-side credit purchases, Stripe's signed
// webhook, and the admin reconciliation. They check who asks and what they sent; MoneyIn talks
// to Stripe and the ledger.
import { z } from "zod";
import { AppError } from "../errors.ts";
import { type RoleSource, requireAdmin, uuidFrom } from "../http/access.ts";
import { idempotencyKey, idempotencyKeySchema } from "../http/idempotency.ts";
import type { RouteDef } from "../http/router.ts";
import { centsToDollars, dollarsToCents } from "../ledger/money.ts";
import type { UserStore } from "../users/user-store.ts";
import type { MoneyIn } from "./money-in.ts";
import { balanceJson } from "./present.ts";
import type { ReconcileJobs } from "./reconcile-jobs.ts";

export interface MoneyInRouteDeps {
  moneyIn: MoneyIn;
  users: UserStore;
  roles: RoleSource;
  minUsd: number;
  maxUsd: number;
  /** Reconcile runs as a job; the routes enqueue and read them. */
  reconcileJobs: ReconcileJobs;
}

export function moneyInRoutes(d: MoneyInRouteDeps): RouteDef[] {
  const minCents = dollarsToCents(d.minUsd)!;
  const maxCents = dollarsToCents(d.maxUsd)!;
  const amount = z.number().superRefine((a, ctx) => {
    const cents = dollarsToCents(a);
    if (cents === null)
      ctx.addIssue({ code: "custom", message: "amount is dollars with at most two decimals" });
    else if (cents < minCents || cents > maxCents) {
      ctx.addIssue({
        code: "custom",
        message: `a purchase is between ${centsToDollars(minCents)} and ${centsToDollars(maxCents)} dollars`,
      });
    }
  });
  const key = idempotencyKeySchema.optional();
  const intentBody = z.strictObject({ user_id: z.uuid(), amount, idempotency_key: key });
  const purchaseBody = z.strictObject({
    user_id: z.uuid(),
    amount,
    payment_method_id: z.string().regex(/^pm_[A-Za-z0-9_]{1,250}$/, "a Stripe PaymentMethod id (pm_...)"),
    idempotency_key: key,
  });
  const reconcileBody = z.strictObject({
    from: z.iso.datetime({ offset: true }).optional(),
    to: z.iso.datetime({ offset: true }).optional(),
    fix: z.boolean().default(false),
  });

  /** Only the account's owner buys credits into it (an admin does not buy for others). */
  const requireOwner = (sub: string, userId: string) => {
    if (sub !== userId) throw new AppError("forbidden", "you may only buy credits for your own account");
  };

  return [
    {
      method: "post",
      path: "/api/payments/intent",
      auth: "user",
      doc: {
        summary: "Create a Stripe PaymentIntent for the client to confirm",
        body: intentBody,
        response: { status: 201, description: "the PaymentIntent's id and client secret" },
        errors: ["payment_failed", "idempotency_conflict"],
        idempotency: "optional",
      },
      async handler(ctx) {
        const b = intentBody.parse(ctx.body);
        const userId = b.user_id.toLowerCase();
        requireOwner(ctx.user!.sub, userId);
        const pi = await d.moneyIn.createIntent(
          userId,
          dollarsToCents(b.amount)!,
          idempotencyKey(ctx, b.idempotency_key),
        );
        return {
          status: 201,
          body: {
            payment_intent_id: pi.id,
            client_secret: pi.client_secret,
            status: pi.status,
            amount: centsToDollars(pi.amount),
            currency: pi.currency.toUpperCase(),
          },
        };
      },
    },
    {
      method: "post",
      path: "/api/payments/credits/purchase",
      auth: "user",
      doc: {
        summary: "Buy credits with a Stripe PaymentMethod",
        description:
          "201 when Stripe confirmed and the deposit is durable; 202 while the PaymentIntent needs more (3-D Secure).",
        body: purchaseBody,
        response: { status: 201, description: "the PaymentIntent and the new balance" },
        errors: ["card_declined", "payment_failed", "idempotency_conflict"],
        idempotency: "optional",
      },
      async handler(ctx) {
        const b = purchaseBody.parse(ctx.body);
        const userId = b.user_id.toLowerCase();
        requireOwner(ctx.user!.sub, userId);
        const r = await d.moneyIn.purchase(
          userId,
          dollarsToCents(b.amount)!,
          b.payment_method_id,
          idempotencyKey(ctx, b.idempotency_key),
        );
        return {
          status: r.paymentIntent.status === "succeeded" ? 201 : 202,
          body: {
            payment_intent_id: r.paymentIntent.id,
            status: r.paymentIntent.status,
            amount: centsToDollars(r.paymentIntent.amount),
            balance: balanceJson(r.account),
          },
        };
      },
    },
    {
      method: "post",
      path: "/api/payments/webhook",
      auth: "none",
      doc: {
        summary: "Stripe webhook (signed; Stripe calls it)",
        response: { status: 200, description: "received" },
        errors: ["invalid_signature"],
      },
      body: "raw",
      async handler(ctx) {
        const r = await d.moneyIn.handleWebhook(ctx.raw!, ctx.req.headers.get("stripe-signature"));
        return { status: 200, body: { received: true, duplicate: r.duplicate, outcome: r.outcome } };
      },
    },
    {
      method: "post",
      path: "/api/payments/reconcile",
      auth: "user",
      doc: {
        summary: "Start a reconcile of the ledger with Stripe (admin): a job, answered at once",
        body: reconcileBody,
        response: {
          status: 202,
          description: "the job's id; its report at GET /api/payments/reconcile/{jobId}",
        },
        admin: true,
      },
      async handler(ctx) {
        await requireAdmin(ctx, d.roles);
        const b = reconcileBody.parse(ctx.body);
        if (b.from && b.to && new Date(b.from) >= new Date(b.to)) {
          throw new AppError("validation_error", "from must be before to");
        }
        // A job, not the request: a reconcile pages through Stripe and may outlast any timeout.
        const id = await d.reconcileJobs.enqueue({
          ...(b.from ? { from: b.from } : {}),
          ...(b.to ? { to: b.to } : {}),
          fix: b.fix,
          requestedBy: ctx.user!.sub,
        });
        return { status: 202, body: { job: { id, status: "waiting" } } };
      },
    },
    {
      method: "get",
      path: "/api/payments/reconcile/:jobId",
      auth: "user",
      doc: {
        summary: "A reconcile job's status and, once completed, its report (admin)",
        response: { status: 200, description: "the job" },
        admin: true,
      },
      async handler(ctx) {
        await requireAdmin(ctx, d.roles);
        const id = uuidFrom(ctx, 0, "jobId");
        const job = await d.reconcileJobs.status(id);
        if (!job)
          throw new AppError(
            "not_found",
            "no such reconcile job (finished jobs are kept RECONCILE_JOBS_KEPT)",
          );
        return { status: 200, body: { job } };
      },
    },
  ];
}
