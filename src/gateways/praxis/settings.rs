//! One `[accounts.praxis.<name>]` table, read into plain settings: the
//! merchant, its secret, its front end and what it believes of Praxis
//! answers, checked key by key when the configuration is loaded. The client
//! and the notification reader are built from them where the worker starts.

use std::fmt;
use std::sync::Arc;

use secrecy::SecretString;

use super::classify::AnswerRules;
use super::notification::PraxisNotifications;
use super::Praxis;
use crate::config::reader::{ConfigError, Section};
use crate::gateways::exchange::REDACTED;
use crate::gateways::http::{self, HttpSettings, HttpTransport};
use crate::gateways::registry::AccountSettings;
use crate::gateways::Gateway;
use crate::notifications::NotificationReader;

/// One `[accounts.praxis.<name>]` table.
#[derive(Clone)]
pub struct AccountConfig {
    /// Without a trailing slash.
    pub base_url: String,
    pub merchant_id: String,
    /// Only ever exposed to the hasher.
    pub merchant_secret: SecretString,
    /// The cashier front end; it fixes the account's base currency.
    pub frontend: String,
    /// What this account believes of Praxis answers (signature enforcement,
    /// the statuses that mean "no such transaction").
    pub rules: AnswerRules,
}

impl fmt::Debug for AccountConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountConfig")
            .field("base_url", &self.base_url)
            .field("merchant_id", &self.merchant_id)
            .field("merchant_secret", &REDACTED)
            .field("frontend", &self.frontend)
            .field("rules", &self.rules)
            .finish()
    }
}

impl AccountSettings for AccountConfig {
    fn read(section: &Section<'_>, http: &HttpSettings) -> Result<AccountConfig, ConfigError> {
        let not_found_statuses = section.ints_or("not_found_statuses", &[])?;
        if let Some(bad) = not_found_statuses.iter().find(|s| **s <= 0) {
            return Err(section.error(
                "not_found_statuses",
                format!("{bad} is not an application error: only positive statuses can say \"not found\""),
            ));
        }
        Ok(AccountConfig {
            base_url: http::base_url(section, "base_url", http)?,
            merchant_id: section.str("merchant_id")?,
            merchant_secret: section.secret("merchant_secret")?,
            frontend: section.str("frontend")?,
            rules: AnswerRules {
                enforce_signature: section.bool_or("enforce_answer_signature", false)?,
                not_found_statuses,
            },
        })
    }

    fn client(&self, account: &str, transport: HttpTransport) -> Arc<dyn Gateway> {
        Arc::new(Praxis::new(account, self.clone(), transport))
    }

    fn notifications(&self) -> Arc<dyn NotificationReader> {
        Arc::new(PraxisNotifications::new(
            &self.merchant_id,
            &self.frontend,
            self.merchant_secret.clone(),
        ))
    }

    fn with_base_url(&self, base_url: &str) -> Arc<dyn AccountSettings> {
        Arc::new(AccountConfig {
            base_url: base_url.trim_end_matches('/').to_string(),
            ..self.clone()
        })
    }
}
