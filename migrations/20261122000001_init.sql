-- The worker's whole state. See docs/architecture.md for how a command moves
-- through these tables. Secrets never reach any column: requests and bodies are
-- stored as the gateway clients recorded them, with secrets already removed.

-- One row per command id ever seen (the idempotency key).
CREATE TABLE commands (
    id               text PRIMARY KEY,
    -- The command as received, and a hash of its normalized form: a repeat with
    -- another fingerprint is an idempotency conflict.
    payload          jsonb NOT NULL,
    fingerprint      text NOT NULL,
    gateway          text,
    account          text,
    operation        text,
    payment_id       text,
    amount_minor     bigint,
    currency         text,
    -- AMQP reply_to and correlation_id of the command, for the reply copy of its events.
    reply_to         text,
    correlation_id   text,
    -- queued: waiting for next_run_at; running: leased by lease_owner until
    -- lease_until; unsettled: outcome `unknown` published, reconciliation goes on;
    -- done: final.
    state            text NOT NULL CHECK (state IN ('queued', 'running', 'unsettled', 'done')),
    -- The recovery point. `calling` is written and committed BEFORE a gateway call
    -- with a side effect; whoever finds it after a crash must inquire before resending.
    phase            text NOT NULL DEFAULT 'ready' CHECK (phase IN ('ready', 'calling')),
    attempts         integer NOT NULL DEFAULT 0,
    next_run_at      timestamptz,
    lease_owner      uuid,
    lease_until      timestamptz,
    -- What the payment looked like before the side effect (refund, partial capture):
    -- the inquiry afterwards compares against it to tell whether THIS attempt applied.
    before_snapshot  jsonb,
    -- The first decided outcome. It never changes; `unknown` is settled separately.
    outcome          text CHECK (outcome IN ('succeeded', 'declined', 'failed', 'unknown', 'rejected')),
    reason           text,
    result           jsonb,
    settled_outcome  text CHECK (settled_outcome IN ('succeeded', 'declined', 'failed')),
    settled_result   jsonb,
    reconcile_checks integer NOT NULL DEFAULT 0,
    -- Producer duplicates received while the command was still running; each gets
    -- a replayed event when the outcome is decided.
    pending_replays  integer NOT NULL DEFAULT 0,
    received_at      timestamptz NOT NULL DEFAULT now(),
    decided_at       timestamptz,
    settled_at       timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX commands_due ON commands (next_run_at) WHERE state IN ('queued', 'unsettled');
CREATE INDEX commands_stale ON commands (lease_until) WHERE state = 'running';
CREATE INDEX commands_by_payment ON commands (gateway, payment_id);
CREATE INDEX commands_by_outcome ON commands (outcome, decided_at);
CREATE INDEX commands_unsettled ON commands (decided_at) WHERE state = 'unsettled';

-- At most one command per payment runs at a time, whichever instance holds it.
-- The key is the payment id, or `list:<command id>` for commands without one.
CREATE TABLE payment_leases (
    gateway     text NOT NULL,
    payment_key text NOT NULL,
    command_id  text NOT NULL,
    owner       uuid NOT NULL,
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (gateway, payment_key)
);
CREATE INDEX payment_leases_owner ON payment_leases (owner);

-- Every HTTP exchange with a gateway, and every intent to make one.
CREATE TABLE attempts (
    id                 bigserial PRIMARY KEY,
    command_id         text NOT NULL REFERENCES commands (id),
    -- The command's attempt number this exchange belongs to (0: before the first).
    attempt_no         integer NOT NULL,
    -- operation: the command's own call; inquiry: a before-snapshot or a
    -- reconciliation check; auth: a token fetch.
    kind               text NOT NULL CHECK (kind IN ('operation', 'inquiry', 'auth')),
    -- in_flight: recorded before sending; completed; interrupted: the process
    -- died (or lost its lease) while it was in flight.
    status             text NOT NULL CHECK (status IN ('in_flight', 'completed', 'interrupted')),
    purpose            text,
    method             text,
    url                text,
    request            jsonb,
    signature_sent     text,
    http_status        integer,
    response_body      text,
    signature_received text,
    signature_verified boolean,
    latency_ms         double precision,
    error              text,
    classification     text CHECK (classification IN ('succeeded', 'declined', 'not_applied', 'ambiguous')),
    started_at         timestamptz NOT NULL DEFAULT now(),
    finished_at        timestamptz
);
CREATE INDEX attempts_by_command ON attempts (command_id, id);
CREATE INDEX attempts_in_flight ON attempts (command_id) WHERE status = 'in_flight';

-- The transactional outbox: events committed with the outcome they report, and
-- published (with confirms) by the relay.
CREATE TABLE outbox (
    id               bigserial PRIMARY KEY,
    message_id       uuid NOT NULL UNIQUE,
    command_id       text,
    exchange         text NOT NULL,
    routing_key      text NOT NULL,
    -- A second copy goes to reply_to (default exchange) with this correlation_id.
    reply_to         text,
    reply_correlation_id text,
    body             jsonb NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    publish_attempts integer NOT NULL DEFAULT 0,
    last_error       text,
    published_at     timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;
CREATE INDEX outbox_by_command ON outbox (command_id);

-- Messages that could not be read as a command, kept with their original body.
CREATE TABLE dead_letters (
    id           bigserial PRIMARY KEY,
    reason       text NOT NULL,
    body         bytea NOT NULL,
    properties   jsonb NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    requeued_at  timestamptz
);
