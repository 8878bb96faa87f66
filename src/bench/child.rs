//! The worker under test, as a child process: its configuration file, its
//! start, its stop (SIGTERM, then SIGKILL after a grace period), and a guard
//! that never leaves it behind.
//!
//! It runs as a separate process, not in the bench's runtime, so that its CPU
//! time and peak memory are its own and can be read from `/proc`, and so that
//! it is exactly what `backoffice-worker run --config FILE` would be.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use toml::{Table, Value};

use super::measure::Proc;
use crate::broker::Topology;
use crate::config::Config;
use crate::simulator::{
    SANDBOX_FRONTEND, SANDBOX_MEMBER_ID, SANDBOX_MERCHANT_ID, SANDBOX_MERCHANT_SECRET,
    SANDBOX_PARTNER_ID, SANDBOX_SECURE_KEY, SANDBOX_USERNAME,
};

/// The knobs the benchmark turns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Knobs {
    pub max_in_flight: usize,
    pub prefetch: u16,
    pub db_pool: u32,
}

impl Knobs {
    /// The worker's own defaults, read from the configuration code itself so
    /// that they can never drift from what `run` would use.
    pub fn worker_defaults() -> Knobs {
        let config = Config::parse(Path::new("<defaults>"), "", |_| None)
            .expect("an empty configuration is valid");
        Knobs {
            max_in_flight: config.worker.max_in_flight,
            prefetch: config.amqp.prefetch,
            db_pool: config.database.max_connections,
        }
    }
}

/// The worker's configuration: the bench's queues and database, the sandbox
/// credentials, every account pointed at the simulator. Checked with the
/// worker's own parser before it is written, so a mistake is the bench's
/// error rather than a child that dies at start-up.
pub fn config_text(
    amqp_url: &str,
    topology: &Topology,
    database_url: &str,
    simulator_url: &str,
    knobs: Knobs,
) -> anyhow::Result<String> {
    let table = |pairs: &[(&str, Value)]| -> Value {
        Value::Table(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect::<Table>(),
        )
    };
    let s = |text: &str| Value::String(text.to_string());
    let mut root = Table::new();
    root.insert(
        "amqp".into(),
        table(&[
            ("url", s(amqp_url)),
            ("command_queue", s(&topology.command_queue)),
            ("result_exchange", s(&topology.result_exchange)),
            ("dead_letter_queue", s(&topology.dead_letter_queue)),
            ("prefetch", Value::Integer(knobs.prefetch.into())),
        ]),
    );
    root.insert(
        "database".into(),
        table(&[
            ("url", s(database_url)),
            ("max_connections", Value::Integer(knobs.db_pool.into())),
        ]),
    );
    root.insert(
        "worker".into(),
        table(&[("max_in_flight", Value::Integer(knobs.max_in_flight as i64))]),
    );
    let paymentz = table(&[(
        "default",
        table(&[
            ("base_url", s(simulator_url)),
            ("partner_id", s(SANDBOX_PARTNER_ID)),
            ("username", s(SANDBOX_USERNAME)),
            ("member_id", s(SANDBOX_MEMBER_ID)),
            ("secure_key", s(SANDBOX_SECURE_KEY)),
        ]),
    )]);
    let praxis = table(&[(
        "default",
        table(&[
            ("base_url", s(simulator_url)),
            ("merchant_id", s(SANDBOX_MERCHANT_ID)),
            ("merchant_secret", s(SANDBOX_MERCHANT_SECRET)),
            ("frontend", s(SANDBOX_FRONTEND)),
        ]),
    )]);
    root.insert(
        "accounts".into(),
        table(&[("paymentz", paymentz), ("praxis", praxis)]),
    );
    let text = toml::to_string(&root).context("writing the worker configuration")?;
    let config = Config::parse(Path::new("<bench worker config>"), &text, |_| None)
        .context("the generated worker configuration")?;
    anyhow::ensure!(
        config.worker.max_in_flight == knobs.max_in_flight
            && config.amqp.prefetch == knobs.prefetch
            && config.database.max_connections == knobs.db_pool,
        "the generated worker configuration does not say what was asked"
    );
    Ok(text)
}

/// A running worker process. Dropping it kills the process (SIGKILL): on an
/// error or Ctrl-C the bench never leaves a worker consuming behind it.
pub struct WorkerChild {
    child: tokio::process::Child,
    pid: u32,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl WorkerChild {
    /// `<this executable> run --config FILE`, stderr to `log`, `RUST_LOG=warn`.
    pub fn spawn(config: &Path, log: &Path) -> anyhow::Result<WorkerChild> {
        let exe = std::env::current_exe().context("locating this executable")?;
        let log_file = std::fs::File::create(log)
            .with_context(|| format!("creating the worker log {}", log.display()))?;
        let child = tokio::process::Command::new(&exe)
            .arg("run")
            .arg("--config")
            .arg(config)
            // The file says where everything is; the overrides would point the
            // worker elsewhere (the server rather than the bench database).
            .env_remove("AMQP_URL")
            .env_remove("DATABASE_URL")
            .env_remove("BACKOFFICE_CONFIG")
            .env("RUST_LOG", "warn")
            // A log file, not a terminal: no colour codes in it.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} run", exe.display()))?;
        let pid = child.id().context("the worker exited at once")?;
        Ok(WorkerChild {
            child,
            pid,
            log: log.to_path_buf(),
            status: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn proc(&self) -> Proc {
        Proc::new(self.pid)
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The exit status if the worker has stopped.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// SIGTERM, then up to `grace` for a clean stop, then SIGKILL.
    pub async fn stop(&mut self, grace: Duration) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.exited() {
            return Ok(status);
        }
        let sent = tokio::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .await;
        if !matches!(sent, Ok(status) if status.success()) {
            tracing::warn!(
                pid = self.pid,
                "could not send SIGTERM to the worker; killing it"
            );
        } else if let Ok(status) = tokio::time::timeout(grace, self.child.wait()).await {
            let status = status.context("waiting for the worker")?;
            self.status = Some(status);
            return Ok(status);
        } else {
            tracing::warn!(
                pid = self.pid,
                ?grace,
                "the worker did not stop after SIGTERM; killing it"
            );
        }
        self.child.kill().await.context("killing the worker")?;
        let status = self.child.wait().await.context("waiting for the worker")?;
        self.status = Some(status);
        anyhow::bail!("the worker did not stop within {grace:?} of SIGTERM and was killed")
    }

    /// The last lines of its log, for an error message.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }
}

pub fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(error) => format!("(cannot read {}: {error})", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_is_what_the_worker_reads() {
        let topology = Topology {
            command_queue: "bench.x.commands".into(),
            result_exchange: "bench.x.events".into(),
            dead_letter_queue: "bench.x.commands.dead".into(),
        };
        let knobs = Knobs {
            max_in_flight: 123,
            prefetch: 45,
            db_pool: 6,
        };
        let text = config_text(
            "amqp://guest:guest@127.0.0.1:5672/%2f",
            &topology,
            "postgres://postgres@127.0.0.1:5555/bench_x?sslmode=disable",
            "http://127.0.0.1:9999",
            knobs,
        )
        .unwrap();
        let config = Config::parse(Path::new("t.toml"), &text, |_| None).unwrap();
        assert_eq!(config.amqp.command_queue, "bench.x.commands");
        assert_eq!(config.amqp.result_exchange, "bench.x.events");
        assert_eq!(config.amqp.prefetch, 45);
        assert_eq!(config.worker.max_in_flight, 123);
        assert_eq!(config.database.max_connections, 6);
        assert_eq!(config.accounts.len(), 2);
        for account in &config.accounts {
            assert_eq!(
                account.table["base_url"].as_str(),
                Some("http://127.0.0.1:9999")
            );
        }
    }

    #[test]
    fn defaults_are_the_workers() {
        let d = Knobs::worker_defaults();
        assert_eq!(
            d.max_in_flight,
            crate::config::WorkerSettings::default().max_in_flight
        );
        assert!(d.prefetch > 0 && d.db_pool > 0);
    }
}
