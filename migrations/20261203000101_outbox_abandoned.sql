-- An event the broker can never take (larger than the configured maximum, or
-- refused by the broker again and again while published on its own) is
-- abandoned: kept, with its error, and no longer retried or counted in the
-- backlog. Transient failures (no connection, no confirm in time) never
-- abandon a row.
ALTER TABLE outbox
    -- When the relay gave up on it; NULL while it is still to be published.
    ADD COLUMN abandoned_at timestamptz,
    -- The last time the broker refused it (closed the channel over it): such
    -- a row is published on its own from then on, so that a refusal can be
    -- told apart from one caused by another message of the same batch.
    ADD COLUMN refused_at timestamptz,
    -- Refusals in a row while published on its own.
    ADD COLUMN refusals integer NOT NULL DEFAULT 0;

-- The poll's index: rows still to publish.
DROP INDEX outbox_unpublished;
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL AND abandoned_at IS NULL;
CREATE INDEX outbox_abandoned ON outbox (abandoned_at) WHERE abandoned_at IS NOT NULL;
