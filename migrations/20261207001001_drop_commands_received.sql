-- no-transaction
-- `commands_received (received_at)` duplicated `commands_by_received
-- (received_at DESC, id DESC)`: retention's `received_at < $1 ORDER BY
-- received_at` batches walk the latter backwards, as fast, and the console
-- already uses it. Every index costs the hot path an entry per insert and
-- per non-HOT update (a command's conclusion changes `state`, which partial
-- indexes name, so it is never HOT): this one was 2-3 btree insertions per
-- command for nothing. Dropped CONCURRENTLY, alone in its file, so that a
-- large deployment's writes are not blocked while it goes.
DROP INDEX CONCURRENTLY IF EXISTS commands_received;
