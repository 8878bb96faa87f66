//! What is done about a notification once it is recorded, inside the
//! transaction that recorded it: an authorization's decision carried out
//! (the automated command, or the hold and its `held` event), a captured or
//! cancelled one taken as evidence that settles a command of ours, anything
//! else ignored with its reason. The listener ([`super::intake`]), the
//! inquiry of an unverified notification, a hold's deadline and an
//! operator's release all end here, so a decision is carried out one way.

use sqlx::PgConnection;

use super::intake::Context;
use super::rules::{Action, Decision};
use super::{Meaning, Notice, Reading, Verification};
use crate::command::Command;
use crate::events::{Metadata, Origin};
use crate::store::notifications::{self as store, Outcome};
use crate::store::{commands, StoreError};
use crate::telemetry::Escaped;

/// What was decided about a notification, and the command it settled in
/// its transaction (as evidence), to be counted once that has committed.
pub(super) struct Decided {
    pub(super) decision: &'static str,
    pub(super) settled: Option<store::Settled>,
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
pub(super) async fn act(
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
            .unwrap_or("nothing to act on");
        return ignore(tx, id, why).await;
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
            ignore(tx, id, &reason).await
        }
    }
}

/// Records that nothing is done about the notification, and why.
async fn ignore(tx: &mut PgConnection, id: i64, reason: &str) -> Result<Decided, StoreError> {
    store::decide(
        tx,
        id,
        &Outcome {
            decision: "ignored",
            reason: Some(reason),
            ..Outcome::default()
        },
    )
    .await?;
    Ok("ignored".into())
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
