//! Retention: the statements that delete what is old enough, in small
//! batches, and the loop that runs them without holding the hot path.
//!
//! Three kinds of rows grow for ever otherwise: finished commands (with
//! their attempts, their events and any pending replay rows), published
//! events, and dead letters. Each has its own age limit
//! ([`RetentionSettings`], `[retention]` in the configuration). A command is
//! pruned only when it is final (`state = 'done'`) and none of its events
//! is still waiting for the relay; a command still running, waiting, or
//! `unsettled` is never pruned, however old. Once a command is pruned its id
//! is forgotten: a command with that id arriving later is a new command
//! (the idempotency horizon, docs/messages.md).
//!
//! Each batch is one short statement in autocommit that finds its rows by a
//! range of an index on a column written once at insert (migrations
//! `20261204003001`..`3`), locks them with `SKIP LOCKED` (a row some other
//! transaction holds is left for the next round) and deletes at most
//! [`RetentionSettings::batch`] of them. Between batches the loop pauses for
//! as long as the batch took, so pruning takes at most about half of one
//! connection, and a backlog of millions drains over minutes instead of
//! stalling the worker's own statements.

use std::time::{Duration, Instant};

use sqlx::PgConnection;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::StoreError;

/// How long each kind of row is kept; `None` keeps it for ever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionSettings {
    /// Finished commands, with their attempts and events (audit records),
    /// counted from when the command was received.
    pub commands: Option<Duration>,
    /// Published events, counted from when they were written. They are not
    /// needed for replays (a replay is built from the command's stored result).
    pub published_events: Option<Duration>,
    /// Dead letters, counted from when they were received (requeued or not:
    /// the dead-letter queue keeps its own copy of each message).
    pub dead_letters: Option<Duration>,
    /// How often a worker prunes; `None`: only `backoffice-worker prune`.
    pub interval: Option<Duration>,
    /// Rows deleted per statement.
    pub batch: u32,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        RetentionSettings {
            commands: Some(Duration::from_secs(400 * 86_400)),
            published_events: Some(Duration::from_secs(7 * 86_400)),
            dead_letters: Some(Duration::from_secs(90 * 86_400)),
            interval: Some(Duration::from_secs(3600)),
            batch: 500,
        }
    }
}

/// Rows deleted (or, for a dry run, that would be).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Pruned {
    pub commands: u64,
    pub attempts: u64,
    pub pending_replays: u64,
    /// Events of pruned commands, published or abandoned.
    pub command_events: u64,
    /// Published events older than their own limit (commands kept).
    pub published_events: u64,
    pub dead_letters: u64,
}

impl Pruned {
    fn add(&mut self, other: Pruned) {
        self.commands += other.commands;
        self.attempts += other.attempts;
        self.pending_replays += other.pending_replays;
        self.command_events += other.command_events;
        self.published_events += other.published_events;
        self.dead_letters += other.dead_letters;
    }

    pub fn total(&self) -> u64 {
        self.commands
            + self.attempts
            + self.pending_replays
            + self.command_events
            + self.published_events
            + self.dead_letters
    }
}

/// The cut-off times, fixed once per run so that a run ends.
#[derive(Debug, Clone, Copy)]
pub struct Cutoffs {
    pub commands: Option<OffsetDateTime>,
    pub published_events: Option<OffsetDateTime>,
    pub dead_letters: Option<OffsetDateTime>,
}

impl Cutoffs {
    pub fn at(now: OffsetDateTime, settings: &RetentionSettings) -> Cutoffs {
        let before = |keep: Option<Duration>| keep.map(|keep| now - keep);
        Cutoffs {
            commands: before(settings.commands),
            published_events: before(settings.published_events),
            dead_letters: before(settings.dead_letters),
        }
    }
}

/// Deletes up to `limit` finished commands received before `cutoff`, with
/// their attempts, events and pending replay rows, in one statement. The
/// foreign keys of `attempts` and `pending_replays` are checked at the end
/// of the statement, when their rows are gone too.
pub async fn prune_commands(
    conn: &mut PgConnection,
    cutoff: OffsetDateTime,
    limit: u32,
) -> Result<Pruned, StoreError> {
    let (commands, attempts, events, replays): (i64, i64, i64, i64) = sqlx::query_as(
        "WITH victims AS MATERIALIZED (
             SELECT c.id FROM commands c
              WHERE c.received_at < $1 AND c.state = 'done'
                AND NOT EXISTS (SELECT 1 FROM outbox o
                                 WHERE o.command_id = c.id
                                   AND o.published_at IS NULL AND o.abandoned_at IS NULL)
              ORDER BY c.received_at
              LIMIT $2
              FOR UPDATE OF c SKIP LOCKED
         ), ids AS MATERIALIZED (
             SELECT ARRAY(SELECT id FROM victims) AS ids
         ), gone_attempts AS (
             DELETE FROM attempts WHERE command_id = ANY((SELECT ids FROM ids)::text[]) RETURNING 1
         ), gone_events AS (
             DELETE FROM outbox WHERE command_id = ANY((SELECT ids FROM ids)::text[]) RETURNING 1
         ), gone_replays AS (
             DELETE FROM pending_replays WHERE command_id = ANY((SELECT ids FROM ids)::text[]) RETURNING 1
         ), gone AS (
             DELETE FROM commands WHERE id = ANY((SELECT ids FROM ids)::text[]) RETURNING 1
         )
         SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM gone_attempts),
                (SELECT count(*) FROM gone_events), (SELECT count(*) FROM gone_replays)",
    )
    .bind(cutoff)
    .bind(i64::from(limit))
    .fetch_one(conn)
    .await?;
    Ok(Pruned {
        commands: commands as u64,
        attempts: attempts as u64,
        command_events: events as u64,
        pending_replays: replays as u64,
        ..Pruned::default()
    })
}

/// Deletes up to `limit` published events written before `cutoff`.
pub async fn prune_published_events(
    conn: &mut PgConnection,
    cutoff: OffsetDateTime,
    limit: u32,
) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "DELETE FROM outbox WHERE id = ANY(ARRAY(
             SELECT id FROM outbox
              WHERE created_at < $1 AND published_at IS NOT NULL
              ORDER BY created_at
              LIMIT $2
              FOR UPDATE SKIP LOCKED))",
    )
    .bind(cutoff)
    .bind(i64::from(limit))
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Deletes up to `limit` dead letters received before `cutoff`.
pub async fn prune_dead_letters(
    conn: &mut PgConnection,
    cutoff: OffsetDateTime,
    limit: u32,
) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "DELETE FROM dead_letters WHERE id = ANY(ARRAY(
             SELECT id FROM dead_letters
              WHERE received_at < $1
              ORDER BY received_at
              LIMIT $2
              FOR UPDATE SKIP LOCKED))",
    )
    .bind(cutoff)
    .bind(i64::from(limit))
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// What a run with these cut-offs would delete now (`prune --dry-run`).
/// Counted by the same conditions, without locks; a run may delete a little
/// less (rows locked at that moment are left for the next one).
pub async fn count(conn: &mut PgConnection, cutoffs: &Cutoffs) -> Result<Pruned, StoreError> {
    let (commands, attempts, events, replays, published, dead): (i64, i64, i64, i64, i64, i64) =
        sqlx::query_as(
            "WITH victims AS MATERIALIZED (
                 SELECT c.id FROM commands c
                  WHERE $1::timestamptz IS NOT NULL AND c.received_at < $1 AND c.state = 'done'
                    AND NOT EXISTS (SELECT 1 FROM outbox o
                                     WHERE o.command_id = c.id
                                       AND o.published_at IS NULL AND o.abandoned_at IS NULL)
             )
             SELECT (SELECT count(*) FROM victims),
                    (SELECT count(*) FROM victims v JOIN attempts a ON a.command_id = v.id),
                    (SELECT count(*) FROM victims v JOIN outbox o ON o.command_id = v.id),
                    (SELECT count(*) FROM victims v JOIN pending_replays p ON p.command_id = v.id),
                    (SELECT count(*) FROM outbox o
                      WHERE $2::timestamptz IS NOT NULL AND o.created_at < $2
                        AND o.published_at IS NOT NULL
                        AND NOT EXISTS (SELECT 1 FROM victims v WHERE v.id = o.command_id)),
                    (SELECT count(*) FROM dead_letters
                      WHERE $3::timestamptz IS NOT NULL AND received_at < $3)",
        )
        .bind(cutoffs.commands)
        .bind(cutoffs.published_events)
        .bind(cutoffs.dead_letters)
        .fetch_one(conn)
        .await?;
    Ok(Pruned {
        commands: commands as u64,
        attempts: attempts as u64,
        command_events: events as u64,
        pending_replays: replays as u64,
        published_events: published as u64,
        dead_letters: dead as u64,
    })
}

/// Prunes everything older than `cutoffs`, batch after batch, until a batch
/// finds less than a full one or `stop` is cancelled. After each batch it
/// pauses as long as the batch took (at least `min_pause`), so the worker's
/// own statements keep most of the database's time.
pub async fn prune(
    pool: &sqlx::PgPool,
    cutoffs: &Cutoffs,
    batch: u32,
    min_pause: Duration,
    stop: &CancellationToken,
) -> Result<Pruned, StoreError> {
    let mut total = Pruned::default();
    let batch = batch.max(1);
    // Commands first: their events go with them, so the published-events
    // pass then finds only the events of commands that are kept.
    for step in [Step::Commands, Step::PublishedEvents, Step::DeadLetters] {
        let cutoff = match step {
            Step::Commands => cutoffs.commands,
            Step::PublishedEvents => cutoffs.published_events,
            Step::DeadLetters => cutoffs.dead_letters,
        };
        let Some(cutoff) = cutoff else { continue };
        loop {
            if stop.is_cancelled() {
                return Ok(total);
            }
            let started = Instant::now();
            let (pruned, found) = {
                let mut conn = pool.acquire().await?;
                match step {
                    Step::Commands => {
                        let p = prune_commands(&mut conn, cutoff, batch).await?;
                        (p, p.commands)
                    }
                    Step::PublishedEvents => {
                        let n = prune_published_events(&mut conn, cutoff, batch).await?;
                        let p = Pruned {
                            published_events: n,
                            ..Pruned::default()
                        };
                        (p, n)
                    }
                    Step::DeadLetters => {
                        let n = prune_dead_letters(&mut conn, cutoff, batch).await?;
                        let p = Pruned {
                            dead_letters: n,
                            ..Pruned::default()
                        };
                        (p, n)
                    }
                }
            };
            total.add(pruned);
            if found < u64::from(batch) {
                break;
            }
            let pause = started.elapsed().max(min_pause);
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.cancelled() => return Ok(total),
            }
        }
    }
    Ok(total)
}

#[derive(Clone, Copy)]
enum Step {
    Commands,
    PublishedEvents,
    DeadLetters,
}

/// The worker's automatic pruning: one run shortly after start, then one per
/// `interval`, until `stop`. Failures are logged and tried again at the next
/// round; pruning never stops the worker. With several instances each prunes
/// on its own schedule; their batches skip each other's locked rows.
pub async fn schedule(pool: sqlx::PgPool, settings: RetentionSettings, stop: CancellationToken) {
    let Some(interval) = settings.interval else {
        return;
    };
    // Not at once: start-up is busy enough (migrations, recovery of a
    // crashed instance's commands).
    let mut next = tokio::time::Instant::now() + Duration::from_secs(30).min(interval);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = stop.cancelled() => return,
        }
        next += interval;
        let cutoffs = Cutoffs::at(OffsetDateTime::now_utc(), &settings);
        let started = Instant::now();
        match prune(&pool, &cutoffs, settings.batch, MIN_PAUSE, &stop).await {
            Ok(pruned) if pruned.total() > 0 => tracing::info!(
                commands = pruned.commands,
                attempts = pruned.attempts,
                events = pruned.command_events + pruned.published_events,
                dead_letters = pruned.dead_letters,
                took = ?started.elapsed(),
                "pruned old rows"
            ),
            Ok(_) => tracing::debug!("nothing old enough to prune"),
            Err(error) => tracing::warn!(%error, "pruning failed; trying again next round"),
        }
    }
}

/// The shortest pause between two batches.
pub const MIN_PAUSE: Duration = Duration::from_millis(20);
