//! `backoffice-worker run` as a user meets it: the sandbox, the admin listener
//! (`/healthz`, `/readyz`, `/metrics`), and the start-up errors.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{free_port, http_get, pz, wait_for_status, ChildGuard, Proxy, TestEnv, PG_SERVER};

fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_backoffice-worker"));
    command
        .env_remove("AMQP_URL")
        .env_remove("DATABASE_URL")
        .env_remove("BACKOFFICE_CONFIG");
    command
}

#[test]
fn without_a_config_file_or_sandbox_it_refuses_and_says_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let out = binary()
        .arg("run")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no configuration file"), "{stderr}");
    assert!(
        stderr.contains("--config")
            && stderr.contains("backoffice.toml")
            && stderr.contains("--sandbox"),
        "{stderr}"
    );
}

#[test]
fn a_bad_config_file_names_the_file_the_table_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.toml");
    std::fs::write(
        &file,
        "[accounts.paymentz.default]\nbase_url = \"https://test.paymentz.com\"\npartner_id = \"197\"\nusername = \"u\"\nsecure_key = \"k\"\n",
    )
    .unwrap();
    let out = binary()
        .args(["run", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("broken.toml"), "{stderr}");
    assert!(
        stderr.contains("[accounts.paymentz.default] key `member_id`: missing"),
        "{stderr}"
    );

    std::fs::write(&file, "[database]\nurl = \"mysql://nope\"\n").unwrap();
    let out = binary()
        .args(["run", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("[database] key `url`: URL scheme"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_creates_its_database_runs_commands_and_reports_them() {
    let mut env = TestEnv::new("sandbox").await;
    // A database that does not exist yet: the sandbox must create it.
    let db_name = format!("{}_fresh", env.db_name);
    let config = env
        .config_text()
        .replace(&env.db_url, &format!("{PG_SERVER}/{db_name}"));
    let file = env.dir.path().join("sandbox.toml");
    std::fs::write(&file, config).unwrap();
    let admin = free_port();
    let log = std::fs::File::create(env.dir.path().join("sandbox.log")).unwrap();
    let mut child = ChildGuard(
        binary()
            .args([
                "run",
                "--sandbox",
                "--sandbox-listen",
                "127.0.0.1:0",
                "--admin-listen",
            ])
            .arg(format!("127.0.0.1:{admin}"))
            .arg("--config")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );

    let base = format!("http://127.0.0.1:{admin}");
    assert_eq!(
        wait_for_status(&format!("{base}/healthz"), 200, Duration::from_secs(30)).await,
        "ok\n"
    );
    wait_for_status(&format!("{base}/readyz"), 200, Duration::from_secs(30)).await;

    // The demo payment of the README's session works at once.
    env.publish(&pz("sandbox-capture", "capture", "55361", Some("10.00")))
        .await;
    let event = env.outcome_of("sandbox-capture").await;
    assert_eq!(event.outcome.as_str(), "succeeded", "{event:?}");
    assert_eq!(event.gateway_status.as_deref(), Some("capturesuccess"));

    let (status, metrics) = http_get(&format!("{base}/metrics")).await.unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains(r#"backoffice_commands_total{gateway="paymentz",operation="capture",outcome="succeeded"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("backoffice_gateway_latency_seconds_bucket"),
        "{metrics}"
    );
    // The event can arrive before the relay has marked its outbox row
    // published (it marks after the broker's confirm), so the backlog is
    // awaited rather than read once.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, metrics) = http_get(&format!("{base}/metrics")).await.unwrap();
        if metrics.contains("backoffice_outbox_backlog 0") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the outbox backlog never reached 0: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let log = std::fs::read_to_string(env.dir.path().join("sandbox.log")).unwrap();
    assert!(
        log.contains("SANDBOX MODE"),
        "the sandbox says so loudly: {log}"
    );
    assert!(
        !log.contains("sandbox-secure-key") && !log.contains("sandbox-merchant-secret"),
        "{log}"
    );

    child.kill().unwrap();
    child.wait().unwrap();
    let mut admin_db =
        <sqlx::PgConnection as sqlx::Connection>::connect(&format!("{PG_SERVER}/postgres"))
            .await
            .unwrap();
    let _ = sqlx::query(&format!(
        "DROP DATABASE IF EXISTS \"{db_name}\" WITH (FORCE)"
    ))
    .execute(&mut admin_db)
    .await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_postgres_is_away_and_commands_resume_after() {
    let mut env = TestEnv::new("pgdown").await;
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let proxied = format!(
        "postgres://postgres@127.0.0.1:{}/{}",
        proxy.port, env.db_name
    );
    let config_text = env.config_text().replace(&env.db_url, &proxied);
    let config = backoffice_worker::config::Config::parse(
        std::path::Path::new("pgdown.toml"),
        &config_text,
        |_| None,
    )
    .unwrap();
    let admin = free_port();
    let token = tokio_util::sync::CancellationToken::new();
    let worker = tokio::spawn(backoffice_worker::worker::run_with_options(
        config,
        None,
        Some(format!("127.0.0.1:{admin}").parse().unwrap()),
        token.clone(),
    ));
    let readyz = format!("http://127.0.0.1:{admin}/readyz");
    wait_for_status(&readyz, 200, Duration::from_secs(30)).await;

    env.publish(&pz("before-outage", "capture", "10000002", Some("1.00")))
        .await;
    assert_eq!(
        env.outcome_of("before-outage").await.outcome.as_str(),
        "succeeded"
    );

    proxy.cut();
    let body = wait_for_status(&readyz, 503, Duration::from_secs(30)).await;
    assert!(
        body.contains("\"database\"") && !body.contains("\"database\":\"ok\""),
        "{body}"
    );
    // Commands published while the database is away wait, unacknowledged.
    for k in 0..5 {
        env.publish(&pz(
            &format!("during-outage-{k}"),
            "capture",
            &(10_000_010 + 2 * k).to_string(),
            Some("1.00"),
        ))
        .await;
    }
    let (_, healthz) = http_get(&format!("http://127.0.0.1:{admin}/healthz"))
        .await
        .unwrap();
    assert_eq!(healthz, "ok\n", "alive, although not ready");

    proxy.restore();
    wait_for_status(&readyz, 200, Duration::from_secs(30)).await;
    let ids: Vec<String> = (0..5).map(|k| format!("during-outage-{k}")).collect();
    env.wait_all(&ids, Duration::from_secs(60)).await;
    for id in &ids {
        assert_eq!(env.outcome_of(id).await.outcome.as_str(), "succeeded");
    }
    assert_eq!(
        env.sim.sim().stats().ledger_entries,
        6,
        "nothing lost, nothing doubled"
    );

    token.cancel();
    worker.await.unwrap().unwrap();
    env.cleanup().await;
}
