-- Settles, in one round trip, an inbox event whose handling writes nothing but its inbox mark and
-- calls no one: an echo of Kassa's own write whose answer is already recorded (the note in
-- stripe_own_writes under `own_key` for `own_object`), or an event with nothing to read
-- (`own_key` NULL). Called as a statement of its own, outside any transaction: its implicit
-- transaction commits when it returns.
--
-- Returns 'settled' (marked processed now), 'duplicate' (processed before: nothing done) or
-- 'not_recorded' (no note for the write: nothing marked; the caller handles the event the usual
-- way, re-fetching it).
--
-- It takes the same locks in the same order as the usual claim and echo check (the event's inbox
-- row, then the write's key), so a concurrent delivery of the same event on either path waits for
-- this one and then finds it processed. Each statement of a plpgsql function sees what committed
-- before it ran, so the note check sees the write's transaction once its key lock is released.
--
-- synchronous_commit is off for this transaction only: the commit returns before its WAL reaches
-- the disk. A crash of PostgreSQL in the next few hundred milliseconds can lose the mark, never
-- any work: the event wrote nothing else, and the record an echo relies on was committed
-- synchronously by the write's own transaction before this one could see its note. A lost mark
-- only lets a later copy of the event (a redelivery, the events poller) be settled again the same
-- way (docs/ARCHITECTURE.md, "Events that need no Stripe call").
CREATE FUNCTION kassa_settle_without_effects(
    event_id         text,
    event_type       text,
    event_livemode   boolean,
    own_key          text,
    own_object       text,
    lock_timeout_ms  integer
) RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
    done_at timestamptz;
BEGIN
    PERFORM set_config('lock_timeout', lock_timeout_ms::text || 'ms', true);
    PERFORM set_config('synchronous_commit', 'off', true);
    INSERT INTO stripe_events (id, type, livemode) VALUES (event_id, event_type, event_livemode)
        ON CONFLICT (id) DO NOTHING;
    SELECT processed_at INTO done_at FROM stripe_events WHERE id = event_id FOR UPDATE;
    IF done_at IS NOT NULL THEN
        RETURN 'duplicate';
    END IF;
    IF own_key IS NOT NULL THEN
        -- The writer holds this lock from before it sends the write until its transaction ends.
        PERFORM pg_advisory_xact_lock(hashtext(own_key));
        IF NOT EXISTS (SELECT 1 FROM stripe_own_writes w
                       WHERE w.idempotency_key = own_key AND w.object_id = own_object) THEN
            RETURN 'not_recorded';
        END IF;
    END IF;
    UPDATE stripe_events SET processed_at = clock_timestamp(), attempts = attempts + 1
        WHERE id = event_id;
    RETURN 'settled';
END
$$;
