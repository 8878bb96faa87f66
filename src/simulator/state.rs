//! The simulated gateways' memory: payments, their statuses, and the
//! append-only ledger of every side effect applied.
//!
//! Payments live in a sharded map (a `Mutex<HashMap>` per shard), so calls on
//! different payments rarely wait for each other, and every check-and-change
//! of one payment happens under its shard lock: two refunds racing on one
//! payment are applied one after the other, never both against the same
//! balance. A side effect and its ledger entry are written under the same
//! lock, so the ledger order is the order in which effects were applied.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::money::Amount;

/// The gateways the simulator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GatewayId {
    Paymentz,
    Praxis,
}

impl GatewayId {
    /// Every gateway the simulator answers for (the registry's test compares
    /// it with `gateways::registry::GATEWAYS`).
    pub const ALL: [GatewayId; 2] = [GatewayId::Paymentz, GatewayId::Praxis];

    pub fn as_str(self) -> &'static str {
        match self {
            GatewayId::Paymentz => "paymentz",
            GatewayId::Praxis => "praxis",
        }
    }

    pub fn parse(text: &str) -> Option<GatewayId> {
        match text {
            "paymentz" => Some(GatewayId::Paymentz),
            "praxis" => Some(GatewayId::Praxis),
            _ => None,
        }
    }
}

/// A gateway's status vocabulary.
pub trait Status: Copy + PartialEq + std::fmt::Debug {
    fn as_str(self) -> &'static str;
    /// A native name (which always means itself), or one of the shared names
    /// `authorized`, `captured`, `settled`, `refunded`, `cancelled`,
    /// `failed`, `chargeback` where the gateway has no status of that name
    /// (Paymentz `authorized` is `authsuccessful`, `captured` is
    /// `capturesuccess`, `refunded` is `reversed`;
    /// Praxis `captured`/`settled` is `approved`, `failed` is `rejected`).
    fn parse(text: &str) -> Option<Self>;
    /// Whether the money was taken, so `captured` defaults to the full amount.
    fn is_captured(self) -> bool;
    /// Whether money went back, so `refunded` defaults to the captured amount.
    fn is_refunded(self) -> bool;
}

/// Paymentz long statuses (`status` in IN answers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PzStatus {
    Begun,
    AuthStarted,
    AuthSuccessful,
    AuthFailed,
    AuthCancelled,
    CancelStarted,
    Cancelled,
    CaptureStarted,
    CaptureSuccess,
    CaptureFailed,
    Settled,
    MarkedForReversal,
    Reversed,
    Chargeback,
    Failed,
}

impl PzStatus {
    const ALL: [PzStatus; 15] = [
        PzStatus::Begun,
        PzStatus::AuthStarted,
        PzStatus::AuthSuccessful,
        PzStatus::AuthFailed,
        PzStatus::AuthCancelled,
        PzStatus::CancelStarted,
        PzStatus::Cancelled,
        PzStatus::CaptureStarted,
        PzStatus::CaptureSuccess,
        PzStatus::CaptureFailed,
        PzStatus::Settled,
        PzStatus::MarkedForReversal,
        PzStatus::Reversed,
        PzStatus::Chargeback,
        PzStatus::Failed,
    ];

    /// The short `transactionStatus`: `Y` for everything that went through
    /// (which is why clients must decide by the long status), `C` cancelled,
    /// `N` failed, `P` in progress.
    pub fn short(self) -> &'static str {
        use PzStatus::*;
        match self {
            AuthSuccessful | CaptureSuccess | Settled | MarkedForReversal | Reversed
            | Chargeback => "Y",
            AuthCancelled | Cancelled => "C",
            AuthFailed | CaptureFailed | Failed => "N",
            Begun | AuthStarted | CancelStarted | CaptureStarted => "P",
        }
    }
}

impl Status for PzStatus {
    fn as_str(self) -> &'static str {
        use PzStatus::*;
        match self {
            Begun => "begun",
            AuthStarted => "authstarted",
            AuthSuccessful => "authsuccessful",
            AuthFailed => "authfailed",
            AuthCancelled => "authcancelled",
            CancelStarted => "cancelstarted",
            Cancelled => "cancelled",
            CaptureStarted => "capturestarted",
            CaptureSuccess => "capturesuccess",
            CaptureFailed => "capturefailed",
            Settled => "settled",
            MarkedForReversal => "markedforreversal",
            Reversed => "reversed",
            Chargeback => "chargeback",
            Failed => "failed",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        let native = PzStatus::ALL.into_iter().find(|s| s.as_str() == text);
        native.or(match text {
            "authorized" => Some(PzStatus::AuthSuccessful),
            "captured" => Some(PzStatus::CaptureSuccess),
            "refunded" => Some(PzStatus::Reversed),
            _ => None,
        })
    }

    fn is_captured(self) -> bool {
        use PzStatus::*;
        matches!(
            self,
            CaptureSuccess | Settled | MarkedForReversal | Reversed | Chargeback
        )
    }

    fn is_refunded(self) -> bool {
        self == PzStatus::Reversed
    }
}

/// Praxis `transaction_status` values for an `authorize` transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PxStatus {
    Authorized,
    Approved,
    Cancelled,
    Rejected,
    Error,
    Pending,
    Chargeback,
}

impl PxStatus {
    const ALL: [PxStatus; 7] = [
        PxStatus::Authorized,
        PxStatus::Approved,
        PxStatus::Cancelled,
        PxStatus::Rejected,
        PxStatus::Error,
        PxStatus::Pending,
        PxStatus::Chargeback,
    ];
}

impl Status for PxStatus {
    fn as_str(self) -> &'static str {
        match self {
            PxStatus::Authorized => "authorized",
            PxStatus::Approved => "approved",
            PxStatus::Cancelled => "cancelled",
            PxStatus::Rejected => "rejected",
            PxStatus::Error => "error",
            PxStatus::Pending => "pending",
            PxStatus::Chargeback => "chargeback",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        let native = PxStatus::ALL.into_iter().find(|s| s.as_str() == text);
        native.or(match text {
            "captured" | "settled" => Some(PxStatus::Approved),
            "failed" => Some(PxStatus::Rejected),
            _ => None,
        })
    }

    fn is_captured(self) -> bool {
        matches!(self, PxStatus::Approved | PxStatus::Chargeback)
    }

    fn is_refunded(self) -> bool {
        false
    }
}

/// One simulated payment. `S` is the gateway's status vocabulary.
#[derive(Debug, Clone, PartialEq)]
pub struct Payment<S> {
    /// Paymentz `paymentId`, Praxis `trace_id` in decimal.
    pub id: String,
    /// Paymentz `merchantTransactionId`, Praxis `order_id`.
    pub reference: String,
    /// The member (Paymentz) or merchant (Praxis) it belongs to; `None` means
    /// any account may use it (admin-created payments without an owner).
    pub owner: Option<String>,
    /// Praxis front end; `None` answers with the caller's front end.
    pub frontend: Option<String>,
    /// Praxis `transaction_id` of the authorization.
    pub transaction_id: Option<u64>,
    pub status: S,
    /// Authorised amount.
    pub amount: Amount,
    pub captured: Amount,
    pub refunded: Amount,
    pub currency: String,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl<S: Status> Payment<S> {
    pub fn view(&self, gateway: GatewayId) -> PaymentView {
        PaymentView {
            gateway,
            id: self.id.clone(),
            reference: self.reference.clone(),
            owner: self.owner.clone(),
            frontend: self.frontend.clone(),
            transaction_id: self.transaction_id.map(|t| t.to_string()),
            status: self.status.as_str().to_string(),
            amount: self.amount,
            captured: self.captured,
            refunded: self.refunded,
            currency: self.currency.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }

    /// Whether `caller` (member or merchant id) may see and use this payment.
    pub fn visible_to(&self, caller: &str) -> bool {
        self.owner.as_deref().is_none_or(|owner| owner == caller)
    }
}

/// A payment as the admin API and the in-process API show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentView {
    pub gateway: GatewayId,
    pub id: String,
    /// Paymentz `merchantTransactionId`, Praxis `order_id`.
    pub reference: String,
    pub owner: Option<String>,
    pub frontend: Option<String>,
    pub transaction_id: Option<String>,
    pub status: String,
    pub amount: Amount,
    pub captured: Amount,
    pub refunded: Amount,
    pub currency: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

const SHARDS: usize = 64;

/// A map split into independently locked shards by key hash.
#[derive(Debug)]
pub struct Shards<V> {
    shards: Box<[Mutex<HashMap<String, V>>]>,
}

impl<V> Default for Shards<V> {
    fn default() -> Self {
        Shards {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

impl<V: Clone> Shards<V> {
    /// The locked shard holding `key`. Hold it for the whole check-and-change.
    pub fn lock(&self, key: &str) -> MutexGuard<'_, HashMap<String, V>> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut hasher);
        let index = (hasher.finish() as usize) % self.shards.len();
        self.shards[index].lock().expect("not poisoned")
    }

    pub fn get(&self, key: &str) -> Option<V> {
        self.lock(key).get(key).cloned()
    }

    /// Every value, one shard at a time (not a snapshot across shards).
    pub fn values(&self) -> Vec<V> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            out.extend(shard.lock().expect("not poisoned").values().cloned());
        }
        out
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().expect("not poisoned").len())
            .sum()
    }

    pub fn clear(&self) {
        for shard in self.shards.iter() {
            shard.lock().expect("not poisoned").clear();
        }
    }
}

/// Side effects the ledger records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    Capture,
    Refund,
    Cancel,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Capture => "capture",
            Effect::Refund => "refund",
            Effect::Cancel => "cancel",
        }
    }
}

/// One applied side effect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// 1, 2, 3, ... in the order effects were applied.
    pub seq: u64,
    pub gateway: GatewayId,
    pub payment_id: String,
    pub operation: Effect,
    pub amount: Amount,
    pub currency: String,
    /// Paymentz: the new `paymentId` answered for the operation. Praxis: the
    /// authorization's `transaction_id` (API 1.1 captures and cancels act on
    /// that transaction rather than creating a new one).
    pub transaction_id: String,
    /// The payment's status once applied.
    pub status_after: String,
    /// The simulator's number for the HTTP request that caused it, to match
    /// effects with faults in logs.
    pub request_no: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// Which ledger entries to list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerQuery {
    pub gateway: Option<GatewayId>,
    pub payment_id: Option<String>,
    /// Only entries with `seq` greater than this, for paging through a long run.
    pub since: Option<u64>,
    pub limit: Option<usize>,
}

/// The append-only record of side effects.
#[derive(Debug, Default)]
pub struct Ledger {
    entries: Mutex<Vec<LedgerEntry>>,
}

/// An entry before the ledger numbers it.
pub struct NewEntry<'a> {
    pub gateway: GatewayId,
    pub payment_id: &'a str,
    pub operation: Effect,
    pub amount: Amount,
    pub currency: &'a str,
    pub transaction_id: String,
    pub status_after: &'static str,
    pub request_no: u64,
}

impl Ledger {
    /// Appends and returns the sequence number. Call it while holding the
    /// payment's shard lock, so the order matches the order of application.
    pub fn append(&self, entry: NewEntry<'_>) -> u64 {
        let mut entries = self.entries.lock().expect("not poisoned");
        let seq = entries.len() as u64 + 1;
        entries.push(LedgerEntry {
            seq,
            gateway: entry.gateway,
            payment_id: entry.payment_id.to_string(),
            operation: entry.operation,
            amount: entry.amount,
            currency: entry.currency.to_string(),
            transaction_id: entry.transaction_id,
            status_after: entry.status_after.to_string(),
            request_no: entry.request_no,
            at: OffsetDateTime::now_utc(),
        });
        seq
    }

    pub fn query(&self, query: &LedgerQuery) -> Vec<LedgerEntry> {
        let entries = self.entries.lock().expect("not poisoned");
        let start = query.since.unwrap_or(0).min(entries.len() as u64) as usize;
        entries[start..]
            .iter()
            .filter(|e| query.gateway.is_none_or(|g| g == e.gateway))
            .filter(|e| {
                query
                    .payment_id
                    .as_deref()
                    .is_none_or(|id| id == e.payment_id)
            })
            .take(query.limit.unwrap_or(usize::MAX))
            .cloned()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.entries.lock().expect("not poisoned").len()
    }

    pub fn clear(&self) {
        self.entries.lock().expect("not poisoned").clear();
    }
}

/// Ids the simulator hands out (new Paymentz `paymentId`s for operations and
/// for admin-created payments, Praxis `transaction_id`s and trace ids). They
/// start at 1 000 000 000, above the on-demand range, so a handed-out id is
/// never mistaken for one that should be created on first touch.
#[derive(Debug)]
pub struct IdSequence(AtomicU64);

pub const FIRST_ID: u64 = 1_000_000_000;

impl Default for IdSequence {
    fn default() -> Self {
        IdSequence(AtomicU64::new(FIRST_ID))
    }
}

impl IdSequence {
    pub fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

/// The on-demand rule's range: unknown ids of 8 or 9 digits.
pub const AUTO_RANGE: std::ops::RangeInclusive<u64> = 10_000_000..=999_999_999;

/// Whether `id` falls under the on-demand rule (digits only, no leading zero,
/// in [`AUTO_RANGE`]).
pub fn in_auto_range(id: &str) -> Option<u64> {
    if id.is_empty() || id.starts_with('0') || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    id.parse::<u64>().ok().filter(|n| AUTO_RANGE.contains(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_statuses() {
        assert_eq!(PzStatus::Reversed.short(), "Y");
        assert_eq!(PzStatus::CaptureSuccess.short(), "Y");
        assert_eq!(PzStatus::AuthCancelled.short(), "C");
        assert_eq!(PzStatus::AuthFailed.short(), "N");
        assert_eq!(PzStatus::CaptureStarted.short(), "P");
    }

    #[test]
    fn status_names_round_trip_and_shared_names_map() {
        for s in PzStatus::ALL {
            assert_eq!(PzStatus::parse(s.as_str()), Some(s));
        }
        for s in PxStatus::ALL {
            assert_eq!(PxStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(
            PzStatus::parse("authorized"),
            Some(PzStatus::AuthSuccessful)
        );
        assert_eq!(PzStatus::parse("captured"), Some(PzStatus::CaptureSuccess));
        assert_eq!(PxStatus::parse("captured"), Some(PxStatus::Approved));
        assert_eq!(PzStatus::parse("failed"), Some(PzStatus::Failed));
        assert_eq!(PxStatus::parse("refunded"), None);
    }

    #[test]
    fn auto_range() {
        assert_eq!(in_auto_range("10000000"), Some(10_000_000));
        assert_eq!(in_auto_range("999999999"), Some(999_999_999));
        assert_eq!(in_auto_range("9999999"), None);
        assert_eq!(in_auto_range("1000000000"), None);
        assert_eq!(in_auto_range("012345678"), None);
        assert_eq!(in_auto_range("1234567a"), None);
    }

    #[test]
    fn ledger_numbers_and_filters() {
        let ledger = Ledger::default();
        for (i, id) in ["1", "2", "1"].iter().enumerate() {
            let seq = ledger.append(NewEntry {
                gateway: GatewayId::Paymentz,
                payment_id: id,
                operation: Effect::Refund,
                amount: Amount::from_minor(100),
                currency: "EUR",
                transaction_id: format!("t{i}"),
                status_after: "reversed",
                request_no: i as u64,
            });
            assert_eq!(seq, i as u64 + 1);
        }
        let only_1 = ledger.query(&LedgerQuery {
            payment_id: Some("1".into()),
            ..LedgerQuery::default()
        });
        assert_eq!(only_1.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 3]);
        let since = ledger.query(&LedgerQuery {
            since: Some(1),
            limit: Some(1),
            ..LedgerQuery::default()
        });
        assert_eq!(since.iter().map(|e| e.seq).collect::<Vec<_>>(), [2]);
    }
}
