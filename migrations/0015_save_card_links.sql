-- Save-card links: `{KASSA_PUBLIC_URL}/save-card/{token}` opens a fresh setup-mode Checkout
-- Session for the link's customer each time, so the link outlives a session's 24 hours. The
-- token is signed (HMAC-SHA256) with the installation's link key and names its row here, which
-- can be revoked. A re-pay link also names the charge whose customer must save a new card.
CREATE TABLE link_signing_keys (
    id         smallint    PRIMARY KEY CHECK (id = 1),   -- one key per installation
    secret     bytea       NOT NULL CHECK (length(secret) = 32),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE save_card_links (
    id             text        PRIMARY KEY CHECK (id ~ '^scl_[A-Za-z0-9]{8,64}$'),
    customer_id    text        NOT NULL,                -- cus_...
    livemode       boolean     NOT NULL,
    charge_id      bigint      REFERENCES charges (id), -- a re-pay link
    expires_at     timestamptz NOT NULL,
    revoked_at     timestamptz,
    opened         integer     NOT NULL DEFAULT 0,      -- sessions made from it
    last_opened_at timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX save_card_links_customer ON save_card_links (customer_id);
