//! What the worker does not take from a gateway on trust, over real HTTP
//! against the simulator: where requests go (no redirect is followed, no
//! proxy from the environment), how much of an answer is read (the cap), and
//! which answers count as evidence (Praxis signatures under enforcement, the
//! flat `find-transaction` shape, "no such payment").
//!
//! A [`Bystander`] is a second real listener standing where a redirect or a
//! proxy would send a request; it counts what reaches it.

use crate::gateway_support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use backoffice_worker::gateways::http::truncation_marker;
use backoffice_worker::gateways::{
    Classification, GatewayCall, GatewayError, ListRequest, OperationRequest, PaymentOperation,
    PaymentState,
};
use backoffice_worker::money::Amount;
use backoffice_worker::simulator::{
    AnswerSettingsView, FaultKind, FaultScript, GatewayId, LedgerQuery, NewPayment,
    RunningSimulator, TransactionShape,
};
use gateway_support::*;

fn amount(text: &str) -> Amount {
    Amount::parse(text).expect("test amounts are valid")
}

fn purposes(call: &GatewayCall) -> Vec<&str> {
    call.exchanges.iter().map(|e| e.purpose.as_str()).collect()
}

fn captured(sim: &RunningSimulator, value: &str) -> String {
    sim.sim()
        .create_payment(NewPayment::new(GatewayId::Paymentz, amount(value)).state("captured"))
        .expect("payment created")
        .id
}

fn praxis_authorized(sim: &RunningSimulator, value: &str) -> String {
    sim.sim()
        .create_payment(NewPayment::new(GatewayId::Praxis, amount(value)))
        .expect("payment created")
        .id
}

fn applied(sim: &RunningSimulator) -> usize {
    sim.sim().ledger(&LedgerQuery::default()).len()
}

fn answers(sim: &RunningSimulator, view: AnswerSettingsView) {
    sim.sim()
        .update_answers(&view)
        .expect("valid answer settings");
}

/// The worker's config text for `sim`, with `extra` added to the Praxis table
/// and `http` as the `[http]` table.
fn config_with(sim: &RunningSimulator, praxis_extra: &str, http: &str) -> String {
    format!(
        "[http]\n{http}\n{}{praxis_extra}\n",
        config_text(&sim.base_url())
    )
}

// ---------------------------------------------------------------- redirects

/// A 307 to a real listener elsewhere: neither the token request (with the
/// secure key) nor a Paymentz call nor a signed Praxis call reaches it, and
/// each record shows the URL actually called and where it was told to go.
#[tokio::test]
async fn a_redirect_is_recorded_and_never_followed() {
    let sim = start().await;
    let elsewhere = Bystander::start().await;
    let location = elsewhere.url("/collect");
    answers(
        &sim,
        AnswerSettingsView {
            redirect_location: Some(location.clone()),
            ..AnswerSettingsView::default()
        },
    );
    let accounts = accounts_from(&config_text(&sim.base_url()));
    let pz = client(&accounts, "paymentz");
    let px = client(&accounts, "praxis");
    let id = captured(&sim, "50.00");
    let refund = OperationRequest::new(PaymentOperation::Refund, &id).with_amount(amount("10.00"));

    let check = |call: &GatewayCall, purpose: &str, path: &str| {
        assert_eq!(
            call.answer.classification,
            Classification::NotApplied,
            "{purpose}: {call:?}"
        );
        let exchange = call
            .exchanges
            .iter()
            .find(|e| e.purpose == purpose)
            .unwrap_or_else(|| panic!("{purpose} recorded: {call:?}"));
        assert_eq!(exchange.http_status, Some(307), "{purpose}");
        assert_eq!(
            exchange.url,
            format!("{}{path}", sim.base_url()),
            "{purpose}"
        );
        let error = exchange.error.as_deref().unwrap_or_default();
        assert!(
            error.contains(&location) && error.contains("never followed"),
            "{purpose}: {error}"
        );
        assert_eq!(exchange.classification, Classification::NotApplied);
        assert_no_secrets(call, &Credentials::sandbox().secrets());
    };

    // The token fetch, which carries the secure key.
    sim.sim()
        .script_fault(FaultScript::new(FaultKind::Redirect, 1).operation("authToken"))
        .unwrap();
    let call = pz.execute(&refund).await;
    check(&call, "authToken", "/transactionServices/REST/v1/authToken");
    assert_eq!(
        purposes(&call),
        ["authToken"],
        "nothing sent without a token"
    );

    // A Paymentz operation.
    sim.sim()
        .script_fault(FaultScript::new(FaultKind::Redirect, 1).operation("RF"))
        .unwrap();
    let call = pz.execute(&refund).await;
    check(
        &call,
        "RF",
        &format!("/transactionServices/REST/v1/payments/{id}"),
    );
    assert_eq!(purposes(&call), ["authToken", "RF"]);
    assert!(matches!(
        call.answer.error,
        Some(GatewayError::Redirected { status: 307, .. })
    ));

    // A signed Praxis call.
    let trace = praxis_authorized(&sim, "30.00");
    sim.sim()
        .script_fault(FaultScript::new(FaultKind::Redirect, 1).operation("deposit-capture"))
        .unwrap();
    let call = px
        .execute(&OperationRequest::new(PaymentOperation::Capture, &trace))
        .await;
    check(&call, "deposit-capture", "/api/deposit-capture");

    assert_eq!(sim.sim().stats().faults_of(FaultKind::Redirect), 3);
    assert_eq!(applied(&sim), 0, "a redirect applies nothing");
    // Give a follower every chance to have connected by now: one more real
    // round trip to the simulator after the last redirect.
    px.execute(&OperationRequest::new(PaymentOperation::Inquiry, &trace))
        .await;
    assert_eq!(
        elsewhere.connections(),
        0,
        "the redirect target received {:?}",
        elsewhere.request_lines()
    );
}

// ---------------------------------------------------------------- answer cap

const CAP: usize = 64 * 1024;

/// An answer many times the cap: read only up to the cap, stored cut with the
/// marker, and unreadable (ambiguous for a side effect, which the executor
/// settles by inquiry; a read is simply asked again).
#[tokio::test]
async fn an_answer_over_the_cap_is_cut_marked_and_ambiguous() {
    let sim = start().await;
    answers(
        &sim,
        AnswerSettingsView {
            huge_answer_bytes: Some(64 * 1024 * 1024),
            ..AnswerSettingsView::default()
        },
    );
    let accounts = accounts_from(&config_with(&sim, "", &format!("max_answer_bytes = {CAP}")));
    let marker = truncation_marker(CAP);
    let check = |call: &GatewayCall| {
        assert_eq!(call.answer.classification, Classification::Ambiguous);
        assert_eq!(
            call.answer.error,
            Some(GatewayError::Oversized { limit: CAP })
        );
        let exchange = call.exchanges.last().unwrap();
        assert_eq!(exchange.http_status, Some(200));
        let body = exchange
            .response_body
            .as_deref()
            .expect("the cut body is kept");
        assert!(
            body.len() <= CAP + marker.len(),
            "{} bytes stored",
            body.len()
        );
        assert!(body.ends_with(&marker), "marked as cut");
        assert!(body.starts_with('{'), "the start of the real answer");
        assert!(exchange
            .error
            .as_deref()
            .unwrap()
            .contains("max_answer_bytes"));
        assert_no_secrets(call, &Credentials::sandbox().secrets());
    };

    let pz = client(&accounts, "paymentz");
    let id = captured(&sim, "50.00");
    for operation in ["RF", "IN"] {
        sim.sim()
            .script_fault(FaultScript::new(FaultKind::HugeAnswer, 1).operation(operation))
            .unwrap();
    }
    let call = pz
        .execute(&OperationRequest::new(PaymentOperation::Refund, &id).with_amount(amount("10.00")))
        .await;
    check(&call);
    assert_eq!(
        applied(&sim),
        1,
        "the refund was applied before the huge answer"
    );
    let call = pz
        .execute(&OperationRequest::new(PaymentOperation::Inquiry, &id))
        .await;
    check(&call);
    // The next inquiry is whole and shows the refund.
    let call = pz
        .execute(&OperationRequest::new(PaymentOperation::Inquiry, &id))
        .await;
    assert_eq!(call.answer.classification, Classification::Succeeded);
    assert_eq!(
        call.answer.snapshot.unwrap().refunded,
        Some(amount("10.00"))
    );

    let px = client(&accounts, "praxis");
    let trace = praxis_authorized(&sim, "30.00");
    sim.sim()
        .script_fault(FaultScript::new(FaultKind::HugeAnswer, 1).operation("deposit-capture"))
        .unwrap();
    let call = px
        .execute(&OperationRequest::new(PaymentOperation::Capture, &trace))
        .await;
    check(&call);
    assert_eq!(
        call.exchanges[0].signature_verified, None,
        "nothing to verify"
    );
    assert_eq!(
        sim.sim().payment(GatewayId::Praxis, &trace).unwrap().status,
        "approved"
    );
}

/// A full transaction-list page (100 rows) is far below the default cap.
#[tokio::test]
async fn a_full_transaction_list_page_fits_the_default_cap() {
    let sim = start().await;
    for _ in 0..150 {
        sim.sim()
            .create_payment(
                NewPayment::new(GatewayId::Paymentz, amount("12.34"))
                    .state("captured")
                    .created_at("2026-11-02"),
            )
            .unwrap();
    }
    let accounts = accounts_from(&config_text(&sim.base_url()));
    let call = client(&accounts, "paymentz")
        .execute(&OperationRequest::List(
            ListRequest::new(
                time::macros::date!(2026 - 11 - 01),
                time::macros::date!(2026 - 11 - 30),
            )
            .unwrap(),
        ))
        .await;
    assert_eq!(
        call.answer.classification,
        Classification::Succeeded,
        "{call:?}"
    );
    let rows = call.answer.response.unwrap()["transactions"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(rows, 150);
    let largest = call
        .exchanges
        .iter()
        .filter_map(|e| e.response_body.as_ref())
        .map(String::len)
        .max()
        .unwrap();
    assert!(
        largest * 8 < backoffice_worker::gateways::http::DEFAULT_MAX_ANSWER_BYTES,
        "a page of {largest} bytes"
    );
}

// ---------------------------------------------------------------- proxies

/// `[http] proxy` is used: the request goes to the proxy (absolute form), and
/// the gateway itself sees nothing directly.
#[tokio::test]
async fn a_configured_proxy_is_used() {
    let sim = start().await;
    let proxy = Bystander::start().await;
    let accounts = accounts_from(&config_with(
        &sim,
        "",
        &format!("proxy = \"{}\"", proxy.url("")),
    ));
    let call = client(&accounts, "praxis")
        .execute(&OperationRequest::new(PaymentOperation::Inquiry, "752856"))
        .await;
    assert_eq!(call.exchanges[0].http_status, Some(503), "{call:?}");
    assert_eq!(proxy.connections(), 1);
    assert_eq!(
        proxy.request_lines(),
        [format!(
            "POST {}/api/find-transaction HTTP/1.1",
            sim.base_url()
        )]
    );
    assert_eq!(
        sim.sim().stats().requests_for("praxis", "find-transaction"),
        0
    );
}

/// `HTTP_PROXY` and friends in the environment are ignored: `call`, run
/// with every proxy variable pointing at a bystander, talks to the gateway.
#[tokio::test]
async fn proxies_from_the_environment_are_ignored() {
    let sim = start().await;
    let proxy = Bystander::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("backoffice.toml");
    std::fs::write(&config, config_text(&sim.base_url())).unwrap();
    let trace = praxis_authorized(&sim, "20.00");
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_backoffice-worker"));
    command
        .args(["call", "--config"])
        .arg(&config)
        .args(["--gateway", "praxis", "--operation", "inquiry"])
        .args(["--payment-id", &trace])
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .env_remove("BACKOFFICE_CONFIG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for name in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        command.env(name, proxy.url(""));
    }
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("call finishes")
        .expect("call runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let printed: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: {stdout} {}", String::from_utf8_lossy(&output.stderr)));
    assert_eq!(printed["outcome"], "succeeded", "{printed}");
    assert_eq!(
        sim.sim().stats().requests_for("praxis", "find-transaction"),
        1
    );
    assert_eq!(
        proxy.connections(),
        0,
        "the environment's proxy got {:?}",
        proxy.request_lines()
    );
}

/// Plain http to another machine stops `call` at start-up, naming the key;
/// nothing is sent anywhere.
#[tokio::test]
async fn plain_http_off_loopback_is_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("backoffice.toml");
    std::fs::write(&config, config_text("http://gateway.example.com")).unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_backoffice-worker"))
        .args(["call", "--config"])
        .arg(&config)
        .args([
            "--gateway",
            "praxis",
            "--operation",
            "inquiry",
            "--payment-id",
            "752856",
        ])
        .env_remove("BACKOFFICE_CONFIG")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert_ne!(output.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let file = config.display().to_string();
    assert!(
        stderr.contains(&file)
            && stderr.contains("[accounts.paymentz.default] key `base_url`")
            && stderr.contains("allow_http = true"),
        "{stderr}"
    );
    assert!(Path::new(&config).exists());
}

// ---------------------------------------------------------------- Praxis answers

/// The flat (notification-form) `find-transaction` answer is understood as
/// well as the nested one: same classification, same snapshot.
#[tokio::test]
async fn praxis_inquiries_are_read_in_both_shapes() {
    let sim = start().await;
    let accounts = accounts_from(&config_text(&sim.base_url()));
    let px = client(&accounts, "praxis");
    let trace = praxis_authorized(&sim, "25.00");
    let mut snapshots = Vec::new();
    for shape in [TransactionShape::Nested, TransactionShape::Flat] {
        answers(
            &sim,
            AnswerSettingsView {
                praxis_transaction: Some(shape),
                ..AnswerSettingsView::default()
            },
        );
        let call = px
            .execute(&OperationRequest::new(PaymentOperation::Inquiry, &trace))
            .await;
        let body = call.exchanges[0].response_body.clone().unwrap();
        assert_eq!(
            body.contains("\"transaction\":"),
            shape == TransactionShape::Nested,
            "{shape:?}: {body}"
        );
        assert_eq!(
            call.answer.classification,
            Classification::Succeeded,
            "{shape:?}: {call:?}"
        );
        assert_eq!(call.answer.gateway_status.as_deref(), Some("authorized"));
        assert_eq!(
            call.exchanges[0].signature_verified,
            Some(true),
            "{shape:?}"
        );
        snapshots.push(call.answer.snapshot.expect("a snapshot"));
    }
    assert_eq!(snapshots[0], snapshots[1]);
    assert_eq!(snapshots[0].state, PaymentState::Authorized);
    assert_eq!(snapshots[0].amount, Some(amount("25.00")));
}

/// A wrong answer signature: recorded and used by default; under
/// `enforce_answer_signature` a success proves nothing and is ambiguous.
#[tokio::test]
async fn an_answer_signature_that_does_not_verify_counts_only_when_not_enforced() {
    let sim = start().await;
    for (extra, expected) in [
        ("", Classification::Succeeded),
        ("enforce_answer_signature = true", Classification::Ambiguous),
    ] {
        let accounts = accounts_from(&config_with(&sim, extra, ""));
        let px = client(&accounts, "praxis");
        let trace = praxis_authorized(&sim, "15.00");
        sim.sim()
            .script_fault(FaultScript::new(FaultKind::BadSignature, 1).operation("deposit-capture"))
            .unwrap();
        let call = px
            .execute(&OperationRequest::new(PaymentOperation::Capture, &trace))
            .await;
        assert_eq!(call.answer.classification, expected, "{extra:?}: {call:?}");
        let exchange = &call.exchanges[0];
        assert_eq!(exchange.signature_verified, Some(false));
        assert!(exchange.signature_received.is_some());
        assert_eq!(exchange.classification, expected);
        // The capture itself happened either way: only the answer was spoiled.
        assert_eq!(
            sim.sim().payment(GatewayId::Praxis, &trace).unwrap().status,
            "approved"
        );
        // A verified inquiry is evidence again.
        let inquiry = px
            .execute(&OperationRequest::new(PaymentOperation::Inquiry, &trace))
            .await;
        assert_eq!(inquiry.answer.classification, Classification::Succeeded);
        assert_eq!(
            inquiry.answer.snapshot.unwrap().state,
            PaymentState::Captured
        );
    }
}

// ---------------------------------------------------------------- not found

/// Each gateway's "no such payment" answer to an inquiry is marked as such;
/// any other refusal is not.
#[tokio::test]
async fn an_inquiry_about_a_payment_that_does_not_exist_says_so() {
    let sim = start().await;
    let accounts = accounts_from(&config_with(&sim, "not_found_statuses = [1007]", ""));
    // Outside the simulator's on-demand range: nobody knows these ids.
    let call = client(&accounts, "paymentz")
        .execute(&OperationRequest::new(PaymentOperation::Inquiry, "4242"))
        .await;
    assert_eq!(call.answer.classification, Classification::Declined);
    assert_eq!(call.answer.gateway_code.as_deref(), Some("10026"));
    assert!(call.answer.not_found, "{call:?}");

    let call = client(&accounts, "praxis")
        .execute(&OperationRequest::new(PaymentOperation::Inquiry, "4242"))
        .await;
    assert_eq!(call.answer.classification, Classification::Declined);
    assert_eq!(call.answer.gateway_code.as_deref(), Some("1007"));
    assert!(call.answer.not_found, "{call:?}");

    // Without the setting the Praxis code means nothing in particular.
    let plain = accounts_from(&config_text(&sim.base_url()));
    let call = client(&plain, "praxis")
        .execute(&OperationRequest::new(PaymentOperation::Inquiry, "4242"))
        .await;
    assert_eq!(call.answer.classification, Classification::Declined);
    assert!(!call.answer.not_found);
}
