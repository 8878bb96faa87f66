//! `backoffice-worker bench`: the built-in benchmark. It measures the real
//! worker binary, as a child process, against the real RabbitMQ and
//! PostgreSQL of this machine and the in-process gateway simulator, on a
//! fresh database and fresh queue names that it removes afterwards.
//!
//! The parts: [`workload`] (the command mix and its duplicates), [`publish`]
//! (confirmed, windowed or paced publishing), [`child`] (the worker process,
//! its config and its guard), [`measure`] (percentiles, `/proc` CPU and
//! memory), [`pgcount`] (the round-trip counting proxy), [`reference`] (the
//! machine's floor: a bare loop doing only the durable steps) and
//! [`reference_loop`] (that loop's own process, so its CPU is its own), [`report`],
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
pub mod reference_loop;
pub mod report;
pub mod workload;

mod env;
mod figures;
mod run;
mod tally;

use std::time::Duration;

use anyhow::{bail, Context as _};
use url::Url;

use env::Env;
use report::Report;

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
  backoffice-worker bench --commands 20000 --loads 30,100,300 --load-seconds 15s --reference
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
    /// The tokio runtime of the reference loop's process: the worker's
    /// (multi-thread), or one thread, to see what hand-overs between
    /// threads cost the floor at light load.
    #[arg(long, value_enum, default_value_t = reference_loop::LoopRuntime::MultiThread)]
    pub reference_runtime: reference_loop::LoopRuntime,
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
    /// database that has run for months looks like to the hot path. Unpaced,
    /// it runs the empty database first, in the same invocation, and prints
    /// the ratio (`x empty`).
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
    // A pre-filled run means something only beside the empty database's,
    // measured in the same invocation: machines drift between runs.
    if !args.loads.is_empty() || (args.prefill > 0 && args.rate.is_none()) {
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
        outcome = run::bench(args, &mut env) => outcome,
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
