//! The `attempts` table: every HTTP exchange with a gateway, and every intent to make one.

use sqlx::PgConnection;

use super::lifecycle::AttemptStatus;
use super::StoreError;
use crate::gateways::{Classification, Exchange};

pub use super::lifecycle::AttemptKind;

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

/// When an attempt's request went out: `sent_at`, or, for a call still in
/// flight (and rows written before `sent_at` existed, whose `started_at` was
/// the call's start), `started_at`.
pub(crate) const SENT: &str = "COALESCE(sent_at, started_at)";

/// One row of `attempts`, for `show`.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct AttemptRow {
    pub id: i64,
    pub attempt_no: i32,
    pub kind: AttemptKind,
    pub status: AttemptStatus,
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
    pub classification: Option<Classification>,
    /// When its request went out ([`SENT`]); for a call still in flight (or
    /// one that made no exchange), when its row was written.
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: time::OffsetDateTime,
}

pub async fn for_command(
    conn: &mut PgConnection,
    command_id: &str,
) -> Result<Vec<AttemptRow>, StoreError> {
    sqlx::query_as(&format!(
        "SELECT id, attempt_no, kind, status, purpose, method, url, request, signature_sent, http_status,
                response_body, signature_received, signature_verified, latency_ms, error, classification,
                {SENT} AS started_at
         FROM attempts WHERE command_id = $1 ORDER BY id",
    ))
    .bind(command_id)
    .fetch_all(conn)
    .await
    .map_err(StoreError::from)
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

/// The two CTEs that record a batch of exchanges, with the parameters
/// `$1`–`$30` that [`Recorded::bind`] binds: the in-flight rows the calls
/// complete are updated (`recorded`), every other exchange is inserted
/// (`added`). A macro, so that a batch writer's statement can begin with them
/// and write a whole stage in one round trip (`commands::record_intents`,
/// `commands::conclude_many`).
macro_rules! record_ctes {
    () => {
        "recorded AS (
            UPDATE attempts a SET status = 'completed', purpose = COALESCE(u.purpose, a.purpose),
                method = u.method, url = u.url, request = u.request, signature_sent = u.signature_sent,
                http_status = u.http_status, response_body = u.response_body,
                signature_received = u.signature_received, signature_verified = u.signature_verified,
                latency_ms = u.latency_ms, error = u.error, classification = u.classification,
                sent_at = u.started_at, finished_at = now()
              FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::text[],
                          $7::int4[], $8::text[], $9::text[], $10::bool[], $11::float8[], $12::text[],
                          $13::text[], $14::timestamptz[])
                   AS u(id, purpose, method, url, request, signature_sent, http_status, response_body,
                        signature_received, signature_verified, latency_ms, error, classification,
                        started_at)
             WHERE a.id = u.id
         ),
         added AS (
            INSERT INTO attempts (command_id, attempt_no, kind, status, purpose, method, url, request,
                signature_sent, http_status, response_body, signature_received, signature_verified,
                latency_ms, error, classification, started_at, sent_at, finished_at)
            SELECT c, n, k, 'completed', purpose, method, url, request, signature_sent, http_status,
                   response_body, signature_received, signature_verified, latency_ms, error,
                   classification, started_at, started_at, now()
              FROM UNNEST($15::text[], $16::int4[], $17::text[], $18::text[], $19::text[], $20::text[],
                          $21::jsonb[], $22::text[], $23::int4[], $24::text[], $25::text[], $26::bool[],
                          $27::float8[], $28::text[], $29::text[], $30::timestamptz[])
                   AS u(c, n, k, purpose, method, url, request, signature_sent, http_status,
                        response_body, signature_received, signature_verified, latency_ms, error,
                        classification, started_at)
            RETURNING id
         )"
    };
}
pub(crate) use record_ctes;

/// [`record`] for many calls, in one statement.
pub async fn record_many(
    conn: &mut PgConnection,
    recordings: &[&Recording],
) -> Result<(), StoreError> {
    if recordings.is_empty() {
        return Ok(());
    }
    let query = sqlx::query_as::<_, (i32,)>(concat!("WITH ", record_ctes!(), " SELECT 1"));
    Recorded::of(recordings).bind(query).fetch_one(conn).await?;
    Ok(())
}

/// Recordings as the parameter arrays of [`record_ctes`].
pub(super) struct Recorded<'a> {
    update_rows: Vec<i64>,
    updates: Columns<'a>,
    insert_commands: Vec<&'a str>,
    insert_numbers: Vec<i32>,
    insert_kinds: Vec<&'static str>,
    inserts: Columns<'a>,
}

impl<'a> Recorded<'a> {
    pub(super) fn of(recordings: &[&'a Recording]) -> Recorded<'a> {
        let mut r = Recorded {
            update_rows: vec![],
            updates: Columns::default(),
            insert_commands: vec![],
            insert_numbers: vec![],
            insert_kinds: vec![],
            inserts: Columns::default(),
        };
        for recording in recordings {
            let last = recording.exchanges.len().checked_sub(1);
            for (i, e) in recording.exchanges.iter().enumerate() {
                let kind = match e.kind {
                    crate::gateways::ExchangeKind::Auth => AttemptKind::Auth,
                    crate::gateways::ExchangeKind::Call => recording.kind,
                };
                match (recording.in_flight_row, Some(i) == last) {
                    (Some(row), true) => {
                        r.update_rows.push(row);
                        r.updates.push(e);
                    }
                    _ => {
                        r.insert_commands.push(&recording.command_id);
                        r.insert_numbers.push(recording.attempt_no);
                        r.insert_kinds.push(kind.as_str());
                        r.inserts.push(e);
                    }
                }
            }
            if recording.exchanges.is_empty() {
                if let Some(row) = recording.in_flight_row {
                    r.update_rows.push(row);
                    r.updates.push_nothing(
                        recording
                            .fallback_error
                            .as_deref()
                            .unwrap_or("no exchange was made"),
                    );
                }
            }
        }
        r
    }

    /// Binds `$1`–`$30`; the statement's own parameters follow from `$31`.
    pub(super) fn bind<'q, O>(
        self,
        query: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>
    where
        'a: 'q,
    {
        let query = query.bind(self.update_rows);
        let query = self.updates.bind(query);
        let query = query
            .bind(self.insert_commands)
            .bind(self.insert_numbers)
            .bind(self.insert_kinds);
        self.inserts.bind(query)
    }
}

/// Exchanges as parallel arrays, for UNNEST.
#[derive(Default)]
struct Columns<'a> {
    purpose: Vec<Option<&'a str>>,
    method: Vec<Option<&'a str>>,
    url: Vec<Option<&'a str>>,
    request: Vec<Option<&'a serde_json::Value>>,
    signature_sent: Vec<Option<&'a str>>,
    http_status: Vec<Option<i32>>,
    response_body: Vec<Option<&'a str>>,
    signature_received: Vec<Option<&'a str>>,
    signature_verified: Vec<Option<bool>>,
    latency_ms: Vec<Option<f64>>,
    error: Vec<Option<&'a str>>,
    classification: Vec<Option<&'static str>>,
    started_at: Vec<Option<time::OffsetDateTime>>,
}

impl<'a> Columns<'a> {
    fn push(&mut self, e: &'a Exchange) {
        self.purpose.push(Some(&e.purpose));
        self.method.push(Some(&e.method));
        self.url.push(Some(&e.url));
        self.request.push(Some(&e.request));
        self.signature_sent.push(e.signature_sent.as_deref());
        self.http_status.push(e.http_status.map(i32::from));
        self.response_body.push(e.response_body.as_deref());
        self.signature_received
            .push(e.signature_received.as_deref());
        self.signature_verified.push(e.signature_verified);
        self.latency_ms.push(Some(e.latency.as_secs_f64() * 1000.0));
        self.error.push(e.error.as_deref());
        self.classification.push(Some(e.classification.as_str()));
        self.started_at.push(Some(e.started_at));
    }

    /// An in-flight row completed without any exchange: only the error is known.
    fn push_nothing(&mut self, error: &'a str) {
        self.purpose.push(None);
        self.method.push(None);
        self.url.push(None);
        self.request.push(None);
        self.signature_sent.push(None);
        self.http_status.push(None);
        self.response_body.push(None);
        self.signature_received.push(None);
        self.signature_verified.push(None);
        self.latency_ms.push(None);
        self.error.push(Some(error));
        self.classification.push(None);
        self.started_at.push(None);
    }

    fn bind<'q, O>(
        self,
        query: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>
    where
        'a: 'q,
    {
        query
            .bind(self.purpose)
            .bind(self.method)
            .bind(self.url)
            .bind(self.request)
            .bind(self.signature_sent)
            .bind(self.http_status)
            .bind(self.response_body)
            .bind(self.signature_received)
            .bind(self.signature_verified)
            .bind(self.latency_ms)
            .bind(self.error)
            .bind(self.classification)
            .bind(self.started_at)
    }
}
