//! The Praxis Cashier Agent API 1.1 client: one configured merchant account,
//! running capture, cancel and inquiry as `deposit-capture`, `deposit-cancel`
//! and `find-transaction`.
//!
//! Every attempt is signed afresh with the current time (the gateway refuses
//! a timestamp more than 60 s off), sent once, and recorded as one
//! [`Exchange`]. Praxis 1.1 has no refund and no transaction list: those are
//! refused before anything is sent. [`wire`] holds the formats, [`signing`]
//! the SHA-384 rule, [`classify`] what each reply means.

pub mod classify;
pub mod notification;
pub mod signing;
pub mod wire;

#[cfg(test)]
mod properties;

use std::fmt;
use std::sync::Arc;

use secrecy::SecretString;
use serde_json::Value;
use time::OffsetDateTime;

use crate::config::{ConfigError, Section};
use crate::gateways::http::{HttpSettings, HttpTransport};
use crate::gateways::registry::GatewayKind;
use crate::gateways::{
    Answer, CallLog, Exchange, ExchangeKind, Gateway, GatewayCall, Operation, OperationRequest,
    Rejection,
};

use classify::AnswerRules;
use wire::{Endpoint, RequestFields};

/// The name commands use for this gateway.
pub const NAME: &str = "praxis";

pub const KIND: GatewayKind = GatewayKind {
    name: NAME,
    build,
    notifications: notification_reader,
};

fn notification_reader(
    section: &Section<'_>,
) -> Result<Arc<dyn crate::notifications::NotificationReader>, ConfigError> {
    Ok(Arc::new(notification::PraxisNotifications::from_section(
        section,
    )?))
}

fn build(
    section: &Section<'_>,
    account: &str,
    transport: HttpTransport,
) -> Result<Arc<dyn Gateway>, ConfigError> {
    let config = AccountConfig::read(section, transport.settings())?;
    Ok(Arc::new(Praxis::new(account, config, transport)))
}

/// One `[accounts.praxis.<name>]` table.
#[derive(Clone)]
pub struct AccountConfig {
    /// Without a trailing slash.
    pub base_url: String,
    pub merchant_id: String,
    /// Only ever exposed to the hasher.
    pub merchant_secret: SecretString,
    /// The cashier front end; it fixes the account's base currency.
    pub frontend: String,
    /// What this account believes of Praxis answers (signature enforcement,
    /// the statuses that mean "no such transaction").
    pub rules: AnswerRules,
}

impl AccountConfig {
    /// Reads the table; `http` decides whether a plain-http base URL is allowed.
    pub fn read(section: &Section<'_>, http: &HttpSettings) -> Result<AccountConfig, ConfigError> {
        let not_found_statuses = section.ints_or("not_found_statuses", &[])?;
        if let Some(bad) = not_found_statuses.iter().find(|s| **s <= 0) {
            return Err(section.error(
                "not_found_statuses",
                format!("{bad} is not an application error: only positive statuses can say \"not found\""),
            ));
        }
        Ok(AccountConfig {
            base_url: section.gateway_base_url("base_url", http)?,
            merchant_id: section.str("merchant_id")?,
            merchant_secret: section.secret("merchant_secret")?,
            frontend: section.str("frontend")?,
            rules: AnswerRules {
                enforce_signature: section.bool_or("enforce_answer_signature", false)?,
                not_found_statuses,
            },
        })
    }
}

impl fmt::Debug for AccountConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountConfig")
            .field("base_url", &self.base_url)
            .field("merchant_id", &self.merchant_id)
            .field("merchant_secret", &crate::gateways::exchange::REDACTED)
            .field("frontend", &self.frontend)
            .field("rules", &self.rules)
            .finish()
    }
}

/// A Praxis merchant account, ready to run operations.
#[derive(Debug, Clone)]
pub struct Praxis {
    account: String,
    config: AccountConfig,
    transport: HttpTransport,
}

impl Praxis {
    pub fn new(account: &str, config: AccountConfig, transport: HttpTransport) -> Praxis {
        Praxis {
            account: account.to_string(),
            config,
            transport,
        }
    }

    /// The endpoint and trace id for a request, or why it cannot be sent.
    fn prepare(&self, request: &OperationRequest) -> Result<(Endpoint, u64), Rejection> {
        let endpoint =
            Endpoint::for_operation(request.operation).ok_or(Rejection::UnsupportedOperation {
                gateway: NAME,
                operation: request.operation,
            })?;
        let trace_id = request
            .payment_id
            .as_deref()
            .and_then(wire::parse_trace_id)
            .ok_or_else(|| {
                Rejection::invalid(
                    "payment_id",
                    "must be the Praxis trace_id: a positive integer without leading zeros",
                )
            })?;
        if request.amount.is_some() {
            match endpoint {
                Endpoint::DepositCapture => {
                    return Err(Rejection::invalid(
                        "amount",
                        "must be absent: Praxis captures the full authorization",
                    ))
                }
                // Silently cancelling everything when a partial cancel was asked
                // for would surprise the caller more than a refusal.
                Endpoint::DepositCancel => {
                    return Err(Rejection::invalid(
                        "amount",
                        "must be absent: Praxis cancels the full authorization",
                    ))
                }
                // As for Paymentz: an amount on an inquiry is a producer's mistake.
                Endpoint::FindTransaction => {
                    return Err(Rejection::invalid(
                        "amount",
                        "must be absent for an inquiry",
                    ))
                }
            }
        }
        Ok((endpoint, trace_id))
    }

    /// The signed request for one attempt at `timestamp` (unix seconds).
    fn request_at(&self, trace_id: u64, timestamp: i64) -> wire::SignedRequest {
        RequestFields {
            merchant_id: &self.config.merchant_id,
            frontend: &self.config.frontend,
            trace_id,
            timestamp,
        }
        .sign(&self.config.merchant_secret)
    }
}

#[async_trait::async_trait]
impl Gateway for Praxis {
    fn name(&self) -> &'static str {
        NAME
    }

    fn account(&self) -> &str {
        &self.account
    }

    fn supports(&self, operation: Operation) -> bool {
        Endpoint::for_operation(operation).is_some()
    }

    fn check(&self, request: &OperationRequest) -> Result<(), Rejection> {
        self.prepare(request).map(|_| ())
    }

    async fn execute(&self, request: &OperationRequest) -> GatewayCall {
        let mut log = self.call_log();
        let answer = match self.prepare(request) {
            Ok((endpoint, trace_id)) => self.run(endpoint, trace_id, &mut log).await,
            Err(rejection) => Answer::not_sent(&rejection),
        };
        log.finish(answer)
    }
}

impl Praxis {
    /// The log of one call: it scrubs the merchant secret, should an answer
    /// ever echo it.
    fn call_log(&self) -> CallLog {
        CallLog::new(NAME, &self.account, [self.config.merchant_secret.clone()])
    }

    /// One signed attempt, sent once and recorded as one exchange.
    async fn run(&self, endpoint: Endpoint, trace_id: u64, log: &mut CallLog) -> Answer {
        let signed = self.request_at(trace_id, OffsetDateTime::now_utc().unix_timestamp());
        let url = format!("{}{}", self.config.base_url, endpoint.path());
        let reply = self
            .transport
            .send(
                self.transport
                    .client()
                    .post(&url)
                    .header(reqwest::header::ACCEPT, "application/json")
                    .json(&signed.body),
            )
            .await;
        let (started_at, latency) = (reply.started_at, reply.latency);
        let read = classify::interpret_reply(
            endpoint,
            trace_id,
            reply,
            &self.config.merchant_secret,
            &self.config.rules,
        );
        if read.signature_verified == Some(false) {
            tracing::warn!(
                gateway = NAME,
                account = %self.account,
                call = endpoint.purpose(),
                trace_id,
                signature_present = read.signature_received.is_some(),
                enforced = self.config.rules.enforce_signature,
                "Praxis answer signature did not verify; recorded, and under enforcement the answer proves nothing"
            );
        }
        log.record(Exchange {
            started_at,
            kind: ExchangeKind::Call,
            purpose: endpoint.purpose().to_string(),
            method: "POST".into(),
            url,
            request: Value::Object(signed.body),
            signature_sent: Some(signed.signature),
            http_status: read.http_status,
            response_body: read.body,
            signature_received: read.signature_received,
            signature_verified: read.signature_verified,
            latency,
            error: read.answer.error.as_ref().map(ToString::to_string),
            classification: read.answer.classification,
        });
        read.answer
    }
}

#[cfg(test)]
mod tests;
