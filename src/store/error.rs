//! The store's error, and what a caller may do about one: run the
//! transaction again, wait for the database, take a batch apart, or give up.
//!
//! Callers read the classification ([`is_rolled_back`], [`is_transient`],
//! [`is_data_error`]), never the message; the classification of what
//! PostgreSQL or the driver said is by SQLSTATE and driver error kind.

use std::sync::Arc;

/// An error of the store: what PostgreSQL or the driver said, or one of the
/// few things the store itself finds wrong.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// What PostgreSQL or the driver said.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// The database answers, but its schema is behind this binary's
    /// migrations: not ready (the worker, or another instance, is still
    /// applying them).
    #[error("{applied} of {expected} migrations applied")]
    NotMigrated { applied: i64, expected: i64 },
    /// A value the store wrote, read back in the transaction that holds its
    /// row, was not there. Final: nothing a retry would change.
    #[error("{0} is missing")]
    Missing(String),
    /// A value the store wrote does not read back as what it was. A data
    /// error, as a value PostgreSQL refuses is.
    #[error("{what} does not read back: {source}")]
    Unreadable {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    /// A batch writer is gone (shutting down): transient, as a closed pool is.
    #[error("the batch writer has stopped")]
    WriterStopped,
    /// The batch this write was part of failed. Final whatever the cause: the
    /// writer already ran the batch again when that was worth it
    /// ([`super::retry_transient`]), and the batch may have failed for
    /// another item's data.
    #[error("batched write failed: {0}")]
    Batch(Arc<StoreError>),
}

/// What a caller may do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The database rolled the transaction back for a deadlock or a
    /// serialization failure: nothing of it was written, running it again is
    /// safe.
    RolledBack,
    /// The database is unreachable or going away right now: worth waiting for.
    Transient,
    /// The statement can never succeed with this data.
    Data,
    /// A bug, a constraint of the server's resources, or anything else that
    /// waiting would not fix and that is not about the data.
    Final,
}

/// An error the store's classification reads: the store's own, or sqlx's
/// (`store::is_transient` on a migration's error).
pub trait Classified {
    fn class(&self) -> ErrorClass;
}

impl Classified for StoreError {
    fn class(&self) -> ErrorClass {
        match self {
            StoreError::Database(error) => error.class(),
            StoreError::Unreadable { .. } => ErrorClass::Data,
            StoreError::WriterStopped => ErrorClass::Transient,
            StoreError::NotMigrated { .. } | StoreError::Missing(_) | StoreError::Batch(_) => {
                ErrorClass::Final
            }
        }
    }
}

impl Classified for sqlx::Error {
    fn class(&self) -> ErrorClass {
        match self {
            sqlx::Error::Database(e) => {
                let code = e.code();
                match code.as_deref() {
                    Some("40P01" | "40001") => ErrorClass::RolledBack,
                    Some(c) if c.starts_with("08") || c.starts_with("57P") => ErrorClass::Transient,
                    None => ErrorClass::Final,
                    // 08 connection, 40 rollback, 53 resources, 55 object
                    // state (locks), 57 operator intervention (shutdown,
                    // statement timeout), 58 system, XX internal: none is
                    // about the data.
                    Some(c) => match c.get(..2).unwrap_or(c) {
                        "08" | "40" | "53" | "55" | "57" | "58" | "XX" => ErrorClass::Final,
                        _ => ErrorClass::Data,
                    },
                }
            }
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Tls(_) => ErrorClass::Transient,
            sqlx::Error::Encode(_) | sqlx::Error::Decode(_) | sqlx::Error::ColumnDecode { .. } => {
                ErrorClass::Data
            }
            _ => ErrorClass::Final,
        }
    }
}

/// Whether the database rolled a transaction back for a deadlock or a
/// serialization failure: nothing of it was written, and running it again
/// is safe. (Intake locks a running command to count a duplicate while a
/// batch writer holds it for a foreign-key check, and the other way round.)
pub fn is_rolled_back(error: &impl Classified) -> bool {
    error.class() == ErrorClass::RolledBack
}

/// Whether an error means the database is unreachable right now (worth waiting
/// for) rather than a bug or a constraint. A rolled-back transaction is
/// transient too.
pub fn is_transient(error: &impl Classified) -> bool {
    matches!(
        error.class(),
        ErrorClass::RolledBack | ErrorClass::Transient
    )
}

/// Whether an error says that the statement can never succeed with this
/// data (a value PostgreSQL refuses, a row too large for an index, a
/// constraint), as opposed to a database that is away, busy or shutting
/// down, or a transaction rolled back for a deadlock: those are transient
/// and worth waiting for. Intake takes a batch that failed for its data
/// apart, one delivery at a time, so that one bad message cannot hold up the
/// rest; retrying it unchanged would fail forever.
pub fn is_data_error(error: &impl Classified) -> bool {
    error.class() == ErrorClass::Data
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The store's own errors classify as the `sqlx::Error`s they replace
    /// (`PoolClosed`, `Decode`, `RowNotFound`, `Protocol`) did.
    #[test]
    fn the_stores_own_errors_classify_as_the_sqlx_errors_they_replace() {
        let unreadable = StoreError::Unreadable {
            what: "a result".into(),
            source: serde_json::from_str::<u8>("x").unwrap_err(),
        };
        assert!(is_transient(&StoreError::WriterStopped));
        assert!(is_transient(&sqlx::Error::PoolClosed));
        assert!(is_data_error(&unreadable));
        assert!(is_data_error(&sqlx::Error::Decode("x".into())));
        for last in [
            StoreError::Missing("a result".into()),
            StoreError::NotMigrated {
                applied: 1,
                expected: 2,
            },
            StoreError::Batch(Arc::new(StoreError::WriterStopped)),
            StoreError::Database(sqlx::Error::RowNotFound),
        ] {
            assert_eq!(last.class(), ErrorClass::Final, "{last}");
            assert!(!is_transient(&last) && !is_data_error(&last));
        }
        assert_eq!(
            StoreError::Batch(Arc::new(StoreError::WriterStopped)).to_string(),
            "batched write failed: the batch writer has stopped"
        );
    }
}
