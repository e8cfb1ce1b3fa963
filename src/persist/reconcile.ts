// Owns the ledger's internal invariants, checked against Postgres (and memory when given):
// every balance sums to zero, each account's balance equals the sum of its entries, each
// transaction's entries sum to zero, debts match receivables, and memory equals Postgres.
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
  const [totals, mism, unbalanced, debt] = await Promise.all([
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
  ]);
  const memoryMismatches: ReconcileReport["memoryMismatches"] = [];
  if (memory && memory.size > 0) {
    const ids = [...memory.keys()];
    const rows = await pool.query<{
      id: string;
      balance_cents: number;
      reserved_balance_cents: number;
      debt_cents: number;
      status: string;
      version: number;
    }>(
      "SELECT id, balance_cents, reserved_balance_cents, debt_cents, status, version FROM ledger WHERE id = ANY($1::uuid[])",
      [ids],
    );
    for (const r of rows.rows) {
      const m = memory.get(r.id)!;
      if (
        m.balanceCents !== r.balance_cents ||
        m.reservedCents !== r.reserved_balance_cents ||
        m.debtCents !== r.debt_cents ||
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
    memoryMismatches,
  };
  report.ok =
    totalBalanceCents === 0 &&
    report.entryMismatches.length === 0 &&
    report.unbalancedTransactions.length === 0 &&
    debtCents === -receivablesCents &&
    memoryMismatches.length === 0;
  return report;
}
