-- Where `kassa sync customers` has got to. Each page of Stripe's customer list is recorded in one
-- transaction with this row, so a sync that was interrupted (Ctrl-C, a crash, Stripe down)
-- continues after the last page it recorded; the counts are the whole sync's so far.
CREATE TABLE customer_sync (
    name           text        PRIMARY KEY,        -- 'customers'
    starting_after text,                           -- the last customer of the last recorded page (Stripe's list cursor)
    customers      bigint      NOT NULL DEFAULT 0, -- customers recorded
    new_customers  bigint      NOT NULL DEFAULT 0, -- of which Kassa had no row before
    cards          bigint      NOT NULL DEFAULT 0, -- saved cards recorded
    new_cards      bigint      NOT NULL DEFAULT 0,
    skipped        bigint      NOT NULL DEFAULT 0, -- customers deleted at Stripe while the sync ran
    started_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz                     -- NULL while a sync is under way (or was interrupted)
);
