//! The worker's statements keep plans of index lookups, whatever the size of
//! the tables when the plans were made.
//!
//! The worker's sessions use generic plans (`store::SESSION_SETTINGS`): made
//! once per connection, so one made on a fresh, empty database must not be a
//! sequential scan or a hash join that would later read every row of a table
//! grown to millions. This runs every statement of a command's path (and the
//! scheduler's and relay's) on a fresh database through the worker's own
//! store, then asks PostgreSQL for the plan each prepared statement would use
//! from now on. It runs a graceful stop's hand-back too: it once read the
//! whole `commands` table, which at 10,000,000 finished commands took
//! seconds at every stop.

use crate::common;

use std::time::Duration;

use backoffice_worker::store::attempts::{self, AttemptKind, Recording};
use backoffice_worker::store::commands::{self, Decision, Intent, Outgoing};
use backoffice_worker::store::outbox::{self, Staged};
use common::TestEnv;
use sqlx::{Connection, PgConnection};

const LEASE: Duration = Duration::from_secs(60);

/// What a command's life asks of the store, in the order the pipeline asks it.
async fn run_a_command_through(conn: &mut PgConnection, owner: uuid::Uuid) {
    let (a, b, c) = (
        common::new_command("plan-a", "p1"),
        common::new_command("plan-b", "p1"),
        common::new_command("plan-c", "p2"),
    );
    // Intake: insert, claim (b waits for a's payment), defer, recovery point.
    let mut tx = conn.begin().await.unwrap();
    let inserted = commands::insert_many(&mut tx, &[&a, &b, &c], owner, LEASE)
        .await
        .unwrap();
    assert_eq!(inserted.len(), 3);
    let granted = commands::claim_payments(
        &mut tx,
        &[
            common::payment_claim("plan-a", "p1"),
            common::payment_claim("plan-c", "p2"),
        ],
        owner,
        LEASE,
    )
    .await
    .unwrap();
    assert_eq!(granted.len(), 2);
    commands::defer_many(&mut tx, &["plan-b".into()], owner, LEASE)
        .await
        .unwrap();
    let started = commands::record_intents(
        &mut tx,
        owner,
        &[Intent {
            command_id: "plan-c",
            before_snapshot: None,
            purpose: "capture",
        }],
        &[],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    // A duplicate while running; the heartbeat; the intent writer (with a
    // before-snapshot inquiry recorded).
    let mut tx = conn.begin().await.unwrap();
    commands::lock_many(&mut tx, &["plan-a", "plan-x"])
        .await
        .unwrap();
    commands::lock(&mut tx, "plan-a").await.unwrap().unwrap();
    commands::add_pending_replay(&mut tx, "plan-a", Some("reply.q"), Some("corr"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    commands::heartbeat(conn, owner, &["plan-a".into(), "plan-c".into()], LEASE)
        .await
        .unwrap();
    let inquiry = Recording {
        command_id: "plan-a".into(),
        attempt_no: 1,
        kind: AttemptKind::Inquiry,
        in_flight_row: None,
        exchanges: vec![common::exchange("IN")],
        fallback_error: None,
    };
    let snapshot = serde_json::json!({"state": "authorized"});
    let intents = commands::record_intents(
        conn,
        owner,
        &[Intent {
            command_id: "plan-a",
            before_snapshot: Some(&snapshot),
            purpose: "capture",
        }],
        &[&inquiry],
    )
    .await
    .unwrap();
    attempts::record_many(conn, &[&inquiry]).await.unwrap();

    // Completion: attempts, decision (releasing p1 wakes b), replays, events.
    let recordings: Vec<Recording> = [("plan-a", &intents), ("plan-c", &started)]
        .into_iter()
        .map(|(id, rows)| {
            let (attempt_no, row) = rows[id];
            Recording {
                command_id: id.into(),
                attempt_no,
                kind: AttemptKind::Operation,
                in_flight_row: Some(row),
                exchanges: vec![common::exchange("CP")],
                fallback_error: None,
            }
        })
        .collect();
    let decisions: Vec<Decision> = ["plan-a", "plan-c"]
        .into_iter()
        .map(|id| Decision {
            id: id.into(),
            outcome: "succeeded".into(),
            reason: None,
            result: serde_json::json!({"id": id, "outcome": "succeeded"}).to_string(),
            reconcile_in: None,
        })
        .collect();
    let claims = [
        common::payment_claim("plan-a", "p1"),
        common::payment_claim("plan-c", "p2"),
    ];
    let events: Vec<Outgoing<'_>> = decisions
        .iter()
        .map(|_| Outgoing {
            message_id: uuid::Uuid::new_v4(),
            routing_key: "paymentz.capture.succeeded",
            reply_to: None,
            reply_correlation_id: None,
        })
        .collect();
    let mut tx = conn.begin().await.unwrap();
    let concluded = commands::conclude_many(
        &mut tx,
        owner,
        &decisions.iter().collect::<Vec<_>>(),
        &claims.iter().collect::<Vec<_>>(),
        &events,
        "events",
        Duration::from_secs(5),
        &recordings.iter().collect::<Vec<_>>(),
        commands::Replays::Decide,
    )
    .await
    .unwrap()
    .commands;
    assert_eq!(
        concluded["plan-a"].pending_replays, 1,
        "one pending replay counted"
    );
    let replays = commands::take_pending_replays(&mut tx, &["plan-a"])
        .await
        .unwrap();
    assert_eq!(replays.len(), 1);
    let replay = serde_json::json!({"replay": true}).to_string();
    let rows = outbox::enqueue_many(
        &mut tx,
        &[Staged {
            exchange: "events",
            command_id: "plan-a",
            routing_key: "paymentz.capture.succeeded".into(),
            body: &replay,
            reply_to: Some("reply.q"),
            reply_correlation_id: Some("corr"),
        }],
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    // The relay marks them published; the scheduler picks up the woken b.
    let mut ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
    ids.extend(concluded.values().filter_map(|c| c.outbox_row));
    assert_eq!(ids.len(), 3, "two events and one replay staged");
    outbox::mark_published(conn, &ids).await.unwrap();
    outbox::any_unpublished(conn).await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    outbox::lock_unpublished(&mut tx, 100).await.unwrap();
    tx.commit().await.unwrap();
    let due = commands::claim_due(conn, owner, LEASE, 10).await.unwrap();
    assert_eq!(
        due.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["plan-b"],
        "releasing p1 made the waiting command due"
    );
    assert!(
        !commands::wake_if_payment_free(conn, "plan-b", "paymentz", "p1")
            .await
            .unwrap(),
        "b is running now, not waiting"
    );

    // A graceful stop hands back what has not started calling.
    assert_eq!(
        commands::hand_back(conn, owner).await.unwrap(),
        1,
        "b handed back"
    );
}

/// The plan PostgreSQL would use for a prepared statement from now on. With
/// generic plans the parameter values do not matter, so all are NULL.
async fn plan_of(conn: &mut PgConnection, name: &str, params: i32) -> String {
    let args = vec!["NULL"; params as usize].join(", ");
    let call = if params == 0 {
        name.to_string()
    } else {
        format!("{name}({args})")
    };
    let lines: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN (COSTS OFF) EXECUTE {call}"))
        .fetch_all(conn)
        .await
        .unwrap();
    lines.join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_statement_on_a_commands_path_keeps_index_plans_made_on_an_empty_database() {
    let env = TestEnv::new("plans").await;
    // One connection, so every statement is prepared in the session we inspect.
    let store = env.single_connection_store();
    let mut conn = store.pool().acquire().await.unwrap();
    let mode: String = sqlx::query_scalar("SHOW plan_cache_mode")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(mode, "force_generic_plan");

    // Statistics of a table of finished commands (what a long-running
    // database's ANALYZE sees): no running row, so a partial index of
    // running commands looks free to scan whole.
    sqlx::query(
        "INSERT INTO commands (id, payload, fingerprint, state, outcome)
         SELECT 'old-' || g, '{}', 'fp', 'done', 'succeeded' FROM generate_series(1, 5000) g",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    sqlx::query("ANALYZE commands")
        .execute(&mut *conn)
        .await
        .unwrap();

    run_a_command_through(&mut conn, uuid::Uuid::new_v4()).await;

    let prepared: Vec<(String, String, i32)> = sqlx::query_as(
        "SELECT name, statement, COALESCE(cardinality(parameter_types), 0)
           FROM pg_prepared_statements WHERE from_sql = false ORDER BY prepare_time",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    let writes = prepared
        .iter()
        .filter(|(_, sql, _)| {
            let sql = sql.trim_start();
            sql.starts_with("INSERT") || sql.starts_with("UPDATE") || sql.starts_with("WITH")
        })
        .count();
    assert!(
        writes >= 12,
        "the path prepared {writes} writing statements: {prepared:#?}"
    );

    let mut bad = Vec::new();
    for (name, sql, params) in &prepared {
        if sql.contains("pg_prepared_statements") {
            continue;
        }
        let plan = plan_of(&mut conn, name, *params).await;
        let scans_a_table = [
            "commands",
            "attempts",
            "payment_leases",
            "outbox",
            "pending_replays",
        ]
        .iter()
        .any(|t| plan.contains(&format!("Seq Scan on {t}")));
        // A lookup by id that an index answers only as a filter reads the
        // whole index once per row.
        let id_as_filter = plan.contains("Filter: ((id = ");
        if scans_a_table
            || id_as_filter
            || plan.contains("Hash Join")
            || plan.contains("Merge Join")
        {
            bad.push(format!("{sql}\n--- plan:\n{plan}"));
        }
    }
    assert!(
        bad.is_empty(),
        "statements with plans that read whole tables:\n\n{}",
        bad.join("\n\n")
    );

    drop(conn);
    store.close().await;
    env.cleanup().await;
}
