-- no-transaction
-- Replaced by `outbox_published_created` (previous migration).
DROP INDEX CONCURRENTLY IF EXISTS outbox_created;
