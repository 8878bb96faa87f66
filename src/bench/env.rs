//! What one run creates (broker connection and names, database, simulator,
//! proxy, worker, its folder), held so that all of it is removed whatever
//! happened; and the database URLs the run derives.

use anyhow::{bail, Context as _};
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::Connection;
use sqlx::{ConnectOptions as _, PgPool};
use url::Url;

use super::child::WorkerChild;
use super::pgcount::RoundTripProxy;
use super::STOP_GRACE;
use crate::broker::Topology;
use crate::simulator::RunningSimulator;

/// Everything the run created, so that it can be removed whatever happened.
#[derive(Default)]
pub(super) struct Env {
    pub(super) amqp: Option<Connection>,
    pub(super) topology: Option<Topology>,
    /// The database URL, once the database exists.
    pub(super) database: Option<(String, String)>,
    pub(super) pool: Option<PgPool>,
    pub(super) simulator: Option<RunningSimulator>,
    pub(super) proxy: Option<RoundTripProxy>,
    pub(super) worker: Option<WorkerChild>,
    /// The worker's config and log.
    pub(super) dir: Option<std::path::PathBuf>,
}

impl Env {
    pub(super) async fn cleanup(&mut self, keep: bool) {
        if let Some(mut worker) = self.worker.take() {
            if let Err(error) = worker.stop(STOP_GRACE).await {
                eprintln!("warning: {error:#}");
            }
        }
        self.proxy.take();
        if let Some(simulator) = self.simulator.take() {
            simulator.shutdown().await;
        }
        if let (Some(amqp), Some(topology)) = (self.amqp.as_ref(), self.topology.as_ref()) {
            if let Ok(channel) = amqp.create_channel().await {
                for queue in [&topology.command_queue, &topology.dead_letter_queue] {
                    if let Err(error) = channel
                        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                        .await
                    {
                        eprintln!("warning: deleting queue {queue}: {error}");
                    }
                }
                if let Err(error) = channel
                    .exchange_delete(
                        topology.result_exchange.as_str().into(),
                        ExchangeDeleteOptions::default(),
                    )
                    .await
                {
                    eprintln!(
                        "warning: deleting exchange {}: {error}",
                        topology.result_exchange
                    );
                }
                // Closed before the connection: a channel dropped open races
                // the connection's close and lapin logs it as an error.
                let _ = channel.close(200, "bench cleanup".into()).await;
            }
        }
        if let Some(amqp) = self.amqp.take() {
            let _ = amqp.close(200, "bench done".into()).await;
        }
        if let Some(pool) = self.pool.take() {
            pool.close().await;
        }
        if let Some((url, name)) = self.database.take() {
            if keep {
                eprintln!("kept database {name}");
            } else if let Err(error) = drop_database(&url, &name).await {
                eprintln!("warning: dropping database {name}: {error}");
            }
        }
        if let Some(dir) = self.dir.take() {
            if keep {
                eprintln!("kept the worker's config and log in {}", dir.display());
            } else if let Err(error) = std::fs::remove_dir_all(&dir) {
                eprintln!("warning: removing {}: {error}", dir.display());
            }
        }
    }
}

pub(super) async fn drop_database(url: &str, name: &str) -> Result<(), sqlx::Error> {
    let mut admin = crate::store::connect_options(url)?
        .database("postgres")
        .connect()
        .await?;
    sqlx::query(&format!(
        "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
        name.replace('"', "\"\"")
    ))
    .execute(&mut admin)
    .await?;
    Ok(())
}

/// The database URL for `name` on the server of `$DATABASE_URL` (its
/// credentials and parameters kept, its database replaced).
pub(super) fn database_url(server: &str, name: &str) -> anyhow::Result<Url> {
    let mut url = Url::parse(server).with_context(|| "the PostgreSQL URL ($DATABASE_URL)")?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        bail!("$DATABASE_URL must be a postgres:// URL");
    }
    if url.host_str().is_none() {
        bail!("$DATABASE_URL must name a host");
    }
    url.set_path(&format!("/{name}"));
    Ok(url)
}

/// The same database reached through the counting proxy, without TLS (the
/// proxy must be able to read the protocol).
pub(super) fn through_proxy(url: &Url, port: u16) -> Url {
    let mut proxied = url.clone();
    let _ = proxied.set_host(Some("127.0.0.1"));
    let _ = proxied.set_port(Some(port));
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != "sslmode")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    proxied
        .query_pairs_mut()
        .clear()
        .extend_pairs(pairs)
        .append_pair("sslmode", "disable");
    proxied
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_keep_credentials_and_parameters() {
        let url = database_url(
            "postgres://u:p@db.example:6543/other?sslmode=require",
            "bench_x",
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "postgres://u:p@db.example:6543/bench_x?sslmode=require"
        );
        let proxied = through_proxy(&url, 7777);
        assert_eq!(
            proxied.as_str(),
            "postgres://u:p@127.0.0.1:7777/bench_x?sslmode=disable"
        );
        let plain = database_url("postgres://postgres@127.0.0.1:5432", "bench_y").unwrap();
        assert_eq!(plain.as_str(), "postgres://postgres@127.0.0.1:5432/bench_y");
        assert!(database_url("mysql://x@h/d", "b").is_err());
    }
}
