-- no-transaction
-- Retention's published events (`created_at < $1 AND published_at IS NOT
-- NULL ORDER BY created_at`) need an index on created_at, but only over
-- published rows. `outbox_created` covered every row and cost two entries
-- per event: one at insert, one at the relay's mark, which is never a HOT
-- update (it changes published_at, named by `outbox_unpublished`'s
-- predicate). Restricted to published rows it costs one, at the mark, and
-- serves the same statement (its WHERE states the predicate). Built
-- CONCURRENTLY, alone in its file; the old index goes in the next file.
CREATE INDEX CONCURRENTLY IF NOT EXISTS outbox_published_created ON outbox (created_at)
    WHERE published_at IS NOT NULL;
