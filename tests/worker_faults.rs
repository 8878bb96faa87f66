//! Each fault the simulator can inject, against the running worker: the right
//! outcome, and at most one side effect per command in the simulator's ledger.

mod common;

use std::time::Duration;

use backoffice_worker::simulator::{FaultKind, FaultScript, GatewayId};
use common::{px, pz, TestEnv};

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
    let worker = env.start_worker();
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
