//! The scheduler: runs what Postgres says is due, and keeps this instance's leases alive.
//!
//! Due means: a retry whose time has come, a command that waited for its
//! payment, an `unknown` whose next reconciliation check is due, or a command
//! whose owner stopped renewing its lease (a crashed or partitioned instance).
//! Claims use `FOR UPDATE SKIP LOCKED` with leases, so any number of instances
//! can run this loop against one database.

use std::sync::Arc;

use super::backoff::Backoff;
use super::{executor, Job, Worker};
use crate::store::commands;

/// The most commands claimed in one query.
const CLAIM_BATCH: usize = 256;

pub async fn run(w: Arc<Worker>) {
    let mut reconnect = Backoff::reconnect();
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
                reconnect.reset();
                rows
            }
            Err(error) => {
                let log = |delay| tracing::warn!(%error, retry_in = ?delay, "scheduler cannot reach the database");
                match reconnect.wait(&w.shutdown, log).await {
                    true => continue,
                    false => return,
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
///
/// While the worker drains after a stop it goes on renewing, every period,
/// and returns once no command is being driven. (It used to wait for every
/// permit to be free; the drain itself holds them all, so after a stop it
/// looped without ever waiting, and could starve the task that would have
/// stopped it: a test run hung that way for minutes.)
pub async fn heartbeat(w: Arc<Worker>) {
    let period = w.settings.lease / 3;
    loop {
        if w.shutdown.is_cancelled() {
            if w.driving() == 0 {
                return;
            }
            tokio::time::sleep(period).await;
        } else {
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = w.shutdown.cancelled() => continue,
            }
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_heartbeat_ends_after_a_stop_while_the_drain_holds_every_permit() {
        let config = crate::config::Config::parse(
            std::path::Path::new("test.toml"),
            "[database]\nurl = \"postgres://nobody@127.0.0.1:1/none\"\n",
            |_| None,
        )
        .unwrap();
        let store = crate::store::Store::connect_lazy(&config.database).unwrap();
        let w = Worker::new(
            &config,
            store,
            crate::gateways::registry::Accounts::default(),
            Arc::new(crate::metrics::Metrics::new()),
            tokio_util::sync::CancellationToken::new(),
        );
        // What the drain does: every permit taken, then nothing in flight.
        let _drained = w
            .permits
            .clone()
            .acquire_many_owned(config.worker.max_in_flight as u32)
            .await
            .unwrap();
        w.shutdown.cancel();
        let beat = tokio::spawn(heartbeat(w.clone()));
        tokio::time::timeout(std::time::Duration::from_secs(5), beat)
            .await
            .expect("the heartbeat returns once nothing is driven")
            .unwrap();
    }
}
