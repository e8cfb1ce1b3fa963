-- The seed brief's schema (seed/000_*.txt, "Database Schema Highlights"), as the peer uses it:
-- money in DECIMAL(10, 2) dollars, a version column for optimistic locking, foreign keys to users.
CREATE EXTENSION IF NOT EXISTS pgcrypto;

CREATE TABLE users (
  id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  email        text NOT NULL UNIQUE,
  username     text NOT NULL UNIQUE,
  display_name text NOT NULL,
  role         varchar(20) NOT NULL DEFAULT 'viewer',
  status       varchar(20) NOT NULL DEFAULT 'active',
  created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ledger (
  id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id          uuid UNIQUE REFERENCES users (id),
  balance          DECIMAL(10, 2) NOT NULL DEFAULT 0 CHECK (balance >= 0),
  reserved_balance DECIMAL(10, 2) NOT NULL DEFAULT 0 CHECK (reserved_balance >= 0),
  currency         varchar(3) NOT NULL DEFAULT 'USD',
  version          integer NOT NULL DEFAULT 1,
  updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE transactions (
  id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  from_user_id      uuid REFERENCES users (id),
  to_user_id        uuid REFERENCES users (id),
  amount            DECIMAL(10, 2) NOT NULL,
  platform_fee      DECIMAL(10, 2) NOT NULL DEFAULT 0,
  charity_fee       DECIMAL(10, 2) NOT NULL DEFAULT 0,
  net_amount        DECIMAL(10, 2) NOT NULL,
  type              varchar(50) NOT NULL,
  status            varchar(20) NOT NULL,
  stripe_payment_id text,
  metadata          jsonb NOT NULL DEFAULT '{}'::jsonb,
  created_at        timestamptz NOT NULL DEFAULT now()
);
-- The velocity rule reads a sender's last hour; the creator's history reads by recipient.
CREATE INDEX transactions_from_created ON transactions (from_user_id, created_at);
CREATE INDEX transactions_to_created ON transactions (to_user_id, created_at);

CREATE TABLE fraud_logs (
  id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id    uuid REFERENCES users (id),
  rule       text NOT NULL,
  severity   varchar(20) NOT NULL,
  amount     DECIMAL(10, 2),
  action     varchar(20) NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
