//! The operator console in a real browser: Debian's headless `chromium`,
//! driven through `chromedriver` from this test (scripts/browser-deps
//! installs both). One worker, one flow per role, a screenshot of each page
//! under `target/console-screenshots/`:
//!
//! - a viewer logs in, reads, and is refused an action;
//! - an operator logs in, watches a command enqueued through the broker
//!   appear and finish on the overview (which refreshes by itself) and the
//!   list, opens its timeline and its payment, reconciles an unknown made
//!   with the simulator's faults and sees the new inquiry, requeues a dead
//!   letter, releases a held authorization (a mismatch the simulator
//!   notifies) as a capture with a reason, and a cross-site form post in the
//!   same browser is refused.

mod common;
mod console_support;

use std::path::PathBuf;
use std::time::Duration;

use common::TestEnv;
use console_support::webdriver::{Browser, Driver};
use console_support::{make_hold, make_unknown, ConsoleWorker, OPERATOR, VIEWER};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(20);

fn shot(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/console-screenshots")
        .join(format!("{name}.png"))
}

async fn log_in(b: &Browser, w: &ConsoleWorker, token: &str, name: &str) {
    b.goto(&w.url("/console/login")).await;
    b.type_into("#token", token).await;
    b.type_into("#name", name).await;
    b.click("#login button").await;
    b.find("#live", WAIT).await;
}

/// A page on another origin (another port of the same host: the same
/// *site*, so a SameSite cookie goes with it) that posts a form to the
/// console as soon as it loads.
async fn forger(target: String) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let target = target.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let html = format!(
                    "<!DOCTYPE html><html><body><form id=f method=post action=\"{target}\"><input name=back value=/console/attention></form><script>document.getElementById('f').submit()</script></body></html>"
                );
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{html}",
                    html.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_and_operators_use_the_console_in_chromium() {
    let mut env = TestEnv::new("console-browser").await;
    let (w, notify_port) = ConsoleWorker::start_notified(&mut env).await;
    let driver = Driver::start().await;
    // A dead letter to look at, and to requeue.
    env.publish_raw(b"{not json".to_vec(), lapin::BasicProperties::default())
        .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while sqlx::query_scalar::<_, i64>("SELECT count(*) FROM dead_letters")
        .fetch_one(&env.pool)
        .await
        .unwrap()
        == 0
    {
        assert!(tokio::time::Instant::now() < deadline, "dead-lettered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // ---- a viewer: reads everything, acts on nothing.
    let b = driver.session().await;
    b.goto(&w.url("/console/commands")).await;
    b.find("#login", WAIT).await;
    assert!(
        b.current_url().await.ends_with("/console/login"),
        "pages need a login"
    );
    b.screenshot(&shot("login")).await;
    log_in(&b, &w, VIEWER, "Vera").await;
    assert!(b.text("header .who").await.contains("Vera (viewer)"));
    b.goto(&w.url("/console/attention")).await;
    b.find("#dead-letters-table tbody tr", WAIT).await;
    b.click("#dead-letters-table tbody tr button").await;
    let refused = b.wait_text("main", WAIT, |t| t.contains("403")).await;
    assert!(refused.contains("a viewer may look, not act"), "{refused}");
    b.quit().await;

    // ---- an operator.
    let b = driver.session().await;
    log_in(&b, &w, OPERATOR, "Otto").await;
    let before = b.text("#live figcaption").await;
    assert!(before.starts_with("0 commands"), "{before}");
    // A command through the broker appears on the overview by itself.
    let mut capture = common::pz("browser-cap-1", "capture", "10000060", Some("25.00"));
    capture["metadata"] = serde_json::json!({"order_ref": "B-1"});
    env.publish(&capture).await;
    b.wait_text("#live figcaption", WAIT, |t| t.starts_with("1 command."))
        .await;
    b.screenshot(&shot("overview")).await;
    // ... and on the list, finished.
    env.outcome_of("browser-cap-1").await;
    b.goto(&w.url("/console/commands")).await;
    let row = "#commands tr[data-id='browser-cap-1'] td.outcome";
    b.wait_text(row, WAIT, |t| t.contains("succeeded")).await;
    b.screenshot(&shot("commands")).await;
    // Its timeline, every attempt.
    b.click("#commands tr[data-id='browser-cap-1'] a").await;
    b.find("ol.timeline", WAIT).await;
    let attempts = b.all("ol.timeline li.attempt").await.len();
    let recorded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM attempts WHERE command_id = 'browser-cap-1'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(attempts as i64, recorded, "each attempt on the timeline");
    assert!(b.text("ol.timeline").await.contains("operation CP"));
    b.screenshot(&shot("command")).await;
    // Its payment.
    b.click("#payment a").await;
    b.wait_text("#captured", WAIT, |t| t.contains("25.00"))
        .await;
    b.screenshot(&shot("payment")).await;
    // The search box finds a command by its id.
    b.type_into("header form.find input", "browser-cap-1\n")
        .await;
    b.wait_text("h1", WAIT, |t| t.contains("browser-cap-1"))
        .await;

    // Reconcile an unknown: a new inquiry attempt, and it settles.
    make_unknown(&mut env, "browser-unk-1", "10000061").await;
    b.goto(&w.url("/console/commands/browser-unk-1")).await;
    let inquiries_before = b.all("ol.timeline li.attempt").await.len();
    b.type_into("#reconcile input[name=reason]", "checking by hand")
        .await;
    b.click("#reconcile button").await;
    let banner = b
        .wait_text("p.banner", WAIT, |t| t.contains("reconcile"))
        .await;
    assert!(banner.contains("settled as succeeded"), "{banner}");
    assert_eq!(
        b.all("ol.timeline li.attempt").await.len(),
        inquiries_before + 1,
        "the new inquiry on the timeline"
    );
    assert!(b.text("#outcome").await.contains("succeeded"));
    b.screenshot(&shot("reconciled")).await;

    // Requeue the dead letter.
    b.goto(&w.url("/console/attention")).await;
    b.screenshot(&shot("attention")).await;
    b.click("#dead-letters-table tbody tr button").await;
    let banner = b
        .wait_text("p.banner", WAIT, |t| t.contains("requeue"))
        .await;
    assert!(banner.contains("requeued to"), "{banner}");

    // Release a held authorization as a capture, with a reason.
    let hold = make_hold(&env, notify_port, "720001").await;
    b.goto(&w.url("/console/attention")).await;
    let row = format!("#holds tr[data-id='{hold}']");
    b.find(&row, WAIT).await;
    assert!(b.text(&row).await.contains("mismatch"));
    b.screenshot(&shot("held")).await;
    b.type_into(&format!("{row} input[name=reason]"), "customer confirmed")
        .await;
    b.click(&format!("{row} button[value=capture]")).await;
    let banner = b
        .wait_text("p.banner", WAIT, |t| t.contains("release"))
        .await;
    assert!(banner.contains("released as a capture"), "{banner}");
    let event = env.outcome_of("auto.praxis.default.720001").await;
    assert_eq!(event.operation.as_deref(), Some("capture"));
    assert_eq!(event.origin.unwrap().rule, "operator");
    assert!(b.all("#holds tr[data-id]").await.is_empty(), "no hold left");

    // A cross-site form post, with the operator's cookie: refused.
    // (The requeued message was dead-lettered again: still not JSON.)
    let deadline = tokio::time::Instant::now() + WAIT;
    let dead: i64 = loop {
        let waiting: Option<i64> =
            sqlx::query_scalar("SELECT min(id) FROM dead_letters WHERE requeued_at IS NULL")
                .fetch_one(&env.pool)
                .await
                .unwrap();
        if let Some(id) = waiting {
            break id;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "dead-lettered again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let port = forger(w.url(&format!("/console/dead-letters/{dead}/requeue"))).await;
    b.goto(&format!("http://127.0.0.1:{port}/")).await;
    let refused = b.wait_text("main", WAIT, |t| t.contains("403")).await;
    assert!(refused.contains("cross-site"), "{refused}");
    let requeued: Option<time::OffsetDateTime> =
        sqlx::query_scalar("SELECT requeued_at FROM dead_letters WHERE id = $1")
            .bind(dead)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert!(requeued.is_none(), "the forged request did nothing");

    // The audit shows who did what.
    b.goto(&w.url("/console/audit")).await;
    let audit = b.text("#audit").await;
    assert!(
        audit.contains("Otto (operator)") && audit.contains("checking by hand"),
        "{audit}"
    );
    b.screenshot(&shot("audit")).await;
    b.quit().await;

    drop(driver);
    w.stop().await;
    env.cleanup().await;
}
