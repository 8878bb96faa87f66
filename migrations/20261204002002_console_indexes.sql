-- The indexes the operator console needs to answer on a table of a million
-- commands in well under 100 ms (docs/console.md has the plans and timings
-- of `backoffice-worker bench-console`). Each costs the worker one more
-- index entry per command it receives, and none of them is on a column the
-- worker updates, so a command's updates stay HOT (see
-- 20261122000004_room_for_hot_updates.sql).

-- The command list's order (newest received first) and its keyset pages,
-- its time range, and the overview's chart of the last hours.
CREATE INDEX commands_by_received ON commands (received_at DESC, id DESC);

-- "Id or prefix": a prefix is a range of this index whatever the
-- database's collation (the primary key's order is the collation's, which
-- LIKE cannot use unless it is "C").
CREATE INDEX commands_id_pattern ON commands (id text_pattern_ops);

-- "Metadata value": containment (`@>`) of the producer's metadata.
CREATE INDEX commands_metadata ON commands USING gin ((payload -> 'metadata') jsonb_path_ops);

-- The overview's gateway latency over the last minutes: attempts are
-- written in time order, so a BRIN index (a few pages for millions of
-- rows, next to nothing to maintain) finds the recent ones.
CREATE INDEX attempts_started_brin ON attempts USING brin (started_at);
