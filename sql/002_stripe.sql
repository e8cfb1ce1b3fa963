-- Money in through Stripe. The ledger's transactions stay the record of money; these tables record
-- what Stripe told us and when, so webhooks are deduplicated and reconciliation has a trail.

-- Every PaymentIntent we created, and its last known state.
CREATE TABLE stripe_payment_intents (
  id               text PRIMARY KEY,
  user_id          uuid NOT NULL,
  amount_cents     bigint NOT NULL CHECK (amount_cents > 0),
  currency         varchar(3) NOT NULL,
  status           text NOT NULL,
  -- Stripe's decline or error code of the last failed attempt.
  last_error_code  text,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stripe_payment_intents_user ON stripe_payment_intents (user_id, created_at);

-- Every webhook event whose signature verified, by Stripe's event id. processed_at is set once its
-- effect is in the ledger; a delivery of an event already processed is answered without effect.
CREATE TABLE stripe_events (
  id            text PRIMARY KEY,
  type          text NOT NULL,
  stripe_created_at timestamptz NOT NULL,
  received_at   timestamptz NOT NULL DEFAULT now(),
  deliveries    integer NOT NULL DEFAULT 1,
  processed_at  timestamptz,
  -- What handling it did: applied, ignored, or the error that makes it need attention.
  outcome       text,
  payload       jsonb NOT NULL
);
CREATE INDEX stripe_events_unprocessed ON stripe_events (received_at) WHERE processed_at IS NULL;

-- Reports of POST /api/payments/reconcile, kept for audit.
CREATE TABLE reconcile_reports (
  id            uuid PRIMARY KEY,
  window_from   timestamptz NOT NULL,
  window_to     timestamptz NOT NULL,
  ok            boolean NOT NULL,
  fix           boolean NOT NULL,
  report        jsonb NOT NULL,
  requested_by  uuid,
  created_at    timestamptz NOT NULL DEFAULT now()
);
