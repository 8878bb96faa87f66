-- A producer's duplicate that arrives while its command is still running gets
-- a replayed event once the outcome is decided, sent (like any event) to the
-- duplicate's own reply_to when it had one. The counter on `commands` stays
-- as a summary for `show`.
CREATE TABLE pending_replays (
    id                   bigserial PRIMARY KEY,
    command_id           text NOT NULL REFERENCES commands (id),
    reply_to             text,
    reply_correlation_id text,
    received_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pending_replays_by_command ON pending_replays (command_id);
