//! The configuration file: where it is, what it holds, and the messages it gives
//! when something in it is wrong.
//!
//! The file is TOML (see `shared/spec/config.md` for the keys deployments rely
//! on). `${NAME}` in any string is replaced by that environment variable, and
//! `$AMQP_URL` / `$DATABASE_URL` override the connection URLs. Every mistake is
//! reported with the file, the table and the key, because the person reading
//! the message is fixing a deployment at start-up, not reading our code.
//! Secrets go straight into [`SecretString`](secrecy::SecretString) so they
//! cannot be printed.
//!
//! [`reader`] is the key-tracking TOML reader (a leaf: it imports nothing
//! from the crate); each settings group has its own file; this one holds
//! [`Config`] and reads the tables in order.

mod accounts;
mod connections;
mod listeners;
pub mod reader;
mod runtime;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use crate::gateways::http::{HttpSettings, HttpTransport};
use crate::gateways::registry::Accounts;

pub use accounts::AccountSpec;
pub use connections::{
    AmqpSettings, DatabaseSettings, DEFAULT_MAX_COMMAND_BYTES, DEFAULT_STATEMENT_TIMEOUT,
};
pub use listeners::{AdminSettings, ConsoleSettings, MIN_CONSOLE_TOKEN_CHARS};
pub use reader::{
    parse_duration, ConfigError, Section, CONFIG_ENV, DEFAULT_FILE, MIN_SECRET_CHARS,
};
pub use runtime::WorkerSettings;

/// Where the configuration comes from: `--config`, else `$BACKOFFICE_CONFIG`,
/// else `backoffice.toml` in the working directory.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, ConfigError> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    if let Some(path) = std::env::var_os(CONFIG_ENV).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let default = PathBuf::from(DEFAULT_FILE);
    if default.exists() {
        Ok(default)
    } else {
        Err(ConfigError::NotFound)
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    pub amqp: AmqpSettings,
    pub database: DatabaseSettings,
    pub http: HttpSettings,
    pub worker: WorkerSettings,
    pub admin: AdminSettings,
    pub console: ConsoleSettings,
    pub relay: crate::pipeline::relay::RelaySettings,
    pub retention: crate::store::retention::RetentionSettings,
    pub accounts: Vec<AccountSpec>,
    /// `[notifications]`: the listener for the gateways' webhooks.
    pub notifications: crate::notifications::NotificationSettings,
    /// `[automation]`: what to do with an authorization.
    pub automation: crate::notifications::rules::Automation,
}

impl Config {
    /// Every account's client, on `transport`: built where the worker (or
    /// `call`, or an operator command) starts, never while reading the file.
    pub fn clients(&self, transport: &HttpTransport) -> Accounts {
        Accounts::build(
            self.accounts
                .iter()
                .map(|spec| (spec.name.as_str(), spec.settings.as_ref())),
            transport,
        )
    }
}

/// The top-level tables, in the order they are read (and so in the order
/// their mistakes are reported).
const TABLES: [&str; 11] = [
    "amqp",
    "database",
    "http",
    "worker",
    "admin",
    "console",
    "relay",
    "retention",
    "accounts",
    "notifications",
    "automation",
];

impl Config {
    /// Reads and checks the file, then applies the environment overrides.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        Config::parse(file, &text, |name| std::env::var(name).ok())
    }

    /// Parses configuration text. `env` looks up environment variables, so
    /// tests can supply their own.
    pub fn parse(
        file: &Path,
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let root = root(file, text, &env)?;
        let empty = toml::Table::new();
        let top = Section::new(file, String::new(), &root);
        let table = |name: &str| -> Result<Section<'_>, ConfigError> {
            let table = top.subtable(name)?.unwrap_or(&empty);
            Ok(Section::new(file, name.into(), table))
        };
        let amqp = connections::amqp(
            &table("amqp")?,
            env("AMQP_URL").filter(|v| !v.trim().is_empty()),
        )?;
        let database = connections::database(
            &table("database")?,
            env("DATABASE_URL").filter(|v| !v.is_empty()),
        )?;
        let http = runtime::http(&table("http")?)?;
        let worker = runtime::worker(&table("worker")?)?;
        let admin = listeners::admin(&table("admin")?)?;
        let console = listeners::console(&table("console")?)?;
        let relay = runtime::relay(&table("relay")?)?;
        let retention = runtime::retention(&table("retention")?)?;
        let accounts = accounts::accounts(file, top.subtable("accounts")?, &http)?;
        let notifications = crate::notifications::read_settings(&table("notifications")?)?;
        let automation = crate::notifications::rules::Automation::read(
            file,
            top.subtable("automation")?,
            &accounts,
        )?;
        Ok(Config {
            notifications,
            automation,
            file: file.to_path_buf(),
            amqp,
            database,
            http,
            worker,
            admin,
            console,
            relay,
            retention,
            accounts,
        })
    }
}

/// The file's top-level table, `${NAME}`s replaced, every table known.
fn root(
    file: &Path,
    text: &str,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<toml::Table, ConfigError> {
    let mut root: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Syntax {
            file: file.to_path_buf(),
            message: e.to_string(),
        })?;
    reader::substitute_env(file, "", &mut root, env)?;
    if let Some(unknown) = root.keys().find(|key| !TABLES.contains(&key.as_str())) {
        return Err(ConfigError::Table {
            file: file.to_path_buf(),
            table: unknown.clone(),
            problem: format!("unknown table (known: {})", TABLES.join(", ")),
        });
    }
    Ok(root)
}
