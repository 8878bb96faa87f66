//! The test harness: a private world per test against the real services.
//!
//! Each [`TestEnv`] has its own PostgreSQL database, its own queue and exchange
//! names, and its own in-process gateway simulator on an ephemeral port, so
//! tests run in parallel without seeing each other's data. Nothing is mocked:
//! the worker talks to the real RabbitMQ and PostgreSQL on this machine.
#![allow(dead_code)]

pub mod notify;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use backoffice_worker::config::Config;
use backoffice_worker::events::ResultEvent;
use backoffice_worker::simulator::{RunningSimulator, Simulator, SimulatorConfig};
use futures::StreamExt;
use lapin::options::{
    BasicPublishOptions, ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const PG_SERVER: &str = "postgres://postgres@127.0.0.1:5432";

/// Worker settings fast enough for tests: short backoffs, short leases.
pub const FAST_WORKER: &str = r#"
[worker]
max_in_flight = 200
max_attempts = 4
initial_backoff = "20ms"
max_backoff = "200ms"
max_retry_time = "30s"
lease = "4s"
reconcile_attempts = 2
reconcile_schedule = ["300ms", "600ms"]
shutdown_grace = "5s"
"#;

pub struct TestEnv {
    pub name: String,
    pub sim: RunningSimulator,
    pub db_name: String,
    pub db_url: String,
    pub pool: PgPool,
    pub amqp: Connection,
    pub channel: Channel,
    pub command_queue: String,
    pub result_exchange: String,
    pub dead_letter_queue: String,
    events: Consumer,
    /// Every event received so far, by command id, in arrival order.
    pub seen: HashMap<String, Vec<ResultEvent>>,
    /// Events that are not a command's result (`{gateway}.authorization.held`),
    /// with their routing key, in arrival order.
    pub others: Vec<(String, serde_json::Value)>,
    pub worker_section: String,
    pub dir: tempfile::TempDir,
}

impl TestEnv {
    /// The worker's store on this test's database with one connection, so
    /// that every statement is prepared in the one session a test inspects
    /// (its generic plans, its statistics).
    pub fn single_connection_store(&self) -> backoffice_worker::store::Store {
        self.store(1)
    }

    /// The worker's store on this test's database, with at most
    /// `max_connections` (more than one: writes that run side by side).
    pub fn store(&self, max_connections: u32) -> backoffice_worker::store::Store {
        backoffice_worker::store::Store::connect_lazy(
            &backoffice_worker::config::DatabaseSettings {
                url: secrecy::SecretString::from(self.db_url.clone()),
                max_connections,
                statement_timeout: backoffice_worker::config::DEFAULT_STATEMENT_TIMEOUT,
            },
        )
        .unwrap()
    }

    pub async fn new(test: &str) -> TestEnv {
        TestEnv::with_simulator(test, SimulatorConfig::sandbox()).await
    }

    pub async fn with_simulator(test: &str, sim_config: SimulatorConfig) -> TestEnv {
        // Logs only when asked: RUST_LOG=backoffice_worker=debug cargo test -- --nocapture
        if std::env::var_os("RUST_LOG").is_some() {
            backoffice_worker::telemetry::init(
                backoffice_worker::telemetry::LogFormat::Text,
                "warn",
            );
        }
        let suffix = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
        let name = format!("bwtest.{test}.{suffix}");
        let db_name = format!("bwtest_{}_{suffix}", test.replace(['-', '.'], "_"));
        let db_url = format!("{PG_SERVER}/{db_name}");
        backoffice_worker::store::ensure_database(&db_url)
            .await
            .expect("create the test database");
        let pool = PgPool::connect(&db_url)
            .await
            .expect("connect to the test database");
        {
            // On a connection of its own, whose statistics are flushed before
            // the test starts: the migrations' own table scans (building
            // indexes concurrently scans a table twice) must not show up
            // later in a test that counts scans.
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&db_url)
                .await
                .expect("connect to the test database");
            backoffice_worker::store::MIGRATOR
                .run(&mut conn)
                .await
                .expect("migrate the test database");
            sqlx::query("SELECT pg_stat_force_next_flush()")
                .execute(&mut conn)
                .await
                .expect("flush statistics");
            // Answered after the backend went idle once, which is when it flushed.
            sqlx::query("SELECT 1").execute(&mut conn).await.unwrap();
            conn.close().await.expect("close the migrating connection");
        }
        let sim = Simulator::start(sim_config)
            .await
            .expect("start the simulator");

        let amqp = Connection::connect(AMQP_URL, ConnectionProperties::default())
            .await
            .expect("connect to RabbitMQ");
        let channel = amqp.create_channel().await.unwrap();
        let command_queue = format!("{name}.commands");
        let result_exchange = format!("{name}.events");
        let dead_letter_queue = format!("{name}.commands.dead");
        // Declared exactly as the worker declares them, so either may go first.
        let topology = backoffice_worker::broker::Topology {
            command_queue: command_queue.clone(),
            result_exchange: result_exchange.clone(),
            dead_letter_queue: dead_letter_queue.clone(),
        };
        backoffice_worker::broker::declare(&channel, &topology)
            .await
            .unwrap();
        let events_channel = amqp.create_channel().await.unwrap();
        let events = backoffice_worker::broker::consume_all(
            &events_channel,
            &result_exchange,
            "test-events",
        )
        .await
        .unwrap();
        TestEnv {
            name,
            sim,
            db_name,
            db_url,
            pool,
            amqp,
            channel,
            command_queue,
            result_exchange,
            dead_letter_queue,
            events,
            seen: HashMap::new(),
            others: Vec::new(),
            worker_section: FAST_WORKER.to_string(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The worker's configuration for this environment.
    pub fn config_text(&self) -> String {
        format!(
            r#"
[amqp]
url = "{AMQP_URL}"
command_queue = "{cq}"
result_exchange = "{ex}"
dead_letter_queue = "{dl}"
prefetch = 200

[database]
url = "{db}"
max_connections = 12

[http]
connect_timeout = "1s"
request_timeout = "1s"
{worker}
[accounts.paymentz.default]
base_url = "{base}"
partner_id = "197"
username = "sandbox-merchant"
member_id = "11359"
secure_key = "sandbox-secure-key"

[accounts.praxis.default]
base_url = "{base}"
merchant_id = "Test-Integration-Merchant"
merchant_secret = "sandbox-merchant-secret"
frontend = "Integration TEST USD"
"#,
            cq = self.command_queue,
            ex = self.result_exchange,
            dl = self.dead_letter_queue,
            db = self.db_url,
            worker = self.worker_section,
            base = self.sim.base_url(),
        )
    }

    pub fn config(&self) -> Config {
        Config::parse(&PathBuf::from("test.toml"), &self.config_text(), |_| None)
            .expect("test config")
    }

    /// Writes the config to a file (for the worker as a separate process).
    pub fn config_file(&self) -> PathBuf {
        let path = self.dir.path().join("backoffice.toml");
        std::fs::write(&path, self.config_text()).unwrap();
        path
    }

    /// Starts a worker in this process.
    pub fn start_worker(&self) -> WorkerHandle {
        let token = CancellationToken::new();
        let config = self.config();
        let join = tokio::spawn(backoffice_worker::worker::run_with(config, token.clone()));
        WorkerHandle { token, join }
    }

    /// Starts a worker in this process with its admin listener (`/metrics`)
    /// on `admin`.
    pub fn start_worker_with_admin(&self, admin: std::net::SocketAddr) -> WorkerHandle {
        let token = CancellationToken::new();
        let config = self.config();
        let join = tokio::spawn(backoffice_worker::worker::run_with_options(
            config,
            None,
            Some(admin),
            token.clone(),
        ));
        WorkerHandle { token, join }
    }

    /// Publishes a command as producers do: persistent, JSON, to the default exchange.
    pub async fn publish(&self, command: &serde_json::Value) {
        self.publish_raw(
            serde_json::to_vec(command).unwrap(),
            BasicProperties::default(),
        )
        .await;
    }

    pub async fn publish_raw(&self, body: Vec<u8>, properties: BasicProperties) {
        let properties = properties
            .with_delivery_mode(2)
            .with_content_type("application/json".into());
        self.channel
            .basic_publish(
                "".into(),
                self.command_queue.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                properties,
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }

    /// Waits for the next event on the result exchange.
    pub async fn next_event(
        &mut self,
        within: Duration,
    ) -> Option<(ResultEvent, lapin::message::Delivery)> {
        let delivery = tokio::time::timeout(within, self.events.next())
            .await
            .ok()??
            .ok()?;
        let value: serde_json::Value =
            serde_json::from_slice(&delivery.data).expect("events are JSON");
        if value.get("command_id").is_none() {
            // Not a result event (a hold): kept aside, and the next one awaited.
            self.others
                .push((delivery.routing_key.as_str().to_string(), value));
            return Box::pin(self.next_event(within)).await;
        }
        // From the bytes again: `metadata` is kept as raw JSON text, which a
        // serde_json::Value cannot hand over.
        let event: ResultEvent = serde_json::from_slice(&delivery.data).expect("a result event");
        self.seen
            .entry(event.command_id.clone())
            .or_default()
            .push(event.clone());
        Some((event, delivery))
    }

    /// Waits until an event for `command_id` matching `want` has arrived.
    pub async fn wait_event(
        &mut self,
        command_id: &str,
        within: Duration,
        want: impl Fn(&ResultEvent) -> bool,
    ) -> ResultEvent {
        if let Some(e) = self
            .seen
            .get(command_id)
            .and_then(|v| v.iter().find(|e| want(e)))
        {
            return e.clone();
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Some((event, _)) if event.command_id == command_id && want(&event) => return event,
                Some(_) => continue,
                None => panic!(
                    "no matching event for {command_id} within {within:?}; seen: {:?}",
                    self.seen.get(command_id)
                ),
            }
        }
    }

    /// The first (terminal) event of a command.
    pub async fn outcome_of(&mut self, command_id: &str) -> ResultEvent {
        self.wait_event(command_id, Duration::from_secs(30), |e| {
            !e.replayed && !e.reconciled
        })
        .await
    }

    /// Waits until every command in `ids` has its terminal event.
    pub async fn wait_all(&mut self, ids: &[String], within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let missing = ids
                .iter()
                .filter(|id| {
                    !self
                        .seen
                        .get(*id)
                        .is_some_and(|v| v.iter().any(|e| !e.replayed && !e.reconciled))
                })
                .count();
            if missing == 0 {
                return;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if self.next_event(left).await.is_none() {
                panic!(
                    "{missing} of {} commands have no event after {within:?}",
                    ids.len()
                );
            }
        }
    }

    /// Collects events for `quiet` after the last one arrived.
    pub async fn drain_events(&mut self, quiet: Duration) {
        while self.next_event(quiet).await.is_some() {}
    }

    /// Waits until every outbox row is marked published. The relay marks a
    /// row after the broker's confirm, which can come after the event was
    /// delivered.
    pub async fn until_all_published(&self, within: Duration) {
        self.until_count(
            "SELECT count(*) FROM outbox WHERE published_at IS NULL",
            |unpublished| unpublished == 0,
            within,
            "outbox rows not marked published",
        )
        .await;
    }

    /// Polls a count (`sql`) until `done` holds for it, for at most
    /// `within`; fails the test with `what` and the last count otherwise.
    /// For a state the database reaches with no event to await.
    pub async fn until_count(
        &self,
        sql: &str,
        done: impl Fn(i64) -> bool,
        within: Duration,
        what: &str,
    ) -> i64 {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let count: i64 = sqlx::query_scalar(sql).fetch_one(&self.pool).await.unwrap();
            if done(count) {
                return count;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: {count} after {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn scalar_i64(&self, sql: &str, id: &str) -> i64 {
        sqlx::query_scalar(sql)
            .bind(id)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// Drops the database and the queues. Called at the end of a passing test.
    pub async fn cleanup(self) {
        let _ = self
            .channel
            .queue_delete(
                self.command_queue.as_str().into(),
                QueueDeleteOptions::default(),
            )
            .await;
        let _ = self
            .channel
            .queue_delete(
                self.dead_letter_queue.as_str().into(),
                QueueDeleteOptions::default(),
            )
            .await;
        let _ = self
            .channel
            .exchange_delete(
                self.result_exchange.as_str().into(),
                ExchangeDeleteOptions::default(),
            )
            .await;
        let _ = self.amqp.close(200, "test done".into()).await;
        self.pool.close().await;
        self.sim.shutdown().await;
        if let Ok(mut admin) = sqlx::PgConnection::connect_with_db(PG_SERVER).await {
            let _ = sqlx::query(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.db_name
            ))
            .execute(&mut admin)
            .await;
        }
    }
}

trait ConnectWithDb {
    async fn connect_with_db(server: &str) -> Result<sqlx::PgConnection, sqlx::Error>;
}

impl ConnectWithDb for sqlx::PgConnection {
    async fn connect_with_db(server: &str) -> Result<sqlx::PgConnection, sqlx::Error> {
        use sqlx::Connection;
        sqlx::PgConnection::connect(&format!("{server}/postgres")).await
    }
}

pub struct WorkerHandle {
    pub token: CancellationToken,
    pub join: JoinHandle<anyhow::Result<()>>,
}

impl WorkerHandle {
    /// Asks the worker to stop and waits until it has.
    pub async fn stop(self) {
        self.token.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.join)
            .await
            .expect("worker stops within 30 s")
            .expect("worker task")
            .expect("worker exits cleanly");
    }
}

/// A Paymentz command.
pub fn pz(id: &str, operation: &str, payment_id: &str, amount: Option<&str>) -> serde_json::Value {
    let mut c = serde_json::json!({
        "id": id, "gateway": "paymentz", "operation": operation, "payment_id": payment_id,
        "metadata": {"test": id}
    });
    if let Some(a) = amount {
        c["amount"] = a.into();
    }
    c
}

/// `from` and `to` of a transaction list that covers the simulator's
/// payments (made today) and stays within the longest span a list may
/// have (366 days).
pub fn list_window() -> (String, String) {
    let today: time::Date = time::OffsetDateTime::now_utc().date();
    let half: time::Duration = time::Duration::days(180);
    ((today - half).to_string(), (today + half).to_string())
}

pub fn px(id: &str, operation: &str, trace_id: &str) -> serde_json::Value {
    serde_json::json!({"id": id, "gateway": "praxis", "operation": operation, "payment_id": trace_id})
}

/// A TCP proxy in front of a server, which a test can cut and restore: the
/// way to take PostgreSQL (or RabbitMQ) away from one worker without stopping
/// the server that every other test is using.
pub struct Proxy {
    pub port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
}

impl Proxy {
    pub async fn start(target: &str) -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (cut, cuts) = tokio::sync::watch::channel(0u64);
        let target = target.to_string();
        let flag = up.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !flag.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                let mut cuts = cuts.clone();
                // Only cuts from now on concern this connection.
                cuts.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        Proxy { port, up, cut }
    }

    /// Drops every open connection and refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A port nothing listens on now (for listeners the code under test binds).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET a local URL with a short timeout: (status, body), or None when unreachable.
pub async fn http_get(url: &str) -> Option<(u16, String)> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let response = client.get(url).send().await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.unwrap_or_default()))
}

/// Polls `url` until it answers `status`, or panics after `within`.
pub async fn wait_for_status(url: &str, status: u16, within: Duration) -> String {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some((got, body)) = http_get(url).await {
            if got == status {
                return body;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} did not answer {status} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Takes one message from `queue`, polling until `within` has passed (a plain
/// queue has no event to await without consuming from it).
pub async fn get_message(
    channel: &Channel,
    queue: &str,
    within: Duration,
) -> lapin::message::BasicGetMessage {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(message) = channel
            .basic_get(
                queue.into(),
                lapin::options::BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap()
        {
            return message;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no message on {queue} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A private, exclusive queue to give as `reply_to`, on its own channel.
pub async fn reply_queue(amqp: &Connection) -> (Channel, lapin::Queue) {
    let channel = amqp.create_channel().await.unwrap();
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    (channel, queue)
}

/// Takes one result event from a reply queue: its `correlation_id` and the event.
pub async fn reply_event(
    channel: &Channel,
    queue: &str,
    within: Duration,
) -> (Option<String>, ResultEvent) {
    let message = get_message(channel, queue, within).await;
    let correlation = message
        .delivery
        .properties
        .correlation_id()
        .as_ref()
        .map(|s| s.as_str().to_string());
    let event = serde_json::from_slice(&message.delivery.data).expect("events are JSON");
    (correlation, event)
}

/// A worker (or other) child process that is killed when the test ends, even
/// by a panic: a failed assertion must not leave a worker consuming and
/// re-declaring its queues behind it.
pub struct ChildGuard(pub std::process::Child);

impl std::ops::Deref for ChildGuard {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for ChildGuard {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A private place for a `--sandbox` worker, which always uses the names
/// `backoffice_sandbox` and `backoffice.sandbox.*`: its own RabbitMQ vhost
/// (queue names are per vhost) and its own schema in `backoffice_sandbox`,
/// selected by `search_path` in the database URL (a sandbox keeps the
/// configured server and its connection parameters, and only changes the
/// database name). So tests, and other people's sandboxes on this machine,
/// never share a sandbox's commands.
pub struct SandboxPlace {
    pub vhost: String,
    pub schema: String,
    /// `$AMQP_URL` for the worker and the operator commands.
    pub amqp_url: String,
    /// `$DATABASE_URL`: any database name (the sandbox replaces it), with
    /// the schema as the connection's `search_path`.
    pub db_url: String,
    /// The sandbox database itself, with the same `search_path`.
    pub sandbox_db_url: String,
}

pub fn rabbitmqctl(args: &[&str]) {
    let out = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl");
    assert!(out.status.success(), "rabbitmqctl {args:?}: {out:?}");
}

impl SandboxPlace {
    pub async fn new(test: &str) -> SandboxPlace {
        let suffix = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
        let vhost = format!("bwtest-{test}-{suffix}");
        rabbitmqctl(&["add_vhost", &vhost]);
        rabbitmqctl(&["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"]);
        let schema = format!("bwtest_{}_{suffix}", test.replace(['-', '.'], "_"));
        let sandbox_db_url =
            format!("{PG_SERVER}/backoffice_sandbox?options[search_path]={schema}");
        backoffice_worker::store::ensure_database(&sandbox_db_url)
            .await
            .expect("the sandbox database");
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&sandbox_db_url)
            .await
            .unwrap();
        sqlx::query(&format!("CREATE SCHEMA \"{schema}\""))
            .execute(&mut conn)
            .await
            .unwrap();
        SandboxPlace {
            amqp_url: format!("amqp://guest:guest@127.0.0.1:5672/{vhost}"),
            db_url: format!("{PG_SERVER}/bwtest_not_used_{suffix}?options[search_path]={schema}"),
            sandbox_db_url,
            vhost,
            schema,
        }
    }

    /// The binary as a new user runs it in this place: in `dir`, with no
    /// config file, on this place's server URLs.
    pub fn command(&self, dir: &std::path::Path, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_backoffice-worker"));
        c.args(args)
            .current_dir(dir)
            .env_remove("BACKOFFICE_CONFIG")
            .env("AMQP_URL", &self.amqp_url)
            .env("DATABASE_URL", &self.db_url);
        c
    }

    /// `run --sandbox` in this place (its simulator on `simulator`, its
    /// admin listener on `admin`, its output discarded), once `/readyz`
    /// answers 200.
    pub async fn start_sandbox(
        &self,
        dir: &std::path::Path,
        simulator: &str,
        admin: &str,
    ) -> ChildGuard {
        let worker = ChildGuard(
            self.command(
                dir,
                &[
                    "run",
                    "--sandbox",
                    "--sandbox-listen",
                    simulator,
                    "--admin-listen",
                    admin,
                ],
            )
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
        );
        wait_for_status(
            &format!("http://{admin}/readyz"),
            200,
            Duration::from_secs(60),
        )
        .await;
        worker
    }

    pub async fn cleanup(self) {
        rabbitmqctl(&["delete_vhost", &self.vhost]);
        if let Ok(mut conn) =
            <sqlx::PgConnection as sqlx::Connection>::connect(&self.sandbox_db_url).await
        {
            let _ = sqlx::query(&format!("DROP SCHEMA \"{}\" CASCADE", self.schema))
                .execute(&mut conn)
                .await;
        }
    }
}

/// A valid Paymentz capture of 1.00 EUR on `payment`, as intake would store
/// it, for the tests that write commands through the store directly.
pub fn new_command(id: &str, payment: &str) -> backoffice_worker::store::commands::NewCommand {
    backoffice_worker::store::commands::NewCommand {
        id: id.to_string(),
        payload: format!(r#"{{"id": "{id}"}}"#),
        fingerprint: format!("fp-{id}"),
        gateway: Some("paymentz".into()),
        account: Some("default".into()),
        operation: Some("capture".into()),
        payment_id: Some(payment.into()),
        amount_minor: Some(100),
        currency: Some("EUR".into()),
        reply_to: None,
        correlation_id: None,
    }
}

/// A successful call's exchange, as a gateway client records it.
pub fn exchange(purpose: &str) -> backoffice_worker::gateways::exchange::Exchange {
    backoffice_worker::gateways::exchange::Exchange {
        started_at: time::OffsetDateTime::now_utc(),
        kind: backoffice_worker::gateways::exchange::ExchangeKind::Call,
        purpose: purpose.into(),
        method: "POST".into(),
        url: "http://gateway.test/payments/1".into(),
        request: serde_json::json!({"paymentType": purpose}),
        signature_sent: Some("checksum".into()),
        http_status: Some(200),
        response_body: Some("{}".into()),
        signature_received: None,
        signature_verified: None,
        latency: Duration::from_millis(1),
        error: None,
        classification: backoffice_worker::gateways::Classification::Succeeded,
    }
}

/// The payment lease claim of [`new_command`]`(id, payment)`.
pub fn payment_claim(id: &str, payment: &str) -> backoffice_worker::store::commands::PaymentClaim {
    backoffice_worker::store::commands::PaymentClaim {
        gateway: "paymentz".into(),
        payment_key: backoffice_worker::store::commands::PaymentKey::from(payment),
        command_id: id.into(),
    }
}
