//! The notification tests' world: a [`TestEnv`] (its own database, queues
//! and simulator) whose worker listens for notifications on a port of its
//! own, with the test's `[automation]`, an admin listener for its metrics,
//! and the simulator told to notify that listener, so that each test reads
//! as its scenario. Nothing is mocked: the simulator POSTs over real HTTP
//! to the worker's real listener.

use std::net::SocketAddr;
use std::time::Duration;

use backoffice_worker::money::Amount;
use backoffice_worker::simulator::notify::{NotifySettings, SendRequest};
use backoffice_worker::simulator::{Effect, GatewayId, NewPayment, PaymentView};

use super::{free_port, ChildGuard, TestEnv, WorkerHandle, FAST_WORKER};

/// The `[notifications]` table that listens on `port`, after `worker` (the
/// `[worker]` table) and before `automation`.
pub fn listening_section(worker: &str, port: u16, automation: &str) -> String {
    format!("{worker}\n[notifications]\nlisten = \"127.0.0.1:{port}\"\n{automation}\n")
}

/// The simulator's notification URL for the worker listening on `port`.
pub fn notify_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}/notifications/{{gateway}}/default")
}

/// The worker binary, run on `env`'s config file, its log in `log_name`.
pub fn spawn_worker_process(env: &TestEnv, log_name: &str, log_level: &str) -> ChildGuard {
    let log = std::fs::File::create(env.dir.path().join(log_name)).unwrap();
    ChildGuard(
        std::process::Command::new(env!("CARGO_BIN_EXE_backoffice-worker"))
            .args(["run", "--config"])
            .arg(env.config_file())
            .env_remove("AMQP_URL")
            .env_remove("DATABASE_URL")
            .env("RUST_LOG", log_level)
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the worker binary"),
    )
}

/// A Praxis payment the simulator holds as `authorized`.
pub fn praxis_payment(id: &str, minor: u64, currency: &str) -> NewPayment {
    NewPayment::new(GatewayId::Praxis, Amount::from_minor(minor))
        .id(id)
        .state("authorized")
        .currency(currency)
}

pub struct World {
    pub env: TestEnv,
    /// The worker's notification listener.
    pub port: u16,
    /// The in-process worker's admin listener (`/metrics`).
    pub admin: SocketAddr,
    worker: Option<WorkerHandle>,
}

impl std::ops::Deref for World {
    type Target = TestEnv;
    fn deref(&self) -> &TestEnv {
        &self.env
    }
}

impl std::ops::DerefMut for World {
    fn deref_mut(&mut self) -> &mut TestEnv {
        &mut self.env
    }
}

impl World {
    /// Not started yet, the simulator not told where to notify: the test
    /// may change the worker's settings (`env.worker_section`) first.
    pub async fn new(test: &str, automation: &str) -> World {
        let mut env = TestEnv::new(test).await;
        let port = free_port();
        env.worker_section = listening_section(FAST_WORKER, port, automation);
        let admin = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        World {
            env,
            port,
            admin,
            worker: None,
        }
    }

    /// The worker started, the simulator not yet notifying it (the test
    /// posts, or sends what it chooses with [`World::notify`]).
    pub async fn started(test: &str, automation: &str) -> World {
        let mut world = World::new(test, automation).await;
        world.start().await;
        world
    }

    /// The worker started and the simulator notifying it of every payment
    /// it authorizes and every status change.
    pub async fn notified(test: &str, automation: &str) -> World {
        let mut world = World::new(test, automation).await;
        world.point_simulator();
        world.start().await;
        world
    }

    /// Starts the worker in this process, with its admin listener, and
    /// waits until it listens for notifications.
    pub async fn start(&mut self) {
        assert!(self.worker.is_none(), "one in-process worker per world");
        let token = tokio_util::sync::CancellationToken::new();
        let join = tokio::spawn(backoffice_worker::worker::run_with_options(
            self.env.config(),
            None,
            Some(self.admin),
            token.clone(),
        ));
        self.worker = Some(WorkerHandle { token, join });
        wait_listening(self.port).await;
    }

    /// Stops the worker (if this world started one) and drops the world.
    pub async fn finish(mut self) {
        if let Some(worker) = self.worker.take() {
            worker.stop().await;
        }
        self.env.cleanup().await;
    }

    /// Tells the simulator to notify this world's listener (re-sending
    /// after 300 ms what is answered `-1`).
    pub fn point_simulator(&self) {
        self.env
            .sim
            .sim()
            .set_notify_settings(NotifySettings {
                url: Some(notify_url(self.port)),
                resend_after_ms: 300,
                ..NotifySettings::default()
            })
            .unwrap();
    }

    /// A Praxis payment authorized at the simulator (which notifies it when
    /// it is pointed at the listener).
    pub fn authorize(&self, id: &str, minor: u64, currency: &str) -> PaymentView {
        self.env
            .sim
            .sim()
            .create_payment(praxis_payment(id, minor, currency))
            .unwrap()
    }

    /// Has the simulator send one notification of a Praxis payment's
    /// current status now, with its signature `corrupt`ed or a processed
    /// amount (`charge_amount`) of its own.
    pub fn notify(&self, id: &str, corrupt: bool, charge_amount: Option<u64>) {
        self.point_simulator();
        self.env
            .sim
            .sim()
            .send_notification(&SendRequest {
                gateway: GatewayId::Praxis,
                id: id.into(),
                copies: None,
                corrupt,
                charge_amount,
            })
            .unwrap();
    }

    /// What the simulator's ledger shows was done to a payment.
    pub fn effects(&self, gateway: GatewayId, id: &str) -> Vec<Effect> {
        self.env
            .sim
            .sim()
            .ledger_for(gateway, id)
            .into_iter()
            .map(|e| e.operation)
            .collect()
    }

    /// POSTs `body` to this world's listener as `gateway`'s notification.
    pub async fn post(&self, gateway: &str, body: String) -> (u16, String) {
        post(self.port, gateway, body).await
    }

    /// Polls the database until `sql` (one bigint, `$1` = `id`) equals `want`.
    pub async fn wait_scalar(&self, sql: &str, id: &str, want: i64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let got: Option<i64> = sqlx::query_scalar(sql)
                .bind(id)
                .fetch_optional(&self.env.pool)
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

    /// Polls the database until `sql` (one bigint, `$1` = `id`) is at least `want`.
    pub async fn wait_at_least(&self, sql: &str, id: &str, want: i64) -> i64 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.env.scalar_i64(sql, id).await;
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

    /// The in-process worker's `/metrics` once every line of `want` is in
    /// it (the counters are incremented once what they count committed).
    pub async fn metrics_with(&self, want: &[&str]) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let text = reqwest::get(format!("http://{}/metrics", self.admin))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            if want.iter().all(|line| text.lines().any(|l| l == *line)) {
                return text;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not all of {want:?} in the metrics:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Waits until something listens on `port`.
pub async fn wait_listening(port: u16) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(tokio::time::Instant::now() < deadline, "listener not up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// POSTs `body` as `gateway`'s notification to the listener on `port`.
pub async fn post(port: u16, gateway: &str, body: String) -> (u16, String) {
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
