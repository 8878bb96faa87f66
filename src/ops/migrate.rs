//! `backoffice-worker migrate`: creates the worker's database when it does not
//! exist, applies the migrations embedded in this binary, and says what it did.
//!
//! The worker applies them at start-up as well; this is for deployments that
//! prepare the database first (or whose worker role may not create databases).
//! It is safe to run at any time and from several places at once: sqlx takes
//! an advisory lock, and applied migrations are skipped.

use std::path::PathBuf;

use secrecy::ExposeSecret;
use sqlx::{ConnectOptions, PgConnection};

use super::{database_options, database_target, OpsError, CONNECT_TIMEOUT};
use crate::store::{self, reports, MIGRATOR};

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:
  backoffice-worker migrate --config /etc/backoffice/backoffice.toml
  DATABASE_URL=postgres://admin@db:5432/backoffice backoffice-worker migrate

Exit status: 0 when the database is up to date, 1 otherwise.")]
pub struct MigrateArgs {
    /// The configuration file (default: $BACKOFFICE_CONFIG, then ./backoffice.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address the sandbox's own database and queues, as `run --sandbox` uses them.
    #[arg(long)]
    pub sandbox: bool,
}

pub async fn run(args: &MigrateArgs) -> Result<i32, OpsError> {
    let config = super::load_config(args.config.as_deref(), args.sandbox)?;
    let options = database_options(&config)?;
    let target = database_target(&options);
    let unreachable = |reason: String| OpsError::DatabaseUnreachable {
        target: target.clone(),
        reason,
    };
    let connect = || async {
        match tokio::time::timeout(CONNECT_TIMEOUT, options.connect()).await {
            Ok(result) => result,
            Err(_) => Err(sqlx::Error::PoolTimedOut),
        }
    };
    let (mut conn, created): (PgConnection, bool) = match connect().await {
        Ok(conn) => (conn, false),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("3D000") => {
            store::ensure_database(config.database.url.expose_secret())
                .await
                .map_err(|e| unreachable(format!("cannot create it: {e}")))?;
            (
                connect().await.map_err(|e| unreachable(e.to_string()))?,
                true,
            )
        }
        Err(sqlx::Error::PoolTimedOut) => {
            return Err(unreachable(format!("no answer within {CONNECT_TIMEOUT:?}")))
        }
        Err(e) => return Err(unreachable(e.to_string())),
    };
    println!(
        "database {target}: {}",
        if created { "created" } else { "exists" }
    );
    let before = reports::applied_migrations(&mut conn).await?;
    MIGRATOR.run(&mut conn).await?;
    let after = reports::applied_migrations(&mut conn).await?;
    let mut applied = 0;
    for migration in MIGRATOR.iter() {
        if after.contains(&migration.version) && !before.contains(&migration.version) {
            println!("applied {} {}", migration.version, migration.description);
            applied += 1;
        }
    }
    let total = MIGRATOR.iter().count();
    if applied == 0 {
        println!("nothing to apply: all {total} migrations were already applied");
    } else {
        println!(
            "{applied} migration{} applied; {} of {total} applied in all",
            if applied == 1 { "" } else { "s" },
            after.len()
        );
    }
    Ok(0)
}
