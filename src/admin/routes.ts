// Owns the admin endpoints: suspend and reinstate a user (through the ledger, so the fraud rules
// see it at once) and read the fraud log with filters.
import type pg from "pg";
import { z } from "zod";
import { AppError } from "../errors.ts";
import type { Ledger } from "../shards/ledger.ts";
import { FRAUD_RULES, SEVERITIES, type StatusResult } from "../ledger/types.ts";
import { type RoleSource, requireAdmin, uuidFrom } from "../http/access.ts";
import { centsToDollars } from "../ledger/money.ts";
import { idempotencyKey, idempotencyKeySchema } from "../http/idempotency.ts";
import type { RouteDef } from "../http/router.ts";
import type { UserStore } from "../users/user-store.ts";

export interface AdminRouteDeps {
  ledger: Ledger;
  users: UserStore;
  roles: RoleSource;
  pool: pg.Pool;
}

const statusBody = z.strictObject({
  reason: z.string().max(500).optional(),
  idempotency_key: idempotencyKeySchema.optional(),
});

const fraudQuery = z.strictObject({
  user_id: z.uuid().optional(),
  rule: z.enum(FRAUD_RULES).optional(),
  severity: z.enum(SEVERITIES).optional(),
  // Year 0 and beyond 9999 parse as ISO but not as a Postgres timestamp (22008).
  since: z.iso
    .datetime({ offset: true })
    .refine((t) => {
      const year = new Date(t).getUTCFullYear();
      return year >= 1 && year <= 9999;
    }, "since must be a time between the years 1 and 9999")
    .optional(),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
});

export function adminRoutes(d: AdminRouteDeps): RouteDef[] {
  const setStatus = (status: "active" | "suspended"): RouteDef => ({
    method: "post",
    path: `/api/admin/users/:userId/${status === "active" ? "unsuspend" : "suspend"}`,
    auth: "user",
    doc: {
      summary: status === "active" ? "Reinstate a user (admin)" : "Suspend a user (admin)",
      body: statusBody,
      response: { status: 200, description: "the user's id and status" },
      idempotency: "optional",
      admin: true,
    },
    async handler(ctx) {
      await requireAdmin(ctx, d.roles);
      const id = uuidFrom(ctx, 0, "userId");
      const b = statusBody.parse(ctx.body);
      const key = idempotencyKey(ctx, b.idempotency_key);
      const user = await d.users.byId(id);
      if (!user) throw new AppError("not_found", "user not found");
      const r = (await d.ledger.submit({
        kind: "set_status",
        key,
        accountId: id,
        status,
        reason: b.reason,
      })) as StatusResult;
      return { status: 200, body: { user_id: id, status: r.account.status } };
    },
  });
  return [
    setStatus("suspended"),
    setStatus("active"),
    {
      method: "get",
      path: "/api/admin/fraud-logs",
      auth: "user",
      doc: {
        summary: "Fraud logs, newest first (admin)",
        query: fraudQuery,
        response: { status: 200, description: "fraud log rows" },
        admin: true,
      },
      async handler(ctx) {
        await requireAdmin(ctx, d.roles);
        const q = fraudQuery.parse(Object.fromEntries(ctx.req.query));
        const where: string[] = [];
        const args: unknown[] = [];
        const add = (sql: string, v: unknown) => {
          args.push(v);
          where.push(sql.replace("?", `$${args.length}`));
        };
        if (q.user_id) add("user_id = ?", q.user_id);
        if (q.rule) add("rule = ?", q.rule);
        if (q.severity) add("severity = ?", q.severity);
        if (q.since) add("created_at >= ?", q.since);
        args.push(q.limit);
        const r = await d.pool.query<{
          id: string;
          user_id: string;
          rule: string;
          severity: string;
          amount_cents: number | null;
          action: string;
          context: Record<string, unknown>;
          created_at: Date;
        }>(
          `SELECT id, user_id, rule, severity, amount_cents, action, context, created_at FROM fraud_logs
            ${where.length ? `WHERE ${where.join(" AND ")}` : ""} ORDER BY created_at DESC, id LIMIT $${args.length}`,
          args,
        );
        return {
          status: 200,
          body: {
            fraud_logs: r.rows.map((x) => ({
              id: x.id,
              user_id: x.user_id,
              rule: x.rule,
              severity: x.severity,
              amount: x.amount_cents === null ? null : centsToDollars(x.amount_cents),
              action: x.action,
              context: x.context,
              created_at: x.created_at.toISOString(),
            })),
          },
        };
      },
    },
  ];
}
