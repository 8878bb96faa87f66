//! How the worker runs: `[http]` (the transport every gateway client
//! shares), `[worker]` (concurrency, retries, reconciliation), `[relay]`
//! (publishing the outbox) and `[retention]` (how long rows are kept).

use std::time::Duration;

use super::reader::{parse_duration, ConfigError, Section};
use crate::gateways::http::{HttpSettings, ProxyUrl};
use crate::pipeline::relay::RelaySettings;
use crate::store::retention::RetentionSettings;

/// `[http] max_answer_bytes` bounds: below 64 KiB a transaction list page may
/// not fit; above 1 GiB the cap no longer protects anything.
const MIN_ANSWER_BYTES: i64 = 64 * 1024;
const MAX_ANSWER_BYTES: i64 = 1024 * 1024 * 1024;

/// How the worker runs commands: concurrency, retries and reconciliation.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Commands processed at once by one instance.
    pub max_in_flight: usize,
    /// Attempts per command for `not applied` answers, the first included.
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Total time a command may spend being retried before it is `failed`.
    pub max_retry_time: Duration,
    /// How long a claim on a command stays valid without being renewed.
    pub lease: Duration,
    /// Inquiries made to settle an ambiguous answer before reporting `unknown`.
    pub reconcile_attempts: u32,
    /// Background reconciliation of `unknown` outcomes: delays between checks.
    pub reconcile_schedule: Vec<Duration>,
    /// How long shutdown waits for in-flight commands.
    pub shutdown_grace: Duration,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            max_in_flight: 2000,
            max_attempts: 5,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            max_retry_time: Duration::from_secs(15 * 60),
            lease: Duration::from_secs(90),
            reconcile_attempts: 3,
            reconcile_schedule: vec![
                Duration::from_secs(60),
                Duration::from_secs(5 * 60),
                Duration::from_secs(30 * 60),
                Duration::from_secs(60 * 60),
                Duration::from_secs(6 * 60 * 60),
                Duration::from_secs(24 * 60 * 60),
            ],
            shutdown_grace: Duration::from_secs(25),
        }
    }
}

/// `[http]`.
pub(super) fn http(section: &Section) -> Result<HttpSettings, ConfigError> {
    let defaults = HttpSettings::default();
    let proxy = match section.opt_str("proxy")? {
        None => None,
        Some(text) => {
            Some(ProxyUrl::parse(&text).map_err(|problem| section.error("proxy", problem))?)
        }
    };
    let http = HttpSettings {
        connect_timeout: section.duration_or("connect_timeout", defaults.connect_timeout)?,
        request_timeout: section.duration_or("request_timeout", defaults.request_timeout)?,
        allow_http: section.bool_or("allow_http", defaults.allow_http)?,
        proxy,
        max_answer_bytes: section.int_or(
            "max_answer_bytes",
            defaults.max_answer_bytes as i64,
            MIN_ANSWER_BYTES,
            MAX_ANSWER_BYTES,
        )? as usize,
    };
    section.finish()?;
    Ok(http)
}

/// `[worker]`.
pub(super) fn worker(w: &Section) -> Result<WorkerSettings, ConfigError> {
    let d = WorkerSettings::default();
    let worker = WorkerSettings {
        max_in_flight: w.int_or("max_in_flight", d.max_in_flight as i64, 1, 100_000)? as usize,
        max_attempts: w.int_or("max_attempts", d.max_attempts as i64, 1, 1000)? as u32,
        initial_backoff: w.duration_or("initial_backoff", d.initial_backoff)?,
        max_backoff: w.duration_or("max_backoff", d.max_backoff)?,
        max_retry_time: w.duration_or("max_retry_time", d.max_retry_time)?,
        lease: w.duration_or("lease", d.lease)?,
        reconcile_attempts: w.int_or("reconcile_attempts", d.reconcile_attempts as i64, 1, 100)?
            as u32,
        reconcile_schedule: w.durations_or("reconcile_schedule", d.reconcile_schedule)?,
        shutdown_grace: w.duration_or("shutdown_grace", d.shutdown_grace)?,
    };
    w.finish()?;
    Ok(worker)
}

/// A timeout: zero would refuse everything.
pub(super) fn positive(
    section: &Section,
    key: &str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let d = section.duration_or(key, default)?;
    if d.is_zero() {
        return Err(section.error(key, "must be longer than zero"));
    }
    Ok(d)
}

/// `[relay]`.
pub(super) fn relay(r: &Section) -> Result<RelaySettings, ConfigError> {
    let d = RelaySettings::default();
    let settings = RelaySettings {
        confirm_timeout: positive(r, "confirm_timeout", d.confirm_timeout)?,
        max_event_size: r.int_or("max_event_size", d.max_event_size as i64, 1024, 1 << 30)?
            as usize,
        handover_capacity: r.int_or("handover_capacity", d.handover_capacity as i64, 1, 1 << 20)?
            as usize,
    };
    r.finish()?;
    Ok(settings)
}

/// `[retention]`: an age per kind of row, or `"off"` to keep it for ever.
pub(super) fn retention(r: &Section) -> Result<RetentionSettings, ConfigError> {
    let d = RetentionSettings::default();
    let age = |key: &str, default: Option<Duration>| -> Result<Option<Duration>, ConfigError> {
        match r.opt_str(key)?.as_deref().map(str::trim) {
            None => Ok(default),
            Some("off") => Ok(None),
            Some(text) => {
                let d = parse_duration(text).map_err(|p| r.error(key, p))?;
                if d.is_zero() {
                    return Err(r.error(key, "must be longer than zero (or \"off\")"));
                }
                Ok(Some(d))
            }
        }
    };
    let commands = age("commands", d.commands)?;
    let published_events = age("published_events", d.published_events)?;
    if let (Some(commands), Some(events)) = (commands, published_events) {
        if events > commands {
            return Err(r.error(
                "published_events",
                "is longer than `commands`: a command's events go with it",
            ));
        }
    }
    let settings = RetentionSettings {
        commands,
        published_events,
        dead_letters: age("dead_letters", d.dead_letters)?,
        interval: age("interval", d.interval)?,
        batch: r.int_or("batch", i64::from(d.batch), 1, 100_000)? as u32,
    };
    r.finish()?;
    Ok(settings)
}
