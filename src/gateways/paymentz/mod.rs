//! The Paymentz transactionServices REST v1 client: one instance per
//! configured merchant account.
//!
//! It owns the account's settings, its auth token (see [`token`]), and the
//! sequence of HTTP exchanges one operation takes: a token fetch when needed,
//! the call, and on a refused token (`result.code` 401) one re-authentication
//! and one resend. Every exchange is recorded with secrets removed. Wire
//! formats live in [`wire`], checksums in [`signing`], and what each answer
//! means in [`classify`].

pub mod classify;
pub mod notification;
pub mod settings;
pub mod signing;
pub mod token;
pub mod wire;

#[cfg(test)]
mod properties;

use std::fmt;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

pub use self::settings::AccountConfig;

use self::classify::{Page, Verdict};
use self::token::{Token, TokenCache, TokenFailure};
use self::wire::{Form, IdType, PaymentType};
use crate::gateways::http::HttpTransport;
use crate::gateways::registry::{self, GatewayKind};
use crate::gateways::{
    Answer, CallLog, Classification, Exchange, ExchangeKind, Gateway, GatewayCall, GatewayError,
    ListRequest, Operation, OperationRequest, PaymentOperation, Rejection,
};
use crate::money::Amount;

pub const NAME: &str = "paymentz";

pub const KIND: GatewayKind = GatewayKind {
    name: NAME,
    read: registry::read::<AccountConfig>,
};

/// Tokens live an hour; replacing them ten minutes early keeps a slow call
/// from carrying an expired one.
pub const DEFAULT_TOKEN_REFRESH_AFTER: Duration = Duration::from_secs(50 * 60);

/// The most `getTransactionList` pages one call reads (100 rows each). A
/// gateway that ignores `pageno` would otherwise keep us reading forever.
pub const MAX_PAGES: u32 = 1000;

/// The client for one Paymentz merchant account.
pub struct PaymentzClient {
    account: String,
    config: AccountConfig,
    transport: HttpTransport,
    tokens: TokenCache,
}

impl fmt::Debug for PaymentzClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PaymentzClient")
            .field("account", &self.account)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// One authenticated request, ready to be sent (and sent again after a re-authentication).
struct Request<'a> {
    purpose: &'static str,
    path: String,
    form: Form<'a>,
    checksum: String,
}

impl PaymentzClient {
    pub fn new(account: &str, config: AccountConfig, transport: HttpTransport) -> PaymentzClient {
        PaymentzClient {
            account: account.to_string(),
            tokens: TokenCache::new(config.token_refresh_after),
            config,
            transport,
        }
    }

    pub fn config(&self) -> &AccountConfig {
        &self.config
    }

    /// The log of one call: it scrubs the secure key and every token used.
    fn call_log(&self) -> CallLog {
        CallLog::new(NAME, &self.account, [self.config.secure_key.clone()])
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}{}", self.config.base_url, wire::API_PATH, path)
    }

    /// An inquiry by our own reference (`idType=MID`), for a payment whose
    /// `paymentId` we never learned. Not reachable from a command, which
    /// always carries the gateway's id.
    pub async fn inquire_by_merchant_transaction_id(
        &self,
        merchant_transaction_id: &str,
    ) -> GatewayCall {
        let mut log = self.call_log();
        let answer = if wire::safe_path_segment(merchant_transaction_id) {
            let checksum = signing::merchant_transaction_checksum(
                &self.config.member_id,
                &self.config.secure_key,
                merchant_transaction_id,
            );
            self.inquire(merchant_transaction_id, IdType::Mid, checksum, &mut log)
                .await
        } else {
            Answer::not_sent(&Rejection::invalid(
                "merchant_transaction_id",
                "must be letters, digits and - _ . ~ only",
            ))
        };
        log.finish(answer)
    }

    async fn inquire(
        &self,
        id: &str,
        id_type: IdType,
        checksum: String,
        log: &mut CallLog,
    ) -> Answer {
        let request = Request {
            purpose: PaymentType::Inquiry.code(),
            path: format!("/payments/{id}"),
            form: wire::payment_form(
                &self.config.member_id,
                &checksum,
                PaymentType::Inquiry,
                None,
                Some(id_type),
            ),
            checksum,
        };
        self.authenticated(&request, log, classify::classify_inquiry)
            .await
            .unwrap_or_else(|answer| answer)
    }

    /// What `request` is for this account, or why it cannot be sent.
    fn prepare<'r>(&self, request: &'r OperationRequest) -> Result<Call<'r>, Rejection> {
        let operation = request.operation();
        if !self.supports(operation) {
            return Err(Rejection::UnsupportedOperation {
                gateway: NAME,
                operation,
            });
        }
        let payment = match request {
            OperationRequest::List(list) => {
                return match list.payment_id.as_deref() {
                    Some(id) if !wire::safe_path_segment(id) => Err(unsafe_payment_id()),
                    _ => Ok(Call::List(list)),
                }
            }
            OperationRequest::Payment(payment) => payment,
        };
        let payment_id = payment.payment_id.as_str();
        let call = match (payment.operation, payment.amount) {
            (PaymentOperation::Capture | PaymentOperation::Refund, None) => {
                return Err(Rejection::invalid(
                    "amount",
                    format!("required for paymentz {operation}"),
                ))
            }
            (PaymentOperation::Capture | PaymentOperation::Refund, Some(amount))
                if amount.minor() == 0 =>
            {
                return Err(Rejection::invalid("amount", "must be positive"))
            }
            (PaymentOperation::Capture | PaymentOperation::Refund, Some(amount))
                if amount.minor() > crate::money::MAX_MINOR =>
            {
                return Err(Rejection::invalid(
                    "amount",
                    "has more than 10 integer digits",
                ))
            }
            (PaymentOperation::Cancel | PaymentOperation::Inquiry, Some(_)) => {
                return Err(Rejection::invalid(
                    "amount",
                    format!("not allowed for paymentz {operation}"),
                ))
            }
            (PaymentOperation::Capture, Some(amount)) => Call::Money {
                kind: PaymentType::Capture,
                payment_id,
                amount,
            },
            (PaymentOperation::Refund, Some(amount)) => Call::Money {
                kind: PaymentType::Refund,
                payment_id,
                amount,
            },
            (PaymentOperation::Cancel, None) => Call::Cancel { payment_id },
            (PaymentOperation::Inquiry, None) => Call::Inquiry { payment_id },
        };
        if !wire::safe_path_segment(payment_id) {
            return Err(unsafe_payment_id());
        }
        Ok(call)
    }

    async fn run(&self, call: Call<'_>, log: &mut CallLog) -> Answer {
        let member_id = &self.config.member_id;
        let key = &self.config.secure_key;
        let (kind, payment_id, checksum, amount) = match call {
            Call::Inquiry { payment_id } => {
                let checksum = signing::payment_checksum(member_id, key, payment_id);
                return self.inquire(payment_id, IdType::Pid, checksum, log).await;
            }
            Call::List(list) => return self.list(list, log).await,
            Call::Cancel { payment_id } => {
                let checksum = signing::payment_checksum(member_id, key, payment_id);
                (PaymentType::Cancel, payment_id, checksum, None)
            }
            Call::Money {
                kind,
                payment_id,
                amount,
            } => {
                let checksum = signing::amount_checksum(member_id, key, payment_id, amount);
                (kind, payment_id, checksum, Some(amount))
            }
        };
        let call = Request {
            purpose: kind.code(),
            path: format!("/payments/{payment_id}"),
            form: wire::payment_form(member_id, &checksum, kind, amount, None),
            checksum,
        };
        self.authenticated(&call, log, |status, body| {
            classify::classify_payment(kind, status, body)
        })
        .await
        .unwrap_or_else(|answer| answer)
    }

    /// Reads every page. Any page that fails ends the call with that page's
    /// answer: a partial list is never reported as the list.
    async fn list(&self, query: &ListRequest, log: &mut CallLog) -> Answer {
        let checksum = signing::list_checksum(&self.config.member_id, &self.config.secure_key);
        let mut rows: Vec<Value> = Vec::new();
        let mut previous: Option<Vec<Value>> = None;
        let mut last_code = None;
        let mut last_description = None;
        for page in 1..=MAX_PAGES {
            let call = Request {
                purpose: "getTransactionList",
                path: "/getTransactionList".into(),
                form: wire::list_form(&self.config.member_id, &checksum, query, page),
                checksum: checksum.clone(),
            };
            let (page_rows, code, description) = match self
                .authenticated(&call, log, classify::classify_list_page)
                .await
            {
                Ok(Page::Rows {
                    rows,
                    code,
                    description,
                }) => (rows, code, description),
                Ok(Page::Stop(answer)) | Err(answer) => return answer,
            };
            if code.is_some() {
                last_code = code;
                last_description = description;
            }
            let full = page_rows.len() >= wire::PAGE_SIZE;
            if full && previous.as_ref() == Some(&page_rows) {
                let mut answer = Answer::classified(Classification::Declined);
                answer.gateway_code = last_code;
                answer.description = Some(format!(
                    "page {page} repeats page {}: the gateway ignores pagination.pageno, so the list cannot be read whole",
                    page - 1
                ));
                return answer;
            }
            rows.extend(page_rows.iter().cloned());
            if !full {
                tracing::info!(account = %self.account, pages = page, rows = rows.len(), "paymentz transaction list read");
                let mut answer = Answer::classified(Classification::Succeeded);
                answer.gateway_code = last_code;
                answer.description = last_description;
                answer.response = Some(serde_json::json!({ "transactions": rows }));
                return answer;
            }
            previous = Some(page_rows);
        }
        let mut answer = Answer::classified(Classification::Declined);
        answer.gateway_code = last_code;
        answer.description = Some(format!(
            "more than {MAX_PAGES} pages of {} rows: narrow the date range",
            wire::PAGE_SIZE
        ));
        answer
    }

    /// Sends `request` with a token; on a refused token, drops that token,
    /// gets a new one and sends once more. `Err` carries an answer that ends
    /// the call without a classified reply (no token, or refused twice).
    async fn authenticated<T: Meaning>(
        &self,
        request: &Request<'_>,
        log: &mut CallLog,
        classify: impl Fn(u16, &str) -> Verdict<T>,
    ) -> Result<T, Answer> {
        let url = self.url(&request.path);
        let mut refused = None;
        for attempt in 1..=2 {
            let token = self.token(refused, log).await?;
            let body = request.form.encode();
            let reply = self
                .transport
                .send(
                    self.transport
                        .client()
                        .post(&url)
                        .header(
                            reqwest::header::CONTENT_TYPE,
                            "application/x-www-form-urlencoded",
                        )
                        .header("AuthToken", header_value(&token.value))
                        .body(body),
                )
                .await;
            let verdict = match reply.answer() {
                Ok((status, received)) => classify(status, received),
                Err(error) => Verdict::Done(T::from_error(error)),
            };
            let (classification, error) = match &verdict {
                Verdict::Reauthenticate => (
                    Classification::NotApplied,
                    Some("result.code 401: token refused".to_string()),
                ),
                Verdict::Done(meaning) => (meaning.classification(), meaning.error_text()),
            };
            let error = error.or_else(|| reply.failure.as_ref().map(|e| e.to_string()));
            log.record(Exchange {
                started_at: reply.started_at,
                kind: ExchangeKind::Call,
                purpose: request.purpose.to_string(),
                method: "POST".into(),
                url: url.clone(),
                request: request.form.record(),
                signature_sent: Some(request.checksum.clone()),
                http_status: reply.http_status(),
                response_body: reply.body().map(wire::redact_body),
                signature_received: None,
                signature_verified: None,
                latency: reply.latency,
                error,
                classification,
            });
            match verdict {
                Verdict::Done(meaning) => return Ok(meaning),
                Verdict::Reauthenticate if attempt == 1 => {
                    tracing::info!(account = %self.account, purpose = request.purpose, "paymentz token refused; re-authenticating once");
                    refused = Some(token.generation);
                }
                Verdict::Reauthenticate => {}
            }
        }
        tracing::warn!(account = %self.account, purpose = request.purpose, "paymentz refused a fresh token too");
        Err(Answer::from_error(GatewayError::TokenRefused))
    }

    /// A token from the cache, fetching (and recording the fetch) when needed.
    /// Without one nothing is sent, so the operation is at worst not applied.
    async fn token(&self, refused: Option<u64>, log: &mut CallLog) -> Result<Token, Answer> {
        let result = self
            .tokens
            .get(refused, || self.fetch_token(&mut *log))
            .await;
        match result {
            Ok(token) => {
                log.keep_secret(token.value.clone());
                Ok(token)
            }
            Err(TokenFailure { error, shared }) => {
                let classification = match error.classification() {
                    Classification::Declined => Classification::Declined,
                    _ => Classification::NotApplied,
                };
                let whose = if shared { "a concurrent " } else { "" };
                let mut answer = Answer::from_error(error);
                answer.classification = classification;
                answer.description = Some(format!(
                    "{whose}authToken request failed, nothing was sent: {}",
                    answer.description.unwrap_or_default()
                ));
                Err(answer)
            }
        }
    }

    async fn fetch_token(&self, log: &mut CallLog) -> Result<SecretString, GatewayError> {
        let url = self.url("/authToken");
        let form = wire::token_form(
            &self.config.partner_id,
            &self.config.username,
            &self.config.secure_key,
        );
        let reply = self
            .transport
            .send(
                self.transport
                    .client()
                    .post(&url)
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(form.encode()),
            )
            .await;
        let result = reply
            .answer()
            .and_then(|(status, body)| classify::classify_token(status, body));
        let fetched = result.map(SecretString::from);
        let (classification, error) = match &fetched {
            Ok(_) => (Classification::Succeeded, None),
            Err(error) => (error.classification(), Some(error.to_string())),
        };
        log.record(Exchange {
            started_at: reply.started_at,
            kind: ExchangeKind::Auth,
            purpose: "authToken".into(),
            method: "POST".into(),
            url,
            request: form.record(),
            signature_sent: None,
            http_status: reply.http_status(),
            response_body: reply.body().map(wire::redact_body),
            signature_received: None,
            signature_verified: None,
            latency: reply.latency,
            error,
            classification,
        });
        fetched
    }
}

/// The token as a header value the HTTP client marks sensitive (kept out of
/// its own debug output). The cache only holds tokens of visible ASCII.
fn header_value(token: &SecretString) -> reqwest::header::HeaderValue {
    let mut value = reqwest::header::HeaderValue::from_str(token.expose_secret())
        .unwrap_or_else(|_| reqwest::header::HeaderValue::from_static(""));
    value.set_sensitive(true);
    value
}

/// What the token-and-retry loop needs to know about any classified reply.
trait Meaning {
    fn from_error(error: GatewayError) -> Self;
    fn classification(&self) -> Classification;
    fn error_text(&self) -> Option<String>;
}

impl Meaning for Answer {
    fn from_error(error: GatewayError) -> Self {
        Answer::from_error(error)
    }
    fn classification(&self) -> Classification {
        self.classification
    }
    fn error_text(&self) -> Option<String> {
        self.error.as_ref().map(|e| e.to_string())
    }
}

impl Meaning for Page {
    fn from_error(error: GatewayError) -> Self {
        Page::Stop(Answer::from_error(error))
    }
    fn classification(&self) -> Classification {
        match self {
            Page::Rows { .. } => Classification::Succeeded,
            Page::Stop(answer) => answer.classification,
        }
    }
    fn error_text(&self) -> Option<String> {
        match self {
            Page::Rows { .. } => None,
            Page::Stop(answer) => answer.error_text(),
        }
    }
}

#[async_trait::async_trait]
impl Gateway for PaymentzClient {
    fn name(&self) -> &'static str {
        NAME
    }

    fn account(&self) -> &str {
        &self.account
    }

    fn supports(&self, operation: Operation) -> bool {
        matches!(
            operation,
            Operation::Capture
                | Operation::Refund
                | Operation::Cancel
                | Operation::Inquiry
                | Operation::TransactionList
        )
    }

    /// CP and RF carry no request id and may be partial: after an ambiguous
    /// answer only the amounts before and after tell whether this one applied.
    fn snapshot_before(&self, operation: Operation) -> bool {
        matches!(operation, Operation::Capture | Operation::Refund)
    }

    fn check(&self, request: &OperationRequest) -> Result<(), Rejection> {
        self.prepare(request).map(|_| ())
    }

    async fn execute(&self, request: &OperationRequest) -> GatewayCall {
        let mut log = self.call_log();
        let answer = match self.prepare(request) {
            Ok(call) => self.run(call, &mut log).await,
            Err(rejection) => Answer::not_sent(&rejection),
        };
        tracing::info!(
            account = %self.account,
            operation = %request.operation(),
            payment_id = request.payment_id(),
            classification = %answer.classification,
            gateway_code = answer.gateway_code.as_deref().unwrap_or("-"),
            exchanges = log.len(),
            "paymentz call finished"
        );
        log.finish(answer)
    }
}

/// A request this account can send as it is: what [`PaymentzClient::prepare`] found.
enum Call<'r> {
    Inquiry {
        payment_id: &'r str,
    },
    Cancel {
        payment_id: &'r str,
    },
    /// A capture or a refund, of `amount`.
    Money {
        kind: PaymentType,
        payment_id: &'r str,
        amount: Amount,
    },
    List(&'r ListRequest),
}

fn unsafe_payment_id() -> Rejection {
    Rejection::invalid(
        "payment_id",
        "must be letters, digits and - _ . ~ only (no /, ?, #, %, spaces or ..)",
    )
}

#[cfg(test)]
mod tests;
