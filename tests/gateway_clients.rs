//! The gateway clients as the worker builds them (config text, `Config::parse`,
//! `Config::clients`), run against the in-process simulator over real HTTP.
//!
//! Every test checks both sides: the [`Answer`] the client reports and what the
//! simulator actually did (payment state, ledger of side effects, request
//! counters). Each test starts its own simulator on an ephemeral port, so the
//! tests are independent and run in parallel.
//!
//! The Praxis timestamp window (a hand-signed stale request refused with 1005)
//! is covered by `tests/simulator_praxis.rs`; here the client's side of it is
//! checked: every request carries a fresh timestamp.

use crate::gateway_support;

use std::time::Duration;

use backoffice_worker::gateways::exchange::REDACTED;
use backoffice_worker::gateways::{
    Answer, Classification, Exchange, GatewayCall, GatewayError, ListRequest, OperationRequest,
    PaymentOperation, PaymentSnapshot, PaymentState,
};
use backoffice_worker::money::Amount;
use backoffice_worker::simulator::{
    Effect, FaultKind, FaultScript, FaultSettingsView, GatewayId, LedgerEntry, LedgerQuery,
    NewPayment, RunningSimulator, Simulator, SimulatorConfig,
};
use gateway_support::*;
use serde_json::{json, Value};
use time::macros::date;

fn amount(text: &str) -> Amount {
    Amount::parse(text).expect("test amounts are valid")
}

fn request(operation: PaymentOperation, payment_id: &str) -> OperationRequest {
    OperationRequest::new(operation, payment_id)
}

fn money(operation: PaymentOperation, payment_id: &str, value: &str) -> OperationRequest {
    OperationRequest::new(operation, payment_id).with_amount(amount(value))
}

fn list(from: time::Date, to: time::Date) -> OperationRequest {
    OperationRequest::List(ListRequest::new(from, to).unwrap())
}

/// A Paymentz payment created through the simulator's in-process admin API.
fn paymentz_payment(sim: &RunningSimulator, new: NewPayment) -> String {
    sim.sim().create_payment(new).expect("payment created").id
}

fn authorized(sim: &RunningSimulator, value: &str) -> String {
    paymentz_payment(sim, NewPayment::new(GatewayId::Paymentz, amount(value)))
}

fn captured(sim: &RunningSimulator, value: &str) -> String {
    paymentz_payment(
        sim,
        NewPayment::new(GatewayId::Paymentz, amount(value)).state("captured"),
    )
}

fn praxis_authorized(sim: &RunningSimulator, value: &str) -> String {
    sim.sim()
        .create_payment(NewPayment::new(GatewayId::Praxis, amount(value)))
        .expect("payment created")
        .id
}

fn ledger(sim: &RunningSimulator, gateway: GatewayId, id: &str) -> Vec<LedgerEntry> {
    sim.sim().ledger_for(gateway, id)
}

fn whole_ledger(sim: &RunningSimulator) -> Vec<LedgerEntry> {
    sim.sim().ledger(&LedgerQuery::default())
}

fn purposes(call: &GatewayCall) -> Vec<&str> {
    call.exchanges.iter().map(|e| e.purpose.as_str()).collect()
}

fn last(call: &GatewayCall) -> &Exchange {
    call.exchanges.last().expect("at least one exchange")
}

/// The parts of an answer a result event carries, for one-line comparisons.
fn summary(answer: &Answer) -> (Classification, Option<&str>, Option<&str>, Option<&str>) {
    (
        answer.classification,
        answer.gateway_status.as_deref(),
        answer.gateway_code.as_deref(),
        answer.description.as_deref(),
    )
}

fn secrets() -> Vec<String> {
    Credentials::sandbox().secrets()
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

// ---------------------------------------------------------------- Paymentz

#[tokio::test]
async fn paymentz_partial_capture_then_refunds_bounded_by_the_captured_amount() {
    let sim = start().await;
    let accounts = accounts_from(&config_text(&sim.base_url()));
    let pz = client(&accounts, "paymentz");
    let id = authorized(&sim, "50.00");

    let call = pz
        .execute(&money(PaymentOperation::Capture, &id, "30.00"))
        .await;
    assert_no_secrets(&call, &secrets());
    assert_eq!(
        summary(&call.answer),
        (
            Classification::Succeeded,
            Some("capturesuccess"),
            Some("00004"),
            Some("Capture successful")
        ),
        "{call:?}"
    );
    assert!(call.answer.error.is_none());
    let entries = ledger(&sim, GatewayId::Paymentz, &id);
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].operation, Effect::Capture);
    assert_eq!(entries[0].amount, amount("30.00"));
    assert_eq!(entries[0].status_after, "capturesuccess");
    assert_eq!(
        call.answer.reference.as_deref(),
        Some(entries[0].transaction_id.as_str()),
        "the reference is the paymentId the gateway gave the capture"
    );
    let payment = sim.sim().payment(GatewayId::Paymentz, &id).unwrap();
    assert_eq!(payment.status, "capturesuccess");
    assert_eq!(payment.captured, amount("30.00"));

    // The first call fetched a token, then sent the signed CP form.
    assert_eq!(purposes(&call), ["authToken", "CP"]);
    let token = &call.exchanges[0];
    assert_eq!(token.request["authentication.sKey"], REDACTED);
    assert_eq!(token.request["authentication.partnerId"], PARTNER_ID);
    assert_eq!(token.request["merchant.username"], USERNAME);
    assert_eq!(token.signature_sent, None);
    assert_eq!(token.classification, Classification::Succeeded);
    let token_body = token.response_body.as_deref().unwrap();
    assert!(
        token_body.contains(&format!("\"AuthToken\":\"{REDACTED}\"")),
        "{token_body}"
    );
    let cp = &call.exchanges[1];
    let expected = paymentz_checksum(&[&id, "30.00"]);
    assert_eq!(cp.signature_sent.as_deref(), Some(expected.as_str()));
    assert_eq!(cp.request["authentication.checksum"], expected.as_str());
    assert_eq!(cp.request["authentication.memberId"], MEMBER_ID);
    assert_eq!(cp.request["paymentType"], "CP");
    assert_eq!(cp.request["amount"], "30.00");
    assert_eq!(cp.method, "POST");
    assert!(
        cp.url
            .ends_with(&format!("/transactionServices/REST/v1/payments/{id}")),
        "{}",
        cp.url
    );
    assert_eq!(cp.http_status, Some(200));
    assert_eq!(cp.signature_verified, None, "Paymentz answers are unsigned");
    assert_eq!(cp.classification, Classification::Succeeded);

    // Refunds are bounded by what was captured (30.00), not authorised (50.00).
    let over = pz
        .execute(&money(PaymentOperation::Refund, &id, "30.01"))
        .await;
    assert_no_secrets(&over, &secrets());
    assert_eq!(
        summary(&over.answer),
        (
            Classification::Declined,
            None,
            Some("10906"),
            Some("Refund amount exceeds the refundable amount")
        )
    );
    assert_eq!(over.answer.reference, None);
    assert_eq!(ledger(&sim, GatewayId::Paymentz, &id).len(), 1);

    let full = pz
        .execute(&money(PaymentOperation::Refund, &id, "30.00"))
        .await;
    assert_no_secrets(&full, &secrets());
    assert_eq!(full.answer.classification, Classification::Succeeded);
    assert_eq!(purposes(&full), ["RF"], "the cached token is reused");
    let entries = ledger(&sim, GatewayId::Paymentz, &id);
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1].operation, Effect::Refund);
    assert_eq!(entries[1].amount, amount("30.00"));

    // A second capture finds the payment no longer authorised.
    let again = pz
        .execute(&money(PaymentOperation::Capture, &id, "10.00"))
        .await;
    assert_eq!(again.answer.classification, Classification::Declined);
    assert_eq!(again.answer.gateway_code.as_deref(), Some("10005"));
    assert_eq!(ledger(&sim, GatewayId::Paymentz, &id).len(), 2);
    assert_eq!(
        sim.sim().stats().requests_for("paymentz", "authToken"),
        1,
        "one token for the whole session"
    );
}

#[tokio::test]
async fn paymentz_refunds_repeat_until_the_captured_amount_is_used_up() {
    let sim = start().await;
    let accounts = accounts_from(&config_text(&sim.base_url()));
    let pz = client(&accounts, "paymentz");
    let id = captured(&sim, "50.00");

    let mut references = Vec::new();
    for part in ["20.00", "20.00", "10.00"] {
        let call = pz
            .execute(&money(PaymentOperation::Refund, &id, part))
            .await;
        assert_no_secrets(&call, &secrets());
        assert_eq!(
            summary(&call.answer),
            (
                Classification::Succeeded,
                Some("reversed"),
                Some("00005"),
                Some("Refund successful")
            ),
            "{call:?}"
        );
        let rf = last(&call);
        assert_eq!(rf.purpose, "RF");
        assert_eq!(rf.request["paymentType"], "RF");
        assert_eq!(rf.request["amount"], part);
        let expected = paymentz_checksum(&[&id, part]);
        assert_eq!(rf.signature_sent.as_deref(), Some(expected.as_str()));
        references.push(call.answer.reference.clone().expect("a refund reference"));
    }
    let entries = ledger(&sim, GatewayId::Paymentz, &id);
    assert_eq!(
        entries.iter().map(|e| e.amount).collect::<Vec<_>>(),
        [amount("20.00"), amount("20.00"), amount("10.00")]
    );
    assert!(entries.iter().all(|e| e.operation == Effect::Refund));
    assert_eq!(
        entries
            .iter()
            .map(|e| e.transaction_id.clone())
            .collect::<Vec<_>>(),
        references,
        "each refund is its own operation with its own reference"
    );

    let over = pz
        .execute(&money(PaymentOperation::Refund, &id, "0.01"))
        .await;
    assert_no_secrets(&over, &secrets());
    assert_eq!(over.answer.classification, Classification::Declined);
    assert_eq!(over.answer.gateway_code.as_deref(), Some("10906"));
    assert_eq!(ledger(&sim, GatewayId::Paymentz, &id).len(), 3);
    let payment = sim.sim().payment(GatewayId::Paymentz, &id).unwrap();
    assert_eq!(payment.refunded, amount("50.00"));
    assert_eq!(payment.status, "reversed");

    let inquiry = pz.execute(&request(PaymentOperation::Inquiry, &id)).await;
    assert_no_secrets(&inquiry, &secrets());
    assert_eq!(inquiry.answer.classification, Classification::Succeeded);
    assert_eq!(
        inquiry.answer.snapshot,
        Some(PaymentSnapshot {
            state: PaymentState::Refunded,
            status: "reversed".into(),
            amount: Some(amount("50.00")),
            captured: None,
            refunded: Some(amount("50.00")),
            currency: Some("EUR".into()),
        })
    );
    assert_eq!(
        inquiry.answer.response.as_ref().unwrap()["refundAmount"],
        "50.00"
    );
}

#[tokio::test]
async fn paymentz_cancel_then_capture_of_the_cancelled_payment_is_declined() {
    let sim = start().await;
    let accounts = accounts_from(&config_text(&sim.base_url()));
    let pz = client(&accounts, "paymentz");
    let id = authorized(&sim, "42.10");

    let call = pz.execute(&request(PaymentOperation::Cancel, &id)).await;
    assert_no_secrets(&call, &secrets());
    assert_eq!(
        summary(&call.answer),
        (
            Classification::Succeeded,
            Some("authcancelled"),
            Some("00006"),
            Some("Cancel successful")
        ),
        "{call:?}"
    );
    let rv = last(&call);
    assert_eq!(rv.purpose, "RV");
    assert_eq!(rv.request["paymentType"], "RV");
    assert!(
        rv.request.get("amount").is_none(),
        "RV is full only: {rv:?}"
    );
    let expected = paymentz_checksum(&[&id]);
    assert_eq!(rv.signature_sent.as_deref(), Some(expected.as_str()));
    let entries = ledger(&sim, GatewayId::Paymentz, &id);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].operation, Effect::Cancel);
    assert_eq!(entries[0].amount, amount("42.10"));
    assert_eq!(entries[0].status_after, "authcancelled");
    assert_eq!(
        call.answer.reference.as_deref(),
        Some(entries[0].transaction_id.as_str())
    );
    assert_eq!(
        sim.sim().payment(GatewayId::Paymentz, &id).unwrap().status,
        "authcancelled"
    );

    let capture = pz
        .execute(&money(PaymentOperation::Capture, &id, "42.10"))
        .await;
    assert_no_secrets(&capture, &secrets());
    assert_eq!(capture.answer.classification, Classification::Declined);
    assert_eq!(capture.answer.gateway_code.as_deref(), Some("10005"));
    assert_eq!(capture.answer.gateway_status, None);
    assert_eq!(capture.answer.reference, None);
    let description = capture.answer.description.as_deref().unwrap();
    assert!(description.contains("authcancelled"), "{description}");
    assert_eq!(ledger(&sim, GatewayId::Paymentz, &id).len(), 1);

    let inquiry = pz.execute(&request(PaymentOperation::Inquiry, &id)).await;
    let snapshot = inquiry.answer.snapshot.expect("a snapshot");
    assert_eq!(snapshot.state, PaymentState::Cancelled);
    assert_eq!(snapshot.refunded, Some(Amount::ZERO));
}

#[tokio::test]
async fn paymentz_capture_of_a_payment_created_cancelled_is_declined() {
    let sim = start().await;
    let accounts = accounts_from(&config_text(&sim.base_url()));
    let pz = client(&accounts, "paymentz");
    let id = paymentz_payment(
        &sim,
        NewPayment::new(GatewayId::Paymentz, amount("10.00")).state("cancelled"),
    );
    let call = pz
        .execute(&money(PaymentOperation::Capture, &id, "10.00"))
        .await;
    assert_eq!(call.answer.classification, Classification::Declined);
    assert_eq!(call.answer.gateway_code.as_deref(), Some("10005"));
    assert!(whole_ledger(&sim).is_empty());
    assert_eq!(
        sim.sim().payment(GatewayId::Paymentz, &id).unwrap().status,
        "cancelled"
    );
}

#[tokio::test]
async fn paymentz_inquiry_reports_a_snapshot_and_the_answer() {
    let sim = start().await;
    let accounts = accounts_from(&config_text(&sim.base_url()));
    let pz = client(&accounts, "paymentz");
    let id = paymentz_payment(
        &sim,
        NewPayment::new(GatewayId::Paymentz, amount("75.50"))
            .currency("USD")
            .reference("ORDER-77"),
    );

    let call = pz.execute(&request(PaymentOperation::Inquiry, &id)).await;
    assert_no_secrets(&call, &secrets());
    assert_eq!(
        summary(&call.answer),
        (
            Classification::Succeeded,
            Some("authsuccessful"),
            Some("00026"),
            Some("Record found")
        ),
        "{call:?}"
    );
    assert_eq!(call.answer.reference, None, "an inquiry creates nothing");
    assert_eq!(
        call.answer.snapshot,
        Some(PaymentSnapshot {
            state: PaymentState::Authorized,
            status: "authsuccessful".into(),
            amount: Some(amount("75.50")),
            captured: None,
            refunded: Some(Amount::ZERO),
            currency: Some("USD".into()),
        })
    );
    let response = call.answer.response.as_ref().expect("the inquiry answer");
    assert_eq!(response["paymentId"], id.as_str());
    assert_eq!(response["merchantTransactionId"], "ORDER-77");
    assert_eq!(response["status"], "authsuccessful");
    assert_eq!(response["transactionStatus"], "Y");
    assert_eq!(response["amount"], "75.50");
    assert_eq!(response["card"]["lastFourDigits"], "1111");
    let inquiry = last(&call);
    assert_eq!(inquiry.purpose, "IN");
    assert_eq!(inquiry.request["paymentType"], "IN");
    assert_eq!(inquiry.request["idType"], "PID");
    let expected = paymentz_checksum(&[&id]);
    assert_eq!(inquiry.signature_sent.as_deref(), Some(expected.as_str()));
    assert!(
        whole_ledger(&sim).is_empty(),
        "an inquiry has no side effect"
    );

    // A partly refunded payment: the snapshot carries the refunded amount.
    let partly = paymentz_payment(
        &sim,
        NewPayment::new(GatewayId::Paymentz, amount("50.00"))
            .state("reversed")
            .captured(amount("50.00"))
            .refunded(amount("20.00")),
    );
    let call = pz
        .execute(&request(PaymentOperation::Inquiry, &partly))
        .await;
    assert_no_secrets(&call, &secrets());
    let snapshot = call.answer.snapshot.expect("a snapshot");
    assert_eq!(snapshot.state, PaymentState::Refunded);
    assert_eq!(snapshot.refunded, Some(amount("20.00")));
    assert_eq!(snapshot.amount, Some(amount("50.00")));

    // On-demand payments (8 digits): even is authorised, odd is captured.
    let on_demand = pz
        .execute(&request(PaymentOperation::Inquiry, "12345679"))
        .await;
    let snapshot = on_demand.answer.snapshot.expect("a snapshot");
    assert_eq!(snapshot.state, PaymentState::Captured);
    assert_eq!(snapshot.amount, Some(amount("1000.00")));
}

#[tokio::test]
async fn paymentz_transaction_list_sends_day_month_year_and_reads_rows() {
    let sim = start().await;
    let accounts = accounts_from(&config_text(&sim.base_url()));
    let pz = client(&accounts, "paymentz");
    let create = |created_at: &str, currency: &str| {
        paymentz_payment(
            &sim,
            NewPayment::new(GatewayId::Paymentz, amount("12.34"))
                .currency(currency)
                .created_at(created_at),
        )
    };
    let _before = create("2024-02-29T23:59:59Z", "EUR");
    let first = create("2024-03-01", "EUR");
    let middle = create("2024-03-05T12:00:00Z", "USD");
    let last_day = create("2024-03-10T23:59:59Z", "EUR");
    let _after = create("2024-03-11", "EUR");

    let call = pz
        .execute(&list(date!(2024 - 03 - 01), date!(2024 - 03 - 10)))
        .await;
    assert_no_secrets(&call, &secrets());
    assert_eq!(
        summary(&call.answer),
        (
            Classification::Succeeded,
            None,
            Some("00029"),
            Some("Transaction list retrieved successfully")
        ),
        "{call:?}"
    );
    let response = call.answer.response.as_ref().expect("a list");
    let rows = response["transactions"].as_array().expect("rows");
    let ids: Vec<&str> = rows
        .iter()
        .map(|r| r["systemPaymentId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [first.as_str(), middle.as_str(), last_day.as_str()]);
    assert_eq!(rows[0]["transactionStatus"], "authsuccessful");
    assert_eq!(rows[0]["amount"], "12.34");
    assert_eq!(rows[1]["currency"], "USD");

    assert_eq!(purposes(&call), ["authToken", "getTransactionList"]);
    let page = last(&call);
    assert_eq!(page.request["pagination.fromdate"], "01/03/2024");
    assert_eq!(page.request["pagination.todate"], "10/03/2024");
    assert_eq!(page.request["pagination.pageno"], "1");
    assert_eq!(page.request["authentication.memberId"], MEMBER_ID);
    let expected = paymentz_checksum(&[]);
    assert_eq!(page.signature_sent.as_deref(), Some(expected.as_str()));
    assert_eq!(page.request["authentication.checksum"], expected.as_str());

    // A currency filter reaches the gateway.
    let mut usd = ListRequest::new(date!(2024 - 03 - 01), date!(2024 - 03 - 10)).unwrap();
    usd.currency = Some("USD".into());
    let call = pz.execute(&OperationRequest::List(usd)).await;
    assert_eq!(last(&call).request["currency"], "USD");
    let rows = call.answer.response.as_ref().unwrap()["transactions"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["systemPaymentId"], middle.as_str());

    // No rows: the gateway answers `{}`, which is an empty list, not an error.
    let empty = pz
        .execute(&list(date!(2023 - 01 - 01), date!(2023 - 01 - 31)))
        .await;
    assert_no_secrets(&empty, &secrets());
    assert_eq!(empty.answer.classification, Classification::Succeeded);
    assert_eq!(empty.answer.response, Some(json!({"transactions": []})));
    assert_eq!(empty.answer.gateway_code, None);
    assert_eq!(last(&empty).response_body.as_deref(), Some("{}"));
    assert_eq!(last(&empty).request["pagination.fromdate"], "01/01/2023");
    assert_eq!(last(&empty).request["pagination.todate"], "31/01/2023");
}

#[tokio::test]
async fn paymentz_transaction_list_reads_every_page() {
    let sim = start().await;
    let accounts = accounts_from(&config_text(&sim.base_url()));
    let pz = client(&accounts, "paymentz");
    let mut created = Vec::new();
    for _ in 0..150 {
        created.push(paymentz_payment(
            &sim,
            NewPayment::new(GatewayId::Paymentz, amount("1.00")).created_at("2025-06-15"),
        ));
    }
    let call = pz
        .execute(&list(date!(2025 - 06 - 01), date!(2025 - 06 - 30)))
        .await;
    assert_no_secrets(&call, &secrets());
    assert_eq!(call.answer.classification, Classification::Succeeded);
    let rows = call.answer.response.as_ref().unwrap()["transactions"]
        .as_array()
        .unwrap()
        .clone();
    let mut ids: Vec<String> = rows
        .iter()
        .map(|r| r["systemPaymentId"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    created.sort();
    assert_eq!(ids, created, "every row once, none twice");
    assert_eq!(
        purposes(&call),
        ["authToken", "getTransactionList", "getTransactionList"]
    );
    assert_eq!(call.exchanges[1].request["pagination.pageno"], "1");
    assert_eq!(call.exchanges[2].request["pagination.pageno"], "2");
}

#[tokio::test]
async fn paymentz_refusals_are_declined_and_apply_nothing() {
    let sim = start().await;
    let accounts = accounts_from(&config_text(&sim.base_url()));
    let pz = client(&accounts, "paymentz");

    // Unknown payment (7 digits: not created on demand).
    for op in [
        money(PaymentOperation::Capture, "1234567", "5.00"),
        money(PaymentOperation::Refund, "1234567", "5.00"),
        request(PaymentOperation::Cancel, "1234567"),
    ] {
        let call = pz.execute(&op).await;
        assert_no_secrets(&call, &secrets());
        assert_eq!(
            summary(&call.answer),
            (
                Classification::Declined,
                None,
                Some("10026"),
                Some("Record not found")
            ),
            "{:?}",
            op.operation()
        );
        assert_eq!(call.answer.reference, None);
    }
    let inquiry = pz
        .execute(&request(PaymentOperation::Inquiry, "1234567"))
        .await;
    assert_eq!(inquiry.answer.classification, Classification::Declined);
    assert_eq!(inquiry.answer.gateway_code.as_deref(), Some("10026"));
    assert_eq!(inquiry.answer.snapshot, None);
    assert!(sim.sim().payment(GatewayId::Paymentz, "1234567").is_none());

    // Refund before capture; capture above the authorised amount.
    let id = authorized(&sim, "20.00");
    let refund = pz
        .execute(&money(PaymentOperation::Refund, &id, "5.00"))
        .await;
    assert_eq!(refund.answer.classification, Classification::Declined);
    assert_eq!(refund.answer.gateway_code.as_deref(), Some("10006"));
    let over = pz
        .execute(&money(PaymentOperation::Capture, &id, "20.01"))
        .await;
    assert_eq!(over.answer.classification, Classification::Declined);
    assert_eq!(over.answer.gateway_code.as_deref(), Some("10907"));
    // Cancel after a capture.
    let done = captured(&sim, "20.00");
    let cancel = pz.execute(&request(PaymentOperation::Cancel, &done)).await;
    assert_eq!(cancel.answer.classification, Classification::Declined);
    assert_eq!(cancel.answer.gateway_code.as_deref(), Some("10007"));

    assert!(whole_ledger(&sim).is_empty(), "{:?}", whole_ledger(&sim));
    assert_eq!(
        sim.sim().payment(GatewayId::Paymentz, &id).unwrap().status,
        "authsuccessful"
    );
}

#[tokio::test]
async fn paymentz_wrong_secure_key_is_declined_without_sending_the_operation() {
    let sim = start().await;
    let wrong_key = "not-the-sandbox-secure-key";
    let mut credentials = Credentials::sandbox();
    credentials.secure_key = wrong_key.into();
    let accounts = accounts_from(&credentials.tables("default", &sim.base_url()));
    let pz = client(&accounts, "paymentz");
    let id = captured(&sim, "50.00");

    let call = pz
        .execute(&money(PaymentOperation::Refund, &id, "10.00"))
        .await;
    assert_no_secrets(&call, &[wrong_key.to_string(), SECURE_KEY.to_string()]);
    assert_eq!(call.answer.classification, Classification::Declined);
    assert!(
        matches!(call.answer.error, Some(GatewayError::CredentialsRefused(_))),
        "{:?}",
        call.answer.error
    );
    let description = call.answer.description.as_deref().unwrap();
    assert!(description.contains("403"), "{description}");
    assert_eq!(purposes(&call), ["authToken"], "the refund is never sent");
    let token = &call.exchanges[0];
    assert_eq!(token.classification, Classification::Declined);
    assert_eq!(token.http_status, Some(200));
    assert_eq!(token.request["authentication.sKey"], REDACTED);
    assert!(token.response_body.as_deref().unwrap().contains("\"403\""));

    let stats = sim.sim().stats();
    assert_eq!(stats.requests_for("paymentz", "RF"), 0);
    assert!(whole_ledger(&sim).is_empty());
    assert_eq!(
        sim.sim()
            .payment(GatewayId::Paymentz, &id)
            .unwrap()
            .refunded,
        Amount::ZERO
    );
}

#[tokio::test]
async fn paymentz_expired_token_is_replaced_once_and_the_call_resent() {
    let sim = start().await;
    let accounts = accounts_from(&config_text(&sim.base_url()));
    let pz = client(&accounts, "paymentz");
    let id = captured(&sim, "50.00");

    let first = pz
        .execute(&money(PaymentOperation::Refund, &id, "10.00"))
        .await;
    assert_eq!(first.answer.classification, Classification::Succeeded);
    assert_eq!(sim.sim().expire_tokens(), 1, "the client's token was live");

    let second = pz
        .execute(&money(PaymentOperation::Refund, &id, "15.00"))
        .await;
    assert_no_secrets(&second, &secrets());
    assert_eq!(
        summary(&second.answer),
        (
            Classification::Succeeded,
            Some("reversed"),
            Some("00005"),
            Some("Refund successful")
        ),
        "{second:?}"
    );
    assert_eq!(purposes(&second), ["RF", "authToken", "RF"]);
    let refused = &second.exchanges[0];
    assert_eq!(
        refused.http_status,
        Some(200),
        "token errors come as HTTP 200"
    );
    assert_eq!(refused.classification, Classification::NotApplied);
    assert!(
        refused
            .response_body
            .as_deref()
            .unwrap()
            .contains("\"401\""),
        "{refused:?}"
    );
    assert!(refused.error.as_deref().unwrap().contains("401"));
    let renewed = &second.exchanges[1];
    assert_eq!(renewed.classification, Classification::Succeeded);
    assert!(renewed
        .response_body
        .as_deref()
        .unwrap()
        .contains(&format!("\"AuthToken\":\"{REDACTED}\"")));
    let retried = &second.exchanges[2];
    assert_eq!(retried.classification, Classification::Succeeded);
    assert_eq!(retried.request, refused.request, "the same form, resent");
    assert_eq!(retried.signature_sent, refused.signature_sent);

    // The refused attempt applied nothing: one refund per call.
    let entries = ledger(&sim, GatewayId::Paymentz, &id);
    assert_eq!(
        entries.iter().map(|e| e.amount).collect::<Vec<_>>(),
        [amount("10.00"), amount("15.00")]
    );
    assert_eq!(
        second.answer.reference.as_deref(),
        Some(entries[1].transaction_id.as_str())
    );
    let stats = sim.sim().stats();
    assert_eq!(stats.requests_for("paymentz", "authToken"), 2);
    assert_eq!(stats.requests_for("paymentz", "RF"), 3);
}

#[tokio::test]
async fn paymentz_reads_reauthenticate_too() {
    let sim = start().await;
    let accounts = accounts_from(&config_text(&sim.base_url()));
    let pz = client(&accounts, "paymentz");
    let id = captured(&sim, "50.00");
    let warm = pz.execute(&request(PaymentOperation::Inquiry, &id)).await;
    assert_eq!(purposes(&warm), ["authToken", "IN"]);

    assert_eq!(sim.sim().expire_tokens(), 1);
    let inquiry = pz.execute(&request(PaymentOperation::Inquiry, &id)).await;
    assert_no_secrets(&inquiry, &secrets());
    assert_eq!(inquiry.answer.classification, Classification::Succeeded);
    assert_eq!(purposes(&inquiry), ["IN", "authToken", "IN"]);
    assert!(inquiry.answer.snapshot.is_some());

    assert_eq!(sim.sim().expire_tokens(), 1);
    let listed = pz
        .execute(&list(date!(2020 - 01 - 01), date!(2020 - 01 - 02)))
        .await;
    assert_no_secrets(&listed, &secrets());
    assert_eq!(listed.answer.classification, Classification::Succeeded);
    assert_eq!(
        purposes(&listed),
        ["getTransactionList", "authToken", "getTransactionList"]
    );
    assert_eq!(listed.answer.response, Some(json!({"transactions": []})));
}

#[tokio::test]
async fn concurrent_calls_share_one_token_and_one_reauthentication() {
    let sim = start().await;
    let accounts = accounts_from(&config_text(&sim.base_url()));
    let pz = client(&accounts, "paymentz");
    let ids: Vec<String> = (0..20).map(|_| captured(&sim, "10.00")).collect();
    let requests: Vec<OperationRequest> = ids
        .iter()
        .map(|id| money(PaymentOperation::Refund, id, "1.00"))
        .collect();
    let refund_all = || futures::future::join_all(requests.iter().map(|r| pz.execute(r)));

    for call in refund_all().await {
        assert_eq!(
            call.answer.classification,
            Classification::Succeeded,
            "{call:?}"
        );
        assert_no_secrets(&call, &secrets());
    }
    assert_eq!(sim.sim().stats().requests_for("paymentz", "authToken"), 1);

    assert_eq!(sim.sim().expire_tokens(), 1);
    for call in refund_all().await {
        assert_eq!(
            call.answer.classification,
            Classification::Succeeded,
            "{call:?}"
        );
        assert_no_secrets(&call, &secrets());
    }
    assert_eq!(
        sim.sim().stats().requests_for("paymentz", "authToken"),
        2,
        "a burst of refusals of one token leads to one new token"
    );
    for id in &ids {
        let entries = ledger(&sim, GatewayId::Paymentz, id);
        assert_eq!(entries.len(), 2, "one refund per call: {entries:?}");
    }
}

#[tokio::test]
async fn a_token_refused_twice_ends_the_call_as_not_applied() {
    // Tokens that die the moment they are issued: the re-authenticated
    // call is refused again, and the client stops after one retry.
    let sim = Simulator::start(SimulatorConfig {
        token_ttl: Duration::ZERO,
        ..SimulatorConfig::sandbox()
    })
    .await
    .expect("simulator starts");
    let accounts = accounts_from(&config_text(&sim.base_url()));
    let pz = client(&accounts, "paymentz");
    let id = captured(&sim, "50.00");

    let call = pz
        .execute(&money(PaymentOperation::Refund, &id, "10.00"))
        .await;
    assert_no_secrets(&call, &secrets());
    assert_eq!(
        call.answer.classification,
        Classification::NotApplied,
        "{call:?}"
    );
    assert_eq!(call.answer.error, Some(GatewayError::TokenRefused));
    assert_eq!(purposes(&call), ["authToken", "RF", "authToken", "RF"]);
    for refused in [&call.exchanges[1], &call.exchanges[3]] {
        assert_eq!(refused.classification, Classification::NotApplied);
        assert!(refused
            .response_body
            .as_deref()
            .unwrap()
            .contains("\"401\""));
    }
    assert!(whole_ledger(&sim).is_empty());
    assert_eq!(sim.sim().stats().requests_for("paymentz", "RF"), 2);
}

#[tokio::test]
async fn a_failed_token_fetch_sends_nothing_and_is_not_applied() {
    let sim = start().await;
    short_hang(&sim);
    let accounts = accounts_from(&config_text(&sim.base_url()));
    let pz = client(&accounts, "paymentz");
    let id = captured(&sim, "50.00");
    // `bad_signature` spoils signed answers only; a token answer has none.
    for kind in FaultKind::ALL
        .into_iter()
        .filter(|k| *k != FaultKind::BadSignature)
    {
        sim.sim()
            .script_fault(FaultScript::new(kind, 1).operation("authToken"))
            .expect("script accepted");
        let call = pz
            .execute(&money(PaymentOperation::Refund, &id, "10.00"))
            .await;
        assert_no_secrets(&call, &secrets());
        assert_eq!(
            call.answer.classification,
            Classification::NotApplied,
            "{kind:?}: no token, so the refund was never sent: {call:?}"
        );
        assert_eq!(purposes(&call), ["authToken"], "{kind:?}");
        let description = call.answer.description.as_deref().unwrap();
        assert!(description.contains("nothing was sent"), "{description}");
        assert_eq!(sim.sim().stats().faults_of(kind), 1, "{kind:?}");
    }
    assert_eq!(sim.sim().stats().requests_for("paymentz", "RF"), 0);
    assert!(whole_ledger(&sim).is_empty());

    // A failed fetch is not remembered: the next call fetches afresh and works.
    let call = pz
        .execute(&money(PaymentOperation::Refund, &id, "10.00"))
        .await;
    assert_eq!(call.answer.classification, Classification::Succeeded);
    assert_eq!(purposes(&call), ["authToken", "RF"]);
    assert_eq!(ledger(&sim, GatewayId::Paymentz, &id).len(), 1);
}

#[tokio::test]
async fn base_urls_with_a_trailing_slash_or_the_api_path_reach_the_same_endpoints() {
    let sim = start().await;
    let base = sim.base_url();
    for (paymentz_base, praxis_base) in [
        (format!("{base}/"), format!("{base}/")),
        (format!("{base}/transactionServices/REST/v1"), base.clone()),
    ] {
        let text = config_text(&base)
            .replacen(&base, &paymentz_base, 1)
            .replacen(&format!("\"{base}\""), &format!("\"{praxis_base}\""), 1);
        let accounts = accounts_from(&text);
        let pz = client(&accounts, "paymentz");
        let call = pz
            .execute(&request(PaymentOperation::Inquiry, "22345678"))
            .await;
        assert_eq!(
            call.answer.classification,
            Classification::Succeeded,
            "{paymentz_base}: {call:?}"
        );
        assert_eq!(
            last(&call).url,
            format!("{base}/transactionServices/REST/v1/payments/22345678")
        );
        let px = client(&accounts, "praxis");
        let call = px
            .execute(&request(PaymentOperation::Inquiry, "22345678"))
            .await;
        assert_eq!(
            call.answer.classification,
            Classification::Succeeded,
            "{praxis_base}: {call:?}"
        );
        assert_eq!(
            call.exchanges[0].url,
            format!("{base}/api/find-transaction")
        );
    }
}

// ---------------------------------------------------------------- Praxis

/// The request fields a Praxis exchange records, checked against the spec.
fn assert_signed_praxis_request(exchange: &Exchange, trace_id: &str, secret: &str) {
    let sent = exchange.request.as_object().expect("a JSON object");
    assert_eq!(sent["merchant_id"], MERCHANT_ID);
    assert_eq!(sent["frontend"], FRONTEND);
    assert_eq!(sent["version"], "1.1");
    assert_eq!(
        sent["trace_id"].as_u64().map(|t| t.to_string()).as_deref(),
        Some(trace_id),
        "trace_id goes as an integer"
    );
    let timestamp = sent["timestamp"].as_i64().expect("unix seconds");
    assert!(
        (timestamp - now()).abs() <= 5,
        "a fresh timestamp for every attempt: {timestamp}"
    );
    let expected = praxis_signature(sent, secret);
    assert_eq!(sent["signature"], expected.as_str());
    assert_eq!(exchange.signature_sent.as_deref(), Some(expected.as_str()));
}

#[tokio::test]
async fn praxis_capture_then_find_transaction() {
    let sim = start().await;
    let accounts = accounts_from(&config_text(&sim.base_url()));
    let px = client(&accounts, "praxis");
    let trace = praxis_authorized(&sim, "25.00");
    let transaction_id = sim
        .sim()
        .payment(GatewayId::Praxis, &trace)
        .unwrap()
        .transaction_id
        .expect("an authorization has a transaction id");

    let call = px
        .execute(&request(PaymentOperation::Capture, &trace))
        .await;
    assert_no_secrets(&call, &secrets());
    assert_eq!(
        summary(&call.answer),
        (
            Classification::Succeeded,
            Some("approved"),
            Some("0"),
            Some("Deposit captured")
        ),
        "{call:?}"
    );
    assert_eq!(
        call.answer.reference.as_deref(),
        Some(transaction_id.as_str())
    );
    assert_eq!(
        call.answer.response, None,
        "only inquiries carry the answer"
    );
    assert_eq!(call.exchanges.len(), 1);
    let exchange = &call.exchanges[0];
    assert_eq!(exchange.purpose, "deposit-capture");
    assert!(
        exchange.url.ends_with("/api/deposit-capture"),
        "{}",
        exchange.url
    );
    assert_eq!(exchange.http_status, Some(200));
    assert_signed_praxis_request(exchange, &trace, MERCHANT_SECRET);
    assert!(exchange.signature_received.is_some());
    assert_eq!(exchange.signature_verified, Some(true));
    let entries = ledger(&sim, GatewayId::Praxis, &trace);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].operation, Effect::Capture);
    assert_eq!(entries[0].amount, amount("25.00"));
    assert_eq!(entries[0].status_after, "approved");
    assert_eq!(entries[0].transaction_id, transaction_id);
    assert_eq!(
        sim.sim().payment(GatewayId::Praxis, &trace).unwrap().status,
        "approved"
    );

    let find = px
        .execute(&request(PaymentOperation::Inquiry, &trace))
        .await;
    assert_no_secrets(&find, &secrets());
    assert_eq!(
        summary(&find.answer),
        (
            Classification::Succeeded,
            Some("approved"),
            Some("0"),
            Some("Transaction found")
        ),
        "{find:?}"
    );
    assert_eq!(
        find.answer.snapshot,
        Some(PaymentSnapshot {
            state: PaymentState::Captured,
            status: "approved".into(),
            amount: Some(amount("25.00")),
            captured: None,
            refunded: None,
            currency: Some("USD".into()),
        })
    );
    let response = find.answer.response.as_ref().expect("the answer");
    assert_eq!(
        response["transaction"]["order_id"],
        format!("order-{trace}")
    );
    assert_eq!(response["transaction"]["amount"], 2500);
    assert!(response.get("signature").is_none(), "{response}");
    let exchange = &find.exchanges[0];
    assert_eq!(exchange.purpose, "find-transaction");
    assert_signed_praxis_request(exchange, &trace, MERCHANT_SECRET);
    assert_eq!(exchange.signature_verified, Some(true));
    assert_eq!(ledger(&sim, GatewayId::Praxis, &trace).len(), 1);
}

#[tokio::test]
async fn praxis_cancel_then_capture_of_the_cancelled_authorization_is_declined() {
    let sim = start().await;
    let accounts = accounts_from(&config_text(&sim.base_url()));
    let px = client(&accounts, "praxis");
    let trace = praxis_authorized(&sim, "99.99");

    let call = px.execute(&request(PaymentOperation::Cancel, &trace)).await;
    assert_no_secrets(&call, &secrets());
    assert_eq!(
        summary(&call.answer),
        (
            Classification::Succeeded,
            Some("cancelled"),
            Some("0"),
            Some("Deposit cancelled")
        ),
        "{call:?}"
    );
    let exchange = &call.exchanges[0];
    assert_eq!(exchange.purpose, "deposit-cancel");
    assert_signed_praxis_request(exchange, &trace, MERCHANT_SECRET);
    assert_eq!(exchange.signature_verified, Some(true));
    let entries = ledger(&sim, GatewayId::Praxis, &trace);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].operation, Effect::Cancel);

    let capture = px
        .execute(&request(PaymentOperation::Capture, &trace))
        .await;
    assert_no_secrets(&capture, &secrets());
    assert_eq!(capture.answer.classification, Classification::Declined);
    assert_eq!(capture.answer.gateway_code.as_deref(), Some("1008"));
    let description = capture.answer.description.as_deref().unwrap();
    assert!(description.contains("cancelled"), "{description}");
    assert_eq!(capture.exchanges[0].signature_verified, Some(true));
    assert_eq!(ledger(&sim, GatewayId::Praxis, &trace).len(), 1);
    assert_eq!(
        sim.sim().payment(GatewayId::Praxis, &trace).unwrap().status,
        "cancelled"
    );

    let find = px
        .execute(&request(PaymentOperation::Inquiry, &trace))
        .await;
    assert_eq!(
        find.answer.snapshot.map(|s| s.state),
        Some(PaymentState::Cancelled)
    );
}

#[tokio::test]
async fn praxis_unknown_transaction_is_declined() {
    let sim = start().await;
    let accounts = accounts_from(&config_text(&sim.base_url()));
    let px = client(&accounts, "praxis");
    for op in [
        PaymentOperation::Capture,
        PaymentOperation::Cancel,
        PaymentOperation::Inquiry,
    ] {
        let call = px.execute(&request(op, "7654321")).await;
        assert_no_secrets(&call, &secrets());
        assert_eq!(
            summary(&call.answer),
            (
                Classification::Declined,
                None,
                Some("1007"),
                Some("Transaction not found")
            ),
            "{op:?}"
        );
        assert_eq!(call.answer.snapshot, None);
        assert_eq!(call.exchanges[0].signature_verified, Some(true));
    }
    assert!(whole_ledger(&sim).is_empty());
}

#[tokio::test]
async fn praxis_frontend_of_another_account_is_declined() {
    let sim = start().await;
    let mut credentials = Credentials::sandbox();
    credentials.frontend = "Integration TEST EUR".into();
    let accounts = accounts_from(&credentials.tables("default", &sim.base_url()));
    let px = client(&accounts, "praxis");
    let trace = praxis_authorized(&sim, "10.00");
    let call = px
        .execute(&request(PaymentOperation::Capture, &trace))
        .await;
    assert_eq!(
        summary(&call.answer),
        (
            Classification::Declined,
            None,
            Some("1006"),
            Some("Unknown frontend")
        ),
        "{call:?}"
    );
    assert_eq!(
        call.exchanges[0].request["frontend"],
        "Integration TEST EUR"
    );
    assert_eq!(call.exchanges[0].signature_verified, Some(true));
    assert!(whole_ledger(&sim).is_empty());
}

#[tokio::test]
async fn praxis_wrong_secret_is_declined_and_the_answer_does_not_verify() {
    let sim = start().await;
    let wrong_secret = "not-the-sandbox-merchant-secret";
    let mut credentials = Credentials::sandbox();
    credentials.merchant_secret = wrong_secret.into();
    let accounts = accounts_from(&credentials.tables("default", &sim.base_url()));
    let px = client(&accounts, "praxis");
    let trace = praxis_authorized(&sim, "10.00");

    let call = px
        .execute(&request(PaymentOperation::Capture, &trace))
        .await;
    assert_no_secrets(&call, &[wrong_secret.into(), MERCHANT_SECRET.into()]);
    assert_eq!(
        summary(&call.answer),
        (
            Classification::Declined,
            None,
            Some("1004"),
            Some("Invalid signature")
        ),
        "{call:?}"
    );
    let exchange = &call.exchanges[0];
    assert_signed_praxis_request(exchange, &trace, wrong_secret);
    assert_eq!(
        exchange.signature_verified,
        Some(false),
        "the simulator signs with the real secret"
    );
    assert!(whole_ledger(&sim).is_empty());
    assert_eq!(
        sim.sim().payment(GatewayId::Praxis, &trace).unwrap().status,
        "authorized"
    );
}

#[tokio::test]
async fn a_password_in_a_base_url_never_reaches_the_records() {
    let sim = start().await;
    let password = "url-password-0123";
    let with_password = sim
        .base_url()
        .replace("http://", &format!("http://operator:{password}@"));
    for gateway in ["paymentz", "praxis"] {
        let text = config_text(&sim.base_url());
        let text = match gateway {
            "paymentz" => text.replacen(&sim.base_url(), &with_password, 1),
            _ => {
                // The second occurrence is the Praxis table's.
                let at = text.rfind(&sim.base_url()).expect("praxis base_url");
                let base_len = sim.base_url().len();
                format!("{}{with_password}{}", &text[..at], &text[at + base_len..])
            }
        };
        assert!(text.contains(password), "{gateway}: {text}");
        // Either the config refuses it, naming the key...
        match backoffice_worker::config::Config::parse(
            std::path::Path::new("gateway-test.toml"),
            &text,
            |_| None,
        ) {
            Err(error) => {
                let message = error.to_string();
                assert!(
                    message.contains(&format!("[accounts.{gateway}.default] key `base_url`")),
                    "{message}"
                );
                assert!(!message.contains(password), "{message}");
            }
            // ...or the password stays out of what is recorded.
            Ok(_) => {
                let accounts = accounts_from(&text);
                let call = client(&accounts, gateway)
                    .execute(&request(PaymentOperation::Inquiry, "22345678"))
                    .await;
                let mut secrets = secrets();
                secrets.push(password.into());
                assert_no_secrets(&call, &secrets);
            }
        }
    }
}

// ---------------------------------------------------------------- faults

/// What a scripted fault must look like from the client.
struct Expected {
    classification: Classification,
    http_status: Option<u16>,
    /// Whether the simulator applied the operation before failing.
    applied: bool,
    error: fn(&GatewayError) -> bool,
}

fn expected(kind: FaultKind) -> Expected {
    let ambiguous = Classification::Ambiguous;
    match kind {
        FaultKind::ErrorBefore => Expected {
            classification: ambiguous,
            http_status: Some(500),
            applied: false,
            error: |e| matches!(e, GatewayError::ServerError { status: 500 }),
        },
        FaultKind::ErrorAfter => Expected {
            classification: ambiguous,
            http_status: Some(500),
            applied: true,
            error: |e| matches!(e, GatewayError::ServerError { status: 500 }),
        },
        FaultKind::TimeoutAfter => Expected {
            classification: ambiguous,
            http_status: None,
            applied: true,
            error: |e| matches!(e, GatewayError::Timeout(_)),
        },
        FaultKind::ResetBefore => Expected {
            classification: ambiguous,
            http_status: None,
            applied: false,
            error: |e| matches!(e, GatewayError::Dropped(_)),
        },
        FaultKind::ResetAfter => Expected {
            classification: ambiguous,
            http_status: None,
            applied: true,
            error: |e| matches!(e, GatewayError::Dropped(_)),
        },
        FaultKind::RateLimit => Expected {
            classification: Classification::NotApplied,
            http_status: Some(429),
            applied: false,
            error: |e| matches!(e, GatewayError::NotProcessed { status: 429 }),
        },
        // 307: moved before processing, not followed (tests/gateway_trust.rs
        // shows the target receives nothing).
        FaultKind::Redirect => Expected {
            classification: Classification::NotApplied,
            http_status: Some(307),
            applied: false,
            error: |e| matches!(e, GatewayError::Redirected { status: 307, location: Some(l) } if l.starts_with("/moved/")),
        },
        // Applied, then an answer too large to read: it cannot say what happened.
        FaultKind::HugeAnswer => Expected {
            classification: ambiguous,
            http_status: Some(200),
            applied: true,
            error: |e| matches!(e, GatewayError::Oversized { .. }),
        },
        FaultKind::BadSignature => {
            unreachable!("not a transport failure: its answer is read (tests/gateway_trust.rs)")
        }
    }
}

/// A `timeout_after` hangs well past the client's 1 s timeout, but not for
/// the default minute: the simulator is dropped at the end of the test anyway.
fn short_hang(sim: &RunningSimulator) {
    sim.sim()
        .update_faults(&FaultSettingsView {
            hang_ms: Some(3000),
            ..FaultSettingsView::default()
        })
        .expect("valid settings");
}

fn assert_fault_answer(kind: FaultKind, call: &GatewayCall) {
    let want = expected(kind);
    let answer = &call.answer;
    assert_eq!(
        answer.classification, want.classification,
        "{kind:?}: {call:?}"
    );
    let error = answer.error.as_ref().expect("a transport error");
    assert!((want.error)(error), "{kind:?}: {error:?}");
    assert_eq!(answer.reference, None, "{kind:?}");
    assert_eq!(answer.gateway_code, None, "{kind:?}");
    let exchange = last(call);
    assert_eq!(exchange.http_status, want.http_status, "{kind:?}");
    assert_eq!(exchange.classification, want.classification, "{kind:?}");
    assert!(exchange.error.is_some(), "{kind:?}: the error is recorded");
    assert!(exchange.signature_sent.is_some(), "{kind:?}");
}

async fn paymentz_fault(kind: FaultKind) {
    let sim = start().await;
    short_hang(&sim);
    let accounts = accounts_from(&config_text(&sim.base_url()));
    let pz = client(&accounts, "paymentz");
    let id = captured(&sim, "50.00");
    sim.sim()
        .script_fault(FaultScript::new(kind, 1).operation("RF"))
        .expect("script accepted");

    let call = pz
        .execute(&money(PaymentOperation::Refund, &id, "10.00"))
        .await;
    assert_no_secrets(&call, &secrets());
    assert_fault_answer(kind, &call);
    assert_eq!(
        purposes(&call),
        ["authToken", "RF"],
        "{kind:?}: sent once, never resent by the client"
    );
    let stats = sim.sim().stats();
    assert_eq!(stats.faults_of(kind), 1, "{kind:?}");
    assert_eq!(stats.requests_for("paymentz", "RF"), 1, "{kind:?}");
    let entries = ledger(&sim, GatewayId::Paymentz, &id);
    let payment = sim.sim().payment(GatewayId::Paymentz, &id).unwrap();
    if expected(kind).applied {
        assert_eq!(entries.len(), 1, "{kind:?}: {entries:?}");
        assert_eq!(entries[0].operation, Effect::Refund);
        assert_eq!(entries[0].amount, amount("10.00"));
        assert_eq!(payment.refunded, amount("10.00"));
    } else {
        assert!(entries.is_empty(), "{kind:?}: {entries:?}");
        assert_eq!(payment.refunded, Amount::ZERO);
    }

    // The script is spent: an inquiry tells what happened.
    let inquiry = pz.execute(&request(PaymentOperation::Inquiry, &id)).await;
    assert_eq!(inquiry.answer.classification, Classification::Succeeded);
    let refunded = inquiry.answer.snapshot.unwrap().refunded;
    let expected_refund = if expected(kind).applied {
        amount("10.00")
    } else {
        Amount::ZERO
    };
    assert_eq!(refunded, Some(expected_refund), "{kind:?}");
}

async fn praxis_fault(kind: FaultKind) {
    let sim = start().await;
    short_hang(&sim);
    let accounts = accounts_from(&config_text(&sim.base_url()));
    let px = client(&accounts, "praxis");
    let trace = praxis_authorized(&sim, "30.00");
    sim.sim()
        .script_fault(FaultScript::new(kind, 1).operation("deposit-capture"))
        .expect("script accepted");

    let call = px
        .execute(&request(PaymentOperation::Capture, &trace))
        .await;
    assert_no_secrets(&call, &secrets());
    assert_fault_answer(kind, &call);
    assert_eq!(call.exchanges.len(), 1, "{kind:?}");
    assert_eq!(
        call.exchanges[0].signature_verified, None,
        "{kind:?}: no answer to verify"
    );
    let stats = sim.sim().stats();
    assert_eq!(stats.faults_of(kind), 1, "{kind:?}");
    assert_eq!(stats.requests_for("praxis", "deposit-capture"), 1);
    let entries = ledger(&sim, GatewayId::Praxis, &trace);
    let status = sim.sim().payment(GatewayId::Praxis, &trace).unwrap().status;
    if expected(kind).applied {
        assert_eq!(entries.len(), 1, "{kind:?}: {entries:?}");
        assert_eq!(entries[0].operation, Effect::Capture);
        assert_eq!(status, "approved", "{kind:?}");
    } else {
        assert!(entries.is_empty(), "{kind:?}: {entries:?}");
        assert_eq!(status, "authorized", "{kind:?}");
    }
}

#[tokio::test]
async fn paymentz_error_before_is_ambiguous_and_applies_nothing() {
    paymentz_fault(FaultKind::ErrorBefore).await;
}

#[tokio::test]
async fn paymentz_error_after_is_ambiguous_and_the_refund_happened() {
    paymentz_fault(FaultKind::ErrorAfter).await;
}

#[tokio::test]
async fn paymentz_timeout_after_is_ambiguous_and_the_refund_happened() {
    paymentz_fault(FaultKind::TimeoutAfter).await;
}

#[tokio::test]
async fn paymentz_reset_before_is_ambiguous() {
    paymentz_fault(FaultKind::ResetBefore).await;
}

#[tokio::test]
async fn paymentz_reset_after_is_ambiguous_and_the_refund_happened() {
    paymentz_fault(FaultKind::ResetAfter).await;
}

#[tokio::test]
async fn paymentz_rate_limit_is_not_applied() {
    paymentz_fault(FaultKind::RateLimit).await;
}

#[tokio::test]
async fn paymentz_redirect_is_not_applied() {
    paymentz_fault(FaultKind::Redirect).await;
}

#[tokio::test]
async fn paymentz_huge_answer_is_ambiguous_and_the_refund_happened() {
    paymentz_fault(FaultKind::HugeAnswer).await;
}

#[tokio::test]
async fn praxis_redirect_is_not_applied() {
    praxis_fault(FaultKind::Redirect).await;
}

#[tokio::test]
async fn praxis_huge_answer_is_ambiguous_and_the_capture_happened() {
    praxis_fault(FaultKind::HugeAnswer).await;
}

#[tokio::test]
async fn praxis_error_before_is_ambiguous_and_applies_nothing() {
    praxis_fault(FaultKind::ErrorBefore).await;
}

#[tokio::test]
async fn praxis_error_after_is_ambiguous_and_the_capture_happened() {
    praxis_fault(FaultKind::ErrorAfter).await;
}

#[tokio::test]
async fn praxis_timeout_after_is_ambiguous_and_the_capture_happened() {
    praxis_fault(FaultKind::TimeoutAfter).await;
}

#[tokio::test]
async fn praxis_reset_before_is_ambiguous() {
    praxis_fault(FaultKind::ResetBefore).await;
}

#[tokio::test]
async fn praxis_reset_after_is_ambiguous_and_the_capture_happened() {
    praxis_fault(FaultKind::ResetAfter).await;
}

#[tokio::test]
async fn praxis_rate_limit_is_not_applied() {
    praxis_fault(FaultKind::RateLimit).await;
}

#[tokio::test]
async fn a_closed_port_is_not_applied() {
    // Bind and drop: a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let accounts = accounts_from(&config_text(&format!("http://127.0.0.1:{port}")));

    let pz = client(&accounts, "paymentz");
    let call = pz
        .execute(&money(PaymentOperation::Refund, "55361", "10.00"))
        .await;
    assert_no_secrets(&call, &secrets());
    assert_eq!(
        call.answer.classification,
        Classification::NotApplied,
        "{call:?}"
    );
    assert!(
        matches!(call.answer.error, Some(GatewayError::Connect(_))),
        "{:?}",
        call.answer.error
    );
    assert_eq!(purposes(&call), ["authToken"], "no token, nothing sent");
    assert_eq!(call.exchanges[0].http_status, None);
    assert_eq!(call.exchanges[0].classification, Classification::NotApplied);

    let px = client(&accounts, "praxis");
    let call = px
        .execute(&request(PaymentOperation::Capture, "752856"))
        .await;
    assert_no_secrets(&call, &secrets());
    assert_eq!(
        call.answer.classification,
        Classification::NotApplied,
        "{call:?}"
    );
    assert!(
        matches!(call.answer.error, Some(GatewayError::Connect(_))),
        "{:?}",
        call.answer.error
    );
    assert_eq!(call.exchanges.len(), 1);
    assert_eq!(call.exchanges[0].http_status, None);
    assert!(call.exchanges[0].signature_sent.is_some());
}

#[tokio::test]
async fn latency_slows_calls_down_without_changing_their_meaning() {
    let sim = start().await;
    sim.sim()
        .update_faults(&FaultSettingsView {
            latency_ms: Some(200),
            jitter_ms: Some(0),
            ..FaultSettingsView::default()
        })
        .expect("valid settings");
    let accounts = accounts_from(&config_text(&sim.base_url()));
    let floor = Duration::from_millis(200);

    let pz = client(&accounts, "paymentz");
    let id = captured(&sim, "50.00");
    let call = pz
        .execute(&money(PaymentOperation::Refund, &id, "5.00"))
        .await;
    assert_eq!(call.answer.classification, Classification::Succeeded);
    let rf = last(&call);
    assert_eq!(rf.purpose, "RF");
    assert!(rf.latency >= floor, "{:?}", rf.latency);
    assert_eq!(ledger(&sim, GatewayId::Paymentz, &id).len(), 1);
    let serialized: Value = serde_json::to_value(rf).unwrap();
    assert!(
        serialized["latency"].as_f64().unwrap() >= 200.0,
        "latency is recorded in milliseconds: {serialized}"
    );

    let px = client(&accounts, "praxis");
    let trace = praxis_authorized(&sim, "5.00");
    let call = px
        .execute(&request(PaymentOperation::Inquiry, &trace))
        .await;
    assert_eq!(call.answer.classification, Classification::Succeeded);
    assert!(
        call.exchanges[0].latency >= floor,
        "{:?}",
        call.exchanges[0].latency
    );
    assert_eq!(call.exchanges[0].signature_verified, Some(true));
}
