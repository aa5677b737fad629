-- Checkout Sessions Kassa created or was told about (mode=setup to save a card, mode=payment,
-- and re-checkouts that collect a new card for a failed back-office charge).
CREATE TABLE checkout_sessions (
    id                text        PRIMARY KEY,             -- cs_...
    mode              text        NOT NULL,                -- setup | payment | subscription
    status            text        NOT NULL,                -- open | complete | expired
    livemode          boolean     NOT NULL,
    customer_id       text,
    purpose           text        NOT NULL CHECK (purpose IN ('setup', 'payment', 'recheckout')),
    -- The back-office charge a re-checkout collects a card for. A later migration adds the
    -- charges table and the foreign key; until then this is a plain column.
    charge_id         bigint,
    setup_intent_id   text,
    payment_intent_id text,
    payment_method_id text,
    url               text,
    expires_at        timestamptz,
    completed_at      timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX checkout_sessions_customer_idx ON checkout_sessions (customer_id);
CREATE INDEX checkout_sessions_charge_idx ON checkout_sessions (charge_id) WHERE charge_id IS NOT NULL;
