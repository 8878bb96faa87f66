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
