//! The operator console over plain HTTP, against a real worker (its admin
//! listener, the real database and broker): the access rules of
//! shared/spec/config.md, the JSON API's minimum, every page, the command
//! list's filters and keyset pages, and the actions (reconcile now, requeue
//! one, requeue all that match, release a held authorization), each with its
//! audit row.
//!
//! The same flows in a real browser are in `tests/console_browser.rs`.

use crate::common;
use crate::console_support;

use std::collections::HashSet;
use std::time::Duration;

use common::TestEnv;
use console_support::{client, make_hold, make_unknown, ConsoleWorker, OPERATOR, VIEWER};
use reqwest::StatusCode;
use serde_json::Value;

async fn login(w: &ConsoleWorker, token: &str, name: &str) -> String {
    let r = client()
        .post(w.url("/console/login"))
        .header("origin", format!("http://{}", w.addr))
        .form(&[("token", token), ("name", name)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let cookie = r
        .headers()
        .get("set-cookie")
        .expect("a session cookie")
        .to_str()
        .unwrap()
        .to_string();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(!cookie.contains(token), "the cookie is not the token");
    cookie.split(';').next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_without_credentials_viewers_read_operators_act_and_no_cross_site_change() {
    let mut env = TestEnv::new("console-access").await;
    let w = ConsoleWorker::start(&mut env).await;
    let c = client();

    // Nothing without credentials: 401 for the API, the login form for pages.
    for path in ["/api/commands/x", "/api/dead-letters", "/api/overview"] {
        let r = c.get(w.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    let r = c
        .post(w.url("/api/dead-letters/1/requeue"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    for path in ["/console", "/console/commands", "/console/audit"] {
        let r = c.get(w.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(r.headers()["location"], "/console/login");
    }
    let r = c
        .get(w.url("/api/commands/x"))
        .bearer_auth("not-a-token-at-all")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // The scrapers' paths stay open.
    for path in ["/metrics", "/healthz", "/readyz"] {
        let r = c.get(w.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }

    // A viewer reads; the answers are hardened and carry no token.
    let r = c
        .get(w.url("/api/dead-letters"))
        .bearer_auth(VIEWER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert!(r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("frame-ancestors 'none'"));
    let body: Value = r.json().await.unwrap();
    assert!(body.as_array().is_some_and(|a| a.is_empty()), "{body}");
    let r = c
        .get(w.url("/api/commands/nope"))
        .bearer_auth(VIEWER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // A viewer's action: 403, whatever the origin.
    for path in ["/api/dead-letters/1/requeue", "/api/commands/x/reconcile"] {
        let r = c
            .post(w.url(path))
            .bearer_auth(VIEWER)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{path}");
    }
    // An operator's cross-site action: 403.
    let r = c
        .post(w.url("/api/commands/x/reconcile"))
        .bearer_auth(OPERATOR)
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = c
        .post(w.url("/api/commands/x/reconcile"))
        .bearer_auth(OPERATOR)
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // The same from a script (no origin headers): past the guards, to the 404.
    let r = c
        .post(w.url("/api/commands/x/reconcile"))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // The login form: a wrong token opens nothing; a right one a session.
    let r = c
        .post(w.url("/console/login"))
        .form(&[("token", "wrong-token-123")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().get("set-cookie").is_none());
    let r = c
        .post(w.url("/console/login"))
        .header("sec-fetch-site", "cross-site")
        .form(&[("token", VIEWER)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "no login forgery");
    let viewer = login(&w, VIEWER, "ann").await;
    let r = c
        .get(w.url("/console"))
        .header("cookie", &viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let page = r.text().await.unwrap();
    assert!(page.contains("ann (viewer)"), "{page}");
    assert!(!page.contains(VIEWER) && !page.contains(OPERATOR));
    // The session opens the API too; its actions stay a viewer's.
    let r = c
        .get(w.url("/api/overview"))
        .header("cookie", &viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = c
        .post(w.url("/console/dead-letters/1/requeue"))
        .header("cookie", &viewer)
        .header("origin", format!("http://{}", w.addr))
        .form(&[("back", "/console/attention")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // An operator's session, from another site: 403.
    let operator = login(&w, OPERATOR, "bob").await;
    let r = c
        .post(w.url("/console/dead-letters/1/requeue"))
        .header("cookie", &operator)
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Logging out ends the session.
    let r = c
        .post(w.url("/console/logout"))
        .header("cookie", &viewer)
        .header("origin", format!("http://{}", w.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = c
        .get(w.url("/console"))
        .header("cookie", &viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);

    w.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_and_api_show_commands_payments_and_pages_of_the_list() {
    let mut env = TestEnv::new("console-pages").await;
    let w = ConsoleWorker::start(&mut env).await;
    let c = client();
    // A real command through the broker: a capture of a demo-style payment.
    let mut capture = common::pz("pages-cap-1", "capture", "10000040", Some("10.00"));
    capture["metadata"] = serde_json::json!({"order_ref": "A-17", "n": 5});
    env.publish(&capture).await;
    let event = env.outcome_of("pages-cap-1").await;
    assert_eq!(event.outcome.as_str(), "succeeded", "{event:?}");
    // 120 more, straight into the table, over the last two hours.
    sqlx::query(
        "INSERT INTO commands (id, payload, fingerprint, gateway, account, operation, payment_id,
                               amount_minor, currency, state, outcome, received_at, decided_at)
         SELECT 'bulk-' || lpad(g::text, 3, '0'), '{}'::jsonb, 'f', 'praxis', 'default', 'refund',
                'p' || g, 100, 'USD', 'done',
                CASE WHEN g % 3 = 0 THEN 'failed' ELSE 'succeeded' END,
                now() - make_interval(mins => g), now() - make_interval(mins => g)
           FROM generate_series(1, 120) g",
    )
    .execute(&env.pool)
    .await
    .unwrap();

    // The API's minimum: the command with its attempts and events.
    let r = c
        .get(w.url("/api/commands/pages-cap-1"))
        .bearer_auth(VIEWER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["command"]["id"], "pages-cap-1");
    let attempts = body["attempts"].as_array().unwrap();
    assert!(
        attempts.iter().any(|a| a["kind"] == "operation"),
        "{attempts:?}"
    );
    let events = body["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0]["routing_key"].as_str().is_some());
    let text = body.to_string();
    assert!(!text.contains("sandbox-secure-key"), "no gateway secret");

    // Pages: the overview, the command, its payment.
    let get = |path: String| {
        let c = c.clone();
        async move {
            let r = c.get(path).bearer_auth(VIEWER).send().await.unwrap();
            let status = r.status();
            (status, r.text().await.unwrap())
        }
    };
    for path in [
        "/console",
        "/console/live",
        "/console/attention",
        "/console/audit",
    ] {
        let (status, page) = get(w.url(path)).await;
        assert_eq!(status, StatusCode::OK, "{path}: {page}");
        assert!(!page.contains("sandbox-secure-key") && !page.contains(OPERATOR));
    }
    let (_, overview) = get(w.url("/console")).await;
    assert!(overview.contains("<svg"), "a chart");
    let (status, page) = get(w.url("/console/commands/pages-cap-1")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("Timeline") && page.contains(" operation</strong> CP"),
        "{page}"
    );
    assert!(
        page.contains("/console/payments/paymentz/10000040"),
        "{page}"
    );
    let (status, page) = get(w.url("/console/payments/paymentz/10000040")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("pages-cap-1"), "{page}");
    assert!(page.contains("10.00"), "captured total: {page}");
    // The search box: an exact id opens it, a prefix lists.
    let r = c
        .get(w.url("/console/find?q=pages-cap-1"))
        .bearer_auth(VIEWER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["location"], "/console/commands/pages-cap-1");
    let (_, page) = get(w.url("/console/commands?id=pages-")).await;
    assert!(page.contains("pages-cap-1") && !page.contains("bulk-001"));
    let (_, page) = get(w.url("/console/commands?metadata=order_ref%3DA-17")).await;
    assert!(page.contains("pages-cap-1"), "metadata filter");
    let (_, page) = get(w.url("/console/commands?metadata=n%3D5")).await;
    assert!(page.contains("pages-cap-1"), "a number in the metadata");
    let (_, page) = get(w.url("/console/commands?metadata=order_ref%3DB")).await;
    assert!(!page.contains("pages-cap-1"));
    let (status, _) = get(w.url("/console/commands?from=yesterday")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Keyset pages through the API: every command once, newest first.
    let mut seen = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let mut query = vec![("gateway", "praxis".to_string())];
        if let Some(after) = &next {
            query.push(("after", after.clone()));
        }
        let body: Value = c
            .get(w.url("/api/commands"))
            .query(&query)
            .bearer_auth(VIEWER)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for row in body["commands"].as_array().unwrap() {
            seen.push(row["id"].as_str().unwrap().to_string());
        }
        match body["next"].as_str() {
            Some(after) => next = Some(after.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 120);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 120, "no repeats");
    assert_eq!(seen[0], "bulk-001", "newest first");
    assert_eq!(seen[119], "bulk-120");
    // Filters combine: failed praxis refunds received in the last hour.
    let body: Value = c
        .get(w.url("/api/commands"))
        .query(&[
            ("outcome", "failed"),
            ("operation", "refund"),
            ("from", "61m"),
        ])
        .bearer_auth(VIEWER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = body["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 20, "{ids:?}");
    assert!(ids
        .iter()
        .all(|id| id[5..].parse::<u32>().unwrap() % 3 == 0));

    w.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_reconcile_and_requeue_are_done_audited_and_refused_twice() {
    let mut env = TestEnv::new("console-actions").await;
    let w = ConsoleWorker::start(&mut env).await;
    let c = client();

    // Reconcile now: a real inquiry, recorded; the unknown settles.
    make_unknown(&mut env, "act-unk-1", "10000051").await;
    let inquiries = |env: &TestEnv| {
        let pool = env.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM attempts WHERE command_id = 'act-unk-1' AND kind = 'inquiry'",
            )
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let before = inquiries(&env).await;
    let r = c
        .post(w.url("/api/commands/act-unk-1/reconcile"))
        .bearer_auth(OPERATOR)
        .json(&serde_json::json!({"reason": "customer asked"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let done: Value = r.json().await.unwrap();
    assert_eq!(done["ok"], true, "{done}");
    assert!(
        done["result"]
            .as_str()
            .unwrap()
            .starts_with("settled as succeeded"),
        "{done}"
    );
    assert_eq!(inquiries(&env).await, before + 1, "one new inquiry attempt");
    let settled = env
        .wait_event("act-unk-1", Duration::from_secs(10), |e| e.reconciled)
        .await;
    assert_eq!(settled.outcome.as_str(), "succeeded");
    // Again: refused (not unknown any more), and audited as refused.
    let r = c
        .post(w.url("/api/commands/act-unk-1/reconcile"))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);

    // Dead letters: requeue one, refuse it twice; requeue all that match.
    for body in [&b"not json 1"[..], b"not json 2", b"not json 3"] {
        env.publish_raw(body.to_vec(), lapin::BasicProperties::default())
            .await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let listed = loop {
        let listed: Value = c
            .get(w.url("/api/dead-letters"))
            .bearer_auth(VIEWER)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if listed.as_array().unwrap().len() == 3 {
            break listed;
        }
        assert!(tokio::time::Instant::now() < deadline, "{listed}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let first = listed[2]["id"].as_i64().unwrap();
    let r = c
        .post(w.url(&format!("/api/dead-letters/{first}/requeue")))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = c
        .post(w.url(&format!("/api/dead-letters/{first}/requeue")))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT, "never published twice");
    let r = c
        .post(w.url("/api/dead-letters/requeue"))
        .bearer_auth(OPERATOR)
        .json(&serde_json::json!({"matching": "not JSON", "reason": "fixed the producer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let bulk: Value = r.json().await.unwrap();
    // The requeued one came back as a new dead letter (still not JSON), so
    // the bulk request finds the two left plus that one.
    assert!(bulk["requeued"].as_array().unwrap().len() >= 2, "{bulk}");
    assert_eq!(bulk["failed"].as_array().unwrap().len(), 0, "{bulk}");
    assert_eq!(bulk["left"], 0);
    // One that cannot be requeued (only its start was kept): counted, with why.
    env.publish_raw(vec![b'x'; 70 * 1024], lapin::BasicProperties::default())
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM dead_letters WHERE requeued_at IS NULL AND strpos(reason, 'a command is at most') > 0",
        )
        .fetch_one(&env.pool)
        .await
        .unwrap();
        if waiting == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "dead-lettered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let bulk: Value = c
        .post(w.url("/api/dead-letters/requeue"))
        .bearer_auth(OPERATOR)
        .json(&serde_json::json!({"matching": "a command is at most"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(bulk["matched"], 1, "{bulk}");
    assert_eq!(bulk["requeued"].as_array().unwrap().len(), 0, "{bulk}");
    let failed = bulk["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{bulk}");
    assert!(failed[0][1]
        .as_str()
        .unwrap()
        .contains("too large to keep whole"));
    assert!(
        bulk["result"].as_str().unwrap().contains("1 failed"),
        "{bulk}"
    );

    // The audit: who, what, why, result; in the transaction of the effect.
    let audit: Value = c
        .get(w.url("/api/audit"))
        .bearer_auth(VIEWER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rows = audit.as_array().unwrap();
    let find = |action: &str, ok: bool| {
        rows.iter()
            .find(|r| r["action"] == action && r["ok"] == ok)
            .unwrap_or_else(|| panic!("no {action} ok={ok} in {audit}"))
    };
    let reconciled = find("reconcile", true);
    assert_eq!(reconciled["target"], "act-unk-1");
    assert_eq!(reconciled["reason"], "customer asked");
    assert_eq!(reconciled["actor"], "api (operator token)");
    find("reconcile", false);
    find("requeue", true);
    assert!(rows.iter().any(|r| r["action"] == "requeue"
        && r["ok"] == false
        && r["result"].as_str().unwrap().contains("already requeued")));
    assert_eq!(
        find("requeue-matching", true)["reason"],
        "fixed the producer"
    );
    let requeued: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM dead_letters d JOIN console_audit a
            ON a.target = 'dead-letter:' || d.id AND a.action = 'requeue' AND a.ok
         WHERE d.requeued_at IS NOT NULL",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    let marked: i64 =
        sqlx::query_scalar("SELECT count(*) FROM dead_letters WHERE requeued_at IS NOT NULL")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(requeued, marked, "every requeue has its audit row");
    let (_, page) = (
        (),
        c.get(w.url("/console/audit"))
            .bearer_auth(VIEWER)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    assert!(page.contains("customer asked"), "{page}");

    w.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_authorization_is_listed_and_released_once_by_an_operator_with_a_reason() {
    let mut env = TestEnv::new("console-holds").await;
    let (w, port) = ConsoleWorker::start_notified(&mut env).await;
    let c = client();
    let id = make_hold(&env, port, "710001").await;
    let release = format!("/api/holds/{id}/release");

    // Listed, with why and its deadline; on the overview and the page.
    let holds: Value = c
        .get(w.url("/api/holds"))
        .bearer_auth(VIEWER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let hold = &holds.as_array().unwrap()[0];
    assert_eq!(hold["id"], id, "{holds}");
    assert_eq!(hold["payment_id"], "710001");
    assert_eq!(hold["rule"], "mismatch");
    assert_eq!(hold["currency"], "USD");
    assert!(hold["hold_deadline"].is_string(), "{hold}");
    let page = c
        .get(w.url("/console/attention"))
        .bearer_auth(VIEWER)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(&format!("/console/holds/{id}/release")),
        "{page}"
    );
    assert!(page.contains("Release as capture"));
    let shown: Value = c
        .get(w.url(&format!("/api/notifications/{id}")))
        .bearer_auth(VIEWER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown["decision"], "held", "{shown}");

    // A viewer is refused; so is a cross-site request; a reason is required.
    let body = serde_json::json!({"action": "capture", "reason": "customer confirmed 10.00"});
    let r = c
        .post(w.url(&release))
        .bearer_auth(VIEWER)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = c
        .post(w.url(&release))
        .bearer_auth(OPERATOR)
        .header("sec-fetch-site", "cross-site")
        .header("origin", "http://evil.example")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = c
        .post(w.url(&release))
        .bearer_auth(OPERATOR)
        .json(&serde_json::json!({"action": "capture"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "a reason is required");
    let commands = |env: &TestEnv| {
        let pool = env.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM commands WHERE id = 'auto.praxis.default.710001'",
            )
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    assert_eq!(commands(&env).await, 0, "nothing made by a refusal");

    // The operator releases it: the automated command, rule "operator".
    let r = c
        .post(w.url(&release))
        .bearer_auth(OPERATOR)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let done: Value = r.json().await.unwrap();
    assert_eq!(done["ok"], true, "{done}");
    assert!(
        done["result"]
            .as_str()
            .unwrap()
            .contains("auto.praxis.default.710001"),
        "{done}"
    );
    let event = env.outcome_of("auto.praxis.default.710001").await;
    assert_eq!(event.outcome.as_str(), "succeeded");
    assert_eq!(event.operation.as_deref(), Some("capture"));
    assert_eq!(event.origin.unwrap().rule, "operator");
    // Twice: refused (not an open hold), audited as not ok; one command.
    let r = c
        .post(w.url(&release))
        .bearer_auth(OPERATOR)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(commands(&env).await, 1, "the command is made once");
    let closed_by: String =
        sqlx::query_scalar("SELECT hold_closed_by FROM notifications WHERE id = $1")
            .bind(id)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert!(closed_by.starts_with("console:"), "{closed_by}");
    let holds: Value = c
        .get(w.url("/api/holds"))
        .bearer_auth(VIEWER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(holds, serde_json::json!([]));

    // The notification on the command's timeline and on its payment.
    let command: Value = c
        .get(w.url("/api/commands/auto.praxis.default.710001"))
        .bearer_auth(VIEWER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // The release made it (the simulator may also have notified the capture).
    let touched = command["notifications"].as_array().unwrap();
    assert!(
        touched.iter().any(|n| n["id"] == id
            && n["decision"] == "acted"
            && n["rule"] == "operator"
            && n["matched"]["held_by"] == "mismatch"),
        "{command}"
    );
    let payment: Value = c
        .get(w.url("/api/payments/praxis/710001"))
        .bearer_auth(VIEWER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        payment["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["id"] == id),
        "{payment}"
    );
    for path in [
        "/console/commands/auto.praxis.default.710001".to_string(),
        "/console/payments/praxis/710001".to_string(),
    ] {
        let page = c
            .get(w.url(&path))
            .bearer_auth(VIEWER)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            page.contains(&format!("/api/notifications/{id}")),
            "{path}: {page}"
        );
    }

    // The audit: the release (ok) and the refused second one.
    let audit: Value = c
        .get(w.url(&format!("/api/audit?target=notification:{id}")))
        .bearer_auth(VIEWER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rows = audit.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{audit}");
    assert!(rows.iter().all(|r| r["action"] == "release"), "{audit}");
    assert!(
        rows.iter()
            .any(|r| r["ok"] == true && r["reason"] == "customer confirmed 10.00"),
        "{audit}"
    );
    assert!(rows.iter().any(|r| r["ok"] == false), "{audit}");
    w.stop().await;
    env.cleanup().await;
}
