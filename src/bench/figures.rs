//! What one run measured (the counters when the worker started consuming
//! and when the last terminal event arrived, the times of the events, the
//! database's figures) and the report built from it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sqlx::PgPool;

use super::child::{Knobs, WorkerChild};
use super::measure::{LatencySummary, Proc};
use super::pgcount::RoundTripProxy;
use super::reference;
use super::report::{Report, Settings};
use super::run::Names;
use super::tally::Tally;
use super::workload::Workload;
use super::{BenchArgs, REPLAY_GRACE};

/// What the counters said when the worker had started consuming.
pub(super) struct Before {
    pub(super) worker_proc: Proc,
    pub(super) bench_proc: Proc,
    pub(super) worker_cpu: Duration,
    pub(super) bench_cpu: Duration,
    pub(super) commits: i64,
    pub(super) round_trips: Option<u64>,
}

impl Before {
    pub(super) async fn read(
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

/// The counters once every command has its terminal event, before the
/// worker stops.
pub(super) struct After {
    pub(super) worker_cpu: Duration,
    pub(super) worker_rss: u64,
    pub(super) bench_cpu: Duration,
    pub(super) round_trips: Option<u64>,
}

impl After {
    pub(super) fn read(
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

/// What the run measured, read from the counters, the events and the
/// database; [`report`] turns it into the report.
pub(super) struct Measured {
    pub(super) workload: Arc<Workload>,
    pub(super) tally: Tally,
    pub(super) published: Vec<Option<Instant>>,
    pub(super) reference: Option<reference::ReferenceResult>,
    pub(super) before: Before,
    pub(super) after: After,
    pub(super) commits_after: i64,
    pub(super) attempts: i64,
    /// Per command, the gateway's own time (ms) summed over its attempts.
    pub(super) gateway_ms: HashMap<String, f64>,
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

pub(super) fn report(
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

pub(super) async fn xact_commit(pool: &PgPool, db_name: &str) -> anyhow::Result<i64> {
    sqlx::query_scalar("SELECT xact_commit FROM pg_stat_database WHERE datname = $1")
        .bind(db_name)
        .fetch_one(pool)
        .await
        .context("reading pg_stat_database")
}

/// A backend flushes its statistics when it exits; wait (briefly) until no
/// other backend is connected to the bench database.
pub(super) async fn wait_for_backends_gone(pool: &PgPool, db_name: &str) {
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
