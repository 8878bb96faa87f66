//! Finding out whether an attempt took effect, from what the payment looks like.
//!
//! After an ambiguous answer (or a crash mid-call) the worker inquires and
//! compares the payment with what it looked like before the attempt. The
//! decision is [`settle`], a pure function: it says `Applied` or `NotApplied`
//! only when the evidence allows no other reading, and `Undecided` otherwise,
//! because resending on a wrong `NotApplied` moves money twice. An inquiry
//! that says the gateway does not know the payment at all is evidence too
//! ([`Evidence::NoSuchPayment`]): nothing was applied, and nothing ever will be.
//!
//! The inquiries themselves live here too: [`verify`] (with backoff, right
//! after an uncertain attempt) and [`reconcile_unknown`] (one per scheduled
//! check, for an outcome published as `unknown`).

use super::exchanges::{write_record, Record};
use super::{retry, Job, Worker};
use crate::events::{event_for, now_rfc3339, Reported, ResultEvent};
use crate::gateways::{
    Answer, Classification, Operation, OperationRequest, PaymentSnapshot, PaymentState,
};
use crate::money::Amount;
use crate::outcome::Outcome;
use crate::store::attempts::AttemptKind;
use crate::store::{commands, outbox, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// The attempt took effect.
    Applied,
    /// The attempt did not take effect: it is safe to send again.
    NotApplied,
    /// The gateway does not know the payment: the attempt did not take
    /// effect, and sending it again cannot work. The command is `declined`.
    NoSuchPayment,
    /// The evidence does not tell (yet): ask again later, never resend.
    Undecided,
}

/// What one inquiry established about the payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence<'a> {
    /// The gateway found the payment and says this about it.
    Payment(&'a PaymentSnapshot),
    /// The gateway answered that there is no such payment.
    NoSuchPayment,
}

impl<'a> Evidence<'a> {
    /// What an inquiry's answer establishes, if anything: a snapshot only from
    /// a successful inquiry, "no such payment" only from the gateway's own
    /// not-found answer. A failed, ambiguous or unverified inquiry says nothing.
    pub fn of(answer: &'a Answer) -> Option<Evidence<'a>> {
        match (answer.classification, &answer.snapshot) {
            (Classification::Succeeded, Some(snapshot)) => Some(Evidence::Payment(snapshot)),
            (Classification::Declined, None) if answer.not_found => Some(Evidence::NoSuchPayment),
            _ => None,
        }
    }

    pub fn snapshot(self) -> Option<&'a PaymentSnapshot> {
        match self {
            Evidence::Payment(snapshot) => Some(snapshot),
            Evidence::NoSuchPayment => None,
        }
    }
}

/// Did `operation` (for `amount`) take effect, given the payment `before` the
/// attempt (when recorded) and what an inquiry showed `after` it?
pub fn settle(
    operation: Operation,
    amount: Option<Amount>,
    before: Option<&PaymentSnapshot>,
    after: Evidence<'_>,
) -> Settlement {
    if !operation.has_side_effect() {
        // Reads have no effect to settle: repeating them is always safe.
        return Settlement::NotApplied;
    }
    match after {
        Evidence::Payment(after) => settle_found(operation, amount, before, after),
        // A payment the gateway found before the attempt cannot have vanished:
        // an answer saying so contradicts what we know and proves nothing.
        Evidence::NoSuchPayment if before.is_some() => Settlement::Undecided,
        Evidence::NoSuchPayment => Settlement::NoSuchPayment,
    }
}

fn settle_found(
    operation: Operation,
    amount: Option<Amount>,
    before: Option<&PaymentSnapshot>,
    after: &PaymentSnapshot,
) -> Settlement {
    use PaymentState::*;
    match operation {
        Operation::Capture => {
            if before.is_some_and(|b| !matches!(b.state, Authorized)) {
                // It was not capturable before the attempt, so the attempt cannot
                // have captured it; whatever happened was someone else's doing.
                return Settlement::NotApplied;
            }
            match after.state {
                Captured | Refunded => Settlement::Applied,
                Authorized | Cancelled | Failed => Settlement::NotApplied,
                Pending | InProgress | Other => Settlement::Undecided,
            }
        }
        Operation::Cancel => {
            if before.is_some_and(|b| !matches!(b.state, Authorized)) {
                return Settlement::NotApplied;
            }
            match after.state {
                Cancelled => Settlement::Applied,
                Authorized | Captured | Refunded | Failed => Settlement::NotApplied,
                Pending | InProgress | Other => Settlement::Undecided,
            }
        }
        Operation::Refund => {
            // Only the refunded total tells whether THIS refund happened: the status
            // reads `reversed` after any refund, ours or an earlier one.
            let (Some(before), Some(amount)) = (before, amount) else {
                return Settlement::Undecided;
            };
            let was = before.refunded.unwrap_or(Amount::ZERO);
            let now = match (after.refunded, after.state) {
                (Some(now), _) => now,
                (None, Captured) => Amount::ZERO,
                (None, _) => return Settlement::Undecided,
            };
            if matches!(after.state, InProgress | Pending | Other) {
                return Settlement::Undecided;
            }
            if now == was {
                Settlement::NotApplied
            } else if was.checked_add(amount) == Some(now) {
                Settlement::Applied
            } else {
                Settlement::Undecided
            }
        }
        Operation::Inquiry | Operation::TransactionList => Settlement::NotApplied,
    }
}

/// Inquires (a few times, with backoff) until the payment shows whether the
/// command's operation took effect. Every inquiry is recorded. `None`: the
/// command was concluded meanwhile by a verified notification (recorded
/// evidence, see [`evidence_first`]), or is no longer this run's; the run
/// ends there.
pub(super) async fn verify(
    worker: &Worker,
    job: &Job,
    before: Option<&PaymentSnapshot>,
    attempt_no: i32,
) -> Result<Option<(Settlement, Option<PaymentSnapshot>)>, StoreError> {
    let request = &job.valid.request;
    let Some(inquiry) = request.inquiry() else {
        return Ok(Some((Settlement::NotApplied, None)));
    };
    let mut last = None;
    for check in 0..worker.settings.reconcile_attempts.max(1) {
        // Give the gateway a moment to finish what it may still be processing.
        tokio::time::sleep(retry::jittered(
            worker.settings.initial_backoff,
            worker.settings.max_backoff,
            check + 1,
        ))
        .await;
        if !evidence_first(worker, job).await? {
            return Ok(None);
        }
        let call = job.valid.gateway.execute(&inquiry).await;
        let (record, answer) = Record::split(job, call, attempt_no, AttemptKind::Inquiry, None);
        write_record(worker, &job.row.id, &record).await?;
        if let Some(evidence) = Evidence::of(&answer) {
            let settlement = settle(request.operation(), request.amount(), before, evidence);
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
                return Ok(Some((settlement, after)));
            }
            last = after.or(last);
        }
    }
    Ok(Some((Settlement::Undecided, last)))
}

/// Before each inquiry of the verify loop: whether the command is still
/// this run's to verify. A verified notification received since the attempt
/// began (one that arrived while the call was in flight, say) settles it
/// here, in one transaction with the command locked; one arriving later
/// settles it on its own (`store::notifications::settle_by_notification`).
/// Either way exactly one conclusion is written: this run's own conclusion
/// is guarded by its lease, which the settlement ends.
async fn evidence_first(worker: &Worker, job: &Job) -> Result<bool, StoreError> {
    use crate::store::notifications::{settle_from_recorded, Verifying};
    let mut tx = worker.store.pool().begin().await?;
    let found = settle_from_recorded(
        &mut tx,
        &job.row.id,
        worker.owner,
        &worker.topology.result_exchange,
    )
    .await?;
    tx.commit().await?;
    match found {
        Verifying::Inquire => Ok(true),
        Verifying::Settled(notification) => {
            worker.metrics.command_decided(
                job.valid.gateway.name(),
                job.valid.request.operation().as_str(),
                Outcome::Succeeded.as_str(),
            );
            worker.wake_outbox.notify_one();
            worker.wake_scheduler.notify_one();
            tracing::info!(
                notification,
                "settled by a verified notification received during the attempt"
            );
            Ok(false)
        }
        Verifying::NotOurs => {
            tracing::info!(
                "no longer this run's to verify (settled by a notification, or taken over)"
            );
            Ok(false)
        }
    }
}

/// What a console's "reconcile now" came to (`Err`: nothing was asked of
/// the gateway, and why).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileNowError {
    #[error("no command with id `{0}`")]
    NotFound(String),
    #[error("{0}")]
    Refused(String),
    #[error("database error: {0}")]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for ReconcileNowError {
    fn from(error: sqlx::Error) -> Self {
        ReconcileNowError::Store(error.into())
    }
}

/// Reconciles one `unknown` command now, on an operator's request: the same
/// inquiry and the same decision as the scheduled checks (the inquiry is an
/// attempt row; a settlement publishes its `reconciled` event), with the
/// audit row `audit` written in the transaction that records the decision.
/// Refused when the command is not unsettled, when the scheduler is checking
/// it this moment, or when another command holds its payment.
pub async fn reconcile_now(
    worker: &Worker,
    id: &str,
    audit: &crate::store::console::AuditEntry,
) -> Result<(i64, String), ReconcileNowError> {
    use crate::store::console;
    let mut conn = worker.store.pool().acquire().await?;
    let Some(row) =
        console::claim_unsettled(&mut conn, id, worker.owner, worker.settings.lease).await?
    else {
        return Err(match commands::get(&mut conn, id).await? {
            None => ReconcileNowError::NotFound(id.to_string()),
            Some(row) if row.state.as_str() == "unsettled" => ReconcileNowError::Refused(
                "the worker is checking this command right now; look again in a moment".into(),
            ),
            Some(row) => ReconcileNowError::Refused(format!(
                "not an open unknown: state {}, outcome {}",
                row.state,
                row.settled_outcome
                    .or(row.outcome)
                    .map(|o| o.as_str())
                    .unwrap_or("not decided yet")
            )),
        });
    };
    let job = match Job::from_row(row, &worker.accounts) {
        Ok(job) => job,
        Err(rejected) => {
            console::unclaim_unsettled(&mut conn, id, worker.owner).await?;
            return Err(ReconcileNowError::Refused(format!(
                "cannot run with the current configuration: {}",
                rejected.description
            )));
        }
    };
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
        console::unclaim_unsettled(&mut conn, id, worker.owner).await?;
        return Err(ReconcileNowError::Refused(
            "another command on this payment is running; try again when it is done".into(),
        ));
    }
    drop(conn);
    worker.track(id);
    let done = reconcile_unknown(worker, &job, Some(audit)).await;
    worker.untrack(id);
    Ok(done?.expect("an audit entry gives an audit row"))
}

/// Background reconciliation of an `unknown`: one inquiry per scheduled check
/// (or per operator request, with its `audit` entry written in the same
/// transaction as the decision: then the audit row's id and what came of it).
pub(super) async fn reconcile_unknown(
    worker: &Worker,
    job: &Job,
    audit: Option<&crate::store::console::AuditEntry>,
) -> Result<Option<(i64, String)>, StoreError> {
    let id = job.row.id.as_str();
    let request = &job.valid.request;
    let settled = inquire_once(worker, job)
        .await?
        .and_then(|(settlement, after)| Some((settled_outcome(settlement)?, settlement, after)));
    let mut tx = worker.store.pool().begin().await?;
    let mut concluded = None;
    let decided = match settled {
        Some((outcome, settlement, after)) => {
            let (words, settled) =
                settle_in(worker, &mut tx, job, outcome, settlement, after.as_ref()).await?;
            concluded = settled.then_some(outcome);
            words
        }
        None => {
            let delay = retry::reconcile_delay(
                &worker.settings,
                job.row.reconcile_checks.max(0) as usize + 1,
            );
            commands::reschedule_unsettled(&mut tx, id, worker.owner, delay).await?;
            tracing::info!(next_check_in = ?delay, "unknown outcome still unsettled");
            match request.inquiry() {
                None => format!(
                    "still unknown: a {} cannot be inquired about; next check in {delay:?}",
                    request.operation()
                ),
                Some(_) => {
                    format!("still unknown: the inquiry did not settle it; next check in {delay:?}")
                }
            }
        }
    };
    let audited = match audit {
        Some(entry) => Some((
            crate::store::console::audit(&mut tx, entry, true, &decided).await?,
            decided,
        )),
        None => None,
    };
    commands::release_payment(&mut tx, job.valid.gateway.name(), &job.payment_key(), id).await?;
    tx.commit().await?;
    if let Some(outcome) = concluded {
        // Counted once it is committed, as the executor counts its own; the
        // metric's help says a settled `unknown` counts again, as its outcome.
        worker.metrics.command_decided(
            job.valid.gateway.name(),
            request.operation().as_str(),
            outcome.as_str(),
        );
    }
    worker.wake_outbox.notify_one();
    Ok(audited)
}

/// Settles the command as `outcome` in `tx`, with its event rewritten and
/// put in the outbox; what came of it, in words, and whether it was settled
/// (`false`: its lease was lost, and whoever holds it decides).
async fn settle_in(
    worker: &Worker,
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    job: &Job,
    outcome: Outcome,
    settlement: Settlement,
    after: Option<&PaymentSnapshot>,
) -> Result<(String, bool), StoreError> {
    let id = job.row.id.as_str();
    let request = &job.valid.request;
    // Read as text: through a serde_json::Value the numbers of the
    // metadata it echoes could be rounded.
    let original: Option<ResultEvent> = commands::current_result(tx, id)
        .await?
        .and_then(|text| serde_json::from_str(&text).ok());
    let original = original.unwrap_or_else(|| {
        event_for(
            id,
            &job.row.payload,
            Outcome::Unknown,
            None,
            request.amount(),
            job.row.attempts,
            Reported::default(),
        )
    });
    let applied = settlement == Settlement::Applied;
    let event = settled_event(original, outcome, applied, after, request);
    let body = serde_json::to_string(&event).expect("serializable");
    if !commands::settle(tx, id, worker.owner, outcome.as_str(), &body).await? {
        // Its lease was lost meanwhile; whoever holds it decides.
        return Ok((
            "the inquiry was recorded, but the command was no longer this worker's to settle"
                .into(),
            false,
        ));
    }
    outbox::enqueue(
        tx,
        &worker.topology.result_exchange,
        &event,
        job.row.reply_to.as_deref(),
        job.reply_correlation(),
    )
    .await?;
    tracing::info!(outcome = %outcome, "unknown outcome settled");
    Ok((
        format!(
            "settled as {outcome}: {}",
            event.description.as_deref().unwrap_or("")
        ),
        true,
    ))
}

/// One recorded inquiry, and what it settles (`None`: it proved nothing).
async fn inquire_once(
    worker: &Worker,
    job: &Job,
) -> Result<Option<(Settlement, Option<PaymentSnapshot>)>, StoreError> {
    let request = &job.valid.request;
    let Some(inquiry) = request.inquiry() else {
        return Ok(None);
    };
    let before: Option<PaymentSnapshot> = job
        .row
        .before_snapshot
        .as_ref()
        .and_then(|v| serde_json::from_value(v.clone()).ok());
    let call = job.valid.gateway.execute(&inquiry).await;
    let (record, answer) = Record::split(job, call, job.row.attempts, AttemptKind::Inquiry, None);
    write_record(worker, &job.row.id, &record).await?;
    Ok(Evidence::of(&answer).map(|evidence| {
        (
            settle(
                request.operation(),
                request.amount(),
                before.as_ref(),
                evidence,
            ),
            evidence.snapshot().cloned(),
        )
    }))
}

/// The final outcome of an `unknown` once a settlement decides it.
fn settled_outcome(settlement: Settlement) -> Option<Outcome> {
    match settlement {
        Settlement::Applied => Some(Outcome::Succeeded),
        Settlement::NoSuchPayment => Some(Outcome::Declined),
        Settlement::NotApplied => Some(Outcome::Failed),
        Settlement::Undecided => None,
    }
}

/// The `unknown` event rewritten with its settled outcome: `reconciled`, the
/// status the inquiry found, and a description that says what settled it.
fn settled_event(
    mut event: ResultEvent,
    outcome: Outcome,
    applied: bool,
    after: Option<&PaymentSnapshot>,
    request: &OperationRequest,
) -> ResultEvent {
    event.outcome = outcome;
    event.reconciled = true;
    event.replayed = false;
    let status = after.map(|a| a.status.clone());
    event.gateway_status = status.clone();
    event.description = Some(match (status, applied) {
        (Some(status), true) => format!(
            "settled by inquiry: the payment shows the {} took effect ({status})",
            request.operation()
        ),
        (Some(status), false) => format!(
            "settled by inquiry: the payment shows the {} did not take effect ({status})",
            request.operation()
        ),
        (None, _) => no_such_payment(request),
    });
    event.occurred_at = now_rfc3339();
    event
}

/// What a `declined` says when an inquiry found that the gateway does not know the payment.
pub(super) fn no_such_payment(request: &OperationRequest) -> String {
    format!(
        "the gateway does not know payment {}: the {} did not take effect and cannot",
        request.payment_id().unwrap_or("-"),
        request.operation()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use Evidence::Payment;

    fn snap(state: PaymentState, refunded: Option<u64>) -> PaymentSnapshot {
        PaymentSnapshot {
            state,
            status: format!("{state:?}"),
            amount: Some(Amount::from_minor(10_000)),
            captured: None,
            refunded: refunded.map(Amount::from_minor),
            currency: Some("EUR".into()),
        }
    }

    #[test]
    fn capture_is_applied_only_when_the_payment_moved_from_authorized_to_captured() {
        let before = snap(PaymentState::Authorized, None);
        let captured = snap(PaymentState::Captured, None);
        let a = Some(Amount::from_minor(500));
        assert_eq!(
            settle(Operation::Capture, a, Some(&before), Payment(&captured)),
            Settlement::Applied
        );
        assert_eq!(
            settle(Operation::Capture, a, None, Payment(&captured)),
            Settlement::Applied
        );
        assert_eq!(
            settle(
                Operation::Capture,
                a,
                Some(&before),
                Payment(&snap(PaymentState::Authorized, None))
            ),
            Settlement::NotApplied
        );
        assert_eq!(
            settle(
                Operation::Capture,
                a,
                Some(&before),
                Payment(&snap(PaymentState::InProgress, None))
            ),
            Settlement::Undecided
        );
        // Already captured before our attempt: ours cannot be the capture.
        assert_eq!(
            settle(Operation::Capture, a, Some(&captured), Payment(&captured)),
            Settlement::NotApplied
        );
    }

    #[test]
    fn cancel_is_applied_when_cancelled() {
        let before = snap(PaymentState::Authorized, None);
        assert_eq!(
            settle(
                Operation::Cancel,
                None,
                Some(&before),
                Payment(&snap(PaymentState::Cancelled, None))
            ),
            Settlement::Applied
        );
        assert_eq!(
            settle(Operation::Cancel, None, Some(&before), Payment(&before)),
            Settlement::NotApplied
        );
        assert_eq!(
            settle(
                Operation::Cancel,
                None,
                None,
                Payment(&snap(PaymentState::Other, None))
            ),
            Settlement::Undecided
        );
    }

    #[test]
    fn refund_is_judged_by_the_refunded_total() {
        let amount = Some(Amount::from_minor(1_000));
        let before = snap(PaymentState::Refunded, Some(2_000));
        assert_eq!(
            settle(
                Operation::Refund,
                amount,
                Some(&before),
                Payment(&snap(PaymentState::Refunded, Some(3_000)))
            ),
            Settlement::Applied
        );
        assert_eq!(
            settle(
                Operation::Refund,
                amount,
                Some(&before),
                Payment(&snap(PaymentState::Refunded, Some(2_000)))
            ),
            Settlement::NotApplied
        );
        // Someone else refunded a different amount meanwhile: cannot tell.
        assert_eq!(
            settle(
                Operation::Refund,
                amount,
                Some(&before),
                Payment(&snap(PaymentState::Refunded, Some(2_500)))
            ),
            Settlement::Undecided
        );
        // Without the before-snapshot the status alone says nothing.
        assert_eq!(
            settle(
                Operation::Refund,
                amount,
                None,
                Payment(&snap(PaymentState::Refunded, Some(3_000)))
            ),
            Settlement::Undecided
        );
        // First refund on a captured payment.
        let captured = snap(PaymentState::Captured, None);
        assert_eq!(
            settle(
                Operation::Refund,
                amount,
                Some(&captured),
                Payment(&snap(PaymentState::Refunded, Some(1_000)))
            ),
            Settlement::Applied
        );
        assert_eq!(
            settle(
                Operation::Refund,
                amount,
                Some(&captured),
                Payment(&captured)
            ),
            Settlement::NotApplied
        );
        // Refund requested but not yet booked: wait.
        assert_eq!(
            settle(
                Operation::Refund,
                amount,
                Some(&captured),
                Payment(&snap(PaymentState::InProgress, None))
            ),
            Settlement::Undecided
        );
    }

    #[test]
    fn a_payment_the_gateway_does_not_know_settles_every_side_effect_as_declined() {
        let authorized = snap(PaymentState::Authorized, None);
        let captured = snap(PaymentState::Captured, Some(0));
        let amount = Some(Amount::from_minor(1_000));
        // (operation, before, expected)
        let table = [
            (Operation::Capture, None, Settlement::NoSuchPayment),
            (Operation::Cancel, None, Settlement::NoSuchPayment),
            (Operation::Refund, None, Settlement::NoSuchPayment),
            // It existed when we looked before the attempt: a payment cannot
            // vanish, so the answer contradicts what we know.
            (Operation::Capture, Some(&authorized), Settlement::Undecided),
            (Operation::Cancel, Some(&authorized), Settlement::Undecided),
            (Operation::Refund, Some(&captured), Settlement::Undecided),
            // Reads have nothing to settle, found or not.
            (Operation::Inquiry, None, Settlement::NotApplied),
            (Operation::TransactionList, None, Settlement::NotApplied),
        ];
        for (operation, before, expected) in table {
            assert_eq!(
                settle(operation, amount, before, Evidence::NoSuchPayment),
                expected,
                "{operation} before {before:?}"
            );
        }
    }

    #[test]
    fn an_unknown_is_settled_only_by_a_settlement_that_decides() {
        assert_eq!(
            settled_outcome(Settlement::Applied),
            Some(Outcome::Succeeded)
        );
        assert_eq!(
            settled_outcome(Settlement::NotApplied),
            Some(Outcome::Failed)
        );
        assert_eq!(
            settled_outcome(Settlement::NoSuchPayment),
            Some(Outcome::Declined)
        );
        assert_eq!(settled_outcome(Settlement::Undecided), None);

        let request = crate::gateways::OperationRequest::new(
            crate::gateways::PaymentOperation::Capture,
            "55361",
        );
        let unknown = event_for(
            "c1",
            r#"{"id":"c1","gateway":"paymentz","operation":"capture"}"#,
            Outcome::Unknown,
            None,
            None,
            1,
            Reported::default(),
        );
        let captured = snap(PaymentState::Captured, None);
        let event = settled_event(
            unknown.clone(),
            Outcome::Succeeded,
            true,
            Some(&captured),
            &request,
        );
        assert_eq!(event.outcome, Outcome::Succeeded);
        assert!(event.reconciled && !event.replayed);
        assert_eq!(event.gateway_status.as_deref(), Some("Captured"));
        assert_eq!(
            event.description.as_deref(),
            Some("settled by inquiry: the payment shows the capture took effect (Captured)")
        );
        let gone = settled_event(unknown, Outcome::Declined, false, None, &request);
        assert_eq!(gone.gateway_status, None);
        assert_eq!(
            gone.description.as_deref(),
            Some("the gateway does not know payment 55361: the capture did not take effect and cannot")
        );
    }

    #[test]
    fn only_a_successful_inquiry_or_the_gateways_not_found_is_evidence() {
        let found = snap(PaymentState::Captured, None);
        let mut ok = Answer::classified(Classification::Succeeded);
        ok.snapshot = Some(found.clone());
        assert_eq!(Evidence::of(&ok), Some(Evidence::Payment(&found)));
        assert_eq!(Evidence::of(&ok).and_then(Evidence::snapshot), Some(&found));

        let mut not_found = Answer::classified(Classification::Declined);
        not_found.not_found = true;
        assert_eq!(Evidence::of(&not_found), Some(Evidence::NoSuchPayment));
        assert_eq!(Evidence::NoSuchPayment.snapshot(), None);

        // Any other refusal, and anything ambiguous, proves nothing.
        assert_eq!(
            Evidence::of(&Answer::classified(Classification::Declined)),
            None
        );
        let mut ambiguous = Answer::classified(Classification::Ambiguous);
        ambiguous.not_found = true;
        ambiguous.snapshot = Some(found.clone());
        assert_eq!(Evidence::of(&ambiguous), None);
        assert_eq!(
            Evidence::of(&Answer::classified(Classification::Succeeded)),
            None
        );
        let mut not_applied = Answer::classified(Classification::NotApplied);
        not_applied.not_found = true;
        assert_eq!(Evidence::of(&not_applied), None);
    }
}
