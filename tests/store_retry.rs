//! A transaction the database rolls back for a deadlock is recognised and run
//! again, against a real deadlock in this test's own database.

use crate::common;

use std::sync::atomic::{AtomicU32, Ordering};

use backoffice_worker::store::{is_rolled_back, retry_transient, StoreError};
use common::TestEnv;
use sqlx::{Connection, PgPool};

/// Two transactions that lock two rows in opposite orders: PostgreSQL aborts
/// one of them with `deadlock detected`, which is returned.
async fn provoke_deadlock(pool: &PgPool) -> StoreError {
    let mut first = pool.acquire().await.unwrap();
    let mut second = pool.acquire().await.unwrap();
    let mut a = first.begin().await.unwrap();
    let mut b = second.begin().await.unwrap();
    sqlx::query("UPDATE deadlock_probe SET v = v + 1 WHERE id = 1")
        .execute(&mut *a)
        .await
        .unwrap();
    sqlx::query("UPDATE deadlock_probe SET v = v + 1 WHERE id = 2")
        .execute(&mut *b)
        .await
        .unwrap();
    let (x, y) = tokio::join!(
        sqlx::query("UPDATE deadlock_probe SET v = v + 1 WHERE id = 2").execute(&mut *a),
        sqlx::query("UPDATE deadlock_probe SET v = v + 1 WHERE id = 1").execute(&mut *b),
    );
    match (x, y) {
        (Err(error), Ok(_)) | (Ok(_), Err(error)) => error.into(),
        other => panic!("expected exactly one deadlock victim, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadlocked_transaction_is_recognised_and_run_again() {
    let env = TestEnv::new("deadlock").await;
    sqlx::query("CREATE TABLE deadlock_probe (id int PRIMARY KEY, v int NOT NULL)")
        .execute(&env.pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO deadlock_probe VALUES (1, 0), (2, 0)")
        .execute(&env.pool)
        .await
        .unwrap();

    let error = provoke_deadlock(&env.pool).await;
    assert!(is_rolled_back(&error), "{error:?}");
    let unique = sqlx::query("INSERT INTO deadlock_probe VALUES (1, 0)")
        .execute(&env.pool)
        .await
        .unwrap_err();
    assert!(!is_rolled_back(&unique), "a constraint is not retried");

    // The first run is the deadlock victim; the second succeeds.
    let runs = AtomicU32::new(0);
    let result = retry_transient(|| async {
        match runs.fetch_add(1, Ordering::SeqCst) {
            0 => Err(provoke_deadlock(&env.pool).await),
            n => Ok(n),
        }
    })
    .await;
    assert_eq!(result.unwrap(), 1);
    assert_eq!(runs.load(Ordering::SeqCst), 2);

    // A constraint violation is returned at once.
    let runs = AtomicU32::new(0);
    let result = retry_transient(|| async {
        runs.fetch_add(1, Ordering::SeqCst);
        sqlx::query("INSERT INTO deadlock_probe VALUES (2, 0)")
            .execute(&env.pool)
            .await
    })
    .await;
    assert!(result.is_err());
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    env.cleanup().await;
}
