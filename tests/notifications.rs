//! Notifications in, end to end: the simulator POSTs signed notifications
//! over real HTTP to the worker's real listener; the worker records them in
//! the real PostgreSQL, decides by its rules, and runs the automated
//! command through the pipeline, publishing on the real RabbitMQ.

mod common;

use std::time::Duration;

use backoffice_worker::money::Amount;
use backoffice_worker::simulator::notify::{self, NotifySettings, SendRequest};
use backoffice_worker::simulator::{Effect, GatewayId, NewPayment};
use common::{free_port, TestEnv, FAST_WORKER};

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

/// A test world whose worker listens for notifications on its own port,
/// with `automation` as its rules, and a simulator that notifies it.
async fn world(test: &str, automation: &str, notify_now: bool) -> (TestEnv, u16) {
    let mut env = TestEnv::new(test).await;
    let port = free_port();
    env.worker_section =
        format!("{FAST_WORKER}\n[notifications]\nlisten = \"127.0.0.1:{port}\"\n{automation}\n");
    if notify_now {
        point_simulator(&env, port);
    }
    (env, port)
}

fn point_simulator(env: &TestEnv, port: u16) {
    env.sim
        .sim()
        .set_notify_settings(NotifySettings {
            url: Some(format!(
                "http://127.0.0.1:{port}/notifications/{{gateway}}/default"
            )),
            resend_after_ms: 300,
            ..NotifySettings::default()
        })
        .unwrap();
}

async fn wait_listening(port: u16) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(tokio::time::Instant::now() < deadline, "listener not up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn effects(env: &TestEnv, gateway: GatewayId, id: &str) -> Vec<Effect> {
    env.sim
        .sim()
        .ledger_for(gateway, id)
        .into_iter()
        .map(|e| e.operation)
        .collect()
}

/// Polls the database until `sql` (one bigint, `$1` = `id`) equals `want`.
async fn wait_scalar(env: &TestEnv, sql: &str, id: &str, want: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got: Option<i64> = sqlx::query_scalar(sql)
            .bind(id)
            .fetch_optional(&env.pool)
            .await
            .unwrap()
            .flatten();
        if got == Some(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{sql} [{id}] is {got:?}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn post(port: u16, gateway: &str, body: String) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{port}/notifications/{gateway}/default"
        ))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// Whether `value` satisfies the schema in `schemas/{file}`.
fn satisfies(file: &str, value: &serde_json::Value) -> bool {
    let text =
        std::fs::read_to_string(format!("{}/schemas/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
    jsonschema::validator_for(&schema).unwrap().is_valid(value)
}

fn praxis_payment(id: &str, minor: u64, currency: &str) -> NewPayment {
    NewPayment::new(GatewayId::Praxis, Amount::from_minor(minor))
        .id(id)
        .state("authorized")
        .currency(currency)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authorized_praxis_payment_is_captured_once_with_no_command_published() {
    let (mut env, port) = world("notify_praxis_capture", RULES, true).await;
    let worker = env.start_worker();
    wait_listening(port).await;
    env.sim
        .sim()
        .create_payment(praxis_payment("700001", 1050, "USD"))
        .unwrap();
    let event = env.outcome_of("auto.praxis.default.700001").await;
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
    wait_scalar(
        &env,
        "SELECT count(*) FROM notifications WHERE payment_id = $1",
        "700001",
        2,
    )
    .await;
    let approved: String = sqlx::query_scalar(
        "SELECT decision FROM notifications WHERE payment_id = '700001' AND status = 'approved'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(approved, "ignored");
    assert_eq!(
        effects(&env, GatewayId::Praxis, "700001"),
        [Effect::Capture]
    );
    let acted: (String, String, bool) =
        sqlx::query_as("SELECT decision, rule, verified FROM notifications WHERE id = $1::bigint")
            .bind(origin.notification_id.parse::<i64>().unwrap())
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(acted, ("acted".into(), "small-usd".into(), true));
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paymentz_authorization_is_captured_for_the_full_amount() {
    let (mut env, port) = world("notify_paymentz_capture", RULES, true).await;
    let worker = env.start_worker();
    wait_listening(port).await;
    env.sim
        .sim()
        .create_payment(
            NewPayment::new(GatewayId::Paymentz, Amount::from_minor(15_600))
                .id("800002")
                .state("authsuccessful")
                .currency("EUR"),
        )
        .unwrap();
    let event = env.outcome_of("auto.paymentz.default.800002").await;
    assert_eq!(event.outcome.as_str(), "succeeded");
    assert_eq!(event.amount.as_deref(), Some("156.00"));
    assert_eq!(event.origin.unwrap().rule, "paymentz-all");
    let ledger = env.sim.sim().ledger_for(GatewayId::Paymentz, "800002");
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].operation, Effect::Capture);
    assert_eq!(ledger[0].amount, Amount::from_minor(15_600));
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_rule_cancels() {
    let (mut env, port) = world("notify_cancel_rule", RULES, true).await;
    let worker = env.start_worker();
    wait_listening(port).await;
    env.sim
        .sim()
        .create_payment(praxis_payment("700003", 2000, "EUR"))
        .unwrap();
    let event = env.outcome_of("auto.praxis.default.700003").await;
    assert_eq!(event.outcome.as_str(), "succeeded");
    assert_eq!(event.operation.as_deref(), Some("cancel"));
    assert_eq!(event.origin.unwrap().rule, "cancel-eur");
    assert_eq!(effects(&env, GatewayId::Praxis, "700003"), [Effect::Cancel]);
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_notification_five_times_at_once_acts_once_and_is_answered_alike() {
    let (mut env, port) = world("notify_repeats", RULES, false).await;
    let worker = env.start_worker();
    wait_listening(port).await;
    let view = env
        .sim
        .sim()
        .create_payment(praxis_payment("700004", 1000, "USD"))
        .unwrap();
    let signer = env.sim.sim().signer(&view).unwrap();
    // Five deliveries of one notification (one body, as Praxis re-sends it),
    // concurrently, plus an older status arriving out of order among them.
    let body = notify::body(&view, &signer, false, None);
    let mut pending = mpsc_posts(port, vec![body.clone(); 5]);
    let mut answers = Vec::new();
    while let Some(answer) = pending.recv().await {
        answers.push(answer);
    }
    assert_eq!(answers.len(), 5);
    assert!(
        answers.iter().all(|a| a == &answers[0]),
        "identical answers: {answers:?}"
    );
    let (status, text) = &answers[0];
    assert_eq!(*status, 200);
    let answer: serde_json::Value = serde_json::from_str(text).unwrap();
    assert_eq!(answer["status"], 0);
    let event = env.outcome_of("auto.praxis.default.700004").await;
    assert_eq!(event.outcome.as_str(), "succeeded");
    wait_scalar(
        &env,
        "SELECT repeats::bigint FROM notifications WHERE payment_id = $1 AND status = 'authorized'",
        "700004",
        4,
    )
    .await;
    // A sixth, late, after the capture: still one side effect.
    assert_eq!(post(port, "praxis", body).await, answers[0]);
    env.drain_events(Duration::from_millis(500)).await;
    assert_eq!(
        effects(&env, GatewayId::Praxis, "700004"),
        [Effect::Capture]
    );
    assert_eq!(
        env.seen["auto.praxis.default.700004"]
            .iter()
            .filter(|e| !e.replayed && !e.reconciled)
            .count(),
        1
    );
    worker.stop().await;
    env.cleanup().await;
}

/// POSTs every body concurrently; the answers arrive on the channel.
fn mpsc_posts(port: u16, bodies: Vec<String>) -> tokio::sync::mpsc::Receiver<(u16, String)> {
    let (tx, rx) = tokio::sync::mpsc::channel(bodies.len());
    for body in bodies {
        let tx = tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(post(port, "praxis", body).await).await;
        });
    }
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_signature_acts_only_on_the_gateways_answer_and_never_for_an_unknown_payment() {
    let (mut env, port) = world("notify_bad_signature", RULES, false).await;
    let worker = env.start_worker();
    wait_listening(port).await;
    let view = env
        .sim
        .sim()
        .create_payment(praxis_payment("700005", 1000, "USD"))
        .unwrap();
    point_simulator(&env, port);
    env.sim
        .sim()
        .send_notification(&SendRequest {
            gateway: GatewayId::Praxis,
            id: "700005".into(),
            copies: None,
            corrupt: true,
            charge_amount: None,
        })
        .unwrap();
    let event = env.outcome_of("auto.praxis.default.700005").await;
    assert_eq!(event.outcome.as_str(), "succeeded");
    let verified: bool = sqlx::query_scalar(
        "SELECT verified FROM notifications WHERE payment_id = '700005' AND status = 'authorized'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert!(!verified, "acted on the inquiry, not on the body");
    assert_eq!(
        effects(&env, GatewayId::Praxis, "700005"),
        [Effect::Capture]
    );

    // A forged notification about a payment the gateway does not know.
    let mut ghost = view.clone();
    ghost.id = "4242".into();
    let signer = env.sim.sim().signer(&view).unwrap();
    let (status, text) = post(port, "praxis", notify::body(&ghost, &signer, true, None)).await;
    assert_eq!(status, 200);
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["status"], 1, "refused: {text}");
    wait_scalar(
        &env,
        "SELECT count(*) FROM notifications WHERE payment_id = $1 AND decision = 'ignored'
           AND reason LIKE '%not acted on%'",
        "4242",
        1,
    )
    .await;
    let commands: i64 =
        sqlx::query_scalar("SELECT count(*) FROM commands WHERE payment_id = '4242'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(commands, 0);
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mismatch_is_held_and_published_as_held() {
    let (mut env, port) = world("notify_mismatch", RULES, false).await;
    let worker = env.start_worker();
    wait_listening(port).await;
    env.sim
        .sim()
        .create_payment(praxis_payment("700006", 1000, "USD"))
        .unwrap();
    point_simulator(&env, port);
    env.sim
        .sim()
        .send_notification(&SendRequest {
            gateway: GatewayId::Praxis,
            id: "700006".into(),
            copies: None,
            corrupt: false,
            charge_amount: Some(900),
        })
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while env.others.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no held event");
        env.next_event(Duration::from_millis(200)).await;
    }
    let (key, held) = &env.others[0];
    assert_eq!(key, "praxis.authorization.held");
    assert!(satisfies("held.schema.json", held), "{held}");
    assert_eq!(held["payment_id"], "700006");
    assert_eq!(held["origin"]["rule"], "mismatch");
    assert_eq!(held["amount"], "1000");
    assert_eq!(held["currency"], "USD");
    let decision: String =
        sqlx::query_scalar("SELECT decision FROM notifications WHERE payment_id = '700006'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(decision, "held");
    assert!(effects(&env, GatewayId::Praxis, "700006").is_empty());
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_past_its_deadline_is_cancelled() {
    let (mut env, port) = world(
        "notify_deadline",
        "[automation]\nhold_deadline = \"1s\"\non_deadline = \"cancel\"\n",
        true,
    )
    .await;
    let worker = env.start_worker();
    wait_listening(port).await;
    env.sim
        .sim()
        .create_payment(praxis_payment("700007", 1000, "USD"))
        .unwrap();
    let event = env.outcome_of("auto.praxis.default.700007").await;
    assert_eq!(event.outcome.as_str(), "succeeded");
    assert_eq!(event.operation.as_deref(), Some("cancel"));
    assert_eq!(event.origin.unwrap().rule, "deadline");
    assert_eq!(effects(&env, GatewayId::Praxis, "700007"), [Effect::Cancel]);
    let closed_by: String = sqlx::query_scalar(
        "SELECT hold_closed_by FROM notifications WHERE payment_id = '700007' AND status = 'authorized'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(closed_by, "deadline");
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_cut_off_loses_no_notification() {
    let (mut env, port) = world("notify_db_cut", RULES, true).await;
    let proxy = common::Proxy::start("127.0.0.1:5432").await;
    let proxied = format!(
        "postgres://postgres@127.0.0.1:{}/{}",
        proxy.port, env.db_name
    );
    let config = backoffice_worker::config::Config::parse(
        std::path::Path::new("dbcut.toml"),
        &env.config_text().replace(&env.db_url, &proxied),
        |_| None,
    )
    .unwrap();
    let token = tokio_util::sync::CancellationToken::new();
    let join = tokio::spawn(backoffice_worker::worker::run_with(config, token.clone()));
    wait_listening(port).await;
    // Wait until the worker is ready (migrations applied through the proxy).
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.cut();
    env.sim
        .sim()
        .create_payment(praxis_payment("700008", 1000, "USD"))
        .unwrap();
    // Answered -1 (not recorded) at least once, so the simulator re-sends.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while env.sim.sim().notify_stats().resent == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never answered -1");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    proxy.restore();
    let event = env.outcome_of("auto.praxis.default.700008").await;
    assert_eq!(event.outcome.as_str(), "succeeded");
    assert_eq!(
        effects(&env, GatewayId::Praxis, "700008"),
        [Effect::Capture]
    );
    let rows: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM notifications WHERE payment_id = '700008' AND status = 'authorized'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(rows, 1);
    token.cancel();
    let _ = join.await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_capture_is_settled_by_a_later_approved_notification() {
    let (mut env, port) = world("notify_evidence", "", false).await;
    // Unknowns are reconciled only much later, so only the notification can settle it.
    env.worker_section = env.worker_section.replace(
        "reconcile_schedule = [\"300ms\", \"600ms\"]",
        "reconcile_schedule = [\"1h\"]",
    );
    let worker = env.start_worker();
    wait_listening(port).await;
    env.sim
        .sim()
        .create_payment(praxis_payment("700009", 1000, "USD"))
        .unwrap();
    use backoffice_worker::simulator::{FaultKind, FaultScript};
    // The capture applies but its answer is lost, and every inquiry fails.
    env.sim
        .sim()
        .script_fault(FaultScript::new(FaultKind::ResetAfter, 1).operation("deposit-capture"))
        .unwrap();
    env.sim
        .sim()
        .script_fault(FaultScript::new(FaultKind::ErrorBefore, 50).operation("find-transaction"))
        .unwrap();
    env.publish(&common::px("cap-700009", "capture", "700009"))
        .await;
    let first = env.outcome_of("cap-700009").await;
    assert_eq!(first.outcome.as_str(), "unknown");
    point_simulator(&env, port);
    env.sim
        .sim()
        .send_notification(&SendRequest {
            gateway: GatewayId::Praxis,
            id: "700009".into(),
            copies: None,
            corrupt: false,
            charge_amount: None,
        })
        .unwrap();
    let settled = env
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
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(why, 1, "an attempt-like record says why");
    assert_eq!(
        effects(&env, GatewayId::Praxis, "700009"),
        [Effect::Capture]
    );
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_are_404_and_large_bodies_413() {
    let (env, port) = world("notify_paths", RULES, false).await;
    let worker = env.start_worker();
    wait_listening(port).await;
    let client = reqwest::Client::new();
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
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
    let (status, text) = post(port, "praxis", "not json".into()).await;
    assert_eq!(status, 200);
    assert!(text.contains("\"status\":1"), "{text}");
    let (status, _) = post(port, "paymentz", "not json".into()).await;
    assert_eq!(status, 400);
    // What PostgreSQL cannot store in jsonb (`\u0000`): the body is still recorded.
    let (status, text) = post(
        port,
        "praxis",
        r#"{"trace_id":1,"transaction_status":"authorized","note":"a\u0000b"}"#.into(),
    )
    .await;
    assert_eq!(status, 200);
    assert!(text.contains("\"status\":1"), "{text}");
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(recorded, 3, "unreadable bodies on known paths are recorded");
    worker.stop().await;
    env.cleanup().await;
}

fn spawn_worker_process(env: &TestEnv, log_name: &str) -> common::ChildGuard {
    let config = env.config_file();
    let log = std::fs::File::create(env.dir.path().join(log_name)).unwrap();
    common::ChildGuard(
        std::process::Command::new(env!("CARGO_BIN_EXE_backoffice-worker"))
            .args(["run", "--config"])
            .arg(&config)
            .env_remove("AMQP_URL")
            .env_remove("DATABASE_URL")
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the worker binary"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_between_recording_and_acting_acts_once_after_restart() {
    let (mut env, port) = world("notify_sigkill", RULES, true).await;
    // Slow gateway calls: the kill lands after the notification is recorded
    // (and its command queued) and before the capture has been answered.
    env.sim
        .sim()
        .update_faults(&backoffice_worker::simulator::FaultSettingsView {
            latency_ms: Some(1_500),
            ..Default::default()
        })
        .unwrap();
    let mut first = spawn_worker_process(&env, "first.log");
    wait_listening(port).await;
    // Migrations applied before anything can be recorded.
    wait_scalar(
        &env,
        "SELECT count(*) FROM _sqlx_migrations WHERE version::text = $1",
        "20261204001001",
        1,
    )
    .await;
    let ids: Vec<String> = (0..5).map(|k| format!("70100{k}")).collect();
    for id in &ids {
        env.sim
            .sim()
            .create_payment(praxis_payment(id, 1000, "USD"))
            .unwrap();
    }
    wait_scalar(
        &env,
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
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert!(done_at_kill < 5, "the kill came too late to test anything");
    // The gateway answers at once again, so the restarted worker's inquiries settle it.
    env.sim
        .sim()
        .update_faults(&backoffice_worker::simulator::FaultSettingsView {
            latency_ms: Some(0),
            ..Default::default()
        })
        .unwrap();

    let _second = spawn_worker_process(&env, "second.log");
    let commands: Vec<String> = ids
        .iter()
        .map(|id| format!("auto.praxis.default.{id}"))
        .collect();
    env.wait_all(&commands, Duration::from_secs(60)).await;
    for id in &ids {
        let event = env.outcome_of(&format!("auto.praxis.default.{id}")).await;
        assert_eq!(event.outcome.as_str(), "succeeded", "{id}");
        assert_eq!(
            effects(&env, GatewayId::Praxis, id),
            [Effect::Capture],
            "{id}"
        );
    }
    env.cleanup().await;
}

/// Polls the database until `sql` (one bigint, `$1` = `id`) is at least `want`.
async fn wait_at_least(env: &TestEnv, sql: &str, id: &str, want: i64) -> i64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got: i64 = sqlx::query_scalar(sql)
            .bind(id)
            .fetch_one(&env.pool)
            .await
            .unwrap();
        if got >= want {
            return got;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{sql} [{id}] is {got}, want at least {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a command settled by a notification while it was still verifying
/// must show: one side effect, one result event (the first and only
/// outcome, `succeeded`), one attempt-like record naming the notification,
/// and the notification naming the command.
async fn settled_once_by_the_notification(env: &mut TestEnv, command: &str, payment: &str) {
    let event = env.outcome_of(command).await;
    assert_eq!(event.outcome.as_str(), "succeeded");
    let description = event.description.clone().unwrap_or_default();
    assert!(
        description.contains("confirmed by verified notification #"),
        "{description}"
    );
    assert_eq!(event.gateway_status.as_deref(), Some("approved"));
    // Whatever the executor still had in hand, nothing else is published.
    env.drain_events(Duration::from_millis(1_500)).await;
    assert_eq!(
        env.seen[command].len(),
        1,
        "one result event: {:?}",
        env.seen[command]
    );
    let (state, outcome, settled): (String, String, Option<String>) =
        sqlx::query_as("SELECT state, outcome, settled_outcome FROM commands WHERE id = $1")
            .bind(command)
            .fetch_one(&env.pool)
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
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(why.len(), 1, "one attempt-like record says why: {why:?}");
    let named: (i64, Option<String>) = sqlx::query_as(
        "SELECT id, settled_command FROM notifications
          WHERE payment_id = $1 AND status = 'approved' AND verified",
    )
    .bind(payment)
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(named.1.as_deref(), Some(command));
    assert_eq!(why[0], format!("notification #{}", named.0));
    assert!(description.contains(&format!("#{}", named.0)));
    assert_eq!(effects(env, GatewayId::Praxis, payment), [Effect::Capture]);
    let leases: i64 =
        sqlx::query_scalar("SELECT count(*) FROM payment_leases WHERE command_id = $1")
            .bind(command)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(leases, 0, "its payment is released");
}

/// A long verify loop (every inquiry fails), and unknowns reconciled only
/// much later: only a notification can settle the command in time.
fn long_verify(env: &mut TestEnv) {
    env.worker_section = env
        .worker_section
        .replace("reconcile_attempts = 2", "reconcile_attempts = 60")
        .replace(
            "reconcile_schedule = [\"300ms\", \"600ms\"]",
            "reconcile_schedule = [\"1h\"]",
        );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_still_verifying_is_settled_once_by_a_notification_arriving_meanwhile() {
    use backoffice_worker::simulator::{FaultKind, FaultScript};
    let (mut env, port) = world("notify_verifying", "", false).await;
    long_verify(&mut env);
    let worker = env.start_worker();
    wait_listening(port).await;
    env.sim
        .sim()
        .create_payment(praxis_payment("700011", 1000, "USD"))
        .unwrap();
    // The capture applies but its answer is lost; every inquiry fails.
    env.sim
        .sim()
        .script_fault(FaultScript::new(FaultKind::ResetAfter, 1).operation("deposit-capture"))
        .unwrap();
    env.sim
        .sim()
        .script_fault(FaultScript::new(FaultKind::ErrorBefore, 1_000).operation("find-transaction"))
        .unwrap();
    env.publish(&common::px("cap-700011", "capture", "700011"))
        .await;
    // The executor is in its verify loop: the attempt was ambiguous and an
    // inquiry has been made.
    wait_at_least(
        &env,
        "SELECT count(*) FROM attempts WHERE command_id = $1 AND kind = 'inquiry'",
        "cap-700011",
        1,
    )
    .await;
    let state: String = sqlx::query_scalar("SELECT state FROM commands WHERE id = 'cap-700011'")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(
        state, "running",
        "still verifying when the notification comes"
    );
    point_simulator(&env, port);
    env.sim
        .sim()
        .send_notification(&SendRequest {
            gateway: GatewayId::Praxis,
            id: "700011".into(),
            copies: None,
            corrupt: false,
            charge_amount: None,
        })
        .unwrap();
    settled_once_by_the_notification(&mut env, "cap-700011", "700011").await;
    let reason: String = sqlx::query_scalar(
        "SELECT reason FROM notifications WHERE payment_id = '700011' AND status = 'approved'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(reason, "evidence: settled cap-700011 as succeeded");
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_that_came_while_the_call_hung_settles_the_verify_loop_once() {
    use backoffice_worker::simulator::{FaultKind, FaultScript};
    let (mut env, port) = world("notify_during_call", "", false).await;
    long_verify(&mut env);
    let worker = env.start_worker();
    wait_listening(port).await;
    env.sim
        .sim()
        .create_payment(praxis_payment("700012", 1000, "USD"))
        .unwrap();
    // The capture applies (and the simulator notifies `approved` at once),
    // but its connection hangs past the worker's timeout; every inquiry fails.
    env.sim
        .sim()
        .update_faults(&backoffice_worker::simulator::FaultSettingsView {
            hang_ms: Some(3_000),
            ..Default::default()
        })
        .unwrap();
    env.sim
        .sim()
        .script_fault(FaultScript::new(FaultKind::TimeoutAfter, 1).operation("deposit-capture"))
        .unwrap();
    env.sim
        .sim()
        .script_fault(FaultScript::new(FaultKind::ErrorBefore, 1_000).operation("find-transaction"))
        .unwrap();
    point_simulator(&env, port);
    env.publish(&common::px("cap-700012", "capture", "700012"))
        .await;
    settled_once_by_the_notification(&mut env, "cap-700012", "700012").await;
    // It was recorded while the call was in flight (nothing to settle yet),
    // and the verify loop found it before its first inquiry.
    let reason: String = sqlx::query_scalar(
        "SELECT reason FROM notifications WHERE payment_id = '700012' AND status = 'approved'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert!(
        reason.contains("then settled cap-700012 as succeeded (it was verifying"),
        "{reason}"
    );
    worker.stop().await;
    env.cleanup().await;
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
    let (mut env, port) = world("notify_flood", RULES, false).await;
    let listen = format!("listen = \"127.0.0.1:{port}\"\n");
    env.worker_section = env
        .worker_section
        .replace(&listen, &format!("{listen}inquiries_per_minute = 2\n"));
    let first = env.start_worker();
    // A second instance on the same database, listening on its own port.
    let port2 = free_port();
    let section = env.worker_section.clone();
    env.worker_section = section.replace(&listen, &format!("listen = \"127.0.0.1:{port2}\"\n"));
    let second = env.start_worker();
    env.worker_section = section;
    wait_listening(port).await;
    wait_listening(port2).await;
    let mut bodies = Vec::new();
    for k in 0..12 {
        let view = env
            .sim
            .sim()
            .create_payment(praxis_payment(&format!("7020{k:02}"), 1000, "USD"))
            .unwrap();
        let signer = env.sim.sim().signer(&view).unwrap();
        bodies.push(notify::body(&view, &signer, true, None));
    }
    let started = tokio::time::Instant::now();
    // Half to each instance, all at once.
    let (tx, mut rx) = tokio::sync::mpsc::channel(bodies.len());
    for (k, body) in bodies.into_iter().enumerate() {
        let tx = tx.clone();
        let port = if k % 2 == 0 { port } else { port2 };
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
    wait_at_least(
        &env,
        "SELECT count(*) FROM notifications WHERE payment_id LIKE $1 AND decision = 'acted'",
        "7020%",
        2,
    )
    .await;
    wait_scalar(
        &env,
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
    .fetch_all(&env.pool)
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
        .filter(|k| !effects(&env, GatewayId::Praxis, &format!("7020{k:02}")).is_empty())
        .count() as i64;
    assert!(captured <= inquired, "acted only on the gateway's answer");
    first.stop().await;
    second.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_past_its_deadline_with_on_deadline_alert_is_reported_and_left_for_a_person() {
    let (mut env, port) = world(
        "notify_alert",
        "[automation]\nhold_deadline = \"1s\"\non_deadline = \"alert\"\n",
        true,
    )
    .await;
    let admin: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let token = tokio_util::sync::CancellationToken::new();
    let worker = common::WorkerHandle {
        token: token.clone(),
        join: tokio::spawn(backoffice_worker::worker::run_with_options(
            env.config(),
            None,
            Some(admin),
            token,
        )),
    };
    wait_listening(port).await;
    env.sim
        .sim()
        .create_payment(praxis_payment("700013", 1000, "USD"))
        .unwrap();
    // No rule matches: held, and published as held.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while env.others.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no held event");
        env.next_event(Duration::from_millis(200)).await;
    }
    assert_eq!(env.others[0].0, "praxis.authorization.held");
    // The deadline passes: reported on the row ...
    wait_scalar(
        &env,
        "SELECT count(*) FROM notifications WHERE payment_id = $1 AND decision = 'held'
            AND reason LIKE '%deadline passed: left for a person%'",
        "700013",
        1,
    )
    .await;
    // ... and as a metric, with the hold still counted open.
    let metrics_deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let metrics = loop {
        let text = reqwest::get(format!("http://{admin}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.contains("backoffice_hold_deadlines_total{action=\"alert\"} 1")
            && text.contains("backoffice_holds_open 1")
        {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < metrics_deadline,
            "no alert in the metrics:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(!metrics.contains("backoffice_hold_deadlines_total{action=\"cancel\"}"));
    // Left for a person: still on the operators' list of open holds, no
    // deadline any more (reported once), nothing sent to the gateway.
    let mut conn = env.pool.acquire().await.unwrap();
    let open = backoffice_worker::store::notifications::open_hold_rows(&mut conn, 10)
        .await
        .unwrap();
    drop(conn);
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].payment_id.as_deref(), Some("700013"));
    assert!(open[0].hold_deadline.is_none() && open[0].hold_closed_at.is_none());
    let commands: i64 = sqlx::query_scalar("SELECT count(*) FROM commands")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(commands, 0, "an alert makes no command");
    env.drain_events(Duration::from_millis(1_000)).await;
    assert_eq!(env.others.len(), 1, "an alert publishes no second event");
    assert!(env.seen.is_empty());
    assert!(effects(&env, GatewayId::Praxis, "700013").is_empty());
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rules_delay_holds_the_action_back_until_it_has_passed() {
    let (mut env, port) = world(
        "notify_delay",
        "[[automation.rules]]\nname = \"later\"\ngateway = \"praxis\"\naction = \"capture\"\ndelay = \"2s\"\n",
        true,
    )
    .await;
    let worker = env.start_worker();
    wait_listening(port).await;
    env.sim
        .sim()
        .create_payment(praxis_payment("700014", 1000, "USD"))
        .unwrap();
    let event = env.outcome_of("auto.praxis.default.700014").await;
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
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert!(waited >= 2.0, "acted {waited:.3}s after the notification");
    assert_eq!(
        effects(&env, GatewayId::Praxis, "700014"),
        [Effect::Capture]
    );
    worker.stop().await;
    env.cleanup().await;
}
