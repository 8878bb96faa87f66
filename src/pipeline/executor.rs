//! Running one command against its gateway, at most once in effect.
//!
//! The executor holds a command's lease and its payment's lease. Before any
//! call with a side effect it commits the recovery point `calling` (and, where
//! the gateway needs it, a snapshot of the payment); after the call it commits
//! every exchange together with the outcome and its event. When an answer is
//! ambiguous, or a run is found interrupted in `calling`, it inquires before it
//! ever sends again ([`verify`]). Retries are written to Postgres and the lease
//! given up, never waited for in memory.

use std::sync::Arc;
use time::OffsetDateTime;
use tracing::Instrument;

use super::exchanges::{count_exchanges, recording_of, write_record, write_record_in, Record};
use super::reconcile::{no_such_payment, reconcile_unknown, settle, Evidence, Settlement};
use super::{retry, Job, Worker};
use crate::events::Reported;
use crate::gateways::{Answer, Classification, Operation, PaymentSnapshot, PaymentState};
use crate::money::Amount;
use crate::outcome::{Outcome, RejectReason};
use crate::store::attempts::{self, AttemptKind};
use crate::store::{commands, StoreError};

/// Drives one claimed command until it is decided, scheduled again, or its
/// lease is lost. Database errors leave the command where it was: its lease
/// expires and the scheduler (here or elsewhere) resumes it from its recovery point.
pub async fn drive(worker: Arc<Worker>, job: Job) {
    let span = tracing::info_span!(
        "command",
        id = %job.row.id,
        gateway = job.valid.gateway.name(),
        account = %job.valid.account,
        operation = %job.valid.request.operation,
        payment_id = job.valid.request.payment_id.as_deref().unwrap_or(""),
    );
    let id = job.row.id.clone();
    worker.track(&id);
    let result = run(&worker, &job).instrument(span.clone()).await;
    worker.untrack(&id);
    if let Err(error) = result {
        tracing::warn!(parent: &span, %error, "database error while running the command; it resumes when its lease expires");
    }
}

async fn run(w: &Worker, job: &Job) -> Result<(), StoreError> {
    let id = job.row.id.as_str();
    if !job.payment_leased {
        let mut conn = w.store.pool().acquire().await?;
        let granted = commands::claim_payment(
            &mut conn,
            job.valid.gateway.name(),
            &job.payment_key(),
            id,
            w.owner,
            w.settings.lease,
        )
        .await?;
        if !granted {
            // Another command holds this payment. Its release wakes us; the
            // recheck bounds the wait should that wake-up miss us.
            tracing::debug!("payment busy; waiting for the command that holds it");
            commands::defer(&mut conn, id, w.owner, super::BUSY_PAYMENT_RECHECK).await?;
            // The holder may have released between our claim and our requeue, in
            // which case its wake-up missed us: look once more.
            commands::wake_if_payment_free(
                &mut conn,
                id,
                job.valid.gateway.name(),
                &job.payment_key(),
            )
            .await?;
            return Ok(());
        }
    }
    if job.row.state == "unsettled" {
        return reconcile_unknown(w, job).await;
    }

    let operation = job.valid.request.operation;
    let attempts_made = job.row.attempts;
    let mut before: Option<PaymentSnapshot> = job
        .row
        .before_snapshot
        .as_ref()
        .and_then(|v| serde_json::from_value(v.clone()).ok());

    if let Some(row) = job.intent_row {
        // Intake committed this first attempt's recovery point with the command.
        return call_and_decide(w, job, 1, row, None).await;
    }
    if job.row.phase == "calling" {
        // Found mid-call: a previous run died (or lost its lease) after recording
        // its intent. Whatever it sent may have taken effect; find out first.
        let mut conn = w.store.pool().acquire().await?;
        let interrupted = attempts::mark_interrupted(&mut conn, id).await?;
        drop(conn);
        tracing::info!(
            interrupted,
            "resuming an interrupted attempt: inquiring before anything else"
        );
        match verify(w, job, before.as_ref(), attempts_made).await? {
            (Settlement::Applied, snapshot, _) => {
                return conclude_applied(
                    w,
                    job,
                    attempts_made,
                    snapshot.as_ref(),
                    "the attempt interrupted by a restart",
                )
                .await;
            }
            (Settlement::NoSuchPayment, _, _) => {
                return conclude_no_such_payment(
                    w,
                    job,
                    attempts_made,
                    "the attempt interrupted by a restart",
                )
                .await;
            }
            (Settlement::NotApplied, _, _) => {
                let mut conn = w.store.pool().acquire().await?;
                commands::clear_intent(&mut conn, id, w.owner).await?;
                if attempts_made >= w.settings.max_attempts as i32 {
                    let reported = Reported {
                        description: Some("the interrupted attempt did not take effect and the retry budget is spent".into()),
                        ..Reported::default()
                    };
                    return conclude(
                        w,
                        job,
                        Outcome::Failed,
                        None,
                        attempts_made,
                        reported,
                        None,
                        false,
                    )
                    .await;
                }
            }
            (Settlement::Undecided, _, _) => {
                let reported = Reported {
                    description: Some("the worker stopped during a call and inquiries could not tell whether it took effect; reconciliation continues".into()),
                    ..Reported::default()
                };
                return conclude(
                    w,
                    job,
                    Outcome::Unknown,
                    None,
                    attempts_made,
                    reported,
                    None,
                    true,
                )
                .await;
            }
        }
    }

    // Record what the payment looks like before the side effect, where the status
    // afterwards could not tell whether this attempt applied. Its exchange is
    // written with the recovery point, in the same commit.
    let mut snapshot_call = None;
    if operation.has_side_effect()
        && job.valid.gateway.snapshot_before(operation)
        && before.is_none()
    {
        let inquiry = job
            .valid
            .request
            .inquiry()
            .expect("side effects have a payment id");
        let call = job.valid.gateway.execute(&inquiry).await;
        let record = Record {
            gateway: job.valid.gateway.name(),
            attempt_no: attempts_made + 1,
            kind: AttemptKind::Inquiry,
            in_flight_row: None,
            call: &call,
        };
        match (&call.answer.classification, &call.answer.snapshot) {
            (Classification::Succeeded, Some(snapshot)) => {
                if operation == Operation::Refund {
                    if let Some(problem) = refund_limit(w, job, snapshot).await? {
                        let reported = Reported {
                            gateway_status: Some(snapshot.status.clone()),
                            description: Some(problem),
                            ..Reported::default()
                        };
                        return conclude(
                            w,
                            job,
                            Outcome::Declined,
                            None,
                            attempts_made,
                            reported,
                            Some(record),
                            false,
                        )
                        .await;
                    }
                }
                before = Some(snapshot.clone());
                snapshot_call = Some(call);
            }
            (Classification::Declined, _) => {
                let mut reported = Reported::from_answer(&call.answer, operation);
                reported.description = Some(format!(
                    "the payment could not be inquired before the {operation}: {}",
                    call.answer.description.as_deref().unwrap_or("declined")
                ));
                return conclude(
                    w,
                    job,
                    Outcome::Declined,
                    None,
                    attempts_made,
                    reported,
                    Some(record),
                    false,
                )
                .await;
            }
            _ => {
                return retry_or_fail(w, job, attempts_made, &call.answer, Some(record)).await;
            }
        }
    }

    // The recovery point: committed before the call, so that whoever finds this
    // command after a crash knows a call may have been made.
    let before_json = before
        .as_ref()
        .map(|s| serde_json::to_value(s).expect("serializable"));
    let inquiry = snapshot_call.as_ref().map(|call| {
        let record = Record {
            gateway: job.valid.gateway.name(),
            attempt_no: attempts_made + 1,
            kind: AttemptKind::Inquiry,
            in_flight_row: None,
            call,
        };
        count_exchanges(w, &record);
        recording_of(id, &record)
    });
    let intent = super::intent::Intent {
        command_id: id.to_string(),
        purpose: operation.as_str(),
        before_snapshot: before_json,
        inquiry,
    };
    let Some((attempt_no, row)) = w.intents.record(intent).await? else {
        tracing::warn!("lost the lease before calling; leaving the command to its new owner");
        return Ok(());
    };

    call_and_decide(w, job, attempt_no, row, before).await
}

/// Makes the call whose recovery point is committed, and decides from its answer.
async fn call_and_decide(
    w: &Worker,
    job: &Job,
    attempt_no: i32,
    row: i64,
    before: Option<PaymentSnapshot>,
) -> Result<(), StoreError> {
    let id = job.row.id.as_str();
    let operation = job.valid.request.operation;
    let call = job.valid.gateway.execute(&job.valid.request).await;
    let record = Record {
        gateway: job.valid.gateway.name(),
        attempt_no,
        kind: AttemptKind::Operation,
        in_flight_row: Some(row),
        call: &call,
    };
    let answer = &call.answer;
    tracing::debug!(classification = %answer.classification, "gateway answered");
    match answer.classification {
        Classification::Succeeded => {
            let reported = Reported::from_answer(answer, operation);
            conclude(
                w,
                job,
                Outcome::Succeeded,
                None,
                attempt_no,
                reported,
                Some(record),
                false,
            )
            .await
        }
        Classification::Declined => {
            let reported = Reported::from_answer(answer, operation);
            conclude(
                w,
                job,
                Outcome::Declined,
                None,
                attempt_no,
                reported,
                Some(record),
                false,
            )
            .await
        }
        Classification::NotApplied => retry_or_fail(w, job, attempt_no, answer, Some(record)).await,
        // A read has no effect to double: just ask again.
        Classification::Ambiguous if !operation.has_side_effect() => {
            retry_or_fail(w, job, attempt_no, answer, Some(record)).await
        }
        Classification::Ambiguous => {
            write_record(w, id, &record).await?;
            tracing::info!(
                error = answer.description.as_deref().unwrap_or(""),
                "ambiguous answer: inquiring before anything else"
            );
            match verify(w, job, before.as_ref(), attempt_no).await? {
                (Settlement::Applied, snapshot, _) => {
                    let cause = answer
                        .description
                        .clone()
                        .unwrap_or_else(|| "an ambiguous answer".into());
                    conclude_applied(w, job, attempt_no, snapshot.as_ref(), &cause).await
                }
                (Settlement::NotApplied, _, _) => {
                    let mut conn = w.store.pool().acquire().await?;
                    commands::clear_intent(&mut conn, id, w.owner).await?;
                    drop(conn);
                    retry_or_fail(w, job, attempt_no, answer, None).await
                }
                (Settlement::NoSuchPayment, _, _) => {
                    let cause = answer
                        .description
                        .clone()
                        .unwrap_or_else(|| "an ambiguous answer".into());
                    conclude_no_such_payment(w, job, attempt_no, &cause).await
                }
                (Settlement::Undecided, _, _) => {
                    let mut reported = Reported::from_answer(answer, operation);
                    reported.description = Some(format!(
                        "{}; inquiries could not tell whether it took effect; reconciliation continues",
                        answer.description.as_deref().unwrap_or("ambiguous answer")
                    ));
                    conclude(
                        w,
                        job,
                        Outcome::Unknown,
                        None,
                        attempt_no,
                        reported,
                        None,
                        true,
                    )
                    .await
                }
            }
        }
    }
}

/// Inquires (a few times, with backoff) until the payment shows whether the
/// command's operation took effect. Every inquiry is recorded.
async fn verify(
    w: &Worker,
    job: &Job,
    before: Option<&PaymentSnapshot>,
    attempt_no: i32,
) -> Result<(Settlement, Option<PaymentSnapshot>, Option<Answer>), StoreError> {
    let request = &job.valid.request;
    let Some(inquiry) = request.inquiry() else {
        return Ok((Settlement::NotApplied, None, None));
    };
    let mut last = None;
    for check in 0..w.settings.reconcile_attempts.max(1) {
        // Give the gateway a moment to finish what it may still be processing.
        tokio::time::sleep(retry::jittered(
            w.settings.initial_backoff,
            w.settings.max_backoff,
            check + 1,
        ))
        .await;
        let call = job.valid.gateway.execute(&inquiry).await;
        write_record(
            w,
            &job.row.id,
            &Record {
                gateway: job.valid.gateway.name(),
                attempt_no,
                kind: AttemptKind::Inquiry,
                in_flight_row: None,
                call: &call,
            },
        )
        .await?;
        if let Some(evidence) = Evidence::of(&call.answer) {
            let settlement = settle(request.operation, request.amount, before, evidence);
            let after = evidence.snapshot().cloned();
            tracing::info!(
                status = after
                    .as_ref()
                    .map(|a| a.status.as_str())
                    .unwrap_or("not found"),
                ?settlement,
                "inquiry after an uncertain attempt"
            );
            if settlement != Settlement::Undecided {
                return Ok((settlement, after, Some(call.answer)));
            }
            last = after.or(last);
        }
    }
    Ok((Settlement::Undecided, last, None))
}

/// After a `not applied` answer: schedule the next attempt durably, or give up
/// with `failed` once attempts or time are spent.
async fn retry_or_fail(
    w: &Worker,
    job: &Job,
    attempts_made: i32,
    answer: &Answer,
    record: Option<Record<'_>>,
) -> Result<(), StoreError> {
    let delay = retry::delay(&w.settings, attempts_made.max(0) as u32 + 1);
    let elapsed = (OffsetDateTime::now_utc() - job.row.received_at).unsigned_abs();
    let budget_left = attempts_made < w.settings.max_attempts as i32
        && elapsed + delay < w.settings.max_retry_time;
    if !budget_left {
        let mut reported = Reported::from_answer(answer, job.valid.request.operation);
        reported.description = Some(format!(
            "gave up after {attempts_made} attempt(s) in {}s: {}",
            elapsed.as_secs(),
            answer.description.as_deref().unwrap_or("not applied")
        ));
        return conclude(
            w,
            job,
            Outcome::Failed,
            None,
            attempts_made,
            reported,
            record,
            false,
        )
        .await;
    }
    let id = job.row.id.as_str();
    let mut tx = w.store.pool().begin().await?;
    if let Some(record) = record {
        write_record_in(w, &mut tx, id, &record).await?;
    }
    commands::clear_intent(&mut tx, id, w.owner).await?;
    commands::requeue(&mut tx, id, w.owner, delay).await?;
    commands::release_payment(&mut tx, job.valid.gateway.name(), &job.payment_key(), id).await?;
    tx.commit().await?;
    w.metrics.retry_scheduled(
        job.valid.gateway.name(),
        job.valid.request.operation.as_str(),
    );
    tracing::info!(retry_in = ?delay, attempts_made, "not applied; retry scheduled");
    Ok(())
}

/// The refund limit the worker can check itself: captured minus refunded.
async fn refund_limit(
    w: &Worker,
    job: &Job,
    snapshot: &PaymentSnapshot,
) -> Result<Option<String>, StoreError> {
    let Some(amount) = job.valid.request.amount else {
        return Ok(None);
    };
    let ours = {
        let mut conn = w.store.pool().acquire().await?;
        commands::captured_total(
            &mut conn,
            job.valid.gateway.name(),
            job.valid.request.payment_id.as_deref().unwrap_or(""),
        )
        .await?
    };
    let captured = ours
        .and_then(|m| u64::try_from(m).ok())
        .map(Amount::from_minor)
        .or(snapshot.captured)
        .or(match snapshot.state {
            PaymentState::Captured | PaymentState::Refunded => snapshot.amount,
            _ => None,
        });
    let Some(captured) = captured else {
        return Ok(None);
    };
    let refunded = snapshot.refunded.unwrap_or(Amount::ZERO);
    let left = captured.saturating_sub(refunded);
    Ok((amount > left).then(|| {
        format!("refund of {amount} exceeds what is left to refund: {captured} captured, {refunded} already refunded")
    }))
}

async fn conclude_no_such_payment(
    w: &Worker,
    job: &Job,
    attempts_made: i32,
    cause: &str,
) -> Result<(), StoreError> {
    let reported = Reported {
        description: Some(format!(
            "{} (settled by inquiry after {cause})",
            no_such_payment(job)
        )),
        ..Reported::default()
    };
    conclude(
        w,
        job,
        Outcome::Declined,
        None,
        attempts_made,
        reported,
        None,
        false,
    )
    .await
}

async fn conclude_applied(
    w: &Worker,
    job: &Job,
    attempts_made: i32,
    snapshot: Option<&PaymentSnapshot>,
    cause: &str,
) -> Result<(), StoreError> {
    let reported = Reported {
        gateway_status: snapshot.map(|s| s.status.clone()),
        description: Some(format!("confirmed by inquiry after {cause}")),
        ..Reported::default()
    };
    conclude(
        w,
        job,
        Outcome::Succeeded,
        None,
        attempts_made,
        reported,
        None,
        false,
    )
    .await
}

/// Commits the outcome, its event (and any pending replays), the exchanges that
/// led to it, and releases the payment, all in one transaction (shared with
/// other commands' decisions by the [`completion`](super::completion) writer).
#[allow(clippy::too_many_arguments)]
async fn conclude(
    w: &Worker,
    job: &Job,
    outcome: Outcome,
    reason: Option<RejectReason>,
    attempts_made: i32,
    reported: Reported,
    record: Option<Record<'_>>,
    unsettled: bool,
) -> Result<(), StoreError> {
    use super::completion::{Committed, Conclusion};
    use crate::store::commands::{Decision, PaymentClaim};

    let id = job.row.id.as_str();
    let event = crate::events::event_for(
        id,
        &job.row.payload,
        outcome,
        reason,
        job.valid.request.amount,
        attempts_made,
        reported,
    );
    let recording = record.map(|record| {
        count_exchanges(w, &record);
        recording_of(id, &record)
    });
    let conclusion = Conclusion {
        decision: Decision {
            id: id.to_string(),
            outcome: outcome.as_str().to_string(),
            reason: reason.map(|r| r.as_str().to_string()),
            result: serde_json::to_string(&event).expect("serializable"),
            reconcile_in: unsettled.then(|| retry::reconcile_delay(&w.settings, 0)),
        },
        event,
        claim: PaymentClaim {
            gateway: job.valid.gateway.name().to_string(),
            payment_key: job.payment_key(),
            command_id: id.to_string(),
        },
        recording,
        reply_to: job.row.reply_to.clone(),
        reply_correlation_id: job.reply_correlation().map(str::to_string),
    };
    match w.completer.commit(conclusion).await? {
        Committed::Decided { replays } => {
            w.metrics.command_decided(
                job.valid.gateway.name(),
                job.valid.request.operation.as_str(),
                outcome.as_str(),
            );
            (0..replays).for_each(|_| w.metrics.replayed());
            tracing::info!(outcome = %outcome, attempts = attempts_made, "command decided");
        }
        Committed::LeaseLost => {
            tracing::warn!(
                "lost the lease before the outcome could be stored; the new owner settles it"
            );
        }
    }
    Ok(())
}
