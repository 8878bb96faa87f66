//! `bench --prefill N`: N finished commands, as months of traffic leave them
//! (each with one or two attempt rows and one published event), generated
//! inside PostgreSQL with `generate_series` in chunks, so ten million take
//! minutes rather than hours and nothing crosses the wire but the chunk
//! bounds. Their ids, payment ids and exchange cannot meet the workload's.
//!
//! What it shows: whether the hot path's statements stay index lookups
//! whose cost does not grow with the tables (`docs/performance.md`).
//!
//! The pages are written packed, as old pages of the worker's own tables
//! are: the room a page keeps for its rows' updates (`fillfactor`) is used
//! by those updates, and whatever room a VACUUM then finds is taken by the
//! inserts that follow it. Generated rows are written in their final form
//! and never updated, so at the tables' own fillfactor every page kept that
//! room empty, the VACUUM below offered all of them (1.1 M pages of
//! `commands`, 1 M of `attempts` at 10 M commands), and the run's new rows
//! went one to a page, oldest first: each insert read a cold page, dirtied
//! it and logged it whole (docs/performance.md, sixth session).

use std::time::{Duration, Instant};

use sqlx::PgPool;

/// Rows per statement: large enough to amortise each statement, small
/// enough that one chunk's WAL and locks stay modest.
const CHUNK: u64 = 250_000;

/// Fills the database with `count` finished commands, then vacuums,
/// analyses and checkpoints it. Returns how long it took.
pub async fn fill(pool: &PgPool, count: u64) -> Result<Duration, sqlx::Error> {
    let started = Instant::now();
    let kept = pack(pool).await?;
    let mut done = 0u64;
    while done < count {
        let (lo, hi) = (done + 1, (done + CHUNK).min(count));
        let mut tx = pool.begin().await?;
        fill_chunk(&mut tx, lo, hi, count).await?;
        tx.commit().await?;
        done = hi;
        eprintln!(
            "prefill: {done} of {count} commands ({:.0} s)",
            started.elapsed().as_secs_f64()
        );
    }
    unpack(pool, &kept).await?;
    // Vacuumed, analysed and checkpointed, as a database that has run for
    // months would be: otherwise the measured run competes with autovacuum
    // and the checkpoint of what was just written.
    sqlx::query("VACUUM (ANALYZE) commands, attempts, outbox")
        .execute(pool)
        .await?;
    if let Err(error) = sqlx::query("CHECKPOINT").execute(pool).await {
        eprintln!("prefill: no CHECKPOINT ({error}); the run may share the disk with one");
    }
    Ok(started.elapsed())
}

/// The tables whose generated pages are packed (see the module's note):
/// the two with a fillfactor below 100.
const PACKED: [&str; 2] = ["commands", "attempts"];

/// Sets fillfactor 100 on [`PACKED`]; returns each table's storage options
/// as the migrations left them, for [`unpack`].
async fn pack(pool: &PgPool) -> Result<Vec<(&'static str, Option<String>)>, sqlx::Error> {
    let mut kept = Vec::new();
    for table in PACKED {
        let options: Option<String> = sqlx::query_scalar(
            "SELECT array_to_string(reloptions, ', ') FROM pg_class WHERE oid = $1::regclass",
        )
        .bind(table)
        .fetch_one(pool)
        .await?;
        sqlx::query(&format!("ALTER TABLE {table} SET (fillfactor = 100)"))
            .execute(pool)
            .await?;
        kept.push((table, options));
    }
    Ok(kept)
}

/// Gives the tables back the storage options [`pack`] found, before the
/// worker writes to them.
async fn unpack(pool: &PgPool, kept: &[(&str, Option<String>)]) -> Result<(), sqlx::Error> {
    for (table, options) in kept {
        let statement = match options.as_deref().filter(|o| !o.is_empty()) {
            Some(options) => format!("ALTER TABLE {table} SET ({options})"),
            None => format!("ALTER TABLE {table} RESET (fillfactor)"),
        };
        sqlx::query(&statement).execute(pool).await?;
    }
    Ok(())
}

/// Commands `lo..=hi` of `count`, with their attempts and events, in `tx`.
/// Their times go back from a day ago, 250 µs apart, the last one newest.
async fn fill_chunk(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    lo: u64,
    hi: u64,
    count: u64,
) -> Result<(), sqlx::Error> {
    for statement in [PREFILL_COMMANDS, PREFILL_ATTEMPTS, PREFILL_EVENTS] {
        sqlx::query(statement)
            .bind(lo as i64)
            .bind(hi as i64)
            .bind(count as i64)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// The commands, decided `succeeded` a day ago and earlier.
const PREFILL_COMMANDS: &str = "INSERT INTO commands (id, payload, fingerprint, gateway, account, operation, payment_id,
                               amount_minor, currency, state, phase, attempts, outcome, result,
                               received_at, decided_at, updated_at)
         SELECT 'prefill-' || g,
                jsonb_build_object('id', 'prefill-' || g, 'gateway', 'paymentz',
                                   'operation', 'capture', 'payment_id', 'pf' || g,
                                   'amount', '10.00', 'currency', 'EUR'),
                md5(g::text), 'paymentz', 'default', 'capture', 'pf' || g, 1000, 'EUR',
                'done', 'ready', 1, 'succeeded',
                jsonb_build_object('command_id', 'prefill-' || g, 'outcome', 'succeeded',
                                   'gateway', 'paymentz', 'operation', 'capture',
                                   'payment_id', 'pf' || g, 'amount', '10.00',
                                   'currency', 'EUR', 'gateway_status', 'captured',
                                   'gateway_code', '00000', 'attempts', 1,
                                   'replayed', false, 'reconciled', false,
                                   'occurred_at', '2026-01-01T00:00:00Z'),
                t, t, t
           FROM generate_series($1::bigint, $2::bigint) g,
                LATERAL (SELECT now() - interval '1 day' - ($3::bigint - g) * interval '250 microseconds') ts(t)";

/// One attempt per command, and an inquiry for every other one.
const PREFILL_ATTEMPTS: &str = "INSERT INTO attempts (command_id, attempt_no, kind, status, purpose, method, url, request,
                               http_status, response_body, latency_ms, classification,
                               started_at, finished_at)
         SELECT 'prefill-' || g, n - 1, CASE n WHEN 1 THEN 'operation' ELSE 'inquiry' END,
                'completed', CASE n WHEN 1 THEN 'CP' ELSE 'IN' END, 'POST',
                'http://gateway.prefill/transactionServices/REST/v1/payments/pf' || g,
                jsonb_build_object('paymentType', 'CP', 'amount', '10.00', 'currency', 'EUR'),
                200,
                '{\"result\":{\"code\":\"00000\",\"description\":\"Transaction succeeded\"},\"paymentId\":\"pf' || g || '\"}',
                1.0, 'succeeded', t, t
           FROM generate_series($1::bigint, $2::bigint) g,
                generate_series(1, 1 + (g % 2)::int) n,
                LATERAL (SELECT now() - interval '1 day' - ($3::bigint - g) * interval '250 microseconds') ts(t)";

/// Each command's event, published.
const PREFILL_EVENTS: &str = "INSERT INTO outbox (message_id, command_id, exchange, routing_key, body, created_at,
                             publish_attempts, published_at)
         SELECT gen_random_uuid(), 'prefill-' || g, 'prefill.events', 'paymentz.capture.succeeded',
                jsonb_build_object('command_id', 'prefill-' || g, 'outcome', 'succeeded'),
                t, 1, t
           FROM generate_series($1::bigint, $2::bigint) g,
                LATERAL (SELECT now() - interval '1 day' - ($3::bigint - g) * interval '250 microseconds') ts(t)";
