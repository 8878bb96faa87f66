//! Waiting out a service that is away (RabbitMQ, PostgreSQL): the delay
//! grows with each failure in a row (jittered, capped, see
//! [`retry::jittered`]), starts again after a success, and a stop request
//! ends the wait at once. Every loop that reconnects, or retries a statement
//! against a database that is down, waits through one of these.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::retry;

/// The failures in a row of one loop, and the delays they earn.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// First waits `first`, doubling (±50 %) up to `max`.
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max,
            failures: 0,
        }
    }

    /// Reopening a connection: 200 ms at first, at most 10 s.
    pub fn reconnect() -> Backoff {
        Backoff::new(Duration::from_millis(200), Duration::from_secs(10))
    }

    /// Counts one more failure and returns how long to wait before trying again.
    pub fn next_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        retry::jittered(self.first, self.max, self.failures)
    }

    /// A success: the next failure waits the first delay again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// The failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// After a failure: tells `log` the delay, then waits it out unless
    /// `stop` is cancelled first. True when the delay passed (try again),
    /// false when asked to stop.
    pub async fn wait(&mut self, stop: &CancellationToken, log: impl FnOnce(Duration)) -> bool {
        let delay = self.next_delay();
        log(delay);
        tokio::select! {
            _ = tokio::time::sleep(delay) => true,
            _ = stop.cancelled() => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_up_to_the_cap_and_start_again_after_a_success() {
        let first = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        let mut backoff = Backoff::new(first, max);
        // ±50 % jitter around 100 ms, 200 ms, 400 ms...
        let d1 = backoff.next_delay();
        assert!(d1 >= first / 2 && d1 <= first * 3 / 2, "{d1:?}");
        let d3 = {
            backoff.next_delay();
            backoff.next_delay()
        };
        assert!(d3 >= first * 2 && d3 <= first * 6, "{d3:?}");
        for _ in 0..40 {
            assert!(backoff.next_delay() <= max);
        }
        assert_eq!(backoff.failures(), 43);
        backoff.reset();
        assert_eq!(backoff.failures(), 0);
        let again = backoff.next_delay();
        assert!(again <= first * 3 / 2, "{again:?}");
    }

    #[test]
    fn failures_never_overflow() {
        let mut backoff = Backoff::reconnect();
        backoff.failures = u32::MAX;
        assert!(backoff.next_delay() <= Duration::from_secs(10));
        assert_eq!(backoff.failures(), u32::MAX);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_passes_its_delay_unless_stopped() {
        let stop = CancellationToken::new();
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
        let mut told = None;
        let started = tokio::time::Instant::now();
        assert!(backoff.wait(&stop, |d| told = Some(d)).await);
        let told = told.expect("the delay is told before the wait");
        let waited = started.elapsed();
        // Timers round up to the millisecond.
        assert!(
            waited >= told && waited <= told + Duration::from_millis(1),
            "{waited:?}"
        );

        stop.cancel();
        let started = tokio::time::Instant::now();
        assert!(!backoff.wait(&stop, |_| {}).await);
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "a stop ends the wait at once"
        );
        assert_eq!(backoff.failures(), 2);
    }
}
