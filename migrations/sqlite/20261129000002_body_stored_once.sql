-- An event whose data is the webhook's body (the common case: Shopify, Stripe) stores its
-- envelope without that body, which the entry already holds byte for byte; `body_at` is
-- the byte offset where it goes back in (after trimming the whitespace around a JSON
-- value). NULL: the envelope is stored whole. Storing every payload twice doubled the
-- bytes written per webhook: each event row spilled onto an overflow page, written once
-- at insert and again when the event was marked published.
ALTER TABLE webhook_events ADD COLUMN body_at INTEGER NULL CHECK (body_at >= 0);
