//! Intake's one-statement fast path (`store::commands::intake_new`, the
//! function `intake_new_commands`) against the real PostgreSQL: what it
//! writes for a batch of new commands, and that it writes nothing at all
//! when an id of the batch exists, even one stored while it runs.

use crate::common;

use std::time::Duration;

use backoffice_worker::store::commands::{self, Intent, NewCommand, PaymentClaim};
use common::{new_command, payment_claim, TestEnv};
use sqlx::{Connection, PgPool};
use uuid::Uuid;

const LEASE: Duration = Duration::from_secs(60);
const RECHECK: Duration = Duration::from_secs(1);

fn intent(id: &str) -> Intent<'_> {
    Intent {
        command_id: id,
        before_snapshot: None,
        purpose: "capture",
    }
}

/// Another worker: the same in every database, so that two databases
/// written alike compare equal.
const ELSEWHERE: Uuid = Uuid::from_u128(0xe15e_e4e2e);

/// A payment held by another worker's command, `c`'s in [`batch`].
async fn busy_payment(pool: &PgPool) {
    sqlx::query(
        "INSERT INTO payment_leases VALUES ('paymentz', 'busy', 'elsewhere', $1, now() + interval '1 min')",
    )
    .bind(ELSEWHERE)
    .execute(pool)
    .await
    .unwrap();
}

/// a: free payment, calls at once; b: same payment as a, waits;
/// c: busy payment ([`busy_payment`]), waits; d: free, but needs a
/// before-snapshot first. Their rows, their claims, and the intents of
/// those that need no snapshot.
fn batch() -> ([NewCommand; 4], [PaymentClaim; 3], [Intent<'static>; 3]) {
    (
        [
            new_command("a", "p1"),
            new_command("b", "p1"),
            new_command("c", "busy"),
            new_command("d", "p2"),
        ],
        [
            payment_claim("a", "p1"),
            payment_claim("c", "busy"),
            payment_claim("d", "p2"),
        ],
        [intent("a"), intent("b"), intent("c")],
    )
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_new_commands_is_leased_claimed_and_recorded_in_one_statement() {
    let env = TestEnv::new("intake-one").await;
    let owner = Uuid::new_v4();
    busy_payment(&env.pool).await;
    let (rows, claims, intents) = batch();
    let rows: Vec<&NewCommand> = rows.iter().collect();
    let mut conn = env.pool.acquire().await.unwrap();
    let taken = commands::intake_new(&mut conn, &rows, owner, LEASE, RECHECK, &claims, &intents)
        .await
        .unwrap()
        .expect("all new: taken");
    drop(conn);

    assert_eq!(taken.len(), 4);
    assert!(taken["a"].granted && taken["d"].granted);
    assert!(!taken["b"].granted && !taken["c"].granted);
    assert_eq!(taken["a"].started.map(|s| s.0), Some(1));
    assert_eq!(
        taken["d"].started, None,
        "no recovery point without its snapshot"
    );
    assert_eq!(taken["b"].started, None, "not granted: no recovery point");

    let states: Vec<(String, String, String, i32, Option<Uuid>, bool)> = sqlx::query_as(
        "SELECT id, state, phase, attempts, lease_owner, next_run_at > now() FROM commands ORDER BY id",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    let running = |id: &str, phase: &str, attempts| {
        (
            id.into(),
            "running".into(),
            phase.into(),
            attempts,
            Some(owner),
            false,
        )
    };
    let queued = |id: &str| (id.into(), "queued".into(), "ready".into(), 0, None, true);
    assert_eq!(
        states,
        vec![
            running("a", "calling", 1),
            queued("b"),
            queued("c"),
            running("d", "ready", 0)
        ]
    );
    let in_flight: (String, i32, i64) = sqlx::query_as(
        "SELECT command_id, attempt_no, id FROM attempts WHERE status = 'in_flight' AND kind = 'operation'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(in_flight, ("a".into(), 1, taken["a"].started.unwrap().1));
    let leases: Vec<(String, String)> =
        sqlx::query_as("SELECT payment_key, command_id FROM payment_leases ORDER BY payment_key")
            .fetch_all(&env.pool)
            .await
            .unwrap();
    let lease = |k: &str, c: &str| (k.to_string(), c.to_string());
    assert_eq!(
        leases,
        vec![
            lease("busy", "elsewhere"),
            lease("p1", "a"),
            lease("p2", "d")
        ]
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_an_existing_id_writes_nothing() {
    let env = TestEnv::new("intake-one-dup").await;
    let owner = Uuid::new_v4();
    let old = new_command("old", "p0");
    let mut conn = env.pool.acquire().await.unwrap();
    assert!(commands::insert(&mut conn, &old, None).await.unwrap());
    let rows = [new_command("new", "p1"), new_command("old", "p0")];
    let rows: Vec<&NewCommand> = rows.iter().collect();
    let claims = [payment_claim("new", "p1"), payment_claim("old", "p0")];
    let intents = [intent("new"), intent("old")];
    let taken = commands::intake_new(&mut conn, &rows, owner, LEASE, RECHECK, &claims, &intents)
        .await
        .unwrap();
    drop(conn);
    assert!(taken.is_none(), "{taken:?}");
    assert_eq!(count(&env.pool, "SELECT count(*) FROM commands").await, 1);
    assert_eq!(
        count(&env.pool, "SELECT count(*) FROM payment_leases").await,
        0
    );
    assert_eq!(count(&env.pool, "SELECT count(*) FROM attempts").await, 0);
    env.cleanup().await;
}

/// Returns once a call of the function in this test's database waits for
/// a lock another transaction holds.
async fn until_the_function_waits(pool: &PgPool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while count(
        pool,
        "SELECT count(*) FROM pg_stat_activity
          WHERE datname = current_database() AND wait_event_type = 'Lock'
            AND query LIKE '%intake_new_commands%'",
    )
    .await
        == 0
    {
        assert!(tokio::time::Instant::now() < deadline, "never waited");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The id is inserted by another transaction after the function's check:
/// its insert waits for that transaction, skips the row once it commits,
/// and the whole statement is undone (leases included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_stored_meanwhile_undoes_the_whole_statement() {
    let env = TestEnv::new("intake-one-race").await;
    let owner = Uuid::new_v4();
    let mut other = env.pool.acquire().await.unwrap();
    let mut tx = other.begin().await.unwrap();
    assert!(commands::insert(&mut tx, &new_command("x", "p9"), None)
        .await
        .unwrap());

    let pool = env.pool.clone();
    let racing = tokio::spawn(async move {
        let mut conn = pool.acquire().await.unwrap();
        let rows = [new_command("y", "p1"), new_command("x", "p2")];
        let rows: Vec<&NewCommand> = rows.iter().collect();
        let claims = [payment_claim("y", "p1"), payment_claim("x", "p2")];
        let intents = [intent("y"), intent("x")];
        commands::intake_new(&mut conn, &rows, owner, LEASE, RECHECK, &claims, &intents).await
    });
    // Commit only once the function waits on the uncommitted row.
    until_the_function_waits(&env.pool).await;
    tx.commit().await.unwrap();
    let taken = racing.await.unwrap().unwrap();
    assert!(taken.is_none(), "{taken:?}");
    assert_eq!(count(&env.pool, "SELECT count(*) FROM commands").await, 1);
    assert_eq!(
        count(&env.pool, "SELECT count(*) FROM payment_leases").await,
        0
    );
    drop(other);
    env.cleanup().await;
}

/// A producer's duplicate reaching two instances at once, one on each of
/// intake's paths. The slow path's transaction (`insert_many`, then
/// `claim_payments`) has inserted the id when the function, on the same id
/// and payment, starts. The function must wait on the id without holding
/// the payment's lease: it claimed the lease first until it was found in
/// the cluster failover's logs, and PostgreSQL broke the cycle after
/// `deadlock_timeout`, failing one of the two batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_two_intake_paths_on_one_id_wait_in_one_order() {
    let env = TestEnv::new("intake-one-order").await;
    let (fast_owner, slow_owner) = (Uuid::new_v4(), Uuid::new_v4());
    let mut slow = env.pool.begin().await.unwrap();
    let inserted = commands::insert_many(&mut slow, &[&new_command("x", "p")], slow_owner, LEASE)
        .await
        .unwrap();
    assert!(inserted.contains("x"));

    let pool = env.pool.clone();
    let fast = tokio::spawn(async move {
        let mut conn = pool.acquire().await.unwrap();
        let row = new_command("x", "p");
        let claims = [payment_claim("x", "p")];
        commands::intake_new(
            &mut conn,
            &[&row],
            fast_owner,
            LEASE,
            RECHECK,
            &claims,
            &[intent("x")],
        )
        .await
    });
    until_the_function_waits(&env.pool).await;
    let granted =
        commands::claim_payments(&mut slow, &[payment_claim("x", "p")], slow_owner, LEASE)
            .await
            .expect("the slow path's claim failed (a deadlock's victim?)");
    assert!(granted.contains("x"), "{granted:?}");
    slow.commit().await.unwrap();
    let taken = fast
        .await
        .unwrap()
        .expect("the function failed (a deadlock's victim?)");
    assert!(taken.is_none(), "the id was stored meanwhile: {taken:?}");

    let held: Vec<(String, Uuid)> = sqlx::query_as(
        "SELECT command_id, owner FROM payment_leases
          UNION ALL SELECT id, lease_owner FROM commands",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(
        held,
        vec![("x".into(), slow_owner), ("x".into(), slow_owner)]
    );
    env.cleanup().await;
}

/// The worker's sessions use generic plans (`store::SESSION_SETTINGS`), the
/// function's statements included: made on an empty table, none may be a
/// sequential scan, which would read every row once the table has grown.
/// (Counted in the transaction's own statistics: `EXPLAIN` cannot see inside
/// a function.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn its_plans_made_on_an_empty_database_scan_no_table() {
    let env = TestEnv::new("intake-one-plans").await;
    let store = env.single_connection_store();
    let mut conn = store.pool().acquire().await.unwrap();
    let owner = Uuid::new_v4();
    for round in 0..3 {
        let ids = [format!("a{round}"), format!("b{round}")];
        let rows = [new_command(&ids[0], "p"), new_command(&ids[1], &ids[1])];
        let rows: Vec<&NewCommand> = rows.iter().collect();
        let claims = [payment_claim(&ids[0], "p"), payment_claim(&ids[1], &ids[1])];
        let intents = [intent(&ids[0]), intent(&ids[1])];
        let mut tx = conn.begin().await.unwrap();
        let taken = commands::intake_new(&mut tx, &rows, owner, LEASE, RECHECK, &claims, &intents)
            .await
            .unwrap();
        assert_eq!(taken.map(|t| t.len()), Some(2));
        let scans: i64 = sqlx::query_scalar(
            "SELECT COALESCE(sum(seq_scan), 0)::int8 FROM pg_stat_xact_user_tables
              WHERE relname IN ('commands', 'payment_leases', 'attempts')",
        )
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        assert_eq!(scans, 0, "round {round}: a sequential scan");
        tx.commit().await.unwrap();
    }
    drop(conn);
    store.close().await;
    env.cleanup().await;
}

/// Every row of `table` as JSON, timestamps (and `skip`) replaced by whether
/// they are unset, past or future: two databases written at different
/// moments compare equal when they were written alike.
async fn written(pool: &PgPool, table: &str, order: &str, skip: &[&str]) -> Vec<serde_json::Value> {
    let times: Vec<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns
          WHERE table_name = $1 AND table_schema = current_schema() AND data_type LIKE 'timestamp%'",
    )
    .bind(table)
    .fetch_all(pool)
    .await
    .unwrap();
    let dropped: Vec<String> = times
        .iter()
        .cloned()
        .chain(skip.iter().map(|s| s.to_string()))
        .collect();
    let flags: String = times
        .iter()
        .map(|c| {
            format!(", '{c}', CASE WHEN {c} IS NULL THEN 'unset' WHEN {c} > now() THEN 'future' ELSE 'past' END")
        })
        .collect();
    let sql = format!(
        "SELECT (to_jsonb(t) - $1::text[]) || jsonb_build_object('_', 0 {flags}) FROM {table} t ORDER BY {order}"
    );
    sqlx::query_scalar(&sql)
        .bind(&dropped)
        .fetch_all(pool)
        .await
        .unwrap()
}

/// The function writes a second time what the transaction it replaces
/// writes (`insert_many`, `claim_payments`, `defer_many`, `record_intents`):
/// the same batch through both, on two databases, leaves the same rows, so
/// a change to one path that is not made in the other fails here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_writes_exactly_what_the_transaction_it_replaces_writes() {
    let (one, two) = (
        TestEnv::new("intake-same-fn").await,
        TestEnv::new("intake-same-tx").await,
    );
    let owner = Uuid::new_v4();
    for env in [&one, &two] {
        busy_payment(&env.pool).await;
    }
    let (rows, claims, intents) = batch();
    let rows: Vec<&NewCommand> = rows.iter().collect();

    let mut conn = one.pool.acquire().await.unwrap();
    commands::intake_new(&mut conn, &rows, owner, LEASE, RECHECK, &claims, &intents)
        .await
        .unwrap()
        .expect("all new: taken");
    drop(conn);

    let mut tx = two.pool.begin().await.unwrap();
    commands::insert_many(&mut tx, &rows, owner, LEASE)
        .await
        .unwrap();
    let granted = commands::claim_payments(&mut tx, &claims, owner, LEASE)
        .await
        .unwrap();
    let deferred: Vec<String> = rows
        .iter()
        .map(|r| r.id.clone())
        .filter(|id| !granted.contains(id))
        .collect();
    commands::defer_many(&mut tx, &deferred, owner, RECHECK)
        .await
        .unwrap();
    let immediate: Vec<Intent<'_>> = intents
        .iter()
        .filter(|i| granted.contains(i.command_id))
        .map(|i| intent(i.command_id))
        .collect();
    commands::record_intents(&mut tx, owner, &immediate, &[])
        .await
        .unwrap();
    tx.commit().await.unwrap();

    for (table, order, skip) in [
        ("commands", "id", &[][..]),
        ("attempts", "command_id, attempt_no, kind", &["id"][..]),
        ("payment_leases", "gateway, payment_key", &[][..]),
    ] {
        let (by_function, by_transaction) = (
            written(&one.pool, table, order, skip).await,
            written(&two.pool, table, order, skip).await,
        );
        assert!(!by_function.is_empty(), "{table}: nothing written");
        assert_eq!(by_function, by_transaction, "{table} differs");
    }
    one.cleanup().await;
    two.cleanup().await;
}
