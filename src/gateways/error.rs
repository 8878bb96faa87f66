//! Transport and protocol failures, each classified once for retry safety.
//!
//! Every way a gateway call can fail without a usable business answer is a
//! variant here, and [`GatewayError::classification`] is the only place that
//! says whether the operation may have taken effect. The retry logic reads the
//! classification; it never inspects messages.

use std::time::Duration;

use super::Classification;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// The connection could not be made, so nothing was sent.
    #[error("could not connect to the gateway: {0}")]
    Connect(String),
    /// The request was sent (or may have been) and no answer came in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection broke while sending or waiting for the answer.
    #[error("connection dropped before the answer was complete: {0}")]
    Dropped(String),
    /// A 5xx: the gateway may have done the work before failing.
    #[error("gateway answered HTTP {status}")]
    ServerError { status: u16 },
    /// A 429 or 408: the gateway refused before processing.
    #[error("gateway refused to process the request now (HTTP {status})")]
    NotProcessed { status: u16 },
    /// Any other non-2xx HTTP status: the request will not succeed as sent.
    #[error("gateway refused the request with HTTP {status}")]
    ClientError { status: u16 },
    /// A 2xx whose body could not be understood.
    #[error("unreadable answer: {0}")]
    Unreadable(String),
    /// A 3xx. It is never followed: the request, with its secure key or
    /// signature, would go to whatever host `location` names.
    #[error("gateway answered HTTP {status}, a redirect{}; redirects are never followed", target(.location))]
    Redirected {
        status: u16,
        location: Option<String>,
    },
    /// The answer was longer than `[http] max_answer_bytes`; only that much was read.
    #[error("answer larger than {limit} bytes ([http] max_answer_bytes); it was not read whole")]
    Oversized { limit: usize },
    /// An answer whose signature did not verify, on an account that enforces
    /// answer signatures: it may be forged, so it proves nothing either way.
    #[error("answer signature did not verify (enforce_answer_signature is on): {0}")]
    UnverifiedAnswer(String),
    /// The gateway refused our credentials: a definite refusal until someone fixes them.
    #[error("credentials refused: {0}")]
    CredentialsRefused(String),
    /// A fresh token was refused again right after re-authentication.
    #[error("authentication token refused even after re-authentication")]
    TokenRefused,
}

impl GatewayError {
    /// The single decision on what this failure means for retry safety.
    pub fn classification(&self) -> Classification {
        match self {
            GatewayError::Connect(_) | GatewayError::NotProcessed { .. } => {
                Classification::NotApplied
            }
            GatewayError::TokenRefused => Classification::NotApplied,
            GatewayError::Redirected { status, .. } => redirect_classification(*status),
            GatewayError::Timeout(_)
            | GatewayError::Dropped(_)
            | GatewayError::ServerError { .. }
            | GatewayError::Unreadable(_)
            | GatewayError::Oversized { .. }
            | GatewayError::UnverifiedAnswer(_) => Classification::Ambiguous,
            GatewayError::ClientError { .. } | GatewayError::CredentialsRefused(_) => {
                Classification::Declined
            }
        }
    }
}

fn target(location: &Option<String>) -> String {
    match location {
        Some(location) => format!(" to {location}"),
        None => " without a Location".into(),
    }
}

/// What a redirect says about a request that was sent but not followed.
///
/// 301, 307 and 308 say "this resource lives elsewhere": they come from the
/// server's or a load balancer's routing, before any handler ran, so nothing
/// was processed at this URL and sending it here again is safe (it ends
/// `failed`, naming the `Location`, once the retry budget is spent). 302 and
/// 303 are also what an application answers after it *processed* a POST
/// (post/redirect/get; PHP's `header("Location: ...")` sends 302), and any
/// other 3xx has no meaning for a POST: those may have taken effect.
pub fn redirect_classification(status: u16) -> Classification {
    match status {
        301 | 307 | 308 => Classification::NotApplied,
        _ => Classification::Ambiguous,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_before_sending_are_safe_to_resend() {
        assert_eq!(
            GatewayError::Connect("refused".into()).classification(),
            Classification::NotApplied
        );
        assert_eq!(
            GatewayError::NotProcessed { status: 429 }.classification(),
            Classification::NotApplied
        );
        for ambiguous in [
            GatewayError::Timeout(Duration::from_secs(1)),
            GatewayError::Dropped("reset".into()),
            GatewayError::ServerError { status: 502 },
            GatewayError::Unreadable("eof".into()),
            GatewayError::Oversized { limit: 1024 },
            GatewayError::UnverifiedAnswer("mismatch".into()),
            GatewayError::Redirected {
                status: 302,
                location: None,
            },
            GatewayError::Redirected {
                status: 303,
                location: Some("https://elsewhere/".into()),
            },
        ] {
            assert_eq!(
                ambiguous.classification(),
                Classification::Ambiguous,
                "{ambiguous}"
            );
        }
        for moved in [301, 307, 308] {
            let error = GatewayError::Redirected {
                status: moved,
                location: Some("https://elsewhere.example/api".into()),
            };
            assert_eq!(error.classification(), Classification::NotApplied);
            let text = error.to_string();
            assert!(
                text.contains("https://elsewhere.example/api") && text.contains("never followed"),
                "{text}"
            );
        }
        assert_eq!(
            GatewayError::ClientError { status: 404 }.classification(),
            Classification::Declined
        );
        assert_eq!(
            GatewayError::CredentialsRefused("403".into()).classification(),
            Classification::Declined
        );
    }
}
