// Owns what authorization asks of a user: the role from our users table, and the status from the
// ledger, which decides suspensions (users.status follows it asynchronously, through the
// persister). A suspension therefore takes effect on every route the moment the ledger has it.
import { AppError } from "../errors.ts";
import type { RoleSource } from "../http/access.ts";
import type { Ledger } from "../shards/ledger.ts";
import type { UserStore } from "./user-store.ts";

export class Roles implements RoleSource {
  constructor(
    private readonly users: UserStore,
    private readonly ledger: Ledger,
  ) {}

  async byId(userId: string): Promise<{ role: string; status: string } | null> {
    const u = await this.users.byId(userId);
    if (!u) return null;
    return { role: u.role, status: await this.status(userId, u.status) };
  }

  /** The ledger's status of a user; `fallback` (the users row's) only when it has no account. */
  async status(userId: string, fallback: string): Promise<string> {
    try {
      return (await this.ledger.getAccount(userId)).status;
    } catch (err) {
      if (err instanceof AppError && err.code === "not_found") return fallback;
      throw err;
    }
  }
}
