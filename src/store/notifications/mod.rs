//! The `notifications` table: every notification received, recorded before
//! it is answered, with what was decided about it; repeats counted on the
//! first row; holds and their deadlines. Unverified notifications waiting
//! for the gateway's own answer are in [`inquiries`]; notifications as
//! evidence that settles a command of ours, in [`settlement`].

use std::time::Duration;

use sqlx::PgConnection;
use time::OffsetDateTime;

use super::StoreError;

mod inquiries;
mod settlement;

use inquiries::INQUIRY_DUE;
pub use inquiries::{due_inquiries, inquire_later, rate_limited, take_inquiry_token};
pub use settlement::{settle_by_notification, settle_from_recorded, Evidence, Settled, Verifying};

/// A notification as first recorded.
#[derive(Debug, Clone)]
pub struct NewNotification<'a> {
    pub gateway: &'a str,
    pub account: &'a str,
    pub body: &'a [u8],
    pub fields: Option<&'a serde_json::Value>,
    pub verified: bool,
    pub problem: Option<&'a str>,
    pub payment_id: Option<&'a str>,
    pub status: Option<&'a str>,
    pub amount_minor: Option<i64>,
    pub currency: Option<&'a str>,
    pub dedupe_key: Option<String>,
    pub answer_status: i32,
    pub answer_body: &'a str,
}

/// What recording found.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Recorded {
    pub id: i64,
    /// False for a repeat: counted on the first row, nothing more to do.
    pub inserted: bool,
    /// The answer to give: the first row's, for a repeat.
    pub answer_status: i32,
    pub answer_body: String,
}

/// Records a notification, or counts it as a repeat of the row with the
/// same key. Concurrent repeats wait on the first row's insert, and so are
/// answered from it once its transaction (which decides) commits.
pub async fn record(
    conn: &mut PgConnection,
    n: &NewNotification<'_>,
) -> Result<Recorded, StoreError> {
    // `fields` as text: through a serde_json::Value the numbers would be
    // rounded on the way into jsonb anyway; text keeps the JSON decoder's.
    let fields = n.fields.map(|f| f.to_string());
    sqlx::query_as(
        "INSERT INTO notifications (gateway, account, body, fields, verified, problem, payment_id,
            status, amount_minor, currency, dedupe_key, answer_status, answer_body, decision)
         VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7, $8, $9, $10, $11, $12, $13, 'ignored')
         ON CONFLICT (gateway, account, dedupe_key) WHERE dedupe_key IS NOT NULL
         DO UPDATE SET repeats = notifications.repeats + 1, last_repeat_at = now()
         RETURNING id, (xmax = 0) AS inserted, answer_status, answer_body",
    )
    .bind(n.gateway)
    .bind(n.account)
    .bind(n.body)
    .bind(fields)
    .bind(n.verified)
    .bind(n.problem)
    .bind(n.payment_id)
    .bind(n.status)
    .bind(n.amount_minor)
    .bind(n.currency)
    .bind(&n.dedupe_key)
    .bind(n.answer_status)
    .bind(n.answer_body)
    .fetch_one(conn)
    .await
    .map_err(StoreError::from)
}

/// What was done about a notification.
#[derive(Debug, Clone, Default)]
pub struct Outcome<'a> {
    /// `acted`, `held`, `ignored` or `unverified`.
    pub decision: &'a str,
    pub reason: Option<&'a str>,
    pub rule: Option<&'a str>,
    pub matched: Option<&'a serde_json::Value>,
    pub command_id: Option<&'a str>,
    /// For a hold: how long until its deadline.
    pub hold_for: Option<Duration>,
    /// For an unverified notification: when to ask the gateway.
    pub inquire_in: Option<Duration>,
    /// For a verified notification saying the payment was captured
    /// (`capture`) or cancelled (`cancel`): what it is evidence of.
    pub evidence: Option<&'a str>,
}

pub async fn decide(conn: &mut PgConnection, id: i64, o: &Outcome<'_>) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE notifications SET decision = $2, reason = $3, rule = $4, matched = $5,
            command_id = $6,
            hold_deadline = CASE WHEN $7::float8 IS NULL THEN NULL
                                 ELSE now() + make_interval(secs => $7::float8) END,
            inquire_at = CASE WHEN $8::float8 IS NULL THEN NULL
                              ELSE now() + make_interval(secs => $8::float8) END,
            evidence = COALESCE($9, evidence),
            decided_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(o.decision)
    .bind(o.reason)
    .bind(o.rule)
    .bind(o.matched)
    .bind(o.command_id)
    .bind(o.hold_for.map(|d| d.as_secs_f64()))
    .bind(o.inquire_in.map(|d| d.as_secs_f64()))
    .bind(o.evidence)
    .execute(conn)
    .await?;
    Ok(())
}

/// One recorded notification, as operators and jobs read it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct NotificationRow {
    pub id: i64,
    pub gateway: String,
    pub account: String,
    pub body: Vec<u8>,
    pub verified: bool,
    pub problem: Option<String>,
    pub payment_id: Option<String>,
    pub status: Option<String>,
    pub amount_minor: Option<i64>,
    pub currency: Option<String>,
    pub answer_status: i32,
    pub answer_body: String,
    pub decision: String,
    pub reason: Option<String>,
    pub rule: Option<String>,
    pub matched: Option<serde_json::Value>,
    pub command_id: Option<String>,
    pub hold_deadline: Option<OffsetDateTime>,
    pub hold_closed_at: Option<OffsetDateTime>,
    pub hold_closed_by: Option<String>,
    pub inquiries: i32,
    /// How many times its inquiry was put off by the account's rate limit.
    pub rate_limited: i32,
    /// What a verified notification proves (`capture`, `cancel`).
    pub evidence: Option<String>,
    pub settled_command: Option<String>,
    pub repeats: i32,
    pub received_at: OffsetDateTime,
    pub decided_at: Option<OffsetDateTime>,
}

const COLUMNS: &str = "id, gateway, account, body, verified, problem, payment_id, status,
    amount_minor, currency, answer_status, answer_body, decision, reason, rule, matched,
    command_id, hold_deadline, hold_closed_at, hold_closed_by, inquiries, rate_limited, evidence,
    settled_command, repeats, received_at, decided_at";

pub async fn get(conn: &mut PgConnection, id: i64) -> Result<Option<NotificationRow>, StoreError> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM notifications WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
    .map_err(StoreError::from)
}

/// Locks one notification until the transaction ends.
pub async fn lock(conn: &mut PgConnection, id: i64) -> Result<Option<NotificationRow>, StoreError> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM notifications WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
    .map_err(StoreError::from)
}

/// Newest first, received within `since`, optionally of one decision.
pub async fn list(
    conn: &mut PgConnection,
    since: Duration,
    decision: Option<&str>,
    limit: i64,
) -> Result<Vec<NotificationRow>, StoreError> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM notifications
         WHERE received_at > now() - make_interval(secs => $1)
           AND ($2::text IS NULL OR decision = $2)
         ORDER BY id DESC LIMIT $3"
    ))
    .bind(since.as_secs_f64())
    .bind(decision)
    .bind(limit)
    .fetch_all(conn)
    .await
    .map_err(StoreError::from)
}

/// An open hold (the partial index `notifications_open_holds`).
const OPEN_HOLD: &str = "decision = 'held' AND hold_closed_at IS NULL";

/// Open holds past their deadline, locked for this transaction.
pub async fn due_holds(
    conn: &mut PgConnection,
    limit: i64,
) -> Result<Vec<NotificationRow>, StoreError> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM notifications WHERE {OPEN_HOLD} AND hold_deadline <= now()
         ORDER BY hold_deadline LIMIT $1 FOR UPDATE SKIP LOCKED"
    ))
    .bind(limit)
    .fetch_all(conn)
    .await
    .map_err(StoreError::from)
}

/// Ends a hold: released by a person, or its deadline's action.
pub async fn close_hold(
    conn: &mut PgConnection,
    id: i64,
    by: &str,
    command_id: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE notifications SET hold_closed_at = now(), hold_closed_by = $2,
            command_id = COALESCE($3, command_id)
         WHERE id = $1",
    )
    .bind(id)
    .bind(by)
    .bind(command_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// The notifications on one payment, in the order received; with `command`,
/// only those that made or settled that command. The `(gateway, payment_id)`
/// index serves both.
pub async fn for_payment(
    conn: &mut PgConnection,
    gateway: &str,
    payment_id: &str,
    command: Option<&str>,
    limit: i64,
) -> Result<Vec<NotificationRow>, StoreError> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM notifications
         WHERE gateway = $1 AND payment_id = $2
           AND ($3::text IS NULL OR command_id = $3 OR settled_command = $3)
         ORDER BY received_at, id LIMIT $4"
    ))
    .bind(gateway)
    .bind(payment_id)
    .bind(command)
    .bind(limit)
    .fetch_all(conn)
    .await
    .map_err(StoreError::from)
}

/// Open holds, nearest deadline first (the console's "needs a person").
pub async fn open_hold_rows(
    conn: &mut PgConnection,
    limit: i64,
) -> Result<Vec<NotificationRow>, StoreError> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM notifications WHERE {OPEN_HOLD}
         ORDER BY hold_deadline NULLS LAST, id LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(conn)
    .await
    .map_err(StoreError::from)
}

/// What the notification jobs have to do now, and the open holds for the
/// metrics, in one statement: an idle instance asks this every period, and
/// the claims (a transaction each) are made only when there is work.
#[derive(Debug, Clone, Copy, PartialEq, sqlx::FromRow)]
pub struct DueWork {
    /// An unverified notification's inquiry is due.
    pub inquiries: bool,
    /// A hold has reached its deadline.
    pub deadlines: bool,
    /// Holds still open.
    pub open_holds: i64,
    /// The age of the oldest open hold, in seconds (0 without one).
    pub oldest_hold_seconds: f64,
}

pub async fn due_work(conn: &mut PgConnection) -> Result<DueWork, StoreError> {
    sqlx::query_as(&format!(
        "SELECT EXISTS (SELECT 1 FROM notifications WHERE {INQUIRY_DUE}) AS inquiries,
                EXISTS (SELECT 1 FROM notifications
                         WHERE {OPEN_HOLD} AND hold_deadline <= now()) AS deadlines,
                count(*) AS open_holds,
                COALESCE(EXTRACT(EPOCH FROM now() - min(received_at))::float8, 0)
                    AS oldest_hold_seconds
           FROM notifications WHERE {OPEN_HOLD}"
    ))
    .fetch_one(conn)
    .await
    .map_err(StoreError::from)
}

/// Makes a queued command due only after `delay` (a rule's `delay`).
pub async fn delay_command(
    conn: &mut PgConnection,
    command_id: &str,
    delay: Duration,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE commands SET next_run_at = now() + make_interval(secs => $2)
         WHERE id = $1 AND state = 'queued'",
    )
    .bind(command_id)
    .bind(delay.as_secs_f64())
    .execute(conn)
    .await?;
    Ok(())
}

/// Stages an event that is not a command's result (a hold), published by
/// the relay like any other once the transaction commits.
pub async fn enqueue_event(
    conn: &mut PgConnection,
    exchange: &str,
    routing_key: &str,
    body: &serde_json::Value,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO outbox (message_id, command_id, exchange, routing_key, body)
         VALUES ($1, NULL, $2, $3, $4::jsonb)",
    )
    .bind(crate::store::outbox::new_message_id())
    .bind(exchange)
    .bind(routing_key)
    .bind(body.to_string())
    .execute(conn)
    .await?;
    Ok(())
}

/// A hold past its deadline that is only reported (`on_deadline = "alert"`,
/// or a cancel that could not be made): it stays open for a person, and is
/// not reported again.
pub async fn alert_hold(conn: &mut PgConnection, id: i64) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE notifications SET hold_deadline = NULL,
            reason = COALESCE(reason || '; ', '') || 'deadline passed: left for a person'
         WHERE id = $1",
    )
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}
