//! Fault injection: which request gets which failure, and how long it waits.
//!
//! Two sources, scripts first:
//! - **scripts**: "the next N requests matching (gateway, operation,
//!   payment id) get fault K", consumed in the order they were added. Tests
//!   use these because they are exact.
//! - **rates**: a probability per fault kind, drawn once per operation call.
//!   Draw number `n` uses a generator seeded from `(seed, n)`, so the same
//!   seed gives the same faults to the same sequence of calls, whatever
//!   happened before on other connections' timing.
//!
//! Rates and latency apply to operation calls only (Paymentz `/payments/{id}`
//! and `getTransactionList`, the three Praxis calls); `authToken` and the
//! admin API are never faulted by chance. A script naming the operation
//! `authToken` explicitly does fault the token call.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::state::GatewayId;

/// The failures the simulator can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// HTTP 500 before anything is looked at: nothing applied.
    ErrorBefore,
    /// The operation is applied, then HTTP 500 instead of the answer.
    ErrorAfter,
    /// The operation is applied, then no answer: the connection is held for
    /// the hang time and then closed.
    TimeoutAfter,
    /// The connection is reset (RST) before anything is applied.
    ResetBefore,
    /// The operation is applied, then the connection is reset (RST).
    ResetAfter,
    /// HTTP 429 with `Retry-After: 1`: nothing applied.
    RateLimit,
    /// HTTP 307 with a `Location` (see [`AnswerSettings`](super::AnswerSettings)),
    /// before anything is applied: what a moved or hijacked endpoint answers.
    Redirect,
    /// The operation is applied, then the answer is HTTP 200 with a body of
    /// `huge_answer_bytes` (a well-formed answer padded out), streamed so that
    /// the simulator itself never holds it.
    HugeAnswer,
    /// The operation is applied and answered as usual, but the Praxis answer
    /// carries a signature that is not its own. Paymentz answers carry no
    /// signature, so there it changes nothing.
    BadSignature,
}

impl FaultKind {
    pub const ALL: [FaultKind; 9] = [
        FaultKind::ErrorBefore,
        FaultKind::ErrorAfter,
        FaultKind::TimeoutAfter,
        FaultKind::ResetBefore,
        FaultKind::ResetAfter,
        FaultKind::RateLimit,
        FaultKind::Redirect,
        FaultKind::HugeAnswer,
        FaultKind::BadSignature,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::ErrorBefore => "error_before",
            FaultKind::ErrorAfter => "error_after",
            FaultKind::TimeoutAfter => "timeout_after",
            FaultKind::ResetBefore => "reset_before",
            FaultKind::ResetAfter => "reset_after",
            FaultKind::RateLimit => "rate_limit",
            FaultKind::Redirect => "redirect",
            FaultKind::HugeAnswer => "huge_answer",
            FaultKind::BadSignature => "bad_signature",
        }
    }

    pub fn parse(text: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// Whether the fault strikes before the operation is processed.
    pub fn strikes_before(self) -> bool {
        matches!(
            self,
            FaultKind::ErrorBefore
                | FaultKind::ResetBefore
                | FaultKind::RateLimit
                | FaultKind::Redirect
        )
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FaultError {
    #[error("unknown fault kind `{0}` (known: error_before, error_after, timeout_after, reset_before, reset_after, rate_limit, redirect, huge_answer, bad_signature)")]
    UnknownKind(String),
    #[error("fault `{0}` needs the form kind=rate, e.g. error_after=0.02")]
    Form(String),
    #[error("rate `{0}` must be a number between 0 and 1")]
    Rate(String),
    #[error("the fault rates add up to {0}, more than 1")]
    Sum(f64),
    #[error("a script needs a count of at least 1")]
    Count,
}

/// `kind=rate`, as given to `--fault`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultRate {
    pub kind: FaultKind,
    pub rate: f64,
}

impl FromStr for FaultRate {
    type Err = FaultError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (kind, rate) = text
            .split_once('=')
            .ok_or_else(|| FaultError::Form(text.to_string()))?;
        let kind = FaultKind::parse(kind.trim())
            .ok_or_else(|| FaultError::UnknownKind(kind.trim().to_string()))?;
        let rate: f64 = rate
            .trim()
            .parse()
            .map_err(|_| FaultError::Rate(rate.trim().to_string()))?;
        check_rate(rate)?;
        Ok(FaultRate { kind, rate })
    }
}

fn check_rate(rate: f64) -> Result<(), FaultError> {
    if rate.is_finite() && (0.0..=1.0).contains(&rate) {
        Ok(())
    } else {
        Err(FaultError::Rate(rate.to_string()))
    }
}

/// The probabilistic part: rates, latency and hang time.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FaultSettings {
    /// Probability of each kind per operation call; they must add up to at most 1.
    pub rates: BTreeMap<FaultKind, f64>,
    /// Added before every operation call is processed.
    pub latency: Duration,
    /// Up to this much more latency, drawn uniformly per call.
    pub jitter: Duration,
    /// How long `timeout_after` holds a connection before closing it.
    /// Zero means the default of 60 s.
    pub hang: Duration,
}

/// The default `hang` when none is set.
pub const DEFAULT_HANG: Duration = Duration::from_secs(60);

impl FaultSettings {
    pub fn validate(&self) -> Result<(), FaultError> {
        let mut sum = 0.0;
        for rate in self.rates.values() {
            check_rate(*rate)?;
            sum += rate;
        }
        if sum > 1.0 + 1e-9 {
            return Err(FaultError::Sum(sum));
        }
        Ok(())
    }

    pub fn hang(&self) -> Duration {
        if self.hang.is_zero() {
            DEFAULT_HANG
        } else {
            self.hang
        }
    }

    pub fn view(&self) -> FaultSettingsView {
        FaultSettingsView {
            rates: Some(
                self.rates
                    .iter()
                    .filter(|(_, r)| **r > 0.0)
                    .map(|(k, r)| (*k, *r))
                    .collect(),
            ),
            latency_ms: Some(self.latency.as_millis() as u64),
            jitter_ms: Some(self.jitter.as_millis() as u64),
            hang_ms: Some(self.hang().as_millis() as u64),
        }
    }

    /// Applies a partial update (the admin `PUT /admin/faults` body): fields
    /// present replace the current ones; `rates`, when present, replaces all rates.
    pub fn updated(&self, update: &FaultSettingsView) -> Result<FaultSettings, FaultError> {
        let mut next = self.clone();
        if let Some(rates) = &update.rates {
            next.rates = rates.clone();
        }
        if let Some(ms) = update.latency_ms {
            next.latency = Duration::from_millis(ms);
        }
        if let Some(ms) = update.jitter_ms {
            next.jitter = Duration::from_millis(ms);
        }
        if let Some(ms) = update.hang_ms {
            next.hang = Duration::from_millis(ms);
        }
        next.validate()?;
        Ok(next)
    }
}

/// The JSON form of [`FaultSettings`] (admin API), every field optional for updates.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSettingsView {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rates: Option<BTreeMap<FaultKind, f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hang_ms: Option<u64>,
}

/// "The next `count` requests matching these filters get `kind`."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultScript {
    pub kind: FaultKind,
    #[serde(default = "one")]
    pub count: u32,
    /// Only this gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewayId>,
    /// Only this operation: the wire name (`CP`, `RF`, `RV`, `IN`,
    /// `getTransactionList`, `authToken`, `deposit-capture`, `deposit-cancel`,
    /// `find-transaction`) or the contract name (`capture`, `refund`,
    /// `cancel`, `inquiry`, `transaction_list`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// Only this payment (Paymentz path id, Praxis trace_id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<String>,
}

fn one() -> u32 {
    1
}

impl FaultScript {
    pub fn new(kind: FaultKind, count: u32) -> FaultScript {
        FaultScript {
            kind,
            count,
            gateway: None,
            operation: None,
            payment_id: None,
        }
    }

    pub fn gateway(mut self, gateway: GatewayId) -> Self {
        self.gateway = Some(gateway);
        self
    }

    pub fn operation(mut self, operation: impl Into<String>) -> Self {
        self.operation = Some(operation.into());
        self
    }

    pub fn payment_id(mut self, id: impl Into<String>) -> Self {
        self.payment_id = Some(id.into());
        self
    }

    fn matches(&self, target: &Target<'_>) -> bool {
        if self.gateway.is_some_and(|g| g != target.gateway) {
            return false;
        }
        match &self.operation {
            Some(op) if op != target.wire_op && op != target.generic_op => return false,
            // authToken is only ever faulted when a script names it.
            None if !target.operation_call => return false,
            _ => {}
        }
        if let Some(id) = &self.payment_id {
            if target.payment_id != Some(id.as_str()) {
                return false;
            }
        }
        true
    }
}

/// A script as it stands, with what is left of its count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptStatus {
    pub id: u64,
    #[serde(flatten)]
    pub script: FaultScript,
    pub remaining: u32,
}

/// The request a decision is made for.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub gateway: GatewayId,
    pub wire_op: &'static str,
    pub generic_op: &'static str,
    pub payment_id: Option<&'a str>,
    /// Operation calls get latency and rates; `authToken` does not.
    pub operation_call: bool,
}

/// What happens to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub fault: Option<FaultKind>,
    pub delay: Duration,
    pub hang: Duration,
}

/// The live fault state of a simulator.
#[derive(Debug)]
pub struct Faults {
    seed: u64,
    initial: FaultSettings,
    /// Behind an `Arc` so each decision takes a cheap snapshot.
    settings: RwLock<Arc<FaultSettings>>,
    scripts: Mutex<Vec<ScriptStatus>>,
    draws: AtomicU64,
    next_script: AtomicU64,
}

impl Faults {
    pub fn new(seed: u64, initial: FaultSettings) -> Faults {
        Faults {
            seed,
            settings: RwLock::new(Arc::new(initial.clone())),
            initial,
            scripts: Mutex::new(Vec::new()),
            draws: AtomicU64::new(0),
            next_script: AtomicU64::new(1),
        }
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn settings(&self) -> FaultSettings {
        FaultSettings::clone(&self.settings.read().expect("not poisoned"))
    }

    pub fn set(&self, settings: FaultSettings) -> Result<(), FaultError> {
        settings.validate()?;
        *self.settings.write().expect("not poisoned") = Arc::new(settings);
        Ok(())
    }

    pub fn add_script(&self, script: FaultScript) -> Result<ScriptStatus, FaultError> {
        if script.count == 0 {
            return Err(FaultError::Count);
        }
        let status = ScriptStatus {
            id: self.next_script.fetch_add(1, Ordering::Relaxed),
            remaining: script.count,
            script,
        };
        self.scripts
            .lock()
            .expect("not poisoned")
            .push(status.clone());
        Ok(status)
    }

    /// Scripts with something left.
    pub fn scripts(&self) -> Vec<ScriptStatus> {
        self.scripts.lock().expect("not poisoned").clone()
    }

    pub fn clear_scripts(&self) -> usize {
        let mut scripts = self.scripts.lock().expect("not poisoned");
        let n = scripts.len();
        scripts.clear();
        n
    }

    /// Back to the start: initial settings, no scripts, draw counter at zero,
    /// so a reset simulator repeats its faults exactly.
    pub fn reset(&self) {
        *self.settings.write().expect("not poisoned") = Arc::new(self.initial.clone());
        self.clear_scripts();
        self.draws.store(0, Ordering::SeqCst);
    }

    pub fn decide(&self, target: &Target<'_>) -> Decision {
        let settings = Arc::clone(&self.settings.read().expect("not poisoned"));
        let hang = settings.hang();
        let scripted = self.take_script(target);
        if !target.operation_call {
            return Decision {
                fault: scripted,
                delay: Duration::ZERO,
                hang,
            };
        }
        let n = self.draws.fetch_add(1, Ordering::SeqCst);
        let mut rng = SmallRng::seed_from_u64(splitmix64(self.seed ^ splitmix64(n)));
        let u: f64 = rng.gen();
        let jitter_ms = settings.jitter.as_millis() as u64;
        let extra = if jitter_ms > 0 {
            Duration::from_millis(rng.gen_range(0..=jitter_ms))
        } else {
            Duration::ZERO
        };
        let drawn = pick(&settings.rates, u);
        Decision {
            fault: scripted.or(drawn),
            delay: settings.latency + extra,
            hang,
        }
    }

    fn take_script(&self, target: &Target<'_>) -> Option<FaultKind> {
        let mut scripts = self.scripts.lock().expect("not poisoned");
        let index = scripts.iter().position(|s| s.script.matches(target))?;
        let kind = scripts[index].script.kind;
        scripts[index].remaining -= 1;
        if scripts[index].remaining == 0 {
            scripts.remove(index);
        }
        Some(kind)
    }
}

/// Walks the cumulative rates in a fixed order (the order of [`FaultKind`]).
fn pick(rates: &BTreeMap<FaultKind, f64>, u: f64) -> Option<FaultKind> {
    let mut cumulative = 0.0;
    for (kind, rate) in rates {
        cumulative += rate;
        if u < cumulative {
            return Some(*kind);
        }
    }
    None
}

/// A strong 64-bit mixer, so that neighbouring draw numbers give unrelated seeds.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(op: &'static str, generic: &'static str) -> Target<'static> {
        Target {
            gateway: GatewayId::Paymentz,
            wire_op: op,
            generic_op: generic,
            payment_id: Some("42"),
            operation_call: op != "authToken",
        }
    }

    #[test]
    fn parses_rate_flags() {
        let r: FaultRate = "error_after=0.02".parse().unwrap();
        assert_eq!(r.kind, FaultKind::ErrorAfter);
        assert_eq!(r.rate, 0.02);
        assert!(matches!(
            "nope=0.1".parse::<FaultRate>(),
            Err(FaultError::UnknownKind(_))
        ));
        assert!(matches!(
            "error_after".parse::<FaultRate>(),
            Err(FaultError::Form(_))
        ));
        assert!(matches!(
            "error_after=1.5".parse::<FaultRate>(),
            Err(FaultError::Rate(_))
        ));
        assert!(matches!(
            "error_after=x".parse::<FaultRate>(),
            Err(FaultError::Rate(_))
        ));
    }

    #[test]
    fn rates_must_not_exceed_one_in_total() {
        let mut settings = FaultSettings::default();
        settings.rates.insert(FaultKind::ErrorAfter, 0.7);
        settings.rates.insert(FaultKind::ResetBefore, 0.4);
        assert!(matches!(settings.validate(), Err(FaultError::Sum(_))));
    }

    #[test]
    fn scripts_match_filters_and_run_out() {
        let faults = Faults::new(1, FaultSettings::default());
        faults
            .add_script(FaultScript::new(FaultKind::ResetAfter, 2).operation("RF"))
            .unwrap();
        assert_eq!(faults.decide(&target("CP", "capture")).fault, None);
        assert_eq!(
            faults.decide(&target("RF", "refund")).fault,
            Some(FaultKind::ResetAfter)
        );
        assert_eq!(faults.scripts()[0].remaining, 1);
        assert_eq!(
            faults.decide(&target("RF", "refund")).fault,
            Some(FaultKind::ResetAfter)
        );
        assert_eq!(faults.decide(&target("RF", "refund")).fault, None);
        assert!(faults.scripts().is_empty());
    }

    #[test]
    fn generic_names_and_payment_filters_match() {
        let faults = Faults::new(1, FaultSettings::default());
        faults
            .add_script(
                FaultScript::new(FaultKind::ErrorBefore, 1)
                    .operation("refund")
                    .payment_id("7"),
            )
            .unwrap();
        assert_eq!(
            faults.decide(&target("RF", "refund")).fault,
            None,
            "other payment"
        );
        let mut t = target("RF", "refund");
        t.payment_id = Some("7");
        assert_eq!(faults.decide(&t).fault, Some(FaultKind::ErrorBefore));
    }

    #[test]
    fn token_calls_are_faulted_only_when_named() {
        let faults = Faults::new(1, FaultSettings::default());
        faults
            .add_script(FaultScript::new(FaultKind::ErrorBefore, 1))
            .unwrap();
        assert_eq!(
            faults.decide(&target("authToken", "auth_token")).fault,
            None
        );
        faults.clear_scripts();
        faults
            .add_script(FaultScript::new(FaultKind::ErrorBefore, 1).operation("authToken"))
            .unwrap();
        assert_eq!(
            faults.decide(&target("authToken", "auth_token")).fault,
            Some(FaultKind::ErrorBefore)
        );
    }

    fn pattern(seed: u64) -> Vec<Option<FaultKind>> {
        let mut settings = FaultSettings::default();
        settings.rates.insert(FaultKind::ErrorAfter, 0.2);
        settings.rates.insert(FaultKind::ResetBefore, 0.2);
        let faults = Faults::new(seed, settings);
        (0..200)
            .map(|_| faults.decide(&target("IN", "inquiry")).fault)
            .collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_faults() {
        let a = pattern(42);
        assert_eq!(a, pattern(42));
        assert_ne!(a, pattern(43));
        let hits = a.iter().filter(|f| f.is_some()).count();
        // 40% of 200 expected; far outside this band means the draw is broken.
        assert!((50..=110).contains(&hits), "{hits}");
    }

    #[test]
    fn reset_replays_the_same_draws() {
        let mut settings = FaultSettings::default();
        settings.rates.insert(FaultKind::RateLimit, 0.5);
        settings.jitter = Duration::from_millis(100);
        let faults = Faults::new(9, settings);
        let first: Vec<_> = (0..20)
            .map(|_| faults.decide(&target("IN", "inquiry")))
            .collect();
        faults.reset();
        let second: Vec<_> = (0..20)
            .map(|_| faults.decide(&target("IN", "inquiry")))
            .collect();
        assert_eq!(first, second);
        assert!(first.iter().all(|d| d.delay <= Duration::from_millis(100)));
    }
}
