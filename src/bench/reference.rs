//! The floor: what this machine's RabbitMQ and PostgreSQL allow at best for
//! the work the worker must do per command, measured with a bare loop.
//!
//! Per message, exactly the durable steps the contract forces on the worker
//! and nothing else: consume a persistent message from a quorum queue, commit
//! an INSERT (the record before the gateway call), commit an UPDATE (the
//! outcome), publish a persistent event and wait for its confirm, then ack.
//! No gateway call, no parsing beyond the id, no leases, no outbox. It runs
//! with the worker's concurrency (its in-flight cap, bounded by prefetch) and
//! a pool of the worker's size, so the worker's throughput divided by this
//! one says how much of the floor the worker reaches.
//!
//! The loop runs in a child process of its own ([`super::reference_loop`]),
//! so that its CPU time per message is measured from `/proc` as the
//! worker's is: the floor's CPU per command at a load, against which the
//! worker's at the same load is set. This module is the bench's side: the
//! queue, the publisher and the event consumer.
//!
//! The messages are published while the loop runs, as the worker's are:
//! unpaced as fast as confirms allow (throughput), paced (`--rate`) at that
//! rate, and then each one's latency (publish to its event reaching a consumer,
//! the same two hops the worker's latency has) is the floor of latency at
//! that load: what the worker's "over gateway" latency is compared with.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use lapin::options::{
    ConfirmSelectOptions, ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection};
use serde::Serialize;

use super::measure::{LatencySummary, Proc};
use super::publish::{publish, Pace, CONFIRM_WINDOW};
use super::reference_loop::{LoopArgs, LoopChild, LoopRuntime};
use super::STOP_GRACE;
use crate::broker::consume_all;

/// How long the loop's process may take to connect, and then to consume.
const LOOP_START_TIMEOUT: Duration = Duration::from_secs(60);

/// What the reference loop achieved.
#[derive(Debug, Clone, Serialize)]
pub struct ReferenceResult {
    pub commands: usize,
    pub seconds: f64,
    pub commands_per_sec: f64,
    pub concurrency: usize,
    pub pool: u32,
    /// Messages per second asked for; `None`: as fast as confirms allow.
    pub rate: Option<f64>,
    /// Publish to event, when paced (a burst's latency is its queueing).
    pub latency: Option<LatencySummary>,
    /// The tokio runtime the loop's process ran on.
    pub runtime: LoopRuntime,
    /// The loop's process, from just before it consumed to its last ack.
    pub cpu_seconds: f64,
    pub cpu_ms_per_command: f64,
    pub peak_rss_mib: f64,
}

pub struct ReferenceSettings<'a> {
    /// `bench.<uuid>`: the queue and exchange names are derived from it.
    pub prefix: &'a str,
    /// For the loop's process; the bench's own connection is passed apart.
    pub amqp_url: &'a str,
    pub database_url: &'a str,
    pub concurrency: usize,
    pub pool: u32,
    pub prefetch: u16,
    /// Publish at this rate while the loop runs, and measure latency.
    pub rate: Option<f64>,
    pub runtime: LoopRuntime,
}

/// Runs the loop over `bodies` (one message each) and removes its queue and
/// exchange afterwards, whether it succeeded or not.
pub async fn run(
    amqp: &Connection,
    settings: &ReferenceSettings<'_>,
    bodies: &[Vec<u8>],
) -> anyhow::Result<ReferenceResult> {
    let queue = format!("{}.reference", settings.prefix);
    let exchange = format!("{}.reference.events", settings.prefix);
    let admin = amqp.create_channel().await?;
    let result = run_on(amqp, &admin, &queue, &exchange, settings, bodies).await;
    let _ = admin
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = admin
        .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await;
    let _ = admin.close(200, "reference done".into()).await;
    result
}

/// What the loop's process measured of itself and what `/proc` said of it.
struct Looped {
    seconds: f64,
    cpu: Duration,
    peak_rss: u64,
}

async fn run_on(
    amqp: &Connection,
    admin: &Channel,
    queue: &str,
    exchange: &str,
    settings: &ReferenceSettings<'_>,
    bodies: &[Vec<u8>],
) -> anyhow::Result<ReferenceResult> {
    declare(admin, queue, exchange).await?;
    let mut sink = Sink::start(amqp, exchange, bodies).await?;
    let mut published = None;
    let mut child = LoopChild::spawn(&LoopArgs {
        amqp_url: settings.amqp_url.to_string(),
        database_url: settings.database_url.to_string(),
        queue: queue.to_string(),
        exchange: exchange.to_string(),
        messages: bodies.len(),
        concurrency: settings.concurrency,
        pool: settings.pool,
        prefetch: settings.prefetch,
        runtime: settings.runtime,
    })?;
    let looped = drive(&mut child, amqp, queue, settings, bodies, &mut published).await;
    // Stopped whatever happened: cleanly after its last ack, at once after
    // a failure (it would not be reading its stdin).
    let stopped = match &looped {
        Ok(_) => child.stop(STOP_GRACE).await,
        Err(_) => child.kill().await,
    };
    let looped = looped?;
    stopped?;
    let published = published.expect("awaited by drive");
    let arrived = sink.arrivals(&published, bodies.len()).await;
    sink.stop().await;
    let latency = settings.rate.and_then(|_| {
        LatencySummary::from_samples(
            published
                .iter()
                .zip(&arrived)
                .filter_map(|(p, a)| Some(a.as_ref()?.saturating_duration_since(*p.as_ref()?)))
                .collect(),
        )
    });
    let n = bodies.len();
    Ok(ReferenceResult {
        commands: n,
        seconds: looped.seconds,
        commands_per_sec: n as f64 / looped.seconds.max(f64::EPSILON),
        concurrency: settings.concurrency,
        pool: settings.pool,
        rate: settings.rate,
        latency,
        runtime: settings.runtime,
        cpu_seconds: looped.cpu.as_secs_f64(),
        cpu_ms_per_command: looped.cpu.as_secs_f64() * 1000.0 / n.max(1) as f64,
        peak_rss_mib: looped.peak_rss as f64 / (1024.0 * 1024.0),
    })
}

/// Lets the loop's process consume, paces the messages to it when asked,
/// and reads its CPU time from just before it consumes to its last ack
/// (its connecting and its table are not the loop's cost, as the worker's
/// start-up is not counted in its CPU per command).
async fn drive(
    child: &mut LoopChild,
    amqp: &Connection,
    queue: &str,
    settings: &ReferenceSettings<'_>,
    bodies: &[Vec<u8>],
    published: &mut Option<Vec<Option<Instant>>>,
) -> anyhow::Result<Looped> {
    child.expect("ready", LOOP_START_TIMEOUT).await?;
    let proc: Proc = child.proc();
    let cpu_before = proc.cpu()?;
    child.go().await?;
    child.expect("consuming", LOOP_START_TIMEOUT).await?;
    // Published while the loop consumes, paced or as fast as confirms allow,
    // exactly as the worker's commands are: the publisher's CPU competes
    // with the loop as it does with the worker (on two cores, a fifth of
    // the run's CPU). Publishing everything first gave the loop a machine
    // to itself and made the saturated ratio compare unlike runs.
    let publishing = start_publishing(amqp, queue, bodies, settings.rate).await?;
    let n = bodies.len() as f64;
    let within = Duration::from_secs_f64(120.0 + 0.02 * n + settings.rate.map_or(0.0, |r| n / r));
    let said = child.expect("done", within).await;
    // Read before anything else can fail: the process exits once stopped.
    let cpu = proc.cpu().map(|after| after.saturating_sub(cpu_before));
    let peak_rss = proc.peak_rss();
    if said.is_err() {
        publishing.abort();
    } else {
        *published = Some(published_by(publishing).await?);
    }
    let seconds: f64 = said?
        .parse()
        .context("the reference loop's `done` without its seconds")?;
    Ok(Looped {
        seconds,
        cpu: cpu?,
        peak_rss: peak_rss?,
    })
}

/// The loop's quorum queue and its event exchange, both durable.
async fn declare(admin: &Channel, queue: &str, exchange: &str) -> anyhow::Result<()> {
    let mut quorum = FieldTable::default();
    quorum.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    admin
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            quorum,
        )
        .await
        .context("declaring the reference queue")?;
    crate::broker::declare_result_exchange(admin, exchange).await?;
    Ok(())
}

/// Where the loop's events go, as the worker's do (to the bench's event
/// queue): an unroutable message would be confirmed without being stored.
/// It notes when each message's event arrived: the end of its latency.
struct Sink {
    channel: Channel,
    drain: tokio::task::JoinHandle<()>,
    arrived: tokio::sync::mpsc::UnboundedReceiver<(usize, Instant)>,
}

impl Sink {
    async fn start(amqp: &Connection, exchange: &str, bodies: &[Vec<u8>]) -> anyhow::Result<Sink> {
        let channel = amqp.create_channel().await?;
        let mut consumer = consume_all(&channel, exchange, "bench-reference-sink").await?;
        let ids: std::collections::HashMap<String, usize> = bodies
            .iter()
            .enumerate()
            .filter_map(|(i, body)| Some((message_id(body)?, i)))
            .collect();
        let (arrived_tx, arrived) = tokio::sync::mpsc::unbounded_channel();
        let drain = tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                if let Some(&i) = message_id(&delivery.data).and_then(|id| ids.get(&id)) {
                    let _ = arrived_tx.send((i, Instant::now()));
                }
            }
        });
        Ok(Sink {
            channel,
            drain,
            arrived,
        })
    }

    /// Every event was confirmed, so it is in the sink queue: wait for its
    /// consumer to have seen each one (bounded, in case of a foreign body).
    async fn arrivals(&mut self, published: &[Option<Instant>], n: usize) -> Vec<Option<Instant>> {
        let mut arrived: Vec<Option<Instant>> = vec![None; n];
        let mut seen = 0;
        while seen < ids_count(published) {
            match tokio::time::timeout(Duration::from_secs(5), self.arrived.recv()).await {
                Ok(Some((i, at))) => {
                    if arrived[i].is_none() {
                        seen += 1;
                    }
                    arrived[i].get_or_insert(at);
                }
                _ => break,
            }
        }
        arrived
    }

    async fn stop(self) {
        let _ = self.channel.close(200, "reference done".into()).await;
        self.drain.abort();
    }
}

type Publishing = tokio::task::JoinHandle<anyhow::Result<Vec<Option<Instant>>>>;

/// Publishes one message per body on a task of its own; it answers when
/// each one went out.
async fn start_publishing(
    amqp: &Connection,
    queue: &str,
    bodies: &[Vec<u8>],
    rate: Option<f64>,
) -> anyhow::Result<Publishing> {
    let publisher = amqp.create_channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let bodies = bodies.to_vec();
    let queue = queue.to_string();
    let pace = match rate {
        Some(rate) => Pace::Rate(rate),
        None => Pace::Windows(CONFIRM_WINDOW),
    };
    Ok(tokio::spawn(async move {
        let mut published: Vec<Option<Instant>> = vec![None; bodies.len()];
        let refs: Vec<&[u8]> = bodies.iter().map(|b| b.as_slice()).collect();
        publish(&publisher, "", &queue, refs, pace, |i, at| {
            published[i].get_or_insert(at);
        })
        .await?;
        let _ = publisher.close(200, "reference published".into()).await;
        Ok::<_, anyhow::Error>(published)
    }))
}

async fn published_by(publishing: Publishing) -> anyhow::Result<Vec<Option<Instant>>> {
    publishing
        .await
        .context("the reference publisher panicked")?
        .context("publishing the reference messages")
}

/// The id a reference message or event carries (`id` in a command,
/// `command_id` in an event).
fn message_id(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Ids {
        id: Option<String>,
        command_id: Option<String>,
    }
    let ids: Ids = serde_json::from_slice(body).ok()?;
    ids.command_id.or(ids.id)
}

fn ids_count(published: &[Option<Instant>]) -> usize {
    published.iter().filter(|p| p.is_some()).count()
}
