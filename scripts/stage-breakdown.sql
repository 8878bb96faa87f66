-- Where a command's time goes between intake and its event's mark, read from
-- a database kept by `bench --keep` (psql -d <kept database> -f this file).
--
-- Each timestamp is the start of the statement's transaction that wrote it
-- (PostgreSQL's now()): received_at = intake's, attempts.started_at = the
-- recovery point's (or the call's, for an inquiry), attempts.finished_at =
-- the completion's, outbox.published_at = the relay's mark after the confirm.
-- "snapshot" commands inquire for a before-snapshot first (Paymentz capture
-- and refund). Milliseconds, p50 / p95 per stage.
WITH per_command AS (
    SELECT c.id,
           c.received_at,
           c.decided_at,
           EXISTS (SELECT 1 FROM attempts i
                    WHERE i.command_id = c.id AND i.kind = 'inquiry'
                      AND i.started_at <= o.started_at) AS snapshot,
           (SELECT min(a.started_at) FROM attempts a WHERE a.command_id = c.id) AS first_call,
           o.started_at AS op_started,
           o.finished_at AS op_finished,
           (SELECT min(e.published_at) FROM outbox e WHERE e.command_id = c.id) AS published
      FROM commands c
      JOIN LATERAL (SELECT a.started_at, a.finished_at FROM attempts a
                     WHERE a.command_id = c.id AND a.kind = 'operation'
                     ORDER BY a.id LIMIT 1) o ON true
     WHERE c.decided_at IS NOT NULL
),
stages AS (
    SELECT p.snapshot, s.stage, extract(epoch FROM s.took) * 1000 AS ms
      FROM per_command p
     CROSS JOIN LATERAL (VALUES
           ('a received -> first call starts', p.first_call - p.received_at),
           ('b received -> operation starts', p.op_started - p.received_at),
           ('c operation starts -> decided', p.decided_at - p.op_started),
           ('d decided -> marked published', p.published - p.decided_at),
           ('e received -> decided', p.decided_at - p.received_at)) AS s (stage, took)
)
SELECT stage,
       CASE WHEN snapshot THEN 'snapshot' ELSE 'no snapshot' END AS commands,
       count(*) AS n,
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 2) AS p50_ms,
       round(percentile_cont(0.95) WITHIN GROUP (ORDER BY ms)::numeric, 2) AS p95_ms
  FROM stages
 WHERE ms IS NOT NULL
 GROUP BY stage, snapshot
 ORDER BY stage, snapshot;
