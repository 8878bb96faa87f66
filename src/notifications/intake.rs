//! Record first, answer second, act third.
//!
//! A notification is read and verified by its gateway's reader, then
//! recorded in one transaction with everything done about it: the
//! automated command (`auto.{gateway}.{account}.{payment_id}`, queued for
//! the scheduler, so it runs through the one executor with its leases,
//! recovery point and outbox), or the hold and its `held` event, or the
//! settling of an `unknown` command of ours. The answer is given only once
//! that transaction committed; if it could not commit, the answer is the one
//! that makes the gateway send it again (Praxis `-1`, Paymentz 503), and
//! nothing was written. A repeat (same gateway, account, payment, status,
//! amount and verification) is counted on the first row, answered as the
//! first was, and does nothing more; two notifications that both lead to a
//! command meet on the command's id, so the side effect happens once.

use std::sync::Arc;

use sqlx::PgConnection;

use super::listener::Readers;
use super::rules::{Action, Automation, Decision};
use super::{Answer, Meaning, Notice, NotificationReader, Reading, Verification};
use crate::command::Command;
use crate::events::{Metadata, Origin};
use crate::gateways::registry::Accounts;
use crate::metrics::Metrics;
use crate::pipeline::Worker;
use crate::store::notifications::{self as store, NewNotification, Outcome};
use crate::store::Store;
use crate::store::{commands, StoreError};
use crate::telemetry::Escaped;

/// What the notification side of a worker (or an operator's command) shares.
pub struct Context {
    pub store: Store,
    pub accounts: Accounts,
    pub automation: Automation,
    pub readers: Readers,
    pub result_exchange: String,
    pub metrics: Arc<Metrics>,
    /// The worker in this process, woken when there is work for it; `None`
    /// in an operator's command (the worker's scheduler polls).
    pub worker: Option<Arc<Worker>>,
}

impl Context {
    /// For a worker: its store, accounts, exchange and metrics.
    pub fn of_worker(worker: Arc<Worker>, automation: Automation, readers: Readers) -> Context {
        Context {
            store: worker.store.clone(),
            accounts: worker.accounts.clone(),
            automation,
            readers,
            result_exchange: worker.topology.result_exchange.clone(),
            metrics: worker.metrics.clone(),
            worker: Some(worker),
        }
    }

    /// Wakes whoever has work after a commit.
    pub fn after_commit(&self, decision: &str) {
        let Some(w) = &self.worker else { return };
        match decision {
            "acted" => w.wake_scheduler.notify_one(),
            "held" => w.wake_outbox.notify_one(),
            "settled" => {
                // Its event is staged, and its payment released for the
                // commands waiting on it.
                w.wake_outbox.notify_one();
                w.wake_scheduler.notify_one();
            }
            _ => {}
        }
    }
}

/// One notification, from its raw body to its answer: `(HTTP status, body)`.
pub async fn receive(
    ctx: &Context,
    gateway: &'static str,
    account: &str,
    reader: &dyn NotificationReader,
    body: &[u8],
) -> (u16, String) {
    let reading = reader.read(body);
    let answer = match &reading.verification {
        Verification::Verified => Answer::Recorded,
        Verification::BadSignature(_) => Answer::BadSignature,
        Verification::WrongAccount(_) | Verification::Unreadable(_) => Answer::Refused,
    };
    let (status, text) = reader.answer(answer);
    let mut recorded = crate::store::retry_transient(|| {
        record_and_act(ctx, gateway, account, body, &reading, status, &text)
    })
    .await;
    if let Err(error) = &recorded {
        if crate::store::is_data_error(error) {
            // What was read cannot be stored (a `\u0000` PostgreSQL refuses in
            // jsonb, say): the body itself is still recorded, as unreadable,
            // rather than answered "send again" for ever.
            let bare = Reading {
                fields: None,
                notice: None,
                verification: Verification::Unreadable(format!(
                    "what was read could not be stored: {}",
                    Escaped::at_most(&error.to_string(), 200)
                )),
            };
            let (status, text) = reader.answer(Answer::Refused);
            recorded = record_and_act(ctx, gateway, account, body, &bare, status, &text).await;
        }
    }
    let metrics = &ctx.metrics;
    match recorded {
        Ok((stored_status, stored_body, decision)) => {
            metrics
                .notifications
                .received(gateway, reading.verification.verified(), decision);
            (stored_status as u16, stored_body)
        }
        Err(error) => {
            tracing::warn!(
                gateway,
                account = %Escaped::at_most(account, 64),
                error = %Escaped::at_most(&error.to_string(), 512),
                "notification not recorded: answering so that the gateway sends it again"
            );
            metrics.notifications.received(
                gateway,
                reading.verification.verified(),
                "not_recorded",
            );
            reader.answer(Answer::Retry)
        }
    }
}

/// The repeat key: a payment's status and amount, verified or not. `None`
/// (never a repeat) when there is no payment to speak of.
fn dedupe_key(reading: &Reading) -> Option<String> {
    let notice = reading.notice.as_ref()?;
    Some(format!(
        "{}|{}|{}|{}",
        notice.payment_id,
        notice.status,
        notice.amount_text.as_deref().unwrap_or(""),
        if reading.verification.verified() {
            "verified"
        } else {
            "unverified"
        }
    ))
}

async fn record_and_act(
    ctx: &Context,
    gateway: &'static str,
    account: &str,
    body: &[u8],
    reading: &Reading,
    status: u16,
    answer: &str,
) -> Result<(i32, String, &'static str), StoreError> {
    let notice = reading.notice.as_ref();
    let mut tx = ctx.store.pool().begin().await?;
    let recorded = store::record(
        &mut tx,
        &NewNotification {
            gateway,
            account,
            body,
            fields: reading.fields.as_ref(),
            verified: reading.verification.verified(),
            problem: reading.verification.problem(),
            payment_id: notice.map(|n| n.payment_id.as_str()),
            status: notice.map(|n| n.status.as_str()),
            amount_minor: notice
                .and_then(|n| n.amount)
                .and_then(|a| i64::try_from(a.minor()).ok()),
            currency: notice.and_then(|n| n.currency.as_deref()),
            dedupe_key: dedupe_key(reading),
            answer_status: i32::from(status),
            answer_body: answer,
        },
    )
    .await?;
    if !recorded.inserted {
        tx.commit().await?;
        tracing::info!(
            notification = recorded.id,
            gateway,
            "repeated notification: counted, answered as before"
        );
        return Ok((recorded.answer_status, recorded.answer_body, "repeat"));
    }
    let Decided { decision, settled } =
        act(ctx, &mut tx, recorded.id, gateway, account, reading).await?;
    tx.commit().await?;
    if let Some(settled) = &settled {
        // Concluded in this transaction, not by an executor: counted here,
        // once, now that it is committed.
        ctx.metrics.command_decided(
            &settled.gateway,
            &settled.operation,
            settled.outcome.as_str(),
        );
    }
    ctx.after_commit(decision);
    tracing::info!(
        notification = recorded.id,
        gateway,
        payment = %Escaped::at_most(notice.map(|n| n.payment_id.as_str()).unwrap_or("-"), 32),
        verified = reading.verification.verified(),
        decision,
        "notification recorded"
    );
    Ok((recorded.answer_status, recorded.answer_body, decision))
}

/// What was decided about a notification, and the command it settled in
/// its transaction (as evidence), to be counted once that has committed.
struct Decided {
    decision: &'static str,
    settled: Option<store::Settled>,
}

impl From<&'static str> for Decided {
    fn from(decision: &'static str) -> Decided {
        Decided {
            decision,
            settled: None,
        }
    }
}

/// What to do about a notification just recorded, inside its transaction.
async fn act(
    ctx: &Context,
    tx: &mut PgConnection,
    id: i64,
    gateway: &'static str,
    account: &str,
    reading: &Reading,
) -> Result<Decided, StoreError> {
    let Some(notice) = reading.notice.as_ref() else {
        let why = reading
            .verification
            .problem()
            .unwrap_or("nothing to act on")
            .to_string();
        store::decide(
            tx,
            id,
            &Outcome {
                decision: "ignored",
                reason: Some(&why),
                ..Outcome::default()
            },
        )
        .await?;
        return Ok("ignored".into());
    };
    match (&reading.verification, notice.meaning) {
        (Verification::Verified, Meaning::Authorized) => {
            let decision = ctx.automation.decide(gateway, account, notice);
            apply(ctx, tx, id, gateway, account, notice, &decision)
                .await
                .map(Decided::from)
        }
        (Verification::Verified, Meaning::Captured | Meaning::Cancelled) => {
            evidence(ctx, tx, id, gateway, account, notice, reading).await
        }
        (Verification::BadSignature(why), Meaning::Authorized) => {
            let reason = format!("{why}: the gateway will be asked");
            store::decide(
                tx,
                id,
                &Outcome {
                    decision: "unverified",
                    reason: Some(&reason),
                    inquire_in: Some(std::time::Duration::ZERO),
                    ..Outcome::default()
                },
            )
            .await?;
            Ok("unverified".into())
        }
        (verification, meaning) => {
            let reason = match (verification.problem(), meaning) {
                (Some(problem), _) => format!("{problem}; not acted on"),
                (None, _) => format!(
                    "status `{}` is not an authorization",
                    Escaped::at_most(&notice.status, 64)
                ),
            };
            store::decide(
                tx,
                id,
                &Outcome {
                    decision: "ignored",
                    reason: Some(&reason),
                    ..Outcome::default()
                },
            )
            .await?;
            Ok("ignored".into())
        }
    }
}

/// Carries out a decision about an authorization: a command (capture or
/// cancel), or a hold and its event. Shared by the listener, the inquiry of
/// an unverified notification, a deadline and an operator's release.
pub async fn apply(
    ctx: &Context,
    tx: &mut PgConnection,
    id: i64,
    gateway: &str,
    account: &str,
    notice: &Notice,
    decision: &Decision,
) -> Result<&'static str, StoreError> {
    let origin = Origin {
        kind: "notification".into(),
        notification_id: id.to_string(),
        rule: decision.rule.clone(),
    };
    match decision.action {
        Action::Hold => {
            let event = held_event(gateway, account, notice, &origin, decision);
            store::enqueue_event(
                tx,
                &ctx.result_exchange,
                &format!("{gateway}.authorization.held"),
                &event,
            )
            .await?;
            store::decide(
                tx,
                id,
                &Outcome {
                    decision: "held",
                    reason: decision.reason.as_deref(),
                    rule: Some(&decision.rule),
                    matched: Some(&decision.inputs),
                    hold_for: Some(ctx.automation.hold_deadline),
                    ..Outcome::default()
                },
            )
            .await?;
            tracing::warn!(notification = id, gateway, payment = %Escaped::at_most(&notice.payment_id, 32), rule = %decision.rule, "authorization held for a person");
            Ok("held")
        }
        Action::Capture | Action::Cancel => {
            match create_command(ctx, tx, gateway, account, notice, decision, origin).await? {
                Ok(command_id) => {
                    store::decide(
                        tx,
                        id,
                        &Outcome {
                            decision: "acted",
                            rule: Some(&decision.rule),
                            matched: Some(&decision.inputs),
                            command_id: Some(&command_id),
                            ..Outcome::default()
                        },
                    )
                    .await?;
                    Ok("acted")
                }
                Err(why) => {
                    store::decide(
                        tx,
                        id,
                        &Outcome {
                            decision: "ignored",
                            reason: Some(&why),
                            rule: Some(&decision.rule),
                            matched: Some(&decision.inputs),
                            ..Outcome::default()
                        },
                    )
                    .await?;
                    Ok("ignored")
                }
            }
        }
    }
}

/// The event of a hold: `{gateway}.authorization.held`.
pub fn held_event(
    gateway: &str,
    account: &str,
    notice: &Notice,
    origin: &Origin,
    decision: &Decision,
) -> serde_json::Value {
    serde_json::json!({
        "event": "authorization.held",
        "gateway": gateway,
        "account": account,
        "payment_id": notice.payment_id,
        "amount": notice.amount_text,
        "currency": notice.currency,
        "gateway_status": notice.status,
        "reason": decision.reason,
        "origin": origin,
        "metadata": notice.metadata,
        "occurred_at": crate::events::now_rfc3339(),
    })
}

/// Inserts the automated command, queued for the scheduler (after the
/// rule's `delay`). Its id is the payment's: if it exists (an earlier
/// notification, a person's release), nothing new is made and the existing
/// one is named. `Err` says why no command can be made (the command would
/// be invalid for the account, which a rule cannot fix).
async fn create_command(
    ctx: &Context,
    tx: &mut PgConnection,
    gateway: &str,
    account: &str,
    notice: &Notice,
    decision: &Decision,
    origin: Origin,
) -> Result<Result<String, String>, StoreError> {
    let id = super::command_id(gateway, account, &notice.payment_id);
    if !crate::command::valid_id(&id) {
        return Ok(Err(format!(
            "the command id `{}` would not be a valid id",
            Escaped::at_most(&id, 160)
        )));
    }
    let operation = match decision.action {
        Action::Capture => crate::gateways::Operation::Capture,
        _ => crate::gateways::Operation::Cancel,
    };
    // Paymentz captures the full authorized amount; Praxis takes none.
    let amount = match (gateway, operation) {
        (crate::gateways::paymentz::NAME, crate::gateways::Operation::Capture) => {
            match notice.amount {
                Some(amount) => Some(amount.to_string()),
                None => return Ok(Err("no usable amount to capture".into())),
            }
        }
        _ => None,
    };
    let metadata =
        Metadata::from_json(serde_json::Value::Object(notice.metadata.clone()).to_string())
            .expect("a JSON object");
    let command = Command {
        id: Some(id.clone()),
        gateway: Some(gateway.to_string()),
        account: Some(account.to_string()),
        operation: Some(operation.as_str().to_string()),
        payment_id: Some(notice.payment_id.clone()),
        amount,
        currency: notice.currency.clone(),
        metadata: Some(metadata),
        origin: Some(origin),
        ..Command::default()
    };
    let valid = match command.validate(&ctx.accounts) {
        Ok(valid) => valid,
        Err(rejected) => {
            return Ok(Err(format!(
                "the command would be rejected: {}",
                rejected.description
            )))
        }
    };
    let row = crate::pipeline::intake::new_row(
        &command,
        crate::pipeline::intake::fingerprint(&command, &[]),
        Some(&valid),
        None,
        None,
    );
    if commands::insert(tx, &row, None).await? {
        if !decision.delay.is_zero() {
            store::delay_command(tx, &id, decision.delay).await?;
        }
        tracing::info!(command = %id, operation = operation.as_str(), rule = %decision.rule, "automated command created");
    } else {
        tracing::info!(command = %id, "automated command exists already: not made again");
    }
    Ok(Ok(id))
}

/// A verified notification saying the payment was captured or cancelled:
/// it settles a command of ours on that payment whose effect is still in
/// question (an `unknown`, or one whose executor is still verifying an
/// ambiguous attempt), captured for a capture, cancelled for a cancel, with
/// an attempt-like record of why. Our own calls cause such notifications
/// too: they find nothing in question and are only recorded, as evidence an
/// executor still verifying looks for before each inquiry.
async fn evidence(
    ctx: &Context,
    tx: &mut PgConnection,
    id: i64,
    gateway: &str,
    _account: &str,
    notice: &Notice,
    reading: &Reading,
) -> Result<Decided, StoreError> {
    let operation = match notice.meaning {
        Meaning::Captured => "capture",
        _ => "cancel",
    };
    let settled = store::settle_by_notification(
        tx,
        gateway,
        &notice.payment_id,
        operation,
        store::Evidence {
            notification: id,
            status: &notice.status,
            fields: reading.fields.as_ref(),
        },
        &ctx.result_exchange,
    )
    .await?;
    let reason = match &settled {
        Some(settled) => format!("evidence: settled {} as succeeded", settled.command_id),
        None => format!(
            "evidence: the payment is {}; no {operation} of ours in question to settle",
            Escaped::at_most(&notice.status, 64)
        ),
    };
    store::decide(
        tx,
        id,
        &Outcome {
            decision: "ignored",
            reason: Some(&reason),
            evidence: Some(operation),
            ..Outcome::default()
        },
    )
    .await?;
    Ok(Decided {
        decision: if settled.is_some() {
            "settled"
        } else {
            "ignored"
        },
        settled,
    })
}
