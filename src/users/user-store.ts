// Owns the users table: creating a user together with their ledger account, reading profiles,
// and the few updates the API allows. The ledger owns balances and status; this owns identity.
import type pg from "pg";
import { withClient } from "../db/pool.ts";
import { AppError } from "../errors.ts";

export type Role = "viewer" | "creator" | "admin";

export interface UserRow {
  id: string;
  email: string;
  username: string;
  display_name: string;
  bio: string | null;
  avatar_url: string | null;
  role: Role;
  status: "active" | "suspended";
  password_hash: string | null;
  created_at: Date;
}

const COLUMNS = "id, email, username, display_name, bio, avatar_url, role, status, password_hash, created_at";

export class UserStore {
  /** username (lower case) -> id and role, for the tip path; bounded, creators only. */
  private readonly creators = new Map<string, { id: string; role: Role }>();
  private readonly creatorLookups = new Map<string, Promise<{ id: string; role: Role } | null>>();
  /** Told once a user's display name changed in Postgres (the live feed forgets the old one). */
  onRenamed: ((id: string) => void) | null = null;

  constructor(private readonly pool: pg.Pool) {}

  /** Inserts the user and their ledger account in one transaction. */
  async create(u: {
    id: string;
    email: string;
    username: string;
    displayName: string;
    role: Role;
    passwordHash: string | null;
  }): Promise<UserRow> {
    return withClient(this.pool, async (client) => {
      await client.query("BEGIN");
      try {
        const r = await client.query<UserRow>(
          `INSERT INTO users (id, email, username, display_name, role, password_hash)
           VALUES ($1, $2, $3, $4, $5, $6) RETURNING ${COLUMNS}`,
          [u.id, u.email, u.username, u.displayName, u.role, u.passwordHash],
        );
        await client.query("INSERT INTO ledger (id, user_id, kind) VALUES ($1, $1, 'user')", [u.id]);
        await client.query("COMMIT");
        return r.rows[0]!;
      } catch (err) {
        await client.query("ROLLBACK").catch(() => {});
        throw duplicateToAppError(err);
      }
    });
  }

  async byId(id: string): Promise<UserRow | null> {
    const r = await this.pool.query<UserRow>(`SELECT ${COLUMNS} FROM users WHERE id = $1`, [id]);
    return r.rows[0] ?? null;
  }

  async byEmail(email: string): Promise<UserRow | null> {
    const r = await this.pool.query<UserRow>(`SELECT ${COLUMNS} FROM users WHERE lower(email) = lower($1)`, [
      email,
    ]);
    return r.rows[0] ?? null;
  }

  async byUsername(username: string): Promise<UserRow | null> {
    const r = await this.pool.query<UserRow>(
      `SELECT ${COLUMNS} FROM users WHERE lower(username) = lower($1)`,
      [username],
    );
    return r.rows[0] ?? null;
  }

  /** The creator a tip names, from memory when seen before (creators never stop being creators). */
  async creatorByUsername(username: string): Promise<{ id: string } | null> {
    const k = username.toLowerCase();
    const hit = this.creators.get(k);
    if (hit) return hit;
    // A live stream's first second brings many tips to one creator: one query serves them all.
    const pending = this.creatorLookups.get(k);
    if (pending) return pending;
    const lookup = this.byUsername(username).then((row) => {
      if (row?.role !== "creator") return null;
      if (this.creators.size >= 100_000) this.creators.delete(this.creators.keys().next().value!);
      const v = { id: row.id, role: row.role };
      this.creators.set(k, v);
      return v;
    });
    this.creatorLookups.set(k, lookup);
    try {
      return await lookup;
    } finally {
      this.creatorLookups.delete(k);
    }
  }

  async setRole(id: string, role: Role): Promise<UserRow | null> {
    const r = await this.pool.query<UserRow>(
      `UPDATE users SET role = $2, updated_at = now() WHERE id = $1 RETURNING ${COLUMNS}`,
      [id, role],
    );
    return r.rows[0] ?? null;
  }

  async setRoleByEmail(email: string, role: Role): Promise<UserRow | null> {
    const r = await this.pool.query<UserRow>(
      `UPDATE users SET role = $2, updated_at = now() WHERE lower(email) = lower($1) RETURNING ${COLUMNS}`,
      [email, role],
    );
    return r.rows[0] ?? null;
  }

  async updateProfile(
    id: string,
    p: {
      display_name?: string | undefined;
      bio?: string | null | undefined;
      avatar_url?: string | null | undefined;
    },
  ): Promise<UserRow | null> {
    const sets: string[] = [];
    const values: unknown[] = [id];
    for (const [k, v] of Object.entries(p)) {
      if (v === undefined) continue;
      values.push(v);
      sets.push(`${k} = $${values.length}`);
    }
    if (sets.length === 0) return this.byId(id);
    const r = await this.pool.query<UserRow>(
      `UPDATE users SET ${sets.join(", ")}, updated_at = now() WHERE id = $1 RETURNING ${COLUMNS}`,
      values,
    );
    if (p.display_name !== undefined) this.onRenamed?.(id);
    return r.rows[0] ?? null;
  }
}

function duplicateToAppError(err: unknown): unknown {
  const e = err as { code?: string; constraint?: string };
  if (e.code !== "23505") return err;
  if (e.constraint === "users_email_key")
    return new AppError("email_taken", "this email is already registered");
  if (e.constraint === "users_username_key") return new AppError("username_taken", "this username is taken");
  return new AppError("conflict", "this user already exists");
}
