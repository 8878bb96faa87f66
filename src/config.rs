//! The configuration file: where it is, what it holds, and the messages it gives
//! when something in it is wrong.
//!
//! The file is TOML (see `shared/spec/config.md` for the keys deployments rely
//! on). `${NAME}` in any string is replaced by that environment variable, and
//! `$AMQP_URL` / `$DATABASE_URL` override the connection URLs. Every mistake is
//! reported with the file, the table and the key, because the person reading
//! the message is fixing a deployment at start-up, not reading our code.
//! Secrets go straight into [`SecretString`] so they cannot be printed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use crate::gateways::http::{self, HttpSettings, HttpTransport, ProxyUrl};
use crate::gateways::registry;
use crate::gateways::Gateway;

/// The file name looked for in the working directory when no path is given.
pub const DEFAULT_FILE: &str = "backoffice.toml";
pub const CONFIG_ENV: &str = "BACKOFFICE_CONFIG";

/// `[http] max_answer_bytes` bounds: below 64 KiB a transaction list page may
/// not fit; above 1 GiB the cap no longer protects anything.
const MIN_ANSWER_BYTES: i64 = 64 * 1024;
const MAX_ANSWER_BYTES: i64 = 1024 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no configuration file: pass --config PATH, set ${CONFIG_ENV}, or create {DEFAULT_FILE} in the working directory (or use --sandbox to try the worker against its built-in simulator)")]
    NotFound,
    #[error("cannot read configuration file {file}: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: not valid TOML: {message}")]
    Syntax { file: PathBuf, message: String },
    #[error("{file}: [{table}] key `{key}`: {problem}")]
    Key {
        file: PathBuf,
        table: String,
        key: String,
        problem: String,
    },
    #[error("{file}: [{table}]: {problem}")]
    Table {
        file: PathBuf,
        table: String,
        problem: String,
    },
}

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

/// The shortest secret accepted: a shorter one cannot be told apart from
/// ordinary text, so it could not be scrubbed from what gateways echo.
pub const MIN_SECRET_CHARS: usize = 8;

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

/// Replaces `${NAME}` in every string value; a missing variable names itself and the key.
fn substitute_env(
    file: &Path,
    table_name: &str,
    table: &mut toml::Table,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    for (key, value) in table.iter_mut() {
        substitute_value(file, table_name, key, value, env)?;
    }
    Ok(())
}

fn substitute_value(
    file: &Path,
    table_name: &str,
    key: &str,
    value: &mut toml::Value,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    match value {
        toml::Value::String(text) => {
            *text = expand(text, env).map_err(|problem| ConfigError::Key {
                file: file.to_path_buf(),
                table: table_name.to_string(),
                key: key.to_string(),
                problem,
            })?;
        }
        toml::Value::Table(inner) => {
            let name = if table_name.is_empty() {
                key.to_string()
            } else {
                format!("{table_name}.{key}")
            };
            substitute_env(file, &name, inner, env)?;
        }
        toml::Value::Array(items) => {
            for item in items {
                substitute_value(file, table_name, key, item, env)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn expand(text: &str, env: &impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "unclosed `${` in value".to_string())?;
        let name = &after[..end];
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!(
                "`${{{name}}}` is not a valid environment variable reference"
            ));
        }
        let value = env(name).ok_or_else(|| format!("environment variable {name} is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// One table of the file, read key by key so each mistake can name its key.
/// Unknown keys are reported by [`Section::finish`].
pub struct Section<'a> {
    file: &'a Path,
    name: String,
    table: &'a toml::Table,
    used: Mutex<BTreeSet<String>>,
    /// The secrets read, with their length in characters (never their value).
    secrets: Mutex<Vec<(String, usize)>>,
}

impl<'a> Section<'a> {
    pub fn new(file: &'a Path, name: String, table: &'a toml::Table) -> Section<'a> {
        Section {
            file,
            name,
            table,
            used: Mutex::new(BTreeSet::new()),
            secrets: Mutex::new(Vec::new()),
        }
    }

    pub fn error(&self, key: &str, problem: impl Into<String>) -> ConfigError {
        ConfigError::Key {
            file: self.file.to_path_buf(),
            table: self.name.clone(),
            key: key.to_string(),
            problem: problem.into(),
        }
    }

    pub fn get(&self, key: &str) -> Option<&'a toml::Value> {
        self.used
            .lock()
            .expect("not poisoned")
            .insert(key.to_string());
        self.table.get(key)
    }

    /// A key's value as written, for the reader to check itself (marked as used).
    pub fn raw(&self, key: &str) -> Option<&'a toml::Value> {
        self.get(key)
    }

    pub fn subtable(&self, key: &str) -> Result<Option<&'a toml::Table>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(toml::Value::Table(t)) => Ok(Some(t)),
            Some(_) => Err(self.error(key, "must be a table")),
        }
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(toml::Value::Integer(i)) => Ok(Some(i.to_string())),
            Some(_) => Err(self.error(key, "must be a string")),
        }
    }

    /// A required, non-empty string.
    pub fn str(&self, key: &str) -> Result<String, ConfigError> {
        match self.opt_str(key)? {
            Some(s) if !s.trim().is_empty() => Ok(s),
            Some(_) => Err(self.error(key, "must not be empty")),
            None => Err(self.error(key, "missing")),
        }
    }

    pub fn str_or(&self, key: &str, default: &str) -> Result<String, ConfigError> {
        Ok(self.opt_str(key)?.unwrap_or_else(|| default.to_string()))
    }

    /// A queue or exchange name: 1 to 255 bytes, as AMQP allows.
    pub fn amqp_name(&self, key: &str, default: &str) -> Result<String, ConfigError> {
        let name = self.str_or(key, default)?;
        if name.is_empty() || name.len() > 255 {
            return Err(self.error(key, "must be 1 to 255 bytes"));
        }
        Ok(name)
    }

    /// A required secret. It is moved into a type that never prints it.
    /// Its length is remembered for [`Section::check_secrets`].
    pub fn secret(&self, key: &str) -> Result<SecretString, ConfigError> {
        let text = self.str(key)?;
        self.secrets
            .lock()
            .expect("not poisoned")
            .push((key.to_string(), text.chars().count()));
        Ok(SecretString::from(text))
    }

    /// Refuses a secret shorter than [`MIN_SECRET_CHARS`]: the worker scrubs
    /// secrets from whatever a gateway echoes by looking for them, and a
    /// secret of a few characters would be found in ordinary text (or not
    /// looked for at all). Says which key, never the value.
    pub fn check_secrets(&self) -> Result<(), ConfigError> {
        let secrets = self.secrets.lock().expect("not poisoned");
        match secrets.iter().find(|(_, len)| *len < MIN_SECRET_CHARS) {
            Some((key, len)) => Err(self.error(
                key,
                format!("is {len} characters long; a secret must have at least {MIN_SECRET_CHARS}"),
            )),
            None => Ok(()),
        }
    }

    /// A required `http`/`https` URL, returned without a trailing slash. It may
    /// carry no credentials, query or fragment: gateways authenticate otherwise,
    /// and the URL is copied into every attempt record.
    pub fn base_url(&self, key: &str) -> Result<String, ConfigError> {
        let text = self.str(key)?;
        self.check_url(key, &text, &["http", "https"])?;
        let url = Url::parse(&text).map_err(|e| self.error(key, format!("malformed URL: {e}")))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(self.error(key, "must not contain credentials"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(self.error(key, "must not have a query or fragment"));
        }
        Ok(text.trim_end_matches('/').to_string())
    }

    /// A gateway account's base URL ([`Section::base_url`]), refused when it is
    /// plain `http` to another machine and `[http] allow_http` is not set.
    pub fn gateway_base_url(
        &self,
        key: &str,
        settings: &HttpSettings,
    ) -> Result<String, ConfigError> {
        let text = self.base_url(key)?;
        let url = Url::parse(&text).map_err(|e| self.error(key, format!("malformed URL: {e}")))?;
        match http::refuse_base_url(&url, settings) {
            Some(problem) => Err(self.error(key, problem)),
            None => Ok(text),
        }
    }

    pub fn check_url(&self, key: &str, text: &str, schemes: &[&str]) -> Result<(), ConfigError> {
        let url = Url::parse(text).map_err(|e| self.error(key, format!("malformed URL: {e}")))?;
        if !schemes.contains(&url.scheme()) {
            return Err(self.error(
                key,
                format!(
                    "URL scheme must be one of {}, not `{}`",
                    schemes.join(", "),
                    url.scheme()
                ),
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(self.error(key, "URL has no host"));
        }
        Ok(())
    }

    pub fn int_or(&self, key: &str, default: i64, min: i64, max: i64) -> Result<i64, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(toml::Value::Integer(i)) if (min..=max).contains(i) => Ok(*i),
            Some(toml::Value::Integer(_)) => {
                Err(self.error(key, format!("must be between {min} and {max}")))
            }
            Some(_) => Err(self.error(key, "must be an integer")),
        }
    }

    /// A list of integers (`[1007, 1010]`).
    pub fn ints_or(&self, key: &str, default: &[i64]) -> Result<Vec<i64>, ConfigError> {
        match self.get(key) {
            None => Ok(default.to_vec()),
            Some(toml::Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    toml::Value::Integer(i) => Ok(*i),
                    _ => Err(self.error(key, "must be a list of integers")),
                })
                .collect(),
            Some(_) => Err(self.error(key, "must be a list of integers")),
        }
    }

    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(toml::Value::Boolean(b)) => Ok(*b),
            Some(_) => Err(self.error(key, "must be true or false")),
        }
    }

    pub fn duration_or(&self, key: &str, default: Duration) -> Result<Duration, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(toml::Value::String(s)) => parse_duration(s).map_err(|p| self.error(key, p)),
            Some(_) => Err(self.error(
                key,
                "must be a duration string such as \"500ms\", \"30s\", \"5m\"",
            )),
        }
    }

    pub fn durations_or(
        &self,
        key: &str,
        default: Vec<Duration>,
    ) -> Result<Vec<Duration>, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(toml::Value::Array(items)) if !items.is_empty() => items
                .iter()
                .map(|item| match item {
                    toml::Value::String(s) => parse_duration(s).map_err(|p| self.error(key, p)),
                    _ => Err(self.error(key, "must be a list of duration strings")),
                })
                .collect(),
            Some(_) => Err(self.error(key, "must be a non-empty list of duration strings")),
        }
    }

    /// Reports the first key nobody asked for: a typo should stop start-up, not be ignored.
    pub fn finish(&self) -> Result<(), ConfigError> {
        let used = self.used.lock().expect("not poisoned");
        match self.table.keys().find(|k| !used.contains(*k)) {
            Some(unknown) => Err(self.error(unknown, "unknown key")),
            None => Ok(()),
        }
    }
}

/// `"250ms"`, `"30s"`, `"5m"`, `"2h"`, `"1d"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}` has no unit (use ms, s, m, h or d)"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as \"30s\""))?;
    let d = match unit.trim() {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        "d" => Duration::from_secs(n * 86400),
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}` (use ms, s, m, h or d)"
            ))
        }
    };
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    const SPEC_EXAMPLE: &str = r#"
[amqp]
url = "amqp://guest:guest@127.0.0.1:5672/%2f"    # overridden by $AMQP_URL

[database]
url = "postgres://postgres@127.0.0.1:5432/backoffice"   # overridden by $DATABASE_URL

[accounts.paymentz.default]
base_url = "https://test.paymentz.com"
partner_id = "197"
username = "merchant-login"
member_id = "11359"
secure_key = "${PAYMENTZ_SECURE_KEY}"

[accounts.praxis.default]
base_url = "https://pci-gw-test.praxispay.com"
merchant_id = "Test-Integration-Merchant"
merchant_secret = "${PRAXIS_MERCHANT_SECRET}"
frontend = "Integration TEST USD"
"#;

    fn env_with_secrets(name: &str) -> Option<String> {
        match name {
            "PAYMENTZ_SECURE_KEY" => Some("pz-secret".into()),
            "PRAXIS_MERCHANT_SECRET" => Some("px-secret".into()),
            _ => None,
        }
    }

    fn parse(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        Config::parse(Path::new("test.toml"), text, env)
    }

    #[test]
    fn accepts_the_spec_example_as_written() {
        let config = parse(SPEC_EXAMPLE, env_with_secrets).unwrap();
        assert_eq!(config.accounts.len(), 2);
        assert_eq!(config.amqp.command_queue, "backoffice.commands");
        assert_eq!(
            config.database.url.expose_secret(),
            "postgres://postgres@127.0.0.1:5432/backoffice"
        );
    }

    #[test]
    fn environment_overrides_connection_urls() {
        let config = parse(SPEC_EXAMPLE, |n| match n {
            "AMQP_URL" => Some("amqp://u:p@broker:5672/vh".into()),
            "DATABASE_URL" => Some("postgres://db/other".into()),
            other => env_with_secrets(other),
        })
        .unwrap();
        assert_eq!(config.amqp.url.expose_secret(), "amqp://u:p@broker:5672/vh");
        assert_eq!(config.database.url.expose_secret(), "postgres://db/other");
    }

    #[test]
    fn a_missing_variable_names_itself_and_the_key() {
        let err = parse(SPEC_EXAMPLE, |n| match n {
            "PRAXIS_MERCHANT_SECRET" => Some("x".into()),
            _ => None,
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("PAYMENTZ_SECURE_KEY"), "{err}");
        assert!(err.contains("secure_key"), "{err}");
        assert!(err.contains("accounts.paymentz.default"), "{err}");
        assert!(err.contains("test.toml"), "{err}");
    }

    #[test]
    fn mistakes_name_file_table_and_key() {
        let missing = SPEC_EXAMPLE.replace("member_id = \"11359\"\n", "");
        let err = parse(&missing, env_with_secrets).unwrap_err().to_string();
        assert_eq!(
            err,
            "test.toml: [accounts.paymentz.default] key `member_id`: missing"
        );

        let bad_url = SPEC_EXAMPLE.replace("https://test.paymentz.com", "not a url");
        let err = parse(&bad_url, env_with_secrets).unwrap_err().to_string();
        assert!(
            err.starts_with("test.toml: [accounts.paymentz.default] key `base_url`: malformed URL"),
            "{err}"
        );

        let unknown_gateway = format!("{SPEC_EXAMPLE}\n[accounts.stripe.default]\nkey = \"x\"\n");
        let err = parse(&unknown_gateway, env_with_secrets)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("[accounts.stripe]") && err.contains("unknown gateway `stripe`"),
            "{err}"
        );

        let typo = SPEC_EXAMPLE.replace("frontend =", "frontent =");
        let err = parse(&typo, env_with_secrets).unwrap_err().to_string();
        assert!(
            err.contains("[accounts.praxis.default] key `frontend`: missing"),
            "{err}"
        );

        let bad_amqp = SPEC_EXAMPLE.replace("amqp://guest", "http://guest");
        let err = parse(&bad_amqp, env_with_secrets).unwrap_err().to_string();
        assert!(err.contains("[amqp] key `url`: URL scheme"), "{err}");

        let bad_duration = format!("{SPEC_EXAMPLE}\n[worker]\nlease = \"90 parsecs\"\n");
        let err = parse(&bad_duration, env_with_secrets)
            .unwrap_err()
            .to_string();
        assert!(err.contains("[worker] key `lease`"), "{err}");
    }

    #[test]
    fn several_amqp_urls_from_the_file_or_the_environment() {
        let urls = |config: &Config| {
            config
                .amqp
                .urls
                .iter()
                .map(|u| u.expose_secret().to_string())
                .collect::<Vec<_>>()
        };
        let one = parse(SPEC_EXAMPLE, env_with_secrets).unwrap();
        assert_eq!(urls(&one), ["amqp://guest:guest@127.0.0.1:5672/%2f"]);
        let cluster = SPEC_EXAMPLE.replace(
            "url = \"amqp://guest:guest@127.0.0.1:5672/%2f\"",
            "urls = [\"amqp://u:p@a:5701/%2f\", \"amqp://u:p@b:5702/%2f\"]",
        );
        let config = parse(&cluster, env_with_secrets).unwrap();
        assert_eq!(
            urls(&config),
            ["amqp://u:p@a:5701/%2f", "amqp://u:p@b:5702/%2f"]
        );
        assert_eq!(config.amqp.url.expose_secret(), "amqp://u:p@a:5701/%2f");
        let config = parse(&cluster, |name| match name {
            "AMQP_URL" => Some("amqp://x@n1:5672/v, amqp://x@n2:5672/v".into()),
            other => env_with_secrets(other),
        })
        .unwrap();
        assert_eq!(urls(&config), ["amqp://x@n1:5672/v", "amqp://x@n2:5672/v"]);

        let both = cluster.replace("[amqp]", "[amqp]\nurl = \"amqp://a/%2f\"");
        let err = parse(&both, env_with_secrets).unwrap_err().to_string();
        assert!(err.contains("[amqp] key `urls`: give either"), "{err}");
        let bad = cluster.replace("amqp://u:p@b:5702/%2f", "http://secret-pass@b/");
        let err = parse(&bad, env_with_secrets).unwrap_err().to_string();
        assert!(err.contains("[amqp] key `urls`: URL scheme"), "{err}");
        assert!(!err.contains("secret-pass"), "{err}");
        let err = parse(&cluster, |name| match name {
            "AMQP_URL" => Some("amqp://n1/v,".into()),
            other => env_with_secrets(other),
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("$AMQP_URL"), "{err}");
    }

    #[test]
    fn retention_has_long_defaults_off_switches_and_checked_values() {
        let config = parse(SPEC_EXAMPLE, env_with_secrets).unwrap();
        let days = |d: u64| Some(Duration::from_secs(d * 86_400));
        assert_eq!(config.retention.commands, days(400));
        assert_eq!(config.retention.published_events, days(7));
        assert_eq!(config.retention.dead_letters, days(90));
        let text = format!(
            "{SPEC_EXAMPLE}\n[retention]\ncommands = \"off\"\ninterval = \"off\"\nbatch = 50\n"
        );
        let config = parse(&text, env_with_secrets).unwrap();
        assert_eq!(config.retention.commands, None);
        assert_eq!(config.retention.interval, None);
        assert_eq!(config.retention.batch, 50);
        for (bad, says) in [
            (
                "commands = \"0d\"",
                "key `commands`: must be longer than zero",
            ),
            ("commands = \"forever\"", "key `commands`"),
            (
                "commands = \"5d\"",
                "key `published_events`: is longer than `commands`",
            ),
            ("batch = 0", "key `batch`"),
            ("keep = \"1d\"", "keep"),
        ] {
            let text = format!("{SPEC_EXAMPLE}\n[retention]\n{bad}\n");
            let err = parse(&text, env_with_secrets).unwrap_err().to_string();
            assert!(
                err.contains("[retention]") && err.contains(says),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn plain_http_to_another_machine_needs_allow_http() {
        let remote = SPEC_EXAMPLE.replace("https://test.paymentz.com", "http://test.paymentz.com");
        let err = parse(&remote, env_with_secrets).unwrap_err().to_string();
        assert!(
            err.starts_with("test.toml: [accounts.paymentz.default] key `base_url`: plain http"),
            "{err}"
        );
        assert!(
            err.contains("allow_http = true") && err.contains("[http]"),
            "{err}"
        );

        let allowed = format!("{remote}\n[http]\nallow_http = true\n");
        let config = parse(&allowed, env_with_secrets).unwrap();
        assert!(config.http.allow_http);

        // Loopback needs nothing: that is where the simulator listens.
        let local =
            SPEC_EXAMPLE.replace("https://pci-gw-test.praxispay.com", "http://127.0.0.1:8099");
        assert!(!parse(&local, env_with_secrets).unwrap().http.allow_http);

        let not_bool = format!("{SPEC_EXAMPLE}\n[http]\nallow_http = \"yes\"\n");
        let err = parse(&not_bool, env_with_secrets).unwrap_err().to_string();
        assert_eq!(
            err,
            "test.toml: [http] key `allow_http`: must be true or false"
        );
    }

    #[test]
    fn http_defaults_and_limits() {
        let config = parse(SPEC_EXAMPLE, env_with_secrets).unwrap();
        assert_eq!(config.http, HttpSettings::default());
        assert_eq!(config.http.proxy, None);
        assert_eq!(config.http.max_answer_bytes, 4 * 1024 * 1024);

        let set = format!(
            "{SPEC_EXAMPLE}\n[http]\nproxy = \"http://proxy.internal:3128\"\nmax_answer_bytes = 1048576\n"
        );
        let config = parse(&set, env_with_secrets).unwrap();
        assert_eq!(
            config.http.proxy.as_ref().map(|p| p.as_str()),
            Some("http://proxy.internal:3128/")
        );
        assert_eq!(config.http.max_answer_bytes, 1 << 20);

        let bad_proxy = format!("{SPEC_EXAMPLE}\n[http]\nproxy = \"socks5://p:1080\"\n");
        let err = parse(&bad_proxy, env_with_secrets).unwrap_err().to_string();
        assert!(err.starts_with("test.toml: [http] key `proxy`: "), "{err}");

        let tiny = format!("{SPEC_EXAMPLE}\n[http]\nmax_answer_bytes = 10\n");
        let err = parse(&tiny, env_with_secrets).unwrap_err().to_string();
        assert!(
            err.starts_with("test.toml: [http] key `max_answer_bytes`: must be between"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let text = SPEC_EXAMPLE.replace("[database]\n", "[database]\npool = 3\n");
        let err = parse(&text, env_with_secrets).unwrap_err().to_string();
        assert_eq!(err, "test.toml: [database] key `pool`: unknown key");
    }

    #[test]
    fn the_admin_table_names_its_mistakes() {
        let config = parse(SPEC_EXAMPLE, env_with_secrets).unwrap();
        assert_eq!(config.admin.listen, None, "no admin listener unless asked");
        let with = |table: &str| format!("{SPEC_EXAMPLE}\n[admin]\n{table}\n");
        let config = parse(
            &with("listen = \"127.0.0.1:9090\"\nmax_connections = 8\nheader_timeout = \"2s\""),
            env_with_secrets,
        )
        .unwrap();
        assert_eq!(config.admin.listen, Some("127.0.0.1:9090".parse().unwrap()));
        assert_eq!(config.admin.limits.max_connections, 8);
        assert_eq!(config.admin.limits.header_timeout, Duration::from_secs(2));
        let err = parse(&with("listen = \"localhost\""), env_with_secrets)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("test.toml: [admin] key `listen`: `localhost` is not an address"),
            "{err}"
        );
        let err = parse(&with("request_timeout = \"0s\""), env_with_secrets)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "test.toml: [admin] key `request_timeout`: must be longer than zero"
        );
    }

    #[test]
    fn the_console_table_takes_two_distinct_secret_tokens() {
        let config = parse(SPEC_EXAMPLE, env_with_secrets).unwrap();
        assert!(!config.console.enabled(), "no tokens: no console");
        let with = |table: &str| format!("{SPEC_EXAMPLE}\n[console]\n{table}\n");
        let env = |n: &str| match n {
            "V" => Some("viewer-token-1234".into()),
            "S" => Some("short-token-12".into()),
            "O" => Some("operator-token-1234".into()),
            other => env_with_secrets(other),
        };
        let config = parse(
            &with("viewer_token = \"${V}\"\noperator_token = \"${O}\""),
            env,
        )
        .unwrap();
        assert!(config.console.enabled());
        assert_eq!(
            config
                .console
                .operator_token
                .as_ref()
                .unwrap()
                .expose_secret(),
            "operator-token-1234"
        );
        assert!(!format!("{config:?}").contains("operator-token-1234"));
        let err = parse(&with("viewer_token = \"short\""), env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("[console] key `viewer_token`"), "{err}");
        assert!(!err.contains("short\""), "{err}");
        let err = parse(
            &with("viewer_token = \"${V}\"\noperator_token = \"${V}\""),
            env,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("must differ"), "{err}");
        let err = parse(&with("viewer_token = \"${S}\""), env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("at least 16"), "{err}");
        assert!(!err.contains("short-token-12"), "{err}");
        let err = parse(&with("viewer = \"${V}\""), env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown key"), "{err}");
    }

    #[test]
    fn secrets_never_print() {
        let config = parse(SPEC_EXAMPLE, env_with_secrets).unwrap();
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("pz-secret") && !debug.contains("px-secret"),
            "{debug}"
        );
    }

    #[test]
    fn a_short_secret_is_refused_naming_file_table_and_key() {
        let err = parse(SPEC_EXAMPLE, |n| match n {
            "PAYMENTZ_SECURE_KEY" => Some("pz-secret".into()),
            "PRAXIS_MERCHANT_SECRET" => Some("seven77".into()),
            _ => None,
        })
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "test.toml: [accounts.praxis.default] key `merchant_secret`: is 7 characters long; a secret must have at least 8"
        );
        assert!(!err.contains("seven77"));
        let config = parse(SPEC_EXAMPLE, |n| match n {
            "PAYMENTZ_SECURE_KEY" => Some("eight888".into()),
            "PRAXIS_MERCHANT_SECRET" => Some("eight888".into()),
            _ => None,
        });
        assert!(config.is_ok(), "8 characters are enough");
    }

    #[test]
    fn body_cap_and_statement_timeout() {
        let config = parse(SPEC_EXAMPLE, env_with_secrets).unwrap();
        assert_eq!(config.amqp.max_command_bytes, DEFAULT_MAX_COMMAND_BYTES);
        assert_eq!(config.database.statement_timeout, DEFAULT_STATEMENT_TIMEOUT);
        let text = SPEC_EXAMPLE
            .replace("[amqp]\n", "[amqp]\nmax_command_bytes = 131072\n")
            .replace("[database]\n", "[database]\nstatement_timeout = \"5s\"\n");
        let config = parse(&text, env_with_secrets).unwrap();
        assert_eq!(config.amqp.max_command_bytes, 131_072);
        assert_eq!(config.database.statement_timeout, Duration::from_secs(5));
        let small = SPEC_EXAMPLE.replace("[amqp]\n", "[amqp]\nmax_command_bytes = 100\n");
        let err = parse(&small, env_with_secrets).unwrap_err().to_string();
        assert!(
            err.contains("[amqp] key `max_command_bytes`: must be between"),
            "{err}"
        );
        let zero = SPEC_EXAMPLE.replace("[database]\n", "[database]\nstatement_timeout = \"0s\"\n");
        let err = parse(&zero, env_with_secrets).unwrap_err().to_string();
        assert!(err.contains("[database] key `statement_timeout`"), "{err}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5y").is_err());
    }
}
