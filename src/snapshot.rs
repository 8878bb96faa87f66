//! Figures read from the database on demand, at most once per period, and
//! shared by every reader.
//!
//! A scrape (or, later, a console page) must not cost the database a query
//! each: a dozen scrapers, or a scrape storm, would otherwise add their rate
//! to the database's load exactly when someone is looking at a problem. A
//! [`Snapshot`] loads when the last load is older than its period, with one
//! load in flight at a time: readers that arrive meanwhile wait for it (never
//! longer than the load's timeout), and readers after it get its result. A
//! failed load is not retried before the period is over either; readers get
//! the last good figures and their age.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

pub struct Snapshot<T> {
    period: Duration,
    timeout: Duration,
    state: Mutex<State<T>>,
    /// Held while loading: the one load in flight.
    loading: tokio::sync::Mutex<()>,
    loads: AtomicU64,
}

struct State<T> {
    attempted: Option<Instant>,
    value: Option<(T, Instant)>,
}

/// The figures, and how old they are.
#[derive(Debug, Clone)]
pub struct Figures<T> {
    pub value: T,
    pub age: Duration,
}

impl<T: Clone> Snapshot<T> {
    /// Loads at most once per `period`; a load that takes longer than
    /// `timeout` counts as failed.
    pub fn new(period: Duration, timeout: Duration) -> Snapshot<T> {
        Snapshot {
            period,
            timeout,
            state: Mutex::new(State {
                attempted: None,
                value: None,
            }),
            loading: tokio::sync::Mutex::new(()),
            loads: AtomicU64::new(0),
        }
    }

    /// The current figures, loading them with `load` if the last load is
    /// older than the period. `None` until a load has succeeded.
    pub async fn get<F, Fut, E>(&self, load: F) -> Option<Figures<T>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: std::fmt::Display,
    {
        if let Some(figures) = self.recent() {
            return figures;
        }
        let _loading = self.loading.lock().await;
        // Whoever held the lock before us may just have loaded.
        if let Some(figures) = self.recent() {
            return figures;
        }
        self.loads.fetch_add(1, Ordering::Relaxed);
        let loaded = tokio::time::timeout(self.timeout, load()).await;
        let mut state = self.state.lock().expect("not poisoned");
        // Marked when done: readers that came during the load waited for it
        // (on `loading`) and now take its result.
        state.attempted = Some(Instant::now());
        match loaded {
            Ok(Ok(value)) => state.value = Some((value, Instant::now())),
            Ok(Err(error)) => tracing::debug!(%error, "figures not loaded; keeping the last ones"),
            Err(_) => {
                tracing::debug!(timeout = ?self.timeout, "figures not loaded in time; keeping the last ones")
            }
        }
        Self::figures(&state)
    }

    /// How many loads were started (what the database was asked).
    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    /// `Some` when a load was attempted within the period: the answer stands.
    fn recent(&self) -> Option<Option<Figures<T>>> {
        let state = self.state.lock().expect("not poisoned");
        let attempted = state.attempted?;
        (attempted.elapsed() < self.period).then(|| Self::figures(&state))
    }

    fn figures(state: &State<T>) -> Option<Figures<T>> {
        state.value.as_ref().map(|(value, at)| Figures {
            value: value.clone(),
            age: at.elapsed(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn one_load_per_period_whatever_the_number_of_readers() {
        let snapshot = Arc::new(Snapshot::<u64>::new(
            Duration::from_secs(5),
            Duration::from_secs(2),
        ));
        let calls = Arc::new(AtomicU64::new(0));
        let read = |snapshot: Arc<Snapshot<u64>>, calls: Arc<AtomicU64>| async move {
            snapshot
                .get(|| async {
                    let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok::<_, std::convert::Infallible>(n)
                })
                .await
        };
        let readers: Vec<_> = (0..50)
            .map(|_| tokio::spawn(read(snapshot.clone(), calls.clone())))
            .collect();
        for reader in readers {
            assert_eq!(reader.await.unwrap().unwrap().value, 1);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one load for 50 readers");
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(
            read(snapshot.clone(), calls.clone()).await.unwrap().value,
            1
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            read(snapshot.clone(), calls.clone()).await.unwrap().value,
            2
        );
        assert_eq!(snapshot.loads(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_load_keeps_the_last_figures_and_is_not_retried_at_once() {
        let snapshot = Snapshot::<u64>::new(Duration::from_secs(5), Duration::from_secs(2));
        let first = snapshot.get(|| async { Ok::<_, String>(7) }).await;
        assert_eq!(first.unwrap().value, 7);
        tokio::time::advance(Duration::from_secs(6)).await;
        let slow = snapshot
            .get(|| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok::<_, String>(8)
            })
            .await
            .unwrap();
        assert_eq!(slow.value, 7, "the timed-out load left the last figures");
        assert!(slow.age >= Duration::from_secs(8), "{:?}", slow.age);
        let again = snapshot.get(|| async { Err::<u64, _>("down") }).await;
        assert_eq!(again.unwrap().value, 7);
        assert_eq!(snapshot.loads(), 2, "not retried within the period");
    }
}
