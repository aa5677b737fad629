-- The id of this Kassa installation: generated once, when the database is first migrated, and
-- never changed. Every Idempotency-Key Kassa derives and the metadata of every PaymentIntent and
-- re-pay session it creates carry it (`kassa:{installation}:charge:{id}:{attempt}`,
-- `metadata[kassa_installation]`), so two installations sharing one Stripe account never send
-- each other's keys, and neither acts on the other's PaymentIntents or sessions. `kassa status`
-- shows it. One row, ever.
CREATE TABLE installation (
    singleton  boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    id         text        NOT NULL CHECK (id ~ '^[0-9a-f]{16}$'),   -- 64 random bits, hex
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO installation (id) VALUES (substr(md5(gen_random_uuid()::text), 1, 16));
