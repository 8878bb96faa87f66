//! The worker end to end: commands in through the real RabbitMQ, run against the
//! simulator, recorded in the real PostgreSQL, events out.

use crate::common;

use std::time::Duration;

use backoffice_worker::events::ResultEvent;
use backoffice_worker::money::Amount;
use backoffice_worker::simulator::{GatewayId, NewPayment};
use common::{px, pz, TestEnv};
use lapin::types::AMQPValue;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_of_both_gateways_end_to_end() {
    let mut env = TestEnv::new("e2e").await;
    let worker = env.start_worker();

    let commands = vec![
        pz("pz-capture", "capture", "10000002", Some("10.5")),
        pz("pz-refund", "refund", "10000001", Some("25.00")),
        pz("pz-cancel", "cancel", "10000004", None),
        pz("pz-inquiry", "inquiry", "10000003", None),
        px("px-capture", "capture", "20000001"),
        px("px-cancel", "cancel", "20000002"),
        px("px-inquiry", "inquiry", "20000003"),
    ];
    for c in &commands {
        env.publish(c).await;
    }

    let capture = env.outcome_of("pz-capture").await;
    assert_eq!(capture.outcome.as_str(), "succeeded", "{capture:?}");
    assert_eq!(capture.amount.as_deref(), Some("10.50"));
    assert_eq!(capture.gateway_status.as_deref(), Some("capturesuccess"));
    assert!(capture.reference.is_some());
    assert_eq!(
        capture.metadata.map(|m| m.value()),
        Some(serde_json::json!({"test": "pz-capture"}))
    );
    assert_eq!(capture.attempts, 1);

    let refund = env.outcome_of("pz-refund").await;
    assert_eq!(refund.outcome.as_str(), "succeeded", "{refund:?}");
    let cancel = env.outcome_of("pz-cancel").await;
    assert_eq!(cancel.outcome.as_str(), "succeeded", "{cancel:?}");
    let inquiry = env.outcome_of("pz-inquiry").await;
    assert_eq!(inquiry.outcome.as_str(), "succeeded", "{inquiry:?}");
    assert_eq!(inquiry.response["status"], "capturesuccess");
    for id in ["px-capture", "px-cancel", "px-inquiry"] {
        let e = env.outcome_of(id).await;
        assert_eq!(e.outcome.as_str(), "succeeded", "{e:?}");
    }
    // Listed once the four Paymentz payments above exist.
    let (from, to) = common::list_window();
    env.publish(&serde_json::json!({"id": "pz-list", "gateway": "paymentz",
        "operation": "transaction_list", "from": from, "to": to}))
        .await;
    let list = env.outcome_of("pz-list").await;
    assert_eq!(list.outcome.as_str(), "succeeded", "{list:?}");
    let rows = list.response["transactions"]
        .as_array()
        .expect("rows")
        .clone();
    assert_eq!(rows.len(), 4, "{list:?}");
    assert!(rows
        .iter()
        .any(|r| r["systemPaymentId"] == "10000004" && r["transactionStatus"] == "authcancelled"));

    // The gateway's state moved exactly as asked.
    let sim = env.sim.sim();
    let p = sim.payment(GatewayId::Paymentz, "10000002").unwrap();
    assert_eq!(
        (p.status.as_str(), p.captured),
        ("capturesuccess", Amount::from_minor(1050))
    );
    let p = sim.payment(GatewayId::Paymentz, "10000001").unwrap();
    assert_eq!(p.refunded, Amount::from_minor(2500));
    assert_eq!(
        sim.payment(GatewayId::Paymentz, "10000004").unwrap().status,
        "authcancelled"
    );
    assert_eq!(
        sim.payment(GatewayId::Praxis, "20000001").unwrap().status,
        "approved"
    );
    assert_eq!(
        sim.payment(GatewayId::Praxis, "20000002").unwrap().status,
        "cancelled"
    );

    // Every command is recorded with its attempts, and every event left the outbox.
    let decided: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM commands WHERE state = 'done' AND outcome = 'succeeded'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(decided, commands.len() as i64 + 1);
    let refund_exchanges: Vec<(String, String, Option<i32>, Option<String>)> = sqlx::query_as(
        "SELECT kind, purpose, http_status, signature_sent FROM attempts WHERE command_id = 'pz-refund' ORDER BY id",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    // Token fetches are recorded as `auth` attempts, whichever command made them.
    let token_kinds: Vec<(String,)> =
        sqlx::query_as("SELECT DISTINCT kind FROM attempts WHERE purpose = 'authToken'")
            .fetch_all(&env.pool)
            .await
            .unwrap();
    assert_eq!(token_kinds, [("auth".to_string(),)], "{token_kinds:?}");
    // The snapshot before the refund (IN), then the refund (RF) with its checksum.
    let purposes: Vec<&str> = refund_exchanges.iter().map(|r| r.1.as_str()).collect();
    assert!(purposes.ends_with(&["IN", "RF"]), "{purposes:?}");
    let rf = refund_exchanges.last().unwrap();
    assert_eq!(rf.2, Some(200));
    assert_eq!(
        rf.3.as_ref().map(|s| s.len()),
        Some(32),
        "MD5 checksum recorded"
    );
    let px_sig: Option<bool> = sqlx::query_scalar(
        "SELECT signature_verified FROM attempts WHERE command_id = 'px-capture' AND kind = 'operation'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(px_sig, Some(true));
    // Every event is marked published.
    env.until_all_published(Duration::from_secs(10)).await;

    // No secret reached the database.
    let leaks: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM attempts WHERE request::text LIKE '%sandbox-secure-key%'
            OR response_body LIKE '%sandbox-secure-key%' OR request::text LIKE '%sandbox-merchant-secret%'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(leaks, 0);

    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_commands_are_rejected_with_a_reason() {
    let mut env = TestEnv::new("reject").await;
    let worker = env.start_worker();
    env.publish(&px("r-praxis-refund", "refund", "20000001"))
        .await;
    env.publish(&pz("r-amount", "refund", "10000001", Some("10.001")))
        .await;
    env.publish(
        &px("r-praxis-amount", "capture", "20000001")
            .as_object()
            .cloned()
            .map(|mut o| {
                o.insert("amount".into(), "5.00".into());
                serde_json::Value::Object(o)
            })
            .unwrap(),
    )
    .await;
    let mut unknown = pz("r-account", "capture", "10000002", Some("1.00"));
    unknown["account"] = "nope".into();
    env.publish(&unknown).await;
    env.publish(
        &serde_json::json!({"id": "r-type", "gateway": "paymentz", "operation": "refund",
                                    "payment_id": "10000001", "amount": 10}),
    )
    .await;

    let e = env.outcome_of("r-praxis-refund").await;
    assert_eq!(
        (e.outcome.as_str(), e.reason.map(|r| r.as_str())),
        ("rejected", Some("unsupported_operation"))
    );
    assert_eq!(e.routing_key_for_test(), "praxis.refund.rejected");
    let e = env.outcome_of("r-amount").await;
    assert_eq!(e.reason.map(|r| r.as_str()), Some("invalid_command"));
    assert!(
        e.description.as_deref().unwrap().starts_with("amount"),
        "{e:?}"
    );
    let e = env.outcome_of("r-praxis-amount").await;
    assert_eq!(e.reason.map(|r| r.as_str()), Some("invalid_command"));
    let e = env.outcome_of("r-account").await;
    assert_eq!(e.reason.map(|r| r.as_str()), Some("unknown_account"));
    let e = env.outcome_of("r-type").await;
    assert_eq!(
        e.description.as_deref(),
        Some("amount: must be a string, not a number")
    );

    // Nothing reached the gateway.
    assert_eq!(env.sim.sim().stats().ledger_entries, 0);
    worker.stop().await;
    env.cleanup().await;
}

trait RoutingKey {
    fn routing_key_for_test(&self) -> String;
}
impl RoutingKey for backoffice_worker::events::ResultEvent {
    fn routing_key_for_test(&self) -> String {
        self.routing_key()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_is_replayed_and_a_conflict_leaves_the_original_intact() {
    let mut env = TestEnv::new("dup").await;
    let worker = env.start_worker();
    let refund = pz("dup-refund", "refund", "10000001", Some("10"));
    env.publish(&refund).await;
    let first = env.outcome_of("dup-refund").await;
    assert_eq!(first.outcome.as_str(), "succeeded");

    // Same id, same meaning ("10" and "10.00" are one amount): replayed, not resent.
    let mut same = refund.clone();
    same["amount"] = "10.00".into();
    env.publish(&same).await;
    let replay = env
        .wait_event("dup-refund", Duration::from_secs(20), |e| e.replayed)
        .await;
    assert_eq!(replay.outcome, first.outcome);
    assert_eq!(replay.reference, first.reference);
    assert_eq!(replay.attempts, first.attempts);

    // Same id, other payload: rejected, original untouched.
    let mut other = refund.clone();
    other["amount"] = "99.00".into();
    env.publish(&other).await;
    let conflict = env
        .wait_event("dup-refund", Duration::from_secs(20), |e| {
            e.reason.map(|r| r.as_str()) == Some("idempotency_conflict")
        })
        .await;
    assert_eq!(conflict.outcome.as_str(), "rejected");
    assert_eq!(conflict.amount.as_deref(), Some("99.00"));

    let ledger = env.sim.sim().ledger_for(GatewayId::Paymentz, "10000001");
    assert_eq!(
        ledger.len(),
        1,
        "exactly one refund reached the gateway: {ledger:?}"
    );
    assert_eq!(ledger[0].amount, Amount::from_minor(1000));
    let (outcome, amount): (String, Option<i64>) =
        sqlx::query_as("SELECT outcome, amount_minor FROM commands WHERE id = 'dup-refund'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!((outcome.as_str(), amount), ("succeeded", Some(1000)));
    let rf_calls = env.sim.sim().stats().requests_for("paymentz", "RF");
    assert_eq!(rf_calls, 1);

    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_messages_go_to_the_dead_letter_queue_with_a_reason() {
    let env = TestEnv::new("dead").await;
    let worker = env.start_worker();
    env.publish_raw(
        b"this is not json".to_vec(),
        lapin::BasicProperties::default(),
    )
    .await;
    env.publish_raw(
        br#"{"gateway":"paymentz","operation":"refund"}"#.to_vec(),
        lapin::BasicProperties::default(),
    )
    .await;

    let channel = env.amqp.create_channel().await.unwrap();
    let mut reasons = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while reasons.len() < 2 && tokio::time::Instant::now() < deadline {
        let got = channel
            .basic_get(
                env.dead_letter_queue.as_str().into(),
                lapin::options::BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap();
        match got {
            Some(message) => {
                let headers = message
                    .delivery
                    .properties
                    .headers()
                    .clone()
                    .unwrap_or_default();
                let reason = match headers.inner().get("x-backoffice-reason") {
                    Some(AMQPValue::LongString(s)) => {
                        String::from_utf8_lossy(s.as_bytes()).into_owned()
                    }
                    other => panic!("no reason header: {other:?}"),
                };
                reasons.push((reason, message.delivery.data.clone()));
            }
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    reasons.sort();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert_eq!(reasons[0].0, "no `id` field");
    assert!(reasons[1].0.starts_with("not JSON"), "{:?}", reasons[1]);
    assert_eq!(
        reasons[1].1, b"this is not json",
        "the original body is kept"
    );

    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(recorded, 2);
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_also_go_to_reply_to_with_the_commands_correlation_id() {
    let mut env = TestEnv::new("reply").await;
    let worker = env.start_worker();
    let (channel, reply_queue) = common::reply_queue(&env.amqp).await;
    let properties = lapin::BasicProperties::default()
        .with_reply_to(reply_queue.name().clone())
        .with_correlation_id("corr-77".into());
    env.publish_raw(
        serde_json::to_vec(&pz("reply-1", "inquiry", "10000003", None)).unwrap(),
        properties,
    )
    .await;
    let event = env.outcome_of("reply-1").await;
    let (correlation, replied) = common::reply_event(
        &channel,
        reply_queue.name().as_str(),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(correlation.as_deref(), Some("corr-77"));
    assert_eq!(replied.command_id, event.command_id);
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_above_what_is_left_to_refund_is_declined_and_applies_nothing() {
    let mut env = TestEnv::new("limit").await;
    env.sim
        .sim()
        .create_payment(
            NewPayment::new(GatewayId::Paymentz, Amount::from_minor(10_000))
                .id("55361")
                .state("capturesuccess")
                .captured(Amount::from_minor(4_000)),
        )
        .unwrap();
    let worker = env.start_worker();
    env.publish(&pz("limit-capture-ok", "refund", "55361", Some("30.00")))
        .await;
    let ok = env.outcome_of("limit-capture-ok").await;
    assert_eq!(ok.outcome.as_str(), "succeeded", "{ok:?}");
    env.publish(&pz("limit-over", "refund", "55361", Some("20.00")))
        .await;
    let over = env.outcome_of("limit-over").await;
    assert_eq!(over.outcome.as_str(), "declined", "{over:?}");
    assert_eq!(
        env.sim.sim().ledger_for(GatewayId::Paymentz, "55361").len(),
        1
    );
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_of_a_running_command_is_replayed_to_its_own_reply_to() {
    let mut env = TestEnv::new("pendingreplay").await;
    // Slow gateway: the original is still running when its duplicate arrives.
    env.sim
        .sim()
        .update_faults(&backoffice_worker::simulator::FaultSettingsView {
            latency_ms: Some(400),
            ..Default::default()
        })
        .unwrap();
    let worker = env.start_worker();
    let (channel, reply_queue) = common::reply_queue(&env.amqp).await;
    let command = pz("pending-1", "capture", "10000002", Some("3.00"));
    env.publish(&command).await;
    let duplicate = lapin::BasicProperties::default()
        .with_reply_to(reply_queue.name().clone())
        .with_correlation_id("the-duplicate".into());
    env.publish_raw(serde_json::to_vec(&command).unwrap(), duplicate)
        .await;

    let original = env.outcome_of("pending-1").await;
    assert_eq!(original.outcome.as_str(), "succeeded");
    let replay = env
        .wait_event("pending-1", Duration::from_secs(20), |e| e.replayed)
        .await;
    assert_eq!(replay.reference, original.reference);
    // The replayed copy is the original with `replayed` set and a new
    // `occurred_at`, nothing else.
    let expected = ResultEvent {
        occurred_at: replay.occurred_at.clone(),
        ..original.replay()
    };
    assert_eq!(replay, expected);
    let at = time::OffsetDateTime::parse(
        &replay.occurred_at,
        &time::format_description::well_known::Rfc3339,
    )
    .expect("occurred_at is RFC 3339");
    assert_eq!(
        backoffice_worker::events::format_timestamp(at),
        replay.occurred_at,
        "UTC, milliseconds, Z"
    );
    let (correlation, replied) = common::reply_event(
        &channel,
        reply_queue.name().as_str(),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(correlation.as_deref(), Some("the-duplicate"));
    assert!(replied.replayed);
    assert_eq!(
        env.sim
            .sim()
            .ledger_for(GatewayId::Paymentz, "10000002")
            .len(),
        1
    );
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_larger_than_the_in_flight_cap_is_worked_off() {
    // Intake batches whatever has arrived; with a backlog waiting, a batch used
    // to ask for more permits than the cap allows and waited for them forever.
    let mut env = TestEnv::new("smallcap").await;
    env.worker_section = common::FAST_WORKER.replace("max_in_flight = 200", "max_in_flight = 3");
    let ids: Vec<String> = (0..40).map(|i| format!("smallcap-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        env.publish(&px(id, "inquiry", &format!("smallcap-trace-{i}")))
            .await;
    }
    let worker = env.start_worker();
    env.wait_all(&ids, Duration::from_secs(60)).await;
    let stored = env
        .scalar_i64(
            "SELECT count(*) FROM commands WHERE id LIKE $1 AND outcome IS NOT NULL",
            "smallcap-%",
        )
        .await;
    assert_eq!(stored, 40);
    worker.stop().await;
    env.cleanup().await;
}
