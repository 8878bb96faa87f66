//! The README's sandbox session, as a new user types it: no config file,
//! `run --sandbox`, `enqueue --sandbox --wait`, `show --sandbox`, `/metrics`.
//! A sandbox always uses its own names (`backoffice_sandbox`,
//! `backoffice.sandbox.*`) on the configured servers, so the session is
//! isolated the way a user would point it elsewhere: `$AMQP_URL` names a
//! vhost of its own, and `$DATABASE_URL` a schema of its own in the sandbox
//! database (see `common::SandboxPlace`).

use crate::common;

use std::process::Command;

use common::{free_port, http_get, SandboxPlace};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_sandbox_session_works_without_a_config_file() {
    let place = SandboxPlace::new("readme").await;
    let dir = tempfile::tempdir().unwrap();
    let command = |args: &[&str]| place.command(dir.path(), args);

    let admin = free_port();
    let admin_addr = format!("127.0.0.1:{admin}");
    let mut worker = place
        .start_sandbox(dir.path(), "127.0.0.1:0", &admin_addr)
        .await;

    let enqueue = command(&[
        "enqueue",
        "--sandbox",
        "--gateway",
        "paymentz",
        "--operation",
        "capture",
        "--payment-id",
        "55361",
        "--amount",
        "10.00",
        "--id",
        "demo-capture-1",
        "--wait",
    ])
    .output()
    .unwrap();
    assert!(enqueue.status.success(), "{enqueue:?}");
    let event: serde_json::Value =
        serde_json::from_slice(&enqueue.stdout).expect("enqueue --wait prints the event");
    assert_eq!(event["outcome"], "succeeded");
    assert_eq!(event["command_id"], "demo-capture-1");
    let note = String::from_utf8_lossy(&enqueue.stderr);
    assert!(
        note.contains("backoffice_sandbox") && note.contains("backoffice.sandbox.commands"),
        "enqueue --sandbox says where it goes: {note}"
    );

    let show = command(&["show", "--sandbox", "demo-capture-1"])
        .output()
        .unwrap();
    assert!(show.status.success(), "{show:?}");
    let text = String::from_utf8_lossy(&show.stdout);
    for expected in ["succeeded", "IN", "CP", "capturesuccess"] {
        assert!(text.contains(expected), "`show` lacks {expected}: {text}");
    }
    let (_, metrics) = http_get(&format!("http://{admin_addr}/metrics"))
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"backoffice_commands_total{gateway="paymentz",operation="capture",outcome="succeeded"} 1"#),
        "{metrics}"
    );

    let _ = Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status();
    let exit = tokio::task::spawn_blocking(move || worker.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "SIGTERM exits 0: {exit:?}");
    place.cleanup().await;
}
