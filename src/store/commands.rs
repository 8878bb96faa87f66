//! The `commands` and `payment_leases` tables: the idempotency record of each
//! command, its state and recovery point, its schedule, and who may run it now.

use std::time::Duration;

use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use super::attempts::{self, record_ctes, Recorded, Recording};
use super::StoreError;

/// A command as first stored.
#[derive(Debug, Clone)]
pub struct NewCommand {
    pub id: String,
    /// The command's contract fields as JSON text (bounded, escaped; its
    /// `metadata` as the producer wrote it). Text, not a `serde_json::Value`:
    /// through a Value a number in the metadata would be rounded.
    pub payload: String,
    pub fingerprint: String,
    pub gateway: Option<String>,
    pub account: Option<String>,
    pub operation: Option<String>,
    pub payment_id: Option<String>,
    pub amount_minor: Option<i64>,
    pub currency: Option<String>,
    pub reply_to: Option<String>,
    pub correlation_id: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CommandRow {
    pub id: String,
    /// JSON text (read as `payload::text`), as [`NewCommand::payload`].
    pub payload: String,
    pub fingerprint: String,
    pub gateway: Option<String>,
    pub account: Option<String>,
    pub operation: Option<String>,
    pub payment_id: Option<String>,
    pub amount_minor: Option<i64>,
    pub currency: Option<String>,
    pub reply_to: Option<String>,
    pub correlation_id: Option<String>,
    pub state: String,
    pub phase: String,
    pub attempts: i32,
    pub next_run_at: Option<OffsetDateTime>,
    pub lease_owner: Option<Uuid>,
    pub lease_until: Option<OffsetDateTime>,
    pub before_snapshot: Option<serde_json::Value>,
    pub outcome: Option<String>,
    pub reason: Option<String>,
    pub result: Option<serde_json::Value>,
    pub settled_outcome: Option<String>,
    pub settled_result: Option<serde_json::Value>,
    pub reconcile_checks: i32,
    pub pending_replays: i32,
    pub received_at: OffsetDateTime,
    pub decided_at: Option<OffsetDateTime>,
    pub settled_at: Option<OffsetDateTime>,
}

pub(crate) const COLUMNS: &str = "id, payload::text AS payload, fingerprint, gateway, account, operation, payment_id, amount_minor,
    currency, reply_to, correlation_id, state, phase, attempts, next_run_at, lease_owner, lease_until,
    before_snapshot, outcome, reason, result, settled_outcome, settled_result, reconcile_checks,
    pending_replays, received_at, decided_at, settled_at";

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Inserts a command unless its id exists. Returns whether it was inserted.
/// `running_for` leases it to `owner` at once (the in-process fast path);
/// otherwise it is queued for the scheduler.
pub async fn insert(
    conn: &mut PgConnection,
    c: &NewCommand,
    running_for: Option<(Uuid, Duration)>,
) -> Result<bool, StoreError> {
    let (state, owner, lease) = match running_for {
        Some((owner, lease)) => ("running", Some(owner), Some(secs(lease))),
        None => ("queued", None, None),
    };
    let inserted = sqlx::query(
        "INSERT INTO commands (id, payload, fingerprint, gateway, account, operation, payment_id,
            amount_minor, currency, reply_to, correlation_id, state, next_run_at, lease_owner, lease_until)
         VALUES ($1, $2::jsonb, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, now(), $13,
                 now() + make_interval(secs => $14))
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&c.id)
    .bind(&c.payload)
    .bind(&c.fingerprint)
    .bind(&c.gateway)
    .bind(&c.account)
    .bind(&c.operation)
    .bind(&c.payment_id)
    .bind(c.amount_minor)
    .bind(&c.currency)
    .bind(&c.reply_to)
    .bind(&c.correlation_id)
    .bind(state)
    .bind(owner)
    .bind(lease)
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Reads a command and locks its row until the transaction ends.
pub async fn lock(conn: &mut PgConnection, id: &str) -> Result<Option<CommandRow>, StoreError> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM commands WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Locks existing commands until the transaction ends, in the order of `ids`.
/// Ids without a row are skipped. (A lateral lookup per id, like the batch
/// writers': `ORDER BY id` would sort by the database's collation, not in
/// the byte order the callers sort by.)
pub async fn lock_many(conn: &mut PgConnection, ids: &[&str]) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "SELECT 1 FROM UNNEST($1::text[]) AS u(id)
          CROSS JOIN LATERAL (SELECT 1 FROM commands WHERE id = u.id FOR UPDATE) c",
    )
    .bind(ids)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get(conn: &mut PgConnection, id: &str) -> Result<Option<CommandRow>, StoreError> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM commands WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// A producer duplicate arrived while the command was still running: it gets
/// a replayed event (to its own `reply_to`) once the outcome is decided.
pub async fn add_pending_replay(
    conn: &mut PgConnection,
    id: &str,
    reply_to: Option<&str>,
    reply_correlation_id: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO pending_replays (command_id, reply_to, reply_correlation_id) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(reply_to)
        .bind(reply_correlation_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("UPDATE commands SET pending_replays = pending_replays + 1, updated_at = now() WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// A duplicate waiting for its replayed event.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PendingReplay {
    pub command_id: String,
    pub reply_to: Option<String>,
    pub reply_correlation_id: Option<String>,
}

/// Takes (and deletes) the pending replays of decided commands.
pub async fn take_pending_replays(
    conn: &mut PgConnection,
    ids: &[&str],
) -> Result<Vec<PendingReplay>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_as(
        "DELETE FROM pending_replays WHERE command_id = ANY($1)
         RETURNING command_id, reply_to, reply_correlation_id",
    )
    .bind(ids)
    .fetch_all(conn)
    .await
}

/// Takes the lease on a payment for `command_id`: granted when free, expired,
/// or already this command's. The last case is a recovery: whoever holds the
/// command's own lease (taken exclusively by [`claim_due`]) is its only runner,
/// so it inherits the payment lease of the command's previous, dead, runner.
pub async fn claim_payment(
    conn: &mut PgConnection,
    gateway: &str,
    payment_key: &str,
    command_id: &str,
    owner: Uuid,
    lease: Duration,
) -> Result<bool, StoreError> {
    let granted = sqlx::query(
        "INSERT INTO payment_leases (gateway, payment_key, command_id, owner, expires_at)
         VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))
         ON CONFLICT (gateway, payment_key) DO UPDATE
            SET command_id = EXCLUDED.command_id, owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at
          WHERE payment_leases.expires_at < now()
             OR payment_leases.command_id = EXCLUDED.command_id",
    )
    .bind(gateway)
    .bind(payment_key)
    .bind(command_id)
    .bind(owner)
    .bind(secs(lease))
    .execute(conn)
    .await?;
    Ok(granted.rows_affected() == 1)
}

/// Releases a payment lease held by `command_id`, and wakes the commands that
/// were waiting for that payment.
pub async fn release_payment(
    conn: &mut PgConnection,
    gateway: &str,
    payment_key: &str,
    command_id: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "DELETE FROM payment_leases WHERE gateway = $1 AND payment_key = $2 AND command_id = $3",
    )
    .bind(gateway)
    .bind(payment_key)
    .bind(command_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE commands SET next_run_at = now()
         WHERE gateway = $1 AND payment_id = $2 AND state = 'queued' AND next_run_at > now()",
    )
    .bind(gateway)
    .bind(payment_key)
    .execute(conn)
    .await?;
    Ok(())
}

/// Schedules the next attempt of a command whose last attempt is known not to
/// have taken effect, giving up this instance's lease. The before-snapshot is
/// dropped: other commands may change the payment meanwhile, so the next
/// attempt takes a fresh one. Never use it for a command that may be mid-call
/// (see [`defer`]).
pub async fn requeue(
    conn: &mut PgConnection,
    id: &str,
    owner: Uuid,
    delay: Duration,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE commands SET state = 'queued', phase = 'ready', lease_owner = NULL, lease_until = NULL,
            before_snapshot = NULL, next_run_at = now() + make_interval(secs => $3), updated_at = now()
         WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
    )
    .bind(id)
    .bind(owner)
    .bind(secs(delay))
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Gives up this instance's claim on a command without touching its recovery
/// point: used when its payment is busy. A command found mid-call stays
/// `calling`, so that whoever runs it next still inquires first.
pub async fn defer(
    conn: &mut PgConnection,
    id: &str,
    owner: Uuid,
    delay: Duration,
) -> Result<bool, StoreError> {
    Ok(defer_many(conn, &[id.to_string()], owner, delay).await? == 1)
}

/// [`defer`] for many commands in one statement; returns how many were deferred.
pub async fn defer_many(
    conn: &mut PgConnection,
    ids: &[String],
    owner: Uuid,
    delay: Duration,
) -> Result<u64, StoreError> {
    if ids.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(
        "UPDATE commands SET state = CASE WHEN state = 'unsettled' THEN 'unsettled' ELSE 'queued' END,
            lease_owner = NULL, lease_until = NULL,
            next_run_at = now() + make_interval(secs => $3), updated_at = now()
         WHERE id = ANY($1) AND lease_owner = $2 AND state IN ('running', 'unsettled')",
    )
    .bind(ids)
    .bind(owner)
    .bind(secs(delay))
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Back to `ready` after reconciliation proved the last attempt did not take effect.
pub async fn clear_intent(
    conn: &mut PgConnection,
    id: &str,
    owner: Uuid,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE commands SET phase = 'ready', updated_at = now() WHERE id = $1 AND lease_owner = $2",
    )
    .bind(id)
    .bind(owner)
    .execute(conn)
    .await?;
    Ok(())
}

/// Stores the first outcome of a command. `unsettled` keeps it for background
/// reconciliation (outcome `unknown`), starting after `reconcile_in`.
pub async fn decide(
    conn: &mut PgConnection,
    id: &str,
    owner: Option<Uuid>,
    outcome: &str,
    reason: Option<&str>,
    result: &str,
    reconcile_in: Option<Duration>,
) -> Result<bool, StoreError> {
    let (state, next) = match reconcile_in {
        Some(d) => ("unsettled", Some(secs(d))),
        None => ("done", None),
    };
    let done = sqlx::query(
        "UPDATE commands SET state = $3, phase = 'ready', outcome = $4, reason = $5, result = $6::jsonb,
            decided_at = now(), updated_at = now(), lease_owner = NULL, lease_until = NULL,
            next_run_at = CASE WHEN $7::float8 IS NULL THEN NULL ELSE now() + make_interval(secs => $7) END
         WHERE id = $1 AND outcome IS NULL AND ($2::uuid IS NULL OR lease_owner = $2)",
    )
    .bind(id)
    .bind(owner)
    .bind(state)
    .bind(outcome)
    .bind(reason)
    .bind(result)
    .bind(next)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The event a command's outcome published last (its settlement, else its
/// decision), as JSON text: a replay re-publishes it without rounding any
/// number of its metadata through a float.
pub async fn current_result(
    conn: &mut PgConnection,
    id: &str,
) -> Result<Option<String>, StoreError> {
    sqlx::query_scalar("SELECT COALESCE(settled_result, result)::text FROM commands WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await
        .map(Option::flatten)
}

/// Settles an `unknown` outcome once reconciliation found out what happened.
pub async fn settle(
    conn: &mut PgConnection,
    id: &str,
    owner: Uuid,
    outcome: &str,
    result: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE commands SET state = 'done', settled_outcome = $3, settled_result = $4::jsonb, settled_at = now(),
            reconcile_checks = reconcile_checks + 1, lease_owner = NULL, lease_until = NULL,
            next_run_at = NULL, updated_at = now()
         WHERE id = $1 AND lease_owner = $2 AND state = 'unsettled'",
    )
    .bind(id)
    .bind(owner)
    .bind(outcome)
    .bind(result)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Reconciliation of an `unknown` could not tell yet: try again after `delay`.
pub async fn reschedule_unsettled(
    conn: &mut PgConnection,
    id: &str,
    owner: Uuid,
    delay: Duration,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE commands SET reconcile_checks = reconcile_checks + 1, lease_owner = NULL, lease_until = NULL,
            next_run_at = now() + make_interval(secs => $3), updated_at = now()
         WHERE id = $1 AND lease_owner = $2 AND state = 'unsettled'",
    )
    .bind(id)
    .bind(owner)
    .bind(secs(delay))
    .execute(conn)
    .await?;
    Ok(())
}

/// Claims up to `limit` commands that are due (queued or unsettled and past
/// `next_run_at`) or whose owner's lease has expired (a crashed instance).
pub async fn claim_due(
    conn: &mut PgConnection,
    owner: Uuid,
    lease: Duration,
    limit: i64,
) -> Result<Vec<CommandRow>, StoreError> {
    sqlx::query_as(&format!(
        "WITH due AS (
            SELECT id FROM commands
             WHERE (state = 'queued' AND next_run_at <= now())
                OR (state = 'running' AND lease_until < now())
                OR (state = 'unsettled' AND next_run_at <= now() AND (lease_until IS NULL OR lease_until < now()))
             ORDER BY next_run_at NULLS FIRST
             LIMIT $3
             FOR UPDATE SKIP LOCKED
         )
         UPDATE commands c
            SET state = CASE WHEN c.state = 'unsettled' THEN 'unsettled' ELSE 'running' END,
                lease_owner = $1, lease_until = now() + make_interval(secs => $2), updated_at = now()
           FROM due WHERE c.id = due.id
         RETURNING {}",
        COLUMNS
            .split(',')
            .map(|c| format!("c.{}", c.trim()))
            .collect::<Vec<_>>()
            .join(", ")
    ))
    .bind(owner)
    .bind(secs(lease))
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Extends the leases of the commands this instance is driving.
pub async fn heartbeat(
    conn: &mut PgConnection,
    owner: Uuid,
    ids: &[String],
    lease: Duration,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE commands SET lease_until = now() + make_interval(secs => $3)
         WHERE id = ANY($2) AND lease_owner = $1",
    )
    .bind(owner)
    .bind(ids)
    .bind(secs(lease))
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE payment_leases SET expires_at = now() + make_interval(secs => $3)
         WHERE command_id = ANY($2) AND owner = $1",
    )
    .bind(owner)
    .bind(ids)
    .bind(secs(lease))
    .execute(conn)
    .await?;
    Ok(())
}

/// Gives back commands this instance holds but has not started calling for, so
/// that another instance can run them at once (graceful shutdown).
pub async fn hand_back(conn: &mut PgConnection, owner: Uuid) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "UPDATE commands SET state = CASE WHEN state = 'running' THEN 'queued' ELSE state END,
            lease_owner = NULL, lease_until = NULL, next_run_at = now(), updated_at = now()
         WHERE lease_owner = $1 AND phase = 'ready'",
    )
    .bind(owner)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "DELETE FROM payment_leases l USING commands c
         WHERE l.owner = $1 AND c.id = l.command_id AND c.phase = 'ready'",
    )
    .bind(owner)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// What this worker captured on a payment, from its own succeeded captures:
/// the captured amount the refund limit is checked against.
pub async fn captured_total(
    conn: &mut PgConnection,
    gateway: &str,
    payment_id: &str,
) -> Result<Option<i64>, StoreError> {
    sqlx::query_scalar(
        "SELECT sum(amount_minor)::int8 FROM commands
         WHERE gateway = $1 AND payment_id = $2 AND operation = 'capture'
           AND (outcome = 'succeeded' OR settled_outcome = 'succeeded')",
    )
    .bind(gateway)
    .bind(payment_id)
    .fetch_one(conn)
    .await
}

/// Makes a queued command due now if nobody holds its payment any more.
pub async fn wake_if_payment_free(
    conn: &mut PgConnection,
    id: &str,
    gateway: &str,
    payment_key: &str,
) -> Result<bool, StoreError> {
    // The lease row is read with a lock: a release that is deleting it right
    // now is waited for, and then the payment reads as free.
    let done = sqlx::query(
        "WITH lease AS (
            SELECT 1 FROM payment_leases WHERE gateway = $2 AND payment_key = $3 FOR KEY SHARE
         )
         UPDATE commands SET next_run_at = now()
         WHERE id = $1 AND state IN ('queued', 'unsettled')
           AND NOT EXISTS (SELECT 1 FROM lease)",
    )
    .bind(id)
    .bind(gateway)
    .bind(payment_key)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Inserts the new commands of an intake batch in one statement, leased to
/// `owner`. Returns the ids that were new (the others already existed, or
/// appeared twice in the batch).
pub async fn insert_many(
    conn: &mut PgConnection,
    rows: &[&NewCommand],
    owner: Uuid,
    lease: Duration,
) -> Result<std::collections::HashSet<String>, StoreError> {
    if rows.is_empty() {
        return Ok(Default::default());
    }
    let col = |f: fn(&NewCommand) -> Option<String>| rows.iter().map(|r| f(r)).collect::<Vec<_>>();
    let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    let payloads: Vec<&str> = rows.iter().map(|r| r.payload.as_str()).collect();
    let fingerprints: Vec<String> = rows.iter().map(|r| r.fingerprint.clone()).collect();
    let amounts: Vec<Option<i64>> = rows.iter().map(|r| r.amount_minor).collect();
    let inserted: Vec<String> = sqlx::query_scalar(
        "INSERT INTO commands (id, payload, fingerprint, gateway, account, operation, payment_id,
            amount_minor, currency, reply_to, correlation_id, state, next_run_at, lease_owner, lease_until)
         SELECT u.*, 'running', now(), $12, now() + make_interval(secs => $13)
           FROM UNNEST($1::text[], $2::text[]::jsonb[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                       $8::int8[], $9::text[], $10::text[], $11::text[]) AS u
         ON CONFLICT (id) DO NOTHING
         RETURNING id",
    )
    .bind(&ids)
    .bind(&payloads)
    .bind(&fingerprints)
    .bind(col(|r| r.gateway.clone()))
    .bind(col(|r| r.account.clone()))
    .bind(col(|r| r.operation.clone()))
    .bind(col(|r| r.payment_id.clone()))
    .bind(&amounts)
    .bind(col(|r| r.currency.clone()))
    .bind(col(|r| r.reply_to.clone()))
    .bind(col(|r| r.correlation_id.clone()))
    .bind(owner)
    .bind(secs(lease))
    .fetch_all(conn)
    .await?;
    Ok(inserted.into_iter().collect())
}

/// One payment lease wanted by a command.
#[derive(Debug, Clone)]
pub struct PaymentClaim {
    pub gateway: String,
    pub payment_key: String,
    pub command_id: String,
}

/// [`claim_payment`] for many commands in one statement. Each payment may
/// appear once; returns the command ids that got their lease.
pub async fn claim_payments(
    conn: &mut PgConnection,
    claims: &[PaymentClaim],
    owner: Uuid,
    lease: Duration,
) -> Result<std::collections::HashSet<String>, StoreError> {
    if claims.is_empty() {
        return Ok(Default::default());
    }
    let gateways: Vec<&str> = claims.iter().map(|c| c.gateway.as_str()).collect();
    let keys: Vec<&str> = claims.iter().map(|c| c.payment_key.as_str()).collect();
    let ids: Vec<&str> = claims.iter().map(|c| c.command_id.as_str()).collect();
    let granted: Vec<String> = sqlx::query_scalar(
        "INSERT INTO payment_leases (gateway, payment_key, command_id, owner, expires_at)
         SELECT g, k, c, $4, now() + make_interval(secs => $5)
           FROM UNNEST($1::text[], $2::text[], $3::text[]) AS u(g, k, c)
         ON CONFLICT (gateway, payment_key) DO UPDATE
            SET command_id = EXCLUDED.command_id, owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at
          WHERE payment_leases.expires_at < now()
             OR payment_leases.command_id = EXCLUDED.command_id
         RETURNING command_id",
    )
    .bind(&gateways)
    .bind(&keys)
    .bind(&ids)
    .bind(owner)
    .bind(secs(lease))
    .fetch_all(conn)
    .await?;
    Ok(granted.into_iter().collect())
}

/// One decided command in a completion batch.
#[derive(Debug, Clone)]
pub struct Decision {
    pub id: String,
    pub outcome: String,
    pub reason: Option<String>,
    /// The result event, serialized once: stored as the command's result
    /// and as its outbox row's body, and published as these bytes.
    pub result: String,
    /// `Some(delay)`: outcome `unknown`, reconciled from `delay` on.
    pub reconcile_in: Option<Duration>,
}

/// A decided command's result event, as its outbox row. The body is the
/// decision's `result`: the event is what the command's result column holds.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    pub message_id: Uuid,
    pub routing_key: &'a str,
    pub reply_to: Option<&'a str>,
    pub reply_correlation_id: Option<&'a str>,
}

/// What [`conclude_many`] did for a command this owner still held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Concluded {
    /// Duplicates waiting for a replay (the counter is reset; the caller
    /// takes them with [`take_pending_replays`] in the same transaction).
    pub pending_replays: i32,
    /// The outbox row of its event, claimed for the caller to publish.
    pub outbox_row: i64,
}

/// The completion writer's batch in one statement: records the calls'
/// exchanges (`recordings`), decides each command this owner still holds,
/// releases its payment lease and wakes the commands waiting on it, and
/// stages its event (`events[i]` is `decisions[i]`'s, claimed for `claim`).
/// A command no longer held gets neither decision nor event; its exchanges
/// are still recorded. `claims[i]` is the payment claim of `decisions[i]`.
///
/// Rows are checked and locked in a `LATERAL` lookup by primary key, one per
/// batch row, and then updated by id alone. Putting the guards
/// (`lease_owner = $owner`, `outcome IS NULL`) in the UPDATE's own WHERE let
/// the planner estimate them from statistics, which lag this fast-changing
/// table and never know a fresh owner id: it then scanned every in-flight
/// command once per batch row (300 ms statements under load). A lateral
/// lookup can only run once per batch row, whatever the statistics.
#[allow(clippy::too_many_arguments)]
pub async fn conclude_many(
    conn: &mut PgConnection,
    owner: Uuid,
    decisions: &[&Decision],
    claims: &[&PaymentClaim],
    events: &[Outgoing<'_>],
    exchange: &str,
    claim: Duration,
    recordings: &[&Recording],
) -> Result<std::collections::HashMap<String, Concluded>, StoreError> {
    if decisions.is_empty() {
        return attempts::record_many(conn, recordings)
            .await
            .map(|()| Default::default());
    }
    debug_assert_eq!(decisions.len(), claims.len());
    debug_assert_eq!(decisions.len(), events.len());
    let ids: Vec<&str> = decisions.iter().map(|d| d.id.as_str()).collect();
    let states: Vec<&str> = decisions
        .iter()
        .map(|d| {
            if d.reconcile_in.is_some() {
                "unsettled"
            } else {
                "done"
            }
        })
        .collect();
    let outcomes: Vec<&str> = decisions.iter().map(|d| d.outcome.as_str()).collect();
    let reasons: Vec<Option<&str>> = decisions.iter().map(|d| d.reason.as_deref()).collect();
    let results: Vec<&str> = decisions.iter().map(|d| d.result.as_str()).collect();
    let next: Vec<Option<f64>> = decisions.iter().map(|d| d.reconcile_in.map(secs)).collect();
    let gateways: Vec<&str> = claims.iter().map(|c| c.gateway.as_str()).collect();
    let keys: Vec<&str> = claims.iter().map(|c| c.payment_key.as_str()).collect();
    let message_ids: Vec<Uuid> = events.iter().map(|e| e.message_id).collect();
    let routing_keys: Vec<&str> = events.iter().map(|e| e.routing_key).collect();
    let reply_tos: Vec<Option<&str>> = events.iter().map(|e| e.reply_to).collect();
    let correlations: Vec<Option<&str>> = events.iter().map(|e| e.reply_correlation_id).collect();
    let query = sqlx::query_as::<_, (String, i32, i64)>(concat!(
        "WITH ",
        record_ctes!(),
        ",
         held AS (
            SELECT u.*, o.pending_replays
              FROM UNNEST($31::text[], $32::text[], $33::text[], $34::text[], $35::text[]::jsonb[],
                          $36::float8[], $38::text[], $39::text[], $40::uuid[], $41::text[],
                          $42::text[], $43::text[])
                     AS u(id, state, outcome, reason, result, next, gateway, payment_key,
                          message_id, routing_key, reply_to, reply_correlation_id)
             CROSS JOIN LATERAL (
                   SELECT pending_replays FROM commands
                    WHERE id = u.id AND outcome IS NULL AND lease_owner = $37
                      FOR UPDATE
                   ) o
         ),
         decided AS (
            UPDATE commands c
               SET state = h.state, phase = 'ready', outcome = h.outcome, reason = h.reason,
                   result = h.result, decided_at = now(), updated_at = now(), lease_owner = NULL,
                   lease_until = NULL, pending_replays = 0,
                   next_run_at = CASE WHEN h.next IS NULL THEN NULL
                                      ELSE now() + make_interval(secs => h.next) END
              FROM held h
             WHERE c.id = h.id
            RETURNING h.*
         ),
         released AS (
            DELETE FROM payment_leases l
             USING decided d
             WHERE l.gateway = d.gateway AND l.payment_key = d.payment_key AND l.command_id = d.id
            RETURNING l.gateway, l.payment_key
         ),
         waiting AS (
            SELECT w.id
              FROM released r
             CROSS JOIN LATERAL (
                   SELECT id FROM commands
                    WHERE gateway = r.gateway AND payment_id = r.payment_key
                      AND state = 'queued' AND next_run_at > now()
                   ) w
         ),
         woken AS (
            UPDATE commands SET next_run_at = now()
              FROM waiting w
             WHERE commands.id = w.id
         ),
         staged AS (
            INSERT INTO outbox (message_id, command_id, exchange, routing_key, reply_to,
                                reply_correlation_id, body, claimed_until)
            SELECT message_id, id, $44, routing_key, reply_to, reply_correlation_id, result,
                   now() + make_interval(secs => $45)
              FROM decided
            RETURNING id, command_id
         )
         SELECT d.id, d.pending_replays, s.id FROM decided d JOIN staged s ON s.command_id = d.id"
    ));
    let rows = Recorded::of(recordings)
        .bind(query)
        .bind(&ids)
        .bind(&states)
        .bind(&outcomes)
        .bind(&reasons)
        .bind(&results)
        .bind(&next)
        .bind(owner)
        .bind(&gateways)
        .bind(&keys)
        .bind(&message_ids)
        .bind(&routing_keys)
        .bind(&reply_tos)
        .bind(&correlations)
        .bind(exchange)
        .bind(secs(claim))
        .fetch_all(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(id, pending_replays, outbox_row)| {
            (
                id,
                Concluded {
                    pending_replays,
                    outbox_row,
                },
            )
        })
        .collect())
}

/// One command about to make its call with a side effect.
#[derive(Debug, Clone, Copy)]
pub struct Intent<'a> {
    pub command_id: &'a str,
    /// The payment as it was before this attempt, when the gateway needs it
    /// to settle an ambiguous answer.
    pub before_snapshot: Option<&'a serde_json::Value>,
    /// Recorded on the in-flight attempt row (the operation's wire name).
    pub purpose: &'a str,
}

/// Commits the recovery point before calls with a side effect, for many
/// commands in one statement: phase `calling`, the attempt count, the
/// before-snapshot, and the attempt's in-flight row; with the exchanges of
/// the before-snapshot inquiries (`inquiries`), so that the intent writer's
/// whole batch is one statement, and one round trip in autocommit. Returns,
/// for each command this owner still held, its new attempt number and the
/// in-flight row id. (Rows are checked and locked by primary key first; see
/// [`conclude_many`].)
pub async fn record_intents(
    conn: &mut PgConnection,
    owner: Uuid,
    intents: &[Intent<'_>],
    inquiries: &[&Recording],
) -> Result<std::collections::HashMap<String, (i32, i64)>, StoreError> {
    if intents.is_empty() {
        return attempts::record_many(conn, inquiries)
            .await
            .map(|()| Default::default());
    }
    let ids: Vec<&str> = intents.iter().map(|i| i.command_id).collect();
    let snapshots: Vec<Option<&serde_json::Value>> =
        intents.iter().map(|i| i.before_snapshot).collect();
    let purposes: Vec<&str> = intents.iter().map(|i| i.purpose).collect();
    let query = sqlx::query_as::<_, (String, i32, i64)>(concat!(
        "WITH ",
        record_ctes!(),
        ",
         held AS (
            SELECT u.id, u.snapshot, u.purpose
              FROM UNNEST($31::text[], $32::jsonb[], $34::text[]) AS u(id, snapshot, purpose)
             CROSS JOIN LATERAL (
                   SELECT 1 FROM commands
                    WHERE id = u.id AND lease_owner = $33 AND state = 'running'
                      FOR UPDATE
                   ) o
             -- The inquiries' rows are inserted first, so that attempt ids
             -- follow the order of the exchanges (a CTE runs when first read).
             WHERE (SELECT count(*) FROM added) >= 0
         ),
         marked AS (
            UPDATE commands c SET phase = 'calling', attempts = c.attempts + 1,
               before_snapshot = COALESCE(h.snapshot, c.before_snapshot), updated_at = now()
              FROM held h
             WHERE c.id = h.id
            RETURNING c.id, c.attempts, h.purpose
         )
         INSERT INTO attempts (command_id, attempt_no, kind, status, purpose)
         SELECT id, attempts, 'operation', 'in_flight', purpose FROM marked
         RETURNING command_id, attempt_no, id"
    ));
    let rows = Recorded::of(inquiries)
        .bind(query)
        .bind(&ids)
        .bind(&snapshots)
        .bind(owner)
        .bind(&purposes)
        .fetch_all(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(id, attempt_no, row)| (id, (attempt_no, row)))
        .collect())
}
