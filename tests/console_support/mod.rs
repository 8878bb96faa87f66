//! What the console's tests share: a worker with its admin listener and
//! both console tokens on a test environment, plain HTTP helpers that never
//! follow redirects, and an `unknown` made with the simulator's faults.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use backoffice_worker::config::Config;
use backoffice_worker::money::Amount;
use backoffice_worker::simulator::notify::{NotifySettings, SendRequest};
use backoffice_worker::simulator::{FaultKind, FaultScript, GatewayId, NewPayment};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::common::{free_port, pz, wait_for_status, TestEnv};

pub mod webdriver;

pub const VIEWER: &str = "viewer-token-for-tests";
pub const OPERATOR: &str = "operator-token-for-tests";

pub struct ConsoleWorker {
    pub addr: SocketAddr,
    pub token: CancellationToken,
    pub join: JoinHandle<anyhow::Result<()>>,
}

impl ConsoleWorker {
    /// A worker on `env` with the console on; background reconciliation
    /// waits an hour, so an `unknown` stays open for the console to settle.
    pub async fn start(env: &mut TestEnv) -> ConsoleWorker {
        env.worker_section = env.worker_section.replace(
            r#"reconcile_schedule = ["300ms", "600ms"]"#,
            r#"reconcile_schedule = ["1h"]"#,
        );
        let text = format!(
            "{}\n[console]\nviewer_token = \"${{V}}\"\noperator_token = \"${{O}}\"\n",
            env.config_text()
        );
        let config = Config::parse(Path::new("test.toml"), &text, |name| match name {
            "V" => Some(VIEWER.into()),
            "O" => Some(OPERATOR.into()),
            _ => None,
        })
        .expect("test config");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let token = CancellationToken::new();
        let join = tokio::spawn(backoffice_worker::worker::run_with_options(
            config,
            None,
            Some(addr),
            token.clone(),
        ));
        wait_for_status(
            &format!("http://{addr}/readyz"),
            200,
            Duration::from_secs(30),
        )
        .await;
        ConsoleWorker { addr, token, join }
    }

    /// As [`ConsoleWorker::start`], with the notifications listener on a
    /// port of its own (returned) and no automation rules: the simulator
    /// notifies it, and a mismatch is always held ([`make_hold`]).
    pub async fn start_notified(env: &mut TestEnv) -> (ConsoleWorker, u16) {
        let port = free_port();
        env.worker_section.push_str(&format!(
            "\n[notifications]\nlisten = \"127.0.0.1:{port}\"\n[automation]\nhold_deadline = \"6d\"\non_deadline = \"cancel\"\n"
        ));
        let w = ConsoleWorker::start(env).await;
        (w, port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn stop(self) {
        self.token.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.join)
            .await
            .expect("the worker stops within 30 s")
            .expect("worker task")
            .expect("worker exits cleanly");
    }
}

/// A client that shows redirects instead of following them.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// Makes `id` (a Paymentz refund on `payment`) end `unknown`: the refund is
/// applied but answered with a 500, and the inquiries that follow fail.
/// Returns once its `unknown` event has arrived; the inquiries' fault is
/// spent by then, so the next inquiry (the console's) succeeds.
pub async fn make_unknown(env: &mut TestEnv, id: &str, payment: &str) {
    let sim = env.sim.sim().clone();
    sim.script_fault(
        FaultScript::new(FaultKind::ErrorAfter, 1)
            .gateway(GatewayId::Paymentz)
            .operation("RF"),
    )
    .unwrap();
    env.publish(&pz(id, "refund", payment, Some("10.00"))).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while sim.ledger_for(GatewayId::Paymentz, payment).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the refund was applied"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sim.script_fault(
        FaultScript::new(FaultKind::ErrorBefore, 2)
            .gateway(GatewayId::Paymentz)
            .operation("IN"),
    )
    .unwrap();
    let first = env.outcome_of(id).await;
    assert_eq!(first.outcome.as_str(), "unknown", "{first:?}");
}

/// Makes a held authorization for the Praxis payment `payment` (10.00 USD
/// authorized): the simulator notifies an amount that does not match, which
/// the worker always holds (rule "mismatch"). Needs
/// [`ConsoleWorker::start_notified`]. Returns the notification's id.
pub async fn make_hold(env: &TestEnv, port: u16, payment: &str) -> i64 {
    let sim = env.sim.sim().clone();
    // Created quietly (no notification of the authorization itself), then
    // notified once with the wrong amount.
    sim.set_notify_settings(NotifySettings::default()).unwrap();
    sim.create_payment(
        NewPayment::new(GatewayId::Praxis, Amount::from_minor(1000))
            .id(payment)
            .state("authorized")
            .currency("USD"),
    )
    .unwrap();
    sim.set_notify_settings(NotifySettings {
        url: Some(format!(
            "http://127.0.0.1:{port}/notifications/{{gateway}}/default"
        )),
        resend_after_ms: 300,
        ..NotifySettings::default()
    })
    .unwrap();
    sim.send_notification(&SendRequest {
        gateway: GatewayId::Praxis,
        id: payment.into(),
        copies: None,
        corrupt: false,
        charge_amount: Some(900),
    })
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let held: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM notifications WHERE payment_id = $1 AND decision = 'held'
              AND rule = 'mismatch' AND hold_closed_at IS NULL ORDER BY id LIMIT 1",
        )
        .bind(payment)
        .fetch_optional(&env.pool)
        .await
        .unwrap();
        if let Some(id) = held {
            return id;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no hold for {payment}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
