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
    durable_reads: Counter,
    in_flight: Gauge,
    relay: RelayCounters,
    durable: DurableGauges,
    /// Notifications in (`crate::notifications`).
    pub notifications: crate::notifications::metrics::NotificationMetrics,
}

/// The relay's counters: what became of the result events it publishes.
struct RelayCounters {
    events_published: Counter,
    events_abandoned: Counter,
    events_left_to_poll: Counter,
    confirm_timeouts: Counter,
}

impl RelayCounters {
    fn register(registry: &mut Registry) -> RelayCounters {
        RelayCounters {
            events_published: registered(
                registry,
                "events_published",
                "Result events confirmed by the broker",
                Counter::default(),
            ),
            events_abandoned: registered(
                registry,
                "events_abandoned",
                "Result events this instance gave up publishing (too large, or refused by the broker again and again); kept in the outbox with their error",
                Counter::default(),
            ),
            events_left_to_poll: registered(
                registry,
                "events_left_to_poll",
                "Committed events not handed to the relay from memory because its queue was full; the outbox poll publishes them once their claim expires",
                Counter::default(),
            ),
            confirm_timeouts: registered(
                registry,
                "publish_confirm_timeouts",
                "Publishes the broker did not confirm in time; the session was reopened and the events stay in the outbox",
                Counter::default(),
            ),
        }
    }
}

/// The gauges of the durable state, read from the database (see
/// [`Metrics::set_durable`]).
struct DurableGauges {
    unknown_open: Gauge,
    outbox_backlog: Gauge,
    outbox_oldest: Gauge<f64, AtomicU64>,
    outbox_abandoned: Gauge,
    dead_letters_waiting: Gauge,
    durable_age: Gauge<f64, AtomicU64>,
}

impl DurableGauges {
    fn register(registry: &mut Registry) -> DurableGauges {
        DurableGauges {
            unknown_open: registered(
                registry,
                "unknown_open",
                "Commands whose outcome is unknown and still being reconciled",
                Gauge::default(),
            ),
            outbox_backlog: registered(
                registry,
                "outbox_backlog",
                "Result events committed but not yet confirmed by the broker (abandoned ones excluded)",
                Gauge::default(),
            ),
            outbox_oldest: registered(
                registry,
                "outbox_oldest_age_seconds",
                "Age of the oldest unpublished result event",
                Gauge::<f64, AtomicU64>::default(),
            ),
            outbox_abandoned: registered(
                registry,
                "outbox_abandoned",
                "Result events the relay gave up on: never published, each with its error in the outbox",
                Gauge::default(),
            ),
            dead_letters_waiting: registered(
                registry,
                "dead_letters_waiting",
                "Dead letters not requeued",
                Gauge::default(),
            ),
            durable_age: registered(
                registry,
                "durable_figures_age_seconds",
                "How old the durable figures (backlog, unknowns, dead letters) in this scrape are",
                Gauge::<f64, AtomicU64>::default(),
            ),
        }
    }
}

/// `metric`, registered under `name` with its `help`.
fn registered<M: prometheus_client::registry::Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    metric: M,
) -> M {
    registry.register(name, help, metric.clone());
    metric
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("backoffice");
        let r = &mut registry;
        // Registered in this order: the order of the exposition.
        Metrics {
            commands: registered(
                r,
                "commands",
                "Commands decided, by gateway, operation and outcome (settled unknowns count again under their settled outcome)",
                Family::<Labels, Counter>::default(),
            ),
            attempts: registered(
                r,
                "gateway_exchanges",
                "HTTP exchanges with gateways, by gateway, kind (operation, inquiry, auth) and classification",
                Family::<Labels, Counter>::default(),
            ),
            latency: registered(
                r,
                "gateway_latency_seconds",
                "Latency of gateway HTTP exchanges, by gateway and purpose",
                Family::<Labels, Histogram>::new_with_constructor(|| { Histogram::new(exponential_buckets(0.005, 2.0, 14)) }),
            ),
            signature_mismatches: registered(
                r,
                "gateway_signature_mismatches",
                "Gateway answers whose signature did not verify (recorded, not fatal)",
                Family::<Labels, Counter>::default(),
            ),
            retries: registered(
                r,
                "retries_scheduled",
                "Retries written to the schedule after a not-applied answer, by gateway and operation",
                Family::<Labels, Counter>::default(),
            ),
            replays: registered(
                r,
                "replays",
                "Replayed events for duplicate commands",
                Counter::default(),
            ),
            dead_letters: registered(
                r,
                "dead_letters",
                "Messages moved to the dead-letter queue by this instance",
                Counter::default(),
            ),
            relay: RelayCounters::register(r),
            durable_reads: registered(
                r,
                "durable_figure_reads",
                "Reads of the durable figures from PostgreSQL (shared by every scrape within the refresh period)",
                Counter::default(),
            ),
            in_flight: registered(
                r,
                "commands_in_flight",
                "Commands this instance is running now",
                Gauge::default(),
            ),
            durable: DurableGauges::register(r),
            notifications: crate::notifications::metrics::NotificationMetrics::register(r),
            registry,
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
        self.relay.events_published.inc_by(n);
    }

    pub fn abandoned(&self, n: u64) {
        self.relay.events_abandoned.inc_by(n);
    }

    pub fn left_to_poll(&self, n: u64) {
        self.relay.events_left_to_poll.inc_by(n);
    }

    pub fn confirm_timed_out(&self) {
        self.relay.confirm_timeouts.inc();
    }

    pub fn durable_read(&self) {
        self.durable_reads.inc();
    }

    pub fn set_in_flight(&self, n: usize) {
        self.in_flight.set(n as i64);
    }

    /// The durable state, as last read from the database `age` ago.
    pub fn set_durable(&self, durable: &Durable, age: Duration) {
        self.durable.unknown_open.set(durable.unknown_open);
        self.durable.outbox_backlog.set(durable.outbox_backlog);
        // The oldest unpublished event has aged since it was read, if there is one.
        let oldest = if durable.outbox_backlog > 0 {
            durable.outbox_oldest_age + age
        } else {
            Duration::ZERO
        };
        self.durable.outbox_oldest.set(oldest.as_secs_f64());
        self.durable.outbox_abandoned.set(durable.outbox_abandoned);
        self.durable
            .dead_letters_waiting
            .set(durable.dead_letters_waiting);
        self.durable.durable_age.set(age.as_secs_f64());
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
