-- Live (issue 14): the creators' tip feeds, overlay keys, and superlikes.

-- Which tip took which number of its creator's feed (1, 2, 3... in credit order). The number is
-- decided with the credit (WAL credit event) and written by the persister with it, so a feed
-- rebuilt after a crash repeats it; GET /api/payments/tips pages through it.
CREATE TABLE tip_feed (
  creator_id     uuid NOT NULL,
  seq            bigint NOT NULL CHECK (seq > 0),
  transaction_id uuid NOT NULL,
  credited_at    timestamptz NOT NULL,
  PRIMARY KEY (creator_id, seq)
);

-- One overlay key per creator: only its SHA-256 is kept, and a new key replaces the old one.
CREATE TABLE overlay_keys (
  user_id    uuid PRIMARY KEY REFERENCES users (id),
  key_hash   text NOT NULL UNIQUE,
  created_at timestamptz NOT NULL DEFAULT now()
);

-- A superlike is a tip the overlay highlights: its own transaction type. The type list is
-- extended in place (whatever earlier migrations allow, plus 'superlike'), so this migration
-- composes with any other that changed the list.
DO $$
DECLARE
  def text;
BEGIN
  SELECT pg_get_constraintdef(oid) INTO def FROM pg_constraint
   WHERE conrelid = 'transactions'::regclass AND conname = 'transactions_type_check';
  IF def IS NOT NULL AND position('superlike' IN def) = 0 THEN
    EXECUTE 'ALTER TABLE transactions DROP CONSTRAINT transactions_type_check';
    EXECUTE 'ALTER TABLE transactions ADD CONSTRAINT transactions_type_check '
      || replace(def, 'ARRAY[', 'ARRAY[''superlike''::text, ');
  END IF;
END $$;
