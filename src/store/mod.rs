//! All PostgreSQL access. Nothing outside this module writes SQL.
//!
//! The pipeline composes these functions into its transactions (each function
//! takes a connection, so several can share one transaction); the schema is in
//! `migrations/` and is applied at start-up under sqlx's advisory lock, so several
//! instances can start together.

pub mod attempts;
pub mod commands;
pub mod console;
pub mod dead_letters;
pub mod error;
pub mod leases;
pub mod lifecycle;
pub mod notifications;
pub mod outbox;
pub mod reports;
pub mod retention;
pub mod stages;

use std::str::FromStr;
use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::{ConnectOptions, Connection, PgPool};

use crate::config::DatabaseSettings;

pub use error::{is_data_error, is_rolled_back, is_transient, Classified, ErrorClass, StoreError};

/// Migrations embedded in the binary: a deployment needs no files beside it.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Runs a whole transaction again, a few times, when it was rolled back as
/// [`is_rolled_back`]. Without this, a batch writer's deadlock failed every
/// command of its batch, and they waited out their leases (90 s) before
/// being resumed.
pub async fn retry_transient<F, Fut, T, E>(mut run: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: Classified + std::fmt::Display,
{
    let mut retries = 0u64;
    loop {
        match run().await {
            Err(error) if is_rolled_back(&error) && retries < 4 => {
                retries += 1;
                tracing::debug!(%error, retries, "transaction rolled back; running it again");
                tokio::time::sleep(Duration::from_millis(5 * retries)).await;
            }
            other => return other,
        }
    }
}

/// How the worker's sessions plan their statements.
///
/// Every statement the worker runs is driven by a handful of keys (a batch
/// of command ids, one payment, one lease owner), so the right plan is always
/// the same: nested loops of index lookups. PostgreSQL re-planned the larger
/// batched statements on every execution (0.3 ms each, three on a command's
/// path: most of a millisecond of latency at low load), because a plan for
/// the actual parameters always looks cheaper than a generic one. A generic
/// plan is made once per connection and statement (and again after ANALYZE),
/// but one made on a fresh or small table uses sequential scans and hash
/// joins, which then scan every row of a table grown to millions. So the
/// worker's sessions use generic plans and rule out the plan shapes that only
/// pay on small tables. `tests/plans.rs` checks every statement of a
/// command's path on a fresh database. The operator commands (`list`, `show`)
/// have their own connections and keep PostgreSQL's defaults.
pub const SESSION_SETTINGS: [(&str, &str); 4] = [
    ("plan_cache_mode", "force_generic_plan"),
    ("enable_seqscan", "off"),
    ("enable_hashjoin", "off"),
    ("enable_mergejoin", "off"),
];

/// The `statement_timeout` of the worker's sessions, in PostgreSQL's syntax
/// (milliseconds). A statement stuck behind a lock or a runaway plan fails
/// after this instead of holding a connection, a batch and its deliveries
/// for ever; its failure is transient (SQLSTATE 57014) and retried.
pub fn statement_timeout_setting(timeout: Duration) -> (&'static str, String) {
    ("statement_timeout", timeout.as_millis().to_string())
}

/// The connection options for a database URL, with the TLS choice made
/// when the URL (or `$PGSSLMODE`) does not make it.
///
/// PostgreSQL's and sqlx's default, `sslmode=prefer`, encrypts whenever the
/// server offers TLS but verifies nothing: on loopback it protects nothing
/// (the traffic never leaves the machine) and costs CPU on both sides for
/// every round trip; to a remote server it can be intercepted by anyone who
/// can answer in the server's place. So, unless `sslmode` is given:
/// - a loopback host (`localhost`, `127.0.0.0/8`, `::1`) or a Unix socket
///   directory: `disable`;
/// - any other host: `verify-full` (the certificate must be valid for that
///   host name, from the system's roots or `sslrootcert`).
///
/// `sslmode` in the URL always wins (e.g. `disable` inside a private
/// container network, `require` to keep the old unverified encryption).
pub fn connect_options(url: &str) -> Result<PgConnectOptions, sqlx::Error> {
    let options = PgConnectOptions::from_str(url)?;
    let explicit = url::Url::parse(url)
        .map(|u| u.query_pairs().any(|(k, _)| k == "sslmode"))
        .unwrap_or(true)
        || std::env::var_os("PGSSLMODE").is_some_and(|v| !v.is_empty());
    if explicit {
        return Ok(options);
    }
    let mode = if is_local(options.get_host()) {
        PgSslMode::Disable
    } else {
        PgSslMode::VerifyFull
    };
    Ok(options.ssl_mode(mode))
}

/// Whether a PostgreSQL host is this machine: a loopback name or address,
/// or a Unix socket directory.
pub fn is_local(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.starts_with('/')
        || host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A pooled connection idle longer than this is pinged before it is used.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    /// Opens a pool. Connections are made lazily, so the worker can start (and
    /// report itself not ready) while the database is still down.
    pub fn connect_lazy(settings: &DatabaseSettings) -> Result<Store, StoreError> {
        let options = connect_options(settings.url.expose_secret())?
            .log_statements(tracing::log::LevelFilter::Trace)
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(2))
            .options(SESSION_SETTINGS)
            .options([statement_timeout_setting(settings.statement_timeout)]);
        // sqlx pings every connection it hands out by default: one extra round
        // trip per acquire, 5 % of the worker's CPU under load. A connection
        // in use moments ago is known good; one idle for a while may have been
        // cut (database restart, proxy), so only that one is pinged.
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for > IDLE_BEFORE_PING {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect_lazy_with(options);
        Ok(Store { pool })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies pending migrations. Safe to run from several instances at once.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        MIGRATOR.run(&self.pool).await
    }

    /// Whether the database answers and every embedded migration is applied.
    pub async fn ready(&self) -> Result<(), StoreError> {
        let applied: i64 =
            sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
                .fetch_one(&self.pool)
                .await?;
        let expected = MIGRATOR.iter().count() as i64;
        if applied < expected {
            return Err(StoreError::NotMigrated { applied, expected });
        }
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Creates the database named in `url` when it does not exist yet, by connecting
/// to the server's `postgres` database. Used by `--sandbox`, `migrate` and tests.
pub async fn ensure_database(url: &str) -> Result<(), StoreError> {
    let options = connect_options(url)?;
    let name = options.get_database().unwrap_or("postgres").to_string();
    let mut admin = options.clone().database("postgres").connect().await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await?;
    if !exists {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        match sqlx::query(&format!("CREATE DATABASE {quoted}"))
            .execute(&mut admin)
            .await
        {
            Ok(_) => tracing::info!(database = %name, "created database"),
            // Another instance created it between our check and our create.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(e.into()),
        }
    }
    admin.close().await?;
    Ok(())
}

/// The durable figures the metrics report, read in one round trip. Abandoned
/// events are counted apart: they will not be published, so they are not a
/// backlog that drains.
pub async fn durable_figures(pool: &PgPool) -> Result<crate::metrics::Durable, StoreError> {
    let (unknown_open, outbox_backlog, oldest, abandoned, dead): (i64, i64, f64, i64, i64) =
        sqlx::query_as(
            "SELECT (SELECT count(*) FROM commands WHERE state = 'unsettled'),
                    (SELECT count(*) FROM outbox WHERE published_at IS NULL AND abandoned_at IS NULL),
                    COALESCE((SELECT EXTRACT(EPOCH FROM now() - min(created_at))::float8 FROM outbox
                              WHERE published_at IS NULL AND abandoned_at IS NULL), 0),
                    (SELECT count(*) FROM outbox WHERE abandoned_at IS NOT NULL),
                    (SELECT count(*) FROM dead_letters WHERE requeued_at IS NULL)",
        )
        .fetch_one(pool)
        .await?;
    Ok(crate::metrics::Durable {
        unknown_open,
        outbox_backlog,
        outbox_oldest_age: Duration::from_secs_f64(oldest.max(0.0)),
        outbox_abandoned: abandoned,
        dead_letters_waiting: dead,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(url: &str) -> String {
        format!("{:?}", connect_options(url).unwrap().get_ssl_mode())
    }

    #[test]
    fn tls_only_where_it_protects_something_unless_the_url_says() {
        if std::env::var_os("PGSSLMODE").is_some() {
            return; // the environment makes the choice
        }
        assert_eq!(mode("postgres://u@127.0.0.1:5432/db"), "Disable");
        assert_eq!(mode("postgres://u@localhost/db"), "Disable");
        assert_eq!(mode("postgres://u@[::1]:5432/db"), "Disable");
        assert_eq!(mode("postgres://u@db.internal:5432/db"), "VerifyFull");
        assert_eq!(mode("postgres://u@10.0.0.5/db"), "VerifyFull");
        assert_eq!(
            mode("postgres://u@db.internal/db?sslmode=require"),
            "Require"
        );
        assert_eq!(mode("postgres://u@127.0.0.1/db?sslmode=prefer"), "Prefer");
        assert_eq!(
            mode("postgres://u@postgres:5432/db?sslmode=disable"),
            "Disable"
        );
        assert!(is_local("/var/run/postgresql"));
    }
}
