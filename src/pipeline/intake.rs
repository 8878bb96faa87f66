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

use sha2::{Digest, Sha256};

use crate::broker::Topology;
pub use crate::command::{read, Reading};
use crate::command::{Command, ValidCommand};
use crate::gateways::registry::Accounts;
use crate::money::Amount;
use crate::outcome::Rejected;
use crate::store::commands::NewCommand;
use crate::telemetry::Escaped;

/// A hash of what the command asks for, in a normal form: `"10"` and `"10.00"`
/// are the same amount, and an absent account is `default`. Two commands with
/// the same id and the same fingerprint are the same command. `extra` are the
/// fields a rejected command had beyond the contract's (unknown, or of the
/// wrong type), as JSON text. For a well-formed command this is the same
/// hash as earlier versions computed, so that a producer's retry across an
/// upgrade is still a replay, not a conflict.
pub fn fingerprint(command: &Command, extra: &[(String, String)]) -> String {
    let amount = command.amount.as_deref().map(|a| match Amount::parse(a) {
        Ok(amount) => amount.to_string(),
        Err(_) => a.to_string(),
    });
    let metadata: Option<serde_json::Value> = command
        .metadata
        .as_ref()
        .and_then(|m| serde_json::from_str(m.get()).ok());
    let raw_types: serde_json::Map<String, serde_json::Value> = extra
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    // serde_json's default map is ordered, so this serialization is canonical.
    let normal = serde_json::json!({
        "gateway": command.gateway,
        "account": command.account_name(),
        "operation": command.operation,
        "payment_id": command.payment_id,
        "amount": amount,
        "currency": command.currency,
        "from": command.from,
        "to": command.to,
        "metadata": metadata,
        "raw_types": raw_types,
    });
    hex::encode(Sha256::digest(normal.to_string().as_bytes()))
}

/// Validates a command read from a message.
pub fn validate(command: &Command, accounts: &Accounts) -> Result<ValidCommand, Rejected> {
    command.validate(accounts)
}

/// Why `name` may not be a command's `reply_to`: the worker's own queues and
/// exchange (its events would go back into its input, or among its dead
/// letters), and the broker's reserved `amq.` names other than the ones made
/// for replies (server-named queues `amq.gen-*`, direct reply-to).
pub fn reply_to_problem(name: &str, topology: &Topology) -> Option<String> {
    if name.chars().any(Escaped::is_unsafe) {
        return Some(format!(
            "contains a control character: `{}`",
            Escaped::at_most(name, 64)
        ));
    }
    if name.len() > 255 {
        return Some("is longer than 255 bytes".into());
    }
    if [
        &topology.command_queue,
        &topology.dead_letter_queue,
        &topology.result_exchange,
    ]
    .contains(&&name.to_string())
    {
        return Some(format!(
            "`{name}` is one of the worker's own queues or exchange; name a queue of yours"
        ));
    }
    if name.starts_with("amq.")
        && !name.starts_with("amq.gen-")
        && !name.starts_with("amq.rabbitmq.reply-to")
    {
        return Some(format!(
            "`{name}` is a name reserved to the broker (only amq.gen-* and amq.rabbitmq.reply-to are allowed)"
        ));
    }
    None
}

/// The AMQP properties a command is answered with, checked: a `reply_to` or
/// `correlation_id` that breaks the rules is not kept (the event goes to the
/// exchange only) and the command is `rejected` naming it.
pub fn checked_envelope(
    envelope: &Envelope,
    topology: &Topology,
) -> (Option<String>, Option<String>, Option<Rejected>) {
    let mut problem = None;
    let reply_to = match envelope.reply_to.as_deref() {
        None | Some("") => None,
        Some(name) => match reply_to_problem(name, topology) {
            None => Some(name.to_string()),
            Some(why) => {
                problem = Some(Rejected::invalid("reply_to", why));
                None
            }
        },
    };
    let correlation_id = match envelope.correlation_id.as_deref() {
        None => None,
        Some(id) if id.chars().any(Escaped::is_unsafe) || id.len() > 255 => {
            problem.get_or_insert_with(|| {
                Rejected::invalid(
                    "correlation_id",
                    format!(
                        "contains a control character: `{}`",
                        Escaped::at_most(id, 64)
                    ),
                )
            });
            None
        }
        Some(id) => Some(id.to_string()),
    };
    (reply_to, correlation_id, problem)
}

/// The row to store for a command: its contract fields, bounded.
pub fn new_row(
    command: &Command,
    fingerprint: String,
    valid: Option<&ValidCommand>,
    reply_to: Option<String>,
    correlation_id: Option<String>,
) -> NewCommand {
    let stored = command.bounded();
    NewCommand {
        id: stored.id.clone().unwrap_or_default(),
        payload: serde_json::to_string(&stored).expect("a command serializes"),
        fingerprint,
        gateway: stored.gateway.clone(),
        account: Some(stored.account_name().to_string()),
        operation: stored.operation.clone(),
        payment_id: stored.payment_id.clone(),
        amount_minor: valid
            .and_then(|v| v.request.amount)
            .and_then(|a| i64::try_from(a.minor()).ok()),
        currency: stored.currency.clone(),
        reply_to,
        correlation_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command_of(body: &str) -> (Command, Option<Rejected>, Vec<(String, String)>) {
        match read(body.as_bytes()) {
            Reading::Command(command) => (*command, None, Vec::new()),
            Reading::Rejected {
                command,
                rejected,
                extra,
            } => (*command, Some(rejected), extra),
            Reading::Unreadable(why) => panic!("unreadable: {why}"),
        }
    }

    #[test]
    fn unreadable_messages_say_why() {
        let why = |body: &str| match read(body.as_bytes()) {
            Reading::Unreadable(why) => why,
            other => panic!("{body} was read as {other:?}"),
        };
        assert!(why("not json").starts_with("not JSON"));
        assert_eq!(why("[1,2]"), "not a JSON object");
        assert_eq!(why(r#""a string""#), "not a JSON object");
        assert_eq!(why(r#"{"gateway":"paymentz"}"#), "no `id` field");
        assert_eq!(why(r#"{"id":null}"#), "no `id` field");
        assert_eq!(why(r#"{"id":""}"#), "`id` is empty");
        assert_eq!(why(r#"{"id":42}"#), "`id` is not a string");
        assert!(why(&format!(r#"{{"id":"{}"}}"#, "x".repeat(300))).contains("longer"));
        assert_eq!(
            why(r#"{"id":"a\u0000b"}"#),
            "`id` contains a control character: `a\\u{0}b`"
        );
        assert!(why("{\"id\":\"a\\nb\"}").contains("control character"));
    }

    #[test]
    fn a_field_of_the_wrong_type_is_a_rejection_not_a_dead_letter() {
        let (command, rejected, extra) =
            command_of(r#"{"id":"c1","gateway":"paymentz","amount":10}"#);
        assert_eq!(command.id.as_deref(), Some("c1"));
        assert_eq!(
            rejected.expect("amount is a number").description,
            "amount: must be a string, not a number"
        );
        assert_eq!(extra, vec![("amount".to_string(), "10".to_string())]);
    }

    #[test]
    fn fingerprints_ignore_spelling_but_not_meaning() {
        let fp = |body: &str| {
            let (c, _, extra) = command_of(body);
            fingerprint(&c, &extra)
        };
        let a = fp(
            r#"{"id":"c","gateway":"paymentz","operation":"refund","payment_id":"1","amount":"10"}"#,
        );
        let b = fp(
            r#"{"amount":"10.00","id":"c","gateway":"paymentz","operation":"refund","payment_id":"1","account":"default"}"#,
        );
        let c = fp(
            r#"{"id":"c","gateway":"paymentz","operation":"refund","payment_id":"1","amount":"10.01"}"#,
        );
        let d = fp(
            r#"{"id":"c","gateway":"paymentz","operation":"refund","payment_id":"2","amount":"10"}"#,
        );
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
        let e = fp(r#"{"id":"c","gateway":"paymentz","metadata":{ "a" : [1, 2] }}"#);
        let f = fp(r#"{"id":"c","gateway":"paymentz","metadata":{"a":[1,2]}}"#);
        assert_eq!(e, f, "whitespace in metadata is not meaning");
    }

    /// The hash of earlier versions, for a well-formed command: a retry
    /// across an upgrade must still be a replay.
    #[test]
    fn fingerprints_of_well_formed_commands_did_not_change() {
        let (c, _, extra) = command_of(
            r#"{"id":"c","gateway":"paymentz","operation":"refund","payment_id":"1","amount":"10","metadata":{"order":"8812","n":[1,2.5]}}"#,
        );
        let old = serde_json::json!({
            "gateway": "paymentz", "account": "default", "operation": "refund",
            "payment_id": "1", "amount": "10.00", "currency": null, "from": null, "to": null,
            "metadata": {"order": "8812", "n": [1, 2.5]}, "raw_types": {},
        });
        assert_eq!(
            fingerprint(&c, &extra),
            hex::encode(Sha256::digest(old.to_string().as_bytes()))
        );
    }

    #[test]
    fn reply_to_may_not_name_the_workers_own_queues_or_reserved_names() {
        let topology = Topology {
            command_queue: "backoffice.commands".into(),
            result_exchange: "backoffice.events".into(),
            dead_letter_queue: "backoffice.commands.dead".into(),
        };
        for bad in [
            "backoffice.commands",
            "backoffice.commands.dead",
            "backoffice.events",
            "amq.direct",
            "amq.topic.x",
            "a\nb",
        ] {
            assert!(reply_to_problem(bad, &topology).is_some(), "{bad}");
        }
        for good in [
            "amq.gen-JzTY20BRgKO-HjmUJj0wLg",
            "amq.rabbitmq.reply-to",
            "amq.rabbitmq.reply-to.g1h2AA==.abc",
            "orders.results",
        ] {
            assert_eq!(reply_to_problem(good, &topology), None, "{good}");
        }
    }
}

/// What the consumer does after the intake commit.
pub enum Accepted {
    /// A new command, leased to this instance: drive it now.
    Run(Box<super::Job>),
    /// Nothing more to do here (stored for later, replayed, rejected, or a duplicate).
    Done,
}

/// The AMQP properties intake needs.
#[derive(Debug, Clone, Default)]
pub struct Envelope {
    pub redelivered: bool,
    pub reply_to: Option<String>,
    pub correlation_id: Option<String>,
}

/// A delivery read as a command, waiting for the intake commit.
pub struct Incoming {
    pub command: Box<Command>,
    /// Why the reading already refused it, if it did.
    pub rejected: Option<Rejected>,
    /// Fields beyond the contract's, for the fingerprint.
    pub extra: Vec<(String, String)>,
    pub envelope: Envelope,
}

impl Incoming {
    /// A reading that has a command (`None` for an unreadable one).
    pub fn of(reading: Reading, envelope: Envelope) -> Option<Incoming> {
        match reading {
            Reading::Command(command) => Some(Incoming {
                command,
                rejected: None,
                extra: Vec::new(),
                envelope,
            }),
            Reading::Rejected {
                command,
                rejected,
                extra,
            } => Some(Incoming {
                command,
                rejected: Some(rejected),
                extra,
                envelope,
            }),
            Reading::Unreadable(_) => None,
        }
    }
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
) -> Result<Vec<Accepted>, crate::store::StoreError> {
    use std::collections::HashSet;

    use crate::store::commands::{self, PaymentClaim};

    let prepared: Vec<(Result<ValidCommand, Rejected>, NewCommand)> = items
        .iter()
        .map(|item| {
            let (reply_to, correlation_id, envelope_problem) =
                checked_envelope(&item.envelope, &worker.topology);
            let validated = match (&item.rejected, envelope_problem) {
                (Some(rejected), _) => Err(rejected.clone()),
                (None, Some(problem)) => Err(problem),
                (None, None) => validate(&item.command, &worker.accounts),
            };
            let row = new_row(
                &item.command,
                fingerprint(&item.command, &item.extra),
                validated.as_ref().ok(),
                reply_to,
                correlation_id,
            );
            (validated, row)
        })
        .collect();

    let mut tx = worker.store.pool().begin().await?;
    let valid_rows: Vec<&NewCommand> = prepared
        .iter()
        .filter(|(v, _)| v.is_ok())
        .map(|(_, row)| row)
        .collect();
    let inserted =
        commands::insert_many(&mut tx, &valid_rows, worker.owner, worker.settings.lease).await?;
    // The slow path below locks existing commands (duplicates) one at a time.
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
    commands::lock_many(&mut tx, &existing).await?;

    // One claim per payment: a second command on the same payment in this
    // batch waits for the first like any other.
    let mut jobs: Vec<Option<super::Job>> = Vec::with_capacity(items.len());
    let mut claims = Vec::new();
    let mut keys_seen = HashSet::new();
    let mut first_of_payment = HashSet::new();
    for (validated, row) in &prepared {
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
    let granted =
        commands::claim_payments(&mut tx, &claims, worker.owner, worker.settings.lease).await?;
    let deferred: Vec<String> = jobs
        .iter()
        .flatten()
        .filter(|job| !granted.contains(&job.row.id))
        .map(|job| job.row.id.clone())
        .collect();
    commands::defer_many(
        &mut tx,
        &deferred,
        worker.owner,
        super::BUSY_PAYMENT_RECHECK,
    )
    .await?;

    // The recovery point of the first attempt, for those that can call at once.
    let immediate: Vec<commands::Intent<'_>> = jobs
        .iter()
        .flatten()
        .filter(|job| granted.contains(&job.row.id))
        .filter(|job| {
            let op = job.valid.request.operation;
            !(op.has_side_effect() && job.valid.gateway.snapshot_before(op))
        })
        .map(|job| commands::Intent {
            command_id: job.row.id.as_str(),
            before_snapshot: None,
            purpose: job.valid.request.operation.as_str(),
        })
        .collect();
    let rows = commands::record_intents(&mut tx, worker.owner, &immediate, &[]).await?;

    let mut results = Vec::with_capacity(items.len());
    let mut rejected = Vec::new();
    let mut replays = 0;
    for ((item, (validated, row)), job) in items.iter().zip(&prepared).zip(jobs) {
        match job {
            Some(mut job) if granted.contains(&job.row.id) => {
                if let Some(&(attempt_no, in_flight)) = rows.get(&job.row.id) {
                    job.row.phase = "calling".into();
                    job.row.attempts = attempt_no;
                    job.intent_row = Some(in_flight);
                }
                job.payment_leased = true;
                results.push(Accepted::Run(Box::new(job)));
            }
            Some(_) => results.push(Accepted::Done),
            None => {
                let outcome = accept_one(worker, &mut tx, item, validated, row).await?;
                match outcome {
                    SlowPath::Rejected => rejected.push(item),
                    SlowPath::Replayed => replays += 1,
                    SlowPath::ReplayPending => {}
                }
                results.push(Accepted::Done);
            }
        }
    }
    tx.commit().await?;

    if !deferred.is_empty() {
        // A payment held by a command that finished between our claim and our
        // commit would never wake these: look once more. The batch is
        // committed: a failure here is only logged (the deferred commands are
        // looked at again after BUSY_PAYMENT_RECHECK), never returned, or the
        // caller would take the batch again as if it had not been stored.
        if let Err(error) = wake_deferred(worker, items, &prepared, &deferred).await {
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
    Ok(results)
}

async fn wake_deferred(
    worker: &super::Worker,
    items: &[Incoming],
    prepared: &[(Result<ValidCommand, Rejected>, NewCommand)],
    deferred: &[String],
) -> Result<(), crate::store::StoreError> {
    use crate::store::commands;
    {
        let mut conn = worker.store.pool().acquire().await?;
        for job in items
            .iter()
            .zip(prepared)
            .filter(|(_, (_, row))| deferred.contains(&row.id))
        {
            let (_, (validated, row)) = job;
            if let Ok(valid) = validated {
                let key = super::payment_key(valid.request.payment_id.as_deref(), &row.id);
                if commands::wake_if_payment_free(&mut conn, &row.id, valid.gateway.name(), &key)
                    .await?
                {
                    worker.wake_scheduler.notify_one();
                }
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
) -> Result<SlowPath, crate::store::StoreError> {
    use crate::events::{event_for, Reported};
    use crate::outcome::{Outcome, RejectReason};
    use crate::store::{commands, outbox, StoreError};

    let exchange = &worker.topology.result_exchange;
    let reply_correlation = row.correlation_id.as_deref().or(Some(row.id.as_str()));
    if let Err(rejected) = validated {
        if commands::insert(&mut *tx, row, None).await? {
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
            outbox::enqueue(
                &mut *tx,
                exchange,
                &event,
                row.reply_to.as_deref(),
                reply_correlation,
            )
            .await?;
            tracing::info!(
                id = %Escaped::new(&row.id),
                reason = rejected.reason.as_str(),
                description = %Escaped::at_most(&rejected.description, 1024),
                "command rejected"
            );
            return Ok(SlowPath::Rejected);
        }
    }
    let existing = commands::lock(&mut *tx, &row.id)
        .await?
        .expect("the conflicting row exists");
    if existing.fingerprint != row.fingerprint {
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
        outbox::enqueue(
            &mut *tx,
            exchange,
            &event,
            row.reply_to.as_deref(),
            reply_correlation,
        )
        .await?;
        tracing::warn!(id = %Escaped::new(&row.id), "idempotency conflict: same id, different payload");
        Ok(SlowPath::Rejected)
    } else if existing.settled_result.is_some() || existing.result.is_some() {
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
        outbox::enqueue(
            &mut *tx,
            exchange,
            &event.replay(),
            row.reply_to.as_deref(),
            reply_correlation,
        )
        .await?;
        tracing::info!(id = %Escaped::new(&row.id), "duplicate command: replaying its stored result");
        Ok(SlowPath::Replayed)
    } else {
        // A producer's duplicate, or (rarely) our own delivery whose ack was
        // lost: either way one more replayed event, never a second call.
        commands::add_pending_replay(
            &mut *tx,
            &row.id,
            row.reply_to.as_deref(),
            reply_correlation,
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
    Store(#[from] crate::store::StoreError),
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
