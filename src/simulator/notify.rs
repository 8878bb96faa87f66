//! The simulator's notifications: the gateway's side of the webhook.
//!
//! When told a notification URL (`simulate --notify-url`, `PUT
//! /admin/notifications`), the simulator POSTs a signed notification when a
//! payment is created authorized and whenever a payment's status changes
//! (after captures and cancels too), as Praxis and Paymentz do. `{gateway}`
//! in the URL is replaced by the gateway's name
//! (`http://127.0.0.1:8088/notifications/{gateway}/default`).
//!
//! It reads the answer as the real gateway does. Praxis: an answer whose
//! `status` is not a recognised one (`0` or positive), or that is
//! unreadable, or no answer at all, is sent again after `resend_after`
//! (Praxis waits about 5 minutes; tests shorten it), at most `max_sends`
//! times. Paymentz reads only the HTTP status and does not retry by itself
//! [C]; the simulator re-sends it only on a transport failure or a 5xx, so
//! that a test of a cut database can see it arrive later (document this
//! difference when relying on it).
//!
//! Faults, drawn from a generator seeded like the other faults: `duplicate`
//! (the probability of one more copy of a notification, sent concurrently),
//! `delay_ms` (each send waits a random 0..delay, which reorders them),
//! `corrupt` (the probability that a send carries a wrong signature or
//! checksum, as a forgery would). `POST /admin/notifications/send` sends one
//! notification of a payment now, with overrides (copies, a corrupt
//! signature, a processed amount that differs).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::signing::{md5_hex, praxis_signature, Fields};
use super::state::{GatewayId, PaymentView};

/// What the notifier is told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifySettings {
    /// Where to POST; `{gateway}` is replaced. `None`: no notifications.
    pub url: Option<String>,
    /// The wait before sending again after `-1` or an unreadable answer.
    pub resend_after_ms: u64,
    /// Sends of one notification at most (the first included).
    pub max_sends: u32,
    /// Probability of one more concurrent copy.
    pub duplicate: f64,
    /// Each send waits a random 0..delay_ms first.
    pub delay_ms: u64,
    /// Probability that a send's signature is wrong.
    pub corrupt: f64,
}

impl Default for NotifySettings {
    fn default() -> Self {
        NotifySettings {
            url: None,
            resend_after_ms: 300_000,
            max_sends: 10,
            duplicate: 0.0,
            delay_ms: 0,
            corrupt: 0.0,
        }
    }
}

impl NotifySettings {
    pub fn validate(&self) -> Result<(), String> {
        if let Some(url) = &self.url {
            let shown = url.replace("{gateway}", "praxis");
            let parsed = url::Url::parse(&shown).map_err(|e| format!("url: {e}"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err("url: must be http or https".into());
            }
        }
        for (name, p) in [("duplicate", self.duplicate), ("corrupt", self.corrupt)] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("{name}: must be between 0 and 1"));
            }
        }
        if self.max_sends == 0 {
            return Err("max_sends: must be at least 1".into());
        }
        Ok(())
    }
}

/// Counts, for tests and the admin API.
#[derive(Debug, Default, Serialize)]
pub struct NotifyStats {
    /// HTTP requests made (every copy and re-send).
    pub sent: u64,
    /// Answers that ended a notification (`0`/positive status, or 2xx/4xx).
    pub accepted: u64,
    /// Sends answered `-1`, unreadable, or not answered, that were sent again.
    pub resent: u64,
    /// Notifications given up after `max_sends`.
    pub given_up: u64,
    /// Sends with a corrupted signature.
    pub corrupted: u64,
}

/// A notification's overrides (`POST /admin/notifications/send`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    pub gateway: GatewayId,
    pub id: String,
    /// Copies sent concurrently (default 1).
    #[serde(default)]
    pub copies: Option<u32>,
    /// A wrong signature or checksum.
    #[serde(default)]
    pub corrupt: bool,
    /// Praxis: a processed amount (minor units) other than the authorized one.
    #[serde(default)]
    pub charge_amount: Option<u64>,
}

/// One account's signing material.
#[derive(Clone)]
pub enum Signer {
    Praxis {
        merchant_id: String,
        frontend: String,
        secret: SecretString,
    },
    Paymentz {
        secure_key: SecretString,
    },
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    accepted: AtomicU64,
    resent: AtomicU64,
    given_up: AtomicU64,
    corrupted: AtomicU64,
}

/// Sends notifications in the background (on the current tokio runtime).
/// `Debug` shows its settings only.
pub struct Notifier {
    settings: RwLock<NotifySettings>,
    rng: Mutex<SmallRng>,
    counters: Arc<Counters>,
    client: reqwest::Client,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("settings", &self.settings())
            .finish()
    }
}

impl Notifier {
    pub fn new(settings: NotifySettings, seed: u64) -> Notifier {
        Notifier {
            settings: RwLock::new(settings),
            rng: Mutex::new(SmallRng::seed_from_u64(seed ^ 0x6e6f_7469_6679)),
            counters: Arc::new(Counters::default()),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("an HTTP client"),
        }
    }

    pub fn settings(&self) -> NotifySettings {
        self.settings.read().expect("not poisoned").clone()
    }

    pub fn set(&self, settings: NotifySettings) -> Result<(), String> {
        settings.validate()?;
        *self.settings.write().expect("not poisoned") = settings;
        Ok(())
    }

    pub fn stats(&self) -> NotifyStats {
        let c = &self.counters;
        NotifyStats {
            sent: c.sent.load(Ordering::Relaxed),
            accepted: c.accepted.load(Ordering::Relaxed),
            resent: c.resent.load(Ordering::Relaxed),
            given_up: c.given_up.load(Ordering::Relaxed),
            corrupted: c.corrupted.load(Ordering::Relaxed),
        }
    }

    /// A payment changed (or was created authorized): notify, with the
    /// configured faults.
    pub fn changed(&self, payment: &PaymentView, signer: Option<Signer>) {
        let settings = self.settings();
        let (copies, corrupt) = {
            let mut rng = self.rng.lock().expect("not poisoned");
            let copies = 1 + u32::from(rng.gen_bool(settings.duplicate));
            let corrupt: Vec<bool> = (0..copies)
                .map(|_| rng.gen_bool(settings.corrupt))
                .collect();
            (copies, corrupt)
        };
        self.send(payment, signer, &settings, copies, corrupt, None);
    }

    /// `POST /admin/notifications/send`.
    pub fn send_now(&self, payment: &PaymentView, signer: Option<Signer>, request: &SendRequest) {
        let settings = self.settings();
        let copies = request.copies.unwrap_or(1).clamp(1, 100);
        let corrupt = vec![request.corrupt; copies as usize];
        self.send(
            payment,
            signer,
            &settings,
            copies,
            corrupt,
            request.charge_amount,
        );
    }

    fn send(
        &self,
        payment: &PaymentView,
        signer: Option<Signer>,
        settings: &NotifySettings,
        copies: u32,
        corrupt: Vec<bool>,
        charge_amount: Option<u64>,
    ) {
        let (Some(url), Some(signer)) = (settings.url.as_deref(), signer) else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let url = url.replace("{gateway}", payment.gateway.as_str());
        for copy in 0..copies {
            let good = body(payment, &signer, false, charge_amount);
            let bad = body(payment, &signer, true, charge_amount);
            let corrupted = corrupt.get(copy as usize).copied().unwrap_or(false);
            let delay = if settings.delay_ms > 0 {
                let mut rng = self.rng.lock().expect("not poisoned");
                Duration::from_millis(rng.gen_range(0..=settings.delay_ms))
            } else {
                Duration::ZERO
            };
            let job = Delivery {
                client: self.client.clone(),
                url: url.clone(),
                body: if corrupted { bad } else { good },
                gateway: payment.gateway,
                delay,
                resend_after: Duration::from_millis(settings.resend_after_ms),
                max_sends: settings.max_sends,
                counters: self.counters.clone(),
            };
            if corrupted {
                self.counters.corrupted.fetch_add(1, Ordering::Relaxed);
            }
            runtime.spawn(job.run());
        }
    }
}

struct Delivery {
    client: reqwest::Client,
    url: String,
    body: String,
    gateway: GatewayId,
    delay: Duration,
    resend_after: Duration,
    max_sends: u32,
    counters: Arc<Counters>,
}

impl Delivery {
    async fn run(self) {
        tokio::time::sleep(self.delay).await;
        for send in 1..=self.max_sends {
            self.counters.sent.fetch_add(1, Ordering::Relaxed);
            let answer = self
                .client
                .post(&self.url)
                .header("content-type", "application/json")
                .body(self.body.clone())
                .send()
                .await;
            let accepted = match answer {
                Err(_) => false,
                Ok(response) => {
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    match self.gateway {
                        GatewayId::Praxis => praxis_accepts(&text),
                        GatewayId::Paymentz => !status.is_server_error(),
                    }
                }
            };
            if accepted {
                self.counters.accepted.fetch_add(1, Ordering::Relaxed);
                return;
            }
            if send == self.max_sends {
                self.counters.given_up.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(url = %self.url, "notification given up after {send} sends");
                return;
            }
            self.counters.resent.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(self.resend_after).await;
        }
    }
}

/// Praxis keeps a notification delivered when the answer is a JSON object
/// whose `status` is `0` or positive; `-1`, anything unreadable, or no
/// `status`, is sent again.
pub fn praxis_accepts(answer: &str) -> bool {
    serde_json::from_str::<Value>(answer)
        .ok()
        .and_then(|v| v.get("status").and_then(Value::as_i64))
        .is_some_and(|s| s >= 0)
}

/// The notification body of `payment`, as its gateway sends it.
pub fn body(payment: &PaymentView, signer: &Signer, corrupt: bool, charge: Option<u64>) -> String {
    match signer {
        Signer::Praxis {
            merchant_id,
            frontend,
            secret,
        } => praxis_body(payment, merchant_id, frontend, secret, corrupt, charge),
        Signer::Paymentz { secure_key } => paymentz_body(payment, secure_key, corrupt),
    }
}

/// Praxis's callback: every transaction field, signed over its scalars.
fn praxis_body(
    payment: &PaymentView,
    merchant_id: &str,
    frontend: &str,
    secret: &SecretString,
    corrupt: bool,
    charge: Option<u64>,
) -> String {
    let minor = payment.amount.minor();
    let mut map = Map::new();
    map.insert("merchant_id".into(), json!(merchant_id));
    map.insert(
        "frontend".into(),
        json!(payment.frontend.as_deref().unwrap_or(frontend)),
    );
    map.insert("transaction_type".into(), json!("authorize"));
    map.insert("transaction_status".into(), json!(payment.status));
    map.insert(
        "transaction_id".into(),
        json!(payment
            .transaction_id
            .as_deref()
            .and_then(|t| t.parse::<u64>().ok())),
    );
    map.insert(
        "trace_id".into(),
        json!(payment.id.parse::<u64>().unwrap_or_default()),
    );
    map.insert("order_id".into(), json!(payment.reference));
    map.insert("pin".into(), json!(format!("customer-{}", payment.id)));
    map.insert("amount".into(), json!(minor));
    map.insert("currency".into(), json!(payment.currency));
    map.insert("charge_amount".into(), json!(charge.unwrap_or(minor)));
    map.insert("charge_currency".into(), json!(payment.currency));
    map.insert("payment_method".into(), json!("Credit Card"));
    map.insert("payment_processor".into(), json!("SimulatorProcessor"));
    map.insert(
        "timestamp".into(),
        json!(time::OffsetDateTime::now_utc().unix_timestamp()),
    );
    map.insert("version".into(), json!("1.1"));
    let mut signature = praxis_signature(&map, Fields::Scalars, secret);
    if corrupt {
        signature = md5_hex(&signature) + &signature[32..];
    }
    map.insert("signature".into(), json!(signature));
    Value::Object(map).to_string()
}

/// Paymentz's notification, with its checksum.
fn paymentz_body(payment: &PaymentView, secure_key: &SecretString, corrupt: bool) -> String {
    use secrecy::ExposeSecret;
    let (status, short) = paymentz_status(&payment.status);
    let amount = payment.amount.to_string();
    let mut checksum = md5_hex(&format!(
        "{}|{}|{}|{}|{}",
        payment.id,
        payment.reference,
        amount,
        short,
        secure_key.expose_secret()
    ));
    if corrupt {
        checksum = md5_hex(&checksum);
    }
    json!({
        "paymentId": payment.id,
        "status": status,
        "transactionStatus": short,
        "amount": amount,
        "currency": payment.currency,
        "merchantTransactionId": payment.reference,
        "descriptor": "SIMULATOR",
        "remark": "",
        "timestamp": time::OffsetDateTime::now_utc()
            .format(time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]"))
            .unwrap_or_default(),
        "result": {"code": "00001", "description": "Transaction succeeded"},
        "customer": {"email": "customer@example.com"},
        "card": {"bin": "411111", "last4": "1111"},
        "checksum": checksum,
    })
    .to_string()
}

/// The long status and the short one a notification carries (the short
/// one as unreliable as the real gateway's: `cancelled` arrives as `N`).
fn paymentz_status(long: &str) -> (&str, &'static str) {
    let short = match long {
        "authsuccessful" | "capturesuccess" | "settled" | "reversed" | "markedforreversal"
        | "chargeback" => "Y",
        "authcancelled" | "cancelled" | "authfailed" | "capturefailed" | "failed" => "N",
        _ => "P",
    };
    (long, short)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn praxis_answers_that_end_a_notification() {
        assert!(praxis_accepts(r#"{"status":0,"description":"Ok"}"#));
        assert!(praxis_accepts(r#"{"status":1,"description":"refused"}"#));
        assert!(!praxis_accepts(r#"{"status":-1}"#));
        assert!(!praxis_accepts("<html>"));
        assert!(!praxis_accepts(r#"{"description":"no status"}"#));
    }

    #[test]
    fn settings_are_checked() {
        let bad = NotifySettings {
            duplicate: 1.5,
            ..NotifySettings::default()
        };
        assert!(bad.validate().is_err());
        let url = NotifySettings {
            url: Some("ftp://x/{gateway}".into()),
            ..NotifySettings::default()
        };
        assert!(url.validate().is_err());
    }
}
