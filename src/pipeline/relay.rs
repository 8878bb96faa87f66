//! The outbox relay: publishes committed events with publisher confirms.
//!
//! An event row is marked published only after the broker confirmed every copy
//! of it (the result exchange, and `reply_to` when the command had one). A
//! crash between confirm and mark publishes it again: delivery is at least
//! once, with the same `message_id`, as the contract says.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Worker;
use crate::broker::{Outgoing, Publisher};
use crate::store::{outbox, StoreError};

/// Rows published per transaction.
pub const BATCH: i64 = 500;

/// Publishes until `stop` is cancelled, then makes a last pass to flush.
pub async fn run(w: Arc<Worker>, stop: CancellationToken) {
    loop {
        let stopping = stop.is_cancelled();
        tokio::select! {
            _ = w.wake_outbox.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.cancelled(), if !stopping => {}
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

/// Publishes one batch of unpublished events; returns how many rows it took.
pub async fn relay_once(w: &Worker, publisher: &Publisher) -> Result<usize, StoreError> {
    let mut tx = w.store.pool().begin().await?;
    let rows = outbox::lock_unpublished(&mut tx, BATCH).await?;
    if rows.is_empty() {
        tx.commit().await?;
        return Ok(0);
    }
    let mut messages = Vec::with_capacity(rows.len() * 2);
    let mut owners = Vec::with_capacity(rows.len() * 2);
    for (i, row) in rows.iter().enumerate() {
        let body = serde_json::to_vec(&row.body).expect("stored JSON serializes");
        let mut event = Outgoing::json(&row.exchange, &row.routing_key, body.clone());
        event.message_id = Some(row.message_id.to_string());
        event.correlation_id = row.command_id.clone();
        messages.push(event);
        owners.push(i);
        if let Some(reply_to) = row.reply_to.as_deref().filter(|r| !r.is_empty()) {
            let mut reply = Outgoing::json("", reply_to, body);
            reply.message_id = Some(row.message_id.to_string());
            reply.correlation_id = row
                .reply_correlation_id
                .clone()
                .or_else(|| row.command_id.clone());
            messages.push(reply);
            owners.push(i);
        }
    }
    let results = publisher.publish_all(&messages).await;
    let mut failed = vec![false; rows.len()];
    let mut first_error = None;
    for (result, &i) in results.iter().zip(&owners) {
        if let Err(error) = result {
            failed[i] = true;
            first_error.get_or_insert_with(|| error.to_string());
        }
    }
    let published: Vec<i64> = rows
        .iter()
        .zip(&failed)
        .filter(|(_, f)| !**f)
        .map(|(r, _)| r.id)
        .collect();
    let not_published: Vec<i64> = rows
        .iter()
        .zip(&failed)
        .filter(|(_, f)| **f)
        .map(|(r, _)| r.id)
        .collect();
    outbox::mark_published(&mut tx, &published).await?;
    if let Some(error) = &first_error {
        outbox::mark_failed(&mut tx, &not_published, error).await?;
        tracing::warn!(failed = not_published.len(), %error, "some events were not confirmed; they stay in the outbox");
    }
    tx.commit().await?;
    w.metrics.published(published.len() as u64);
    Ok(rows.len())
}
