// Owns reading ledger state back from Postgres: accounts with what the shard needs to decide
// (velocity window, idempotency keys within their TTL, pending payouts), system accounts, and
// durable idempotency-key lookups. Writes go through the persister only.
import type pg from "pg";
import { SYSTEM_ACCOUNT_KINDS, systemAccountCode, systemAccountId } from "../ledger/accounts.ts";
import type { PayoutFinish } from "../ledger/decide-payout.ts";
import { countsForVelocity, recordOutgoing, VELOCITY_WINDOW_MS } from "../ledger/fraud.ts";
import { type AccountMem, type KeyRecord, newAccountMem, viewOf } from "../ledger/state.ts";
import type {
  DirectoryEntry,
  AccountState,
  AccountStatus,
  AccountView,
  PayoutRecord,
  TransactionRecord,
  TxResult,
} from "../ledger/types.ts";
import type { AccountSource } from "../shards/ports.ts";

interface LedgerRow {
  id: string;
  kind: "user" | "system";
  balance_cents: number;
  reserved_balance_cents: number;
  debt_cents: number;
  earned_cents: number;
  status: AccountStatus;
  version: number;
  /** Only in load(): the last tip-feed number persisted for this account (null: none). */
  feed_seq?: string | null;
}

const LEDGER_COLUMNS =
  "id, kind, balance_cents, reserved_balance_cents, debt_cents, earned_cents, status, version";

const PAYOUT_COLUMNS = `id, user_id, amount_cents, provider, provider_recipient_id, provider_transfer_id, status,
  failure_reason, attempts, round, seq, return_transaction_id, created_at, updated_at, paid_at`;

export interface PayoutRow {
  id: string;
  user_id: string;
  amount_cents: number;
  provider: string | null;
  provider_recipient_id: string | null;
  provider_transfer_id: string | null;
  status: PayoutRecord["status"];
  failure_reason: string | null;
  attempts: number;
  round: number;
  seq: number;
  return_transaction_id: string | null;
  created_at: Date;
  updated_at: Date;
  paid_at: Date | null;
}

export function payoutFromRow(r: PayoutRow): PayoutRecord {
  return {
    id: r.id,
    userId: r.user_id,
    amountCents: Number(r.amount_cents),
    provider: r.provider,
    providerRecipientId: r.provider_recipient_id,
    providerTransferId: r.provider_transfer_id,
    status: r.status,
    failureReason: r.failure_reason,
    attempts: r.attempts,
    round: r.round,
    seq: r.seq,
    createdAt: r.created_at.toISOString(),
    updatedAt: r.updated_at.toISOString(),
    paidAt: r.paid_at ? r.paid_at.toISOString() : null,
    returnTxId: r.return_transaction_id,
  };
}

const TX_COLUMNS = `id, type, status, account_id, from_user_id, to_user_id, amount_cents, platform_fee_cents,
  charity_fee_cents, net_amount_cents, currency, stripe_payment_id, metadata, created_at, idempotency_key,
  request_hash, balance_after_cents, reserved_after_cents, debt_after_cents, version_after, status_after,
  earned_after_cents`;

export interface TxRow {
  id: string;
  type: TransactionRecord["type"];
  status: TransactionRecord["status"];
  account_id: string;
  from_user_id: string | null;
  to_user_id: string | null;
  amount_cents: number;
  platform_fee_cents: number;
  charity_fee_cents: number;
  net_amount_cents: number;
  currency: string;
  stripe_payment_id: string | null;
  metadata: Record<string, unknown>;
  created_at: Date;
  idempotency_key: string | null;
  request_hash: string | null;
  balance_after_cents: number | null;
  reserved_after_cents: number | null;
  debt_after_cents: number | null;
  earned_after_cents: number | null;
  version_after: number | null;
  status_after: AccountStatus | null;
}

export function txFromRow(r: TxRow): TransactionRecord {
  return {
    id: r.id,
    type: r.type,
    status: r.status,
    accountId: r.account_id,
    fromAccountId: r.from_user_id,
    toAccountId: r.to_user_id,
    amountCents: r.amount_cents,
    platformFeeCents: r.platform_fee_cents,
    charityFeeCents: r.charity_fee_cents,
    netAmountCents: r.net_amount_cents,
    currency: "USD",
    stripePaymentId: r.stripe_payment_id,
    metadata: r.metadata,
    createdAt: r.created_at.toISOString(),
  };
}

/**
 * The answer a key gave the first time: the transaction as it was decided and the deciding account
 * right after (rows written before version_after existed fall back to the account as it is now).
 */
function resultFromRow(r: TxRow, current: AccountState): TxResult {
  const account = accountAfter(current, r, r.status_after, r.version_after);
  return { transaction: asDecided(txFromRow(r)), account, replayed: false };
}

interface AfterColumns {
  balance_after_cents: number | null;
  reserved_after_cents: number | null;
  debt_after_cents: number | null;
  earned_after_cents?: number | null;
}

/** The deciding account right after a command, from what was kept of it; what was not kept
 * (rows older than sql/003) comes from the account as it is now. */
function accountAfter(
  current: AccountState,
  a: AfterColumns,
  status: AccountStatus | null | undefined,
  version: number | null | undefined,
): AccountView {
  return viewOf({
    id: current.id,
    balanceCents: a.balance_after_cents ?? current.balanceCents,
    reservedCents: a.reserved_after_cents ?? current.reservedCents,
    debtCents: a.debt_after_cents ?? current.debtCents,
    status: status ?? current.status,
    version: version ?? current.version,
    earnedCents: a.earned_after_cents ?? current.earnedCents,
  });
}

/** A payout row moves on after its reserve (posted or voided): its reserve answered it pending,
 * with the metadata the outcome had not yet added. */
function asDecided(tx: TransactionRecord): TransactionRecord {
  if (tx.type !== "payout" || tx.status === "pending") return tx;
  const { finish: _finish, void_reason: _reason, ...metadata } = tx.metadata;
  return { ...tx, status: "pending", metadata };
}

/** A payout's outcome key (post or void) is kept on the payout row, not in idempotency_key. */
function finishOf(r: TxRow): PayoutFinish | null {
  const f = r.type === "payout" ? (r.metadata?.finish as PayoutFinish | undefined) : undefined;
  return f && typeof f.key === "string" ? f : null;
}

function finishRecord(r: TxRow, f: PayoutFinish, current: AccountState): KeyRecord {
  return {
    hash: f.hash,
    atMs: Date.parse(f.at),
    result: {
      transaction: txFromRow(r),
      account: accountAfter(current, f, f.status_after, f.version_after),
      replayed: false,
    },
  };
}

const stateFromRow = (r: LedgerRow): AccountState => ({
  id: r.id,
  balanceCents: r.balance_cents,
  reservedCents: r.reserved_balance_cents,
  debtCents: r.debt_cents,
  status: r.status,
  version: r.version,
  earnedCents: r.earned_cents,
});

/** A user's names as the live feed shows a tip's sender. */
export interface UserNames {
  id: string;
  username: string;
  displayName: string;
}

export class AccountStore implements AccountSource {
  /**
   * Told the names of the user accounts each load read (`readAtMs`: when the read began), so the
   * live feed knows a tip's sender without asking Postgres again: an account is loaded on its
   * first command, before its first tip.
   */
  onNames: ((names: UserNames[], readAtMs: number) => void) | null = null;

  constructor(private readonly pool: pg.Pool) {}

  /** Creates the per-shard system accounts that do not exist yet. */
  async ensureSystemAccounts(shards: number): Promise<void> {
    const ids: string[] = [];
    const codes: string[] = [];
    for (let s = 0; s < shards; s++) {
      for (const kind of SYSTEM_ACCOUNT_KINDS) {
        ids.push(systemAccountId(kind, s));
        codes.push(systemAccountCode(kind, s));
      }
    }
    // Only the missing ones are inserted: an INSERT that meets an existing row waits for any
    // transaction updating it, and a stalled previous owner's persister may hold exactly those
    // rows; a new owner must not hang at start behind it (a plain read never waits).
    const existing = await this.pool.query<{ id: string }>(
      "SELECT id FROM ledger WHERE id = ANY($1::uuid[])",
      [ids],
    );
    const have = new Set(existing.rows.map((r) => r.id));
    const missing = ids.map((id, i) => ({ id, code: codes[i]! })).filter((x) => !have.has(x.id));
    if (missing.length === 0) return;
    await this.pool.query(
      `INSERT INTO ledger (id, kind, code) SELECT id, 'system', code FROM unnest($1::uuid[], $2::text[]) AS t(id, code)
       ON CONFLICT (id) DO NOTHING`,
      [missing.map((x) => x.id), missing.map((x) => x.code)],
    );
  }

  /** Kind, status and version of accounts by id (ids that do not exist are absent). */
  async directory(ids: string[]): Promise<Map<string, DirectoryEntry>> {
    const out = new Map<string, DirectoryEntry>();
    if (ids.length === 0) return out;
    const r = await this.pool.query<{
      id: string;
      kind: "user" | "system";
      status: AccountStatus;
      version: string;
    }>("SELECT id, kind, status, version FROM ledger WHERE id = ANY($1::uuid[])", [ids]);
    for (const x of r.rows) out.set(x.id, { kind: x.kind, status: x.status, version: Number(x.version) });
    return out;
  }

  /** Loads accounts by id; ids that do not exist are absent from the result. */
  async load(ids: string[], nowMs: number, idempotencyTtlMs: number): Promise<Map<string, AccountMem>> {
    const out = new Map<string, AccountMem>();
    if (ids.length === 0) return out;
    const accounts = await this.pool.query<LedgerRow>(
      `SELECT ${LEDGER_COLUMNS},
              (SELECT max(f.seq) FROM tip_feed f WHERE f.creator_id = ledger.id) AS feed_seq
         FROM ledger WHERE id = ANY($1::uuid[])`,
      [ids],
    );
    const userIds: string[] = [];
    for (const r of accounts.rows) {
      out.set(r.id, newAccountMem(stateFromRow(r), r.kind === "system", Number(r.feed_seq ?? 0)));
      if (r.kind === "user") userIds.push(r.id);
    }
    if (userIds.length === 0) return out;
    const since = new Date(nowMs - Math.max(idempotencyTtlMs, VELOCITY_WINDOW_MS));
    const namesReadAt = Date.now();
    const [txs, statuses, payouts, names] = await Promise.all([
      this.pool.query<TxRow>(
        `SELECT ${TX_COLUMNS} FROM transactions
          WHERE account_id = ANY($1::uuid[]) AND (created_at > $2 OR (type = 'payout' AND status = 'pending'))
          ORDER BY created_at`,
        [userIds, since],
      ),
      this.pool.query<{
        account_id: string;
        idempotency_key: string;
        request_hash: string;
        created_at: Date;
        status: AccountStatus;
        version: number;
        balance_after_cents: number | null;
        reserved_after_cents: number | null;
        debt_after_cents: number | null;
        earned_after_cents: number | null;
      }>(
        `SELECT account_id, idempotency_key, request_hash, created_at, status, version, balance_after_cents,
                reserved_after_cents, debt_after_cents, earned_after_cents
           FROM account_status_changes
          WHERE account_id = ANY($1::uuid[]) AND created_at > $2`,
        [userIds, new Date(nowMs - idempotencyTtlMs)],
      ),
      // Open payouts (their outcomes are still to come) and recent ones; an older one is read on
      // demand when an outcome names it (findPayout).
      this.pool.query<PayoutRow>(
        `SELECT ${PAYOUT_COLUMNS} FROM payouts
          WHERE user_id = ANY($1::uuid[]) AND (status IN ('pending', 'processing') OR updated_at > $2)`,
        [userIds, since],
      ),
      this.onNames
        ? this.pool.query<{ id: string; username: string; display_name: string }>(
            "SELECT id, username, display_name FROM users WHERE id = ANY($1::uuid[])",
            [userIds],
          )
        : null,
    ]);
    if (names && this.onNames) {
      this.onNames(
        names.rows.map((r) => ({ id: r.id, username: r.username, displayName: r.display_name })),
        namesReadAt,
      );
    }
    for (const r of payouts.rows) out.get(r.user_id)?.payoutRecords.set(r.id, payoutFromRow(r));
    for (const r of txs.rows) {
      const mem = out.get(r.account_id);
      if (!mem) continue;
      const atMs = r.created_at.getTime();
      if (countsForVelocity(r.type) && atMs > nowMs - VELOCITY_WINDOW_MS) {
        recordOutgoing(mem.window, atMs, r.amount_cents);
      }
      if (r.type === "payout") mem.payouts.set(r.id, txFromRow(r));
      if (r.idempotency_key && r.request_hash && atMs > nowMs - idempotencyTtlMs) {
        mem.keys.set(r.idempotency_key, { hash: r.request_hash, atMs, result: resultFromRow(r, mem.state) });
      }
      const finish = finishOf(r);
      if (finish && Date.parse(finish.at) > nowMs - idempotencyTtlMs) {
        mem.keys.set(finish.key, finishRecord(r, finish, mem.state));
      }
    }
    for (const r of statuses.rows) {
      const mem = out.get(r.account_id);
      if (!mem) continue;
      mem.keys.set(r.idempotency_key, {
        hash: r.request_hash,
        atMs: r.created_at.getTime(),
        result: { account: accountAfter(mem.state, r, r.status, r.version), replayed: false },
      });
    }
    return out;
  }

  /**
   * A key used longer ago than the in-memory TTL, for commands that must never repeat (money in,
   * payouts): the transaction it created, or the payout whose outcome it settled.
   */
  async findKey(accountId: string, key: string): Promise<KeyRecord | null> {
    const r = await this.pool.query<TxRow>(
      `SELECT ${TX_COLUMNS} FROM transactions
        WHERE account_id = $1 AND (idempotency_key = $2 OR (type = 'payout' AND metadata->'finish'->>'key' = $2))
        ORDER BY created_at LIMIT 1`,
      [accountId, key],
    );
    const row = r.rows[0];
    if (!row) return null;
    const acct = await this.pool.query<LedgerRow>(`SELECT ${LEDGER_COLUMNS} FROM ledger WHERE id = $1`, [
      accountId,
    ]);
    const state = acct.rows[0] ? stateFromRow(acct.rows[0]) : null;
    if (!state) return null;
    const finish = finishOf(row);
    if (row.idempotency_key !== key && finish?.key === key) return finishRecord(row, finish, state);
    if (!row.request_hash) return null;
    return { hash: row.request_hash, atMs: row.created_at.getTime(), result: resultFromRow(row, state) };
  }

  /** A payout of this account that is not in memory (finished long ago): its record and row. */
  async findPayout(
    accountId: string,
    payoutId: string,
  ): Promise<{ record: PayoutRecord | null; tx: TransactionRecord | null }> {
    const [p, t] = await Promise.all([
      this.pool.query<PayoutRow>(`SELECT ${PAYOUT_COLUMNS} FROM payouts WHERE id = $1 AND user_id = $2`, [
        payoutId,
        accountId,
      ]),
      this.pool.query<TxRow>(
        `SELECT ${TX_COLUMNS} FROM transactions WHERE id = $1 AND account_id = $2 AND type = 'payout'`,
        [payoutId, accountId],
      ),
    ]);
    return {
      record: p.rows[0] ? payoutFromRow(p.rows[0]) : null,
      tx: t.rows[0] ? txFromRow(t.rows[0]) : null,
    };
  }

  /** Postgres versions of these accounts. */
  async versions(ids: string[]): Promise<Map<string, number>> {
    const r = await this.pool.query<{ id: string; version: number }>(
      "SELECT id, version FROM ledger WHERE id = ANY($1::uuid[])",
      [ids],
    );
    return new Map(r.rows.map((x) => [x.id, x.version]));
  }

  /**
   * Which of these (transaction, account) credit legs are already posted in Postgres: a tip's
   * creator leg is its tip_feed row (sql/007_lean_journal.sql), an older one a ledger_postings row.
   */
  async postedLegs(legs: Array<{ txId: string; accountId: string }>): Promise<Set<string>> {
    if (legs.length === 0) return new Set();
    const r = await this.pool.query<{ transaction_id: string; account_id: string }>(
      `SELECT e.transaction_id, e.account_id FROM ledger_postings e
         JOIN unnest($1::uuid[], $2::uuid[]) AS l(tx, acct) ON e.transaction_id = l.tx AND e.account_id = l.acct
       UNION
       SELECT f.transaction_id, f.creator_id FROM tip_feed f
         JOIN unnest($1::uuid[], $2::uuid[]) AS l(tx, acct) ON f.transaction_id = l.tx AND f.creator_id = l.acct
        WHERE f.amount_cents IS NOT NULL`,
      [legs.map((l) => l.txId), legs.map((l) => l.accountId)],
    );
    return new Set(r.rows.map((x) => `${x.transaction_id}:${x.account_id}`));
  }
}
