//! What a simulator accepts and how it behaves: the credentials of the
//! merchants it knows, the built-in sandbox accounts, token lifetime, the
//! on-demand payment rule, the Praxis timestamp window and the start-up faults.

use std::net::SocketAddr;
use std::time::Duration;

use secrecy::SecretString;

use super::answers::AnswerSettings;
use super::faults::FaultSettings;
use crate::config::{AccountSpec, ConfigError, Section};

/// Sandbox Paymentz partner id.
pub const SANDBOX_PARTNER_ID: &str = "197";
/// Sandbox Paymentz login name (`merchant.username`).
pub const SANDBOX_USERNAME: &str = "sandbox-merchant";
/// Sandbox Paymentz member id (`authentication.memberId`).
pub const SANDBOX_MEMBER_ID: &str = "11359";
/// Sandbox Paymentz secure key. Public on purpose: it only opens the simulator.
pub const SANDBOX_SECURE_KEY: &str = "sandbox-secure-key";
/// Sandbox Praxis merchant id.
pub const SANDBOX_MERCHANT_ID: &str = "Test-Integration-Merchant";
/// Sandbox Praxis merchant secret. Public on purpose: it only opens the simulator.
pub const SANDBOX_MERCHANT_SECRET: &str = "sandbox-merchant-secret";
/// Sandbox Praxis cashier front end (USD).
pub const SANDBOX_FRONTEND: &str = "Integration TEST USD";

/// One Paymentz merchant login the simulator accepts. `Debug` never shows the key.
#[derive(Debug, Clone)]
pub struct PaymentzAccount {
    pub partner_id: String,
    pub username: String,
    pub member_id: String,
    pub secure_key: SecretString,
}

impl PaymentzAccount {
    pub fn sandbox() -> PaymentzAccount {
        PaymentzAccount {
            partner_id: SANDBOX_PARTNER_ID.into(),
            username: SANDBOX_USERNAME.into(),
            member_id: SANDBOX_MEMBER_ID.into(),
            secure_key: SecretString::from(SANDBOX_SECURE_KEY),
        }
    }
}

/// One Praxis merchant the simulator accepts, with the front ends it may use.
/// `Debug` never shows the secret.
#[derive(Debug, Clone)]
pub struct PraxisMerchant {
    pub merchant_id: String,
    pub merchant_secret: SecretString,
    pub frontends: Vec<String>,
}

impl PraxisMerchant {
    pub fn sandbox() -> PraxisMerchant {
        PraxisMerchant {
            merchant_id: SANDBOX_MERCHANT_ID.into(),
            merchant_secret: SecretString::from(SANDBOX_MERCHANT_SECRET),
            frontends: vec![SANDBOX_FRONTEND.into()],
        }
    }
}

/// Everything a simulator needs to start. [`Default`] is the sandbox on an
/// ephemeral loopback port, which is what tests want.
#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    /// Where to listen; port 0 picks a free port (see `RunningSimulator::addr`).
    pub listen: SocketAddr,
    pub paymentz_accounts: Vec<PaymentzAccount>,
    pub praxis_merchants: Vec<PraxisMerchant>,
    /// How long a Paymentz auth token stays valid.
    pub token_ttl: Duration,
    /// Whether unknown ids in the on-demand range create payments on first touch.
    pub auto_payments: bool,
    /// Seed of the probabilistic faults: the same seed gives the same faults
    /// to the same sequence of requests.
    pub seed: u64,
    /// Faults and latency in force from the start (and after `reset`).
    pub faults: FaultSettings,
    /// Answer shapes in force from the start (and after `reset`).
    pub answers: AnswerSettings,
    /// Praxis: how old a request timestamp may be.
    pub praxis_max_age: Duration,
    /// Praxis: how far in the future a timestamp may be, for clock skew.
    pub praxis_future_skew: Duration,
    /// How long `shutdown` lets open requests finish before cutting them off.
    pub shutdown_grace: Duration,
    /// Notifications to the merchant (`--notify-url`; none by default).
    pub notify: super::notify::NotifySettings,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            paymentz_accounts: vec![PaymentzAccount::sandbox()],
            praxis_merchants: vec![PraxisMerchant::sandbox()],
            token_ttl: Duration::from_secs(3600),
            auto_payments: true,
            seed: 0,
            faults: FaultSettings::default(),
            answers: AnswerSettings::default(),
            praxis_max_age: Duration::from_secs(60),
            praxis_future_skew: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(5),
            notify: super::notify::NotifySettings::default(),
        }
    }
}

impl SimulatorConfig {
    /// The sandbox accounts on an ephemeral loopback port.
    pub fn sandbox() -> SimulatorConfig {
        SimulatorConfig::default()
    }

    /// Accepts every account of a configuration file, and only those: a
    /// worker pointed at the simulator with its real config then works as is.
    /// Praxis accounts sharing a merchant id are merged (their front ends
    /// add up); they must then share the secret too.
    pub fn from_accounts(specs: &[AccountSpec]) -> Result<SimulatorConfig, ConfigError> {
        let mut config = SimulatorConfig {
            paymentz_accounts: Vec::new(),
            praxis_merchants: Vec::new(),
            ..SimulatorConfig::default()
        };
        for spec in specs {
            let section = Section::new(&spec.file, spec.table_name(), &spec.table);
            match spec.gateway.as_str() {
                "paymentz" => config.paymentz_accounts.push(PaymentzAccount {
                    partner_id: section.str("partner_id")?,
                    username: section.str("username")?,
                    member_id: section.str("member_id")?,
                    secure_key: section.secret("secure_key")?,
                }),
                "praxis" => {
                    let merchant_id = section.str("merchant_id")?;
                    let secret = section.secret("merchant_secret")?;
                    let frontend = section.str("frontend")?;
                    match config
                        .praxis_merchants
                        .iter_mut()
                        .find(|m| m.merchant_id == merchant_id)
                    {
                        Some(known) => {
                            use secrecy::ExposeSecret;
                            if known.merchant_secret.expose_secret() != secret.expose_secret() {
                                return Err(section.error(
                                    "merchant_secret",
                                    format!(
                                        "differs from another account of merchant `{merchant_id}`; \
                                         the simulator keeps one secret per merchant"
                                    ),
                                ));
                            }
                            if !known.frontends.contains(&frontend) {
                                known.frontends.push(frontend);
                            }
                        }
                        None => config.praxis_merchants.push(PraxisMerchant {
                            merchant_id,
                            merchant_secret: secret,
                            frontends: vec![frontend],
                        }),
                    }
                }
                other => {
                    return Err(ConfigError::Table {
                        file: spec.file.clone(),
                        table: format!("accounts.{other}"),
                        problem: format!(
                        "the simulator does not know gateway `{other}` (known: paymentz, praxis)"
                    ),
                    })
                }
            }
        }
        Ok(config)
    }

    /// One line per accepted credential, secrets left out: printed at start-up
    /// so the person running it knows what to configure on the other side.
    pub fn describe_accounts(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for a in &self.paymentz_accounts {
            lines.push(format!(
                "paymentz: partner_id {} username {} member_id {} (secure key as configured)",
                a.partner_id, a.username, a.member_id
            ));
        }
        for m in &self.praxis_merchants {
            lines.push(format!(
                "praxis: merchant_id {} frontends [{}] (merchant secret as configured)",
                m.merchant_id,
                m.frontends.join(", ")
            ));
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(gateway: &str, name: &str, text: &str) -> AccountSpec {
        AccountSpec::unread("test.toml", gateway, name, text.parse().unwrap())
    }

    #[test]
    fn accepts_every_account_of_a_config() {
        let specs = [
            spec(
                "paymentz",
                "default",
                "base_url = \"http://x\"\npartner_id = \"1\"\nusername = \"u\"\nmember_id = \"2\"\nsecure_key = \"k\"",
            ),
            spec(
                "praxis",
                "usd",
                "merchant_id = \"M\"\nmerchant_secret = \"s\"\nfrontend = \"F USD\"",
            ),
            spec(
                "praxis",
                "eur",
                "merchant_id = \"M\"\nmerchant_secret = \"s\"\nfrontend = \"F EUR\"",
            ),
        ];
        let config = SimulatorConfig::from_accounts(&specs).unwrap();
        assert_eq!(config.paymentz_accounts.len(), 1);
        assert_eq!(config.paymentz_accounts[0].member_id, "2");
        assert_eq!(config.praxis_merchants.len(), 1);
        assert_eq!(config.praxis_merchants[0].frontends, ["F USD", "F EUR"]);
        let described = config.describe_accounts().join("\n");
        assert!(described.contains("member_id 2"));
        assert!(!described.contains("= \"k\"") && !described.contains(" s "));
        assert!(!format!("{config:?}").contains("\"k\""));
    }

    #[test]
    fn a_missing_key_names_its_table() {
        let specs = [spec(
            "paymentz",
            "default",
            "partner_id = \"1\"\nusername = \"u\"",
        )];
        let err = SimulatorConfig::from_accounts(&specs)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "test.toml: [accounts.paymentz.default] key `member_id`: missing"
        );
    }

    #[test]
    fn one_secret_per_praxis_merchant() {
        let specs = [
            spec(
                "praxis",
                "a",
                "merchant_id = \"M\"\nmerchant_secret = \"s1\"\nfrontend = \"A\"",
            ),
            spec(
                "praxis",
                "b",
                "merchant_id = \"M\"\nmerchant_secret = \"s2\"\nfrontend = \"B\"",
            ),
        ];
        let err = SimulatorConfig::from_accounts(&specs)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("[accounts.praxis.b] key `merchant_secret`"),
            "{err}"
        );
        assert!(!err.contains("s1") && !err.contains("s2"), "{err}");
    }
}
