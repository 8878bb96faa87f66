//! `backoffice-worker list --outcome ...`: the commands that need a person.
//!
//! `unknown`: the gateway may or may not have done it and reconciliation has
//! not settled it yet; `failed`: known not done, retries spent (including an
//! `unknown` that reconciliation settled as failed); `rejected`: the command
//! itself was invalid. Each is listed by its current outcome, most recently
//! decided first (see `store::reports::needing_attention`).

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;

use super::{or_dash, time_text, Asked, Clipper, OpsError, Table};
use crate::config;
use crate::events::format_timestamp;
use crate::outcome::Outcome;
use crate::store::lifecycle::CommandState;
use crate::store::reports::{self, AttentionRow};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Attention {
    Unknown,
    Failed,
    Rejected,
}

impl Attention {
    pub fn as_str(self) -> &'static str {
        match self {
            Attention::Unknown => "unknown",
            Attention::Failed => "failed",
            Attention::Rejected => "rejected",
        }
    }
}

fn duration_arg(text: &str) -> Result<Duration, String> {
    config::parse_duration(text)
}

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:
  backoffice-worker list --outcome unknown
  backoffice-worker list --outcome failed --since 1h
  backoffice-worker list --outcome rejected --since 2d --limit 20 --json | jq -r '.[].id'

--since counts back from now to when the command reached that outcome (for an unknown later
settled as failed, when it was settled). Without --since, all time.

Exit status: 0 (also when nothing is listed), 1 when the database cannot be reached.")]
pub struct ListArgs {
    /// The configuration file (default: $BACKOFFICE_CONFIG, then ./backoffice.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address the sandbox's own database and queues, as `run --sandbox` uses them.
    #[arg(long)]
    pub sandbox: bool,
    /// Which commands: unknown (not settled yet), failed or rejected.
    #[arg(long, value_enum)]
    pub outcome: Attention,
    /// Only those that reached the outcome within this long: 30m, 1h, 2d.
    #[arg(long, value_parser = duration_arg)]
    pub since: Option<Duration>,
    /// At most this many, most recent first.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=100_000))]
    pub limit: i64,
    /// A JSON array, every value whole.
    #[arg(long)]
    pub json: bool,
}

/// One listed command, as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    pub id: String,
    pub outcome: Option<Outcome>,
    pub settled_outcome: Option<Outcome>,
    pub reason: Option<String>,
    pub description: Option<String>,
    #[serde(flatten)]
    pub asked: Asked,
    pub state: CommandState,
    pub attempts: i32,
    pub reconcile_checks: i32,
    pub received_at: String,
    pub decided_at: Option<String>,
    pub settled_at: Option<String>,
}

impl Listed {
    fn of(row: AttentionRow) -> Listed {
        let description = row
            .settled_result
            .as_ref()
            .or(row.result.as_ref())
            .and_then(|r| r.get("description"))
            .and_then(Value::as_str)
            .map(str::to_string);
        Listed {
            asked: Asked::new(
                row.gateway,
                row.account,
                row.operation,
                row.payment_id,
                row.amount_minor,
                row.currency,
            ),
            id: row.id,
            outcome: row.outcome,
            settled_outcome: row.settled_outcome,
            reason: row.reason,
            description,
            state: row.state,
            attempts: row.attempts,
            reconcile_checks: row.reconcile_checks,
            received_at: format_timestamp(row.received_at),
            decided_at: row.decided_at.map(format_timestamp),
            settled_at: row.settled_at.map(format_timestamp),
        }
    }
}

pub async fn run(args: &ListArgs) -> Result<i32, OpsError> {
    let since = match args.since {
        Some(d) => Some(
            OffsetDateTime::now_utc()
                .checked_sub(
                    time::Duration::try_from(d)
                        .map_err(|_| OpsError::BadInput("--since is too long".into()))?,
                )
                .ok_or_else(|| OpsError::BadInput("--since is too long".into()))?,
        ),
        None => None,
    };
    let config = super::load_config(args.config.as_deref(), args.sandbox)?;
    let mut conn = super::connect_database(&config).await?;
    let rows =
        reports::needing_attention(&mut conn, args.outcome.as_str(), since, args.limit).await?;
    let listed: Vec<Listed> = rows.into_iter().map(Listed::of).collect();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&listed).expect("JSON serializes")
        );
    } else {
        print!("{}", render(&listed, args, since));
    }
    Ok(0)
}

pub fn render(listed: &[Listed], args: &ListArgs, since: Option<OffsetDateTime>) -> String {
    let scope = match since {
        Some(at) => format!(" since {}", time_text(Some(at))),
        None => String::new(),
    };
    let what = match args.outcome {
        Attention::Unknown => "unknown and not settled yet",
        Attention::Failed => "failed",
        Attention::Rejected => "rejected",
    };
    if listed.is_empty() {
        return format!("no commands {what}{scope}\n");
    }
    let mut clip = Clipper::default();
    let mut table = Table::new(&[
        "ID",
        "DECIDED",
        "GATEWAY",
        "ACCOUNT",
        "OPERATION",
        "PAYMENT",
        "AMOUNT",
        "OUTCOME",
        "ATTEMPTS",
        "WHY",
    ]);
    for l in listed {
        let outcome = match (&l.outcome, &l.settled_outcome) {
            (Some(first), Some(settled)) => format!("{settled} (was {first})"),
            (first, _) => first.map_or_else(|| "-".into(), |o| o.to_string()),
        };
        let amount = match (&l.asked.amount, &l.asked.currency) {
            (Some(a), Some(c)) => format!("{a} {c}"),
            (a, _) => or_dash(a.as_deref()),
        };
        let why = match (&l.reason, &l.description) {
            (Some(r), Some(d)) => format!("{r}: {d}"),
            (Some(r), None) => r.clone(),
            (None, d) => or_dash(d.as_deref()),
        };
        table.row(vec![
            clip.clip(&l.id, 48),
            or_dash(l.settled_at.as_deref().or(l.decided_at.as_deref())),
            clip.clip(&or_dash(l.asked.gateway.as_deref()), 16),
            clip.clip(&or_dash(l.asked.account.as_deref()), 16),
            clip.clip(&or_dash(l.asked.operation.as_deref()), 16),
            clip.clip(&or_dash(l.asked.payment_id.as_deref()), 24),
            amount,
            outcome,
            l.attempts.to_string(),
            clip.clip(&why, 80),
        ]);
    }
    let mut out = table.render("");
    let noun = if listed.len() == 1 {
        "command"
    } else {
        "commands"
    };
    out.push_str(&format!("\n{} {noun} {what}{scope}", listed.len()));
    if listed.len() as i64 == args.limit {
        out.push_str(&format!(
            " (the {} most recent; raise --limit for more)",
            args.limit
        ));
    }
    out.push('\n');
    if clip.clipped {
        out.push_str("(long values are cut and end with …; `--json` shows them whole)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ListArgs,
    }

    fn parse(line: &[&str]) -> Result<ListArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("list").chain(line.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn flags_parse_with_the_config_duration_syntax() {
        let a = parse(&["--outcome", "unknown", "--since", "1h", "--limit", "5"]).unwrap();
        assert_eq!(a.outcome, Attention::Unknown);
        assert_eq!(a.since, Some(Duration::from_secs(3600)));
        assert_eq!(a.limit, 5);
        let d = parse(&["--outcome", "failed"]).unwrap();
        assert_eq!((d.since, d.limit), (None, 100));
    }

    #[test]
    fn bad_flags_are_refused_with_the_choices() {
        let error = parse(&["--outcome", "succeeded"]).unwrap_err().to_string();
        assert!(error.contains("unknown, failed, rejected"), "{error}");
        let error = parse(&["--outcome", "failed", "--since", "1 week"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("--since"), "{error}");
        assert!(parse(&["--outcome", "failed", "--limit", "0"]).is_err());
    }

    #[test]
    fn the_table_says_what_it_lists_and_when_it_was_cut() {
        let args = parse(&["--outcome", "rejected", "--limit", "1"]).unwrap();
        assert_eq!(render(&[], &args, None), "no commands rejected\n");
        let listed = Listed {
            id: "c1".into(),
            outcome: Some(Outcome::Rejected),
            settled_outcome: None,
            reason: Some("unsupported_operation".into()),
            description: Some("praxis does not offer refund".into()),
            asked: Asked {
                gateway: Some("praxis".into()),
                account: Some("default".into()),
                operation: Some("refund".into()),
                payment_id: Some("20000001".into()),
                amount: None,
                currency: None,
            },
            state: CommandState::Done,
            attempts: 0,
            reconcile_checks: 0,
            received_at: "2026-11-22T10:15:03.120Z".into(),
            decided_at: Some("2026-11-22T10:15:03.125Z".into()),
            settled_at: None,
        };
        let text = render(&[listed], &args, None);
        assert!(text.starts_with("ID "), "{text}");
        assert!(
            text.contains("unsupported_operation: praxis does not offer refund"),
            "{text}"
        );
        assert!(
            text.contains("1 command rejected (the 1 most recent"),
            "{text}"
        );
    }
}
