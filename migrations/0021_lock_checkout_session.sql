-- Opens the fulfilment of Checkout Session `session_id` in one round trip: takes the session's
-- lock, then the lock of each Idempotency-Key in `own_keys` (in the order given), then reads
-- Kassa's record of the session. The locks are transaction-level advisory locks on
-- hashtext(id), the same as kassa-store's lock_stripe_object and lock_own_key, and are held
-- until the caller's transaction ends.
--
-- The record is read by a statement of its own, after the locks: this function is VOLATILE, and
-- PostgreSQL gives each statement of a VOLATILE function a fresh snapshot ("VOLATILE functions
-- obtain a fresh snapshot at the start of each query they execute", docs: function volatility
-- categories), so the read sees everything committed by the fulfilment that held the session's
-- lock before this one.
--
-- Order: the session first, then the keys. Every fulfilment of a session takes the session's
-- lock before any key of its own; an echo of a write takes only its event's inbox row and then
-- the write's key (kassa_settle_without_effects, the worker's echo check), never a session lock,
-- so no cycle can form.
CREATE FUNCTION kassa_lock_checkout_session(session_id text, own_keys text[])
RETURNS SETOF checkout_sessions
LANGUAGE plpgsql
VOLATILE
AS $$
DECLARE
    own_key text;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext(session_id));
    FOREACH own_key IN ARRAY coalesce(own_keys, ARRAY[]::text[]) LOOP
        PERFORM pg_advisory_xact_lock(hashtext(own_key));
    END LOOP;
    RETURN QUERY SELECT * FROM checkout_sessions WHERE id = session_id;
END
$$;
