//! Prometheus metrics: what the worker counts as it goes, and what it samples
//! from Postgres when scraped.
//!
//! Counters are incremented where the event happens (one typed call per
//! event); the gauges that describe durable state (unknown outcomes open,
//! outbox backlog and age, abandoned events, dead letters) are read from the
//! database, so every instance reports the same truth, at most once per
//! refresh period whatever the number of scrapers (`crate::snapshot`).
//! Labels stay low-cardinality: gateway, operation, outcome, classification,
//! never ids.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::gateways::Exchange;

type Labels = Vec<(&'static str, String)>;

pub struct Metrics {
    registry: Registry,
    commands: Family<Labels, Counter>,
    attempts: Family<Labels, Counter>,
    latency: Family<Labels, Histogram>,
    signature_mismatches: Family<Labels, Counter>,
    retries: Family<Labels, Counter>,
    replays: Counter,
    dead_letters: Counter,
    events_published: Counter,
    events_abandoned: Counter,
    events_left_to_poll: Counter,
    confirm_timeouts: Counter,
    durable_reads: Counter,
    in_flight: Gauge,
    unknown_open: Gauge,
    outbox_backlog: Gauge,
    outbox_oldest: Gauge<f64, AtomicU64>,
    outbox_abandoned: Gauge,
    dead_letters_waiting: Gauge,
    durable_age: Gauge<f64, AtomicU64>,
    /// Notifications in (`crate::notifications`).
    pub notifications: crate::notifications::metrics::NotificationMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("backoffice");
        let commands = Family::<Labels, Counter>::default();
        registry.register(
            "commands",
            "Commands decided, by gateway, operation and outcome (settled unknowns count again under their settled outcome)",
            commands.clone(),
        );
        let attempts = Family::<Labels, Counter>::default();
        registry.register(
            "gateway_exchanges",
            "HTTP exchanges with gateways, by gateway, kind (operation, inquiry, auth) and classification",
            attempts.clone(),
        );
        let latency = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 14))
        });
        registry.register(
            "gateway_latency_seconds",
            "Latency of gateway HTTP exchanges, by gateway and purpose",
            latency.clone(),
        );
        let signature_mismatches = Family::<Labels, Counter>::default();
        registry.register(
            "gateway_signature_mismatches",
            "Gateway answers whose signature did not verify (recorded, not fatal)",
            signature_mismatches.clone(),
        );
        let retries = Family::<Labels, Counter>::default();
        registry.register(
            "retries_scheduled",
            "Retries written to the schedule after a not-applied answer, by gateway and operation",
            retries.clone(),
        );
        let replays = Counter::default();
        registry.register(
            "replays",
            "Replayed events for duplicate commands",
            replays.clone(),
        );
        let dead_letters = Counter::default();
        registry.register(
            "dead_letters",
            "Messages moved to the dead-letter queue by this instance",
            dead_letters.clone(),
        );
        let events_published = Counter::default();
        registry.register(
            "events_published",
            "Result events confirmed by the broker",
            events_published.clone(),
        );
        let events_abandoned = Counter::default();
        registry.register(
            "events_abandoned",
            "Result events this instance gave up publishing (too large, or refused by the broker again and again); kept in the outbox with their error",
            events_abandoned.clone(),
        );
        let events_left_to_poll = Counter::default();
        registry.register(
            "events_left_to_poll",
            "Committed events not handed to the relay from memory because its queue was full; the outbox poll publishes them once their claim expires",
            events_left_to_poll.clone(),
        );
        let confirm_timeouts = Counter::default();
        registry.register(
            "publish_confirm_timeouts",
            "Publishes the broker did not confirm in time; the session was reopened and the events stay in the outbox",
            confirm_timeouts.clone(),
        );
        let durable_reads = Counter::default();
        registry.register(
            "durable_figure_reads",
            "Reads of the durable figures from PostgreSQL (shared by every scrape within the refresh period)",
            durable_reads.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "commands_in_flight",
            "Commands this instance is running now",
            in_flight.clone(),
        );
        let unknown_open = Gauge::default();
        registry.register(
            "unknown_open",
            "Commands whose outcome is unknown and still being reconciled",
            unknown_open.clone(),
        );
        let outbox_backlog = Gauge::default();
        registry.register(
            "outbox_backlog",
            "Result events committed but not yet confirmed by the broker (abandoned ones excluded)",
            outbox_backlog.clone(),
        );
        let outbox_oldest = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "outbox_oldest_age_seconds",
            "Age of the oldest unpublished result event",
            outbox_oldest.clone(),
        );
        let outbox_abandoned = Gauge::default();
        registry.register(
            "outbox_abandoned",
            "Result events the relay gave up on: never published, each with its error in the outbox",
            outbox_abandoned.clone(),
        );
        let dead_letters_waiting = Gauge::default();
        registry.register(
            "dead_letters_waiting",
            "Dead letters not requeued",
            dead_letters_waiting.clone(),
        );
        let durable_age = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "durable_figures_age_seconds",
            "How old the durable figures (backlog, unknowns, dead letters) in this scrape are",
            durable_age.clone(),
        );
        let notifications =
            crate::notifications::metrics::NotificationMetrics::register(&mut registry);
        Metrics {
            notifications,
            registry,
            commands,
            attempts,
            latency,
            signature_mismatches,
            retries,
            replays,
            dead_letters,
            events_published,
            events_abandoned,
            events_left_to_poll,
            confirm_timeouts,
            durable_reads,
            in_flight,
            unknown_open,
            outbox_backlog,
            outbox_oldest,
            outbox_abandoned,
            dead_letters_waiting,
            durable_age,
        }
    }

    pub fn command_decided(&self, gateway: &str, operation: &str, outcome: &str) {
        self.commands
            .get_or_create(&vec![
                ("gateway", label(gateway)),
                ("operation", label(operation)),
                ("outcome", outcome.to_string()),
            ])
            .inc();
    }

    pub fn exchange(&self, gateway: &str, kind: &str, exchange: &Exchange) {
        self.attempts
            .get_or_create(&vec![
                ("gateway", gateway.to_string()),
                ("kind", kind.to_string()),
                (
                    "classification",
                    exchange.classification.as_str().to_string(),
                ),
            ])
            .inc();
        self.latency
            .get_or_create(&vec![
                ("gateway", gateway.to_string()),
                ("purpose", exchange.purpose.clone()),
            ])
            .observe(exchange.latency.as_secs_f64());
        if exchange.signature_verified == Some(false) {
            self.signature_mismatches
                .get_or_create(&vec![("gateway", gateway.to_string())])
                .inc();
        }
    }

    pub fn retry_scheduled(&self, gateway: &str, operation: &str) {
        self.retries
            .get_or_create(&vec![
                ("gateway", gateway.to_string()),
                ("operation", operation.to_string()),
            ])
            .inc();
    }

    pub fn replayed(&self) {
        self.replays.inc();
    }

    pub fn dead_lettered(&self) {
        self.dead_letters.inc();
    }

    pub fn published(&self, n: u64) {
        self.events_published.inc_by(n);
    }

    pub fn abandoned(&self, n: u64) {
        self.events_abandoned.inc_by(n);
    }

    pub fn left_to_poll(&self, n: u64) {
        self.events_left_to_poll.inc_by(n);
    }

    pub fn confirm_timed_out(&self) {
        self.confirm_timeouts.inc();
    }

    pub fn durable_read(&self) {
        self.durable_reads.inc();
    }

    pub fn set_in_flight(&self, n: usize) {
        self.in_flight.set(n as i64);
    }

    /// The durable state, as last read from the database `age` ago.
    pub fn set_durable(&self, durable: &Durable, age: Duration) {
        self.unknown_open.set(durable.unknown_open);
        self.outbox_backlog.set(durable.outbox_backlog);
        // The oldest unpublished event has aged since it was read, if there is one.
        let oldest = if durable.outbox_backlog > 0 {
            durable.outbox_oldest_age + age
        } else {
            Duration::ZERO
        };
        self.outbox_oldest.set(oldest.as_secs_f64());
        self.outbox_abandoned.set(durable.outbox_abandoned);
        self.dead_letters_waiting.set(durable.dead_letters_waiting);
        self.durable_age.set(age.as_secs_f64());
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// Gauges that describe what is in the database.
#[derive(Debug, Clone, Default)]
pub struct Durable {
    pub unknown_open: i64,
    pub outbox_backlog: i64,
    pub outbox_oldest_age: Duration,
    pub outbox_abandoned: i64,
    pub dead_letters_waiting: i64,
}

/// A label from producer input: known names pass, anything else is `other`,
/// so that a producer cannot blow up the number of series.
fn label(value: &str) -> String {
    let known = crate::gateways::registry::find(value).is_some()
        || crate::gateways::Operation::parse(value).is_some();
    if known {
        value.to_string()
    } else {
        "other".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_their_labels() {
        let m = Metrics::new();
        m.command_decided("paymentz", "refund", "succeeded");
        m.command_decided("paymentz", "refund", "succeeded");
        m.command_decided("nonsense-gateway", "x", "rejected");
        let text = m.render();
        assert!(
            text.contains(r#"backoffice_commands_total{gateway="paymentz",operation="refund",outcome="succeeded"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"gateway="other",operation="other",outcome="rejected"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("# TYPE backoffice_outbox_backlog gauge"),
            "{text}"
        );
    }
}
