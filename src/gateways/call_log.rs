//! What every gateway client does around its HTTP exchanges, in one place:
//! keeping the exchanges of one `execute` in order, and removing every secret
//! the call knows from everything it hands back.
//!
//! A client opens a [`CallLog`] with its account's secrets, [`CallLog::record`]s
//! each exchange as it happens (secrets already replaced by field name, as
//! the gateway's wire module knows them), adds any secret it learns on the
//! way ([`CallLog::keep_secret`], a token), and ends with
//! [`CallLog::finish`], which scrubs the answer and every exchange. Field
//! names catch the expected places; the scrub catches a gateway echoing a
//! secret somewhere unexpected (an error text, a body, a redirect's URL).

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::exchange::REDACTED;
use super::{Answer, Exchange, GatewayCall, GatewayError};

/// Secrets shorter than this are not searched for in received text: a short
/// value would match innocent text and say nothing about a leak.
const MIN_SCRUB_LEN: usize = 8;

/// The exchanges of one `execute`, and the secrets to remove from them.
pub struct CallLog {
    gateway: &'static str,
    account: String,
    exchanges: Vec<Exchange>,
    secrets: Vec<SecretString>,
}

impl CallLog {
    /// A log for one call of `gateway`'s `account`, which knows `secrets`.
    pub fn new(
        gateway: &'static str,
        account: &str,
        secrets: impl IntoIterator<Item = SecretString>,
    ) -> CallLog {
        CallLog {
            gateway,
            account: account.to_string(),
            exchanges: Vec::new(),
            secrets: secrets.into_iter().collect(),
        }
    }

    /// A secret learned during the call (a token): scrubbed from everything too.
    pub fn keep_secret(&mut self, secret: SecretString) {
        self.secrets.push(secret);
    }

    pub fn record(&mut self, exchange: Exchange) {
        tracing::debug!(
            gateway = self.gateway,
            account = %self.account,
            purpose = %exchange.purpose,
            kind = ?exchange.kind,
            http_status = ?exchange.http_status,
            classification = %exchange.classification,
            latency_ms = exchange.latency.as_millis() as u64,
            "gateway exchange"
        );
        self.exchanges.push(exchange);
    }

    /// How many exchanges were made so far.
    pub fn len(&self) -> usize {
        self.exchanges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.exchanges.is_empty()
    }

    /// The last step of every call: the answer and the exchanges, scrubbed.
    /// Exchanges are scrubbed here rather than as recorded, so that a secret
    /// learned later in the call is removed from earlier records too.
    pub fn finish(mut self, mut answer: Answer) -> GatewayCall {
        answer.description = answer.description.map(|d| self.scrub(&d));
        answer.error = answer.error.map(|e| self.scrub_error(e));
        if let Some(response) = answer.response.as_mut() {
            self.scrub_value(response);
        }
        let exchanges = std::mem::take(&mut self.exchanges)
            .into_iter()
            .map(|e| self.scrub_exchange(e))
            .collect();
        GatewayCall { answer, exchanges }
    }

    /// `text` with every secret this call knows replaced by [`REDACTED`].
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in &self.secrets {
            let value = secret.expose_secret();
            if value.len() >= MIN_SCRUB_LEN && out.contains(value) {
                out = out.replace(value, REDACTED);
            }
        }
        out
    }

    fn scrub_value(&self, value: &mut Value) {
        match value {
            Value::String(text) => *text = self.scrub(text),
            Value::Array(items) => items.iter_mut().for_each(|v| self.scrub_value(v)),
            Value::Object(map) => map.values_mut().for_each(|v| self.scrub_value(v)),
            _ => {}
        }
    }

    fn scrub_error(&self, error: GatewayError) -> GatewayError {
        match error {
            GatewayError::Connect(m) => GatewayError::Connect(self.scrub(&m)),
            GatewayError::Dropped(m) => GatewayError::Dropped(self.scrub(&m)),
            GatewayError::Unreadable(m) => GatewayError::Unreadable(self.scrub(&m)),
            GatewayError::Redirected { status, location } => GatewayError::Redirected {
                status,
                location: location.map(|l| self.scrub(&l)),
            },
            GatewayError::CredentialsRefused(m) => GatewayError::CredentialsRefused(self.scrub(&m)),
            other => other,
        }
    }

    fn scrub_exchange(&self, mut exchange: Exchange) -> Exchange {
        exchange.response_body = exchange.response_body.map(|b| self.scrub(&b));
        exchange.error = exchange.error.map(|e| self.scrub(&e));
        exchange.url = self.scrub(&exchange.url);
        self.scrub_value(&mut exchange.request);
        exchange
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateways::exchange::ExchangeKind;
    use crate::gateways::Classification;

    fn exchange(body: &str) -> Exchange {
        Exchange {
            started_at: time::OffsetDateTime::now_utc(),
            kind: ExchangeKind::Call,
            purpose: "CP".into(),
            method: "POST".into(),
            url: "http://gateway.test/echo/super-secret-key".into(),
            request: serde_json::json!({"nested": ["super-secret-key"]}),
            signature_sent: None,
            http_status: Some(200),
            response_body: Some(body.into()),
            signature_received: None,
            signature_verified: None,
            latency: std::time::Duration::from_millis(1),
            error: Some("echo super-secret-key".into()),
            classification: Classification::Succeeded,
        }
    }

    #[test]
    fn every_secret_the_call_knows_is_removed_from_everything_it_returns() {
        let mut log = CallLog::new("test", "default", [SecretString::from("super-secret-key")]);
        log.record(exchange("token token-learned-later here"));
        log.keep_secret(SecretString::from("token-learned-later"));
        let mut answer = Answer::from_error(GatewayError::Connect("super-secret-key".into()));
        answer.response = Some(serde_json::json!({"a": {"b": "token-learned-later"}}));
        let call = log.finish(answer);
        let text = format!("{:?}", call);
        assert!(!text.contains("super-secret-key"), "{text}");
        assert!(!text.contains("token-learned-later"), "{text}");
        assert_eq!(
            call.exchanges[0].response_body.as_deref(),
            Some("token [redacted] here")
        );
    }

    #[test]
    fn short_secrets_are_not_searched_for() {
        let log = CallLog::new("test", "default", [SecretString::from("abc")]);
        assert_eq!(log.scrub("abcdef"), "abcdef");
    }
}
