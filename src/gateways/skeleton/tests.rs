//! The skeleton's own tests: a copy starts with these, then adds the real
//! gateway's (a simulator side, property tests of `classify`).

use std::path::Path;

use super::*;
use crate::config::reader::Section;
use crate::gateways::http::HttpSettings;
use crate::gateways::registry::AccountSettings;
use crate::gateways::{Classification, ListRequest, PaymentOperation, PaymentState};
use crate::money::Amount;

const KEY: &str = "skeleton-api-key-0123";

fn client(base_url: &str) -> Skeleton {
    let table: toml::Table =
        toml::from_str(&format!("base_url = \"{base_url}\"\napi_key = \"{KEY}\"\n")).unwrap();
    let section = Section::new(Path::new("test.toml"), "accounts.skeleton.x".into(), &table);
    let config = AccountConfig::read(&section, &HttpSettings::default()).unwrap();
    Skeleton::new("x", config, HttpTransport::new(HttpSettings::default()))
}

#[test]
fn what_the_gateway_cannot_run_is_refused_before_anything_is_sent() {
    let gateway = client("http://127.0.0.1:9");
    let refund =
        OperationRequest::new(PaymentOperation::Refund, "1").with_amount(Amount::from_minor(100));
    assert!(matches!(
        gateway.check(&refund),
        Err(Rejection::UnsupportedOperation { .. })
    ));
    assert!(gateway
        .check(&OperationRequest::new(PaymentOperation::Capture, "../1"))
        .is_err());
    let cancel =
        OperationRequest::new(PaymentOperation::Cancel, "1").with_amount(Amount::from_minor(100));
    assert!(gateway.check(&cancel).is_err());
    assert!(gateway
        .check(&OperationRequest::new(PaymentOperation::Inquiry, "42"))
        .is_ok());
}

#[tokio::test]
async fn a_refused_request_is_declined_and_nothing_is_recorded() {
    let gateway = client("http://127.0.0.1:9");
    let call = gateway
        .execute(&OperationRequest::List(
            ListRequest::new(
                time::macros::date!(2026 - 11 - 01),
                time::macros::date!(2026 - 11 - 02),
            )
            .unwrap(),
        ))
        .await;
    assert_eq!(call.answer.classification, Classification::Declined);
    assert!(call.exchanges.is_empty());
    assert!(call
        .answer
        .description
        .unwrap()
        .starts_with("not sent: skeleton does not offer"));
}

#[tokio::test]
async fn a_connection_refused_is_not_applied_and_recorded_as_one_exchange() {
    // A port nobody listens on: the connection fails before anything is sent.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gateway = client(&format!("http://127.0.0.1:{port}"));
    let call = gateway
        .execute(&OperationRequest::new(PaymentOperation::Capture, "7"))
        .await;
    assert_eq!(call.answer.classification, Classification::NotApplied);
    assert_eq!(call.exchanges.len(), 1);
    let exchange = &call.exchanges[0];
    assert_eq!(exchange.kind, ExchangeKind::Call);
    assert_eq!(exchange.purpose, "capture");
    assert!(
        !format!("{call:?}").contains(KEY),
        "the key is never recorded"
    );
}

#[test]
fn replies_are_classified_for_retry_safety() {
    use Classification::*;
    let table = [
        (
            Endpoint::Capture,
            200,
            r#"{"status":"ok","reference":"9"}"#,
            Succeeded,
        ),
        (Endpoint::Capture, 200, r#"{"status":"declined"}"#, Declined),
        (Endpoint::Capture, 200, r#"{"status":"later"}"#, Ambiguous),
        (Endpoint::Capture, 200, "not json", Ambiguous),
        (Endpoint::Capture, 503, "", Ambiguous),
        (Endpoint::Capture, 429, "", NotApplied),
        (
            Endpoint::Inquiry,
            200,
            r#"{"status":"captured"}"#,
            Succeeded,
        ),
        (
            Endpoint::Inquiry,
            200,
            r#"{"status":"not_found"}"#,
            Declined,
        ),
    ];
    for (endpoint, status, body, expected) in table {
        let answer = classify::classify(endpoint, status, body);
        assert_eq!(
            answer.classification, expected,
            "{endpoint:?} {status} {body}"
        );
    }
    let found = classify::classify(Endpoint::Inquiry, 200, r#"{"status":"captured"}"#);
    assert_eq!(found.snapshot.unwrap().state, PaymentState::Captured);
    assert!(classify::classify(Endpoint::Inquiry, 200, r#"{"status":"not_found"}"#).not_found);
}

use wire::Endpoint;
