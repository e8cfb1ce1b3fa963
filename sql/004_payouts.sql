-- Money out (issue 13): what each account earned (the only money a payout may take), the payouts'
-- lifecycle as the ledger's WAL carries it, creators' payout methods, and the return of a paid
-- payout as its own transaction type.

-- Net tips received, minus what is paid out or reserved; spending and reversals take purchased
-- credits first. 0 <= earned <= available; withdrawable = earned - debt (never below 0).
ALTER TABLE ledger ADD COLUMN earned_cents bigint NOT NULL DEFAULT 0;
-- Accounts from before this column: tips received minus payouts reserved or paid, within what is
-- available (the order of spending before now is not known; this is the upper bound).
UPDATE ledger l SET earned_cents = GREATEST(0, LEAST(l.balance_cents - l.reserved_balance_cents,
    coalesce((SELECT sum(e.amount_cents) FROM ledger_entries e JOIN transactions t ON t.id = e.transaction_id
               WHERE e.account_id = l.id AND t.type = 'tip' AND e.amount_cents > 0), 0)
  - coalesce((SELECT sum(t.amount_cents) FROM transactions t
               WHERE t.account_id = l.id AND t.type = 'payout' AND t.status IN ('pending', 'completed')), 0)))
 WHERE l.kind = 'user';
ALTER TABLE ledger ADD CONSTRAINT ledger_earned_within_available
  CHECK (kind = 'system' OR (earned_cents >= 0 AND earned_cents <= balance_cents - reserved_balance_cents));

-- A paid payout the bank sent back is credited to the creator as a transaction of its own.
ALTER TABLE transactions DROP CONSTRAINT transactions_type_check;
ALTER TABLE transactions ADD CONSTRAINT transactions_type_check
  CHECK (type IN ('purchase', 'tip', 'payout', 'refund', 'chargeback', 'payout_return'));

-- One row per payout (its id is the payout transaction's id), rewritten by the persister with every
-- transition; seq only grows, so a replayed older transition never overwrites a newer one.
CREATE TABLE payouts (
  id                     uuid PRIMARY KEY,
  user_id                uuid NOT NULL,
  amount_cents           bigint NOT NULL CHECK (amount_cents > 0),
  currency               varchar(3) NOT NULL DEFAULT 'USD',
  provider               text,
  provider_recipient_id  text,
  provider_transfer_id   text,
  status                 text NOT NULL CHECK (status IN ('pending', 'processing', 'paid', 'failed', 'returned')),
  failure_reason         text,
  attempts               integer NOT NULL DEFAULT 0,
  round                  integer NOT NULL DEFAULT 1,
  seq                    integer NOT NULL,
  return_transaction_id  uuid,
  created_at             timestamptz NOT NULL,
  updated_at             timestamptz NOT NULL,
  paid_at                timestamptz
);
CREATE INDEX payouts_user_created ON payouts (user_id, created_at DESC);
CREATE INDEX payouts_status_created ON payouts (status, created_at DESC);

-- Payouts reserved before this table: their transactions say pending, paid or failed.
INSERT INTO payouts (id, user_id, amount_cents, status, seq, created_at, updated_at, paid_at)
SELECT id, account_id, amount_cents,
       CASE status WHEN 'pending' THEN 'pending' WHEN 'completed' THEN 'paid' ELSE 'failed' END,
       CASE status WHEN 'pending' THEN 1 ELSE 2 END, created_at, updated_at,
       CASE status WHEN 'completed' THEN updated_at END
  FROM transactions WHERE type = 'payout'
ON CONFLICT (id) DO NOTHING;

-- Where a creator is paid: the provider's recipient id and the last four digits, never the number.
CREATE TABLE payout_methods (
  user_id                uuid PRIMARY KEY REFERENCES users (id),
  provider               text NOT NULL CHECK (provider IN ('wise', 'airwallex')),
  provider_recipient_id  text NOT NULL,
  account_holder_name    text NOT NULL,
  country                varchar(2) NOT NULL,
  currency               varchar(3) NOT NULL,
  account_last4          varchar(4) NOT NULL,
  created_at             timestamptz NOT NULL DEFAULT now(),
  updated_at             timestamptz NOT NULL DEFAULT now()
);

-- What a replayed key answers after its command left memory includes what was earned right after.
ALTER TABLE transactions ADD COLUMN earned_after_cents bigint;
ALTER TABLE account_status_changes ADD COLUMN earned_after_cents bigint;

-- Provider webhooks (Wise, Airwallex) by delivery id: a delivery already processed is answered
-- without effect. A webhook is a hint; what moves money is the provider's API, asked each time.
CREATE TABLE payout_webhook_events (
  provider              text NOT NULL,
  delivery_id           text NOT NULL,
  provider_transfer_id  text NOT NULL,
  claimed_status        text NOT NULL,
  payout_id             uuid,
  deliveries            integer NOT NULL DEFAULT 1,
  received_at           timestamptz NOT NULL DEFAULT now(),
  processed_at          timestamptz,
  -- What the provider's API said when it was processed (the outcome published), or why not.
  outcome               text,
  PRIMARY KEY (provider, delivery_id)
);
