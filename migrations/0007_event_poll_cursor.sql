-- Where the `/v1/events` poller (the backstop for missed webhooks) has read up to, so a restart
-- resumes there instead of re-listing Stripe's whole 30-day window. One row per poller name.
CREATE TABLE event_poll_cursor (
    name          text        PRIMARY KEY,
    last_created  bigint      NOT NULL,   -- Unix time of the newest event seen (Stripe's `created`)
    last_event_id text,                   -- its id, for the logs
    updated_at    timestamptz NOT NULL DEFAULT now()
);
