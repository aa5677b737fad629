-- When Kassa observed a card's details (brand, last4, expiry): the start of the transaction that
-- wrote them, which every writer begins before it sends the Stripe request whose answer the
-- details come from. An upsert replaces the details only with ones observed at the same time or
-- later, so an answer that missed a change of the card (read before it) never overwrites the
-- answer of a re-fetch made for that change's event, whichever commits last. See
-- docs/ARCHITECTURE.md, "A card's details: the newest observation wins".
--
-- NULL for rows written before this column, and for a detach recorded before the card was seen:
-- observed at an unknown earlier time, so any observation replaces their details.
ALTER TABLE payment_methods ADD COLUMN details_observed_at timestamptz;
