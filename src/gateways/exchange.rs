//! The record of one HTTP exchange with a gateway, as the database keeps it.
//!
//! Guarantee 5 of the message contract says every attempt is explainable from
//! the database. An [`Exchange`] is that explanation, built by the gateway
//! client at the moment it sends, with secrets already removed: nothing
//! downstream has to know which fields were secret.

use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;

use super::Classification;

/// What the record shows in place of a secret value.
pub const REDACTED: &str = "[redacted]";

/// What an exchange was for, in terms the rest of the worker reads (the
/// gateway's own word for it is [`Exchange::purpose`]). Nothing outside a
/// gateway's folder ever looks at a wire name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExchangeKind {
    /// Getting credentials for the calls that follow (a Paymentz token):
    /// recorded as an attempt of kind `auth`.
    Auth,
    /// The operation itself, or an inquiry: recorded as the attempt it belongs to.
    Call,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Exchange {
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// Typed, for the worker; the record keeps the gateway's word in `purpose`.
    #[serde(skip)]
    pub kind: ExchangeKind,
    /// What this exchange was for, in the gateway's words: `authToken`, `CP`,
    /// `deposit-capture`, ...
    pub purpose: String,
    pub method: String,
    pub url: String,
    /// The request fields as sent, with every secret replaced by [`REDACTED`].
    pub request: serde_json::Value,
    /// The checksum or signature sent with the request.
    pub signature_sent: Option<String>,
    pub http_status: Option<u16>,
    /// The body received, with secrets (tokens) replaced by [`REDACTED`].
    pub response_body: Option<String>,
    pub signature_received: Option<String>,
    /// `None` when the gateway does not sign its answers.
    pub signature_verified: Option<bool>,
    #[serde(serialize_with = "serialize_millis")]
    pub latency: Duration,
    pub error: Option<String>,
    /// What this exchange alone meant (a token fetch can fail while the call later succeeds).
    pub classification: Classification,
}

fn serialize_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}
