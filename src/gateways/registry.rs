//! The list of gateways this worker can talk to. Adding a gateway is one line here.
//!
//! Each entry knows how to read its account table from the config file and
//! build a client for it; the rest of the worker only ever looks gateways up
//! by name through [`Accounts`].

use std::collections::BTreeMap;
use std::sync::Arc;

use super::http::HttpTransport;
use super::{paymentz, praxis, Gateway};
use crate::config::{AccountSpec, ConfigError, Section};

/// Reads one account table (reporting mistakes by key) and builds its client.
pub type BuildFn = fn(&Section<'_>, &str, HttpTransport) -> Result<Arc<dyn Gateway>, ConfigError>;

/// Reads one account table into the reader of that account's notifications
/// (its signature secret, the ids it must carry).
pub type NotificationsFn =
    fn(&Section<'_>) -> Result<Arc<dyn crate::notifications::NotificationReader>, ConfigError>;

/// How to build clients for one gateway from `[accounts.<name>.<account>]` tables.
pub struct GatewayKind {
    /// The name commands use in their `gateway` field.
    pub name: &'static str,
    pub build: BuildFn,
    /// The reader of its notifications (`POST /notifications/{name}/{account}`).
    pub notifications: NotificationsFn,
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
    /// Builds a client for every account in the config. The specs were already
    /// checked when the config was loaded, so an error here is unexpected but reported the same way.
    pub fn build(
        specs: &[AccountSpec],
        transport: &HttpTransport,
    ) -> Result<Accounts, ConfigError> {
        let mut by_key = BTreeMap::new();
        for spec in specs {
            let client = spec.build(transport.clone())?;
            by_key.insert((spec.gateway.clone(), spec.name.clone()), client);
        }
        Ok(Accounts { by_key })
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
