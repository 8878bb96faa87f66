//! `backoffice-worker run`: wires the configuration, the database, the gateway
//! accounts, the admin listener and the pipeline together, and turns SIGTERM /
//! Ctrl-C into a graceful stop. `--sandbox` adds an in-process gateway
//! simulator, points every account at it, and uses names of its own for the
//! database and the broker ([`sandboxed`]): whatever the configuration says,
//! a sandbox never reads a real command queue or writes to a real database.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config, ConfigError};
use crate::gateways::http::HttpTransport;
use crate::metrics::Metrics;
use crate::money::Amount;
use crate::pipeline::backoff::Backoff;
use crate::pipeline::{self, Worker};
use crate::simulator::{GatewayId, NewPayment, RunningSimulator, Simulator, SimulatorConfig};
use crate::store::{self, Store};
use crate::telemetry::Escaped;

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:
  backoffice-worker run --sandbox
  backoffice-worker run --config /etc/backoffice/backoffice.toml --admin-listen 0.0.0.0:9090
  BACKOFFICE_CONFIG=./backoffice.toml backoffice-worker --log-format json run

In --sandbox mode the worker starts the gateway simulator in-process and points every account
at it: no real gateway is ever called. It always uses its own names, whatever the configuration
or the environment says: database `backoffice_sandbox` (created when missing, on the configured
server), queue `backoffice.sandbox.commands`, exchange `backoffice.sandbox.events`, dead letters
`backoffice.sandbox.commands.dead`. The operator commands take --sandbox to address the same.")]
pub struct RunArgs {
    /// The configuration file (default: $BACKOFFICE_CONFIG, then ./backoffice.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Run against the built-in gateway simulator instead of the real gateways.
    #[arg(long)]
    pub sandbox: bool,
    /// Where the sandbox simulator listens (its admin API is under /admin).
    #[arg(long, default_value = "127.0.0.1:8099", requires = "sandbox")]
    pub sandbox_listen: SocketAddr,
    /// Serve /metrics, /healthz, /readyz and the console (with `[console]` tokens) on this address (overrides `[admin] listen`; a sandbox uses 127.0.0.1:9090 by default).
    #[arg(long)]
    pub admin_listen: Option<SocketAddr>,
}

/// The configuration `--sandbox` uses when there is no config file: the local
/// services (or `$AMQP_URL` / `$DATABASE_URL`) and one sandbox account per gateway.
pub const SANDBOX_CONFIG: &str = r#"
[accounts.paymentz.default]
base_url = "http://127.0.0.1:8099"
partner_id = "197"
username = "sandbox-merchant"
member_id = "11359"
secure_key = "sandbox-secure-key"

[accounts.praxis.default]
base_url = "http://127.0.0.1:8099"
merchant_id = "Test-Integration-Merchant"
merchant_secret = "sandbox-merchant-secret"
frontend = "Integration TEST USD"
"#;

/// The admin listener (and console) of a sandbox when none is configured.
pub const SANDBOX_ADMIN_PORT: u16 = 9090;

/// The database a sandbox uses, on the configured server.
pub const SANDBOX_DATABASE: &str = "backoffice_sandbox";
/// The queue a sandbox reads commands from.
pub const SANDBOX_COMMAND_QUEUE: &str = "backoffice.sandbox.commands";
/// The exchange a sandbox publishes its results to.
pub const SANDBOX_RESULT_EXCHANGE: &str = "backoffice.sandbox.events";
/// The queue a sandbox moves unreadable messages to.
pub const SANDBOX_DEAD_LETTER_QUEUE: &str = "backoffice.sandbox.commands.dead";

/// The configuration with the sandbox's own names: the database
/// [`SANDBOX_DATABASE`] on the configured server (same host, port, user and
/// connection parameters) and the sandbox queues and exchange on the
/// configured broker. A sandbox answers from a simulator: pointed at a
/// production configuration, it must not take real commands off the real
/// queue and publish `succeeded` for them, so it never uses the configured
/// names, whatever the file or `$DATABASE_URL` say.
pub fn sandboxed(mut config: Config) -> Result<Config, ConfigError> {
    let mut url =
        url::Url::parse(config.database.url.expose_secret()).map_err(|e| ConfigError::Key {
            file: config.file.clone(),
            table: "database".into(),
            key: "url".into(),
            problem: format!("malformed URL: {e}"),
        })?;
    url.set_path(&format!("/{SANDBOX_DATABASE}"));
    config.database.url = secrecy::SecretString::from(url.to_string());
    config.amqp.command_queue = SANDBOX_COMMAND_QUEUE.into();
    config.amqp.result_exchange = SANDBOX_RESULT_EXCHANGE.into();
    config.amqp.dead_letter_queue = SANDBOX_DEAD_LETTER_QUEUE.into();
    Ok(config)
}

/// Where a sandboxed configuration points, without credentials: one line
/// for logs and for the operator commands' notes.
pub fn sandbox_names(config: &Config) -> String {
    let database = url::Url::parse(config.database.url.expose_secret())
        .map(|u| {
            format!(
                "`{SANDBOX_DATABASE}` on {}:{}",
                u.host_str().unwrap_or("?"),
                u.port().unwrap_or(5432)
            )
        })
        .unwrap_or_else(|_| format!("`{SANDBOX_DATABASE}`"));
    format!(
        "database {database}, command queue `{}`, result exchange `{}`, dead letters `{}`",
        config.amqp.command_queue, config.amqp.result_exchange, config.amqp.dead_letter_queue
    )
}

/// Loads the config and runs the worker until a stop signal.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = load_config(&args)?;
    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone());
    let sandbox = if args.sandbox {
        Some(args.sandbox_listen)
    } else {
        None
    };
    run_with_options(config, sandbox, args.admin_listen, shutdown).await
}

/// The file if there is one; the built-in sandbox config if `--sandbox`; else
/// the error that says what is missing.
pub fn load_config(args: &RunArgs) -> Result<Config, ConfigError> {
    match config::locate(args.config.as_deref()) {
        Ok(file) => Config::load(&file),
        Err(ConfigError::NotFound) if args.sandbox => Config::parse(
            std::path::Path::new("<built-in sandbox config>"),
            SANDBOX_CONFIG,
            |name| std::env::var(name).ok(),
        ),
        Err(error) => Err(error),
    }
}

/// Runs a worker for `config` until `shutdown` is cancelled. Tests call this directly.
pub async fn run_with(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    run_with_options(config, None, None, shutdown).await
}

pub async fn run_with_options(
    mut config: Config,
    sandbox: Option<SocketAddr>,
    admin_listen: Option<SocketAddr>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (simulator, notify_fallback) = match sandbox {
        Some(listen) => {
            let (simulator, fallback) = enter_sandbox(&mut config, listen).await?;
            (Some(simulator), fallback)
        }
        None => (None, false),
    };
    let accounts = config.clients(&HttpTransport::new(config.http.clone()));
    let store = Store::connect_lazy(&config.database)?;
    let metrics = Arc::new(Metrics::new());
    let worker = Worker::new(&config, store.clone(), accounts, metrics, shutdown.clone());
    let admin_stop = CancellationToken::new();
    let admin = AdminStart {
        explicit: admin_listen,
        sandbox: simulator.is_some(),
        stop: admin_stop.clone(),
    };
    admin.start(&mut config, &worker).await?;
    let notifications =
        crate::notifications::start(&config, worker.clone(), admin_stop.clone(), notify_fallback)
            .await?;
    if let (Some(simulator), Some(bound)) = (&simulator, notifications.bound) {
        point_simulator(simulator, bound);
    }
    let result = if wait_for_migrations(&store, &shutdown).await? {
        notifications.start_jobs();
        let pruning = tokio::spawn(store::retention::schedule(
            store.pool().clone(),
            config.retention,
            shutdown.clone(),
        ));
        let result = pipeline::run(worker).await;
        pruning.abort();
        result
    } else {
        Ok(())
    };
    admin_stop.cancel();
    if let Some(simulator) = simulator {
        simulator.shutdown().await;
    }
    result
}

/// Turns `config` into a sandbox's ([`sandboxed`], saying loudly what is
/// not used), starts its simulator and its notification side. True when the
/// notification listener's address is the sandbox's default.
async fn enter_sandbox(
    config: &mut Config,
    listen: SocketAddr,
) -> anyhow::Result<(RunningSimulator, bool)> {
    let configured = (
        config.amqp.command_queue.clone(),
        crate::ops::database_options(config)
            .map(|o| crate::ops::database_target(&o))
            .unwrap_or_default(),
    );
    *config = sandboxed(config.clone())?;
    tracing::warn!("==================================================================");
    tracing::warn!("SANDBOX MODE: own names, whatever the configuration says:");
    tracing::warn!("{}", sandbox_names(config));
    tracing::warn!(
        "(the configured queue `{}` and database {} are NOT used)",
        Escaped::new(&configured.0),
        configured.1
    );
    let notify_fallback = sandbox_notifications(config);
    Ok((start_sandbox(config, listen).await?, notify_fallback))
}

/// Where and for whom the admin listener (and the console) starts.
struct AdminStart {
    /// `--admin-listen`.
    explicit: Option<SocketAddr>,
    /// A sandbox always has its console, on 127.0.0.1:9090 unless
    /// configured (or any free port if that one is taken).
    sandbox: bool,
    stop: CancellationToken,
}

impl AdminStart {
    /// Starts the admin listener if one is asked for (or a sandbox runs),
    /// with the console when it has tokens. A sandbox without tokens gets an
    /// operator token made up now, printed with the console's address.
    async fn start(&self, config: &mut Config, worker: &Arc<Worker>) -> anyhow::Result<()> {
        let sandbox_token = match (self.sandbox, config.console.enabled()) {
            (true, false) => {
                let token = crate::console::auth::new_token();
                config.console.operator_token = Some(secrecy::SecretString::from(token.clone()));
                Some(token)
            }
            _ => None,
        };
        let configured = self.explicit.or(config.admin.listen);
        let sandbox_admin = self
            .sandbox
            .then(|| SocketAddr::from(([127, 0, 0, 1], SANDBOX_ADMIN_PORT)));
        let Some(addr) = configured.or(sandbox_admin) else {
            return Ok(());
        };
        let console = match config.console.enabled() {
            true => Some(crate::console::Console::new(
                worker.clone(),
                Arc::new(config.clone()),
            )?),
            false => None,
        };
        let limits = config.admin.limits;
        let bind = |addr| {
            crate::admin::start(
                addr,
                limits,
                worker.clone(),
                console.clone(),
                self.stop.clone(),
            )
        };
        let mut started = bind(addr).await;
        if started.is_err() && Some(addr) == sandbox_admin && configured.is_none() {
            started = bind(SocketAddr::from(([127, 0, 0, 1], 0))).await;
        }
        let (bound, _) = started.with_context(|| match self.explicit {
            Some(_) => format!("--admin-listen {addr}"),
            None => format!("{}: [admin] listen = \"{addr}\"", config.file.display()),
        })?;
        if self.sandbox && console.is_some() {
            // Printed, not logged: the token is the sandbox's own, made for
            // this run, and a log line is kept where a terminal is not.
            match &sandbox_token {
                Some(token) => println!(
                    "\nConsole (operator; this token is new at every start):\n  http://{bound}/console/login#token={token}\n"
                ),
                None => println!("\nConsole: http://{bound}/console (log in with a token from [console])\n"),
            }
        }
        Ok(())
    }
}

/// Creates the database if needed, starts the simulator accepting the
/// configured accounts, seeds the demo payments, and points every account at it.
async fn start_sandbox(
    config: &mut Config,
    listen: SocketAddr,
) -> anyhow::Result<RunningSimulator> {
    store::ensure_database(config.database.url.expose_secret())
        .await
        .context("creating the sandbox database")?;
    let mut sim_config = SimulatorConfig::from_accounts(&config.accounts)?;
    sim_config.listen = listen;
    sim_config.auto_payments = true;

    let simulator = Simulator::start(sim_config).await.with_context(|| {
        format!("starting the sandbox simulator on {listen} (use --sandbox-listen to move it)")
    })?;
    let base_url = simulator.base_url();
    for spec in &mut config.accounts {
        spec.point_at(&base_url);
    }
    let sim = simulator.sim();
    for (gateway, id, state, minor, currency) in DEMO_PAYMENTS {
        let payment = NewPayment::new(*gateway, Amount::from_minor(*minor))
            .id(*id)
            .state(*state)
            .currency(*currency);
        if let Err(error) = sim.create_payment(payment) {
            tracing::debug!(%error, id, "demo payment not created");
        }
    }
    tracing::warn!("==================================================================");
    tracing::warn!("SANDBOX MODE: every gateway account points at the built-in simulator");
    tracing::warn!("at {base_url}. No real gateway is called; no real money moves.");
    tracing::warn!("Demo payments: paymentz 55361 (authorized 100.00 EUR), 55362 (captured");
    tracing::warn!("100.00 EUR); praxis 752856 (authorized 10.00 USD); and any 8-9 digit id");
    tracing::warn!("appears on first use (paymentz: even = authorized, odd = captured).");
    tracing::warn!("Notifications: the simulator notifies this worker; praxis 752857 (authorized");
    tracing::warn!("25.00 GBP) is captured by the demo rule `{SANDBOX_DEMO_RULE}` with no command");
    tracing::warn!("published: `backoffice-worker notifications list --sandbox`.");
    tracing::warn!("==================================================================");
    Ok(simulator)
}

/// Where `run --sandbox` receives the simulator's notifications when the
/// configuration names no `[notifications] listen`.
pub const SANDBOX_NOTIFY_LISTEN: &str = "127.0.0.1:8088";

/// The rule a sandbox adds when the configuration has none: Praxis
/// authorizations in GBP up to 500.00 are captured as soon as they are
/// notified (the demo payment 752857 is one; any created through the
/// simulator's admin API in GBP too). Everything else is held, as the spec
/// says for no match.
pub const SANDBOX_DEMO_RULE: &str = "sandbox-demo";

/// Turns the notification side on for a sandbox: the listener on
/// [`SANDBOX_NOTIFY_LISTEN`] (unless configured) and the demo rule (unless
/// the configuration has rules of its own). True when the address is the
/// sandbox's default (another port may then be taken if it is in use).
pub fn sandbox_notifications(config: &mut Config) -> bool {
    let defaulted = config.notifications.listen.is_none();
    if defaulted {
        config.notifications.listen = SANDBOX_NOTIFY_LISTEN.parse().ok();
    }
    if config.automation.rules.is_empty() {
        config
            .automation
            .rules
            .push(crate::notifications::rules::Rule {
                name: SANDBOX_DEMO_RULE.into(),
                gateway: "praxis".into(),
                account: None,
                frontend: None,
                currency: Some("GBP".into()),
                min_amount: None,
                max_amount: Some("500.00".into()),
                payment_method: None,
                action: crate::notifications::rules::Action::Capture,
                delay: Duration::ZERO,
            });
    }
    defaulted
}

/// Points the sandbox simulator's notifications at this worker's listener,
/// and notifies the authorized demo payment in GBP (created before the
/// listener was bound).
fn point_simulator(simulator: &RunningSimulator, bound: SocketAddr) {
    let sim = simulator.sim();
    let settings = crate::simulator::notify::NotifySettings {
        url: Some(format!("http://{bound}/notifications/{{gateway}}/default")),
        resend_after_ms: 5_000,
        ..crate::simulator::notify::NotifySettings::default()
    };
    if let Err(error) = sim.set_notify_settings(settings) {
        tracing::warn!(%error, "sandbox notifications not set up");
        return;
    }
    if let Some(view) = sim.payment(GatewayId::Praxis, "752857") {
        if view.status == "authorized" {
            sim.notify(&view);
        }
    }
    tracing::warn!(
        "notifications: the simulator POSTs to http://{bound}/notifications/{{gateway}}/default"
    );
}

/// The payments a sandbox starts with, so that the README's session works at once.
pub const DEMO_PAYMENTS: &[(GatewayId, &str, &str, u64, &str)] = &[
    (GatewayId::Paymentz, "55361", "authorized", 10_000, "EUR"),
    (GatewayId::Paymentz, "55362", "captured", 10_000, "EUR"),
    (GatewayId::Praxis, "752856", "authorized", 1_000, "USD"),
    // Notified at start-up and captured by the demo rule, with no command published.
    (GatewayId::Praxis, "752857", "authorized", 2_500, "GBP"),
];

/// Applies the migrations, waiting for the database if it is not up yet.
/// Returns false if asked to stop meanwhile.
async fn wait_for_migrations(store: &Store, shutdown: &CancellationToken) -> anyhow::Result<bool> {
    let mut reconnect = Backoff::reconnect();
    loop {
        match store.migrate().await {
            Ok(()) => return Ok(true),
            Err(sqlx::migrate::MigrateError::Execute(error)) if store::is_transient(&error) => {
                let log = |delay| tracing::warn!(%error, retry_in = ?delay, "database not reachable; waiting to apply migrations");
                if !reconnect.wait(shutdown, log).await {
                    return Ok(false);
                }
            }
            Err(error) => return Err(error).context("applying database migrations"),
        }
    }
}

fn spawn_signal_handler(shutdown: CancellationToken) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: stopping"),
                _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C: stopping"),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        shutdown.cancel();
    });
}
