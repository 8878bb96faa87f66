//! The first stage: a delivery becomes a stored command, a replay, a rejection
//! or a dead letter, and is acknowledged only once that is committed.
//!
//! Reading is deliberately tolerant: anything with a usable `id` becomes a
//! command with a result (a bad field gives `rejected`, not silence). Only a
//! message that is not a JSON object, or has no usable `id`, is dead-lettered,
//! because without an id there is no one to answer.

use sha2::{Digest, Sha256};

use crate::command::{Command, ValidCommand};
use crate::gateways::registry::Accounts;
use crate::money::Amount;
use crate::outcome::Rejected;
use crate::store::commands::NewCommand;

/// The longest `id` the worker will store at all; a longer one is not usable.
pub const MAX_STORABLE_ID: usize = 1024;

/// What a message body turned out to be.
#[derive(Debug)]
pub enum Reading {
    /// A command with a usable id, valid or not.
    Command {
        command: Box<Command>,
        raw: serde_json::Value,
        /// A field of the wrong JSON type: reported as `rejected`.
        type_error: Option<Rejected>,
    },
    /// Not a command at all: the reason goes in the dead-letter header.
    Unreadable(String),
}

/// Reads a message body as a command.
pub fn read(body: &[u8]) -> Reading {
    let raw: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return Reading::Unreadable(format!("not JSON: {e}")),
    };
    let Some(object) = raw.as_object() else {
        return Reading::Unreadable("not a JSON object".into());
    };
    let id = match object.get("id") {
        None | Some(serde_json::Value::Null) => return Reading::Unreadable("no `id` field".into()),
        Some(serde_json::Value::String(s)) if s.is_empty() => {
            return Reading::Unreadable("`id` is empty".into())
        }
        Some(serde_json::Value::String(s)) if s.len() > MAX_STORABLE_ID => {
            return Reading::Unreadable(format!("`id` is longer than {MAX_STORABLE_ID} bytes"))
        }
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(_) => return Reading::Unreadable("`id` is not a string".into()),
    };
    let mut type_error = None;
    let mut text = |field: &'static str| -> Option<String> {
        match object.get(field) {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(other) => {
                if type_error.is_none() {
                    type_error = Some(Rejected::invalid(
                        field,
                        format!("must be a string, not {}", json_kind(other)),
                    ));
                }
                None
            }
        }
    };
    let command = Command {
        id: Some(id),
        gateway: text("gateway"),
        account: text("account"),
        operation: text("operation"),
        payment_id: text("payment_id"),
        amount: text("amount"),
        currency: text("currency"),
        from: text("from"),
        to: text("to"),
        metadata: object.get("metadata").filter(|m| !m.is_null()).cloned(),
    };
    Reading::Command {
        command: Box::new(command),
        raw,
        type_error,
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// A hash of what the command asks for, in a normal form: `"10"` and `"10.00"`
/// are the same amount, and an absent account is `default`. Two commands with
/// the same id and the same fingerprint are the same command.
pub fn fingerprint(command: &Command, raw: &serde_json::Value) -> String {
    let amount = command.amount.as_deref().map(|a| match Amount::parse(a) {
        Ok(amount) => amount.to_string(),
        Err(_) => a.to_string(),
    });
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
        "metadata": command.metadata,
        // Fields of the wrong type are part of what was asked.
        "raw_types": raw.as_object().map(|o| o.iter().filter(|(_, v)| !v.is_string() && !v.is_null() && !v.is_object()).map(|(k, v)| (k.clone(), v.clone())).collect::<serde_json::Map<_, _>>()),
    });
    hex::encode(Sha256::digest(normal.to_string().as_bytes()))
}

/// Validates a command read from a message.
pub fn validate(
    command: &Command,
    type_error: Option<Rejected>,
    accounts: &Accounts,
) -> Result<ValidCommand, Rejected> {
    if let Some(rejected) = type_error {
        return Err(rejected);
    }
    command.validate(accounts)
}

/// The row to store for a command.
pub fn new_row(
    command: &Command,
    raw: &serde_json::Value,
    valid: Option<&ValidCommand>,
    reply_to: Option<String>,
    correlation_id: Option<String>,
) -> NewCommand {
    NewCommand {
        id: command.id.clone().unwrap_or_default(),
        payload: raw.clone(),
        fingerprint: fingerprint(command, raw),
        gateway: command.gateway.clone(),
        account: Some(command.account_name().to_string()),
        operation: command.operation.clone(),
        payment_id: command.payment_id.clone(),
        amount_minor: valid
            .and_then(|v| v.request.amount)
            .and_then(|a| i64::try_from(a.minor()).ok()),
        currency: command.currency.clone(),
        reply_to,
        correlation_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command_of(body: &str) -> (Command, serde_json::Value, Option<Rejected>) {
        match read(body.as_bytes()) {
            Reading::Command {
                command,
                raw,
                type_error,
            } => (*command, raw, type_error),
            Reading::Unreadable(why) => panic!("unreadable: {why}"),
        }
    }

    #[test]
    fn unreadable_messages_say_why() {
        let why = |body: &str| match read(body.as_bytes()) {
            Reading::Unreadable(why) => why,
            Reading::Command { .. } => panic!("{body} was read as a command"),
        };
        assert!(why("not json").starts_with("not JSON"));
        assert_eq!(why("[1,2]"), "not a JSON object");
        assert_eq!(why(r#"{"gateway":"paymentz"}"#), "no `id` field");
        assert_eq!(why(r#"{"id":null}"#), "no `id` field");
        assert_eq!(why(r#"{"id":""}"#), "`id` is empty");
        assert_eq!(why(r#"{"id":42}"#), "`id` is not a string");
        assert!(why(&format!(r#"{{"id":"{}"}}"#, "x".repeat(2000))).contains("longer"));
    }

    #[test]
    fn a_field_of_the_wrong_type_is_a_rejection_not_a_dead_letter() {
        let (command, _, type_error) =
            command_of(r#"{"id":"c1","gateway":"paymentz","amount":10}"#);
        assert_eq!(command.id.as_deref(), Some("c1"));
        let rejected = type_error.expect("amount is a number");
        assert_eq!(
            rejected.description,
            "amount: must be a string, not a number"
        );
    }

    #[test]
    fn fingerprints_ignore_spelling_but_not_meaning() {
        let fp = |body: &str| {
            let (c, raw, _) = command_of(body);
            fingerprint(&c, &raw)
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
    pub raw: serde_json::Value,
    pub type_error: Option<Rejected>,
    pub envelope: Envelope,
}

/// Stores a batch of commands read from deliveries, in one transaction, and
/// says for each what follows. New valid commands are inserted together,
/// leased here, their payments claimed together, and (when they need no
/// before-snapshot) their first attempt's recovery point recorded with them;
/// the rest (rejections, replays, conflicts, duplicates) go one by one. The
/// caller acks the deliveries after this returns.
pub async fn accept_batch(
    w: &super::Worker,
    items: &[Incoming],
) -> Result<Vec<Accepted>, crate::store::StoreError> {
    use std::collections::HashSet;

    use crate::store::commands::{self, PaymentClaim};

    let prepared: Vec<(Result<ValidCommand, Rejected>, NewCommand)> = items
        .iter()
        .map(|item| {
            let validated = validate(&item.command, item.type_error.clone(), &w.accounts);
            let row = new_row(
                &item.command,
                &item.raw,
                validated.as_ref().ok(),
                item.envelope.reply_to.clone(),
                item.envelope.correlation_id.clone(),
            );
            (validated, row)
        })
        .collect();

    let mut tx = w.store.pool().begin().await?;
    let valid_rows: Vec<&NewCommand> = prepared
        .iter()
        .filter(|(v, _)| v.is_ok())
        .map(|(_, row)| row)
        .collect();
    let inserted = commands::insert_many(&mut tx, &valid_rows, w.owner, w.settings.lease).await?;
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
                let job = super::Job::fresh(row, valid.clone(), w.owner, w.settings.lease);
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
    let granted = commands::claim_payments(&mut tx, &claims, w.owner, w.settings.lease).await?;
    let deferred: Vec<String> = jobs
        .iter()
        .flatten()
        .filter(|job| !granted.contains(&job.row.id))
        .map(|job| job.row.id.clone())
        .collect();
    commands::defer_many(&mut tx, &deferred, w.owner, super::BUSY_PAYMENT_RECHECK).await?;

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
    let rows = commands::record_intents(&mut tx, w.owner, &immediate, &[]).await?;

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
                let outcome = accept_one(w, &mut tx, item, validated, row).await?;
                match outcome {
                    One::Rejected => rejected.push(item),
                    One::Replayed => replays += 1,
                    One::Nothing => {}
                }
                results.push(Accepted::Done);
            }
        }
    }
    tx.commit().await?;

    if !deferred.is_empty() {
        // A payment held by a command that finished between our claim and our
        // commit would never wake these: look once more.
        let mut conn = w.store.pool().acquire().await?;
        for job in items
            .iter()
            .zip(&prepared)
            .filter(|(_, (_, row))| deferred.contains(&row.id))
        {
            let (_, (validated, row)) = job;
            if let Ok(valid) = validated {
                let key = valid
                    .request
                    .payment_id
                    .clone()
                    .unwrap_or_else(|| format!("list:{}", row.id));
                if commands::wake_if_payment_free(&mut conn, &row.id, valid.gateway.name(), &key)
                    .await?
                {
                    w.wake_scheduler.notify_one();
                }
            }
        }
    }
    if !rejected.is_empty() || replays > 0 {
        w.wake_outbox.notify_one();
    }
    for item in rejected {
        w.metrics.command_decided(
            item.command.gateway.as_deref().unwrap_or(""),
            item.command.operation.as_deref().unwrap_or(""),
            "rejected",
        );
    }
    (0..replays).for_each(|_| w.metrics.replayed());
    Ok(results)
}

/// What [`accept_one`] did.
enum One {
    Rejected,
    Replayed,
    Nothing,
}

/// The slow path of intake, inside the batch's transaction: an invalid command
/// (stored `rejected` with its event), or an id seen before (conflict, replay,
/// or a pending replay while it still runs).
async fn accept_one(
    w: &super::Worker,
    tx: &mut sqlx::PgConnection,
    item: &Incoming,
    validated: &Result<ValidCommand, Rejected>,
    row: &NewCommand,
) -> Result<One, crate::store::StoreError> {
    use super::executor::{event_for, Reported};
    use crate::outcome::{Outcome, RejectReason};
    use crate::store::{commands, outbox};

    let exchange = &w.topology.result_exchange;
    let reply_correlation = item
        .envelope
        .correlation_id
        .as_deref()
        .or(Some(row.id.as_str()));
    if let Err(rejected) = validated {
        if commands::insert(&mut *tx, row, None).await? {
            let event = event_for(
                &row.id,
                &item.raw,
                Outcome::Rejected,
                Some(rejected.reason),
                None,
                0,
                Reported {
                    description: Some(rejected.description.clone()),
                    ..Reported::default()
                },
            );
            let body = serde_json::to_value(&event).expect("serializable");
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
            tracing::info!(id = %row.id, reason = rejected.reason.as_str(), description = %rejected.description, "command rejected");
            return Ok(One::Rejected);
        }
    }
    let existing = commands::lock(&mut *tx, &row.id)
        .await?
        .expect("the conflicting row exists");
    if existing.fingerprint != row.fingerprint {
        let event = event_for(
            &row.id,
            &item.raw,
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
        tracing::warn!(id = %row.id, "idempotency conflict: same id, different payload");
        Ok(One::Rejected)
    } else if let Some(stored) = existing
        .settled_result
        .as_ref()
        .or(existing.result.as_ref())
    {
        let event: crate::events::ResultEvent =
            serde_json::from_value(stored.clone()).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        outbox::enqueue(
            &mut *tx,
            exchange,
            &event.replay(),
            row.reply_to.as_deref(),
            reply_correlation,
        )
        .await?;
        tracing::info!(id = %row.id, "duplicate command: replaying its stored result");
        Ok(One::Replayed)
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
        tracing::info!(id = %row.id, redelivered = item.envelope.redelivered, "duplicate of a command still running: it will be replayed when decided");
        Ok(One::Nothing)
    }
}

/// Keeps an unreadable message: recorded in Postgres, then published to the
/// dead-letter queue with its original body and a header saying why.
pub async fn dead_letter(
    w: &super::Worker,
    body: &[u8],
    properties: &serde_json::Value,
    reason: &str,
) -> Result<(), DeadLetterError> {
    use crate::broker::{Outgoing, REASON_HEADER};
    let publisher = w
        .publisher
        .borrow()
        .clone()
        .ok_or(DeadLetterError::NoBroker)?;
    let id = {
        let mut conn = w.store.pool().acquire().await?;
        crate::store::dead_letters::insert(&mut conn, reason, body, properties).await?
    };
    let mut message = Outgoing::json("", &w.topology.dead_letter_queue, body.to_vec());
    message.content_type = "application/octet-stream";
    if let Some(ct) = properties.get("content_type").and_then(|v| v.as_str()) {
        message.content_type = if ct == "application/json" {
            "application/json"
        } else {
            "application/octet-stream"
        };
    }
    message.message_id = properties
        .get("message_id")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    message.correlation_id = properties
        .get("correlation_id")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    message.headers = vec![
        (REASON_HEADER.to_string(), reason.to_string()),
        ("x-backoffice-dead-letter-id".to_string(), id.to_string()),
    ];
    publisher
        .publish(&message)
        .await
        .map_err(|e| DeadLetterError::Publish(e.to_string()))?;
    tracing::warn!(
        dead_letter = id,
        reason,
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
