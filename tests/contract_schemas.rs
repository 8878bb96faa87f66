//! The published contract checked against the code: `schemas/*.json` are valid
//! draft 2020-12 schemas, the examples in `docs/messages.md` (and in the shared
//! contract, when it is beside the repository) satisfy them, the command schema
//! agrees with the worker's own validation case by case, and every event a
//! real worker emits, for every outcome it can reach, satisfies the result
//! schema and travels with the AMQP properties the contract promises.

use crate::common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use backoffice_worker::config::Config;
use backoffice_worker::gateways::http::HttpTransport;
use backoffice_worker::gateways::registry::Accounts;
use backoffice_worker::money::Amount;
use backoffice_worker::pipeline::intake::{self, Reading};
use backoffice_worker::simulator::{FaultKind, FaultScript, GatewayId, NewPayment};
use common::{px, pz, TestEnv};
use futures::StreamExt;
use jsonschema::Validator;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use serde_json::{json, Value};

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read_json(relative: &str) -> Value {
    let path = repo_file(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?} is not JSON: {e}"))
}

/// A validator that also asserts `format` (dates), as the schemas intend.
fn validator(relative: &str) -> Validator {
    let schema = read_json(relative);
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("{relative} does not compile: {e}"))
}

fn command_schema() -> Validator {
    validator("schemas/command.schema.json")
}

fn result_schema() -> Validator {
    validator("schemas/result.schema.json")
}

/// Every error, with where it is, for a readable failure.
fn errors(validator: &Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

/// The ```json blocks of a Markdown file.
fn json_blocks(markdown: &str) -> Vec<Value> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_start()) {
            (None, "```json") => current = Some(String::new()),
            (Some(text), "```") => {
                let value = serde_json::from_str(text)
                    .unwrap_or_else(|e| panic!("a json block does not parse: {e}\n{text}"));
                blocks.push(value);
                current = None;
            }
            (Some(text), _) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "an unterminated ```json block");
    blocks
}

/// Validates each block as a result event (it has `command_id`) or a command.
fn check_examples(source: &str, markdown: &str) -> (usize, usize) {
    let (commands, results) = (command_schema(), result_schema());
    let (mut n_commands, mut n_results) = (0, 0);
    for block in json_blocks(markdown) {
        if block.get("command_id").is_some() {
            n_results += 1;
            assert_eq!(
                errors(&results, &block),
                Vec::<String>::new(),
                "{source}: {block}"
            );
        } else {
            n_commands += 1;
            assert_eq!(
                errors(&commands, &block),
                Vec::<String>::new(),
                "{source}: {block}"
            );
        }
    }
    (n_commands, n_results)
}

#[test]
fn the_schemas_are_valid_draft_2020_12_and_their_own_examples_pass() {
    for (file, validator) in [
        ("schemas/command.schema.json", command_schema()),
        ("schemas/result.schema.json", result_schema()),
    ] {
        let schema = read_json(file);
        assert_eq!(
            schema["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{file}"
        );
        if let Err(e) = jsonschema::draft202012::meta::validate(&schema) {
            panic!("{file} is not a valid 2020-12 schema: {e}");
        }
        let examples = schema["examples"].as_array().expect("examples");
        assert!(!examples.is_empty(), "{file}");
        for example in examples {
            assert_eq!(
                errors(&validator, example),
                Vec::<String>::new(),
                "{file}: {example}"
            );
        }
    }
    // The meta-schema check can fail: a schema with a mistyped keyword value.
    assert!(jsonschema::draft202012::meta::validate(&json!({"type": "strin"})).is_err());
}

#[test]
fn the_examples_in_the_message_documents_satisfy_the_schemas() {
    let ours = std::fs::read_to_string(repo_file("docs/messages.md")).unwrap();
    let (commands, results) = check_examples("docs/messages.md", &ours);
    assert!(commands >= 3, "docs/messages.md shows commands: {commands}");
    assert!(results >= 3, "docs/messages.md shows events: {results}");

    // The shared contract travels beside the repository (`shared/`); when it is
    // there, its examples must pass too, and the one example command of the
    // contract must be in our document verbatim.
    let shared = [
        "../shared/spec/messages.md",
        "../../shared/spec/messages.md",
    ]
    .iter()
    .map(|p| repo_file(p))
    .find(|p| p.exists());
    match shared {
        Some(path) => {
            let text = std::fs::read_to_string(&path).unwrap();
            let (commands, results) = check_examples(&path.display().to_string(), &text);
            assert!(
                commands >= 1 && results >= 1,
                "{path:?}: {commands} commands, {results} events"
            );
            let contract_command = json_blocks(&text)
                .into_iter()
                .find(|b| b.get("command_id").is_none())
                .unwrap();
            assert!(
                json_blocks(&ours).contains(&contract_command),
                "docs/messages.md lacks the contract's example command"
            );
        }
        None => {
            eprintln!("shared/spec/messages.md is not beside the repository; checked ours only")
        }
    }
}

/// What the schema and the worker each say about one command.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// Both accept.
    Valid,
    /// Both refuse.
    Invalid,
    /// The schema refuses what the worker tolerates (documented in the schema).
    SchemaStricter,
    /// The worker refuses what no JSON Schema can express (documented too).
    WorkerStricter,
}

fn sample_accounts() -> Accounts {
    let text = r#"
[accounts.paymentz.default]
base_url = "http://127.0.0.1:9"
partner_id = "197"
username = "sandbox-merchant"
member_id = "11359"
secure_key = "sandbox-secure-key"

[accounts.praxis.default]
base_url = "http://127.0.0.1:9"
merchant_id = "Test-Integration-Merchant"
merchant_secret = "sandbox-merchant-secret"
frontend = "Integration TEST USD"
"#;
    let config = Config::parse(Path::new("sample.toml"), text, |_| None).expect("sample config");
    config.clients(&HttpTransport::new(config.http.clone()))
}

/// Whether the worker would run the command (true) or reject / dead-letter it.
fn worker_accepts(accounts: &Accounts, command: &Value) -> bool {
    match intake::read(&serde_json::to_vec(command).unwrap()) {
        Reading::Unreadable(_) | Reading::Rejected { .. } => false,
        Reading::Command(command) => intake::validate(&command, accounts).is_ok(),
    }
}

#[test]
fn the_command_schema_agrees_with_the_workers_validation() {
    use Expect::*;
    let with = |base: Value, changes: Value| {
        let mut c = base;
        for (k, v) in changes.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    let refund = json!({"id": "c-1", "gateway": "paymentz", "operation": "refund",
                        "payment_id": "55361", "amount": "10.00"});
    let list = json!({"id": "l-1", "gateway": "paymentz", "operation": "transaction_list",
                      "from": "2026-11-01", "to": "2026-11-30"});
    let px_capture = json!({"id": "p-1", "gateway": "praxis", "operation": "capture",
                            "payment_id": "20000001"});
    #[rustfmt::skip]
    let cases: Vec<(&str, Value, Expect)> = vec![
        ("the contract's example", json!({"id": "order-8812-refund-1", "gateway": "paymentz",
            "account": "default", "operation": "refund", "payment_id": "55361", "amount": "10.00",
            "currency": "EUR", "metadata": {"order_id": "8812"}}), Valid),
        ("amount without decimals", with(refund.clone(), json!({"amount": "10"})), Valid),
        ("amount with one decimal", with(refund.clone(), json!({"amount": "10.5"})), Valid),
        ("one cent", with(refund.clone(), json!({"amount": "0.01"})), Valid),
        ("leading zeros", with(refund.clone(), json!({"amount": "007.10"})), Valid),
        ("the largest amount", with(refund.clone(), json!({"amount": "9999999999.99"})), Valid),
        ("capture", with(refund.clone(), json!({"operation": "capture"})), Valid),
        ("cancel", with(refund.clone(), json!({"operation": "cancel", "amount": null})), Valid),
        ("inquiry", with(refund.clone(), json!({"operation": "inquiry", "amount": null})), Valid),
        ("every id character", with(refund.clone(), json!({"id": "a.b_c:d-E9"})), Valid),
        ("a 128-character id", with(refund.clone(), json!({"id": "x".repeat(128)})), Valid),
        ("a tilde in a Paymentz id", with(refund.clone(), json!({"payment_id": "55~361"})), Valid),
        ("a transaction list", list.clone(), Valid),
        ("a one-day list", with(list.clone(), json!({"to": "2026-11-01"})), Valid),
        ("Praxis capture", px_capture.clone(), Valid),
        ("Praxis cancel", with(px_capture.clone(), json!({"operation": "cancel"})), Valid),
        ("Praxis inquiry", with(px_capture.clone(), json!({"operation": "inquiry"})), Valid),
        ("currency", with(px_capture.clone(), json!({"currency": "USD"})), Valid),
        ("metadata", with(px_capture.clone(), json!({"metadata": {"a": [1, {"b": null}]}})), Valid),
        // Refused by both.
        ("no id", with(refund.clone(), json!({"id": null})), Invalid),
        ("an empty id", with(refund.clone(), json!({"id": ""})), Invalid),
        ("a space in the id", with(refund.clone(), json!({"id": "has space"})), Invalid),
        ("a slash in the id", with(refund.clone(), json!({"id": "a/b"})), Invalid),
        ("a 129-character id", with(refund.clone(), json!({"id": "x".repeat(129)})), Invalid),
        ("a numeric id", with(refund.clone(), json!({"id": 42})), Invalid),
        ("no gateway", with(refund.clone(), json!({"gateway": null})), Invalid),
        ("an unknown gateway", with(refund.clone(), json!({"gateway": "stripe"})), Invalid),
        ("no operation", with(refund.clone(), json!({"operation": null})), Invalid),
        ("an unknown operation", with(refund.clone(), json!({"operation": "void"})), Invalid),
        ("an empty account", with(refund.clone(), json!({"account": ""})), Invalid),
        ("no payment_id", with(refund.clone(), json!({"payment_id": null})), Invalid),
        ("a space in payment_id", with(refund.clone(), json!({"payment_id": "55 361"})), Invalid),
        ("a slash in payment_id", with(refund.clone(), json!({"payment_id": "a/b"})), Invalid),
        ("dots in payment_id", with(refund.clone(), json!({"payment_id": "a..b"})), Invalid),
        ("a 65-character payment_id", with(refund.clone(), json!({"payment_id": "1".repeat(65)})), Invalid),
        ("a negative amount", with(refund.clone(), json!({"amount": "-1"})), Invalid),
        ("three decimals", with(refund.clone(), json!({"amount": "1.005"})), Invalid),
        ("zero", with(refund.clone(), json!({"amount": "0"})), Invalid),
        ("zero with decimals", with(refund.clone(), json!({"amount": "000.00"})), Invalid),
        ("a trailing dot", with(refund.clone(), json!({"amount": "10."})), Invalid),
        ("no integer part", with(refund.clone(), json!({"amount": ".5"})), Invalid),
        ("an exponent", with(refund.clone(), json!({"amount": "1e3"})), Invalid),
        ("a comma", with(refund.clone(), json!({"amount": "10,00"})), Invalid),
        ("11 integer digits", with(refund.clone(), json!({"amount": "12345678901"})), Invalid),
        ("a JSON number", with(refund.clone(), json!({"amount": 10})), Invalid),
        ("a refund without amount", with(refund.clone(), json!({"amount": null})), Invalid),
        ("a capture without amount", with(refund.clone(), json!({"operation": "capture", "amount": null})), Invalid),
        ("a Paymentz cancel with amount", with(refund.clone(), json!({"operation": "cancel"})), Invalid),
        ("a Paymentz inquiry with amount", with(refund.clone(), json!({"operation": "inquiry"})), Invalid),
        ("a lower-case currency", with(refund.clone(), json!({"currency": "eur"})), Invalid),
        ("a long currency", with(refund.clone(), json!({"currency": "EURO"})), Invalid),
        ("metadata as an array", with(refund.clone(), json!({"metadata": [1]})), Invalid),
        ("metadata as a string", with(refund.clone(), json!({"metadata": "x"})), Invalid),
        ("dates on a refund", with(refund.clone(), json!({"from": "2026-11-01", "to": "2026-11-02"})), Invalid),
        ("a list without to", with(list.clone(), json!({"to": null})), Invalid),
        ("a list without from", with(list.clone(), json!({"from": null})), Invalid),
        ("month 13", with(list.clone(), json!({"from": "2026-13-01"})), Invalid),
        ("a day-first date", with(list.clone(), json!({"from": "01/11/2026"})), Invalid),
        ("a date-time", with(list.clone(), json!({"to": "2026-11-30T00:00:00Z"})), Invalid),
        ("a Praxis refund", with(px_capture.clone(), json!({"operation": "refund", "amount": "1.00"})), Invalid),
        ("a Praxis list", with(list.clone(), json!({"gateway": "praxis"})), Invalid),
        ("a Praxis capture with amount", with(px_capture.clone(), json!({"amount": "5.00"})), Invalid),
        ("a Praxis cancel with amount", with(px_capture.clone(), json!({"operation": "cancel", "amount": "5.00"})), Invalid),
        ("a Praxis id with a leading zero", with(px_capture.clone(), json!({"payment_id": "020000001"})), Invalid),
        ("a Praxis id with letters", with(px_capture.clone(), json!({"payment_id": "tx-1"})), Invalid),
        ("an unknown field", with(refund.clone(), json!({"note": "x"})), Invalid),
        ("spaces around the amount", with(refund.clone(), json!({"amount": " 10.00 "})), Invalid),
        ("a plus sign", with(refund.clone(), json!({"amount": "+10.00"})), Invalid),
        ("an amount of 300 characters", with(refund.clone(), json!({"amount": format!("{}1", "0".repeat(299))})), Invalid),
        ("an amount on a Praxis inquiry", with(px_capture.clone(), json!({"operation": "inquiry", "amount": "5.00"})), Invalid),
        ("a list in 1999", with(list.clone(), json!({"from": "1999-12-31"})), Invalid),
        ("a list in year 9999", with(list.clone(), json!({"to": "9999-12-31"})), Invalid),
        ("an account of 65 characters", with(refund.clone(), json!({"account": "a".repeat(65)})), Invalid),
        ("a newline in the account", with(refund.clone(), json!({"account": "eu\n2"})), Invalid),
        ("a list of a whole year", with(list.clone(), json!({"from": "2024-01-01", "to": "2024-12-31"})), Valid),
        // The schema is stricter than the worker's reading: null means absent.
        ("null for an optional field", with(refund.clone(), json!({"currency": null, "metadata": null})), SchemaStricter),
        // What JSON Schema cannot say.
        ("from after to", with(list.clone(), json!({"from": "2026-12-01"})), WorkerStricter),
        ("metadata over 4 KiB", with(refund.clone(), json!({"metadata": {"x": "y".repeat(5000)}})), WorkerStricter),
        ("a NUL in the metadata", with(refund.clone(), json!({"metadata": {"x": "a\u{0}b"}})), WorkerStricter),
        ("a list of 367 days", with(list.clone(), json!({"from": "2024-01-01", "to": "2025-01-01"})), WorkerStricter),
        ("an account that is not configured", with(refund.clone(), json!({"account": "nope"})), WorkerStricter),
        ("a Praxis id above i64", with(px_capture.clone(), json!({"payment_id": "9999999999999999999"})), WorkerStricter),
    ];
    // `with` cannot express a null that must stay: put it back by hand.
    let cases: Vec<(&str, Value, Expect)> = cases
        .into_iter()
        .map(|(name, mut c, e)| {
            if name == "null for an optional field" {
                c["currency"] = Value::Null;
                c["metadata"] = Value::Null;
            }
            (name, c, e)
        })
        .collect();

    let schema = command_schema();
    let accounts = sample_accounts();
    let mut wrong = Vec::new();
    for (name, command, expect) in &cases {
        let by_schema = schema.is_valid(command);
        let by_worker = worker_accepts(&accounts, command);
        let expected = match expect {
            Valid => (true, true),
            Invalid => (false, false),
            SchemaStricter => (false, true),
            WorkerStricter => (true, false),
        };
        if (by_schema, by_worker) != expected {
            wrong.push(format!(
                "{name}: schema {by_schema}, worker {by_worker}, expected {expected:?}: {command}\n  {:?}",
                errors(&schema, command)
            ));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

#[test]
fn the_result_schema_refuses_events_that_break_the_contract() {
    let schema = result_schema();
    let good = read_json("schemas/result.schema.json")["examples"][0].clone();
    assert!(schema.is_valid(&good));
    let with = |changes: Value| {
        let mut e = good.clone();
        for (k, v) in changes.as_object().unwrap() {
            e[k] = v.clone();
        }
        e
    };
    let without = |field: &str| {
        let mut e = good.clone();
        e.as_object_mut().unwrap().remove(field);
        e
    };
    let bad = [
        ("an unknown outcome", with(json!({"outcome": "maybe"}))),
        (
            "a reason on a success",
            with(json!({"reason": "invalid_command"})),
        ),
        (
            "a rejection without reason",
            with(json!({"outcome": "rejected", "attempts": 0})),
        ),
        (
            "an unknown reason",
            with(json!({"outcome": "rejected", "reason": "bad", "attempts": 0})),
        ),
        (
            "attempts on a rejection",
            with(json!({"outcome": "rejected", "reason": "invalid_command", "attempts": 1})),
        ),
        ("an amount not normalized", with(json!({"amount": "10.5"}))),
        ("an amount as a number", with(json!({"amount": 10.5}))),
        (
            "no time zone",
            with(json!({"occurred_at": "2026-11-22T10:15:03.120"})),
        ),
        (
            "an impossible time",
            with(json!({"occurred_at": "2026-11-22T25:15:03.120Z"})),
        ),
        (
            "seconds only",
            with(json!({"occurred_at": "2026-11-22T10:15:03Z"})),
        ),
        (
            "a reconciled unknown",
            with(json!({"outcome": "unknown", "reconciled": true})),
        ),
        ("negative attempts", with(json!({"attempts": -1}))),
        ("replayed as text", with(json!({"replayed": "false"}))),
        ("response as a string", with(json!({"response": "ok"}))),
        (
            "no payment_id on a refund",
            with(json!({"payment_id": null})),
        ),
        (
            "an unknown gateway on a success",
            with(json!({"gateway": "stripe"})),
        ),
        ("no command_id", without("command_id")),
        ("no outcome", without("outcome")),
        ("no metadata key", without("metadata")),
        ("no occurred_at", without("occurred_at")),
    ];
    for (name, event) in bad {
        assert!(!schema.is_valid(&event), "{name} passed: {event}");
    }
    // A rejected command may carry anything it was sent with.
    let rejected = with(json!({"outcome": "rejected", "reason": "invalid_command",
        "gateway": "stripe", "operation": null, "payment_id": null, "amount": "10.001",
        "command_id": "has space", "attempts": 0, "gateway_status": null,
        "gateway_code": null, "reference": null, "description": "id: must be 1 to 128 characters of A-Z a-z 0-9 . _ : -"}));
    assert_eq!(errors(&schema, &rejected), Vec::<String>::new());
    // Older events without `reconciled` still pass.
    assert!(schema.is_valid(&without("reconciled")));
}

/// docker-compose.yml mounts docker/worker.toml into the worker and the
/// simulator: a key the worker refuses would stop the stack at start-up.
#[test]
fn the_worker_config_of_the_container_is_accepted_by_the_worker() {
    let path = repo_file("docker/worker.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let env = |name: &str| match name {
        "AMQP_URL" => Some("amqp://backoffice:backoffice@rabbitmq:5672/%2f".to_string()),
        "DATABASE_URL" => Some("postgres://postgres:backoffice@postgres:5432/backoffice".into()),
        _ => None,
    };
    let config = Config::parse(&path, &text, env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.amqp.command_queue, "backoffice.commands");
    assert_eq!(config.amqp.result_exchange, "backoffice.events");
    assert_eq!(config.amqp.dead_letter_queue, "backoffice.commands.dead");
    let mut accounts: Vec<String> = config.accounts.iter().map(|a| a.table_name()).collect();
    accounts.sort();
    assert_eq!(
        accounts,
        ["accounts.paymentz.default", "accounts.praxis.default"]
    );
}

/// One delivery from the result exchange, kept raw: the schema must see the
/// bytes the worker sent, not a re-serialization through `ResultEvent`.
struct Received {
    body: Value,
    routing_key: String,
    properties: BasicProperties,
}

/// What must have arrived for a command before the test is complete.
struct Wanted {
    id: &'static str,
    outcome: &'static str,
    reason: Option<&'static str>,
    replayed: bool,
    reconciled: bool,
}

const fn want(id: &'static str, outcome: &'static str) -> Wanted {
    Wanted {
        id,
        outcome,
        reason: None,
        replayed: false,
        reconciled: false,
    }
}

impl Wanted {
    const fn rejected(id: &'static str, reason: &'static str) -> Wanted {
        Wanted {
            reason: Some(reason),
            ..want(id, "rejected")
        }
    }

    fn matches(&self, body: &Value) -> bool {
        body["command_id"] == self.id
            && body["outcome"] == self.outcome
            && body.get("reason").and_then(Value::as_str) == self.reason
            && body["replayed"] == self.replayed
            && body["reconciled"] == self.reconciled
    }
}

/// Reads events until every wanted one has arrived.
async fn collect(env: &mut TestEnv, received: &mut Vec<Received>, wanted: &[Wanted]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let missing: Vec<&str> = wanted
            .iter()
            .filter(|w| !received.iter().any(|r| w.matches(&r.body)))
            .map(|w| w.id)
            .collect();
        if missing.is_empty() {
            return;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some((_, delivery)) = env.next_event(left).await else {
            let seen: Vec<String> = received.iter().map(|r| r.body.to_string()).collect();
            panic!("no event for {missing:?}; received:\n{}", seen.join("\n"));
        };
        received.push(Received {
            body: serde_json::from_slice(&delivery.data).expect("an event is JSON"),
            routing_key: delivery.routing_key.as_str().to_string(),
            properties: delivery.properties.clone(),
        });
    }
}

fn text(value: &Option<lapin::types::ShortString>) -> Option<&str> {
    value.as_ref().map(|s| s.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_a_real_worker_emits_satisfies_the_result_schema() {
    let mut env = TestEnv::new("contract").await;
    let sim = env.sim.sim().clone();
    // A cancelled payment of each gateway: capturing it is a business refusal.
    sim.create_payment(
        NewPayment::new(GatewayId::Paymentz, Amount::from_minor(5_000))
            .id("55400")
            .state("authcancelled"),
    )
    .unwrap();
    sim.create_payment(
        NewPayment::new(GatewayId::Praxis, Amount::from_minor(5_000))
            .id("30000500")
            .state("cancelled"),
    )
    .unwrap();
    // The gateway never processes this capture: failed once attempts are spent.
    sim.script_fault(
        FaultScript::new(FaultKind::RateLimit, 100)
            .gateway(GatewayId::Paymentz)
            .operation("CP")
            .payment_id("10000040"),
    )
    .unwrap();
    // This capture applies but its answer is lost, and so are the next two
    // inquiries: unknown, then settled by background reconciliation.
    sim.script_fault(
        FaultScript::new(FaultKind::ErrorAfter, 1)
            .gateway(GatewayId::Praxis)
            .operation("deposit-capture")
            .payment_id("30000600"),
    )
    .unwrap();
    sim.script_fault(
        FaultScript::new(FaultKind::ErrorBefore, 2)
            .gateway(GatewayId::Praxis)
            .operation("find-transaction")
            .payment_id("30000600"),
    )
    .unwrap();

    let worker = env.start_worker();

    // A reply queue, consumed (not polled) for the reply_to copy.
    let reply_channel = env.amqp.create_channel().await.unwrap();
    let reply_queue = reply_channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut replies = reply_channel
        .basic_consume(
            reply_queue.name().as_str().into(),
            "contract-replies".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    let mut pz_refund = pz("ct-pz-refund", "refund", "10000001", Some("25.00"));
    pz_refund["currency"] = "EUR".into();
    let pz_capture = pz("ct-pz-capture", "capture", "10000002", Some("10.5"));
    let mut unknown_account = pz("ct-rej-account", "capture", "10000006", Some("1.00"));
    unknown_account["account"] = "nope".into();
    let first: Vec<Value> = vec![
        pz_capture.clone(),
        pz_refund.clone(),
        pz("ct-pz-cancel", "cancel", "10000004", None),
        pz("ct-pz-inquiry", "inquiry", "10000003", None),
        px("ct-px-capture", "capture", "20000001"),
        px("ct-px-cancel", "cancel", "20000002"),
        px("ct-px-inquiry", "inquiry", "20000003"),
        pz("ct-pz-declined", "capture", "55400", Some("5.00")),
        px("ct-px-declined", "capture", "30000500"),
        pz("ct-failed", "capture", "10000040", Some("5.00")),
        px("ct-unknown", "capture", "30000600"),
        pz("ct-rej-invalid", "refund", "10000001", Some("10.001")),
        px("ct-rej-unsupported", "refund", "20000001"),
        unknown_account,
        json!({"id": "ct-rej-type", "gateway": "paymentz", "operation": "refund",
               "payment_id": "10000001", "amount": 10}),
        json!({"id": "ct rej space", "gateway": "paymentz", "operation": "inquiry",
               "payment_id": "10000001"}),
        json!({"id": "ct-rej-nogateway", "operation": "inquiry", "payment_id": "10000001"}),
    ];
    for command in &first {
        env.publish(command).await;
    }
    let reply_command = pz("ct-reply", "inquiry", "10000005", None);
    env.publish_raw(
        serde_json::to_vec(&reply_command).unwrap(),
        BasicProperties::default()
            .with_reply_to(reply_queue.name().clone())
            .with_correlation_id("corr-ct-reply".into()),
    )
    .await;

    let mut received = Vec::new();
    collect(
        &mut env,
        &mut received,
        &[
            want("ct-pz-capture", "succeeded"),
            want("ct-pz-refund", "succeeded"),
            want("ct-pz-cancel", "succeeded"),
            want("ct-pz-inquiry", "succeeded"),
            want("ct-px-capture", "succeeded"),
            want("ct-px-cancel", "succeeded"),
            want("ct-px-inquiry", "succeeded"),
            want("ct-pz-declined", "declined"),
            want("ct-px-declined", "declined"),
            want("ct-failed", "failed"),
            want("ct-unknown", "unknown"),
            Wanted::rejected("ct-rej-invalid", "invalid_command"),
            Wanted::rejected("ct-rej-unsupported", "unsupported_operation"),
            Wanted::rejected("ct-rej-account", "unknown_account"),
            Wanted::rejected("ct-rej-type", "invalid_command"),
            Wanted::rejected("ct rej space", "invalid_command"),
            Wanted::rejected("ct-rej-nogateway", "invalid_command"),
            want("ct-reply", "succeeded"),
        ],
    )
    .await;

    // Second round, once the originals are decided: a replay (same meaning,
    // other spelling), a conflict, and a list that sees the payments above.
    let mut replay = pz_capture.clone();
    replay["amount"] = "10.50".into();
    env.publish(&replay).await;
    let mut conflict = pz_refund.clone();
    conflict["amount"] = "99.00".into();
    env.publish(&conflict).await;
    let (from, to) = common::list_window();
    env.publish(&json!({"id": "ct-pz-list", "gateway": "paymentz",
        "operation": "transaction_list", "from": from, "to": to}))
        .await;
    collect(
        &mut env,
        &mut received,
        &[
            Wanted {
                replayed: true,
                ..want("ct-pz-capture", "succeeded")
            },
            Wanted::rejected("ct-pz-refund", "idempotency_conflict"),
            want("ct-pz-list", "succeeded"),
            Wanted {
                reconciled: true,
                ..want("ct-unknown", "succeeded")
            },
        ],
    )
    .await;

    let reply = tokio::time::timeout(Duration::from_secs(30), replies.next())
        .await
        .expect("a reply on reply_to")
        .expect("the reply consumer is open")
        .expect("a reply delivery");
    reply.ack(BasicAckOptions::default()).await.unwrap();

    // Every event: the schema, the routing key, and the AMQP properties.
    let schema = result_schema();
    let known: HashSet<String> = read_json("schemas/result.schema.json")["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let mut message_ids = HashMap::new();
    for r in &received {
        let body = &r.body;
        let id = body["command_id"].as_str().expect("command_id");
        assert_eq!(errors(&schema, body), Vec::<String>::new(), "{body}");
        let undocumented: Vec<&String> = body
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| !known.contains(*k))
            .collect();
        assert!(
            undocumented.is_empty(),
            "undocumented {undocumented:?}: {body}"
        );
        assert!(body["reconciled"].is_boolean(), "{body}");
        let p = &r.properties;
        assert_eq!(*p.delivery_mode(), Some(2), "persistent: {body}");
        assert_eq!(text(p.content_type()), Some("application/json"), "{body}");
        assert_eq!(text(p.correlation_id()), Some(id), "{body}");
        let message_id = text(p.message_id()).expect("a message_id");
        uuid::Uuid::parse_str(message_id).expect("message_id is a UUID");
        if let Some(earlier) = message_ids.insert(message_id.to_string(), body.clone()) {
            // At-least-once: a second delivery of one message is the same event.
            assert_eq!(earlier, *body, "one message_id, two bodies");
        }
        let segment = |field: &str, known: &[&str]| {
            body[field]
                .as_str()
                .filter(|v| known.contains(v))
                .unwrap_or("unknown")
                .to_string()
        };
        let expected_key = format!(
            "{}.{}.{}",
            segment("gateway", &["paymentz", "praxis"]),
            segment(
                "operation",
                &["capture", "refund", "cancel", "inquiry", "transaction_list"]
            ),
            body["outcome"].as_str().unwrap()
        );
        assert_eq!(r.routing_key, expected_key, "{body}");
    }
    // Each outcome and reason the contract names was produced and checked.
    let outcomes: HashSet<&str> = received
        .iter()
        .filter_map(|r| r.body["outcome"].as_str())
        .collect();
    for o in ["succeeded", "declined", "failed", "unknown", "rejected"] {
        assert!(outcomes.contains(o), "no {o} event");
    }
    let reasons: HashSet<&str> = received
        .iter()
        .filter_map(|r| r.body.get("reason").and_then(Value::as_str))
        .collect();
    for reason in [
        "invalid_command",
        "unsupported_operation",
        "unknown_account",
        "idempotency_conflict",
    ] {
        assert!(reasons.contains(reason), "no {reason} event");
    }
    // Every operation of both gateways succeeded at least once.
    for (gateway, operations) in [
        (
            "paymentz",
            &["capture", "refund", "cancel", "inquiry", "transaction_list"][..],
        ),
        ("praxis", &["capture", "cancel", "inquiry"][..]),
    ] {
        for operation in operations {
            assert!(
                received
                    .iter()
                    .any(|r| r.routing_key == format!("{gateway}.{operation}.succeeded")),
                "no succeeded {gateway} {operation}"
            );
        }
    }
    // The harness saw the same events, parsed.
    let parsed: usize = env.seen.values().map(Vec::len).sum();
    assert_eq!(parsed, received.len());

    // The reply_to copy: same event and message id, the command's correlation id.
    let reply_body: Value = serde_json::from_slice(&reply.data).unwrap();
    assert_eq!(errors(&schema, &reply_body), Vec::<String>::new());
    assert_eq!(reply_body["command_id"], "ct-reply");
    assert_eq!(
        text(reply.properties.correlation_id()),
        Some("corr-ct-reply")
    );
    assert_eq!(*reply.properties.delivery_mode(), Some(2));
    assert_eq!(
        text(reply.properties.content_type()),
        Some("application/json")
    );
    let on_exchange = received
        .iter()
        .find(|r| r.body["command_id"] == "ct-reply")
        .unwrap();
    assert_eq!(
        text(reply.properties.message_id()),
        text(on_exchange.properties.message_id())
    );
    assert_eq!(reply_body, on_exchange.body);

    // Field by field, the parts of the contract a schema cannot see.
    let event = |id: &str, pick: &dyn Fn(&Value) -> bool| -> Value {
        received
            .iter()
            .map(|r| &r.body)
            .find(|b| b["command_id"] == id && pick(b))
            .unwrap_or_else(|| panic!("no such event for {id}"))
            .clone()
    };
    let original = |b: &Value| b["replayed"] == false && b["reconciled"] == false;
    let capture = event("ct-pz-capture", &original);
    assert_eq!(capture["amount"], "10.50", "normalized");
    assert_eq!(capture["metadata"], json!({"test": "ct-pz-capture"}));
    assert!(capture["reference"].is_string(), "{capture}");
    let replayed = event("ct-pz-capture", &|b| b["replayed"] == true);
    for field in ["outcome", "reference", "attempts", "amount", "metadata"] {
        assert_eq!(replayed[field], capture[field], "{field}");
    }
    assert!(event("ct-pz-inquiry", &original)["response"]
        .as_object()
        .is_some_and(|r| !r.is_empty()));
    assert!(event("ct-pz-list", &original)["response"]["transactions"].is_array());
    let conflict = event("ct-pz-refund", &|b| b["outcome"] == "rejected");
    assert_eq!(conflict["amount"], "99.00");
    let refund = event("ct-pz-refund", &original);
    assert_eq!(
        (refund["amount"].as_str(), refund["currency"].as_str()),
        (Some("25.00"), Some("EUR"))
    );
    let invalid = event("ct-rej-invalid", &original);
    assert!(invalid["description"]
        .as_str()
        .unwrap()
        .starts_with("amount"));
    let failed = event("ct-failed", &original);
    assert_eq!(failed["attempts"], 4, "max_attempts of the test config");
    let unknown = event("ct-unknown", &original);
    let settled = event("ct-unknown", &|b| b["reconciled"] == true);
    assert_eq!(settled["replayed"], false);
    assert_eq!(settled["attempts"], unknown["attempts"]);
    assert_eq!(sim.ledger_for(GatewayId::Praxis, "30000600").len(), 1);

    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_message_is_dead_lettered_with_its_reason_as_documented() {
    let env = TestEnv::new("contract-dead").await;
    let worker = env.start_worker();
    let channel = env.amqp.create_channel().await.unwrap();
    let mut dead = channel
        .basic_consume(
            env.dead_letter_queue.as_str().into(),
            "contract-dead".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    env.publish_raw(
        br#"{"gateway":"paymentz","operation":"refund"}"#.to_vec(),
        BasicProperties::default().with_message_id("producer-msg-1".into()),
    )
    .await;
    let delivery = tokio::time::timeout(Duration::from_secs(30), dead.next())
        .await
        .expect("a dead letter")
        .unwrap()
        .unwrap();
    delivery.ack(BasicAckOptions::default()).await.unwrap();
    assert_eq!(
        delivery.data,
        br#"{"gateway":"paymentz","operation":"refund"}"#
    );
    let headers = delivery.properties.headers().clone().unwrap_or_default();
    let header = |name: &str| match headers.inner().get(name) {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(header("x-backoffice-reason"), "no `id` field");
    assert!(header("x-backoffice-dead-letter-id").parse::<i64>().is_ok());
    assert_eq!(*delivery.properties.delivery_mode(), Some(2));
    assert_eq!(
        text(delivery.properties.message_id()),
        Some("producer-msg-1")
    );
    worker.stop().await;
    env.cleanup().await;
}

/// The Rust example of `docs/messages.md`, compiled and run here: the test
/// below checks that the document shows exactly this code.
mod example {
    // BEGIN docs/messages.md rust example
    use std::error::Error;

    use futures::StreamExt;
    use lapin::options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
        ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    };
    use lapin::types::{AMQPValue, FieldTable};
    use lapin::{BasicProperties, Channel, Confirmation, Connection, ExchangeKind};
    use serde_json::Value;

    /// Publishes `command` and waits for its result event on a private reply
    /// queue. Wrap it in `tokio::time::timeout`: a worker that is down answers late.
    pub async fn send_and_wait(
        connection: &Connection,
        command_queue: &str,
        command: &Value,
    ) -> Result<Value, Box<dyn Error>> {
        let id = command["id"].as_str().ok_or("a command needs an id")?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        // Server-named, exclusive, auto-deleted: it goes away with this channel.
        let replies = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        let mut results = channel
            .basic_consume(
                replies.name().clone(),
                "send-and-wait".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let properties = BasicProperties::default()
            .with_delivery_mode(2) // persistent
            .with_content_type("application/json".into())
            .with_reply_to(replies.name().clone())
            .with_correlation_id(id.into());
        let confirmation = channel
            .basic_publish(
                "".into(), // the default exchange: routing key = queue name
                command_queue.into(),
                BasicPublishOptions {
                    mandatory: true, // returned, not dropped, if the queue is missing
                    ..BasicPublishOptions::default()
                },
                &serde_json::to_vec(command)?,
                properties,
            )
            .await?
            .await?;
        if !matches!(confirmation, Confirmation::Ack(None)) {
            return Err(format!("the broker did not take the command: {confirmation:?}").into());
        }
        while let Some(delivery) = results.next().await {
            let delivery = delivery?;
            delivery.ack(BasicAckOptions::default()).await?;
            let correlation_id = delivery.properties.correlation_id().as_ref();
            if correlation_id.map(|c| c.as_str()) == Some(id) {
                // The outcome. Only an `unknown` one is followed by a second
                // event ("reconciled": true), on the exchange (and here while
                // this queue exists).
                let event = serde_json::from_slice(&delivery.data)?;
                channel.close(200, "done".into()).await?;
                return Ok(event);
            }
        }
        Err("the channel closed before the result arrived".into())
    }

    /// Once, at deployment: a durable queue of your own for the results, bound
    /// with `binding_key` (`#` for all, `paymentz.refund.*`, `*.*.unknown`...).
    pub async fn declare_results_queue(
        channel: &Channel,
        exchange: &str,
        queue: &str,
        binding_key: &str,
    ) -> Result<(), Box<dyn Error>> {
        // Declared exactly as the worker declares it, so either may come first.
        channel
            .exchange_declare(
                exchange.into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(queue.into(), durable, arguments)
            .await?;
        channel
            .queue_bind(
                queue.into(),
                exchange.into(),
                binding_key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(())
    }

    /// Hands each result event to `handle` with its `message_id`, and acks it
    /// only after `handle` succeeded. Delivery is at least once: `handle` must
    /// do nothing for a `message_id` it has already processed (store it under a
    /// unique key in the same transaction as its effect). Returns when `handle`
    /// says `false` (stop).
    pub async fn follow_results(
        channel: &Channel,
        queue: &str,
        mut handle: impl FnMut(&str, &Value) -> Result<bool, Box<dyn Error>>,
    ) -> Result<(), Box<dyn Error>> {
        channel.basic_qos(100, BasicQosOptions::default()).await?;
        let mut events = channel
            .basic_consume(
                queue.into(),
                "follow-results".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        while let Some(delivery) = events.next().await {
            let delivery = delivery?;
            let message_id = delivery.properties.message_id().as_ref();
            let message_id = message_id.map(|m| m.as_str()).unwrap_or_default();
            let event: Value = serde_json::from_slice(&delivery.data)?;
            let go_on = handle(message_id, &event)?;
            delivery.ack(BasicAckOptions::default()).await?;
            if !go_on {
                return Ok(());
            }
        }
        Err("the consumer was cancelled".into())
    }
    // END docs/messages.md rust example
}

/// The region between the markers of this file, as it would be written in a
/// Markdown code block (indentation of the module removed).
fn example_source() -> String {
    let this = include_str!("contract_schemas.rs");
    let start = this
        .find("// BEGIN docs/messages.md rust example\n")
        .expect("begin marker");
    let body = &this[start..];
    let body = &body[body.find('\n').unwrap() + 1..];
    let end = body
        .find("    // END docs/messages.md rust example")
        .expect("end marker");
    body[..end]
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_rust_example_in_the_document_is_the_code_tested_here() {
    let doc = std::fs::read_to_string(repo_file("docs/messages.md")).unwrap();
    let source = example_source();
    assert!(source.contains("pub async fn send_and_wait("));
    assert!(
        doc.contains(&source),
        "docs/messages.md must show the example of tests/contract_schemas.rs verbatim:\n{source}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_example_publishes_a_command_and_reads_its_result_both_ways() {
    let env = TestEnv::new("contract-example").await;
    let worker = env.start_worker();
    let connection =
        lapin::Connection::connect(common::AMQP_URL, lapin::ConnectionProperties::default())
            .await
            .unwrap();
    let setup = connection.create_channel().await.unwrap();
    let follow_queue = format!("{}.order-system", env.name);
    example::declare_results_queue(&setup, &env.result_exchange, &follow_queue, "paymentz.#")
        .await
        .unwrap();

    let command = json!({"id": "ex-capture-1", "gateway": "paymentz", "operation": "capture",
                         "payment_id": "10000012", "amount": "12.34", "currency": "EUR",
                         "metadata": {"order_id": "8812"}});
    let event = tokio::time::timeout(
        Duration::from_secs(30),
        example::send_and_wait(&connection, &env.command_queue, &command),
    )
    .await
    .expect("a result within 30 s")
    .unwrap();
    assert_eq!(event["command_id"], "ex-capture-1");
    assert_eq!(event["outcome"], "succeeded", "{event}");
    assert_eq!(event["amount"], "12.34");
    assert_eq!(errors(&result_schema(), &event), Vec::<String>::new());

    // A missing queue is an error, not a silent loss.
    let lost = example::send_and_wait(&connection, "no.such.queue", &command).await;
    assert!(lost.is_err());

    let mut seen = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(30),
        example::follow_results(&setup, &follow_queue, |message_id, event| {
            seen.push((message_id.to_string(), event.clone()));
            Ok(event["command_id"] != "ex-capture-1")
        }),
    )
    .await
    .expect("the event on the bound queue")
    .unwrap();
    let (message_id, followed) = seen.last().unwrap();
    assert_eq!(*followed, event);
    assert!(uuid::Uuid::parse_str(message_id).is_ok());

    // The follower's consumer goes with its channel first: a delete on the
    // same channel can race the consumer's cancel, and RabbitMQ then fails
    // the channel with INTERNAL_ERROR (`{case_clause,{error,noproc}}` in
    // `rabbit_channel`), seen once on a full run.
    let _ = setup.close(200, "followed".into()).await;
    let cleanup = connection.create_channel().await.unwrap();
    cleanup
        .queue_delete(follow_queue.as_str().into(), Default::default())
        .await
        .unwrap();
    let _ = connection.close(200, "done".into()).await;
    worker.stop().await;
    env.cleanup().await;
}

/// The contract: every command with a usable id gets an event. An id of up
/// to 255 bytes that breaks the id rules is stored and rejected (its event
/// carries it whole, also as the AMQP `correlation_id`, a short string of
/// at most 255 bytes); a longer one cannot be answered and is dead-lettered;
/// the events after both keep flowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_id_is_rejected_or_dead_lettered_and_later_events_still_flow() {
    let mut env = TestEnv::new("contract-longid").await;
    let worker = env.start_worker();
    let long_id = "x".repeat(255);
    let too_long = "y".repeat(256);
    for id in [&long_id, &too_long] {
        env.publish(
            &json!({"id": id, "gateway": "paymentz", "operation": "inquiry",
                            "payment_id": "10000001"}),
        )
        .await;
    }
    env.publish(&pz("after-long-id", "inquiry", "10000003", None))
        .await;
    let (rejected, delivery) = loop {
        let (event, delivery) = env
            .next_event(std::time::Duration::from_secs(30))
            .await
            .expect("an event for the long id");
        if event.command_id == long_id {
            break (event, delivery);
        }
    };
    assert_eq!(rejected.outcome.as_str(), "rejected");
    assert!(
        rejected
            .description
            .as_deref()
            .unwrap_or("")
            .starts_with("id: must be 1 to 128"),
        "{rejected:?}"
    );
    assert_eq!(
        text(delivery.properties.correlation_id()),
        Some(long_id.as_str())
    );
    let dead = common::get_message(
        &env.channel,
        &env.dead_letter_queue,
        std::time::Duration::from_secs(30),
    )
    .await;
    let reason = match dead
        .delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-backoffice-reason").cloned())
    {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => panic!("no reason header: {other:?}"),
    };
    assert!(reason.contains("longer than 255 bytes"), "{reason}");
    let after = env.outcome_of("after-long-id").await;
    assert_eq!(after.outcome.as_str(), "succeeded");
    worker.stop().await;
    env.cleanup().await;
}

/// Every Rust path the architecture documents name (`module::function`,
/// `Type::method`, `file.rs`) exists in `src`: a guide that names functions
/// the code no longer has sends a new engineer looking for nothing.
#[test]
fn every_name_in_the_architecture_documents_exists_in_the_code() {
    let sources = rust_sources(&repo_file("src"));
    let mut missing = Vec::new();
    for doc in ["docs/architecture.md", "docs/adding-a-gateway.md"] {
        let text = std::fs::read_to_string(repo_file(doc)).expect("the document");
        for name in code_spans(&text) {
            if let Some(problem) = check_name(&name, &sources) {
                missing.push(format!("{doc}: `{name}`: {problem}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "names the code does not have:\n{}",
        missing.join("\n")
    );
}

/// `src` files by path relative to `src`, with their text.
fn rust_sources(root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path.strip_prefix(root).expect("under src");
                let text = std::fs::read_to_string(&path).expect("source");
                out.push((relative.to_string_lossy().replace('\\', "/"), text));
            }
        }
    }
    out
}

fn code_spans(markdown: &str) -> Vec<String> {
    let mut spans = Vec::new();
    let mut in_block = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if in_block {
            continue;
        }
        let mut parts = line.split('`');
        parts.next();
        while let (Some(span), Some(_)) = (parts.next(), parts.next()) {
            spans.push(span.to_string());
        }
    }
    spans
}

fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

/// `None` when the name exists; otherwise what is wrong with it. Only
/// Rust paths (`a::b`, optionally ending in `!`, `()` or ` { .. }`) and
/// source file names (`x.rs`, `dir/x.rs`, `dir/*/x.rs`) are checked.
fn check_name(span: &str, sources: &[(String, String)]) -> Option<String> {
    let span = span.trim();
    if span.ends_with(".rs") && !span.contains(' ') {
        if !span.contains('*') && repo_file(span).is_file() {
            return None;
        }
        let pattern: Vec<&str> = span.split('/').collect();
        let found = sources.iter().any(|(path, _)| {
            let segments: Vec<&str> = path.split('/').collect();
            segments.len() >= pattern.len()
                && segments[segments.len() - pattern.len()..]
                    .iter()
                    .zip(&pattern)
                    .all(|(s, p)| *p == "*" || s == p)
        });
        return (!found).then(|| "no such file".to_string());
    }
    let path = span
        .split([' ', '(', '<'])
        .next()
        .unwrap_or("")
        .trim_end_matches('!');
    let segments: Vec<&str> = path.split("::").collect();
    if segments.len() < 2 || !segments.iter().all(|s| is_ident(s)) {
        return None;
    }
    let first = segments[0];
    let last = *segments.last().expect("two segments");
    let in_module: Vec<&(String, String)> = sources
        .iter()
        .filter(|(path, _)| {
            let segments: Vec<&str> = path.trim_end_matches(".rs").split('/').collect();
            segments.contains(&first)
        })
        .collect();
    let scope: Vec<&(String, String)> = if !in_module.is_empty() {
        in_module
    } else if sources.iter().any(|(_, text)| defines(text, first)) {
        sources.iter().collect()
    } else {
        return Some(format!("no module or type `{first}`"));
    };
    let found = scope.iter().any(|(_, text)| defines(text, last));
    (!found).then(|| format!("no `{last}` defined in `{first}`"))
}

/// Whether `text` defines `name`: an item, a macro, a field-less mention as
/// an enum variant or a struct field at the start of a line.
fn defines(text: &str, name: &str) -> bool {
    const ITEMS: [&str; 11] = [
        "fn ",
        "struct ",
        "enum ",
        "trait ",
        "type ",
        "const ",
        "static ",
        "mod ",
        "macro_rules! ",
        "union ",
        "impl ",
    ];
    text.lines().any(|line| {
        let line = line.trim_start();
        let line = line.strip_prefix("pub(crate) ").unwrap_or(line);
        let line = line.strip_prefix("pub(super) ").unwrap_or(line);
        let line = line.strip_prefix("pub ").unwrap_or(line);
        let line = line.strip_prefix("async ").unwrap_or(line);
        let item = ITEMS.iter().any(|kw| {
            line.strip_prefix(kw).is_some_and(|rest| {
                rest.starts_with(name)
                    && !rest[name.len()..]
                        .starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
            })
        });
        let variant_or_field =
            line.starts_with(name) && line[name.len()..].starts_with([',', '(', '{', ' ', ':']);
        item || variant_or_field
    })
}
