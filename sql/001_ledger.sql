-- Core schema: the seed's users, ledger, transactions and fraud_logs, in integer cents, plus what
-- double entry (ledger_entries, system accounts) and idempotency (keys on transactions) need.
CREATE EXTENSION IF NOT EXISTS pgcrypto;

CREATE TABLE users (
  id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  email         text NOT NULL,
  username      text NOT NULL,
  display_name  text NOT NULL,
  bio           text,
  avatar_url    text,
  role          text NOT NULL DEFAULT 'viewer' CHECK (role IN ('viewer', 'creator', 'admin')),
  status        text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
  password_hash text,
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));
CREATE UNIQUE INDEX users_username_key ON users (lower(username));

-- One row per account. User accounts share the user's id; system accounts (platform revenue,
-- charity, Stripe clearing, payouts clearing, receivables) exist once per ledger shard so that a
-- shard never waits on another to post its fee legs. Only system accounts may go negative.
CREATE TABLE ledger (
  id                     uuid PRIMARY KEY,
  user_id                uuid UNIQUE REFERENCES users (id),
  kind                   text NOT NULL CHECK (kind IN ('user', 'system')),
  code                   text UNIQUE,
  balance_cents          bigint NOT NULL DEFAULT 0,
  reserved_balance_cents bigint NOT NULL DEFAULT 0 CHECK (reserved_balance_cents >= 0),
  debt_cents             bigint NOT NULL DEFAULT 0 CHECK (debt_cents >= 0),
  currency               varchar(3) NOT NULL DEFAULT 'USD',
  status                 text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
  version                bigint NOT NULL DEFAULT 0 CHECK (version >= 0),
  created_at             timestamptz NOT NULL DEFAULT now(),
  updated_at             timestamptz NOT NULL DEFAULT now(),
  CHECK (kind = 'system' OR balance_cents >= 0),
  CHECK (kind = 'system' OR reserved_balance_cents <= balance_cents),
  CHECK ((kind = 'user') = (user_id IS NOT NULL))
) WITH (fillfactor = 70); -- room on each page for HOT updates: balances change constantly

CREATE TABLE transactions (
  id                    uuid PRIMARY KEY,
  type                  text NOT NULL CHECK (type IN ('purchase', 'tip', 'payout', 'refund', 'chargeback')),
  status                text NOT NULL CHECK (status IN ('pending', 'completed', 'failed', 'refunded')),
  -- The account whose shard decided this transaction; idempotency keys are scoped to it.
  account_id            uuid NOT NULL,
  from_user_id          uuid,
  to_user_id            uuid,
  amount_cents          bigint NOT NULL CHECK (amount_cents > 0),
  platform_fee_cents    bigint NOT NULL DEFAULT 0 CHECK (platform_fee_cents >= 0),
  charity_fee_cents     bigint NOT NULL DEFAULT 0 CHECK (charity_fee_cents >= 0),
  net_amount_cents      bigint NOT NULL CHECK (net_amount_cents >= 0),
  currency              varchar(3) NOT NULL DEFAULT 'USD',
  stripe_payment_id     text,
  idempotency_key       text,
  request_hash          text,
  -- The deciding account's balance right after, so a replayed key answers the original body.
  balance_after_cents   bigint,
  reserved_after_cents  bigint,
  debt_after_cents      bigint,
  metadata              jsonb NOT NULL DEFAULT '{}'::jsonb,
  created_at            timestamptz NOT NULL,
  updated_at            timestamptz NOT NULL DEFAULT now()
);
-- Idempotency keys are looked up per account (the ledger enforces them in memory for
-- IDEMPOTENCY_TTL_MS, Postgres for money in), through this index; they are not unique here because
-- a key reused after its TTL is a new request. One index fewer per tip is measurably faster.
CREATE INDEX transactions_account_created ON transactions (account_id, created_at);
CREATE INDEX transactions_to_user_created ON transactions (to_user_id, created_at);
CREATE INDEX transactions_stripe_payment ON transactions (stripe_payment_id) WHERE stripe_payment_id IS NOT NULL;

-- Postings: every transaction's entries sum to zero. A tip's sender and fee legs arrive from the
-- sender's WAL stream and its recipient leg from the recipient's, so there is no foreign key to
-- transactions: the two may reach Postgres in either order.
CREATE TABLE ledger_entries (
  transaction_id uuid NOT NULL,
  account_id     uuid NOT NULL,
  amount_cents   bigint NOT NULL CHECK (amount_cents <> 0),
  created_at     timestamptz NOT NULL,
  PRIMARY KEY (transaction_id, account_id)
);
CREATE INDEX ledger_entries_account ON ledger_entries (account_id);

CREATE TABLE fraud_logs (
  id           uuid PRIMARY KEY,
  user_id      uuid NOT NULL,
  rule         text NOT NULL,
  severity     text NOT NULL CHECK (severity IN ('low', 'medium', 'high', 'critical')),
  amount_cents bigint,
  action       text NOT NULL CHECK (action IN ('allowed', 'blocked', 'flagged')),
  context      jsonb NOT NULL DEFAULT '{}'::jsonb,
  created_at   timestamptz NOT NULL
);
CREATE INDEX fraud_logs_user_created ON fraud_logs (user_id, created_at);
CREATE INDEX fraud_logs_created ON fraud_logs (created_at);

CREATE TABLE ledger_meta (
  key   text PRIMARY KEY,
  value text NOT NULL
);

-- Suspensions and reinstatements, with the idempotency key of the command that made them.
CREATE TABLE account_status_changes (
  id              uuid PRIMARY KEY,
  account_id      uuid NOT NULL,
  status          text NOT NULL CHECK (status IN ('active', 'suspended')),
  reason          text,
  idempotency_key text NOT NULL,
  request_hash    text NOT NULL,
  version         bigint NOT NULL,
  created_at      timestamptz NOT NULL
);
CREATE INDEX account_status_changes_account ON account_status_changes (account_id, created_at);
