// Owns overlay keys: the read-only secret a creator puts into OBS. One per creator; only its
// SHA-256 is stored, and a new key replaces (and so invalidates) the old one.
import { createHash, randomBytes } from "node:crypto";
import type pg from "pg";

const hashOf = (key: string): string => createHash("sha256").update(key).digest("hex");

export class OverlayKeys {
  constructor(private readonly pool: pg.Pool) {}

  /** A new key for the creator; the previous one stops working at once. */
  async create(userId: string): Promise<string> {
    const key = `ovl_${randomBytes(24).toString("base64url")}`;
    await this.pool.query(
      `INSERT INTO overlay_keys (user_id, key_hash) VALUES ($1, $2)
       ON CONFLICT (user_id) DO UPDATE SET key_hash = EXCLUDED.key_hash, created_at = now()`,
      [userId, hashOf(key)],
    );
    return key;
  }

  /** The creator a key belongs to, or null. */
  async resolve(key: string): Promise<{ userId: string; username: string } | null> {
    if (key.length === 0 || key.length > 200) return null;
    const r = await this.pool.query<{ user_id: string; username: string }>(
      `SELECT k.user_id, u.username FROM overlay_keys k JOIN users u ON u.id = k.user_id
        WHERE k.key_hash = $1 AND u.role = 'creator'`,
      [hashOf(key)],
    );
    const row = r.rows[0];
    return row ? { userId: row.user_id, username: row.username } : null;
  }
}
