// Owns the idempotency key as the API accepts it: one schema for the body field of every
// mutating route and for the Idempotency-Key header, and the rule joining the two.
import { randomUUID } from "node:crypto";
import { z } from "zod";
import { AppError } from "../errors.ts";
import type { RouteContext } from "./router.ts";

/**
 * 1 to 255 visible ASCII characters (0x21-0x7E), Stripe's bound. The key is echoed in the
 * Idempotency-Key response header and passed on inside Stripe's, so nothing else may reach them:
 * a CR or LF would let a client write headers of its own.
 */
export const IDEMPOTENCY_KEY_RULE = "1 to 255 visible ASCII characters (no spaces or control characters)";
export const idempotencyKeySchema = z
  .string()
  .regex(/^[\x21-\x7e]{1,255}$/, `an idempotency key is ${IDEMPOTENCY_KEY_RULE}`);

/** The Idempotency-Key header or body field; one is generated (and returned) when neither is sent. */
export function idempotencyKey(ctx: RouteContext, fromBody: string | undefined): string {
  const header = ctx.req.headers.get("idempotency-key");
  if (header !== undefined && !idempotencyKeySchema.safeParse(header).success) {
    throw new AppError("validation_error", `Idempotency-Key must be ${IDEMPOTENCY_KEY_RULE}`);
  }
  if (header !== undefined && fromBody !== undefined && header !== fromBody) {
    throw new AppError("validation_error", "Idempotency-Key header and idempotency_key field differ");
  }
  const key = header ?? fromBody ?? randomUUID();
  ctx.headers.push(["Idempotency-Key", key]);
  return key;
}
