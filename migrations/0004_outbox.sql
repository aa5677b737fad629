-- Messages to publish to RabbitMQ, written in the same transaction as the state change that
-- causes them; a relay publishes them with confirms and then marks them published.
CREATE TABLE outbox (
    id            bigserial   PRIMARY KEY,
    exchange      text        NOT NULL,
    routing_key   text        NOT NULL,
    message_id    text        NOT NULL UNIQUE,             -- AMQP message_id; a duplicate enqueue is a no-op
    message_type  text        NOT NULL,
    body          jsonb       NOT NULL,
    headers       jsonb       NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- A relay that took the message holds it until then; past it (the relay died) another may take it.
    claimed_until timestamptz,
    published_at  timestamptz
);

CREATE INDEX outbox_unpublished_idx ON outbox (id) WHERE published_at IS NULL;
