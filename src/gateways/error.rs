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
            GatewayError::Timeout(_)
            | GatewayError::Dropped(_)
            | GatewayError::ServerError { .. }
            | GatewayError::Unreadable(_) => Classification::Ambiguous,
            GatewayError::ClientError { .. } | GatewayError::CredentialsRefused(_) => {
                Classification::Declined
            }
        }
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
        ] {
            assert_eq!(
                ambiguous.classification(),
                Classification::Ambiguous,
                "{ambiguous}"
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
