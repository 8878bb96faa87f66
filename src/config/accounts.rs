//! `[accounts.<gateway>.<name>]`: the merchant accounts, each table read by
//! its gateway (found in the registry) into plain settings, so that every
//! mistake surfaces at start-up and nothing is built while reading. The
//! clients are built from the settings where the worker starts
//! ([`Config::clients`](super::Config::clients)).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::reader::{ConfigError, Section};
use crate::gateways::http::HttpSettings;
use crate::gateways::registry::{self, AccountSettings};

/// One `[accounts.<gateway>.<name>]` table: its settings, as its gateway
/// read them, and the table as written (the simulator reads from it the
/// credentials it must accept). Its `Debug` shows key names only.
#[derive(Clone)]
pub struct AccountSpec {
    pub file: PathBuf,
    pub gateway: String,
    pub name: String,
    pub table: toml::Table,
    pub settings: Arc<dyn AccountSettings>,
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

    /// Points the account at another base URL (`run --sandbox`: its simulator).
    pub fn point_at(&mut self, base_url: &str) {
        self.settings = self.settings.with_base_url(base_url);
        self.table
            .insert("base_url".into(), toml::Value::String(base_url.into()));
    }
}

/// A test's account made from its table alone, for code that reads only the
/// table or the names (the simulator's accounts, the rules' checks): its
/// settings were never read, and building its client is a bug in the test.
#[cfg(test)]
impl AccountSpec {
    pub fn unread(file: &str, gateway: &str, name: &str, table: toml::Table) -> AccountSpec {
        AccountSpec {
            file: file.into(),
            gateway: gateway.into(),
            name: name.into(),
            table,
            settings: Arc::new(Unread),
        }
    }
}

#[cfg(test)]
#[derive(Debug)]
struct Unread;

#[cfg(test)]
impl AccountSettings for Unread {
    fn read(_: &Section<'_>, _: &HttpSettings) -> Result<Unread, ConfigError> {
        Ok(Unread)
    }

    fn client(
        &self,
        _: &str,
        _: crate::gateways::http::HttpTransport,
    ) -> Arc<dyn crate::gateways::Gateway> {
        unreachable!("a test's unread account has no client")
    }

    fn notifications(&self) -> Arc<dyn crate::notifications::NotificationReader> {
        unreachable!("a test's unread account has no notification reader")
    }

    fn with_base_url(&self, _: &str) -> Arc<dyn AccountSettings> {
        Arc::new(Unread)
    }
}

/// Every account of `[accounts]`, each read and checked by its gateway.
pub(super) fn accounts(
    file: &Path,
    by_gateway: Option<&toml::Table>,
    http: &HttpSettings,
) -> Result<Vec<AccountSpec>, ConfigError> {
    let mut accounts = Vec::new();
    let Some(by_gateway) = by_gateway else {
        return Ok(accounts);
    };
    let section = Section::new(file, "accounts".into(), by_gateway);
    for gateway in by_gateway.keys() {
        let Some(named) = section.subtable(gateway)? else {
            continue;
        };
        let per_gateway = Section::new(file, format!("accounts.{gateway}"), named);
        for name in named.keys() {
            let table = per_gateway.subtable(name)?.expect("key exists").clone();
            let table_name = format!("accounts.{gateway}.{name}");
            let settings = read(file, gateway, table_name, &table, http)?;
            accounts.push(AccountSpec {
                file: file.to_path_buf(),
                gateway: gateway.clone(),
                name: name.clone(),
                table,
                settings,
            });
        }
    }
    Ok(accounts)
}

/// One account table, read by its gateway: every key checked, none unknown,
/// no secret too short.
fn read(
    file: &Path,
    gateway: &str,
    table_name: String,
    table: &toml::Table,
    http: &HttpSettings,
) -> Result<Arc<dyn AccountSettings>, ConfigError> {
    let kind = registry::find(gateway).ok_or_else(|| ConfigError::Table {
        file: file.to_path_buf(),
        table: format!("accounts.{gateway}"),
        problem: format!(
            "unknown gateway `{gateway}` (known: {})",
            registry::GATEWAYS
                .iter()
                .map(|k| k.name)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })?;
    let section = Section::new(file, table_name, table);
    let settings = (kind.read)(&section, http)?;
    section.finish()?;
    section.check_secrets()?;
    Ok(settings)
}
