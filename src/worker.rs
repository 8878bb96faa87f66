//! `backoffice-worker run`: wires the configuration, the database, the gateway
//! accounts and the pipeline together, and turns SIGTERM / Ctrl-C into a
//! graceful stop.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config};
use crate::gateways::http::HttpTransport;
use crate::gateways::registry::Accounts;
use crate::pipeline::{self, retry, Worker};
use crate::store::{self, Store};

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:
  backoffice-worker run --config /etc/backoffice/backoffice.toml
  BACKOFFICE_CONFIG=./backoffice.toml backoffice-worker run --log-format json")]
pub struct RunArgs {
    /// The configuration file (default: $BACKOFFICE_CONFIG, then ./backoffice.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Loads the config and runs the worker until a stop signal.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let file = config::locate(args.config.as_deref())?;
    let config = Config::load(&file)?;
    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone());
    run_with(config, shutdown).await
}

/// Runs a worker for `config` until `shutdown` is cancelled. Tests call this directly.
pub async fn run_with(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let accounts = Accounts::build(&config.accounts, &HttpTransport::new(config.http))?;
    let store = Store::connect_lazy(&config.database)?;
    if !wait_for_migrations(&store, &shutdown).await? {
        return Ok(());
    }
    let worker = Worker::new(&config, store, accounts, shutdown);
    pipeline::run(worker).await
}

/// Applies the migrations, waiting for the database if it is not up yet.
/// Returns false if asked to stop meanwhile.
async fn wait_for_migrations(store: &Store, shutdown: &CancellationToken) -> anyhow::Result<bool> {
    let mut failures = 0u32;
    loop {
        match store.migrate().await {
            Ok(()) => return Ok(true),
            Err(sqlx::migrate::MigrateError::Execute(error)) if store::is_transient(&error) => {
                failures += 1;
                let delay = retry::jittered(
                    Duration::from_millis(200),
                    Duration::from_secs(10),
                    failures,
                );
                tracing::warn!(%error, retry_in = ?delay, "database not reachable; waiting to apply migrations");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return Ok(false),
                }
            }
            Err(error) => return Err(error).context("applying database migrations"),
        }
    }
}

fn spawn_signal_handler(shutdown: CancellationToken) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: stopping"),
                _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C: stopping"),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        shutdown.cancel();
    });
}
