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

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};
use serde::Serialize;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::publish::{publish, Pace, CONFIRM_WINDOW};

/// What the reference loop achieved.
#[derive(Debug, Clone, Serialize)]
pub struct ReferenceResult {
    pub commands: usize,
    pub seconds: f64,
    pub commands_per_sec: f64,
    pub concurrency: usize,
    pub pool: u32,
}

pub struct ReferenceSettings<'a> {
    /// `bench.<uuid>`: the queue and exchange names are derived from it.
    pub prefix: &'a str,
    pub database_url: &'a str,
    pub concurrency: usize,
    pub pool: u32,
    pub prefetch: u16,
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
    admin
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    // Events go somewhere, as the worker's do (to the bench's event queue):
    // an unroutable message would be confirmed without being stored.
    let sink = admin
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
    admin
        .queue_bind(
            sink.name().as_str().into(),
            exchange.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let sink_channel = amqp.create_channel().await?;
    let mut sink_consumer = sink_channel
        .basic_consume(
            sink.name().as_str().into(),
            "bench-reference-sink".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let drain = tokio::spawn(async move { while sink_consumer.next().await.is_some() {} });

    // Published first, as fast as confirms allow.
    let publisher = amqp.create_channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    publish(
        &publisher,
        "",
        queue,
        bodies.iter().map(|b| b.as_slice()),
        Pace::Windows(CONFIRM_WINDOW),
        |_, _| {},
    )
    .await
    .context("publishing the reference messages")?;
    let _ = publisher.close(200, "reference published".into()).await;

    let pool = PgPoolOptions::new()
        .max_connections(settings.pool)
        .acquire_timeout(Duration::from_secs(30))
        .connect(settings.database_url)
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

    let consume_channel = amqp.create_channel().await?;
    consume_channel
        .basic_qos(settings.prefetch, BasicQosOptions::default())
        .await?;
    let events = amqp.create_channel().await?;
    events
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let permits = Arc::new(Semaphore::new(settings.concurrency.max(1)));

    let started = Instant::now();
    let mut consumer = consume_channel
        .basic_consume(
            queue.into(),
            "bench-reference".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut tasks = JoinSet::new();
    let mut received = 0usize;
    while received < bodies.len() {
        // As the worker does: a permit first, then the next delivery.
        let permit = permits.clone().acquire_owned().await?;
        let delivery = match tokio::time::timeout(Duration::from_secs(60), consumer.next()).await {
            Ok(Some(delivery)) => delivery?,
            Ok(None) => anyhow::bail!("the reference consumer was cancelled"),
            Err(_) => anyhow::bail!(
                "no reference message for 60 s after {received} of {}",
                bodies.len()
            ),
        };
        received += 1;
        let (pool, events, exchange) = (pool.clone(), events.clone(), exchange.to_string());
        tasks.spawn(async move {
            let _permit = permit;
            let body: serde_json::Value = serde_json::from_slice(&delivery.data)?;
            let id = body["id"].as_str().context("reference message without id")?;
            sqlx::query("INSERT INTO bench_reference (id, body) VALUES ($1, $2)")
                .bind(id)
                .bind(&body)
                .execute(&pool)
                .await?;
            sqlx::query(
                "UPDATE bench_reference SET outcome = 'succeeded', updated_at = now() WHERE id = $1",
            )
            .bind(id)
            .execute(&pool)
            .await?;
            let event = serde_json::to_vec(&serde_json::json!({
                "command_id": id, "outcome": "succeeded", "replayed": false,
            }))?;
            let confirm = events
                .basic_publish(
                    exchange.as_str().into(),
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
            Ok::<(), anyhow::Error>(())
        });
        // Reap finished tasks as we go, so an error stops the loop early.
        while let Some(done) = tasks.try_join_next() {
            done.context("reference task panicked")??;
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.context("reference task panicked")??;
    }
    let elapsed = started.elapsed();
    let _ = consume_channel.close(200, "reference done".into()).await;
    let _ = sink_channel.close(200, "reference done".into()).await;
    drain.abort();
    pool.close().await;
    let seconds = elapsed.as_secs_f64();
    Ok(ReferenceResult {
        commands: bodies.len(),
        seconds,
        commands_per_sec: bodies.len() as f64 / seconds.max(f64::EPSILON),
        concurrency: settings.concurrency,
        pool: settings.pool,
    })
}
