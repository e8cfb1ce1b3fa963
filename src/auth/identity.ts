// Owns where identities live. Without Supabase configured, we are the identity provider
// (scrypt password hashes in our users table, our own tokens). With SUPABASE_URL and
// SUPABASE_SERVICE_KEY, registration creates the user in Supabase Auth through the official
// client (auth.admin.createUser), and logging in is the client's business with Supabase; our
// API accepts the tokens Supabase issues.
import { randomUUID } from "node:crypto";
import { createClient, type SupabaseClient } from "@supabase/supabase-js";
import ws from "ws";
import { AppError } from "../errors.ts";
import type { PasswordHasher } from "./passwords.ts";

export interface NewIdentity {
  id: string;
  passwordHash: string | null;
}

export interface IdentityProvider {
  readonly kind: "local" | "supabase";
  create(email: string, password: string, meta: Record<string, unknown>): Promise<NewIdentity>;
  /** Checks a password against what registration stored; only the local provider can. */
  verify(password: string, stored: string | null): Promise<boolean>;
}

export class LocalIdentity implements IdentityProvider {
  readonly kind = "local" as const;
  constructor(private readonly hasher: PasswordHasher) {}

  async create(_email: string, password: string): Promise<NewIdentity> {
    return { id: randomUUID(), passwordHash: await this.hasher.hash(password) };
  }

  async verify(password: string, stored: string | null): Promise<boolean> {
    if (!stored) return false;
    return this.hasher.verify(password, stored);
  }
}

export class SupabaseIdentity implements IdentityProvider {
  readonly kind = "supabase" as const;
  private readonly client: SupabaseClient;

  constructor(url: string, serviceKey: string) {
    this.client = createClient(url, serviceKey, {
      auth: { autoRefreshToken: false, persistSession: false },
      // supabase-js builds a realtime client eagerly, and Node 20 has no global WebSocket.
      realtime: { transport: ws as never },
    });
  }

  async create(email: string, password: string, meta: Record<string, unknown>): Promise<NewIdentity> {
    const { data, error } = await this.client.auth.admin.createUser({
      email,
      password,
      email_confirm: true,
      user_metadata: meta,
    });
    if (error || !data.user) {
      const status = (error as { status?: number } | null)?.status;
      if (status === 422 || /already/i.test(error?.message ?? "")) {
        throw new AppError("email_taken", "this email is already registered");
      }
      throw new AppError("unavailable", "Supabase Auth did not create the user; retry shortly", {
        supabase: error?.message,
      });
    }
    return { id: data.user.id, passwordHash: null };
  }

  async verify(): Promise<boolean> {
    throw new AppError(
      "forbidden",
      "this deployment uses Supabase Auth: log in with Supabase and send its access token",
    );
  }
}
