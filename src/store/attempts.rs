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
    let recording = Recording {
        command_id: command_id.to_string(),
        attempt_no,
        kind: main_kind,
        in_flight_row,
        exchanges: exchanges.to_vec(),
        fallback_error: fallback_error.map(str::to_string),
    };
    record_many(conn, &[&recording]).await
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

/// What one call did, to be recorded with others in one round trip.
#[derive(Debug, Clone)]
pub struct Recording {
    pub command_id: String,
    pub attempt_no: i32,
    pub kind: AttemptKind,
    /// The in-flight row the call's last exchange completes, if one was started.
    pub in_flight_row: Option<i64>,
    pub exchanges: Vec<Exchange>,
    /// Written on the in-flight row when the call made no exchange at all.
    pub fallback_error: Option<String>,
}

/// [`record`] for many calls: one UPDATE for the in-flight rows they complete,
/// one INSERT for every other exchange.
pub async fn record_many(
    conn: &mut PgConnection,
    recordings: &[&Recording],
) -> Result<(), StoreError> {
    let mut updates: Vec<(i64, &Exchange)> = Vec::new();
    let mut inserts: Vec<(&str, i32, &'static str, &Exchange)> = Vec::new();
    let mut empty: Vec<(i64, String)> = Vec::new();
    for r in recordings {
        let last = r.exchanges.len().checked_sub(1);
        for (i, e) in r.exchanges.iter().enumerate() {
            let kind = if e.purpose == "authToken" {
                AttemptKind::Auth
            } else {
                r.kind
            };
            match (r.in_flight_row, Some(i) == last) {
                (Some(row), true) => updates.push((row, e)),
                _ => inserts.push((r.command_id.as_str(), r.attempt_no, kind.as_str(), e)),
            }
        }
        if r.exchanges.is_empty() {
            if let Some(row) = r.in_flight_row {
                empty.push((
                    row,
                    r.fallback_error
                        .clone()
                        .unwrap_or_else(|| "no exchange was made".into()),
                ));
            }
        }
    }
    if !updates.is_empty() {
        let rows: Vec<i64> = updates.iter().map(|u| u.0).collect();
        let cols = Columns::of(updates.iter().map(|u| u.1));
        sqlx::query(
            "UPDATE attempts a SET status = 'completed', purpose = u.purpose, method = u.method, url = u.url,
                request = u.request, signature_sent = u.signature_sent, http_status = u.http_status,
                response_body = u.response_body, signature_received = u.signature_received,
                signature_verified = u.signature_verified, latency_ms = u.latency_ms, error = u.error,
                classification = u.classification, started_at = u.started_at, finished_at = now()
               FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::text[], $7::int4[],
                           $8::text[], $9::text[], $10::bool[], $11::float8[], $12::text[], $13::text[],
                           $14::timestamptz[])
                    AS u(id, purpose, method, url, request, signature_sent, http_status, response_body,
                         signature_received, signature_verified, latency_ms, error, classification, started_at)
              WHERE a.id = u.id",
        )
        .bind(&rows)
        .bind(&cols.purpose)
        .bind(&cols.method)
        .bind(&cols.url)
        .bind(&cols.request)
        .bind(&cols.signature_sent)
        .bind(&cols.http_status)
        .bind(&cols.response_body)
        .bind(&cols.signature_received)
        .bind(&cols.signature_verified)
        .bind(&cols.latency_ms)
        .bind(&cols.error)
        .bind(&cols.classification)
        .bind(&cols.started_at)
        .execute(&mut *conn)
        .await?;
    }
    if !inserts.is_empty() {
        let ids: Vec<&str> = inserts.iter().map(|i| i.0).collect();
        let numbers: Vec<i32> = inserts.iter().map(|i| i.1).collect();
        let kinds: Vec<&str> = inserts.iter().map(|i| i.2).collect();
        let cols = Columns::of(inserts.iter().map(|i| i.3));
        sqlx::query(
            "INSERT INTO attempts (command_id, attempt_no, kind, status, purpose, method, url, request,
                signature_sent, http_status, response_body, signature_received, signature_verified,
                latency_ms, error, classification, started_at, finished_at)
             SELECT c, n, k, 'completed', purpose, method, url, request, signature_sent, http_status,
                    response_body, signature_received, signature_verified, latency_ms, error,
                    classification, started_at, now()
               FROM UNNEST($1::text[], $2::int4[], $3::text[], $4::text[], $5::text[], $6::text[], $7::jsonb[],
                           $8::text[], $9::int4[], $10::text[], $11::text[], $12::bool[], $13::float8[],
                           $14::text[], $15::text[], $16::timestamptz[])
                    AS u(c, n, k, purpose, method, url, request, signature_sent, http_status, response_body,
                         signature_received, signature_verified, latency_ms, error, classification, started_at)",
        )
        .bind(&ids)
        .bind(&numbers)
        .bind(&kinds)
        .bind(&cols.purpose)
        .bind(&cols.method)
        .bind(&cols.url)
        .bind(&cols.request)
        .bind(&cols.signature_sent)
        .bind(&cols.http_status)
        .bind(&cols.response_body)
        .bind(&cols.signature_received)
        .bind(&cols.signature_verified)
        .bind(&cols.latency_ms)
        .bind(&cols.error)
        .bind(&cols.classification)
        .bind(&cols.started_at)
        .execute(&mut *conn)
        .await?;
    }
    for (row, error) in empty {
        sqlx::query("UPDATE attempts SET status = 'completed', finished_at = now(), error = $2 WHERE id = $1")
            .bind(row)
            .bind(error)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Exchanges as parallel arrays, for UNNEST.
struct Columns<'a> {
    purpose: Vec<&'a str>,
    method: Vec<&'a str>,
    url: Vec<&'a str>,
    request: Vec<&'a serde_json::Value>,
    signature_sent: Vec<Option<&'a str>>,
    http_status: Vec<Option<i32>>,
    response_body: Vec<Option<&'a str>>,
    signature_received: Vec<Option<&'a str>>,
    signature_verified: Vec<Option<bool>>,
    latency_ms: Vec<f64>,
    error: Vec<Option<&'a str>>,
    classification: Vec<&'static str>,
    started_at: Vec<time::OffsetDateTime>,
}

impl<'a> Columns<'a> {
    fn of(exchanges: impl Iterator<Item = &'a Exchange>) -> Columns<'a> {
        let mut c = Columns {
            purpose: vec![],
            method: vec![],
            url: vec![],
            request: vec![],
            signature_sent: vec![],
            http_status: vec![],
            response_body: vec![],
            signature_received: vec![],
            signature_verified: vec![],
            latency_ms: vec![],
            error: vec![],
            classification: vec![],
            started_at: vec![],
        };
        for e in exchanges {
            c.purpose.push(&e.purpose);
            c.method.push(&e.method);
            c.url.push(&e.url);
            c.request.push(&e.request);
            c.signature_sent.push(e.signature_sent.as_deref());
            c.http_status.push(e.http_status.map(i32::from));
            c.response_body.push(e.response_body.as_deref());
            c.signature_received.push(e.signature_received.as_deref());
            c.signature_verified.push(e.signature_verified);
            c.latency_ms.push(e.latency.as_secs_f64() * 1000.0);
            c.error.push(e.error.as_deref());
            c.classification.push(e.classification.as_str());
            c.started_at.push(e.started_at);
        }
        c
    }
}
