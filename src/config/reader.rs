//! The key-tracking TOML reader every part of the configuration is read
//! with: one [`Section`] per table, typed getters that name the file, the
//! table and the key in every mistake, unknown keys refused, durations, and
//! `${NAME}` substitution. It imports nothing from the crate, so that any
//! module (a gateway's settings, the notification rules) can read its own
//! table without depending on the rest of the configuration.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

/// The file name looked for in the working directory when no path is given.
pub const DEFAULT_FILE: &str = "backoffice.toml";
pub const CONFIG_ENV: &str = "BACKOFFICE_CONFIG";

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

/// The shortest secret accepted: a shorter one cannot be told apart from
/// ordinary text, so it could not be scrubbed from what gateways echo.
pub const MIN_SECRET_CHARS: usize = 8;

/// Replaces `${NAME}` in every string value; a missing variable names itself and the key.
pub fn substitute_env(
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
