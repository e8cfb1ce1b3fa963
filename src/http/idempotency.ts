// Owns the idempotency key as the API accepts it: one schema for the body field of every
// mutating route and for the Idempotency-Key header, and the rule joining the two.
import { randomUUID } from "node:crypto";
import { z } from "zod";
import { AppError } from "../errors.ts";
import type { RouteContext } from "./router.ts";

/** 1 to 255 characters, the same bound as Stripe's Idempotency-Key. */
export const idempotencyKeySchema = z.string().min(1).max(255);

/** The Idempotency-Key header or body field; one is generated (and returned) when neither is sent. */
export function idempotencyKey(ctx: RouteContext, fromBody: string | undefined): string {
  const header = ctx.req.headers.get("idempotency-key");
  if (header !== undefined && !idempotencyKeySchema.safeParse(header).success) {
    throw new AppError("validation_error", "Idempotency-Key must be 1 to 255 characters");
  }
  if (header !== undefined && fromBody !== undefined && header !== fromBody) {
    throw new AppError("validation_error", "Idempotency-Key header and idempotency_key field differ");
  }
  const key = header ?? fromBody ?? randomUUID();
  ctx.headers.push(["Idempotency-Key", key]);
  return key;
}
