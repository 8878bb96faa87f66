//! `backoffice-worker dead-letters`: the messages the worker could not read as
//! a command (not JSON, no usable `id`, too large), listed from Postgres a
//! page at a time, shown one by one, and put back on the command queue once
//! whatever made them unreadable is fixed.
//!
//! A list never loads whole bodies: it shows the start of each (the queue
//! may hold many large messages), newest first, `--limit` at a time, and the
//! next page is `--before` the last id shown. `show <id>` prints one whole.
//! A requeue publishes the original body with its original properties to the
//! command queue, waits for the broker's confirm, and only then marks the row
//! `requeued_at`, all under a lock on the row: a dead letter is requeued at
//! most once, even by two operators at the same time. If the worker still
//! cannot read it, it becomes a new dead letter (a new row). A body the
//! database kept only in part (it was larger than `[amqp] max_command_bytes`)
//! cannot be requeued from here; the dead-letter queue has it whole.

use std::path::PathBuf;

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::BasicProperties;
use serde::Serialize;
use serde_json::Value;

use super::{Broker, Clipper, OpsError, Table};
use crate::events::format_timestamp;
use crate::store::dead_letters::{self, DeadLetterRow, DeadLetterSummary};
use crate::store::reports;

/// The header a requeued message carries: the dead letter it came from.
pub const REQUEUED_FROM_HEADER: &str = "x-backoffice-requeued-from";

/// How much of each body a list shows (`--json` included).
pub const PREVIEW_BYTES: usize = 256;
/// The largest page.
pub const MAX_LIMIT: i64 = 1000;

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:
  backoffice-worker dead-letters list
  backoffice-worker dead-letters list --limit 20 --before 1234
  backoffice-worker dead-letters list --all --json
  backoffice-worker dead-letters show 42
  backoffice-worker dead-letters requeue 42
  backoffice-worker dead-letters requeue --all")]
pub struct DeadLettersArgs {
    /// The configuration file (default: $BACKOFFICE_CONFIG, then ./backoffice.toml).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Address the sandbox's own database and queues, as `run --sandbox` uses them.
    #[arg(long, global = true)]
    pub sandbox: bool,
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Action {
    /// List the dead letters not requeued yet (all of them with --all), newest first, a page at a time.
    #[command(after_help = "Examples:
  backoffice-worker dead-letters list
  backoffice-worker dead-letters list --limit 20 --before 1234
  backoffice-worker dead-letters list --all --json | jq '.[] | {id, reason}'

Each body is shown by its first bytes only (`dead-letters show <id>` prints one whole). When
there may be more, the last line says which `--before` shows the next page.

Exit status: 0, or 1 when the database cannot be reached.")]
    List {
        /// Include the ones already requeued.
        #[arg(long)]
        all: bool,
        /// A JSON array, with the start of each body.
        #[arg(long)]
        json: bool,
        /// How many to show (at most 1000).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=MAX_LIMIT))]
        limit: i64,
        /// Only dead letters with an id below this (the next page).
        #[arg(long)]
        before: Option<i64>,
    },
    /// Print one dead letter whole: its reason, properties and body.
    #[command(after_help = "Examples:
  backoffice-worker dead-letters show 42
  backoffice-worker dead-letters show 42 --json

Exit status: 0, or 1 when there is no such dead letter or the database cannot be reached.")]
    Show {
        /// The dead letter's id (from `dead-letters list`).
        id: i64,
        /// One JSON document, the body whole.
        #[arg(long)]
        json: bool,
    },
    /// Publish a dead letter's original body to the command queue again (or every waiting one).
    #[command(
        after_help = "Examples:
  backoffice-worker dead-letters requeue 42
  backoffice-worker dead-letters requeue --all

Each dead letter is requeued at most once: one already requeued is refused, and so is one whose
body was too large to keep whole (take it from the dead-letter queue instead).

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

/// One dead letter, as `list --json` and `show --json` print it.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    pub id: i64,
    pub reason: String,
    pub received_at: String,
    pub requeued_at: Option<String>,
    /// The size of the body as it arrived.
    pub size: i64,
    /// The body (in a list: its first bytes) as text when it is UTF-8 (else
    /// `null`, and `body_hex` has it).
    pub body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_hex: Option<String>,
    /// Whether `body` is only the start of the body.
    pub body_cut: bool,
    pub properties: Value,
}

impl Listed {
    fn new(summary: &DeadLetterSummary, shown: &[u8], whole: bool) -> Listed {
        // A preview may end inside a UTF-8 character: cut back to the last
        // whole one rather than call the body binary.
        let text = match std::str::from_utf8(shown) {
            Ok(text) => Some(text.to_string()),
            Err(e) if !whole && e.error_len().is_none() => {
                Some(String::from_utf8_lossy(&shown[..e.valid_up_to()]).into_owned())
            }
            Err(_) => None,
        };
        Listed {
            id: summary.id,
            reason: summary.reason.clone(),
            received_at: format_timestamp(summary.received_at),
            requeued_at: summary.requeued_at.map(format_timestamp),
            size: summary.body_size,
            body_hex: text.is_none().then(|| hex::encode(shown)),
            body: text,
            body_cut: (shown.len() as i64) < summary.body_size,
            properties: summary.properties.clone(),
        }
    }

    pub fn of_summary(summary: &DeadLetterSummary) -> Listed {
        Listed::new(summary, &summary.preview, false)
    }

    pub fn of_row(row: &DeadLetterRow) -> Listed {
        let summary = DeadLetterSummary {
            id: row.id,
            reason: row.reason.clone(),
            preview: Vec::new(),
            body_size: row.body_size,
            properties: row.properties.clone(),
            received_at: row.received_at,
            requeued_at: row.requeued_at,
        };
        Listed::new(&summary, &row.body, true)
    }
}

pub async fn run(args: &DeadLettersArgs) -> Result<i32, OpsError> {
    let config = super::load_config(args.config.as_deref(), args.sandbox)?;
    let mut conn = super::connect_database(&config).await?;
    match &args.action {
        Action::List {
            all,
            json,
            limit,
            before,
        } => {
            let rows =
                dead_letters::list(&mut conn, *all, *before, *limit, PREVIEW_BYTES as i32).await?;
            let listed: Vec<Listed> = rows.iter().map(Listed::of_summary).collect();
            if *json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&listed).expect("JSON serializes")
                );
            } else {
                print!("{}", render(&listed, *all, *limit));
            }
            Ok(0)
        }
        Action::Show { id, json } => {
            let row = dead_letters::get(&mut conn, *id)
                .await?
                .ok_or_else(|| OpsError::NotFound(format!("no dead letter with id {id}")))?;
            let listed = Listed::of_row(&row);
            if *json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&listed).expect("JSON serializes")
                );
            } else {
                print!("{}", render_one(&listed));
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

/// Requeues every dead letter not requeued yet, oldest first, reading their
/// ids a page at a time and each body only when it is published; prints how
/// many. Only those there when it starts: one that the worker dead-letters
/// again meanwhile is a new row, not requeued in a loop.
async fn requeue_all(conn: &mut sqlx::PgConnection, broker: &Broker) -> Result<i32, OpsError> {
    let mut done = 0usize;
    let mut skipped = Vec::new();
    let mut after = 0i64;
    let up_to = dead_letters::last_id(conn).await?;
    loop {
        let page = dead_letters::waiting_ids(conn, after, up_to, 500).await?;
        let Some(&last) = page.last() else { break };
        after = last;
        for id in page {
            match requeue_one(conn, broker, id).await {
                Ok(()) => done += 1,
                // Requeued by someone else since we listed it: not ours to count.
                Err(OpsError::Refused(why)) if why.contains("already requeued") => {}
                Err(OpsError::Refused(_)) => skipped.push(id),
                Err(error) => {
                    println!(
                        "requeued {done} dead letters to `{}` before an error",
                        broker.topology.command_queue
                    );
                    return Err(error);
                }
            }
        }
    }
    println!(
        "requeued {done} dead letter{} to `{}`",
        if done == 1 { "" } else { "s" },
        broker.topology.command_queue
    );
    if !skipped.is_empty() {
        println!(
            "not requeued, their bodies were too large to keep whole (take them from the dead-letter queue): {skipped:?}"
        );
    }
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
    requeue_in(&mut tx, broker, id).await?;
    tx.commit().await.map_err(|error| {
        OpsError::Incomplete(format!(
            "dead letter {id} was published to the command queue, but marking it requeued failed ({error}): do not requeue it again"
        ))
    })
}

/// [`requeue_one`] inside the caller's transaction (the console writes its
/// audit row in it): locks the row, refuses one already requeued or cut,
/// publishes it and marks it requeued. The caller commits.
pub async fn requeue_in(
    tx: &mut sqlx::PgConnection,
    broker: &Broker,
    id: i64,
) -> Result<(), OpsError> {
    let row = reports::lock_dead_letter(tx, id)
        .await?
        .ok_or_else(|| OpsError::NotFound(format!("no dead letter with id {id}")))?;
    if let Some(at) = row.requeued_at {
        return Err(OpsError::Refused(format!(
            "dead letter {id} was already requeued at {}; refusing to publish it twice",
            format_timestamp(at)
        )));
    }
    if row.body_cut() {
        return Err(OpsError::Refused(format!(
            "dead letter {id} was {} bytes, too large to keep whole: only its first {} bytes are here; its whole body is on the dead-letter queue",
            row.body_size,
            row.body.len()
        )));
    }
    broker
        .publish_command(&row.body, original_properties(&row))
        .await?;
    dead_letters::mark_requeued(tx, id).await.map_err(|error| {
        OpsError::Incomplete(format!(
            "dead letter {id} was published to the command queue, but marking it requeued failed ({error}): do not requeue it again"
        ))
    })?;
    Ok(())
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

pub fn render(listed: &[Listed], all: bool, limit: i64) -> String {
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
            clip.clip(
                l.properties
                    .get("content_type")
                    .and_then(Value::as_str)
                    .unwrap_or("-"),
                40,
            ),
            l.size.to_string(),
            l.requeued_at.clone().unwrap_or_else(|| "-".into()),
            body,
        ]);
    }
    let mut out = table.render("");
    out.push_str(&format!(
        "\n{} dead letter{}, newest first\n",
        listed.len(),
        if listed.len() == 1 { "" } else { "s" }
    ));
    if listed.len() as i64 == limit {
        let last = listed.last().expect("not empty").id;
        out.push_str(&format!(
            "there may be more: `dead-letters list --before {last}` shows the next page\n"
        ));
    }
    if clip.clipped || listed.iter().any(|l| l.body_cut) {
        out.push_str(
            "(long values are cut and end with …; `dead-letters show <id>` shows one whole)\n",
        );
    }
    out
}

/// One dead letter for people: everything, the body whole (escaped, so
/// that it cannot play tricks on the terminal).
pub fn render_one(l: &Listed) -> String {
    let mut out = format!("Dead letter {}\n", l.id);
    let fields = [
        ("received", l.received_at.clone()),
        (
            "requeued",
            l.requeued_at.clone().unwrap_or_else(|| "-".into()),
        ),
        (
            "reason",
            crate::telemetry::Escaped::at_most(&l.reason, usize::MAX).to_string(),
        ),
        ("size", format!("{} bytes", l.size)),
        ("properties", l.properties.to_string()),
    ];
    for (label, value) in fields {
        out.push_str(&format!("  {label:<10}  {value}\n"));
    }
    out.push_str("\nBody");
    if l.body_cut {
        out.push_str(
            " (only its start was kept: the message was larger than [amqp] max_command_bytes)",
        );
    }
    out.push('\n');
    match (&l.body, &l.body_hex) {
        (Some(text), _) => {
            for line in text.lines() {
                out.push_str(&format!(
                    "  {}\n",
                    crate::telemetry::Escaped::at_most(line, usize::MAX)
                ));
            }
        }
        (None, Some(hex)) => out.push_str(&format!("  (binary, hex) {hex}\n")),
        (None, None) => {}
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
            body_size: body.len() as i64,
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
        let listed = Listed::of_row(&row(serde_json::json!({}), &[0xff, 0x00, 0x41]));
        assert_eq!(listed.body, None);
        assert_eq!(listed.body_hex.as_deref(), Some("ff0041"));
        let text = render(&[listed], false, 50);
        assert!(text.contains("(binary) ff0041"), "{text}");
        assert!(text.contains("1 dead letter, newest first\n"), "{text}");
    }

    #[test]
    fn a_preview_cut_inside_a_character_is_still_text() {
        let body = "é".repeat(10);
        let summary = DeadLetterSummary {
            id: 1,
            reason: "r".into(),
            preview: body.as_bytes()[..5].to_vec(),
            body_size: body.len() as i64,
            properties: serde_json::json!({}),
            received_at: time::macros::datetime!(2026-11-22 10:15:03.120 UTC),
            requeued_at: None,
        };
        let listed = Listed::of_summary(&summary);
        assert_eq!(listed.body.as_deref(), Some("éé"));
        assert!(listed.body_cut);
        let text = render(&[listed], false, 1);
        assert!(text.contains("--before 1"), "{text}");
    }
}
