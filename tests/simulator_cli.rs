//! `backoffice-worker simulate` as a user runs it: the banner says what it
//! accepts without printing secrets, flags take effect, bad flags stop it.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

fn simulate(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_backoffice-worker"));
    command
        .arg("simulate")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

#[tokio::test]
async fn serves_with_the_flags_given_and_never_prints_secrets() {
    let mut child = simulate(&[
        "--listen",
        "127.0.0.1:0",
        "--seed",
        "5",
        "--fault",
        "error_before=1",
        "--no-auto-payments",
    ])
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut banner = Vec::new();
    let read_banner = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let last = line.starts_with("faults:");
            banner.push(line);
            if last {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read_banner)
        .await
        .expect("banner printed");
    let text = banner.join("\n");
    let base = banner[0].rsplit(' ').next().unwrap().trim().to_string();
    assert!(base.starts_with("http://127.0.0.1:"), "{text}");
    assert!(
        text.contains("partner_id 197 username sandbox-merchant member_id 11359"),
        "{text}"
    );
    assert!(
        text.contains("merchant_id Test-Integration-Merchant"),
        "{text}"
    );
    assert!(text.contains("seed 5"), "{text}");
    assert!(text.contains("payments on demand: off"), "{text}");
    assert!(
        !text.contains("sandbox-secure-key") && !text.contains("sandbox-merchant-secret"),
        "{text}"
    );

    let client = reqwest::Client::new();
    let health = client
        .get(format!("{base}/admin/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let call = client
        .post(format!("{base}/api/find-transaction"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        call.status(),
        500,
        "error_before=1 faults every operation call"
    );
    child.kill().await.unwrap();
}

#[tokio::test]
async fn bad_flags_stop_it() {
    let output = simulate(&["--fault", "explode=0.5"])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown fault kind `explode`"), "{stderr}");

    let output = simulate(&[
        "--listen",
        "127.0.0.1:0",
        "--config",
        "/nonexistent/backoffice.toml",
    ])
    .output()
    .await
    .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/backoffice.toml"), "{stderr}");
}
