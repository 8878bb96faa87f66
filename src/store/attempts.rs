//! The `attempts` table: every HTTP exchange with a gateway, and every intent to make one.

use sqlx::PgConnection;

use super::StoreError;
use crate::gateways::{Classification, Exchange};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptKind {
    Operation,
    Inquiry,
    Auth,
}

impl AttemptKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptKind::Operation => "operation",
            AttemptKind::Inquiry => "inquiry",
            AttemptKind::Auth => "auth",
        }
    }
}

/// Records the intent to call, before the call. Returns the row id, which the
/// result later completes.
pub async fn start(
    conn: &mut PgConnection,
    command_id: &str,
    attempt_no: i32,
    purpose: &str,
) -> Result<i64, StoreError> {
    sqlx::query_scalar(
        "INSERT INTO attempts (command_id, attempt_no, kind, status, purpose)
         VALUES ($1, $2, 'operation', 'in_flight', $3) RETURNING id",
    )
    .bind(command_id)
    .bind(attempt_no)
    .bind(purpose)
    .fetch_one(conn)
    .await
}

/// Records what a call did. The last exchange of an operation completes the
/// in-flight row (when there is one); every other exchange gets its own row.
pub async fn record(
    conn: &mut PgConnection,
    command_id: &str,
    attempt_no: i32,
    main_kind: AttemptKind,
    in_flight_row: Option<i64>,
    exchanges: &[Exchange],
    fallback_error: Option<&str>,
) -> Result<(), StoreError> {
    let last = exchanges.len().checked_sub(1);
    for (i, exchange) in exchanges.iter().enumerate() {
        let kind = if exchange.purpose == "authToken" {
            AttemptKind::Auth
        } else {
            main_kind
        };
        let completes = if Some(i) == last { in_flight_row } else { None };
        write(conn, command_id, attempt_no, kind, completes, exchange).await?;
    }
    if exchanges.is_empty() {
        if let Some(row) = in_flight_row {
            sqlx::query(
                "UPDATE attempts SET status = 'completed', finished_at = now(), error = $2 WHERE id = $1",
            )
            .bind(row)
            .bind(fallback_error.unwrap_or("no exchange was made"))
            .execute(conn)
            .await?;
        }
    }
    Ok(())
}

async fn write(
    conn: &mut PgConnection,
    command_id: &str,
    attempt_no: i32,
    kind: AttemptKind,
    completes: Option<i64>,
    e: &Exchange,
) -> Result<(), StoreError> {
    let latency_ms = e.latency.as_secs_f64() * 1000.0;
    let classification = classification_str(e.classification);
    match completes {
        Some(row) => {
            sqlx::query(
                "UPDATE attempts SET status = 'completed', purpose = $2, method = $3, url = $4, request = $5,
                    signature_sent = $6, http_status = $7, response_body = $8, signature_received = $9,
                    signature_verified = $10, latency_ms = $11, error = $12, classification = $13,
                    started_at = $14, finished_at = now()
                 WHERE id = $1",
            )
            .bind(row)
            .bind(&e.purpose)
            .bind(&e.method)
            .bind(&e.url)
            .bind(&e.request)
            .bind(&e.signature_sent)
            .bind(e.http_status.map(i32::from))
            .bind(&e.response_body)
            .bind(&e.signature_received)
            .bind(e.signature_verified)
            .bind(latency_ms)
            .bind(&e.error)
            .bind(classification)
            .bind(e.started_at)
            .execute(conn)
            .await?;
        }
        None => {
            sqlx::query(
                "INSERT INTO attempts (command_id, attempt_no, kind, status, purpose, method, url, request,
                    signature_sent, http_status, response_body, signature_received, signature_verified,
                    latency_ms, error, classification, started_at, finished_at)
                 VALUES ($1, $2, $3, 'completed', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, now())",
            )
            .bind(command_id)
            .bind(attempt_no)
            .bind(kind.as_str())
            .bind(&e.purpose)
            .bind(&e.method)
            .bind(&e.url)
            .bind(&e.request)
            .bind(&e.signature_sent)
            .bind(e.http_status.map(i32::from))
            .bind(&e.response_body)
            .bind(&e.signature_received)
            .bind(e.signature_verified)
            .bind(latency_ms)
            .bind(&e.error)
            .bind(classification)
            .bind(e.started_at)
            .execute(conn)
            .await?;
        }
    }
    Ok(())
}

/// Marks in-flight rows of a command as interrupted: found after a crash, their
/// fate is what the reconciliation that follows finds out.
pub async fn mark_interrupted(
    conn: &mut PgConnection,
    command_id: &str,
) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "UPDATE attempts SET status = 'interrupted', finished_at = now(),
            error = 'the worker stopped while this call was in flight; its effect is settled by inquiry'
         WHERE command_id = $1 AND status = 'in_flight'",
    )
    .bind(command_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

pub fn classification_str(c: Classification) -> &'static str {
    c.as_str()
}

/// One row of `attempts`, for `show`.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct AttemptRow {
    pub id: i64,
    pub attempt_no: i32,
    pub kind: String,
    pub status: String,
    pub purpose: Option<String>,
    pub method: Option<String>,
    pub url: Option<String>,
    pub request: Option<serde_json::Value>,
    pub signature_sent: Option<String>,
    pub http_status: Option<i32>,
    pub response_body: Option<String>,
    pub signature_received: Option<String>,
    pub signature_verified: Option<bool>,
    pub latency_ms: Option<f64>,
    pub error: Option<String>,
    pub classification: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: time::OffsetDateTime,
}

pub async fn for_command(
    conn: &mut PgConnection,
    command_id: &str,
) -> Result<Vec<AttemptRow>, StoreError> {
    sqlx::query_as(
        "SELECT id, attempt_no, kind, status, purpose, method, url, request, signature_sent, http_status,
                response_body, signature_received, signature_verified, latency_ms, error, classification, started_at
         FROM attempts WHERE command_id = $1 ORDER BY id",
    )
    .bind(command_id)
    .fetch_all(conn)
    .await
}
