-- Every action taken in the console (reconcile now, requeue, and later the
-- release of a held authorization): who, when, what, why and what came of
-- it. A row is written in the same transaction as the action's effect, so
-- the audit never claims an action that did not happen, nor misses one that
-- did. Refusals the console decides itself (a dead letter already requeued,
-- a command no longer unknown) are rows too, with `ok = false`.
CREATE TABLE console_audit (
    id       bigserial PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT now(),
    -- The name the person gave at login (or `api` for a bearer token), and
    -- the role of the token they used. Never the token.
    actor    text NOT NULL,
    role     text NOT NULL CHECK (role IN ('viewer', 'operator')),
    action   text NOT NULL,
    -- What it was done to: a command id, a dead letter id, a filter.
    target   text,
    reason   text,
    ok       boolean NOT NULL,
    result   text NOT NULL
);
CREATE INDEX console_audit_by_target ON console_audit (target, id);
