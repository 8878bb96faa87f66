//! A gateway to copy: the smallest client that follows the contract every
//! gateway keeps. It is compiled with the tests only and never registered;
//! `docs/adding-a-gateway.md` says how to turn a copy into a real gateway.
//!
//! The "Skeleton" API it talks to is made up and as plain as can be: one
//! JSON `POST` per operation (`/capture`, `/cancel`, `/payments/{id}`), an
//! `X-Api-Key` header, and an answer `{"status": ..., "reference": ...}`.
//! The shape is the one both real clients have:
//! - [`wire`]: the formats, and which fields are secret;
//! - [`classify`]: what each reply means for retry safety (the only place
//!   that decides it);
//! - [`settings`]: the account's table read into plain settings (no I/O),
//!   and how they build the client and the notification reader;
//! - [`notification`]: reading the notifications the gateway sends;
//! - this file: the client: `check` (refuse before sending), `execute`
//!   (open a [`CallLog`], `run` the exchanges, `finish`).

pub mod classify;
pub mod notification;
pub mod settings;
pub mod wire;

pub use self::settings::AccountConfig;

use secrecy::ExposeSecret;

use crate::gateways::http::HttpTransport;
use crate::gateways::registry::{self, GatewayKind};
use crate::gateways::{
    Answer, CallLog, Exchange, ExchangeKind, Gateway, GatewayCall, Operation, OperationRequest,
    PaymentRequest, Rejection,
};

/// The name commands use in their `gateway` field.
pub const NAME: &str = "skeleton";

/// The registry's entry: add `skeleton::KIND` to `registry::GATEWAYS`.
pub const KIND: GatewayKind = GatewayKind {
    name: NAME,
    read: registry::read::<AccountConfig>,
};

/// One configured account, ready to run operations.
#[derive(Debug, Clone)]
pub struct Skeleton {
    account: String,
    config: AccountConfig,
    transport: HttpTransport,
}

impl Skeleton {
    pub fn new(account: &str, config: AccountConfig, transport: HttpTransport) -> Skeleton {
        Skeleton {
            account: account.to_string(),
            config,
            transport,
        }
    }

    /// The endpoint and the payment for a request, or why it cannot be
    /// sent as given.
    fn prepare<'r>(
        &self,
        request: &'r OperationRequest,
    ) -> Result<(wire::Endpoint, &'r PaymentRequest), Rejection> {
        let unsupported = Rejection::UnsupportedOperation {
            gateway: NAME,
            operation: request.operation(),
        };
        let OperationRequest::Payment(payment) = request else {
            return Err(unsupported);
        };
        let endpoint = wire::Endpoint::for_operation(request.operation()).ok_or(unsupported)?;
        if !wire::valid_payment_id(&payment.payment_id) {
            return Err(Rejection::invalid("payment_id", "must be digits only"));
        }
        if payment.amount.is_some() && endpoint != wire::Endpoint::Capture {
            return Err(Rejection::invalid("amount", "must be absent"));
        }
        Ok((endpoint, payment))
    }

    /// The log of one call: it scrubs every secret this account holds.
    fn call_log(&self) -> CallLog {
        CallLog::new(NAME, &self.account, [self.config.api_key.clone()])
    }

    /// The exchanges of one operation (here: exactly one), each recorded.
    async fn run(
        &self,
        endpoint: wire::Endpoint,
        payment: &PaymentRequest,
        log: &mut CallLog,
    ) -> Answer {
        let url = format!(
            "{}{}",
            self.config.base_url,
            endpoint.path(&payment.payment_id)
        );
        let body = wire::body(&payment.payment_id, payment.amount);
        let reply = self
            .transport
            .send(
                self.transport
                    .client()
                    .post(&url)
                    .header("X-Api-Key", self.config.api_key.expose_secret())
                    .json(&body),
            )
            .await;
        let answer = match reply.answer() {
            Ok((status, received)) => classify::classify(endpoint, status, received),
            Err(error) => Answer::from_error(error),
        };
        log.record(Exchange {
            started_at: reply.started_at,
            kind: ExchangeKind::Call,
            purpose: endpoint.purpose().to_string(),
            method: "POST".into(),
            url,
            request: wire::record(&body),
            signature_sent: None,
            http_status: reply.http_status(),
            response_body: reply.body().map(str::to_string),
            signature_received: None,
            signature_verified: None,
            latency: reply.latency,
            error: answer.error.as_ref().map(ToString::to_string),
            classification: answer.classification,
        });
        answer
    }
}

#[async_trait::async_trait]
impl Gateway for Skeleton {
    fn name(&self) -> &'static str {
        NAME
    }

    fn account(&self) -> &str {
        &self.account
    }

    fn supports(&self, operation: Operation) -> bool {
        wire::Endpoint::for_operation(operation).is_some()
    }

    fn check(&self, request: &OperationRequest) -> Result<(), Rejection> {
        self.prepare(request).map(|_| ())
    }

    // `snapshot_before` keeps its default (`false`): override it when the
    // payment's status after an attempt cannot tell whether that attempt
    // applied (partial captures, several refunds).

    async fn execute(&self, request: &OperationRequest) -> GatewayCall {
        let mut log = self.call_log();
        let answer = match self.prepare(request) {
            Ok((endpoint, payment)) => self.run(endpoint, payment, &mut log).await,
            Err(rejection) => Answer::not_sent(&rejection),
        };
        log.finish(answer)
    }
}

#[cfg(test)]
mod tests;
