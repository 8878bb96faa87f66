//! `backoffice-worker show <id>`: everything the worker knows about one
//! command: what was asked, where it stands, every HTTP exchange it made (as
//! recorded, secrets already removed), and every event it published.
//!
//! The readable form fits a terminal: values are cut to one line and the
//! output says so when it cut anything; `--json` has every value whole.

use std::path::PathBuf;

use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{or_dash, Asked, Clipper, OpsError, Table};
use crate::events::format_timestamp;
use crate::outcome::Outcome;
use crate::store::attempts::{self, AttemptRow};
use crate::store::commands::{self, CommandRow};
use crate::store::lifecycle::{CommandState, Phase};
use crate::store::outbox;

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:
  backoffice-worker show order-8812-refund-1
  backoffice-worker show order-8812-refund-1 --json | jq '.attempts[] | {purpose, http_status, classification}'

Exit status: 0 when the command exists, 1 otherwise (or when the database cannot be reached).")]
pub struct ShowArgs {
    /// The configuration file (default: $BACKOFFICE_CONFIG, then ./backoffice.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address the sandbox's own database and queues, as `run --sandbox` uses them.
    #[arg(long)]
    pub sandbox: bool,
    /// The command's id.
    pub id: String,
    /// One JSON object (command, attempts, events), every value whole.
    #[arg(long)]
    pub json: bool,
}

/// What `show --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub command: CommandView,
    pub attempts: Vec<AttemptRow>,
    pub events: Vec<EventView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CommandView {
    pub id: String,
    #[serde(flatten)]
    pub asked: Asked,
    pub state: CommandState,
    pub phase: Phase,
    pub outcome: Option<Outcome>,
    pub reason: Option<String>,
    pub settled_outcome: Option<Outcome>,
    pub attempts: i32,
    pub reconcile_checks: i32,
    pub pending_replays: i32,
    pub received_at: String,
    pub decided_at: Option<String>,
    pub settled_at: Option<String>,
    pub next_run_at: Option<String>,
    pub lease_owner: Option<Uuid>,
    pub lease_until: Option<String>,
    pub reply_to: Option<String>,
    pub correlation_id: Option<String>,
    pub fingerprint: String,
    pub payload: Value,
    pub before_snapshot: Option<Value>,
    pub result: Option<Value>,
    pub settled_result: Option<Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EventView {
    pub message_id: Uuid,
    pub published_at: Option<String>,
    pub body: Value,
}

fn stamp(at: Option<OffsetDateTime>) -> Option<String> {
    at.map(format_timestamp)
}

impl CommandView {
    fn of(row: CommandRow) -> CommandView {
        CommandView {
            asked: Asked::new(
                row.gateway,
                row.account,
                row.operation,
                row.payment_id,
                row.amount_minor,
                row.currency,
            ),
            id: row.id,
            state: row.state,
            phase: row.phase,
            outcome: row.outcome,
            reason: row.reason,
            settled_outcome: row.settled_outcome,
            attempts: row.attempts,
            reconcile_checks: row.reconcile_checks,
            pending_replays: row.pending_replays,
            received_at: format_timestamp(row.received_at),
            decided_at: stamp(row.decided_at),
            settled_at: stamp(row.settled_at),
            next_run_at: stamp(row.next_run_at),
            lease_owner: row.lease_owner,
            lease_until: stamp(row.lease_until),
            reply_to: row.reply_to,
            correlation_id: row.correlation_id,
            fingerprint: row.fingerprint,
            payload: serde_json::from_str(&row.payload).unwrap_or(Value::Null),
            before_snapshot: row.before_snapshot,
            result: row.result,
            settled_result: row.settled_result,
        }
    }
}

/// Reads the command, its attempts and its events.
pub async fn report(conn: &mut sqlx::PgConnection, id: &str) -> Result<Report, OpsError> {
    let row = commands::get(conn, id).await?.ok_or_else(|| {
        OpsError::NotFound(format!(
            "no command with id `{id}` (it was never received, or it was not readable and went to the dead letters: see `dead-letters list`)"
        ))
    })?;
    let attempts = attempts::for_command(conn, id).await?;
    let events = outbox::for_command(conn, id)
        .await?
        .into_iter()
        .map(|(message_id, body, published_at)| EventView {
            message_id,
            published_at: stamp(published_at),
            body,
        })
        .collect();
    Ok(Report {
        command: CommandView::of(row),
        attempts,
        events,
    })
}

pub async fn run(args: &ShowArgs) -> Result<i32, OpsError> {
    let config = super::load_config(args.config.as_deref(), args.sandbox)?;
    let mut conn = super::connect_database(&config).await?;
    let report = report(&mut conn, &args.id).await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("JSON serializes")
        );
    } else {
        print!("{}", render(&report));
    }
    Ok(0)
}

/// Longest value shown on one line of the readable form.
const WIDE: usize = 160;

fn compact(value: &Value) -> String {
    serde_json::to_string(value).expect("JSON serializes")
}

/// The readable form.
pub fn render(report: &Report) -> String {
    let mut clip = Clipper::default();
    let mut out = String::new();

    out.push_str(&format!("Command {}\n", report.command.id));
    let fields = command_fields(&report.command, &mut clip);
    let label_width = fields.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    for (label, value) in &fields {
        out.push_str(&format!("  {label:<label_width$}  {value}\n"));
    }

    out.push_str(&format!("\nAttempts ({})\n", report.attempts.len()));
    if report.attempts.is_empty() {
        out.push_str("  none: nothing was sent to the gateway\n");
    } else {
        out.push_str(&attempts_table(&report.attempts).render("  "));
        for (n, a) in report.attempts.iter().enumerate() {
            out.push_str(&format!(
                "\n  #{} {} {} {}\n",
                n + 1,
                or_dash(a.purpose.as_deref()),
                or_dash(a.method.as_deref()),
                or_dash(a.url.as_deref()),
            ));
            for (label, value) in attempt_lines(a, &mut clip) {
                out.push_str(&format!("      {label:<11}  {value}\n"));
            }
        }
    }

    out.push_str(&format!("\nEvents ({})\n", report.events.len()));
    if report.events.is_empty() {
        out.push_str("  none yet\n");
    } else {
        out.push_str(&events_table(&report.events).render("  "));
    }
    if clip.clipped {
        out.push_str("\n(long values are cut and end with …; `--json` shows them whole)\n");
    }
    out
}

/// The command's lines of the readable form: what was asked, where it
/// stands, what the gateway said.
fn command_fields(c: &CommandView, clip: &mut Clipper) -> Vec<(&'static str, String)> {
    let decided = c.settled_result.as_ref().or(c.result.as_ref());
    let said = |name: &str| decided.and_then(|r| r.get(name)).and_then(Value::as_str);
    let description = said("description");
    let gateway_said: Vec<String> = [
        ("status", said("gateway_status")),
        ("code", said("gateway_code")),
        ("reference", said("reference")),
    ]
    .into_iter()
    .filter_map(|(label, value)| value.map(|v| format!("{label} {v}")))
    .collect();
    let amount = match (&c.asked.amount, &c.asked.currency) {
        (Some(a), Some(cur)) => format!("{a} {cur}"),
        (Some(a), None) => a.clone(),
        (None, _) => or_dash(c.payload.get("amount").and_then(Value::as_str)),
    };
    let outcome = match (&c.outcome, &c.settled_outcome) {
        (Some(first), Some(settled)) => format!("{first}, settled as {settled}"),
        (Some(Outcome::Unknown), None) => {
            format!(
                "unknown, not settled yet ({} reconciliation checks so far)",
                c.reconcile_checks
            )
        }
        (Some(first), None) => first.to_string(),
        (None, _) => "not decided yet".into(),
    };
    let mut fields = vec![
        (
            "gateway",
            format!(
                "{} (account {})",
                or_dash(c.asked.gateway.as_deref()),
                or_dash(c.asked.account.as_deref())
            ),
        ),
        ("operation", or_dash(c.asked.operation.as_deref())),
        ("payment id", or_dash(c.asked.payment_id.as_deref())),
        ("amount", amount),
        ("state", format!("{} (phase {})", c.state, c.phase)),
        ("outcome", outcome),
    ];
    if let Some(reason) = &c.reason {
        fields.push(("reason", reason.clone()));
    }
    if !gateway_said.is_empty() {
        fields.push(("gateway said", gateway_said.join(", ")));
    }
    if let Some(description) = description {
        fields.push(("description", clip.clip(description, WIDE)));
    }
    fields.push(("attempts", c.attempts.to_string()));
    fields.push(("received", c.received_at.clone()));
    fields.push(("decided", or_dash(c.decided_at.as_deref())));
    if c.settled_at.is_some() {
        fields.push(("settled", or_dash(c.settled_at.as_deref())));
    }
    if matches!(c.state, CommandState::Queued | CommandState::Unsettled) {
        fields.push(("next run", or_dash(c.next_run_at.as_deref())));
    }
    if c.state == CommandState::Running {
        fields.push(("lease until", or_dash(c.lease_until.as_deref())));
    }
    if let Some(reply_to) = &c.reply_to {
        fields.push(("reply to", reply_to.clone()));
    }
    fields.push(("payload", clip.clip(&compact(&c.payload), WIDE)));
    fields
}

/// One row per attempt; long values are cut here without a note, as the
/// detail below shows them (and notes its own cuts).
fn attempts_table(attempts: &[AttemptRow]) -> Table {
    let mut table = Table::new(&[
        "#",
        "STARTED",
        "ATTEMPT",
        "KIND",
        "PURPOSE",
        "STATUS",
        "HTTP",
        "SIGNATURE SENT",
        "VERIFIED",
        "LATENCY",
        "CLASSIFICATION",
        "ERROR",
    ]);
    for (n, a) in attempts.iter().enumerate() {
        table.row(vec![
            (n + 1).to_string(),
            format_timestamp(a.started_at),
            a.attempt_no.to_string(),
            a.kind.to_string(),
            or_dash(a.purpose.as_deref()),
            a.status.to_string(),
            a.http_status.map_or("-".into(), |s| s.to_string()),
            // Shown whole in the detail below: this cut needs no note.
            a.signature_sent
                .as_deref()
                .map_or("-".into(), |s| Clipper::default().clip(s, 12)),
            match a.signature_verified {
                Some(true) => "yes".into(),
                Some(false) => "NO".into(),
                None => "-".into(),
            },
            a.latency_ms.map_or("-".into(), |ms| format!("{ms:.0} ms")),
            or_dash(a.classification.map(|c| c.as_str())),
            // Also repeated in the detail below, where a cut is noted.
            a.error
                .as_deref()
                .map_or("-".into(), |e| Clipper::default().clip(e, 60)),
        ]);
    }
    table
}

/// The detail of one attempt: what was sent and answered.
fn attempt_lines(a: &AttemptRow, clip: &mut Clipper) -> Vec<(&'static str, String)> {
    let mut lines: Vec<(&str, String)> = Vec::new();
    if let Some(request) = &a.request {
        lines.push(("sent", clip.clip(&compact(request), WIDE)));
    }
    if let Some(sig) = &a.signature_sent {
        lines.push(("signature", sig.clone()));
    }
    if let Some(status) = a.http_status {
        lines.push(("http status", status.to_string()));
    }
    if let Some(body) = &a.response_body {
        lines.push(("answer", clip.clip(body, WIDE)));
    }
    if let Some(sig) = &a.signature_received {
        let verified = match a.signature_verified {
            Some(true) => "verified",
            Some(false) => "DID NOT VERIFY",
            None => "not checked",
        };
        lines.push((
            "answer sig",
            format!("{} ({verified})", clip.clip(sig, WIDE)),
        ));
    }
    if let Some(error) = &a.error {
        lines.push(("error", clip.clip(error, WIDE)));
    }
    if lines.is_empty() {
        lines.push(("", "nothing recorded yet (in flight)".into()));
    }
    lines
}

fn events_table(events: &[EventView]) -> Table {
    let mut table = Table::new(&[
        "MESSAGE ID",
        "OUTCOME",
        "REASON",
        "REPLAYED",
        "RECONCILED",
        "OCCURRED",
        "PUBLISHED",
    ]);
    for e in events {
        let field = |name: &str| e.body.get(name).and_then(Value::as_str);
        let flag = |name: &str| {
            if e.body.get(name).and_then(Value::as_bool) == Some(true) {
                "yes".to_string()
            } else {
                "no".to_string()
            }
        };
        table.row(vec![
            e.message_id.to_string(),
            or_dash(field("outcome")),
            or_dash(field("reason")),
            flag("replayed"),
            flag("reconciled"),
            or_dash(field("occurred_at")),
            e.published_at
                .clone()
                .unwrap_or_else(|| "not yet (in the outbox)".into()),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateways::Classification;
    use crate::store::lifecycle::{AttemptKind, AttemptStatus};

    fn command(result: Option<Value>) -> CommandView {
        CommandView {
            id: "c1".into(),
            asked: Asked {
                gateway: Some("paymentz".into()),
                account: Some("default".into()),
                operation: Some("refund".into()),
                payment_id: Some("55361".into()),
                amount: Some("10.00".into()),
                currency: Some("EUR".into()),
            },
            state: CommandState::Done,
            phase: Phase::Ready,
            outcome: Some(Outcome::Succeeded),
            reason: None,
            settled_outcome: None,
            attempts: 1,
            reconcile_checks: 0,
            pending_replays: 0,
            received_at: "2026-11-22T10:15:03.120Z".into(),
            decided_at: Some("2026-11-22T10:15:03.320Z".into()),
            settled_at: None,
            next_run_at: None,
            lease_owner: None,
            lease_until: None,
            reply_to: None,
            correlation_id: None,
            fingerprint: "f".into(),
            payload: r#"{"id": "c1"}"#.into(),
            before_snapshot: None,
            result,
            settled_result: None,
        }
    }

    fn attempt(purpose: &str, body: &str) -> AttemptRow {
        AttemptRow {
            id: 1,
            attempt_no: 1,
            kind: AttemptKind::Operation,
            status: AttemptStatus::Completed,
            purpose: Some(purpose.into()),
            method: Some("POST".into()),
            url: Some("http://gw/payments/55361".into()),
            request: Some(serde_json::json!({"paymentType": purpose})),
            signature_sent: Some("0123456789abcdef0123456789abcdef".into()),
            http_status: Some(200),
            response_body: Some(body.into()),
            signature_received: None,
            signature_verified: None,
            latency_ms: Some(12.4),
            error: None,
            classification: Some(Classification::Succeeded),
            started_at: time::macros::datetime!(2026-11-22 10:15:03.200 UTC),
        }
    }

    #[test]
    fn the_readable_form_has_the_outcome_the_attempts_and_a_note_when_it_cut() {
        let report = Report {
            command: command(Some(serde_json::json!({
                "gateway_status": "reversed", "reference": "55362", "description": "ok"
            }))),
            attempts: vec![attempt("RF", &"x".repeat(500))],
            events: vec![],
        };
        let text = render(&report);
        assert!(text.contains("\n  outcome       succeeded\n"), "{text}");
        assert!(
            text.contains("  gateway said  status reversed, reference 55362\n"),
            "{text}"
        );
        assert!(text.contains("  amount        10.00 EUR\n"), "{text}");
        assert!(
            text.contains("RF  POST") || text.contains("#1 RF POST"),
            "{text}"
        );
        assert!(text.contains("  none yet\n"), "{text}");
        assert!(text.contains("`--json` shows them whole"), "{text}");
        assert!(!text.contains(&"x".repeat(200)), "the body is cut");

        let short = Report {
            command: command(None),
            attempts: vec![attempt("RF", "{}")],
            events: vec![],
        };
        assert!(!render(&short).contains("--json"), "nothing was cut");
    }

    #[test]
    fn an_unsettled_unknown_and_a_command_without_attempts_say_so() {
        let mut c = command(None);
        c.outcome = Some(Outcome::Unknown);
        c.state = CommandState::Unsettled;
        c.reconcile_checks = 2;
        let text = render(&Report {
            command: c,
            attempts: vec![],
            events: vec![],
        });
        assert!(
            text.contains("unknown, not settled yet (2 reconciliation checks so far)"),
            "{text}"
        );
        assert!(
            text.contains("none: nothing was sent to the gateway"),
            "{text}"
        );
        assert!(text.contains("  next run"), "{text}");
    }
}
