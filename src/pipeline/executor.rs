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

use super::reconcile::{settle, Evidence, Settlement};
use super::{retry, Job, Worker};
use crate::events::{now_rfc3339, ResultEvent};
use crate::gateways::{
    Answer, Classification, GatewayCall, Operation, PaymentSnapshot, PaymentState,
};
use crate::money::Amount;
use crate::outcome::{Outcome, RejectReason};
use crate::store::attempts::{self, AttemptKind};
use crate::store::{commands, outbox, StoreError};

/// The gateway's fields of a result event.
#[derive(Debug, Clone, Default)]
pub struct Reported {
    pub gateway_status: Option<String>,
    pub gateway_code: Option<String>,
    pub description: Option<String>,
    pub reference: Option<String>,
    pub response: Option<serde_json::Value>,
}

impl Reported {
    fn from_answer(answer: &Answer, operation: Operation) -> Reported {
        Reported {
            gateway_status: answer.gateway_status.clone(),
            gateway_code: answer.gateway_code.clone(),
            description: answer.description.clone(),
            // The contract's `reference` is the id of a NEW operation; a read
            // creates none (Praxis names the found transaction: that is in `response`).
            reference: operation
                .has_side_effect()
                .then(|| answer.reference.clone())
                .flatten(),
            response: match operation {
                Operation::Inquiry | Operation::TransactionList => answer.response.clone(),
                _ => None,
            },
        }
    }
}

/// The longest text of the gateway's own fields (`description`, `status`,
/// `code`, `reference`) kept in an event.
const MAX_REPORTED_CHARS: usize = 1024;

/// Builds the event of a command (or of a rejected message) from its stored
/// payload (JSON text, see [`commands::NewCommand::payload`]).
///
/// Whatever ends up in the event is bounded and storable: the command's
/// fields were bounded when stored; the gateway's text fields are cut at
/// [`MAX_REPORTED_CHARS`], and a `\u0000` anywhere in them (or in
/// `response`) is written as text, since PostgreSQL's `jsonb`, which stores
/// every event, cannot hold it.
pub fn event_for(
    command_id: &str,
    payload: &str,
    outcome: Outcome,
    reason: Option<RejectReason>,
    amount: Option<Amount>,
    attempts: i32,
    reported: Reported,
) -> ResultEvent {
    let stored: crate::command::Command = serde_json::from_str(payload).unwrap_or_default();
    let bounded = |text: Option<String>| {
        text.map(|t| {
            if t.contains('\0') || t.chars().nth(MAX_REPORTED_CHARS).is_some() {
                let cut: String = t.chars().take(MAX_REPORTED_CHARS).collect();
                let mut cut = cut.replace('\0', "\\u{0}");
                if t.chars().nth(MAX_REPORTED_CHARS).is_some() {
                    cut.push_str(crate::telemetry::CUT_MARK);
                }
                cut
            } else {
                t
            }
        })
    };
    let mut response = reported.response.unwrap_or_else(|| serde_json::json!({}));
    without_nul(&mut response);
    ResultEvent {
        command_id: command_id.to_string(),
        gateway: stored.gateway.clone(),
        account: Some(stored.account_name().to_string()),
        operation: stored.operation,
        payment_id: stored.payment_id,
        outcome,
        reason,
        amount: amount.map(|a| a.to_string()).or(stored.amount),
        currency: stored.currency,
        gateway_status: bounded(reported.gateway_status),
        gateway_code: bounded(reported.gateway_code),
        description: bounded(reported.description),
        reference: bounded(reported.reference),
        attempts: attempts.max(0) as u32,
        replayed: false,
        reconciled: false,
        response,
        metadata: stored.metadata,
        origin: stored.origin,
        occurred_at: now_rfc3339(),
    }
}

/// Writes every `\u0000` in the strings (and keys) of `value` as text.
fn without_nul(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) if s.contains('\0') => *s = s.replace('\0', "\\u{0}"),
        serde_json::Value::Array(items) => items.iter_mut().for_each(without_nul),
        serde_json::Value::Object(map) => {
            if map.keys().any(|k| k.contains('\0')) {
                let entries = std::mem::take(map);
                map.extend(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k.replace('\0', "\\u{0}"), v)),
                );
            }
            map.values_mut().for_each(without_nul);
        }
        _ => {}
    }
}

/// Exchanges to write in the same transaction as what follows them.
struct Record<'a> {
    gateway: &'static str,
    attempt_no: i32,
    kind: AttemptKind,
    in_flight_row: Option<i64>,
    call: &'a GatewayCall,
}

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
        return reconcile_unknown(w, job, None).await.map(|_| ());
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

/// Reconciles one `unknown` command now, on an operator's request: the same
/// inquiry and the same decision as the scheduled checks (the inquiry is an
/// attempt row; a settlement publishes its `reconciled` event), with the
/// audit row `audit` written in the transaction that records the decision.
/// Refused when the command is not unsettled, when the scheduler is checking
/// it this moment, or when another command holds its payment.
pub async fn reconcile_now(
    w: &Worker,
    id: &str,
    audit: &crate::store::console::AuditEntry,
) -> Result<(i64, String), ReconcileNowError> {
    use crate::store::console;
    let mut conn = w.store.pool().acquire().await?;
    let Some(row) = console::claim_unsettled(&mut conn, id, w.owner, w.settings.lease).await?
    else {
        return Err(match commands::get(&mut conn, id).await? {
            None => ReconcileNowError::NotFound(id.to_string()),
            Some(row) if row.state == "unsettled" => ReconcileNowError::Refused(
                "the worker is checking this command right now; look again in a moment".into(),
            ),
            Some(row) => ReconcileNowError::Refused(format!(
                "not an open unknown: state {}, outcome {}",
                row.state,
                row.settled_outcome
                    .as_deref()
                    .or(row.outcome.as_deref())
                    .unwrap_or("not decided yet")
            )),
        });
    };
    let job = match Job::from_row(row, &w.accounts) {
        Ok(job) => job,
        Err(rejected) => {
            console::unclaim_unsettled(&mut conn, id, w.owner).await?;
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
        w.owner,
        w.settings.lease,
    )
    .await?;
    if !granted {
        console::unclaim_unsettled(&mut conn, id, w.owner).await?;
        return Err(ReconcileNowError::Refused(
            "another command on this payment is running; try again when it is done".into(),
        ));
    }
    drop(conn);
    w.track(id);
    let done = reconcile_unknown(w, &job, Some(audit)).await;
    w.untrack(id);
    Ok(done?.expect("an audit entry gives an audit row"))
}

/// Background reconciliation of an `unknown`: one inquiry per scheduled check
/// (or per operator request, with its `audit` entry written in the same
/// transaction as the decision: then the audit row's id and what came of it).
async fn reconcile_unknown(
    w: &Worker,
    job: &Job,
    audit: Option<&crate::store::console::AuditEntry>,
) -> Result<Option<(i64, String)>, StoreError> {
    let id = job.row.id.as_str();
    let request = &job.valid.request;
    let before: Option<PaymentSnapshot> = job
        .row
        .before_snapshot
        .as_ref()
        .and_then(|v| serde_json::from_value(v.clone()).ok());
    let settlement = match request.inquiry() {
        None => None,
        Some(inquiry) => {
            let call = job.valid.gateway.execute(&inquiry).await;
            write_record(
                w,
                id,
                &Record {
                    gateway: job.valid.gateway.name(),
                    attempt_no: job.row.attempts,
                    kind: AttemptKind::Inquiry,
                    in_flight_row: None,
                    call: &call,
                },
            )
            .await?;
            Evidence::of(&call.answer).map(|evidence| {
                (
                    settle(request.operation, request.amount, before.as_ref(), evidence),
                    evidence.snapshot().cloned(),
                )
            })
        }
    };
    let mut tx = w.store.pool().begin().await?;
    let decided = match settlement {
        Some((
            settled @ (Settlement::Applied | Settlement::NotApplied | Settlement::NoSuchPayment),
            after,
        )) => {
            let applied = settled == Settlement::Applied;
            let outcome = match settled {
                Settlement::Applied => Outcome::Succeeded,
                Settlement::NoSuchPayment => Outcome::Declined,
                _ => Outcome::Failed,
            };
            // Read as text: through a serde_json::Value the numbers of the
            // metadata it echoes could be rounded.
            let original: Option<ResultEvent> = commands::current_result(&mut tx, id)
                .await?
                .and_then(|text| serde_json::from_str(&text).ok());
            let mut event = original.unwrap_or_else(|| {
                event_for(
                    id,
                    &job.row.payload,
                    Outcome::Unknown,
                    None,
                    request.amount,
                    job.row.attempts,
                    Reported::default(),
                )
            });
            event.outcome = outcome;
            event.reconciled = true;
            event.replayed = false;
            let status = after.as_ref().map(|a| a.status.clone());
            event.gateway_status = status.clone();
            event.description = Some(match (status, applied) {
                (Some(status), true) => format!(
                    "settled by inquiry: the payment shows the {} took effect ({status})",
                    request.operation
                ),
                (Some(status), false) => format!(
                    "settled by inquiry: the payment shows the {} did not take effect ({status})",
                    request.operation
                ),
                (None, _) => no_such_payment(job),
            });
            event.occurred_at = now_rfc3339();
            let body = serde_json::to_string(&event).expect("serializable");
            if commands::settle(&mut tx, id, w.owner, outcome.as_str(), &body).await? {
                outbox::enqueue(
                    &mut tx,
                    &w.topology.result_exchange,
                    &event,
                    job.row.reply_to.as_deref(),
                    job.reply_correlation(),
                )
                .await?;
                tracing::info!(outcome = %outcome, "unknown outcome settled");
                format!(
                    "settled as {outcome}: {}",
                    event.description.as_deref().unwrap_or("")
                )
            } else {
                // Its lease was lost meanwhile; whoever holds it decides.
                "the inquiry was recorded, but the command was no longer this worker's to settle"
                    .into()
            }
        }
        _ => {
            let delay =
                retry::reconcile_delay(&w.settings, job.row.reconcile_checks.max(0) as usize + 1);
            commands::reschedule_unsettled(&mut tx, id, w.owner, delay).await?;
            tracing::info!(next_check_in = ?delay, "unknown outcome still unsettled");
            match request.inquiry() {
                None => format!(
                    "still unknown: a {} cannot be inquired about; next check in {delay:?}",
                    request.operation
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
    w.wake_outbox.notify_one();
    Ok(audited)
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

/// What a `declined` says when an inquiry found that the gateway does not know the payment.
fn no_such_payment(job: &Job) -> String {
    format!(
        "the gateway does not know payment {}: the {} did not take effect and cannot",
        job.valid.request.payment_id.as_deref().unwrap_or("-"),
        job.valid.request.operation
    )
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
    let event = event_for(
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

fn recording_of(id: &str, record: &Record<'_>) -> crate::store::attempts::Recording {
    crate::store::attempts::Recording {
        command_id: id.to_string(),
        attempt_no: record.attempt_no,
        kind: record.kind,
        in_flight_row: record.in_flight_row,
        exchanges: record.call.exchanges.clone(),
        fallback_error: record.call.answer.error.as_ref().map(|e| e.to_string()),
    }
}

fn count_exchanges(w: &Worker, record: &Record<'_>) {
    for exchange in &record.call.exchanges {
        let kind = if exchange.purpose == "authToken" {
            AttemptKind::Auth
        } else {
            record.kind
        };
        w.metrics.exchange(record.gateway, kind.as_str(), exchange);
    }
}

async fn write_record(w: &Worker, id: &str, record: &Record<'_>) -> Result<(), StoreError> {
    let mut conn = w.store.pool().acquire().await?;
    write_record_in(w, &mut conn, id, record).await
}

/// Records the exchanges of a call, and counts them: one place for both.
async fn write_record_in(
    w: &Worker,
    conn: &mut sqlx::PgConnection,
    id: &str,
    record: &Record<'_>,
) -> Result<(), StoreError> {
    count_exchanges(w, record);
    let error = record.call.answer.error.as_ref().map(|e| e.to_string());
    attempts::record(
        conn,
        id,
        record.attempt_no,
        record.kind,
        record.in_flight_row,
        &record.call.exchanges,
        error.as_deref(),
    )
    .await
}
