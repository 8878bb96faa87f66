-- `commands_by_outcome (outcome, decided_at)` matched no query, and it let the
-- planner answer the completion writer's guard `outcome IS NULL` from it: with
-- statistics that lag a fast-growing table it scanned every undecided command
-- once per row of a 256-command batch (300 ms statements under load). The
-- index that `list --outcome` needs is on the *current* outcome, an expression
-- the worker's guards never use.
DROP INDEX commands_by_outcome;
CREATE INDEX commands_by_current_outcome
    ON commands (COALESCE(settled_outcome, outcome), COALESCE(settled_at, decided_at) DESC);
