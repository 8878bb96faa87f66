//! One measured run: prepare the broker, database and simulator, measure
//! the floor (`--reference`), start the worker, publish the workload while
//! collecting its events, then read the counters and build the report.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use futures::StreamExt;
use lapin::options::{ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, Consumer};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use super::child::{self, Knobs, WorkerChild};
use super::env::{database_url, through_proxy, Env};
use super::measure::{LatencySummary, Proc};
use super::pgcount::RoundTripProxy;
use super::publish::{self, Pace, CONFIRM_WINDOW};
use super::report::{Report, Settings};
use super::tally::{bind_events, collect, progress_bar, Publishing, Tally};
use super::workload::Workload;
use super::{
    prefill, reference, BenchArgs, DEFAULT_AMQP_URL, DEFAULT_PG_SERVER, REPLAY_GRACE,
    START_TIMEOUT, STOP_GRACE,
};
use crate::broker::{self, Topology};
use crate::simulator::{RunningSimulator, Simulator, SimulatorConfig};
use url::Url;

/// The run's names, all from one fresh uuid.
struct Names {
    uuid: String,
    /// `bench.<uuid>`: the queues and exchanges.
    prefix: String,
    /// `bench_<uuid>`: the database.
    db_name: String,
}

impl Names {
    fn fresh() -> Names {
        let uuid = uuid::Uuid::new_v4().simple().to_string();
        Names {
            prefix: format!("bench.{uuid}"),
            db_name: format!("bench_{uuid}"),
            uuid,
        }
    }

    fn topology(&self) -> Topology {
        Topology {
            command_queue: format!("{}.commands", self.prefix),
            result_exchange: format!("{}.events", self.prefix),
            dead_letter_queue: format!("{}.commands.dead", self.prefix),
        }
    }
}

/// What the counters said when the worker had started consuming.
struct Before {
    worker_proc: Proc,
    bench_proc: Proc,
    worker_cpu: Duration,
    bench_cpu: Duration,
    commits: i64,
    round_trips: Option<u64>,
}

/// What the run measured, read from the counters, the events and the
/// database; [`report`] turns it into the report.
struct Measured {
    workload: Arc<Workload>,
    tally: Tally,
    published: Vec<Option<Instant>>,
    reference: Option<reference::ReferenceResult>,
    before: Before,
    after: After,
    commits_after: i64,
    attempts: i64,
    /// Per command, the gateway's own time (ms) summed over its attempts.
    gateway_ms: HashMap<String, f64>,
}

pub(super) async fn bench(args: &BenchArgs, env: &mut Env) -> anyhow::Result<Report> {
    let names = Names::fresh();
    let knobs = knobs(args);
    let mut notes = Vec::new();

    // Broker, database, simulator.
    let Prepared {
        amqp_url,
        db_url,
        pool,
        simulator_url,
        topology,
    } = prepare(args, &names, env, &mut notes).await?;
    let amqp = env.amqp.as_ref().expect("connected by prepare");
    let seed = args.seed.unwrap_or_else(rand::random);
    let workload = Arc::new(Workload::generate(args.commands, &names.uuid[..12], seed));

    // The floor, before the worker exists.
    let reference = if args.reference {
        Some(run_reference(amqp, args, &names, &db_url, knobs, &workload).await?)
    } else {
        None
    };

    // The worker.
    let worker_db_url = if args.count_round_trips {
        counted(&db_url, &mut env.proxy, &mut notes).await?
    } else {
        db_url.clone()
    };
    let config = child::config_text(
        &amqp_url,
        &topology,
        worker_db_url.as_str(),
        &simulator_url,
        knobs,
    )?;
    let dir = env.dir.insert(worker_dir(&names.uuid)?);
    let (mut events, worker) = start_worker(amqp, &topology, dir, config, &mut env.worker).await?;
    let before = Before::read(worker, &pool, &names.db_name, env.proxy.as_ref()).await?;

    // Publish, and collect events meanwhile.
    let publishing = start_publishing(amqp, &workload, &topology, args.rate).await?;
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
    let after = After::read(&before, env.proxy.as_ref(), &mut notes)?;
    late_replays(&mut events, &mut tally, workload.duplicates).await;
    stop_worker(env, &mut notes).await?;
    wait_for_backends_gone(&pool, &names.db_name).await;
    let measured = Measured {
        commits_after: xact_commit(&pool, &names.db_name).await?,
        attempts: sqlx::query_scalar("SELECT count(*) FROM attempts")
            .fetch_one(&pool)
            .await
            .context("counting attempts")?,
        gateway_ms: gateway_ms(&pool).await?,
        workload,
        tally,
        published,
        reference,
        before,
        after,
    };
    Ok(report(args, knobs, names, measured, notes))
}

/// What `prepare` made, besides what it put in the [`Env`].
struct Prepared {
    amqp_url: String,
    db_url: Url,
    /// The bench's own connection to the database.
    pool: PgPool,
    simulator_url: String,
    topology: Topology,
}

/// Connects to the broker, creates the database (pre-filled with
/// `--prefill`), starts the simulator (unless `--simulator-url`) and
/// declares the run's queues.
async fn prepare(
    args: &BenchArgs,
    names: &Names,
    env: &mut Env,
    notes: &mut Vec<String>,
) -> anyhow::Result<Prepared> {
    let amqp_url = from_env("AMQP_URL", DEFAULT_AMQP_URL);
    let amqp = &*env
        .amqp
        .insert(connect_broker(&amqp_url, &names.uuid).await?);
    let db_url = database_url(&from_env("DATABASE_URL", DEFAULT_PG_SERVER), &names.db_name)?;
    crate::store::ensure_database(db_url.as_str())
        .await
        .with_context(|| format!("creating the database {}", names.db_name))?;
    env.database = Some((db_url.to_string(), names.db_name.clone()));
    let pool = env.pool.insert(open_pool(&db_url).await?).clone();
    if args.prefill > 0 {
        notes.push(prefill_database(&pool, args.prefill).await?);
    }
    let simulator_url = match &args.simulator_url {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => env
            .simulator
            .insert(start_simulator(args).await?)
            .base_url(),
    };
    let topology = names.topology();
    env.topology = Some(topology.clone());
    let channel = amqp.create_channel().await?;
    broker::declare(&channel, &topology)
        .await
        .context("declaring the bench topology")?;
    Ok(Prepared {
        amqp_url,
        db_url,
        pool,
        simulator_url,
        topology,
    })
}

/// The worker's knobs: the arguments', or the worker's own defaults.
fn knobs(args: &BenchArgs) -> Knobs {
    let defaults = Knobs::worker_defaults();
    Knobs {
        max_in_flight: args.in_flight.unwrap_or(defaults.max_in_flight),
        prefetch: args.prefetch.unwrap_or(defaults.prefetch),
        db_pool: args.db_pool.unwrap_or(defaults.db_pool),
    }
}

/// `$name` when set and not empty, else `default`.
fn from_env(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.into())
}

async fn connect_broker(amqp_url: &str, uuid: &str) -> anyhow::Result<Connection> {
    Connection::connect(
        amqp_url,
        ConnectionProperties::default().with_connection_name(format!("bench {uuid}").into()),
    )
    .await
    .context("connecting to RabbitMQ ($AMQP_URL)")
}

/// One connection: the bench's own backend is then the only one left once
/// the worker has stopped (see `wait_for_backends_gone`).
async fn open_pool(db_url: &Url) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(1)
        .connect_with(crate::store::connect_options(db_url.as_str())?)
        .await
        .context("connecting to the bench database")
}

/// Migrates and pre-fills the database; returns the note that says so.
async fn prefill_database(pool: &PgPool, count: u64) -> anyhow::Result<String> {
    crate::store::MIGRATOR
        .run(pool)
        .await
        .context("migrating the bench database before pre-filling it")?;
    let took = prefill::fill(pool, count)
        .await
        .context("pre-filling the database")?;
    Ok(format!(
        "the database was pre-filled with {} finished commands, their attempts and events in {:.0} s",
        count,
        took.as_secs_f64()
    ))
}

async fn start_simulator(args: &BenchArgs) -> anyhow::Result<RunningSimulator> {
    let mut config = SimulatorConfig::sandbox();
    config.faults.latency = args.latency;
    Simulator::start(config)
        .await
        .context("starting the simulator")
}

/// The bare loop over the workload's bodies, with the worker's knobs.
async fn run_reference(
    amqp: &Connection,
    args: &BenchArgs,
    names: &Names,
    db_url: &Url,
    knobs: Knobs,
    workload: &Workload,
) -> anyhow::Result<reference::ReferenceResult> {
    let concurrency = knobs.max_in_flight.min(knobs.prefetch as usize);
    let settings = reference::ReferenceSettings {
        prefix: &names.prefix,
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
    reference::run(amqp, &settings, &bodies)
        .await
        .context("the reference loop")
}

/// The database's URL through a counting proxy, started in `slot`.
async fn counted(
    db_url: &Url,
    slot: &mut Option<RoundTripProxy>,
    notes: &mut Vec<String>,
) -> anyhow::Result<Url> {
    let target = format!(
        "{}:{}",
        db_url.host_str().expect("checked"),
        db_url.port().unwrap_or(5432)
    );
    let proxy = RoundTripProxy::start(target)
        .await
        .context("starting the round-trip proxy")?;
    let url = through_proxy(db_url, proxy.port);
    *slot = Some(proxy);
    notes.push(
        "round trips were counted through a proxy, which adds its own latency to every query"
            .to_string(),
    );
    Ok(url)
}

/// The folder of the worker's config and log.
fn worker_dir(uuid: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("backoffice-bench-{uuid}"));
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// The counters once every command has its terminal event, before the
/// worker stops.
struct After {
    worker_cpu: Duration,
    worker_rss: u64,
    bench_cpu: Duration,
    round_trips: Option<u64>,
}

impl After {
    fn read(
        before: &Before,
        proxy: Option<&RoundTripProxy>,
        notes: &mut Vec<String>,
    ) -> anyhow::Result<After> {
        let after = After {
            worker_cpu: before.worker_proc.cpu()?,
            worker_rss: before.worker_proc.peak_rss()?,
            bench_cpu: before.bench_proc.cpu()?,
            round_trips: match (before.round_trips, proxy) {
                (Some(earlier), Some(proxy)) => Some(proxy.round_trips() - earlier),
                _ => None,
            },
        };
        if let Some(proxy) = proxy {
            let lost = proxy.counts.lost.load(std::sync::atomic::Ordering::Relaxed);
            if lost > 0 {
                notes.push(format!(
                    "{lost} database connections could not be parsed by the proxy; their round trips are missing"
                ));
            }
        }
        Ok(after)
    }
}

/// Writes the worker's configuration in `dir`, binds our event queue
/// (before anything is published), starts the worker and waits until it
/// consumes.
async fn start_worker<'w>(
    amqp: &Connection,
    topology: &Topology,
    dir: &Path,
    config: String,
    slot: &'w mut Option<WorkerChild>,
) -> anyhow::Result<(Consumer, &'w mut WorkerChild)> {
    let (config_path, log_path) = (dir.join("worker.toml"), dir.join("worker.log"));
    std::fs::write(&config_path, config).context("writing the worker configuration")?;
    let events = bind_events(amqp, topology).await?;
    let worker = slot.insert(WorkerChild::spawn(&config_path, &log_path)?);
    wait_until_consuming(amqp, topology, worker).await?;
    Ok((events, worker))
}

impl Before {
    async fn read(
        worker: &WorkerChild,
        pool: &PgPool,
        db_name: &str,
        proxy: Option<&RoundTripProxy>,
    ) -> anyhow::Result<Before> {
        let worker_proc = worker.proc();
        let bench_proc = Proc::current();
        Ok(Before {
            worker_cpu: worker_proc.cpu()?,
            bench_cpu: bench_proc.cpu()?,
            commits: xact_commit(pool, db_name).await?,
            round_trips: proxy.map(|p| p.round_trips()),
            worker_proc,
            bench_proc,
        })
    }
}

/// Publishes the workload (paced at `rate`, else in confirm windows) on a
/// task of its own; it answers when each command's first copy went out.
async fn start_publishing(
    amqp: &Connection,
    workload: &Arc<Workload>,
    topology: &Topology,
    rate: Option<f64>,
) -> anyhow::Result<Publishing> {
    let pace = match rate {
        Some(rate) => Pace::Rate(rate),
        None => Pace::Windows(CONFIRM_WINDOW),
    };
    let publisher = amqp.create_channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let workload = workload.clone();
    let queue = topology.command_queue.clone();
    Ok(tokio::spawn(async move {
        let mut published: Vec<Option<Instant>> = vec![None; workload.commands.len()];
        let bodies: Vec<&[u8]> = workload.messages.iter().map(|m| &m.body[..]).collect();
        publish::publish(&publisher, "", &queue, bodies, pace, |index, at| {
            let command = workload.messages[index].command;
            published[command].get_or_insert(at);
        })
        .await?;
        let _ = publisher.close(200, "published".into()).await;
        Ok::<_, anyhow::Error>(published)
    }))
}

/// Late replays only: they count, but not towards the wall time.
async fn late_replays(events: &mut Consumer, tally: &mut Tally, duplicates: usize) {
    if tally.replays < duplicates {
        let _ = tokio::time::timeout(REPLAY_GRACE, async {
            while tally.replays < duplicates {
                match events.next().await {
                    Some(Ok(delivery)) => tally.record(&delivery.data, Instant::now()),
                    _ => break,
                }
            }
        })
        .await;
    }
}

/// A stopped worker has flushed its statistics to pg_stat_database.
async fn stop_worker(env: &mut Env, notes: &mut Vec<String>) -> anyhow::Result<()> {
    if let Some(mut worker) = env.worker.take() {
        let status = worker.stop(STOP_GRACE).await?;
        if !status.success() {
            notes.push(format!("the worker exited with {status} after SIGTERM"));
        }
        env.worker = Some(worker);
    }
    Ok(())
}

/// The gateway's own time per command: what the worker measured around
/// each of its HTTP calls, summed over the command's attempts.
async fn gateway_ms(pool: &PgPool) -> anyhow::Result<HashMap<String, f64>> {
    let rows: Vec<(String, f64)> = sqlx::query_as(
        "SELECT command_id, COALESCE(sum(latency_ms), 0)::float8 FROM attempts GROUP BY command_id",
    )
    .fetch_all(pool)
    .await
    .context("summing gateway time")?;
    Ok(rows.into_iter().collect())
}

/// Wall time, publishing time, latencies and latencies over the gateway's
/// own time, from when each command was published and its event arrived.
struct Timings {
    wall: Duration,
    publish: Duration,
    latencies: Vec<Duration>,
    over_gateway: Vec<Duration>,
}

impl Timings {
    fn of(m: &Measured) -> Timings {
        let first_publish = m.published.iter().flatten().min().copied();
        let last_event = m.tally.arrival.iter().flatten().max().copied();
        let wall = match (first_publish, last_event) {
            (Some(first), Some(last)) => last.saturating_duration_since(first),
            _ => Duration::ZERO,
        };
        let latencies: Vec<Duration> = m
            .published
            .iter()
            .zip(&m.tally.arrival)
            .filter_map(|(p, a)| Some(a.as_ref()?.saturating_duration_since(*p.as_ref()?)))
            .collect();
        let over_gateway: Vec<Duration> = m
            .workload
            .commands
            .iter()
            .zip(m.published.iter().zip(&m.tally.arrival))
            .filter_map(|(c, (p, a))| {
                let total = a.as_ref()?.saturating_duration_since(*p.as_ref()?);
                let gateway = Duration::from_secs_f64(m.gateway_ms.get(&c.id)? / 1000.0);
                Some(total.saturating_sub(gateway))
            })
            .collect();
        // When publishing takes as long as the whole run, the publisher (not
        // the worker) set the pace.
        let last_publish = m.published.iter().flatten().max().copied();
        let publish = match (first_publish, last_publish) {
            (Some(first), Some(last)) => last.saturating_duration_since(first),
            _ => Duration::ZERO,
        };
        Timings {
            wall,
            publish,
            latencies,
            over_gateway,
        }
    }
}

/// The notes every run adds about what its figures include.
fn run_notes(args: &BenchArgs, m: &Measured, notes: &mut Vec<String>) {
    let tally = &m.tally;
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
    if tally.replays < m.workload.duplicates {
        notes.push(format!(
            "{} of {} replays arrived within {REPLAY_GRACE:?} of the last terminal event",
            tally.replays, m.workload.duplicates
        ));
    }
    if args.rate.is_none() {
        notes.push(
            "unpaced: every command is published at once, so latency includes the time queued \
             behind the burst; use --rate for latency at a given load"
                .to_string(),
        );
    }
}

fn settings(args: &BenchArgs, knobs: Knobs, clock_ticks_per_second: u64) -> Settings {
    Settings {
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
        clock_ticks_per_second,
    }
}

fn report(
    args: &BenchArgs,
    knobs: Knobs,
    names: Names,
    m: Measured,
    mut notes: Vec<String>,
) -> Report {
    let n = args.commands;
    let timings = Timings::of(&m);
    let commands_per_sec = n as f64 / timings.wall.as_secs_f64().max(f64::EPSILON);
    let worker_cpu = m.after.worker_cpu.saturating_sub(m.before.worker_cpu);
    let pg_commits = m.commits_after - m.before.commits;
    run_notes(args, &m, &mut notes);
    let ratio = m
        .reference
        .as_ref()
        .map(|r| commands_per_sec / r.commands_per_sec.max(f64::EPSILON));
    let tally = m.tally;
    Report {
        run_id: names.uuid,
        database: format!(
            "{} ({})",
            names.db_name,
            if args.keep { "kept" } else { "dropped" }
        ),
        settings: settings(args, knobs, m.before.worker_proc.ticks_per_second()),
        commands: n,
        duplicates: m.workload.duplicates,
        completed: tally.completed,
        replays: tally.replays,
        reconciled: tally.reconciled,
        repeated_terminal_events: tally.repeated,
        wall_seconds: timings.wall.as_secs_f64(),
        publish_seconds: timings.publish.as_secs_f64(),
        commands_per_sec,
        latency: LatencySummary::from_samples(timings.latencies),
        over_gateway: LatencySummary::from_samples(timings.over_gateway),
        outcomes: tally.outcomes,
        worker_cpu_seconds: worker_cpu.as_secs_f64(),
        worker_cpu_ms_per_command: worker_cpu.as_secs_f64() * 1000.0 / n as f64,
        worker_cpu_total_seconds: m.after.worker_cpu.as_secs_f64(),
        worker_peak_rss_mib: m.after.worker_rss as f64 / (1024.0 * 1024.0),
        bench_cpu_seconds: m
            .after
            .bench_cpu
            .saturating_sub(m.before.bench_cpu)
            .as_secs_f64(),
        attempts: m.attempts,
        attempts_per_command: m.attempts as f64 / n as f64,
        pg_commits,
        pg_commits_per_command: pg_commits as f64 / n as f64,
        round_trips: m.after.round_trips,
        round_trips_per_command: m.after.round_trips.map(|r| r as f64 / n as f64),
        reference: m.reference,
        ratio_to_reference: ratio,
        notes,
    }
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
