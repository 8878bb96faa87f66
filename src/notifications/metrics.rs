//! The notification side's metrics: notifications by gateway, verified and
//! decision; inquiries of unverified ones by result; holds open and the
//! oldest hold's age; deadlines reached. Registered with the worker's
//! [`crate::metrics::Metrics`]; labels stay low-cardinality (never ids).

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
pub struct NotificationMetrics {
    received: Family<Labels, Counter>,
    inquiries: Family<Labels, Counter>,
    deadlines: Family<Labels, Counter>,
    holds_open: Gauge,
    oldest_hold: Gauge<f64, AtomicU64>,
}

impl NotificationMetrics {
    pub fn register(registry: &mut Registry) -> NotificationMetrics {
        let m = NotificationMetrics::default();
        registry.register(
            "notifications",
            "Notifications received, by gateway, verified (true/false) and decision (acted, held, ignored, unverified, settled, repeat, not_recorded)",
            m.received.clone(),
        );
        registry.register(
            "notification_inquiries",
            "Inquiries about unverified notifications, by result (confirmed, contradicted, not_found, no_answer, rate_limited)",
            m.inquiries.clone(),
        );
        registry.register(
            "hold_deadlines",
            "Holds that reached their deadline, by what was done (cancel, alert)",
            m.deadlines.clone(),
        );
        registry.register(
            "holds_open",
            "Held authorizations waiting for a person or their deadline",
            m.holds_open.clone(),
        );
        registry.register(
            "oldest_hold_age_seconds",
            "Age of the oldest open hold",
            m.oldest_hold.clone(),
        );
        m
    }

    pub fn received(&self, gateway: &str, verified: bool, decision: &str) {
        self.received
            .get_or_create(&vec![
                ("gateway", gateway.to_string()),
                ("verified", verified.to_string()),
                ("decision", decision.to_string()),
            ])
            .inc();
    }

    pub fn inquiry(&self, result: &str) {
        self.inquiries
            .get_or_create(&vec![("result", result.to_string())])
            .inc();
    }

    pub fn deadline(&self, action: &str) {
        self.deadlines
            .get_or_create(&vec![("action", action.to_string())])
            .inc();
    }

    pub fn set_holds(&self, open: i64, oldest_seconds: f64) {
        self.holds_open.set(open);
        self.oldest_hold.set(oldest_seconds);
    }
}
