//! `backoffice-worker prune`: deletes what is older than `[retention]` says,
//! now, in the same small batches as the worker's own schedule
//! (`store::retention`); `--dry-run` only counts.
//!
//! For a deployment that turned the worker's schedule off (`[retention]
//! interval = "off"`) and prunes from cron instead, or for a first run on a
//! database that has grown for a long time (it stops cleanly on Ctrl-C and
//! goes on where it stopped the next time).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::{connect_database, OpsError};
use crate::config::DatabaseSettings;
use crate::store::retention::{self, Cutoffs, Pruned};
use crate::store::Store;

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:
  backoffice-worker prune --dry-run
  backoffice-worker prune --config /etc/backoffice/backoffice.toml
  backoffice-worker prune --json

The limits are the configuration's [retention] keys (defaults: commands 400d, published_events
7d, dead_letters 90d). A command is pruned only when it is final and its events are published;
with it go its attempts and events. Once pruned, its id is forgotten: a command with the same id
arriving later is a new command (docs/messages.md, \"Idempotency horizon\").

Exit status: 0 when done, 1 when the database cannot be reached or a batch fails.")]
pub struct PruneArgs {
    /// The configuration file (default: $BACKOFFICE_CONFIG, then ./backoffice.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address the sandbox's own database and queues, as `run --sandbox` uses them.
    #[arg(long)]
    pub sandbox: bool,
    /// Count what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// One JSON object with the counts.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: &PruneArgs) -> Result<i32, OpsError> {
    let config = super::load_config(args.config.as_deref(), args.sandbox)?;
    let settings = config.retention;
    let cutoffs = Cutoffs::at(OffsetDateTime::now_utc(), &settings);
    let mut conn = connect_database(&config).await?;
    let started = Instant::now();
    let pruned = if args.dry_run {
        retention::count(&mut conn, &cutoffs).await?
    } else {
        drop(conn);
        // The worker's own session settings (generic plans of index
        // lookups, `tests/retention.rs`), on one connection.
        let store = Store::connect_lazy(&DatabaseSettings {
            max_connections: 1,
            ..config.database.clone()
        })?;
        let pool = store.pool().clone();
        let stop = CancellationToken::new();
        let on_signal = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                on_signal.cancel();
            }
        });
        let pruned =
            retention::prune(&pool, &cutoffs, settings.batch, retention::MIN_PAUSE, &stop).await?;
        pool.close().await;
        if stop.is_cancelled() {
            eprintln!("interrupted: the counts below are what was deleted before it stopped");
        }
        pruned
    };
    print(args, &settings, &pruned, started.elapsed());
    Ok(0)
}

fn print(
    args: &PruneArgs,
    settings: &retention::RetentionSettings,
    pruned: &Pruned,
    took: Duration,
) {
    if args.json {
        let value = serde_json::json!({
            "dry_run": args.dry_run,
            "counts": pruned,
            "took_seconds": took.as_secs_f64(),
        });
        println!("{value}");
        return;
    }
    let verb = if args.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    let limit = |d: Option<Duration>| match d {
        Some(d) => format!("older than {}d", d.as_secs() / 86_400),
        None => "kept for ever".to_string(),
    };
    println!(
        "finished commands ({}): {verb} {} commands, {} attempts, {} events, {} pending replays",
        limit(settings.commands),
        pruned.commands,
        pruned.attempts,
        pruned.command_events,
        pruned.pending_replays
    );
    println!(
        "published events ({}): {verb} {}",
        limit(settings.published_events),
        pruned.published_events
    );
    println!(
        "dead letters ({}): {verb} {}",
        limit(settings.dead_letters),
        pruned.dead_letters
    );
    println!("took {:.1} s", took.as_secs_f64());
}
