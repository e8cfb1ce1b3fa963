// Owns the Postgres side of money out that is not the ledger's: creators' payout methods (the
// provider's recipient id and the last four digits, never the account number) and reads of the
// payouts table, which only the persister writes (from the ledger's WAL).
import type pg from "pg";
import { type PayoutRow, payoutFromRow } from "../persist/account-store.ts";
import type { PayoutRecord, PayoutStatus } from "../ledger/types.ts";
import type { PayoutProviderName } from "./provider.ts";

export interface PayoutMethod {
  userId: string;
  provider: PayoutProviderName;
  providerRecipientId: string;
  accountHolderName: string;
  country: string;
  currency: string;
  accountLast4: string;
  createdAt: string;
  updatedAt: string;
}

interface MethodRow {
  user_id: string;
  provider: PayoutProviderName;
  provider_recipient_id: string;
  account_holder_name: string;
  country: string;
  currency: string;
  account_last4: string;
  created_at: Date;
  updated_at: Date;
}

const methodFromRow = (r: MethodRow): PayoutMethod => ({
  userId: r.user_id,
  provider: r.provider,
  providerRecipientId: r.provider_recipient_id,
  accountHolderName: r.account_holder_name,
  country: r.country,
  currency: r.currency,
  accountLast4: r.account_last4,
  createdAt: r.created_at.toISOString(),
  updatedAt: r.updated_at.toISOString(),
});

const PAYOUT_COLUMNS = `id, user_id, amount_cents, provider, provider_recipient_id, provider_transfer_id, status,
  failure_reason, attempts, round, seq, return_transaction_id, created_at, updated_at, paid_at`;

export class PayoutStore {
  constructor(private readonly pool: pg.Pool) {}

  async method(userId: string): Promise<PayoutMethod | null> {
    const r = await this.pool.query<MethodRow>("SELECT * FROM payout_methods WHERE user_id = $1", [userId]);
    return r.rows[0] ? methodFromRow(r.rows[0]) : null;
  }

  /** One method per user: a new one replaces the old (created_at stays the first one's). */
  async saveMethod(m: Omit<PayoutMethod, "createdAt" | "updatedAt">): Promise<PayoutMethod> {
    const r = await this.pool.query<MethodRow>(
      `INSERT INTO payout_methods (user_id, provider, provider_recipient_id, account_holder_name, country, currency,
          account_last4)
       VALUES ($1, $2, $3, $4, $5, $6, $7)
       ON CONFLICT (user_id) DO UPDATE SET provider = EXCLUDED.provider,
          provider_recipient_id = EXCLUDED.provider_recipient_id, account_holder_name = EXCLUDED.account_holder_name,
          country = EXCLUDED.country, currency = EXCLUDED.currency, account_last4 = EXCLUDED.account_last4,
          updated_at = now()
       RETURNING *`,
      [
        m.userId,
        m.provider,
        m.providerRecipientId,
        m.accountHolderName,
        m.country,
        m.currency,
        m.accountLast4,
      ],
    );
    return methodFromRow(r.rows[0]!);
  }

  /** Whose payout this is, if Postgres has it yet. */
  async ownerOf(payoutId: string): Promise<string | null> {
    const r = await this.pool.query<{ user_id: string }>("SELECT user_id FROM payouts WHERE id = $1", [
      payoutId,
    ]);
    return r.rows[0]?.user_id ?? null;
  }

  async listByUser(userId: string, limit: number): Promise<PayoutRecord[]> {
    const r = await this.pool.query<PayoutRow>(
      `SELECT ${PAYOUT_COLUMNS} FROM payouts WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2`,
      [userId, limit],
    );
    return r.rows.map(payoutFromRow);
  }

  async listByStatus(status: PayoutStatus | null, limit: number): Promise<PayoutRecord[]> {
    const r = await this.pool.query<PayoutRow>(
      `SELECT ${PAYOUT_COLUMNS} FROM payouts ${status ? "WHERE status = $2" : ""}
        ORDER BY created_at DESC, id DESC LIMIT $1`,
      status ? [limit, status] : [limit],
    );
    return r.rows.map(payoutFromRow);
  }
}
