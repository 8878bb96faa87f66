//! Tests of the Praxis client as the worker uses it: built from a config
//! table, checking requests, and running calls end to end against a tiny
//! local HTTP server that plays the gateway.

use std::path::Path;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use std::sync::Arc;

use secrecy::SecretString;

use super::classify::AnswerRules;
use super::*;
use crate::config::reader::Section;
use crate::gateways::http::HttpSettings;
use crate::gateways::registry::AccountSettings;
use crate::gateways::{Classification, GatewayError, ListRequest, PaymentOperation, PaymentState};
use crate::money::Amount;

const SECRET: &str = "MerchantSecretKey-do-not-print";
const TRACE: u64 = 752856;

fn table(base_url: &str) -> toml::Table {
    let text = format!(
        r#"
base_url = "{base_url}/"
merchant_id = "Test-Integration-Merchant"
merchant_secret = "{SECRET}"
frontend = "Integration TEST USD"
"#
    );
    text.parse().unwrap()
}

fn client(base_url: &str) -> Arc<dyn Gateway> {
    let table = table(base_url);
    let section = Section::new(
        Path::new("test.toml"),
        "accounts.praxis.default".into(),
        &table,
    );
    let client = (KIND.read)(&section, &HttpSettings::default())
        .map(|settings| settings.client("default", HttpTransport::new(HttpSettings::default())))
        .unwrap();
    section.finish().expect("every key is read");
    client
}

fn secret() -> SecretString {
    SecretString::from(SECRET)
}

fn signed_body(fields: Value) -> String {
    let Value::Object(mut fields) = fields else {
        panic!("not an object")
    };
    let signature = signing::sign(&fields, &secret());
    fields.insert("signature".into(), Value::String(signature));
    Value::Object(fields).to_string()
}

/// What the fake gateway received.
struct Seen {
    path: String,
    content_type: Option<String>,
    body: Value,
}

/// Starts a server that answers every request with `status` and `body` and
/// reports each request it got.
async fn gateway(status: u16, body: String) -> (String, mpsc::UnboundedReceiver<Seen>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (seen_tx, seen_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen_tx = seen_tx.clone();
            let body = body.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let seen_tx = seen_tx.clone();
                    let body = body.clone();
                    async move {
                        let path = request.uri().path().to_string();
                        let content_type = request
                            .headers()
                            .get(hyper::header::CONTENT_TYPE)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string);
                        let bytes = request.into_body().collect().await?.to_bytes();
                        let sent = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                        let _ = seen_tx.send(Seen {
                            path,
                            content_type,
                            body: sent,
                        });
                        Ok::<_, hyper::Error>(
                            Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(body)))
                                .expect("static response parts"),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (format!("http://{address}"), seen_rx)
}

/// What a real Praxis server checks: the fields, their types, the signature
/// and the freshness of the timestamp.
fn assert_acceptable_request(sent: &Value) {
    let fields: &Map<String, Value> = sent.as_object().expect("a JSON object");
    assert_eq!(fields["merchant_id"], json!("Test-Integration-Merchant"));
    assert_eq!(fields["frontend"], json!("Integration TEST USD"));
    assert_eq!(
        fields["trace_id"],
        json!(TRACE),
        "trace_id is a JSON integer"
    );
    assert_eq!(fields["version"], json!("1.1"));
    let timestamp = fields["timestamp"].as_i64().expect("integer timestamp");
    let now = OffsetDateTime::now_utc().unix_timestamp();
    assert!((now - timestamp).abs() <= 60, "{timestamp} vs {now}");
    let signature = fields["signature"].as_str().expect("a signature");
    assert!(signing::verify(fields, signature, &secret()));
    let mut keys: Vec<&str> = fields.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "frontend",
            "merchant_id",
            "signature",
            "timestamp",
            "trace_id",
            "version"
        ]
    );
}

#[test]
fn the_client_reads_its_account_table() {
    let gateway = client("https://pci-gw-test.praxispay.com");
    assert_eq!(gateway.name(), "praxis");
    assert_eq!(gateway.account(), "default");
    assert_eq!(KIND.name, "praxis");
}

#[test]
fn config_mistakes_name_the_key() {
    for (key, problem) in [
        ("merchant_id", "missing"),
        ("merchant_secret", "missing"),
        ("frontend", "missing"),
        ("base_url", "missing"),
    ] {
        let mut table = table("https://pci-gw-test.praxispay.com");
        table.remove(key);
        let section = Section::new(Path::new("test.toml"), "accounts.praxis.x".into(), &table);
        let error = AccountConfig::read(&section, &HttpSettings::default())
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            format!("test.toml: [accounts.praxis.x] key `{key}`: {problem}")
        );
    }
    let table = table("ftp://pci-gw-test.praxispay.com");
    let section = Section::new(Path::new("test.toml"), "accounts.praxis.x".into(), &table);
    let error = AccountConfig::read(&section, &HttpSettings::default())
        .unwrap_err()
        .to_string();
    assert!(error.contains("key `base_url`"), "{error}");
}

#[test]
fn the_secret_never_prints() {
    let table = table("https://pci-gw-test.praxispay.com");
    let section = Section::new(Path::new("test.toml"), "accounts.praxis.x".into(), &table);
    let config = AccountConfig::read(&section, &HttpSettings::default()).unwrap();
    assert_eq!(config.base_url, "https://pci-gw-test.praxispay.com");
    let praxis = Praxis::new("x", config, HttpTransport::new(HttpSettings::default()));
    let debug = format!("{praxis:?}");
    assert!(!debug.contains(SECRET), "{debug}");
    assert!(debug.contains("Test-Integration-Merchant"), "{debug}");
}

#[test]
fn only_capture_cancel_and_inquiry_are_offered() {
    let gateway = client("https://pci-gw-test.praxispay.com");
    for operation in [
        PaymentOperation::Capture,
        PaymentOperation::Cancel,
        PaymentOperation::Inquiry,
    ] {
        assert!(gateway.supports(operation.operation()), "{operation:?}");
        assert_eq!(
            gateway.check(&OperationRequest::new(operation, "752856")),
            Ok(())
        );
    }
    let list = OperationRequest::List(
        ListRequest::new(
            time::macros::date!(2026 - 11 - 01),
            time::macros::date!(2026 - 11 - 02),
        )
        .unwrap(),
    );
    for request in [
        OperationRequest::new(PaymentOperation::Refund, "752856"),
        list,
    ] {
        let operation = request.operation();
        assert!(!gateway.supports(operation), "{operation}");
        assert_eq!(
            gateway.check(&request),
            Err(Rejection::UnsupportedOperation {
                gateway: "praxis",
                operation
            })
        );
    }
}

#[test]
fn payment_ids_must_be_trace_ids() {
    let gateway = client("https://pci-gw-test.praxispay.com");
    for bad in ["abc", "0", "-5", "12.5", "007", "ORDER-1001"] {
        let error = gateway
            .check(&OperationRequest::new(PaymentOperation::Inquiry, bad))
            .unwrap_err();
        assert!(
            matches!(
                error,
                Rejection::InvalidField {
                    field: "payment_id",
                    ..
                }
            ),
            "{bad}: {error}"
        );
        assert_eq!(error.reason(), "invalid_command");
    }
    // A cancel without a payment id cannot be built (`OperationRequest`).
}

#[test]
fn captures_and_cancels_refuse_an_amount() {
    let gateway = client("https://pci-gw-test.praxispay.com");
    let capture = OperationRequest::new(PaymentOperation::Capture, "752856")
        .with_amount(Amount::from_minor(1000));
    assert_eq!(
        gateway.check(&capture),
        Err(Rejection::invalid(
            "amount",
            "must be absent: Praxis captures the full authorization"
        ))
    );
    let cancel = OperationRequest::new(PaymentOperation::Cancel, "752856")
        .with_amount(Amount::from_minor(1000));
    assert!(matches!(
        gateway.check(&cancel),
        Err(Rejection::InvalidField {
            field: "amount",
            ..
        })
    ));
}

#[test]
fn every_attempt_is_signed_with_its_own_timestamp() {
    let table = table("https://pci-gw-test.praxispay.com");
    let section = Section::new(Path::new("test.toml"), "accounts.praxis.x".into(), &table);
    let praxis = Praxis::new(
        "x",
        AccountConfig::read(&section, &HttpSettings::default()).unwrap(),
        HttpTransport::new(HttpSettings::default()),
    );
    let first = praxis.request_at(TRACE, 1_700_000_000);
    let second = praxis.request_at(TRACE, 1_700_000_030);
    assert_ne!(first.signature, second.signature);
    for request in [&first, &second] {
        assert!(signing::verify(
            &request.body,
            &request.signature,
            &secret()
        ));
        assert!(!Value::Object(request.body.clone())
            .to_string()
            .contains(SECRET));
    }
}

#[tokio::test]
async fn a_capture_runs_end_to_end() {
    let answer = signed_body(json!({"status": 0, "description": "Ok", "version": "1.1"}));
    let (base_url, mut seen) = gateway(200, answer.clone()).await;
    let gateway = client(&base_url);

    let call = gateway
        .execute(&OperationRequest::new(PaymentOperation::Capture, "752856"))
        .await;

    let request = seen.recv().await.expect("the gateway got the request");
    assert_eq!(request.path, "/api/deposit-capture");
    assert_eq!(request.content_type.as_deref(), Some("application/json"));
    assert_acceptable_request(&request.body);

    assert_eq!(call.answer.classification, Classification::Succeeded);
    assert_eq!(call.answer.gateway_status.as_deref(), Some("captured"));
    assert_eq!(call.answer.gateway_code.as_deref(), Some("0"));
    assert_eq!(call.answer.description.as_deref(), Some("Ok"));

    assert_eq!(call.exchanges.len(), 1);
    let exchange = &call.exchanges[0];
    assert_eq!(exchange.purpose, "deposit-capture");
    assert_eq!(exchange.method, "POST");
    assert_eq!(exchange.url, format!("{base_url}/api/deposit-capture"));
    assert_eq!(
        exchange.request, request.body,
        "the record is what was sent"
    );
    assert_eq!(
        exchange.signature_sent.as_deref(),
        request.body["signature"].as_str()
    );
    assert_eq!(exchange.http_status, Some(200));
    assert_eq!(exchange.response_body.as_deref(), Some(answer.as_str()));
    assert_eq!(exchange.signature_verified, Some(true));
    assert!(exchange.signature_received.is_some());
    assert_eq!(exchange.error, None);
    assert_eq!(exchange.classification, Classification::Succeeded);
    let recorded = serde_json::to_string(exchange).unwrap();
    assert!(!recorded.contains(SECRET), "{recorded}");
}

#[tokio::test]
async fn an_inquiry_returns_the_payment_snapshot() {
    let answer = signed_body(json!({
        "status": 0,
        "description": "Transaction found",
        "version": "1.1",
        "transaction": {
            "transaction_type": "authorize",
            "transaction_status": "approved",
            "transaction_id": 13042,
            "trace_id": TRACE,
            "amount": 2500,
            "currency": "USD",
        },
    }));
    let (base_url, mut seen) = gateway(200, answer).await;
    let call = client(&base_url)
        .execute(&OperationRequest::new(PaymentOperation::Inquiry, "752856"))
        .await;
    let request = seen.recv().await.unwrap();
    assert_eq!(request.path, "/api/find-transaction");
    assert_acceptable_request(&request.body);

    assert_eq!(call.answer.classification, Classification::Succeeded);
    assert_eq!(call.answer.reference.as_deref(), Some("13042"));
    assert_eq!(call.answer.gateway_status.as_deref(), Some("approved"));
    let snapshot = call.answer.snapshot.unwrap();
    assert_eq!(snapshot.state, PaymentState::Captured);
    assert_eq!(snapshot.amount, Some(Amount::from_minor(2500)));
    assert_eq!(snapshot.currency.as_deref(), Some("USD"));
    let response = call.answer.response.unwrap();
    assert_eq!(response["transaction"]["transaction_id"], json!(13042));
    assert!(response.get("signature").is_none());
    assert_eq!(call.exchanges[0].purpose, "find-transaction");
}

#[tokio::test]
async fn a_cancel_with_a_wrong_answer_signature_still_counts() {
    let answer = r#"{"status":0,"description":"Ok","version":"1.1","signature":"deadbeef"}"#;
    let (base_url, mut seen) = gateway(200, answer.to_string()).await;
    let call = client(&base_url)
        .execute(&OperationRequest::new(PaymentOperation::Cancel, "752856"))
        .await;
    assert_eq!(seen.recv().await.unwrap().path, "/api/deposit-cancel");
    assert_eq!(call.answer.classification, Classification::Succeeded);
    assert_eq!(call.answer.gateway_status.as_deref(), Some("cancelled"));
    let exchange = &call.exchanges[0];
    assert_eq!(exchange.signature_received.as_deref(), Some("deadbeef"));
    assert_eq!(exchange.signature_verified, Some(false));
}

#[tokio::test]
async fn a_server_error_is_ambiguous_and_recorded() {
    let (base_url, mut seen) = gateway(503, "upstream down".into()).await;
    let call = client(&base_url)
        .execute(&OperationRequest::new(PaymentOperation::Capture, "752856"))
        .await;
    seen.recv().await.unwrap();
    assert_eq!(call.answer.classification, Classification::Ambiguous);
    assert_eq!(
        call.answer.error,
        Some(GatewayError::ServerError { status: 503 })
    );
    let exchange = &call.exchanges[0];
    assert_eq!(exchange.http_status, Some(503));
    assert_eq!(exchange.response_body.as_deref(), Some("upstream down"));
    assert_eq!(exchange.signature_verified, None);
    assert_eq!(exchange.classification, Classification::Ambiguous);
    assert!(exchange.error.as_deref().unwrap().contains("503"));
}

#[tokio::test]
async fn a_negative_status_may_be_sent_again() {
    let answer =
        signed_body(json!({"status": -1, "description": "Internal error", "version": "1.1"}));
    let (base_url, _seen) = gateway(200, answer).await;
    let call = client(&base_url)
        .execute(&OperationRequest::new(PaymentOperation::Capture, "752856"))
        .await;
    assert_eq!(call.answer.classification, Classification::NotApplied);
    assert_eq!(call.answer.gateway_code.as_deref(), Some("-1"));
    assert_eq!(call.exchanges[0].classification, Classification::NotApplied);
}

#[tokio::test]
async fn an_unreachable_gateway_is_not_applied_and_recorded() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let call = client(&format!("http://127.0.0.1:{port}"))
        .execute(&OperationRequest::new(PaymentOperation::Cancel, "752856"))
        .await;
    assert_eq!(call.answer.classification, Classification::NotApplied);
    let exchange = &call.exchanges[0];
    assert_eq!(exchange.http_status, None);
    assert!(exchange.error.is_some());
    assert!(exchange.signature_sent.is_some());
}

#[tokio::test]
async fn a_request_that_fails_its_check_is_never_sent() {
    let (base_url, mut seen) = gateway(200, r#"{"status":0}"#.into()).await;
    let gateway = client(&base_url);
    for request in [
        OperationRequest::new(PaymentOperation::Refund, "752856")
            .with_amount(Amount::from_minor(100)),
        OperationRequest::new(PaymentOperation::Capture, "752856")
            .with_amount(Amount::from_minor(100)),
        OperationRequest::new(PaymentOperation::Inquiry, "not-a-trace-id"),
    ] {
        let call = gateway.execute(&request).await;
        assert_eq!(call.answer.classification, Classification::Declined);
        assert!(call.exchanges.is_empty());
        assert!(call.answer.description.is_some());
    }
    // A request that passes is sent; it is the first thing the server sees.
    gateway
        .execute(&OperationRequest::new(PaymentOperation::Inquiry, "752856"))
        .await;
    assert_eq!(seen.recv().await.unwrap().path, "/api/find-transaction");
}

#[test]
fn answer_rules_are_read_from_the_account_table() {
    let read = |extra: &str| {
        let mut table = table("https://pci-gw-test.praxispay.com");
        let more: toml::Table = extra.parse().unwrap();
        table.extend(more);
        let section = Section::new(Path::new("test.toml"), "accounts.praxis.x".into(), &table);
        AccountConfig::read(&section, &HttpSettings::default()).map(|c| c.rules)
    };
    assert_eq!(read("").unwrap(), AnswerRules::default());
    assert!(!AnswerRules::default().enforce_signature);
    let rules = read("enforce_answer_signature = true\nnot_found_statuses = [1007, 1010]").unwrap();
    assert!(rules.enforce_signature);
    assert_eq!(rules.not_found_statuses, vec![1007, 1010]);
    for (extra, message) in [
        (
            "enforce_answer_signature = \"yes\"",
            "test.toml: [accounts.praxis.x] key `enforce_answer_signature`: must be true or false",
        ),
        (
            "not_found_statuses = 1007",
            "test.toml: [accounts.praxis.x] key `not_found_statuses`: must be a list of integers",
        ),
        (
            "not_found_statuses = [0]",
            "test.toml: [accounts.praxis.x] key `not_found_statuses`: 0 is not an application error: only positive statuses can say \"not found\"",
        ),
    ] {
        assert_eq!(read(extra).unwrap_err().to_string(), message, "{extra}");
    }
}

#[test]
fn plain_http_to_a_remote_gateway_is_refused_unless_allowed() {
    let table = table("http://pci-gw-test.praxispay.com");
    let section = Section::new(Path::new("test.toml"), "accounts.praxis.x".into(), &table);
    let error = AccountConfig::read(&section, &HttpSettings::default())
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("test.toml: [accounts.praxis.x] key `base_url`: plain http"),
        "{error}"
    );
    let allowed = HttpSettings {
        allow_http: true,
        ..HttpSettings::default()
    };
    assert!(AccountConfig::read(&section, &allowed).is_ok());
}
