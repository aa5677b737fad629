-- Payment widgets: what a merchant embeds with widget.js (or links to at /pay/{id}). The amount
-- is always the server's: a fixed amount, or one of a list of products the customer picks from.
CREATE TABLE widgets (
    id              text        PRIMARY KEY CHECK (id ~ '^wid_[A-Za-z0-9]{8,64}$'),
    livemode        boolean     NOT NULL,
    description     text        NOT NULL CHECK (length(description) BETWEEN 1 AND 500),
    currency        text        NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
    -- Minor units (JPY is not multiplied by 100); NULL when the customer picks a product.
    amount          bigint      CHECK (amount > 0),
    -- [{"name": "...", "amount": minor units}], empty with a fixed amount.
    products        jsonb       NOT NULL DEFAULT '[]'::jsonb CHECK (jsonb_typeof(products) = 'array'),
    collect_email   boolean     NOT NULL DEFAULT false,
    send_receipt    boolean     NOT NULL DEFAULT true,
    notify_merchant boolean     NOT NULL DEFAULT true,
    success_url     text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((amount IS NULL) <> (jsonb_array_length(products) = 0))
);

-- The one PaymentIntent of each page load (the browser's random token): a retry, a second card
-- or a reload of the script within the page reuses it.
CREATE TABLE widget_intents (
    widget_id         text        NOT NULL REFERENCES widgets (id),
    page_token        text        NOT NULL CHECK (page_token ~ '^[A-Za-z0-9_-]{16,64}$'),
    payment_intent_id text        NOT NULL UNIQUE,
    created_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (widget_id, page_token)
);
