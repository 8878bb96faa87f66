//! The simulated Paymentz over real HTTP: tokens, checksums, each operation
//! and its state rules, inquiries, the transaction list and the on-demand rule.

use crate::simulator_support;

use std::time::Duration;

use backoffice_worker::money::Amount;
use backoffice_worker::simulator::{Effect, GatewayId, SimulatorConfig};
use serde_json::{json, Value};
use simulator_support::*;

async fn paymentz_payment(
    sim: &backoffice_worker::simulator::RunningSimulator,
    id: &str,
    amount: &str,
    state: &str,
) {
    create_payment(
        sim,
        json!({"gateway": "paymentz", "id": id, "amount": amount, "state": state}),
    )
    .await;
}

#[tokio::test]
async fn auth_token_is_issued_for_the_right_key_only() {
    let sim = start().await;
    let pz = Paymentz::sandbox(&sim);
    let answer = pz.token_answer(&pz.key).await;
    assert_eq!(answer["result"]["code"], "200");
    assert_eq!(
        answer["result"]["description"],
        "Token generated successfully"
    );
    assert_eq!(answer["memberId"], "11359");
    assert_eq!(answer["partnerId"], "197");
    assert_eq!(answer["LoginName"], "sandbox-merchant");
    assert_eq!(answer["AuthToken"].as_str().unwrap().split('.').count(), 3);
    let ts = answer["timestamp"].as_str().unwrap();
    assert_eq!(ts.len(), "yyyy-MM-dd HH:mm:ss".len(), "{ts}");

    let refused = pz.token_answer("wrong-key").await;
    assert_eq!(refused["result"]["code"], "403");
    assert!(refused.get("AuthToken").is_none());
    // The key never shows up in an answer.
    assert!(!answer.to_string().contains("sandbox-secure-key"));
}

#[tokio::test]
async fn calls_without_a_live_token_get_401() {
    let sim = start().await;
    let pz = Paymentz::sandbox(&sim);
    paymentz_payment(&sim, "5001", "50.00", "authorized").await;

    let unknown = pz.inquiry("not-a-token", "5001").await;
    assert_eq!(unknown["result"]["code"], "401");

    let token = pz.token().await;
    assert_eq!(pz.inquiry(&token, "5001").await["result"]["code"], "00026");
    let (status, expired) = admin(&sim, reqwest::Method::POST, "/admin/tokens/expire", None).await;
    assert_eq!((status, expired["expired"].as_u64()), (200, Some(1)));
    assert_eq!(pz.inquiry(&token, "5001").await["result"]["code"], "401");
    // Refused before anything was looked at: a capture is not applied either.
    let capture = pz.op(&token, "CP", "5001", Some("10.00")).await;
    assert_eq!(capture["result"]["code"], "401");
    assert!(sim.sim().ledger_for(GatewayId::Paymentz, "5001").is_empty());

    let fresh = pz.token().await;
    assert_eq!(pz.inquiry(&fresh, "5001").await["result"]["code"], "00026");
}

#[tokio::test]
async fn tokens_expire_after_their_lifetime() {
    let sim = start_with(SimulatorConfig {
        token_ttl: Duration::ZERO,
        ..SimulatorConfig::sandbox()
    })
    .await;
    let pz = Paymentz::sandbox(&sim);
    let token = pz.token().await;
    assert_eq!(
        pz.inquiry(&token, "12345678").await["result"]["code"],
        "401"
    );
}

#[tokio::test]
async fn partial_capture_then_inquiry() {
    let sim = start().await;
    let pz = Paymentz::sandbox(&sim);
    let token = pz.token().await;
    paymentz_payment(&sim, "54279", "50.00", "authorized").await;

    let answer = pz.op(&token, "CP", "54279", Some("20.00")).await;
    assert_eq!(answer["result"]["code"], "00004", "{answer}");
    let reference = answer["paymentId"].as_str().unwrap().to_string();
    assert_ne!(reference, "54279", "each operation gets a new paymentId");
    assert!(answer["descriptor"].is_string() && answer["timestamp"].is_string());

    let inquiry = pz.inquiry(&token, "54279").await;
    assert_eq!(inquiry["result"]["code"], "00026");
    assert_eq!(inquiry["result"]["description"], "Record found");
    assert_eq!(inquiry["paymentId"], "54279");
    assert_eq!(inquiry["status"], "capturesuccess");
    assert_eq!(inquiry["transactionStatus"], "Y");
    assert_eq!(inquiry["amount"], "50.00");
    assert_eq!(inquiry["currency"], "EUR");
    assert!(inquiry.get("refundAmount").is_none());
    for field in [
        "merchantTransactionId",
        "descriptor",
        "remark",
        "bankReferenceId",
        "card",
    ] {
        assert!(inquiry.get(field).is_some(), "{field} missing: {inquiry}");
    }

    let ledger = sim.sim().ledger_for(GatewayId::Paymentz, "54279");
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].operation, Effect::Capture);
    assert_eq!(ledger[0].amount, Amount::from_minor(2000));
    assert_eq!(ledger[0].transaction_id, reference);
    assert_eq!(ledger[0].status_after, "capturesuccess");
}

#[tokio::test]
async fn capture_is_refused_above_the_authorisation_and_out_of_state() {
    let sim = start().await;
    let pz = Paymentz::sandbox(&sim);
    let token = pz.token().await;
    paymentz_payment(&sim, "6001", "50.00", "authorized").await;

    let over = pz.op(&token, "CP", "6001", Some("50.01")).await;
    assert_eq!(over["result"]["code"], "10907", "{over}");
    assert_eq!(over["paymentId"], "-");

    let cancel = pz.op(&token, "RV", "6001", None).await;
    assert_eq!(cancel["result"]["code"], "00006", "{cancel}");
    assert_eq!(pz.inquiry(&token, "6001").await["status"], "authcancelled");
    assert_eq!(pz.inquiry(&token, "6001").await["transactionStatus"], "C");

    let capture = pz.op(&token, "CP", "6001", Some("10.00")).await;
    assert_eq!(
        capture["result"]["code"], "10005",
        "capture on a cancelled payment: {capture}"
    );
    let again = pz.op(&token, "RV", "6001", None).await;
    assert_eq!(again["result"]["code"], "10007", "cancel twice: {again}");

    let ledger = sim.sim().ledger_for(GatewayId::Paymentz, "6001");
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].operation, Effect::Cancel);
    assert_eq!(ledger[0].amount, Amount::from_minor(5000));
}

#[tokio::test]
async fn cancel_and_refund_follow_their_state_rules() {
    let sim = start().await;
    let pz = Paymentz::sandbox(&sim);
    let token = pz.token().await;
    paymentz_payment(&sim, "6101", "50.00", "captured").await;
    paymentz_payment(&sim, "6102", "50.00", "authorized").await;

    let cancel = pz.op(&token, "RV", "6101", None).await;
    assert_eq!(cancel["result"]["code"], "10007", "no cancel after capture");
    let refund = pz.op(&token, "RF", "6102", Some("1.00")).await;
    assert_eq!(
        refund["result"]["code"], "10006",
        "no refund before capture"
    );
    assert!(sim.sim().ledger(&Default::default()).is_empty());
}

#[tokio::test]
async fn partial_refunds_up_to_the_captured_amount() {
    let sim = start().await;
    let pz = Paymentz::sandbox(&sim);
    let token = pz.token().await;
    paymentz_payment(&sim, "7001", "50.00", "authorized").await;
    assert_eq!(
        pz.op(&token, "CP", "7001", Some("30.00")).await["result"]["code"],
        "00004"
    );

    // The limit is the captured 30.00, not the authorised 50.00.
    let over = pz.op(&token, "RF", "7001", Some("30.01")).await;
    assert_eq!(over["result"]["code"], "10906", "{over}");

    let first = pz.op(&token, "RF", "7001", Some("10.00")).await;
    assert_eq!(first["result"]["code"], "00005", "{first}");
    let inquiry = pz.inquiry(&token, "7001").await;
    assert_eq!(inquiry["status"], "reversed");
    assert_eq!(inquiry["refundAmount"], "10.00");

    assert_eq!(
        pz.op(&token, "RF", "7001", Some("15.00")).await["result"]["code"],
        "00005"
    );
    let over = pz.op(&token, "RF", "7001", Some("5.01")).await;
    assert_eq!(over["result"]["code"], "10906", "only 5.00 left: {over}");
    assert_eq!(
        pz.op(&token, "RF", "7001", Some("5.00")).await["result"]["code"],
        "00005"
    );
    assert_eq!(
        pz.op(&token, "RF", "7001", Some("0.01")).await["result"]["code"],
        "10906"
    );

    let inquiry = pz.inquiry(&token, "7001").await;
    assert_eq!(inquiry["refundAmount"], "30.00");
    assert_eq!(inquiry["amount"], "50.00");
    let refunds: Vec<u64> = sim
        .sim()
        .ledger_for(GatewayId::Paymentz, "7001")
        .iter()
        .filter(|e| e.operation == Effect::Refund)
        .map(|e| e.amount.minor())
        .collect();
    assert_eq!(refunds, [1000, 1500, 500]);
}

#[tokio::test]
async fn concurrent_refunds_never_exceed_the_captured_amount() {
    let sim = start().await;
    let pz = std::sync::Arc::new(Paymentz::sandbox(&sim));
    let token = pz.token().await;
    paymentz_payment(&sim, "7101", "100.00", "captured").await;
    let mut tasks = Vec::new();
    for _ in 0..25 {
        let pz = pz.clone();
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            pz.op(&token, "RF", "7101", Some("10.00")).await["result"]["code"]
                .as_str()
                .unwrap()
                .to_string()
        }));
    }
    let mut codes = Vec::new();
    for task in tasks {
        codes.push(task.await.unwrap());
    }
    assert_eq!(
        codes.iter().filter(|c| *c == "00005").count(),
        10,
        "{codes:?}"
    );
    assert_eq!(
        codes.iter().filter(|c| *c == "10906").count(),
        15,
        "{codes:?}"
    );
    let ledger = sim.sim().ledger_for(GatewayId::Paymentz, "7101");
    let total: u64 = ledger.iter().map(|e| e.amount.minor()).sum();
    assert_eq!((ledger.len(), total), (10, 10_000));
}

#[tokio::test]
async fn a_wrong_checksum_is_refused_and_nothing_applied() {
    let sim = start().await;
    let pz = Paymentz::sandbox(&sim);
    let token = pz.token().await;
    paymentz_payment(&sim, "8001", "50.00", "captured").await;

    let send = |checksum: String| {
        let pz = &pz;
        let token = token.clone();
        async move {
            let (_, body) = pz
                .post_form(
                    "/payments/8001",
                    Some(&token),
                    &[
                        ("authentication.memberId", "11359"),
                        ("authentication.checksum", &checksum),
                        ("paymentType", "RF"),
                        ("amount", "10.00"),
                    ],
                )
                .await
                .unwrap();
            serde_json::from_str::<Value>(&body).unwrap()
        }
    };
    let right = pz.checksum(&["8001", "10.00"]);
    // Upper case is refused: the comparison is case-sensitive.
    assert_eq!(send(right.to_uppercase()).await["result"]["code"], "10901");
    // Signed over another amount than the one sent.
    assert_eq!(
        send(pz.checksum(&["8001", "10.0"])).await["result"]["code"],
        "10901"
    );
    // Signed with another key.
    assert_eq!(
        send(md5_hex("11359|other-key|8001|10.00")).await["result"]["code"],
        "10901"
    );
    assert!(sim.sim().ledger_for(GatewayId::Paymentz, "8001").is_empty());
    assert_eq!(send(right).await["result"]["code"], "00005");
}

#[tokio::test]
async fn amounts_must_have_exactly_two_decimals() {
    let sim = start().await;
    let pz = Paymentz::sandbox(&sim);
    let token = pz.token().await;
    paymentz_payment(&sim, "8101", "50.00", "authorized").await;
    for bad in ["10", "10.5", "10.500", "0.00", "-1.00", "12345678901.00"] {
        // The checksum is right for what is sent: only the format is wrong.
        let answer = pz.op(&token, "CP", "8101", Some(bad)).await;
        assert_eq!(answer["result"]["code"], "10902", "{bad}: {answer}");
    }
    assert!(sim.sim().ledger_for(GatewayId::Paymentz, "8101").is_empty());
}

#[tokio::test]
async fn the_member_must_match_the_token() {
    let sim = start().await;
    let pz = Paymentz::sandbox(&sim);
    let token = pz.token().await;
    let other = Paymentz {
        member_id: "99999".into(),
        ..Paymentz::sandbox(&sim)
    };
    let answer = other.inquiry(&token, "12345678").await;
    assert_eq!(answer["result"]["code"], "10905", "{answer}");
}

#[tokio::test]
async fn unknown_payments_are_not_found() {
    let sim = start().await;
    let pz = Paymentz::sandbox(&sim);
    let token = pz.token().await;
    let capture = pz.op(&token, "CP", "1234567", Some("1.00")).await;
    assert_eq!(capture["result"]["code"], "10026");
    assert_eq!(capture["paymentId"], "-");
    let inquiry = pz.inquiry(&token, "1234567").await;
    assert_eq!(
        inquiry,
        json!({"result": {"code": "10026", "description": "Record not found"}})
    );
    let bad_id = pz.inquiry(&token, "12ab").await;
    assert_eq!(bad_id["result"]["code"], "10904");
}

#[tokio::test]
async fn inquiry_by_merchant_transaction_id() {
    let sim = start().await;
    let pz = Paymentz::sandbox(&sim);
    let token = pz.token().await;
    create_payment(
        &sim,
        json!({"gateway": "paymentz", "id": "9001", "amount": "12.34",
               "reference": "ORDER-1001", "state": "authorized"}),
    )
    .await;
    let inquire = |checksum: String| {
        let pz = &pz;
        let token = token.clone();
        async move {
            let (_, body) = pz
                .post_form(
                    "/payments/ORDER-1001",
                    Some(&token),
                    &[
                        ("authentication.memberId", "11359"),
                        ("authentication.checksum", &checksum),
                        ("paymentType", "IN"),
                        ("idType", "MID"),
                    ],
                )
                .await
                .unwrap();
            serde_json::from_str::<Value>(&body).unwrap()
        }
    };
    let found = inquire(pz.checksum(&["ORDER-1001"])).await;
    assert_eq!(found["result"]["code"], "00026", "{found}");
    assert_eq!(found["paymentId"], "9001");
    assert_eq!(found["merchantTransactionId"], "ORDER-1001");
    assert_eq!(found["amount"], "12.34");
    assert_eq!(
        inquire(pz.checksum(&["9001"])).await["result"]["code"],
        "10901"
    );
}

#[tokio::test]
async fn fields_in_the_query_string_are_ignored() {
    let sim = start().await;
    let pz = Paymentz::sandbox(&sim);
    let token = pz.token().await;
    let checksum = pz.checksum(&["12345678"]);
    let query = serde_urlencoded::to_string([
        ("authentication.memberId", "11359"),
        ("authentication.checksum", checksum.as_str()),
        ("paymentType", "IN"),
    ])
    .unwrap();
    let answer: Value = pz
        .client
        .post(format!("{}/payments/12345678?{query}", pz.base))
        .header("AuthToken", &token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["result"]["code"], "10903", "{answer}");
}

#[tokio::test]
async fn payments_appear_on_demand_by_the_documented_rule() {
    let sim = start().await;
    let pz = Paymentz::sandbox(&sim);
    let token = pz.token().await;
    let even = pz.inquiry(&token, "12345678").await;
    assert_eq!(even["status"], "authsuccessful");
    assert_eq!(even["amount"], "1000.00");
    assert_eq!(even["currency"], "EUR");
    let odd = pz.inquiry(&token, "12345679").await;
    assert_eq!(odd["status"], "capturesuccess");
    // A fully captured on-demand payment refunds up to its whole amount.
    assert_eq!(
        pz.op(&token, "RF", "12345679", Some("1000.00")).await["result"]["code"],
        "00005"
    );
    assert_eq!(
        pz.op(&token, "RF", "12345679", Some("0.01")).await["result"]["code"],
        "10906"
    );
    // First touch by a capture works too.
    assert_eq!(
        pz.op(&token, "CP", "22222222", Some("999.99")).await["result"]["code"],
        "00004"
    );

    let (status, _) = admin(
        &sim,
        reqwest::Method::PUT,
        "/admin/auto-payments",
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        pz.inquiry(&token, "33333334").await["result"]["code"],
        "10026"
    );
    // Known ones stay.
    assert_eq!(
        pz.inquiry(&token, "12345678").await["result"]["code"],
        "00026"
    );
}

#[tokio::test]
async fn on_demand_can_be_off_from_the_start() {
    let sim = start_with(SimulatorConfig {
        auto_payments: false,
        ..SimulatorConfig::sandbox()
    })
    .await;
    let pz = Paymentz::sandbox(&sim);
    let token = pz.token().await;
    assert_eq!(
        pz.inquiry(&token, "12345678").await["result"]["code"],
        "10026"
    );
}

async fn list(pz: &Paymentz, token: &str, fields: &[(&str, &str)]) -> Value {
    let checksum = pz.checksum(&[]);
    let mut all = vec![
        ("authentication.memberId", "11359"),
        ("authentication.checksum", checksum.as_str()),
    ];
    all.extend_from_slice(fields);
    let (status, body) = pz
        .post_form("/getTransactionList", Some(token), &all)
        .await
        .unwrap();
    assert_eq!(status, 200);
    serde_json::from_str(&body).unwrap()
}

#[tokio::test]
async fn transaction_list_by_date_with_pages() {
    let sim = start().await;
    let pz = Paymentz::sandbox(&sim);
    let token = pz.token().await;
    for (id, day) in [
        ("101", "2026-11-01"),
        ("102", "2026-11-02"),
        ("103", "2026-11-02"),
        ("104", "2026-11-05"),
    ] {
        create_payment(
            &sim,
            json!({"gateway": "paymentz", "id": id, "amount": "10.00",
                   "state": "captured", "created_at": day}),
        )
        .await;
    }
    let page = |from: &'static str, to: &'static str, no: &'static str, records: &'static str| {
        vec![
            ("pagination.fromdate", from),
            ("pagination.todate", to),
            ("pagination.pageno", no),
            ("pagination.records", records),
        ]
    };
    let answer = list(&pz, &token, &page("02/11/2026", "05/11/2026", "1", "10")).await;
    assert_eq!(answer["result"]["code"], "00029", "{answer}");
    let ids: Vec<&str> = answer["transaction"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["systemPaymentId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["102", "103", "104"]);
    let row = &answer["transaction"][0];
    assert_eq!(row["transactionStatus"], "capturesuccess");
    assert_eq!(row["amount"], "10.00");
    assert_eq!(row["captureamount"], "10.00");
    assert_eq!(row["refundamount"], "0.00");
    assert_eq!(row["currency"], "EUR");
    assert!(row["merchantTransactionId"].is_string() && row["date"].is_string());

    let second = list(&pz, &token, &page("01/11/2026", "30/11/2026", "2", "3")).await;
    let ids: Vec<&str> = second["transaction"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["systemPaymentId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["104"]);

    assert_eq!(
        list(&pz, &token, &page("01/12/2026", "31/12/2026", "1", "10")).await,
        json!({})
    );
    assert_eq!(
        list(&pz, &token, &page("01/11/2026", "30/11/2026", "9", "10")).await,
        json!({})
    );

    let code = |v: Value| v["result"]["code"].as_str().unwrap().to_string();
    assert_eq!(
        code(list(&pz, &token, &page("2026-11-01", "30/11/2026", "1", "10")).await),
        "30086"
    );
    assert_eq!(
        code(list(&pz, &token, &page("01/11/2026", "", "1", "10")).await),
        "30087"
    );
    assert_eq!(
        code(list(&pz, &token, &page("30/11/2026", "01/11/2026", "1", "10")).await),
        "30088"
    );
    assert_eq!(
        code(list(&pz, &token, &page("01/11/2026", "30/11/2026", "0", "10")).await),
        "30089"
    );
    assert_eq!(
        code(list(&pz, &token, &page("01/11/2026", "30/11/2026", "1", "x")).await),
        "30090"
    );
    assert_eq!(
        code(list(&pz, &token, &page("01/11/2026", "30/11/2026", "1", "1001")).await),
        "30091"
    );

    let wrong_checksum = pz
        .post_form(
            "/getTransactionList",
            Some(&token),
            &[
                ("authentication.memberId", "11359"),
                ("authentication.checksum", &md5_hex("11359|nope")),
                ("pagination.fromdate", "01/11/2026"),
                ("pagination.todate", "30/11/2026"),
                ("pagination.pageno", "1"),
                ("pagination.records", "10"),
            ],
        )
        .await
        .unwrap()
        .1;
    assert!(wrong_checksum.contains("10901"), "{wrong_checksum}");
}

#[tokio::test]
async fn stats_count_requests_and_answers() {
    let sim = start().await;
    let pz = Paymentz::sandbox(&sim);
    let token = pz.token().await;
    pz.inquiry(&token, "12345678").await;
    pz.op(&token, "CP", "12345678", Some("5.00")).await;
    pz.op(&token, "CP", "12345678", Some("5.00")).await;
    let stats = sim.sim().stats();
    assert_eq!(stats.requests_for("paymentz", "authToken"), 1);
    assert_eq!(stats.requests_for("paymentz", "IN"), 1);
    assert_eq!(stats.requests_for("paymentz", "CP"), 2);
    assert_eq!(stats.requests_total, 4);
    let answers = &stats.answers["paymentz"];
    assert_eq!(answers.by_http_status["200"], 4);
    assert_eq!(answers.by_code["00004"], 1);
    assert_eq!(answers.by_code["10005"], 1);
    assert_eq!(stats.applied_for("paymentz", "capture"), 1);
    assert_eq!(stats.ledger_entries, 1);

    // The admin API shows the same numbers.
    let (_, over_http) = admin(&sim, reqwest::Method::GET, "/admin/stats", None).await;
    assert_eq!(over_http["requests"]["paymentz"]["CP"], 2);
    assert_eq!(over_http["answers"]["paymentz"]["by_code"]["00004"], 1);
}
