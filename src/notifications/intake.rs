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

use super::action::{act, Decided};
use super::listener::Readers;
use super::rules::Automation;
use super::{Answer, NotificationReader, Reading, Verification};
use crate::gateways::registry::Accounts;
use crate::metrics::Metrics;
use crate::pipeline::Worker;
use crate::store::notifications::{self as store, NewNotification};
use crate::store::Store;
use crate::store::StoreError;
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
