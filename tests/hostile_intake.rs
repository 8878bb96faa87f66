//! Hostile input at intake (issue 10): nothing a producer sends may stop the
//! worker, fool it, or make it store or echo something unbounded.
//!
//! Each test publishes through the real broker to a real worker with its own
//! database, and checks both sides: the hostile message gets its `rejected`
//! event or its dead letter with a reason, and a valid command published
//! behind it still gets its event (before, one such message stopped intake
//! for good: the batch failed, was retried forever, and every command behind
//! it waited).

use crate::common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use backoffice_worker::events::ResultEvent;
use common::{get_message, pz, ChildGuard, TestEnv};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::BasicProperties;
use rand::distributions::{Alphanumeric, DistString};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_backoffice-worker"))
}

/// A string no compression shrinks much: too large for a btree index entry
/// (2,704 bytes) even compressed.
fn incompressible(len: usize) -> String {
    Alphanumeric.sample_string(&mut rand::thread_rng(), len)
}

fn header_text(properties: &BasicProperties, name: &str) -> Option<String> {
    match properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        other => Some(format!("{other:?}")),
    }
}

/// The next message on the dead-letter queue: its reason header and body.
async fn next_dead_letter(env: &TestEnv) -> (String, Vec<u8>, BasicProperties) {
    let message = get_message(&env.channel, &env.dead_letter_queue, WAIT).await;
    let reason = header_text(&message.delivery.properties, "x-backoffice-reason")
        .expect("a dead letter says why");
    (
        reason,
        message.delivery.data.clone(),
        message.delivery.properties.clone(),
    )
}

/// Waits for the first event of each of `ids` and returns them with their
/// raw bodies (the events of other commands are kept in `env.seen`).
async fn events_with_bodies(
    env: &mut TestEnv,
    ids: &[&str],
) -> HashMap<String, (ResultEvent, Vec<u8>)> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut found = HashMap::new();
    while found.len() < ids.len() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match env.next_event(left).await {
            Some((event, delivery)) if ids.contains(&event.command_id.as_str()) => {
                found
                    .entry(event.command_id.clone())
                    .or_insert((event, delivery.data.clone()));
            }
            Some(_) => continue,
            None => panic!("not every one of {ids:?} had an event within {WAIT:?}: {found:?}"),
        }
    }
    found
}

fn assert_rejected(event: &ResultEvent, field: &str) {
    assert_eq!(event.outcome.as_str(), "rejected", "{event:?}");
    let description = event.description.as_deref().unwrap_or("");
    assert!(
        description.starts_with(&format!("{field}: ")),
        "the rejection names `{field}`: {event:?}"
    );
}

/// Item 1: a `\u0000` in the id, the metadata or the payment id, in a
/// property, or in a header of an unreadable message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_anywhere_is_rejected_or_dead_lettered_and_intake_goes_on() {
    let mut env = TestEnv::new("hostile-nul").await;
    let worker = env.start_worker();

    let publish =
        |body: String, properties: BasicProperties| env.publish_raw(body.into_bytes(), properties);
    publish(
        r#"{"id":"nul\u0000id","gateway":"paymentz","operation":"inquiry","payment_id":"10000001"}"#
            .into(),
        BasicProperties::default(),
    )
    .await;
    publish(
        r#"{"id":"nul-metadata","gateway":"paymentz","operation":"inquiry","payment_id":"10000001","metadata":{"a":"x\u0000y"}}"#.into(),
        BasicProperties::default(),
    )
    .await;
    publish(
        r#"{"id":"nul-payment","gateway":"paymentz","operation":"inquiry","payment_id":"1\u00002"}"#
            .into(),
        BasicProperties::default(),
    )
    .await;
    publish(
        pz("nul-correlation", "inquiry", "10000001", None).to_string(),
        BasicProperties::default().with_correlation_id(ShortString::from("corr\0id")),
    )
    .await;
    let mut headers = FieldTable::default();
    headers.insert(
        "x-producer".into(),
        AMQPValue::LongString(LongString::from("a\0b")),
    );
    headers.insert(
        "x-k\0ey".into(),
        AMQPValue::LongString(LongString::from(incompressible(50_000))),
    );
    publish(
        "not json at all".into(),
        BasicProperties::default().with_headers(headers),
    )
    .await;
    env.publish(&pz("after-nul", "inquiry", "10000003", None))
        .await;

    let after = env.outcome_of("after-nul").await;
    assert_eq!(after.outcome.as_str(), "succeeded", "{after:?}");
    assert_rejected(&env.outcome_of("nul-metadata").await, "metadata");
    assert_rejected(&env.outcome_of("nul-payment").await, "payment_id");
    assert_rejected(&env.outcome_of("nul-correlation").await, "correlation_id");

    let mut reasons = vec![
        next_dead_letter(&env).await.0,
        next_dead_letter(&env).await.0,
    ];
    reasons.sort();
    assert!(
        reasons[0].starts_with("`id` contains a control character"),
        "{reasons:?}"
    );
    assert!(reasons[1].starts_with("not JSON"), "{reasons:?}");
    let (count, headers): (i64, Option<String>) = sqlx::query_as(
        "SELECT count(*), max(properties->'headers'->>'x-producer') FROM dead_letters",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(count, 2);
    assert_eq!(
        headers.as_deref(),
        Some("a\\u{0}b"),
        "the header kept, escaped"
    );
    worker.stop().await;
    env.cleanup().await;
}

/// Item 1: an incompressible 24 KB `gateway` or `payment_id` is too large
/// for an index entry; it must be refused before the database sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_too_large_for_an_index_are_rejected_and_intake_goes_on() {
    let mut env = TestEnv::new("hostile-large").await;
    let worker = env.start_worker();
    env.publish(
        &json!({"id": "large-gateway", "gateway": incompressible(24_000),
        "operation": "inquiry", "payment_id": "10000001"}),
    )
    .await;
    env.publish(&json!({"id": "large-payment", "gateway": "paymentz",
        "operation": "inquiry", "payment_id": incompressible(24_000)}))
        .await;
    env.publish(&pz("after-large", "inquiry", "10000003", None))
        .await;

    let events =
        events_with_bodies(&mut env, &["large-gateway", "large-payment", "after-large"]).await;
    assert_eq!(events["after-large"].0.outcome.as_str(), "succeeded");
    let (gateway, body) = &events["large-gateway"];
    assert_rejected(gateway, "gateway");
    assert!(body.len() < 2_000, "a bounded event: {} bytes", body.len());
    assert_rejected(&events["large-payment"].0, "payment_id");
    let longest: i32 = sqlx::query_scalar(
        "SELECT max(greatest(length(gateway), length(payment_id), length(payload::text))) FROM commands",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert!(longest < 1_000, "what is stored is bounded: {longest}");
    worker.stop().await;
    env.cleanup().await;
}

/// Item 1, the safety net: a delivery whose data the database refuses for a
/// reason the reader could not foresee (here a constraint the test adds)
/// is dead-lettered alone; the commands of its batch go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_fails_for_one_commands_data_is_taken_apart() {
    let mut env = TestEnv::new("hostile-split").await;
    sqlx::query("ALTER TABLE commands ADD CONSTRAINT test_poison CHECK (id <> 'poison-1')")
        .execute(&env.pool)
        .await
        .unwrap();
    // Published before the worker starts, so that they arrive in one batch.
    env.publish(&pz("split-a", "inquiry", "10000001", None))
        .await;
    env.publish(&pz("poison-1", "inquiry", "10000003", None))
        .await;
    env.publish(&pz("split-b", "inquiry", "10000005", None))
        .await;
    let worker = env.start_worker();

    for id in ["split-a", "split-b"] {
        assert_eq!(
            env.outcome_of(id).await.outcome.as_str(),
            "succeeded",
            "{id}"
        );
    }
    let (reason, body, _) = next_dead_letter(&env).await;
    assert!(
        reason.starts_with("cannot be stored:") && reason.contains("test_poison"),
        "{reason}"
    );
    let original: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(original["id"], "poison-1", "the original body is kept");
    let recorded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM dead_letters WHERE reason LIKE 'cannot be stored:%'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(recorded, 1);
    worker.stop().await;
    env.cleanup().await;
}

/// Item 2: a body over `[amqp] max_command_bytes` is dead-lettered without
/// being read; the database keeps only its start, the queue the whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_cap_is_dead_lettered_unread() {
    let mut env = TestEnv::new("hostile-cap").await;
    let worker = env.start_worker();
    let mut huge = pz("huge-1", "inquiry", "10000001", None);
    huge["padding"] = incompressible(4 * 1024 * 1024).into();
    let body = serde_json::to_vec(&huge).unwrap();
    env.publish_raw(body.clone(), BasicProperties::default())
        .await;
    env.publish(&pz("after-huge", "inquiry", "10000003", None))
        .await;
    assert_eq!(
        env.outcome_of("after-huge").await.outcome.as_str(),
        "succeeded"
    );
    let (reason, dead_body, _) = next_dead_letter(&env).await;
    assert!(reason.contains("max_command_bytes"), "{reason}");
    assert_eq!(dead_body, body, "the dead-letter queue has it whole");
    let (kept, size): (i32, i64) =
        sqlx::query_as("SELECT length(body), body_size FROM dead_letters")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(size, body.len() as i64);
    assert_eq!(kept, 64 * 1024, "the database keeps its first 64 KiB");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM commands WHERE id = 'huge-1'")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(stored, 0);
    worker.stop().await;
    env.cleanup().await;
}

/// Item 2: an unknown field makes a command `rejected`, naming it; only the
/// contract's fields are stored, never the producer's blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_fields_are_rejected_and_never_stored() {
    let mut env = TestEnv::new("hostile-unknown").await;
    let worker = env.start_worker();
    let mut command = pz("unknown-1", "capture", "10000002", Some("1.00"));
    command["blob"] = incompressible(30_000).into();
    env.publish(&command).await;
    let event = env.outcome_of("unknown-1").await;
    assert_rejected(&event, "blob");
    assert!(event.description.unwrap().contains("unknown field"));
    let payload: String =
        sqlx::query_scalar("SELECT payload::text FROM commands WHERE id = 'unknown-1'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert!(!payload.contains("blob"), "{payload}");
    assert_eq!(env.sim.sim().stats().ledger_entries, 0, "nothing captured");
    worker.stop().await;
    env.cleanup().await;
}

/// Item 2: a rejected event echoes what the producer sent bounded (a field
/// cut at 256 characters, visibly), so it stays small whatever was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_events_echo_bounded_text() {
    let mut env = TestEnv::new("hostile-echo").await;
    let worker = env.start_worker();
    env.publish(
        &json!({"id": "echo-1", "gateway": "paymentz", "operation": "inquiry",
        "payment_id": "10000001", "account": "a".repeat(60_000), "currency": "E\nUR"}),
    )
    .await;
    let (event, body) = events_with_bodies(&mut env, &["echo-1"])
        .await
        .remove("echo-1")
        .unwrap();
    assert!(body.len() < 2_000, "a bounded event: {} bytes", body.len());
    assert_rejected(&event, "account");
    let account = event.account.unwrap();
    assert!(
        account.ends_with("…[cut]") && account.len() < 300,
        "{account}"
    );
    assert_eq!(event.currency.as_deref(), Some("E\\nUR"), "escaped");
    worker.stop().await;
    env.cleanup().await;
}

/// Item 2: a transaction list from 0001-01-01 to 9999-12-31 is refused; a
/// list spans at most 366 days.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_list_span_is_bounded() {
    let mut env = TestEnv::new("hostile-span").await;
    let worker = env.start_worker();
    env.publish(
        &json!({"id": "span-1", "gateway": "paymentz", "operation": "transaction_list",
        "from": "0001-01-01", "to": "9999-12-31"}),
    )
    .await;
    env.publish(
        &json!({"id": "span-2", "gateway": "paymentz", "operation": "transaction_list",
        "from": "2024-01-01", "to": "2025-01-01"}),
    )
    .await;
    let (from, to) = common::list_window();
    env.publish(
        &json!({"id": "span-3", "gateway": "paymentz", "operation": "transaction_list",
        "from": from, "to": to}),
    )
    .await;
    assert_rejected(&env.outcome_of("span-1").await, "from");
    assert_rejected(&env.outcome_of("span-2").await, "to");
    assert_eq!(env.outcome_of("span-3").await.outcome.as_str(), "succeeded");
    worker.stop().await;
    env.cleanup().await;
}

/// Item 8: `reply_to` may not name the worker's own queues (its events
/// would come back as commands, or land among its dead letters) nor a
/// reserved `amq.` name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_to_cannot_name_the_workers_own_queues() {
    let mut env = TestEnv::new("hostile-reply").await;
    let worker = env.start_worker();
    let targets = [
        ("reply-cq", env.command_queue.clone()),
        ("reply-dl", env.dead_letter_queue.clone()),
        ("reply-amq", "amq.direct".to_string()),
    ];
    for (id, reply_to) in &targets {
        env.publish_raw(
            serde_json::to_vec(&pz(id, "inquiry", "10000001", None)).unwrap(),
            BasicProperties::default().with_reply_to(ShortString::from(reply_to.as_str())),
        )
        .await;
    }
    env.publish(&pz("after-reply", "inquiry", "10000003", None))
        .await;
    for (id, _) in &targets {
        assert_rejected(&env.outcome_of(id).await, "reply_to");
    }
    assert_eq!(
        env.outcome_of("after-reply").await.outcome.as_str(),
        "succeeded"
    );
    env.drain_events(Duration::from_millis(500)).await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE reply_to IS NOT NULL")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(rows, 0, "no event was addressed to them");
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(dead, 0, "no event came back as a command");
    worker.stop().await;
    env.cleanup().await;
}

/// Item 8: the reading is as strict as the schema (no `" 10"` amount), and
/// metadata is echoed unchanged: numbers no float can hold keep every digit,
/// in the first event, in a rejection and in a replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amounts_are_strict_and_metadata_numbers_are_echoed_exactly() {
    let mut env = TestEnv::new("hostile-strict").await;
    let worker = env.start_worker();
    let exact = r#"{"big":123456789012345678901234567890,"fine":0.1000000000000000055511151231257827,"cents":10.50,"tiny":1e-7}"#;
    let command = |id: &str, amount: &str| {
        format!(
            r#"{{"id":"{id}","gateway":"paymentz","operation":"capture","payment_id":"10000002","amount":"{amount}","metadata":{exact}}}"#
        )
    };
    env.publish_raw(
        command("strict-ok", "1.00").into_bytes(),
        BasicProperties::default(),
    )
    .await;
    env.publish_raw(
        command("strict-space", " 10").into_bytes(),
        BasicProperties::default(),
    )
    .await;
    let mut events = events_with_bodies(&mut env, &["strict-ok", "strict-space"]).await;
    let (ok, body) = events.remove("strict-ok").unwrap();
    assert_eq!(ok.outcome.as_str(), "succeeded", "{ok:?}");
    let text = String::from_utf8(body).unwrap();
    for digits in [
        "123456789012345678901234567890",
        "0.1000000000000000055511151231257827",
        "10.50",
    ] {
        assert!(text.contains(digits), "{digits} echoed as sent: {text}");
    }
    let (rejected, body) = events.remove("strict-space").unwrap();
    assert_rejected(&rejected, "amount");
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains("123456789012345678901234567890"), "{text}");
    // A producer's retry of the first: replayed, from the stored event.
    env.publish_raw(
        command("strict-ok", "1.00").into_bytes(),
        BasicProperties::default(),
    )
    .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let replay = loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let (event, delivery) = env.next_event(left).await.expect("the replay");
        if event.command_id == "strict-ok" && event.replayed {
            break String::from_utf8(delivery.data.clone()).unwrap();
        }
    };
    assert!(
        replay.contains("123456789012345678901234567890"),
        "{replay}"
    );
    assert!(
        replay.contains("0.1000000000000000055511151231257827"),
        "{replay}"
    );
    worker.stop().await;
    env.cleanup().await;
}

/// Item 8: producer text in the text logs is escaped: a newline in an id or
/// a field cannot start a log line of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_text_cannot_forge_log_lines() {
    let mut env = TestEnv::new("hostile-log").await;
    let log_path = env.dir.path().join("worker.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let worker = ChildGuard(
        binary()
            .args(["run", "--config"])
            .arg(env.config_file())
            .env_remove("AMQP_URL")
            .env_remove("DATABASE_URL")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let forged = "\n2026-12-03T10:00:00.000000Z  INFO backoffice_worker: FORGED command succeeded";
    env.publish(
        &json!({"id": format!("log-1{forged}"), "gateway": "paymentz",
        "operation": "inquiry", "payment_id": "10000001"}),
    )
    .await;
    env.publish(&json!({"id": "log 2", "gateway": format!("stripe{forged}"),
        "operation": "inquiry", "payment_id": "10000001"}))
        .await;
    env.publish(&pz("log-3", "inquiry", "10000003", None)).await;
    assert_eq!(env.outcome_of("log 2").await.outcome.as_str(), "rejected");
    assert_eq!(env.outcome_of("log-3").await.outcome.as_str(), "succeeded");
    // The producer texts are logged (the id with its dead letter, the
    // gateway with its rejection; an older worker logged the id with its
    // rejection): poll the file until both are there, or one has been for
    // a few seconds.
    let deadline = std::time::Instant::now() + WAIT;
    let mut first_seen = None;
    let text = loop {
        let text = std::fs::read_to_string(&log_path).unwrap();
        let seen = text.matches("backoffice_worker: FORG").count();
        let now = std::time::Instant::now();
        if seen >= 1 && first_seen.is_none() {
            first_seen = Some(now);
        }
        let settled = first_seen.is_some_and(|at| now > at + Duration::from_secs(3));
        if seen >= 2 || settled || now > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        text.contains("backoffice_worker: FORG"),
        "the producer texts are logged: {text}"
    );
    for line in text.lines() {
        let plain = strip_ansi(line);
        assert!(
            !plain
                .trim_start()
                .starts_with("2026-12-03T10:00:00.000000Z"),
            "a forged line: {plain}"
        );
    }
    // Stopped before the cleanup: a worker still running would declare its
    // queues and exchange again once the cleanup deleted them, and leave
    // them on the broker.
    drop(worker);
    env.cleanup().await;
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Item 8: the worker's sessions have a `statement_timeout`
/// (`[database] statement_timeout`, 30 s by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workers_sessions_have_a_statement_timeout() {
    let env = TestEnv::new("hostile-timeout").await;
    let text = env.config_text().replace(
        "max_connections = 12",
        "max_connections = 12\nstatement_timeout = \"1500ms\"",
    );
    for (text, expected) in [(text, "1500ms"), (env.config_text(), "30s")] {
        let config = backoffice_worker::config::Config::parse(
            std::path::Path::new("timeout.toml"),
            &text,
            |_| None,
        )
        .expect("a statement_timeout is a [database] key");
        let store = backoffice_worker::store::Store::connect_lazy(&config.database).unwrap();
        let shown: String = sqlx::query_scalar("SHOW statement_timeout")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(shown, expected);
        store.close().await;
    }
    env.cleanup().await;
}

/// Item 8: a secret shorter than 8 characters cannot be scrubbed reliably:
/// start-up refuses it, naming the file, the table and the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_secret_is_refused_at_start_up() {
    let env = TestEnv::new("hostile-secret").await;
    let file = env.dir.path().join("short.toml");
    std::fs::write(
        &file,
        env.config_text()
            .replace("\"sandbox-secure-key\"", "\"k3y\""),
    )
    .unwrap();
    let mut child = ChildGuard(
        binary()
            .args(["run", "--config"])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the worker started with a 3-character secret"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains("short.toml")
            && stderr.contains("[accounts.paymentz.default] key `secure_key`")
            && stderr.contains("at least 8"),
        "{stderr}"
    );
    assert!(!stderr.contains("k3y"), "the secret is not shown: {stderr}");
    env.cleanup().await;
}

/// Item 8: `dead-letters list` pages (`--limit`, `--before`) and shows the
/// start of each body, never whole bodies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_list_pages_and_previews_bodies() {
    let env = TestEnv::new("hostile-dlpages").await;
    let worker = env.start_worker();
    for k in 0..3 {
        env.publish_raw(
            format!("not json {k} {}", "z".repeat(20_000)).into_bytes(),
            BasicProperties::default(),
        )
        .await;
    }
    for _ in 0..3 {
        next_dead_letter(&env).await;
    }
    worker.stop().await;
    let config = env.config_file();
    let list = |extra: &[&str]| {
        let out = binary()
            .args(["dead-letters", "--config"])
            .arg(&config)
            .args(["list", "--json"])
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
    };
    let first = list(&["--limit", "2"]);
    assert_eq!(first.len(), 2);
    let ids: Vec<i64> = first.iter().map(|d| d["id"].as_i64().unwrap()).collect();
    assert!(ids[0] > ids[1], "newest first: {ids:?}");
    for d in &first {
        assert_eq!(d["size"], 20_011);
        assert_eq!(d["body_cut"], true);
        assert!(d["body"].as_str().unwrap().len() <= 256, "{d}");
    }
    let next = list(&["--limit", "2", "--before", &ids[1].to_string()]);
    assert_eq!(next.len(), 1);
    assert!(next[0]["id"].as_i64().unwrap() < ids[1]);
    let text = binary()
        .args(["dead-letters", "--config"])
        .arg(&config)
        .args(["list", "--limit", "2"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!("dead-letters list --before {}", ids[1])),
        "{text}"
    );
    let one = binary()
        .args(["dead-letters", "--config"])
        .arg(&config)
        .args(["show", &ids[0].to_string(), "--json"])
        .output()
        .unwrap();
    assert!(one.status.success(), "{one:?}");
    let one: Value = serde_json::from_slice(&one.stdout).unwrap();
    assert_eq!(
        one["body"].as_str().unwrap().len(),
        20_011,
        "show has it whole"
    );
    env.cleanup().await;
}
