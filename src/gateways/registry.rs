//! The list of gateways this worker can talk to. Adding a gateway is one line here.
//!
//! Each entry knows how to read its account table from the config file into
//! plain settings (no I/O: nothing is built while the configuration is read);
//! the settings build the account's client and notification reader where the
//! worker starts. The rest of the worker only ever looks gateways up by name
//! through [`Accounts`]. Of the configuration, this module knows only the
//! leaf reader ([`Section`]), so the configuration can depend on it and not
//! the other way round.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use super::http::{HttpSettings, HttpTransport};
use super::{paymentz, praxis, Gateway};
use crate::config::reader::{ConfigError, Section};
use crate::notifications::NotificationReader;

/// One account's settings, as its gateway read them from its table: checked
/// when the configuration is loaded, turned into a client only where the
/// worker (or `call`, or an operator command) starts. `Debug` never shows a
/// secret.
pub trait AccountSettings: fmt::Debug + Send + Sync + 'static {
    /// Reads the account's table, each key with the getter that checks it;
    /// `http` decides whether a plain-http base URL is allowed.
    fn read(section: &Section<'_>, http: &HttpSettings) -> Result<Self, ConfigError>
    where
        Self: Sized;

    /// The account's client, on the transport every client shares.
    fn client(&self, account: &str, transport: HttpTransport) -> Arc<dyn Gateway>;

    /// The reader of the account's notifications (its signature secret, the
    /// ids they must carry).
    fn notifications(&self) -> Arc<dyn NotificationReader>;

    /// The same account at another base URL: `run --sandbox` points every
    /// account at its simulator.
    fn with_base_url(&self, base_url: &str) -> Arc<dyn AccountSettings>;
}

/// Reads one account table, reporting mistakes by key; `http` decides
/// whether a plain-http base URL is allowed.
pub type ReadFn = fn(&Section<'_>, &HttpSettings) -> Result<Arc<dyn AccountSettings>, ConfigError>;

/// The [`ReadFn`] of a gateway whose settings are `S`.
pub fn read<S: AccountSettings>(
    section: &Section<'_>,
    http: &HttpSettings,
) -> Result<Arc<dyn AccountSettings>, ConfigError> {
    Ok(Arc::new(S::read(section, http)?))
}

/// How to read `[accounts.<name>.<account>]` tables for one gateway.
pub struct GatewayKind {
    /// The name commands use in their `gateway` field.
    pub name: &'static str,
    pub read: ReadFn,
}

/// Every gateway the worker knows, by name.
pub const GATEWAYS: &[GatewayKind] = &[paymentz::KIND, praxis::KIND];

pub fn find(name: &str) -> Option<&'static GatewayKind> {
    GATEWAYS.iter().find(|kind| kind.name == name)
}

/// The configured accounts, each with its ready client.
#[derive(Clone, Default)]
pub struct Accounts {
    by_key: BTreeMap<(String, String), Arc<dyn Gateway>>,
}

impl Accounts {
    /// Builds a client for every `(account name, settings)`, all on one
    /// transport (one connection pool).
    pub fn build<'a>(
        accounts: impl IntoIterator<Item = (&'a str, &'a dyn AccountSettings)>,
        transport: &HttpTransport,
    ) -> Accounts {
        let mut by_key = BTreeMap::new();
        for (account, settings) in accounts {
            let client = settings.client(account, transport.clone());
            by_key.insert((client.name().to_string(), account.to_string()), client);
        }
        Accounts { by_key }
    }

    pub fn get(&self, gateway: &str, account: &str) -> Option<&Arc<dyn Gateway>> {
        self.by_key.get(&(gateway.to_string(), account.to_string()))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, &Arc<dyn Gateway>)> {
        self.by_key
            .iter()
            .map(|((g, a), client)| (g.as_str(), a.as_str(), client))
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    //! The list of gateways is written down in more places than this file:
    //! the contract (JSON Schemas, AsyncAPI, messages.md), the simulator, the
    //! sandbox's accounts and the container stack's. This test fails as soon
    //! as one of them disagrees with [`GATEWAYS`].

    use std::collections::BTreeSet;
    use std::path::Path;

    use super::GATEWAYS;

    type Names = BTreeSet<String>;

    fn registry() -> Names {
        GATEWAYS.iter().map(|kind| kind.name.to_string()).collect()
    }

    fn read(path: &str) -> String {
        let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
        std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
    }

    /// Every `"gateway": {"enum": [...]}` in a JSON Schema, wherever it is nested.
    fn schema_enums(value: &serde_json::Value, found: &mut Vec<Names>) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(list) = map
                    .get("gateway")
                    .and_then(|g| g.get("enum"))
                    .and_then(|e| e.as_array())
                {
                    found.push(
                        list.iter()
                            .filter_map(|v| v.as_str())
                            .map(String::from)
                            .collect(),
                    );
                }
                map.values().for_each(|v| schema_enums(v, found));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| schema_enums(v, found)),
            _ => {}
        }
    }

    /// The words in backticks in `text`.
    fn backticked(text: &str) -> Names {
        text.split('`')
            .skip(1)
            .step_by(2)
            .map(String::from)
            .collect()
    }

    /// The `[accounts.<gateway>.*]` tables of a TOML configuration.
    fn account_gateways(toml_text: &str) -> Names {
        let table: toml::Table = toml::from_str(toml_text).expect("valid TOML");
        table["accounts"]
            .as_table()
            .expect("an [accounts] table")
            .keys()
            .cloned()
            .collect()
    }

    /// Every list, with where it was found.
    fn lists() -> Vec<(String, Names)> {
        let mut lists = vec![];
        for schema in ["schemas/command.schema.json", "schemas/result.schema.json"] {
            let value: serde_json::Value = serde_json::from_str(&read(schema)).unwrap();
            let mut found = vec![];
            schema_enums(&value, &mut found);
            assert!(!found.is_empty(), "{schema} names no gateway enum");
            lists.extend(found.into_iter().map(|names| (schema.to_string(), names)));
        }

        let asyncapi = read("docs/asyncapi.yaml");
        let at = asyncapi
            .find("description: The command's gateway")
            .expect("asyncapi.yaml describes the gateway parameter");
        let line = asyncapi[at..]
            .lines()
            .find(|l| l.trim_start().starts_with("enum: ["))
            .expect("its enum");
        let mut names: Names = line
            .trim()
            .trim_start_matches("enum: [")
            .trim_end_matches(']')
            .split(',')
            .map(|n| n.trim().to_string())
            .collect();
        assert!(
            names.remove("unknown"),
            "the routing key's `unknown` segment"
        );
        lists.push(("docs/asyncapi.yaml (gateway parameter)".into(), names));

        let messages = read("docs/messages.md");
        let field = messages
            .lines()
            .find(|l| l.starts_with("| `gateway` | yes |"))
            .expect("messages.md's command table has a gateway row");
        let cell = field.split('|').nth(3).expect("its description");
        lists.push((
            "docs/messages.md (the gateway field)".into(),
            backticked(cell),
        ));
        let routing = messages
            .lines()
            .find(|l| l.starts_with("Routing keys: `gateway` is"))
            .expect("messages.md's routing keys");
        let sentence = routing.split(", `operation`").next().unwrap_or_default();
        let mut names = backticked(sentence);
        names.remove("gateway");
        lists.push(("docs/messages.md (routing keys)".into(), names));
        let offers = messages
            .lines()
            .find(|l| l.starts_with("| operation |"))
            .expect("messages.md's table of what each gateway offers");
        lists.push((
            "docs/messages.md (what each gateway offers)".into(),
            backticked(offers),
        ));

        lists.push((
            "the simulator (simulator::GatewayId::ALL)".into(),
            crate::simulator::GatewayId::ALL
                .iter()
                .map(|g| g.as_str().to_string())
                .collect(),
        ));
        lists.push((
            "the sandbox (worker::SANDBOX_CONFIG)".into(),
            account_gateways(crate::worker::SANDBOX_CONFIG),
        ));
        lists.push((
            "the container stack (docker/worker.toml)".into(),
            account_gateways(&read("docker/worker.toml")),
        ));
        lists
    }

    #[test]
    fn every_list_of_gateways_names_exactly_the_registered_ones() {
        let registered = registry();
        let disagreeing: Vec<String> = lists()
            .into_iter()
            .filter(|(_, names)| *names != registered)
            .map(|(place, names)| format!("{place}: {names:?}"))
            .collect();
        assert!(
            disagreeing.is_empty(),
            "the registry names {registered:?}, but:\n{}\n(see docs/adding-a-gateway.md)",
            disagreeing.join("\n")
        );
    }

    #[test]
    fn the_check_reads_every_place_and_would_see_a_missing_gateway() {
        // Each list was found (none is empty), so a gateway missing from one
        // of them makes the test above fail rather than pass vacuously.
        for (place, names) in lists() {
            assert!(!names.is_empty(), "{place}: nothing found");
            let mut fewer = names.clone();
            fewer.pop_first();
            assert_ne!(fewer, registry(), "{place}");
        }
    }
}
