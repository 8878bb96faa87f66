//! One simulator's whole state and the operations on it that are not gateway
//! calls: creating and reading payments, the ledger, stats, faults, tokens,
//! reset. The admin HTTP API and the in-process API both call these methods,
//! so they can never disagree.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::RwLock;

use time::OffsetDateTime;
use tokio::sync::watch;

use super::answers::{AnswerSettings, AnswerSettingsView};
use super::config::SimulatorConfig;
use super::faults::{
    FaultError, FaultScript, FaultSettings, FaultSettingsView, Faults, ScriptStatus,
};
pub use super::new_payment::NewPayment;
use super::new_payment::{build_payment, parse_created_at};
use super::state::{
    in_auto_range, GatewayId, IdSequence, Ledger, LedgerEntry, LedgerQuery, Payment, PaymentView,
    PxStatus, PzStatus, Shards, Status,
};
use super::stats::{Stats, StatsSnapshot};
use super::tokens::Tokens;
use crate::money::Amount;

/// On-demand Paymentz payments: 1000.00 EUR.
pub const AUTO_PAYMENTZ_AMOUNT: Amount = Amount::from_minor(100_000);
/// On-demand Praxis payments: 100000 minor units (1000.00) USD.
pub const AUTO_PRAXIS_AMOUNT: Amount = Amount::from_minor(100_000);

/// Why an admin request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
}

impl From<FaultError> for AdminError {
    fn from(e: FaultError) -> Self {
        AdminError::BadRequest(e.to_string())
    }
}

/// The state of one running simulator.
#[derive(Debug)]
pub struct Simulation {
    pub(crate) config: SimulatorConfig,
    pub(crate) paymentz: Shards<Payment<PzStatus>>,
    /// Paymentz `merchantTransactionId` -> `paymentId`, for `idType=MID`.
    pub(crate) paymentz_references: Shards<String>,
    pub(crate) praxis: Shards<Payment<PxStatus>>,
    pub(crate) ledger: Ledger,
    pub(crate) stats: Stats,
    pub(crate) tokens: Tokens,
    pub(crate) faults: Faults,
    pub(crate) ids: IdSequence,
    answers: RwLock<AnswerSettings>,
    /// Notifications to the merchant's URL.
    pub(crate) notifier: super::notify::Notifier,
    auto_payments: AtomicBool,
    requests: AtomicU64,
    shutdown: watch::Sender<bool>,
}

impl Simulation {
    pub fn new(config: SimulatorConfig) -> Result<Simulation, FaultError> {
        config.faults.validate()?;
        Ok(Simulation {
            paymentz: Shards::default(),
            paymentz_references: Shards::default(),
            praxis: Shards::default(),
            ledger: Ledger::default(),
            stats: Stats::default(),
            tokens: Tokens::new(config.token_ttl),
            faults: Faults::new(config.seed, config.faults.clone()),
            ids: IdSequence::default(),
            answers: RwLock::new(config.answers.clone()),
            notifier: super::notify::Notifier::new(config.notify.clone(), config.seed),
            auto_payments: AtomicBool::new(config.auto_payments),
            requests: AtomicU64::new(0),
            shutdown: watch::channel(false).0,
            config,
        })
    }

    pub fn config(&self) -> &SimulatorConfig {
        &self.config
    }

    // ----- payments -----

    /// Creates a payment as the admin asks; refuses an id or reference in use.
    pub fn create_payment(&self, new: NewPayment) -> Result<PaymentView, AdminError> {
        let (id, reference, currency, created_at) = self.new_payment_fields(&new)?;
        match new.gateway {
            GatewayId::Paymentz => self.create_paymentz(&new, id, reference, currency, created_at),
            GatewayId::Praxis => self.create_praxis(&new, id, reference, currency, created_at),
        }
    }

    /// The new payment's id (given, or the next), reference, currency and
    /// creation time, each checked.
    fn new_payment_fields(
        &self,
        new: &NewPayment,
    ) -> Result<(String, String, String, OffsetDateTime), AdminError> {
        let currency = new.currency.clone().unwrap_or_else(|| {
            match new.gateway {
                GatewayId::Paymentz => "EUR",
                GatewayId::Praxis => "USD",
            }
            .to_string()
        });
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(AdminError::BadRequest(format!(
                "currency `{currency}` is not a 3-letter ISO 4217 code"
            )));
        }
        if new.amount == Amount::ZERO {
            return Err(AdminError::BadRequest("amount must be positive".into()));
        }
        let created_at = match &new.created_at {
            None => OffsetDateTime::now_utc(),
            Some(text) => parse_created_at(text)?,
        };
        let id = match &new.id {
            Some(id) => {
                let valid = !id.is_empty()
                    && id.len() <= 18
                    && id.bytes().all(|b| b.is_ascii_digit())
                    && id.parse::<u64>().is_ok_and(|n| n > 0);
                if !valid {
                    return Err(AdminError::BadRequest(format!(
                        "id `{id}` must be a positive integer of at most 18 digits"
                    )));
                }
                id.clone()
            }
            None => self.ids.next().to_string(),
        };
        let reference = new
            .reference
            .clone()
            .unwrap_or_else(|| format!("order-{id}"));
        Ok((id, reference, currency, created_at))
    }

    fn create_paymentz(
        &self,
        new: &NewPayment,
        id: String,
        reference: String,
        currency: String,
        created_at: OffsetDateTime,
    ) -> Result<PaymentView, AdminError> {
        let payment = build_payment::<PzStatus>(new, id, reference, currency, created_at)?;
        let mut shard = self.paymentz.lock(&payment.id);
        self.insert_new(
            GatewayId::Paymentz,
            &mut shard,
            payment,
            "authsuccessful",
            |payment| {
                let mut refs = self.paymentz_references.lock(&payment.reference);
                if refs.contains_key(&payment.reference) {
                    return Err(AdminError::Conflict(format!(
                        "merchantTransactionId `{}` is in use",
                        payment.reference
                    )));
                }
                refs.insert(payment.reference.clone(), payment.id.clone());
                Ok(())
            },
        )
    }

    /// Stores a new payment in its locked shard, unless its id is taken,
    /// and notifies when it starts `authorized`. `claim` takes, under the
    /// same lock, whatever else must be unique to it.
    fn insert_new<S: Status>(
        &self,
        gateway: GatewayId,
        shard: &mut HashMap<String, Payment<S>>,
        payment: Payment<S>,
        authorized: &str,
        claim: impl FnOnce(&Payment<S>) -> Result<(), AdminError>,
    ) -> Result<PaymentView, AdminError> {
        if shard.contains_key(&payment.id) {
            return Err(AdminError::Conflict(format!(
                "{} payment {} exists",
                gateway.as_str(),
                payment.id
            )));
        }
        claim(&payment)?;
        let view = payment.view(gateway);
        shard.insert(payment.id.clone(), payment);
        if view.status == authorized {
            self.notify(&view);
        }
        Ok(view)
    }

    fn create_praxis(
        &self,
        new: &NewPayment,
        id: String,
        reference: String,
        currency: String,
        created_at: OffsetDateTime,
    ) -> Result<PaymentView, AdminError> {
        if id.parse::<i64>().is_err() {
            return Err(AdminError::BadRequest(format!(
                "trace_id `{id}` does not fit a 64-bit integer"
            )));
        }
        let mut payment = build_payment::<PxStatus>(new, id, reference, currency, created_at)?;
        payment.frontend = new.frontend.clone();
        payment.transaction_id = Some(self.ids.next());
        let mut shard = self.praxis.lock(&payment.id);
        self.insert_new(GatewayId::Praxis, &mut shard, payment, "authorized", |_| {
            Ok(())
        })
    }

    pub fn payment(&self, gateway: GatewayId, id: &str) -> Option<PaymentView> {
        match gateway {
            GatewayId::Paymentz => self.paymentz.get(id).map(|p| p.view(gateway)),
            GatewayId::Praxis => self.praxis.get(id).map(|p| p.view(gateway)),
        }
    }

    /// Runs `f` on a Paymentz payment under its lock, creating it first when
    /// the on-demand rule says so. `f` gets `None` when the payment does not
    /// exist or belongs to another member.
    pub(crate) fn with_paymentz<R>(
        &self,
        id: &str,
        member_id: &str,
        f: impl FnOnce(Option<&mut Payment<PzStatus>>) -> R,
    ) -> R {
        let mut shard = self.paymentz.lock(id);
        if !shard.contains_key(id) {
            if let Some(n) = self.auto_id(id) {
                let now = OffsetDateTime::now_utc();
                let captured = n % 2 == 1;
                let payment = Payment {
                    id: id.to_string(),
                    reference: format!("order-{id}"),
                    owner: Some(member_id.to_string()),
                    frontend: None,
                    transaction_id: None,
                    status: if captured {
                        PzStatus::CaptureSuccess
                    } else {
                        PzStatus::AuthSuccessful
                    },
                    amount: AUTO_PAYMENTZ_AMOUNT,
                    captured: if captured {
                        AUTO_PAYMENTZ_AMOUNT
                    } else {
                        Amount::ZERO
                    },
                    refunded: Amount::ZERO,
                    currency: "EUR".into(),
                    created_at: now,
                    updated_at: now,
                };
                let mut refs = self.paymentz_references.lock(&payment.reference);
                refs.entry(payment.reference.clone())
                    .or_insert_with(|| payment.id.clone());
                drop(refs);
                shard.insert(id.to_string(), payment);
            }
        }
        f(shard.get_mut(id).filter(|p| p.visible_to(member_id)))
    }

    /// The `paymentId` recorded for a `merchantTransactionId`.
    pub(crate) fn paymentz_by_reference(&self, reference: &str) -> Option<String> {
        self.paymentz_references.get(reference)
    }

    /// Like [`Simulation::with_paymentz`] for a Praxis `trace_id`.
    pub(crate) fn with_praxis<R>(
        &self,
        trace_id: &str,
        merchant_id: &str,
        frontend: &str,
        f: impl FnOnce(Option<&mut Payment<PxStatus>>) -> R,
    ) -> R {
        let mut shard = self.praxis.lock(trace_id);
        if !shard.contains_key(trace_id) && self.auto_id(trace_id).is_some() {
            let now = OffsetDateTime::now_utc();
            shard.insert(
                trace_id.to_string(),
                Payment {
                    id: trace_id.to_string(),
                    reference: format!("order-{trace_id}"),
                    owner: Some(merchant_id.to_string()),
                    frontend: Some(frontend.to_string()),
                    transaction_id: Some(self.ids.next()),
                    status: PxStatus::Authorized,
                    amount: AUTO_PRAXIS_AMOUNT,
                    captured: Amount::ZERO,
                    refunded: Amount::ZERO,
                    currency: "USD".into(),
                    created_at: now,
                    updated_at: now,
                },
            );
        }
        f(shard
            .get_mut(trace_id)
            .filter(|p| p.visible_to(merchant_id)))
    }

    fn auto_id(&self, id: &str) -> Option<u64> {
        if self.auto_payments.load(Ordering::Relaxed) {
            in_auto_range(id)
        } else {
            None
        }
    }

    pub fn auto_payments(&self) -> bool {
        self.auto_payments.load(Ordering::Relaxed)
    }

    /// Turns the on-demand rule on or off while running.
    pub fn set_auto_payments(&self, enabled: bool) {
        self.auto_payments.store(enabled, Ordering::Relaxed);
    }

    // ----- ledger and stats -----

    pub fn ledger(&self, query: &LedgerQuery) -> Vec<LedgerEntry> {
        self.ledger.query(query)
    }

    /// Ledger entries of one payment.
    pub fn ledger_for(&self, gateway: GatewayId, payment_id: &str) -> Vec<LedgerEntry> {
        self.ledger.query(&LedgerQuery {
            gateway: Some(gateway),
            payment_id: Some(payment_id.to_string()),
            ..LedgerQuery::default()
        })
    }

    pub fn stats(&self) -> StatsSnapshot {
        let mut snapshot = self.stats.snapshot();
        snapshot.ledger_entries = self.ledger.len() as u64;
        snapshot
            .payments
            .insert("paymentz".into(), self.paymentz.len() as u64);
        snapshot
            .payments
            .insert("praxis".into(), self.praxis.len() as u64);
        snapshot
    }

    // ----- faults -----

    pub fn seed(&self) -> u64 {
        self.faults.seed()
    }

    pub fn fault_settings(&self) -> FaultSettings {
        self.faults.settings()
    }

    pub fn set_fault_settings(&self, settings: FaultSettings) -> Result<(), FaultError> {
        self.faults.set(settings)
    }

    /// A partial update, as `PUT /admin/faults` does.
    pub fn update_faults(&self, update: &FaultSettingsView) -> Result<FaultSettings, FaultError> {
        let next = self.faults.settings().updated(update)?;
        self.faults.set(next.clone())?;
        Ok(next)
    }

    pub fn script_fault(&self, script: FaultScript) -> Result<ScriptStatus, FaultError> {
        self.faults.add_script(script)
    }

    pub fn fault_scripts(&self) -> Vec<ScriptStatus> {
        self.faults.scripts()
    }

    pub fn clear_fault_scripts(&self) -> usize {
        self.faults.clear_scripts()
    }

    // ----- answer shapes -----

    pub fn answer_settings(&self) -> AnswerSettings {
        self.answers.read().expect("not poisoned").clone()
    }

    /// A partial update, as `PUT /admin/answers` does.
    pub fn update_answers(
        &self,
        update: &AnswerSettingsView,
    ) -> Result<AnswerSettings, AdminError> {
        let mut answers = self.answers.write().expect("not poisoned");
        let next = answers.updated(update).map_err(AdminError::BadRequest)?;
        *answers = next.clone();
        Ok(next)
    }

    // ----- tokens, reset -----

    /// Expires every Paymentz auth token; the next call with one gets `401`.
    pub fn expire_tokens(&self) -> usize {
        self.tokens.expire_all()
    }

    /// Forgets payments, ledger, stats, tokens and scripts, and restores the
    /// start-up faults, answer shapes and draw counter. Not atomic against requests in flight.
    pub fn reset(&self) {
        self.paymentz.clear();
        self.paymentz_references.clear();
        self.praxis.clear();
        self.ledger.clear();
        self.stats.clear();
        self.tokens.expire_all();
        self.faults.reset();
        *self.answers.write().expect("not poisoned") = self.config.answers.clone();
        self.auto_payments
            .store(self.config.auto_payments, Ordering::Relaxed);
        self.requests.store(0, Ordering::Relaxed);
    }

    // ----- notifications -----

    /// The account that signs notifications about `payment`: its owner's,
    /// else the first configured.
    pub fn signer(&self, payment: &PaymentView) -> Option<super::notify::Signer> {
        use super::notify::Signer;
        match payment.gateway {
            GatewayId::Praxis => {
                let merchants = &self.config.praxis_merchants;
                let m = payment
                    .owner
                    .as_deref()
                    .and_then(|o| merchants.iter().find(|m| m.merchant_id == o))
                    .or_else(|| merchants.first())?;
                Some(Signer::Praxis {
                    merchant_id: m.merchant_id.clone(),
                    frontend: m.frontends.first().cloned().unwrap_or_default(),
                    secret: m.merchant_secret.clone(),
                })
            }
            GatewayId::Paymentz => {
                let accounts = &self.config.paymentz_accounts;
                let a = payment
                    .owner
                    .as_deref()
                    .and_then(|o| accounts.iter().find(|a| a.member_id == o))
                    .or_else(|| accounts.first())?;
                Some(Signer::Paymentz {
                    secure_key: a.secure_key.clone(),
                })
            }
        }
    }

    /// A payment was created authorized or changed status: tell the merchant.
    pub(crate) fn notify(&self, payment: &PaymentView) {
        self.notifier.changed(payment, self.signer(payment));
    }

    pub fn notify_settings(&self) -> super::notify::NotifySettings {
        self.notifier.settings()
    }

    pub fn set_notify_settings(
        &self,
        settings: super::notify::NotifySettings,
    ) -> Result<(), AdminError> {
        self.notifier.set(settings).map_err(AdminError::BadRequest)
    }

    pub fn notify_stats(&self) -> super::notify::NotifyStats {
        self.notifier.stats()
    }

    /// Sends a notification of an existing payment now, with overrides.
    pub fn send_notification(
        &self,
        request: &super::notify::SendRequest,
    ) -> Result<PaymentView, AdminError> {
        let view = self.payment(request.gateway, &request.id).ok_or_else(|| {
            AdminError::NotFound(format!(
                "no {} payment {}",
                request.gateway.as_str(),
                request.id
            ))
        })?;
        if self.notifier.settings().url.is_none() {
            return Err(AdminError::BadRequest("no notification url is set".into()));
        }
        self.notifier.send_now(&view, self.signer(&view), request);
        Ok(view)
    }

    // ----- plumbing -----

    /// A number for each gateway request, recorded in ledger entries.
    pub(crate) fn next_request_no(&self) -> u64 {
        self.requests.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Resolves once shutdown has begun (at once if it already has).
    pub(crate) async fn stopping(&self) {
        let mut signal = self.shutdown.subscribe();
        // An error means the sender is gone, which also means stopping.
        let _ = signal.wait_for(|stopping| *stopping).await;
    }

    pub(crate) fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim() -> Simulation {
        Simulation::new(SimulatorConfig::default()).unwrap()
    }

    #[test]
    fn creates_payments_with_defaults() {
        let sim = sim();
        let view = sim
            .create_payment(
                NewPayment::new(GatewayId::Paymentz, Amount::from_minor(5000)).state("captured"),
            )
            .unwrap();
        assert_eq!(view.status, "capturesuccess");
        assert_eq!(view.captured, Amount::from_minor(5000));
        assert_eq!(view.currency, "EUR");
        assert!(view.id.parse::<u64>().unwrap() >= super::super::state::FIRST_ID);
        assert_eq!(sim.payment(GatewayId::Paymentz, &view.id), Some(view));
    }

    #[test]
    fn refuses_duplicates_and_inconsistent_amounts() {
        let sim = sim();
        let new = NewPayment::new(GatewayId::Praxis, Amount::from_minor(100)).id("5");
        sim.create_payment(new.clone()).unwrap();
        assert!(matches!(
            sim.create_payment(new),
            Err(AdminError::Conflict(_))
        ));
        let bad = NewPayment::new(GatewayId::Paymentz, Amount::from_minor(100))
            .captured(Amount::from_minor(200));
        assert!(matches!(
            sim.create_payment(bad),
            Err(AdminError::BadRequest(_))
        ));
        let bad = NewPayment::new(GatewayId::Paymentz, Amount::from_minor(100)).state("bogus");
        assert!(matches!(
            sim.create_payment(bad),
            Err(AdminError::BadRequest(_))
        ));
        let bad = NewPayment::new(GatewayId::Paymentz, Amount::from_minor(100)).id("12a");
        assert!(matches!(
            sim.create_payment(bad),
            Err(AdminError::BadRequest(_))
        ));
    }

    #[test]
    fn on_demand_payments_follow_the_rule() {
        let sim = sim();
        let status =
            |id: &str| sim.with_paymentz(id, "11359", |p| p.map(|p| (p.status, p.captured)));
        assert_eq!(
            status("12345678"),
            Some((PzStatus::AuthSuccessful, Amount::ZERO))
        );
        assert_eq!(
            status("12345679"),
            Some((PzStatus::CaptureSuccess, AUTO_PAYMENTZ_AMOUNT))
        );
        assert_eq!(status("1234567"), None, "7 digits are not on demand");
        // It belongs to the member that touched it first.
        assert!(sim.with_paymentz("12345678", "other", |p| p.is_none()));
        sim.set_auto_payments(false);
        assert_eq!(status("22345678"), None);
        assert_eq!(
            sim.paymentz_by_reference("order-12345678").as_deref(),
            Some("12345678")
        );
    }

    #[test]
    fn reset_forgets_everything() {
        let sim = sim();
        sim.with_praxis("10000001", "m", "f", |p| assert!(p.is_some()));
        sim.reset();
        assert_eq!(sim.praxis.len(), 0);
        assert_eq!(sim.stats().requests_total, 0);
    }
}
