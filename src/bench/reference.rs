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
//! Paced (`--rate`), the messages are published at that rate while the loop
//! runs, and each one's latency (publish to its event reaching a consumer,
//! the same two hops the worker's latency has) is the floor of latency at
//! that load: what the worker's "over gateway" latency is compared with.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection};
use serde::Serialize;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::measure::LatencySummary;
use super::publish::{publish, Pace, CONFIRM_WINDOW};
use crate::broker::consume_all;

/// What the reference loop achieved.
#[derive(Debug, Clone, Serialize)]
pub struct ReferenceResult {
    pub commands: usize,
    pub seconds: f64,
    pub commands_per_sec: f64,
    pub concurrency: usize,
    pub pool: u32,
    /// Messages per second asked for; `None`: published all at once first.
    pub rate: Option<f64>,
    /// Publish to event, when paced (a burst's latency is its queueing).
    pub latency: Option<LatencySummary>,
}

pub struct ReferenceSettings<'a> {
    /// `bench.<uuid>`: the queue and exchange names are derived from it.
    pub prefix: &'a str,
    pub database_url: &'a str,
    pub concurrency: usize,
    pub pool: u32,
    pub prefetch: u16,
    /// Publish at this rate while the loop runs, and measure latency.
    pub rate: Option<f64>,
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
    let publishing = start_publishing(amqp, queue, bodies, settings.rate).await?;
    // Unpaced: published first, as fast as confirms allow, then consumed
    // (throughput). Paced: consumed while they are published (latency).
    let mut publishing = Some(publishing);
    let mut published = None;
    if settings.rate.is_none() {
        let done = publishing.take().expect("not taken yet");
        published = Some(published_by(done).await?);
    }
    let pool = open_pool(settings).await?;
    let consume_channel = amqp.create_channel().await?;
    consume_channel
        .basic_qos(settings.prefetch, BasicQosOptions::default())
        .await?;
    let events = amqp.create_channel().await?;
    events
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let started = Instant::now();
    let consumer = consume_channel
        .basic_consume(
            queue.into(),
            "bench-reference".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let looped = Looped {
        pool: &pool,
        events: &events,
        exchange,
        concurrency: settings.concurrency,
        total: bodies.len(),
    };
    looped.run(consumer).await?;
    let elapsed = started.elapsed();
    if let Some(publishing) = publishing {
        published = Some(published_by(publishing).await?);
    }
    let published = published.expect("awaited above");
    let arrived = sink.arrivals(&published, bodies.len()).await;
    let _ = consume_channel.close(200, "reference done".into()).await;
    sink.stop().await;
    pool.close().await;
    let seconds = elapsed.as_secs_f64();
    let latency = settings.rate.and_then(|_| {
        LatencySummary::from_samples(
            published
                .iter()
                .zip(&arrived)
                .filter_map(|(p, a)| Some(a.as_ref()?.saturating_duration_since(*p.as_ref()?)))
                .collect(),
        )
    });
    Ok(ReferenceResult {
        commands: bodies.len(),
        seconds,
        commands_per_sec: bodies.len() as f64 / seconds.max(f64::EPSILON),
        concurrency: settings.concurrency,
        pool: settings.pool,
        rate: settings.rate,
        latency,
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

/// A pool of the worker's size, and the loop's table.
async fn open_pool(settings: &ReferenceSettings<'_>) -> anyhow::Result<sqlx::PgPool> {
    let pool = PgPoolOptions::new()
        .max_connections(settings.pool)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(crate::store::connect_options(settings.database_url)?)
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
struct Looped<'a> {
    pool: &'a sqlx::PgPool,
    events: &'a Channel,
    exchange: &'a str,
    concurrency: usize,
    total: usize,
}

impl Looped<'_> {
    /// Consumes `total` messages, each in a task of its own under the
    /// concurrency cap, and waits for every task.
    async fn run(&self, mut consumer: lapin::Consumer) -> anyhow::Result<()> {
        let permits = Arc::new(Semaphore::new(self.concurrency.max(1)));
        let mut tasks = JoinSet::new();
        let mut received = 0usize;
        while received < self.total {
            // As the worker does: a permit first, then the next delivery.
            let permit = permits.clone().acquire_owned().await?;
            let delivery =
                match tokio::time::timeout(Duration::from_secs(60), consumer.next()).await {
                    Ok(Some(delivery)) => delivery?,
                    Ok(None) => anyhow::bail!("the reference consumer was cancelled"),
                    Err(_) => anyhow::bail!(
                        "no reference message for 60 s after {received} of {}",
                        self.total
                    ),
                };
            received += 1;
            let (pool, events, exchange) = (
                self.pool.clone(),
                self.events.clone(),
                self.exchange.to_string(),
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
