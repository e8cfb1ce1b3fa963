// Owns the tipping and balance endpoints: HTTP in, a ledger command out. The ledger decides
// (balance, fraud rules, idempotency); this checks who may ask and what they sent.
import { z } from "zod";
import { AppError } from "../errors.ts";
import type { Ledger } from "../shards/ledger.ts";
import { dollarsToCents } from "../ledger/money.ts";
import type { TxResult } from "../ledger/types.ts";
import { type RoleSource, requireSelfOrAdmin, uuidFrom } from "../http/access.ts";
import { idempotencyKey, idempotencyKeySchema } from "../http/idempotency.ts";
import type { RouteDef } from "../http/router.ts";
import type { UserStore } from "../users/user-store.ts";
import { balanceJson, transactionJson } from "./present.ts";

export interface PaymentRouteDeps {
  ledger: Ledger;
  users: UserStore;
  roles: RoleSource;
  tipAmountsUsd: number[];
}

export function paymentRoutes(d: PaymentRouteDeps): RouteDef[] {
  const allowedCents = new Set(d.tipAmountsUsd.map((a) => dollarsToCents(a)!));
  const allowedText = d.tipAmountsUsd.map((a) => `${a}`).join(", ");
  const tipBody = z.strictObject({
    from_user_id: z.uuid(),
    to_creator_username: z.string().min(1).max(30),
    amount: z
      .number()
      .refine(
        (a) => allowedCents.has(dollarsToCents(a) ?? -1),
        `a tip is one of these dollar amounts: ${allowedText}`,
      ),
    idempotency_key: idempotencyKeySchema.optional(),
  });
  return [
    {
      method: "post",
      path: "/api/payments/tip",
      auth: "user",
      async handler(ctx) {
        const b = tipBody.parse(ctx.body);
        const from = b.from_user_id.toLowerCase();
        if (ctx.user!.sub !== from) throw new AppError("forbidden", "you may only tip from your own account");
        const key = idempotencyKey(ctx, b.idempotency_key);
        const creator = await d.users.creatorByUsername(b.to_creator_username);
        if (!creator)
          throw new AppError("not_found", "creator not found", {
            to_creator_username: b.to_creator_username,
          });
        const r = (await d.ledger.submit({
          kind: "tip",
          key,
          fromAccountId: from,
          toAccountId: creator.id,
          amountCents: dollarsToCents(b.amount)!,
        })) as TxResult;
        return {
          status: 201,
          body: { transaction: transactionJson(r.transaction), balance: balanceJson(r.account) },
        };
      },
    },
    {
      method: "get",
      path: "/api/payments/balance/:userId",
      auth: "user",
      async handler(ctx) {
        const id = uuidFrom(ctx, 0, "userId");
        await requireSelfOrAdmin(ctx, d.roles, id);
        return { status: 200, body: balanceJson(await d.ledger.getAccount(id)) };
      },
    },
  ];
}
