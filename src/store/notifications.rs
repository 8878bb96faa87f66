//! The `notifications` table: every notification received, recorded before
//! it is answered, with what was decided about it; repeats counted on the
//! first row; holds and their deadlines; unverified notifications waiting
//! for the gateway's own answer.

use std::time::Duration;

use sqlx::PgConnection;
use time::OffsetDateTime;

use super::StoreError;

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
    pub settled_command: Option<&'a str>,
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
            settled_command = COALESCE($9, settled_command),
            evidence = COALESCE($10, evidence),
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
    .bind(o.settled_command)
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
    pub settled_command: Option<String>,
    pub repeats: i32,
    pub received_at: OffsetDateTime,
    pub decided_at: Option<OffsetDateTime>,
}

const COLUMNS: &str = "id, gateway, account, body, verified, problem, payment_id, status,
    amount_minor, currency, answer_status, answer_body, decision, reason, rule, matched,
    command_id, hold_deadline, hold_closed_at, hold_closed_by, inquiries, settled_command,
    repeats, received_at, decided_at";

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

/// Unverified notifications whose inquiry is due, locked for this
/// transaction (another instance skips them).
pub async fn due_inquiries(
    conn: &mut PgConnection,
    limit: i64,
) -> Result<Vec<NotificationRow>, StoreError> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM notifications
         WHERE decision = 'unverified' AND inquire_at IS NOT NULL AND inquire_at <= now()
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

/// Open holds past their deadline, locked for this transaction.
pub async fn due_holds(
    conn: &mut PgConnection,
    limit: i64,
) -> Result<Vec<NotificationRow>, StoreError> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM notifications
         WHERE decision = 'held' AND hold_closed_at IS NULL AND hold_deadline <= now()
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
        "SELECT {COLUMNS} FROM notifications
         WHERE decision = 'held' AND hold_closed_at IS NULL
         ORDER BY hold_deadline NULLS LAST, id LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(conn)
    .await
    .map_err(StoreError::from)
}

/// Holds still open, and the age of the oldest, for the metrics.
pub async fn open_holds(conn: &mut PgConnection) -> Result<(i64, f64), StoreError> {
    sqlx::query_as(
        "SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(received_at))::float8, 0)
         FROM notifications WHERE decision = 'held' AND hold_closed_at IS NULL",
    )
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
    .bind(uuid::Uuid::new_v4())
    .bind(exchange)
    .bind(routing_key)
    .bind(body.to_string())
    .execute(conn)
    .await?;
    Ok(())
}

/// One verified notification, as evidence that its payment was captured or
/// cancelled.
#[derive(Debug, Clone, Copy)]
pub struct Evidence<'a> {
    pub notification: i64,
    /// The gateway's status word (`approved`, `capturesuccess`, ...).
    pub status: &'a str,
    /// What was read from its body: the attempt-like record's body.
    pub fields: Option<&'a serde_json::Value>,
}

/// Settles a command of ours on this payment whose operation is `operation`
/// and whose effect is still in question, as `succeeded`, on `evidence`:
/// an `unknown` (`unsettled`, reconciled now or later), or one still
/// verifying an ambiguous or interrupted attempt (`running`, its recovery
/// point `calling` and no call in flight: its executor is inquiring). The
/// command's row is locked, and its state read again under the lock, so
/// exactly one of the notification, the executor's own inquiry and the
/// reconciliation concludes it: the others find it no longer theirs (their
/// writes are guarded by the lease). Returns the command's id.
pub async fn settle_by_notification(
    conn: &mut PgConnection,
    gateway: &str,
    payment_id: &str,
    operation: &str,
    evidence: Evidence<'_>,
    exchange: &str,
) -> Result<Option<String>, StoreError> {
    // In id order, as every writer that locks several commands does.
    let candidates: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM commands
          WHERE gateway = $1 AND payment_id = $2 AND operation = $3
            AND state IN ('unsettled', 'running')
          ORDER BY id FOR UPDATE",
    )
    .bind(gateway)
    .bind(payment_id)
    .bind(operation)
    .fetch_all(&mut *conn)
    .await?;
    for id in candidates {
        if settle_locked(conn, &id, evidence, exchange).await? {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

/// What a command's executor found when it looked for recorded evidence
/// before an inquiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verifying {
    /// Still this executor's, and no notification settles it: inquire.
    Inquire,
    /// A verified notification received since the attempt began settled it
    /// just now (its id).
    Settled(i64),
    /// No longer this executor's: a notification (or another instance,
    /// after the lease expired) concluded or took it.
    NotOurs,
}

/// The executor's look before each inquiry of its verify loop: the command
/// must still be its own (`owner`), and a verified notification saying the
/// operation took effect, received since the current attempt began (while
/// its call was in flight, say), settles it as the notification would have.
pub async fn settle_from_recorded(
    conn: &mut PgConnection,
    command_id: &str,
    owner: uuid::Uuid,
    exchange: &str,
) -> Result<Verifying, StoreError> {
    let Some(row) = super::commands::lock(&mut *conn, command_id).await? else {
        return Ok(Verifying::NotOurs);
    };
    if row.state.as_str() != "running" || row.lease_owner != Some(owner) {
        return Ok(Verifying::NotOurs);
    }
    let (Some(gateway), Some(payment_id), Some(operation)) =
        (&row.gateway, &row.payment_id, &row.operation)
    else {
        return Ok(Verifying::Inquire);
    };
    /// id, status, fields as text.
    type Found = (i64, Option<String>, Option<String>);
    let found: Option<Found> = sqlx::query_as(
        "SELECT n.id, n.status, n.fields::text FROM notifications n
          WHERE n.gateway = $1 AND n.payment_id = $2 AND n.evidence = $3 AND n.verified
            AND n.settled_command IS NULL
            AND n.received_at >= (SELECT max(started_at) FROM attempts
                                   WHERE command_id = $4 AND kind = 'operation')
          ORDER BY n.id LIMIT 1 FOR UPDATE OF n",
    )
    .bind(gateway)
    .bind(payment_id)
    .bind(operation)
    .bind(command_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((notification, status, fields)) = found else {
        return Ok(Verifying::Inquire);
    };
    let fields: Option<serde_json::Value> = fields.and_then(|f| serde_json::from_str(&f).ok());
    let status = status.unwrap_or_default();
    let evidence = Evidence {
        notification,
        status: &status,
        fields: fields.as_ref(),
    };
    if !settle_locked(conn, command_id, evidence, exchange).await? {
        return Ok(Verifying::Inquire);
    }
    sqlx::query(
        "UPDATE notifications SET settled_command = $2,
            reason = COALESCE(reason || '; ', '') || $3
          WHERE id = $1",
    )
    .bind(notification)
    .bind(command_id)
    .bind(format!(
        "then settled {command_id} as succeeded (it was verifying an ambiguous attempt)"
    ))
    .execute(&mut *conn)
    .await?;
    Ok(Verifying::Settled(notification))
}

/// Settles one command locked by this transaction, if its effect is still
/// in question (see [`settle_by_notification`]): its outcome and event, the
/// attempt-like record of why (kind `inquiry`, purpose `notification #id`,
/// the notification's fields as the body received), its payment released.
async fn settle_locked(
    conn: &mut PgConnection,
    id: &str,
    evidence: Evidence<'_>,
    exchange: &str,
) -> Result<bool, StoreError> {
    // Read again now that it is locked: a statement of its own sees what
    // committed while the lock was awaited.
    let Some(row) = super::commands::get(&mut *conn, id).await? else {
        return Ok(false);
    };
    let Evidence {
        notification,
        status,
        fields,
    } = evidence;
    let settled = match row.state.as_str() {
        "unsettled" => settle_unknown(conn, &row, notification, status, exchange).await?,
        "running" if verifying(conn, &row).await? => {
            settle_verifying(conn, &row, notification, status, exchange).await?
        }
        _ => false,
    };
    if !settled {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO attempts (command_id, attempt_no, kind, status, purpose, response_body,
            signature_verified, classification, finished_at)
         VALUES ($1, $2, 'inquiry', 'completed', $3, $4, true, 'succeeded', now())",
    )
    .bind(id)
    .bind(row.attempts)
    .bind(format!("notification #{notification}"))
    .bind(fields.map(|f| f.to_string()))
    .execute(&mut *conn)
    .await?;
    if let Some(payment_id) = row.payment_id.as_deref() {
        let gateway = row.gateway.as_deref().unwrap_or("");
        super::commands::release_payment(conn, gateway, payment_id, id).await?;
    }
    Ok(true)
}

/// Whether a `running` command is between an uncertain attempt and its
/// conclusion: recovery point `calling` and no call in flight (its answer
/// was ambiguous, or it was found interrupted), so its executor is only
/// inquiring.
async fn verifying(
    conn: &mut PgConnection,
    row: &super::commands::CommandRow,
) -> Result<bool, StoreError> {
    if row.phase.as_str() != "calling" {
        return Ok(false);
    }
    let in_flight: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM attempts WHERE command_id = $1 AND status = 'in_flight')",
    )
    .bind(&row.id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(!in_flight)
}

/// An `unknown` settled: its settled event (`reconciled: true`), whoever
/// was reconciling it losing its lease.
async fn settle_unknown(
    conn: &mut PgConnection,
    row: &super::commands::CommandRow,
    notification: i64,
    status: &str,
    exchange: &str,
) -> Result<bool, StoreError> {
    // Read as text: through a serde_json::Value the numbers of the metadata
    // it echoes could be rounded.
    let Some(mut event) = super::commands::current_result(&mut *conn, &row.id)
        .await?
        .and_then(|r| serde_json::from_str::<crate::events::ResultEvent>(&r).ok())
    else {
        return Ok(false);
    };
    event.outcome = crate::outcome::Outcome::Succeeded;
    event.reconciled = true;
    event.replayed = false;
    event.gateway_status = Some(status.to_string());
    event.description = Some(format!(
        "settled by verified notification #{notification}: the payment is {status}"
    ));
    event.occurred_at = crate::events::now_rfc3339();
    let body = serde_json::to_string(&event).expect("events serialize");
    let done = sqlx::query(
        "UPDATE commands SET state = 'done', settled_outcome = 'succeeded', settled_result = $2::jsonb,
            settled_at = now(), lease_owner = NULL, lease_until = NULL, next_run_at = NULL, updated_at = now()
         WHERE id = $1 AND state = 'unsettled'",
    )
    .bind(&row.id)
    .bind(&body)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() != 1 {
        return Ok(false);
    }
    let correlation = row.correlation_id.as_deref().or(Some(row.id.as_str()));
    super::outbox::enqueue(conn, exchange, &event, row.reply_to.as_deref(), correlation).await?;
    Ok(true)
}

/// A command still verifying its attempt, decided: its one result event
/// (`succeeded`, saying the notification confirmed it), and the replays its
/// duplicates wait for. Its executor finds it no longer its own.
async fn settle_verifying(
    conn: &mut PgConnection,
    row: &super::commands::CommandRow,
    notification: i64,
    status: &str,
    exchange: &str,
) -> Result<bool, StoreError> {
    let amount = row
        .amount_minor
        .and_then(|m| u64::try_from(m).ok())
        .map(crate::money::Amount::from_minor);
    let event = crate::events::event_for(
        &row.id,
        &row.payload,
        crate::outcome::Outcome::Succeeded,
        None,
        amount,
        row.attempts,
        crate::events::Reported {
            gateway_status: Some(status.to_string()),
            description: Some(format!(
                "confirmed by verified notification #{notification} after an uncertain attempt: the payment is {status}"
            )),
            ..crate::events::Reported::default()
        },
    );
    let body = serde_json::to_string(&event).expect("events serialize");
    let done = sqlx::query(
        "UPDATE commands SET state = 'done', phase = 'ready', outcome = 'succeeded', result = $2::jsonb,
            decided_at = now(), updated_at = now(), lease_owner = NULL, lease_until = NULL,
            pending_replays = 0, next_run_at = NULL
         WHERE id = $1 AND state = 'running' AND outcome IS NULL",
    )
    .bind(&row.id)
    .bind(&body)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() != 1 {
        return Ok(false);
    }
    let correlation = row.correlation_id.as_deref().or(Some(row.id.as_str()));
    super::outbox::enqueue(conn, exchange, &event, row.reply_to.as_deref(), correlation).await?;
    let replays = super::commands::take_pending_replays(conn, &[row.id.as_str()]).await?;
    for replay in replays {
        super::outbox::enqueue(
            conn,
            exchange,
            &event.replay(),
            replay.reply_to.as_deref(),
            replay.reply_correlation_id.as_deref(),
        )
        .await?;
    }
    Ok(true)
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
