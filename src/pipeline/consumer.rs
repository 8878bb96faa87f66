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

use futures::{FutureExt, StreamExt};
use lapin::options::{BasicAckOptions, BasicCancelOptions};

use super::intake::{self, Accepted, Envelope, Incoming, Reading};
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

/// The most deliveries taken into one intake transaction.
pub const MAX_INTAKE_BATCH: usize = 256;

/// Consumes until shutdown (returns true) or until the session dies (false).
///
/// Deliveries are taken in batches of whatever has already arrived (never
/// waiting for more), stored in one transaction, and acknowledged with one
/// `multiple` ack. Intake runs one batch at a time, so every delivery before
/// the acked tag has been stored: that is what makes the single ack safe.
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
        // One permit per command, taken before its delivery is read: a full
        // worker stops here and the broker's prefetch holds the rest.
        let first_permit = tokio::select! {
            permit = w.permits.clone().acquire_owned() => permit.expect("semaphore never closed"),
            _ = w.shutdown.cancelled() => {
                stop_consuming(session, &tag).await;
                return true;
            }
        };
        let first = loop {
            tokio::select! {
                next = consumer.next() => break next,
                _ = health.tick() => {
                    if !session.is_connected() {
                        return false;
                    }
                }
                _ = w.shutdown.cancelled() => {
                    stop_consuming(session, &tag).await;
                    return true;
                }
            }
        };
        let mut batch = match first {
            Some(Ok(delivery)) => vec![delivery],
            Some(Err(error)) => {
                tracing::warn!(%error, "consumer failed");
                return false;
            }
            None => return false,
        };
        let mut permits = vec![first_permit];
        // The rest of the batch is what has already arrived AND has a free
        // permit: waiting for permits with deliveries in hand could wait for
        // more than the in-flight cap, forever.
        while batch.len() < MAX_INTAKE_BATCH {
            let Ok(permit) = w.permits.clone().try_acquire_owned() else {
                break;
            };
            match consumer.next().now_or_never() {
                Some(Some(Ok(delivery))) => {
                    batch.push(delivery);
                    permits.push(permit);
                }
                _ => break,
            }
        }
        let Some(accepted) = intake(w, &batch).await else {
            // Shutting down before the batch could be stored: the deliveries
            // stay unacked and the broker redelivers them.
            return true;
        };
        let last = batch.last().expect("a batch is never empty");
        if let Err(error) = last.acker.ack(BasicAckOptions { multiple: true }).await {
            // The commands are stored; redeliveries will be recognised by their id.
            tracing::warn!(%error, "ack failed after intake; the messages will be redelivered");
        }
        for (accepted, permit) in accepted.into_iter().zip(permits) {
            if let Accepted::Run(job) = accepted {
                let w = w.clone();
                tokio::spawn(async move {
                    executor::drive(w, *job).await;
                    drop(permit);
                });
            }
        }
    }
}

/// Asks the broker to stop delivering: unacked deliveries go back to the queue.
async fn stop_consuming(session: &Session, tag: &str) {
    let _ = session
        .consume_channel
        .basic_cancel(tag.into(), BasicCancelOptions::default())
        .await;
}

/// Intake with patience: while the database (or, for dead letters, the broker)
/// is away, the batch stays unacked and intake is retried with backoff.
/// `None` when asked to stop meanwhile.
async fn intake(w: &Arc<Worker>, batch: &[lapin::message::Delivery]) -> Option<Vec<Accepted>> {
    let mut results: Vec<Option<Accepted>> = Vec::with_capacity(batch.len());
    let mut incoming = Vec::new();
    let mut positions = Vec::new();
    let mut dead = Vec::new();
    for (i, delivery) in batch.iter().enumerate() {
        results.push(None);
        match intake::read(&delivery.data) {
            Reading::Unreadable(reason) => dead.push((i, reason)),
            Reading::Command {
                command,
                raw,
                type_error,
            } => {
                positions.push(i);
                incoming.push(Incoming {
                    command,
                    raw,
                    type_error,
                    envelope: Envelope {
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
                    },
                });
            }
        }
    }
    let mut failures = 0u32;
    for (i, reason) in dead {
        let properties = broker::properties_json(&batch[i].properties);
        loop {
            match intake::dead_letter(w, &batch[i].data, &properties, &reason).await {
                Ok(()) => break,
                Err(error) => {
                    failures += 1;
                    if !backoff(w, &error.to_string(), failures).await {
                        return None;
                    }
                }
            }
        }
        results[i] = Some(Accepted::Done);
    }
    if !incoming.is_empty() {
        let accepted = loop {
            match intake::accept_batch(w, &incoming).await {
                Ok(accepted) => break accepted,
                Err(error) => {
                    failures += 1;
                    if !backoff(w, &error.to_string(), failures).await {
                        return None;
                    }
                }
            }
        };
        for (i, accepted) in positions.into_iter().zip(accepted) {
            results[i] = Some(accepted);
        }
    }
    Some(
        results
            .into_iter()
            .map(|r| r.expect("every delivery has a result"))
            .collect(),
    )
}

/// Waits before the next intake attempt; false if asked to stop meanwhile.
async fn backoff(w: &Worker, error: &str, failures: u32) -> bool {
    let delay = retry::jittered(Duration::from_millis(100), Duration::from_secs(5), failures);
    tracing::warn!(%error, retry_in = ?delay, "intake failed; the deliveries stay unacked");
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = w.shutdown.cancelled() => false,
    }
}
