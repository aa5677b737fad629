-- Payments customers made on the merchant's pages: a paid Checkout Session (mode=payment) or a
-- PaymentIntent created through POST /api/payment-intents. One row per PaymentIntent, whoever
-- saw it succeed first (the webhook, the success page, or the confirmation call): the insert
-- that wins queues the notification and receipt e-mails in the same transaction; the others
-- find the row and do nothing.
CREATE TABLE payments (
    id                  bigserial   PRIMARY KEY,
    payment_intent_id   text        NOT NULL UNIQUE,      -- pi_...
    checkout_session_id text        UNIQUE,               -- cs_... when paid through Checkout
    customer_id         text,                             -- cus_... when known
    amount              bigint      NOT NULL CHECK (amount >= 0), -- minor units (JPY is not multiplied by 100)
    currency            text        NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
    description         text,
    receipt_email       text,
    livemode            boolean     NOT NULL,
    -- Who recorded it: 'webhook', 'success_page' or 'confirmation'.
    recorded_by         text        NOT NULL CHECK (recorded_by IN ('webhook', 'success_page', 'confirmation')),
    created_at          timestamptz NOT NULL DEFAULT now()
);
