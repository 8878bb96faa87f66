//! The batch writers (completion, intent) write up to two batches at once,
//! against the real PostgreSQL: a batch held up (here by a row lock the test
//! takes on one of its commands) does not hold up the next commands, and
//! batches written concurrently neither lose nor double an outcome, an event
//! or an attempt, nor deadlock when they release payments others wait for.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use backoffice_worker::events::ResultEvent;
use backoffice_worker::metrics::Metrics;
use backoffice_worker::outcome::Outcome;
use backoffice_worker::pipeline::completion::{Committed, Completer, Conclusion};
use backoffice_worker::pipeline::intent::{Intents, RecoveryPoint};
use backoffice_worker::pipeline::relay;
use backoffice_worker::store::commands::{self, Decision, NewCommand, PaymentClaim};
use backoffice_worker::store::Store;
use common::{new_command, payment_claim, TestEnv};
use sqlx::PgPool;
use tokio::sync::Notify;
use uuid::Uuid;

const LEASE: Duration = Duration::from_secs(60);
const RECHECK: Duration = Duration::from_secs(60);
/// Long enough for a commit on a busy machine; a batch that waited for
/// the held one would wait until the test gave up its lock.
const PATIENCE: Duration = Duration::from_secs(20);

/// Two running commands, `a` on payment `pay-a` and `b` on `pay-b`.
async fn stored_a_and_b(pool: &PgPool, owner: Uuid) {
    let commands: Vec<(String, String)> = ["a", "b"]
        .iter()
        .map(|id| (id.to_string(), format!("pay-{id}")))
        .collect();
    stored(pool, owner, &commands).await;
}

/// Stores `(id, payment)` commands as intake does, leased to `owner`: the
/// first command of each payment holds its lease and runs, the others wait
/// for it (queued until the recheck delay, or until it is released).
async fn stored(pool: &PgPool, owner: Uuid, commands: &[(String, String)]) {
    let rows: Vec<NewCommand> = commands.iter().map(|(id, p)| new_command(id, p)).collect();
    let refs: Vec<&NewCommand> = rows.iter().collect();
    let mut seen = std::collections::HashSet::new();
    let claims: Vec<PaymentClaim> = commands
        .iter()
        .filter(|(_, p)| seen.insert(p.clone()))
        .map(|(id, p)| payment_claim(id, p))
        .collect();
    let mut conn = pool.acquire().await.unwrap();
    let taken = commands::intake_new(&mut conn, &refs, owner, LEASE, RECHECK, &claims, &[])
        .await
        .unwrap()
        .expect("new ids");
    assert_eq!(taken.len(), commands.len());
}

fn conclusion(id: &str, payment: &str) -> Conclusion {
    let event = ResultEvent {
        command_id: id.into(),
        gateway: Some("paymentz".into()),
        account: Some("default".into()),
        operation: Some("capture".into()),
        payment_id: Some(payment.into()),
        outcome: Outcome::Succeeded,
        reason: None,
        amount: Some("1.00".into()),
        currency: Some("EUR".into()),
        gateway_status: None,
        gateway_code: None,
        description: None,
        reference: None,
        attempts: 1,
        replayed: false,
        reconciled: false,
        response: serde_json::json!({}),
        metadata: None,
        origin: None,
        occurred_at: backoffice_worker::events::now_rfc3339(),
    };
    Conclusion {
        decision: Decision {
            id: id.into(),
            outcome: "succeeded".into(),
            reason: None,
            result: serde_json::to_string(&event).unwrap(),
            reconcile_in: None,
        },
        event,
        claim: payment_claim(id, payment),
        recording: None,
        reply_to: None,
        reply_correlation_id: None,
    }
}

fn completer(store: Store, owner: Uuid) -> (Completer, relay::HandoverReceiver) {
    let (fresh, events) = relay::handover(100_000, Arc::new(Metrics::new()));
    let completer = Completer::start(
        store,
        owner,
        "results".into(),
        fresh,
        Arc::new(Notify::new()),
    );
    (completer, events)
}

/// Takes `id`'s row lock in a transaction of the test's own, as another
/// writer's long statement would hold it.
async fn hold(pool: &PgPool, id: &str) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM commands WHERE id = $1 FOR UPDATE")
        .bind(id)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx
}

/// Whether a statement of another session waits for a lock now.
async fn a_write_waits_for_a_lock(pool: &PgPool) -> bool {
    count(
        pool,
        "SELECT count(*) FROM pg_stat_activity
          WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .await
        > 0
}

/// Waits until a statement of another session waits for a row lock: the
/// held batch's write has started and is stuck behind the test's lock.
async fn until_a_write_waits_for_a_lock(pool: &PgPool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !a_write_waits_for_a_lock(pool).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the held batch never reached the database"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// Rows of a name and a yes/no, as the lock tests read what was renewed or
/// woken.
async fn flags(pool: &PgPool, sql: &str) -> Vec<(String, bool)> {
    sqlx::query_as(sql).fetch_all(pool).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_batch_commits_while_another_is_held_up() {
    let env = TestEnv::new("two-completions").await;
    let owner = Uuid::new_v4();
    stored_a_and_b(&env.pool, owner).await;
    let (completer, _events) = completer(env.store(8), owner);

    let held = hold(&env.pool, "a").await;
    let first = tokio::spawn({
        let completer = completer.clone();
        async move { completer.commit(conclusion("a", "pay-a")).await }
    });
    until_a_write_waits_for_a_lock(&env.pool).await;

    // With one write at a time, b would wait for a's write, which waits
    // for the test.
    let second = tokio::time::timeout(PATIENCE, completer.commit(conclusion("b", "pay-b")))
        .await
        .expect("b is committed while a's batch is held up")
        .unwrap();
    assert_eq!(second, Committed::Decided { replays: 0 });
    assert!(
        !first.is_finished(),
        "a cannot commit while its row is held"
    );
    let decided = "SELECT count(*) FROM commands WHERE outcome IS NOT NULL";
    assert_eq!(count(&env.pool, decided).await, 1);

    held.rollback().await.unwrap();
    let first = tokio::time::timeout(PATIENCE, first)
        .await
        .expect("a is committed once its row is free")
        .unwrap()
        .unwrap();
    assert_eq!(first, Committed::Decided { replays: 0 });
    assert_eq!(count(&env.pool, decided).await, 2);
    assert_eq!(count(&env.pool, "SELECT count(*) FROM outbox").await, 2);
    assert_eq!(
        count(&env.pool, "SELECT count(*) FROM payment_leases").await,
        0
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intent_batch_commits_while_another_is_held_up() {
    let env = TestEnv::new("two-intents").await;
    let owner = Uuid::new_v4();
    stored_a_and_b(&env.pool, owner).await;
    let intents = Intents::start(env.store(8), owner);
    let point = |id: &str| RecoveryPoint {
        command_id: id.into(),
        purpose: "capture",
        before_snapshot: Some(serde_json::json!({"status": "authorized"})),
        inquiry: None,
    };

    let held = hold(&env.pool, "a").await;
    let first = tokio::spawn({
        let intents = intents.clone();
        let point = point("a");
        async move { intents.record(point).await }
    });
    until_a_write_waits_for_a_lock(&env.pool).await;

    let second = tokio::time::timeout(PATIENCE, intents.record(point("b")))
        .await
        .expect("b's recovery point is committed while a's batch is held up")
        .unwrap();
    assert_eq!(second.map(|(attempt, _)| attempt), Some(1));
    assert!(
        !first.is_finished(),
        "a cannot commit while its row is held"
    );

    held.rollback().await.unwrap();
    let first = tokio::time::timeout(PATIENCE, first)
        .await
        .expect("a's recovery point is committed once its row is free")
        .unwrap()
        .unwrap();
    assert_eq!(first.map(|(attempt, _)| attempt), Some(1));
    let calling = "SELECT count(*) FROM commands WHERE phase = 'calling' AND attempts = 1";
    assert_eq!(count(&env.pool, calling).await, 2);
    let in_flight = "SELECT count(*) FROM attempts WHERE status = 'in_flight' AND attempt_no = 1";
    assert_eq!(count(&env.pool, in_flight).await, 2);
    env.cleanup().await;
}

/// Many executors concluding at once, as under load: batches are written
/// two at a time, each releasing payments that other commands wait for.
/// Every outcome is committed once, with one event; every waiting command
/// is woken; and a conclusion submitted again changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_completion_batches_lose_and_double_nothing() {
    let env = TestEnv::new("completions-at-once").await;
    let owner = Uuid::new_v4();
    const PAYMENTS: usize = 120;
    // Per payment: a holder that runs, and a command waiting for it.
    let commands: Vec<(String, String)> = (0..PAYMENTS)
        .flat_map(|i| {
            let payment = format!("pay-{i:03}");
            [
                (format!("run-{i:03}"), payment.clone()),
                (format!("wait-{i:03}"), payment),
            ]
        })
        .collect();
    stored(&env.pool, owner, &commands).await;
    let waiting = "SELECT count(*) FROM commands WHERE state = 'queued' AND next_run_at > now()";
    assert_eq!(count(&env.pool, waiting).await, PAYMENTS as i64);
    let (completer, _events) = completer(env.store(8), owner);

    let conclude_all = || {
        let tasks: Vec<_> = (0..PAYMENTS)
            .map(|i| {
                let completer = completer.clone();
                tokio::spawn(async move {
                    let id = format!("run-{i:03}");
                    let payment = format!("pay-{i:03}");
                    completer.commit(conclusion(&id, &payment)).await
                })
            })
            .collect();
        async move {
            let mut results = Vec::new();
            for task in tasks {
                results.push(task.await.unwrap().unwrap());
            }
            results
        }
    };
    let results = conclude_all().await;
    assert!(results
        .iter()
        .all(|r| *r == Committed::Decided { replays: 0 }));
    // Every batch ran to its commit: the writes at most two at a time
    // shared commits (fewer outbox inserts than commands is not visible
    // here, but every row is).
    let events = "SELECT count(DISTINCT command_id) FROM outbox";
    assert_eq!(count(&env.pool, events).await, PAYMENTS as i64);
    assert_eq!(
        count(&env.pool, "SELECT count(*) FROM outbox").await,
        PAYMENTS as i64
    );
    let decided = "SELECT count(*) FROM commands WHERE outcome = 'succeeded' AND state = 'done'";
    assert_eq!(count(&env.pool, decided).await, PAYMENTS as i64);
    assert_eq!(
        count(&env.pool, "SELECT count(*) FROM payment_leases").await,
        0
    );
    assert_eq!(count(&env.pool, waiting).await, 0, "every waiter is woken");

    // Submitted again (a lease lost, a bug): nothing more is written.
    let again = conclude_all().await;
    assert!(again.iter().all(|r| *r == Committed::LeaseLost));
    assert_eq!(
        count(&env.pool, "SELECT count(*) FROM outbox").await,
        PAYMENTS as i64
    );
    env.cleanup().await;
}

/// A command waiting on a payment is locked by another transaction when the
/// payment's holder concludes: intake's, which locks a command it took in
/// a duplicate of, then claims the payment for a new command of its batch.
/// The conclusion must not wait for that lock after it has released the
/// payment, or the claim waits for the release while the release's wake
/// waits for the claim's transaction, and PostgreSQL fails one of them.
/// The locked waiter is left to its recheck instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conclusion_does_not_wait_for_a_locked_waiter_of_its_payment() {
    let env = TestEnv::new("conclude-locked-waiter").await;
    let owner = Uuid::new_v4();
    let on_pay = |id: &str| (id.to_string(), "pay".to_string());
    stored(&env.pool, owner, &[on_pay("run"), on_pay("wait")]).await;
    let (completer, _events) = completer(env.store(8), owner);

    let mut intake = hold(&env.pool, "wait").await;
    let concluded = tokio::spawn({
        let completer = completer.clone();
        async move { completer.commit(conclusion("run", "pay")).await }
    });
    // Either it is done, or it waits for the test's lock (the old wake).
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !concluded.is_finished() && !a_write_waits_for_a_lock(&env.pool).await {
        assert!(tokio::time::Instant::now() < deadline, "never concluded");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let other = Uuid::new_v4();
    let granted =
        commands::claim_payments(&mut intake, &[payment_claim("new", "pay")], other, LEASE)
            .await
            .expect("the claim is not the victim of a deadlock");
    assert!(
        granted.contains("new"),
        "the payment was released: {granted:?}"
    );
    intake.commit().await.unwrap();
    let concluded = tokio::time::timeout(PATIENCE, concluded)
        .await
        .expect("concluded")
        .unwrap()
        .unwrap();
    assert_eq!(concluded, Committed::Decided { replays: 0 });

    let waiter = "SELECT state, next_run_at > now() FROM commands WHERE id = 'wait'";
    assert_eq!(
        flags(&env.pool, waiter).await,
        [("queued".into(), true)],
        "left to its recheck"
    );
    env.cleanup().await;
}

/// `release_payment` (the executor's, reconciliation's and settlement's
/// release) wakes the commands waiting on the payment that it can lock at
/// once, and leaves one another transaction holds to its recheck, for the
/// reason above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_wakes_the_waiters_it_can_lock_and_skips_a_held_one() {
    let env = TestEnv::new("release-held-waiter").await;
    let owner = Uuid::new_v4();
    let on_pay = |id: &str| (id.to_string(), "pay".to_string());
    stored(
        &env.pool,
        owner,
        &[on_pay("run"), on_pay("held"), on_pay("free")],
    )
    .await;

    let held = hold(&env.pool, "held").await;
    let mut tx = env.pool.begin().await.unwrap();
    tokio::time::timeout(
        PATIENCE,
        commands::release_payment(&mut tx, "paymentz", "pay", "run"),
    )
    .await
    .expect("the release waited for the held waiter")
    .unwrap();
    tx.commit().await.unwrap();
    held.rollback().await.unwrap();

    let waiting = "SELECT id, next_run_at > now() FROM commands WHERE state = 'queued' ORDER BY id";
    assert_eq!(
        flags(&env.pool, waiting).await,
        vec![("free".into(), false), ("held".into(), true)],
        "free woken, held left to its recheck"
    );
    let leases = "SELECT count(*) FROM payment_leases";
    assert_eq!(count(&env.pool, leases).await, 0);
    env.cleanup().await;
}

/// The heartbeat renews every lease it can lock at once and skips a row
/// another transaction holds. It locks many rows in its plan's order, so
/// waiting would close a cycle with the batch writers, which lock theirs in
/// id order (cluster failover runs logged it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeat_skips_rows_another_transaction_holds() {
    let env = TestEnv::new("heartbeat-skips").await;
    let owner = Uuid::new_v4();
    stored_a_and_b(&env.pool, owner).await;
    for sql in [
        "UPDATE commands SET lease_until = now() + interval '1 second'",
        "UPDATE payment_leases SET expires_at = now() + interval '1 second'",
    ] {
        sqlx::query(sql).execute(&env.pool).await.unwrap();
    }
    let mut held = hold(&env.pool, "a").await;
    sqlx::query("SELECT 1 FROM payment_leases WHERE command_id = 'a' FOR UPDATE")
        .execute(&mut *held)
        .await
        .unwrap();

    let mut conn = env.pool.acquire().await.unwrap();
    let ids = ["a".to_string(), "b".to_string()];
    tokio::time::timeout(PATIENCE, commands::heartbeat(&mut conn, owner, &ids, LEASE))
        .await
        .expect("the heartbeat waited for the held rows")
        .unwrap();
    drop(conn);
    held.rollback().await.unwrap();

    let expected = vec![("a".to_string(), false), ("b".to_string(), true)];
    let commands =
        "SELECT id, lease_until > now() + interval '30 seconds' FROM commands ORDER BY id";
    assert_eq!(flags(&env.pool, commands).await, expected);
    let leases = "SELECT command_id, expires_at > now() + interval '30 seconds'
                    FROM payment_leases ORDER BY command_id";
    assert_eq!(flags(&env.pool, leases).await, expected);
    env.cleanup().await;
}
