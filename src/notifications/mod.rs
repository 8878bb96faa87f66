//! Notifications in: the gateways' webhooks, recorded, answered, and turned
//! by the merchant's rules into `capture` or `cancel` commands that run
//! through the one pipeline (`shared/spec/notifications.md`).
//!
//! Layout:
//! - this file: what every gateway's reader gives ([`Reading`], [`Notice`])
//!   and the answers the listener can give ([`Answer`]); each gateway's own
//!   parsing, signature check and answer format live in its folder
//!   (`gateways/praxis/notification.rs`, `gateways/paymentz/notification.rs`),
//!   so adding a gateway stays local;
//! - [`currency`]: amounts in the currency's own minor units (ISO 4217
//!   exponents from a maintained table);
//! - [`rules`]: `[automation]` and `[[automation.rules]]`, and the decision;
//! - [`intake`]: record first, answer second, act third (one transaction);
//! - [`action`]: the acting, in that transaction: a rule's command or hold,
//!   evidence that settles a command of ours, or the reason it is ignored;
//! - [`listener`]: the HTTP side, on `[notifications] listen`;
//! - [`jobs`]: what runs later: inquiries for unverified notifications and
//!   holds past their deadline.

pub mod action;
pub mod currency;
pub mod intake;
pub mod jobs;
pub mod listener;
pub mod metrics;
pub mod rules;

use std::time::Duration;

use serde::Serialize;

use crate::money::Amount;

/// `[notifications] max_body` when absent.
pub const DEFAULT_MAX_BODY: usize = 64 * 1024;

/// `[notifications]`: the listener that faces the gateways.
#[derive(Debug, Clone)]
pub struct NotificationSettings {
    /// Absent: no notification listener.
    pub listen: Option<std::net::SocketAddr>,
    /// Larger bodies get 413 and are not read.
    pub max_body: usize,
    /// Inquiries about unverified notifications, per account and minute,
    /// shared by every instance on the database (a token bucket per account
    /// in PostgreSQL, see [`jobs`]).
    pub inquiries_per_minute: u32,
    /// The listener's own limits (tighter than the admin listener's: it
    /// faces the internet).
    pub limits: crate::listener::ListenerSettings,
}

impl Default for NotificationSettings {
    fn default() -> Self {
        NotificationSettings {
            listen: None,
            max_body: DEFAULT_MAX_BODY,
            inquiries_per_minute: 60,
            limits: crate::listener::ListenerSettings {
                max_connections: 256,
                header_timeout: Duration::from_secs(5),
                request_timeout: Duration::from_secs(10),
            },
        }
    }
}

/// The notification side of a running worker.
pub struct Running {
    /// Where the listener listens, when there is one.
    pub bound: Option<std::net::SocketAddr>,
    ctx: std::sync::Arc<intake::Context>,
    inquiries_per_minute: u32,
    stop: tokio_util::sync::CancellationToken,
}

impl Running {
    /// Starts the jobs (unverified inquiries, hold deadlines); call once the
    /// migrations are applied.
    pub fn start_jobs(&self) {
        tokio::spawn(jobs::run(
            self.ctx.clone(),
            self.inquiries_per_minute,
            self.stop.clone(),
        ));
    }
}

/// Builds the notification side of `worker` and starts its listener when
/// `[notifications] listen` is set (bound now: a bad address fails
/// start-up). With `fallback`, an address in use is replaced by an
/// ephemeral port, loudly (a sandbox's default, when another sandbox holds
/// it). Everything stops with `stop`.
pub async fn start(
    config: &crate::config::Config,
    worker: std::sync::Arc<crate::pipeline::Worker>,
    stop: tokio_util::sync::CancellationToken,
    fallback: bool,
) -> anyhow::Result<Running> {
    use anyhow::Context as _;
    let readers = listener::readers(&config.accounts)?;
    let ctx = std::sync::Arc::new(intake::Context::of_worker(
        worker,
        config.automation.clone(),
        readers,
    ));
    let mut bound = None;
    if let Some(addr) = config.notifications.listen {
        let started = match listener::start(addr, &config.notifications, ctx.clone(), stop.clone())
            .await
        {
            Err(error) if fallback && error.kind() == std::io::ErrorKind::AddrInUse => {
                let any = std::net::SocketAddr::new(addr.ip(), 0);
                let started =
                    listener::start(any, &config.notifications, ctx.clone(), stop.clone()).await;
                if let Ok((other, _)) = &started {
                    tracing::warn!(%addr, bound = %other, "the notification address is in use (another sandbox?): listening on another port");
                }
                started
            }
            other => other,
        };
        let (addr, _) = started.with_context(|| {
            format!(
                "{}: [notifications] listen = \"{addr}\"",
                config.file.display()
            )
        })?;
        bound = Some(addr);
    }
    Ok(Running {
        ctx,
        inquiries_per_minute: config.notifications.inquiries_per_minute,
        stop,
        bound,
    })
}

/// Reads `[notifications]`; a mistake names the file, the table and the key.
pub fn read_settings(
    section: &crate::config::Section<'_>,
) -> Result<NotificationSettings, crate::config::ConfigError> {
    let d = NotificationSettings::default();
    let listen = match section.opt_str("listen")? {
        None => None,
        Some(text) => Some(text.parse().map_err(|_| {
            section.error(
                "listen",
                format!("`{text}` is not an address such as \"127.0.0.1:8088\""),
            )
        })?),
    };
    let max_body = match section.raw("max_body") {
        None => d.max_body,
        Some(toml::Value::Integer(n)) if (1..=16 << 20).contains(n) => *n as usize,
        Some(toml::Value::String(text)) => parse_size(text)
            .filter(|n| (1..=16 << 20).contains(n))
            .ok_or_else(|| {
                section.error(
                    "max_body",
                    format!("`{text}` is not a size from 1 byte to 16MiB such as \"64KiB\""),
                )
            })?,
        Some(_) => {
            return Err(section.error(
                "max_body",
                "must be a size such as \"64KiB\" (or a number of bytes)",
            ))
        }
    };
    let positive = |key: &str, default: Duration| -> Result<Duration, crate::config::ConfigError> {
        let value = section.duration_or(key, default)?;
        if value.is_zero() {
            return Err(section.error(key, "must be longer than zero"));
        }
        Ok(value)
    };
    let settings = NotificationSettings {
        listen,
        max_body,
        inquiries_per_minute: section.int_or(
            "inquiries_per_minute",
            d.inquiries_per_minute as i64,
            1,
            100_000,
        )? as u32,
        limits: crate::listener::ListenerSettings {
            max_connections: section.int_or(
                "max_connections",
                d.limits.max_connections as i64,
                1,
                100_000,
            )? as usize,
            header_timeout: positive("header_timeout", d.limits.header_timeout)?,
            request_timeout: positive("request_timeout", d.limits.request_timeout)?,
        },
    };
    section.finish()?;
    Ok(settings)
}

/// `"64KiB"`, `"1MiB"`, `"512B"`, `"2048"`.
pub fn parse_size(text: &str) -> Option<usize> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: usize = number.parse().ok()?;
    let scale = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "KB" | "k" => 1024,
        "MiB" | "MB" | "M" => 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(scale)
}

/// What a notification says happened to the payment, in the worker's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Meaning {
    /// Authorized: a capture or a cancel is expected. Only these are
    /// matched against the rules.
    Authorized,
    /// Captured (Praxis `approved`, Paymentz `capturesuccess`): evidence.
    Captured,
    /// Cancelled (Praxis `cancelled`/`canceled`, Paymentz `reversed`,
    /// `authcancelled`, `cancelled`): evidence.
    Cancelled,
    /// Anything else: recorded, and ignored.
    Other,
}

/// The parts of a notification the worker acts on, read from its body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notice {
    /// Paymentz `paymentId`, Praxis `trace_id`: the id commands use.
    pub payment_id: String,
    /// The gateway's own status word, as sent.
    pub status: String,
    pub meaning: Meaning,
    /// The authorized amount as the gateway writes it (Praxis: integer
    /// minor units; Paymentz: two decimals), kept for the command and the
    /// repeat key.
    pub amount_text: Option<String>,
    /// The amount in the gateway's own unit, the one its inquiries report
    /// ([`crate::gateways::PaymentSnapshot::amount`]).
    pub amount: Option<Amount>,
    pub currency: Option<String>,
    /// Why the processed amount or currency differs from the authorized
    /// one (Praxis `charge_amount`, `charge_currency`): always a hold.
    pub mismatch: Option<String>,
    pub frontend: Option<String>,
    pub payment_method: Option<String>,
    /// What the result event's `metadata` carries (`order_id`, `trace_id`).
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// How the body's authenticity came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    Verified,
    /// The signature or checksum does not verify (or is missing): the body
    /// is never acted on; the gateway is asked instead.
    BadSignature(String),
    /// Not for this account (`merchant_id`, `frontend`): recorded, refused,
    /// never acted on and never inquired.
    WrongAccount(String),
    /// Not a JSON object, or no payment to speak of: recorded, refused.
    Unreadable(String),
}

impl Verification {
    pub fn verified(&self) -> bool {
        matches!(self, Verification::Verified)
    }

    pub fn problem(&self) -> Option<&str> {
        match self {
            Verification::Verified => None,
            Verification::BadSignature(why)
            | Verification::WrongAccount(why)
            | Verification::Unreadable(why) => Some(why),
        }
    }
}

/// One body, read by its gateway's reader.
#[derive(Debug, Clone)]
pub struct Reading {
    /// The body as a JSON value, when it was one (stored as `fields`).
    pub fields: Option<serde_json::Value>,
    /// What it says, when its payment could be read.
    pub notice: Option<Notice>,
    pub verification: Verification,
}

impl Reading {
    /// A body no reader can make sense of (not JSON, not an object): recorded
    /// as it came, refused, never acted on.
    pub fn unreadable(why: String) -> Reading {
        Reading {
            fields: None,
            notice: None,
            verification: Verification::Unreadable(why),
        }
    }
}

/// The answer the listener gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Recorded (whatever the rules then decide).
    Recorded,
    /// Could not be recorded: the gateway must send it again.
    Retry,
    /// Recorded, and refused: its signature did not verify.
    BadSignature,
    /// Recorded, and refused: not for this account, or unreadable.
    Refused,
}

/// One gateway account's reader of notifications: its parsing, its
/// signature check, and the answers in its own format.
pub trait NotificationReader: Send + Sync + 'static {
    /// Reads and verifies the raw body, exactly as received. Never panics.
    fn read(&self, body: &[u8]) -> Reading;
    /// The HTTP status and body of `answer`, in this gateway's format.
    fn answer(&self, answer: Answer) -> (u16, String);
}

/// The automated command's id: `auto.{gateway}.{account}.{payment_id}`.
pub fn command_id(gateway: &str, account: &str, payment_id: &str) -> String {
    format!("auto.{gateway}.{account}.{payment_id}")
}

/// Reads a JSON body as a flat object of raw values, in key order (byte
/// order, as the signature rules want), keeping every value as written.
pub fn raw_object(
    body: &[u8],
) -> Result<std::collections::BTreeMap<String, Box<serde_json::value::RawValue>>, String> {
    serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            "not a JSON object".to_string()
        } else {
            format!(
                "not JSON: {}",
                crate::telemetry::Escaped::at_most(&e.to_string(), 200)
            )
        }
    })
}

/// A raw JSON value as the text a signature concatenates: strings decoded,
/// numbers and booleans as written, `null` as nothing; objects and arrays
/// are not part of it (`None`).
pub fn signed_text(raw: &serde_json::value::RawValue) -> Option<String> {
    let text = raw.get().trim();
    match text.as_bytes().first() {
        Some(b'"') => serde_json::from_str::<String>(text).ok(),
        Some(b'n') => Some(String::new()),
        Some(b'{') | Some(b'[') => None,
        Some(_) => Some(text.to_string()),
        None => Some(String::new()),
    }
}

/// A raw value read as text (a string, or a number written as one).
pub fn text_of(raw: Option<&serde_json::value::RawValue>) -> Option<String> {
    let raw = raw?;
    match serde_json::from_str::<serde_json::Value>(raw.get()).ok()? {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Number(_) => Some(raw.get().trim().to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_text_keeps_values_as_written() {
        let raw = |t: &str| serde_json::value::RawValue::from_string(t.to_string()).unwrap();
        assert_eq!(signed_text(&raw("\"a\\u0041\"")).as_deref(), Some("aA"));
        assert_eq!(signed_text(&raw("1050")).as_deref(), Some("1050"));
        assert_eq!(signed_text(&raw("10.50")).as_deref(), Some("10.50"));
        assert_eq!(signed_text(&raw("null")).as_deref(), Some(""));
        assert_eq!(signed_text(&raw("{\"a\":1}")), None);
    }

    fn settings(text: &str) -> Result<NotificationSettings, crate::config::ConfigError> {
        let table: toml::Table = text.parse().unwrap();
        read_settings(&crate::config::Section::new(
            std::path::Path::new("t.toml"),
            "notifications".into(),
            &table,
        ))
    }

    #[test]
    fn the_notifications_table_reads_and_names_its_mistakes() {
        let d = settings("").unwrap();
        assert_eq!(d.listen, None, "no listener unless asked");
        assert_eq!(d.max_body, 64 * 1024);
        let s = settings("listen = \"127.0.0.1:8088\"\nmax_body = \"1MiB\"").unwrap();
        assert_eq!(s.listen, Some("127.0.0.1:8088".parse().unwrap()));
        assert_eq!(s.max_body, 1 << 20);
        let err = |t: &str| settings(t).unwrap_err().to_string();
        assert!(err("listen = \"localhost\"").starts_with("t.toml: [notifications] key `listen`"));
        assert!(err("max_body = \"64 bananas\"").contains("key `max_body`"));
        assert!(err("max_body = \"1GiB\"").contains("key `max_body`"));
        assert!(err("request_timeout = \"0s\"").contains("key `request_timeout`"));
        assert!(err("colour = 1").contains("key `colour`: unknown key"));
        assert_eq!(parse_size("64KiB"), Some(65_536));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("1TiB"), None);
    }

    #[test]
    fn command_ids_follow_the_spec() {
        assert_eq!(
            command_id("praxis", "default", "752856"),
            "auto.praxis.default.752856"
        );
    }
}
