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
use super::figures::{report, wait_for_backends_gone, xact_commit, After, Before, Measured};
use super::pgcount::RoundTripProxy;
use super::publish::{self, Pace, CONFIRM_WINDOW};
use super::report::Report;
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
pub(super) struct Names {
    pub(super) uuid: String,
    /// `bench.<uuid>`: the queues and exchanges.
    pub(super) prefix: String,
    /// `bench_<uuid>`: the database.
    pub(super) db_name: String,
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
        Some(run_reference(amqp, &amqp_url, args, &names, &db_url, knobs, &workload).await?)
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
        attempts: sqlx::query_scalar("SELECT count(*) FROM attempts WHERE command_id NOT LIKE $1")
            .bind(PREFILLED)
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
    amqp_url: &str,
    args: &BenchArgs,
    names: &Names,
    db_url: &Url,
    knobs: Knobs,
    workload: &Workload,
) -> anyhow::Result<reference::ReferenceResult> {
    let concurrency = knobs.max_in_flight.min(knobs.prefetch as usize);
    let settings = reference::ReferenceSettings {
        prefix: &names.prefix,
        amqp_url,
        database_url: db_url.as_str(),
        concurrency,
        pool: knobs.db_pool,
        prefetch: knobs.prefetch,
        rate: args.rate,
        runtime: args.reference_runtime,
    };
    let bodies: Vec<Vec<u8>> = workload.commands.iter().map(|c| c.body.clone()).collect();
    eprintln!(
        "reference loop: {} messages, concurrency {concurrency}, pool {}, {} runtime",
        bodies.len(),
        knobs.db_pool,
        args.reference_runtime.name()
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

/// The attempts `--prefill` generated (their commands' ids): not the run's,
/// so neither counted nor summed (a 10,000,000-command prefill once read as
/// 751 attempts per command).
const PREFILLED: &str = "prefill-%";

/// The gateway's own time per command: what the worker measured around
/// each of its HTTP calls, summed over the command's attempts.
async fn gateway_ms(pool: &PgPool) -> anyhow::Result<HashMap<String, f64>> {
    let rows: Vec<(String, f64)> = sqlx::query_as(
        "SELECT command_id, COALESCE(sum(latency_ms), 0)::float8 FROM attempts
          WHERE command_id NOT LIKE $1 GROUP BY command_id",
    )
    .bind(PREFILLED)
    .fetch_all(pool)
    .await
    .context("summing gateway time")?;
    Ok(rows.into_iter().collect())
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
