-- What the executor records about the current attempt of a charge before it sends anything to
-- Stripe (committed first, then the PaymentIntent is created), so that any later run of the same
-- attempt (a redelivery, a retry from the ladder, a dead letter replayed days later) knows the
-- attempt may already have reached Stripe and looks it up there before sending again.
ALTER TABLE charges
    -- When the current attempt was first sent (set just before the first POST).
    ADD COLUMN attempt_started_at        timestamptz,
    -- The card the current attempt charges, resolved once (the requested card, or the customer's
    -- default at the first send): a retry sends the same parameters, never today's default.
    ADD COLUMN attempt_payment_method_id text,
    -- The Idempotency-Key of the current attempt's PaymentIntent create, and how many times it
    -- was replaced: Stripe forgets keys after 24 hours, so an attempt first sent more than 23
    -- hours ago is sent again only under a new key, and only after Stripe was seen to have no
    -- PaymentIntent for it.
    ADD COLUMN attempt_key               text,
    ADD COLUMN attempt_key_generation    integer     NOT NULL DEFAULT 0 CHECK (attempt_key_generation >= 0),
    ADD COLUMN attempt_key_started_at    timestamptz,
    -- Why the charge needs a person (status needs_review): Stripe could not be asked whether an
    -- attempt older than 23 hours was charged, so Kassa neither sends it again nor gives up.
    ADD COLUMN review_reason             text;

ALTER TABLE charges DROP CONSTRAINT charges_status_check;
ALTER TABLE charges ADD CONSTRAINT charges_status_check CHECK (status IN ('pending', 'processing',
    'succeeded', 'requires_recheckout', 'retrying', 'failed', 'needs_review'));

-- One key names one attempt.
CREATE UNIQUE INDEX charges_attempt_key_idx ON charges (attempt_key) WHERE attempt_key IS NOT NULL;

-- Charges still open from before: their attempt may have been sent under the key of the time,
-- kassa:charge:{id}:{attempt}, whose PaymentIntent carries kassa_charge_id and kassa_reference but
-- no installation. Recording that key and the time the attempt became current makes the executor
-- look it up before sending anything (see docs/CHARGES.md, "Charges from before the installation id").
UPDATE charges
SET attempt_started_at = updated_at,
    attempt_key_started_at = updated_at,
    attempt_key = 'kassa:charge:' || id || ':' || attempt,
    attempt_payment_method_id = payment_method_id
WHERE status IN ('pending', 'retrying');
