// Owns the ledger's internal invariants, checked against Postgres (and memory when given):
// every balance sums to zero, each account's balance equals the sum of its entries, each
// transaction's entries sum to zero, debts match receivables, and memory equals Postgres; for money
// out: reserved balances equal open payouts, each paid payout has exactly one post, and what an
// account may withdraw is within what it holds and what it earned.
//
// Entries are read from the ledger_entries view: explicit postings (ledger_postings) and the legs a
// tip's rows imply (sql/007_lean_journal.sql). The view is only aggregated whole, never joined, so
// each check is a scan; joins go to the tables themselves.
import type pg from "pg";
import type { AccountView } from "../ledger/types.ts";

export interface ReconcileReport {
  ok: boolean;
  totalBalanceCents: number;
  accounts: number;
  entryMismatches: Array<{ accountId: string; balanceCents: number; entriesCents: number }>;
  unbalancedTransactions: Array<{ transactionId: string; sumCents: number }>;
  debtCents: number;
  receivablesCents: number;
  /** Users whose reserved balance is not the sum of their pending and processing payouts. */
  reserveMismatches: Array<{ accountId: string; reservedCents: number; openPayoutsCents: number }>;
  /** Payouts with a number of posts other than one if paid (zero otherwise). */
  payoutPostMismatches: Array<{ payoutId: string; status: string; posts: number }>;
  /** Users whose earned (withdrawable) money is negative, above what is available, or above
   * tips received plus returns minus payouts open or paid. */
  earnedMismatches: Array<{
    accountId: string;
    earnedCents: number;
    availableCents: number;
    limitCents: number;
  }>;
  memoryMismatches: Array<{
    accountId: string;
    memory: AccountView;
    postgres: Record<string, number | string>;
  }>;
}

export async function reconcileLedger(
  pool: pg.Pool,
  memory?: Map<string, AccountView>,
): Promise<ReconcileReport> {
  const [totals, mism, unbalanced, debt, reserves, posts, earned] = await Promise.all([
    pool.query<{ total: string; n: string }>(
      "SELECT coalesce(sum(balance_cents), 0) AS total, count(*) AS n FROM ledger",
    ),
    pool.query<{ id: string; balance_cents: number; entries: string }>(
      `SELECT l.id, l.balance_cents, coalesce(e.sum, 0) AS entries
         FROM ledger l LEFT JOIN (SELECT account_id, sum(amount_cents) AS sum FROM ledger_entries GROUP BY account_id) e
           ON e.account_id = l.id
        WHERE l.balance_cents <> coalesce(e.sum, 0)
        LIMIT 100`,
    ),
    pool.query<{ transaction_id: string; s: string }>(
      `SELECT transaction_id, sum(amount_cents) AS s FROM ledger_entries GROUP BY transaction_id
        HAVING sum(amount_cents) <> 0 LIMIT 100`,
    ),
    pool.query<{ debt: string; recv: string }>(
      `SELECT coalesce(sum(debt_cents) FILTER (WHERE kind = 'user'), 0) AS debt,
              coalesce(sum(balance_cents) FILTER (WHERE code LIKE 'receivables:%'), 0) AS recv FROM ledger`,
    ),
    pool.query<{ id: string; reserved_balance_cents: number; open: string }>(
      `SELECT l.id, l.reserved_balance_cents, coalesce(p.open, 0) AS open
         FROM ledger l LEFT JOIN (SELECT user_id, sum(amount_cents) AS open FROM payouts
                                   WHERE status IN ('pending', 'processing') GROUP BY user_id) p ON p.user_id = l.id
        WHERE l.kind = 'user' AND l.reserved_balance_cents <> coalesce(p.open, 0)
        LIMIT 100`,
    ),
    // A payout that reached paid (paid_at is set, whatever came after) has its one post.
    pool.query<{ id: string; status: string; posts: string }>(
      `SELECT p.id, p.status, count(e.transaction_id) AS posts
         FROM payouts p LEFT JOIN ledger_postings e ON e.transaction_id = p.id AND e.account_id = p.user_id
        GROUP BY p.id, p.status, p.paid_at
       HAVING count(e.transaction_id) <> CASE WHEN p.paid_at IS NOT NULL THEN 1 ELSE 0 END
           OR (p.status = 'paid') <> (p.paid_at IS NOT NULL AND p.status <> 'returned')
        LIMIT 100`,
    ),
    pool.query<{ id: string; earned_cents: number; available: number; lim: string }>(
      // A user's inflow: explicit postings of those types, and the creator legs of tips, which
      // are their feed rows (the other implied legs of a tip go to the sender or system accounts).
      `WITH inflow AS (
         SELECT account_id, sum(cents) AS cents FROM (
           SELECT e.account_id, e.amount_cents AS cents FROM ledger_postings e
             JOIN transactions t ON t.id = e.transaction_id
            WHERE t.type IN ('tip', 'superlike', 'payout_return') AND e.amount_cents > 0
           UNION ALL
           SELECT creator_id, amount_cents FROM tip_feed WHERE amount_cents IS NOT NULL) x
          GROUP BY account_id),
       outflow AS (
         SELECT user_id, sum(amount_cents) AS cents FROM payouts
          WHERE status IN ('pending', 'processing', 'paid') OR (status = 'returned' AND paid_at IS NOT NULL)
          GROUP BY user_id)
       SELECT l.id, l.earned_cents, l.balance_cents - l.reserved_balance_cents AS available,
              coalesce(i.cents, 0) - coalesce(o.cents, 0) AS lim
         FROM ledger l LEFT JOIN inflow i ON i.account_id = l.id LEFT JOIN outflow o ON o.user_id = l.id
        WHERE l.kind = 'user' AND (l.earned_cents < 0 OR l.earned_cents > l.balance_cents - l.reserved_balance_cents
              OR l.earned_cents > coalesce(i.cents, 0) - coalesce(o.cents, 0))
        LIMIT 100`,
    ),
  ]);
  const memoryMismatches: ReconcileReport["memoryMismatches"] = [];
  if (memory && memory.size > 0) {
    const ids = [...memory.keys()];
    const rows = await pool.query<{
      id: string;
      balance_cents: number;
      reserved_balance_cents: number;
      debt_cents: number;
      earned_cents: number;
      status: string;
      version: number;
    }>(
      "SELECT id, balance_cents, reserved_balance_cents, debt_cents, earned_cents, status, version FROM ledger WHERE id = ANY($1::uuid[])",
      [ids],
    );
    for (const r of rows.rows) {
      const m = memory.get(r.id)!;
      if (
        m.balanceCents !== r.balance_cents ||
        m.reservedCents !== r.reserved_balance_cents ||
        m.debtCents !== r.debt_cents ||
        m.withdrawableCents !== Math.max(0, r.earned_cents - r.debt_cents) ||
        m.status !== r.status ||
        m.version !== r.version
      ) {
        memoryMismatches.push({ accountId: r.id, memory: m, postgres: { ...r } });
      }
    }
  }
  const totalBalanceCents = Number(totals.rows[0]!.total);
  const debtCents = Number(debt.rows[0]!.debt);
  const receivablesCents = Number(debt.rows[0]!.recv);
  const report: ReconcileReport = {
    ok: false,
    totalBalanceCents,
    accounts: Number(totals.rows[0]!.n),
    entryMismatches: mism.rows.map((r) => ({
      accountId: r.id,
      balanceCents: r.balance_cents,
      entriesCents: Number(r.entries),
    })),
    unbalancedTransactions: unbalanced.rows.map((r) => ({
      transactionId: r.transaction_id,
      sumCents: Number(r.s),
    })),
    debtCents,
    receivablesCents,
    reserveMismatches: reserves.rows.map((r) => ({
      accountId: r.id,
      reservedCents: Number(r.reserved_balance_cents),
      openPayoutsCents: Number(r.open),
    })),
    payoutPostMismatches: posts.rows.map((r) => ({
      payoutId: r.id,
      status: r.status,
      posts: Number(r.posts),
    })),
    earnedMismatches: earned.rows.map((r) => ({
      accountId: r.id,
      earnedCents: Number(r.earned_cents),
      availableCents: Number(r.available),
      limitCents: Number(r.lim),
    })),
    memoryMismatches,
  };
  report.ok =
    totalBalanceCents === 0 &&
    report.entryMismatches.length === 0 &&
    report.unbalancedTransactions.length === 0 &&
    debtCents === -receivablesCents &&
    report.reserveMismatches.length === 0 &&
    report.payoutPostMismatches.length === 0 &&
    report.earnedMismatches.length === 0 &&
    memoryMismatches.length === 0;
  return report;
}
