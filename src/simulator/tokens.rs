//! Paymentz auth tokens: issued by `authToken`, required on every other call,
//! expiring after the configured lifetime or when the admin expires them all.
//!
//! The token looks like a JWT (three base64url parts) so clients treat it as
//! an opaque string of the real shape, but only this table gives it meaning.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use rand::RngCore;

use super::signing::base64url;

/// Whom a token was issued to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenOwner {
    pub member_id: String,
    pub username: String,
}

#[derive(Debug)]
struct Issued {
    owner: TokenOwner,
    expires: Instant,
}

/// Once the table holds this many tokens, issuing one first drops expired ones.
const PRUNE_AT: usize = 10_000;

pub struct Tokens {
    ttl: Duration,
    issued: RwLock<HashMap<String, Issued>>,
}

/// Shows the count only: tokens are credentials and stay out of logs.
impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let issued = self.issued.read().map(|m| m.len()).unwrap_or_default();
        f.debug_struct("Tokens")
            .field("ttl", &self.ttl)
            .field("issued", &issued)
            .finish()
    }
}

impl Tokens {
    pub fn new(ttl: Duration) -> Tokens {
        Tokens {
            ttl,
            issued: RwLock::new(HashMap::new()),
        }
    }

    pub fn issue(&self, owner: TokenOwner) -> String {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let header = base64url(br#"{"alg":"HS256","typ":"JWT"}"#);
        let claims = serde_json::json!({
            "sub": owner.username,
            "memberId": owner.member_id,
            "iat": now,
            "exp": now + self.ttl.as_secs() as i64,
            "jti": uuid::Uuid::new_v4().to_string(),
        });
        let payload = base64url(claims.to_string().as_bytes());
        let mut mac = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut mac);
        let token = format!("{header}.{payload}.{}", base64url(&mac));

        let mut issued = self.issued.write().expect("not poisoned");
        if issued.len() >= PRUNE_AT {
            let now = Instant::now();
            issued.retain(|_, t| t.expires > now);
        }
        issued.insert(
            token.clone(),
            Issued {
                owner,
                expires: Instant::now() + self.ttl,
            },
        );
        token
    }

    /// The owner of a live token; `None` for unknown or expired tokens.
    pub fn check(&self, token: &str) -> Option<TokenOwner> {
        let issued = self.issued.read().expect("not poisoned");
        issued
            .get(token)
            .filter(|t| t.expires > Instant::now())
            .map(|t| t.owner.clone())
    }

    /// Expires every token; returns how many were still live.
    pub fn expire_all(&self) -> usize {
        let mut issued = self.issued.write().expect("not poisoned");
        let now = Instant::now();
        let live = issued.values().filter(|t| t.expires > now).count();
        issued.clear();
        live
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> TokenOwner {
        TokenOwner {
            member_id: "1".into(),
            username: "u".into(),
        }
    }

    #[test]
    fn tokens_look_like_jwts_and_expire() {
        let tokens = Tokens::new(Duration::from_secs(60));
        let t = tokens.issue(owner());
        assert_eq!(t.split('.').count(), 3);
        assert!(t.starts_with("eyJ"));
        assert_eq!(tokens.check(&t), Some(owner()));
        assert_eq!(tokens.check("nope"), None);
        assert!(!format!("{tokens:?}").contains(&t));
        assert_eq!(tokens.expire_all(), 1);
        assert_eq!(tokens.check(&t), None);
    }

    #[test]
    fn a_zero_lifetime_token_is_dead_at_once() {
        let tokens = Tokens::new(Duration::ZERO);
        let t = tokens.issue(owner());
        assert_eq!(tokens.check(&t), None);
    }
}
