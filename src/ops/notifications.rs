//! `backoffice-worker notifications list|show|release`: the notifications
//! the worker received, what was decided about each, and a person's release
//! of a hold as a capture or a cancel.
//!
//! A release is the automated command (`auto.{gateway}.{account}.{payment_id}`,
//! `"rule": "operator"`), created in one transaction with the closing of the
//! hold (who released it is recorded); the running worker's scheduler picks
//! it up and runs it like any other command.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::{or_dash, time_text, Clipper, OpsError, Table};
use crate::config::{self, Config};
use crate::notifications::rules::{Action, OPERATOR};
use crate::store::notifications::{self as store, NotificationRow};
use crate::telemetry::Escaped;

fn duration_arg(text: &str) -> Result<Duration, String> {
    config::parse_duration(text)
}

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:
  backoffice-worker notifications list --since 1h
  backoffice-worker notifications list --status held
  backoffice-worker notifications show 42
  backoffice-worker notifications release 42 --action capture --by alice

Statuses: acted (a command was made), held (waiting for a person or its deadline), ignored
(not an authorization, refused, or evidence only; the reason says), unverified (its signature
did not verify: the gateway is being asked).")]
pub struct NotificationsArgs {
    /// The configuration file (default: $BACKOFFICE_CONFIG, then ./backoffice.toml).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Address the sandbox's own database, as `run --sandbox` uses it.
    #[arg(long, global = true)]
    pub sandbox: bool,
    /// One JSON document instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: NotificationsCmd,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum NotificationsCmd {
    /// The notifications received, newest first.
    List {
        /// Only those received within this long: 30m, 1h, 2d (default: all time).
        #[arg(long, value_parser = duration_arg)]
        since: Option<Duration>,
        /// Only those with this decision.
        #[arg(long, value_enum)]
        status: Option<Status>,
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=100_000))]
        limit: i64,
    },
    /// One notification: its body, verification, decision, and the command with its outcome.
    Show { id: i64 },
    /// Release a hold as a capture or a cancel (recorded with who released it).
    Release {
        id: i64,
        #[arg(long, value_enum)]
        action: ReleaseAction,
        /// Who releases it (default: $USER).
        #[arg(long)]
        by: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Status {
    Held,
    Acted,
    Ignored,
    Unverified,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Held => "held",
            Status::Acted => "acted",
            Status::Ignored => "ignored",
            Status::Unverified => "unverified",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReleaseAction {
    Capture,
    Cancel,
}

/// One notification as `--json` prints it.
#[derive(Debug, Serialize)]
pub struct Shown {
    pub id: i64,
    pub gateway: String,
    pub account: String,
    pub payment_id: Option<String>,
    pub status: Option<String>,
    pub amount_minor: Option<i64>,
    pub currency: Option<String>,
    pub verified: bool,
    pub problem: Option<String>,
    pub decision: String,
    pub reason: Option<String>,
    pub rule: Option<String>,
    pub matched: Option<serde_json::Value>,
    pub command_id: Option<String>,
    pub command_outcome: Option<String>,
    pub hold_deadline: Option<String>,
    pub hold_closed_by: Option<String>,
    /// Inquiries of the gateway made about it (an unverified notification).
    pub inquiries: i32,
    /// Times its inquiry was put off by the account's rate limit.
    pub rate_limited: i32,
    /// What a verified notification proves: `capture` or `cancel`.
    pub evidence: Option<String>,
    pub settled_command: Option<String>,
    pub repeats: i32,
    pub answer_status: i32,
    pub answer_body: String,
    pub received_at: String,
    /// The body as received (lossy UTF-8, for reading; `show` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

pub(crate) fn shown(row: &NotificationRow, outcome: Option<String>, with_body: bool) -> Shown {
    Shown {
        id: row.id,
        gateway: row.gateway.clone(),
        account: row.account.clone(),
        payment_id: row.payment_id.clone(),
        status: row.status.clone(),
        amount_minor: row.amount_minor,
        currency: row.currency.clone(),
        verified: row.verified,
        problem: row.problem.clone(),
        decision: row.decision.clone(),
        reason: row.reason.clone(),
        rule: row.rule.clone(),
        matched: row.matched.clone(),
        command_id: row.command_id.clone(),
        command_outcome: outcome,
        hold_deadline: row.hold_deadline.map(crate::events::format_timestamp),
        hold_closed_by: row.hold_closed_by.clone(),
        inquiries: row.inquiries,
        rate_limited: row.rate_limited,
        evidence: row.evidence.clone(),
        settled_command: row.settled_command.clone(),
        repeats: row.repeats,
        answer_status: row.answer_status,
        answer_body: row.answer_body.clone(),
        received_at: crate::events::format_timestamp(row.received_at),
        body: with_body.then(|| String::from_utf8_lossy(&row.body).into_owned()),
    }
}

/// The config, with the built-in sandbox accounts when `--sandbox` has no file.
fn load(explicit: Option<&Path>, sandbox: bool) -> Result<Config, OpsError> {
    if sandbox && matches!(config::locate(explicit), Err(config::ConfigError::NotFound)) {
        let config = Config::parse(
            Path::new("<built-in sandbox config>"),
            crate::worker::SANDBOX_CONFIG,
            |name| std::env::var(name).ok(),
        )?;
        let config = crate::worker::sandboxed(config)?;
        eprintln!("note: sandbox: {}", crate::worker::sandbox_names(&config));
        return Ok(config);
    }
    super::load_config(explicit, sandbox)
}

/// Releases the open hold `id` as `action` in `tx`: the automated command
/// with rule `"operator"` and the hold closed `by` whom. The CLI and the
/// console both release through here; the caller commits (the console with
/// its audit row in the same transaction). `Ok(Err(why))` is a refusal (not
/// an open hold, the account gone); nothing was changed.
pub async fn release_in(
    ctx: &crate::notifications::intake::Context,
    tx: &mut sqlx::PgConnection,
    id: i64,
    action: Action,
    by: &str,
) -> Result<Result<String, String>, OpsError> {
    let row = store::lock(tx, id)
        .await?
        .ok_or_else(|| OpsError::NotFound(format!("no notification {id}")))?;
    Ok(crate::notifications::jobs::release(ctx, tx, &row, action, OPERATOR, by).await?)
}

pub async fn run(args: &NotificationsArgs) -> Result<i32, OpsError> {
    let config = load(args.config.as_deref(), args.sandbox)?;
    let mut conn = super::connect_database(&config).await?;
    match &args.command {
        NotificationsCmd::List {
            since,
            status,
            limit,
        } => list(&mut conn, *since, *status, *limit, args.json).await,
        NotificationsCmd::Show { id } => show(&mut conn, *id, args.json).await,
        NotificationsCmd::Release { id, action, by } => {
            drop(conn);
            release(&config, *id, *action, by.as_deref(), args.json).await
        }
    }
}

/// `notifications list`.
async fn list(
    conn: &mut sqlx::PgConnection,
    since: Option<Duration>,
    status: Option<Status>,
    limit: i64,
    json: bool,
) -> Result<i32, OpsError> {
    let rows = store::list(
        &mut *conn,
        since.unwrap_or(Duration::from_secs(100 * 365 * 86_400)),
        status.map(Status::as_str),
        limit,
    )
    .await?;
    if json {
        let all: Vec<Shown> = rows.iter().map(|r| shown(r, None, false)).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&all).expect("serializable")
        );
        return Ok(0);
    }
    if rows.is_empty() {
        println!("no notifications");
        return Ok(0);
    }
    let mut clip = Clipper::default();
    let mut table = Table::new(&[
        "ID", "RECEIVED", "GATEWAY", "ACCOUNT", "PAYMENT", "STATUS", "VERIFIED", "DECISION",
        "RULE", "COMMAND", "REASON",
    ]);
    for r in &rows {
        table.row(vec![
            r.id.to_string(),
            time_text(Some(r.received_at)),
            r.gateway.clone(),
            clip.clip(&r.account, 24),
            clip.clip(r.payment_id.as_deref().unwrap_or("-"), 20),
            clip.clip(r.status.as_deref().unwrap_or("-"), 16),
            if r.verified { "yes" } else { "no" }.into(),
            decision_text(r),
            or_dash(r.rule.as_deref()),
            clip.clip(r.command_id.as_deref().unwrap_or("-"), 48),
            clip.clip(r.reason.as_deref().unwrap_or(""), 60),
        ]);
    }
    print!("{}", table.render(""));
    if clip.clipped {
        println!("(cut short: --json has every value whole)");
    }
    Ok(0)
}

/// The DECISION column of `notifications list`: the decision, and what
/// an operator reads next to it: a hold closed, what a notification was
/// evidence of, how often an unverified one's inquiry was rate-limited.
fn decision_text(r: &NotificationRow) -> String {
    let mut text = r.decision.clone();
    if r.decision == "held" && r.hold_closed_at.is_some() {
        text.push_str(" (closed)");
    }
    if let Some(evidence) = &r.evidence {
        text.push_str(&format!(" (evidence: {evidence})"));
    }
    if r.rate_limited > 0 {
        text.push_str(&format!(" (rate-limited {}x)", r.rate_limited));
    }
    text
}

/// `notifications show`.
async fn show(conn: &mut sqlx::PgConnection, id: i64, json: bool) -> Result<i32, OpsError> {
    let row = store::get(&mut *conn, id)
        .await?
        .ok_or_else(|| OpsError::NotFound(format!("no notification {id}")))?;
    let outcome = match &row.command_id {
        Some(command) => crate::store::commands::get(&mut *conn, command)
            .await?
            .map(|c| match (c.outcome, c.settled_outcome) {
                (Some(o), Some(s)) => format!("{o}, settled {s}"),
                (Some(o), None) => o.to_string(),
                (None, _) => format!("{} (no outcome yet)", c.state),
            }),
        None => None,
    };
    let s = shown(&row, outcome, true);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&s).expect("serializable")
        );
        return Ok(0);
    }
    print_shown(&s);
    Ok(0)
}

/// The readable form of `notifications show`.
fn print_shown(s: &Shown) {
    println!("Notification {} ({} / {})", s.id, s.gateway, s.account);
    println!("  received     {}", s.received_at);
    println!(
        "  payment      {} status {} amount {} {}",
        or_dash(s.payment_id.as_deref()),
        or_dash(s.status.as_deref()),
        s.amount_minor
            .map(|a| a.to_string())
            .unwrap_or_else(|| "-".into()),
        or_dash(s.currency.as_deref())
    );
    println!(
        "  verified     {}{}",
        if s.verified { "yes" } else { "no" },
        s.problem
            .as_deref()
            .map(|p| format!(" ({p})"))
            .unwrap_or_default()
    );
    println!("  answered     HTTP {} {}", s.answer_status, s.answer_body);
    if s.inquiries > 0 || s.rate_limited > 0 {
        println!(
            "  inquiries    {} made, {} put off by the rate limit",
            s.inquiries, s.rate_limited
        );
    }
    println!("  repeats      {}", s.repeats);
    println!("  decision     {}", s.decision);
    println!("  rule         {}", or_dash(s.rule.as_deref()));
    if let Some(matched) = &s.matched {
        println!("  matched on   {matched}");
    }
    println!("  reason       {}", or_dash(s.reason.as_deref()));
    if let Some(deadline) = &s.hold_deadline {
        println!("  deadline     {deadline}");
    }
    if let Some(by) = &s.hold_closed_by {
        println!("  hold closed  by {by}");
    }
    println!(
        "  command      {}{}",
        or_dash(s.command_id.as_deref()),
        s.command_outcome
            .as_deref()
            .map(|o| format!(" ({o})"))
            .unwrap_or_default()
    );
    if let Some(evidence) = &s.evidence {
        println!("  evidence     of a {evidence}");
    }
    if let Some(settled) = &s.settled_command {
        println!("  settled      {settled}");
    }
    println!(
        "  body         {}",
        Escaped::at_most(s.body.as_deref().unwrap_or(""), 4096)
    );
}

/// `notifications release`: through [`release_in`], as the console does.
async fn release(
    config: &Config,
    id: i64,
    action: ReleaseAction,
    by: Option<&str>,
    json: bool,
) -> Result<i32, OpsError> {
    let who = by
        .map(str::to_string)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "operator".into());
    let by = format!("operator:{}", Escaped::at_most(&who, 64));
    let accounts = config.clients(&crate::gateways::http::HttpTransport::new(
        config.http.clone(),
    ));
    let ctx = crate::notifications::intake::Context {
        store: crate::store::Store::connect_lazy(&config.database)?,
        accounts,
        automation: config.automation.clone(),
        readers: crate::notifications::listener::readers(&config.accounts)?,
        result_exchange: config.amqp.result_exchange.clone(),
        metrics: std::sync::Arc::new(crate::metrics::Metrics::new()),
        worker: None,
    };
    let action = match action {
        ReleaseAction::Capture => Action::Capture,
        ReleaseAction::Cancel => Action::Cancel,
    };
    let mut tx = ctx.store.pool().begin().await?;
    let released = release_in(&ctx, &mut tx, id, action, &by).await?;
    match released {
        Ok(command) => {
            tx.commit().await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"notification": id, "command_id": command, "action": action.as_str(), "by": by})
                );
            } else {
                println!(
                    "released notification {id} as a {}: command {command} (the worker runs it; `backoffice-worker show {command}` follows it)",
                    action.as_str()
                );
            }
            Ok(0)
        }
        Err(why) => Err(OpsError::Refused(why)),
    }
}
