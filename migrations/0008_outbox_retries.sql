-- Per-message retries of the outbox. A message RabbitMQ refuses (e.g. its exchange does not
-- exist) waits until `next_attempt_at`, with a delay that grows with `attempts`, so the messages
-- after it are published meanwhile; one that keeps failing shows its attempts and `last_error`
-- (`kassa outbox list`).
ALTER TABLE outbox
    ADD COLUMN attempts        integer     NOT NULL DEFAULT 0,
    ADD COLUMN next_attempt_at timestamptz,
    ADD COLUMN last_error      text;

-- Retention: the relay deletes published messages older than KASSA_OUTBOX_RETENTION.
CREATE INDEX outbox_published_at_idx ON outbox (published_at) WHERE published_at IS NOT NULL;
