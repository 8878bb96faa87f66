//! `backoffice-worker enqueue`: publishes one command to the worker's queue, as
//! a producer would, and optionally waits for its result event.
//!
//! It builds the command body of `shared/spec/messages.md` from the flags and
//! nothing more: validation is the worker's, so a bad command comes back
//! `rejected` exactly as it would for any producer. The publish is persistent
//! and confirmed by the broker before the id is printed. With `--wait` the
//! result comes back on an exclusive, server-named reply queue (the worker
//! copies every event of a command to its `reply_to`).

use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use lapin::types::ShortString;
use lapin::BasicProperties;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::flags::CommandFlags;
use super::{Broker, OpsError};
use crate::config;
use crate::outcome::Outcome;

/// Exit status when no result arrived within `--timeout`.
pub const EXIT_TIMEOUT: i32 = 3;
/// Exit status when the command could not be enqueued (or waited for).
pub const EXIT_ERROR: i32 = 4;

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:
  backoffice-worker enqueue --gateway paymentz --operation capture --payment-id 55361 --amount 10.00
  backoffice-worker enqueue --gateway paymentz --operation refund --payment-id 55361 --amount 5 \\
      --id order-8812-refund-1 --metadata '{\"order_id\":\"8812\"}' --wait --timeout 60s
  backoffice-worker enqueue --gateway praxis --operation cancel --payment-id 752856 --account eu --wait
  backoffice-worker enqueue --gateway paymentz --operation transaction_list --from 2026-11-01 --to 2026-11-22 --wait

Prints the command id (generated as enq-<uuid> when --id is absent). With --wait, the id goes to
stderr and the result event JSON to stdout. Re-running with the same --id never runs the command
twice: the worker replays its stored result.

Exit status: 0 when enqueued (without --wait) or succeeded; 1 when declined, failed or unknown;
2 when rejected; 3 when no result arrived within --timeout (the command is still queued or
running: look with `show <id>`); 4 when it could not be enqueued.")]
pub struct EnqueueArgs {
    /// The configuration file (default: $BACKOFFICE_CONFIG, then ./backoffice.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address the sandbox's own database and queues, as `run --sandbox` uses them.
    #[arg(long)]
    pub sandbox: bool,
    #[command(flatten)]
    pub command: CommandFlags,
    /// The idempotency key (default: a new enq-<uuid>).
    #[arg(long)]
    pub id: Option<String>,
    /// Which configured account to use (the worker's default: `default`).
    #[arg(long)]
    pub account: Option<String>,
    /// JSON echoed in the result event, e.g. '{"order_id":"8812"}'.
    #[arg(long)]
    pub metadata: Option<String>,
    /// Wait for the result event and print it.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits, e.g. 30s, 2m.
    #[arg(long, default_value = "30s", requires = "wait")]
    pub timeout: String,
}

/// The command body (JSON text), with the contract's field names; absent
/// flags are absent fields (the worker applies its own defaults, e.g.
/// `account`). `--metadata` goes in as typed: its numbers are never read
/// into a float and rounded.
pub fn command_body(args: &EnqueueArgs, id: &str) -> Result<String, OpsError> {
    #[derive(Serialize)]
    struct Body<'a> {
        id: &'a str,
        gateway: &'a str,
        operation: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        account: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        payment_id: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        amount: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        currency: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        from: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        to: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        metadata: Option<Box<RawValue>>,
    }
    let metadata = args
        .metadata
        .as_deref()
        .map(serde_json::from_str::<Box<RawValue>>)
        .transpose()
        .map_err(|e| OpsError::BadInput(format!("--metadata is not JSON: {e}")))?;
    let body = Body {
        id,
        gateway: &args.command.gateway,
        operation: &args.command.operation,
        account: args.account.as_deref(),
        payment_id: args.command.payment_id.as_deref(),
        amount: args.command.amount.as_deref(),
        currency: args.command.currency.as_deref(),
        from: args.command.from.as_deref(),
        to: args.command.to.as_deref(),
        metadata,
    };
    Ok(serde_json::to_string(&body).expect("JSON serializes"))
}

/// The exit status for a result event: by its `outcome`.
pub fn exit_code_for(event: &Value) -> i32 {
    match event
        .get("outcome")
        .and_then(Value::as_str)
        .and_then(Outcome::parse)
    {
        Some(Outcome::Succeeded) => 0,
        Some(Outcome::Rejected) => 2,
        _ => 1,
    }
}

pub async fn run(args: &EnqueueArgs) -> Result<i32, OpsError> {
    let timeout = config::parse_duration(&args.timeout)
        .map_err(|e| OpsError::BadInput(format!("--timeout: {e}")))?;
    let id = args
        .id
        .clone()
        .unwrap_or_else(|| format!("enq-{}", uuid::Uuid::new_v4()));
    if args.wait && !crate::broker::fits_short_string(&id) {
        return Err(OpsError::BadInput(
            "--id: longer than 255 bytes, it cannot be the correlation id --wait needs (the contract allows 128 characters)".into(),
        ));
    }
    let body = command_body(args, &id)?.into_bytes();
    let config = super::load_config(args.config.as_deref(), args.sandbox)?;
    let broker = Broker::connect(&config).await?;
    let result = publish_and_wait(&broker, &id, &body, args.wait.then_some(timeout)).await;
    broker.close().await;
    result
}

async fn publish_and_wait(
    broker: &Broker,
    id: &str,
    body: &[u8],
    wait: Option<Duration>,
) -> Result<i32, OpsError> {
    let properties = BasicProperties::default().with_content_type("application/json".into());
    let Some(timeout) = wait else {
        broker.publish_command(body, properties).await?;
        println!("{id}");
        return Ok(0);
    };
    // Consume before publishing, so that even an instant answer is not missed.
    let (queue, replies) = reply_queue(broker).await?;
    let properties = properties
        .with_reply_to(ShortString::from(queue.name().as_str()))
        .with_correlation_id(ShortString::from(id));
    broker.publish_command(body, properties).await?;
    eprintln!(
        "enqueued {id} on `{}`; waiting up to {} for its result",
        broker.topology.command_queue,
        humantime(timeout)
    );
    wait_for_result(replies, id, timeout).await
}

/// A queue of this process's own for the result, and its consumer.
async fn reply_queue(broker: &Broker) -> Result<(lapin::Queue, lapin::Consumer), OpsError> {
    let channel = broker.consume_channel();
    let queue = crate::broker::private_queue(channel).await?;
    let replies = crate::broker::consume_unacked(channel, &queue, "backoffice-enqueue").await?;
    Ok((queue, replies))
}

/// Waits for the result event of `id` (other answers on the queue are
/// passed over), prints it, and exits as its outcome says.
async fn wait_for_result(
    mut replies: lapin::Consumer,
    id: &str,
    timeout: Duration,
) -> Result<i32, OpsError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let delivery = match tokio::time::timeout_at(deadline, replies.next()).await {
            Err(_) => {
                eprintln!(
                    "no result for {id} within {}: it is queued or still running; look with `backoffice-worker show {id}`",
                    humantime(timeout)
                );
                return Ok(EXIT_TIMEOUT);
            }
            Ok(None) => {
                return Err(OpsError::Broker(
                    "the reply queue was closed before the result arrived".into(),
                ))
            }
            Ok(Some(Err(error))) => return Err(error.into()),
            Ok(Some(Ok(delivery))) => delivery,
        };
        let correlation = delivery
            .properties
            .correlation_id()
            .as_ref()
            .map(|c| c.as_str().to_string());
        if correlation.as_deref() != Some(id) {
            continue;
        }
        let event: Value = serde_json::from_slice(&delivery.data)
            .map_err(|e| OpsError::Broker(format!("the result for {id} is not JSON ({e})")))?;
        println!(
            "{}",
            serde_json::to_string_pretty(&event).expect("JSON serializes")
        );
        return Ok(exit_code_for(&event));
    }
}

fn humantime(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: EnqueueArgs,
    }

    fn args(line: &[&str]) -> EnqueueArgs {
        Cli::try_parse_from(std::iter::once("enqueue").chain(line.iter().copied()))
            .expect("valid flags")
            .args
    }

    #[test]
    fn the_body_has_the_contract_field_names_and_only_given_fields() {
        let a = args(&[
            "--gateway",
            "paymentz",
            "--operation",
            "refund",
            "--payment-id",
            "55361",
            "--amount",
            "10",
            "--currency",
            "EUR",
            "--metadata",
            r#"{"order_id":"8812"}"#,
        ]);
        let body: Value =
            serde_json::from_str(&command_body(&a, "order-8812-refund-1").unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "id": "order-8812-refund-1",
                "gateway": "paymentz",
                "operation": "refund",
                "payment_id": "55361",
                "amount": "10",
                "currency": "EUR",
                "metadata": {"order_id": "8812"}
            })
        );
        let list = args(&[
            "--gateway",
            "paymentz",
            "--operation",
            "transaction_list",
            "--from",
            "2026-11-01",
            "--to",
            "2026-11-22",
            "--account",
            "eu",
        ]);
        let body: Value = serde_json::from_str(&command_body(&list, "l1").unwrap()).unwrap();
        assert_eq!(body["from"], "2026-11-01");
        assert_eq!(body["to"], "2026-11-22");
        assert_eq!(body["account"], "eu");
        assert!(body.get("payment_id").is_none());
        assert!(body.get("amount").is_none());
    }

    #[test]
    fn metadata_must_be_json_but_is_not_otherwise_checked() {
        let bad = args(&["--gateway", "x", "--operation", "y", "--metadata", "{oops"]);
        let error = command_body(&bad, "c").unwrap_err().to_string();
        assert!(error.starts_with("--metadata is not JSON"), "{error}");
        // Not an object: the worker rejects it, not us.
        let odd = args(&["--gateway", "x", "--operation", "y", "--metadata", "[1]"]);
        let body: Value = serde_json::from_str(&command_body(&odd, "c").unwrap()).unwrap();
        assert_eq!(body["metadata"], serde_json::json!([1]));
        // Numbers go as typed.
        let big = args(&[
            "--gateway",
            "x",
            "--operation",
            "y",
            "--metadata",
            r#"{"n": 123456789012345678901234567890}"#,
        ]);
        assert!(command_body(&big, "c")
            .unwrap()
            .contains(r#""metadata":{"n": 123456789012345678901234567890}"#));
    }

    #[test]
    fn timeout_needs_wait() {
        assert!(Cli::try_parse_from([
            "enqueue",
            "--gateway",
            "x",
            "--operation",
            "y",
            "--timeout",
            "5s"
        ])
        .is_err());
    }

    #[test]
    fn exit_codes_follow_the_outcome() {
        let code = |o: &str| exit_code_for(&serde_json::json!({ "outcome": o }));
        assert_eq!(code("succeeded"), 0);
        assert_eq!(code("declined"), 1);
        assert_eq!(code("failed"), 1);
        assert_eq!(code("unknown"), 1);
        assert_eq!(code("rejected"), 2);
        assert_eq!(exit_code_for(&serde_json::json!({})), 1);
    }
}
