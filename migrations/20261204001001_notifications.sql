-- Notifications in (shared/spec/notifications.md): every notification that
-- arrives on a known path is a row here BEFORE it is answered, with the raw
-- body as received, what was read from it, whether its signature verified,
-- the answer given, and what was done about it. A repeat (same gateway,
-- account, payment, status, amount and verification) is counted on the first
-- row (`repeats`) and answered from it: it never acts twice.
CREATE TABLE notifications (
    id              bigserial PRIMARY KEY,
    gateway         text NOT NULL,
    account         text NOT NULL,
    -- The raw body exactly as received (bounded by `[notifications] max_body`).
    body            bytea NOT NULL,
    -- What was read from it (NULL when it was not a JSON object).
    fields          jsonb,
    -- Whether the signature (Praxis) or checksum (Paymentz) verified, and if
    -- not, why (never a secret, never the expected value).
    verified        boolean NOT NULL,
    problem         text,
    payment_id      text,
    status          text,
    amount_minor    bigint,
    currency        text,
    -- The repeat key: NULL (never a repeat) when the payment could not be read.
    dedupe_key      text,
    -- The answer given: HTTP status and body; the same for every repeat.
    answer_status   integer NOT NULL,
    answer_body     text NOT NULL,
    -- What was done: acted (a command), held, ignored (and why), unverified
    -- (waiting for the gateway's own answer to an inquiry).
    decision        text NOT NULL CHECK (decision IN ('acted', 'held', 'ignored', 'unverified')),
    reason          text,
    -- The rule that decided, and the inputs it matched on.
    rule            text,
    matched         jsonb,
    command_id      text,
    -- A hold's deadline, and who released it (operator) or what ended it.
    hold_deadline   timestamptz,
    hold_closed_at  timestamptz,
    hold_closed_by  text,
    -- Inquiries of an unverified notification: when the next one is due.
    inquire_at      timestamptz,
    inquiries       integer NOT NULL DEFAULT 0,
    -- A command of ours this notification settled as evidence.
    settled_command text,
    repeats         integer NOT NULL DEFAULT 0,
    last_repeat_at  timestamptz,
    received_at     timestamptz NOT NULL DEFAULT now(),
    decided_at      timestamptz
);
CREATE UNIQUE INDEX notifications_repeat ON notifications (gateway, account, dedupe_key)
    WHERE dedupe_key IS NOT NULL;
CREATE INDEX notifications_received ON notifications (received_at);
CREATE INDEX notifications_payment ON notifications (gateway, payment_id);
CREATE INDEX notifications_open_holds ON notifications (hold_deadline)
    WHERE decision = 'held' AND hold_closed_at IS NULL;
CREATE INDEX notifications_inquiries ON notifications (inquire_at)
    WHERE decision = 'unverified' AND inquire_at IS NOT NULL;
