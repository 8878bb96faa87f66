//! The `dead_letters` table: messages that could not be read as a command,
//! kept with their original body and the reason.

use sqlx::PgConnection;

use super::StoreError;

pub async fn insert(
    conn: &mut PgConnection,
    reason: &str,
    body: &[u8],
    properties: &serde_json::Value,
) -> Result<i64, StoreError> {
    sqlx::query_scalar(
        "INSERT INTO dead_letters (reason, body, properties) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(reason)
    .bind(body)
    .bind(properties)
    .fetch_one(conn)
    .await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeadLetterRow {
    pub id: i64,
    pub reason: String,
    pub body: Vec<u8>,
    pub properties: serde_json::Value,
    pub received_at: time::OffsetDateTime,
    pub requeued_at: Option<time::OffsetDateTime>,
}

pub async fn list(
    conn: &mut PgConnection,
    include_requeued: bool,
) -> Result<Vec<DeadLetterRow>, StoreError> {
    sqlx::query_as(
        "SELECT id, reason, body, properties, received_at, requeued_at FROM dead_letters
         WHERE $1 OR requeued_at IS NULL ORDER BY id",
    )
    .bind(include_requeued)
    .fetch_all(conn)
    .await
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
