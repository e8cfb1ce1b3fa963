// Owns the tipping and balance endpoints: HTTP in, a ledger command out. The ledger decides
// (balance, fraud rules, idempotency); this checks who may ask and what they sent.
import { z } from "zod";
import { AppError } from "../errors.ts";
import type { Ledger } from "../shards/ledger.ts";
import { type RoleSource, requireSelfOrAdmin, uuidFrom } from "../http/access.ts";
import { idempotencyKey, idempotencyKeySchema } from "../http/idempotency.ts";
import type { RouteDef } from "../http/router.ts";
import type { UserStore } from "../users/user-store.ts";
import { balanceJson } from "./present.ts";
import { TipDesk, tipFields } from "./tip.ts";

export interface PaymentRouteDeps {
  ledger: Ledger;
  users: UserStore;
  roles: RoleSource;
  tipAmountsUsd: number[];
  superlikeAmountsUsd: number[];
}

export function paymentRoutes(d: PaymentRouteDeps): RouteDef[] {
  const desk = new TipDesk(d);
  const fields = tipFields(d);
  const tipBody = z
    .strictObject({
      from_user_id: z.uuid(),
      ...fields.shape,
      idempotency_key: idempotencyKeySchema.optional(),
    })
    .superRefine(fields.refine);
  return [
    {
      method: "post",
      path: "/api/payments/tip",
      auth: "user",
      doc: {
        summary: "Tip a creator",
        description:
          "Fees: 3% platform (1% of it to charity), 97% to the creator. Also over the WebSocket (op tip).",
        body: tipBody,
        response: { status: 201, description: "the transaction and the sender's balance, once durable" },
        errors: ["insufficient_funds", "fraud_blocked", "idempotency_conflict"],
        idempotency: "optional",
      },
      async handler(ctx) {
        const b = tipBody.parse(ctx.body);
        const from = b.from_user_id.toLowerCase();
        if (ctx.user!.sub !== from) throw new AppError("forbidden", "you may only tip from your own account");
        const key = idempotencyKey(ctx, b.idempotency_key);
        return desk.send(from, key, b);
      },
    },
    {
      method: "get",
      path: "/api/payments/balance/:userId",
      auth: "user",
      doc: { summary: "A balance (owner or admin)", response: { status: 200, description: "the balance" } },
      async handler(ctx) {
        const id = uuidFrom(ctx, 0, "userId");
        await requireSelfOrAdmin(ctx, d.roles, id);
        return { status: 200, body: balanceJson(await d.ledger.getAccount(id)) };
      },
    },
  ];
}
