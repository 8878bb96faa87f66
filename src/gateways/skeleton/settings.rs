//! One `[accounts.skeleton.<name>]` table, read into plain settings. Copy it
//! with the rest: one field per key, each read with the [`Section`] getter
//! that checks it (a secret with `secret`, so that a short one is refused),
//! and nothing built here: no client, no connection. The worker builds the
//! client from these settings when it starts.

use std::fmt;
use std::sync::Arc;

use secrecy::SecretString;

use super::notification::SkeletonNotifications;
use super::Skeleton;
use crate::config::reader::{ConfigError, Section};
use crate::gateways::exchange::REDACTED;
use crate::gateways::http::{self, HttpSettings, HttpTransport};
use crate::gateways::registry::AccountSettings;
use crate::gateways::Gateway;
use crate::notifications::NotificationReader;

/// One `[accounts.skeleton.<name>]` table.
#[derive(Clone)]
pub struct AccountConfig {
    /// Without a trailing slash.
    pub base_url: String,
    /// Read with `Section::secret`, so that the config refuses a short one.
    pub api_key: SecretString,
}

/// Secrets never reach a log, even through `{:?}`.
impl fmt::Debug for AccountConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &REDACTED)
            .finish()
    }
}

impl AccountSettings for AccountConfig {
    fn read(section: &Section<'_>, http: &HttpSettings) -> Result<AccountConfig, ConfigError> {
        Ok(AccountConfig {
            base_url: http::base_url(section, "base_url", http)?,
            api_key: section.secret("api_key")?,
        })
    }

    fn client(&self, account: &str, transport: HttpTransport) -> Arc<dyn Gateway> {
        Arc::new(Skeleton::new(account, self.clone(), transport))
    }

    /// The notification reader gets what it needs to check a signature
    /// (here nothing: the skeleton has no signature rule yet).
    fn notifications(&self) -> Arc<dyn NotificationReader> {
        Arc::new(SkeletonNotifications)
    }

    fn with_base_url(&self, base_url: &str) -> Arc<dyn AccountSettings> {
        Arc::new(AccountConfig {
            base_url: base_url.trim_end_matches('/').to_string(),
            ..self.clone()
        })
    }
}
