//! The simulated Praxis Agent API 1.1 over real HTTP: signatures both ways,
//! the timestamp window, capture/cancel state rules, find-transaction, and
//! the on-demand rule.

use crate::simulator_support;

use backoffice_worker::money::Amount;
use backoffice_worker::simulator::{Effect, GatewayId};
use serde_json::{json, Value};
use simulator_support::*;

async fn authorized(sim: &backoffice_worker::simulator::RunningSimulator, trace_id: i64) {
    create_payment(
        sim,
        json!({"gateway": "praxis", "id": trace_id, "amount": "25.00", "state": "authorized",
               "order_id": format!("order-{trace_id}")}),
    )
    .await;
}

#[tokio::test]
async fn find_transaction_answers_in_notification_form_signed() {
    let sim = start().await;
    let px = Praxis::sandbox(&sim);
    authorized(&sim, 752856).await;
    let answer = px.call("find-transaction", 752856).await;
    assert_eq!(answer["status"], 0, "{answer}");
    assert_eq!(answer["version"], "1.1");
    assert!(answer["description"].is_string());
    let t = &answer["transaction"];
    assert_eq!(t["transaction_type"], "authorize");
    assert_eq!(t["transaction_status"], "authorized");
    assert_eq!(t["trace_id"], 752856);
    assert_eq!(t["order_id"], "order-752856");
    assert_eq!(t["frontend"], "Integration TEST USD");
    assert_eq!(t["amount"], 2500);
    assert_eq!(t["charge_amount"], 2500);
    assert_eq!(t["currency"], "USD");
    assert!(t["transaction_id"].is_u64());
    assert!(px.answer_verifies(&answer), "answer signature: {answer}");
    // Spelled out for the three scalars, as clients compute it.
    let expected = sha384_hex(&format!(
        "{}0{}{}",
        answer["description"].as_str().unwrap(),
        "1.1",
        px.secret
    ));
    assert_eq!(answer["signature"], expected);
}

#[tokio::test]
async fn capture_only_an_authorized_transaction_in_full() {
    let sim = start().await;
    let px = Praxis::sandbox(&sim);
    authorized(&sim, 1001).await;
    let answer = px.call("deposit-capture", 1001).await;
    assert_eq!(answer["status"], 0, "{answer}");
    assert!(px.answer_verifies(&answer));
    assert_eq!(answer["transaction"]["transaction_status"], "approved");

    let again = px.call("deposit-capture", 1001).await;
    assert_eq!(again["status"], 1008, "{again}");
    assert!(px.answer_verifies(&again));
    let cancel = px.call("deposit-cancel", 1001).await;
    assert_eq!(cancel["status"], 1008, "no cancel after capture: {cancel}");

    let found = px.call("find-transaction", 1001).await;
    assert_eq!(found["transaction"]["transaction_status"], "approved");
    let ledger = sim.sim().ledger_for(GatewayId::Praxis, "1001");
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].operation, Effect::Capture);
    assert_eq!(ledger[0].amount, Amount::from_minor(2500));
    assert_eq!(
        Some(ledger[0].transaction_id.as_str()),
        found["transaction"]["transaction_id"]
            .as_u64()
            .map(|t| t.to_string())
            .as_deref()
    );
}

#[tokio::test]
async fn cancel_only_an_authorized_transaction() {
    let sim = start().await;
    let px = Praxis::sandbox(&sim);
    authorized(&sim, 1002).await;
    assert_eq!(px.call("deposit-cancel", 1002).await["status"], 0);
    assert_eq!(
        px.call("find-transaction", 1002).await["transaction"]["transaction_status"],
        "cancelled"
    );
    assert_eq!(px.call("deposit-capture", 1002).await["status"], 1008);
    assert_eq!(px.call("deposit-cancel", 1002).await["status"], 1008);
    let ops: Vec<Effect> = sim
        .sim()
        .ledger_for(GatewayId::Praxis, "1002")
        .iter()
        .map(|e| e.operation)
        .collect();
    assert_eq!(ops, [Effect::Cancel]);
}

#[tokio::test]
async fn a_wrong_signature_is_refused_and_nothing_applied() {
    let sim = start().await;
    let px = Praxis::sandbox(&sim);
    authorized(&sim, 1003).await;

    let mut tampered = px.request(1003, now());
    tampered.insert("trace_id".into(), json!(1004));
    let (status, answer) = px.post("deposit-capture", &tampered).await.unwrap();
    assert_eq!(
        (status, answer["status"].as_i64()),
        (200, Some(1004)),
        "{answer}"
    );
    assert!(px.answer_verifies(&answer));

    let mut upper = px.request(1003, now());
    let sig = upper["signature"].as_str().unwrap().to_uppercase();
    upper.insert("signature".into(), json!(sig));
    assert_eq!(
        px.post("deposit-capture", &upper).await.unwrap().1["status"],
        1004
    );

    let other_secret = Praxis {
        secret: "not-the-secret".into(),
        ..Praxis::sandbox(&sim)
    };
    let (_, answer) = other_secret
        .post("deposit-capture", &other_secret.request(1003, now()))
        .await
        .unwrap();
    assert_eq!(answer["status"], 1004);
    assert!(
        !other_secret.answer_verifies(&answer),
        "signed with the real secret"
    );
    assert!(sim.sim().ledger_for(GatewayId::Praxis, "1003").is_empty());
}

#[tokio::test]
async fn timestamps_outside_the_window_are_refused() {
    let sim = start().await;
    let px = Praxis::sandbox(&sim);
    authorized(&sim, 1005).await;
    for (offset, expected) in [(-120, 1005), (-61, 1005), (30, 1005), (-50, 0), (1, 0)] {
        let (_, answer) = px
            .post("find-transaction", &px.request(1005, now() + offset))
            .await
            .unwrap();
        assert_eq!(answer["status"], expected, "offset {offset}: {answer}");
    }
    let (_, expired) = px
        .post("deposit-capture", &px.request(1005, now() - 300))
        .await
        .unwrap();
    assert_eq!(expired["status"], 1005);
    assert!(sim.sim().ledger_for(GatewayId::Praxis, "1005").is_empty());
}

#[tokio::test]
async fn unknown_merchant_frontend_version_and_malformed_requests() {
    let sim = start().await;
    let px = Praxis::sandbox(&sim);

    let stranger = Praxis {
        merchant_id: "Somebody-Else".into(),
        ..Praxis::sandbox(&sim)
    };
    let (_, answer) = stranger
        .post("find-transaction", &stranger.request(12345678, now()))
        .await
        .unwrap();
    assert_eq!(answer["status"], 1003);
    assert!(
        answer.get("signature").is_none(),
        "no secret to sign with: {answer}"
    );

    let elsewhere = Praxis {
        frontend: "Integration TEST EUR".into(),
        ..Praxis::sandbox(&sim)
    };
    assert_eq!(
        elsewhere.call("find-transaction", 12345678).await["status"],
        1006
    );

    let mut v12 = px.request(12345678, now());
    v12.insert("version".into(), json!("1.2"));
    let signature = px.sign(&v12, false);
    v12.insert("signature".into(), json!(signature));
    assert_eq!(
        px.post("find-transaction", &v12).await.unwrap().1["status"],
        1002
    );

    let mut text_trace = px.request(12345678, now());
    text_trace.insert("trace_id".into(), json!("12345678"));
    let signature = px.sign(&text_trace, false);
    text_trace.insert("signature".into(), json!(signature));
    assert_eq!(
        px.post("find-transaction", &text_trace).await.unwrap().1["status"],
        1001
    );

    let response = px
        .client
        .post(format!("{}/api/find-transaction", px.base))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["status"], 1001);
}

#[tokio::test]
async fn not_found_and_on_demand() {
    let sim = start().await;
    let px = Praxis::sandbox(&sim);
    assert_eq!(px.call("find-transaction", 9999999).await["status"], 1007);

    let found = px.call("find-transaction", 10000001).await;
    assert_eq!(found["status"], 0, "{found}");
    assert_eq!(found["transaction"]["transaction_status"], "authorized");
    assert_eq!(found["transaction"]["amount"], 100000);
    assert_eq!(found["transaction"]["currency"], "USD");
    assert_eq!(px.call("deposit-capture", 10000001).await["status"], 0);
    assert_eq!(
        sim.sim()
            .payment(GatewayId::Praxis, "10000001")
            .unwrap()
            .status,
        "approved"
    );
    // On-demand payments belong to the merchant that touched them first.
    assert_eq!(
        sim.sim()
            .payment(GatewayId::Praxis, "10000001")
            .unwrap()
            .owner
            .as_deref(),
        Some("Test-Integration-Merchant")
    );
}

#[tokio::test]
async fn find_transaction_can_answer_with_the_transaction_flat() {
    let sim = start().await;
    let px = Praxis::sandbox(&sim);
    authorized(&sim, 752857).await;
    let nested = px.call("find-transaction", 752857).await;
    let (status, view) = admin(
        &sim,
        reqwest::Method::PUT,
        "/admin/answers",
        Some(json!({"praxis_transaction": "flat"})),
    )
    .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["praxis_transaction"], "flat");
    let flat = px.call("find-transaction", 752857).await;
    assert!(flat.get("transaction").is_none(), "{flat}");
    assert_eq!(flat["status"], 0);
    // The same transaction, its fields at the top level.
    for (key, value) in nested["transaction"].as_object().unwrap() {
        assert_eq!(&flat[key.as_str()], value, "{key}");
    }
    // Signed over every top-level scalar, the transaction's included.
    assert!(px.answer_verifies(&flat), "{flat}");
    // A capture's answer carries it flat too, and reset restores the default.
    let captured = px.call("deposit-capture", 752857).await;
    assert_eq!(captured["transaction_status"], "approved", "{captured}");
    admin(&sim, reqwest::Method::POST, "/admin/reset", None).await;
    let (_, view) = admin(&sim, reqwest::Method::GET, "/admin/answers", None).await;
    assert_eq!(view["praxis_transaction"], "nested");
    let (status, error) = admin(
        &sim,
        reqwest::Method::PUT,
        "/admin/answers",
        Some(json!({"praxis_transaction": "sideways"})),
    )
    .await;
    assert_eq!(status, 400, "{error}");
}
