//! The `dead_letters` table: messages that could not be read as a command,
//! kept with their original body and the reason.
//!
//! Whatever arrived must be storable here, since a dead letter is the last
//! resort for a message nothing else can take: the reason and the AMQP
//! properties (which a producer controls, headers included) are escaped and
//! bounded before they reach `jsonb` or `text`, and the body (`bytea`, any
//! bytes) is kept whole up to a limit, beyond which only its start is kept
//! (the dead-letter queue has it whole).

use serde_json::{Map, Value};
use sqlx::PgConnection;

use super::StoreError;
use crate::telemetry::Escaped;

/// The longest text kept of any property or header value.
const MAX_PROPERTY_CHARS: usize = 256;
/// The most headers (or entries of a nested table) kept.
const MAX_ENTRIES: usize = 64;
/// How deep nested header tables and arrays are kept.
const MAX_DEPTH: usize = 4;
/// The longest reason kept.
const MAX_REASON_CHARS: usize = 1024;

/// A dead letter as it is stored: everything in it storable.
#[derive(Debug, Clone)]
pub struct Record {
    pub reason: String,
    /// The body, or its first `keep` bytes.
    pub body: Vec<u8>,
    /// The size of the whole body as it arrived.
    pub body_size: i64,
    pub properties: Value,
}

impl Record {
    /// Escapes and bounds what a producer sent. `keep` is how much of the
    /// body the database keeps.
    pub fn new(reason: &str, body: &[u8], properties: Value, keep: usize) -> Record {
        Record {
            reason: Escaped::at_most(reason, MAX_REASON_CHARS).to_string(),
            body: body[..body.len().min(keep)].to_vec(),
            body_size: i64::try_from(body.len()).unwrap_or(i64::MAX),
            properties: sanitize(&properties, 0),
        }
    }

    /// The same record without body or properties: what is stored should
    /// the whole one fail anyway.
    pub fn bare(&self) -> Record {
        Record {
            reason: self.reason.clone(),
            body: Vec::new(),
            body_size: self.body_size,
            properties: Value::Object(Map::new()),
        }
    }
}

/// The JSON of AMQP properties with every key and string escaped and
/// bounded, tables and arrays cut to their first entries and a few levels.
pub fn sanitize(value: &Value, depth: usize) -> Value {
    let text = |s: &str| Value::String(Escaped::at_most(s, MAX_PROPERTY_CHARS).to_string());
    match value {
        Value::String(s) => text(s),
        Value::Array(_) | Value::Object(_) if depth >= MAX_DEPTH => text("[nested too deep]"),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .take(MAX_ENTRIES)
                .map(|v| sanitize(v, depth + 1))
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .take(MAX_ENTRIES)
                .map(|(k, v)| {
                    (
                        Escaped::at_most(k, MAX_PROPERTY_CHARS).to_string(),
                        sanitize(v, depth + 1),
                    )
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

pub async fn insert(conn: &mut PgConnection, record: &Record) -> Result<i64, StoreError> {
    sqlx::query_scalar(
        "INSERT INTO dead_letters (reason, body, body_size, properties) VALUES ($1, $2, $3, $4)
         RETURNING id",
    )
    .bind(&record.reason)
    .bind(&record.body)
    .bind(record.body_size)
    .bind(&record.properties)
    .fetch_one(conn)
    .await
    .map_err(StoreError::from)
}

/// One dead letter, whole: what a requeue publishes.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeadLetterRow {
    pub id: i64,
    pub reason: String,
    pub body: Vec<u8>,
    /// The size of the body as it arrived; more than `body.len()` when only
    /// its start was kept.
    pub body_size: i64,
    pub properties: serde_json::Value,
    pub received_at: time::OffsetDateTime,
    pub requeued_at: Option<time::OffsetDateTime>,
}

impl DeadLetterRow {
    /// Whether the database has only the start of the body.
    pub fn body_cut(&self) -> bool {
        self.body_size > self.body.len() as i64
    }
}

/// One dead letter as `list` shows it: the start of the body only.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeadLetterSummary {
    pub id: i64,
    pub reason: String,
    pub preview: Vec<u8>,
    pub body_size: i64,
    pub properties: serde_json::Value,
    pub received_at: time::OffsetDateTime,
    pub requeued_at: Option<time::OffsetDateTime>,
}

/// The columns of a whole row (`body_size` is NULL in rows from before it existed).
pub const ROW_COLUMNS: &str =
    "id, reason, body, COALESCE(body_size, length(body)::bigint) AS body_size,
    properties, received_at, requeued_at";

/// A page of dead letters, newest first: at most `limit`, with ids below
/// `before` when given. Each with the first `preview_bytes` of its body,
/// never the whole of it.
pub async fn list(
    conn: &mut PgConnection,
    include_requeued: bool,
    before: Option<i64>,
    limit: i64,
    preview_bytes: i32,
) -> Result<Vec<DeadLetterSummary>, StoreError> {
    sqlx::query_as(
        "SELECT id, reason, substring(body FROM 1 FOR $4) AS preview,
                COALESCE(body_size, length(body)::bigint) AS body_size,
                properties, received_at, requeued_at
           FROM dead_letters
          WHERE ($1 OR requeued_at IS NULL) AND ($2::bigint IS NULL OR id < $2)
          ORDER BY id DESC
          LIMIT $3",
    )
    .bind(include_requeued)
    .bind(before)
    .bind(limit)
    .bind(preview_bytes)
    .fetch_all(conn)
    .await
    .map_err(StoreError::from)
}

/// The newest dead letter's id (0 when there is none).
pub async fn last_id(conn: &mut PgConnection) -> Result<i64, StoreError> {
    sqlx::query_scalar("SELECT COALESCE(max(id), 0) FROM dead_letters")
        .fetch_one(conn)
        .await
        .map_err(StoreError::from)
}

/// The ids of the dead letters not requeued yet, oldest first, above
/// `after` and up to `up_to`.
pub async fn waiting_ids(
    conn: &mut PgConnection,
    after: i64,
    up_to: i64,
    limit: i64,
) -> Result<Vec<i64>, StoreError> {
    sqlx::query_scalar(
        "SELECT id FROM dead_letters WHERE requeued_at IS NULL AND id > $1 AND id <= $2
          ORDER BY id LIMIT $3",
    )
    .bind(after)
    .bind(up_to)
    .bind(limit)
    .fetch_all(conn)
    .await
    .map_err(StoreError::from)
}

/// One dead letter, whole.
pub async fn get(conn: &mut PgConnection, id: i64) -> Result<Option<DeadLetterRow>, StoreError> {
    sqlx::query_as(&format!(
        "SELECT {ROW_COLUMNS} FROM dead_letters WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
    .map_err(StoreError::from)
}

pub async fn mark_requeued(conn: &mut PgConnection, id: i64) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE dead_letters SET requeued_at = now() WHERE id = $1 AND requeued_at IS NULL",
    )
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_hold_nothing_postgres_refuses_and_nothing_unbounded() {
        let properties = serde_json::json!({
            "content_type": "application/json",
            "headers": {
                "x-nul": "a\u{0}b",
                "x-huge": "y".repeat(100_000),
                "k\u{0}ey": 1,
                "nested": {"a": {"b": {"c": {"d": {"e": 1}}}}},
            },
        });
        let record = Record::new("why\u{0}", &[0u8; 100], properties, 10);
        let text = record.properties.to_string();
        assert!(!text.contains("\\u0000"), "{text}");
        assert!(text.len() < 2_000, "{}", text.len());
        assert!(text.contains("a\\\\u{0}b"), "{text}");
        assert_eq!(record.reason, "why\\u{0}");
        assert_eq!(record.body.len(), 10);
        assert_eq!(record.body_size, 100);
        let many: Map<String, Value> = (0..1000)
            .map(|i| (format!("h{i}"), Value::from(i)))
            .collect();
        let record = Record::new("r", b"", Value::Object(many), 10);
        assert_eq!(record.properties.as_object().unwrap().len(), MAX_ENTRIES);
    }
}
