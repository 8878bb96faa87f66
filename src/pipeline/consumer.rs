//! The consumer: keeps a broker session alive and turns each delivery into a
//! stored command before acknowledging it.
//!
//! A session is one connection; when it dies (broker restart, connection closed
//! from the broker side, network) this loop opens a new one with backoff and
//! re-declares the topology, on the next of `[amqp] urls` first when there
//! are several (a cluster's nodes). The relay publishes through the same
//! session, so it moves with it. Deliveries that were not yet acked are redelivered
//! by the broker, and intake recognises them by their id. The in-flight
//! semaphore is taken before a delivery is read, so a full worker stops reading
//! and the broker's prefetch holds the rest.
//!
//! Nothing a producer sends may stop this loop: a body over `[amqp]
//! max_command_bytes` is dead-lettered unread, and a batch whose intake
//! fails for its data (not for a database that is away) is taken apart, so
//! that the one delivery at fault is dead-lettered and the others go on.

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use lapin::options::{BasicAckOptions, BasicCancelOptions};

use super::backoff::Backoff;
use super::intake::{self, Accepted, Envelope, Incoming, Reading};
use super::{executor, Worker};
use crate::broker::Session;
use crate::store;
use crate::telemetry::Escaped;

/// Runs until shutdown. Returns the last session (still open) so that the
/// outbox can be flushed through it before it is closed.
pub async fn run(w: Arc<Worker>) -> Option<Session> {
    let mut reconnect = Backoff::reconnect();
    // With several nodes (a cluster), the first listed is tried first (list
    // them in another order per instance to spread connections), and a lost
    // session is opened again on the next node first: the one it was on may
    // be the one that stopped.
    let nodes = w.amqp.urls.len().max(1);
    let mut next = 0;
    loop {
        if w.shutdown.is_cancelled() {
            return None;
        }
        let opened = tokio::select! {
            opened = Session::open_any(&w.amqp.urls, next, &w.topology, w.amqp.prefetch) => opened,
            _ = w.shutdown.cancelled() => return None,
        };
        let session = match opened {
            Ok((session, index)) => {
                next = (index + 1) % nodes;
                if nodes > 1 {
                    tracing::info!(node = %crate::broker::node_name(&w.amqp.urls[index]), "broker session on this node");
                }
                session
            }
            Err(error) => {
                let log =
                    |delay| tracing::warn!(%error, retry_in = ?delay, "cannot reach RabbitMQ");
                match reconnect.wait(&w.shutdown, log).await {
                    true => continue,
                    false => return None,
                }
            }
        };
        reconnect.reset();
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
        // The commands are stored, so they start before the ack goes out:
        // the ack's hop to lapin's I/O thread and back is not on their path.
        for (accepted, permit) in accepted.into_iter().zip(permits) {
            if let Accepted::Run(job) = accepted {
                let w = w.clone();
                tokio::spawn(async move {
                    executor::drive(w, *job).await;
                    drop(permit);
                });
            }
        }
        let last = batch.last().expect("a batch is never empty");
        if let Err(error) = last.acker.ack(BasicAckOptions { multiple: true }).await {
            // The commands are stored; redeliveries will be recognised by their id.
            tracing::warn!(%error, "ack failed after intake; the messages will be redelivered");
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
///
/// Only a transient failure is retried as it is. A data error (a statement
/// that can never succeed for this data) would come back forever, and with
/// it every command behind it: the batch is then taken again one delivery
/// at a time, and the one that still fails is dead-lettered with the reason.
async fn intake(w: &Arc<Worker>, batch: &[lapin::message::Delivery]) -> Option<Vec<Accepted>> {
    let mut results: Vec<Option<Accepted>> = Vec::with_capacity(batch.len());
    let mut incoming = Vec::new();
    let mut positions = Vec::new();
    let mut dead = Vec::new();
    let max_bytes = w.amqp.max_command_bytes;
    for (i, delivery) in batch.iter().enumerate() {
        results.push(None);
        if delivery.data.len() > max_bytes {
            dead.push((
                i,
                format!(
                    "the message is {} bytes; a command is at most {max_bytes} bytes ([amqp] max_command_bytes)",
                    delivery.data.len()
                ),
            ));
            continue;
        }
        let reading = intake::read(&delivery.data);
        if let Reading::Unreadable(reason) = &reading {
            dead.push((i, reason.clone()));
            continue;
        }
        if let Some(item) = Incoming::of(reading, envelope_of(delivery)) {
            positions.push(i);
            incoming.push(item);
        }
    }
    let mut patience = intake_backoff();
    for (i, reason) in dead {
        if !dead_letter_patiently(w, &batch[i], &reason, &mut patience).await {
            return None;
        }
        results[i] = Some(Accepted::Done);
    }
    if !incoming.is_empty() {
        let accepted = loop {
            match intake::accept_batch(w, &incoming).await {
                Ok(accepted) => break Some(accepted),
                Err(error) if store::is_data_error(&error) => {
                    tracing::warn!(
                        error = %Escaped::at_most(&error.to_string(), 512),
                        batch = incoming.len(),
                        "intake failed for the data of one of its commands; taking them one at a time"
                    );
                    break None;
                }
                Err(error) => {
                    if !wait_out(w, &error.to_string(), &mut patience).await {
                        return None;
                    }
                }
            }
        };
        match accepted {
            Some(accepted) => {
                for (i, accepted) in positions.iter().zip(accepted) {
                    results[*i] = Some(accepted);
                }
            }
            None => {
                for (item, &i) in incoming.iter().zip(&positions) {
                    results[i] = Some(accept_alone(w, item, &batch[i], &mut patience).await?);
                }
            }
        }
    }
    Some(
        results
            .into_iter()
            .map(|r| r.expect("every delivery has a result"))
            .collect(),
    )
}

/// What intake keeps of a delivery's envelope (checked by intake).
fn envelope_of(delivery: &lapin::message::Delivery) -> Envelope {
    let properties = &delivery.properties;
    Envelope {
        redelivered: delivery.redelivered,
        reply_to: properties
            .reply_to()
            .as_ref()
            .map(|s| s.as_str().to_string()),
        correlation_id: properties
            .correlation_id()
            .as_ref()
            .map(|s| s.as_str().to_string()),
    }
}

/// One delivery on its own, after its batch failed for its data: stored if
/// it can be, dead-lettered (and so acknowledged) if its own data is what
/// fails. `None` when asked to stop meanwhile.
async fn accept_alone(
    w: &Arc<Worker>,
    item: &intake::Incoming,
    delivery: &lapin::message::Delivery,
    patience: &mut Backoff,
) -> Option<Accepted> {
    loop {
        match intake::accept_batch(w, std::slice::from_ref(item)).await {
            Ok(mut accepted) => return accepted.pop(),
            Err(error) if store::is_data_error(&error) => {
                let reason = format!(
                    "cannot be stored: {}",
                    Escaped::at_most(&error.to_string(), 512)
                );
                if !dead_letter_patiently(w, delivery, &reason, patience).await {
                    return None;
                }
                return Some(Accepted::Done);
            }
            Err(error) => {
                if !wait_out(w, &error.to_string(), patience).await {
                    return None;
                }
            }
        }
    }
}

/// Dead-letters one delivery, waiting out a database or broker that is
/// away. False if asked to stop meanwhile.
async fn dead_letter_patiently(
    w: &Arc<Worker>,
    delivery: &lapin::message::Delivery,
    reason: &str,
    patience: &mut Backoff,
) -> bool {
    loop {
        match intake::dead_letter(w, &delivery.data, &delivery.properties, reason).await {
            Ok(()) => return true,
            Err(error) => {
                if !wait_out(w, &error.to_string(), patience).await {
                    return false;
                }
            }
        }
    }
}

/// The waits between intake attempts of one batch: 100 ms at first, at most 5 s.
fn intake_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
}

/// Waits before the next intake attempt; false if asked to stop meanwhile.
async fn wait_out(w: &Worker, error: &str, patience: &mut Backoff) -> bool {
    let log = |delay| {
        tracing::warn!(
            error = %Escaped::at_most(error, 512),
            retry_in = ?delay,
            "intake failed; the deliveries stay unacked"
        )
    };
    patience.wait(&w.shutdown, log).await
}
