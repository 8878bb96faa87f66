//! One measured run: prepare the broker, database and simulator, measure
//! the floor (`--reference`), start the worker, publish the workload while
//! collecting its events, then read the counters and build the report.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use futures::StreamExt;
use lapin::options::{ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use super::child::{self, Knobs, WorkerChild};
use super::env::{database_url, through_proxy, Env};
use super::measure::{LatencySummary, Proc};
use super::pgcount::RoundTripProxy;
use super::publish::{self, Pace, CONFIRM_WINDOW};
use super::report::{Report, Settings};
use super::tally::{bind_events, collect, progress_bar, Tally};
use super::workload::Workload;
use super::{
    prefill, reference, BenchArgs, DEFAULT_AMQP_URL, DEFAULT_PG_SERVER, REPLAY_GRACE,
    START_TIMEOUT, STOP_GRACE,
};
use crate::broker::{self, Topology};
use crate::simulator::{Simulator, SimulatorConfig};

pub(super) async fn bench(args: &BenchArgs, env: &mut Env) -> anyhow::Result<Report> {
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
