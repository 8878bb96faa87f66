//! The README's notification session, as a new user types it: `run
//! --sandbox` with no config file, the demo authorization captured with no
//! command published, a USD authorization held, listed, released by a
//! person, and the metrics. The binary itself, in its own place (vhost and
//! schema), against the real services.

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::{free_port, http_get, SandboxPlace};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_notification_session_works_as_typed() {
    let place = SandboxPlace::new("notify-session").await;
    let dir = tempfile::tempdir().unwrap();
    let command = |args: &[&str]| place.command(dir.path(), args);
    let admin = format!("127.0.0.1:{}", free_port());
    let simulator = format!("127.0.0.1:{}", free_port());
    let mut worker = place.start_sandbox(dir.path(), &simulator, &admin).await;

    let list = |status: Option<&str>| {
        let mut args = vec!["notifications", "list", "--sandbox", "--json"];
        if let Some(status) = status {
            args.extend(["--status", status]);
        }
        let out = command(&args).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap()
    };
    let show = |id: &str| {
        let out = command(&["show", "--sandbox", id]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let wait_for = |what: &str, check: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !check() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(300));
        }
    };

    // The demo authorization (752857, 25.00 GBP) is captured by the demo rule.
    wait_for("752857 captured", &|| {
        show("auto.praxis.default.752857").contains("succeeded")
    });
    let rows = list(None);
    let acted = rows
        .iter()
        .find(|r| r["payment_id"] == "752857" && r["decision"] == "acted")
        .expect("the demo authorization was acted on");
    assert_eq!(acted["rule"], "sandbox-demo");
    let out = command(&[
        "notifications",
        "show",
        "--sandbox",
        &acted["id"].to_string(),
    ])
    .output()
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("auto.praxis.default.752857 (succeeded)"),
        "{text}"
    );

    // A USD authorization: no rule matches, it is held, and a person releases it.
    let created = reqwest::Client::new()
        .post(format!("http://{simulator}/admin/payments"))
        .body(r#"{"gateway":"praxis","id":"752858","amount":"12.00","currency":"USD","state":"authorized"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status().as_u16(), 201);
    wait_for("752858 held", &|| {
        list(Some("held"))
            .iter()
            .any(|r| r["payment_id"] == "752858")
    });
    let held = list(Some("held"));
    let id = held.iter().find(|r| r["payment_id"] == "752858").unwrap()["id"].to_string();
    let out = command(&[
        "notifications",
        "release",
        "--sandbox",
        &id,
        "--action",
        "capture",
        "--by",
        "alice",
    ])
    .output()
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    wait_for("752858 captured", &|| {
        show("auto.praxis.default.752858").contains("succeeded")
    });
    let again = command(&[
        "notifications",
        "release",
        "--sandbox",
        &id,
        "--action",
        "cancel",
    ])
    .output()
    .unwrap();
    assert!(
        !again.status.success(),
        "a closed hold is not released twice"
    );

    let (_, metrics) = http_get(&format!("http://{admin}/metrics")).await.unwrap();
    assert!(
        metrics.contains(
            r#"backoffice_notifications_total{gateway="praxis",verified="true",decision="acted"}"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains("backoffice_holds_open"), "{metrics}");

    let _ = Command::new("kill")
        .args(["-TERM", &worker.0.id().to_string()])
        .status();
    let _ = tokio::task::spawn_blocking(move || worker.0.wait()).await;
    place.cleanup().await;
}
