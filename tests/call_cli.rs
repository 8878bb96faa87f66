//! `backoffice-worker call` and `simulate --config` as an operator runs them:
//! the real binary, a config file on disk, and a simulator the test starts
//! (in process, or as a child process for `simulate`).
//!
//! Each test writes its own config file pointing at its own simulator on an
//! ephemeral port, so tests are independent and run in parallel. The config
//! has no `[amqp]` or `[database]` table: `call` never connects to either.

use crate::gateway_support;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use backoffice_worker::money::Amount;
use backoffice_worker::simulator::{
    Effect, FaultKind, FaultScript, GatewayId, LedgerQuery, NewPayment, RunningSimulator,
};
use gateway_support::*;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

fn amount(text: &str) -> Amount {
    Amount::parse(text).expect("test amounts are valid")
}

/// A config file in its own temporary directory (removed on drop).
struct ConfigFile {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl ConfigFile {
    fn new(text: &str) -> ConfigFile {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("backoffice.toml");
        std::fs::write(&path, text).expect("config written");
        ConfigFile { _dir: dir, path }
    }

    fn for_simulator(sim: &RunningSimulator) -> ConfigFile {
        ConfigFile::new(&config_text(&sim.base_url()))
    }
}

/// The binary, with the environment that could change what it reads removed.
fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_backoffice-worker"));
    command
        .env_remove("BACKOFFICE_CONFIG")
        .env_remove("AMQP_URL")
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .env_remove("GWTEST_UNSET_SECURE_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// What one `call` run gave: exit status, the printed JSON, and stderr.
#[derive(Debug)]
struct Run {
    code: i32,
    json: Value,
    stdout: String,
    stderr: String,
}

fn run_of(output: Output) -> Run {
    let stdout = String::from_utf8(output.stdout).expect("UTF-8 stdout");
    let stderr = String::from_utf8(output.stderr).expect("UTF-8 stderr");
    let json = if stdout.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {stdout}\nstderr: {stderr}"))
    };
    Run {
        code: output.status.code().expect("exited, not killed"),
        json,
        stdout,
        stderr,
    }
}

async fn call_with(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = binary();
    command.arg("call").arg("--config").arg(config).args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("call finishes")
        .expect("call runs");
    run_of(output)
}

async fn call(config: &Path, args: &[&str]) -> Run {
    call_with(config, args, &[]).await
}

/// The fields of a result that every test compares.
fn fields(run: &Run) -> Value {
    json!({
        "outcome": run.json["outcome"],
        "gateway_status": run.json["gateway_status"],
        "gateway_code": run.json["gateway_code"],
        "description": run.json["description"],
        "reference": run.json["reference"],
    })
}

/// No secret, and nothing shaped like a token, in anything printed.
fn assert_prints_no_secret(run: &Run, secrets: &[String]) {
    for (stream, text) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
        for secret in secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{stream} leaks a secret: {text}"
            );
        }
        assert!(
            !text.contains(TOKEN_PREFIX),
            "{stream} leaks a token: {text}"
        );
    }
}

fn secrets() -> Vec<String> {
    Credentials::sandbox().secrets()
}

fn paymentz_payment(sim: &RunningSimulator, new: NewPayment) -> String {
    sim.sim().create_payment(new).expect("payment created").id
}

fn praxis_authorized(sim: &RunningSimulator, value: &str) -> String {
    sim.sim()
        .create_payment(NewPayment::new(GatewayId::Praxis, amount(value)))
        .expect("payment created")
        .id
}

fn only_ledger_entry(sim: &RunningSimulator, gateway: GatewayId, id: &str) -> String {
    let entries = sim.sim().ledger_for(gateway, id);
    assert_eq!(entries.len(), 1, "{entries:?}");
    entries[0].transaction_id.clone()
}

// ---------------------------------------------------------------- Paymentz

#[tokio::test]
async fn paymentz_capture_prints_the_result_and_exits_0() {
    let sim = start().await;
    let config = ConfigFile::for_simulator(&sim);
    let id = paymentz_payment(&sim, NewPayment::new(GatewayId::Paymentz, amount("50.00")));

    let run = call(
        &config.path,
        &[
            "--gateway",
            "paymentz",
            "--operation",
            "capture",
            "--payment-id",
            &id,
            "--amount",
            "30",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    let reference = only_ledger_entry(&sim, GatewayId::Paymentz, &id);
    assert_eq!(
        fields(&run),
        json!({
            "outcome": "succeeded",
            "gateway_status": "capturesuccess",
            "gateway_code": "00004",
            "description": "Capture successful",
            "reference": reference,
        })
    );
    assert_eq!(run.json["response"], json!({}));
    assert_eq!(run.json["amount"], "30.00", "the amount as sent");
    assert_eq!(run.json["gateway"], "paymentz");
    assert_eq!(run.json["account"], "default");
    assert_eq!(run.json["operation"], "capture");
    assert_eq!(run.json["payment_id"], id.as_str());
    assert_eq!(run.json["attempts"], 1);
    assert!(run.json.get("reason").is_none(), "{}", run.stdout);
    assert!(run.json.get("exchanges").is_none(), "only with --verbose");
    assert_prints_no_secret(&run, &secrets());
    let payment = sim.sim().payment(GatewayId::Paymentz, &id).unwrap();
    assert_eq!(payment.captured, amount("30.00"));
}

#[tokio::test]
async fn paymentz_refund_and_cancel() {
    let sim = start().await;
    let config = ConfigFile::for_simulator(&sim);
    let captured = paymentz_payment(
        &sim,
        NewPayment::new(GatewayId::Paymentz, amount("50.00")).state("captured"),
    );
    let authorized = paymentz_payment(&sim, NewPayment::new(GatewayId::Paymentz, amount("20.00")));

    let refund = call(
        &config.path,
        &[
            "--gateway",
            "paymentz",
            "--operation",
            "refund",
            "--payment-id",
            &captured,
            "--amount",
            "10.5",
            "--currency",
            "EUR",
        ],
    )
    .await;
    assert_eq!(refund.code, 0, "{refund:?}");
    let reference = only_ledger_entry(&sim, GatewayId::Paymentz, &captured);
    assert_eq!(
        fields(&refund),
        json!({
            "outcome": "succeeded",
            "gateway_status": "reversed",
            "gateway_code": "00005",
            "description": "Refund successful",
            "reference": reference,
        })
    );
    assert_eq!(refund.json["amount"], "10.50");
    assert_eq!(refund.json["currency"], "EUR");
    assert_eq!(refund.json["response"], json!({}));
    assert_eq!(
        sim.sim()
            .payment(GatewayId::Paymentz, &captured)
            .unwrap()
            .refunded,
        amount("10.50")
    );

    let cancel = call(
        &config.path,
        &[
            "--gateway",
            "paymentz",
            "--operation",
            "cancel",
            "--payment-id",
            &authorized,
        ],
    )
    .await;
    assert_eq!(cancel.code, 0, "{cancel:?}");
    let reference = only_ledger_entry(&sim, GatewayId::Paymentz, &authorized);
    assert_eq!(
        fields(&cancel),
        json!({
            "outcome": "succeeded",
            "gateway_status": "authcancelled",
            "gateway_code": "00006",
            "description": "Cancel successful",
            "reference": reference,
        })
    );
    assert_eq!(cancel.json["amount"], Value::Null);
    let entries = sim.sim().ledger_for(GatewayId::Paymentz, &authorized);
    assert_eq!(entries[0].operation, Effect::Cancel);
    assert_prints_no_secret(&refund, &secrets());
    assert_prints_no_secret(&cancel, &secrets());
}

#[tokio::test]
async fn paymentz_inquiry_prints_the_gateway_answer() {
    let sim = start().await;
    let config = ConfigFile::for_simulator(&sim);
    let id = paymentz_payment(
        &sim,
        NewPayment::new(GatewayId::Paymentz, amount("50.00"))
            .state("reversed")
            .captured(amount("50.00"))
            .refunded(amount("12.00"))
            .reference("ORDER-1001"),
    );
    let run = call(
        &config.path,
        &[
            "--gateway",
            "paymentz",
            "--operation",
            "inquiry",
            "--payment-id",
            &id,
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        fields(&run),
        json!({
            "outcome": "succeeded",
            "gateway_status": "reversed",
            "gateway_code": "00026",
            "description": "Record found",
            "reference": null,
        })
    );
    let response = &run.json["response"];
    assert_eq!(response["paymentId"], id.as_str());
    assert_eq!(response["merchantTransactionId"], "ORDER-1001");
    assert_eq!(response["status"], "reversed");
    assert_eq!(response["amount"], "50.00");
    assert_eq!(response["refundAmount"], "12.00");
    assert_eq!(response["result"]["code"], "00026");
    assert_prints_no_secret(&run, &secrets());
    assert!(sim.sim().ledger(&LedgerQuery::default()).is_empty());
}

#[tokio::test]
async fn paymentz_transaction_list_prints_the_rows_or_an_empty_list() {
    let sim = start().await;
    let config = ConfigFile::for_simulator(&sim);
    let inside = paymentz_payment(
        &sim,
        NewPayment::new(GatewayId::Paymentz, amount("7.00")).created_at("2024-03-05"),
    );
    let _outside = paymentz_payment(
        &sim,
        NewPayment::new(GatewayId::Paymentz, amount("8.00")).created_at("2024-04-05"),
    );

    let run = call(
        &config.path,
        &[
            "--gateway",
            "paymentz",
            "--operation",
            "transaction_list",
            "--from",
            "2024-03-01",
            "--to",
            "2024-03-31",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        fields(&run),
        json!({
            "outcome": "succeeded",
            "gateway_status": null,
            "gateway_code": "00029",
            "description": "Transaction list retrieved successfully",
            "reference": null,
        })
    );
    let rows = run.json["response"]["transactions"]
        .as_array()
        .expect("rows");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["systemPaymentId"], inside.as_str());
    assert_eq!(rows[0]["amount"], "7.00");
    assert_eq!(run.json["payment_id"], Value::Null);

    let empty = call(
        &config.path,
        &[
            "--gateway",
            "paymentz",
            "--operation",
            "transaction_list",
            "--from",
            "2023-01-01",
            "--to",
            "2023-01-31",
        ],
    )
    .await;
    assert_eq!(empty.code, 0, "{empty:?}");
    assert_eq!(empty.json["outcome"], "succeeded");
    assert_eq!(empty.json["response"], json!({"transactions": []}));
    assert_eq!(empty.json["gateway_code"], Value::Null);
    assert_prints_no_secret(&run, &secrets());
}

#[tokio::test]
async fn a_declined_call_exits_1() {
    let sim = start().await;
    let config = ConfigFile::for_simulator(&sim);
    let run = call(
        &config.path,
        &[
            "--gateway",
            "paymentz",
            "--operation",
            "capture",
            "--payment-id",
            "1234567",
            "--amount",
            "5.00",
        ],
    )
    .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        fields(&run),
        json!({
            "outcome": "declined",
            "gateway_status": null,
            "gateway_code": "10026",
            "description": "Record not found",
            "reference": null,
        })
    );
    assert!(sim.sim().ledger(&LedgerQuery::default()).is_empty());
}

#[tokio::test]
async fn an_ambiguous_refund_is_unknown_and_never_resent() {
    let sim = start().await;
    let config = ConfigFile::for_simulator(&sim);
    let id = paymentz_payment(
        &sim,
        NewPayment::new(GatewayId::Paymentz, amount("50.00")).state("captured"),
    );
    sim.sim()
        .script_fault(FaultScript::new(FaultKind::ErrorAfter, 1).operation("RF"))
        .unwrap();
    let run = call(
        &config.path,
        &[
            "--gateway",
            "paymentz",
            "--operation",
            "refund",
            "--payment-id",
            &id,
            "--amount",
            "10.00",
        ],
    )
    .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.json["outcome"], "unknown");
    assert_eq!(run.json["attempts"], 1);
    let description = run.json["description"].as_str().unwrap();
    assert!(description.contains("500"), "{description}");
    // The refund happened once; `call` left it for an inquiry to settle.
    assert_eq!(sim.sim().ledger_for(GatewayId::Paymentz, &id).len(), 1);
    assert_eq!(sim.sim().stats().requests_for("paymentz", "RF"), 1);
}

#[tokio::test]
async fn a_rate_limited_call_has_failed() {
    let sim = start().await;
    let config = ConfigFile::for_simulator(&sim);
    let trace = praxis_authorized(&sim, "10.00");
    sim.sim()
        .script_fault(FaultScript::new(FaultKind::RateLimit, 1))
        .unwrap();
    let run = call(
        &config.path,
        &[
            "--gateway",
            "praxis",
            "--operation",
            "capture",
            "--payment-id",
            &trace,
        ],
    )
    .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.json["outcome"], "failed");
    assert!(sim.sim().ledger(&LedgerQuery::default()).is_empty());
    assert_eq!(
        sim.sim().payment(GatewayId::Praxis, &trace).unwrap().status,
        "authorized"
    );
}

// ---------------------------------------------------------------- Praxis

#[tokio::test]
async fn praxis_capture_cancel_and_inquiry() {
    let sim = start().await;
    let config = ConfigFile::for_simulator(&sim);
    let to_capture = praxis_authorized(&sim, "25.00");
    let to_cancel = praxis_authorized(&sim, "30.00");

    let capture = call(
        &config.path,
        &[
            "--gateway",
            "praxis",
            "--operation",
            "capture",
            "--payment-id",
            &to_capture,
        ],
    )
    .await;
    assert_eq!(capture.code, 0, "{capture:?}");
    let transaction_id = only_ledger_entry(&sim, GatewayId::Praxis, &to_capture);
    assert_eq!(
        fields(&capture),
        json!({
            "outcome": "succeeded",
            "gateway_status": "approved",
            "gateway_code": "0",
            "description": "Deposit captured",
            "reference": transaction_id,
        })
    );
    assert_eq!(capture.json["response"], json!({}));
    assert_eq!(
        capture.json["amount"],
        Value::Null,
        "Praxis captures in full"
    );

    let cancel = call(
        &config.path,
        &[
            "--gateway",
            "praxis",
            "--operation",
            "cancel",
            "--payment-id",
            &to_cancel,
        ],
    )
    .await;
    assert_eq!(cancel.code, 0, "{cancel:?}");
    let transaction_id = only_ledger_entry(&sim, GatewayId::Praxis, &to_cancel);
    assert_eq!(
        fields(&cancel),
        json!({
            "outcome": "succeeded",
            "gateway_status": "cancelled",
            "gateway_code": "0",
            "description": "Deposit cancelled",
            "reference": transaction_id,
        })
    );

    let inquiry = call(
        &config.path,
        &[
            "--gateway",
            "praxis",
            "--operation",
            "inquiry",
            "--payment-id",
            &to_capture,
        ],
    )
    .await;
    assert_eq!(inquiry.code, 0, "{inquiry:?}");
    assert_eq!(inquiry.json["outcome"], "succeeded");
    assert_eq!(inquiry.json["gateway_status"], "approved");
    assert_eq!(inquiry.json["gateway_code"], "0");
    assert_eq!(inquiry.json["description"], "Transaction found");
    let response = &inquiry.json["response"];
    assert_eq!(response["status"], 0);
    assert_eq!(response["transaction"]["transaction_status"], "approved");
    assert_eq!(response["transaction"]["amount"], 2500);
    assert_eq!(
        response["transaction"]["trace_id"],
        to_capture.parse::<u64>().unwrap()
    );
    assert!(response.get("signature").is_none(), "{response}");
    for run in [&capture, &cancel, &inquiry] {
        assert_prints_no_secret(run, &secrets());
    }
    assert_eq!(
        sim.sim().ledger(&LedgerQuery::default()).len(),
        2,
        "one capture, one cancel"
    );
}

// ---------------------------------------------------------------- rejections

#[tokio::test]
async fn praxis_refund_is_rejected_as_unsupported() {
    let sim = start().await;
    let config = ConfigFile::for_simulator(&sim);
    let run = call(
        &config.path,
        &[
            "--gateway",
            "praxis",
            "--operation",
            "refund",
            "--payment-id",
            "752856",
        ],
    )
    .await;
    assert_eq!(run.code, 2, "{run:?}");
    assert_eq!(run.json["outcome"], "rejected");
    assert_eq!(run.json["reason"], "unsupported_operation");
    let description = run.json["description"].as_str().unwrap();
    assert!(description.contains("refund"), "{description}");
    assert_eq!(run.json["attempts"], 0);
    assert_eq!(sim.sim().stats().requests_total, 0, "nothing was sent");
}

#[tokio::test]
async fn a_bad_amount_is_rejected_as_invalid() {
    let sim = start().await;
    let config = ConfigFile::for_simulator(&sim);
    let run = call(
        &config.path,
        &[
            "--gateway",
            "paymentz",
            "--operation",
            "refund",
            "--payment-id",
            "55361",
            "--amount",
            "10.001",
        ],
    )
    .await;
    assert_eq!(run.code, 2, "{run:?}");
    assert_eq!(run.json["outcome"], "rejected");
    assert_eq!(run.json["reason"], "invalid_command");
    let description = run.json["description"].as_str().unwrap();
    assert!(description.starts_with("amount"), "{description}");
    assert_eq!(sim.sim().stats().requests_total, 0, "nothing was sent");
}

#[tokio::test]
async fn an_unknown_account_is_rejected() {
    let sim = start().await;
    let config = ConfigFile::for_simulator(&sim);
    let run = call(
        &config.path,
        &[
            "--gateway",
            "paymentz",
            "--account",
            "eu",
            "--operation",
            "inquiry",
            "--payment-id",
            "55361",
        ],
    )
    .await;
    assert_eq!(run.code, 2, "{run:?}");
    assert_eq!(run.json["outcome"], "rejected");
    assert_eq!(run.json["reason"], "unknown_account");
    assert_eq!(run.json["account"], "eu");
    let description = run.json["description"].as_str().unwrap();
    assert!(description.contains("eu"), "{description}");
    assert_eq!(sim.sim().stats().requests_total, 0, "nothing was sent");
}

#[tokio::test]
async fn other_invalid_calls_are_rejected_before_anything_is_sent() {
    let sim = start().await;
    let config = ConfigFile::for_simulator(&sim);
    let cases: [(&[&str], &str, &str); 6] = [
        (
            &[
                "--gateway",
                "praxis",
                "--operation",
                "capture",
                "--payment-id",
                "752856",
                "--amount",
                "10.00",
            ],
            "invalid_command",
            "amount",
        ),
        (
            &[
                "--gateway",
                "praxis",
                "--operation",
                "transaction_list",
                "--from",
                "2024-01-01",
                "--to",
                "2024-01-02",
            ],
            "unsupported_operation",
            "transaction_list",
        ),
        (
            &[
                "--gateway",
                "stripe",
                "--operation",
                "inquiry",
                "--payment-id",
                "1",
            ],
            "invalid_command",
            "gateway",
        ),
        (
            &[
                "--gateway",
                "paymentz",
                "--operation",
                "transaction_list",
                "--from",
                "2024-02-01",
                "--to",
                "2024-01-01",
            ],
            "invalid_command",
            "from",
        ),
        (
            &[
                "--gateway",
                "paymentz",
                "--operation",
                "inquiry",
                "--payment-id",
                "12/../34",
            ],
            "invalid_command",
            "payment_id",
        ),
        (
            &[
                "--gateway",
                "paymentz",
                "--operation",
                "refund",
                "--payment-id",
                "55361",
            ],
            "invalid_command",
            "amount",
        ),
    ];
    for (args, reason, field) in cases {
        let run = call(&config.path, args).await;
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert_eq!(run.json["outcome"], "rejected", "{args:?}");
        assert_eq!(run.json["reason"], reason, "{args:?}: {}", run.stdout);
        let description = run.json["description"].as_str().unwrap();
        assert!(description.contains(field), "{args:?}: {description}");
    }
    assert_eq!(sim.sim().stats().requests_total, 0, "nothing was sent");
}

#[tokio::test]
async fn a_config_mistake_names_the_file_table_and_key() {
    let sim = start().await;
    let good = config_text(&sim.base_url());
    let cases = [
        (
            good.replace("member_id = \"11359\"\n", ""),
            "[accounts.paymentz.default] key `member_id`: missing",
        ),
        (
            good.replace("frontend =", "front_end ="),
            "[accounts.praxis.default] key `frontend`: missing",
        ),
        (
            good.replacen(&sim.base_url(), "not a url", 1),
            "[accounts.paymentz.default] key `base_url`: malformed URL",
        ),
        (
            format!("{good}\n[http]\nrequest_timeout = \"soon\"\n"),
            "[http] key `request_timeout`",
        ),
        (
            good.replace("\"sandbox-secure-key\"", "\"${GWTEST_UNSET_SECURE_KEY}\""),
            "[accounts.paymentz.default] key `secure_key`: environment variable GWTEST_UNSET_SECURE_KEY is not set",
        ),
    ];
    for (text, expected) in cases {
        let config = ConfigFile::new(&text);
        let run = call(
            &config.path,
            &[
                "--gateway",
                "paymentz",
                "--operation",
                "inquiry",
                "--payment-id",
                "55361",
            ],
        )
        .await;
        assert_ne!(run.code, 0, "{run:?}");
        assert!(
            run.stdout.is_empty(),
            "no result is printed: {}",
            run.stdout
        );
        let file = config.path.display().to_string();
        assert!(run.stderr.contains(&file), "names the file: {}", run.stderr);
        assert!(run.stderr.contains(expected), "{expected}: {}", run.stderr);
        assert_prints_no_secret(&run, &secrets());
    }
    assert_eq!(sim.sim().stats().requests_total, 0, "nothing was sent");
}

#[tokio::test]
async fn verbose_prints_the_exchanges_without_secrets() {
    let sim = start().await;
    let config = ConfigFile::for_simulator(&sim);
    let id = paymentz_payment(
        &sim,
        NewPayment::new(GatewayId::Paymentz, amount("50.00")).state("captured"),
    );
    // Debug logging on as well: nothing logged may carry a secret either.
    let run = call_with(
        &config.path,
        &[
            "--gateway",
            "paymentz",
            "--operation",
            "refund",
            "--payment-id",
            &id,
            "--amount",
            "5.00",
            "--verbose",
        ],
        &[("RUST_LOG", "debug")],
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    let exchanges = run.json["exchanges"].as_array().expect("exchanges");
    let purposes: Vec<&str> = exchanges
        .iter()
        .map(|e| e["purpose"].as_str().unwrap())
        .collect();
    assert_eq!(purposes, ["authToken", "RF"]);
    assert_eq!(exchanges[0]["request"]["authentication.sKey"], "[redacted]");
    let checksum = paymentz_checksum(&[&id, "5.00"]);
    assert_eq!(exchanges[1]["signature_sent"], checksum.as_str());
    assert_eq!(exchanges[1]["http_status"], 200);
    assert_eq!(exchanges[1]["classification"], "succeeded");
    assert!(exchanges[1]["latency"].as_f64().is_some());
    assert_prints_no_secret(&run, &secrets());

    let trace = praxis_authorized(&sim, "5.00");
    let run = call_with(
        &config.path,
        &[
            "--gateway",
            "praxis",
            "--operation",
            "capture",
            "--payment-id",
            &trace,
            "--verbose",
        ],
        &[("RUST_LOG", "debug")],
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    let exchanges = run.json["exchanges"].as_array().expect("exchanges");
    assert_eq!(exchanges.len(), 1);
    assert_eq!(exchanges[0]["purpose"], "deposit-capture");
    assert_eq!(exchanges[0]["signature_verified"], true);
    let sent = exchanges[0]["request"].as_object().unwrap();
    assert_eq!(
        exchanges[0]["signature_sent"],
        praxis_signature(sent, MERCHANT_SECRET).as_str()
    );
    assert_prints_no_secret(&run, &secrets());
}

// ---------------------------------------------------------------- simulate

/// A running `simulate` child and the address its banner announced.
struct SimulateChild {
    child: tokio::process::Child,
    base_url: String,
    banner: String,
}

/// Starts `simulate --config FILE --listen 127.0.0.1:0` and waits, up to a
/// deadline, for the banner that names the address it listens on.
async fn spawn_simulate(config: &Path) -> SimulateChild {
    let mut child = binary()
        .arg("simulate")
        .arg("--config")
        .arg(config)
        .args(["--listen", "127.0.0.1:0"])
        .spawn()
        .expect("simulate starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut banner = Vec::new();
    let read_banner = async {
        while let Some(line) = lines.next_line().await.expect("readable stdout") {
            let last = line.starts_with("faults:");
            banner.push(line);
            if last {
                return true;
            }
        }
        false
    };
    let complete = tokio::time::timeout(Duration::from_secs(60), read_banner)
        .await
        .expect("banner printed in time");
    let banner = banner.join("\n");
    assert!(complete, "simulate ended before its banner: {banner}");
    let base_url = banner
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("gateway simulator listening on "))
        .unwrap_or_else(|| panic!("no address in the banner: {banner}"))
        .trim()
        .to_string();
    assert!(base_url.starts_with("http://127.0.0.1:"), "{banner}");
    assert!(!base_url.ends_with(":0"), "the real port: {banner}");
    SimulateChild {
        child,
        base_url,
        banner,
    }
}

#[tokio::test]
async fn simulate_accepts_exactly_the_accounts_of_its_config_file() {
    let own = Credentials {
        partner_id: "300".into(),
        username: "file-merchant".into(),
        member_id: "22222".into(),
        secure_key: "file-secure-key-0123".into(),
        merchant_id: "File-Merchant".into(),
        merchant_secret: "file-merchant-secret-0123".into(),
        frontend: "File Frontend EUR".into(),
    };
    // The simulator reads the same file a worker would: base_url must be
    // valid, but it is not where the simulator listens.
    let served = ConfigFile::new(&own.tables("default", "http://127.0.0.1:9"));
    let mut simulate = spawn_simulate(&served.path).await;
    let banner = &simulate.banner;
    assert!(
        banner.contains("partner_id 300 username file-merchant member_id 22222"),
        "{banner}"
    );
    assert!(banner.contains("merchant_id File-Merchant"), "{banner}");
    assert!(banner.contains("File Frontend EUR"), "{banner}");
    assert!(!banner.contains("member_id 11359"), "{banner}");
    let mut all_secrets = own.secrets();
    all_secrets.extend(secrets());
    for secret in &all_secrets {
        assert!(!banner.contains(secret.as_str()), "{banner}");
    }

    // The file's own accounts work against it...
    let client_config = ConfigFile::new(&own.tables("default", &simulate.base_url));
    let capture = call(
        &client_config.path,
        &[
            "--gateway",
            "paymentz",
            "--operation",
            "capture",
            "--payment-id",
            "12345678",
            "--amount",
            "100.00",
        ],
    )
    .await;
    assert_eq!(capture.code, 0, "{capture:?}");
    assert_eq!(capture.json["gateway_status"], "capturesuccess");
    assert_prints_no_secret(&capture, &all_secrets);
    let inquiry = call(
        &client_config.path,
        &[
            "--gateway",
            "praxis",
            "--operation",
            "inquiry",
            "--payment-id",
            "23456789",
        ],
    )
    .await;
    assert_eq!(inquiry.code, 0, "{inquiry:?}");
    assert_eq!(inquiry.json["gateway_status"], "authorized");
    assert_eq!(
        inquiry.json["response"]["transaction"]["frontend"],
        "File Frontend EUR"
    );

    // ...and the built-in sandbox accounts do not.
    let sandbox_config = ConfigFile::new(&config_text(&simulate.base_url));
    let refused = call(
        &sandbox_config.path,
        &[
            "--gateway",
            "paymentz",
            "--operation",
            "inquiry",
            "--payment-id",
            "12345678",
        ],
    )
    .await;
    assert_eq!(refused.code, 1, "{refused:?}");
    assert_eq!(refused.json["outcome"], "declined");
    let description = refused.json["description"].as_str().unwrap();
    assert!(description.contains("403"), "{description}");
    let stranger = call(
        &sandbox_config.path,
        &[
            "--gateway",
            "praxis",
            "--operation",
            "inquiry",
            "--payment-id",
            "23456789",
        ],
    )
    .await;
    assert_eq!(stranger.code, 1, "{stranger:?}");
    assert_eq!(stranger.json["outcome"], "declined");
    assert_eq!(stranger.json["gateway_code"], "1003", "unknown merchant");

    simulate.child.kill().await.expect("simulate killed");
}
