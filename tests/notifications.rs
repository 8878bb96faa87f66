//! Notifications in, end to end: the simulator POSTs signed notifications
//! over real HTTP to the worker's real listener; the worker records them in
//! the real PostgreSQL, decides by its rules, and runs the automated
//! command through the pipeline, publishing on the real RabbitMQ. Each test
//! starts its world ([`World`]: database, queues, simulator, worker and its
//! listener) and reads as its scenario.

mod common;

use std::time::Duration;

use backoffice_worker::money::Amount;
use backoffice_worker::simulator::notify;
use backoffice_worker::simulator::{Effect, GatewayId, NewPayment};
use common::notify::{post, spawn_worker_process, wait_listening, World};
use common::{free_port, TestEnv};

const RULES: &str = r#"
[automation]
hold_deadline = "6d"
on_deadline = "cancel"

[[automation.rules]]
name = "small-usd"
gateway = "praxis"
account = "default"
frontend = "Integration TEST USD"
currency = "USD"
max_amount = "500.00"
action = "capture"

[[automation.rules]]
name = "cancel-eur"
gateway = "praxis"
currency = "EUR"
action = "cancel"

[[automation.rules]]
name = "paymentz-all"
gateway = "paymentz"
max_amount = "10000.00"
action = "capture"
"#;

/// Whether `value` satisfies the schema in `schemas/{file}`.
fn satisfies(file: &str, value: &serde_json::Value) -> bool {
    let text =
        std::fs::read_to_string(format!("{}/schemas/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
    jsonschema::validator_for(&schema).unwrap().is_valid(value)
}

/// The line of `backoffice_commands_total` for a Praxis capture decided as `outcome`.
fn captures(outcome: &str, n: u64) -> String {
    format!(
        "backoffice_commands_total{{gateway=\"praxis\",operation=\"capture\",outcome=\"{outcome}\"}} {n}"
    )
}

const CANCELLED_ONCE: &str =
    r#"backoffice_commands_total{gateway="praxis",operation="cancel",outcome="succeeded"} 1"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authorized_praxis_payment_is_captured_once_with_no_command_published() {
    let mut w = World::notified("notify_praxis_capture", RULES).await;
    w.authorize("700001", 1050, "USD");
    let event = w.outcome_of("auto.praxis.default.700001").await;
    assert_eq!(event.outcome.as_str(), "succeeded");
    assert!(satisfies(
        "result.schema.json",
        &serde_json::to_value(&event).unwrap()
    ));
    assert_eq!(event.operation.as_deref(), Some("capture"));
    let origin = event.origin.clone().expect("origin");
    assert_eq!(origin.kind, "notification");
    assert_eq!(origin.rule, "small-usd");
    let metadata = event.metadata.unwrap().value();
    assert_eq!(metadata["trace_id"], 700001);
    assert_eq!(metadata["order_id"], "order-700001");
    // Our own capture makes Praxis notify `approved`: recorded, confirming.
    w.wait_scalar(
        "SELECT count(*) FROM notifications WHERE payment_id = $1",
        "700001",
        2,
    )
    .await;
    let approved: String = sqlx::query_scalar(
        "SELECT decision FROM notifications WHERE payment_id = '700001' AND status = 'approved'",
    )
    .fetch_one(&w.pool)
    .await
    .unwrap();
    assert_eq!(approved, "ignored");
    assert_eq!(w.effects(GatewayId::Praxis, "700001"), [Effect::Capture]);
    let acted: (String, String, bool) =
        sqlx::query_as("SELECT decision, rule, verified FROM notifications WHERE id = $1::bigint")
            .bind(origin.notification_id.parse::<i64>().unwrap())
            .fetch_one(&w.pool)
            .await
            .unwrap();
    assert_eq!(acted, ("acted".into(), "small-usd".into(), true));
    // The automated command is counted once, by the executor that ran it.
    w.metrics_with(&[&captures("succeeded", 1)]).await;
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paymentz_authorization_is_captured_for_the_full_amount() {
    let mut w = World::notified("notify_paymentz_capture", RULES).await;
    w.sim
        .sim()
        .create_payment(
            NewPayment::new(GatewayId::Paymentz, Amount::from_minor(15_600))
                .id("800002")
                .state("authsuccessful")
                .currency("EUR"),
        )
        .unwrap();
    let event = w.outcome_of("auto.paymentz.default.800002").await;
    assert_eq!(event.outcome.as_str(), "succeeded");
    assert_eq!(event.amount.as_deref(), Some("156.00"));
    assert_eq!(event.origin.unwrap().rule, "paymentz-all");
    let ledger = w.sim.sim().ledger_for(GatewayId::Paymentz, "800002");
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].operation, Effect::Capture);
    assert_eq!(ledger[0].amount, Amount::from_minor(15_600));
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_rule_cancels() {
    let mut w = World::notified("notify_cancel_rule", RULES).await;
    w.authorize("700003", 2000, "EUR");
    let event = w.outcome_of("auto.praxis.default.700003").await;
    assert_eq!(event.outcome.as_str(), "succeeded");
    assert_eq!(event.operation.as_deref(), Some("cancel"));
    assert_eq!(event.origin.unwrap().rule, "cancel-eur");
    assert_eq!(w.effects(GatewayId::Praxis, "700003"), [Effect::Cancel]);
    w.metrics_with(&[CANCELLED_ONCE]).await;
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_notification_five_times_at_once_acts_once_and_is_answered_alike() {
    let mut w = World::started("notify_repeats", RULES).await;
    let view = w.authorize("700004", 1000, "USD");
    let signer = w.sim.sim().signer(&view).unwrap();
    // Five deliveries of one notification (one body, as Praxis re-sends it),
    // concurrently, plus an older status arriving out of order among them.
    let body = notify::body(&view, &signer, false, None);
    let answers = post_all(w.port, vec![body.clone(); 5]).await;
    assert_eq!(answers.len(), 5);
    assert!(
        answers.iter().all(|a| a == &answers[0]),
        "identical answers: {answers:?}"
    );
    let (status, text) = &answers[0];
    assert_eq!(*status, 200);
    let answer: serde_json::Value = serde_json::from_str(text).unwrap();
    assert_eq!(answer["status"], 0);
    let event = w.outcome_of("auto.praxis.default.700004").await;
    assert_eq!(event.outcome.as_str(), "succeeded");
    w.wait_scalar(
        "SELECT repeats::bigint FROM notifications WHERE payment_id = $1 AND status = 'authorized'",
        "700004",
        4,
    )
    .await;
    // A sixth, late, after the capture: still one side effect.
    assert_eq!(w.post("praxis", body).await, answers[0]);
    w.drain_events(Duration::from_millis(500)).await;
    assert_eq!(w.effects(GatewayId::Praxis, "700004"), [Effect::Capture]);
    assert_eq!(
        w.seen["auto.praxis.default.700004"]
            .iter()
            .filter(|e| !e.replayed && !e.reconciled)
            .count(),
        1
    );
    w.finish().await;
}

/// POSTs every body concurrently to the Praxis path; every answer.
async fn post_all(port: u16, bodies: Vec<String>) -> Vec<(u16, String)> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(bodies.len());
    for body in bodies {
        let tx = tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(post(port, "praxis", body).await).await;
        });
    }
    drop(tx);
    let mut answers = Vec::new();
    while let Some(answer) = rx.recv().await {
        answers.push(answer);
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_signature_acts_only_on_the_gateways_answer_and_never_for_an_unknown_payment() {
    let mut w = World::started("notify_bad_signature", RULES).await;
    let view = w.authorize("700005", 1000, "USD");
    w.notify("700005", true, None);
    let event = w.outcome_of("auto.praxis.default.700005").await;
    assert_eq!(event.outcome.as_str(), "succeeded");
    let verified: bool = sqlx::query_scalar(
        "SELECT verified FROM notifications WHERE payment_id = '700005' AND status = 'authorized'",
    )
    .fetch_one(&w.pool)
    .await
    .unwrap();
    assert!(!verified, "acted on the inquiry, not on the body");
    assert_eq!(w.effects(GatewayId::Praxis, "700005"), [Effect::Capture]);

    // A forged notification about a payment the gateway does not know.
    let mut ghost = view.clone();
    ghost.id = "4242".into();
    let signer = w.sim.sim().signer(&view).unwrap();
    let (status, text) = w
        .post("praxis", notify::body(&ghost, &signer, true, None))
        .await;
    assert_eq!(status, 200);
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["status"], 1, "refused: {text}");
    w.wait_scalar(
        "SELECT count(*) FROM notifications WHERE payment_id = $1 AND decision = 'ignored'
           AND reason LIKE '%not acted on%'",
        "4242",
        1,
    )
    .await;
    let commands: i64 =
        sqlx::query_scalar("SELECT count(*) FROM commands WHERE payment_id = '4242'")
            .fetch_one(&w.pool)
            .await
            .unwrap();
    assert_eq!(commands, 0);
    w.finish().await;
}

/// Waits for the first event that is not a command's result (a hold).
async fn first_other_event(env: &mut TestEnv) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while env.others.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no held event");
        env.next_event(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mismatch_is_held_and_published_as_held() {
    let mut w = World::started("notify_mismatch", RULES).await;
    w.authorize("700006", 1000, "USD");
    w.notify("700006", false, Some(900));
    first_other_event(&mut w).await;
    let (key, held) = &w.others[0];
    assert_eq!(key, "praxis.authorization.held");
    assert!(satisfies("held.schema.json", held), "{held}");
    assert_eq!(held["payment_id"], "700006");
    assert_eq!(held["origin"]["rule"], "mismatch");
    assert_eq!(held["amount"], "1000");
    assert_eq!(held["currency"], "USD");
    let decision: String =
        sqlx::query_scalar("SELECT decision FROM notifications WHERE payment_id = '700006'")
            .fetch_one(&w.pool)
            .await
            .unwrap();
    assert_eq!(decision, "held");
    assert!(w.effects(GatewayId::Praxis, "700006").is_empty());
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_past_its_deadline_is_cancelled() {
    let mut w = World::notified(
        "notify_deadline",
        "[automation]\nhold_deadline = \"1s\"\non_deadline = \"cancel\"\n",
    )
    .await;
    w.authorize("700007", 1000, "USD");
    let event = w.outcome_of("auto.praxis.default.700007").await;
    assert_eq!(event.outcome.as_str(), "succeeded");
    assert_eq!(event.operation.as_deref(), Some("cancel"));
    assert_eq!(event.origin.unwrap().rule, "deadline");
    assert_eq!(w.effects(GatewayId::Praxis, "700007"), [Effect::Cancel]);
    let closed_by: String = sqlx::query_scalar(
        "SELECT hold_closed_by FROM notifications WHERE payment_id = '700007' AND status = 'authorized'",
    )
    .fetch_one(&w.pool)
    .await
    .unwrap();
    assert_eq!(closed_by, "deadline");
    // The deadline's command is concluded by its executor, and counted once.
    w.metrics_with(&[CANCELLED_ONCE]).await;
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_cut_off_loses_no_notification() {
    let mut w = World::new("notify_db_cut", RULES).await;
    w.point_simulator();
    // The worker reaches the database through a proxy the test cuts.
    let proxy = common::Proxy::start("127.0.0.1:5432").await;
    let proxied = format!("postgres://postgres@127.0.0.1:{}/{}", proxy.port, w.db_name);
    let config = backoffice_worker::config::Config::parse(
        std::path::Path::new("dbcut.toml"),
        &w.config_text().replace(&w.db_url, &proxied),
        |_| None,
    )
    .unwrap();
    let token = tokio_util::sync::CancellationToken::new();
    let join = tokio::spawn(backoffice_worker::worker::run_with(config, token.clone()));
    wait_listening(w.port).await;
    // Wait until the worker is ready (migrations applied through the proxy).
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.cut();
    w.authorize("700008", 1000, "USD");
    // Answered -1 (not recorded) at least once, so the simulator re-sends.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while w.sim.sim().notify_stats().resent == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never answered -1");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    proxy.restore();
    let event = w.outcome_of("auto.praxis.default.700008").await;
    assert_eq!(event.outcome.as_str(), "succeeded");
    assert_eq!(w.effects(GatewayId::Praxis, "700008"), [Effect::Capture]);
    let rows: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM notifications WHERE payment_id = '700008' AND status = 'authorized'",
    )
    .fetch_one(&w.pool)
    .await
    .unwrap();
    assert_eq!(rows, 1);
    token.cancel();
    let _ = join.await;
    w.finish().await;
}

/// The capture `cap-{payment}` published by an order system applies at the
/// gateway, but its answer is lost (`fault` on `deposit-capture`), and every
/// inquiry about it fails.
async fn capture_with_its_answer_lost(
    w: &World,
    payment: &str,
    fault: backoffice_worker::simulator::FaultKind,
) {
    use backoffice_worker::simulator::{FaultKind, FaultScript};
    w.sim
        .sim()
        .script_fault(FaultScript::new(fault, 1).operation("deposit-capture"))
        .unwrap();
    w.sim
        .sim()
        .script_fault(FaultScript::new(FaultKind::ErrorBefore, 1_000).operation("find-transaction"))
        .unwrap();
    w.publish(&common::px(&format!("cap-{payment}"), "capture", payment))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_capture_is_settled_by_a_later_approved_notification() {
    let mut w = World::new("notify_evidence", "").await;
    // Unknowns are reconciled only much later, so only the notification can settle it.
    w.worker_section = w.worker_section.replace(
        "reconcile_schedule = [\"300ms\", \"600ms\"]",
        "reconcile_schedule = [\"1h\"]",
    );
    w.start().await;
    w.authorize("700009", 1000, "USD");
    capture_with_its_answer_lost(
        &w,
        "700009",
        backoffice_worker::simulator::FaultKind::ResetAfter,
    )
    .await;
    let first = w.outcome_of("cap-700009").await;
    assert_eq!(first.outcome.as_str(), "unknown");
    w.notify("700009", false, None);
    let settled = w
        .wait_event("cap-700009", Duration::from_secs(20), |e| e.reconciled)
        .await;
    assert_eq!(settled.outcome.as_str(), "succeeded");
    assert!(settled
        .description
        .unwrap()
        .contains("settled by verified notification"));
    let why: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM attempts WHERE command_id = 'cap-700009' AND purpose LIKE 'notification #%'",
    )
    .fetch_one(&w.pool)
    .await
    .unwrap();
    assert_eq!(why, 1, "an attempt-like record says why");
    assert_eq!(w.effects(GatewayId::Praxis, "700009"), [Effect::Capture]);
    // Counted as decided `unknown`, then once more under its settled
    // outcome, as a settled unknown is: once each.
    w.metrics_with(&[&captures("unknown", 1), &captures("succeeded", 1)])
        .await;
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_are_404_and_large_bodies_413() {
    let w = World::started("notify_paths", RULES).await;
    let client = reqwest::Client::new();
    let url = |path: &str| format!("http://127.0.0.1:{}{path}", w.port);
    for path in [
        "/notifications/stripe/default",
        "/notifications/praxis/nobody",
        "/metrics",
        "/",
    ] {
        let status = client
            .post(url(path))
            .body("{}")
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status.as_u16(), 404, "{path}");
    }
    let big = "x".repeat(70 * 1024);
    let status = client
        .post(url("/notifications/praxis/default"))
        .body(big)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 413);
    let (status, text) = w.post("praxis", "not json".into()).await;
    assert_eq!(status, 200);
    assert!(text.contains("\"status\":1"), "{text}");
    let (status, _) = w.post("paymentz", "not json".into()).await;
    assert_eq!(status, 400);
    // What PostgreSQL cannot store in jsonb (`\u0000`): the body is still recorded.
    let (status, text) = w
        .post(
            "praxis",
            r#"{"trace_id":1,"transaction_status":"authorized","note":"a\u0000b"}"#.into(),
        )
        .await;
    assert_eq!(status, 200);
    assert!(text.contains("\"status\":1"), "{text}");
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications")
        .fetch_one(&w.pool)
        .await
        .unwrap();
    assert_eq!(recorded, 3, "unreadable bodies on known paths are recorded");
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_between_recording_and_acting_acts_once_after_restart() {
    let mut w = World::new("notify_sigkill", RULES).await;
    w.point_simulator();
    // Slow gateway calls: the kill lands after the notification is recorded
    // (and its command queued) and before the capture has been answered.
    w.sim
        .sim()
        .update_faults(&backoffice_worker::simulator::FaultSettingsView {
            latency_ms: Some(1_500),
            ..Default::default()
        })
        .unwrap();
    let mut first = spawn_worker_process(&w, "first.log", "info");
    wait_listening(w.port).await;
    // Migrations applied before anything can be recorded.
    w.wait_scalar(
        "SELECT count(*) FROM _sqlx_migrations WHERE version::text = $1",
        "20261204001001",
        1,
    )
    .await;
    let ids: Vec<String> = (0..5).map(|k| format!("70100{k}")).collect();
    for id in &ids {
        w.authorize(id, 1000, "USD");
    }
    w.wait_scalar(
        "SELECT count(*) FROM notifications WHERE decision = 'acted' AND payment_id LIKE $1",
        "70100%",
        5,
    )
    .await;
    first.0.kill().expect("SIGKILL");
    first.0.wait().unwrap();
    let done_at_kill: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM commands WHERE id LIKE 'auto.praxis.default.70100%' AND state = 'done'",
    )
    .fetch_one(&w.pool)
    .await
    .unwrap();
    assert!(done_at_kill < 5, "the kill came too late to test anything");
    // The gateway answers at once again, so the restarted worker's inquiries settle it.
    w.sim
        .sim()
        .update_faults(&backoffice_worker::simulator::FaultSettingsView {
            latency_ms: Some(0),
            ..Default::default()
        })
        .unwrap();

    let second = spawn_worker_process(&w, "second.log", "info");
    let commands: Vec<String> = ids
        .iter()
        .map(|id| format!("auto.praxis.default.{id}"))
        .collect();
    w.wait_all(&commands, Duration::from_secs(60)).await;
    for id in &ids {
        let event = w.outcome_of(&format!("auto.praxis.default.{id}")).await;
        assert_eq!(event.outcome.as_str(), "succeeded", "{id}");
        assert_eq!(w.effects(GatewayId::Praxis, id), [Effect::Capture], "{id}");
    }
    // Stopped before the world is cleaned up: a worker still running would
    // declare its queues again once they were deleted, and leave them behind.
    drop(second);
    w.finish().await;
}

/// What a command settled by a notification while it was still verifying
/// must show: one side effect, one result event (the first and only
/// outcome, `succeeded`), one attempt-like record naming the notification,
/// the notification naming the command, and one decision counted.
async fn settled_once_by_the_notification(w: &mut World, command: &str, payment: &str) {
    let event = w.outcome_of(command).await;
    assert_eq!(event.outcome.as_str(), "succeeded");
    let description = event.description.clone().unwrap_or_default();
    assert!(
        description.contains("confirmed by verified notification #"),
        "{description}"
    );
    assert_eq!(event.gateway_status.as_deref(), Some("approved"));
    // Whatever the executor still had in hand, nothing else is published.
    w.drain_events(Duration::from_millis(1_500)).await;
    assert_eq!(
        w.seen[command].len(),
        1,
        "one result event: {:?}",
        w.seen[command]
    );
    let (state, outcome, settled): (String, String, Option<String>) =
        sqlx::query_as("SELECT state, outcome, settled_outcome FROM commands WHERE id = $1")
            .bind(command)
            .fetch_one(&w.pool)
            .await
            .unwrap();
    assert_eq!(
        (state.as_str(), outcome.as_str(), settled),
        ("done", "succeeded", None)
    );
    let why: Vec<String> = sqlx::query_scalar(
        "SELECT purpose FROM attempts WHERE command_id = $1 AND purpose LIKE 'notification #%'",
    )
    .bind(command)
    .fetch_all(&w.pool)
    .await
    .unwrap();
    assert_eq!(why.len(), 1, "one attempt-like record says why: {why:?}");
    let named: (i64, Option<String>) = sqlx::query_as(
        "SELECT id, settled_command FROM notifications
          WHERE payment_id = $1 AND status = 'approved' AND verified",
    )
    .bind(payment)
    .fetch_one(&w.pool)
    .await
    .unwrap();
    assert_eq!(named.1.as_deref(), Some(command));
    assert_eq!(why[0], format!("notification #{}", named.0));
    assert!(description.contains(&format!("#{}", named.0)));
    assert_eq!(w.effects(GatewayId::Praxis, payment), [Effect::Capture]);
    let leases: i64 =
        sqlx::query_scalar("SELECT count(*) FROM payment_leases WHERE command_id = $1")
            .bind(command)
            .fetch_one(&w.pool)
            .await
            .unwrap();
    assert_eq!(leases, 0, "its payment is released");
    // Its one conclusion is counted once, and never as `unknown`.
    let metrics = w.metrics_with(&[&captures("succeeded", 1)]).await;
    assert!(!metrics.contains(&captures("unknown", 1)), "{metrics}");
}

/// A world whose verify loop is long (every inquiry fails), and unknowns
/// reconciled only much later: only a notification can settle a command in
/// time. Not started.
async fn long_verify(test: &str) -> World {
    let mut w = World::new(test, "").await;
    w.worker_section = w
        .worker_section
        .replace("reconcile_attempts = 2", "reconcile_attempts = 60")
        .replace(
            "reconcile_schedule = [\"300ms\", \"600ms\"]",
            "reconcile_schedule = [\"1h\"]",
        );
    w
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_still_verifying_is_settled_once_by_a_notification_arriving_meanwhile() {
    let mut w = long_verify("notify_verifying").await;
    w.start().await;
    w.authorize("700011", 1000, "USD");
    capture_with_its_answer_lost(
        &w,
        "700011",
        backoffice_worker::simulator::FaultKind::ResetAfter,
    )
    .await;
    // The executor is in its verify loop: the attempt was ambiguous and an
    // inquiry has been made.
    w.wait_at_least(
        "SELECT count(*) FROM attempts WHERE command_id = $1 AND kind = 'inquiry'",
        "cap-700011",
        1,
    )
    .await;
    let state: String = sqlx::query_scalar("SELECT state FROM commands WHERE id = 'cap-700011'")
        .fetch_one(&w.pool)
        .await
        .unwrap();
    assert_eq!(
        state, "running",
        "still verifying when the notification comes"
    );
    w.notify("700011", false, None);
    settled_once_by_the_notification(&mut w, "cap-700011", "700011").await;
    let reason: String = sqlx::query_scalar(
        "SELECT reason FROM notifications WHERE payment_id = '700011' AND status = 'approved'",
    )
    .fetch_one(&w.pool)
    .await
    .unwrap();
    assert_eq!(reason, "evidence: settled cap-700011 as succeeded");
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_that_came_while_the_call_hung_settles_the_verify_loop_once() {
    let mut w = long_verify("notify_during_call").await;
    w.start().await;
    w.authorize("700012", 1000, "USD");
    // The capture applies (and the simulator notifies `approved` at once),
    // but its connection hangs past the worker's timeout; every inquiry fails.
    w.sim
        .sim()
        .update_faults(&backoffice_worker::simulator::FaultSettingsView {
            hang_ms: Some(3_000),
            ..Default::default()
        })
        .unwrap();
    w.point_simulator();
    capture_with_its_answer_lost(
        &w,
        "700012",
        backoffice_worker::simulator::FaultKind::TimeoutAfter,
    )
    .await;
    settled_once_by_the_notification(&mut w, "cap-700012", "700012").await;
    // It was recorded while the call was in flight (nothing to settle yet),
    // and the verify loop found it before its first inquiry.
    let reason: String = sqlx::query_scalar(
        "SELECT reason FROM notifications WHERE payment_id = '700012' AND status = 'approved'",
    )
    .fetch_one(&w.pool)
    .await
    .unwrap();
    assert!(
        reason.contains("then settled cap-700012 as succeeded (it was verifying"),
        "{reason}"
    );
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_inquiry_bucket_allows_the_rate_refills_and_never_exceeds_its_burst() {
    use backoffice_worker::store::notifications::take_inquiry_token;
    use time::{Duration as Span, OffsetDateTime};
    let env = TestEnv::new("notify_bucket").await;
    let t0 = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
    let mut conn = env.pool.acquire().await.unwrap();
    // 2 a minute: a burst of 2, then one every 30 s.
    async fn take_at(
        conn: &mut sqlx::PgConnection,
        account: &str,
        at: time::OffsetDateTime,
    ) -> bool {
        take_inquiry_token(conn, "praxis", account, 2, Some(at))
            .await
            .unwrap()
    }
    macro_rules! take {
        ($account:expr, $at:expr) => {
            take_at(&mut conn, $account, t0 + Span::seconds($at))
        };
    }
    assert!(take!("default", 0).await);
    assert!(take!("default", 0).await);
    assert!(
        !take!("default", 0).await,
        "the burst is the per-minute figure"
    );
    assert!(take!("other", 0).await, "one bucket per account");
    assert!(!take!("default", 29).await, "0.97 of a token");
    assert!(take!("default", 30).await, "one token every 30 s");
    assert!(!take!("default", 44).await, "a refusal takes nothing ...");
    assert!(
        take!("default", 60).await,
        "... and loses nothing of the refill"
    );
    // Idle for hours: still no more than the burst.
    assert!(take!("default", 10_000).await);
    assert!(take!("default", 10_000).await);
    assert!(!take!("default", 10_000).await);
    // An instance whose clock is behind neither refills nor rewinds it.
    assert!(!take!("default", 9_000).await);
    assert!(!take!("default", 10_010).await);
    assert!(take!("default", 10_030).await);
    drop(conn);
    // Many instances at the same moment: exactly the burst is granted.
    let at = Some(t0 + Span::seconds(20_000));
    let takers: Vec<_> = (0..20)
        .map(|_| {
            let pool = env.pool.clone();
            tokio::spawn(async move {
                let mut conn = pool.acquire().await.unwrap();
                take_inquiry_token(&mut conn, "paymentz", "default", 5, at)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut granted = 0;
    for taker in takers {
        granted += i32::from(taker.await.unwrap());
    }
    assert_eq!(granted, 5);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unverified_notifications_is_inquired_at_one_rate_shared_by_two_workers() {
    let mut w = World::new("notify_flood", RULES).await;
    let listen = format!("listen = \"127.0.0.1:{}\"\n", w.port);
    w.worker_section = w
        .worker_section
        .replace(&listen, &format!("{listen}inquiries_per_minute = 2\n"));
    w.start().await;
    // A second instance on the same database, listening on its own port.
    let port2 = free_port();
    let section = w.worker_section.clone();
    w.worker_section = section.replace(&listen, &format!("listen = \"127.0.0.1:{port2}\"\n"));
    let second = w.start_worker();
    w.worker_section = section;
    wait_listening(port2).await;
    let mut bodies = Vec::new();
    for k in 0..12 {
        let view = w.authorize(&format!("7020{k:02}"), 1000, "USD");
        let signer = w.sim.sim().signer(&view).unwrap();
        bodies.push(notify::body(&view, &signer, true, None));
    }
    let started = tokio::time::Instant::now();
    // Half to each instance, all at once.
    let (tx, mut rx) = tokio::sync::mpsc::channel(bodies.len());
    for (k, body) in bodies.into_iter().enumerate() {
        let tx = tx.clone();
        let port = if k % 2 == 0 { w.port } else { port2 };
        tokio::spawn(async move {
            let _ = tx.send(post(port, "praxis", body).await).await;
        });
    }
    drop(tx);
    while let Some((status, text)) = rx.recv().await {
        // Answered as the spec says for a signature that does not verify.
        assert_eq!(status, 200);
        let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(answer["status"], 1, "{text}");
    }
    // The burst is inquired (and, confirmed, acted on); the rest are put off,
    // again and again, by whichever instance claims them.
    w.wait_at_least(
        "SELECT count(*) FROM notifications WHERE payment_id LIKE $1 AND decision = 'acted'",
        "7020%",
        2,
    )
    .await;
    w.wait_scalar(
        "SELECT count(*) FROM notifications WHERE payment_id LIKE $1 AND decision = 'unverified'
            AND rate_limited < 3",
        "7020%",
        0,
    )
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    let allowed = 2 + (elapsed * 2.0 / 60.0).floor() as i64;
    let rows: Vec<(String, i32, i32, String, i32)> = sqlx::query_as(
        "SELECT decision, inquiries, rate_limited, answer_body, answer_status FROM notifications
          WHERE payment_id LIKE '7020%'",
    )
    .fetch_all(&w.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 12, "every notification is recorded");
    let inquired = rows.iter().filter(|r| r.0 != "unverified").count() as i64;
    assert!(
        (2..=allowed).contains(&inquired),
        "{inquired} inquiries in {elapsed:.1}s at 2 a minute shared by two instances (at most {allowed})"
    );
    for (decision, inquiries, rate_limited, body, status) in &rows {
        assert_eq!(*status, 200);
        assert!(body.contains("\"status\":1"), "{body}");
        assert_eq!(*inquiries, 0, "no inquiry went unanswered");
        if decision == "unverified" {
            assert!(*rate_limited >= 3);
        } else {
            assert_eq!(decision, "acted");
        }
    }
    let captured = (0..12)
        .filter(|k| {
            !w.effects(GatewayId::Praxis, &format!("7020{k:02}"))
                .is_empty()
        })
        .count() as i64;
    assert!(captured <= inquired, "acted only on the gateway's answer");
    second.stop().await;
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_past_its_deadline_with_on_deadline_alert_is_reported_and_left_for_a_person() {
    let mut w = World::notified(
        "notify_alert",
        "[automation]\nhold_deadline = \"1s\"\non_deadline = \"alert\"\n",
    )
    .await;
    w.authorize("700013", 1000, "USD");
    // No rule matches: held, and published as held.
    first_other_event(&mut w).await;
    assert_eq!(w.others[0].0, "praxis.authorization.held");
    // The deadline passes: reported on the row ...
    w.wait_scalar(
        "SELECT count(*) FROM notifications WHERE payment_id = $1 AND decision = 'held'
            AND reason LIKE '%deadline passed: left for a person%'",
        "700013",
        1,
    )
    .await;
    // ... and as a metric, with the hold still counted open.
    let metrics = w
        .metrics_with(&[
            "backoffice_hold_deadlines_total{action=\"alert\"} 1",
            "backoffice_holds_open 1",
        ])
        .await;
    assert!(!metrics.contains("backoffice_hold_deadlines_total{action=\"cancel\"}"));
    // Left for a person: still on the operators' list of open holds, no
    // deadline any more (reported once), nothing sent to the gateway.
    let mut conn = w.pool.acquire().await.unwrap();
    let open = backoffice_worker::store::notifications::open_hold_rows(&mut conn, 10)
        .await
        .unwrap();
    drop(conn);
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].payment_id.as_deref(), Some("700013"));
    assert!(open[0].hold_deadline.is_none() && open[0].hold_closed_at.is_none());
    // The jobs' periodic look sees the hold open and nothing due: no claim
    // is made for it again.
    let mut conn = w.pool.acquire().await.unwrap();
    let due = backoffice_worker::store::notifications::due_work(&mut conn)
        .await
        .unwrap();
    drop(conn);
    assert!(!due.deadlines && !due.inquiries, "{due:?}");
    assert_eq!(due.open_holds, 1);
    assert!(due.oldest_hold_seconds > 0.0, "{due:?}");
    let commands: i64 = sqlx::query_scalar("SELECT count(*) FROM commands")
        .fetch_one(&w.pool)
        .await
        .unwrap();
    assert_eq!(commands, 0, "an alert makes no command");
    w.drain_events(Duration::from_millis(1_000)).await;
    assert_eq!(w.others.len(), 1, "an alert publishes no second event");
    assert!(w.seen.is_empty());
    assert!(w.effects(GatewayId::Praxis, "700013").is_empty());
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rules_delay_holds_the_action_back_until_it_has_passed() {
    let mut w = World::notified(
        "notify_delay",
        "[[automation.rules]]\nname = \"later\"\ngateway = \"praxis\"\naction = \"capture\"\ndelay = \"2s\"\n",
    )
    .await;
    w.authorize("700014", 1000, "USD");
    let event = w.outcome_of("auto.praxis.default.700014").await;
    assert_eq!(event.outcome.as_str(), "succeeded");
    assert_eq!(event.origin.unwrap().rule, "later");
    // The database's own clock: the first call to the gateway came no
    // earlier than the delay after the notification was recorded.
    let waited: f64 = sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM (SELECT min(started_at) FROM attempts
                                      WHERE command_id = 'auto.praxis.default.700014')
                                 - n.received_at)::float8
           FROM notifications n WHERE n.payment_id = '700014' AND n.status = 'authorized'",
    )
    .fetch_one(&w.pool)
    .await
    .unwrap();
    assert!(waited >= 2.0, "acted {waited:.3}s after the notification");
    assert_eq!(w.effects(GatewayId::Praxis, "700014"), [Effect::Capture]);
    w.finish().await;
}

/// `backoffice-worker notifications ARGS --config <the world's file>`: its
/// exit status and standard output.
fn notifications_cli(w: &World, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_backoffice-worker"))
        .arg("notifications")
        .args(args)
        .arg("--config")
        .arg(w.config_file())
        .env_remove("AMQP_URL")
        .env_remove("DATABASE_URL")
        .output()
        .expect("run the binary");
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_and_list_say_what_a_notification_proves_and_how_often_it_was_rate_limited() {
    let mut w = World::new("notify_cli_columns", RULES).await;
    let listen = format!("listen = \"127.0.0.1:{}\"\n", w.port);
    w.worker_section = w
        .worker_section
        .replace(&listen, &format!("{listen}inquiries_per_minute = 1\n"));
    w.start().await;
    for id in ["700021", "700022", "700023"] {
        w.authorize(id, 1000, "USD");
    }
    // Captured on a verified notification: Praxis then notifies `approved`,
    // evidence of the capture.
    w.notify("700021", false, None);
    w.outcome_of("auto.praxis.default.700021").await;
    w.wait_scalar(
        "SELECT count(*) FROM notifications WHERE payment_id = $1 AND evidence = 'capture'",
        "700021",
        1,
    )
    .await;
    // Two that do not verify, one inquiry a minute: one waits for the other.
    w.notify("700022", true, None);
    w.notify("700023", true, None);
    w.wait_at_least(
        "SELECT COALESCE(max(rate_limited), 0)::bigint FROM notifications WHERE payment_id LIKE $1",
        "70002%",
        1,
    )
    .await;
    let evidence: i64 = w
        .scalar_i64(
            "SELECT id FROM notifications WHERE payment_id = $1 AND status = 'approved'",
            "700021",
        )
        .await;
    let limited: i64 = w
        .scalar_i64(
            "SELECT id FROM notifications WHERE payment_id LIKE $1 AND rate_limited > 0",
            "70002%",
        )
        .await;

    let shown = notifications_cli(&w, &["show", &evidence.to_string()]);
    assert!(shown.contains("  evidence     of a capture\n"), "{shown}");
    let shown = notifications_cli(&w, &["show", &limited.to_string()]);
    let line = shown
        .lines()
        .find(|l| l.starts_with("  inquiries "))
        .unwrap_or_else(|| panic!("no inquiries line: {shown}"));
    let put_off: i32 = line
        .trim_end_matches(" put off by the rate limit")
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(put_off >= 1, "{line}");
    assert!(line.starts_with("  inquiries    0 made, "), "{line}");
    let json: serde_json::Value = serde_json::from_str(&notifications_cli(
        &w,
        &["show", &limited.to_string(), "--json"],
    ))
    .unwrap();
    assert!(json["rate_limited"].as_i64().unwrap() >= 1, "{json}");
    assert_eq!(json["evidence"], serde_json::Value::Null);

    let listed = notifications_cli(&w, &["list"]);
    let row = |id: i64| {
        listed
            .lines()
            .find(|l| l.starts_with(&format!("{id} ")))
            .unwrap_or_else(|| panic!("{id} not listed: {listed}"))
            .to_string()
    };
    assert!(
        row(evidence).contains("ignored (evidence: capture)"),
        "{listed}"
    );
    assert!(
        row(limited).contains("unverified (rate-limited "),
        "{listed}"
    );
    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&notifications_cli(&w, &["list", "--json"])).unwrap();
    let of = |id: i64| listed.iter().find(|r| r["id"] == id).unwrap().clone();
    assert_eq!(of(evidence)["evidence"], "capture");
    assert!(of(limited)["rate_limited"].as_i64().unwrap() >= 1);
    // The filters as the spec writes them.
    let waiting: Vec<serde_json::Value> = serde_json::from_str(&notifications_cli(
        &w,
        &["list", "--since", "1h", "--status", "unverified", "--json"],
    ))
    .unwrap();
    assert!(
        waiting.iter().all(|r| r["decision"] == "unverified"),
        "{waiting:?}"
    );
    assert!(waiting.iter().any(|r| r["id"] == limited), "{waiting:?}");
    w.finish().await;
}
