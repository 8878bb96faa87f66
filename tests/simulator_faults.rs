//! Fault injection over real HTTP: each kind does what it says (applied or
//! not, answer or not, RST or not), scripts are exact, rates are
//! reproducible by seed, and the admin API drives all of it.

use crate::simulator_support;

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use backoffice_worker::simulator::{
    FaultKind, FaultScript, FaultSettings, GatewayId, RunningSimulator, SimulatorConfig,
};
use serde_json::{json, Value};
use simulator_support::*;

async fn captured(sim: &RunningSimulator, id: &str) {
    create_payment(
        sim,
        json!({"gateway": "paymentz", "id": id, "amount": "50.00", "state": "captured"}),
    )
    .await;
}

fn script(sim: &RunningSimulator, kind: FaultKind, operation: &str) {
    sim.sim()
        .script_fault(FaultScript::new(kind, 1).operation(operation))
        .unwrap();
}

#[tokio::test]
async fn error_before_answers_500_and_applies_nothing() {
    let sim = start().await;
    let pz = Paymentz::sandbox(&sim);
    let token = pz.token().await;
    captured(&sim, "100").await;
    script(&sim, FaultKind::ErrorBefore, "RF");
    let (status, _) = pz
        .operation(&token, "RF", "100", Some("10.00"))
        .await
        .unwrap();
    assert_eq!(status, 500);
    assert!(sim.sim().ledger_for(GatewayId::Paymentz, "100").is_empty());
    assert_eq!(pz.inquiry(&token, "100").await["status"], "capturesuccess");
    let stats = sim.sim().stats();
    assert_eq!(stats.faults_of(FaultKind::ErrorBefore), 1);
    assert_eq!(stats.answers["paymentz"].by_http_status["500"], 1);
}

#[tokio::test]
async fn error_after_applies_then_answers_500() {
    let sim = start().await;
    let pz = Paymentz::sandbox(&sim);
    let token = pz.token().await;
    captured(&sim, "101").await;
    script(&sim, FaultKind::ErrorAfter, "refund");
    let (status, _) = pz
        .operation(&token, "RF", "101", Some("10.00"))
        .await
        .unwrap();
    assert_eq!(status, 500);
    let ledger = sim.sim().ledger_for(GatewayId::Paymentz, "101");
    assert_eq!(
        ledger.len(),
        1,
        "the refund happened although the answer was 500"
    );
    let inquiry = pz.inquiry(&token, "101").await;
    assert_eq!(
        (inquiry["status"].as_str(), inquiry["refundAmount"].as_str()),
        (Some("reversed"), Some("10.00"))
    );
}

#[tokio::test]
async fn rate_limit_answers_429_and_applies_nothing() {
    let sim = start().await;
    let px = Praxis::sandbox(&sim);
    sim.sim()
        .script_fault(
            FaultScript::new(FaultKind::RateLimit, 1)
                .gateway(GatewayId::Praxis)
                .operation("deposit-capture"),
        )
        .unwrap();
    let response = px
        .client
        .post(format!("{}/api/deposit-capture", px.base))
        .json(&px.request(10000002, now()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "1");
    assert!(sim.sim().ledger(&Default::default()).is_empty());
    // The script is used up: the retry goes through.
    assert_eq!(px.call("deposit-capture", 10000002).await["status"], 0);
    assert_eq!(sim.sim().ledger_for(GatewayId::Praxis, "10000002").len(), 1);
}

#[tokio::test]
async fn reset_before_drops_the_connection_and_applies_nothing() {
    let sim = start().await;
    let pz = Paymentz::sandbox(&sim);
    let token = pz.token().await;
    captured(&sim, "102").await;
    script(&sim, FaultKind::ResetBefore, "RF");
    let error = pz
        .operation(&token, "RF", "102", Some("10.00"))
        .await
        .unwrap_err();
    assert!(!error.is_timeout() && !error.is_connect(), "{error:?}");
    assert!(
        has_io_error(&error, ErrorKind::ConnectionReset),
        "a real RST: {error:?}"
    );
    assert!(sim.sim().ledger_for(GatewayId::Paymentz, "102").is_empty());
    assert_eq!(sim.sim().stats().faults_of(FaultKind::ResetBefore), 1);
    // The simulator keeps serving: a new connection works.
    assert_eq!(pz.inquiry(&token, "102").await["status"], "capturesuccess");
}

#[tokio::test]
async fn reset_after_applies_then_drops_the_connection() {
    let sim = start().await;
    let pz = Paymentz::sandbox(&sim);
    let token = pz.token().await;
    captured(&sim, "103").await;
    script(&sim, FaultKind::ResetAfter, "RF");
    let error = pz
        .operation(&token, "RF", "103", Some("10.00"))
        .await
        .unwrap_err();
    assert!(
        has_io_error(&error, ErrorKind::ConnectionReset),
        "{error:?}"
    );
    assert_eq!(sim.sim().ledger_for(GatewayId::Paymentz, "103").len(), 1);
    assert_eq!(pz.inquiry(&token, "103").await["refundAmount"], "10.00");
}

#[tokio::test]
async fn timeout_after_applies_and_never_answers() {
    let sim = start().await; // default hang: 60 s
    let pz = Paymentz::with_client(
        &sim,
        reqwest::Client::builder()
            .timeout(Duration::from_millis(300))
            .build()
            .unwrap(),
    );
    let token = pz.token().await;
    captured(&sim, "104").await;
    script(&sim, FaultKind::TimeoutAfter, "RF");
    let error = pz
        .operation(&token, "RF", "104", Some("10.00"))
        .await
        .unwrap_err();
    assert!(error.is_timeout(), "{error:?}");
    assert_eq!(sim.sim().ledger_for(GatewayId::Paymentz, "104").len(), 1);
    // Shutting down ends the hang instead of waiting a minute.
    let stopped = tokio::time::timeout(Duration::from_secs(10), sim.shutdown()).await;
    assert!(stopped.is_ok(), "shutdown waited for the hang");
}

#[tokio::test]
async fn timeout_after_drops_the_connection_after_the_hang() {
    let faults = FaultSettings {
        hang: Duration::from_millis(200),
        ..FaultSettings::default()
    };
    let sim = start_with(SimulatorConfig {
        faults,
        ..SimulatorConfig::sandbox()
    })
    .await;
    let pz = Paymentz::sandbox(&sim); // 10 s client timeout
    let token = pz.token().await;
    captured(&sim, "105").await;
    script(&sim, FaultKind::TimeoutAfter, "RF");
    let started = Instant::now();
    let error = pz
        .operation(&token, "RF", "105", Some("10.00"))
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert!(
        !error.is_timeout(),
        "closed by the server, not timed out: {error:?}"
    );
    assert!(waited >= Duration::from_millis(200), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    assert_eq!(sim.sim().ledger_for(GatewayId::Paymentz, "105").len(), 1);
}

#[tokio::test]
async fn latency_delays_operation_calls() {
    let faults = FaultSettings {
        latency: Duration::from_millis(150),
        ..FaultSettings::default()
    };
    let sim = start_with(SimulatorConfig {
        faults,
        ..SimulatorConfig::sandbox()
    })
    .await;
    let pz = Paymentz::sandbox(&sim);
    let token = pz.token().await;
    let started = Instant::now();
    pz.inquiry(&token, "12345678").await;
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn scripts_run_out_and_filter_by_payment() {
    let sim = start().await;
    let pz = Paymentz::sandbox(&sim);
    let token = pz.token().await;
    let (status, created) = admin(
        &sim,
        reqwest::Method::POST,
        "/admin/faults/script",
        Some(
            json!({"kind": "error_before", "count": 2, "gateway": "paymentz",
                    "operation": "IN", "payment_id": "12345678"}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["remaining"], 2);
    let status_of = |id: &'static str| {
        let pz = &pz;
        let token = token.clone();
        async move { pz.operation(&token, "IN", id, None).await.unwrap().0 }
    };
    assert_eq!(status_of("12345670").await, 200, "other payment");
    assert_eq!(status_of("12345678").await, 500);
    let (_, listed) = admin(&sim, reqwest::Method::GET, "/admin/faults/script", None).await;
    assert_eq!(listed[0]["remaining"], 1);
    assert_eq!(status_of("12345678").await, 500);
    assert_eq!(status_of("12345678").await, 200);
    let (_, listed) = admin(&sim, reqwest::Method::GET, "/admin/faults/script", None).await;
    assert_eq!(listed, json!([]));
}

#[tokio::test]
async fn auth_token_is_faulted_only_when_named() {
    let mut faults = FaultSettings::default();
    faults.rates.insert(FaultKind::ErrorBefore, 1.0);
    let sim = start_with(SimulatorConfig {
        faults,
        ..SimulatorConfig::sandbox()
    })
    .await;
    let pz = Paymentz::sandbox(&sim);
    let token = pz.token().await;
    assert_eq!(
        pz.operation(&token, "IN", "12345678", None)
            .await
            .unwrap()
            .0,
        500
    );
    script(&sim, FaultKind::RateLimit, "authToken");
    let (status, _) = pz
        .post_form(
            "/authToken",
            None,
            &[
                ("authentication.partnerId", "197"),
                ("merchant.username", "sandbox-merchant"),
                ("authentication.sKey", "sandbox-secure-key"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(status, 429);
}

/// HTTP statuses of 60 sequential inquiries under a seeded simulator.
async fn pattern(seed: u64) -> Vec<u16> {
    let mut faults = FaultSettings::default();
    faults.rates.insert(FaultKind::ErrorBefore, 0.3);
    faults.rates.insert(FaultKind::RateLimit, 0.2);
    let sim = start_with(SimulatorConfig {
        seed,
        faults,
        ..SimulatorConfig::sandbox()
    })
    .await;
    let pz = Paymentz::sandbox(&sim);
    let token = pz.token().await;
    let mut statuses = Vec::new();
    for _ in 0..60 {
        statuses.push(
            pz.operation(&token, "IN", "12345678", None)
                .await
                .unwrap()
                .0,
        );
    }
    let stats = sim.sim().stats();
    let count = |s: u16| statuses.iter().filter(|x| **x == s).count() as u64;
    assert_eq!(stats.faults_of(FaultKind::ErrorBefore), count(500));
    assert_eq!(stats.faults_of(FaultKind::RateLimit), count(429));
    sim.shutdown().await;
    statuses
}

#[tokio::test]
async fn probabilistic_faults_are_reproducible_by_seed() {
    let first = pattern(42).await;
    assert_eq!(first, pattern(42).await);
    assert_ne!(first, pattern(4242).await);
    assert!(
        first.contains(&500) && first.contains(&429) && first.contains(&200),
        "{first:?}"
    );
}

#[tokio::test]
async fn faults_are_set_through_the_admin_api() {
    let sim = start().await;
    let pz = Paymentz::sandbox(&sim);
    let token = pz.token().await;
    let (status, view) = admin(
        &sim,
        reqwest::Method::PUT,
        "/admin/faults",
        Some(json!({"rates": {"rate_limit": 1.0}, "latency_ms": 0})),
    )
    .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["settings"]["rates"]["rate_limit"], 1.0);
    assert_eq!(
        pz.operation(&token, "IN", "12345678", None)
            .await
            .unwrap()
            .0,
        429
    );

    let (status, refused) = admin(
        &sim,
        reqwest::Method::PUT,
        "/admin/faults",
        Some(json!({"rates": {"error_before": 0.7, "reset_after": 0.7}})),
    )
    .await;
    assert_eq!(status, 400, "{refused}");
    let (status, _) = admin(
        &sim,
        reqwest::Method::PUT,
        "/admin/faults",
        Some(json!({"rates": {"no_such_fault": 0.1}})),
    )
    .await;
    assert_eq!(status, 400);

    let (_, _) = admin(
        &sim,
        reqwest::Method::PUT,
        "/admin/faults",
        Some(json!({"rates": {}})),
    )
    .await;
    assert_eq!(
        pz.operation(&token, "IN", "12345678", None)
            .await
            .unwrap()
            .0,
        200
    );
}

#[tokio::test]
async fn the_ledger_proves_what_was_applied() {
    let sim = start().await;
    let pz = Paymentz::sandbox(&sim);
    let token = pz.token().await;
    captured(&sim, "200").await;
    captured(&sim, "201").await;
    pz.op(&token, "RF", "200", Some("1.00")).await;
    pz.op(&token, "RF", "201", Some("2.00")).await;
    pz.op(&token, "RF", "200", Some("3.00")).await;

    let (_, all) = admin(&sim, reqwest::Method::GET, "/admin/ledger", None).await;
    assert_eq!(all["count"], 3);
    let seqs: Vec<u64> = all["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3]);
    let (_, one) = admin(
        &sim,
        reqwest::Method::GET,
        "/admin/ledger?payment_id=200",
        None,
    )
    .await;
    let amounts: Vec<&str> = one["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["amount"].as_str().unwrap())
        .collect();
    assert_eq!(amounts, ["1.00", "3.00"]);
    let entry = &one["entries"][0];
    for field in [
        "gateway",
        "payment_id",
        "operation",
        "currency",
        "transaction_id",
        "at",
        "request_no",
    ] {
        assert!(entry.get(field).is_some(), "{field}: {entry}");
    }
    assert_eq!(entry["operation"], "refund");
    let (_, since) = admin(&sim, reqwest::Method::GET, "/admin/ledger?since=2", None).await;
    assert_eq!(since["count"], 1);
    let (status, _) = admin(&sim, reqwest::Method::GET, "/admin/ledger?bogus=1", None).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn admin_payments_reset_and_errors() {
    let sim = start().await;
    let created = create_payment(
        &sim,
        json!({"gateway": "paymentz", "amount": "10", "state": "refunded", "captured": "10.00", "refunded": "4.00"}),
    )
    .await;
    let id = created["id"].as_str().unwrap();
    assert_eq!(created["status"], "reversed");
    assert_eq!(created["amount"], "10.00");
    let (status, shown) = admin(
        &sim,
        reqwest::Method::GET,
        &format!("/admin/payments/paymentz/{id}"),
        None,
    )
    .await;
    assert_eq!((status, &shown), (200, &created));

    let (status, _) = admin(
        &sim,
        reqwest::Method::POST,
        "/admin/payments",
        Some(json!({"gateway": "paymentz", "id": id, "amount": "1.00"})),
    )
    .await;
    assert_eq!(status, 409);
    for bad in [
        json!({"gateway": "paymentz", "amount": 10.5}),
        json!({"gateway": "stripe", "amount": "1.00"}),
        json!({"gateway": "praxis", "amount": "1.00", "state": "refunded"}),
        json!({"gateway": "paymentz", "amount": "1.00", "colour": "red"}),
    ] {
        let (status, answer) = admin(
            &sim,
            reqwest::Method::POST,
            "/admin/payments",
            Some(bad.clone()),
        )
        .await;
        assert_eq!(status, 400, "{bad} -> {answer}");
        assert!(answer["error"].is_string());
    }
    let (status, _) = admin(
        &sim,
        reqwest::Method::GET,
        "/admin/payments/paymentz/424242",
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = admin(&sim, reqwest::Method::DELETE, "/admin/stats", None).await;
    assert_eq!(status, 405);
    let (status, _) = admin(&sim, reqwest::Method::GET, "/admin/nothing", None).await;
    assert_eq!(status, 404);

    let (status, _) = admin(&sim, reqwest::Method::POST, "/admin/reset", None).await;
    assert_eq!(status, 200);
    let (status, _) = admin(
        &sim,
        reqwest::Method::GET,
        &format!("/admin/payments/paymentz/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let stats: Value = admin(&sim, reqwest::Method::GET, "/admin/stats", None)
        .await
        .1;
    assert_eq!(stats["payments"]["paymentz"], 0);
    assert_eq!(stats["requests_total"], 0);
}

#[tokio::test]
async fn unknown_paths_and_methods() {
    let sim = start().await;
    let c = client();
    let response = c
        .post(format!("{}/api/refund", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let response = c
        .get(format!("{}/api/find-transaction", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(sim.sim().stats().requests_for("other", "not_found"), 1);
}

#[tokio::test]
async fn shutdown_closes_idle_keep_alive_connections() {
    let sim = start().await;
    let pz = Paymentz::sandbox(&sim);
    pz.token().await; // leaves an idle pooled connection open
    let stopped = tokio::time::timeout(Duration::from_secs(5), sim.shutdown()).await;
    assert!(stopped.is_ok());
    let after = pz.post_form("/authToken", None, &[]).await;
    assert!(
        after.is_err_and(|e| e.is_connect()),
        "nothing listens any more"
    );
}

/// A client that, like the worker, follows no redirect.
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[tokio::test]
async fn redirect_answers_307_with_its_location_and_applies_nothing() {
    let sim = start().await;
    let pz = Paymentz::with_client(&sim, no_redirects());
    let token = pz.token().await;
    captured(&sim, "110").await;
    script(&sim, FaultKind::Redirect, "RF");
    let response = no_redirects()
        .post(format!(
            "{}/transactionServices/REST/v1/payments/110",
            sim.base_url()
        ))
        .header("AuthToken", &token)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("paymentType=RF")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 307);
    assert_eq!(
        response.headers()["location"],
        "/moved/transactionServices/REST/v1/payments/110"
    );
    assert!(sim.sim().ledger_for(GatewayId::Paymentz, "110").is_empty());

    // The location is the admin's to choose.
    let (status, _) = admin(
        &sim,
        reqwest::Method::PUT,
        "/admin/answers",
        Some(json!({"redirect_location": "https://elsewhere.invalid/x"})),
    )
    .await;
    assert_eq!(status, 200);
    script(&sim, FaultKind::Redirect, "RF");
    let (status, _) = pz
        .operation(&token, "RF", "110", Some("10.00"))
        .await
        .unwrap();
    assert_eq!(status, 307);
    assert!(sim.sim().ledger_for(GatewayId::Paymentz, "110").is_empty());
    assert_eq!(sim.sim().stats().faults_of(FaultKind::Redirect), 2);
    let (status, _) = admin(
        &sim,
        reqwest::Method::PUT,
        "/admin/answers",
        Some(json!({"redirect_location": "bad\nvalue"})),
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn huge_answer_applies_then_streams_the_real_answer_padded_out() {
    let sim = start().await;
    let pz = Paymentz::sandbox(&sim);
    let token = pz.token().await;
    captured(&sim, "111").await;
    let size = 3 * 1024 * 1024 + 17;
    admin(
        &sim,
        reqwest::Method::PUT,
        "/admin/answers",
        Some(json!({"huge_answer_bytes": size})),
    )
    .await;
    script(&sim, FaultKind::HugeAnswer, "RF");
    let (status, body) = pz
        .operation(&token, "RF", "111", Some("10.00"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(body.len(), size);
    let value: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(value["result"]["code"], "00005", "a real answer inside");
    assert_eq!(sim.sim().ledger_for(GatewayId::Paymentz, "111").len(), 1);
}

#[tokio::test]
async fn bad_signature_spoils_only_a_praxis_answers_signature() {
    let sim = start().await;
    let px = Praxis::sandbox(&sim);
    create_payment(
        &sim,
        json!({"gateway": "praxis", "id": 752860, "amount": "25.00", "state": "authorized"}),
    )
    .await;
    script(&sim, FaultKind::BadSignature, "deposit-capture");
    let answer = px.call("deposit-capture", 752860).await;
    assert_eq!(answer["status"], 0, "{answer}");
    assert_eq!(answer["signature"].as_str().unwrap().len(), 96);
    assert!(!px.answer_verifies(&answer), "{answer}");
    assert_eq!(sim.sim().ledger_for(GatewayId::Praxis, "752860").len(), 1);
    // The next answer is signed as usual.
    assert!(px.answer_verifies(&px.call("find-transaction", 752860).await));

    // Paymentz answers carry no signature: nothing to spoil.
    let pz = Paymentz::sandbox(&sim);
    let token = pz.token().await;
    captured(&sim, "112").await;
    script(&sim, FaultKind::BadSignature, "RF");
    let (status, body) = pz
        .operation(&token, "RF", "112", Some("10.00"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let value: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(value["result"]["code"], "00005");
    assert!(value.get("signature").is_none());
}
