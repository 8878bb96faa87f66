//! The `backoffice-worker` command line: one subcommand per job.

use clap::{Parser, Subcommand};

/// glibc's allocator spent a fifth of the worker's CPU in fragmentation
/// bookkeeping under load; jemalloc does not, at a similar peak RSS
/// (docs/performance.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc keeps freed pages for 10 s by default, so a burst of 2,000
/// commands waiting on a slow gateway left its peak in RSS: 155-162 MiB at
/// 300 ms gateway latency, over the 150 MiB budget. Returning them after 1 s
/// measured 143 MiB at the same CPU per command. `_RJEM_MALLOC_CONF` in the
/// environment still overrides this.
#[export_name = "_rjem_malloc_conf"]
pub static MALLOC_CONF: &[u8; 37] = b"dirty_decay_ms:1000,muzzy_decay_ms:0\0";

use backoffice_worker::bench::reference_loop;
use backoffice_worker::ops::{self, dead_letters, enqueue, list, migrate, prune, show};
use backoffice_worker::telemetry::{self, LogFormat};
use backoffice_worker::{call, simulator, worker};

#[derive(Debug, Parser)]
#[command(
    name = "backoffice-worker",
    version,
    about = "Runs back-office payment commands against payment gateways, exactly once in effect."
)]
struct Cli {
    /// Log format: readable text, or JSON lines for log shippers.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the worker: consume commands, run them against the gateways, publish results.
    Run(worker::RunArgs),
    /// Run one operation straight against a gateway account, without the queue.
    Call(call::CallArgs),
    /// Serve a faithful simulator of both gateways, for tests and load tests.
    Simulate(simulator::SimulateArgs),
    /// Publish a command to the worker's queue, as a producer would; optionally wait for its result.
    Enqueue(enqueue::EnqueueArgs),
    /// Everything recorded about one command: its state, every attempt, every event.
    Show(show::ShowArgs),
    /// The commands that need a person: outcome unknown (not settled yet), failed or rejected.
    List(list::ListArgs),
    /// List the messages the worker could not read, or put them back on the command queue.
    DeadLetters(dead_letters::DeadLettersArgs),
    /// The notifications received from the gateways: list, show one, release a hold.
    Notifications(ops::notifications::NotificationsArgs),
    /// Create the database if missing and apply the migrations.
    Migrate(migrate::MigrateArgs),
    /// Delete finished commands, published events and dead letters older than `[retention]` says.
    Prune(prune::PruneArgs),
    /// Benchmark the worker against this machine's RabbitMQ and PostgreSQL.
    Bench(backoffice_worker::bench::BenchArgs),
    /// Time every console page on a seeded database of a million commands.
    BenchConsole(backoffice_worker::console::bench::BenchConsoleArgs),
    /// The bench's reference loop in a process of its own (started by `bench --reference`).
    #[command(hide = true)]
    BenchReferenceLoop(reference_loop::LoopArgs),
}

impl Cmd {
    /// The least severe level logged unless `RUST_LOG` says otherwise: the
    /// services say what they are doing, a one-off command only what went
    /// wrong (its answer is its output).
    fn log_level(&self) -> &'static str {
        match self {
            Cmd::Run(_) | Cmd::Simulate(_) => "info",
            _ => "warn",
        }
    }

    /// Runs the subcommand; its exit code.
    async fn run(self) -> i32 {
        match self {
            Cmd::Call(args) => match call::run(&args).await {
                Ok(result) => {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&result).expect("serializable")
                    );
                    result.exit_code()
                }
                Err(error) => failed(error, 2),
            },
            Cmd::Run(args) => exit_code(worker::run(args).await),
            Cmd::Simulate(args) => exit_code(simulator::serve(args).await),
            Cmd::Enqueue(args) => ops::finish(enqueue::run(&args).await, enqueue::EXIT_ERROR),
            Cmd::Show(args) => ops::finish(show::run(&args).await, 1),
            Cmd::List(args) => ops::finish(list::run(&args).await, 1),
            Cmd::DeadLetters(args) => ops::finish(dead_letters::run(&args).await, 1),
            Cmd::Notifications(args) => ops::finish(ops::notifications::run(&args).await, 1),
            Cmd::Migrate(args) => ops::finish(migrate::run(&args).await, 1),
            Cmd::Prune(args) => ops::finish(prune::run(&args).await, 1),
            Cmd::Bench(args) => exit_code(backoffice_worker::bench::run(args).await),
            Cmd::BenchConsole(args) => {
                exit_code(backoffice_worker::console::bench::run(args).await)
            }
            Cmd::BenchReferenceLoop(args) => exit_code(reference_loop::serve(args).await),
        }
    }

    /// tokio's multi-thread runtime, except for the reference loop when the
    /// bench asks for one thread (to measure what threads cost the floor).
    fn runtime(&self) -> tokio::runtime::Builder {
        match self {
            Cmd::BenchReferenceLoop(args) => args.runtime.builder(),
            _ => {
                let mut builder = tokio::runtime::Builder::new_multi_thread();
                builder.enable_all();
                builder
            }
        }
    }
}

/// 0, or 1 after saying what failed.
fn exit_code(result: anyhow::Result<()>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(error) => failed(error, 1),
    }
}

fn failed(error: anyhow::Error, code: i32) -> i32 {
    eprintln!("error: {error:#}");
    code
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = cli.command.runtime().build().expect("tokio runtime");
    let code = runtime.block_on(async {
        telemetry::init(cli.log_format, cli.command.log_level());
        cli.command.run().await
    });
    std::process::ExitCode::from(code as u8)
}
