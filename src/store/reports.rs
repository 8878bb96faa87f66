//! The queries behind the operator commands (`list`, `dead-letters requeue`,
//! `migrate`): read-mostly views of the worker's tables that the pipeline
//! itself never needs.

use sqlx::PgConnection;
use time::OffsetDateTime;

use super::dead_letters::DeadLetterRow;
use super::lifecycle::CommandState;
use super::StoreError;
use crate::outcome::Outcome;

/// A command as `list` shows it: what was asked, what it came to, and when.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AttentionRow {
    pub id: String,
    pub gateway: Option<String>,
    pub account: Option<String>,
    pub operation: Option<String>,
    pub payment_id: Option<String>,
    pub amount_minor: Option<i64>,
    pub currency: Option<String>,
    pub state: CommandState,
    pub outcome: Option<Outcome>,
    pub reason: Option<String>,
    pub settled_outcome: Option<Outcome>,
    pub result: Option<serde_json::Value>,
    pub settled_result: Option<serde_json::Value>,
    pub attempts: i32,
    pub reconcile_checks: i32,
    pub received_at: OffsetDateTime,
    pub decided_at: Option<OffsetDateTime>,
    pub settled_at: Option<OffsetDateTime>,
}

/// Commands whose *current* outcome is `outcome`, most recently decided first.
///
/// The current outcome is the settled one when an `unknown` was settled, else
/// the first one: so `unknown` lists only what reconciliation has not settled
/// yet, and an `unknown` later settled as `failed` is listed under `failed`.
/// `since` applies to when the command reached that outcome, not to when it
/// was received: a command received yesterday whose retries ran out a minute
/// ago (or whose `unknown` was just settled as `failed`) is news now. The
/// index `commands_by_current_outcome` is on exactly these two expressions.
pub async fn needing_attention(
    conn: &mut PgConnection,
    outcome: &str,
    since: Option<OffsetDateTime>,
    limit: i64,
) -> Result<Vec<AttentionRow>, StoreError> {
    sqlx::query_as(
        "SELECT id, gateway, account, operation, payment_id, amount_minor, currency, state, outcome,
                reason, settled_outcome, result, settled_result, attempts, reconcile_checks,
                received_at, decided_at, settled_at
         FROM commands
         WHERE COALESCE(settled_outcome, outcome) = $1
           AND ($2::timestamptz IS NULL OR COALESCE(settled_at, decided_at) >= $2)
         ORDER BY COALESCE(settled_at, decided_at) DESC, id
         LIMIT $3",
    )
    .bind(outcome)
    .bind(since)
    .bind(limit)
    .fetch_all(conn)
    .await
    .map_err(StoreError::from)
}

/// One dead letter, locked until the transaction ends, so that two operators
/// requeueing it at once cannot both publish it.
pub async fn lock_dead_letter(
    conn: &mut PgConnection,
    id: i64,
) -> Result<Option<DeadLetterRow>, StoreError> {
    sqlx::query_as(&format!(
        "SELECT {} FROM dead_letters WHERE id = $1 FOR UPDATE",
        super::dead_letters::ROW_COLUMNS
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
    .map_err(StoreError::from)
}

/// The migration versions recorded as applied; empty when sqlx's bookkeeping
/// table does not exist yet (a database never migrated).
pub async fn applied_migrations(conn: &mut PgConnection) -> Result<Vec<i64>, StoreError> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await?;
    if !exists {
        return Ok(Vec::new());
    }
    sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
        .fetch_all(conn)
        .await
        .map_err(StoreError::from)
}
