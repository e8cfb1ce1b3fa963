// Owns the users endpoints of the seed brief: register, login, public profile, upgrade to
// creator, profile update.
import { z } from "zod";
import type { IdentityProvider } from "../auth/identity.ts";
import { checkPasswordPolicy } from "../auth/passwords.ts";
import type { TokenService } from "../auth/tokens.ts";
import { AppError } from "../errors.ts";
import type { Ledger } from "../shards/ledger.ts";
import { requireSelfOrAdmin, uuidFrom } from "../http/access.ts";
import type { RouteDef } from "../http/router.ts";
import { publicUserJson, userJson } from "./present.ts";
import type { Roles } from "./roles.ts";
import type { UserRow, UserStore } from "./user-store.ts";

const registerBody = z.strictObject({
  email: z.email().max(254),
  username: z.string().regex(/^[A-Za-z0-9_]{3,30}$/, "3 to 30 letters, digits or underscores"),
  display_name: z.string().trim().min(1).max(80),
  password: z.string().max(128),
  role: z.enum(["viewer", "creator"]).optional(),
});

const loginBody = z.strictObject({ email: z.email().max(254), password: z.string().min(1).max(128) });

const updateBody = z
  .strictObject({
    display_name: z.string().trim().min(1).max(80).optional(),
    bio: z.string().max(1000).nullable().optional(),
    avatar_url: z
      .url({ protocol: /^https?$/ })
      .max(2048)
      .nullable()
      .optional(),
  })
  .refine((b) => Object.keys(b).length > 0, "give at least one of display_name, bio, avatar_url");

export interface UserRouteDeps {
  users: UserStore;
  identity: IdentityProvider;
  tokens: TokenService;
  ledger: Ledger;
  roles: Roles;
  /** Told of every new user once it is stored (the welcome email). */
  onRegistered?: (user: UserRow) => void;
}

export function userRoutes(d: UserRouteDeps): RouteDef[] {
  /** The live status comes from the ledger (users.status follows it asynchronously). */
  const status = (u: UserRow) => d.roles.status(u.id, u.status);
  return [
    {
      method: "post",
      path: "/api/users/register",
      auth: "none",
      doc: {
        summary: "Register a viewer or creator",
        body: registerBody,
        response: { status: 201, description: "the user and a session" },
        errors: ["email_taken", "username_taken"],
      },
      limit: "auth",
      async handler(ctx) {
        const b = registerBody.parse(ctx.body);
        checkPasswordPolicy(b.password);
        const email = b.email.toLowerCase();
        if (await d.users.byEmail(email))
          throw new AppError("email_taken", "this email is already registered");
        if (await d.users.byUsername(b.username))
          throw new AppError("username_taken", "this username is taken");
        const identity = await d.identity.create(email, b.password, { username: b.username });
        const user = await d.users.create({
          id: identity.id,
          email,
          username: b.username,
          displayName: b.display_name,
          role: b.role ?? "viewer",
          passwordHash: identity.passwordHash,
        });
        d.onRegistered?.(user);
        return { status: 201, body: { user: userJson(user), session: await d.tokens.issue(user) } };
      },
    },
    {
      method: "post",
      path: "/api/users/login",
      auth: "none",
      doc: {
        summary: "Log in with email and password",
        body: loginBody,
        response: { status: 200, description: "the user and a session" },
      },
      limit: "auth",
      async handler(ctx) {
        const b = loginBody.parse(ctx.body);
        const user = await d.users.byEmail(b.email);
        // Same answer for an unknown email and a wrong password: no account probing.
        const ok = user ? await d.identity.verify(b.password, user.password_hash) : false;
        if (!user || !ok) throw new AppError("unauthorized", "email or password is wrong");
        return {
          status: 200,
          body: { user: userJson(user, await status(user)), session: await d.tokens.issue(user) },
        };
      },
    },
    {
      method: "get",
      path: "/api/users/:username",
      auth: "none",
      doc: {
        summary: "A user's public profile",
        response: { status: 200, description: "the public profile (no email)" },
      },
      async handler(ctx) {
        const username = ctx.req.params[0] ?? "";
        if (!/^[A-Za-z0-9_]{3,30}$/.test(username)) throw new AppError("not_found", "user not found");
        const user = await d.users.byUsername(username);
        if (!user) throw new AppError("not_found", "user not found");
        return { status: 200, body: { user: publicUserJson(user, await status(user)) } };
      },
    },
    {
      method: "post",
      path: "/api/users/:userId/upgrade",
      auth: "user",
      doc: {
        summary: "Upgrade a viewer to creator (owner or admin)",
        response: { status: 200, description: "the user" },
        errors: ["conflict", "account_suspended"],
      },
      async handler(ctx) {
        const id = uuidFrom(ctx, 0, "userId");
        await requireSelfOrAdmin(ctx, d.roles, id);
        const user = await d.users.byId(id);
        if (!user) throw new AppError("not_found", "user not found");
        if (user.role === "admin") throw new AppError("conflict", "admins are not upgraded to creators");
        if ((await status(user)) === "suspended") {
          throw new AppError("account_suspended", "a suspended account cannot become a creator");
        }
        // Upgrading a creator again changes nothing and answers the same: idempotent.
        const updated = user.role === "creator" ? user : await d.users.setRole(id, "creator");
        return { status: 200, body: { user: userJson(updated!, await status(updated!)) } };
      },
    },
    {
      method: "put",
      path: "/api/users/:userId",
      auth: "user",
      doc: {
        summary: "Update a profile (owner or admin)",
        body: updateBody,
        response: { status: 200, description: "the user" },
      },
      async handler(ctx) {
        const id = uuidFrom(ctx, 0, "userId");
        await requireSelfOrAdmin(ctx, d.roles, id);
        const b = updateBody.parse(ctx.body);
        const updated = await d.users.updateProfile(id, b);
        if (!updated) throw new AppError("not_found", "user not found");
        return { status: 200, body: { user: userJson(updated, await status(updated)) } };
      },
    },
  ];
}
