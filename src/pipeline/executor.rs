//! Running one command against its gateway, at most once in effect.
//!
//! The executor holds a command's lease and its payment's lease. Before any
//! call with a side effect it commits the recovery point `calling` (and, where
//! the gateway needs it, a snapshot of the payment); after the call it commits
//! every exchange together with the outcome and its event. When an answer is
//! ambiguous, or a run is found interrupted in `calling`, it inquires before it
//! ever sends again ([`verify`](super::reconcile::verify)). Retries are written to Postgres and the lease
//! given up, never waited for in memory.
//!
//! This file is the shell that performs steps; which step comes next is
//! decided by [`decide::next`], a pure function with its own table of tests.

use std::sync::Arc;
use time::OffsetDateTime;
use tracing::Instrument;

use super::decide::{self, Budget, Known, OperationKind, Ruling, Step, Uncertain, Why};
use super::exchanges::{write_record, write_record_in, Record};
use super::reconcile::{no_such_payment, reconcile_unknown, verify, Settlement};
use super::{retry, Job, Worker};
use crate::events::Reported;
use crate::gateways::{
    Answer, Classification, Operation, OperationRequest, PaymentRequest, PaymentSnapshot,
    PaymentState,
};
use crate::money::Amount;
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
        operation = %job.valid.request.operation(),
        payment_id = job.valid.request.payment_id(),
    );
    let id = job.row.id.clone();
    worker.track(&id);
    let result = run(&worker, &job).instrument(span.clone()).await;
    worker.untrack(&id);
    if let Err(error) = result {
        tracing::warn!(parent: &span, %error, "database error while running the command; it resumes when its lease expires");
    }
}

/// What one run carries from step to step.
struct Run<'j> {
    job: &'j Job,
    /// Attempts made so far; after a call, that call's attempt number.
    attempts: i32,
    /// The payment as it looked before the side effect, when recorded.
    before: Option<PaymentSnapshot>,
    /// The payment as the last inquiry after an uncertain attempt found it.
    after: Option<PaymentSnapshot>,
    /// The last answer decided from (the call's, or the inquiry's before it).
    answer: Option<Answer>,
    /// Exchanges not written yet: they go with the next commit.
    pending: Option<Record>,
    /// Why a refund exceeds what is left to refund, when it does.
    refund_problem: Option<String>,
}

impl<'j> Run<'j> {
    fn new(job: &'j Job) -> Run<'j> {
        Run {
            job,
            attempts: job.row.attempts,
            before: job
                .row
                .before_snapshot
                .as_ref()
                .and_then(|v| serde_json::from_value(v.clone()).ok()),
            after: None,
            answer: None,
            pending: None,
            refund_problem: None,
        }
    }

    fn operation(&self) -> Operation {
        self.job.valid.request.operation()
    }

    fn budget(&self, worker: &Worker) -> Budget {
        Budget {
            attempts_made: self.attempts,
            max_attempts: worker.settings.max_attempts,
            elapsed: (OffsetDateTime::now_utc() - self.job.row.received_at).unsigned_abs(),
            next_delay: retry::delay(&worker.settings, self.attempts.max(0) as u32 + 1),
            max_retry_time: worker.settings.max_retry_time,
        }
    }
}

/// Performs the steps [`decide::next`] chooses, until one ends the run.
async fn run(worker: &Worker, job: &Job) -> Result<(), StoreError> {
    if !job.payment_leased && !claim_payment(worker, job).await? {
        return Ok(());
    }
    let operation = job.valid.request.operation();
    let kind = OperationKind {
        side_effect: operation.has_side_effect(),
        snapshot_before: job.valid.gateway.snapshot_before(operation),
    };
    let mut run = Run::new(job);
    let mut known = Known::Claimed {
        unsettled: job.row.state.as_str() == "unsettled",
        intent_committed: job.intent_row.is_some(),
        interrupted: job.row.phase.as_str() == "calling",
        has_snapshot: run.before.is_some(),
    };
    // Every command in flight holds this future for its whole run (2,000 at
    // the default cap), sized by its largest step. The steps held while the
    // gateway answers (snapshot, recovery point, call) are awaited in place;
    // the conclusion, which comes once at the end, and the rare ones are
    // boxed: one allocation each, and the spawned command's future 3.8 KB
    // instead of 5.6 (`-Zprint-type-sizes`).
    loop {
        let budget = run.budget(worker);
        known = match decide::next(kind, known, &budget) {
            Step::Reconcile => {
                return Box::pin(reconcile_unknown(worker, job, None))
                    .await
                    .map(|_| ())
            }
            Step::CallNow => {
                let row = job.intent_row.expect("decided from intent_committed");
                call(&mut run, 1, row).await
            }
            Step::TakeSnapshot => take_snapshot(worker, &mut run).await?,
            Step::Call => {
                let Some((attempt_no, row)) = record_intent(worker, &mut run).await? else {
                    tracing::warn!(
                        "lost the lease before calling; leaving the command to its new owner"
                    );
                    return Ok(());
                };
                call(&mut run, attempt_no, row).await
            }
            Step::Inquire(uncertain) => {
                match Box::pin(inquire(worker, &mut run, uncertain)).await? {
                    Some(known) => known,
                    // Concluded by a notification meanwhile: nothing left to do.
                    None => return Ok(()),
                }
            }
            Step::Retry { delay } => return Box::pin(schedule_retry(worker, run, delay)).await,
            Step::Conclude(ruling) => {
                let reported = report(&run, ruling.why, &budget);
                return Box::pin(conclude(worker, run, ruling, reported)).await;
            }
        };
    }
}

/// Takes the payment's lease, or, when another command holds it, defers this
/// one until the holder releases it. Whether the lease was granted.
async fn claim_payment(worker: &Worker, job: &Job) -> Result<bool, StoreError> {
    let id = job.row.id.as_str();
    let mut conn = worker.store.pool().acquire().await?;
    let granted = commands::claim_payment(
        &mut conn,
        job.valid.gateway.name(),
        &job.payment_key(),
        id,
        worker.owner,
        worker.settings.lease,
    )
    .await?;
    if !granted {
        // Another command holds this payment. Its release wakes us; the
        // recheck bounds the wait should that wake-up miss us.
        tracing::debug!("payment busy; waiting for the command that holds it");
        commands::defer(&mut conn, id, worker.owner, super::BUSY_PAYMENT_RECHECK).await?;
        // The holder may have released between our claim and our requeue, in
        // which case its wake-up missed us: look once more.
        commands::wake_if_payment_free(&mut conn, id, job.valid.gateway.name(), &job.payment_key())
            .await?;
    }
    Ok(granted)
}

/// Records what the payment looks like before the side effect, where the
/// status afterwards could not tell whether this attempt applied. Its
/// exchange is written with the recovery point, in the same commit.
async fn take_snapshot(worker: &Worker, run: &mut Run<'_>) -> Result<Known, StoreError> {
    let job = run.job;
    let inquiry = job
        .valid
        .request
        .inquiry()
        .expect("side effects have a payment id");
    // A refund's limit also needs what this worker captured on the payment:
    // read while the inquiry is on the wire, not after it. This command holds
    // the payment's lease, so every capture before it is already decided.
    let refund = refund_request(job);
    let (call, ours) = tokio::join!(job.valid.gateway.execute(&inquiry), async {
        match refund {
            Some(_) => captured_by_us(worker, job).await,
            None => Ok(None),
        }
    });
    let (record, answer) = Record::split(job, call, run.attempts + 1, AttemptKind::Inquiry, None);
    run.pending = Some(record);
    let ours = ours?;
    let found = answer.classification == Classification::Succeeded && answer.snapshot.is_some();
    if found {
        let snapshot = answer.snapshot.clone().expect("found");
        if let Some(amount) = refund {
            run.refund_problem = refund_problem(amount, ours, &snapshot);
        }
        run.before = Some(snapshot);
    }
    let known = Known::Snapshot {
        classification: answer.classification,
        found,
        over_refund_limit: run.refund_problem.is_some(),
    };
    run.answer = Some(answer);
    Ok(known)
}

/// Commits the recovery point before the call, so that whoever finds this
/// command after a crash knows a call may have been made. `None` if the
/// lease was lost meanwhile.
async fn record_intent(
    worker: &Worker,
    run: &mut Run<'_>,
) -> Result<Option<(i32, i64)>, StoreError> {
    let id = run.job.row.id.as_str();
    let intent = super::intent::RecoveryPoint {
        command_id: id.to_string(),
        purpose: run.operation().as_str(),
        before_snapshot: run
            .before
            .as_ref()
            .map(|s| serde_json::to_value(s).expect("serializable")),
        inquiry: run.pending.take().map(|r| r.into_recording(worker, id)),
    };
    worker.intents.record(intent).await
}

/// Makes the call whose recovery point is committed.
async fn call(run: &mut Run<'_>, attempt_no: i32, row: i64) -> Known {
    let job = run.job;
    let call = job.valid.gateway.execute(&job.valid.request).await;
    let (record, answer) = Record::split(job, call, attempt_no, AttemptKind::Operation, Some(row));
    tracing::debug!(classification = %answer.classification, "gateway answered");
    let known = Known::Answered(answer.classification);
    run.attempts = attempt_no;
    run.pending = Some(record);
    run.answer = Some(answer);
    known
}

/// Finds out whether an uncertain attempt took effect. A `not applied`
/// clears the recovery point, since nothing is in flight any more. `None`:
/// a verified notification concluded the command meanwhile (or it is no
/// longer this run's), and the run ends.
async fn inquire(
    worker: &Worker,
    run: &mut Run<'_>,
    uncertain: Uncertain,
) -> Result<Option<Known>, StoreError> {
    let id = run.job.row.id.as_str();
    match uncertain {
        Uncertain::Interrupted => {
            // Found mid-call: a previous run died (or lost its lease) after
            // recording its intent. Whatever it sent may have taken effect.
            let mut conn = worker.store.pool().acquire().await?;
            let interrupted = attempts::mark_interrupted(&mut conn, id).await?;
            drop(conn);
            tracing::info!(
                interrupted,
                "resuming an interrupted attempt: inquiring before anything else"
            );
        }
        Uncertain::Ambiguous => {
            if let Some(record) = run.pending.take() {
                write_record(worker, id, &record).await?;
            }
            tracing::info!(
                error = run
                    .answer
                    .as_ref()
                    .and_then(|a| a.description.as_deref())
                    .unwrap_or(""),
                "ambiguous answer: inquiring before anything else"
            );
        }
    }
    let Some((settlement, after)) =
        verify(worker, run.job, run.before.as_ref(), run.attempts).await?
    else {
        return Ok(None);
    };
    if settlement == Settlement::NotApplied {
        let mut conn = worker.store.pool().acquire().await?;
        commands::clear_intent(&mut conn, id, worker.owner).await?;
    }
    run.after = after;
    Ok(Some(Known::Verified {
        settlement,
        uncertain,
        has_snapshot: run.before.is_some(),
    }))
}

/// Schedules the next attempt durably and gives the leases up.
async fn schedule_retry(
    worker: &Worker,
    run: Run<'_>,
    delay: std::time::Duration,
) -> Result<(), StoreError> {
    let job = run.job;
    let id = job.row.id.as_str();
    let mut tx = worker.store.pool().begin().await?;
    if let Some(record) = &run.pending {
        write_record_in(worker, &mut tx, id, record).await?;
    }
    commands::clear_intent(&mut tx, id, worker.owner).await?;
    commands::requeue(&mut tx, id, worker.owner, delay).await?;
    commands::release_payment(&mut tx, job.valid.gateway.name(), &job.payment_key(), id).await?;
    tx.commit().await?;
    worker.metrics.retry_scheduled(
        job.valid.gateway.name(),
        job.valid.request.operation().as_str(),
    );
    tracing::info!(retry_in = ?delay, attempts_made = run.attempts, "not applied; retry scheduled");
    Ok(())
}

/// The amount of a refund with one; refunds without an amount (the whole
/// payment) have no limit the worker could check.
fn refund_request(job: &Job) -> Option<&Amount> {
    match &job.valid.request {
        OperationRequest::Payment(PaymentRequest {
            amount: Some(amount),
            ..
        }) if job.valid.request.operation() == Operation::Refund => Some(amount),
        _ => None,
    }
}

/// What this worker's own succeeded captures on the command's payment add up to.
async fn captured_by_us(worker: &Worker, job: &Job) -> Result<Option<i64>, StoreError> {
    let Some(payment_id) = job.valid.request.payment_id() else {
        return Ok(None);
    };
    let mut conn = worker.store.pool().acquire().await?;
    commands::captured_total(&mut conn, job.valid.gateway.name(), payment_id).await
}

/// Why a refund exceeds what is left to refund (captured minus refunded), if
/// it does. What this worker captured itself is trusted first, then what the
/// gateway's snapshot says was captured.
fn refund_problem(
    amount: &Amount,
    ours: Option<i64>,
    snapshot: &PaymentSnapshot,
) -> Option<String> {
    let captured = ours
        .and_then(|m| u64::try_from(m).ok())
        .map(Amount::from_minor)
        .or(snapshot.captured)
        .or(match snapshot.state {
            PaymentState::Captured | PaymentState::Refunded => snapshot.amount,
            _ => None,
        })?;
    let refunded = snapshot.refunded.unwrap_or(Amount::ZERO);
    let left = captured.saturating_sub(refunded);
    (*amount > left).then(|| {
        format!("refund of {amount} exceeds what is left to refund: {captured} captured, {refunded} already refunded")
    })
}

/// The gateway's fields of the event, and the description that says why the
/// outcome was reached.
fn report(run: &Run<'_>, why: Why, budget: &Budget) -> Reported {
    let operation = run.operation();
    let answered = || {
        run.answer
            .as_ref()
            .map(|a| Reported::from_answer(a, operation))
            .unwrap_or_default()
    };
    let said = |fallback: &'static str| {
        run.answer
            .as_ref()
            .and_then(|a| a.description.clone())
            .unwrap_or_else(|| fallback.to_string())
    };
    let cause = |uncertain| match uncertain {
        Uncertain::Interrupted => "the attempt interrupted by a restart".to_string(),
        Uncertain::Ambiguous => said("an ambiguous answer"),
    };
    let described = |base: Reported, description: String| Reported {
        description: Some(description),
        ..base
    };
    match why {
        Why::Answered => answered(),
        Why::SnapshotDeclined => described(
            answered(),
            format!(
                "the payment could not be inquired before the {operation}: {}",
                said("declined")
            ),
        ),
        Why::RefundOverLimit => Reported {
            gateway_status: run.before.as_ref().map(|s| s.status.clone()),
            description: run.refund_problem.clone(),
            ..Reported::default()
        },
        Why::GaveUp => described(
            answered(),
            format!(
                "gave up after {} attempt(s) in {}s: {}",
                run.attempts,
                budget.elapsed.as_secs(),
                said("not applied")
            ),
        ),
        Why::InterruptedNotApplied => described(
            Reported::default(),
            "the interrupted attempt did not take effect and the retry budget is spent".into(),
        ),
        Why::Confirmed(uncertain) => Reported {
            gateway_status: run.after.as_ref().map(|s| s.status.clone()),
            description: Some(format!("confirmed by inquiry after {}", cause(uncertain))),
            ..Reported::default()
        },
        Why::NoSuchPayment(uncertain) => described(
            Reported::default(),
            format!(
                "{} (settled by inquiry after {})",
                no_such_payment(&run.job.valid.request),
                cause(uncertain)
            ),
        ),
        Why::Undecided(Uncertain::Interrupted) => described(
            Reported::default(),
            "the worker stopped during a call and inquiries could not tell whether it took effect; reconciliation continues".into(),
        ),
        Why::Undecided(Uncertain::Ambiguous) => described(
            answered(),
            format!(
                "{}; inquiries could not tell whether it took effect; reconciliation continues",
                said("ambiguous answer")
            ),
        ),
    }
}

/// Commits the outcome, its event (and any pending replays), the exchanges that
/// led to it, and releases the payment, all in one transaction (shared with
/// other commands' decisions by the [`completion`](super::completion) writer).
async fn conclude(
    worker: &Worker,
    run: Run<'_>,
    ruling: Ruling,
    reported: Reported,
) -> Result<(), StoreError> {
    use super::completion::{Committed, Conclusion};
    use crate::store::commands::{Decision, PaymentClaim};

    let job = run.job;
    let id = job.row.id.as_str();
    let outcome = ruling.outcome;
    let event = crate::events::event_for(
        id,
        &job.row.payload,
        outcome,
        None,
        job.valid.request.amount(),
        run.attempts,
        reported,
    );
    let conclusion = Conclusion {
        decision: Decision {
            id: id.to_string(),
            outcome: outcome.as_str().to_string(),
            reason: None,
            result: serde_json::to_string(&event).expect("serializable"),
            reconcile_in: ruling
                .unsettled()
                .then(|| retry::reconcile_delay(&worker.settings, 0)),
        },
        event,
        claim: PaymentClaim {
            gateway: job.valid.gateway.name().to_string(),
            payment_key: job.payment_key(),
            command_id: id.to_string(),
        },
        recording: run.pending.map(|record| record.into_recording(worker, id)),
        reply_to: job.row.reply_to.clone(),
        reply_correlation_id: job.reply_correlation().map(str::to_string),
    };
    match worker.completer.commit(conclusion).await? {
        Committed::Decided { replays } => {
            worker.metrics.command_decided(
                job.valid.gateway.name(),
                job.valid.request.operation().as_str(),
                outcome.as_str(),
            );
            (0..replays).for_each(|_| worker.metrics.replayed());
            tracing::info!(outcome = %outcome, attempts = run.attempts, "command decided");
        }
        Committed::LeaseLost => {
            tracing::warn!(
                "lost the lease before the outcome could be stored; the new owner settles it"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(
        state: PaymentState,
        amount: Option<i64>,
        captured: Option<i64>,
        refunded: Option<i64>,
    ) -> PaymentSnapshot {
        let minor = |m: Option<i64>| m.map(|m| Amount::from_minor(m as u64));
        PaymentSnapshot {
            state,
            status: "as received".into(),
            amount: minor(amount),
            captured: minor(captured),
            refunded: minor(refunded),
            currency: Some("EUR".into()),
        }
    }

    #[test]
    fn a_refund_is_held_to_what_this_worker_captured_before_what_the_snapshot_says() {
        let refund = Amount::from_minor(3_000);
        // The gateway says 100.00 captured; this worker captured 20.00 itself.
        let said = snapshot(PaymentState::Captured, Some(10_000), Some(10_000), None);
        let problem = refund_problem(&refund, Some(2_000), &said).expect("over our captures");
        assert!(problem.contains("20.00 captured"), "{problem}");
        assert_eq!(refund_problem(&refund, None, &said), None);
    }

    #[test]
    fn without_captures_of_ours_the_snapshot_decides_then_its_state() {
        let refund = Amount::from_minor(3_000);
        let partly_refunded = snapshot(
            PaymentState::Refunded,
            Some(5_000),
            Some(4_000),
            Some(2_000),
        );
        let problem = refund_problem(&refund, None, &partly_refunded).expect("20.00 left");
        assert!(
            problem.contains("40.00 captured, 20.00 already refunded"),
            "{problem}"
        );
        // No captured amount reported: a captured payment's amount is what was captured.
        let whole = snapshot(PaymentState::Captured, Some(2_500), None, None);
        assert!(refund_problem(&refund, None, &whole).is_some());
        assert_eq!(
            refund_problem(&Amount::from_minor(2_500), None, &whole),
            None
        );
        // Nothing known to have been captured: the gateway is left to judge.
        let authorized = snapshot(PaymentState::Authorized, Some(2_500), None, None);
        assert_eq!(refund_problem(&refund, None, &authorized), None);
    }
}
