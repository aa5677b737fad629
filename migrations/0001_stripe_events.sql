-- The inbox: one row per Stripe event the worker has seen (Stripe sends duplicates and retries).
-- A row is claimed with SELECT ... FOR UPDATE inside the transaction that records the event's
-- effects, and processed_at is set in that same transaction, so an event's effects commit once.
CREATE TABLE stripe_events (
    id               text        PRIMARY KEY,             -- evt_...
    type             text        NOT NULL,                -- e.g. checkout.session.completed
    livemode         boolean     NOT NULL,
    received_at      timestamptz NOT NULL DEFAULT now(),
    processed_at     timestamptz,                         -- set when the event's effects committed
    attempts         integer     NOT NULL DEFAULT 0,      -- completed plus failed attempts
    last_error       text,
    dead_lettered_at timestamptz                          -- set when a permanent failure sent it to kassa.dead
);

-- `kassa dlq list` and reconciliation look for events that were given up on and never processed.
CREATE INDEX stripe_events_dead_lettered_idx ON stripe_events (dead_lettered_at)
    WHERE dead_lettered_at IS NOT NULL AND processed_at IS NULL;
