//! The consumer: keeps a broker session alive and turns each delivery into a
//! stored command before acknowledging it.
//!
//! A session is one connection; when it dies (broker restart, connection closed
//! from the broker side, network) this loop opens a new one with backoff and
//! re-declares the topology. Deliveries that were not yet acked are redelivered
//! by the broker, and intake recognises them by their id. The in-flight
//! semaphore is taken before a delivery is read, so a full worker stops reading
//! and the broker's prefetch holds the rest.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicCancelOptions};

use super::intake::{self, Accepted, Envelope, Reading};
use super::{executor, retry, Worker};
use crate::broker::{self, Session};

/// Runs until shutdown. Returns the last session (still open) so that the
/// outbox can be flushed through it before it is closed.
pub async fn run(w: Arc<Worker>) -> Option<Session> {
    let mut failures = 0u32;
    loop {
        if w.shutdown.is_cancelled() {
            return None;
        }
        let opened = tokio::select! {
            opened = Session::open(&w.amqp.url, &w.topology, w.amqp.prefetch) => opened,
            _ = w.shutdown.cancelled() => return None,
        };
        let session = match opened {
            Ok(session) => session,
            Err(error) => {
                failures += 1;
                let delay = retry::jittered(
                    Duration::from_millis(200),
                    Duration::from_secs(10),
                    failures,
                );
                tracing::warn!(%error, retry_in = ?delay, "cannot reach RabbitMQ");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => continue,
                    _ = w.shutdown.cancelled() => return None,
                }
            }
        };
        failures = 0;
        tracing::info!("connected to RabbitMQ; topology declared");
        w.set_publisher(Some(session.publisher.clone()));
        let stopped = consume(&w, &session).await;
        if stopped {
            return Some(session);
        }
        w.set_publisher(None);
        tracing::warn!("RabbitMQ session lost; reconnecting");
    }
}

/// Consumes until shutdown (returns true) or until the session dies (false).
async fn consume(w: &Arc<Worker>, session: &Session) -> bool {
    let tag = format!("backoffice-worker-{}", w.owner);
    let mut consumer = match session.consume(&w.topology.command_queue, &tag).await {
        Ok(consumer) => consumer,
        Err(error) => {
            tracing::warn!(%error, "cannot start consuming");
            return false;
        }
    };
    let mut health = tokio::time::interval(Duration::from_secs(1));
    loop {
        let permit = tokio::select! {
            permit = w.permits.clone().acquire_owned() => permit.expect("semaphore never closed"),
            _ = w.shutdown.cancelled() => break,
        };
        let delivery = loop {
            tokio::select! {
                next = consumer.next() => break next,
                _ = health.tick() => {
                    if !session.is_connected() {
                        return false;
                    }
                }
                _ = w.shutdown.cancelled() => {
                    let _ = session.consume_channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await;
                    return true;
                }
            }
        };
        match delivery {
            Some(Ok(delivery)) => {
                let w = w.clone();
                tokio::spawn(async move {
                    handle(w, delivery).await;
                    drop(permit);
                });
            }
            Some(Err(error)) => {
                tracing::warn!(%error, "consumer failed");
                return false;
            }
            None => return false,
        }
    }
    let _ = session
        .consume_channel
        .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
        .await;
    true
}

/// Intake with patience: while the database (or, for dead letters, the broker)
/// is away, the delivery stays unacked and intake is retried with backoff.
async fn handle(w: Arc<Worker>, delivery: lapin::message::Delivery) {
    let reading = intake::read(&delivery.data);
    let envelope = Envelope {
        redelivered: delivery.redelivered,
        reply_to: delivery
            .properties
            .reply_to()
            .as_ref()
            .map(|s| s.as_str().to_string()),
        correlation_id: delivery
            .properties
            .correlation_id()
            .as_ref()
            .map(|s| s.as_str().to_string()),
    };
    let mut failures = 0u32;
    let accepted = loop {
        let attempt = match &reading {
            Reading::Unreadable(reason) => {
                let properties = broker::properties_json(&delivery.properties);
                intake::dead_letter(&w, &delivery.data, &properties, reason)
                    .await
                    .map(|()| Accepted::Done)
                    .map_err(|e| e.to_string())
            }
            Reading::Command {
                command,
                raw,
                type_error,
            } => intake::accept(&w, command, raw, type_error.clone(), &envelope)
                .await
                .map_err(|e| e.to_string()),
        };
        match attempt {
            Ok(accepted) => break accepted,
            Err(error) => {
                failures += 1;
                let delay =
                    retry::jittered(Duration::from_millis(100), Duration::from_secs(5), failures);
                tracing::warn!(%error, retry_in = ?delay, "intake failed; the delivery stays unacked");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    // Unacked: the broker redelivers it to whoever consumes next.
                    _ = w.shutdown.cancelled() => return,
                }
            }
        }
    };
    if let Err(error) = delivery.ack(BasicAckOptions::default()).await {
        // The command is stored; the redelivery will be recognised by its id.
        tracing::warn!(%error, "ack failed after intake; the message will be redelivered");
    }
    if let Accepted::Run(job) = accepted {
        executor::drive(w, *job).await;
    }
}
