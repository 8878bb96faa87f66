//! When to try again: exponential backoff with jitter, computed by the `backoff` crate.
//!
//! The schedule itself lives in Postgres (`commands.next_run_at`), so a retry
//! survives a restart; this module only computes the delay for attempt n from
//! scratch, which is why it builds a fresh backoff positioned at that attempt.

use std::time::Duration;

use backoff::backoff::Backoff;
use backoff::ExponentialBackoff;

use crate::config::WorkerSettings;

/// The delay before attempt `next_attempt` (2 for the first retry), jittered ±50 %.
pub fn delay(settings: &WorkerSettings, next_attempt: u32) -> Duration {
    jittered(
        settings.initial_backoff,
        settings.max_backoff,
        next_attempt.saturating_sub(1),
    )
}

/// `base × 2^(step-1)`, capped at `max`, jittered ±50 %. Step 0 is treated as 1.
pub fn jittered(base: Duration, max: Duration, step: u32) -> Duration {
    let exponent = step.saturating_sub(1).min(30);
    let interval = base.saturating_mul(1u32 << exponent).min(max);
    let mut backoff = ExponentialBackoff {
        current_interval: interval,
        initial_interval: base,
        randomization_factor: 0.5,
        multiplier: 2.0,
        max_interval: max,
        max_elapsed_time: None,
        ..ExponentialBackoff::default()
    };
    backoff.next_backoff().unwrap_or(interval).min(max)
}

/// The delay before background reconciliation check number `check` of an `unknown`.
/// The last configured interval repeats for as long as it takes.
pub fn reconcile_delay(settings: &WorkerSettings, check: usize) -> Duration {
    let schedule = &settings.reconcile_schedule;
    schedule
        .get(check)
        .or_else(|| schedule.last())
        .copied()
        .unwrap_or(Duration::from_secs(3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_exponentially_within_jitter_and_cap() {
        let s = WorkerSettings {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            ..WorkerSettings::default()
        };
        for _ in 0..50 {
            let d2 = delay(&s, 2);
            assert!(
                d2 >= Duration::from_millis(50) && d2 <= Duration::from_millis(150),
                "{d2:?}"
            );
            let d4 = delay(&s, 4);
            assert!(
                d4 >= Duration::from_millis(200) && d4 <= Duration::from_millis(600),
                "{d4:?}"
            );
            assert!(delay(&s, 40) <= Duration::from_secs(1));
        }
    }

    #[test]
    fn reconcile_schedule_repeats_its_last_interval() {
        let s = WorkerSettings {
            reconcile_schedule: vec![Duration::from_secs(60), Duration::from_secs(3600)],
            ..WorkerSettings::default()
        };
        assert_eq!(reconcile_delay(&s, 0), Duration::from_secs(60));
        assert_eq!(reconcile_delay(&s, 1), Duration::from_secs(3600));
        assert_eq!(reconcile_delay(&s, 9), Duration::from_secs(3600));
    }
}
