//! `[amqp]` and `[database]`: where the broker and the database are, and the
//! limits of the worker's sessions with them. `$AMQP_URL` and `$DATABASE_URL`
//! override the URLs of the file.

use std::time::Duration;

use secrecy::SecretString;

use super::reader::{ConfigError, Section};

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

/// `[amqp]`; `over` is `$AMQP_URL` when set.
pub(super) fn amqp(amqp: &Section, over: Option<String>) -> Result<AmqpSettings, ConfigError> {
    let urls = amqp_urls(amqp, over)?;
    let settings = AmqpSettings {
        url: urls[0].clone(),
        urls,
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
    Ok(settings)
}

/// `[database]`; `over` is `$DATABASE_URL` when set.
pub(super) fn database(
    db: &Section,
    over: Option<String>,
) -> Result<DatabaseSettings, ConfigError> {
    let mut db_url = db.opt_str("url")?;
    if let Some(over) = over {
        db_url = Some(over);
    }
    let db_url = db_url.unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/backoffice".into());
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
    Ok(database)
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
