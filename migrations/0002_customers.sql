-- Customers and their saved payment methods, as last fetched from Stripe.
-- Writes are upserts that may arrive out of order; two facts only ever move one way:
-- a deleted customer stays deleted, a detached payment method stays detached.
CREATE TABLE customers (
    id                     text        PRIMARY KEY,        -- cus_...
    email                  text,
    name                   text,
    default_payment_method text,                           -- pm_..., invoice_settings.default_payment_method
    deleted                boolean     NOT NULL DEFAULT false,
    livemode               boolean     NOT NULL,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE payment_methods (
    id          text        PRIMARY KEY,                   -- pm_...
    -- The customer it was attached to. Kept after a detach: Stripe never reattaches a detached
    -- payment method, so this is written once and then only kept.
    customer_id text,
    brand       text,                                      -- card.brand; null for non-card methods
    last4       text,
    exp_month   integer,
    exp_year    integer,
    attached    boolean     NOT NULL DEFAULT false,
    detached_at timestamptz,                               -- once set, attached stays false
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX payment_methods_customer_idx ON payment_methods (customer_id);
