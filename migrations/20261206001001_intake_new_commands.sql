-- Intake's fast path in one round trip (`store::commands::insert_new_batch`,
-- called by `pipeline/intake.rs`).
--
-- A batch of new, valid commands with distinct ids is stored by one call of
-- this function, sent in autocommit: one payment lease claimed per payment,
-- then the commands inserted already in the state that follows (leased to
-- the caller when their payment was granted, else queued to be looked at
-- again after `p_recheck`), with the first attempt's recovery point (phase
-- `calling`, attempt 1, an `in_flight` attempt row) for the granted ones
-- that need no before-snapshot. Before, the same was BEGIN, five
-- statements and COMMIT: six round trips.
--
-- It is one statement, so one transaction: a crash leaves all of it
-- committed or none of it, and the caller acks the deliveries only after
-- it returned. It only ever stores new commands: when any of the ids exists,
-- it does nothing and returns no row, and the caller stores the batch in a
-- transaction as before (duplicates, replays, conflicts). Should an id be
-- stored by someone else between that check and the insert, the insert
-- skips it and the function raises `BO001`, so that nothing of it (the
-- leases claimed included) is committed; the caller takes the slow path.
--
-- The only rows it locks that others can see are payment leases, in the
-- order of the claims, as the transaction did; it locks no existing
-- command, so it cannot wait in a cycle with the batch writers, which lock
-- commands by id and then release leases.
CREATE FUNCTION intake_new_commands(
    p_ids text[], p_payloads text[], p_fingerprints text[], p_gateways text[],
    p_accounts text[], p_operations text[], p_payment_ids text[], p_amounts int8[],
    p_currencies text[], p_reply_tos text[], p_correlation_ids text[],
    p_owner uuid, p_lease float8, p_recheck float8,
    p_claim_gateways text[], p_claim_keys text[], p_claim_ids text[],
    p_intent_ids text[], p_purposes text[])
RETURNS TABLE (o_id text, o_granted boolean, o_attempt_no integer, o_in_flight bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_granted text[];
    v_inserted integer;
BEGIN
    -- One lookup by primary key per id (LATERAL, LIMIT: never pulled up
    -- into a join): `id = ANY (p_ids)` got a generic plan made while the
    -- table was nearly empty, a sequential scan, kept as it grew.
    IF EXISTS (SELECT 1 FROM UNNEST(p_ids) AS u(id)
                CROSS JOIN LATERAL (SELECT 1 FROM commands c WHERE c.id = u.id LIMIT 1) x) THEN
        RETURN;
    END IF;

    WITH granted AS (
        INSERT INTO payment_leases (gateway, payment_key, command_id, owner, expires_at)
        SELECT g, k, c, p_owner, now() + make_interval(secs => p_lease)
          FROM UNNEST(p_claim_gateways, p_claim_keys, p_claim_ids) AS u(g, k, c)
        ON CONFLICT (gateway, payment_key) DO UPDATE
           SET command_id = EXCLUDED.command_id, owner = EXCLUDED.owner,
               expires_at = EXCLUDED.expires_at
         WHERE payment_leases.expires_at < now()
            OR payment_leases.command_id = EXCLUDED.command_id
        RETURNING command_id
    )
    SELECT COALESCE(array_agg(command_id), '{}') INTO v_granted FROM granted;

    -- A command whose payment is busy is queued, as `defer_many` would
    -- leave it: looked at again after p_recheck, or sooner when the
    -- payment is released (which wakes the commands waiting on it).
    INSERT INTO commands (id, payload, fingerprint, gateway, account, operation, payment_id,
        amount_minor, currency, reply_to, correlation_id, state, phase, attempts,
        next_run_at, lease_owner, lease_until)
    SELECT u.id, u.payload::jsonb, u.fingerprint, u.gateway, u.account, u.operation,
           u.payment_id, u.amount, u.currency, u.reply_to, u.correlation_id,
           CASE WHEN g THEN 'running' ELSE 'queued' END,
           CASE WHEN g AND i THEN 'calling' ELSE 'ready' END,
           CASE WHEN g AND i THEN 1 ELSE 0 END,
           CASE WHEN g THEN now() ELSE now() + make_interval(secs => p_recheck) END,
           CASE WHEN g THEN p_owner END,
           CASE WHEN g THEN now() + make_interval(secs => p_lease) END
      FROM UNNEST(p_ids, p_payloads, p_fingerprints, p_gateways, p_accounts, p_operations,
                  p_payment_ids, p_amounts, p_currencies, p_reply_tos, p_correlation_ids)
             AS u(id, payload, fingerprint, gateway, account, operation, payment_id, amount,
                  currency, reply_to, correlation_id)
     CROSS JOIN LATERAL (SELECT u.id = ANY (v_granted) AS g, u.id = ANY (p_intent_ids) AS i) f
    ON CONFLICT (id) DO NOTHING;
    GET DIAGNOSTICS v_inserted = ROW_COUNT;
    IF v_inserted <> cardinality(p_ids) THEN
        RAISE EXCEPTION 'a command of the batch was stored meanwhile' USING ERRCODE = 'BO001';
    END IF;

    RETURN QUERY
    WITH started AS (
        INSERT INTO attempts (command_id, attempt_no, kind, status, purpose)
        SELECT i.id, 1, 'operation', 'in_flight', i.purpose
          FROM UNNEST(p_intent_ids, p_purposes) AS i(id, purpose)
         WHERE i.id = ANY (v_granted)
        RETURNING command_id, attempt_no, id
    )
    SELECT u.id, u.id = ANY (v_granted), s.attempt_no, s.id
      FROM UNNEST(p_ids) AS u(id)
      LEFT JOIN started s ON s.command_id = u.id;
END
$$;
