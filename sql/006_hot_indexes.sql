-- Issue 16: the indexes a tip writes, cut to those a query needs. Each index costs Postgres an
-- insert per row on the persister's path, and a tip writes a transaction row, up to four postings
-- and a feed row. What each index on those tables serves:
--   transactions PRIMARY KEY (id)                   the persister's upserts (payouts), a payout's row, the tip
--                                                    feed's page of tips (GET /api/payments/tips, live resume)
--   transactions_account_created (account_id, ...)  recovery: an account's recent transactions and
--                                                    idempotency keys (account-store), money in's replays
--   transactions_stripe_payment (partial)           Stripe webhooks and refunds by payment id; tips have none
--   ledger_entries PRIMARY KEY (transaction_id, account_id)  recovery's "which legs are posted",
--                                                    a re-written round's ON CONFLICT, reconcile's per-payout post
--   tip_feed PRIMARY KEY (creator_id, seq)          GET /api/payments/tips and the live feed's resume
-- Dropped: no query of the API, the persister or recovery reads them. Reconcile sums postings per
-- account over the whole table (a sequential scan either way), and a creator's received tips are
-- read from tip_feed, not from transactions by recipient.
DROP INDEX IF EXISTS ledger_entries_account;
DROP INDEX IF EXISTS transactions_to_user_created;
