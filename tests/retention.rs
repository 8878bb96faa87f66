//! Retention against the real PostgreSQL, each test in its own database:
//! what `prune` deletes (only what is old enough and final, with everything
//! that belongs to it), in batches; `--dry-run` counts the same; a replay of
//! a pruned id is a new command; and the batch statements stay index lookups
//! on a large table.

use crate::common;

use std::process::Stdio;
use std::time::Duration;

use backoffice_worker::config::DatabaseSettings;
use backoffice_worker::store::retention::{self, Cutoffs, RetentionSettings};
use backoffice_worker::store::Store;
use common::{pz, TestEnv};
use secrecy::SecretString;
use serde_json::Value;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

/// A command row `age_days` old, in `state`, with `attempts` attempt rows.
async fn command(env: &TestEnv, id: &str, state: &str, age_days: i32, attempts: i32) {
    sqlx::query(
        "INSERT INTO commands (id, payload, fingerprint, state, outcome, result, received_at, decided_at)
         VALUES ($1, '{}', 'fp', $2, CASE WHEN $2 = 'done' THEN 'succeeded' ELSE 'unknown' END,
                 '{}', now() - make_interval(days => $3), now() - make_interval(days => $3))",
    )
    .bind(id)
    .bind(state)
    .bind(age_days)
    .execute(&env.pool)
    .await
    .unwrap();
    for n in 0..attempts {
        sqlx::query(
            "INSERT INTO attempts (command_id, attempt_no, kind, status) VALUES ($1, $2, 'operation', 'completed')",
        )
        .bind(id)
        .bind(n + 1)
        .execute(&env.pool)
        .await
        .unwrap();
    }
}

/// An event of `command_id`, written `age_days` ago: published, waiting, or abandoned.
async fn event(env: &TestEnv, command_id: &str, age_days: i32, status: &str) {
    sqlx::query(
        "INSERT INTO outbox (message_id, command_id, exchange, routing_key, body, created_at,
                             published_at, abandoned_at)
         VALUES (gen_random_uuid(), $1, 'events', 'k', '{}', now() - make_interval(days => $2),
                 CASE WHEN $3 = 'published' THEN now() - make_interval(days => $2) END,
                 CASE WHEN $3 = 'abandoned' THEN now() - make_interval(days => $2) END)",
    )
    .bind(command_id)
    .bind(age_days)
    .bind(status)
    .execute(&env.pool)
    .await
    .unwrap();
}

async fn dead_letter(env: &TestEnv, age_days: i32) {
    sqlx::query(
        "INSERT INTO dead_letters (reason, body, properties, received_at)
         VALUES ('not JSON', '\\x00', '{}', now() - make_interval(days => $1))",
    )
    .bind(age_days)
    .execute(&env.pool)
    .await
    .unwrap();
}

async fn ids(env: &TestEnv) -> Vec<String> {
    sqlx::query_scalar("SELECT id FROM commands ORDER BY id")
        .fetch_all(&env.pool)
        .await
        .unwrap()
}

async fn count(env: &TestEnv, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(&env.pool)
        .await
        .unwrap()
}

/// Runs the binary with `args` and this environment's config file.
async fn cli(env: &TestEnv, args: &[&str]) -> (i32, String, String) {
    let config = env.config_file();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_backoffice-worker"))
        .arg("prune")
        .arg("--config")
        .arg(&config)
        .args(args)
        .env_remove("BACKOFFICE_CONFIG")
        .env_remove("AMQP_URL")
        .env_remove("DATABASE_URL")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_deletes_only_what_is_old_enough_and_final_in_small_batches() {
    let mut env = TestEnv::new("retention").await;
    // Batches of two, so that every kind takes several.
    env.worker_section.push_str("\n[retention]\nbatch = 2\n");

    // Old (500 days), final, events published: pruned with everything of theirs.
    for i in 1..=5 {
        let id = format!("old-done-{i}");
        command(&env, &id, "done", 500, 2).await;
        event(&env, &id, 500, "published").await;
    }
    sqlx::query("INSERT INTO pending_replays (command_id) VALUES ('old-done-1')")
        .execute(&env.pool)
        .await
        .unwrap();
    // Old and final; its one event was abandoned: nothing waits for it.
    command(&env, "old-abandoned", "done", 500, 1).await;
    event(&env, "old-abandoned", 500, "abandoned").await;
    // Old but an event still waits for the relay: kept, event too.
    command(&env, "old-unpublished", "done", 500, 1).await;
    event(&env, "old-unpublished", 500, "waiting").await;
    // Old but not final: kept.
    command(&env, "old-unsettled", "unsettled", 500, 1).await;
    // Recent: kept; its 10-day-old published event is past the 7 days of
    // published events and goes, the 1-day-old one stays.
    command(&env, "recent-done", "done", 10, 1).await;
    event(&env, "recent-done", 10, "published").await;
    event(&env, "recent-done", 1, "published").await;
    // Dead letters: 100 days (over 90) goes, 1 day stays.
    dead_letter(&env, 100).await;
    dead_letter(&env, 1).await;

    let expected = serde_json::json!({
        "commands": 6, "attempts": 11, "pending_replays": 1, "command_events": 6,
        "published_events": 1, "dead_letters": 1,
    });

    // The dry run counts and deletes nothing.
    let (code, stdout, stderr) = cli(&env, &["--dry-run", "--json"]).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let counted: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(counted["counts"], expected, "{stdout}");
    assert_eq!(counted["dry_run"], true);
    assert_eq!(count(&env, "commands").await, 9);
    assert_eq!(count(&env, "outbox").await, 9);

    // The real run: the same counts, in batches of two.
    let (code, stdout, stderr) = cli(&env, &["--json"]).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let pruned: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(pruned["counts"], expected, "{stdout}");

    assert_eq!(
        ids(&env).await,
        ["old-unpublished", "old-unsettled", "recent-done"]
    );
    let events: Vec<(String, i32)> = sqlx::query_as(
        "SELECT command_id, (now() - created_at < interval '2 days')::int FROM outbox ORDER BY command_id",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(
        events,
        [("old-unpublished".into(), 0), ("recent-done".into(), 1)]
    );
    assert_eq!(count(&env, "attempts").await, 3);
    assert_eq!(count(&env, "pending_replays").await, 0);
    assert_eq!(count(&env, "dead_letters").await, 1);

    // Nothing left to do; the human-readable form says so.
    let (code, stdout, _) = cli(&env, &["--dry-run"]).await;
    assert_eq!(code, 0);
    assert!(stdout.contains("would delete 0 commands"), "{stdout}");
    assert!(stdout.contains("older than 400d"), "{stdout}");

    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_turned_off_keep_everything() {
    let mut env = TestEnv::new("retention_off").await;
    env.worker_section.push_str(
        "\n[retention]\ncommands = \"off\"\npublished_events = \"off\"\ndead_letters = \"off\"\n",
    );
    command(&env, "ancient", "done", 5000, 1).await;
    event(&env, "ancient", 5000, "published").await;
    dead_letter(&env, 5000).await;
    let (code, stdout, stderr) = cli(&env, &["--json"]).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let pruned: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(pruned["counts"]["commands"], 0);
    assert_eq!(count(&env, "commands").await, 1);
    assert_eq!(count(&env, "outbox").await, 1);
    assert_eq!(count(&env, "dead_letters").await, 1);
    env.cleanup().await;
}

/// The idempotency horizon (docs/messages.md): an id is recognised while its
/// command is kept; once pruned, a command with that id is a new command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_of_a_pruned_id_is_a_new_command() {
    let mut env = TestEnv::new("retention_horizon").await;
    let worker = env.start_worker();
    let command = pz("horizon-1", "capture", "55361", Some("10.00"));
    env.publish(&command).await;
    let first = env.outcome_of("horizon-1").await;
    assert!(!first.replayed);

    // Within the horizon: a replay of the stored result.
    env.publish(&command).await;
    env.wait_event("horizon-1", Duration::from_secs(30), |e| e.replayed)
        .await;

    // Past it: the command is pruned (once its events are marked published,
    // which can be after they were delivered: an event still in the outbox
    // keeps its command), and the same id is run again.
    env.until_all_published(Duration::from_secs(10)).await;
    sqlx::query(
        "UPDATE commands SET received_at = now() - interval '500 days' WHERE id = 'horizon-1'",
    )
    .execute(&env.pool)
    .await
    .unwrap();
    let store = Store::connect_lazy(&DatabaseSettings {
        url: SecretString::from(env.db_url.clone()),
        max_connections: 2,
        statement_timeout: backoffice_worker::config::DEFAULT_STATEMENT_TIMEOUT,
    })
    .unwrap();
    let cutoffs = Cutoffs::at(OffsetDateTime::now_utc(), &RetentionSettings::default());
    let pruned = retention::prune(
        store.pool(),
        &cutoffs,
        100,
        Duration::ZERO,
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(pruned.commands, 1);
    assert!(
        pruned.attempts >= 1 && pruned.command_events >= 2,
        "{pruned:?}"
    );

    env.seen.clear();
    env.publish(&command).await;
    let again = env.outcome_of("horizon-1").await;
    assert!(!again.replayed, "a pruned id is forgotten: {again:?}");
    // The simulator's payment was captured the first time: the second run
    // is a real second call, which is what the horizon means.
    assert_eq!(count(&env, "commands").await, 1);
    let fresh: bool = sqlx::query_scalar(
        "SELECT received_at > now() - interval '1 hour' FROM commands WHERE id = 'horizon-1'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert!(fresh);

    store.close().await;
    worker.stop().await;
    env.cleanup().await;
}

/// The batch statements find their rows by index ranges on a large table,
/// with the plans the worker's sessions make (generic ones, made once per
/// connection), so a batch costs the same at 10 rows and at 10 million.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_statements_use_indexes_on_a_large_table() {
    let env = TestEnv::new("retention_plans").await;
    sqlx::query(
        "INSERT INTO commands (id, payload, fingerprint, state, outcome, received_at, decided_at)
         SELECT 'big-' || g, '{}', 'fp', 'done', 'succeeded',
                now() - make_interval(days => 1000 - g / 1000), now()
           FROM generate_series(1, 200000) g",
    )
    .execute(&env.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO attempts (command_id, attempt_no, kind, status)
         SELECT 'big-' || g, 1, 'operation', 'completed' FROM generate_series(1, 200000) g",
    )
    .execute(&env.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO outbox (message_id, command_id, exchange, routing_key, body, created_at, published_at)
         SELECT gen_random_uuid(), 'big-' || g, 'events', 'k', '{}',
                now() - make_interval(days => 1000 - g / 1000), now()
           FROM generate_series(1, 200000) g",
    )
    .execute(&env.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO dead_letters (reason, body, properties, received_at)
         SELECT 'x', '\\x00', '{}', now() - make_interval(days => 1000 - g / 100)
           FROM generate_series(1, 20000) g",
    )
    .execute(&env.pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE").execute(&env.pool).await.unwrap();

    let store = env.single_connection_store();
    let mut conn = store.pool().acquire().await.unwrap();
    let cutoff = OffsetDateTime::now_utc() - Duration::from_secs(500 * 86_400);
    let batch = retention::prune_commands(&mut conn, cutoff, 500)
        .await
        .unwrap();
    assert_eq!(
        (batch.commands, batch.attempts, batch.command_events),
        (500, 500, 500)
    );
    assert_eq!(
        retention::prune_published_events(&mut conn, OffsetDateTime::now_utc(), 500)
            .await
            .unwrap(),
        500
    );
    assert_eq!(
        retention::prune_dead_letters(&mut conn, cutoff, 500)
            .await
            .unwrap(),
        500
    );

    let prepared: Vec<(String, String, i32)> = sqlx::query_as(
        "SELECT name, statement, COALESCE(cardinality(parameter_types), 0)
           FROM pg_prepared_statements WHERE from_sql = false AND statement LIKE '%DELETE%'
              AND statement NOT LIKE '%pg_prepared_statements%'",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    assert_eq!(prepared.len(), 3, "{prepared:#?}");
    for (name, sql, params) in &prepared {
        let args = vec!["NULL"; *params as usize].join(", ");
        let plan: Vec<String> =
            sqlx::query_scalar(&format!("EXPLAIN (COSTS OFF) EXECUTE {name}({args})"))
                .fetch_all(&mut *conn)
                .await
                .unwrap();
        let plan = plan.join("\n");
        assert!(
            !plan.contains("Seq Scan") && !plan.contains("Hash Join") && !plan.contains("Sort"),
            "{sql}\n--- plan:\n{plan}"
        );
    }
    drop(conn);
    store.close().await;
    env.cleanup().await;
}
