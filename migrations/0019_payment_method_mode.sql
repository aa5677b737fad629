-- Every stored Stripe object says its mode: payment methods did not. A test-mode card and a
-- live-mode card are objects of two separate accounts' states, and an id of one mode never names
-- an object of the other.
--
-- NULL only for rows whose mode cannot be known here: a detach recorded before Kassa ever saw
-- the card, or a card whose customer Kassa has not recorded. The next write from Stripe's
-- object fills it (an upsert never sets it back to NULL).
ALTER TABLE payment_methods ADD COLUMN livemode boolean;

UPDATE payment_methods pm
SET livemode = c.livemode
FROM customers c
WHERE c.id = pm.customer_id;
