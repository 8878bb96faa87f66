-- Intake's fast path takes its locks in the order every other writer does:
-- command ids first, payment leases after.
--
-- `intake_new_commands` (20261206001001) claimed the leases first and then
-- inserted the commands. The slow path (`store::commands::insert_many`, then
-- `claim_payments`, in one transaction) inserts the commands first. When a
-- producer's duplicate reached two instances at once, one on each path, each
-- waited for the other: the fast path for the slow path's uncommitted
-- command id, the slow path for the fast path's uncommitted lease.
-- PostgreSQL broke the cycle after `deadlock_timeout` (1 s), one batch
-- failed and was retried: nothing lost, both batches a second late. Seen in
-- the cluster failover's logs under steady load
-- (tests/intake_one_statement.rs reproduces it).
--
-- Now the commands are inserted first, in the order of their ids (the
-- caller sorts them), those with a claim already leased to the caller as if
-- granted. Then the leases are claimed, in the order of their keys. The few
-- whose payment turns out busy are queued by one update, as `defer_many`
-- queues them on the slow path. The function still writes exactly what the
-- slow path's transaction writes, and it is still one statement, so a crash
-- leaves all of it or none of it.
--
-- While it waits on an id another transaction has inserted, it holds no
-- lease. So two intakes, fast or slow, wait for each other only in the order
-- of their ids, then of their payment keys; never in a cycle.
CREATE OR REPLACE FUNCTION intake_new_commands(
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
    v_refused text;
BEGIN
    -- One lookup by primary key per id (LATERAL, LIMIT: never pulled up
    -- into a join): `id = ANY (p_ids)` got a generic plan made while the
    -- table was nearly empty, a sequential scan, kept as it grew.
    IF EXISTS (SELECT 1 FROM UNNEST(p_ids) AS u(id)
                CROSS JOIN LATERAL (SELECT 1 FROM commands c WHERE c.id = u.id LIMIT 1) x) THEN
        RETURN;
    END IF;

    -- A command with a claim is inserted leased, as if its claim will be
    -- granted; one without (the second of its payment in the batch) is
    -- queued, looked at again after p_recheck or when the payment is
    -- released.
    INSERT INTO commands (id, payload, fingerprint, gateway, account, operation, payment_id,
        amount_minor, currency, reply_to, correlation_id, state, phase, attempts,
        next_run_at, lease_owner, lease_until)
    SELECT u.id, u.payload::jsonb, u.fingerprint, u.gateway, u.account, u.operation,
           u.payment_id, u.amount, u.currency, u.reply_to, u.correlation_id,
           CASE WHEN c THEN 'running' ELSE 'queued' END,
           CASE WHEN c AND i THEN 'calling' ELSE 'ready' END,
           CASE WHEN c AND i THEN 1 ELSE 0 END,
           CASE WHEN c THEN now() ELSE now() + make_interval(secs => p_recheck) END,
           CASE WHEN c THEN p_owner END,
           CASE WHEN c THEN now() + make_interval(secs => p_lease) END
      FROM UNNEST(p_ids, p_payloads, p_fingerprints, p_gateways, p_accounts, p_operations,
                  p_payment_ids, p_amounts, p_currencies, p_reply_tos, p_correlation_ids)
             AS u(id, payload, fingerprint, gateway, account, operation, payment_id, amount,
                  currency, reply_to, correlation_id)
     CROSS JOIN LATERAL (SELECT u.id = ANY (p_claim_ids) AS c, u.id = ANY (p_intent_ids) AS i) f
    ON CONFLICT (id) DO NOTHING;
    GET DIAGNOSTICS v_inserted = ROW_COUNT;
    IF v_inserted <> cardinality(p_ids) THEN
        RAISE EXCEPTION 'a command of the batch was stored meanwhile' USING ERRCODE = 'BO001';
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

    -- Claims refused (the payment is busy): queued as `defer_many` leaves
    -- them. They are few, and one update by primary key each cannot get a
    -- plan that reads the table (the reason for the LATERAL above).
    FOR v_refused IN SELECT r.id FROM UNNEST(p_claim_ids) AS r(id)
                      WHERE NOT (r.id = ANY (v_granted)) LOOP
        UPDATE commands
           SET state = 'queued', phase = 'ready', attempts = 0, lease_owner = NULL,
               lease_until = NULL, next_run_at = now() + make_interval(secs => p_recheck)
         WHERE id = v_refused;
    END LOOP;

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
