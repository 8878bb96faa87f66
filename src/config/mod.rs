//! The configuration file: where it is, what it holds, and the messages it gives
//! when something in it is wrong.
//!
//! The file is TOML (see `shared/spec/config.md` for the keys deployments rely
//! on). `${NAME}` in any string is replaced by that environment variable, and
//! `$AMQP_URL` / `$DATABASE_URL` override the connection URLs. Every mistake is
//! reported with the file, the table and the key, because the person reading
//! the message is fixing a deployment at start-up, not reading our code.
//! Secrets go straight into [`SecretString`] so they cannot be printed.

pub mod reader;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;

use crate::gateways::http::{HttpSettings, HttpTransport, ProxyUrl};
use crate::gateways::registry;
use crate::gateways::Gateway;

use reader::substitute_env;
pub use reader::{
    parse_duration, ConfigError, Section, CONFIG_ENV, DEFAULT_FILE, MIN_SECRET_CHARS,
};

/// `[http] max_answer_bytes` bounds: below 64 KiB a transaction list page may
/// not fit; above 1 GiB the cap no longer protects anything.
const MIN_ANSWER_BYTES: i64 = 64 * 1024;
const MAX_ANSWER_BYTES: i64 = 1024 * 1024 * 1024;

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
pub struct AmqpSettings {
    /// The first of [`AmqpSettings::urls`]: where one-off connections go first.
    pub url: SecretString,
    /// Every node of the broker (`[amqp] url`, or `urls` for a cluster;
    /// `$AMQP_URL`, comma-separated, overrides both). A session that cannot
    /// be opened on one, or is lost, is opened on the next.
    pub urls: Vec<SecretString>,
    pub command_queue: String,
    pub result_exchange: String,
    pub dead_letter_queue: String,
    /// Deliveries the broker may push before we ack: bounds memory and in-flight work.
    pub prefetch: u16,
    /// The largest message body read as a command; a larger one is
    /// dead-lettered unread.
    pub max_command_bytes: usize,
}

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    pub url: SecretString,
    pub max_connections: u32,
    /// The longest a statement of the worker may run (its sessions'
    /// `statement_timeout`); operator commands keep PostgreSQL's default.
    pub statement_timeout: Duration,
}

/// The default `[database] statement_timeout`: far above any statement of
/// the worker (milliseconds), far below a lock held forever.
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// The default `[amqp] max_command_bytes`: the contract's largest command
/// (4 KiB of metadata and short fields) fits many times over.
pub const DEFAULT_MAX_COMMAND_BYTES: usize = 64 * 1024;

/// How the worker runs commands: concurrency, retries and reconciliation.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Commands processed at once by one instance.
    pub max_in_flight: usize,
    /// Attempts per command for `not applied` answers, the first included.
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Total time a command may spend being retried before it is `failed`.
    pub max_retry_time: Duration,
    /// How long a claim on a command stays valid without being renewed.
    pub lease: Duration,
    /// Inquiries made to settle an ambiguous answer before reporting `unknown`.
    pub reconcile_attempts: u32,
    /// Background reconciliation of `unknown` outcomes: delays between checks.
    pub reconcile_schedule: Vec<Duration>,
    /// How long shutdown waits for in-flight commands.
    pub shutdown_grace: Duration,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            max_in_flight: 2000,
            max_attempts: 5,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            max_retry_time: Duration::from_secs(15 * 60),
            lease: Duration::from_secs(90),
            reconcile_attempts: 3,
            reconcile_schedule: vec![
                Duration::from_secs(60),
                Duration::from_secs(5 * 60),
                Duration::from_secs(30 * 60),
                Duration::from_secs(60 * 60),
                Duration::from_secs(6 * 60 * 60),
                Duration::from_secs(24 * 60 * 60),
            ],
            shutdown_grace: Duration::from_secs(25),
        }
    }
}

/// One `[accounts.<gateway>.<name>]` table, kept raw so that a deployment
/// (or `--sandbox`) can adjust it before the client is built. Its `Debug`
/// shows key names only: the values include secrets.
#[derive(Clone)]
pub struct AccountSpec {
    pub file: PathBuf,
    pub gateway: String,
    pub name: String,
    pub table: toml::Table,
}

impl std::fmt::Debug for AccountSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountSpec")
            .field("gateway", &self.gateway)
            .field("name", &self.name)
            .field("keys", &self.table.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl AccountSpec {
    pub fn table_name(&self) -> String {
        format!("accounts.{}.{}", self.gateway, self.name)
    }

    /// Builds this account's client, checking every key.
    pub fn build(&self, transport: HttpTransport) -> Result<Arc<dyn Gateway>, ConfigError> {
        let kind = registry::find(&self.gateway).ok_or_else(|| ConfigError::Table {
            file: self.file.clone(),
            table: format!("accounts.{}", self.gateway),
            problem: format!(
                "unknown gateway `{}` (known: {})",
                self.gateway,
                registry::GATEWAYS
                    .iter()
                    .map(|k| k.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })?;
        let section = Section::new(&self.file, self.table_name(), &self.table);
        let client = (kind.build)(&section, &self.name, transport)?;
        section.finish()?;
        section.check_secrets()?;
        Ok(client)
    }
}

/// `[admin]`: the admin listener (`--admin-listen` overrides `listen`).
#[derive(Debug, Clone, Default)]
pub struct AdminSettings {
    pub listen: Option<std::net::SocketAddr>,
    pub limits: crate::listener::ListenerSettings,
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
        let mut root: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    file: file.to_path_buf(),
                    message: e.to_string(),
                })?;
        substitute_env(file, "", &mut root, &env)?;

        let empty = toml::Table::new();
        let top = Section::new(file, String::new(), &root);
        for key in root.keys() {
            if ![
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
            ]
            .contains(&key.as_str())
            {
                return Err(ConfigError::Table {
                    file: file.to_path_buf(),
                    table: key.clone(),
                    problem: "unknown table (known: amqp, database, http, worker, admin, console, relay, retention, accounts, notifications, automation)"
                        .into(),
                });
            }
        }

        let amqp_table = top.subtable("amqp")?.unwrap_or(&empty);
        let amqp = Section::new(file, "amqp".into(), amqp_table);
        let amqp_urls = amqp_urls(&amqp, env("AMQP_URL").filter(|v| !v.trim().is_empty()))?;
        let amqp_settings = AmqpSettings {
            url: amqp_urls[0].clone(),
            urls: amqp_urls,
            command_queue: amqp.amqp_name("command_queue", "backoffice.commands")?,
            result_exchange: amqp.amqp_name("result_exchange", "backoffice.events")?,
            dead_letter_queue: amqp.amqp_name("dead_letter_queue", "backoffice.commands.dead")?,
            prefetch: amqp.int_or("prefetch", 500, 1, 2000)? as u16,
            max_command_bytes: amqp.int_or(
                "max_command_bytes",
                DEFAULT_MAX_COMMAND_BYTES as i64,
                8 * 1024,
                16 * 1024 * 1024,
            )? as usize,
        };
        amqp.finish()?;

        let db_table = top.subtable("database")?.unwrap_or(&empty);
        let db = Section::new(file, "database".into(), db_table);
        let mut db_url = db.opt_str("url")?;
        if let Some(over) = env("DATABASE_URL").filter(|v| !v.is_empty()) {
            db_url = Some(over);
        }
        let db_url =
            db_url.unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/backoffice".into());
        db.check_url("url", &db_url, &["postgres", "postgresql"])?;
        let database = DatabaseSettings {
            url: SecretString::from(db_url),
            max_connections: db.int_or("max_connections", 16, 1, 1000)? as u32,
            statement_timeout: db.duration_or("statement_timeout", DEFAULT_STATEMENT_TIMEOUT)?,
        };
        if database.statement_timeout < Duration::from_secs(1) {
            return Err(db.error("statement_timeout", "must be at least 1s"));
        }
        db.finish()?;

        let http_table = top.subtable("http")?.unwrap_or(&empty);
        let http_section = Section::new(file, "http".into(), http_table);
        let defaults = HttpSettings::default();
        let proxy = match http_section.opt_str("proxy")? {
            None => None,
            Some(text) => Some(
                ProxyUrl::parse(&text).map_err(|problem| http_section.error("proxy", problem))?,
            ),
        };
        let http = HttpSettings {
            connect_timeout: http_section
                .duration_or("connect_timeout", defaults.connect_timeout)?,
            request_timeout: http_section
                .duration_or("request_timeout", defaults.request_timeout)?,
            allow_http: http_section.bool_or("allow_http", defaults.allow_http)?,
            proxy,
            max_answer_bytes: http_section.int_or(
                "max_answer_bytes",
                defaults.max_answer_bytes as i64,
                MIN_ANSWER_BYTES,
                MAX_ANSWER_BYTES,
            )? as usize,
        };
        http_section.finish()?;

        let worker_table = top.subtable("worker")?.unwrap_or(&empty);
        let w = Section::new(file, "worker".into(), worker_table);
        let d = WorkerSettings::default();
        let worker = WorkerSettings {
            max_in_flight: w.int_or("max_in_flight", d.max_in_flight as i64, 1, 100_000)? as usize,
            max_attempts: w.int_or("max_attempts", d.max_attempts as i64, 1, 1000)? as u32,
            initial_backoff: w.duration_or("initial_backoff", d.initial_backoff)?,
            max_backoff: w.duration_or("max_backoff", d.max_backoff)?,
            max_retry_time: w.duration_or("max_retry_time", d.max_retry_time)?,
            lease: w.duration_or("lease", d.lease)?,
            reconcile_attempts: w.int_or(
                "reconcile_attempts",
                d.reconcile_attempts as i64,
                1,
                100,
            )? as u32,
            reconcile_schedule: w.durations_or("reconcile_schedule", d.reconcile_schedule)?,
            shutdown_grace: w.duration_or("shutdown_grace", d.shutdown_grace)?,
        };
        w.finish()?;

        let admin = admin_settings(&Section::new(
            file,
            "admin".into(),
            top.subtable("admin")?.unwrap_or(&empty),
        ))?;

        let console = console_settings(&Section::new(
            file,
            "console".into(),
            top.subtable("console")?.unwrap_or(&empty),
        ))?;

        let relay = relay_settings(&Section::new(
            file,
            "relay".into(),
            top.subtable("relay")?.unwrap_or(&empty),
        ))?;

        let retention = retention_settings(&Section::new(
            file,
            "retention".into(),
            top.subtable("retention")?.unwrap_or(&empty),
        ))?;

        let mut accounts = Vec::new();
        if let Some(by_gateway) = top.subtable("accounts")? {
            let section = Section::new(file, "accounts".into(), by_gateway);
            for gateway in by_gateway.keys() {
                let Some(named) = section.subtable(gateway)? else {
                    continue;
                };
                let per_gateway = Section::new(file, format!("accounts.{gateway}"), named);
                for name in named.keys() {
                    let table = per_gateway.subtable(name)?.expect("key exists").clone();
                    let spec = AccountSpec {
                        file: file.to_path_buf(),
                        gateway: gateway.clone(),
                        name: name.clone(),
                        table,
                    };
                    // Build once now so that every mistake surfaces at start-up.
                    spec.build(HttpTransport::new(http.clone()))?;
                    accounts.push(spec);
                }
            }
        }

        let notifications = crate::notifications::read_settings(&Section::new(
            file,
            "notifications".into(),
            top.subtable("notifications")?.unwrap_or(&empty),
        ))?;
        let automation = crate::notifications::rules::Automation::read(
            file,
            top.subtable("automation")?,
            &accounts,
        )?;

        Ok(Config {
            notifications,
            automation,
            file: file.to_path_buf(),
            amqp: amqp_settings,
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

fn admin_settings(a: &Section) -> Result<AdminSettings, ConfigError> {
    let listen = match a.opt_str("listen")? {
        None => None,
        Some(text) => Some(text.parse().map_err(|_| {
            a.error(
                "listen",
                format!("`{text}` is not an address such as \"127.0.0.1:9090\""),
            )
        })?),
    };
    let d = crate::listener::ListenerSettings::default();
    let limits = crate::listener::ListenerSettings {
        max_connections: a.int_or("max_connections", d.max_connections as i64, 1, 100_000)?
            as usize,
        header_timeout: positive(a, "header_timeout", d.header_timeout)?,
        request_timeout: positive(a, "request_timeout", d.request_timeout)?,
    };
    a.finish()?;
    Ok(AdminSettings { listen, limits })
}

/// `[console]`: the tokens of the console's two roles. With neither, the
/// console is off (its paths answer 404); each token is a secret (`${VAR}`),
/// at least [`MIN_SECRET_CHARS`] long, and the two must differ (else an
/// operator action could not be told from a viewer's).
#[derive(Debug, Clone, Default)]
pub struct ConsoleSettings {
    pub viewer_token: Option<SecretString>,
    pub operator_token: Option<SecretString>,
}

impl ConsoleSettings {
    pub fn enabled(&self) -> bool {
        self.viewer_token.is_some() || self.operator_token.is_some()
    }
}

/// The shortest console token accepted: long enough that guessing one over
/// the network is hopeless.
pub const MIN_CONSOLE_TOKEN_CHARS: usize = 16;

fn console_settings(c: &Section) -> Result<ConsoleSettings, ConfigError> {
    use secrecy::ExposeSecret;
    let token = |key: &str| -> Result<Option<SecretString>, ConfigError> {
        match c.opt_str(key)? {
            None => Ok(None),
            Some(_) => c.secret(key).map(Some),
        }
    };
    let settings = ConsoleSettings {
        viewer_token: token("viewer_token")?,
        operator_token: token("operator_token")?,
    };
    c.finish()?;
    c.check_secrets()?;
    // A token is a password anyone who reaches the admin listener can try.
    for (key, token) in [
        ("viewer_token", &settings.viewer_token),
        ("operator_token", &settings.operator_token),
    ] {
        if let Some(token) = token {
            let len = token.expose_secret().chars().count();
            if len < MIN_CONSOLE_TOKEN_CHARS {
                return Err(c.error(
                    key,
                    format!("is {len} characters long; a console token must have at least {MIN_CONSOLE_TOKEN_CHARS} (e.g. `openssl rand -hex 24`)"),
                ));
            }
        }
    }
    if let (Some(v), Some(o)) = (&settings.viewer_token, &settings.operator_token) {
        if v.expose_secret() == o.expose_secret() {
            return Err(c.error(
                "operator_token",
                "must differ from viewer_token (the same token cannot be both roles)",
            ));
        }
    }
    Ok(settings)
}

/// A timeout: zero would refuse everything.
fn positive(section: &Section, key: &str, default: Duration) -> Result<Duration, ConfigError> {
    let d = section.duration_or(key, default)?;
    if d.is_zero() {
        return Err(section.error(key, "must be longer than zero"));
    }
    Ok(d)
}

fn relay_settings(r: &Section) -> Result<crate::pipeline::relay::RelaySettings, ConfigError> {
    let d = crate::pipeline::relay::RelaySettings::default();
    let settings = crate::pipeline::relay::RelaySettings {
        confirm_timeout: positive(r, "confirm_timeout", d.confirm_timeout)?,
        max_event_size: r.int_or("max_event_size", d.max_event_size as i64, 1024, 1 << 30)?
            as usize,
        handover_capacity: r.int_or("handover_capacity", d.handover_capacity as i64, 1, 1 << 20)?
            as usize,
    };
    r.finish()?;
    Ok(settings)
}

/// `[amqp] url` or `urls` (a cluster's nodes), or `$AMQP_URL` (one URL, or
/// several separated by commas), which overrides both. At least one; each
/// checked. The key named in an error is the one the value came from.
fn amqp_urls(amqp: &Section, over: Option<String>) -> Result<Vec<SecretString>, ConfigError> {
    let url = amqp.opt_str("url")?;
    let urls = match amqp.get("urls") {
        None => None,
        Some(toml::Value::Array(items)) if !items.is_empty() => Some(
            items
                .iter()
                .map(|item| match item {
                    toml::Value::String(text) => Ok(text.clone()),
                    _ => Err(amqp.error("urls", "must be a list of URL strings")),
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => return Err(amqp.error("urls", "must be a non-empty list of URL strings")),
    };
    let (key, list) = match (over, url, urls) {
        (Some(over), _, _) => (
            "url ($AMQP_URL)",
            over.split(',')
                .map(|u| u.trim().to_string())
                .collect::<Vec<_>>(),
        ),
        (None, Some(_), Some(_)) => {
            return Err(amqp.error("urls", "give either `url` or `urls`, not both"))
        }
        (None, Some(url), None) => ("url", vec![url]),
        (None, None, Some(urls)) => ("urls", urls),
        (None, None, None) => (
            "url",
            vec!["amqp://guest:guest@127.0.0.1:5672/%2f".to_string()],
        ),
    };
    list.into_iter()
        .map(|text| {
            amqp.check_url(key, &text, &["amqp", "amqps"])?;
            Ok(SecretString::from(text))
        })
        .collect()
}

/// `[retention]`: an age per kind of row, or `"off"` to keep it for ever.
fn retention_settings(
    r: &Section,
) -> Result<crate::store::retention::RetentionSettings, ConfigError> {
    let d = crate::store::retention::RetentionSettings::default();
    let age = |key: &str, default: Option<Duration>| -> Result<Option<Duration>, ConfigError> {
        match r.opt_str(key)?.as_deref().map(str::trim) {
            None => Ok(default),
            Some("off") => Ok(None),
            Some(text) => {
                let d = parse_duration(text).map_err(|p| r.error(key, p))?;
                if d.is_zero() {
                    return Err(r.error(key, "must be longer than zero (or \"off\")"));
                }
                Ok(Some(d))
            }
        }
    };
    let commands = age("commands", d.commands)?;
    let published_events = age("published_events", d.published_events)?;
    if let (Some(commands), Some(events)) = (commands, published_events) {
        if events > commands {
            return Err(r.error(
                "published_events",
                "is longer than `commands`: a command's events go with it",
            ));
        }
    }
    let settings = crate::store::retention::RetentionSettings {
        commands,
        published_events,
        dead_letters: age("dead_letters", d.dead_letters)?,
        interval: age("interval", d.interval)?,
        batch: r.int_or("batch", i64::from(d.batch), 1, 100_000)? as u32,
    };
    r.finish()?;
    Ok(settings)
}
