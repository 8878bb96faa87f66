//! What happens to notifications after they were answered: the inquiry of
//! an unverified authorization (the worker acts only on the gateway's own
//! answer), and holds that reach their deadline.
//!
//! Both are rows in PostgreSQL, claimed with `FOR UPDATE SKIP LOCKED` and
//! pushed forward while being worked on, so any number of instances can run
//! these loops and a crash only delays them. Inquiries are rate-limited per
//! account (`[notifications] inquiries_per_minute`), by one token bucket per
//! account in PostgreSQL shared by every instance: unverified traffic is
//! whatever anyone on the internet sends, and must not turn into a flood of
//! calls to the gateway, however many workers receive it.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::action::apply;
use super::intake::Context;
use super::rules::{Action, Decision, OnDeadline, DEADLINE};
use super::{Meaning, Notice};
use crate::gateways::{Answer, Classification, OperationRequest, PaymentOperation, PaymentState};
use crate::store::notifications::{self as store, NotificationRow, Outcome};
use crate::store::StoreError;
use crate::telemetry::Escaped;

/// How often the loops look when nothing else happens.
const PERIOD: Duration = Duration::from_millis(500);
/// How long a claimed inquiry is left to the instance that claimed it.
const CLAIM: Duration = Duration::from_secs(60);
/// Inquiries of one notification before it is given up (`ignored`).
const MAX_INQUIRIES: i32 = 8;

/// Runs both loops until `stop`.
pub async fn run(ctx: Arc<Context>, inquiries_per_minute: u32, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(PERIOD) => {}
        }
        let due = match ctx.store.pool().acquire().await {
            Ok(mut conn) => store::due_work(&mut conn).await,
            Err(error) => Err(error.into()),
        };
        let due = match due {
            Ok(due) => due,
            Err(error) => {
                tracing::warn!(%error, "notification jobs: database unavailable; trying again");
                continue;
            }
        };
        ctx.metrics
            .notifications
            .set_holds(due.open_holds, due.oldest_hold_seconds);
        if due.inquiries {
            if let Err(error) = inquiries(&ctx, inquiries_per_minute).await {
                tracing::warn!(%error, "notification inquiries: database unavailable; trying again");
            }
        }
        if due.deadlines {
            if let Err(error) = deadlines(&ctx).await {
                tracing::warn!(%error, "hold deadlines: database unavailable; trying again");
            }
        }
    }
}

/// How long an inquiry refused by the rate limit waits before it is claimed
/// again.
const RATE_LIMITED_WAIT: Duration = Duration::from_secs(5);

async fn inquiries(ctx: &Context, per_minute: u32) -> Result<(), StoreError> {
    let claimed: Vec<NotificationRow> = {
        let mut tx = ctx.store.pool().begin().await?;
        let rows = store::due_inquiries(&mut tx, 32).await?;
        for row in &rows {
            store::inquire_later(&mut tx, row.id, CLAIM, false).await?;
        }
        tx.commit().await?;
        rows
    };
    for row in claimed {
        let allowed = {
            let mut conn = ctx.store.pool().acquire().await?;
            let allowed =
                store::take_inquiry_token(&mut conn, &row.gateway, &row.account, per_minute, None)
                    .await?;
            if !allowed {
                store::rate_limited(&mut conn, row.id, RATE_LIMITED_WAIT).await?;
            }
            allowed
        };
        if !allowed {
            ctx.metrics.notifications.inquiry("rate_limited");
            tracing::debug!(notification = row.id, gateway = %row.gateway, account = %Escaped::at_most(&row.account, 64), "inquiry put off: the account's inquiries are at their rate limit");
            continue;
        }
        inquire(ctx, row).await?;
    }
    Ok(())
}

/// Asks the gateway about an unverified authorization, and acts only if its
/// answer shows the payment authorized with the same amount and currency.
async fn inquire(ctx: &Context, row: NotificationRow) -> Result<(), StoreError> {
    let reader = ctx
        .readers
        .iter()
        .find(|((g, a), _)| *g == row.gateway && *a == row.account)
        .map(|(_, r)| r.clone());
    let client = ctx.accounts.get(&row.gateway, &row.account).cloned();
    let (Some(reader), Some(client)) = (reader, client) else {
        return conclude(ctx, &row, None, "the account is no longer configured").await;
    };
    let Some(notice) = reader.read(&row.body).notice else {
        return conclude(ctx, &row, None, "no payment to ask about").await;
    };
    let call = client
        .execute(&OperationRequest::new(
            PaymentOperation::Inquiry,
            notice.payment_id.clone(),
        ))
        .await;
    match judge(&call.answer, &notice) {
        Judged::NotActedOn { metric, why } => {
            ctx.metrics.notifications.inquiry(metric);
            return conclude(ctx, &row, None, &why).await;
        }
        Judged::NoAnswer => {
            ctx.metrics.notifications.inquiry("no_answer");
            return ask_again_or_give_up(ctx, &row).await;
        }
        Judged::Confirmed => {}
    }
    ctx.metrics.notifications.inquiry("confirmed");
    // Only what the gateway confirmed, plus what the account fixes: a rule
    // on anything else (the payment method) does not match an unverified body.
    let trusted = Notice {
        payment_method: None,
        meaning: Meaning::Authorized,
        ..notice
    };
    let decision = ctx.automation.decide(&row.gateway, &row.account, &trusted);
    conclude(ctx, &row, Some((trusted, decision)), "").await
}

/// What the gateway's answer to the inquiry says of an unverified notice.
enum Judged {
    /// It shows no such authorization: `why`, counted under `metric`.
    NotActedOn { metric: &'static str, why: String },
    /// No usable answer: ask again later.
    NoAnswer,
    /// The payment is authorized, with the notice's amount and currency.
    Confirmed,
}

fn judge(answer: &Answer, notice: &Notice) -> Judged {
    if answer.classification == Classification::Declined {
        // A definite answer that shows no payment: nothing to act on.
        let why = if answer.not_found {
            "the gateway does not know this payment: not acted on".to_string()
        } else {
            format!(
                "the gateway does not confirm this payment (answer {}: {}): not acted on",
                Escaped::at_most(answer.gateway_code.as_deref().unwrap_or("-"), 16),
                Escaped::at_most(answer.description.as_deref().unwrap_or("-"), 120),
            )
        };
        return Judged::NotActedOn {
            metric: "not_found",
            why,
        };
    }
    let Some(snapshot) = answer
        .snapshot
        .as_ref()
        .filter(|_| answer.classification == Classification::Succeeded)
    else {
        return Judged::NoAnswer;
    };
    let confirmed = snapshot.state == PaymentState::Authorized
        && snapshot.amount.is_some()
        && snapshot.amount == notice.amount
        && snapshot.currency.is_some()
        && snapshot.currency == notice.currency;
    if confirmed {
        return Judged::Confirmed;
    }
    Judged::NotActedOn {
        metric: "contradicted",
        why: format!(
            "the gateway's answer does not confirm it (status {}, amount {}, currency {}): not acted on",
            Escaped::at_most(&snapshot.status, 32),
            snapshot.amount.map(|a| a.to_string()).unwrap_or_else(|| "-".into()),
            Escaped::at_most(snapshot.currency.as_deref().unwrap_or("-"), 8),
        ),
    }
}

/// After an answer that told nothing: the next inquiry, later and later, or
/// none after [`MAX_INQUIRIES`].
async fn ask_again_or_give_up(ctx: &Context, row: &NotificationRow) -> Result<(), StoreError> {
    if row.inquiries + 1 >= MAX_INQUIRIES {
        return conclude(
            ctx,
            row,
            None,
            "the gateway gave no usable answer; given up",
        )
        .await;
    }
    let mut conn = ctx.store.pool().acquire().await?;
    let delay = Duration::from_secs(
        2u64.saturating_pow(row.inquiries.max(0) as u32 + 1)
            .min(300),
    );
    store::inquire_later(&mut conn, row.id, delay, true).await
}

/// Ends an unverified notification: the decision on the gateway's word, or
/// `ignored` with why.
async fn conclude(
    ctx: &Context,
    row: &NotificationRow,
    decided: Option<(Notice, Decision)>,
    why: &str,
) -> Result<(), StoreError> {
    let mut tx = ctx.store.pool().begin().await?;
    let Some(current) = store::lock(&mut tx, row.id).await? else {
        return Ok(());
    };
    if current.decision != "unverified" {
        return Ok(());
    }
    let decision = match decided {
        Some((notice, decision)) => {
            apply(
                ctx,
                &mut tx,
                row.id,
                &row.gateway,
                &row.account,
                &notice,
                &decision,
            )
            .await?
        }
        None => {
            store::decide(
                &mut tx,
                row.id,
                &Outcome {
                    decision: "ignored",
                    reason: Some(why),
                    ..Outcome::default()
                },
            )
            .await?;
            "ignored"
        }
    };
    tx.commit().await?;
    ctx.after_commit(decision);
    tracing::info!(
        notification = row.id,
        decision,
        "unverified notification concluded on the gateway's answer"
    );
    Ok(())
}

async fn deadlines(ctx: &Context) -> Result<(), StoreError> {
    let mut tx = ctx.store.pool().begin().await?;
    let rows = store::due_holds(&mut tx, 32).await?;
    if rows.is_empty() {
        return Ok(());
    }
    let mut acted = false;
    for row in rows {
        match ctx.automation.on_deadline {
            OnDeadline::Alert => {
                tracing::warn!(notification = row.id, gateway = %row.gateway, payment = %Escaped::at_most(row.payment_id.as_deref().unwrap_or("-"), 32), "a held authorization reached its deadline: a person must decide");
                ctx.metrics.notifications.deadline("alert");
                store::alert_hold(&mut tx, row.id).await?;
            }
            OnDeadline::Cancel => {
                let decided =
                    release(ctx, &mut tx, &row, Action::Cancel, DEADLINE, "deadline").await?;
                ctx.metrics.notifications.deadline("cancel");
                acted |= decided.is_ok();
                if let Err(why) = decided {
                    tracing::warn!(notification = row.id, %why, "a hold past its deadline could not be cancelled");
                    store::alert_hold(&mut tx, row.id).await?;
                }
            }
        }
    }
    tx.commit().await?;
    if acted {
        ctx.after_commit("acted");
    }
    Ok(())
}

/// Ends a hold with a command (`capture` or `cancel`), inside `tx`: the
/// deadline's action, or a person's release (`by` says who). The command
/// is the automated one (`"rule": rule`). `Err` says why it cannot be.
pub async fn release(
    ctx: &Context,
    tx: &mut sqlx::PgConnection,
    row: &NotificationRow,
    action: Action,
    rule: &str,
    by: &str,
) -> Result<Result<String, String>, StoreError> {
    if row.decision != "held" || row.hold_closed_at.is_some() {
        return Ok(Err(format!(
            "notification {} is not an open hold (decision {}{})",
            row.id,
            row.decision,
            if row.hold_closed_at.is_some() {
                ", closed"
            } else {
                ""
            }
        )));
    }
    let reader = ctx
        .readers
        .iter()
        .find(|((g, a), _)| *g == row.gateway && *a == row.account)
        .map(|(_, r)| r.clone());
    let Some(notice) = reader.and_then(|r| r.read(&row.body).notice) else {
        return Ok(Err(
            "the account is no longer configured, or the body has no payment".into(),
        ));
    };
    let decision = Decision {
        action,
        rule: rule.to_string(),
        delay: Duration::ZERO,
        inputs: serde_json::json!({"released_by": by, "held_by": row.rule}),
        reason: None,
    };
    let done = apply(
        ctx,
        tx,
        row.id,
        &row.gateway,
        &row.account,
        &notice,
        &decision,
    )
    .await?;
    let Some(after) = store::lock(tx, row.id).await? else {
        return Ok(Err("the notification vanished".into()));
    };
    if done != "acted" {
        return Ok(Err(after
            .reason
            .unwrap_or_else(|| "no command could be made".into())));
    }
    let command = after.command_id.clone().unwrap_or_default();
    // The hold is closed, and says by whom.
    store::close_hold(tx, row.id, by, None).await?;
    Ok(Ok(command))
}
