//! A faithful simulator of both gateways (`backoffice-worker simulate`), for
//! the project's tests, the benchmark, and anyone who wants to try an order
//! system without a sandbox account. It is the *other* side of the wire,
//! written from `shared/spec/gateways.md` without sharing code with the
//! clients in [`crate::gateways`], so a client that misreads the spec fails
//! against it. It keeps a ledger of every side effect it applies, so a test
//! can prove that nothing was applied twice, and it injects faults
//! (seeded, or scripted request by request) to exercise retry safety.
//!
//! # Endpoints
//!
//! Paymentz transactionServices REST v1 (form-urlencoded `POST`s, JSON
//! answers, business errors as HTTP 200 with `result{code,description}`):
//! `/transactionServices/REST/v1/authToken`, `/payments/{id}` (`paymentType`
//! CP, RF, RV, IN with `idType` PID or MID), `/getTransactionList`.
//! Praxis Cashier Agent API 1.1 (JSON `POST`s): `/api/deposit-capture`,
//! `/api/deposit-cancel`, `/api/find-transaction`.
//!
//! # Credentials
//!
//! By default the sandbox accounts (see [`SANDBOX_PARTNER_ID`] and the other
//! constants): Paymentz partner `197`, username `sandbox-merchant`, member
//! `11359`, secure key `sandbox-secure-key`; Praxis merchant
//! `Test-Integration-Merchant`, secret `sandbox-merchant-secret`, front end
//! `Integration TEST USD`. With `--config PATH`, exactly the accounts of that
//! file instead ([`SimulatorConfig::from_accounts`]).
//!
//! # Payments on demand
//!
//! Besides those created through the admin API, a payment appears on first
//! touch when its id is unknown and has 8 or 9 digits (10000000 to
//! 999999999, no leading zero); it belongs to the member or merchant that
//! touched it first:
//! - Paymentz: 1000.00 EUR, `authsuccessful` when the last digit is even,
//!   `capturesuccess` (fully captured) when odd; `merchantTransactionId`
//!   `order-<id>`. (IN by `idType=MID` never creates anything.)
//! - Praxis: `authorized`, 100000 minor units USD, `order_id` `order-<id>`.
//!
//! Ids the simulator hands out (new `paymentId`s of operations, ids of
//! admin-created payments, Praxis `transaction_id`s) start at 1000000000, so
//! they are never taken for on-demand ids. Turn the rule off with
//! `--no-auto-payments` or `PUT /admin/auto-payments {"enabled": false}`.
//!
//! # State rules
//!
//! Paymentz: CP only on `authsuccessful`, partial allowed, amount ≤ authorised
//! → `capturesuccess`, `00004`. RV only on `authsuccessful`, full →
//! `authcancelled`, `00006`. RF on `capturesuccess`/`settled`/`reversed`,
//! amount ≤ captured − refunded → `reversed`, `00005`. Wrong state: `10005`
//! (capture), `10007` (cancel), `10006` (refund). Each applied CP/RF/RV
//! answers a new `paymentId` (the operation's reference).
//! Praxis: capture and cancel only on `authorized`, in full → `approved` /
//! `cancelled`.
//!
//! # Codes the simulator chose (the spec does not know the real ones)
//!
//! | gateway | code | meaning |
//! | --- | --- | --- |
//! | paymentz | `10901` | checksum mismatch |
//! | paymentz | `10902` | amount missing, not exactly two decimals with ≤ 10 integer digits, or zero |
//! | paymentz | `10903` | invalid request: a required field missing, unknown `paymentType` or `idType` |
//! | paymentz | `10904` | invalid paymentId (not digits) |
//! | paymentz | `10905` | `authentication.memberId` is not the token's member |
//! | paymentz | `10906` | refund over captured − refunded |
//! | paymentz | `10907` | capture over the authorised amount |
//! | paymentz | `10026` | record not found (`paymentId` `-`; IN answers only `result`) |
//! | paymentz | `401` / `403` | token expired or unknown / token refused |
//! | paymentz | `30086` `30087` | `fromdate` / `todate` missing or not `dd/MM/yyyy` |
//! | paymentz | `30088` | `fromdate` after `todate` |
//! | paymentz | `30089` `30090` | `pageno` / `records` missing or not a positive integer |
//! | paymentz | `30091` | `records` above 1000 |
//! | praxis | `1001` | malformed request (not a JSON object, a field missing or of the wrong type) |
//! | praxis | `1002` | version other than `1.1` |
//! | praxis | `1003` | unknown merchant (answer unsigned: no secret to sign with) |
//! | praxis | `1004` | invalid signature |
//! | praxis | `1005` | timestamp older than 60 s or more than 2 s in the future |
//! | praxis | `1006` | front end not configured for the merchant |
//! | praxis | `1007` | transaction not found |
//! | praxis | `1008` | transaction not `authorized` |
//!
//! Praxis answers are signed over their top-level scalar fields (`description`,
//! `status`, `version`, and the transaction's scalars when it is flat),
//! sorted, concatenated, plus the secret (SHA-384). A found transaction is
//! nested under `transaction` (the 1.2 documentation's shape) or, with
//! `--praxis-transaction flat` or `PUT /admin/answers
//! {"praxis_transaction":"flat"}`, its fields stand at the top level (the
//! notification form); the spec only infers the 1.1 shape, so clients must
//! read both.
//!
//! # Faults
//!
//! Kinds: `error_before` (HTTP 500, nothing applied), `error_after` (applied,
//! then HTTP 500), `timeout_after` (applied, then no answer; the connection
//! is held for the hang time, then closed), `reset_before` / `reset_after`
//! (connection reset with RST, before / after applying), `rate_limit` (HTTP
//! 429 with `Retry-After: 1`, nothing applied), `redirect` (HTTP 307 with the
//! `Location` of the answer settings, by default `/moved` + the path on this
//! simulator; nothing applied), `huge_answer` (applied, then HTTP 200 with the
//! real answer padded out to `huge_answer_bytes`, 300 MiB by default, streamed),
//! `bad_signature` (applied, answered as usual, but a Praxis answer's signature
//! is not its own; Paymentz answers are unsigned and unchanged). Rates draw per operation
//! call from a generator seeded by `(seed, call number)`; scripts ("the next
//! N matching calls") take precedence. Latency, jitter and rates apply to
//! operation calls only; `authToken` and `/admin` are never faulted by
//! chance, but a script whose `operation` is `authToken` faults token calls.
//!
//! # Admin API (JSON)
//!
//! | method and path | does |
//! | --- | --- |
//! | `GET /admin/health` | `{"status":"ok"}` |
//! | `GET /admin/stats` | requests by gateway and operation, answers by HTTP status and code, faults by kind, applied effects, ledger and payment counts |
//! | `GET /admin/ledger?gateway=&payment_id=&since=&limit=` | `{"count","entries":[{seq,gateway,payment_id,operation,amount,currency,transaction_id,status_after,request_no,at}]}` |
//! | `POST /admin/payments` | create: `{"gateway","id"?,"amount":"50.00","currency"?,"state"?,"captured"?,"refunded"?,"reference"?,"owner"?,"frontend"?,"created_at"?}` → 201 (409 if the id exists) |
//! | `GET /admin/payments/{gateway}/{id}` | one payment, or 404 |
//! | `GET /admin/faults` | seed, settings, scripts, on-demand rule |
//! | `PUT /admin/faults` | `{"rates":{"error_after":0.02},"latency_ms":300,"jitter_ms":50,"hang_ms":60000}`, every field optional; `rates` replaces all rates |
//! | `POST /admin/faults/script` | `{"kind":"reset_after","count":1,"gateway"?:"paymentz","operation"?:"RF","payment_id"?:"55361"}` → 201 |
//! | `GET` / `DELETE /admin/faults/script` | list / clear scripts |
//! | `GET` / `PUT /admin/answers` | `{"praxis_transaction":"nested"\|"flat","redirect_location":"http://...","huge_answer_bytes":314572800}`, every field optional; `""` restores the default location |
//! | `PUT /admin/auto-payments` | `{"enabled":false}` |
//! | `GET` / `PUT /admin/notifications` | settings `{"url","resend_after_ms","max_sends","duplicate","delay_ms","corrupt"}` (every field optional; see [`notify`]) and, on GET, `stats` (sent, accepted, resent, given_up, corrupted) |
//! | `POST /admin/notifications/send` | `{"gateway","id","copies"?,"corrupt"?,"charge_amount"?}`: a notification of that payment now → 202 |
//! | `POST /admin/reset` | forget payments, ledger, stats, tokens and scripts; restore start-up faults and the draw counter |
//! | `POST /admin/tokens/expire` | expire every Paymentz token (the next call gets `401`) |
//!
//! The same operations are methods of [`Simulation`], reached in-process
//! through [`RunningSimulator::sim`].
//!
//! # Flags
//!
//! `--listen ADDR` (default `127.0.0.1:8099`), `--config PATH`,
//! `--token-ttl 3600s`, `--no-auto-payments`, `--seed N` (random and printed
//! when absent), `--latency 300ms`, `--jitter 50ms`, `--hang 60s`,
//! `--fault KIND=RATE` (repeatable), `--praxis-transaction nested|flat`,
//! `--notify-url URL` and `--notify-resend-after 300s` (see [`notify`]).

mod admin;
mod answers;
mod config;
mod dispatch;
mod faults;
mod new_payment;
pub mod notify;
mod paymentz;
mod praxis;
mod server;
mod signing;
mod simulation;
mod state;
mod stats;
mod tokens;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use answers::{
    AnswerSettings, AnswerSettingsView, TransactionShape, DEFAULT_HUGE_ANSWER_BYTES,
};
pub use config::{
    PaymentzAccount, PraxisMerchant, SimulatorConfig, SANDBOX_FRONTEND, SANDBOX_MEMBER_ID,
    SANDBOX_MERCHANT_ID, SANDBOX_MERCHANT_SECRET, SANDBOX_PARTNER_ID, SANDBOX_SECURE_KEY,
    SANDBOX_USERNAME,
};
pub use faults::{
    FaultError, FaultKind, FaultRate, FaultScript, FaultSettings, FaultSettingsView, ScriptStatus,
    DEFAULT_HANG,
};
pub use paymentz::BASE_PATH as PAYMENTZ_BASE_PATH;
pub use simulation::{
    AdminError, NewPayment, Simulation, AUTO_PAYMENTZ_AMOUNT, AUTO_PRAXIS_AMOUNT,
};
pub use state::{Effect, GatewayId, LedgerEntry, LedgerQuery, PaymentView, AUTO_RANGE, FIRST_ID};
pub use stats::{AnswerCounts, StatsSnapshot};

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:
  backoffice-worker simulate
  backoffice-worker simulate --config backoffice.toml --listen 0.0.0.0:8099
  backoffice-worker simulate --seed 7 --latency 50ms --jitter 20ms --fault error_after=0.02 --fault reset_before=0.01

Unknown payment ids of 8 or 9 digits are created on first touch (see the crate docs).
Admin API: GET /admin/stats, GET /admin/ledger, POST /admin/payments, PUT /admin/faults,
POST /admin/faults/script, POST /admin/reset, POST /admin/tokens/expire.")]
pub struct SimulateArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8099")]
    pub listen: String,
    /// Accept the accounts of this configuration file instead of the sandbox accounts.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Lifetime of Paymentz auth tokens.
    #[arg(long, default_value = "3600s", value_parser = duration)]
    pub token_ttl: Duration,
    /// Do not create unknown 8- and 9-digit payment ids on first touch.
    #[arg(long)]
    pub no_auto_payments: bool,
    /// Seed for probabilistic faults (random, and printed, when absent).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Latency added to every operation call.
    #[arg(long, default_value = "0ms", value_parser = duration)]
    pub latency: Duration,
    /// Up to this much extra latency, drawn per call.
    #[arg(long, default_value = "0ms", value_parser = duration)]
    pub jitter: Duration,
    /// How long `timeout_after` holds a connection before dropping it.
    #[arg(long, default_value = "60s", value_parser = duration)]
    pub hang: Duration,
    /// A fault rate, KIND=RATE (error_before, error_after, timeout_after,
    /// reset_before, reset_after, rate_limit, redirect, huge_answer,
    /// bad_signature); repeatable.
    #[arg(long = "fault", value_name = "KIND=RATE")]
    pub faults: Vec<FaultRate>,
    /// Where Praxis answers put a found transaction: nested under
    /// `transaction`, or flat at the top level (the notification form).
    #[arg(long, default_value = "nested", value_parser = transaction_shape)]
    pub praxis_transaction: TransactionShape,
    /// POST signed notifications here when a payment is authorized or changes
    /// status; `{gateway}` is replaced by the gateway's name
    /// (e.g. http://127.0.0.1:8088/notifications/{gateway}/default).
    #[arg(long)]
    pub notify_url: Option<String>,
    /// How long before a notification answered `-1` (or unreadably) is sent again.
    #[arg(long, default_value = "300s", value_parser = duration)]
    pub notify_resend_after: Duration,
}

fn transaction_shape(text: &str) -> Result<TransactionShape, String> {
    match text {
        "nested" => Ok(TransactionShape::Nested),
        "flat" => Ok(TransactionShape::Flat),
        other => Err(format!("`{other}`: use nested or flat")),
    }
}

fn duration(text: &str) -> Result<Duration, String> {
    crate::config::parse_duration(text)
}

/// Why a simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid fault settings: {0}")]
    Faults(#[from] FaultError),
}

/// Starts simulators.
pub struct Simulator;

impl Simulator {
    /// Binds, starts serving in the background, and returns the handle.
    pub async fn start(config: SimulatorConfig) -> Result<RunningSimulator, StartError> {
        let grace = config.shutdown_grace;
        let listen = config.listen;
        let sim = Arc::new(Simulation::new(config)?);
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: listen,
            source,
        })?;
        let server = tokio::spawn(server::run(listener, sim.clone(), grace));
        Ok(RunningSimulator {
            addr,
            sim,
            server: Some(server),
        })
    }
}

/// A simulator serving in the background. Dropping it stops the server too,
/// without waiting; [`RunningSimulator::shutdown`] waits.
#[derive(Debug)]
pub struct RunningSimulator {
    addr: SocketAddr,
    sim: Arc<Simulation>,
    server: Option<JoinHandle<()>>,
}

impl RunningSimulator {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://host:port`, the value for an account's `base_url`. Bound to
    /// every interface (`0.0.0.0`, `::`), it is reached on loopback.
    pub fn base_url(&self) -> String {
        let mut addr = self.addr;
        match addr.ip() {
            std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
                addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into())
            }
            std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
                addr.set_ip(std::net::Ipv6Addr::LOCALHOST.into())
            }
            _ => {}
        }
        format!("http://{addr}")
    }

    /// Payments, ledger, stats, faults, tokens: the admin API's operations.
    pub fn sim(&self) -> &Arc<Simulation> {
        &self.sim
    }

    /// Stops accepting, lets open requests finish (up to the configured
    /// grace), and waits for the server to end.
    pub async fn shutdown(mut self) {
        self.sim.begin_shutdown();
        if let Some(server) = self.server.take() {
            if let Err(error) = server.await {
                tracing::warn!(%error, "simulator server task failed");
            }
        }
    }
}

impl Drop for RunningSimulator {
    fn drop(&mut self) {
        self.sim.begin_shutdown();
    }
}

/// `backoffice-worker simulate`: serves until Ctrl-C or SIGTERM.
pub async fn serve(args: SimulateArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => {
            let file = crate::config::locate(Some(path))?;
            let loaded = crate::config::Config::load(&file)?;
            SimulatorConfig::from_accounts(&loaded.accounts)?
        }
        None => SimulatorConfig::sandbox(),
    };
    if config.paymentz_accounts.is_empty() && config.praxis_merchants.is_empty() {
        anyhow::bail!("the configuration has no accounts for the simulator to accept");
    }
    config.listen = tokio::net::lookup_host(&args.listen)
        .await
        .with_context(|| format!("--listen {}", args.listen))?
        .next()
        .with_context(|| format!("--listen {} resolves to no address", args.listen))?;
    config.token_ttl = args.token_ttl;
    config.auto_payments = !args.no_auto_payments;
    config.seed = args.seed.unwrap_or_else(rand::random);
    config.faults = FaultSettings {
        rates: args.faults.iter().map(|f| (f.kind, f.rate)).collect(),
        latency: args.latency,
        jitter: args.jitter,
        hang: args.hang,
    };
    config.answers.praxis_transaction = args.praxis_transaction;
    config.notify.url = args.notify_url.clone();
    config.notify.resend_after_ms = args.notify_resend_after.as_millis() as u64;
    config
        .notify
        .validate()
        .map_err(|e| anyhow::anyhow!("--notify-url: {e}"))?;
    let running = Simulator::start(config.clone()).await?;
    for line in banner(&running, &config) {
        println!("{line}");
    }
    shutdown_signal().await;
    println!("shutting down");
    running.shutdown().await;
    Ok(())
}

fn banner(running: &RunningSimulator, config: &SimulatorConfig) -> Vec<String> {
    let base = running.base_url();
    let mut lines = vec![
        format!("gateway simulator listening on {base}"),
        format!("  paymentz: POST {base}{PAYMENTZ_BASE_PATH}/authToken | /payments/{{id}} | /getTransactionList"),
        format!("  praxis:   POST {base}/api/deposit-capture | /api/deposit-cancel | /api/find-transaction"),
        format!("  admin:    {base}/admin/stats | /admin/ledger | /admin/payments | /admin/faults | /admin/reset"),
        "accepting:".to_string(),
    ];
    lines.extend(
        config
            .describe_accounts()
            .into_iter()
            .map(|l| format!("  {l}")),
    );
    lines.push(match &config.notify.url {
        Some(url) => format!("notifications: POST to {url}"),
        None => "notifications: off (--notify-url)".to_string(),
    });
    lines.push(if config.auto_payments {
        format!(
            "payments on demand: unknown ids {}..={} are created on first touch",
            AUTO_RANGE.start(),
            AUTO_RANGE.end()
        )
    } else {
        "payments on demand: off".to_string()
    });
    let settings = config.faults.view();
    lines.push(format!(
        "faults: seed {}, latency {} ms, jitter {} ms, hang {} ms, rates {}",
        config.seed,
        settings.latency_ms.unwrap_or(0),
        settings.jitter_ms.unwrap_or(0),
        settings.hang_ms.unwrap_or(0),
        serde_json::to_string(&settings.rates.unwrap_or_default()).expect("serializable")
    ));
    lines
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
