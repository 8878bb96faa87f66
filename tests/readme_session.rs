//! The README's sandbox session, as a new user types it: no config file,
//! `run --sandbox`, `enqueue --wait`, `show`, `/metrics`. Isolated in its own
//! RabbitMQ vhost and database, given through `$AMQP_URL` / `$DATABASE_URL`
//! exactly as a user would override the defaults.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{free_port, http_get, wait_for_status, ChildGuard, PG_SERVER};

fn rabbitmqctl(args: &[&str]) {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl");
    assert!(out.status.success(), "rabbitmqctl {args:?}: {out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_sandbox_session_works_without_a_config_file() {
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
    let vhost = format!("bwtest-readme-{suffix}");
    rabbitmqctl(&["add_vhost", &vhost]);
    rabbitmqctl(&["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"]);
    let amqp_url = format!("amqp://guest:guest@127.0.0.1:5672/{vhost}");
    let db_name = format!("bwtest_readme_{suffix}");
    let db_url = format!("{PG_SERVER}/{db_name}");
    let dir = tempfile::tempdir().unwrap();
    let binary = env!("CARGO_BIN_EXE_backoffice-worker");
    let command = |args: &[&str]| {
        let mut c = Command::new(binary);
        c.args(args)
            .current_dir(dir.path())
            .env_remove("BACKOFFICE_CONFIG")
            .env("AMQP_URL", &amqp_url)
            .env("DATABASE_URL", &db_url);
        c
    };

    let admin = free_port();
    let admin_addr = format!("127.0.0.1:{admin}");
    let mut worker = ChildGuard(
        command(&[
            "run",
            "--sandbox",
            "--sandbox-listen",
            "127.0.0.1:0",
            "--admin-listen",
            &admin_addr,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    wait_for_status(
        &format!("http://{admin_addr}/readyz"),
        200,
        Duration::from_secs(60),
    )
    .await;

    let enqueue = command(&[
        "enqueue",
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

    let show = Command::new(binary)
        .args(["show", "demo-capture-1"])
        .current_dir(dir.path())
        .env_remove("BACKOFFICE_CONFIG")
        .env("AMQP_URL", &amqp_url)
        .env("DATABASE_URL", &db_url)
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
    rabbitmqctl(&["delete_vhost", &vhost]);
    if let Ok(mut admin_db) =
        <sqlx::PgConnection as sqlx::Connection>::connect(&format!("{PG_SERVER}/postgres")).await
    {
        let _ = sqlx::query(&format!(
            "DROP DATABASE IF EXISTS \"{db_name}\" WITH (FORCE)"
        ))
        .execute(&mut admin_db)
        .await;
    }
}
