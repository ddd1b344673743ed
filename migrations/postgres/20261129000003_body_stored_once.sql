-- An event whose data is the webhook's body (the common case: Shopify, Stripe) stores its
-- envelope without that body, which the entry already holds byte for byte; `body_at` is
-- the byte offset where it goes back in (after trimming the whitespace around a JSON
-- value). NULL: the envelope is stored whole. Storing every payload twice doubled the
-- bytes written per webhook, and pushed each envelope past the size where it is
-- compressed and moved out of line (TOAST).
ALTER TABLE webhook_events ADD COLUMN body_at integer NULL CHECK (body_at >= 0);
