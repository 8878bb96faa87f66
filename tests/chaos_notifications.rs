//! The notification chaos run: thousands of authorizations notified by the
//! simulator over real HTTP, duplicated (20 %), delayed out of order, 1 %
//! with bad signatures, gateway faults as in the command chaos run, and the
//! worker killed (SIGKILL) and restarted twice. Not part of the default
//! `cargo test`; run it with
//!
//! ```text
//! cargo test --release --test chaos_notifications -- --ignored --nocapture
//! CHAOS_AUTHORIZATIONS=500 cargo test --test chaos_notifications -- --ignored --nocapture
//! ```
//!
//! It fails unless every payment ends captured, cancelled or held exactly as
//! its rule says, no side effect is doubled, and every notification row is
//! accounted for (decided, none left unverified); it prints the figures.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use backoffice_worker::money::Amount;
use backoffice_worker::simulator::notify::NotifySettings;
use backoffice_worker::simulator::{Effect, FaultKind, FaultSettingsView, GatewayId, NewPayment};
use common::notify::{listening_section, notify_url, spawn_worker_process};
use common::{free_port, ChildGuard, TestEnv};

const CHAOS_WORKER: &str = r#"
[worker]
max_in_flight = 1000
max_attempts = 6
initial_backoff = "50ms"
max_backoff = "1s"
max_retry_time = "5m"
lease = "6s"
reconcile_attempts = 3
reconcile_schedule = ["1s", "2s", "5s"]
shutdown_grace = "5s"
"#;

const RULES: &str = r#"
[automation]
hold_deadline = "6d"

[[automation.rules]]
name = "usd-small"
gateway = "praxis"
currency = "USD"
max_amount = "500.00"
action = "capture"

[[automation.rules]]
name = "eur-cancel"
gateway = "praxis"
currency = "EUR"
action = "cancel"

[[automation.rules]]
name = "paymentz-capture"
gateway = "paymentz"
action = "capture"
"#;

fn spawn_worker(env: &TestEnv, name: &str) -> ChildGuard {
    spawn_worker_process(env, name, "warn")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Expect {
    Capture,
    Cancel,
    Hold,
}

async fn scalar(env: &TestEnv, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&env.pool).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: cargo test --release --test chaos_notifications -- --ignored --nocapture"]
async fn authorizations_notified_with_duplicates_forgeries_faults_and_two_crashes() {
    let total: usize = std::env::var("CHAOS_AUTHORIZATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let mut env = TestEnv::new("chaos_notify").await;
    let port = free_port();
    env.worker_section = listening_section(CHAOS_WORKER, port, RULES);
    let rates: BTreeMap<FaultKind, f64> = [
        (FaultKind::ErrorBefore, 0.01),
        (FaultKind::ErrorAfter, 0.01),
        (FaultKind::TimeoutAfter, 0.005),
        (FaultKind::ResetBefore, 0.01),
        (FaultKind::ResetAfter, 0.01),
        (FaultKind::RateLimit, 0.02),
    ]
    .into_iter()
    .collect();
    let sim = env.sim.sim().clone();
    sim.update_faults(&FaultSettingsView {
        rates: Some(rates),
        latency_ms: Some(5),
        jitter_ms: Some(5),
        hang_ms: Some(1500),
    })
    .unwrap();
    sim.set_notify_settings(NotifySettings {
        url: Some(notify_url(port)),
        resend_after_ms: 500,
        max_sends: 200,
        duplicate: 0.2,
        delay_ms: 300,
        corrupt: 0.01,
    })
    .unwrap();

    let started = Instant::now();
    let mut worker = spawn_worker(&env, "worker-1.log");
    let mut planned: Vec<(GatewayId, String, Expect)> = Vec::with_capacity(total);
    for k in 0..total {
        let id = (300_000_000 + k as u64).to_string();
        let (gateway, minor, currency, expect) = match k % 4 {
            0 => (GatewayId::Praxis, 1_000 + k as u64, "USD", Expect::Capture),
            1 => (GatewayId::Praxis, 2_000, "EUR", Expect::Cancel),
            2 => (GatewayId::Paymentz, 15_600, "EUR", Expect::Capture),
            _ => (GatewayId::Praxis, 60_000, "USD", Expect::Hold),
        };
        let state = match gateway {
            GatewayId::Praxis => "authorized",
            GatewayId::Paymentz => "authsuccessful",
        };
        sim.create_payment(
            NewPayment::new(gateway, Amount::from_minor(minor))
                .id(&id)
                .state(state)
                .currency(currency),
        )
        .unwrap();
        planned.push((gateway, id, expect));
    }

    // Decided authorizations, whichever way.
    let decided = "SELECT count(DISTINCT payment_id) FROM notifications
                   WHERE status IN ('authorized', 'authsuccessful') AND decision IN ('acted', 'held')";
    let mut kills = 0;
    for (n, fraction) in [(1, 3usize), (2, 3)] {
        let target = (total * n / fraction) as i64;
        let deadline = Instant::now() + Duration::from_secs(600);
        while scalar(&env, decided).await < target {
            assert!(Instant::now() < deadline, "no progress before kill {n}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        worker.kill().unwrap();
        worker.wait().unwrap();
        kills += 1;
        println!(
            "killed the worker (SIGKILL) with {} authorizations decided",
            scalar(&env, decided).await
        );
        worker = spawn_worker(&env, &format!("worker-{}.log", kills + 1));
    }

    // Every payment ends as its rule says.
    let expected_holds = planned.iter().filter(|p| p.2 == Expect::Hold).count();
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut last_missing = usize::MAX;
    loop {
        let mut missing = 0usize;
        for (gateway, id, expect) in &planned {
            let effects: Vec<Effect> = sim
                .ledger_for(*gateway, id)
                .into_iter()
                .map(|e| e.operation)
                .collect();
            let ok = match expect {
                Expect::Capture => effects == [Effect::Capture],
                Expect::Cancel => effects == [Effect::Cancel],
                Expect::Hold => effects.is_empty(),
            };
            assert!(effects.len() <= 1, "{id}: doubled effects {effects:?}");
            if !ok {
                missing += 1;
            }
        }
        let holds = scalar(
            &env,
            "SELECT count(DISTINCT payment_id) FROM notifications WHERE decision = 'held'",
        )
        .await as usize;
        if missing == 0 && holds == expected_holds {
            break;
        }
        if missing != last_missing {
            println!("{missing} payments not yet as their rule says; {holds} held");
            last_missing = missing;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} payments never ended as their rule says"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let elapsed = started.elapsed();
    // Let the last notifications (of our own captures and cancels) arrive.
    tokio::time::sleep(Duration::from_secs(3)).await;
    worker.kill().unwrap();
    worker.wait().unwrap();

    // Every notification row accounted for.
    let rows = scalar(&env, "SELECT count(*) FROM notifications").await;
    let repeats = scalar(
        &env,
        "SELECT COALESCE(sum(repeats), 0)::bigint FROM notifications",
    )
    .await;
    let unverified_left = scalar(
        &env,
        "SELECT count(*) FROM notifications WHERE decision = 'unverified'",
    )
    .await;
    let by_decision: Vec<(String, bool, i64)> = sqlx::query_as(
        "SELECT decision, verified, count(*) FROM notifications GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    let commands_auto = scalar(&env, "SELECT count(*) FROM commands WHERE id LIKE 'auto.%'").await;
    // Commands a verified notification settled (an `unknown`, or one still
    // verifying an ambiguous attempt): one record of why each, and never a
    // second first outcome beside the executor's.
    let settled_by_notification = scalar(
        &env,
        "SELECT count(DISTINCT command_id) FROM attempts WHERE purpose LIKE 'notification #%'",
    )
    .await;
    let settled_while_verifying = scalar(
        &env,
        "SELECT count(*) FROM commands c WHERE c.settled_outcome IS NULL AND EXISTS (
            SELECT 1 FROM attempts a WHERE a.command_id = c.id AND a.purpose LIKE 'notification #%')",
    )
    .await;
    let settled_twice = scalar(
        &env,
        "SELECT count(*) FROM (SELECT command_id FROM attempts WHERE purpose LIKE 'notification #%'
                                GROUP BY 1 HAVING count(*) > 1) t",
    )
    .await;
    let first_outcomes_doubled = scalar(
        &env,
        "SELECT count(*) FROM (SELECT command_id FROM outbox
                                WHERE command_id IS NOT NULL
                                  AND NOT COALESCE((body->>'replayed')::boolean, false)
                                  AND NOT COALESCE((body->>'reconciled')::boolean, false)
                                GROUP BY 1 HAVING count(*) > 1) t",
    )
    .await;
    let stats = sim.notify_stats();
    println!("authorizations: {total} in {elapsed:?}, worker killed {kills} times");
    println!(
        "simulator: {} sends, {} accepted, {} re-sent, {} given up, {} corrupted",
        stats.sent, stats.accepted, stats.resent, stats.given_up, stats.corrupted
    );
    println!("notification rows: {rows} (+{repeats} repeats counted on them)");
    for (decision, verified, n) in &by_decision {
        println!("  {decision:<10} verified={verified:<5} {n}");
    }
    println!("automated commands: {commands_auto}");
    println!(
        "settled by a verified notification: {settled_by_notification} command(s) \
         ({settled_while_verifying} while still verifying, the others unknown); \
         settled twice: {settled_twice}; first outcomes published twice: {first_outcomes_doubled}"
    );
    assert_eq!(settled_twice, 0, "one settlement per command");
    assert_eq!(first_outcomes_doubled, 0, "one first outcome per command");
    assert_eq!(
        unverified_left, 0,
        "every unverified notification was concluded"
    );
    assert_eq!(stats.given_up, 0, "no notification was given up");
    assert!(
        (rows + repeats) as u64 >= stats.accepted,
        "every accepted notification is a row or a counted repeat"
    );
    assert_eq!(
        commands_auto as usize,
        total - expected_holds,
        "one command per acted payment"
    );
    env.cleanup().await;
}
