// Owns what the suite checks after the load, against Postgres once the WAL has drained: every tip
// answered 2xx is there exactly once (nothing acknowledged is missing), what is there beyond that
// is explained by requests still in flight when the load stopped, and the money is conserved.
import type pg from "pg";
import { reconcileLedger } from "../src/persist/reconcile.ts";
import type { Population } from "./population.ts";

export interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

export interface TipAccounting {
  /** Idempotency keys of every tip answered 2xx, over all tip scenarios against this database. */
  ackedKeys: string[];
  /** Tip requests built; none beyond these can have reached the server. */
  issued: number;
  /** Requests that may have been committed without their answer being counted: in flight when
   * a scenario stopped (one per connection) and timed out. */
  unansweredBound: number;
}

/** Counts how many of `keys` match rows of `sql` (a query selecting one text column `k`). */
async function matchKeys(
  pool: pg.Pool,
  keys: string[],
  sql: string,
): Promise<{ found: number; distinct: number }> {
  const r = await pool.query<{ found: number; distinct: number }>(
    `SELECT count(*)::int AS found, count(DISTINCT x.key)::int AS distinct
       FROM unnest($1::text[]) AS x(key) JOIN (${sql}) AS t ON t.k = x.key`,
    [keys],
  );
  return r.rows[0]!;
}

function accountingChecks(
  label: string,
  acc: TipAccounting,
  m: { found: number; distinct: number },
  pgTips: number,
): Check[] {
  const acked = acc.ackedKeys.length;
  const extra = pgTips - acked;
  return [
    {
      name: `${label}: every acknowledged tip is in Postgres exactly once`,
      ok: m.distinct === acked && m.found === acked,
      detail: `${acked} tips answered 2xx; ${m.distinct} of their keys found, in ${m.found} rows`,
    },
    {
      name: `${label}: tips in Postgres = 2xx answers + requests unanswered when the load stopped`,
      ok: extra >= 0 && extra <= acc.unansweredBound && pgTips <= acc.issued,
      detail: `${pgTips} tip transactions = ${acked} acknowledged + ${extra} committed but unanswered (at most ${acc.unansweredBound} were in flight or timed out); ${acc.issued} sent`,
    },
  ];
}

/** The real server's database: acknowledged tips, reconcile's invariants, and conservation. */
export async function ledgerChecks(
  pool: pg.Pool,
  acc: TipAccounting,
  pop: Population,
  label = "ledger",
): Promise<Check[]> {
  const checks: Check[] = [];
  const m = await matchKeys(
    pool,
    acc.ackedKeys,
    "SELECT idempotency_key AS k FROM transactions WHERE type = 'tip'",
  );
  const tips = await pool.query<{ n: number; amount: number; fee: number; charity: number; net: number }>(
    `SELECT count(*)::int AS n, coalesce(sum(amount_cents), 0)::bigint AS amount,
            coalesce(sum(platform_fee_cents), 0)::bigint AS fee, coalesce(sum(charity_fee_cents), 0)::bigint AS charity,
            coalesce(sum(net_amount_cents), 0)::bigint AS net
       FROM transactions WHERE type = 'tip'`,
  );
  const t = tips.rows[0]!;
  checks.push(...accountingChecks(label, acc, m, t.n));

  const rec = await reconcileLedger(pool);
  checks.push({
    name: `${label}: reconcile (balances sum to zero, each equals its entries, every transaction's entries sum to zero)`,
    ok: rec.ok,
    detail: `total ${rec.totalBalanceCents} cents over ${rec.accounts} accounts; ${rec.entryMismatches.length} balance/entry mismatches, ${rec.unbalancedTransactions.length} unbalanced transactions`,
  });

  const creatorIds = pop.creators.map((c) => c.id);
  const sums = await pool.query<{
    viewers: number;
    creators: number;
    platform: number;
    charity: number;
    clearing: number;
  }>(
    `SELECT coalesce(sum(balance_cents) FILTER (WHERE kind = 'user' AND NOT id = ANY($1::uuid[])), 0)::bigint AS viewers,
            coalesce(sum(balance_cents) FILTER (WHERE id = ANY($1::uuid[])), 0)::bigint AS creators,
            coalesce(sum(balance_cents) FILTER (WHERE code LIKE 'platform_revenue:%'), 0)::bigint AS platform,
            coalesce(sum(balance_cents) FILTER (WHERE code LIKE 'charity:%'), 0)::bigint AS charity,
            coalesce(sum(balance_cents) FILTER (WHERE code LIKE 'stripe_clearing:%'), 0)::bigint AS clearing
       FROM ledger`,
    [creatorIds],
  );
  const s = sums.rows[0]!;
  const deposits = pop.viewers.length * pop.depositCents;
  const expected = {
    viewers: deposits - t.amount,
    creators: t.net,
    platform: t.fee - t.charity,
    charity: t.charity,
    clearing: -deposits,
  };
  const ok = (Object.keys(expected) as Array<keyof typeof expected>).every((k) => s[k] === expected[k]);
  checks.push({
    name: `${label}: money conserved (deposits = viewers + creators + platform + charity, as the tips say)`,
    ok,
    detail: `deposits ${deposits}; viewers ${s.viewers} (expected ${expected.viewers}), creators ${s.creators} (${expected.creators}), platform ${s.platform} (${expected.platform}), charity ${s.charity} (${expected.charity}), clearing ${s.clearing} (${expected.clearing}) cents`,
  });
  return checks;
}

/**
 * The server's memory against Postgres for the creators (every tip credits one): their balances
 * over the API, read after the WAL drained, must equal the rows the persister wrote. `base` may
 * pick the server per creator: with the shards spread over processes, the one owning its shard.
 */
export async function creatorBalancesCheck(
  base: string | ((accountId: string) => string),
  pool: pg.Pool,
  pop: Population,
  label = "ledger",
): Promise<Check> {
  const baseOf = typeof base === "string" ? () => base : base;
  const rows = await pool.query<{ id: string; balance_cents: number }>(
    "SELECT id, balance_cents FROM ledger WHERE id = ANY($1::uuid[])",
    [pop.creators.map((c) => c.id)],
  );
  const inPg = new Map(rows.rows.map((r) => [r.id, r.balance_cents]));
  const mismatches: string[] = [];
  for (let i = 0; i < pop.creators.length; i += 50) {
    await Promise.all(
      pop.creators.slice(i, i + 50).map(async (c) => {
        const r = await fetch(`${baseOf(c.id)}/api/payments/balance/${c.id}`, {
          headers: { authorization: `Bearer ${c.token}` },
        });
        const body = (await r.json()) as { balance?: string };
        const cents = body.balance === undefined ? Number.NaN : Math.round(Number(body.balance) * 100);
        if (cents !== inPg.get(c.id))
          mismatches.push(`${c.username}: API ${body.balance}, Postgres ${inPg.get(c.id)} cents`);
      }),
    );
  }
  return {
    name: `${label}: creators' balances in server memory (API${typeof base === "string" ? "" : ", each from the process owning its shard"}) equal Postgres`,
    ok: mismatches.length === 0,
    detail:
      mismatches.length === 0
        ? `${pop.creators.length} creators compared`
        : `${mismatches.length} differ, e.g. ${mismatches.slice(0, 3).join("; ")}`,
  };
}

/** The peer's database: acknowledged tips and conservation (the seed schema keeps no entries). */
export async function peerChecks(pool: pg.Pool, acc: TipAccounting, pop: Population): Promise<Check[]> {
  const checks: Check[] = [];
  const m = await matchKeys(
    pool,
    acc.ackedKeys,
    "SELECT metadata->>'idempotency_key' AS k FROM transactions WHERE type = 'tip'",
  );
  const tips = await pool.query<{ n: number; amount: string; fee: string; net: string }>(
    `SELECT count(*)::int AS n, coalesce(sum(amount), 0) AS amount, coalesce(sum(platform_fee), 0) AS fee,
            coalesce(sum(net_amount), 0) AS net FROM transactions WHERE type = 'tip'`,
  );
  const t = tips.rows[0]!;
  checks.push(...accountingChecks("peer-seed", acc, m, t.n));
  const sums = await pool.query<{ viewers: string; creators: string; negative: number }>(
    `SELECT coalesce(sum(l.balance) FILTER (WHERE u.role = 'viewer'), 0) AS viewers,
            coalesce(sum(l.balance) FILTER (WHERE u.role = 'creator'), 0) AS creators,
            count(*) FILTER (WHERE l.balance < 0)::int AS negative
       FROM ledger l JOIN users u ON u.id = l.user_id`,
  );
  const s = sums.rows[0]!;
  const c = (d: string) => Math.round(Number(d) * 100);
  const deposits = pop.viewers.length * pop.depositCents;
  const ok =
    c(s.viewers) === deposits - c(t.amount) &&
    c(s.creators) === c(t.net) &&
    c(s.viewers) + c(s.creators) + c(t.fee) === deposits &&
    s.negative === 0;
  checks.push({
    name: "peer-seed: money conserved (deposits = viewers + creators + fees of the tips)",
    ok,
    detail: `deposits ${deposits}; viewers ${c(s.viewers)} (expected ${deposits - c(t.amount)}), creators ${c(s.creators)} (${c(t.net)}), fees ${c(t.fee)} cents; ${s.negative} negative balances`,
  });
  return checks;
}
