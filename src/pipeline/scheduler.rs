//! The scheduler: runs what Postgres says is due, and keeps this instance's leases alive.
//!
//! Due means: a retry whose time has come, a command that waited for its
//! payment, an `unknown` whose next reconciliation check is due, or a command
//! whose owner stopped renewing its lease (a crashed or partitioned instance).
//! Claims use `FOR UPDATE SKIP LOCKED` with leases, so any number of instances
//! can run this loop against one database.

use std::sync::Arc;
use std::time::Duration;

use super::{executor, retry, Job, Worker};
use crate::store::commands;

/// The most commands claimed in one query.
const CLAIM_BATCH: usize = 256;

pub async fn run(w: Arc<Worker>) {
    let mut failures = 0u32;
    loop {
        tokio::select! {
            _ = w.shutdown.cancelled() => return,
            _ = w.wake_scheduler.notified() => {}
            _ = tokio::time::sleep(w.poll_interval) => {}
        }
        let free = w.permits.available_permits().min(CLAIM_BATCH);
        if free == 0 {
            continue;
        }
        let claimed = async {
            let mut conn = w.store.pool().acquire().await?;
            commands::claim_due(&mut conn, w.owner, w.settings.lease, free as i64).await
        }
        .await;
        let rows = match claimed {
            Ok(rows) => {
                failures = 0;
                rows
            }
            Err(error) => {
                failures += 1;
                let delay = retry::jittered(
                    Duration::from_millis(200),
                    Duration::from_secs(10),
                    failures,
                );
                tracing::warn!(%error, retry_in = ?delay, "scheduler cannot reach the database");
                tokio::select! {
                    _ = w.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => continue,
                }
            }
        };
        for row in rows {
            let permit = w
                .permits
                .clone()
                .acquire_owned()
                .await
                .expect("semaphore never closed");
            let id = row.id.clone();
            match Job::from_row(row, &w.accounts) {
                Ok(job) => {
                    let w = w.clone();
                    tokio::spawn(async move {
                        executor::drive(w, job).await;
                        drop(permit);
                    });
                }
                Err(rejected) => {
                    // Accepted once, so its account or gateway was removed from the
                    // config since. Keep it for when the config is fixed.
                    tracing::error!(%id, problem = %rejected.description, "stored command cannot run with the current configuration; retrying later");
                    if let Ok(mut conn) = w.store.pool().acquire().await {
                        let _ =
                            commands::defer(&mut conn, &id, w.owner, w.settings.max_backoff).await;
                    }
                }
            }
        }
    }
}

/// Renews the leases of the commands this instance is driving, every third of
/// the lease, so that only a dead instance's commands ever expire.
pub async fn heartbeat(w: Arc<Worker>) {
    let period = w.settings.lease / 3;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = w.shutdown.cancelled() => {}
        }
        let ids = w.active_ids();
        if !ids.is_empty() {
            let renewed = async {
                let mut conn = w.store.pool().acquire().await?;
                commands::heartbeat(&mut conn, w.owner, &ids, w.settings.lease).await
            }
            .await;
            if let Err(error) = renewed {
                tracing::warn!(%error, held = ids.len(), "could not renew leases");
            }
        }
        if w.shutdown.is_cancelled() && w.in_flight() == 0 {
            return;
        }
    }
}
