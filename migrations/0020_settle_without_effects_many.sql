-- Settles many inbox events whose handling writes nothing but their inbox marks, in one round
-- trip and one transaction: the set-based form of kassa_settle_without_effects (migration 0018),
-- with the same meaning per event. Event i is (ids[i], types[i], livemodes[i]) with the write
-- (keys[i], objects[i]) an echo answers, or keys[i] NULL for an event with nothing to read.
-- Called as a statement of its own, outside any transaction: its implicit transaction commits
-- when it returns, so every mark is committed before the caller sees its outcome.
--
-- Returns one row per event, `ord` = i (1-based), with the outcome:
--   'settled'      marked processed now;
--   'duplicate'    processed before, or earlier in this same call (a second copy of an id):
--                  nothing done;
--   'not_recorded' the echo's write has no note: nothing marked; handle it the usual way;
--   'busy'         another transaction holds the event's inbox row or the write's key: nothing
--                  marked; handle it the way a single event is handled (kassa_settle_without_effects,
--                  which waits for those locks, or the usual claim).
--
-- It never waits for a lock another handler holds, since one waiting event would stall every
-- event of the call: the inbox row is locked with FOR UPDATE SKIP LOCKED and the write's key with
-- pg_try_advisory_xact_lock, and an event that cannot get either is 'busy'. So the lock order of
-- 0018 (the event's inbox row, then the write's key) is kept for each event, and since a call that
-- cannot take a lock gives up instead of waiting, its locks can never be part of a wait cycle on
-- its side: other handlers may wait for its locks, and it ends without waiting for theirs.
--
-- One wait remains, on purpose: inserting the inbox row of an event no row is visible for waits
-- when another transaction inserted the same id and has not committed yet (a unique-index
-- conflict is decided only by that transaction's outcome). Only rare transactions do that for the
-- types settled here: a claim of the usual path after a failed settle, the failure record of an
-- event, the events poller's note; the last two commit at once. The wait is bounded by
-- `lock_timeout_ms`, and the caller keeps it short: on a lock timeout (or if PostgreSQL breaks a
-- deadlock by cancelling this call) the whole transaction rolls back, nothing is marked, and the
-- caller handles every event of the call one by one as it would without this function.
--
-- synchronous_commit is off for this transaction only, as in 0018 and for the same reason: the
-- transaction writes nothing but inbox marks (and the rows of new events), so a crash that loses
-- it loses no work; a later copy of a lost event is settled again (docs/ARCHITECTURE.md, "Events
-- that need no Stripe call").
CREATE FUNCTION kassa_settle_without_effects_many(
    ids              text[],
    types            text[],
    livemodes        boolean[],
    keys             text[],
    objects          text[],
    lock_timeout_ms  integer
) RETURNS TABLE (ord integer, outcome text)
LANGUAGE plpgsql
AS $$
DECLARE
    n        integer := coalesce(array_length(ids, 1), 0);
    i        integer;
    found_id text;
    done_at  timestamptz;
BEGIN
    IF coalesce(array_length(types, 1), 0) <> n OR coalesce(array_length(livemodes, 1), 0) <> n
       OR coalesce(array_length(keys, 1), 0) <> n OR coalesce(array_length(objects, 1), 0) <> n
    THEN
        RAISE EXCEPTION 'kassa_settle_without_effects_many: arrays of different lengths';
    END IF;
    PERFORM set_config('lock_timeout', lock_timeout_ms::text || 'ms', true);
    PERFORM set_config('synchronous_commit', 'off', true);
    FOR i IN 1 .. n LOOP
        ord := i;
        -- A row locked by this same transaction (a second copy of the id) is not skipped.
        found_id := NULL;
        SELECT e.id, e.processed_at INTO found_id, done_at
            FROM stripe_events e WHERE e.id = ids[i] FOR UPDATE SKIP LOCKED;
        IF found_id IS NULL THEN
            IF EXISTS (SELECT 1 FROM stripe_events e WHERE e.id = ids[i]) THEN
                -- The row exists and another transaction holds it.
                outcome := 'busy';
                RETURN NEXT;
                CONTINUE;
            END IF;
            -- New to this transaction's view: insert it (this holds it until the end), or, if a
            -- transaction that committed meanwhile inserted it, lock it without waiting.
            INSERT INTO stripe_events (id, type, livemode) VALUES (ids[i], types[i], livemodes[i])
                ON CONFLICT (id) DO NOTHING
                RETURNING stripe_events.id, stripe_events.processed_at INTO found_id, done_at;
            IF found_id IS NULL THEN
                SELECT e.id, e.processed_at INTO found_id, done_at
                    FROM stripe_events e WHERE e.id = ids[i] FOR UPDATE SKIP LOCKED;
                IF found_id IS NULL THEN
                    outcome := 'busy';
                    RETURN NEXT;
                    CONTINUE;
                END IF;
            END IF;
        END IF;
        IF done_at IS NOT NULL THEN
            outcome := 'duplicate';
            RETURN NEXT;
            CONTINUE;
        END IF;
        IF keys[i] IS NOT NULL THEN
            -- The writer holds this lock from before it sends the write until its transaction
            -- ends; while it does, the note's fate is unknown and the event is 'busy'.
            IF NOT pg_try_advisory_xact_lock(hashtext(keys[i])) THEN
                outcome := 'busy';
                RETURN NEXT;
                CONTINUE;
            END IF;
            IF NOT EXISTS (SELECT 1 FROM stripe_own_writes w
                           WHERE w.idempotency_key = keys[i] AND w.object_id = objects[i]) THEN
                outcome := 'not_recorded';
                RETURN NEXT;
                CONTINUE;
            END IF;
        END IF;
        UPDATE stripe_events SET processed_at = clock_timestamp(), attempts = attempts + 1
            WHERE id = ids[i];
        outcome := 'settled';
        RETURN NEXT;
    END LOOP;
END
$$;
