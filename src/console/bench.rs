//! `backoffice-worker bench-console`: how fast the console's pages answer on
//! a real table. It seeds its own database with a million commands (and
//! their attempts, events, dead letters and audit rows), serves the console
//! from it exactly as a worker does (the admin listener, the same handlers),
//! asks each page many times over HTTP with varying parameters, and prints
//! each page's p50 and p95. A tool, not a test: nothing here asserts a speed.
//!
//! The database is kept (seeding is the slow part): the next run with the
//! same `--commands` reuses it; `--reseed` starts again.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use rand::{Rng, SeedableRng};
use sqlx::{ConnectOptions as _, Connection, PgConnection};

use crate::bench::measure::LatencySummary;

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:
  backoffice-worker bench-console
  backoffice-worker bench-console --commands 100000 --samples 20
  backoffice-worker bench-console --reseed

Needs PostgreSQL ($DATABASE_URL's server, default postgres://postgres@127.0.0.1:5432). Seeds the
database `console_bench` there (kept for the next run; ~6 min and ~3 GB for 1,000,000 commands),
then serves the console from it on 127.0.0.1 and times every page over HTTP.")]
pub struct BenchConsoleArgs {
    /// Commands to seed (each with two attempts and, once decided, an event).
    #[arg(long, default_value_t = 1_000_000)]
    pub commands: i64,
    /// Requests per page (after two warm-up requests).
    #[arg(long, default_value_t = 40)]
    pub samples: usize,
    /// Drop the benchmark database and seed it again.
    #[arg(long)]
    pub reseed: bool,
}

const DATABASE: &str = "console_bench";
/// Seeded per statement, so that progress shows and no statement runs for minutes.
const CHUNK: i64 = 100_000;

pub async fn run(args: BenchConsoleArgs) -> anyhow::Result<()> {
    let server = std::env::var("DATABASE_URL")
        .ok()
        .and_then(|u| url::Url::parse(&u).ok())
        .map(|mut u| {
            u.set_path("");
            u.to_string().trim_end_matches('/').to_string()
        })
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432".into());
    let url = format!("{server}/{DATABASE}");
    if args.reseed {
        let mut admin = PgConnection::connect(&format!("{server}/postgres")).await?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
            .execute(&mut admin)
            .await?;
    }
    crate::store::ensure_database(&url).await?;
    // Seeding statements take seconds each by design: not worth a warning.
    let mut conn = url
        .parse::<sqlx::postgres::PgConnectOptions>()?
        .log_slow_statements(tracing::log::LevelFilter::Off, Duration::from_secs(3600))
        .connect()
        .await?;
    crate::store::MIGRATOR.run(&mut conn).await?;
    let have: i64 = sqlx::query_scalar("SELECT count(*) FROM commands")
        .fetch_one(&mut conn)
        .await?;
    if have != args.commands {
        if have != 0 {
            anyhow::bail!(
                "{DATABASE} holds {have} commands, not {}: run with --reseed",
                args.commands
            );
        }
        seed(&mut conn, args.commands).await?;
    } else {
        println!("reusing {DATABASE}: {have} commands");
    }
    let sizes: Vec<(String, i64)> = sqlx::query_as(
        "SELECT relname::text, reltuples::bigint FROM pg_class
          WHERE relname IN ('commands', 'attempts', 'outbox', 'dead_letters', 'console_audit')
          ORDER BY relname",
    )
    .fetch_all(&mut conn)
    .await?;
    println!(
        "rows: {}",
        sizes
            .iter()
            .map(|(t, n)| format!("{t} ~{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    measure(&url, &mut conn, args.commands, args.samples).await
}

async fn seed(conn: &mut PgConnection, commands: i64) -> anyhow::Result<()> {
    println!("seeding {commands} commands into {DATABASE} (kept for the next run)");
    let started = Instant::now();
    // Received over the last 7 days, evenly, the newest now.
    let mut from = 1;
    while from <= commands {
        let to = (from + CHUNK - 1).min(commands);
        let mut tx = conn.begin().await?;
        seed_chunk(&mut tx, from, to, commands).await?;
        tx.commit().await?;
        println!("  {to} commands ({:.0} s)", started.elapsed().as_secs_f64());
        from = to + 1;
    }
    sqlx::query(
        "INSERT INTO dead_letters (reason, body, body_size, properties)
         SELECT 'not JSON: expected value at line 1 column ' || (g % 7), convert_to('junk ' || g, 'UTF8'), 8, '{}'::jsonb
           FROM generate_series(1, 1000) g",
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO console_audit (actor, role, action, target, ok, result)
         SELECT 'seed (operator)', 'operator', 'requeue', 'dead-letter:' || g, true, 'seeded'
           FROM generate_series(1, 10000) g",
    )
    .execute(&mut *conn)
    .await?;
    println!("analyzing");
    sqlx::query("VACUUM (ANALYZE) commands, attempts, outbox, dead_letters, console_audit")
        .execute(&mut *conn)
        .await?;
    println!("seeded in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Commands `from..=to` of `commands`, with their attempts and events, in `tx`.
async fn seed_chunk(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    from: i64,
    to: i64,
    commands: i64,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO commands (id, payload, fingerprint, gateway, account, operation, payment_id,
                               amount_minor, currency, state, outcome, reason, result,
                               attempts, received_at, decided_at, updated_at)
         SELECT 'cmd-' || lpad(g::text, 8, '0'),
                jsonb_build_object('id', 'cmd-' || lpad(g::text, 8, '0'),
                    'gateway', gw, 'operation', op, 'payment_id', 'p' || (g / 3),
                    'amount', '10.00', 'metadata', jsonb_build_object('order_ref', 'ord-' || (g / 3), 'n', g % 100)),
                md5(g::text), gw, 'default', op, 'p' || (g / 3), 1000, 'EUR',
                CASE WHEN oc IS NULL THEN 'queued' WHEN oc = 'unknown' THEN 'unsettled' ELSE 'done' END,
                oc,
                CASE WHEN oc = 'rejected' THEN 'invalid_field' END,
                CASE WHEN oc IS NOT NULL THEN jsonb_build_object('outcome', oc, 'description', 'seeded ' || oc) END,
                1, at, CASE WHEN oc IS NOT NULL THEN at + interval '200 ms' END, at
           FROM (SELECT g,
                        CASE WHEN g % 2 = 0 THEN 'paymentz' ELSE 'praxis' END AS gw,
                        (ARRAY['capture', 'refund', 'cancel', 'refund', 'capture'])[g % 5 + 1] AS op,
                        CASE WHEN g % 100 < 90 THEN 'succeeded' WHEN g % 100 < 95 THEN 'declined'
                             WHEN g % 100 < 97 THEN 'failed' WHEN g % 100 = 97 THEN 'unknown'
                             WHEN g % 100 = 98 THEN 'rejected' ELSE NULL END AS oc,
                        now() - make_interval(secs => ($2 - g) * 604800.0 / $2) AS at
                   FROM generate_series($1::bigint, $3::bigint) g) s",
    )
    .bind(from)
    .bind(commands)
    .bind(to)
    .execute(&mut **tx)
    .await
    .context("seeding commands")?;
    sqlx::query(
        "INSERT INTO attempts (command_id, attempt_no, kind, status, purpose, method, url, request,
                               signature_sent, http_status, response_body, signature_received,
                               signature_verified, latency_ms, classification, started_at, finished_at)
         SELECT c.id, 1, k.kind, 'completed', k.purpose, 'POST', 'https://gateway.example/' || k.purpose,
                jsonb_build_object('paymentId', c.payment_id, 'amount', '10.00', 'secret', '[redacted]'),
                md5(c.id || k.kind), 200,
                '{\"status\":\"ok\",\"paymentId\":\"' || c.payment_id || '\",\"description\":\"seeded answer\"}',
                md5(c.id), true, 20 + (hashtext(c.id || k.kind) & 255), 'succeeded',
                c.received_at + k.offs, c.received_at + k.offs + interval '30 ms'
           FROM commands c
          CROSS JOIN (VALUES ('inquiry', 'IN', interval '10 ms'), ('operation', 'OP', interval '100 ms'))
                     AS k(kind, purpose, offs)
          WHERE c.id BETWEEN 'cmd-' || lpad($1::text, 8, '0') AND 'cmd-' || lpad($2::text, 8, '0')
          ORDER BY c.received_at, k.offs",
    )
    .bind(from)
    .bind(to)
    .execute(&mut **tx)
    .await
    .context("seeding attempts")?;
    sqlx::query(
        "INSERT INTO outbox (message_id, command_id, exchange, routing_key, body, created_at, published_at)
         SELECT gen_random_uuid(), c.id, 'backoffice.events', c.gateway || '.' || c.operation || '.' || c.outcome,
                jsonb_build_object('command_id', c.id, 'outcome', c.outcome, 'replayed', false, 'reconciled', false),
                c.decided_at, c.decided_at + interval '5 ms'
           FROM commands c
          WHERE c.id BETWEEN 'cmd-' || lpad($1::text, 8, '0') AND 'cmd-' || lpad($2::text, 8, '0')
            AND c.outcome IS NOT NULL",
    )
    .bind(from)
    .bind(to)
    .execute(&mut **tx)
    .await
    .context("seeding events")?;
    Ok(())
}

/// What [`serve`] started: the console on the admin listener, as a
/// worker serves it, and how to stop it.
struct Served {
    addr: std::net::SocketAddr,
    token: String,
    console: std::sync::Arc<super::Console>,
    store: crate::store::Store,
    stop: tokio_util::sync::CancellationToken,
    served: tokio::task::JoinHandle<()>,
}

async fn serve(url: &str) -> anyhow::Result<Served> {
    let token = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let text = format!(
        "[database]\nurl = \"{url}\"\nmax_connections = 8\n[console]\noperator_token = \"{token}\"\n"
    );
    let config =
        crate::config::Config::parse(std::path::Path::new("<bench-console>"), &text, |_| None)?;
    let store = crate::store::Store::connect_lazy(&config.database)?;
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = crate::pipeline::Worker::new(
        &config,
        store.clone(),
        crate::gateways::registry::Accounts::default(),
        std::sync::Arc::new(crate::metrics::Metrics::new()),
        stop.clone(),
    );
    let console = super::Console::new(worker.clone(), std::sync::Arc::new(config.clone()))?;
    let (addr, served) = crate::admin::start(
        "127.0.0.1:0".parse().expect("an address"),
        config.admin.limits,
        worker,
        Some(console.clone()),
        stop.clone(),
    )
    .await?;
    Ok(Served {
        addr,
        token,
        console,
        store,
        stop,
        served,
    })
}

type PathFn<'a> = Box<dyn FnMut(&mut rand::rngs::SmallRng) -> String + 'a>;

/// A page asked always at the same path.
fn fixed<'a>(path: &'static str) -> PathFn<'a> {
    Box::new(move |_| path.into())
}

/// The pages timed, each with the path of its next request.
fn pages(commands: i64, middle_cursor: &str) -> Vec<(&'static str, PathFn<'_>)> {
    let id = |n: i64| format!("cmd-{n:08}");
    vec![
        ("overview (page; figures shared)", fixed("/console")),
        ("commands, first page", fixed("/console/commands")),
        (
            "commands, page 101 (keyset)",
            Box::new(|_| format!("/console/commands?after={}", super::encode(middle_cursor))),
        ),
        (
            "commands, outcome=failed",
            fixed("/console/commands?outcome=failed"),
        ),
        (
            "commands, outcome=unknown",
            fixed("/console/commands?outcome=unknown"),
        ),
        (
            "commands, gateway+operation+state",
            fixed("/console/commands?gateway=praxis&operation=cancel&state=done"),
        ),
        (
            "commands, time range (1 h, 3 days ago)",
            Box::new(move |r| {
                let h = r.gen_range(48..120);
                format!("/console/commands?from={}h&to={}h", h + 1, h)
            }),
        ),
        (
            "commands, id prefix",
            Box::new(move |r| format!("/console/commands?id=cmd-00{:02}", r.gen_range(0..99))),
        ),
        (
            "commands, payment id",
            Box::new(move |r| {
                format!(
                    "/console/commands?payment_id=p{}",
                    r.gen_range(1..commands / 3)
                )
            }),
        ),
        (
            "commands, metadata value",
            Box::new(move |r| {
                format!(
                    "/console/commands?metadata=order_ref%3Dord-{}",
                    r.gen_range(1..commands / 3)
                )
            }),
        ),
        (
            "a command (timeline)",
            Box::new(move |r| format!("/console/commands/{}", id(r.gen_range(1..=commands)))),
        ),
        (
            "a payment",
            Box::new(move |r| {
                format!(
                    "/console/payments/paymentz/p{}",
                    r.gen_range(1..commands / 3) | 1
                )
            }),
        ),
        ("needs a person", fixed("/console/attention")),
        ("audit", fixed("/console/audit")),
        (
            "api: a command",
            Box::new(move |r| format!("/api/commands/{}", id(r.gen_range(1..=commands)))),
        ),
        ("api: dead letters", fixed("/api/dead-letters")),
    ]
}

/// The `after` cursor 5,000 commands down the list: page 101.
async fn middle_cursor(conn: &mut PgConnection) -> anyhow::Result<String> {
    let (at, id): (time::OffsetDateTime, String) = sqlx::query_as(
        "SELECT received_at, id FROM commands ORDER BY received_at DESC, id DESC OFFSET 5000 LIMIT 1",
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(format!(
        "{}|{id}",
        at.format(&time::format_description::well_known::Rfc3339)?
    ))
}

/// `samples` requests to one page, after two warm-up requests.
async fn time_page(
    http: &reqwest::Client,
    served: &Served,
    path: &mut PathFn<'_>,
    samples: usize,
    rng: &mut rand::rngs::SmallRng,
) -> anyhow::Result<LatencySummary> {
    let mut took = Vec::with_capacity(samples);
    for n in 0..samples + 2 {
        let p = path(rng);
        let started = Instant::now();
        let r = http
            .get(format!("http://{}{p}", served.addr))
            .bearer_auth(&served.token)
            .send()
            .await?;
        let status = r.status();
        let _ = r.bytes().await?;
        if !status.is_success() {
            anyhow::bail!("{p}: {status}");
        }
        if n >= 2 {
            took.push(started.elapsed());
        }
    }
    LatencySummary::from_samples(took).context("no samples")
}

async fn measure(
    url: &str,
    conn: &mut PgConnection,
    commands: i64,
    samples: usize,
) -> anyhow::Result<()> {
    let served = serve(url).await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(13);
    let middle_cursor = middle_cursor(conn).await?;
    println!(
        "\n{:<40} {:>9} {:>9} {:>9}   ({samples} requests each, over HTTP)",
        "page", "p50 ms", "p95 ms", "max ms"
    );
    for (name, mut path) in pages(commands, &middle_cursor) {
        let s = time_page(&http, &served, &mut path, samples, &mut rng).await?;
        println!(
            "{name:<40} {:>9.1} {:>9.1} {:>9.1}",
            s.p50_ms, s.p95_ms, s.max_ms
        );
    }
    // The overview's figures themselves (what one refresh costs the
    // database, whatever the number of viewers).
    let console = &served.console;
    let mut took = Vec::new();
    for _ in 0..samples.min(20) {
        let mut c = console.conn().await?;
        let started = Instant::now();
        crate::store::console::overview(&mut c).await?;
        took.push(started.elapsed());
    }
    let s = LatencySummary::from_samples(took).context("no samples")?;
    println!(
        "{:<40} {:>9.1} {:>9.1} {:>9.1}",
        "overview figures (one shared load)", s.p50_ms, s.p95_ms, s.max_ms
    );
    println!(
        "\nthe overview's figures were loaded {} times for {} overview requests",
        console.overview_loads(),
        samples + 2
    );
    served.stop.cancel();
    let _ = served.served.await;
    served.store.close().await;
    Ok(())
}
