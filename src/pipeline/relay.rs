//! The outbox relay: publishes committed events with publisher confirms.
//!
//! An event row is marked published only after the broker confirmed every copy
//! of it (the result exchange, and `reply_to` when the command had one). A
//! crash between confirm and mark publishes it again: delivery is at least
//! once, with the same `message_id`, as the contract says.
//!
//! Two ways in. The completion writer hands over the events it just
//! committed ([`Fresh`]), claimed in their rows, and they are published from
//! memory at once: no read of the outbox on the way to the broker. Everything
//! else (rejections and replays from intake, settled unknowns, fresh events
//! that could not be published, claims left by a crashed instance) is found
//! by polling the table for unclaimed rows.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Worker;
use crate::broker::{Outgoing, Publisher};
use crate::store::{outbox, StoreError};

/// Rows published per transaction.
pub const BATCH: i64 = 500;

/// How long the committing instance keeps its fresh events to itself. They
/// are normally published within milliseconds; a crashed instance's last
/// events wait this long for another relay (a 60 s claim made the chaos run's
/// events after each kill wait a minute). A publish slower than this (a
/// broker in trouble) may be repeated by the poll: at least once, same
/// message id.
pub const CLAIM: Duration = Duration::from_secs(5);

/// An outbox row and the copies of its event to publish: handed over by the
/// completion writer for the events it just committed, or read by the poll.
#[derive(Debug)]
pub struct Fresh {
    pub row: i64,
    pub messages: Vec<Outgoing>,
}

/// The copies of one event: to the result exchange, and to `reply_to` when
/// there is one.
#[allow(clippy::too_many_arguments)]
pub fn messages_of(
    exchange: &str,
    routing_key: &str,
    message_id: uuid::Uuid,
    command_id: Option<&str>,
    reply_to: Option<&str>,
    reply_correlation_id: Option<&str>,
    body: Vec<u8>,
) -> Vec<Outgoing> {
    let mut messages = Vec::with_capacity(2);
    let reply_to = reply_to.filter(|r| !r.is_empty());
    let reply_body = reply_to.map(|_| body.clone());
    let mut event = Outgoing::json(exchange, routing_key, body);
    event.message_id = Some(message_id.to_string());
    event.correlation_id = command_id.map(str::to_string);
    messages.push(event);
    if let (Some(reply_to), Some(body)) = (reply_to, reply_body) {
        let mut reply = Outgoing::json("", reply_to, body);
        reply.message_id = Some(message_id.to_string());
        reply.correlation_id = reply_correlation_id.or(command_id).map(str::to_string);
        messages.push(reply);
    }
    messages
}

/// Publishes until `stop` is cancelled, then makes a last pass to flush.
pub async fn run(
    w: Arc<Worker>,
    mut fresh: mpsc::UnboundedReceiver<Vec<Fresh>>,
    stop: CancellationToken,
) {
    let mut open = true;
    loop {
        let stopping = stop.is_cancelled();
        tokio::select! {
            batch = fresh.recv(), if open => match batch {
                Some(batch) => {
                    publish_fresh(&w, batch, &mut fresh).await;
                    if !stop.is_cancelled() {
                        continue;
                    }
                }
                None => open = false,
            },
            _ = w.wake_outbox.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.cancelled(), if !stopping => {}
        }
        if stop.is_cancelled() {
            // Whatever the completion writer handed over last goes first.
            while let Ok(batch) = fresh.try_recv() {
                publish_fresh(&w, batch, &mut fresh).await;
            }
        }
        let publisher = w.publisher.borrow().clone();
        if let Some(publisher) = publisher {
            loop {
                match relay_once(&w, &publisher).await {
                    Ok(n) if n as i64 == BATCH => continue,
                    Ok(_) => break,
                    Err(error) => {
                        tracing::warn!(%error, "outbox relay: database error");
                        break;
                    }
                }
            }
        }
        if stop.is_cancelled() && (stopping || w.publisher.borrow().is_none()) {
            return;
        }
    }
}

/// Publishes fresh events (this batch and any that queued up behind it) and
/// marks them; what could not be published is released to the poll.
async fn publish_fresh(
    w: &Worker,
    first: Vec<Fresh>,
    more: &mut mpsc::UnboundedReceiver<Vec<Fresh>>,
) {
    let mut events = first;
    while events.len() < BATCH as usize {
        match more.try_recv() {
            Ok(batch) => events.extend(batch),
            Err(_) => break,
        }
    }
    let publisher = w.publisher.borrow().clone();
    let Published {
        published,
        failed,
        error: first_error,
    } = match publisher {
        Some(publisher) => publish_rows(&publisher, events).await,
        None => Published {
            published: Vec::new(),
            failed: events.iter().map(|e| e.row).collect(),
            error: Some("not connected to RabbitMQ".to_string()),
        },
    };
    let marked = async {
        let mut conn = w.store.pool().acquire().await?;
        outbox::mark_published(&mut conn, &published).await?;
        if let Some(error) = &first_error {
            outbox::mark_failed(&mut conn, &failed, error).await?;
        }
        Ok::<_, StoreError>(())
    }
    .await;
    match marked {
        Ok(()) => w.metrics.published(published.len() as u64),
        // The rows stay claimed and unpublished: once the claim expires the
        // poll publishes them again (at least once, same message ids).
        Err(error) => tracing::warn!(%error, "outbox relay: could not mark fresh events"),
    }
    if let Some(error) = &first_error {
        tracing::warn!(failed = failed.len(), %error, "some events were not confirmed; they stay in the outbox");
        w.wake_outbox.notify_one();
    }
}

/// Publishes one batch of unpublished events; returns how many rows it took.
pub async fn relay_once(w: &Worker, publisher: &Publisher) -> Result<usize, StoreError> {
    let mut tx = w.store.pool().begin().await?;
    let rows = outbox::lock_unpublished(&mut tx, BATCH).await?;
    if rows.is_empty() {
        tx.commit().await?;
        return Ok(0);
    }
    let taken = rows.len();
    let events = rows
        .into_iter()
        .map(|row| Fresh {
            row: row.id,
            messages: messages_of(
                &row.exchange,
                &row.routing_key,
                row.message_id,
                row.command_id.as_deref(),
                row.reply_to.as_deref(),
                row.reply_correlation_id.as_deref(),
                row.body.into_bytes(),
            ),
        })
        .collect();
    let Published {
        published,
        failed: not_published,
        error: first_error,
    } = publish_rows(publisher, events).await;
    outbox::mark_published(&mut tx, &published).await?;
    if let Some(error) = &first_error {
        outbox::mark_failed(&mut tx, &not_published, error).await?;
        tracing::warn!(failed = not_published.len(), %error, "some events were not confirmed; they stay in the outbox");
    }
    tx.commit().await?;
    w.metrics.published(published.len() as u64);
    Ok(taken)
}

/// What one publish round did, by outbox row.
struct Published {
    published: Vec<i64>,
    failed: Vec<i64>,
    /// The first error, when any copy of any row was not confirmed.
    error: Option<String>,
}

/// Publishes every copy of every row and waits for all confirms; a row counts
/// as published only when all its copies were confirmed.
async fn publish_rows(publisher: &Publisher, mut events: Vec<Fresh>) -> Published {
    let mut messages = Vec::with_capacity(events.len() * 2);
    let mut owners = Vec::with_capacity(events.len() * 2);
    for (i, event) in events.iter_mut().enumerate() {
        for message in event.messages.drain(..) {
            messages.push(message);
            owners.push(i);
        }
    }
    let results = publisher.publish_all(&messages).await;
    let mut bad = vec![false; events.len()];
    let mut error = None;
    for (result, &i) in results.iter().zip(&owners) {
        if let Err(e) = result {
            bad[i] = true;
            error.get_or_insert_with(|| e.to_string());
        }
    }
    let mut outcome = Published {
        published: Vec::with_capacity(events.len()),
        failed: Vec::new(),
        error,
    };
    for (event, bad) in events.iter().zip(bad) {
        if bad {
            outcome.failed.push(event.row);
        } else {
            outcome.published.push(event.row);
        }
    }
    outcome
}
