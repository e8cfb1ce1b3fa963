-- Issue 16: a tip's postings are implied by its rows, so they are no longer stored one by one.
--
-- A tip (or superlike) row determines its sender-side legs: the sender -amount, the sender shard's
-- platform_revenue account +(platform fee - charity fee) and its charity account +charity fee (a
-- leg of 0 is not a posting). The creator's leg (+net) is decided later, in the creator's shard,
-- with the tip's feed number: its tip_feed row now carries the amount and is that posting. So a
-- tip writes two rows (transaction, feed) where it wrote six (transaction, four postings, feed).
--
-- Every other transaction (purchases, payouts, reversals with debt...) keeps explicit postings,
-- in ledger_postings. ledger_entries is now a view over both: the one place auditors, reconcile
-- and tests read postings from, with the same columns as the table it replaces. Rows written
-- before this migration keep their explicit postings (legs_shard and tip_feed.amount_cents null),
-- so nothing is counted twice and nothing is rewritten.
ALTER TABLE ledger_entries RENAME TO ledger_postings;
ALTER INDEX ledger_entries_pkey RENAME TO ledger_postings_pkey;

-- Set on a tip whose legs are implied: the shard that decided it, whose system accounts took the
-- fees (recorded, not recomputed: SHARDS may change once the WAL is empty). Null: explicit postings.
ALTER TABLE transactions ADD COLUMN legs_shard integer CHECK (legs_shard >= 0);
ALTER TABLE tip_feed ADD COLUMN amount_cents bigint CHECK (amount_cents > 0);
-- A tip is credited once: recovery asks whether a creator's leg is posted by transaction id
-- (AccountStore.postedLegs), and a second credit of one tip is refused here too.
CREATE UNIQUE INDEX tip_feed_transaction ON tip_feed (transaction_id);

-- The id of a shard's system account: src/ledger/accounts.ts systemAccountId (kind 1 is
-- platform_revenue, 2 charity; the shard number in hex in the last group).
CREATE FUNCTION ledger_system_account(kind integer, shard integer) RETURNS uuid
LANGUAGE sql IMMUTABLE AS $$
  SELECT ('00000000-0000-0000-' || lpad(to_hex(kind), 4, '0') || '-' || lpad(to_hex(shard), 12, '0'))::uuid
$$;

CREATE VIEW ledger_entries AS
  SELECT transaction_id, account_id, amount_cents, created_at FROM ledger_postings
  UNION ALL
  SELECT t.id, t.from_user_id, -t.amount_cents, t.created_at
    FROM transactions t WHERE t.legs_shard IS NOT NULL
  UNION ALL
  SELECT t.id, ledger_system_account(1, t.legs_shard), t.platform_fee_cents - t.charity_fee_cents, t.created_at
    FROM transactions t WHERE t.legs_shard IS NOT NULL AND t.platform_fee_cents > t.charity_fee_cents
  UNION ALL
  SELECT t.id, ledger_system_account(2, t.legs_shard), t.charity_fee_cents, t.created_at
    FROM transactions t WHERE t.legs_shard IS NOT NULL AND t.charity_fee_cents > 0
  UNION ALL
  SELECT f.transaction_id, f.creator_id, f.amount_cents, f.credited_at
    FROM tip_feed f WHERE f.amount_cents IS NOT NULL;
