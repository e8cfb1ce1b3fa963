-- What a replayed idempotency key answers after its command left memory: the deciding account
-- exactly as it was right after the command, not as it is now.
ALTER TABLE transactions
  ADD COLUMN version_after bigint,
  ADD COLUMN status_after  text;
ALTER TABLE account_status_changes
  ADD COLUMN balance_after_cents  bigint,
  ADD COLUMN reserved_after_cents bigint,
  ADD COLUMN debt_after_cents     bigint;
