//! `backoffice-worker dead-letters`: the messages the worker could not read as
//! a command (not JSON, no usable `id`), listed from Postgres, and put back
//! on the command queue once whatever made them unreadable is fixed.
//!
//! A requeue publishes the original body with its original properties to the
//! command queue, waits for the broker's confirm, and only then marks the row
//! `requeued_at`, all under a lock on the row: a dead letter is requeued at
//! most once, even by two operators at the same time. If the worker still
//! cannot read it, it becomes a new dead letter (a new row).

use std::path::PathBuf;

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::BasicProperties;
use serde::Serialize;
use serde_json::Value;

use super::{Broker, Clipper, OpsError, Table};
use crate::events::format_timestamp;
use crate::store::dead_letters::{self, DeadLetterRow};
use crate::store::reports;

/// The header a requeued message carries: the dead letter it came from.
pub const REQUEUED_FROM_HEADER: &str = "x-backoffice-requeued-from";

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:
  backoffice-worker dead-letters list
  backoffice-worker dead-letters list --all --json
  backoffice-worker dead-letters requeue 42
  backoffice-worker dead-letters requeue --all")]
pub struct DeadLettersArgs {
    /// The configuration file (default: $BACKOFFICE_CONFIG, then ./backoffice.toml).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Action {
    /// List the dead letters not requeued yet (all of them with --all).
    #[command(after_help = "Examples:
  backoffice-worker dead-letters list
  backoffice-worker dead-letters list --all --json | jq '.[] | {id, reason}'

Exit status: 0, or 1 when the database cannot be reached.")]
    List {
        /// Include the ones already requeued.
        #[arg(long)]
        all: bool,
        /// A JSON array, bodies whole.
        #[arg(long)]
        json: bool,
    },
    /// Publish a dead letter's original body to the command queue again (or every waiting one).
    #[command(
        after_help = "Examples:
  backoffice-worker dead-letters requeue 42
  backoffice-worker dead-letters requeue --all

Each dead letter is requeued at most once: one already requeued is refused.

Exit status: 0 when requeued, 1 when refused, unknown, or the database or broker cannot be reached.",
        group(clap::ArgGroup::new("which").required(true).args(["id", "all"]))
    )]
    Requeue {
        /// The dead letter's id (from `dead-letters list`).
        id: Option<i64>,
        /// Every dead letter not requeued yet.
        #[arg(long)]
        all: bool,
    },
}

/// One dead letter, as `list --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    pub id: i64,
    pub reason: String,
    pub received_at: String,
    pub requeued_at: Option<String>,
    pub size: usize,
    /// The body as text when it is UTF-8 (else `null`, and `body_hex` has it).
    pub body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_hex: Option<String>,
    pub properties: Value,
}

impl Listed {
    fn of(row: &DeadLetterRow) -> Listed {
        let text = std::str::from_utf8(&row.body).ok().map(str::to_string);
        Listed {
            id: row.id,
            reason: row.reason.clone(),
            received_at: format_timestamp(row.received_at),
            requeued_at: row.requeued_at.map(format_timestamp),
            size: row.body.len(),
            body_hex: text.is_none().then(|| hex::encode(&row.body)),
            body: text,
            properties: row.properties.clone(),
        }
    }
}

pub async fn run(args: &DeadLettersArgs) -> Result<i32, OpsError> {
    let config = super::load_config(args.config.as_deref())?;
    let mut conn = super::connect_database(&config).await?;
    match &args.action {
        Action::List { all, json } => {
            let rows = dead_letters::list(&mut conn, *all).await?;
            let listed: Vec<Listed> = rows.iter().map(Listed::of).collect();
            if *json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&listed).expect("JSON serializes")
                );
            } else {
                print!("{}", render(&listed, *all));
            }
            Ok(0)
        }
        Action::Requeue { id, all } => {
            let broker = Broker::connect(&config).await?;
            let result = if *all {
                requeue_all(&mut conn, &broker).await
            } else {
                let id = id.expect("clap requires an id or --all");
                requeue_one(&mut conn, &broker, id).await.map(|()| {
                    println!(
                        "requeued dead letter {id} to `{}`",
                        broker.topology.command_queue
                    );
                    0
                })
            };
            broker.close().await;
            result
        }
    }
}

/// Requeues every dead letter not requeued yet; prints how many.
async fn requeue_all(conn: &mut sqlx::PgConnection, broker: &Broker) -> Result<i32, OpsError> {
    let pending = dead_letters::list(conn, false).await?;
    let mut done = 0usize;
    for row in &pending {
        match requeue_one(conn, broker, row.id).await {
            Ok(()) => done += 1,
            // Requeued by someone else since we listed it: not ours to count.
            Err(OpsError::Refused(_)) => {}
            Err(error) => {
                println!(
                    "requeued {done} of {} dead letters to `{}` before an error",
                    pending.len(),
                    broker.topology.command_queue
                );
                return Err(error);
            }
        }
    }
    println!(
        "requeued {done} dead letter{} to `{}`",
        if done == 1 { "" } else { "s" },
        broker.topology.command_queue
    );
    Ok(0)
}

/// Publishes one dead letter again and marks it requeued, under a lock on
/// its row; refuses one already requeued.
async fn requeue_one(
    conn: &mut sqlx::PgConnection,
    broker: &Broker,
    id: i64,
) -> Result<(), OpsError> {
    use sqlx::Connection;
    let mut tx = conn.begin().await?;
    let row = reports::lock_dead_letter(&mut tx, id)
        .await?
        .ok_or_else(|| OpsError::NotFound(format!("no dead letter with id {id}")))?;
    if let Some(at) = row.requeued_at {
        return Err(OpsError::Refused(format!(
            "dead letter {id} was already requeued at {}; refusing to publish it twice",
            format_timestamp(at)
        )));
    }
    broker
        .publish_command(&row.body, original_properties(&row))
        .await?;
    let marked = async {
        dead_letters::mark_requeued(&mut tx, id).await?;
        tx.commit().await
    };
    marked.await.map_err(|error| {
        OpsError::Incomplete(format!(
            "dead letter {id} was published to the command queue, but marking it requeued failed ({error}): do not requeue it again"
        ))
    })
}

/// The properties the message had when it arrived, as far as they matter to
/// the worker: content type, and `reply_to` / `correlation_id` so that a
/// producer still waiting gets its answer. The worker's own dead-letter
/// headers are not carried over; the new one says where the message came from.
pub fn original_properties(row: &DeadLetterRow) -> BasicProperties {
    let text = |name: &str| {
        row.properties
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(ShortString::from)
    };
    let mut properties = BasicProperties::default();
    if let Some(v) = text("content_type") {
        properties = properties.with_content_type(v);
    }
    if let Some(v) = text("message_id") {
        properties = properties.with_message_id(v);
    }
    if let Some(v) = text("correlation_id") {
        properties = properties.with_correlation_id(v);
    }
    if let Some(v) = text("reply_to") {
        properties = properties.with_reply_to(v);
    }
    let mut headers = FieldTable::default();
    headers.insert(
        REQUEUED_FROM_HEADER.into(),
        AMQPValue::LongString(LongString::from(row.id.to_string())),
    );
    properties.with_headers(headers)
}

pub fn render(listed: &[Listed], all: bool) -> String {
    if listed.is_empty() {
        return if all {
            "no dead letters\n".into()
        } else {
            "no dead letters waiting (`--all` includes the requeued ones)\n".into()
        };
    }
    let mut clip = Clipper::default();
    let mut table = Table::new(&[
        "ID",
        "RECEIVED",
        "REASON",
        "CONTENT TYPE",
        "SIZE",
        "REQUEUED",
        "BODY",
    ]);
    for l in listed {
        let body = match &l.body {
            Some(text) => clip.clip(text, 60),
            None => format!(
                "(binary) {}",
                clip.clip(l.body_hex.as_deref().unwrap_or(""), 40)
            ),
        };
        table.row(vec![
            l.id.to_string(),
            l.received_at.clone(),
            clip.clip(&l.reason, 50),
            l.properties
                .get("content_type")
                .and_then(Value::as_str)
                .unwrap_or("-")
                .to_string(),
            l.size.to_string(),
            l.requeued_at.clone().unwrap_or_else(|| "-".into()),
            body,
        ]);
    }
    let mut out = table.render("");
    out.push_str(&format!(
        "\n{} dead letter{}\n",
        listed.len(),
        if listed.len() == 1 { "" } else { "s" }
    ));
    if clip.clipped {
        out.push_str("(long values are cut and end with …; `--json` shows them whole)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(properties: Value, body: &[u8]) -> DeadLetterRow {
        DeadLetterRow {
            id: 7,
            reason: "not JSON: expected value at line 1 column 1".into(),
            body: body.to_vec(),
            properties,
            received_at: time::macros::datetime!(2026-11-22 10:15:03.120 UTC),
            requeued_at: None,
        }
    }

    #[test]
    fn a_requeue_keeps_the_original_properties_and_says_where_it_came_from() {
        let r = row(
            serde_json::json!({"content_type": "text/plain", "message_id": "m1",
                "correlation_id": null, "reply_to": "amq.gen-1", "delivery_mode": 2,
                "headers": {"x-backoffice-reason": "old"}}),
            b"hello",
        );
        let p = original_properties(&r);
        assert_eq!(
            p.content_type().as_ref().map(|s| s.as_str()),
            Some("text/plain")
        );
        assert_eq!(p.message_id().as_ref().map(|s| s.as_str()), Some("m1"));
        assert_eq!(p.reply_to().as_ref().map(|s| s.as_str()), Some("amq.gen-1"));
        assert!(p.correlation_id().is_none());
        let headers = p.headers().clone().unwrap();
        assert!(headers.inner().get("x-backoffice-reason").is_none());
        assert_eq!(
            headers.inner().get(REQUEUED_FROM_HEADER),
            Some(&AMQPValue::LongString(LongString::from("7")))
        );
        // No content type then, none now.
        let bare = original_properties(&row(serde_json::json!({}), b"x"));
        assert!(bare.content_type().is_none());
    }

    #[test]
    fn binary_bodies_are_shown_as_hex() {
        let listed = Listed::of(&row(serde_json::json!({}), &[0xff, 0x00, 0x41]));
        assert_eq!(listed.body, None);
        assert_eq!(listed.body_hex.as_deref(), Some("ff0041"));
        let text = render(&[listed], false);
        assert!(text.contains("(binary) ff0041"), "{text}");
        assert!(text.contains("1 dead letter\n"), "{text}");
    }
}
