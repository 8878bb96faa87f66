//! What the worker's writes cost in index entries: the updates on every
//! command's path that must stay HOT (heap-only: no new entry in any index),
//! checked with PostgreSQL's own per-transaction counters.

use crate::common;

use std::time::Duration;

use backoffice_worker::store::attempts::{self, AttemptKind};
use backoffice_worker::store::commands::{self, Intent};
use common::TestEnv;
use sqlx::{Connection, PgConnection};

/// (updates, of which HOT) of `table` in the current transaction.
async fn updates(conn: &mut PgConnection, table: &str) -> (i64, i64) {
    sqlx::query_as(
        "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables WHERE relname = $1",
    )
    .bind(table)
    .fetch_one(conn)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operations_outcome_completes_its_attempt_row_as_a_hot_update() {
    let env = TestEnv::new("hotattempt").await;
    let store = env.single_connection_store();
    let mut conn = store.pool().acquire().await.unwrap();
    let owner = uuid::Uuid::new_v4();
    let lease = Duration::from_secs(60);

    let command = common::new_command("hot-1", "p1");
    let mut tx = conn.begin().await.unwrap();
    commands::insert_many(&mut tx, &[&command], owner, lease)
        .await
        .unwrap();
    commands::claim_payments(
        &mut tx,
        &[common::payment_claim("hot-1", "p1")],
        owner,
        lease,
    )
    .await
    .unwrap();
    let intent = Intent {
        command_id: "hot-1",
        before_snapshot: None,
        purpose: "capture",
    };
    let started = commands::record_intents(&mut tx, owner, &[intent], &[])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let (attempt_no, row) = started["hot-1"];
    let written: time::OffsetDateTime =
        sqlx::query_scalar("SELECT started_at FROM attempts WHERE id = $1")
            .bind(row)
            .fetch_one(&mut *conn)
            .await
            .unwrap();

    // The call went out a little after its recovery point was written.
    let sent = written + time::Duration::milliseconds(7);
    let mut exchange = common::exchange("CP");
    exchange.started_at = sent;
    let mut tx = conn.begin().await.unwrap();
    attempts::record(
        &mut tx,
        "hot-1",
        attempt_no,
        AttemptKind::Operation,
        Some(row),
        &[exchange],
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        updates(&mut tx, "attempts").await,
        (1, 1),
        "the outcome changes no indexed column of its attempt row"
    );
    tx.commit().await.unwrap();

    let (kept, sent_at): (time::OffsetDateTime, Option<time::OffsetDateTime>) =
        sqlx::query_as("SELECT started_at, sent_at FROM attempts WHERE id = $1")
            .bind(row)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    assert_eq!(kept, written, "started_at stays the recovery point's");
    assert_eq!(sent_at, Some(sent));
    let shown = attempts::for_command(&mut conn, "hot-1").await.unwrap();
    assert_eq!(shown.len(), 1);
    assert_eq!(
        shown[0].started_at, sent,
        "readers see when the call went out"
    );

    drop(conn);
    store.close().await;
    env.cleanup().await;
}
