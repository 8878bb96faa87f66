//! One `[accounts.paymentz.<name>]` table, read into plain settings: the
//! merchant's identifiers and secure key, checked key by key when the
//! configuration is loaded. The client and the notification reader are built
//! from them where the worker starts.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;

use super::notification::PaymentzNotifications;
use super::{wire, PaymentzClient, DEFAULT_TOKEN_REFRESH_AFTER};
use crate::config::reader::{ConfigError, Section};
use crate::gateways::exchange::REDACTED;
use crate::gateways::http::{self, HttpSettings, HttpTransport};
use crate::gateways::registry::AccountSettings;
use crate::gateways::Gateway;
use crate::notifications::NotificationReader;

/// One `[accounts.paymentz.<name>]` table.
#[derive(Clone)]
pub struct AccountConfig {
    /// Without a trailing slash and without the API path.
    pub base_url: String,
    pub partner_id: String,
    pub username: String,
    pub member_id: String,
    pub secure_key: SecretString,
    pub token_refresh_after: Duration,
}

impl fmt::Debug for AccountConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountConfig")
            .field("base_url", &self.base_url)
            .field("partner_id", &self.partner_id)
            .field("username", &self.username)
            .field("member_id", &self.member_id)
            .field("secure_key", &REDACTED)
            .field("token_refresh_after", &self.token_refresh_after)
            .finish()
    }
}

/// Accepts a base URL that already names the API path rather than doubling it.
fn without_api_path(base_url: String) -> String {
    match base_url.strip_suffix(wire::API_PATH) {
        Some(stripped) => stripped.to_string(),
        None => base_url,
    }
}

impl AccountSettings for AccountConfig {
    fn read(section: &Section<'_>, http: &HttpSettings) -> Result<AccountConfig, ConfigError> {
        let base_url = without_api_path(http::base_url(section, "base_url", http)?);
        let token_refresh_after =
            section.duration_or("token_refresh_after", DEFAULT_TOKEN_REFRESH_AFTER)?;
        if token_refresh_after.is_zero() {
            return Err(section.error("token_refresh_after", "must be more than zero"));
        }
        Ok(AccountConfig {
            base_url,
            partner_id: section.str("partner_id")?,
            username: section.str("username")?,
            member_id: section.str("member_id")?,
            secure_key: section.secret("secure_key")?,
            token_refresh_after,
        })
    }

    fn client(&self, account: &str, transport: HttpTransport) -> Arc<dyn Gateway> {
        Arc::new(PaymentzClient::new(account, self.clone(), transport))
    }

    fn notifications(&self) -> Arc<dyn NotificationReader> {
        Arc::new(PaymentzNotifications::new(self.secure_key.clone()))
    }

    fn with_base_url(&self, base_url: &str) -> Arc<dyn AccountSettings> {
        Arc::new(AccountConfig {
            base_url: without_api_path(base_url.trim_end_matches('/').to_string()),
            ..self.clone()
        })
    }
}
