//! Unverified notifications waiting for the gateway's own answer: which
//! are due to be asked about, putting one off, and the inquiry rate limit
//! per gateway account (a token bucket in PostgreSQL shared by every
//! instance on the database).

use std::time::Duration;

use sqlx::PgConnection;
use time::OffsetDateTime;

use super::{NotificationRow, COLUMNS};
use crate::store::StoreError;

/// An unverified notification whose inquiry is due: what [`due_inquiries`]
/// claims and what `due_work` asks about (the partial index
/// `notifications_inquiries` serves both).
pub(super) const INQUIRY_DUE: &str =
    "decision = 'unverified' AND inquire_at IS NOT NULL AND inquire_at <= now()";

/// Unverified notifications whose inquiry is due, locked for this
/// transaction (another instance skips them).
pub async fn due_inquiries(
    conn: &mut PgConnection,
    limit: i64,
) -> Result<Vec<NotificationRow>, StoreError> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM notifications WHERE {INQUIRY_DUE}
         ORDER BY inquire_at LIMIT $1 FOR UPDATE SKIP LOCKED"
    ))
    .bind(limit)
    .fetch_all(conn)
    .await
    .map_err(StoreError::from)
}

/// Puts an unverified notification's inquiry off (rate limit, no answer).
pub async fn inquire_later(
    conn: &mut PgConnection,
    id: i64,
    delay: Duration,
    counted: bool,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE notifications SET inquire_at = now() + make_interval(secs => $2),
            inquiries = inquiries + CASE WHEN $3 THEN 1 ELSE 0 END
         WHERE id = $1",
    )
    .bind(id)
    .bind(delay.as_secs_f64())
    .bind(counted)
    .execute(conn)
    .await?;
    Ok(())
}

/// Puts an unverified notification's inquiry off because its account's
/// inquiries are at their rate limit, and counts it on the row.
pub async fn rate_limited(
    conn: &mut PgConnection,
    id: i64,
    delay: Duration,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE notifications SET inquire_at = now() + make_interval(secs => $2),
            rate_limited = rate_limited + 1
         WHERE id = $1",
    )
    .bind(id)
    .bind(delay.as_secs_f64())
    .execute(conn)
    .await?;
    Ok(())
}

/// Takes one token from the inquiry bucket of a gateway account, shared by
/// every worker instance on this database: `per_minute` tokens at most,
/// refilled continuously at `per_minute` a minute. One statement, so two
/// instances taking at once are serialized by the row. A refusal changes
/// nothing (the refill is computed from the last token taken, so nothing is
/// lost by not writing it). `at` is the clock (the database's when `None`;
/// tests give their own), never earlier than the bucket's last refill.
pub async fn take_inquiry_token(
    conn: &mut PgConnection,
    gateway: &str,
    account: &str,
    per_minute: u32,
    at: Option<OffsetDateTime>,
) -> Result<bool, StoreError> {
    let taken: Option<f64> = sqlx::query_scalar(
        "INSERT INTO notification_inquiry_buckets AS b (gateway, account, tokens, refilled_at)
         VALUES ($1, $2, $3::float8 - 1, COALESCE($4::timestamptz, clock_timestamp()))
         ON CONFLICT (gateway, account) DO UPDATE
            SET tokens = LEAST($3::float8, b.tokens + GREATEST(0::float8,
                    EXTRACT(EPOCH FROM EXCLUDED.refilled_at - b.refilled_at)::float8) * $3::float8 / 60) - 1,
                refilled_at = GREATEST(b.refilled_at, EXCLUDED.refilled_at)
          WHERE LEAST($3::float8, b.tokens + GREATEST(0::float8,
                    EXTRACT(EPOCH FROM EXCLUDED.refilled_at - b.refilled_at)::float8) * $3::float8 / 60) >= 1
         RETURNING tokens",
    )
    .bind(gateway)
    .bind(account)
    .bind(f64::from(per_minute.max(1)))
    .bind(at)
    .fetch_optional(conn)
    .await?;
    Ok(taken.is_some())
}
