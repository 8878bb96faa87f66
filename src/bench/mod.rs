//! `backoffice-worker bench`: the built-in benchmark. It measures the real
//! worker binary, as a child process, against the real RabbitMQ and
//! PostgreSQL of this machine and the in-process gateway simulator, on a
//! fresh database and fresh queue names that it removes afterwards.
//!
//! The parts: [`workload`] (the command mix and its duplicates), [`publish`]
//! (confirmed, windowed or paced publishing), [`child`] (the worker process,
//! its config and its guard), [`measure`] (percentiles, `/proc` CPU and
//! memory), [`pgcount`] (the round-trip counting proxy), [`reference`] (the
//! machine's floor: a bare loop doing only the durable steps), [`report`],
//! [`loads`] (several runs compared: saturated, paced, pre-filled) and
//! [`prefill`] (months of finished commands, generated in the database).
//!
//! It measures; it does not judge. Nothing here asserts a speed.

pub mod child;
pub mod loads;
pub mod measure;
pub mod pgcount;
pub mod prefill;
pub mod publish;
pub mod reference;
pub mod report;
pub mod workload;

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lapin::options::{
    BasicConsumeOptions, ConfirmSelectOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, Consumer};
use sqlx::postgres::PgPoolOptions;
use sqlx::{ConnectOptions as _, PgPool};
use url::Url;

use crate::broker::{self, Topology};
use crate::events::ResultEvent;
use crate::simulator::{RunningSimulator, Simulator, SimulatorConfig};
use child::{Knobs, WorkerChild};
use measure::{LatencySummary, Proc};
use pgcount::RoundTripProxy;
use publish::{Pace, CONFIRM_WINDOW};
use report::{Report, Settings};
use workload::Workload;

const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const DEFAULT_PG_SERVER: &str = "postgres://postgres@127.0.0.1:5432";
/// How long the worker may take from start to consuming (migrations included).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// SIGTERM, then this long, then SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(30);
/// After the last terminal event, how long to wait for replays still on their way.
const REPLAY_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:
  backoffice-worker bench
  backoffice-worker bench --commands 5000 --reference
  backoffice-worker bench --commands 20000 --latency 300ms --in-flight 4000 --prefetch 2000
  backoffice-worker bench --rate 500 --count-round-trips --json

Needs RabbitMQ ($AMQP_URL, default amqp://guest:guest@127.0.0.1:5672/%2f) and
PostgreSQL ($DATABASE_URL's server, default postgres://postgres@127.0.0.1:5432).
Creates a fresh database bench_<uuid> and queues bench.<uuid>.*, runs the worker
as a child process, and removes everything afterwards (the database stays with --keep).")]
pub struct BenchArgs {
    /// Distinct commands to run (about 2 % more are published as duplicates).
    #[arg(long, default_value_t = 20_000)]
    pub commands: usize,
    /// Latency the in-process simulator adds to every gateway operation.
    #[arg(long, default_value = "0ms", value_parser = duration)]
    pub latency: Duration,
    /// Publish at this many commands per second (paced); default: as fast as confirms allow.
    #[arg(long)]
    pub rate: Option<f64>,
    /// The worker's `max_in_flight` (default: the worker's default).
    #[arg(long)]
    pub in_flight: Option<usize>,
    /// The worker's AMQP prefetch (default: the worker's default).
    #[arg(long)]
    pub prefetch: Option<u16>,
    /// The worker's database pool size, `max_connections` (default: the worker's default).
    #[arg(long)]
    pub db_pool: Option<u32>,
    /// First measure this machine's floor with a bare consume/insert/update/publish/ack loop.
    #[arg(long)]
    pub reference: bool,
    /// Count the worker's PostgreSQL round trips through a counting proxy.
    #[arg(long)]
    pub count_round_trips: bool,
    /// Keep the database (and the worker's log) afterwards.
    #[arg(long)]
    pub keep: bool,
    /// Use this simulator instead of an in-process one (it must accept the sandbox credentials).
    #[arg(long, conflicts_with = "latency")]
    pub simulator_url: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Give up when the run takes longer (default: generous, from the command count).
    #[arg(long, value_parser = duration)]
    pub timeout: Option<Duration>,
    /// Seed of the workload (order, amounts, duplicates); random when absent.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Several runs in one: saturated (`--commands`, unpaced), then paced at
    /// each of these rates for `--load-seconds` each, then (with
    /// `--prefill`) saturated again on a pre-filled database; a table
    /// compares CPU per command and latency with saturation and with the
    /// reference loop paced alike (`--reference`).
    #[arg(long, value_delimiter = ',', conflicts_with = "rate")]
    pub loads: Vec<f64>,
    /// How long each paced run of `--loads` publishes.
    #[arg(long, default_value = "20s", value_parser = duration)]
    pub load_seconds: Duration,
    /// Fill the database with this many finished commands (with their
    /// attempts and published events) before the worker starts: what a
    /// database that has run for months looks like to the hot path.
    #[arg(long, default_value_t = 0)]
    pub prefill: u64,
}

fn duration(text: &str) -> Result<Duration, String> {
    crate::config::parse_duration(text)
}

/// Runs the benchmark and prints its report. Whatever happens (error,
/// Ctrl-C), the worker is stopped and the queues and database are removed.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    check(&args)?;
    if !args.loads.is_empty() {
        return loads::run(args).await;
    }
    let report = run_one(&args).await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("the report serializes")
        );
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}

/// One run: fresh database and queues, one worker, one workload; everything
/// removed afterwards, whatever happened.
pub async fn run_one(args: &BenchArgs) -> anyhow::Result<Report> {
    let mut env = Env::default();
    let mut interrupted = false;
    let outcome = tokio::select! {
        outcome = bench(args, &mut env) => outcome,
        _ = tokio::signal::ctrl_c() => {
            interrupted = true;
            Err(anyhow::anyhow!("interrupted"))
        }
    };
    // Read before cleanup removes it: what the worker said, when things went wrong.
    let worker_log = match (&outcome, env.worker.as_ref()) {
        (Err(_), Some(worker)) if !interrupted => {
            Some((worker.log().to_path_buf(), worker.log_tail(20)))
        }
        _ => None,
    };
    env.cleanup(args.keep).await;
    if let Some((path, tail)) = worker_log {
        eprintln!("the worker's log ({}), last lines:\n{tail}", path.display());
    }
    outcome
}

fn check(args: &BenchArgs) -> anyhow::Result<()> {
    if args.commands == 0 || args.commands > workload::MAX_COMMANDS {
        bail!(
            "--commands must be between 1 and {}",
            workload::MAX_COMMANDS
        );
    }
    if let Some(rate) = args.rate {
        if !(rate.is_finite() && rate > 0.0) {
            bail!("--rate must be a positive number of commands per second");
        }
    }
    if args.in_flight == Some(0) || args.prefetch == Some(0) || args.db_pool == Some(0) {
        bail!("--in-flight, --prefetch and --db-pool must be at least 1");
    }
    if args.loads.iter().any(|r| !(r.is_finite() && *r > 0.0)) {
        bail!("--loads must be positive numbers of commands per second");
    }
    if args.prefill > 100_000_000 {
        bail!("--prefill is at most 100,000,000");
    }
    if let Some(url) = &args.simulator_url {
        let parsed = Url::parse(url).with_context(|| format!("--simulator-url {url}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            bail!("--simulator-url must be an http(s) URL");
        }
    }
    Ok(())
}

/// Everything the run created, so that it can be removed whatever happened.
#[derive(Default)]
struct Env {
    amqp: Option<Connection>,
    topology: Option<Topology>,
    /// The database URL, once the database exists.
    database: Option<(String, String)>,
    pool: Option<PgPool>,
    simulator: Option<RunningSimulator>,
    proxy: Option<RoundTripProxy>,
    worker: Option<WorkerChild>,
    /// The worker's config and log.
    dir: Option<std::path::PathBuf>,
}

impl Env {
    async fn cleanup(&mut self, keep: bool) {
        if let Some(mut worker) = self.worker.take() {
            if let Err(error) = worker.stop(STOP_GRACE).await {
                eprintln!("warning: {error:#}");
            }
        }
        self.proxy.take();
        if let Some(simulator) = self.simulator.take() {
            simulator.shutdown().await;
        }
        if let (Some(amqp), Some(topology)) = (self.amqp.as_ref(), self.topology.as_ref()) {
            if let Ok(channel) = amqp.create_channel().await {
                for queue in [&topology.command_queue, &topology.dead_letter_queue] {
                    if let Err(error) = channel
                        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                        .await
                    {
                        eprintln!("warning: deleting queue {queue}: {error}");
                    }
                }
                if let Err(error) = channel
                    .exchange_delete(
                        topology.result_exchange.as_str().into(),
                        ExchangeDeleteOptions::default(),
                    )
                    .await
                {
                    eprintln!(
                        "warning: deleting exchange {}: {error}",
                        topology.result_exchange
                    );
                }
                // Closed before the connection: a channel dropped open races
                // the connection's close and lapin logs it as an error.
                let _ = channel.close(200, "bench cleanup".into()).await;
            }
        }
        if let Some(amqp) = self.amqp.take() {
            let _ = amqp.close(200, "bench done".into()).await;
        }
        if let Some(pool) = self.pool.take() {
            pool.close().await;
        }
        if let Some((url, name)) = self.database.take() {
            if keep {
                eprintln!("kept database {name}");
            } else if let Err(error) = drop_database(&url, &name).await {
                eprintln!("warning: dropping database {name}: {error}");
            }
        }
        if let Some(dir) = self.dir.take() {
            if keep {
                eprintln!("kept the worker's config and log in {}", dir.display());
            } else if let Err(error) = std::fs::remove_dir_all(&dir) {
                eprintln!("warning: removing {}: {error}", dir.display());
            }
        }
    }
}

async fn drop_database(url: &str, name: &str) -> Result<(), sqlx::Error> {
    let mut admin = crate::store::connect_options(url)?
        .database("postgres")
        .connect()
        .await?;
    sqlx::query(&format!(
        "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
        name.replace('"', "\"\"")
    ))
    .execute(&mut admin)
    .await?;
    Ok(())
}

/// The database URL for `name` on the server of `$DATABASE_URL` (its
/// credentials and parameters kept, its database replaced).
fn database_url(server: &str, name: &str) -> anyhow::Result<Url> {
    let mut url = Url::parse(server).with_context(|| "the PostgreSQL URL ($DATABASE_URL)")?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        bail!("$DATABASE_URL must be a postgres:// URL");
    }
    if url.host_str().is_none() {
        bail!("$DATABASE_URL must name a host");
    }
    url.set_path(&format!("/{name}"));
    Ok(url)
}

/// The same database reached through the counting proxy, without TLS (the
/// proxy must be able to read the protocol).
fn through_proxy(url: &Url, port: u16) -> Url {
    let mut proxied = url.clone();
    let _ = proxied.set_host(Some("127.0.0.1"));
    let _ = proxied.set_port(Some(port));
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != "sslmode")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    proxied
        .query_pairs_mut()
        .clear()
        .extend_pairs(pairs)
        .append_pair("sslmode", "disable");
    proxied
}

async fn bench(args: &BenchArgs, env: &mut Env) -> anyhow::Result<Report> {
    let uuid = uuid::Uuid::new_v4().simple().to_string();
    let prefix = format!("bench.{uuid}");
    let db_name = format!("bench_{uuid}");
    let defaults = Knobs::worker_defaults();
    let knobs = Knobs {
        max_in_flight: args.in_flight.unwrap_or(defaults.max_in_flight),
        prefetch: args.prefetch.unwrap_or(defaults.prefetch),
        db_pool: args.db_pool.unwrap_or(defaults.db_pool),
    };
    let mut notes = Vec::new();

    // Broker, database, simulator.
    let amqp_url = std::env::var("AMQP_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| DEFAULT_AMQP_URL.into());
    let amqp = Connection::connect(
        &amqp_url,
        ConnectionProperties::default().with_connection_name(format!("bench {uuid}").into()),
    )
    .await
    .context("connecting to RabbitMQ ($AMQP_URL)")?;
    let amqp = &*env.amqp.insert(amqp);
    let server = std::env::var("DATABASE_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| DEFAULT_PG_SERVER.into());
    let db_url = database_url(&server, &db_name)?;
    crate::store::ensure_database(db_url.as_str())
        .await
        .with_context(|| format!("creating the database {db_name}"))?;
    env.database = Some((db_url.to_string(), db_name.clone()));
    // One connection: the bench's own backend is then the only one left
    // once the worker has stopped (see `wait_for_backends_gone`).
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(crate::store::connect_options(db_url.as_str())?)
        .await
        .context("connecting to the bench database")?;
    let pool = env.pool.insert(pool).clone();
    if args.prefill > 0 {
        crate::store::MIGRATOR
            .run(&pool)
            .await
            .context("migrating the bench database before pre-filling it")?;
        let took = prefill::fill(&pool, args.prefill)
            .await
            .context("pre-filling the database")?;
        notes.push(format!(
            "the database was pre-filled with {} finished commands, their attempts and events in {:.0} s",
            args.prefill,
            took.as_secs_f64()
        ));
    }

    let simulator_url = match &args.simulator_url {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => {
            let mut config = SimulatorConfig::sandbox();
            config.faults.latency = args.latency;
            let simulator = Simulator::start(config)
                .await
                .context("starting the simulator")?;
            env.simulator.insert(simulator).base_url()
        }
    };

    let topology = Topology {
        command_queue: format!("{prefix}.commands"),
        result_exchange: format!("{prefix}.events"),
        dead_letter_queue: format!("{prefix}.commands.dead"),
    };
    env.topology = Some(topology.clone());
    let channel = amqp.create_channel().await?;
    broker::declare(&channel, &topology)
        .await
        .context("declaring the bench topology")?;

    let seed = args.seed.unwrap_or_else(rand::random);
    let workload = Arc::new(Workload::generate(args.commands, &uuid[..12], seed));

    // The floor, before the worker exists.
    let reference = if args.reference {
        let concurrency = knobs.max_in_flight.min(knobs.prefetch as usize);
        let settings = reference::ReferenceSettings {
            prefix: &prefix,
            database_url: db_url.as_str(),
            concurrency,
            pool: knobs.db_pool,
            prefetch: knobs.prefetch,
            rate: args.rate,
        };
        let bodies: Vec<Vec<u8>> = workload.commands.iter().map(|c| c.body.clone()).collect();
        eprintln!(
            "reference loop: {} messages, concurrency {concurrency}, pool {}",
            bodies.len(),
            knobs.db_pool
        );
        Some(
            reference::run(amqp, &settings, &bodies)
                .await
                .context("the reference loop")?,
        )
    } else {
        None
    };

    // The worker.
    let worker_db_url = if args.count_round_trips {
        let target = format!(
            "{}:{}",
            db_url.host_str().expect("checked"),
            db_url.port().unwrap_or(5432)
        );
        let proxy = RoundTripProxy::start(target)
            .await
            .context("starting the round-trip proxy")?;
        let url = through_proxy(&db_url, proxy.port);
        env.proxy = Some(proxy);
        notes.push(
            "round trips were counted through a proxy, which adds its own latency to every query"
                .to_string(),
        );
        url
    } else {
        db_url.clone()
    };
    let dir = std::env::temp_dir().join(format!("backoffice-bench-{uuid}"));
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = env.dir.insert(dir);
    let config_path = dir.join("worker.toml");
    let log_path = dir.join("worker.log");
    std::fs::write(
        &config_path,
        child::config_text(
            &amqp_url,
            &topology,
            worker_db_url.as_str(),
            &simulator_url,
            knobs,
        )?,
    )
    .context("writing the worker configuration")?;

    // Our event queue is bound before anything is published.
    let mut events = bind_events(amqp, &topology).await?;
    let worker = env
        .worker
        .insert(WorkerChild::spawn(&config_path, &log_path)?);
    wait_until_consuming(amqp, &topology, worker).await?;
    let worker_proc = worker.proc();
    let bench_proc = Proc::current();
    let worker_cpu_before = worker_proc.cpu()?;
    let bench_cpu_before = bench_proc.cpu()?;
    let commits_before = xact_commit(&pool, &db_name).await?;
    let round_trips_before = env.proxy.as_ref().map(|p| p.round_trips());

    // Publish, and collect events meanwhile.
    let pace = match args.rate {
        Some(rate) => Pace::Rate(rate),
        None => Pace::Windows(CONFIRM_WINDOW),
    };
    let publisher = amqp.create_channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let publishing = {
        let workload = workload.clone();
        let queue = topology.command_queue.clone();
        tokio::spawn(async move {
            let mut published: Vec<Option<Instant>> = vec![None; workload.commands.len()];
            let bodies: Vec<&[u8]> = workload.messages.iter().map(|m| &m.body[..]).collect();
            publish::publish(&publisher, "", &queue, bodies, pace, |index, at| {
                let command = workload.messages[index].command;
                published[command].get_or_insert(at);
            })
            .await?;
            let _ = publisher.close(200, "published".into()).await;
            Ok::<_, anyhow::Error>(published)
        })
    };
    let timeout = args.timeout.unwrap_or_else(|| default_timeout(args, knobs));
    let mut tally = Tally::new(&workload);
    let progress = progress_bar(args.commands as u64);
    let collected = collect(
        &mut events,
        &mut tally,
        publishing,
        worker,
        timeout,
        &progress,
    )
    .await;
    progress.finish_and_clear();
    let published = collected?;

    // Measure before stopping (the /proc entries go with the process).
    let worker_cpu_after = worker_proc.cpu()?;
    let worker_rss = worker_proc.peak_rss()?;
    let bench_cpu_after = bench_proc.cpu()?;
    let round_trips = match (round_trips_before, env.proxy.as_ref()) {
        (Some(before), Some(proxy)) => Some(proxy.round_trips() - before),
        _ => None,
    };
    if let Some(proxy) = env.proxy.as_ref() {
        let lost = proxy.counts.lost.load(std::sync::atomic::Ordering::Relaxed);
        if lost > 0 {
            notes.push(format!(
                "{lost} database connections could not be parsed by the proxy; their round trips are missing"
            ));
        }
    }

    // Late replays only: they count, but not towards the wall time.
    if tally.replays < workload.duplicates {
        let _ = tokio::time::timeout(REPLAY_GRACE, async {
            while tally.replays < workload.duplicates {
                match events.next().await {
                    Some(Ok(delivery)) => tally.record(&delivery.data, Instant::now()),
                    _ => break,
                }
            }
        })
        .await;
    }

    // A stopped worker has flushed its statistics to pg_stat_database.
    if let Some(mut worker) = env.worker.take() {
        let status = worker.stop(STOP_GRACE).await?;
        if !status.success() {
            notes.push(format!("the worker exited with {status} after SIGTERM"));
        }
        env.worker = Some(worker);
    }
    wait_for_backends_gone(&pool, &db_name).await;
    let commits_after = xact_commit(&pool, &db_name).await?;
    let attempts: i64 = sqlx::query_scalar("SELECT count(*) FROM attempts")
        .fetch_one(&pool)
        .await
        .context("counting attempts")?;

    let n = args.commands;
    let first_publish = published.iter().flatten().min().copied();
    let last_event = tally.arrival.iter().flatten().max().copied();
    let wall = match (first_publish, last_event) {
        (Some(first), Some(last)) => last.saturating_duration_since(first),
        _ => Duration::ZERO,
    };
    let latencies: Vec<Duration> = published
        .iter()
        .zip(&tally.arrival)
        .filter_map(|(p, a)| Some(a.as_ref()?.saturating_duration_since(*p.as_ref()?)))
        .collect();
    // The gateway's own time per command: what the worker measured around
    // each of its HTTP calls, summed over the command's attempts.
    let gateway_ms: std::collections::HashMap<String, f64> = sqlx::query_as(
        "SELECT command_id, COALESCE(sum(latency_ms), 0)::float8 FROM attempts GROUP BY command_id",
    )
    .fetch_all(&pool)
    .await
    .context("summing gateway time")?
    .into_iter()
    .collect();
    let over_gateway: Vec<Duration> = workload
        .commands
        .iter()
        .zip(published.iter().zip(&tally.arrival))
        .filter_map(|(c, (p, a))| {
            let total = a.as_ref()?.saturating_duration_since(*p.as_ref()?);
            let gateway = Duration::from_secs_f64(gateway_ms.get(&c.id)? / 1000.0);
            Some(total.saturating_sub(gateway))
        })
        .collect();
    let commands_per_sec = n as f64 / wall.as_secs_f64().max(f64::EPSILON);
    // When publishing takes as long as the whole run, the publisher (not the
    // worker) set the pace.
    let last_publish = published.iter().flatten().max().copied();
    let publish = match (first_publish, last_publish) {
        (Some(first), Some(last)) => last.saturating_duration_since(first),
        _ => Duration::ZERO,
    };
    let worker_cpu = worker_cpu_after.saturating_sub(worker_cpu_before);
    let pg_commits = commits_after - commits_before;
    notes.push(
        "pg commits include the bench's own few queries and the worker's idle polling".to_string(),
    );
    if tally.foreign > 0 {
        notes.push(format!(
            "{} events did not belong to this run's commands",
            tally.foreign
        ));
    }
    if tally.unreadable > 0 {
        notes.push(format!(
            "{} events were not readable JSON",
            tally.unreadable
        ));
    }
    if tally.replays < workload.duplicates {
        notes.push(format!(
            "{} of {} replays arrived within {REPLAY_GRACE:?} of the last terminal event",
            tally.replays, workload.duplicates
        ));
    }
    if args.rate.is_none() {
        notes.push(
            "unpaced: every command is published at once, so latency includes the time queued \
             behind the burst; use --rate for latency at a given load"
                .to_string(),
        );
    }
    let ratio = reference
        .as_ref()
        .map(|r| commands_per_sec / r.commands_per_sec.max(f64::EPSILON));

    Ok(Report {
        run_id: uuid,
        database: format!("{db_name} ({})", if args.keep { "kept" } else { "dropped" }),
        settings: Settings {
            in_flight: knobs.max_in_flight,
            prefetch: knobs.prefetch,
            db_pool: knobs.db_pool,
            latency_ms: if args.simulator_url.is_some() {
                0
            } else {
                args.latency.as_millis() as u64
            },
            rate: args.rate,
            simulator: args
                .simulator_url
                .clone()
                .unwrap_or_else(|| "in-process".into()),
            clock_ticks_per_second: worker_proc.ticks_per_second(),
        },
        commands: n,
        duplicates: workload.duplicates,
        completed: tally.completed,
        replays: tally.replays,
        reconciled: tally.reconciled,
        repeated_terminal_events: tally.repeated,
        wall_seconds: wall.as_secs_f64(),
        publish_seconds: publish.as_secs_f64(),
        commands_per_sec,
        latency: LatencySummary::from_samples(latencies),
        over_gateway: LatencySummary::from_samples(over_gateway),
        outcomes: tally.outcomes.clone(),
        worker_cpu_seconds: worker_cpu.as_secs_f64(),
        worker_cpu_ms_per_command: worker_cpu.as_secs_f64() * 1000.0 / n as f64,
        worker_cpu_total_seconds: worker_cpu_after.as_secs_f64(),
        worker_peak_rss_mib: worker_rss as f64 / (1024.0 * 1024.0),
        bench_cpu_seconds: bench_cpu_after
            .saturating_sub(bench_cpu_before)
            .as_secs_f64(),
        attempts,
        attempts_per_command: attempts as f64 / n as f64,
        pg_commits,
        pg_commits_per_command: pg_commits as f64 / n as f64,
        round_trips,
        round_trips_per_command: round_trips.map(|r| r as f64 / n as f64),
        reference,
        ratio_to_reference: ratio,
        notes,
    })
}

/// Generous: two minutes, plus 20 ms per command, plus the publishing time
/// a `--rate` imposes, plus the simulator latency spread over the in-flight cap.
fn default_timeout(args: &BenchArgs, knobs: Knobs) -> Duration {
    let n = args.commands as f64;
    let paced = args.rate.map(|r| n / r).unwrap_or(0.0);
    let concurrency = knobs.max_in_flight.min(knobs.prefetch as usize).max(1) as f64;
    let latency = args.latency.as_secs_f64() * n / concurrency;
    Duration::from_secs_f64(120.0 + 0.02 * n + paced + 2.0 * latency)
}

/// An exclusive queue bound to every routing key of the result exchange.
async fn bind_events(amqp: &Connection, topology: &Topology) -> anyhow::Result<Consumer> {
    let channel = amqp.create_channel().await?;
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            queue.name().as_str().into(),
            topology.result_exchange.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(channel
        .basic_consume(
            queue.name().as_str().into(),
            "bench-events".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?)
}

/// Polls the command queue's consumer count (a passive declare) until the
/// worker consumes. There is no event to await: the broker only tells on asking.
async fn wait_until_consuming(
    amqp: &Connection,
    topology: &Topology,
    worker: &mut WorkerChild,
) -> anyhow::Result<()> {
    let probe = amqp.create_channel().await?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = worker.exited() {
            bail!("the worker exited before consuming ({status})");
        }
        let queue = probe
            .queue_declare(
                topology.command_queue.as_str().into(),
                QueueDeclareOptions::default().passive(),
                FieldTable::default(),
            )
            .await
            .context("checking the command queue")?;
        if queue.consumer_count() > 0 {
            let _ = probe.close(200, "worker consuming".into()).await;
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the worker was not consuming after {START_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the events said, per command.
struct Tally {
    index: HashMap<String, usize>,
    /// When each command's terminal event arrived.
    arrival: Vec<Option<Instant>>,
    completed: usize,
    replays: usize,
    reconciled: usize,
    repeated: usize,
    foreign: usize,
    unreadable: usize,
    outcomes: BTreeMap<String, usize>,
}

impl Tally {
    fn new(workload: &Workload) -> Tally {
        Tally {
            index: workload
                .commands
                .iter()
                .enumerate()
                .map(|(i, c)| (c.id.clone(), i))
                .collect(),
            arrival: vec![None; workload.commands.len()],
            completed: 0,
            replays: 0,
            reconciled: 0,
            repeated: 0,
            foreign: 0,
            unreadable: 0,
            outcomes: BTreeMap::new(),
        }
    }

    fn record(&mut self, body: &[u8], at: Instant) {
        let Ok(event) = serde_json::from_slice::<ResultEvent>(body) else {
            self.unreadable += 1;
            return;
        };
        let Some(&i) = self.index.get(&event.command_id) else {
            self.foreign += 1;
            return;
        };
        if event.replayed {
            self.replays += 1;
        } else if event.reconciled {
            self.reconciled += 1;
        } else if self.arrival[i].is_some() {
            self.repeated += 1;
        } else {
            self.arrival[i] = Some(at);
            self.completed += 1;
            *self
                .outcomes
                .entry(event.outcome.as_str().to_string())
                .or_insert(0) += 1;
        }
    }
}

type Publishing = tokio::task::JoinHandle<anyhow::Result<Vec<Option<Instant>>>>;

/// Reads events until every command has its terminal event, while the
/// publisher runs; fails on a publishing error, a dead worker or the timeout.
async fn collect(
    events: &mut Consumer,
    tally: &mut Tally,
    mut publishing: Publishing,
    worker: &mut WorkerChild,
    timeout: Duration,
    progress: &ProgressBar,
) -> anyhow::Result<Vec<Option<Instant>>> {
    let total = tally.arrival.len();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut published = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while tally.completed < total || published.is_none() {
        tokio::select! {
            delivery = events.next(), if tally.completed < total => match delivery {
                Some(Ok(delivery)) => {
                    tally.record(&delivery.data, Instant::now());
                    progress.set_position(tally.completed as u64);
                }
                Some(Err(error)) => return Err(error).context("reading result events"),
                None => bail!("the result event consumer was cancelled"),
            },
            done = &mut publishing, if published.is_none() => {
                published = Some(done.context("the publisher panicked")??);
            }
            _ = tick.tick() => {
                if let Some(status) = worker.exited() {
                    bail!(
                        "the worker exited ({status}) with {} of {total} commands complete",
                        tally.completed
                    );
                }
                progress.set_message(format!("{} replays", tally.replays));
            }
            _ = tokio::time::sleep_until(deadline) => {
                publishing.abort();
                bail!(
                    "timed out after {timeout:?}: {} of {total} commands have their terminal event \
                     (raise --timeout, or look at the worker's log)",
                    tally.completed
                );
            }
        }
    }
    Ok(published.expect("loop ends once published"))
}

fn progress_bar(total: u64) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(total), target);
    if let Ok(style) = ProgressStyle::with_template(
        "{elapsed_precise} [{bar:40}] {pos}/{len} commands done, {per_sec}, {msg}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

async fn xact_commit(pool: &PgPool, db_name: &str) -> anyhow::Result<i64> {
    sqlx::query_scalar("SELECT xact_commit FROM pg_stat_database WHERE datname = $1")
        .bind(db_name)
        .fetch_one(pool)
        .await
        .context("reading pg_stat_database")
}

/// A backend flushes its statistics when it exits; wait (briefly) until no
/// other backend is connected to the bench database.
async fn wait_for_backends_gone(pool: &PgPool, db_name: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let others: Result<i64, _> = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 \
             AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
        )
        .bind(db_name)
        .fetch_one(pool)
        .await;
        match others {
            Ok(0) | Err(_) => return,
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_keep_credentials_and_parameters() {
        let url = database_url(
            "postgres://u:p@db.example:6543/other?sslmode=require",
            "bench_x",
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "postgres://u:p@db.example:6543/bench_x?sslmode=require"
        );
        let proxied = through_proxy(&url, 7777);
        assert_eq!(
            proxied.as_str(),
            "postgres://u:p@127.0.0.1:7777/bench_x?sslmode=disable"
        );
        let plain = database_url("postgres://postgres@127.0.0.1:5432", "bench_y").unwrap();
        assert_eq!(plain.as_str(), "postgres://postgres@127.0.0.1:5432/bench_y");
        assert!(database_url("mysql://x@h/d", "b").is_err());
    }

    #[test]
    fn the_tally_separates_terminal_events_from_replays() {
        let workload = Workload::generate(3, "t", 1);
        let mut tally = Tally::new(&workload);
        let event = |id: &str, replayed: bool, reconciled: bool, outcome: &str| {
            serde_json::to_vec(&serde_json::json!({
                "command_id": id, "gateway": "paymentz", "account": "default",
                "operation": "capture", "payment_id": "1", "outcome": outcome,
                "amount": null, "currency": null, "gateway_status": null,
                "gateway_code": null, "description": null, "reference": null,
                "attempts": 1, "replayed": replayed, "reconciled": reconciled,
                "response": {}, "metadata": null, "occurred_at": "2026-01-01T00:00:00.000Z"
            }))
            .unwrap()
        };
        let ids: Vec<String> = workload.commands.iter().map(|c| c.id.clone()).collect();
        let now = Instant::now();
        tally.record(&event(&ids[0], false, false, "succeeded"), now);
        tally.record(&event(&ids[0], true, false, "succeeded"), now);
        tally.record(&event(&ids[0], false, false, "succeeded"), now);
        tally.record(&event(&ids[1], false, false, "unknown"), now);
        tally.record(&event(&ids[1], false, true, "succeeded"), now);
        tally.record(&event("someone-else", false, false, "succeeded"), now);
        tally.record(b"not json", now);
        assert_eq!(tally.completed, 2);
        assert_eq!(tally.replays, 1);
        assert_eq!(tally.repeated, 1);
        assert_eq!(tally.reconciled, 1);
        assert_eq!(tally.foreign, 1);
        assert_eq!(tally.unreadable, 1);
        assert_eq!(tally.outcomes["succeeded"], 1);
        assert_eq!(tally.outcomes["unknown"], 1);
        assert!(tally.arrival[2].is_none());
    }
}
