//! The operator commands around a running worker: `enqueue` a command, `show`
//! what happened to one, `list` the ones that need a person, look after
//! `dead-letters`, `migrate` the database and `prune` what is old enough.
//!
//! They read the worker's own configuration file, so an operator never types a
//! connection string or a queue name that could differ from the worker's, and
//! they go through the same store and broker code as the worker. Each one
//! prints for people by default and one JSON document with `--json`; every
//! failure is an [`OpsError`] whose message says what went wrong and what to
//! do, printed on stderr with a non-zero exit. Nothing here prints a secret:
//! connection targets are shown without credentials, and what the store holds
//! was recorded with secrets already removed.

pub mod dead_letters;
pub mod enqueue;
pub mod flags;
pub mod list;
pub mod migrate;
pub mod notifications;
pub mod prune;
pub mod show;

use std::path::Path;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation};
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgConnection};
use time::OffsetDateTime;

use crate::broker::{Session, Topology};
use crate::config::{self, Config, ConfigError};
use crate::store::StoreError;

/// How long to wait for PostgreSQL or RabbitMQ to answer a connection attempt:
/// an operator would rather hear "unreachable" than watch a frozen terminal.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    BadInput(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Refused(String),
    /// Half done: what was done and what was not is in the message.
    #[error("{0}")]
    Incomplete(String),
    #[error("cannot reach the database {target}: {reason}")]
    DatabaseUnreachable { target: String, reason: String },
    #[error("the database {target} does not exist: run `backoffice-worker migrate` with the same config to create it")]
    NoDatabase { target: String },
    #[error("the database {target} has no worker tables yet: run `backoffice-worker migrate` with the same config first")]
    NoSchema { target: String },
    #[error("database error: {0}")]
    Database(StoreError),
    #[error("applying the migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot reach RabbitMQ at {target}: {reason}")]
    BrokerUnreachable { target: String, reason: String },
    #[error("RabbitMQ: {0}")]
    Broker(String),
}

impl From<StoreError> for OpsError {
    fn from(error: StoreError) -> OpsError {
        OpsError::Database(error)
    }
}

impl From<sqlx::Error> for OpsError {
    fn from(error: sqlx::Error) -> OpsError {
        OpsError::Database(error.into())
    }
}

impl From<lapin::Error> for OpsError {
    fn from(error: lapin::Error) -> OpsError {
        OpsError::Broker(error.to_string())
    }
}

/// The exit status of a command that ended in `result`: its own on success,
/// `error_code` (after printing the error on stderr) on failure.
pub fn finish(result: Result<i32, OpsError>, error_code: i32) -> i32 {
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            error_code
        }
    }
}

/// Loads the config named by `--config`, `$BACKOFFICE_CONFIG` or `./backoffice.toml`.
/// Without any, the operator commands use the default connection settings
/// (the local services, or `$AMQP_URL` / `$DATABASE_URL`), which is what a
/// `run --sandbox` worker without a config file uses too; they say so.
/// With `sandbox`, the names are the sandbox's own, as `run --sandbox` uses
/// them ([`crate::worker::sandboxed`]), and a note on stderr says which.
pub fn load_config(explicit: Option<&Path>, sandbox: bool) -> Result<Config, OpsError> {
    let config = load_configured(explicit)?;
    if !sandbox {
        return Ok(config);
    }
    let config = crate::worker::sandboxed(config)?;
    eprintln!("note: sandbox: {}", crate::worker::sandbox_names(&config));
    Ok(config)
}

fn load_configured(explicit: Option<&Path>) -> Result<Config, OpsError> {
    match config::locate(explicit) {
        Ok(file) => Ok(Config::load(&file)?),
        Err(config::ConfigError::NotFound) => {
            let config =
                Config::parse(Path::new("<defaults>"), "", |name| std::env::var(name).ok())?;
            eprintln!(
                "note: no configuration file; using the default connections (broker {}, database {})",
                broker_target(&config.amqp.url),
                crate::store::connect_options(config.database.url.expose_secret())
                    .map(|o| database_target(&o))
                    .unwrap_or_else(|_| "?".into()),
            );
            Ok(config)
        }
        Err(error) => Err(error.into()),
    }
}

/// Where a database URL points, without its credentials: for messages.
pub fn database_target(options: &PgConnectOptions) -> String {
    format!(
        "`{}` on {}:{}",
        options.get_database().unwrap_or("postgres"),
        options.get_host(),
        options.get_port()
    )
}

/// Where an AMQP URL points, without its credentials: for messages.
pub fn broker_target(url: &SecretString) -> String {
    crate::broker::node_name(url)
}

pub fn database_options(config: &Config) -> Result<PgConnectOptions, OpsError> {
    crate::store::connect_options(config.database.url.expose_secret()).map_err(|e| {
        OpsError::BadInput(format!(
            "{}: [database] key `url`: {e}",
            config.file.display()
        ))
    })
}

/// One connection to the worker's database; an unreachable server is said so,
/// and a database without the worker's tables is told to run `migrate`.
pub async fn connect_database(config: &Config) -> Result<PgConnection, OpsError> {
    let options = database_options(config)?;
    let target = database_target(&options);
    let mut conn = match tokio::time::timeout(CONNECT_TIMEOUT, options.connect()).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(sqlx::Error::Database(e))) if e.code().as_deref() == Some("3D000") => {
            return Err(OpsError::NoDatabase { target })
        }
        Ok(Err(error)) => {
            return Err(OpsError::DatabaseUnreachable {
                target,
                reason: error.to_string(),
            })
        }
        Err(_) => {
            return Err(OpsError::DatabaseUnreachable {
                target,
                reason: format!("no answer within {CONNECT_TIMEOUT:?}"),
            })
        }
    };
    let migrated: bool = sqlx::query_scalar("SELECT to_regclass('commands') IS NOT NULL")
        .fetch_one(&mut conn)
        .await?;
    if !migrated {
        return Err(OpsError::NoSchema { target });
    }
    Ok(conn)
}

/// A broker connection with the worker's topology declared (exactly as the
/// worker declares it, so the command queue exists whoever starts first) and
/// a channel in confirm mode to publish commands on.
pub struct Broker {
    session: Session,
    channel: Channel,
    pub topology: Topology,
}

impl Broker {
    pub async fn connect(config: &Config) -> Result<Broker, OpsError> {
        let topology = Topology::from_settings(&config.amqp);
        let target = config
            .amqp
            .urls
            .iter()
            .map(broker_target)
            .collect::<Vec<_>>()
            .join(", ");
        let session = match tokio::time::timeout(
            CONNECT_TIMEOUT,
            Session::open_any(&config.amqp.urls, 0, &topology, 16),
        )
        .await
        {
            Ok(Ok((session, _))) => session,
            Ok(Err(error)) => {
                return Err(OpsError::BrokerUnreachable {
                    target,
                    reason: error.to_string(),
                })
            }
            Err(_) => {
                return Err(OpsError::BrokerUnreachable {
                    target,
                    reason: format!("no answer within {CONNECT_TIMEOUT:?}"),
                })
            }
        };
        let channel = session.connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Broker {
            session,
            channel,
            topology,
        })
    }

    /// The channel to declare and consume reply queues on.
    pub fn consume_channel(&self) -> &Channel {
        &self.session.consume_channel
    }

    /// Publishes one message to the command queue (default exchange) and
    /// waits for the broker's confirm. `mandatory`: a message the broker
    /// could not route to the queue is an error, not a silent drop.
    pub async fn publish_command(
        &self,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), OpsError> {
        let queue = self.topology.command_queue.as_str();
        let confirmation = self
            .channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                body,
                properties.with_delivery_mode(2),
            )
            .await?
            .await?;
        match confirmation {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_)) => Err(OpsError::Broker(format!(
                "the message could not be routed to queue `{queue}`"
            ))),
            Confirmation::Nack(_) => Err(OpsError::Broker(format!(
                "the broker refused the message for queue `{queue}` (nack)"
            ))),
            Confirmation::NotRequested => Err(OpsError::Broker(
                "the publish was not confirmed (confirm mode is off)".into(),
            )),
        }
    }

    pub async fn close(&self) {
        let _ = self.session.connection.close(200, "done".into()).await;
    }
}

/// `2026-11-22T10:15:03.120Z`, or `-` when there is no time.
pub fn time_text(at: Option<OffsetDateTime>) -> String {
    at.map(crate::events::format_timestamp)
        .unwrap_or_else(|| "-".into())
}

/// Shortens text for one table cell, and remembers that it did, so the
/// output can say that `--json` has the whole value.
#[derive(Debug, Default)]
pub struct Clipper {
    pub clipped: bool,
}

impl Clipper {
    /// One line, at most `max` characters: line breaks and tabs become spaces,
    /// other control characters are escaped, and a cut is marked with `…`.
    pub fn clip(&mut self, text: &str, max: usize) -> String {
        let mut out = String::new();
        for (count, c) in text.chars().enumerate() {
            if count == max {
                self.clipped = true;
                out.push('…');
                return out;
            }
            match c {
                '\n' | '\r' | '\t' => out.push(' '),
                c if c.is_control() => out.extend(c.escape_default()),
                c => out.push(c),
            }
        }
        out
    }
}

/// A plain-text table with aligned columns, as a terminal shows it.
#[derive(Debug, Clone)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.headers.len());
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table, each line starting with `indent`, columns two spaces apart;
    /// the last column is not padded, so lines carry no trailing blanks.
    pub fn render(&self, indent: &str) -> String {
        let width = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        let mut out = String::new();
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            let mut text = String::from(indent);
            for (i, cell) in line.iter().enumerate() {
                if i + 1 == line.len() {
                    text.push_str(cell);
                } else {
                    text.push_str(cell);
                    text.extend(std::iter::repeat_n(' ', widths[i] - width(cell) + 2));
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `text`, or `-` for nothing.
/// What a command asked for, as `list --json` and `show --json` print it
/// (flattened into each: the same fields, in the same order).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Asked {
    pub gateway: Option<String>,
    pub account: Option<String>,
    pub operation: Option<String>,
    pub payment_id: Option<String>,
    /// The validated amount, two decimals (absent when the command had none or was rejected).
    pub amount: Option<String>,
    pub currency: Option<String>,
}

impl Asked {
    /// From a stored command's columns: the amount in minor units.
    pub fn new(
        gateway: Option<String>,
        account: Option<String>,
        operation: Option<String>,
        payment_id: Option<String>,
        amount_minor: Option<i64>,
        currency: Option<String>,
    ) -> Asked {
        Asked {
            gateway,
            account,
            operation,
            payment_id,
            amount: amount_minor
                .and_then(|m| u64::try_from(m).ok())
                .map(|m| crate::money::Amount::from_minor(m).to_string()),
            currency,
        }
    }
}

pub fn or_dash(text: Option<&str>) -> String {
    match text {
        Some(t) if !t.is_empty() => t.to_string(),
        _ => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_leave_no_trailing_blanks() {
        let mut table = Table::new(&["ID", "OUTCOME", "NOTE"]);
        table.row(vec!["a".into(), "succeeded".into(), "".into()]);
        table.row(vec!["longer-id".into(), "-".into(), "x".into()]);
        let text = table.render("  ");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "  ID         OUTCOME    NOTE");
        assert_eq!(lines[1], "  a          succeeded");
        assert_eq!(lines[2], "  longer-id  -          x");
        let col = |line: &str, word: &str| line.find(word).unwrap();
        assert_eq!(col(lines[0], "OUTCOME"), col(lines[1], "succeeded"));
    }

    #[test]
    fn clipping_marks_the_cut_and_keeps_one_line() {
        let mut clipper = Clipper::default();
        assert_eq!(clipper.clip("short", 10), "short");
        assert!(!clipper.clipped);
        assert_eq!(clipper.clip("a\nb\tc\u{7}", 10), "a b c\\u{7}");
        assert!(!clipper.clipped);
        assert_eq!(clipper.clip("0123456789abc", 10), "0123456789…");
        assert!(clipper.clipped);
        assert_eq!(Clipper::default().clip("0123456789", 10), "0123456789");
    }

    #[test]
    fn connection_targets_never_show_credentials() {
        let amqp = SecretString::from("amqp://user:hunter2@rabbit.internal:5673/%2f");
        let shown = broker_target(&amqp);
        assert_eq!(shown, "rabbit.internal:5673/%2f");
        let pg = <PgConnectOptions as std::str::FromStr>::from_str(
            "postgres://app:hunter2@db.internal:5433/backoffice",
        )
        .unwrap();
        let shown = database_target(&pg);
        assert_eq!(shown, "`backoffice` on db.internal:5433");
        assert!(!shown.contains("hunter2"));
    }
}
