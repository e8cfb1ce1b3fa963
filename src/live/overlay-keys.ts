// Owns overlay keys: the read-only secret a creator puts into OBS. One per creator; only its
// SHA-256 is stored, and a new key replaces (and so invalidates) the old one.
import { createHash, randomBytes } from "node:crypto";
import type pg from "pg";

const hashOf = (key: string): string => createHash("sha256").update(key).digest("hex");

type Owner = { userId: string; username: string } | null;

export class OverlayKeys {
  /** Lookups on their way to Postgres, by key hash: a stream's start opens many overlay sockets
   * with one key at once (every browser source, every reconnect after a deploy), and they share
   * one query instead of queueing a thousand on the pool. */
  private readonly inFlight = new Map<string, Promise<Owner>>();

  constructor(private readonly pool: pg.Pool) {}

  /** A new key for the creator; the previous one stops working at once. */
  async create(userId: string): Promise<string> {
    const key = `ovl_${randomBytes(24).toString("base64url")}`;
    await this.pool.query(
      `INSERT INTO overlay_keys (user_id, key_hash) VALUES ($1, $2)
       ON CONFLICT (user_id) DO UPDATE SET key_hash = EXCLUDED.key_hash, created_at = now()`,
      [userId, hashOf(key)],
    );
    // A lookup that starts from now on must see the new key, not join one begun before it.
    this.inFlight.clear();
    return key;
  }

  /** The creator a key belongs to, or null. */
  resolve(key: string): Promise<Owner> {
    if (key.length === 0 || key.length > 200) return Promise.resolve(null);
    const hash = hashOf(key);
    const pending = this.inFlight.get(hash);
    if (pending) return pending;
    const lookup = this.lookup(hash).finally(() => {
      if (this.inFlight.get(hash) === lookup) this.inFlight.delete(hash);
    });
    this.inFlight.set(hash, lookup);
    return lookup;
  }

  private async lookup(hash: string): Promise<Owner> {
    const r = await this.pool.query<{ user_id: string; username: string }>(
      `SELECT k.user_id, u.username FROM overlay_keys k JOIN users u ON u.id = k.user_id
        WHERE k.key_hash = $1 AND u.role = 'creator'`,
      [hash],
    );
    const row = r.rows[0];
    return row ? { userId: row.user_id, username: row.username } : null;
  }
}
