//! Counters: requests by gateway and operation, answers by HTTP status and
//! result code, injected faults by kind, and applied side effects.
//!
//! Tests read these to prove what a client did (how many refunds it sent,
//! how many retries a fault caused); load tests read them for throughput.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::faults::FaultKind;

#[derive(Debug, Default)]
struct Counters {
    requests: HashMap<(&'static str, &'static str), u64>,
    statuses: HashMap<(&'static str, u16), u64>,
    codes: HashMap<(&'static str, String), u64>,
    faults: HashMap<FaultKind, u64>,
    applied: HashMap<(&'static str, &'static str), u64>,
    admin: u64,
}

/// Live counters, cheap to bump from any request.
#[derive(Debug, Default)]
pub struct Stats {
    counters: Mutex<Counters>,
}

/// Answers of one gateway.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnswerCounts {
    /// HTTP status of every answer sent (faults without an answer are not here).
    pub by_http_status: BTreeMap<String, u64>,
    /// Paymentz `result.code` / Praxis `status` of every HTTP 200 answer.
    pub by_code: BTreeMap<String, u64>,
}

/// What `GET /admin/stats` answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    /// Gateway requests of every kind, the admin API excluded.
    pub requests_total: u64,
    /// gateway -> operation -> count. Operations by their wire name (`CP`,
    /// `authToken`, `deposit-capture`...); requests to unknown paths count
    /// under gateway `other`.
    pub requests: BTreeMap<String, BTreeMap<String, u64>>,
    pub answers: BTreeMap<String, AnswerCounts>,
    /// fault kind -> times injected.
    pub faults: BTreeMap<String, u64>,
    /// gateway -> side effect (`capture`, `refund`, `cancel`) -> times applied.
    pub applied: BTreeMap<String, BTreeMap<String, u64>>,
    pub admin_requests: u64,
    pub ledger_entries: u64,
    /// gateway -> payments held.
    pub payments: BTreeMap<String, u64>,
}

impl StatsSnapshot {
    /// Requests of one gateway and operation (0 when none).
    pub fn requests_for(&self, gateway: &str, operation: &str) -> u64 {
        self.requests
            .get(gateway)
            .and_then(|ops| ops.get(operation))
            .copied()
            .unwrap_or(0)
    }

    /// Times a fault kind was injected.
    pub fn faults_of(&self, kind: FaultKind) -> u64 {
        self.faults.get(kind.as_str()).copied().unwrap_or(0)
    }

    /// Side effects of one kind applied on one gateway.
    pub fn applied_for(&self, gateway: &str, effect: &str) -> u64 {
        self.applied
            .get(gateway)
            .and_then(|ops| ops.get(effect))
            .copied()
            .unwrap_or(0)
    }
}

impl Stats {
    fn with<R>(&self, f: impl FnOnce(&mut Counters) -> R) -> R {
        f(&mut self.counters.lock().expect("not poisoned"))
    }

    pub fn request(&self, gateway: &'static str, operation: &'static str) {
        self.with(|c| *c.requests.entry((gateway, operation)).or_default() += 1);
    }

    pub fn answer(&self, gateway: &'static str, http_status: u16, code: Option<&str>) {
        self.with(|c| {
            *c.statuses.entry((gateway, http_status)).or_default() += 1;
            if let Some(code) = code {
                *c.codes.entry((gateway, code.to_string())).or_default() += 1;
            }
        });
    }

    pub fn fault(&self, kind: FaultKind) {
        self.with(|c| *c.faults.entry(kind).or_default() += 1);
    }

    pub fn applied(&self, gateway: &'static str, effect: &'static str) {
        self.with(|c| *c.applied.entry((gateway, effect)).or_default() += 1);
    }

    pub fn admin(&self) {
        self.with(|c| c.admin += 1);
    }

    pub fn clear(&self) {
        self.with(|c| *c = Counters::default());
    }

    /// The counters; ledger and payment counts are filled in by the caller.
    pub fn snapshot(&self) -> StatsSnapshot {
        self.with(|c| {
            let mut s = StatsSnapshot {
                admin_requests: c.admin,
                ..StatsSnapshot::default()
            };
            for ((gateway, op), n) in &c.requests {
                s.requests_total += n;
                *s.requests
                    .entry(gateway.to_string())
                    .or_default()
                    .entry(op.to_string())
                    .or_default() += n;
            }
            for ((gateway, status), n) in &c.statuses {
                *s.answers
                    .entry(gateway.to_string())
                    .or_default()
                    .by_http_status
                    .entry(status.to_string())
                    .or_default() += n;
            }
            for ((gateway, code), n) in &c.codes {
                *s.answers
                    .entry(gateway.to_string())
                    .or_default()
                    .by_code
                    .entry(code.clone())
                    .or_default() += n;
            }
            for (kind, n) in &c.faults {
                s.faults.insert(kind.as_str().to_string(), *n);
            }
            for ((gateway, effect), n) in &c.applied {
                *s.applied
                    .entry(gateway.to_string())
                    .or_default()
                    .entry(effect.to_string())
                    .or_default() += n;
            }
            s
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up() {
        let stats = Stats::default();
        stats.request("paymentz", "RF");
        stats.request("paymentz", "RF");
        stats.request("praxis", "find-transaction");
        stats.answer("paymentz", 200, Some("00005"));
        stats.answer("paymentz", 500, None);
        stats.fault(FaultKind::ErrorAfter);
        stats.applied("paymentz", "refund");
        let s = stats.snapshot();
        assert_eq!(s.requests_total, 3);
        assert_eq!(s.requests_for("paymentz", "RF"), 2);
        assert_eq!(s.answers["paymentz"].by_http_status["500"], 1);
        assert_eq!(s.answers["paymentz"].by_code["00005"], 1);
        assert_eq!(s.faults_of(FaultKind::ErrorAfter), 1);
        assert_eq!(s.applied_for("paymentz", "refund"), 1);
        stats.clear();
        assert_eq!(stats.snapshot().requests_total, 0);
    }
}
