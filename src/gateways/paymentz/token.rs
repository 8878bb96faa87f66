//! The per-account cache of the Paymentz auth token (a JWT valid for an hour).
//!
//! The cache owns three rules: a token older than `refresh_after` is replaced
//! before it is used (so it does not expire mid-flight); only one fetch runs
//! at a time, and everyone queued behind it takes its result, success or
//! failure, instead of fetching again (no stampede when the gateway is slow
//! or down); and a caller that saw its token refused drops *that* token only,
//! so a burst of refusals for one expired token leads to a single new fetch.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use secrecy::SecretString;
use tokio::sync::Mutex;

use crate::gateways::GatewayError;

/// A token handed to one caller, with the generation it belongs to so that
/// a refusal can name exactly which token was refused.
#[derive(Clone)]
pub struct Token {
    pub value: SecretString,
    pub generation: u64,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token(generation {})", self.generation)
    }
}

/// Why no token could be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenFailure {
    pub error: GatewayError,
    /// The fetch was made by another caller this one waited for; this caller
    /// made no exchange of its own.
    pub shared: bool,
}

struct Slot {
    current: Option<(Token, Instant)>,
    /// The outcome of the most recent fetch, by its sequence number.
    last_failure: Option<(u64, GatewayError)>,
}

pub struct TokenCache {
    refresh_after: Duration,
    slot: Mutex<Slot>,
    /// Fetches completed so far (each one's number is its token's
    /// generation). Read before queueing, it tells whether a fetch finished
    /// while we waited.
    completed: AtomicU64,
}

impl TokenCache {
    pub fn new(refresh_after: Duration) -> TokenCache {
        TokenCache {
            refresh_after,
            slot: Mutex::new(Slot {
                current: None,
                last_failure: None,
            }),
            completed: AtomicU64::new(0),
        }
    }

    /// A usable token: the cached one while it is fresh and not `refused`,
    /// else a new one from `fetch`. The lock is held across the fetch on
    /// purpose: that is what makes concurrent callers wait and reuse.
    pub async fn get<F, Fut>(&self, refused: Option<u64>, fetch: F) -> Result<Token, TokenFailure>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<SecretString, GatewayError>>,
    {
        let seen = self.completed.load(Ordering::Acquire);
        let mut slot = self.slot.lock().await;
        if let Some((token, fetched_at)) = &slot.current {
            let fresh = fetched_at.elapsed() < self.refresh_after;
            if fresh && Some(token.generation) != refused {
                return Ok(token.clone());
            }
            slot.current = None;
        }
        // A fetch finished while we queued and it failed: take its answer
        // rather than hammering a gateway that just refused or timed out.
        if let Some((number, error)) = &slot.last_failure {
            if *number > seen {
                return Err(TokenFailure {
                    error: error.clone(),
                    shared: true,
                });
            }
        }
        let result = fetch().await;
        // Only the lock holder writes, so this is the next number in sequence.
        let number = self.completed.fetch_add(1, Ordering::AcqRel) + 1;
        match result {
            Ok(value) => {
                let token = Token {
                    value,
                    generation: number,
                };
                slot.current = Some((token.clone(), Instant::now()));
                slot.last_failure = None;
                Ok(token)
            }
            Err(error) => {
                slot.last_failure = Some((number, error.clone()));
                Err(TokenFailure {
                    error,
                    shared: false,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::sync::atomic::AtomicUsize;

    async fn fetch_counting(
        count: &AtomicUsize,
        result: Result<&str, GatewayError>,
    ) -> Result<SecretString, GatewayError> {
        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
        result.map(|prefix| SecretString::from(format!("{prefix}-{n}")))
    }

    #[tokio::test]
    async fn a_fresh_token_is_reused() {
        let cache = TokenCache::new(Duration::from_secs(3000));
        let count = AtomicUsize::new(0);
        let a = cache
            .get(None, || fetch_counting(&count, Ok("t")))
            .await
            .unwrap();
        let b = cache
            .get(None, || fetch_counting(&count, Ok("t")))
            .await
            .unwrap();
        assert_eq!(count.load(Ordering::SeqCst), 1);
        assert_eq!(a.value.expose_secret(), b.value.expose_secret());
        assert_eq!(a.generation, b.generation);
    }

    #[tokio::test]
    async fn an_old_token_is_replaced_before_use() {
        let cache = TokenCache::new(Duration::ZERO);
        let count = AtomicUsize::new(0);
        let a = cache
            .get(None, || fetch_counting(&count, Ok("t")))
            .await
            .unwrap();
        let b = cache
            .get(None, || fetch_counting(&count, Ok("t")))
            .await
            .unwrap();
        assert_eq!(count.load(Ordering::SeqCst), 2);
        assert_ne!(a.generation, b.generation);
        assert_eq!(b.value.expose_secret(), "t-2");
    }

    #[tokio::test]
    async fn only_the_refused_token_is_dropped() {
        let cache = TokenCache::new(Duration::from_secs(3000));
        let count = AtomicUsize::new(0);
        let first = cache
            .get(None, || fetch_counting(&count, Ok("t")))
            .await
            .unwrap();
        let second = cache
            .get(Some(first.generation), || fetch_counting(&count, Ok("t")))
            .await
            .unwrap();
        assert_eq!(count.load(Ordering::SeqCst), 2);
        // Another caller still holding the first token sees it refused: the
        // second token is already there and is reused, not replaced.
        let third = cache
            .get(Some(first.generation), || fetch_counting(&count, Ok("t")))
            .await
            .unwrap();
        assert_eq!(count.load(Ordering::SeqCst), 2);
        assert_eq!(third.generation, second.generation);
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_fetch() {
        let cache = TokenCache::new(Duration::from_secs(3000));
        let count = AtomicUsize::new(0);
        let (release, released) = tokio::sync::watch::channel(false);
        let gated = || {
            let mut released = released.clone();
            let count = &count;
            async move {
                released.wait_for(|open| *open).await.expect("sender kept");
                fetch_counting(count, Ok("t")).await
            }
        };
        // One poll of join_all polls every caller: the first is now fetching
        // (held at the gate) and the other nine are queued behind it.
        let mut callers = Box::pin(futures::future::join_all(
            (0..10).map(|_| cache.get(None, gated)),
        ));
        assert!(futures::poll!(&mut callers).is_pending());
        release.send(true).expect("receivers alive");
        let tokens = callers.await;
        assert_eq!(count.load(Ordering::SeqCst), 1);
        let generations: Vec<u64> = tokens.into_iter().map(|t| t.unwrap().generation).collect();
        assert!(generations.iter().all(|g| *g == generations[0]));
    }

    #[tokio::test]
    async fn callers_queued_behind_a_failed_fetch_share_its_failure() {
        let cache = TokenCache::new(Duration::from_secs(3000));
        let count = AtomicUsize::new(0);
        let timeout = GatewayError::Timeout(Duration::from_secs(30));
        let (release, released) = tokio::sync::watch::channel(false);
        let gated = || {
            let mut released = released.clone();
            let count = &count;
            let timeout = timeout.clone();
            async move {
                released.wait_for(|open| *open).await.expect("sender kept");
                fetch_counting(count, Err(timeout)).await
            }
        };
        let mut callers = Box::pin(futures::future::join_all(
            (0..5).map(|_| cache.get(None, gated)),
        ));
        assert!(futures::poll!(&mut callers).is_pending());
        release.send(true).expect("receivers alive");
        let results = callers.await;
        assert_eq!(count.load(Ordering::SeqCst), 1);
        let failures: Vec<TokenFailure> = results.into_iter().map(|r| r.unwrap_err()).collect();
        assert!(!failures[0].shared);
        assert!(failures[1..].iter().all(|f| f.shared && f.error == timeout));
        // A caller arriving afterwards tries again.
        let later = cache.get(None, || fetch_counting(&count, Ok("t"))).await;
        assert!(later.is_ok());
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }
}
