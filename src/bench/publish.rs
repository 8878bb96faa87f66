//! Publishing the benchmark's messages as a producer would: persistent JSON
//! on a confirm-mode channel, either as fast as confirms allow (in windows,
//! waiting for a window's confirms before the next one) or paced at a fixed
//! rate on an absolute schedule (message i at start + i / rate, so a late
//! wake-up is caught up rather than shifting every later message).

use std::time::{Duration, Instant};

use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Channel, PublisherConfirm};

/// Messages published before waiting for their confirms, when not paced.
pub const CONFIRM_WINDOW: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// As fast as confirms allow, this many unconfirmed at most.
    Windows(usize),
    /// This many messages per second.
    Rate(f64),
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("the broker refused message {0} (nack)")]
    Nacked(usize),
    #[error("publishing message {index}: {source}")]
    Broker { index: usize, source: lapin::Error },
}

/// Publishes every body to `exchange` with `routing_key`; calls `on_publish`
/// with each message's index and the instant it was handed to the broker.
/// Returns once every message is confirmed.
pub async fn publish<'a>(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    bodies: impl IntoIterator<Item = &'a [u8]>,
    pace: Pace,
    mut on_publish: impl FnMut(usize, Instant),
) -> Result<(), PublishError> {
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into());
    match pace {
        Pace::Windows(window) => {
            let mut pending: Vec<(usize, PublisherConfirm)> = Vec::with_capacity(window);
            for (index, body) in bodies.into_iter().enumerate() {
                on_publish(index, Instant::now());
                let confirm =
                    send(channel, exchange, routing_key, body, &properties, index).await?;
                pending.push((index, confirm));
                if pending.len() >= window.max(1) {
                    await_confirms(std::mem::take(&mut pending)).await?;
                }
            }
            await_confirms(pending).await
        }
        Pace::Rate(rate) => {
            // Confirms are awaited beside the publishing so that a slow
            // confirm never delays the schedule.
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, PublisherConfirm)>();
            let checker = tokio::spawn(async move {
                while let Some((index, confirm)) = rx.recv().await {
                    await_confirms(vec![(index, confirm)]).await?;
                }
                Ok::<(), PublishError>(())
            });
            let start = tokio::time::Instant::now();
            for (index, body) in bodies.into_iter().enumerate() {
                tokio::time::sleep_until(start + Duration::from_secs_f64(index as f64 / rate))
                    .await;
                on_publish(index, Instant::now());
                let confirm =
                    send(channel, exchange, routing_key, body, &properties, index).await?;
                if tx.send((index, confirm)).is_err() {
                    // The checker stopped early: it holds the error.
                    break;
                }
            }
            drop(tx);
            match checker.await {
                Ok(result) => result,
                Err(join) => std::panic::resume_unwind(join.into_panic()),
            }
        }
    }
}

async fn send(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: &BasicProperties,
    index: usize,
) -> Result<PublisherConfirm, PublishError> {
    channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            body,
            properties.clone(),
        )
        .await
        .map_err(|source| PublishError::Broker { index, source })
}

async fn await_confirms(pending: Vec<(usize, PublisherConfirm)>) -> Result<(), PublishError> {
    let results = futures::future::join_all(
        pending
            .into_iter()
            .map(|(index, confirm)| async move { (index, confirm.await) }),
    )
    .await;
    for (index, result) in results {
        match result {
            Ok(confirmation) if confirmation.is_ack() => {}
            Ok(_) => return Err(PublishError::Nacked(index)),
            Err(source) => return Err(PublishError::Broker { index, source }),
        }
    }
    Ok(())
}
