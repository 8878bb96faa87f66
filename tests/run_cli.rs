//! `backoffice-worker run` as a user meets it: the sandbox, the admin listener
//! (`/healthz`, `/readyz`, `/metrics`), and the start-up errors.

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::{
    free_port, http_get, pz, wait_for_status, ChildGuard, Proxy, SandboxPlace, TestEnv, PG_SERVER,
};

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

/// A sandbox answers from a simulator, so it must never take real commands:
/// pointed at a configuration naming other queues and another database (a
/// production one), it uses its own names, says so, and leaves the
/// configured ones alone. The operator commands reach it with `--sandbox`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_uses_its_own_names_whatever_the_config_says() {
    let env = TestEnv::new("sandbox").await;
    let place = SandboxPlace::new("sandbox").await;
    // The configuration of a deployment: its queue and database (the test
    // environment's, with the place's schema in it), on the place's broker
    // vhost and database server.
    sqlx::query(&format!("CREATE SCHEMA \"{}\"", place.schema))
        .execute(&env.pool)
        .await
        .unwrap();
    let configured_db = format!(
        "{PG_SERVER}/{}?options[search_path]={}",
        env.db_name, place.schema
    );
    let config = env
        .config_text()
        .replace(common::AMQP_URL, &place.amqp_url)
        .replace(&env.db_url, &configured_db);
    let file = env.dir.path().join("production.toml");
    std::fs::write(&file, &config).unwrap();
    // A real command waits on the configured queue (declared in the vhost).
    let vhost = lapin::Connection::connect(&place.amqp_url, Default::default())
        .await
        .unwrap();
    let channel = vhost.create_channel().await.unwrap();
    let topology = backoffice_worker::broker::Topology {
        command_queue: env.command_queue.clone(),
        result_exchange: env.result_exchange.clone(),
        dead_letter_queue: env.dead_letter_queue.clone(),
    };
    backoffice_worker::broker::declare(&channel, &topology)
        .await
        .unwrap();
    channel
        .basic_publish(
            "".into(),
            env.command_queue.as_str().into(),
            Default::default(),
            &serde_json::to_vec(&pz("real-capture", "capture", "55361", Some("10.00"))).unwrap(),
            lapin::BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();

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
            .stdout(std::fs::File::create(env.dir.path().join("sandbox.out")).unwrap())
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
    // Ready: it has migrated its database, and not the configured one.
    let configured: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1",
    )
    .bind(&place.schema)
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(
        configured, 0,
        "the configured database was not even migrated"
    );

    // The demo payment of the README's session works at once, through the
    // operator command addressing the sandbox.
    let ops = |args: &[&str]| {
        binary()
            .args(args)
            .arg("--config")
            .arg(&file)
            .output()
            .unwrap()
    };
    let enqueue = ops(&[
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
        "sandbox-capture",
        "--wait",
    ]);
    assert!(enqueue.status.success(), "{enqueue:?}");
    let event: serde_json::Value = serde_json::from_slice(&enqueue.stdout).unwrap();
    assert_eq!(event["outcome"], "succeeded", "{event}");
    assert_eq!(event["gateway_status"], "capturesuccess");

    // The console's address, with the token made up for this run; it opens
    // the command just made.
    let printed = std::fs::read_to_string(env.dir.path().join("sandbox.out")).unwrap();
    let prefix = format!("{base}/console/login#token=");
    let token = printed
        .lines()
        .find_map(|l| l.trim().strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("the console's URL is printed: {printed}"));
    let shown: serde_json::Value = reqwest::Client::new()
        .get(format!("{base}/api/commands/sandbox-capture"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown["command"]["outcome"], "succeeded", "{shown}");
    let log = std::fs::read_to_string(env.dir.path().join("sandbox.log")).unwrap();
    assert!(!log.contains(token), "the token is printed, never logged");

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

    // The configured queue and database were left alone...
    let waiting = channel
        .queue_declare(
            env.command_queue.as_str().into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        waiting.message_count(),
        1,
        "the real command is still queued"
    );
    // ...and the sandbox's own database has the command.
    let mut sandbox_db = <sqlx::PgConnection as sqlx::Connection>::connect(&place.sandbox_db_url)
        .await
        .unwrap();
    let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM commands")
        .fetch_all(&mut sandbox_db)
        .await
        .unwrap();
    assert_eq!(ids, vec!["sandbox-capture".to_string()]);

    // Every operator command addresses the same names with --sandbox.
    let show = ops(&["show", "--sandbox", "sandbox-capture"]);
    assert!(show.status.success(), "{show:?}");
    assert!(String::from_utf8_lossy(&show.stdout).contains("capturesuccess"));
    let list = ops(&["list", "--sandbox", "--outcome", "failed"]);
    assert!(list.status.success(), "{list:?}");
    let dead = ops(&["dead-letters", "--sandbox", "list"]);
    assert!(dead.status.success(), "{dead:?}");
    let migrate = ops(&["migrate", "--sandbox"]);
    assert!(migrate.status.success(), "{migrate:?}");
    let said = String::from_utf8_lossy(&migrate.stdout);
    assert!(said.contains("`backoffice_sandbox`"), "{said}");
    // Without --sandbox they address the configured ones.
    let show = ops(&["show", "sandbox-capture"]);
    assert!(!show.status.success(), "not in the configured database");

    let log = std::fs::read_to_string(env.dir.path().join("sandbox.log")).unwrap();
    assert!(
        log.contains("SANDBOX MODE")
            && log.contains("backoffice.sandbox.commands")
            && log.contains("backoffice_sandbox")
            && log.contains("are NOT used"),
        "the sandbox says loudly which names it uses: {log}"
    );
    assert!(
        !log.contains("sandbox-secure-key") && !log.contains("sandbox-merchant-secret"),
        "{log}"
    );

    child.kill().unwrap();
    child.wait().unwrap();
    let _ = vhost.close(200, "done".into()).await;
    place.cleanup().await;
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
