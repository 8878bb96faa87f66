//! What the console's tests share: a worker with its admin listener and
//! both console tokens on a test environment, plain HTTP helpers that never
//! follow redirects, and an `unknown` made with the simulator's faults.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use backoffice_worker::config::Config;
use backoffice_worker::simulator::{FaultKind, FaultScript, GatewayId};
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
