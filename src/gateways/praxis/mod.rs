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
pub mod settings;
pub mod signing;
pub mod wire;

#[cfg(test)]
mod properties;

use serde_json::Value;
use time::OffsetDateTime;

use crate::gateways::http::HttpTransport;
use crate::gateways::registry::{self, GatewayKind};
use crate::gateways::{
    Answer, CallLog, Exchange, ExchangeKind, Gateway, GatewayCall, Operation, OperationRequest,
    Rejection,
};

pub use self::settings::AccountConfig;
use wire::{Endpoint, RequestFields};

/// The name commands use for this gateway.
pub const NAME: &str = "praxis";

pub const KIND: GatewayKind = GatewayKind {
    name: NAME,
    read: registry::read::<AccountConfig>,
};

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
        let operation = request.operation();
        let unsupported = Rejection::UnsupportedOperation {
            gateway: NAME,
            operation,
        };
        let OperationRequest::Payment(payment) = request else {
            return Err(unsupported);
        };
        let endpoint = Endpoint::for_operation(operation).ok_or(unsupported)?;
        let trace_id = wire::parse_trace_id(&payment.payment_id).ok_or_else(|| {
            Rejection::invalid(
                "payment_id",
                "must be the Praxis trace_id: a positive integer without leading zeros",
            )
        })?;
        if payment.amount.is_some() {
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
