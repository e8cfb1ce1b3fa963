// Owns authorization rules shared by routes: a user acts on their own resources; an admin
// (role in our users table, never in the token) may act on anyone's.
import { z } from "zod";
import { AppError } from "../errors.ts";
import type { RouteContext } from "./router.ts";

/** What the rules need to know about a user: their role and status as our users table has them. */
export interface RoleSource {
  byId(userId: string): Promise<{ role: string; status: string } | null>;
}

export const uuidParam = (name: string) => z.uuid({ message: `${name} must be a UUID` });

/** Parses a path parameter as a UUID: 400 validation_error otherwise. */
export function uuidFrom(ctx: RouteContext, index: number, name: string): string {
  const parsed = uuidParam(name).safeParse(ctx.req.params[index]);
  if (!parsed.success) {
    throw new AppError("validation_error", `${name} must be a UUID`, [
      { path: [name], message: "must be a UUID" },
    ]);
  }
  return parsed.data.toLowerCase();
}

export async function isAdmin(users: RoleSource, userId: string): Promise<boolean> {
  const u = await users.byId(userId);
  return u?.role === "admin" && u.status === "active";
}

export async function requireAdmin(ctx: RouteContext, users: RoleSource): Promise<void> {
  if (!ctx.user || !(await isAdmin(users, ctx.user.sub))) throw new AppError("forbidden", "admins only");
}

export async function requireSelfOrAdmin(
  ctx: RouteContext,
  users: RoleSource,
  userId: string,
): Promise<void> {
  if (ctx.user?.sub === userId) return;
  if (ctx.user && (await isAdmin(users, ctx.user.sub))) return;
  throw new AppError("forbidden", "you may only act on your own account");
}
