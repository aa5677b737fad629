-- Back-office charges of saved cards: a row first, then a message on kassa.charges that the
-- executor turns into an off-session PaymentIntent (Idempotency-Key kassa:charge:{id}:{attempt}).
-- States: pending -> succeeded | processing | requires_recheckout | failed;
--         processing -> succeeded | failed | requires_recheckout;
--         requires_recheckout -> retrying | failed;
--         retrying -> succeeded | processing | requires_recheckout | failed;
--         succeeded and failed are final. Every transition is a guarded UPDATE (kassa-store's
--         charges module), so a redelivered message cannot move a charge backwards.
CREATE TABLE charges (
    id                    bigserial   PRIMARY KEY,
    -- The client's idempotency handle: creating the same reference again returns this row.
    reference             text        NOT NULL UNIQUE CHECK (reference <> ''),
    customer_id           text        NOT NULL,                -- cus_...
    payment_method_id     text,                                -- pm_...; null = the customer's default at execution time
    amount                bigint      NOT NULL CHECK (amount > 0), -- minor units (JPY is not multiplied by 100)
    currency              text        NOT NULL CHECK (currency ~ '^[a-z]{3}$'), -- lower-case ISO 4217, as Stripe writes it
    description           text,
    metadata              jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    status                text        NOT NULL CHECK (status IN ('pending', 'processing', 'succeeded',
                                          'requires_recheckout', 'retrying', 'failed')),
    attempt               integer     NOT NULL DEFAULT 1 CHECK (attempt >= 1), -- part of the Idempotency-Key
    payment_intent_id     text,                                -- pi_... of the current attempt
    decline_code          text,                                -- e.g. insufficient_funds; kept after a successful retry
    failure_code          text,                                -- Stripe's error code, or Kassa's reason
    failure_message       text,
    recheckout_session_id text,                                -- cs_... the customer re-pays with now
    recheckout_url        text,
    recheckout_expires_at timestamptz,
    reminders_sent        integer     NOT NULL DEFAULT 0 CHECK (reminders_sent >= 0),
    livemode              boolean     NOT NULL DEFAULT false,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);

-- Listing by status pages by id (keyset), so the status index carries the id too.
CREATE INDEX charges_status_idx ON charges (status, id);
CREATE INDEX charges_customer_idx ON charges (customer_id);
-- payment_intent.* webhooks find their charge by PaymentIntent, checkout.session.* by session;
-- unique because each key names one charge (one PaymentIntent settles one charge, never two).
CREATE UNIQUE INDEX charges_payment_intent_idx ON charges (payment_intent_id)
    WHERE payment_intent_id IS NOT NULL;
CREATE UNIQUE INDEX charges_recheckout_session_idx ON charges (recheckout_session_id)
    WHERE recheckout_session_id IS NOT NULL;

-- Until now checkout_sessions.charge_id was a plain column (0003) and no charge existed, so any
-- value in it names nothing (e.g. metadata of a session created by another installation sharing
-- the Stripe account); clear it so the foreign key can be validated.
UPDATE checkout_sessions SET charge_id = NULL WHERE charge_id IS NOT NULL;
ALTER TABLE checkout_sessions
    ADD CONSTRAINT checkout_sessions_charge_id_fkey
    FOREIGN KEY (charge_id) REFERENCES charges (id) ON DELETE SET NULL;
