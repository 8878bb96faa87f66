//! Each fault the simulator can inject, against the running worker: the right
//! outcome, and at most one side effect per command in the simulator's ledger.

use crate::common;
use crate::gateway_support;

use std::path::Path;
use std::time::Duration;

use backoffice_worker::config::Config;
use backoffice_worker::gateways::http::truncation_marker;
use backoffice_worker::simulator::{
    AnswerSettingsView, FaultKind, FaultScript, GatewayId, TransactionShape,
};
use common::{px, pz, TestEnv, WorkerHandle};
use gateway_support::Bystander;
use tokio_util::sync::CancellationToken;

/// Starts a worker on the environment's config with `http` added to its
/// `[http]` table and `praxis` to the Praxis account table.
fn start_worker_with(env: &TestEnv, http: &str, praxis: &str) -> WorkerHandle {
    let text = env.config_text();
    let anchor = "request_timeout = \"1s\"\n";
    assert!(text.contains(anchor), "the test config has an [http] table");
    let text = format!(
        "{}{praxis}\n",
        text.replacen(anchor, &format!("{anchor}{http}\n"), 1)
    );
    assert!(
        text.trim_end().ends_with(praxis.trim_end()) && text.contains("[accounts.praxis.default]"),
        "the Praxis table comes last"
    );
    let config = Config::parse(Path::new("test.toml"), &text, |_| None).expect("test config");
    let token = CancellationToken::new();
    let join = tokio::spawn(backoffice_worker::worker::run_with(config, token.clone()));
    WorkerHandle { token, join }
}

/// One attempt row of a command: (kind, purpose, http status, classification,
/// error, response body, signature verified), in order.
type AttemptRow = (
    String,
    Option<String>,
    Option<i32>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<bool>,
);

async fn attempt_rows(env: &TestEnv, id: &str) -> Vec<AttemptRow> {
    sqlx::query_as(
        "SELECT kind, purpose, http_status, classification, error, response_body, signature_verified
         FROM attempts WHERE command_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(&env.pool)
    .await
    .unwrap()
}

/// Runs one Paymentz refund (RF) with `kind` injected into its first call,
/// and returns the event and the number of refunds the gateway applied.
async fn refund_with_fault(
    env: &mut TestEnv,
    id: &str,
    payment: &str,
    kind: FaultKind,
) -> (String, usize, u32) {
    env.sim
        .sim()
        .script_fault(
            FaultScript::new(kind, 1)
                .gateway(GatewayId::Paymentz)
                .operation("RF")
                .payment_id(payment),
        )
        .unwrap();
    env.publish(&pz(id, "refund", payment, Some("10.00"))).await;
    let event = env.outcome_of(id).await;
    let applied = env.sim.sim().ledger_for(GatewayId::Paymentz, payment).len();
    (event.outcome.as_str().to_string(), applied, event.attempts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_kind_ends_in_the_right_outcome_with_one_side_effect() {
    let mut env = TestEnv::new("faults").await;
    let worker = env.start_worker();

    // Before applying: nothing happened, the worker finds out and sends again.
    for (n, kind) in [
        FaultKind::ErrorBefore,
        FaultKind::ResetBefore,
        FaultKind::RateLimit,
    ]
    .into_iter()
    .enumerate()
    {
        let payment = format!("1000001{n}1");
        let (outcome, applied, attempts) =
            refund_with_fault(&mut env, &format!("before-{n}"), &payment, kind).await;
        assert_eq!(outcome, "succeeded", "{kind:?}");
        assert_eq!(applied, 1, "{kind:?}: exactly one refund");
        assert_eq!(
            attempts, 2,
            "{kind:?}: the first attempt did not apply, the second did"
        );
    }
    // After applying: the worker must NOT send again; the inquiry shows it applied.
    for (n, kind) in [
        FaultKind::ErrorAfter,
        FaultKind::ResetAfter,
        FaultKind::TimeoutAfter,
    ]
    .into_iter()
    .enumerate()
    {
        let payment = format!("1000002{n}1");
        let (outcome, applied, attempts) =
            refund_with_fault(&mut env, &format!("after-{n}"), &payment, kind).await;
        assert_eq!(outcome, "succeeded", "{kind:?}");
        assert_eq!(
            applied, 1,
            "{kind:?}: the refund applied once and was not resent"
        );
        assert_eq!(attempts, 1, "{kind:?}");
    }
    let timeout_rf_calls = env.sim.sim().stats().requests_for("paymentz", "RF");
    assert_eq!(
        timeout_rf_calls,
        3 * 2 + 3,
        "before-faults resend once, after-faults never"
    );

    // The ambiguous attempts are on record with their error and classification.
    let ambiguous: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM attempts WHERE kind = 'operation' AND classification = 'ambiguous' AND error IS NOT NULL",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(
        ambiguous, 5,
        "error_before, reset_before, error_after, reset_after, timeout_after"
    );

    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn praxis_faults_after_applying_do_not_capture_twice() {
    let mut env = TestEnv::new("pxfaults").await;
    let worker = env.start_worker();
    for (n, kind) in [
        FaultKind::ErrorAfter,
        FaultKind::ResetAfter,
        FaultKind::ErrorBefore,
    ]
    .into_iter()
    .enumerate()
    {
        let trace = format!("3000000{n}");
        env.sim
            .sim()
            .script_fault(
                FaultScript::new(kind, 1)
                    .gateway(GatewayId::Praxis)
                    .operation("deposit-capture"),
            )
            .unwrap();
        let id = format!("px-{n}");
        env.publish(&px(&id, "capture", &trace)).await;
        let e = env.outcome_of(&id).await;
        assert_eq!(e.outcome.as_str(), "succeeded", "{kind:?}: {e:?}");
        assert_eq!(
            env.sim.sim().ledger_for(GatewayId::Praxis, &trace).len(),
            1,
            "{kind:?}"
        );
    }
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecidable_attempt_is_unknown_then_settled_by_background_reconciliation() {
    let mut env = TestEnv::new("unknown").await;
    let admin: std::net::SocketAddr = format!("127.0.0.1:{}", common::free_port())
        .parse()
        .unwrap();
    let worker = env.start_worker_with_admin(admin);
    let payment = "10000031";
    let sim = env.sim.sim().clone();
    // The before-snapshot inquiry passes; the refund applies but its answer is a
    // 500; the next two inquiries fail too: the worker cannot tell, says unknown.
    sim.script_fault(
        FaultScript::new(FaultKind::ErrorAfter, 1)
            .gateway(GatewayId::Paymentz)
            .operation("RF"),
    )
    .unwrap();
    env.publish(&pz("unk-1", "refund", payment, Some("10.00")))
        .await;
    // Wait for the RF to have been applied before breaking the inquiries.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while sim.ledger_for(GatewayId::Paymentz, payment).is_empty() {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sim.script_fault(
        FaultScript::new(FaultKind::ErrorBefore, 2)
            .gateway(GatewayId::Paymentz)
            .operation("IN"),
    )
    .unwrap();

    let first = env.outcome_of("unk-1").await;
    assert_eq!(first.outcome.as_str(), "unknown", "{first:?}");
    let settled = env
        .wait_event("unk-1", Duration::from_secs(20), |e| e.reconciled)
        .await;
    assert_eq!(settled.outcome.as_str(), "succeeded", "{settled:?}");
    assert!(!settled.replayed);
    assert_eq!(
        sim.ledger_for(GatewayId::Paymentz, payment).len(),
        1,
        "never resent"
    );
    let (outcome, settled_outcome): (String, Option<String>) =
        sqlx::query_as("SELECT outcome, settled_outcome FROM commands WHERE id = 'unk-1'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(
        (outcome.as_str(), settled_outcome.as_deref()),
        ("unknown", Some("succeeded"))
    );
    // Counted once as first decided and once as settled, never more.
    let wanted = [
        r#"backoffice_commands_total{gateway="paymentz",operation="refund",outcome="unknown"} 1"#,
        r#"backoffice_commands_total{gateway="paymentz",operation="refund",outcome="succeeded"} 1"#,
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = reqwest::get(format!("http://{admin}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if wanted.iter().all(|w| text.lines().any(|l| l == *w)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics never showed {wanted:?}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_never_processes_ends_in_failed_with_nothing_applied() {
    let mut env = TestEnv::new("failed").await;
    let worker = env.start_worker();
    env.sim
        .sim()
        .script_fault(
            FaultScript::new(FaultKind::RateLimit, 100)
                .gateway(GatewayId::Paymentz)
                .operation("CP"),
        )
        .unwrap();
    env.publish(&pz("fail-1", "capture", "10000040", Some("5.00")))
        .await;
    let e = env.outcome_of("fail-1").await;
    assert_eq!(e.outcome.as_str(), "failed", "{e:?}");
    assert_eq!(e.attempts, 4, "max_attempts in the test config");
    assert!(env
        .sim
        .sim()
        .ledger_for(GatewayId::Paymentz, "10000040")
        .is_empty());
    let recorded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM attempts WHERE command_id = 'fail-1' AND kind = 'operation' AND http_status = 429",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(recorded, 4);
    worker.stop().await;
    env.cleanup().await;
}

// ---------------------------------------------------------------- gateways trusted less

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirected_refund_is_not_followed_and_is_sent_again_once() {
    let mut env = TestEnv::new("redirect").await;
    let elsewhere = Bystander::start().await;
    let location = elsewhere.url("/collect");
    let sim = env.sim.sim().clone();
    sim.update_answers(&AnswerSettingsView {
        redirect_location: Some(location.clone()),
        ..AnswerSettingsView::default()
    })
    .unwrap();
    let worker = env.start_worker();
    let payment = "10000051";
    sim.script_fault(
        FaultScript::new(FaultKind::Redirect, 1)
            .gateway(GatewayId::Paymentz)
            .operation("RF"),
    )
    .unwrap();
    env.publish(&pz("redir-1", "refund", payment, Some("10.00")))
        .await;
    let event = env.outcome_of("redir-1").await;
    assert_eq!(event.outcome.as_str(), "succeeded", "{event:?}");
    assert_eq!(event.attempts, 2, "a 307 applied nothing: sent again, here");
    assert_eq!(sim.ledger_for(GatewayId::Paymentz, payment).len(), 1);
    let redirected: Vec<_> = attempt_rows(&env, "redir-1")
        .await
        .into_iter()
        .filter(|row| row.2 == Some(307))
        .collect();
    assert_eq!(redirected.len(), 1, "the redirect is on record");
    let (kind, purpose, _, classification, error, _, _) = &redirected[0];
    assert_eq!(
        (kind.as_str(), purpose.as_deref(), classification.as_deref()),
        ("operation", Some("RF"), Some("not_applied"))
    );
    assert!(
        error.as_deref().unwrap_or_default().contains(&location),
        "{error:?}"
    );
    assert_eq!(
        elsewhere.connections(),
        0,
        "{:?}",
        elsewhere.request_lines()
    );
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_refund_answer_is_stored_cut_and_settled_by_inquiry() {
    const CAP: usize = 65536;
    let mut env = TestEnv::new("huge").await;
    let sim = env.sim.sim().clone();
    sim.update_answers(&AnswerSettingsView {
        huge_answer_bytes: Some(16 * 1024 * 1024),
        ..AnswerSettingsView::default()
    })
    .unwrap();
    let worker = start_worker_with(&env, &format!("max_answer_bytes = {CAP}"), "");
    let payment = "10000053";
    sim.script_fault(
        FaultScript::new(FaultKind::HugeAnswer, 1)
            .gateway(GatewayId::Paymentz)
            .operation("RF"),
    )
    .unwrap();
    env.publish(&pz("huge-1", "refund", payment, Some("10.00")))
        .await;
    let event = env.outcome_of("huge-1").await;
    assert_eq!(event.outcome.as_str(), "succeeded", "{event:?}");
    assert_eq!(event.attempts, 1, "never resent");
    assert_eq!(sim.ledger_for(GatewayId::Paymentz, payment).len(), 1);
    let rows = attempt_rows(&env, "huge-1").await;
    let refund = rows
        .iter()
        .find(|row| row.0 == "operation" && row.1.as_deref() == Some("RF"))
        .expect("the refund attempt");
    assert_eq!(refund.3.as_deref(), Some("ambiguous"));
    let body = refund.5.as_deref().expect("the cut answer is stored");
    let marker = truncation_marker(CAP);
    assert!(
        body.len() <= CAP + marker.len(),
        "{} bytes stored",
        body.len()
    );
    assert!(body.ends_with(&marker));
    assert!(
        rows.iter()
            .any(|row| row.0 == "inquiry" && row.3.as_deref() == Some("succeeded")),
        "settled by an inquiry: {rows:?}"
    );
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ambiguous_praxis_capture_is_settled_by_a_flat_find_transaction_answer() {
    let mut env = TestEnv::new("pxflat").await;
    let sim = env.sim.sim().clone();
    sim.update_answers(&AnswerSettingsView {
        praxis_transaction: Some(TransactionShape::Flat),
        ..AnswerSettingsView::default()
    })
    .unwrap();
    let worker = env.start_worker();
    for (n, (operation, wire, status)) in [
        ("capture", "deposit-capture", "approved"),
        ("cancel", "deposit-cancel", "cancelled"),
    ]
    .into_iter()
    .enumerate()
    {
        let trace = format!("3100000{n}");
        sim.script_fault(
            FaultScript::new(FaultKind::ErrorAfter, 1)
                .gateway(GatewayId::Praxis)
                .operation(wire),
        )
        .unwrap();
        let id = format!("pxflat-{n}");
        env.publish(&px(&id, operation, &trace)).await;
        let event = env.outcome_of(&id).await;
        assert_eq!(
            event.outcome.as_str(),
            "succeeded",
            "{operation}: {event:?}"
        );
        assert_eq!(event.gateway_status.as_deref(), Some(status));
        assert_eq!(sim.ledger_for(GatewayId::Praxis, &trace).len(), 1);
    }
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_enforcement_an_unverified_praxis_success_is_settled_by_verified_inquiries() {
    let mut env = TestEnv::new("pxsig").await;
    let sim = env.sim.sim().clone();
    let worker = start_worker_with(&env, "", "enforce_answer_signature = true");

    // The capture's answer is spoiled; the inquiry that follows is not.
    sim.script_fault(
        FaultScript::new(FaultKind::BadSignature, 1)
            .gateway(GatewayId::Praxis)
            .operation("deposit-capture"),
    )
    .unwrap();
    env.publish(&px("pxsig-1", "capture", "32000001")).await;
    let event = env.outcome_of("pxsig-1").await;
    assert_eq!(event.outcome.as_str(), "succeeded", "{event:?}");
    assert_eq!(event.attempts, 1);
    let rows = attempt_rows(&env, "pxsig-1").await;
    assert_eq!(
        rows.iter()
            .map(|r| (r.0.as_str(), r.3.as_deref(), r.6))
            .collect::<Vec<_>>(),
        [
            ("operation", Some("ambiguous"), Some(false)),
            ("inquiry", Some("succeeded"), Some(true)),
        ]
    );
    assert_eq!(sim.ledger_for(GatewayId::Praxis, "32000001").len(), 1);

    // Every answer spoiled, inquiries too: they cannot settle anything, so
    // the outcome is unknown until a verified inquiry settles it.
    sim.script_fault(
        FaultScript::new(FaultKind::BadSignature, 3)
            .gateway(GatewayId::Praxis)
            .payment_id("32000002"),
    )
    .unwrap();
    env.publish(&px("pxsig-2", "capture", "32000002")).await;
    let event = env.outcome_of("pxsig-2").await;
    assert_eq!(event.outcome.as_str(), "unknown", "{event:?}");
    let settled = env
        .wait_event("pxsig-2", Duration::from_secs(20), |e| e.reconciled)
        .await;
    assert_eq!(settled.outcome.as_str(), "succeeded", "{settled:?}");
    assert_eq!(
        sim.ledger_for(GatewayId::Praxis, "32000002").len(),
        1,
        "never resent"
    );
    let unverified = attempt_rows(&env, "pxsig-2")
        .await
        .iter()
        .filter(|r| r.6 == Some(false))
        .count();
    assert_eq!(unverified, 3, "the capture and two inquiries");
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ambiguous_cancel_of_a_payment_the_gateway_does_not_know_ends_declined() {
    let mut env = TestEnv::new("nopay").await;
    let sim = env.sim.sim().clone();
    let worker = start_worker_with(&env, "", "not_found_statuses = [1007]");
    // Ids outside the simulator's on-demand range: nobody knows them.
    sim.script_fault(
        FaultScript::new(FaultKind::ErrorBefore, 1)
            .gateway(GatewayId::Paymentz)
            .operation("RV"),
    )
    .unwrap();
    env.publish(&pz("nopay-pz", "cancel", "4242", None)).await;
    let event = env.outcome_of("nopay-pz").await;
    assert_eq!(event.outcome.as_str(), "declined", "{event:?}");
    let description = event.description.clone().unwrap_or_default();
    assert!(
        description.contains("does not know payment 4242"),
        "{description}"
    );
    assert_eq!(event.attempts, 1, "not sent again");
    assert_eq!(sim.stats().requests_for("paymentz", "RV"), 1);

    sim.script_fault(
        FaultScript::new(FaultKind::ErrorBefore, 1)
            .gateway(GatewayId::Praxis)
            .operation("deposit-capture"),
    )
    .unwrap();
    env.publish(&px("nopay-px", "capture", "4243")).await;
    let event = env.outcome_of("nopay-px").await;
    assert_eq!(event.outcome.as_str(), "declined", "{event:?}");
    assert_eq!(sim.stats().requests_for("praxis", "deposit-capture"), 1);
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_outcome_is_settled_as_declined_when_the_payment_does_not_exist() {
    let mut env = TestEnv::new("nopayrec").await;
    let sim = env.sim.sim().clone();
    let worker = env.start_worker();
    // The cancel fails before anything is looked at, and so do the two
    // inquiries after it: the worker cannot tell, says unknown.
    sim.script_fault(
        FaultScript::new(FaultKind::ErrorBefore, 3)
            .gateway(GatewayId::Paymentz)
            .payment_id("4244"),
    )
    .unwrap();
    env.publish(&pz("nopay-rec", "cancel", "4244", None)).await;
    let first = env.outcome_of("nopay-rec").await;
    assert_eq!(first.outcome.as_str(), "unknown", "{first:?}");
    // Background reconciliation hears "record not found": nothing was applied.
    let settled = env
        .wait_event("nopay-rec", Duration::from_secs(20), |e| e.reconciled)
        .await;
    assert_eq!(settled.outcome.as_str(), "declined", "{settled:?}");
    assert!(settled
        .description
        .as_deref()
        .unwrap_or_default()
        .contains("does not know payment 4244"));
    let (outcome, settled_outcome): (String, Option<String>) =
        sqlx::query_as("SELECT outcome, settled_outcome FROM commands WHERE id = 'nopay-rec'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(
        (outcome.as_str(), settled_outcome.as_deref()),
        ("unknown", Some("declined"))
    );
    assert_eq!(
        sim.stats().requests_for("paymentz", "RV"),
        1,
        "never resent"
    );
    worker.stop().await;
    env.cleanup().await;
}
