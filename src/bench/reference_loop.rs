//! The reference loop's own process: both ends of it. The child side is
//! the hidden `backoffice-worker bench-reference-loop` subcommand, which runs
//! the bare loop of [`super::reference`] (consume, INSERT, UPDATE, publish
//! and confirm, ack; nothing else); the bench side is [`LoopChild`], which
//! starts it, tells it when to consume, reads its CPU time from `/proc` and
//! stops it.
//!
//! It is a process of its own for the same reason the worker is: its CPU
//! time and peak memory are then its own, read from outside exactly as the
//! worker's are, so the floor's CPU per command can be set beside the
//! worker's at the same load. The publisher and the event consumer stay in
//! the bench, as they do for the worker.
//!
//! The protocol is one line at a time. On stdout the child says `ready`
//! (connected, its table made, nothing consumed), then, after `go` on its
//! stdin, `consuming`, and after its last message `done <seconds>`. It then
//! waits for its stdin to close before it disconnects and exits, so that
//! the bench reads its CPU time while the process still exists and before
//! any of its shutdown is counted.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde::Serialize;
use sqlx::postgres::PgPoolOptions;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::measure::Proc;

/// The subcommand's name, hidden from `--help`: only the bench starts it.
pub const SUBCOMMAND: &str = "bench-reference-loop";
const AMQP_URL_ENV: &str = "BENCH_REFERENCE_AMQP_URL";
const DATABASE_URL_ENV: &str = "BENCH_REFERENCE_DATABASE_URL";

/// Which tokio runtime the loop runs on. The worker runs on the
/// multi-thread one; one thread shows how much of the floor's cost at light
/// load is hand-overs between threads (each a sleep and a wake-up).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoopRuntime {
    /// tokio's default: one worker thread per core (`TOKIO_WORKER_THREADS` applies).
    #[default]
    MultiThread,
    /// Everything on one thread (lapin's own I/O thread aside).
    CurrentThread,
}

impl LoopRuntime {
    pub fn builder(self) -> tokio::runtime::Builder {
        let mut builder = match self {
            LoopRuntime::MultiThread => tokio::runtime::Builder::new_multi_thread(),
            LoopRuntime::CurrentThread => tokio::runtime::Builder::new_current_thread(),
        };
        builder.enable_all();
        builder
    }

    pub fn name(self) -> &'static str {
        match self {
            LoopRuntime::MultiThread => "multi-thread",
            LoopRuntime::CurrentThread => "current-thread",
        }
    }
}

/// What the child needs; the URLs come through its environment, not its
/// command line, where any user of the machine could read a password.
#[derive(Debug, Clone, clap::Args)]
pub struct LoopArgs {
    #[arg(long, env = AMQP_URL_ENV, hide_env_values = true)]
    pub amqp_url: String,
    #[arg(long, env = DATABASE_URL_ENV, hide_env_values = true)]
    pub database_url: String,
    /// The quorum queue to consume (declared by the bench).
    #[arg(long)]
    pub queue: String,
    /// Where each message's event goes (declared by the bench).
    #[arg(long)]
    pub exchange: String,
    /// Messages to handle before saying `done`.
    #[arg(long)]
    pub messages: usize,
    #[arg(long)]
    pub concurrency: usize,
    #[arg(long)]
    pub pool: u32,
    #[arg(long)]
    pub prefetch: u16,
    #[arg(long, value_enum, default_value_t = LoopRuntime::MultiThread)]
    pub runtime: LoopRuntime,
}

/// The child: connects, says `ready`, waits for `go`, runs the loop, says
/// `done`, and waits for its stdin to close.
pub async fn serve(args: LoopArgs) -> anyhow::Result<()> {
    let amqp = Connection::connect(
        &args.amqp_url,
        ConnectionProperties::default().with_connection_name("bench reference loop".into()),
    )
    .await
    .context("connecting to RabbitMQ")?;
    let pool = open_pool(&args).await?;
    let consume_channel = amqp.create_channel().await?;
    consume_channel
        .basic_qos(args.prefetch, BasicQosOptions::default())
        .await?;
    let events = amqp.create_channel().await?;
    events
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    say("ready")?;
    match stdin.next_line().await? {
        Some(line) if line == "go" => {}
        other => bail!("expected `go` on stdin, read {other:?}"),
    }
    let consumer = consume_channel
        .basic_consume(
            args.queue.as_str().into(),
            "bench-reference".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    say("consuming")?;
    let started = Instant::now();
    let looped = Looped {
        pool: pool.clone(),
        events: events.clone(),
        exchange: args.exchange.clone(),
        concurrency: args.concurrency,
        total: args.messages,
    };
    // A task, as the worker's consumer is: not the main thread's future.
    tokio::spawn(looped.run(consumer))
        .await
        .context("the reference loop panicked")??;
    say(&format!("done {}", started.elapsed().as_secs_f64()))?;
    while stdin.next_line().await?.is_some() {}
    let _ = consume_channel.close(200, "reference done".into()).await;
    let _ = events.close(200, "reference done".into()).await;
    pool.close().await;
    let _ = amqp.close(200, "reference done".into()).await;
    Ok(())
}

/// One line to the bench, flushed at once (stdout is a pipe).
fn say(line: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

/// A pool of the worker's size, and the loop's table.
async fn open_pool(args: &LoopArgs) -> anyhow::Result<sqlx::PgPool> {
    let pool = PgPoolOptions::new()
        .max_connections(args.pool)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(crate::store::connect_options(&args.database_url)?)
        .await
        .context("connecting the reference pool")?;
    sqlx::query(
        "CREATE TABLE bench_reference (
             id         text PRIMARY KEY,
             body       jsonb NOT NULL,
             outcome    text,
             created_at timestamptz NOT NULL DEFAULT now(),
             updated_at timestamptz
         )",
    )
    .execute(&pool)
    .await
    .context("creating the reference table")?;
    Ok(pool)
}

/// The loop itself: what each message's task needs.
struct Looped {
    pool: sqlx::PgPool,
    events: Channel,
    exchange: String,
    concurrency: usize,
    total: usize,
}

impl Looped {
    /// Consumes `total` messages, each in a task of its own under the
    /// concurrency cap, and waits for every task.
    async fn run(self, mut consumer: lapin::Consumer) -> anyhow::Result<()> {
        let permits = Arc::new(Semaphore::new(self.concurrency.max(1)));
        let mut tasks = JoinSet::new();
        let mut received = 0usize;
        while received < self.total {
            // As the worker does: a permit first, then the next delivery.
            let permit = permits.clone().acquire_owned().await?;
            let delivery =
                match tokio::time::timeout(Duration::from_secs(60), consumer.next()).await {
                    Ok(Some(delivery)) => delivery?,
                    Ok(None) => bail!("the reference consumer was cancelled"),
                    Err(_) => bail!(
                        "no reference message for 60 s after {received} of {}",
                        self.total
                    ),
                };
            received += 1;
            let (pool, events, exchange) = (
                self.pool.clone(),
                self.events.clone(),
                self.exchange.clone(),
            );
            tasks.spawn(async move {
                let _permit = permit;
                one(delivery, &pool, &events, &exchange).await
            });
            // Reap finished tasks as we go, so an error stops the loop early.
            while let Some(done) = tasks.try_join_next() {
                done.context("reference task panicked")??;
            }
        }
        while let Some(done) = tasks.join_next().await {
            done.context("reference task panicked")??;
        }
        Ok(())
    }
}

/// One message: INSERT, UPDATE, a confirmed event, then the ack.
async fn one(
    delivery: lapin::message::Delivery,
    pool: &sqlx::PgPool,
    events: &Channel,
    exchange: &str,
) -> anyhow::Result<()> {
    let body: serde_json::Value = serde_json::from_slice(&delivery.data)?;
    let id = body["id"]
        .as_str()
        .context("reference message without id")?;
    sqlx::query("INSERT INTO bench_reference (id, body) VALUES ($1, $2)")
        .bind(id)
        .bind(&body)
        .execute(pool)
        .await?;
    sqlx::query(
        "UPDATE bench_reference SET outcome = 'succeeded', updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .execute(pool)
    .await?;
    let event = serde_json::to_vec(&serde_json::json!({
        "command_id": id, "outcome": "succeeded", "replayed": false,
    }))?;
    let confirm = events
        .basic_publish(
            exchange.into(),
            "reference.event.succeeded".into(),
            BasicPublishOptions::default(),
            &event,
            BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into()),
        )
        .await?
        .await?;
    anyhow::ensure!(confirm.is_ack(), "the broker refused a reference event");
    delivery.ack(BasicAckOptions::default()).await?;
    Ok(())
}

/// The reference loop's process, seen from the bench. Dropping it kills
/// the process (SIGKILL): on an error or Ctrl-C the bench never leaves a
/// loop consuming behind it.
pub struct LoopChild {
    child: Child,
    pid: u32,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl LoopChild {
    /// `<this executable> bench-reference-loop ...`, its stderr the bench's.
    pub fn spawn(args: &LoopArgs) -> anyhow::Result<LoopChild> {
        let exe = std::env::current_exe().context("locating this executable")?;
        let mut child = command(&exe, args)
            .spawn()
            .with_context(|| format!("starting {} {SUBCOMMAND}", exe.display()))?;
        let pid = child.id().context("the reference loop exited at once")?;
        let stdin = child.stdin.take().context("the reference loop's stdin")?;
        let stdout = child.stdout.take().context("the reference loop's stdout")?;
        Ok(LoopChild {
            child,
            pid,
            stdin: Some(stdin),
            stdout: BufReader::new(stdout).lines(),
        })
    }

    pub fn proc(&self) -> Proc {
        Proc::new(self.pid)
    }

    /// Waits (up to `within`) for the child's next line, which must start
    /// with `word`; returns what follows it.
    pub async fn expect(&mut self, word: &str, within: Duration) -> anyhow::Result<String> {
        let line = match tokio::time::timeout(within, self.stdout.next_line()).await {
            Err(_) => bail!("the reference loop did not say `{word}` within {within:?}"),
            Ok(line) => line.context("reading the reference loop's output")?,
        };
        match line {
            Some(line) if line.split_whitespace().next() == Some(word) => {
                Ok(line[word.len()..].trim().to_string())
            }
            Some(line) => bail!("the reference loop said {line:?}, not `{word}`"),
            None => {
                let status = self.child.wait().await?;
                bail!("the reference loop exited ({status}) before saying `{word}`")
            }
        }
    }

    /// Tells it to start consuming.
    pub async fn go(&mut self) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("already stopped")?;
        stdin.write_all(b"go\n").await?;
        stdin.flush().await?;
        Ok(())
    }

    /// Kills it at once and reaps it: after a failure, when it may be in
    /// the middle of its loop and would not read its stdin.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        self.child
            .kill()
            .await
            .context("killing the reference loop")
    }

    /// Closes its stdin (its signal to disconnect and exit), then waits up
    /// to `grace` for it to exit, then kills it.
    pub async fn stop(mut self, grace: Duration) -> anyhow::Result<()> {
        self.stdin.take();
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => {
                let status = status.context("waiting for the reference loop")?;
                anyhow::ensure!(status.success(), "the reference loop exited with {status}");
                Ok(())
            }
            Err(_) => {
                self.child
                    .kill()
                    .await
                    .context("killing the reference loop")?;
                bail!("the reference loop did not exit within {grace:?} and was killed")
            }
        }
    }
}

/// The child's command: everything but the URLs as arguments.
fn command(exe: &Path, args: &LoopArgs) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(exe);
    command
        .arg(SUBCOMMAND)
        .args(["--queue", &args.queue, "--exchange", &args.exchange])
        .args(["--messages", &args.messages.to_string()])
        .args(["--concurrency", &args.concurrency.to_string()])
        .args(["--pool", &args.pool.to_string()])
        .args(["--prefetch", &args.prefetch.to_string()])
        .args(["--runtime", args.runtime.name()])
        .env(AMQP_URL_ENV, &args.amqp_url)
        .env(DATABASE_URL_ENV, &args.database_url)
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    command
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Parser, ValueEnum as _};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: LoopArgs,
    }

    #[test]
    fn the_command_line_is_what_the_child_parses() {
        let args = LoopArgs {
            amqp_url: "amqp://u:secret@h:5672/%2f".into(),
            database_url: "postgres://u:secret@h/db".into(),
            queue: "bench.x.reference".into(),
            exchange: "bench.x.reference.events".into(),
            messages: 123,
            concurrency: 45,
            pool: 6,
            prefetch: 78,
            runtime: LoopRuntime::CurrentThread,
        };
        let command = command(Path::new("/bin/true"), &args);
        let std = command.as_std();
        let argv: Vec<String> = std
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(argv[0], SUBCOMMAND);
        assert!(!argv.iter().any(|a| a.contains("secret")), "{argv:?}");
        let envs: std::collections::HashMap<_, _> = std
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_str()?.to_string(), v?.to_str()?.to_string())))
            .collect();
        // What the child would parse: its arguments, the URLs from its environment.
        let mut full = vec!["child".to_string()];
        full.extend(argv[1..].iter().cloned());
        full.extend(["--amqp-url".into(), envs[AMQP_URL_ENV].clone()]);
        full.extend(["--database-url".into(), envs[DATABASE_URL_ENV].clone()]);
        let parsed = Cli::try_parse_from(full).unwrap().args;
        assert_eq!(parsed.queue, args.queue);
        assert_eq!(parsed.exchange, args.exchange);
        assert_eq!(parsed.messages, 123);
        assert_eq!(parsed.concurrency, 45);
        assert_eq!(parsed.pool, 6);
        assert_eq!(parsed.prefetch, 78);
        assert_eq!(parsed.runtime, LoopRuntime::CurrentThread);
        assert_eq!(parsed.amqp_url, args.amqp_url);
        assert_eq!(parsed.database_url, args.database_url);
        for runtime in LoopRuntime::value_variants() {
            assert_eq!(
                LoopRuntime::from_str(runtime.name(), false).as_ref(),
                Ok(runtime)
            );
        }
    }
}
