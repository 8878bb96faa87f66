//! The hostile-input soak: 10,000 malformed messages of every kind,
//! interleaved with 1,000 valid commands, against ONE worker process. Not
//! part of the default `cargo test`; run it with
//!
//! ```text
//! cargo test --release --test soak_hostile -- --ignored --nocapture
//! SOAK_MALFORMED=2000 SOAK_VALID=200 cargo test --release --test soak_hostile -- --ignored --nocapture
//! ```
//!
//! It checks that every valid command gets its event, that every malformed
//! message is answered `rejected` or dead-lettered with a reason (each kind
//! the way it should be), and that the worker never restarts (the same
//! process throughout); it prints the counts by reason and the worker's RSS
//! sampled from /proc (first, peak, last).

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{pz, ChildGuard, TestEnv};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::BasicProperties;
use rand::distributions::{Alphanumeric, DistString};
use serde_json::{json, Value};

/// How one kind of malformed message must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Expect {
    /// A `rejected` event whose description starts with this field.
    Rejected(&'static str),
    /// A dead letter whose reason starts with this.
    Dead(&'static str),
}

struct Malformed {
    kind: &'static str,
    expect: Expect,
    body: Vec<u8>,
    properties: BasicProperties,
}

fn incompressible(len: usize) -> String {
    Alphanumeric.sample_string(&mut rand::thread_rng(), len)
}

/// The `n`th malformed message: the kinds take turns, the 4 MiB body one
/// time in a hundred (so that a prefetch window rarely holds two).
fn malformed(n: usize, command_queue: &str) -> Malformed {
    use Expect::{Dead, Rejected};
    let id = format!("bad-{n}");
    let base = || {
        json!({"id": id, "gateway": "paymentz", "operation": "capture",
               "payment_id": "10000002", "amount": "1.00"})
    };
    let with = |field: &str, value: Value| {
        let mut c = base();
        c[field] = value;
        serde_json::to_vec(&c).unwrap()
    };
    let plain = BasicProperties::default();
    let (kind, expect, body, properties): (&'static str, Expect, Vec<u8>, BasicProperties) =
        if n % 100 == 99 {
            let mut c = base();
            c["padding"] = incompressible(4 * 1024 * 1024).into();
            (
                "4 MiB body",
                Dead("the message is"),
                serde_json::to_vec(&c).unwrap(),
                plain,
            )
        } else {
            match n % 33 {
                0 => (
                    "NUL in id",
                    Dead("`id` contains a control character"),
                    with("id", format!("{id}\u{0}x").into()),
                    plain,
                ),
                1 => (
                    "NUL in gateway",
                    Rejected("gateway"),
                    with("gateway", "pay\u{0}mentz".into()),
                    plain,
                ),
                2 => (
                    "NUL in account",
                    Rejected("account"),
                    with("account", "de\u{0}fault".into()),
                    plain,
                ),
                3 => (
                    "NUL in operation",
                    Rejected("operation"),
                    with("operation", "cap\u{0}ture".into()),
                    plain,
                ),
                4 => (
                    "NUL in payment_id",
                    Rejected("payment_id"),
                    with("payment_id", "1000\u{0}0002".into()),
                    plain,
                ),
                5 => (
                    "NUL in amount",
                    Rejected("amount"),
                    with("amount", "1.0\u{0}0".into()),
                    plain,
                ),
                6 => (
                    "NUL in currency",
                    Rejected("currency"),
                    with("currency", "E\u{0}R".into()),
                    plain,
                ),
                7 => (
                    "NUL in metadata",
                    Rejected("metadata"),
                    with("metadata", json!({"order": "88\u{0}12"})),
                    plain,
                ),
                8 => (
                    "NUL in a metadata key",
                    Rejected("metadata"),
                    with("metadata", json!({"or\u{0}der": 1})),
                    plain,
                ),
                9 => {
                    let mut c = base();
                    c["operation"] = "transaction_list".into();
                    c.as_object_mut().unwrap().remove("payment_id");
                    c.as_object_mut().unwrap().remove("amount");
                    c["from"] = "2026-01-0\u{0}".into();
                    c["to"] = "2026-01-02".into();
                    (
                        "NUL in from",
                        Rejected("from"),
                        serde_json::to_vec(&c).unwrap(),
                        plain,
                    )
                }
                10 => {
                    let mut headers = FieldTable::default();
                    headers.insert(
                        "x-nul".into(),
                        AMQPValue::LongString(LongString::from("a\0b")),
                    );
                    headers.insert(
                        "x-k\0ey".into(),
                        AMQPValue::LongString(LongString::from(incompressible(24_000))),
                    );
                    (
                        "NUL in a header (not JSON)",
                        Dead("not JSON"),
                        format!("not json {n}").into_bytes(),
                        plain.with_headers(headers),
                    )
                }
                11 => (
                    "NUL in correlation_id",
                    Rejected("correlation_id"),
                    serde_json::to_vec(&base()).unwrap(),
                    plain.with_correlation_id(ShortString::from(format!("c\0{n}"))),
                ),
                12 => (
                    "NUL in reply_to",
                    Rejected("reply_to"),
                    serde_json::to_vec(&base()).unwrap(),
                    plain.with_reply_to(ShortString::from(format!("q\0{n}"))),
                ),
                13 => (
                    "24 KB gateway",
                    Rejected("gateway"),
                    with("gateway", incompressible(24_000).into()),
                    plain,
                ),
                14 => (
                    "24 KB payment_id",
                    Rejected("payment_id"),
                    with("payment_id", incompressible(24_000).into()),
                    plain,
                ),
                15 => (
                    "24 KB account",
                    Rejected("account"),
                    with("account", incompressible(24_000).into()),
                    plain,
                ),
                16 => (
                    "24 KB id",
                    Dead("`id` is longer than 255 bytes"),
                    with("id", incompressible(24_000).into()),
                    plain,
                ),
                17 => (
                    "unknown field",
                    Rejected("note"),
                    with("note", "hello".into()),
                    plain,
                ),
                18 => (
                    "spaces in amount",
                    Rejected("amount"),
                    with("amount", " 10".into()),
                    plain,
                ),
                19 => (
                    "exponent amount",
                    Rejected("amount"),
                    with("amount", "1e3".into()),
                    plain,
                ),
                20 => (
                    "numeric amount",
                    Rejected("amount"),
                    with("amount", json!(10)),
                    plain,
                ),
                21 => (
                    "reply_to the command queue",
                    Rejected("reply_to"),
                    serde_json::to_vec(&base()).unwrap(),
                    plain.with_reply_to(ShortString::from(command_queue)),
                ),
                22 => (
                    "reply_to amq.direct",
                    Rejected("reply_to"),
                    serde_json::to_vec(&base()).unwrap(),
                    plain.with_reply_to(ShortString::from("amq.direct")),
                ),
                23 => (
                    "60 KB metadata",
                    Rejected("metadata"),
                    with("metadata", json!({"x": incompressible(60_000)})),
                    plain,
                ),
                24 => {
                    let mut text = String::from_utf8(serde_json::to_vec(&base()).unwrap()).unwrap();
                    text.pop();
                    text.push_str(r#","metadata":{"n":1e100000}}"#);
                    (
                        "metadata growing to 100 KB",
                        Rejected("metadata"),
                        text.into_bytes(),
                        plain,
                    )
                }
                25 => {
                    let mut text = String::from_utf8(serde_json::to_vec(&base()).unwrap()).unwrap();
                    text.pop();
                    text.push_str(&format!(
                        r#","metadata":{}1{}}}"#,
                        "{\"a\":".repeat(300),
                        "}".repeat(300)
                    ));
                    (
                        "metadata nested 300 deep",
                        Rejected("metadata"),
                        text.into_bytes(),
                        plain,
                    )
                }
                26 => (
                    "not JSON",
                    Dead("not JSON"),
                    b"{\"id\": oops".to_vec(),
                    plain,
                ),
                27 => (
                    "invalid UTF-8",
                    Dead("not JSON"),
                    b"{\"id\":\"\xff\xfe\"}".to_vec(),
                    plain,
                ),
                28 => (
                    "a JSON array",
                    Dead("not a JSON object"),
                    b"[1,2,3]".to_vec(),
                    plain,
                ),
                29 => (
                    "no id",
                    Dead("no `id` field"),
                    br#"{"gateway":"paymentz"}"#.to_vec(),
                    plain,
                ),
                30 => (
                    "numeric id",
                    Dead("`id` is not a string"),
                    with("id", json!(n)),
                    plain,
                ),
                31 => {
                    let mut c = base();
                    c["operation"] = "transaction_list".into();
                    c.as_object_mut().unwrap().remove("payment_id");
                    c.as_object_mut().unwrap().remove("amount");
                    c["from"] = "0001-01-01".into();
                    c["to"] = "9999-12-31".into();
                    (
                        "a list of 10,000 years",
                        Rejected("from"),
                        serde_json::to_vec(&c).unwrap(),
                        plain,
                    )
                }
                _ => (
                    "newline in id",
                    Dead("`id` contains a control character"),
                    with("id", format!("{id}\nFORGED").into()),
                    plain,
                ),
            }
        };
    Malformed {
        kind,
        expect,
        body,
        properties,
    }
}

fn spawn_worker(env: &TestEnv) -> ChildGuard {
    let log = std::fs::File::create(env.dir.path().join("worker.log")).unwrap();
    ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_backoffice-worker"))
            .args(["run", "--config"])
            .arg(env.config_file())
            .env_remove("AMQP_URL")
            .env_remove("DATABASE_URL")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: cargo test --release --test soak_hostile -- --ignored --nocapture"]
async fn ten_thousand_malformed_messages_among_a_thousand_valid_commands() {
    let count = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let total_malformed = count("SOAK_MALFORMED", 10_000);
    let total_valid = count("SOAK_VALID", 1_000);
    let mut env = TestEnv::new("soak-hostile").await;

    let mut worker = spawn_worker(&env);
    let pid = worker.id();
    // The worker is up once a first command comes back.
    env.publish(&pz("warm-up", "inquiry", "10000001", None))
        .await;
    env.outcome_of("warm-up").await;
    let samples: Arc<Mutex<Vec<u64>>> = Arc::default();
    let sampler = {
        let samples = samples.clone();
        tokio::spawn(async move {
            loop {
                match rss_kib(pid) {
                    Some(kib) => samples.lock().unwrap().push(kib),
                    None => return false,
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    // Interleaved: a valid command after every tenth malformed message.
    let started = Instant::now();
    let mut expected: BTreeMap<(&'static str, Expect), usize> = BTreeMap::new();
    let mut rejected_kinds: BTreeMap<String, &'static str> = BTreeMap::new();
    let mut valid_ids = Vec::with_capacity(total_valid);
    let per_valid = (total_malformed / total_valid.max(1)).max(1);
    let mut bytes = 0usize;
    let mut v = 0usize;
    for n in 0..total_malformed {
        let m = malformed(n, &env.command_queue);
        *expected.entry((m.kind, m.expect)).or_default() += 1;
        if matches!(m.expect, Expect::Rejected(_)) {
            rejected_kinds.insert(format!("bad-{n}"), m.kind);
        }
        bytes += m.body.len();
        env.publish_raw(m.body, m.properties).await;
        if n % per_valid == per_valid - 1 && v < total_valid {
            let id = format!("ok-{v}");
            let payment = 100_000_000 + 2 * v as u64;
            let mut command = if v % 2 == 0 {
                pz(&id, "capture", &payment.to_string(), Some("1.00"))
            } else {
                pz(&id, "inquiry", &(payment + 1).to_string(), None)
            };
            // Metadata a float cannot hold: it must come back digit for digit.
            command.as_object_mut().unwrap().remove("metadata");
            let mut text = command.to_string();
            text.pop();
            text.push_str(&format!(
                r#","metadata":{{"n":{v},"big":123456789012345678901234567890}}}}"#
            ));
            env.publish_raw(text.into_bytes(), BasicProperties::default())
                .await;
            valid_ids.push(id);
            v += 1;
        }
    }
    while v < total_valid {
        let id = format!("ok-{v}");
        env.publish(&pz(
            &id,
            "inquiry",
            &(100_000_001 + 2 * v as u64).to_string(),
            None,
        ))
        .await;
        valid_ids.push(id);
        v += 1;
    }
    let published_in = started.elapsed();

    // Every valid command's event, and every rejection's.
    let mut wanted: Vec<String> = valid_ids.clone();
    wanted.extend(rejected_kinds.keys().cloned());
    env.wait_all(&wanted, Duration::from_secs(900)).await;
    let expected_dead: usize = expected
        .iter()
        .filter(|((_, e), _)| matches!(e, Expect::Dead(_)))
        .map(|(_, n)| n)
        .sum();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
            .fetch_one(&env.pool)
            .await
            .unwrap();
        if dead as usize >= expected_dead {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{dead} of {expected_dead} dead letters"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let processed_in = started.elapsed();
    env.drain_events(Duration::from_secs(2)).await;

    // The same process throughout.
    assert!(
        worker.try_wait().unwrap().is_none(),
        "the worker exited: see {}",
        env.dir.path().join("worker.log").display()
    );
    sampler.abort();
    let samples = samples.lock().unwrap().clone();

    // Outcomes.
    let mut succeeded = 0usize;
    let mut not_succeeded = Vec::new();
    for id in &valid_ids {
        let first = env.seen[id]
            .iter()
            .find(|e| !e.replayed && !e.reconciled)
            .unwrap();
        if first.outcome.as_str() == "succeeded" {
            succeeded += 1;
            let big = first.metadata.as_ref().unwrap().get().to_string();
            assert!(big.contains("123456789012345678901234567890"), "{big}");
        } else {
            not_succeeded.push(first.clone());
        }
    }
    let mut rejected_by: BTreeMap<String, usize> = BTreeMap::new();
    let mut wrong = Vec::new();
    for (id, kind) in &rejected_kinds {
        let event = env.seen[id]
            .iter()
            .find(|e| !e.replayed && !e.reconciled)
            .unwrap();
        let description = event.description.clone().unwrap_or_default();
        let field = description.split(": ").next().unwrap_or("").to_string();
        let want = expected
            .keys()
            .find(|(k, _)| k == kind)
            .map(|(_, e)| *e)
            .unwrap();
        let as_wanted = matches!(want, Expect::Rejected(f) if f == field);
        if event.outcome.as_str() != "rejected" || !as_wanted {
            wrong.push(format!("{id} ({kind}): {} {description}", event.outcome));
        }
        *rejected_by
            .entry(format!(
                "{}: {field}",
                event.reason.map(|r| r.as_str()).unwrap_or("-")
            ))
            .or_default() += 1;
    }
    let dead_rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT reason, body_size FROM dead_letters ORDER BY id")
            .fetch_all(&env.pool)
            .await
            .unwrap();
    let mut dead_by: BTreeMap<String, usize> = BTreeMap::new();
    for (reason, _) in &dead_rows {
        let key = [
            "the message is",
            "`id` contains a control character",
            "`id` is longer than 255 bytes",
            "`id` is not a string",
            "not JSON",
            "not a JSON object",
            "no `id` field",
            "cannot be stored",
        ]
        .into_iter()
        .find(|p| reason.starts_with(p))
        .unwrap_or(reason.as_str());
        *dead_by.entry(key.to_string()).or_default() += 1;
    }
    let mut dead_expected: BTreeMap<String, usize> = BTreeMap::new();
    for ((_, expect), n) in &expected {
        if let Expect::Dead(prefix) = expect {
            *dead_expected.entry(prefix.to_string()).or_default() += n;
        }
    }
    if dead_by != dead_expected {
        wrong.push(format!(
            "dead letters by reason: expected {dead_expected:?}, found {dead_by:?}"
        ));
    }
    let (first, peak, last) = (
        samples.first().copied().unwrap_or(0),
        samples.iter().copied().max().unwrap_or(0),
        samples.last().copied().unwrap_or(0),
    );
    let mib = |kib: u64| kib as f64 / 1024.0;

    println!("=== hostile-input soak ===");
    println!(
        "published {total_malformed} malformed ({:.1} MiB) + {total_valid} valid messages in {:.1}s; all answered after {:.1}s",
        bytes as f64 / 1_048_576.0,
        published_in.as_secs_f64(),
        processed_in.as_secs_f64()
    );
    println!("malformed kinds sent:");
    for ((kind, expect), n) in &expected {
        println!("  {n:>5}  {kind:<28} -> {expect:?}");
    }
    println!(
        "valid commands: {total_valid}, succeeded {succeeded}, other {}",
        not_succeeded.len()
    );
    println!(
        "rejected: {} (by reason: field)",
        rejected_by.values().sum::<usize>()
    );
    for (reason, n) in &rejected_by {
        println!("  {n:>5}  {reason}");
    }
    println!("dead-lettered: {} (by reason)", dead_rows.len());
    for (reason, n) in &dead_by {
        println!("  {n:>5}  {reason}");
    }
    println!(
        "worker pid {pid} alive throughout; RSS first {:.1} MiB, peak {:.1} MiB, last {:.1} MiB ({} samples)",
        mib(first),
        mib(peak),
        mib(last),
        samples.len()
    );

    assert!(
        not_succeeded.is_empty(),
        "valid commands not succeeded: {not_succeeded:?}"
    );
    assert!(
        wrong.is_empty(),
        "answered the wrong way:\n{}",
        wrong.join("\n")
    );
    assert_eq!(
        rejected_by.values().sum::<usize>() + dead_rows.len(),
        total_malformed,
        "every malformed message is rejected or dead-lettered, once"
    );
    assert!(
        last < first + 100 * 1024,
        "RSS grew from {:.1} to {:.1} MiB",
        mib(first),
        mib(last)
    );
    let log = std::fs::read_to_string(env.dir.path().join("worker.log")).unwrap();
    assert!(!log.contains("panicked"), "{log}");
    worker.kill().unwrap();
    worker.wait().unwrap();
    env.cleanup().await;
}
