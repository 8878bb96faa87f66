//! Notifications as evidence: a verified notification saying a payment was
//! captured or cancelled settles a command of ours on that payment whose
//! effect is still in question (an `unknown`, or one still verifying an
//! ambiguous attempt), in one transaction with the command locked, so that
//! exactly one of the notification, the executor and the reconciliation
//! concludes it.

use sqlx::PgConnection;

use crate::events::ResultEvent;
use crate::store::commands::CommandRow;
use crate::store::StoreError;

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

/// A command a verified notification settled, as the metrics count it:
/// its first decision when it was still verifying, or an `unknown`'s
/// settlement (counted again under its settled outcome, as a
/// reconciliation's is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    pub command_id: String,
    pub gateway: String,
    pub operation: String,
    /// Always `succeeded`: a notification is evidence of an effect only.
    pub outcome: crate::outcome::Outcome,
}

/// Settles a command of ours on this payment whose operation is `operation`
/// and whose effect is still in question, as `succeeded`, on `evidence`:
/// an `unknown` (`unsettled`, reconciled now or later), or one still
/// verifying an ambiguous or interrupted attempt (`running`, its recovery
/// point `calling` and no call in flight: its executor is inquiring). The
/// command's row is locked, and its state read again under the lock, so
/// exactly one of the notification, the executor's own inquiry and the
/// reconciliation concludes it: the others find it no longer theirs (their
/// writes are guarded by the lease). The caller counts what it returns once
/// its transaction has committed.
pub async fn settle_by_notification(
    conn: &mut PgConnection,
    gateway: &str,
    payment_id: &str,
    operation: &str,
    evidence: Evidence<'_>,
    exchange: &str,
) -> Result<Option<Settled>, StoreError> {
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
        if let Some(settled) = settle_locked(conn, &id, evidence, exchange, None).await? {
            return Ok(Some(settled));
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
    let Some(row) = crate::store::commands::lock(&mut *conn, command_id).await? else {
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
    let found: Option<Found> = sqlx::query_as(&format!(
        "SELECT n.id, n.status, n.fields::text FROM notifications n
          WHERE n.gateway = $1 AND n.payment_id = $2 AND n.evidence = $3 AND n.verified
            AND n.settled_command IS NULL
            AND n.received_at >= (SELECT max({}) FROM attempts
                                   WHERE command_id = $4 AND kind = 'operation')
          ORDER BY n.id LIMIT 1 FOR UPDATE OF n",
        crate::store::attempts::SENT
    ))
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
    let note =
        format!("then settled {command_id} as succeeded (it was verifying an ambiguous attempt)");
    match settle_locked(conn, command_id, evidence, exchange, Some(&note)).await? {
        Some(_) => Ok(Verifying::Settled(notification)),
        None => Ok(Verifying::Inquire),
    }
}

/// Settles one command locked by this transaction, if its effect is still
/// in question (see [`settle_by_notification`]); the one place both ways
/// of settling write: its outcome and event, the attempt-like record of why
/// (kind `inquiry`, purpose `notification #id`, the notification's fields
/// as the body received), the notification naming the command (`note`
/// added to its reason), its payment released.
async fn settle_locked(
    conn: &mut PgConnection,
    id: &str,
    evidence: Evidence<'_>,
    exchange: &str,
    note: Option<&str>,
) -> Result<Option<Settled>, StoreError> {
    // Read again now that it is locked: a statement of its own sees what
    // committed while the lock was awaited.
    let Some(row) = crate::store::commands::get(&mut *conn, id).await? else {
        return Ok(None);
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
        return Ok(None);
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
    sqlx::query(
        "UPDATE notifications SET settled_command = $2,
            reason = CASE WHEN $3::text IS NULL THEN reason
                          ELSE COALESCE(reason || '; ', '') || $3 END
          WHERE id = $1",
    )
    .bind(notification)
    .bind(id)
    .bind(note)
    .execute(&mut *conn)
    .await?;
    let gateway = row.gateway.clone().unwrap_or_default();
    if let Some(payment_id) = row.payment_id.as_deref() {
        crate::store::commands::release_payment(conn, &gateway, payment_id, id).await?;
    }
    Ok(Some(Settled {
        command_id: row.id,
        gateway,
        operation: row.operation.unwrap_or_default(),
        outcome: crate::outcome::Outcome::Succeeded,
    }))
}

/// Whether a `running` command is between an uncertain attempt and its
/// conclusion: recovery point `calling` and no call in flight (its answer
/// was ambiguous, or it was found interrupted), so its executor is only
/// inquiring.
async fn verifying(conn: &mut PgConnection, row: &CommandRow) -> Result<bool, StoreError> {
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
    row: &CommandRow,
    notification: i64,
    status: &str,
    exchange: &str,
) -> Result<bool, StoreError> {
    // Read as text: through a serde_json::Value the numbers of the metadata
    // it echoes could be rounded.
    let Some(mut event) = crate::store::commands::current_result(&mut *conn, &row.id)
        .await?
        .and_then(|r| serde_json::from_str::<ResultEvent>(&r).ok())
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
    conclude(
        conn,
        row,
        "UPDATE commands SET state = 'done', settled_outcome = 'succeeded', settled_result = $2::jsonb,
            settled_at = now(), lease_owner = NULL, lease_until = NULL, next_run_at = NULL, updated_at = now()
         WHERE id = $1 AND state = 'unsettled'",
        &event,
        exchange,
    )
    .await
}

/// A command still verifying its attempt, decided: its one result event
/// (`succeeded`, saying the notification confirmed it), and the replays its
/// duplicates wait for. Its executor finds it no longer its own.
async fn settle_verifying(
    conn: &mut PgConnection,
    row: &CommandRow,
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
    let concluded = conclude(
        conn,
        row,
        "UPDATE commands SET state = 'done', phase = 'ready', outcome = 'succeeded', result = $2::jsonb,
            decided_at = now(), updated_at = now(), lease_owner = NULL, lease_until = NULL,
            pending_replays = 0, next_run_at = NULL
         WHERE id = $1 AND state = 'running' AND outcome IS NULL",
        &event,
        exchange,
    )
    .await?;
    if !concluded {
        return Ok(false);
    }
    let replays = crate::store::commands::take_pending_replays(conn, &[row.id.as_str()]).await?;
    for replay in replays {
        crate::store::outbox::enqueue(
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

/// Writes a settlement's conclusion: `update` (`$1` the command, `$2` the
/// event's body), guarded by the state the command was read in, then its
/// event staged for the relay. False, and nothing staged, when the guard
/// found it concluded meanwhile.
async fn conclude(
    conn: &mut PgConnection,
    row: &CommandRow,
    update: &str,
    event: &ResultEvent,
    exchange: &str,
) -> Result<bool, StoreError> {
    let body = serde_json::to_string(event).expect("events serialize");
    let done = sqlx::query(update)
        .bind(&row.id)
        .bind(&body)
        .execute(&mut *conn)
        .await?;
    if done.rows_affected() != 1 {
        return Ok(false);
    }
    let correlation = row.correlation_id.as_deref().or(Some(row.id.as_str()));
    crate::store::outbox::enqueue(conn, exchange, event, row.reply_to.as_deref(), correlation)
        .await?;
    Ok(true)
}
