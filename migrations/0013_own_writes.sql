-- Kassa's own Stripe writes whose result is in Kassa's records. A row is written in the same
-- transaction as the record it describes (a customer or payment method upserted from the answer
-- to the write sent under `idempotency_key`, or a charge settled as succeeded by it), so a row
-- exists only if that record, as committed, is at least as new as the object the write produced. An event that echoes the write (Stripe
-- puts the request's Idempotency-Key in `request.idempotency_key`) then has nothing to teach:
-- the worker records it processed without re-fetching the object.
CREATE TABLE stripe_own_writes (
    idempotency_key text        NOT NULL,
    object_id       text        NOT NULL,        -- cus_..., pm_..., pi_...
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (idempotency_key, object_id)
);
-- Pruned with the inbox's processed rows (KASSA_INBOX_RETENTION).
CREATE INDEX stripe_own_writes_recorded_at_idx ON stripe_own_writes (recorded_at);

-- The inbox's retention (KASSA_INBOX_RETENTION) deletes processed rows by age, a batch at a time;
-- this index finds them without reading the rows still waiting or failing.
CREATE INDEX stripe_events_processed_at_idx ON stripe_events (processed_at)
    WHERE processed_at IS NOT NULL;
