//! End-to-end tests of the client against a small Paymentz stand-in served by
//! hyper on a local port: token fetch and reuse, re-authentication after a
//! refused token, pagination, and that no secret reaches any record.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request as HttpRequest, Response};
use hyper_util::rt::TokioIo;
use md5::{Digest, Md5};
use time::macros::date;

use super::*;
use crate::config::reader::Section;
use crate::gateways::exchange::REDACTED;
use crate::gateways::http::HttpSettings;
use crate::gateways::registry::AccountSettings;
use crate::gateways::{ListRequest, PaymentState};
use crate::money::Amount;

const KEY: &str = "ExampleSecureKey0123456789ABCDEF";
const MEMBER: &str = "11359";
const PARTNER: &str = "197";
const USER: &str = "merchant-login";

/// What the stand-in saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    query: Option<String>,
    content_type: Option<String>,
    auth_token: Option<String>,
    form: BTreeMap<String, String>,
}

/// A reply forced onto the next non-token request.
enum Scripted {
    Reply(u16, String),
    /// Forget every token issued so far (as if they all expired), then answer normally.
    ExpireTokens,
}

#[derive(Default)]
struct PeerState {
    issued: AtomicUsize,
    valid: Mutex<Vec<String>>,
    all_issued: Mutex<Vec<String>>,
    token_script: Mutex<VecDeque<(u16, String)>>,
    script: Mutex<VecDeque<Scripted>>,
    seen: Mutex<Vec<Seen>>,
    list_rows: AtomicUsize,
    ignore_pageno: std::sync::atomic::AtomicBool,
}

struct Peer {
    addr: SocketAddr,
    state: Arc<PeerState>,
}

impl Peer {
    async fn start() -> Peer {
        let state = Arc::new(PeerState::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(&state, request).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Peer { addr, state }
    }

    fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn client(&self) -> PaymentzClient {
        client_for(&self.base_url(), KEY, DEFAULT_TOKEN_REFRESH_AFTER)
    }

    fn script(&self, step: Scripted) {
        self.state.script.lock().unwrap().push_back(step);
    }

    fn script_token(&self, status: u16, body: &str) {
        self.state
            .token_script
            .lock()
            .unwrap()
            .push_back((status, body.to_string()));
    }

    fn issued(&self) -> usize {
        self.state.issued.load(Ordering::SeqCst)
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    fn seen_at(&self, path: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.path == path).collect()
    }

    fn tokens(&self) -> Vec<String> {
        self.state.all_issued.lock().unwrap().clone()
    }
}

fn client_for(base_url: &str, key: &str, refresh_after: Duration) -> PaymentzClient {
    PaymentzClient::new(
        "default",
        AccountConfig {
            base_url: base_url.to_string(),
            partner_id: PARTNER.into(),
            username: USER.into(),
            member_id: MEMBER.into(),
            secure_key: SecretString::from(key),
            token_refresh_after: refresh_after,
        },
        HttpTransport::new(HttpSettings::default()),
    )
}

/// An independent MD5 over `|`-joined parts, so the client's signing is checked
/// against something other than itself.
fn md5_of(parts: &[&str]) -> String {
    hex::encode(Md5::digest(parts.join("|").as_bytes()))
}

fn json(status: u16, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

async fn handle(state: &PeerState, request: HttpRequest<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_string();
    let query = request.uri().query().map(str::to_string);
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let content_type = header("content-type");
    let auth_token = header("authtoken");
    let body = request.into_body().collect().await.unwrap().to_bytes();
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    state.seen.lock().unwrap().push(Seen {
        path: path.clone(),
        query,
        content_type,
        auth_token: auth_token.clone(),
        form: form.clone(),
    });
    let field = |name: &str| form.get(name).cloned().unwrap_or_default();
    let api = "/transactionServices/REST/v1";
    let Some(route) = path.strip_prefix(api) else {
        return json(404, "{}".into());
    };

    if route == "/authToken" {
        if let Some((status, body)) = state.token_script.lock().unwrap().pop_front() {
            return json(status, body);
        }
        if field("authentication.partnerId") != PARTNER
            || field("merchant.username") != USER
            || field("authentication.sKey") != KEY
        {
            return json(
                200,
                r#"{"result":{"code":"403","description":"Authentication failed"}}"#.into(),
            );
        }
        let n = state.issued.fetch_add(1, Ordering::SeqCst) + 1;
        let token = format!("eyJhbGciOiJIUzI1NiJ9.token-{n}.c2lnbmF0dXJl");
        state.valid.lock().unwrap().push(token.clone());
        state.all_issued.lock().unwrap().push(token.clone());
        return json(
            200,
            format!(
                r#"{{"partnerId":"{PARTNER}","memberId":"{MEMBER}","result":{{"code":"200","description":"Token generated successfully"}},"timestamp":"2026-11-22 10:15:03","LoginName":"{USER}","AuthToken":"{token}"}}"#
            ),
        );
    }

    match state.script.lock().unwrap().pop_front() {
        Some(Scripted::Reply(status, body)) => return json(status, body),
        Some(Scripted::ExpireTokens) => state.valid.lock().unwrap().clear(),
        None => {}
    }
    let known = auth_token
        .as_ref()
        .is_some_and(|t| state.valid.lock().unwrap().contains(t));
    if !known {
        return json(
            200,
            r#"{"result":{"code":"401","description":"Invalid or expired token"}}"#.into(),
        );
    }
    if field("authentication.memberId") != MEMBER {
        return json(
            200,
            r#"{"result":{"code":"10001","description":"Unknown member"}}"#.into(),
        );
    }
    let bad_checksum = json(
        200,
        r#"{"paymentId":"-","result":{"code":"10001","description":"Checksum mismatch"}}"#.into(),
    );

    if route == "/getTransactionList" {
        if field("authentication.checksum") != md5_of(&[MEMBER, KEY]) {
            return bad_checksum;
        }
        let total = state.list_rows.load(Ordering::SeqCst);
        let size: usize = field("pagination.records").parse().unwrap();
        let page: usize = if state.ignore_pageno.load(Ordering::SeqCst) {
            1
        } else {
            field("pagination.pageno").parse().unwrap()
        };
        let rows: Vec<serde_json::Value> = ((page - 1) * size..(page * size).min(total))
            .map(|i| {
                serde_json::json!({
                    "systemPaymentId": (60000 + i).to_string(),
                    "amount": "5.00",
                    "transactionStatus": "capturesuccess",
                    "date": field("pagination.fromdate"),
                })
            })
            .collect();
        if rows.is_empty() {
            return json(200, "{}".into());
        }
        return json(
            200,
            serde_json::json!({
                "result": {"code": "00029", "description": "Transactions retrieved"},
                "transaction": rows,
            })
            .to_string(),
        );
    }

    let Some(id) = route.strip_prefix("/payments/") else {
        return json(404, "{}".into());
    };
    let checksum = field("authentication.checksum");
    let kind = field("paymentType");
    let expected = match kind.as_str() {
        "CP" | "RF" => md5_of(&[MEMBER, KEY, id, &field("amount")]),
        _ => md5_of(&[MEMBER, KEY, id]),
    };
    if checksum != expected {
        return bad_checksum;
    }
    let (code, description) = match kind.as_str() {
        "CP" => ("00004", "Captured"),
        "RF" => ("00005", "Refunded"),
        "RV" => ("00006", "Cancelled"),
        "IN" => {
            return json(
                200,
                format!(
                    r#"{{"paymentId":"{id}","merchantTransactionId":"ORDER-1001","status":"capturesuccess","transactionStatus":"Y","amount":"50.00","currency":"EUR","descriptor":"d","remark":"","bankReferenceId":"b","card":{{"bin":"411111","lastFourDigits":"1111"}},"result":{{"code":"00026","description":"Record found"}},"timestamp":"2026-11-22 10:15:03"}}"#
                ),
            )
        }
        _ => ("10001", "Unknown paymentType"),
    };
    json(
        200,
        format!(
            r#"{{"paymentId":"{id}9","descriptor":"d","result":{{"code":"{code}","description":"{description}"}},"timestamp":"2026-11-22 10:15:03"}}"#
        ),
    )
}

fn request(operation: PaymentOperation, payment_id: &str) -> OperationRequest {
    OperationRequest::new(operation, payment_id)
}

fn list_request(from: time::Date, to: time::Date) -> OperationRequest {
    let mut list = ListRequest::new(from, to).unwrap();
    list.currency = Some("EUR".into());
    OperationRequest::List(list)
}

fn purposes(call: &GatewayCall) -> Vec<&str> {
    call.exchanges.iter().map(|e| e.purpose.as_str()).collect()
}

/// Every record and answer of `calls`, as text, must be free of `secrets`.
fn assert_clean(calls: &[&GatewayCall], secrets: &[String]) {
    for call in calls {
        let mut texts = vec![
            format!("{:?}", call.answer),
            format!("{:?}", call.exchanges),
        ];
        for exchange in &call.exchanges {
            texts.push(serde_json::to_string(exchange).unwrap());
        }
        for text in texts {
            for secret in secrets {
                assert!(!text.contains(secret.as_str()), "{secret} leaked in {text}");
            }
        }
    }
}

// ---------------------------------------------------------------- config

fn section_table(text: &str) -> toml::Table {
    text.parse().unwrap()
}

#[test]
fn account_config_reads_every_key() {
    let table = section_table(
        r#"
base_url = "https://test.paymentz.com/"
partner_id = "197"
username = "merchant-login"
member_id = 11359
secure_key = "pz-secret-key"
token_refresh_after = "30m"
"#,
    );
    let section = Section::new(
        Path::new("t.toml"),
        "accounts.paymentz.default".into(),
        &table,
    );
    let config = AccountConfig::read(&section, &HttpSettings::default()).unwrap();
    section.finish().unwrap();
    assert_eq!(config.base_url, "https://test.paymentz.com");
    assert_eq!(config.partner_id, "197");
    assert_eq!(config.member_id, "11359");
    assert_eq!(config.token_refresh_after, Duration::from_secs(1800));
    assert_eq!(config.secure_key.expose_secret(), "pz-secret-key");
    assert!(!format!("{config:?}").contains("pz-secret-key"));

    let client = PaymentzClient::new("eu", config, HttpTransport::new(HttpSettings::default()));
    assert_eq!(client.name(), "paymentz");
    assert_eq!(client.account(), "eu");
    assert!(!format!("{client:?}").contains("pz-secret-key"));
    assert_eq!(
        client.url("/authToken"),
        "https://test.paymentz.com/transactionServices/REST/v1/authToken"
    );
}

#[test]
fn account_config_defaults_and_mistakes() {
    let base = r#"
base_url = "https://test.paymentz.com/transactionServices/REST/v1"
partner_id = "197"
username = "merchant-login"
member_id = "11359"
secure_key = "k"
"#;
    let table = section_table(base);
    let section = Section::new(
        Path::new("t.toml"),
        "accounts.paymentz.default".into(),
        &table,
    );
    let config = AccountConfig::read(&section, &HttpSettings::default()).unwrap();
    assert_eq!(config.token_refresh_after, DEFAULT_TOKEN_REFRESH_AFTER);
    assert_eq!(config.base_url, "https://test.paymentz.com");

    let cases = [
        (
            base.replace("member_id = \"11359\"\n", ""),
            "key `member_id`: missing",
        ),
        (
            base.replace("secure_key = \"k\"", "secure_key = \"\""),
            "key `secure_key`: must not be empty",
        ),
        (
            base.replace("https://", "ftp://"),
            "key `base_url`: URL scheme",
        ),
        (
            base.replace("https://", "https://user:pw@"),
            "key `base_url`: must not contain credentials",
        ),
        (
            base.replace("/v1\"", "/v1?x=1\""),
            "key `base_url`: must not have a query",
        ),
        (
            format!("{base}token_refresh_after = \"0s\"\n"),
            "key `token_refresh_after`: must be more than zero",
        ),
        (
            format!("{base}token_refresh_after = \"soon\"\n"),
            "key `token_refresh_after`",
        ),
    ];
    for (text, expected) in cases {
        let table = section_table(&text);
        let section = Section::new(
            Path::new("t.toml"),
            "accounts.paymentz.default".into(),
            &table,
        );
        let err = AccountConfig::read(&section, &HttpSettings::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{err} lacks {expected}");
        assert!(err.contains("[accounts.paymentz.default]"), "{err}");
    }

    let typo = section_table(&format!("{base}token_refresh = \"5m\"\n"));
    let section = Section::new(
        Path::new("t.toml"),
        "accounts.paymentz.default".into(),
        &typo,
    );
    AccountConfig::read(&section, &HttpSettings::default()).unwrap();
    let err = section.finish().unwrap_err().to_string();
    assert!(err.contains("key `token_refresh`: unknown key"), "{err}");
}

#[test]
fn the_registry_builds_a_paymentz_client() {
    let table = section_table(
        r#"
base_url = "https://test.paymentz.com"
partner_id = "197"
username = "merchant-login"
member_id = "11359"
secure_key = "k"
"#,
    );
    let section = Section::new(
        Path::new("t.toml"),
        "accounts.paymentz.default".into(),
        &table,
    );
    let client = (KIND.read)(&section, &HttpSettings::default())
        .unwrap()
        .client("default", HttpTransport::new(HttpSettings::default()));
    assert_eq!(KIND.name, "paymentz");
    assert_eq!(client.name(), "paymentz");
    assert_eq!(client.account(), "default");
}

// ---------------------------------------------------------------- check()

#[test]
fn check_rules() {
    let client = client_for(
        "https://test.paymentz.com",
        KEY,
        DEFAULT_TOKEN_REFRESH_AFTER,
    );
    for operation in Operation::ALL {
        assert!(client.supports(operation), "{operation}");
    }
    let ten = Amount::from_minor(1000);
    let ok = [
        request(PaymentOperation::Capture, "55361").with_amount(ten),
        request(PaymentOperation::Refund, "55361").with_amount(ten),
        request(PaymentOperation::Cancel, "55361"),
        request(PaymentOperation::Inquiry, "55361"),
        list_request(date!(2026 - 11 - 01), date!(2026 - 11 - 22)),
    ];
    for r in &ok {
        assert_eq!(client.check(r), Ok(()), "{r:?}");
    }

    let field_of = |r: &OperationRequest| match client.check(r) {
        Err(Rejection::InvalidField { field, .. }) => field,
        other => panic!("{r:?} gave {other:?}"),
    };
    assert_eq!(
        field_of(&request(PaymentOperation::Capture, "55361")),
        "amount"
    );
    assert_eq!(
        field_of(&request(PaymentOperation::Refund, "55361")),
        "amount"
    );
    assert_eq!(
        field_of(&request(PaymentOperation::Refund, "55361").with_amount(Amount::ZERO)),
        "amount"
    );
    assert_eq!(
        field_of(
            &request(PaymentOperation::Capture, "55361")
                .with_amount(Amount::from_minor(crate::money::MAX_MINOR + 1))
        ),
        "amount"
    );
    assert_eq!(
        field_of(&request(PaymentOperation::Cancel, "55361").with_amount(ten)),
        "amount"
    );
    assert_eq!(
        field_of(&request(PaymentOperation::Inquiry, "55361").with_amount(ten)),
        "amount"
    );
    for bad in ["", "1/2", "..", "1?a=b", "1#x", "5 5", "55%2F1", "a\tb"] {
        assert_eq!(
            field_of(&request(PaymentOperation::Inquiry, bad)),
            "payment_id",
            "{bad:?}"
        );
        assert_eq!(
            field_of(&request(PaymentOperation::Refund, bad).with_amount(ten)),
            "payment_id",
            "{bad:?}"
        );
    }
    // A cancel without a payment id, or a list without its dates, cannot be
    // built (`OperationRequest`); a list that runs backwards cannot either.
    let backwards = ListRequest::new(date!(2026 - 11 - 22), date!(2026 - 11 - 01));
    assert!(matches!(
        backwards,
        Err(Rejection::InvalidField { field: "from", .. })
    ));
    let mut unsafe_filter = ListRequest::new(date!(2026 - 11 - 01), date!(2026 - 11 - 22)).unwrap();
    unsafe_filter.payment_id = Some("1/2".into());
    assert_eq!(
        field_of(&OperationRequest::List(unsafe_filter)),
        "payment_id"
    );
}

#[tokio::test]
async fn an_invalid_request_is_never_sent() {
    let peer = Peer::start().await;
    let call = peer
        .client()
        .execute(&request(PaymentOperation::Refund, "55361"))
        .await;
    assert_eq!(call.answer.classification, Classification::Declined);
    assert!(call.exchanges.is_empty());
    assert!(peer.seen().is_empty());
}

// ---------------------------------------------------------------- calls

#[tokio::test]
async fn a_capture_sends_a_signed_form_with_the_token_header() {
    let peer = Peer::start().await;
    let client = peer.client();
    let call = client
        .execute(&request(PaymentOperation::Capture, "55361").with_amount(Amount::from_minor(1050)))
        .await;
    assert_eq!(
        call.answer.classification,
        Classification::Succeeded,
        "{call:?}"
    );
    assert_eq!(call.answer.gateway_code.as_deref(), Some("00004"));
    assert_eq!(
        call.answer.gateway_status.as_deref(),
        Some("capturesuccess")
    );
    assert_eq!(call.answer.reference.as_deref(), Some("553619"));
    assert_eq!(purposes(&call), ["authToken", "CP"]);

    let seen = peer.seen();
    assert_eq!(seen.len(), 2);
    let token_request = &seen[0];
    assert_eq!(token_request.path, "/transactionServices/REST/v1/authToken");
    assert_eq!(token_request.auth_token, None);
    let capture = &seen[1];
    assert_eq!(capture.path, "/transactionServices/REST/v1/payments/55361");
    assert_eq!(capture.query, None);
    assert_eq!(
        capture.content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        capture.auth_token.as_deref(),
        Some(peer.tokens()[0].as_str())
    );
    let expected_sum = md5_of(&[MEMBER, KEY, "55361", "10.50"]);
    let expected_form: BTreeMap<String, String> = [
        ("authentication.memberId", MEMBER),
        ("authentication.checksum", expected_sum.as_str()),
        ("paymentType", "CP"),
        ("amount", "10.50"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(capture.form, expected_form);

    let token_exchange = &call.exchanges[0];
    assert_eq!(token_exchange.classification, Classification::Succeeded);
    assert_eq!(token_exchange.http_status, Some(200));
    assert_eq!(token_exchange.request["authentication.sKey"], REDACTED);
    assert_eq!(token_exchange.request["authentication.partnerId"], PARTNER);
    assert_eq!(token_exchange.signature_sent, None);
    let token_body: Value =
        serde_json::from_str(token_exchange.response_body.as_deref().unwrap()).unwrap();
    assert_eq!(token_body["AuthToken"], REDACTED);
    assert_eq!(token_body["LoginName"], USER);

    let exchange = &call.exchanges[1];
    assert_eq!(exchange.method, "POST");
    assert_eq!(exchange.url, client.url("/payments/55361"));
    assert_eq!(
        exchange.signature_sent.as_deref(),
        Some(expected_sum.as_str())
    );
    assert_eq!(exchange.signature_verified, None);
    assert_eq!(exchange.signature_received, None);
    assert_eq!(exchange.http_status, Some(200));
    assert_eq!(exchange.request["amount"], "10.50");
    assert_eq!(exchange.classification, Classification::Succeeded);
    assert!(exchange.response_body.as_deref().unwrap().contains("00004"));
    assert_eq!(exchange.error, None);
}

#[tokio::test]
async fn refund_cancel_and_inquiry_reach_the_gateway_as_specified() {
    let peer = Peer::start().await;
    let client = peer.client();
    let refund = client
        .execute(&request(PaymentOperation::Refund, "55361").with_amount(Amount::from_minor(100)))
        .await;
    assert_eq!(
        refund.answer.classification,
        Classification::Succeeded,
        "{refund:?}"
    );
    assert_eq!(refund.answer.gateway_status.as_deref(), Some("reversed"));
    let cancel = client
        .execute(&request(PaymentOperation::Cancel, "55361"))
        .await;
    assert_eq!(
        cancel.answer.classification,
        Classification::Succeeded,
        "{cancel:?}"
    );
    assert_eq!(
        cancel.answer.gateway_status.as_deref(),
        Some("authcancelled")
    );
    assert_eq!(purposes(&cancel), ["RV"]);
    let inquiry = client
        .execute(&request(PaymentOperation::Inquiry, "55361"))
        .await;
    assert_eq!(
        inquiry.answer.classification,
        Classification::Succeeded,
        "{inquiry:?}"
    );
    assert_eq!(purposes(&inquiry), ["IN"]);
    let snapshot = inquiry.answer.snapshot.unwrap();
    assert_eq!(snapshot.state, PaymentState::Captured);
    assert_eq!(snapshot.amount, Some(Amount::from_minor(5000)));
    assert_eq!(snapshot.refunded, Some(Amount::ZERO));
    assert_eq!(
        inquiry.answer.response.unwrap()["merchantTransactionId"],
        "ORDER-1001"
    );

    let seen = peer.seen();
    let cancel_form = &seen[2].form;
    assert_eq!(
        cancel_form.get("paymentType").map(String::as_str),
        Some("RV")
    );
    assert!(!cancel_form.contains_key("amount"));
    let inquiry_form = &seen[3].form;
    assert_eq!(
        inquiry_form.get("paymentType").map(String::as_str),
        Some("IN")
    );
    assert_eq!(inquiry_form.get("idType").map(String::as_str), Some("PID"));
    assert!(!inquiry_form.contains_key("amount"));
    assert!(seen.iter().all(|s| s.query.is_none()));
}

#[tokio::test]
async fn an_inquiry_by_merchant_transaction_id() {
    let peer = Peer::start().await;
    let call = peer
        .client()
        .inquire_by_merchant_transaction_id("ORDER-1001")
        .await;
    assert_eq!(
        call.answer.classification,
        Classification::Succeeded,
        "{call:?}"
    );
    let seen = peer.seen_at("/transactionServices/REST/v1/payments/ORDER-1001");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].form.get("idType").map(String::as_str), Some("MID"));
    assert_eq!(
        seen[0].form.get("authentication.checksum").cloned(),
        Some(md5_of(&[MEMBER, KEY, "ORDER-1001"]))
    );
    let refused = peer
        .client()
        .inquire_by_merchant_transaction_id("../x")
        .await;
    assert_eq!(refused.answer.classification, Classification::Declined);
    assert!(refused.exchanges.is_empty());
}

#[tokio::test]
async fn the_token_is_fetched_once_and_reused() {
    let peer = Peer::start().await;
    let client = peer.client();
    let first = client
        .execute(&request(PaymentOperation::Inquiry, "1"))
        .await;
    let second = client
        .execute(&request(PaymentOperation::Inquiry, "2"))
        .await;
    assert_eq!(purposes(&first), ["authToken", "IN"]);
    assert_eq!(purposes(&second), ["IN"]);
    assert_eq!(peer.issued(), 1);
    let headers: Vec<_> = peer
        .seen()
        .into_iter()
        .filter_map(|s| s.auth_token)
        .collect();
    assert_eq!(headers, vec![peer.tokens()[0].clone(); 2]);
}

#[tokio::test]
async fn an_old_token_is_replaced_before_it_is_used() {
    let peer = Peer::start().await;
    let client = client_for(&peer.base_url(), KEY, Duration::from_nanos(1));
    let first = client
        .execute(&request(PaymentOperation::Inquiry, "1"))
        .await;
    let second = client
        .execute(&request(PaymentOperation::Inquiry, "2"))
        .await;
    assert_eq!(purposes(&first), ["authToken", "IN"]);
    assert_eq!(purposes(&second), ["authToken", "IN"]);
    assert_eq!(peer.issued(), 2);
    assert_eq!(second.answer.classification, Classification::Succeeded);
}

#[tokio::test]
async fn concurrent_calls_fetch_one_token() {
    let peer = Peer::start().await;
    let client = peer.client();
    let requests: Vec<OperationRequest> = (0..8)
        .map(|i| request(PaymentOperation::Inquiry, &format!("{}", 100 + i)))
        .collect();
    // join_all polls every call before any can finish: one fetches the
    // token, the seven others queue behind it.
    let calls = futures::future::join_all(requests.iter().map(|r| client.execute(r))).await;
    assert_eq!(peer.issued(), 1);
    assert!(calls
        .iter()
        .all(|c| c.answer.classification == Classification::Succeeded));
    let fetches: usize = calls
        .iter()
        .map(|c| purposes(c).iter().filter(|p| **p == "authToken").count())
        .sum();
    assert_eq!(fetches, 1);
}

#[tokio::test]
async fn a_refused_token_is_replaced_and_the_call_sent_once_more() {
    let peer = Peer::start().await;
    let client = peer.client();
    client
        .execute(&request(PaymentOperation::Inquiry, "1"))
        .await;
    peer.script(Scripted::ExpireTokens);
    let call = client
        .execute(&request(PaymentOperation::Refund, "55361").with_amount(Amount::from_minor(2500)))
        .await;
    assert_eq!(
        call.answer.classification,
        Classification::Succeeded,
        "{call:?}"
    );
    assert_eq!(purposes(&call), ["RF", "authToken", "RF"]);
    assert_eq!(call.exchanges[0].classification, Classification::NotApplied);
    assert!(call.exchanges[0].error.as_deref().unwrap().contains("401"));
    assert_eq!(peer.issued(), 2);
    let refunds = peer.seen_at("/transactionServices/REST/v1/payments/55361");
    assert_eq!(refunds.len(), 2);
    let tokens = peer.tokens();
    assert_eq!(refunds[0].auth_token.as_deref(), Some(tokens[0].as_str()));
    assert_eq!(refunds[1].auth_token.as_deref(), Some(tokens[1].as_str()));
    // The new token is cached for the next call.
    let next = client
        .execute(&request(PaymentOperation::Inquiry, "2"))
        .await;
    assert_eq!(purposes(&next), ["IN"]);
}

#[tokio::test]
async fn a_second_refusal_ends_the_call_as_not_applied() {
    let peer = Peer::start().await;
    let refused = r#"{"result":{"code":"401","description":"Invalid token"}}"#;
    peer.script(Scripted::Reply(200, refused.into()));
    peer.script(Scripted::Reply(200, refused.into()));
    let call = peer
        .client()
        .execute(&request(PaymentOperation::Refund, "55361").with_amount(Amount::from_minor(100)))
        .await;
    assert_eq!(call.answer.classification, Classification::NotApplied);
    assert_eq!(call.answer.error, Some(GatewayError::TokenRefused));
    assert_eq!(purposes(&call), ["authToken", "RF", "authToken", "RF"]);
    assert_eq!(
        peer.seen_at("/transactionServices/REST/v1/payments/55361")
            .len(),
        2,
        "sent once and retried once, never more"
    );
}

#[tokio::test]
async fn refused_credentials_send_nothing() {
    let peer = Peer::start().await;
    let client = client_for(
        &peer.base_url(),
        "WrongKeyWrongKeyWrongKey",
        DEFAULT_TOKEN_REFRESH_AFTER,
    );
    let call = client
        .execute(&request(PaymentOperation::Capture, "55361").with_amount(Amount::from_minor(100)))
        .await;
    assert_eq!(call.answer.classification, Classification::Declined);
    assert!(matches!(
        call.answer.error,
        Some(GatewayError::CredentialsRefused(_))
    ));
    assert!(call.answer.description.as_deref().unwrap().contains("403"));
    assert_eq!(purposes(&call), ["authToken"]);
    assert_eq!(call.exchanges[0].classification, Classification::Declined);
    assert_eq!(peer.seen().len(), 1);
}

#[tokio::test]
async fn a_token_fetch_that_fails_in_transit_leaves_the_operation_not_applied() {
    let peer = Peer::start().await;
    peer.script_token(503, "Service Unavailable");
    let call = peer
        .client()
        .execute(&request(PaymentOperation::Refund, "55361").with_amount(Amount::from_minor(100)))
        .await;
    // The token exchange alone is ambiguous (a 5xx), but the refund was never sent.
    assert_eq!(call.exchanges[0].classification, Classification::Ambiguous);
    assert_eq!(call.answer.classification, Classification::NotApplied);
    assert_eq!(
        call.answer.error,
        Some(GatewayError::ServerError { status: 503 })
    );
    assert_eq!(purposes(&call), ["authToken"]);
}

#[tokio::test]
async fn an_unreachable_gateway_is_not_applied() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = client_for(
        &format!("http://127.0.0.1:{port}"),
        KEY,
        DEFAULT_TOKEN_REFRESH_AFTER,
    );
    let call = client
        .execute(&request(PaymentOperation::Cancel, "55361"))
        .await;
    assert_eq!(call.answer.classification, Classification::NotApplied);
    assert!(matches!(call.answer.error, Some(GatewayError::Connect(_))));
    assert_eq!(purposes(&call), ["authToken"]);
    assert_eq!(call.exchanges[0].http_status, None);
    assert!(call.exchanges[0].error.is_some());
}

#[tokio::test]
async fn a_5xx_or_pending_refund_is_ambiguous_and_not_resent() {
    let peer = Peer::start().await;
    let client = peer.client();
    peer.script(Scripted::Reply(502, "<html>Bad Gateway</html>".into()));
    let call = client
        .execute(&request(PaymentOperation::Refund, "55361").with_amount(Amount::from_minor(100)))
        .await;
    assert_eq!(call.answer.classification, Classification::Ambiguous);
    assert_eq!(
        call.answer.error,
        Some(GatewayError::ServerError { status: 502 })
    );
    assert_eq!(call.exchanges[1].http_status, Some(502));
    assert_eq!(
        call.exchanges[1].response_body.as_deref(),
        Some("<html>Bad Gateway</html>")
    );

    peer.script(Scripted::Reply(
        200,
        r#"{"paymentId":"55362","result":{"code":"10004","description":"Transaction pending"}}"#
            .into(),
    ));
    let pending = client
        .execute(&request(PaymentOperation::Refund, "55361").with_amount(Amount::from_minor(100)))
        .await;
    assert_eq!(pending.answer.classification, Classification::Ambiguous);
    assert_eq!(pending.answer.gateway_code.as_deref(), Some("10004"));
    assert_eq!(
        peer.seen_at("/transactionServices/REST/v1/payments/55361")
            .len(),
        2,
        "each refund sent exactly once"
    );
}

#[tokio::test]
async fn a_wrong_checksum_is_declined() {
    let peer = Peer::start().await;
    // Same credentials for the token, a different key for the checksum: the
    // stand-in refuses the checksum the way the gateway would.
    let client = peer.client();
    client
        .execute(&request(PaymentOperation::Inquiry, "1"))
        .await;
    let mut config = client.config().clone();
    config.member_id = MEMBER.into();
    config.secure_key = SecretString::from("AnotherKey0123456789");
    let other = PaymentzClient::new(
        "default",
        config,
        HttpTransport::new(HttpSettings::default()),
    );
    peer.script_token(
        200,
        &format!(
            r#"{{"result":{{"code":"200"}},"AuthToken":"{}"}}"#,
            peer.tokens()[0]
        ),
    );
    let call = other
        .execute(&request(PaymentOperation::Cancel, "55361"))
        .await;
    assert_eq!(
        call.answer.classification,
        Classification::Declined,
        "{call:?}"
    );
    assert_eq!(call.answer.gateway_code.as_deref(), Some("10001"));
    assert_eq!(
        call.answer.description.as_deref(),
        Some("Checksum mismatch")
    );
}

#[tokio::test]
async fn a_transaction_list_reads_every_page() {
    for (total, pages) in [(250usize, 3usize), (200, 3), (0, 1), (99, 1)] {
        let peer = Peer::start().await;
        peer.state.list_rows.store(total, Ordering::SeqCst);
        let call = peer
            .client()
            .execute(&list_request(date!(2026 - 11 - 01), date!(2026 - 11 - 22)))
            .await;
        assert_eq!(
            call.answer.classification,
            Classification::Succeeded,
            "{call:?}"
        );
        let rows = call.answer.response.as_ref().unwrap()["transactions"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(rows.len(), total);
        if total > 0 {
            assert_eq!(rows[0]["systemPaymentId"], "60000");
            assert_eq!(
                rows[total - 1]["systemPaymentId"],
                (60000 + total - 1).to_string()
            );
        }
        let seen = peer.seen_at("/transactionServices/REST/v1/getTransactionList");
        assert_eq!(seen.len(), pages, "{total} rows");
        for (i, s) in seen.iter().enumerate() {
            let f = |k: &str| s.form.get(k).cloned().unwrap_or_default();
            assert_eq!(f("pagination.pageno"), (i + 1).to_string());
            assert_eq!(f("pagination.records"), "100");
            assert_eq!(f("pagination.fromdate"), "01/11/2026");
            assert_eq!(f("pagination.todate"), "22/11/2026");
            assert_eq!(f("currency"), "EUR");
            assert_eq!(f("authentication.checksum"), md5_of(&[MEMBER, KEY]));
            assert!(s.query.is_none());
        }
        assert_eq!(
            purposes(&call)
                .iter()
                .filter(|p| **p == "getTransactionList")
                .count(),
            pages
        );
    }
}

#[tokio::test]
async fn a_gateway_that_ignores_the_page_number_is_not_read_forever() {
    let peer = Peer::start().await;
    peer.state.list_rows.store(500, Ordering::SeqCst);
    peer.state.ignore_pageno.store(true, Ordering::SeqCst);
    let call = peer
        .client()
        .execute(&list_request(date!(2026 - 11 - 01), date!(2026 - 11 - 02)))
        .await;
    assert_eq!(call.answer.classification, Classification::Declined);
    assert!(call
        .answer
        .description
        .as_deref()
        .unwrap()
        .contains("repeats"));
    assert_eq!(
        peer.seen_at("/transactionServices/REST/v1/getTransactionList")
            .len(),
        2
    );
}

#[tokio::test]
async fn a_list_page_error_ends_the_list() {
    let peer = Peer::start().await;
    peer.state.list_rows.store(150, Ordering::SeqCst);
    let client = peer.client();
    // Let page 1 through, then refuse page 2.
    client
        .execute(&request(PaymentOperation::Inquiry, "1"))
        .await;
    peer.script(Scripted::Reply(
        200,
        serde_json::json!({
            "result": {"code": "00029"},
            "transaction": (0..100).map(|i| serde_json::json!({"systemPaymentId": i.to_string()})).collect::<Vec<_>>(),
        })
        .to_string(),
    ));
    peer.script(Scripted::Reply(
        200,
        r#"{"result":{"code":"30089","description":"Invalid page number"}}"#.into(),
    ));
    let call = client
        .execute(&list_request(date!(2026 - 11 - 01), date!(2026 - 11 - 02)))
        .await;
    assert_eq!(call.answer.classification, Classification::Declined);
    assert_eq!(call.answer.gateway_code.as_deref(), Some("30089"));
    assert!(
        call.answer.response.is_none(),
        "a partial list is never the list"
    );
}

// ---------------------------------------------------------------- redaction

#[tokio::test]
async fn no_secret_or_token_reaches_any_record() {
    let peer = Peer::start().await;
    peer.state.list_rows.store(120, Ordering::SeqCst);
    let client = peer.client();
    let mut calls = Vec::new();
    calls.push(
        client
            .execute(
                &request(PaymentOperation::Capture, "55361").with_amount(Amount::from_minor(100)),
            )
            .await,
    );
    peer.script(Scripted::ExpireTokens);
    calls.push(
        client
            .execute(&request(PaymentOperation::Inquiry, "55361"))
            .await,
    );
    calls.push(
        client
            .execute(&list_request(date!(2026 - 11 - 01), date!(2026 - 11 - 02)))
            .await,
    );
    // A gateway that echoes secrets where nobody expects them.
    let token = peer.tokens()[1].clone();
    peer.script(Scripted::Reply(
        200,
        format!(
            r#"{{"paymentId":"-","result":{{"code":"10001","description":"bad request, token {token}, key {KEY}"}},"AuthToken":"{token}"}}"#
        ),
    ));
    calls.push(
        client
            .execute(&request(PaymentOperation::Cancel, "55361"))
            .await,
    );
    let echo = client_for(&peer.base_url(), KEY, DEFAULT_TOKEN_REFRESH_AFTER);
    peer.script_token(
        200,
        &format!(r#"{{"result":{{"code":"403","description":"sKey {KEY} refused"}}}}"#),
    );
    calls.push(echo.execute(&request(PaymentOperation::Inquiry, "1")).await);

    let declined = &calls[3].answer;
    assert_eq!(declined.classification, Classification::Declined);
    assert!(declined.description.as_deref().unwrap().contains(REDACTED));
    assert!(matches!(
        &calls[4].answer.error,
        Some(GatewayError::CredentialsRefused(m)) if m.contains(REDACTED)
    ));

    let mut secrets = peer.tokens();
    secrets.push(KEY.to_string());
    assert!(secrets.len() >= 3);
    assert_clean(&calls.iter().collect::<Vec<_>>(), &secrets);
    // And the records still say what happened.
    assert_eq!(purposes(&calls[1]), ["IN", "authToken", "IN"]);
    assert!(calls
        .iter()
        .flat_map(|c| &c.exchanges)
        .filter(|e| e.purpose == "authToken")
        .all(|e| e.request["authentication.sKey"] == REDACTED));
}
