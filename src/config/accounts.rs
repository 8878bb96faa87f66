//! `[accounts.<gateway>.<name>]`: the merchant accounts, each read by its
//! gateway (found in the registry) so that every mistake surfaces at start-up.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::reader::{ConfigError, Section};
use crate::gateways::http::{HttpSettings, HttpTransport};
use crate::gateways::registry;
use crate::gateways::Gateway;

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

/// Every account of `[accounts]`, each checked by building its client once.
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
    Ok(accounts)
}
