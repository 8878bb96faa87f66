//! The worker's HTTP listeners cannot be held open: a client that sends its
//! request head slowly (or nothing at all) is cut off, connections beyond the
//! cap are refused while the others are served, a scrape storm costs the
//! database one query per refresh period, an accept error does not spin the
//! accept loop, a body over the handler's limit is refused, and a client that
//! stops reading its answer loses its connection.
//!
//! The admin listener is tested through a real worker (its real HTTP port,
//! the real database); the shared server (`listener::serve`) directly, with
//! handlers of the test's own, for what the admin endpoints do not exercise.

use crate::common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use backoffice_worker::listener::{self, ListenerSettings, StreamAccept};
use common::{free_port, http_get, wait_for_status, TestEnv, WorkerHandle};
use hyper::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A worker with its admin listener on a free port, with the default limits
/// (5 s for a request head, 64 connections).
async fn worker_with_admin(env: &TestEnv) -> (SocketAddr, WorkerHandle) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let worker = env.start_worker_with_admin(addr);
    wait_for_status(
        &format!("http://{addr}/readyz"),
        200,
        Duration::from_secs(30),
    )
    .await;
    (addr, worker)
}

/// Reads until the server closes the connection (EOF or reset); what it sent.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// One request on an open connection; the status line of its answer.
async fn request(stream: &mut TcpStream, path: &str) -> String {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nhost: t\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    // The admin answers are small and carry content-length: read the head
    // and the body it announces.
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before answering");
        answer.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&answer);
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if answer.len() >= end + 4 + length {
                return text.lines().next().unwrap().to_string();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_or_silent_client_is_cut_off_by_the_header_timeout() {
    let env = TestEnv::new("slowloris").await;
    let (addr, worker) = worker_with_admin(&env).await;

    // Slowloris: a request head that never ends, one header line at a time.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let started = tokio::time::Instant::now();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nhost: t\r\n")
        .await
        .unwrap();
    let (mut reader, mut writer) = slow.into_split();
    let trickle = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if writer.write_all(b"x-slow: 1\r\n").await.is_err() {
                return;
            }
        }
    });
    let cut = tokio::time::timeout(Duration::from_secs(15), async {
        let mut buf = [0u8; 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        cut.is_ok(),
        "a request head trickling in for 15 s was not cut off"
    );
    let held = started.elapsed();
    assert!(
        held >= Duration::from_secs(4),
        "cut by the 5 s header timeout, not at once ({held:?})"
    );
    trickle.abort();

    // A connection that sends nothing is closed the same way.
    let closed =
        tokio::time::timeout(Duration::from_secs(15), read_until_closed(&mut silent)).await;
    assert!(closed.is_ok(), "a silent connection was kept for 15 s");

    // Meanwhile everyone else was served.
    assert_eq!(
        http_get(&format!("http://{addr}/healthz"))
            .await
            .map(|r| r.0),
        Some(200)
    );
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_refused_and_the_others_served() {
    let env = TestEnv::new("conncap").await;
    let (addr, worker) = worker_with_admin(&env).await;

    // 64 kept-alive connections, each served once: the cap is reached.
    // (A slot of the readiness probes' connections comes back when the
    // server has seen them close: a 503 then is retried.)
    let mut held = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while held.len() < 64 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        match request(&mut stream, "/healthz").await.as_str() {
            "HTTP/1.1 200 OK" => held.push(stream),
            other => {
                assert!(other.starts_with("HTTP/1.1 503"), "{other}");
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the cap is below 64"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // The next one is turned away at once.
    let mut over = TcpStream::connect(addr).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), read_until_closed(&mut over))
        .await
        .expect("the connection over the cap is closed at once");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 503"),
        "over the cap: {answer:?}"
    );
    // The connections within the cap are still served.
    assert_eq!(request(&mut held[0], "/healthz").await, "HTTP/1.1 200 OK");
    assert_eq!(request(&mut held[63], "/metrics").await, "HTTP/1.1 200 OK");
    // And a slot freed is a slot for the next client.
    drop(held.pop());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut next = TcpStream::connect(addr).await.unwrap();
        next.write_all(b"GET /healthz HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let answer = read_until_closed(&mut next).await;
        if answer.starts_with(b"HTTP/1.1 200") {
            break;
        }
        // The freed slot is returned when the server has seen the close.
        assert!(
            tokio::time::Instant::now() < deadline,
            "a freed slot was not reused"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(held);
    worker.stop().await;
    env.cleanup().await;
}

/// Scans of `dead_letters` recorded by PostgreSQL: only the durable figures
/// of /metrics read that table in a worker with no dead letters.
async fn dead_letter_scans(env: &TestEnv) -> i64 {
    sqlx::query_scalar(
        "SELECT COALESCE(seq_scan, 0) + COALESCE(idx_scan, 0) FROM pg_stat_user_tables
         WHERE relname = 'dead_letters'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_storm_costs_the_database_one_query_per_refresh() {
    let env = TestEnv::new("scrapes").await;
    let (addr, worker) = worker_with_admin(&env).await;
    let before = dead_letter_scans(&env).await;

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let started = tokio::time::Instant::now();
    let mut bodies = Vec::new();
    for _ in 0..4 {
        let scrapes: Vec<_> = (0..50)
            .map(|_| {
                let client = client.clone();
                let url = format!("http://{addr}/metrics");
                tokio::spawn(async move {
                    let response = client.get(url).send().await.unwrap();
                    assert_eq!(response.status(), 200);
                    response.text().await.unwrap()
                })
            })
            .collect();
        for scrape in scrapes {
            bodies.push(scrape.await.unwrap());
        }
    }
    let storm = started.elapsed();
    assert!(
        bodies
            .iter()
            .all(|b| b.contains("backoffice_outbox_backlog 0")),
        "every scrape has the durable figures"
    );
    // The database's own count: wait for the backends to report their
    // statistics (PostgreSQL flushes them within ~10 s), then compare.
    let reads = 1 + storm.as_secs() as i64 / 5;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let scans = loop {
        let scans = dead_letter_scans(&env).await - before;
        if scans >= reads || tokio::time::Instant::now() > deadline {
            break scans;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        (1..=reads + 1).contains(&scans),
        "200 scrapes in {storm:?} read the database {scans} times (at most {} expected)",
        reads + 1
    );
    // The worker's own count says the same.
    let metrics = http_get(&format!("http://{addr}/metrics")).await.unwrap().1;
    let counted: i64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("backoffice_durable_figure_reads_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no read counter in:\n{metrics}"));
    assert!(counted <= reads + 1, "{counted} reads counted");
    worker.stop().await;
    env.cleanup().await;
}

/// A listener of the test's own on a free port: `handler` behind the shared
/// server with `settings`.
async fn serve_test<H, F>(
    settings: ListenerSettings,
    handler: H,
) -> (SocketAddr, CancellationToken, JoinHandle<()>)
where
    H: Fn(hyper::Request<hyper::body::Incoming>) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = hyper::Response<listener::Body>> + Send + 'static,
{
    let (tcp, addr) = listener::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let served = listener::serve("test", tcp, settings, handler, stop.clone());
    (addr, stop, served)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_errors_back_off_instead_of_spinning() {
    // A listener whose accept fails every time (as when out of file
    // descriptors), then yields one good connection.
    let calls = Arc::new(AtomicU64::new(0));
    let counted = calls.clone();
    let (client, server) = tokio::io::duplex(4096);
    let mut server = Some(server);
    let errors = futures::stream::poll_fn(move |_| {
        if counted.load(Ordering::SeqCst) < 6 {
            counted.fetch_add(1, Ordering::SeqCst);
            std::task::Poll::Ready(Some(Err(std::io::Error::from_raw_os_error(24))))
        } else {
            match server.take() {
                Some(s) => std::task::Poll::Ready(Some(Ok(s))),
                None => std::task::Poll::Pending,
            }
        }
    });
    let stop = CancellationToken::new();
    let started = tokio::time::Instant::now();
    let served = listener::serve(
        "errors",
        StreamAccept(errors),
        ListenerSettings::default(),
        |_request| async { listener::text(StatusCode::OK, "fine\n".into()) },
        stop.clone(),
    );
    // The connection after the errors is served...
    let (mut read, mut write) = tokio::io::split(client);
    write
        .write_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), read.read(&mut buf))
        .await
        .expect("served after the errors")
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // ...after pausing 5 + 10 + 20 + 40 + 80 + 160 ms between the six
    // errors: about 315 ms, not a spin.
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 6);

    // A listener failing for good keeps backing off: in 1.5 s, a dozen calls.
    let calls = Arc::new(AtomicU64::new(0));
    let counted = calls.clone();
    let failing = futures::stream::poll_fn(move |_| {
        counted.fetch_add(1, Ordering::SeqCst);
        std::task::Poll::Ready(Some(Err::<tokio::io::DuplexStream, _>(
            std::io::Error::from_raw_os_error(24),
        )))
    });
    let stop_failing = CancellationToken::new();
    let failing = listener::serve(
        "failing",
        StreamAccept(failing),
        ListenerSettings::default(),
        |_request| async { listener::text(StatusCode::OK, "fine\n".into()) },
        stop_failing.clone(),
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let n = calls.load(Ordering::SeqCst);
    assert!((5..=12).contains(&n), "{n} accept calls in 1.5 s");
    stop_failing.cancel();
    tokio::time::timeout(Duration::from_secs(2), failing)
        .await
        .expect("a backing-off listener stops at once")
        .unwrap();
    stop.cancel();
    drop(read);
    drop(write);
    tokio::time::timeout(Duration::from_secs(15), served)
        .await
        .expect("stops")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_is_refused_and_a_slow_one_times_out() {
    let settings = ListenerSettings {
        max_connections: 8,
        header_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(1),
    };
    let (addr, stop, served) = serve_test(settings, |request| async move {
        match listener::read_body(request.into_body(), 1024).await {
            Ok(body) => listener::text(StatusCode::OK, format!("{} bytes\n", body.len())),
            Err(refused) => refused,
        }
    })
    .await;
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/");
    let small = client
        .post(&url)
        .body(vec![b'a'; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(small.status(), 200);
    assert_eq!(small.text().await.unwrap(), "1000 bytes\n");
    // Announced too large: refused before it is read.
    let large = client
        .post(&url)
        .body(vec![b'a'; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(large.status(), 413);
    // Too large without announcing it (chunked): refused once past the limit.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut chunked = b"POST / HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..4 {
        chunked.extend_from_slice(b"200\r\n");
        chunked.extend_from_slice(&[b'b'; 512]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    stream.write_all(&chunked).await.unwrap();
    let mut buf = [0u8; 512];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 413"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );

    // A body that trickles in is cut by the request deadline (1 s).
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\nab")
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 512];
        let n = stream.read(&mut buf).await.unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).to_string()
    })
    .await
    .expect("a trickling body does not hold the request");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), served)
        .await
        .expect("stops")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_loses_its_connection() {
    // One connection at a time, and an answer far larger than the socket
    // buffers: a client that does not read holds the only slot until the
    // write has made no progress for the request deadline.
    let settings = ListenerSettings {
        max_connections: 1,
        header_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(1),
    };
    let (addr, stop, served) = serve_test(settings, |_request| async {
        listener::text(StatusCode::OK, "z".repeat(64 * 1024 * 1024))
    })
    .await;
    let mut stuck = TcpStream::connect(addr).await.unwrap();
    stuck
        .write_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    // The slot comes back once the stalled write is given up.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut next = TcpStream::connect(addr).await.unwrap();
        next.write_all(b"HEAD / HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let answer = read_until_closed(&mut next).await;
        if answer.starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(
            answer.starts_with(b"HTTP/1.1 503"),
            "{:?}",
            String::from_utf8_lossy(&answer)
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "a client that stopped reading kept its connection"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(stuck);
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), served)
        .await
        .expect("stops")
        .unwrap();
}
