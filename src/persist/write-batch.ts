// Owns the Postgres side of a round: one transaction writing a Batch to ledger (version-checked),
// transactions, ledger_postings, tip_feed, fraud_logs and account_status_changes. A tip's legs are
// implied by its transaction and feed rows (sql/007_lean_journal.sql); other postings are rows.
// Tips, postings and feed rows go in by COPY first; a unique violation means the round was
// written before, and the batch is written again with statements that skip what is there.
import type pg from "pg";
import { withClient } from "../db/pool.ts";
import type { FraudLogRecord, PayoutRecord } from "../ledger/types.ts";
import { copyField, copyIn } from "./copy-text.ts";
import {
  type AccountUpdate,
  type Batch,
  buildBatch,
  type Entry,
  type FeedRow,
  type Leg,
  type StatusRow,
  type TxRow,
} from "./round-batch.ts";
import { mirrorUserStatus } from "./user-status.ts";

/** Raised when Postgres holds an older version than a WAL entry follows: a gap or a 2nd writer. */
export class VersionGapError extends Error {
  constructor(
    readonly shard: number,
    readonly accountId: string,
    readonly pgVersion: number,
    readonly walFromVersion: number,
  ) {
    super(
      `account ${accountId} is at version ${pgVersion} in Postgres but shard ${shard}'s WAL continues from ${walFromVersion - 1}`,
    );
  }
}

const UNIQUE_VIOLATION = "23505";

/**
 * Writes a round's entries in one Postgres transaction. Re-writing entries already written is a
 * no-op (ids and versions make every statement idempotent), so a crash before XACK is harmless.
 *
 * Returns the accounts whose `ledger` row is gone (deleted by hand under an account the ledger
 * still holds). A request can touch such an account (a tip to a creator still in memory), so it
 * must not stop the shard's persistence: everything else is written, its transactions and
 * postings included (money stays double-entry in ledger_entries), and only its balance row,
 * which no longer exists, is not. The caller raises the alarm with the state to restore.
 */
export async function writeEntries(pool: pg.Pool, entries: Entry[]): Promise<AccountUpdate[]> {
  const batch = buildBatch(entries);
  return withClient(pool, async (client) => {
    try {
      return await writeBatch(client, batch, true);
    } catch (err) {
      if ((err as { code?: string }).code !== UNIQUE_VIOLATION) throw err;
      // Some rows are in Postgres already: this round is a re-read of entries committed before a
      // crash took the XACK. COPY cannot skip rows, so write the batch again with the statements
      // that can (every one of them is idempotent).
      return writeBatch(client, batch, false);
    }
  });
}

/**
 * One Postgres transaction for the batch. With `bulk`, tips and postings go in by COPY (measured
 * on this schema: 43 -> 26 us of Postgres CPU per tip against INSERT ... ON CONFLICT), which
 * fails on a row already there; the caller then retries without it.
 */
async function writeBatch(client: pg.PoolClient, b: Batch, bulk: boolean): Promise<AccountUpdate[]> {
  try {
    await client.query("BEGIN");
    const missing = await applyAccounts(client, b.accounts);
    // Only a payout's row is written twice (reserved, then posted or voided): it needs the upsert.
    const copied = bulk ? b.txs.filter((r) => r.tx.type === "tip") : [];
    const upserted = bulk ? b.txs.filter((r) => r.tx.type !== "tip") : b.txs;
    if (copied.length > 0) await copyTransactions(client, copied);
    if (upserted.length > 0) await insertTransactions(client, upserted);
    if (b.legs.length > 0) {
      if (bulk) await copyLegs(client, b.legs);
      else await insertLegs(client, b.legs);
    }
    if (b.fraud.length > 0) await insertFraudLogs(client, b.fraud);
    if (b.feed.length > 0) {
      if (bulk) await copyFeedRows(client, b.feed);
      else await insertFeedRows(client, b.feed);
    }
    if (b.statusRows.length > 0) {
      await insertStatusChanges(client, b.statusRows);
      await mirrorUserStatus(client, b.statusAccounts);
    }
    if (b.payouts.size > 0) await upsertPayouts(client, [...b.payouts.values()]);
    await client.query("COMMIT");
    return missing;
  } catch (err) {
    await client.query("ROLLBACK").catch(() => {});
    throw err;
  }
}

/** Applies the accounts' states; returns those whose row does not exist (see writeEntries). */
async function applyAccounts(
  client: pg.PoolClient,
  accounts: Map<string, AccountUpdate>,
): Promise<AccountUpdate[]> {
  if (accounts.size === 0) return [];
  const list = [...accounts.values()];
  // Apply the batch's final state where Postgres is at, or inside, the versions this batch covers.
  const updated = await client.query<{ id: string }>(
    `UPDATE ledger l SET balance_cents = u.bal, reserved_balance_cents = u.res, debt_cents = u.debt,
            status = u.status, version = u.vto, earned_cents = u.earned, updated_at = now()
       FROM json_to_recordset($1::json) AS u(id uuid, vfrom bigint, bal bigint, res bigint, debt bigint, status text,
            vto bigint, earned bigint)
      WHERE l.id = u.id AND l.version >= u.vfrom - 1 AND l.version < u.vto
      RETURNING l.id`,
    [
      JSON.stringify(
        list.map((a) => ({
          id: a.last.id,
          vfrom: a.fromVersion,
          bal: a.last.balanceCents,
          res: a.last.reservedCents,
          debt: a.last.debtCents,
          status: a.last.status,
          vto: a.last.version,
          earned: a.last.earnedCents,
        })),
      ),
    ],
  );
  if (updated.rowCount === list.length) return [];
  const done = new Set(updated.rows.map((r) => r.id));
  const rest = list.filter((a) => !done.has(a.last.id));
  const cur = await client.query<{ id: string; version: number }>(
    "SELECT id, version FROM ledger WHERE id = ANY($1::uuid[])",
    [rest.map((a) => a.last.id)],
  );
  const versions = new Map(cur.rows.map((r) => [r.id, r.version]));
  const missing: AccountUpdate[] = [];
  for (const a of rest) {
    const v = versions.get(a.last.id);
    // No row: not a second writer's history, just nothing left to update (see writeEntries).
    if (v === undefined) missing.push(a);
    // Already at or past this batch's last version: a replay, nothing to do. Behind: refuse.
    else if (v < a.fromVersion - 1) throw new VersionGapError(a.shard, a.last.id, v, a.fromVersion);
  }
  return missing;
}

/** Payout rows, each moved only forward: a record older than the row's (a replay) is skipped. */
async function upsertPayouts(client: pg.PoolClient, rows: PayoutRecord[]): Promise<void> {
  await client.query(
    `INSERT INTO payouts (id, user_id, amount_cents, provider, provider_recipient_id, provider_transfer_id, status,
        failure_reason, attempts, round, seq, return_transaction_id, created_at, updated_at, paid_at)
     SELECT id, "userId", "amountCents", provider, "providerRecipientId", "providerTransferId", status,
            "failureReason", attempts, round, seq, "returnTxId", "createdAt", "updatedAt", "paidAt"
       FROM json_to_recordset($1::json) AS x(id uuid, "userId" uuid, "amountCents" bigint, provider text,
            "providerRecipientId" text, "providerTransferId" text, status text, "failureReason" text,
            attempts integer, round integer, seq integer, "returnTxId" uuid, "createdAt" timestamptz,
            "updatedAt" timestamptz, "paidAt" timestamptz)
     ON CONFLICT (id) DO UPDATE SET provider_transfer_id = EXCLUDED.provider_transfer_id, status = EXCLUDED.status,
        failure_reason = EXCLUDED.failure_reason, attempts = EXCLUDED.attempts, round = EXCLUDED.round,
        seq = EXCLUDED.seq, return_transaction_id = EXCLUDED.return_transaction_id,
        updated_at = EXCLUDED.updated_at, paid_at = EXCLUDED.paid_at
      WHERE payouts.seq < EXCLUDED.seq`,
    [JSON.stringify(rows)],
  );
}

async function insertTransactions(client: pg.PoolClient, rows: TxRow[]): Promise<void> {
  const json = JSON.stringify(
    rows.map((r) => ({
      id: r.tx.id,
      ty: r.tx.type,
      st: r.tx.status,
      ac: r.tx.accountId,
      fr: r.tx.fromAccountId,
      to: r.tx.toAccountId,
      am: r.tx.amountCents,
      pf: r.tx.platformFeeCents,
      cf: r.tx.charityFeeCents,
      na: r.tx.netAmountCents,
      cu: r.tx.currency,
      sp: r.tx.stripePaymentId,
      ik: r.key,
      rh: r.hash,
      ba: r.after?.balanceCents ?? null,
      ra: r.after?.reservedCents ?? null,
      da: r.after?.debtCents ?? null,
      ea: r.after?.earnedCents ?? null,
      va: r.after?.version ?? null,
      sa: r.after?.status ?? null,
      md: r.tx.metadata,
      at: r.tx.createdAt,
      ls: r.legsShard,
    })),
  );
  await client.query(
    `INSERT INTO transactions (id, type, status, account_id, from_user_id, to_user_id, amount_cents,
        platform_fee_cents, charity_fee_cents, net_amount_cents, currency, stripe_payment_id, idempotency_key,
        request_hash, balance_after_cents, reserved_after_cents, debt_after_cents, version_after, status_after,
        metadata, created_at, earned_after_cents, legs_shard)
     SELECT id, ty, st, ac, fr, "to", am, pf, cf, na, cu, sp, ik, rh, ba, ra, da, va, sa, md, at, ea, ls
       FROM json_to_recordset($1::json) AS x(id uuid, ty text, st text, ac uuid, fr uuid, "to" uuid, am bigint,
            pf bigint, cf bigint, na bigint, cu text, sp text, ik text, rh text, ba bigint, ra bigint, da bigint,
            va bigint, sa text, md jsonb, at timestamptz, ea bigint, ls integer)
     ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, metadata = EXCLUDED.metadata, updated_at = now()
       WHERE transactions.status IS DISTINCT FROM EXCLUDED.status`,
    [json],
  );
}

async function copyTransactions(client: pg.PoolClient, rows: TxRow[]): Promise<void> {
  let text = "";
  for (const { tx, key, hash, after, legsShard } of rows) {
    text += `${tx.id}\t${tx.type}\t${tx.status}\t${tx.accountId}\t${copyField(tx.fromAccountId)}\t${copyField(tx.toAccountId)}\t${tx.amountCents}\t${tx.platformFeeCents}\t${tx.charityFeeCents}\t${tx.netAmountCents}\t${tx.currency}\t${copyField(tx.stripePaymentId)}\t${copyField(key)}\t${copyField(hash)}\t${copyField(after?.balanceCents)}\t${copyField(after?.reservedCents)}\t${copyField(after?.debtCents)}\t${copyField(after?.version)}\t${copyField(after?.status)}\t${copyField(JSON.stringify(tx.metadata))}\t${tx.createdAt}\t${copyField(after?.earnedCents)}\t${copyField(legsShard)}\n`;
  }
  await copyIn(
    client,
    `COPY transactions (id, type, status, account_id, from_user_id, to_user_id, amount_cents, platform_fee_cents,
       charity_fee_cents, net_amount_cents, currency, stripe_payment_id, idempotency_key, request_hash,
       balance_after_cents, reserved_after_cents, debt_after_cents, version_after, status_after, metadata,
       created_at, earned_after_cents, legs_shard) FROM STDIN`,
    text,
  );
}

async function insertLegs(client: pg.PoolClient, legs: Leg[]): Promise<void> {
  await client.query(
    // Rows travel as one JSON text: V8 serializes it natively, where pg's array literals are built
    // element by element in JavaScript (measured: the persister's top cost).
    `INSERT INTO ledger_postings (transaction_id, account_id, amount_cents, created_at)
     SELECT t, a, c, at FROM json_to_recordset($1::json) AS x(t uuid, a uuid, c bigint, at timestamptz)
     ON CONFLICT DO NOTHING`,
    [JSON.stringify(legs.map((x) => ({ t: x.txId, a: x.accountId, c: x.amountCents, at: x.at })))],
  );
}

async function copyLegs(client: pg.PoolClient, legs: Leg[]): Promise<void> {
  let text = "";
  for (const l of legs) text += `${l.txId}\t${l.accountId}\t${l.amountCents}\t${l.at}\n`;
  await copyIn(
    client,
    "COPY ledger_postings (transaction_id, account_id, amount_cents, created_at) FROM STDIN",
    text,
  );
}

async function copyFeedRows(client: pg.PoolClient, rows: FeedRow[]): Promise<void> {
  let text = "";
  for (const r of rows) text += `${r.creatorId}\t${r.seq}\t${r.txId}\t${r.amountCents}\t${r.at}\n`;
  await copyIn(
    client,
    "COPY tip_feed (creator_id, seq, transaction_id, amount_cents, credited_at) FROM STDIN",
    text,
  );
}

async function insertFeedRows(client: pg.PoolClient, rows: FeedRow[]): Promise<void> {
  await client.query(
    `INSERT INTO tip_feed (creator_id, seq, transaction_id, amount_cents, credited_at)
     SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::uuid[], $4::bigint[], $5::timestamptz[])
     ON CONFLICT DO NOTHING`,
    [
      rows.map((r) => r.creatorId),
      rows.map((r) => r.seq),
      rows.map((r) => r.txId),
      rows.map((r) => r.amountCents),
      rows.map((r) => r.at),
    ],
  );
}

async function insertFraudLogs(client: pg.PoolClient, fraud: FraudLogRecord[]): Promise<void> {
  await client.query(
    `INSERT INTO fraud_logs (id, user_id, rule, severity, amount_cents, action, context, created_at)
     SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::jsonb[], $8::timestamptz[])
     ON CONFLICT (id) DO NOTHING`,
    [
      fraud.map((f) => f.id),
      fraud.map((f) => f.userId),
      fraud.map((f) => f.rule),
      fraud.map((f) => f.severity),
      fraud.map((f) => f.amountCents),
      fraud.map((f) => f.action),
      fraud.map((f) => JSON.stringify(f.context)),
      fraud.map((f) => f.createdAt),
    ],
  );
}

async function insertStatusChanges(client: pg.PoolClient, rows: StatusRow[]): Promise<void> {
  await client.query(
    `INSERT INTO account_status_changes (id, account_id, status, reason, idempotency_key, request_hash, version, created_at,
        balance_after_cents, reserved_after_cents, debt_after_cents, earned_after_cents)
     SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[], $8::timestamptz[],
        $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[])
     ON CONFLICT (id) DO NOTHING`,
    [
      rows.map((r) => r.id),
      rows.map((r) => r.accountId),
      rows.map((r) => r.status),
      rows.map((r) => r.reason),
      rows.map((r) => r.key),
      rows.map((r) => r.hash),
      rows.map((r) => r.version),
      rows.map((r) => r.at),
      rows.map((r) => r.after.balanceCents),
      rows.map((r) => r.after.reservedCents),
      rows.map((r) => r.after.debtCents),
      rows.map((r) => r.after.earnedCents),
    ],
  );
}
