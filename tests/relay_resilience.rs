//! The outbox relay when the broker misbehaves: it stops confirming (the relay
//! must not hang, and the events must still go out, with their message ids),
//! the relay falls behind (the hand-over from the completion writer stays
//! bounded and loses nothing), and an event can never be published (it is
//! abandoned and recorded, and the events behind it go out).
//!
//! The broker is the real RabbitMQ; to make it "stop confirming" for one
//! worker only, the worker talks to it through [`ConfirmDropper`], a TCP
//! proxy that understands just enough AMQP framing to drop the broker's
//! `basic.ack` frames on the connections open when it is told to.

use crate::common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use backoffice_worker::config::Config;
use common::{free_port, http_get, pz, TestEnv, WorkerHandle, AMQP_URL};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// AMQP 0-9-1: a method frame, and the class and method of `basic.ack`.
const FRAME_METHOD: u8 = 1;
const BASIC_ACK: (u16, u16) = (60, 80);

/// A TCP proxy to RabbitMQ that can stop the broker's publisher confirms
/// (`basic.ack`) from reaching the client, on the connections open when
/// [`ConfirmDropper::stop_confirms`] is called. Everything else (deliveries,
/// heartbeats, channel and connection methods) still flows both ways, so the
/// connection looks perfectly healthy: exactly the broker that a relay
/// without a confirm timeout waits for forever. New connections are not
/// affected. It can also hold the confirms back instead
/// ([`ConfirmDropper::hold_confirms`]) and pass them on later, in order
/// ([`ConfirmDropper::release_confirms`]): a broker whose disk write is slow.
struct ConfirmDropper {
    port: u16,
    opened: Arc<AtomicU64>,
    cutoff: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
    /// While holding: the connections (by number) whose confirms are held.
    holding: tokio::sync::watch::Sender<u64>,
    held: Arc<AtomicU64>,
}

impl ConfirmDropper {
    async fn start() -> ConfirmDropper {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let opened = Arc::new(AtomicU64::new(0));
        let cutoff = Arc::new(AtomicU64::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        let held = Arc::new(AtomicU64::new(0));
        let (holding, _) = tokio::sync::watch::channel(0u64);
        let (o, c, d, h) = (
            opened.clone(),
            cutoff.clone(),
            dropped.clone(),
            held.clone(),
        );
        let hold = holding.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let number = o.fetch_add(1, Ordering::SeqCst);
                let (cutoff, dropped, held) = (c.clone(), d.clone(), h.clone());
                let mut holding = hold.subscribe();
                tokio::spawn(async move {
                    let Ok(broker) = tokio::net::TcpStream::connect("127.0.0.1:5672").await else {
                        return;
                    };
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut broker_read, mut broker_write) = broker.into_split();
                    let upstream = async {
                        let _ = tokio::io::copy(&mut client_read, &mut broker_write).await;
                    };
                    // Frames from the broker, read whole on a task of their
                    // own so that a release can be acted on between frames.
                    let (frames_tx, mut frames) = tokio::sync::mpsc::unbounded_channel();
                    let reader = tokio::spawn(async move {
                        // The broker sends frames from its first byte on.
                        let mut header = [0u8; 7];
                        loop {
                            if broker_read.read_exact(&mut header).await.is_err() {
                                return;
                            }
                            let size = u32::from_be_bytes(header[3..7].try_into().unwrap());
                            let mut rest = vec![0u8; size as usize + 1];
                            if broker_read.read_exact(&mut rest).await.is_err() {
                                return;
                            }
                            if frames_tx.send((header, rest)).is_err() {
                                return;
                            }
                        }
                    });
                    let downstream = async {
                        let mut queued: Vec<([u8; 7], Vec<u8>)> = Vec::new();
                        loop {
                            let (header, rest) = tokio::select! {
                                frame = frames.recv() => match frame {
                                    Some(frame) => frame,
                                    None => return,
                                },
                                changed = holding.changed() => {
                                    if changed.is_err() {
                                        return;
                                    }
                                    if number >= *holding.borrow_and_update() {
                                        for (header, rest) in queued.drain(..) {
                                            held.fetch_sub(1, Ordering::SeqCst);
                                            if client_write.write_all(&header).await.is_err()
                                                || client_write.write_all(&rest).await.is_err()
                                            {
                                                return;
                                            }
                                        }
                                    }
                                    continue;
                                }
                            };
                            let is_ack = header[0] == FRAME_METHOD
                                && rest.len() >= 5
                                && u16::from_be_bytes([rest[0], rest[1]]) == BASIC_ACK.0
                                && u16::from_be_bytes([rest[2], rest[3]]) == BASIC_ACK.1;
                            if is_ack && number < cutoff.load(Ordering::SeqCst) {
                                dropped.fetch_add(1, Ordering::SeqCst);
                                continue;
                            }
                            if is_ack && (number < *holding.borrow() || !queued.is_empty()) {
                                held.fetch_add(1, Ordering::SeqCst);
                                queued.push((header, rest));
                                continue;
                            }
                            if client_write.write_all(&header).await.is_err()
                                || client_write.write_all(&rest).await.is_err()
                            {
                                return;
                            }
                        }
                    };
                    tokio::select! {
                        _ = upstream => {}
                        _ = downstream => {}
                    }
                    reader.abort();
                });
            }
        });
        ConfirmDropper {
            port,
            opened,
            cutoff,
            dropped,
            holding,
            held,
        }
    }

    fn url(&self) -> String {
        AMQP_URL.replace("127.0.0.1:5672", &format!("127.0.0.1:{}", self.port))
    }

    /// From now on, the connections open now get no more confirms.
    fn stop_confirms(&self) {
        self.cutoff
            .store(self.opened.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::SeqCst)
    }

    /// From now on, the connections open now get their confirms only once
    /// [`ConfirmDropper::release_confirms`] is called.
    fn hold_confirms(&self) {
        self.holding
            .send_replace(self.opened.load(Ordering::SeqCst));
    }

    /// Passes on every confirm held, in the order the broker sent them, and
    /// holds no more.
    fn release_confirms(&self) {
        self.holding.send_replace(0);
    }

    /// Confirm frames held now.
    fn held(&self) -> u64 {
        self.held.load(Ordering::SeqCst)
    }
}

/// A worker in this process with the environment's config, its broker URL
/// replaced and `extra` tables added; its admin listener on `admin`.
fn start_worker(env: &TestEnv, amqp_url: &str, admin: u16, extra: &str) -> WorkerHandle {
    let text = format!(
        "{}\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n{extra}",
        env.config_text().replace(AMQP_URL, amqp_url)
    );
    let config = Config::parse(std::path::Path::new("test.toml"), &text, |_| None).unwrap();
    let token = CancellationToken::new();
    let join = tokio::spawn(backoffice_worker::worker::run_with(config, token.clone()));
    WorkerHandle { token, join }
}

/// A counter's value from the worker's /metrics.
async fn metric(admin: u16, name: &str) -> f64 {
    let (status, body) = http_get(&format!("http://127.0.0.1:{admin}/metrics"))
        .await
        .expect("/metrics answers");
    assert_eq!(status, 200);
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{body}"))
}

/// Waits until every command in `ids` has an event, recording each
/// command's message ids as they arrive (every copy, duplicates included).
async fn collect_events(
    env: &mut TestEnv,
    ids: &[String],
    within: Duration,
    message_ids: &mut HashMap<String, Vec<String>>,
) {
    let deadline = tokio::time::Instant::now() + within;
    let mut missing: HashSet<&String> = ids.iter().collect();
    while !missing.is_empty() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some((event, delivery)) = env.next_event(left).await else {
            panic!(
                "{} of {} commands have no event after {within:?}: {missing:?}",
                missing.len(),
                ids.len()
            );
        };
        let message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .expect("every event has a message_id")
            .to_string();
        missing.remove(&event.command_id);
        message_ids
            .entry(event.command_id)
            .or_default()
            .push(message_id);
    }
}

fn capture(k: u64, prefix: &str) -> (String, serde_json::Value) {
    let id = format!("{prefix}-{k}");
    let command = pz(
        &id,
        "capture",
        &(10_000_700 + 2 * k).to_string(),
        Some("1.00"),
    );
    (id, command)
}

/// Every row published, none abandoned, and each command's copies carry the
/// message id of its one outbox row.
async fn assert_delivered_with_their_ids(env: &TestEnv, seen: &HashMap<String, Vec<String>>) {
    let rows: Vec<(String, uuid::Uuid, bool)> = sqlx::query_as(
        "SELECT command_id, message_id, published_at IS NOT NULL FROM outbox ORDER BY id",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), seen.len(), "one event per command");
    for (command, message_id, published) in rows {
        assert!(published, "{command}: its row is marked published");
        let copies = &seen[&command];
        assert!(
            copies.iter().all(|m| *m == message_id.to_string()),
            "{command}: every copy carries the row's message id {message_id}: {copies:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_stops_confirming_does_not_hang_the_relay() {
    let mut env = TestEnv::new("noconfirm").await;
    let proxy = ConfirmDropper::start().await;
    let admin = free_port();
    let worker = start_worker(
        &env,
        &proxy.url(),
        admin,
        "[relay]\nconfirm_timeout = \"2s\"\n",
    );
    let mut seen = HashMap::new();

    let before: Vec<(String, serde_json::Value)> = (0..5).map(|k| capture(k, "nc")).collect();
    for (_, c) in &before {
        env.publish(c).await;
    }
    let ids: Vec<String> = before.iter().map(|(id, _)| id.clone()).collect();
    collect_events(&mut env, &ids, Duration::from_secs(30), &mut seen).await;

    // The broker keeps the connection, routes what it is sent, delivers
    // commands; it just never confirms another publish on it.
    proxy.stop_confirms();
    let after: Vec<(String, serde_json::Value)> = (5..25).map(|k| capture(k, "nc")).collect();
    for (_, c) in &after {
        env.publish(c).await;
    }
    let ids: Vec<String> = after.iter().map(|(id, _)| id.clone()).collect();
    // Without a confirm timeout the relay waited for these until the
    // heartbeat gave up on the connection (two minutes at RabbitMQ's default).
    collect_events(&mut env, &ids, Duration::from_secs(30), &mut seen).await;
    env.drain_events(Duration::from_millis(500)).await;

    assert!(proxy.dropped() > 0, "the proxy did withhold confirms");
    // The relay sends the next rounds while the first waits for its confirms,
    // so every event may be out before the first round's timeout comes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while metric(admin, "backoffice_publish_confirm_timeouts_total").await < 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the relay timed out and reopened the session"
        );
        env.drain_events(Duration::from_millis(200)).await;
    }
    // Unpublished rows are found by the poll of every 500 ms; once the new
    // session published them, nothing is left.
    env.until_all_published(Duration::from_secs(10)).await;
    assert_delivered_with_their_ids(&env, &seen).await;
    assert_eq!(
        env.sim.sim().stats().ledger_entries,
        25,
        "each capture ran once"
    );
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_handover_to_the_relay_loses_nothing() {
    let mut env = TestEnv::new("handover").await;
    let proxy = ConfirmDropper::start().await;
    let admin = free_port();
    // Room for 4 events: while the relay waits for confirms that do not
    // come, the completion writer does not wait for it.
    let worker = start_worker(
        &env,
        &proxy.url(),
        admin,
        "[relay]\nconfirm_timeout = \"3s\"\nhandover_capacity = 4\n",
    );
    let mut seen = HashMap::new();
    let (first, command) = capture(0, "ho");
    env.publish(&command).await;
    collect_events(&mut env, &[first], Duration::from_secs(30), &mut seen).await;

    proxy.stop_confirms();
    let commands: Vec<(String, serde_json::Value)> = (1..41).map(|k| capture(k, "ho")).collect();
    for (_, c) in &commands {
        env.publish(c).await;
    }
    let ids: Vec<String> = commands.iter().map(|(id, _)| id.clone()).collect();
    collect_events(&mut env, &ids, Duration::from_secs(40), &mut seen).await;
    env.drain_events(Duration::from_millis(500)).await;

    assert!(
        metric(admin, "backoffice_events_left_to_poll_total").await > 0.0,
        "the hand-over was full at some point and the writer went on"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let left: i64 =
            sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
                .fetch_one(&env.pool)
                .await
                .unwrap();
        if left == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{left} rows never marked published"
        );
        env.drain_events(Duration::from_millis(200)).await;
    }
    assert_delivered_with_their_ids(&env, &seen).await;
    worker.stop().await;
    env.cleanup().await;
}

/// Rows marked published, and whether every row was marked exactly once
/// (`publish_attempts` counts marks, failures and refusals).
async fn marked(env: &TestEnv) -> (i64, bool) {
    let (published, once): (i64, bool) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE published_at IS NOT NULL),
                coalesce(bool_and(publish_attempts = 1) FILTER (WHERE published_at IS NOT NULL), true)
         FROM outbox",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    (published, once)
}

/// Waits until `rows` rows are marked published.
async fn until_marked(env: &mut TestEnv, rows: i64, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (published, _) = marked(env).await;
        if published == rows {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{published} of {rows} rows marked published after {within:?}"
        );
        env.drain_events(Duration::from_millis(100)).await;
    }
}

/// A worker publishing through a [`ConfirmDropper`] (confirms wait up to
/// 60 s), its first event (`capture(0, prefix)`) already delivered and marked.
async fn worker_behind_a_proxy_with_one_event(
    name: &str,
    prefix: &str,
) -> (
    TestEnv,
    ConfirmDropper,
    u16,
    WorkerHandle,
    HashMap<String, Vec<String>>,
) {
    let mut env = TestEnv::new(name).await;
    let proxy = ConfirmDropper::start().await;
    let admin = free_port();
    let worker = start_worker(
        &env,
        &proxy.url(),
        admin,
        "[relay]\nconfirm_timeout = \"60s\"\n",
    );
    let mut seen = HashMap::new();
    let (first, command) = capture(0, prefix);
    env.publish(&command).await;
    collect_events(&mut env, &[first], Duration::from_secs(30), &mut seen).await;
    until_marked(&mut env, 1, Duration::from_secs(10)).await;
    (env, proxy, admin, worker, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_events_are_published_while_earlier_confirms_are_outstanding() {
    use backoffice_worker::pipeline::relay::{CLAIM, ROUNDS_IN_FLIGHT};
    let (mut env, proxy, admin, worker, mut seen) =
        worker_behind_a_proxy_with_one_event("overlap", "ov").await;

    // The broker routes each event at once but its confirm is held: each
    // command, published once the previous one's event arrived, is a round
    // of its own, sent while every earlier round waits for its confirm.
    proxy.hold_confirms();
    let held_from = tokio::time::Instant::now();
    for k in 1..=ROUNDS_IN_FLIGHT as u64 {
        let (id, command) = capture(k, "ov");
        env.publish(&command).await;
        collect_events(&mut env, &[id], Duration::from_secs(4), &mut seen).await;
        assert_eq!(
            marked(&env).await.0,
            1,
            "round {k}: no row is marked before its confirm"
        );
    }
    assert!(
        held_from.elapsed() < CLAIM,
        "every round was sent fresh, while the others waited (the poll would \
         take a row only once its claim expired)"
    );
    // Past their claim, the poll finds these rows unclaimed and unmarked;
    // it leaves them to their rounds (else they would be published twice).
    // (An event reaches its consumer before the broker's confirm reaches
    // the proxy: the confirms held are counted here, not per round.)
    let past_claim = held_from + CLAIM + Duration::from_secs(1);
    while tokio::time::Instant::now() < past_claim {
        env.drain_events(Duration::from_millis(200)).await;
    }
    assert!(proxy.held() >= 1, "the proxy holds the confirms");
    assert_eq!(marked(&env).await.0, 1, "nothing marked without a confirm");
    // The bound: with that many rounds unconfirmed the relay sends no more;
    // the next event waits in the hand-over (its row claimed, so not polled).
    let (id, command) = capture(ROUNDS_IN_FLIGHT as u64 + 1, "ov");
    env.publish(&command).await;
    let more = env.next_event(Duration::from_millis(1500)).await;
    assert!(
        more.is_none(),
        "no round beyond {ROUNDS_IN_FLIGHT} in flight: {more:?}"
    );

    proxy.release_confirms();
    collect_events(&mut env, &[id], Duration::from_secs(20), &mut seen).await;
    until_marked(
        &mut env,
        ROUNDS_IN_FLIGHT as i64 + 2,
        Duration::from_secs(20),
    )
    .await;
    env.drain_events(Duration::from_millis(500)).await;
    let (_, once) = marked(&env).await;
    assert!(once, "every row marked exactly once, after its confirm");
    for (command, events) in &env.seen {
        assert_eq!(events.len(), 1, "{command}: published once");
    }
    assert_delivered_with_their_ids(&env, &seen).await;
    assert_eq!(
        metric(admin, "backoffice_publish_confirm_timeouts_total").await,
        0.0
    );
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_relay_waits_for_the_confirms_of_every_round_in_flight() {
    let (mut env, proxy, _admin, worker, mut seen) =
        worker_behind_a_proxy_with_one_event("flush", "fl").await;

    proxy.hold_confirms();
    for k in 1..=3 {
        let (id, command) = capture(k, "fl");
        env.publish(&command).await;
        collect_events(&mut env, &[id], Duration::from_secs(10), &mut seen).await;
    }
    let WorkerHandle { token, mut join } = worker;
    token.cancel();
    let early = tokio::time::timeout(Duration::from_secs(1), &mut join).await;
    assert!(
        early.is_err(),
        "the worker does not stop while its rounds wait for their confirms"
    );
    assert_eq!(marked(&env).await.0, 1);
    proxy.release_confirms();
    tokio::time::timeout(Duration::from_secs(30), join)
        .await
        .expect("the worker stops once the confirms arrive")
        .expect("worker task")
        .expect("worker exits cleanly");
    // Marked by the stopping worker itself, not left for the next one.
    let (published, once) = marked(&env).await;
    assert_eq!(published, 4, "every round flushed before the stop");
    assert!(once);
    env.drain_events(Duration::from_millis(300)).await;
    assert_delivered_with_their_ids(&env, &seen).await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_over_the_size_limit_is_abandoned_and_the_others_published() {
    let mut env = TestEnv::new("oversize").await;
    let admin = free_port();
    let worker = start_worker(&env, AMQP_URL, admin, "[relay]\nmax_event_size = 2048\n");
    // Its event echoes 3 KB of metadata: over the limit, on the fresh path.
    let mut big = pz("big-1", "capture", "10000900", Some("1.00"));
    big["metadata"] = serde_json::json!({"note": "x".repeat(3000)});
    env.publish(&big).await;
    // And one already in the outbox, found by the poll, as an event from
    // an earlier version or a larger limit would be.
    sqlx::query(
        "INSERT INTO outbox (message_id, command_id, exchange, routing_key, body)
         VALUES ($1, 'big-2', $2, 'paymentz.capture.succeeded', $3)",
    )
    .bind(uuid::Uuid::new_v4())
    .bind(&env.result_exchange)
    .bind(serde_json::json!({"command_id": "big-2", "padding": "y".repeat(5000)}))
    .execute(&env.pool)
    .await
    .unwrap();
    let commands: Vec<(String, serde_json::Value)> = (0..10).map(|k| capture(k, "small")).collect();
    for (_, c) in &commands {
        env.publish(c).await;
    }
    let ids: Vec<String> = commands.iter().map(|(id, _)| id.clone()).collect();
    let mut seen = HashMap::new();
    collect_events(&mut env, &ids, Duration::from_secs(30), &mut seen).await;

    // Both big rows are abandoned, with the reason, and never published; the
    // ten others are marked published (a moment after their confirm).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let abandoned: Vec<(String, String, Option<time::OffsetDateTime>)> = loop {
        let rows: Vec<(String, String, Option<time::OffsetDateTime>)> = sqlx::query_as(
            "SELECT command_id, last_error, published_at FROM outbox
             WHERE abandoned_at IS NOT NULL ORDER BY command_id",
        )
        .fetch_all(&env.pool)
        .await
        .unwrap();
        let published: i64 =
            sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NOT NULL")
                .fetch_one(&env.pool)
                .await
                .unwrap();
        if (rows.len() == 2 && published == 10) || tokio::time::Instant::now() > deadline {
            assert_eq!(published, 10, "every other event was published");
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(abandoned.len(), 2, "{abandoned:?}");
    for (command, error, published) in &abandoned {
        assert!(published.is_none(), "{command} was not published");
        assert!(
            error.contains("over max_event_size (2048 bytes)"),
            "{command}: {error}"
        );
        assert!(
            !error.contains("xxxx"),
            "the reason does not repeat the body"
        );
    }
    assert_eq!(abandoned[0].0, "big-1");
    assert!(
        !seen.contains_key("big-1") && !seen.contains_key("big-2"),
        "no oversized event was sent"
    );
    env.drain_events(Duration::from_millis(300)).await;
    assert!(!env.seen.contains_key("big-1") && !env.seen.contains_key("big-2"));

    // Counted apart: not a backlog that would drain, but visible.
    let body = http_get(&format!("http://127.0.0.1:{admin}/metrics"))
        .await
        .unwrap()
        .1;
    assert!(body.contains("backoffice_outbox_abandoned 2"), "{body}");
    assert!(body.contains("backoffice_outbox_backlog 0"), "{body}");
    assert!(
        body.contains("backoffice_events_abandoned_total 2"),
        "{body}"
    );
    worker.stop().await;
    env.cleanup().await;
}

/// A direct reply-to name whose encoded channel the broker cannot decode:
/// RabbitMQ 3.10 answers a publish to it by closing the whole connection
/// with 541 INTERNAL_ERROR. A producer can send any `reply_to`, so without
/// giving up on such an event the relay broke its own connection (and the
/// consumer's, on the same session) every half second, for ever.
const POISON_REPLY_TO: &str = "amq.rabbitmq.reply-to.g2dkAA1yYWJiaXRAbG9jYWxob3N0AAAAAAAAAAAA.abc";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_broker_refuses_again_and_again_is_abandoned() {
    let mut env = TestEnv::new("refused").await;
    let admin = free_port();
    let worker = start_worker(&env, AMQP_URL, admin, "");
    env.publish_raw(
        serde_json::to_vec(&pz("poison", "inquiry", "10000003", None)).unwrap(),
        lapin::BasicProperties::default().with_reply_to(POISON_REPLY_TO.into()),
    )
    .await;

    // Other commands keep coming: the relay gives up on a row only while
    // others get through (a broker refusing everything is not the rows' fault).
    let mut ids = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut k = 0;
    let (refusals, error) = loop {
        let (id, command) = capture(k, "good");
        env.publish(&command).await;
        ids.push(id);
        k += 1;
        let row: Option<(i32, String)> = sqlx::query_as(
            "SELECT refusals, last_error FROM outbox
             WHERE command_id = 'poison' AND abandoned_at IS NOT NULL",
        )
        .fetch_optional(&env.pool)
        .await
        .unwrap();
        if let Some(row) = row {
            break row;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the poisoned event was not abandoned within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(refusals, 3, "three refusals on its own");
    assert!(
        error.starts_with("refused by the broker 3 times, published alone: ")
            && error.contains("INTERNAL_ERROR"),
        "{error}"
    );
    let mut seen = HashMap::new();
    collect_events(&mut env, &ids, Duration::from_secs(30), &mut seen).await;
    // Every other event is published, and the relay no longer touches the row.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let left: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM outbox WHERE published_at IS NULL AND abandoned_at IS NULL",
        )
        .fetch_one(&env.pool)
        .await
        .unwrap();
        if left == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{left} rows never published"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        metric(admin, "backoffice_events_abandoned_total").await,
        1.0
    );
    worker.stop().await;
    env.cleanup().await;
}

/// A mark's commit does not wait for the WAL flush (a lost mark only means
/// the event goes out again with its message id), and that holds for the
/// mark's own transaction only: the session's commits stay synchronous.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mark_commits_without_waiting_for_the_flush_and_only_its_own_transaction() {
    use backoffice_worker::store::outbox;
    use sqlx::{Connection, PgConnection};

    async fn synchronous_commit(conn: &mut PgConnection) -> String {
        sqlx::query_scalar("SELECT current_setting('synchronous_commit')")
            .fetch_one(conn)
            .await
            .unwrap()
    }

    let env = TestEnv::new("relaxedmark").await;
    let store = env.single_connection_store();
    let mut conn = store.pool().acquire().await.unwrap();

    let mut tx = conn.begin().await.unwrap();
    assert_eq!(synchronous_commit(&mut tx).await, "on");
    // No row has id 0: the setting applies whether or not anything is marked.
    outbox::mark_published(&mut tx, &[0]).await.unwrap();
    assert_eq!(
        synchronous_commit(&mut tx).await,
        "off",
        "the mark's transaction commits asynchronously"
    );
    tx.commit().await.unwrap();

    assert_eq!(
        synchronous_commit(&mut conn).await,
        "on",
        "the next transaction on the session waits for its flush again"
    );
    drop(conn);
    store.close().await;
    env.cleanup().await;
}
