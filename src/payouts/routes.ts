// Owns the money-out endpoints: a creator's payout method (created at the provider; only its id
// and the last four digits are kept), withdrawals (a ledger reserve, then a job for the payout
// worker), reading payouts, and the admin's list and retry. The ledger decides what may leave
// (earned money only, fraud rules, idempotency); this checks who may ask and what they sent.
import { createHash } from "node:crypto";
import type { Logger } from "pino";
import { z } from "zod";
import { AppError, isAppError } from "../errors.ts";
import { type RoleSource, requireAdmin, requireSelfOrAdmin, uuidFrom } from "../http/access.ts";
import { idempotencyKeySchema } from "../http/idempotency.ts";
import type { RouteContext, RouteDef } from "../http/router.ts";
import { centsToDollars, dollarsToCents } from "../ledger/money.ts";
import type { PayoutRecord, PayoutResult, TxResult } from "../ledger/types.ts";
import { balanceJson } from "../payments/present.ts";
import type { Ledger } from "../shards/ledger.ts";
import { isAbaRoutingNumber, isUsAccountNumber, last4 } from "./bank-details.ts";
import type { PayoutJobs } from "./payout-queue.ts";
import type { PayoutStore } from "./payout-store.ts";
import { payoutJson, payoutMethodJson } from "./present.ts";
import { type PayoutProvider, PayoutProviderError, type PayoutProviderName } from "./provider.ts";

export interface PayoutRouteDeps {
  ledger: Ledger;
  roles: RoleSource;
  store: PayoutStore;
  jobs: PayoutJobs;
  /** The configured providers; a method for one that is missing answers 503. */
  providers: Partial<Record<PayoutProviderName, PayoutProvider>>;
  logger: Logger;
  minUsd: number;
  maxUsd: number;
  listMax: number;
}

const methodBody = z.strictObject({
  user_id: z.uuid(),
  provider: z.enum(["wise", "airwallex"]),
  account_holder_name: z.string().trim().min(1).max(140),
  country: z.literal("US"),
  currency: z.literal("USD"),
  // Never echoed: a refusal names the field, not the value.
  account_number: z.string().refine(isUsAccountNumber, "account_number must be 4 to 17 digits"),
  routing_number: z
    .string()
    .refine(isAbaRoutingNumber, "routing_number must be 9 digits with a valid ABA checksum"),
});

const withdrawBody = z.strictObject({
  user_id: z.uuid(),
  amount: z.union([z.number(), z.string()]),
  idempotency_key: idempotencyKeySchema.optional(),
});

const PAYOUT_STATUSES = ["pending", "processing", "paid", "failed", "returned"] as const;

/**
 * The payout id a (user, key) pair gets: the same request with the same key names the same
 * payout, so a retried withdrawal replays instead of reserving twice. A UUID (version 8 layout)
 * from SHA-256; never contains ':' (it is also the payout job's id).
 */
export function payoutIdFor(userId: string, key: string): string {
  const h = createHash("sha256").update(`payout|${userId}|${key}`).digest("hex");
  const variant = ((Number.parseInt(h[16]!, 16) & 0x3) | 0x8).toString(16);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-8${h.slice(13, 16)}-${variant}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

/** Money out needs its key: the Idempotency-Key header (or the body's idempotency_key). */
function requiredKey(ctx: RouteContext, fromBody: string | undefined): string {
  const header = ctx.req.headers.get("idempotency-key");
  if (header !== undefined && !idempotencyKeySchema.safeParse(header).success) {
    throw new AppError("validation_error", "Idempotency-Key must be 1 to 255 visible ASCII characters");
  }
  if (header !== undefined && fromBody !== undefined && header !== fromBody) {
    throw new AppError("validation_error", "Idempotency-Key header and idempotency_key field differ");
  }
  const key = header ?? fromBody;
  if (key === undefined) throw new AppError("validation_error", "an Idempotency-Key header is required");
  ctx.headers.push(["Idempotency-Key", key]);
  return key;
}

export function payoutRoutes(d: PayoutRouteDeps): RouteDef[] {
  const minCents = dollarsToCents(d.minUsd) ?? Math.round(d.minUsd * 100);
  const maxCents = dollarsToCents(d.maxUsd) ?? Math.round(d.maxUsd * 100);
  const userPayoutsQuery = z.strictObject({
    user_id: z.uuid(),
    limit: z.coerce.number().int().min(1).max(d.listMax).default(Math.min(20, d.listMax)),
  });
  const adminPayoutsQuery = z.strictObject({
    status: z.enum(PAYOUT_STATUSES).optional(),
    limit: z.coerce.number().int().min(1).max(d.listMax).default(Math.min(100, d.listMax)),
  });

  /** Hands a pending round to the worker; a failure here is logged, never a lost payout: the
   * reserve is durable, and the client's retry with the same key (or the sweeper) enqueues it. */
  const enqueue = async (p: PayoutRecord): Promise<void> => {
    if (p.status !== "pending") return;
    try {
      await d.jobs.enqueue(p);
    } catch (err) {
      if (isAppError(err)) throw err;
      d.logger.error({ err, payout_id: p.id }, "queueing a reserved payout failed; it stays pending");
    }
  };

  const readPayout = async (ctx: RouteContext, id: string): Promise<PayoutRecord> => {
    // Postgres says whose it is; right after a withdrawal it may not yet, and the asker's own
    // shard already knows it.
    const owner = (await d.store.ownerOf(id)) ?? ctx.user!.sub;
    const p = await d.ledger.getPayout(owner, id);
    if (!p) throw new AppError("not_found", "payout not found");
    await requireSelfOrAdmin(ctx, d.roles, p.userId);
    return p;
  };

  return [
    {
      method: "put",
      path: "/api/payments/payout-method",
      auth: "user",
      doc: {
        summary: "Set where payouts go (owner): a US bank account at Wise or Airwallex",
        body: methodBody,
        response: { status: 200, description: "the payout method (last four digits only)" },
        errors: ["payout_method_rejected"],
      },
      async handler(ctx) {
        const b = methodBody.parse(ctx.body);
        const userId = b.user_id.toLowerCase();
        if (ctx.user!.sub !== userId) {
          throw new AppError("forbidden", "you may only set your own payout method");
        }
        const provider = d.providers[b.provider];
        if (!provider) throw new AppError("unavailable", `payouts through ${b.provider} are not configured`);
        let recipient: { providerRecipientId: string };
        try {
          recipient = await provider.createRecipient({
            accountHolderName: b.account_holder_name,
            country: "US",
            currency: "USD",
            accountNumber: b.account_number,
            routingNumber: b.routing_number,
          });
        } catch (err) {
          if (!(err instanceof PayoutProviderError)) throw err;
          // Logged with the provider's code and request id, never the account number.
          d.logger.warn(
            { provider: err.provider, code: err.code, request_id: err.requestId, status: err.httpStatus },
            "the provider refused a payout method",
          );
          if (err.retryable) throw new AppError("unavailable", `${b.provider} is unavailable; retry shortly`);
          throw new AppError("payout_method_rejected", `${b.provider} refused these bank details`, {
            provider_code: err.code,
          });
        }
        const m = await d.store.saveMethod({
          userId,
          provider: b.provider,
          providerRecipientId: recipient.providerRecipientId,
          accountHolderName: b.account_holder_name,
          country: b.country,
          currency: b.currency,
          accountLast4: last4(b.account_number),
        });
        return { status: 200, body: { payout_method: payoutMethodJson(m) } };
      },
    },
    {
      method: "get",
      path: "/api/payments/payout-method/:userId",
      auth: "user",
      doc: {
        summary: "A payout method (owner or admin)",
        response: { status: 200, description: "the payout method" },
      },
      async handler(ctx) {
        const id = uuidFrom(ctx, 0, "userId");
        await requireSelfOrAdmin(ctx, d.roles, id);
        const m = await d.store.method(id);
        if (!m) throw new AppError("not_found", "no payout method");
        return { status: 200, body: { payout_method: payoutMethodJson(m) } };
      },
    },
    {
      method: "post",
      path: "/api/payments/withdraw",
      auth: "user",
      doc: {
        summary: "Withdraw earned money (owner)",
        body: withdrawBody,
        response: { status: 202, description: "the pending payout and the balance" },
        errors: [
          "insufficient_funds",
          "below_minimum",
          "payout_method_required",
          "fraud_blocked",
          "idempotency_conflict",
        ],
        idempotency: "required",
      },
      async handler(ctx) {
        const b = withdrawBody.parse(ctx.body);
        const userId = b.user_id.toLowerCase();
        if (ctx.user!.sub !== userId)
          throw new AppError("forbidden", "you may only withdraw from your own account");
        const key = requiredKey(ctx, b.idempotency_key);
        const amountCents = dollarsToCents(b.amount);
        if (amountCents === null || amountCents <= 0) {
          throw new AppError(
            "validation_error",
            "amount must be a positive number of dollars with at most two decimals",
            [{ path: ["amount"], message: "a positive amount with at most two decimals" }],
          );
        }
        if (amountCents > maxCents) {
          throw new AppError("validation_error", `a withdrawal is at most $${centsToDollars(maxCents)}`, [
            { path: ["amount"], message: `at most ${centsToDollars(maxCents)}` },
          ]);
        }
        if (amountCents < minCents) {
          throw new AppError("below_minimum", `the smallest withdrawal is $${centsToDollars(minCents)}`, {
            minimum: centsToDollars(minCents),
          });
        }
        const payoutId = payoutIdFor(userId, key);
        const method = await d.store.method(userId);
        // A replay answers even if the method changed or went since; a first request needs one.
        if (!method && !(await d.ledger.getPayout(userId, payoutId))) {
          throw new AppError(
            "payout_method_required",
            "set a payout method first (PUT /api/payments/payout-method)",
          );
        }
        let r: TxResult;
        try {
          r = (await d.ledger.submit({
            kind: "reserve_payout",
            key,
            accountId: userId,
            payoutId,
            amountCents,
            ...(method ? { provider: method.provider, providerRecipientId: method.providerRecipientId } : {}),
          })) as TxResult;
        } catch (err) {
          throw withDollarDetails(err);
        }
        const payout = await d.ledger.getPayout(userId, payoutId);
        if (payout) await enqueue(payout);
        const tx = r.transaction;
        return {
          status: 202,
          body: {
            payout: {
              id: tx.id,
              status: "pending",
              amount: centsToDollars(tx.amountCents),
              provider: payout?.provider ?? method?.provider ?? null,
              created_at: tx.createdAt,
            },
            balance: balanceJson(r.account),
          },
        };
      },
    },
    {
      method: "get",
      path: "/api/payments/payouts/:payoutId",
      auth: "user",
      doc: { summary: "One payout (owner or admin)", response: { status: 200, description: "the payout" } },
      async handler(ctx) {
        const id = uuidFrom(ctx, 0, "payoutId");
        return { status: 200, body: { payout: payoutJson(await readPayout(ctx, id)) } };
      },
    },
    {
      method: "get",
      path: "/api/payments/payouts",
      auth: "user",
      doc: {
        summary: "A creator's payouts, newest first (owner or admin)",
        query: userPayoutsQuery,
        response: { status: 200, description: "payouts" },
      },
      async handler(ctx) {
        const q = userPayoutsQuery.parse(Object.fromEntries(ctx.req.query));
        const userId = q.user_id.toLowerCase();
        await requireSelfOrAdmin(ctx, d.roles, userId);
        // Postgres, overlaid with the shard's memory (ahead of it by the persister's lag).
        const byId = new Map<string, PayoutRecord>();
        for (const p of await d.store.listByUser(userId, q.limit)) byId.set(p.id, p);
        for (const p of await d.ledger.payoutsInMemory(userId)) {
          const cur = byId.get(p.id);
          if (!cur || p.seq >= cur.seq) byId.set(p.id, p);
        }
        const list = [...byId.values()]
          .sort((a, b) =>
            a.createdAt === b.createdAt ? (a.id < b.id ? 1 : -1) : a.createdAt < b.createdAt ? 1 : -1,
          )
          .slice(0, q.limit);
        return { status: 200, body: { payouts: list.map(payoutJson) } };
      },
    },
    {
      method: "get",
      path: "/api/admin/payouts",
      auth: "user",
      doc: {
        summary: "Payouts by status (admin)",
        query: adminPayoutsQuery,
        response: { status: 200, description: "payouts" },
        admin: true,
      },
      async handler(ctx) {
        await requireAdmin(ctx, d.roles);
        const q = adminPayoutsQuery.parse(Object.fromEntries(ctx.req.query));
        const list = await d.store.listByStatus(q.status ?? null, q.limit);
        return { status: 200, body: { payouts: list.map(payoutJson) } };
      },
    },
    {
      method: "post",
      path: "/api/admin/payouts/:payoutId/retry",
      auth: "user",
      doc: {
        summary: "Retry a failed payout (admin): reserved again, a new round",
        response: { status: 202, description: "the payout" },
        errors: ["insufficient_funds", "fraud_blocked"],
        admin: true,
      },
      async handler(ctx) {
        await requireAdmin(ctx, d.roles);
        const id = uuidFrom(ctx, 0, "payoutId");
        let p = await readPayout(ctx, id);
        if (p.status === "failed") {
          // Idempotent by round: a second retry of the same failed round changes nothing.
          try {
            const r = (await d.ledger.submit({
              kind: "retry_payout",
              key: `retry-${p.id}-${p.round}`,
              accountId: p.userId,
              payoutId: p.id,
              round: p.round,
            })) as PayoutResult;
            p = r.payout;
          } catch (err) {
            throw withDollarDetails(err);
          }
        }
        if (p.status !== "pending") {
          throw new AppError("conflict", `payout is ${p.status}; only a failed payout can be retried`, {
            status: p.status,
          });
        }
        await enqueue(p);
        return { status: 202, body: { payout: payoutJson(p) } };
      },
    },
  ];
}

/** The ledger's refusal details are in cents; the API speaks dollars. */
function withDollarDetails(err: unknown): unknown {
  if (!isAppError(err) || err.code !== "insufficient_funds") return err;
  const det = (err.details ?? {}) as Record<string, unknown>;
  const dollars = (k: string) => (typeof det[k] === "number" ? centsToDollars(det[k] as number) : undefined);
  return new AppError(err.code, err.message, {
    withdrawable: dollars("withdrawable_cents") ?? "0.00",
    available: dollars("available_cents"),
    amount: dollars("amount_cents"),
  });
}
