//! The `commands` table: the idempotency record of each command, its state
//! and recovery point, its schedule, and which instance runs it now.
//!
//! The payment leases are in [`super::leases`], the statements that write a
//! whole pipeline stage in one round trip in [`super::stages`]; both are
//! re-exported here, where callers have always found them.

use std::time::Duration;

use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use super::lifecycle::{CommandState, Phase};
use super::StoreError;
use crate::outcome::Outcome;

pub use super::leases::{
    claim_payment, claim_payments, release_payment, wake_if_payment_free, PaymentClaim, PaymentKey,
};
pub use super::stages::{
    conclude_many, intake_new, record_intents, Concluded, ConcludedBatch, Decision, Intent,
    Outgoing, Replays, Taken,
};

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
    pub state: CommandState,
    pub phase: Phase,
    pub attempts: i32,
    pub next_run_at: Option<OffsetDateTime>,
    pub lease_owner: Option<Uuid>,
    pub lease_until: Option<OffsetDateTime>,
    pub before_snapshot: Option<serde_json::Value>,
    pub outcome: Option<Outcome>,
    pub reason: Option<String>,
    pub result: Option<serde_json::Value>,
    pub settled_outcome: Option<Outcome>,
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

pub(super) fn secs(d: Duration) -> f64 {
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
    Ok(!insert_rows(conn, &[c], running_for).await?.is_empty())
}

/// Reads a command and locks its row until the transaction ends.
pub async fn lock(conn: &mut PgConnection, id: &str) -> Result<Option<CommandRow>, StoreError> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM commands WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
    .map_err(StoreError::from)
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
        .map_err(StoreError::from)
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
    .map_err(StoreError::from)
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
        .map_err(StoreError::from)
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
    .map_err(StoreError::from)
}

/// Extends the leases of the commands this instance is driving.
///
/// A row another transaction holds locked is skipped, never waited for:
/// this statement locks many rows in whatever order its plan reads them,
/// and the batch writers, which lock in id order, would close a cycle with
/// it (PostgreSQL's log showed one in a cluster failover run). A skipped
/// row is being written by its own writer right now, and its lease still
/// has a third to run when the next heartbeat comes.
pub async fn heartbeat(
    conn: &mut PgConnection,
    owner: Uuid,
    ids: &[String],
    lease: Duration,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE commands SET lease_until = now() + make_interval(secs => $3)
         WHERE id = ANY(ARRAY(SELECT id FROM commands
                               WHERE id = ANY($2) AND lease_owner = $1
                                 FOR NO KEY UPDATE SKIP LOCKED))",
    )
    .bind(owner)
    .bind(ids)
    .bind(secs(lease))
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "WITH free AS (
            SELECT gateway, payment_key FROM payment_leases
             WHERE command_id = ANY($2) AND owner = $1
               FOR NO KEY UPDATE SKIP LOCKED
         )
         UPDATE payment_leases l SET expires_at = now() + make_interval(secs => $3)
           FROM free f
          WHERE l.gateway = f.gateway AND l.payment_key = f.payment_key",
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
///
/// Only `running` and `unsettled` rows have a lease owner (every statement
/// that moves a command to `queued` or `done` clears it). Saying so lets the
/// rows be found through the partial indexes of those two states; `lease_owner`
/// alone has no index, and with 10,000,000 finished commands the statement
/// read the whole table at every stop (1.1 M pages, 6 s; docs/performance.md,
/// sixth session).
pub async fn hand_back(conn: &mut PgConnection, owner: Uuid) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "UPDATE commands SET state = CASE WHEN state = 'running' THEN 'queued' ELSE state END,
            lease_owner = NULL, lease_until = NULL, next_run_at = now(), updated_at = now()
         WHERE lease_owner = $1 AND phase = 'ready' AND (state = 'running' OR state = 'unsettled')",
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
    .map_err(StoreError::from)
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
    insert_rows(conn, rows, Some((owner, lease))).await
}

/// [`insert`] and [`insert_many`]: the rows leased to an owner (`running`)
/// or queued for the scheduler.
async fn insert_rows(
    conn: &mut PgConnection,
    rows: &[&NewCommand],
    running_for: Option<(Uuid, Duration)>,
) -> Result<std::collections::HashSet<String>, StoreError> {
    if rows.is_empty() {
        return Ok(Default::default());
    }
    let (state, owner, lease) = match running_for {
        Some((owner, lease)) => ("running", Some(owner), Some(secs(lease))),
        None => ("queued", None, None),
    };
    let col = |f: fn(&NewCommand) -> Option<&str>| rows.iter().map(|r| f(r)).collect::<Vec<_>>();
    let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    let payloads: Vec<&str> = rows.iter().map(|r| r.payload.as_str()).collect();
    let fingerprints: Vec<&str> = rows.iter().map(|r| r.fingerprint.as_str()).collect();
    let amounts: Vec<Option<i64>> = rows.iter().map(|r| r.amount_minor).collect();
    let inserted: Vec<String> = sqlx::query_scalar(
        "INSERT INTO commands (id, payload, fingerprint, gateway, account, operation, payment_id,
            amount_minor, currency, reply_to, correlation_id, state, next_run_at, lease_owner, lease_until)
         SELECT u.*, $12, now(), $13, now() + make_interval(secs => $14)
           FROM UNNEST($1::text[], $2::text[]::jsonb[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                       $8::int8[], $9::text[], $10::text[], $11::text[]) AS u
         ON CONFLICT (id) DO NOTHING
         RETURNING id",
    )
    .bind(&ids)
    .bind(&payloads)
    .bind(&fingerprints)
    .bind(col(|r| r.gateway.as_deref()))
    .bind(col(|r| r.account.as_deref()))
    .bind(col(|r| r.operation.as_deref()))
    .bind(col(|r| r.payment_id.as_deref()))
    .bind(&amounts)
    .bind(col(|r| r.currency.as_deref()))
    .bind(col(|r| r.reply_to.as_deref()))
    .bind(col(|r| r.correlation_id.as_deref()))
    .bind(state)
    .bind(owner)
    .bind(lease)
    .fetch_all(conn)
    .await?;
    Ok(inserted.into_iter().collect())
}
