//! The operator commands (`enqueue`, `show`, `list`, `dead-letters`, `migrate`)
//! as an operator runs them: the real binary with a config file on disk,
//! against the real RabbitMQ and PostgreSQL, and a worker running in this
//! process (`TestEnv::start_worker`). Each test has its own database, queues
//! and simulator.

use crate::common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use backoffice_worker::simulator::{FaultKind, FaultScript, GatewayId};
use common::{px, TestEnv};
use futures::StreamExt;
use lapin::options::BasicConsumeOptions;
use lapin::types::{AMQPValue, FieldTable};
use serde_json::Value;
use tokio::process::Command;

const SECRETS: [&str; 2] = ["sandbox-secure-key", "sandbox-merchant-secret"];

#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {}\nstderr: {}",
                self.stdout, self.stderr
            )
        })
    }

    fn assert_no_secret(&self) {
        for secret in SECRETS {
            assert!(
                !self.stdout.contains(secret) && !self.stderr.contains(secret),
                "{secret} printed:\n{}\n{}",
                self.stdout,
                self.stderr
            );
        }
    }
}

/// Runs the binary with `args`, none of the environment that could redirect it.
async fn run(args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_backoffice-worker"))
        .args(args)
        .env_remove("BACKOFFICE_CONFIG")
        .env_remove("AMQP_URL")
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(90), output)
        .await
        .expect("the command ends within 90 s")
        .expect("the binary runs");
    Run {
        code: output.status.code().expect("exited, not killed"),
        stdout: String::from_utf8(output.stdout).expect("UTF-8 stdout"),
        stderr: String::from_utf8(output.stderr).expect("UTF-8 stderr"),
    }
}

/// Runs `args` followed by `--config <config>`.
async fn run_with(config: &Path, args: &[&str]) -> Run {
    let mut all: Vec<&str> = args.to_vec();
    all.push("--config");
    all.push(config.to_str().expect("UTF-8 path"));
    run(&all).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_waits_for_the_result_and_show_explains_it() {
    let env = TestEnv::new("opsenq").await;
    let worker = env.start_worker();
    let config = env.config_file();

    let capture = run_with(
        &config,
        &[
            "enqueue",
            "--gateway",
            "paymentz",
            "--operation",
            "capture",
            "--payment-id",
            "10000002",
            "--amount",
            "10.00",
            "--id",
            "ops-capture-1",
            "--metadata",
            r#"{"order_id":"8812"}"#,
            "--wait",
            "--timeout",
            "60s",
        ],
    )
    .await;
    assert_eq!(capture.code, 0, "{capture:?}");
    let event = capture.json();
    assert_eq!(event["command_id"], "ops-capture-1");
    assert_eq!(event["outcome"], "succeeded", "{event}");
    assert_eq!(event["amount"], "10.00");
    assert_eq!(event["metadata"]["order_id"], "8812");
    assert_eq!(event["replayed"], false);
    assert!(
        capture.stderr.contains("enqueued ops-capture-1"),
        "{capture:?}"
    );

    // No id given: one is generated, and a Praxis refund is not offered.
    let refund = run_with(
        &config,
        &[
            "enqueue",
            "--gateway",
            "praxis",
            "--operation",
            "refund",
            "--payment-id",
            "20000001",
            "--amount",
            "5.00",
            "--wait",
        ],
    )
    .await;
    assert_eq!(refund.code, 2, "{refund:?}");
    let rejected = refund.json();
    assert_eq!(rejected["outcome"], "rejected", "{rejected}");
    assert_eq!(rejected["reason"], "unsupported_operation");
    let refund_id = rejected["command_id"].as_str().unwrap().to_string();
    assert!(refund_id.starts_with("enq-"), "{refund_id}");

    // The same id again: replayed, never run twice.
    let again = run_with(
        &config,
        &[
            "enqueue",
            "--gateway",
            "paymentz",
            "--operation",
            "capture",
            "--payment-id",
            "10000002",
            "--amount",
            "10",
            "--id",
            "ops-capture-1",
            "--metadata",
            r#"{"order_id":"8812"}"#,
            "--wait",
        ],
    )
    .await;
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(again.json()["replayed"], true);
    assert_eq!(
        env.sim
            .sim()
            .ledger_for(GatewayId::Paymentz, "10000002")
            .len(),
        1,
        "one capture at the gateway"
    );

    // `show`, readable.
    let shown = run_with(&config, &["show", "ops-capture-1"]).await;
    assert_eq!(shown.code, 0, "{shown:?}");
    shown.assert_no_secret();
    let text = &shown.stdout;
    assert!(text.starts_with("Command ops-capture-1\n"), "{text}");
    let field = |label: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no `{label}` line in:\n{text}"))
            .to_string()
    };
    assert!(field("outcome").ends_with("succeeded"), "{text}");
    assert!(field("amount").contains("10.00"), "{text}");
    let header = text
        .lines()
        .find(|l| l.trim_start().starts_with("# "))
        .expect("attempts table header");
    for column in ["PURPOSE", "HTTP", "CLASSIFICATION"] {
        assert!(header.contains(column), "{header}");
    }
    // Columns are aligned by characters: read each row's cell under its header.
    let column = |name: &str| header.find(name).expect("an ASCII header");
    let cell = |line: &str, col: usize| -> String {
        line.chars().skip(col).take_while(|c| *c != ' ').collect()
    };
    let (purpose_col, http_col, class_col) =
        (column("PURPOSE"), column("HTTP"), column("CLASSIFICATION"));
    for purpose in ["IN", "CP"] {
        let row = text
            .lines()
            .find(|l| cell(l, purpose_col) == purpose)
            .unwrap_or_else(|| panic!("no attempt row for {purpose} in:\n{text}"));
        assert_eq!(cell(row, http_col), "200", "{purpose}: {row}");
        assert_eq!(cell(row, class_col), "succeeded", "{purpose}: {row}");
    }
    assert!(text.contains("\nEvents ("), "{text}");

    // `show --json`, whole.
    let json = run_with(&config, &["show", "ops-capture-1", "--json"]).await;
    assert_eq!(json.code, 0, "{json:?}");
    json.assert_no_secret();
    let report = json.json();
    assert_eq!(report["command"]["id"], "ops-capture-1");
    assert_eq!(report["command"]["outcome"], "succeeded");
    assert_eq!(report["command"]["state"], "done");
    assert_eq!(report["command"]["amount"], "10.00");
    let attempts = report["attempts"].as_array().expect("attempts");
    let cp = attempts
        .iter()
        .find(|a| a["purpose"] == "CP")
        .expect("the capture attempt");
    assert_eq!(cp["kind"], "operation");
    assert_eq!(cp["http_status"], 200);
    assert_eq!(cp["classification"], "succeeded");
    assert_eq!(
        cp["signature_sent"].as_str().map(str::len),
        Some(32),
        "the MD5 checksum, whole"
    );
    assert!(cp["response_body"].as_str().is_some_and(|b| !b.is_empty()));
    assert!(attempts.iter().any(|a| a["purpose"] == "IN"));
    let events = report["events"].as_array().expect("events");
    assert!(events.len() >= 2, "the result and its replay: {events:?}");
    assert_eq!(events[0]["body"]["outcome"], "succeeded");
    assert_eq!(events[0]["body"]["replayed"], false);
    assert!(events.iter().any(|e| e["body"]["replayed"] == true));

    // `list --outcome rejected` has the Praxis refund, and not the capture.
    let listed = run_with(&config, &["list", "--outcome", "rejected"]).await;
    assert_eq!(listed.code, 0, "{listed:?}");
    assert!(listed.stdout.contains(&refund_id), "{listed:?}");
    assert!(
        listed.stdout.contains("unsupported_operation"),
        "{listed:?}"
    );
    assert!(!listed.stdout.contains("ops-capture-1"), "{listed:?}");
    let listed = run_with(
        &config,
        &["list", "--outcome", "rejected", "--since", "1h", "--json"],
    )
    .await;
    assert_eq!(listed.code, 0, "{listed:?}");
    let rows = listed.json();
    let rows = rows.as_array().expect("an array");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["id"], refund_id.as_str());
    assert_eq!(rows[0]["gateway"], "praxis");
    let none = run_with(&config, &["list", "--outcome", "failed"]).await;
    assert_eq!(none.code, 0, "{none:?}");
    assert_eq!(none.stdout, "no commands failed\n");

    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_unknown_shows_a_command_reconciliation_has_not_settled() {
    let mut env = TestEnv::new("opsunk").await;
    // Background reconciliation only in an hour: the `unknown` stays unsettled.
    env.worker_section = common::FAST_WORKER.replace(
        r#"reconcile_schedule = ["300ms", "600ms"]"#,
        r#"reconcile_schedule = ["1h"]"#,
    );
    assert!(env.worker_section.contains("1h"));
    let worker = env.start_worker();
    let config = env.config_file();
    let sim = env.sim.sim().clone();
    // The capture applies but answers 500; every inquiry after it fails:
    // the worker cannot tell whether it took effect.
    sim.script_fault(
        FaultScript::new(FaultKind::ErrorAfter, 1)
            .gateway(GatewayId::Praxis)
            .operation("deposit-capture"),
    )
    .unwrap();
    sim.script_fault(
        FaultScript::new(FaultKind::ErrorBefore, 100)
            .gateway(GatewayId::Praxis)
            .operation("find-transaction"),
    )
    .unwrap();
    env.publish(&px("ops-unk-1", "capture", "20000001")).await;
    let event = env.outcome_of("ops-unk-1").await;
    assert_eq!(event.outcome.as_str(), "unknown", "{event:?}");

    let listed = run_with(&config, &["list", "--outcome", "unknown"]).await;
    assert_eq!(listed.code, 0, "{listed:?}");
    assert!(listed.stdout.contains("ops-unk-1"), "{listed:?}");
    let listed = run_with(&config, &["list", "--outcome", "unknown", "--json"]).await;
    let rows = listed.json();
    let row = rows
        .as_array()
        .and_then(|r| r.iter().find(|r| r["id"] == "ops-unk-1"))
        .unwrap_or_else(|| panic!("not listed: {rows}"));
    assert_eq!(row["outcome"], "unknown");
    assert_eq!(row["settled_outcome"], Value::Null);
    assert_eq!(row["state"], "unsettled");
    let failed = run_with(&config, &["list", "--outcome", "failed"]).await;
    assert!(!failed.stdout.contains("ops-unk-1"), "{failed:?}");

    // `show` says why: the capture's 500 and the failed inquiries.
    let shown = run_with(&config, &["show", "ops-unk-1"]).await;
    assert_eq!(shown.code, 0, "{shown:?}");
    shown.assert_no_secret();
    assert!(
        shown.stdout.contains("unknown, not settled yet"),
        "{}",
        shown.stdout
    );
    assert!(shown.stdout.contains("ambiguous"), "{}", shown.stdout);

    worker.stop().await;
    env.cleanup().await;
}

/// The id the worker gave the dead letter it just published, from its header.
async fn next_dead_letter(consumer: &mut lapin::Consumer) -> (i64, Vec<u8>, FieldTable) {
    let delivery = tokio::time::timeout(Duration::from_secs(30), consumer.next())
        .await
        .expect("a dead letter within 30 s")
        .expect("the consumer is open")
        .expect("a delivery");
    let headers = delivery.properties.headers().clone().unwrap_or_default();
    let id = match headers.inner().get("x-backoffice-dead-letter-id") {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes())
            .parse()
            .expect("a numeric id"),
        other => panic!("no dead-letter id header: {other:?}"),
    };
    (id, delivery.data, headers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_and_requeued_once() {
    let env = TestEnv::new("opsdead").await;
    let worker = env.start_worker();
    let config = env.config_file();
    let channel = env.amqp.create_channel().await.unwrap();
    let mut dead = channel
        .basic_consume(
            env.dead_letter_queue.as_str().into(),
            "ops-test-dead".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();

    env.publish_raw(
        b"this is not json".to_vec(),
        lapin::BasicProperties::default(),
    )
    .await;
    let (first, body, _) = next_dead_letter(&mut dead).await;
    assert_eq!(body, b"this is not json");

    let listed = run_with(&config, &["dead-letters", "list"]).await;
    assert_eq!(listed.code, 0, "{listed:?}");
    let line = listed
        .stdout
        .lines()
        .find(|l| l.starts_with(&format!("{first} ")))
        .unwrap_or_else(|| panic!("dead letter {first} not listed: {listed:?}"));
    assert!(line.contains("not JSON"), "{line}");
    assert!(line.contains("this is not json"), "{line}");
    assert!(line.contains("application/json"), "{line}");

    // Requeued: back on the command queue, dead-lettered again as a new row.
    let requeued = run_with(&config, &["dead-letters", "requeue", &first.to_string()]).await;
    assert_eq!(requeued.code, 0, "{requeued:?}");
    assert!(
        requeued
            .stdout
            .contains(&format!("requeued dead letter {first}")),
        "{requeued:?}"
    );
    let (second, body, _) = next_dead_letter(&mut dead).await;
    assert_ne!(second, first);
    assert_eq!(body, b"this is not json", "the original body");

    let all = run_with(&config, &["dead-letters", "list", "--all", "--json"]).await;
    assert_eq!(all.code, 0, "{all:?}");
    let rows = all.json();
    let rows = rows.as_array().expect("an array");
    assert_eq!(rows.len(), 2, "{rows:?}");
    let row = |id: i64| rows.iter().find(|r| r["id"] == id).expect("listed");
    assert!(row(first)["requeued_at"].is_string(), "{rows:?}");
    assert_eq!(row(second)["requeued_at"], Value::Null);
    assert_eq!(row(second)["body"], "this is not json");
    assert_eq!(
        row(second)["properties"]["headers"]["x-backoffice-requeued-from"],
        first.to_string(),
        "the requeued message said where it came from"
    );
    assert_eq!(
        row(second)["properties"]["content_type"],
        "application/json",
        "the original content type"
    );
    // Without --all, only the one still waiting.
    let waiting = run_with(&config, &["dead-letters", "list", "--json"]).await;
    let waiting = waiting.json();
    let ids: Vec<i64> = waiting
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![second]);

    // Twice: refused, and nothing published.
    let twice = run_with(&config, &["dead-letters", "requeue", &first.to_string()]).await;
    assert_eq!(twice.code, 1, "{twice:?}");
    assert!(twice.stderr.contains("already requeued"), "{twice:?}");
    let unknown = run_with(&config, &["dead-letters", "requeue", "999999"]).await;
    assert_eq!(unknown.code, 1, "{unknown:?}");
    assert!(
        unknown.stderr.contains("no dead letter with id 999999"),
        "{unknown:?}"
    );

    // --all: every one still waiting (just the second), and says how many.
    let everything = run_with(&config, &["dead-letters", "requeue", "--all"]).await;
    assert_eq!(everything.code, 0, "{everything:?}");
    assert!(
        everything.stdout.starts_with("requeued 1 dead letter "),
        "{everything:?}"
    );
    let (third, _, _) = next_dead_letter(&mut dead).await;
    assert!(third != first && third != second);
    let requeued_rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM dead_letters WHERE requeued_at IS NOT NULL")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(requeued_rows, 2, "the first two, each once");

    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_creates_a_missing_database_and_applies_the_migrations() {
    let env = TestEnv::new("opsmig").await;
    let fresh = format!("{}_fresh", env.db_name);
    let fresh_url = format!("{}/{fresh}", common::PG_SERVER);
    let path = env.dir.path().join("fresh.toml");
    std::fs::write(&path, env.config_text().replace(&env.db_url, &fresh_url)).unwrap();

    // Before: no such database, and `show` says what to do.
    let before = run_with(&path, &["show", "anything"]).await;
    assert_eq!(before.code, 1, "{before:?}");
    assert!(before.stderr.contains("does not exist"), "{before:?}");
    assert!(before.stderr.contains("migrate"), "{before:?}");

    let first = run_with(&path, &["migrate"]).await;
    assert_eq!(first.code, 0, "{first:?}");
    assert!(first.stdout.contains(&format!("`{fresh}`")), "{first:?}");
    assert!(first.stdout.contains(": created"), "{first:?}");
    assert!(
        first.stdout.contains("applied 20261122000001 init"),
        "{first:?}"
    );
    let pool = sqlx::PgPool::connect(&fresh_url).await.expect("it exists");
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(&pool)
            .await
            .unwrap();
    let expected: Vec<i64> = backoffice_worker::store::MIGRATOR
        .iter()
        .map(|m| m.version)
        .collect();
    assert_eq!(applied, expected);
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'
           AND tablename IN ('commands', 'attempts', 'outbox', 'dead_letters', 'payment_leases')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(tables, 5);
    pool.close().await;

    let second = run_with(&path, &["migrate"]).await;
    assert_eq!(second.code, 0, "{second:?}");
    assert!(second.stdout.contains(": exists"), "{second:?}");
    assert!(second.stdout.contains("nothing to apply"), "{second:?}");
    // And the other commands now work on it.
    let empty = run_with(&path, &["list", "--outcome", "unknown"]).await;
    assert_eq!(empty.code, 0, "{empty:?}");

    if let Ok(mut admin) = <sqlx::PgConnection as sqlx::Connection>::connect(&format!(
        "{}/postgres",
        common::PG_SERVER
    ))
    .await
    {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{fresh}\" WITH (FORCE)"))
            .execute(&mut admin)
            .await;
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_and_unreachable_services_exit_non_zero_with_a_message() {
    let env = TestEnv::new("opsbad").await;
    let config = env.config_file();

    let outcome = run_with(&config, &["list", "--outcome", "succeeded"]).await;
    assert_ne!(outcome.code, 0, "{outcome:?}");
    assert!(outcome.stderr.contains("'succeeded'"), "{outcome:?}");
    assert!(
        outcome.stderr.contains("unknown, failed, rejected"),
        "{outcome:?}"
    );
    assert!(outcome.stdout.is_empty());

    let since = run_with(&config, &["list", "--outcome", "failed", "--since", "soon"]).await;
    assert_ne!(since.code, 0, "{since:?}");
    assert!(since.stderr.contains("--since"), "{since:?}");

    let missing = env.dir.path().join("missing.toml");
    let no_config = run_with(&missing, &["show", "x"]).await;
    assert_eq!(no_config.code, 1, "{no_config:?}");
    assert!(
        no_config.stderr.contains("cannot read configuration file")
            && no_config.stderr.contains("missing.toml"),
        "{no_config:?}"
    );
    let no_config = run_with(
        &missing,
        &["enqueue", "--gateway", "paymentz", "--operation", "inquiry"],
    )
    .await;
    assert_eq!(no_config.code, 4, "{no_config:?}");

    let unknown = run_with(&config, &["show", "no-such-command"]).await;
    assert_eq!(unknown.code, 1, "{unknown:?}");
    assert!(
        unknown
            .stderr
            .contains("no command with id `no-such-command`"),
        "{unknown:?}"
    );
    assert!(unknown.stdout.is_empty());

    let metadata = run_with(
        &config,
        &[
            "enqueue",
            "--gateway",
            "paymentz",
            "--operation",
            "inquiry",
            "--metadata",
            "{not json",
        ],
    )
    .await;
    assert_eq!(metadata.code, 4, "{metadata:?}");
    assert!(
        metadata.stderr.contains("--metadata is not JSON"),
        "{metadata:?}"
    );

    let requeue = run_with(&config, &["dead-letters", "requeue"]).await;
    assert_ne!(requeue.code, 0, "{requeue:?}");
    assert!(requeue.stderr.contains("<ID|--all>"), "{requeue:?}");

    // Nothing listens on port 1: unreachable, said so, without credentials.
    let down = env.dir.path().join("down.toml");
    std::fs::write(
        &down,
        env.config_text()
            .replace("127.0.0.1:5432", "127.0.0.1:1")
            .replace("127.0.0.1:5672", "127.0.0.1:1"),
    )
    .unwrap();
    let db_down = run_with(&down, &["list", "--outcome", "failed"]).await;
    assert_eq!(db_down.code, 1, "{db_down:?}");
    assert!(
        db_down.stderr.contains("cannot reach the database"),
        "{db_down:?}"
    );
    let broker_down = run_with(
        &down,
        &["enqueue", "--gateway", "paymentz", "--operation", "inquiry"],
    )
    .await;
    assert_eq!(broker_down.code, 4, "{broker_down:?}");
    assert!(
        broker_down
            .stderr
            .contains("cannot reach RabbitMQ at 127.0.0.1:1"),
        "{broker_down:?}"
    );
    assert!(
        !broker_down.stderr.contains("guest:guest"),
        "{broker_down:?}"
    );

    env.cleanup().await;
}
