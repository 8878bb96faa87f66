//! The first stage: a delivery becomes a stored command, a replay, a rejection
//! or a dead letter, and is acknowledged only once that is committed.
//!
//! Reading ([`crate::command::read`]) is strict and bounded: anything with a
//! usable `id` becomes a command with a result (a bad field gives
//! `rejected`, not silence). Only a message that is not a JSON object, has no
//! usable `id`, or is larger than `[amqp] max_command_bytes`, is
//! dead-lettered, because there is no one to answer. What is stored is the
//! contract's fields, bounded and escaped, never the producer's whole body,
//! and the AMQP properties it keeps (`reply_to`, `correlation_id`) are
//! checked first: nothing a producer sends can make a statement fail.

mod reading;

pub use reading::{
    checked_envelope, fingerprint, new_row, prepare, read, reply_to_problem, validate, Envelope,
    Incoming, Prepared, Reading,
};

use std::collections::{HashMap, HashSet};

use crate::command::ValidCommand;
use crate::events::{event_for, Reported};
use crate::outcome::{Outcome, RejectReason, Rejected};
use crate::store::commands::{self, CommandRow, NewCommand, PaymentClaim};
use crate::store::lifecycle::Phase;
use crate::store::{outbox, StoreError};
use crate::telemetry::Escaped;

/// What the consumer does after the intake commit.
pub enum Accepted {
    /// A new command, leased to this instance: drive it now.
    Run(Box<super::Job>),
    /// Nothing more to do here (stored for later, replayed, rejected, or a duplicate).
    Done,
}

/// Stores a batch of commands read from deliveries, in one transaction, and
/// says for each what follows. New valid commands are inserted together,
/// leased here, their payments claimed together, and (when they need no
/// before-snapshot) their first attempt's recovery point recorded with them;
/// the rest (rejections, replays, conflicts, duplicates) go one by one. The
/// caller acks the deliveries after this returns.
pub async fn accept_batch(
    worker: &super::Worker,
    items: &[Incoming],
) -> Result<Vec<Accepted>, StoreError> {
    let prepared: Vec<Prepared> = items
        .iter()
        .map(|item| prepare(item, &worker.topology, &worker.accounts))
        .collect();
    if let Some(results) = accept_new(worker, &prepared).await? {
        return Ok(results);
    }
    let mut tx = worker.store.pool().begin().await?;
    let fast = fast_path(worker, &mut tx, &prepared).await?;
    let mut results = Vec::with_capacity(items.len());
    let mut rejected = Vec::new();
    let mut replays = 0;
    for ((item, (validated, row)), job) in items.iter().zip(&prepared).zip(fast.jobs) {
        let accepted = match job {
            Some(job) => run_or_wait(job, &fast.granted, &fast.started),
            None => {
                match accept_one(worker, &mut tx, item, validated, row).await? {
                    SlowPath::Rejected => rejected.push(item),
                    SlowPath::Replayed => replays += 1,
                    SlowPath::ReplayPending => {}
                }
                Accepted::Done
            }
        };
        results.push(accepted);
    }
    tx.commit().await?;
    after_commit(worker, &prepared, &fast.deferred, &rejected, replays).await;
    Ok(results)
}

/// The common batch, all new valid commands with distinct ids, in one
/// round trip ([`commands::intake_new`]) instead of a transaction of six:
/// the same rows written, the same leases claimed, the same recovery
/// points recorded as [`fast_path`] writes, committed by the one statement
/// before this returns (the caller acks after). `None` when the batch is
/// not of that kind, or an id in it exists after all: nothing was written,
/// and [`accept_batch`] stores it in a transaction, whose slow path deals
/// with duplicates (a redelivery of a command committed but not acked among
/// them), rejections and replays.
async fn accept_new(
    worker: &super::Worker,
    prepared: &[Prepared],
) -> Result<Option<Vec<Accepted>>, StoreError> {
    let mut ids = HashSet::with_capacity(prepared.len());
    if !prepared
        .iter()
        .all(|(validated, row)| validated.is_ok() && ids.insert(row.id.clone()))
    {
        return Ok(None);
    }
    let (owner, lease) = (worker.owner, worker.settings.lease);
    let mut rows: Vec<&NewCommand> = prepared.iter().map(|(_, row)| row).collect();
    // Inserted in the order of their ids, for the same reason as the
    // claims (a producer's duplicate may be in another instance's batch).
    rows.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    let (jobs, claims) = first_of_each_payment(worker, prepared, &ids);
    let intents = immediate_intents(&jobs, None);
    let mut conn = worker.store.pool().acquire().await?;
    let recheck = super::BUSY_PAYMENT_RECHECK;
    let Some(taken) =
        commands::intake_new(&mut conn, &rows, owner, lease, recheck, &claims, &intents).await?
    else {
        return Ok(None);
    };
    drop(conn);
    let granted: HashSet<String> = taken
        .iter()
        .filter(|(_, t)| t.granted)
        .map(|(id, _)| id.clone())
        .collect();
    let started: HashMap<String, (i32, i64)> = taken
        .iter()
        .filter_map(|(id, t)| t.started.map(|s| (id.clone(), s)))
        .collect();
    let deferred: Vec<String> = rows
        .iter()
        .filter(|row| !granted.contains(&row.id))
        .map(|row| row.id.clone())
        .collect();
    let results = jobs
        .into_iter()
        .map(|job| match job {
            Some(job) => run_or_wait(job, &granted, &started),
            None => Accepted::Done,
        })
        .collect();
    after_commit(worker, prepared, &deferred, &[], 0).await;
    Ok(Some(results))
}

/// What the fast path did with a batch's new valid commands.
struct FastPath {
    /// One per delivery: the job of a new valid command (the first of its
    /// payment in the batch), else `None` (for the slow path, or a command
    /// whose payment another in the batch claims: it waits, deferred).
    jobs: Vec<Option<super::Job>>,
    /// The commands that got their payment's lease.
    granted: HashSet<String>,
    /// The commands whose payment is busy, deferred.
    deferred: Vec<String>,
    /// The attempt number and in-flight row of the first attempts recorded.
    started: HashMap<String, (i32, i64)>,
}

/// The fast path of intake, inside the batch's transaction: the new valid
/// commands inserted together and leased here, the duplicates locked, one
/// claim per payment, the commands whose payment is busy deferred, and the
/// first attempt's recovery point of those that can call at once.
async fn fast_path(
    worker: &super::Worker,
    tx: &mut sqlx::PgConnection,
    prepared: &[Prepared],
) -> Result<FastPath, StoreError> {
    let (owner, lease) = (worker.owner, worker.settings.lease);
    let mut valid_rows: Vec<&NewCommand> = prepared
        .iter()
        .filter(|(v, _)| v.is_ok())
        .map(|(_, row)| row)
        .collect();
    // Inserted in the order of their ids, as the one-statement path inserts
    // them: two intakes holding ids the other inserts wait only one way.
    // Stable: of an id delivered twice in the batch, the first is stored.
    valid_rows.sort_by(|a, b| a.id.cmp(&b.id));
    let inserted = commands::insert_many(&mut *tx, &valid_rows, owner, lease).await?;
    // The slow path locks existing commands (duplicates) one at a time.
    // Locked first, all together and in the order of their ids, as the batch
    // writers lock theirs: otherwise a duplicate of a command being decided
    // could deadlock with the completion writer.
    let mut existing: Vec<&str> = prepared
        .iter()
        .map(|(_, row)| row.id.as_str())
        .filter(|id| !inserted.contains(*id))
        .collect();
    existing.sort_unstable();
    existing.dedup();
    commands::lock_many(&mut *tx, &existing).await?;

    let (jobs, claims) = first_of_each_payment(worker, prepared, &inserted);
    let granted = commands::claim_payments(&mut *tx, &claims, owner, lease).await?;
    let deferred: Vec<String> = jobs
        .iter()
        .flatten()
        .filter(|job| !granted.contains(&job.row.id))
        .map(|job| job.row.id.clone())
        .collect();
    commands::defer_many(&mut *tx, &deferred, owner, super::BUSY_PAYMENT_RECHECK).await?;
    let immediate = immediate_intents(&jobs, Some(&granted));
    let started = commands::record_intents(&mut *tx, owner, &immediate, &[]).await?;
    Ok(FastPath {
        jobs,
        granted,
        deferred,
        started,
    })
}

/// The jobs of the newly inserted valid commands, and one payment claim per
/// payment: a second command on the same payment in this batch waits for the
/// first like any other.
fn first_of_each_payment(
    worker: &super::Worker,
    prepared: &[Prepared],
    inserted: &HashSet<String>,
) -> (Vec<Option<super::Job>>, Vec<PaymentClaim>) {
    let mut jobs: Vec<Option<super::Job>> = Vec::with_capacity(prepared.len());
    let mut claims = Vec::new();
    let mut keys_seen = HashSet::new();
    let mut first_of_payment = HashSet::new();
    for (validated, row) in prepared {
        match validated {
            Ok(valid) if inserted.contains(&row.id) && !first_of_payment.contains(&row.id) => {
                let job =
                    super::Job::fresh(row, valid.clone(), worker.owner, worker.settings.lease);
                let key = (job.valid.gateway.name(), job.payment_key());
                if keys_seen.insert(key.clone()) {
                    claims.push(PaymentClaim {
                        gateway: key.0.to_string(),
                        payment_key: key.1,
                        command_id: row.id.clone(),
                    });
                }
                first_of_payment.insert(row.id.clone());
                jobs.push(Some(job));
            }
            _ => jobs.push(None),
        }
    }
    // Claimed in the order of their keys: two instances' intake batches
    // stored at once with payments in common then cannot each hold a lease
    // the other waits for.
    claims.sort_unstable_by(|a, b| {
        (a.gateway.as_str(), a.payment_key.as_str())
            .cmp(&(b.gateway.as_str(), b.payment_key.as_str()))
    });
    (jobs, claims)
}

/// The recovery point of the first attempt, for the jobs that can call at
/// once: their payment granted, and no before-snapshot to take first.
/// `granted: None` (the one-statement fast path, which claims and records
/// together): every job that needs no before-snapshot, recorded by the
/// statement only for those it grants.
fn immediate_intents<'a>(
    jobs: &'a [Option<super::Job>],
    granted: Option<&HashSet<String>>,
) -> Vec<commands::Intent<'a>> {
    jobs.iter()
        .flatten()
        .filter(|job| granted.is_none_or(|granted| granted.contains(&job.row.id)))
        .filter(|job| {
            let op = job.valid.request.operation();
            !(op.has_side_effect() && job.valid.gateway.snapshot_before(op))
        })
        .map(|job| commands::Intent {
            command_id: job.row.id.as_str(),
            before_snapshot: None,
            purpose: job.valid.request.operation().as_str(),
        })
        .collect()
}

/// A new command runs now when its payment was granted (from its recovery
/// point when the fast path recorded it); otherwise it was deferred and waits.
fn run_or_wait(
    mut job: super::Job,
    granted: &HashSet<String>,
    started: &HashMap<String, (i32, i64)>,
) -> Accepted {
    if !granted.contains(&job.row.id) {
        return Accepted::Done;
    }
    if let Some(&(attempt_no, in_flight)) = started.get(&job.row.id) {
        job.row.phase = Phase::Calling;
        job.row.attempts = attempt_no;
        job.intent_row = Some(in_flight);
    }
    job.payment_leased = true;
    Accepted::Run(Box::new(job))
}

/// What follows a batch's commit: a last look at the deferred commands, the
/// relay woken for the events enqueued, the metrics.
async fn after_commit(
    worker: &super::Worker,
    prepared: &[Prepared],
    deferred: &[String],
    rejected: &[&Incoming],
    replays: usize,
) {
    if !deferred.is_empty() {
        // A payment held by a command that finished between our claim and our
        // commit would never wake these: look once more. The batch is
        // committed: a failure here is only logged (the deferred commands are
        // looked at again after BUSY_PAYMENT_RECHECK), never returned, or the
        // caller would take the batch again as if it had not been stored.
        if let Err(error) = wake_deferred(worker, prepared, deferred).await {
            tracing::warn!(%error, "could not look again at commands waiting for a busy payment");
        }
    }
    if !rejected.is_empty() || replays > 0 {
        worker.wake_outbox.notify_one();
    }
    for item in rejected {
        worker.metrics.command_decided(
            item.command.gateway.as_deref().unwrap_or(""),
            item.command.operation.as_deref().unwrap_or(""),
            "rejected",
        );
    }
    (0..replays).for_each(|_| worker.metrics.replayed());
}

async fn wake_deferred(
    worker: &super::Worker,
    prepared: &[Prepared],
    deferred: &[String],
) -> Result<(), StoreError> {
    let mut conn = worker.store.pool().acquire().await?;
    for (validated, row) in prepared
        .iter()
        .filter(|(_, row)| deferred.contains(&row.id))
    {
        if let Ok(valid) = validated {
            let key = super::payment_key(valid.request.payment_id(), &row.id);
            if commands::wake_if_payment_free(&mut conn, &row.id, valid.gateway.name(), &key)
                .await?
            {
                worker.wake_scheduler.notify_one();
            }
        }
    }
    Ok(())
}

/// What the slow path of intake ([`accept_one`]) did with one delivery.
enum SlowPath {
    /// Stored `rejected` (or refused as an idempotency conflict), event enqueued.
    Rejected,
    /// A duplicate of a decided command: its stored event enqueued again.
    Replayed,
    /// A duplicate of a command still running: replayed when it is decided.
    ReplayPending,
}

/// The slow path of intake, inside the batch's transaction: an invalid command
/// (stored `rejected` with its event), or an id seen before (conflict, replay,
/// or a pending replay while it still runs).
async fn accept_one(
    worker: &super::Worker,
    tx: &mut sqlx::PgConnection,
    item: &Incoming,
    validated: &Result<ValidCommand, Rejected>,
    row: &NewCommand,
) -> Result<SlowPath, StoreError> {
    if let Err(rejected) = validated {
        if store_rejected(worker, tx, row, rejected).await? {
            return Ok(SlowPath::Rejected);
        }
    }
    let existing = commands::lock(&mut *tx, &row.id)
        .await?
        .expect("the conflicting row exists");
    if existing.fingerprint != row.fingerprint {
        refuse_conflict(worker, tx, row, &existing).await?;
        Ok(SlowPath::Rejected)
    } else if existing.settled_result.is_some() || existing.result.is_some() {
        replay(worker, tx, row).await?;
        Ok(SlowPath::Replayed)
    } else {
        // A producer's duplicate, or (rarely) our own delivery whose ack was
        // lost: either way one more replayed event, never a second call.
        commands::add_pending_replay(
            &mut *tx,
            &row.id,
            row.reply_to.as_deref(),
            reply_correlation(row),
        )
        .await?;
        tracing::info!(
            id = %Escaped::new(&row.id),
            redelivered = item.envelope.redelivered,
            "duplicate of a command still running: it will be replayed when decided"
        );
        Ok(SlowPath::ReplayPending)
    }
}

/// The correlation id a command's events are answered with: the producer's,
/// else the command's id.
fn reply_correlation(row: &NewCommand) -> Option<&str> {
    row.correlation_id.as_deref().or(Some(row.id.as_str()))
}

/// Enqueues an event about `row`, to the result exchange and its `reply_to`.
async fn enqueue_answer(
    worker: &super::Worker,
    tx: &mut sqlx::PgConnection,
    row: &NewCommand,
    event: &crate::events::ResultEvent,
) -> Result<(), StoreError> {
    outbox::enqueue(
        tx,
        &worker.topology.result_exchange,
        event,
        row.reply_to.as_deref(),
        reply_correlation(row),
    )
    .await?;
    Ok(())
}

/// Stores an invalid command as `rejected`, with its event, unless its id
/// exists. Returns whether it was stored.
async fn store_rejected(
    worker: &super::Worker,
    tx: &mut sqlx::PgConnection,
    row: &NewCommand,
    rejected: &Rejected,
) -> Result<bool, StoreError> {
    if !commands::insert(&mut *tx, row, None).await? {
        return Ok(false);
    }
    let event = event_for(
        &row.id,
        &row.payload,
        Outcome::Rejected,
        Some(rejected.reason),
        None,
        0,
        Reported {
            description: Some(rejected.description.clone()),
            ..Reported::default()
        },
    );
    let body = serde_json::to_string(&event).expect("serializable");
    commands::decide(
        &mut *tx,
        &row.id,
        None,
        "rejected",
        Some(rejected.reason.as_str()),
        &body,
        None,
    )
    .await?;
    enqueue_answer(worker, tx, row, &event).await?;
    tracing::info!(
        id = %Escaped::new(&row.id),
        reason = rejected.reason.as_str(),
        description = %Escaped::at_most(&rejected.description, 1024),
        "command rejected"
    );
    Ok(true)
}

/// Refuses a command whose id was used by a different command: a
/// `rejected` event, the original unchanged.
async fn refuse_conflict(
    worker: &super::Worker,
    tx: &mut sqlx::PgConnection,
    row: &NewCommand,
    existing: &CommandRow,
) -> Result<(), StoreError> {
    let event = event_for(
        &row.id,
        &row.payload,
        Outcome::Rejected,
        Some(RejectReason::IdempotencyConflict),
        None,
        0,
        Reported {
            description: Some(format!(
                "id `{}` was already used at {} by a command with a different payload; the original is unchanged",
                row.id,
                crate::events::format_timestamp(existing.received_at)
            )),
            ..Reported::default()
        },
    );
    enqueue_answer(worker, tx, row, &event).await?;
    tracing::warn!(id = %Escaped::new(&row.id), "idempotency conflict: same id, different payload");
    Ok(())
}

/// Enqueues a decided command's stored event again, as a replay.
async fn replay(
    worker: &super::Worker,
    tx: &mut sqlx::PgConnection,
    row: &NewCommand,
) -> Result<(), StoreError> {
    // Read again as text: through serde_json::Value a number in the
    // metadata could come back rounded.
    let stored = commands::current_result(&mut *tx, &row.id)
        .await?
        .ok_or_else(|| StoreError::Missing(format!("the stored result of {}", row.id)))?;
    let event: crate::events::ResultEvent =
        serde_json::from_str(&stored).map_err(|source| StoreError::Unreadable {
            what: format!("the stored result of {}", row.id),
            source,
        })?;
    enqueue_answer(worker, tx, row, &event.replay()).await?;
    tracing::info!(id = %Escaped::new(&row.id), "duplicate command: replaying its stored result");
    Ok(())
}

/// Keeps an unreadable message: recorded in Postgres, then published to the
/// dead-letter queue with its original body and a header saying why.
///
/// The record must itself be storable whatever the message: its reason and
/// properties are escaped and bounded ([`dead_letters::Record`]), and a body
/// larger than `keep_bytes` is kept only in part in the database (the
/// dead-letter queue has it whole). Should the record still fail for its
/// data, a bare one (reason and size only) is written instead: a dead letter
/// never blocks intake.
///
/// [`dead_letters::Record`]: crate::store::dead_letters::Record
pub async fn dead_letter(
    worker: &super::Worker,
    body: &[u8],
    properties: &lapin::BasicProperties,
    reason: &str,
) -> Result<(), DeadLetterError> {
    use crate::broker::{Outgoing, REASON_HEADER};
    use crate::store::dead_letters::{self, Record};
    let publisher = worker
        .publisher
        .borrow()
        .clone()
        .ok_or(DeadLetterError::NoBroker)?;
    let record = Record::new(
        reason,
        body,
        crate::broker::properties_json(properties),
        worker.amqp.max_command_bytes,
    );
    let id = {
        let mut conn = worker.store.pool().acquire().await?;
        match dead_letters::insert(&mut conn, &record).await {
            Ok(id) => id,
            Err(error) if crate::store::is_data_error(&error) => {
                tracing::warn!(
                    error = %Escaped::at_most(&error.to_string(), 512),
                    "the dead-letter record could not be stored whole; storing its reason and size only"
                );
                dead_letters::insert(&mut conn, &record.bare()).await?
            }
            Err(error) => return Err(error.into()),
        }
    };
    let mut message = Outgoing::json("", &worker.topology.dead_letter_queue, body.to_vec());
    message.content_type = match properties.content_type().as_ref().map(|c| c.as_str()) {
        Some("application/json") => "application/json",
        _ => "application/octet-stream",
    };
    message.message_id = properties
        .message_id()
        .as_ref()
        .map(|v| v.as_str().to_string());
    message.correlation_id = properties
        .correlation_id()
        .as_ref()
        .map(|v| v.as_str().to_string());
    message.headers = vec![
        (REASON_HEADER.to_string(), record.reason.clone()),
        ("x-backoffice-dead-letter-id".to_string(), id.to_string()),
    ];
    publisher
        .publish(&message)
        .await
        .map_err(|e| DeadLetterError::Publish(e.to_string()))?;
    tracing::warn!(
        dead_letter = id,
        reason = %Escaped::new(&record.reason),
        "unreadable message moved to the dead-letter queue"
    );
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("no broker connection to publish the dead letter")]
    NoBroker,
    #[error("publishing the dead letter failed: {0}")]
    Publish(String),
}

impl From<sqlx::Error> for DeadLetterError {
    fn from(error: sqlx::Error) -> Self {
        DeadLetterError::Store(error.into())
    }
}
