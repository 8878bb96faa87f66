//! The batch writers' statements, and intake's for a batch of new commands:
//! each writes a whole pipeline stage for many commands in one statement
//! (and one round trip in autocommit), across `attempts`, `commands`,
//! `payment_leases` and `outbox`.

use std::collections::HashMap;
use std::time::Duration;

use sqlx::PgConnection;
use uuid::Uuid;

use super::attempts::{self, record_ctes, Recorded, Recording};
use super::commands::{secs, NewCommand};
use super::leases::PaymentClaim;
use super::StoreError;

/// One decided command in a completion batch.
#[derive(Debug, Clone)]
pub struct Decision {
    pub id: String,
    pub outcome: String,
    pub reason: Option<String>,
    /// The result event, serialized once: stored as the command's result
    /// and as its outbox row's body, and published as these bytes.
    pub result: String,
    /// `Some(delay)`: outcome `unknown`, reconciled from `delay` on.
    pub reconcile_in: Option<Duration>,
}

/// A decided command's result event, as its outbox row. The body is the
/// decision's `result`: the event is what the command's result column holds.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    pub message_id: Uuid,
    pub routing_key: &'a str,
    pub reply_to: Option<&'a str>,
    pub reply_correlation_id: Option<&'a str>,
}

/// What [`conclude_many`] did for a command this owner still held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Concluded {
    /// Duplicates waiting for a replay (the counter is reset; the caller
    /// takes them with
    /// [`take_pending_replays`](super::commands::take_pending_replays) in the same transaction).
    pub pending_replays: i32,
    /// The outbox row of its event, claimed for the caller to publish;
    /// `None`: not decided, because it has pending replays and the call
    /// was not in a transaction that takes them ([`Replays::Postpone`]).
    pub outbox_row: Option<i64>,
}

/// What [`conclude_many`] did for a batch.
#[derive(Debug, Default)]
pub struct ConcludedBatch {
    /// By command id, the commands this owner still held.
    pub commands: std::collections::HashMap<String, Concluded>,
    /// Commands that were waiting for a payment released here and are now
    /// due: the caller wakes its scheduler, or they would wait for its
    /// next poll.
    pub woken: i64,
}

/// What [`conclude_many`] does with a command that has pending replays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replays {
    /// Decide it: the caller takes its replays in the same transaction.
    Decide,
    /// Leave it undecided (`outbox_row: None`), locked until the statement
    /// ends: for a statement in autocommit, whose caller could not take the
    /// replays in the same commit. The caller decides it again with
    /// [`Replays::Decide`], in a transaction.
    Postpone,
}

/// The completion writer's batch in one statement: records the calls'
/// exchanges (`recordings`), decides each command this owner still holds,
/// releases its payment lease and wakes the commands waiting on it, and
/// stages its event (`events[i]` is `decisions[i]`'s, claimed for `claim`).
/// A command no longer held gets neither decision nor event; its exchanges
/// are still recorded. `claims[i]` is the payment claim of `decisions[i]`.
/// A command with pending replays is decided only with [`Replays::Decide`]:
/// its counter is read on the locked row, so no duplicate counted before
/// the decision can be missed.
///
/// Rows are checked and locked in a `LATERAL` lookup by primary key, one per
/// batch row, and then updated by id alone. Putting the guards
/// (`lease_owner = $owner`, `outcome IS NULL`) in the UPDATE's own WHERE let
/// the planner estimate them from statistics, which lag this fast-changing
/// table and never know a fresh owner id: it then scanned every in-flight
/// command once per batch row (300 ms statements under load). A lateral
/// lookup can only run once per batch row, whatever the statistics.
///
/// A waiting command that another transaction has locked is not woken (it
/// runs at its recheck, [`crate::pipeline::BUSY_PAYMENT_RECHECK`] at most):
/// by then this statement has released the payment, and intake's
/// transaction, which locks a command it took in a duplicate of and then
/// claims payments, would wait for that release while the wake waited for
/// it. PostgreSQL would break the cycle by failing one of the two.
#[allow(clippy::too_many_arguments)]
pub async fn conclude_many(
    conn: &mut PgConnection,
    owner: Uuid,
    decisions: &[&Decision],
    claims: &[&PaymentClaim],
    events: &[Outgoing<'_>],
    exchange: &str,
    claim: Duration,
    recordings: &[&Recording],
    replays: Replays,
) -> Result<ConcludedBatch, StoreError> {
    if decisions.is_empty() {
        return attempts::record_many(conn, recordings)
            .await
            .map(|()| Default::default());
    }
    let query = sqlx::query_as::<_, (String, i32, Option<i64>, i64)>(CONCLUDE);
    let query = Recorded::of(recordings).bind(query);
    let rows = Concluding::of(decisions, claims, events)
        .bind(query, owner, exchange, claim)
        .bind(replays == Replays::Decide)
        .fetch_all(conn)
        .await?;
    let woken = rows.first().map_or(0, |row| row.3);
    let commands = rows
        .into_iter()
        .map(|(id, pending_replays, outbox_row, _)| {
            let concluded = Concluded {
                pending_replays,
                outbox_row,
            };
            (id, concluded)
        })
        .collect();
    Ok(ConcludedBatch { commands, woken })
}

/// The statement of [`conclude_many`]: `$1`–`$30` are the exchanges'
/// ([`record_ctes`]), `$31`–`$45` the decisions' ([`Concluding::bind`]),
/// `$46` whether commands with pending replays are decided ([`Replays`]).
const CONCLUDE: &str = concat!(
    "WITH ",
    record_ctes!(),
    ",
         held AS (
            SELECT u.*, o.pending_replays
              FROM UNNEST($31::text[], $32::text[], $33::text[], $34::text[], $35::text[]::jsonb[],
                          $36::float8[], $38::text[], $39::text[], $40::uuid[], $41::text[],
                          $42::text[], $43::text[])
                     AS u(id, state, outcome, reason, result, next, gateway, payment_key,
                          message_id, routing_key, reply_to, reply_correlation_id)
             CROSS JOIN LATERAL (
                   SELECT pending_replays FROM commands
                    WHERE id = u.id AND outcome IS NULL AND lease_owner = $37
                      FOR UPDATE
                   ) o
         ),
         decided AS (
            UPDATE commands c
               SET state = h.state, phase = 'ready', outcome = h.outcome, reason = h.reason,
                   result = h.result, decided_at = now(), updated_at = now(), lease_owner = NULL,
                   lease_until = NULL, pending_replays = 0,
                   next_run_at = CASE WHEN h.next IS NULL THEN NULL
                                      ELSE now() + make_interval(secs => h.next) END
              FROM held h
             WHERE c.id = h.id AND (h.pending_replays = 0 OR $46)
            RETURNING h.*
         ),
         released AS (
            DELETE FROM payment_leases l
             USING decided d
             WHERE l.gateway = d.gateway AND l.payment_key = d.payment_key AND l.command_id = d.id
            RETURNING l.gateway, l.payment_key
         ),
         waiting AS (
            SELECT w.id
              FROM released r
             CROSS JOIN LATERAL (
                   SELECT id FROM commands
                    WHERE gateway = r.gateway AND payment_id = r.payment_key
                      AND state = 'queued' AND next_run_at > now()
                      FOR NO KEY UPDATE SKIP LOCKED
                   ) w
         ),
         woken AS (
            UPDATE commands SET next_run_at = now()
              FROM waiting w
             WHERE commands.id = w.id
            RETURNING commands.id
         ),
         staged AS (
            INSERT INTO outbox (message_id, command_id, exchange, routing_key, reply_to,
                                reply_correlation_id, body, claimed_until)
            SELECT message_id, id, $44, routing_key, reply_to, reply_correlation_id, result,
                   now() + make_interval(secs => $45)
              FROM decided
            RETURNING id, command_id
         )
         SELECT d.id, d.pending_replays, s.id, (SELECT count(*) FROM woken)
           FROM decided d JOIN staged s ON s.command_id = d.id
         UNION ALL
         SELECT h.id, h.pending_replays, NULL, (SELECT count(*) FROM woken)
           FROM held h WHERE NOT (h.pending_replays = 0 OR $46)"
);

/// A completion batch as the parameter arrays of [`CONCLUDE`]: row `i` of
/// each is `decisions[i]`, its payment claim and its event.
struct Concluding<'a> {
    ids: Vec<&'a str>,
    states: Vec<&'static str>,
    outcomes: Vec<&'a str>,
    reasons: Vec<Option<&'a str>>,
    results: Vec<&'a str>,
    next: Vec<Option<f64>>,
    gateways: Vec<&'a str>,
    keys: Vec<&'a str>,
    message_ids: Vec<Uuid>,
    routing_keys: Vec<&'a str>,
    reply_tos: Vec<Option<&'a str>>,
    correlations: Vec<Option<&'a str>>,
}

impl<'a> Concluding<'a> {
    fn of(
        decisions: &[&'a Decision],
        claims: &[&'a PaymentClaim],
        events: &[Outgoing<'a>],
    ) -> Concluding<'a> {
        debug_assert_eq!(decisions.len(), claims.len());
        debug_assert_eq!(decisions.len(), events.len());
        let state = |d: &Decision| match d.reconcile_in {
            Some(_) => "unsettled",
            None => "done",
        };
        Concluding {
            ids: decisions.iter().map(|d| d.id.as_str()).collect(),
            states: decisions.iter().map(|d| state(d)).collect(),
            outcomes: decisions.iter().map(|d| d.outcome.as_str()).collect(),
            reasons: decisions.iter().map(|d| d.reason.as_deref()).collect(),
            results: decisions.iter().map(|d| d.result.as_str()).collect(),
            next: decisions.iter().map(|d| d.reconcile_in.map(secs)).collect(),
            gateways: claims.iter().map(|c| c.gateway.as_str()).collect(),
            keys: claims.iter().map(|c| c.payment_key.as_str()).collect(),
            message_ids: events.iter().map(|e| e.message_id).collect(),
            routing_keys: events.iter().map(|e| e.routing_key).collect(),
            reply_tos: events.iter().map(|e| e.reply_to).collect(),
            correlations: events.iter().map(|e| e.reply_correlation_id).collect(),
        }
    }

    /// Binds `$31`–`$45`, after [`Recorded::bind`]'s `$1`–`$30`.
    fn bind<'q, O>(
        self,
        query: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
        owner: Uuid,
        exchange: &'q str,
        claim: Duration,
    ) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>
    where
        'a: 'q,
    {
        query
            .bind(self.ids)
            .bind(self.states)
            .bind(self.outcomes)
            .bind(self.reasons)
            .bind(self.results)
            .bind(self.next)
            .bind(owner)
            .bind(self.gateways)
            .bind(self.keys)
            .bind(self.message_ids)
            .bind(self.routing_keys)
            .bind(self.reply_tos)
            .bind(self.correlations)
            .bind(exchange)
            .bind(secs(claim))
    }
}

/// One command about to make its call with a side effect.
#[derive(Debug, Clone, Copy)]
pub struct Intent<'a> {
    pub command_id: &'a str,
    /// The payment as it was before this attempt, when the gateway needs it
    /// to settle an ambiguous answer.
    pub before_snapshot: Option<&'a serde_json::Value>,
    /// Recorded on the in-flight attempt row (the operation's wire name).
    pub purpose: &'a str,
}

/// Commits the recovery point before calls with a side effect, for many
/// commands in one statement: phase `calling`, the attempt count, the
/// before-snapshot, and the attempt's in-flight row; with the exchanges of
/// the before-snapshot inquiries (`inquiries`), so that the intent writer's
/// whole batch is one statement, and one round trip in autocommit. Returns,
/// for each command this owner still held, its new attempt number and the
/// in-flight row id. (Rows are checked and locked by primary key first; see
/// [`conclude_many`].)
pub async fn record_intents(
    conn: &mut PgConnection,
    owner: Uuid,
    intents: &[Intent<'_>],
    inquiries: &[&Recording],
) -> Result<std::collections::HashMap<String, (i32, i64)>, StoreError> {
    if intents.is_empty() {
        return attempts::record_many(conn, inquiries)
            .await
            .map(|()| Default::default());
    }
    let ids: Vec<&str> = intents.iter().map(|i| i.command_id).collect();
    let snapshots: Vec<Option<&serde_json::Value>> =
        intents.iter().map(|i| i.before_snapshot).collect();
    let purposes: Vec<&str> = intents.iter().map(|i| i.purpose).collect();
    let query = sqlx::query_as::<_, (String, i32, i64)>(concat!(
        "WITH ",
        record_ctes!(),
        ",
         held AS (
            SELECT u.id, u.snapshot, u.purpose
              FROM UNNEST($31::text[], $32::jsonb[], $34::text[]) AS u(id, snapshot, purpose)
             -- `IS TRUE` (the same test: state is never NULL) keeps the
             -- planner off commands_stale, the partial index of running
             -- commands: with statistics of a table of finished commands it
             -- scanned that index whole, with the id as a filter, per row.
             CROSS JOIN LATERAL (
                   SELECT 1 FROM commands
                    WHERE id = u.id AND lease_owner = $33 AND (state = 'running') IS TRUE
                      FOR UPDATE
                   ) o
             -- The inquiries' rows are inserted first, so that attempt ids
             -- follow the order of the exchanges (a CTE runs when first read).
             WHERE (SELECT count(*) FROM added) >= 0
         ),
         marked AS (
            UPDATE commands c SET phase = 'calling', attempts = c.attempts + 1,
               before_snapshot = COALESCE(h.snapshot, c.before_snapshot), updated_at = now()
              FROM held h
             WHERE c.id = h.id
            RETURNING c.id, c.attempts, h.purpose
         )
         INSERT INTO attempts (command_id, attempt_no, kind, status, purpose)
         SELECT id, attempts, 'operation', 'in_flight', purpose FROM marked
         RETURNING command_id, attempt_no, id"
    ));
    let rows = Recorded::of(inquiries)
        .bind(query)
        .bind(&ids)
        .bind(&snapshots)
        .bind(owner)
        .bind(&purposes)
        .fetch_all(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(id, attempt_no, row)| (id, (attempt_no, row)))
        .collect())
}

/// What [`intake_new`] did with one command of the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    /// Its payment's lease was granted: it is leased to the caller. If not,
    /// it is queued, to be looked at again after the recheck delay or when
    /// the payment is released.
    pub granted: bool,
    /// The attempt number and in-flight attempt row of its first attempt,
    /// when its recovery point was recorded with it.
    pub started: Option<(i32, i64)>,
}

/// The SQLSTATE `intake_new_commands` raises when an id of its batch was
/// stored by someone else while it ran: nothing of it was committed.
const STORED_MEANWHILE: &str = "BO001";

/// Intake's fast path in one round trip, in autocommit: a batch of new
/// commands (distinct ids, all valid) inserted, their payments claimed
/// (`claims`: one per payment), the commands whose payment is busy queued,
/// and the recovery point recorded of the granted commands in `intents`.
/// The function `intake_new_commands` (its migrations say why it is safe:
/// `20261206001001`, and `20261209001001` for its lock order) does it all
/// in one statement, so it is committed whole or not at all. `rows` in the
/// order of their ids and `claims` in the order of their keys: the order
/// every intake takes its locks in.
///
/// `None`: nothing was done, because an id of the batch exists (a
/// redelivery, a producer's duplicate): the caller stores the batch in a
/// transaction that deals with those. `Some(taken)`: one entry per row,
/// committed when this returns.
#[allow(clippy::too_many_arguments)]
pub async fn intake_new(
    conn: &mut PgConnection,
    rows: &[&NewCommand],
    owner: Uuid,
    lease: Duration,
    recheck: Duration,
    claims: &[PaymentClaim],
    intents: &[Intent<'_>],
) -> Result<Option<HashMap<String, Taken>>, StoreError> {
    let col = |f: fn(&NewCommand) -> Option<&str>| rows.iter().map(|r| f(r)).collect::<Vec<_>>();
    let taken = sqlx::query_as::<_, (String, bool, Option<i32>, Option<i64>)>(
        "SELECT o_id, o_granted, o_attempt_no, o_in_flight
           FROM intake_new_commands($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
                                    $15, $16, $17, $18, $19)",
    )
    .bind(rows.iter().map(|r| r.id.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.payload.as_str()).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|r| r.fingerprint.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(col(|r| r.gateway.as_deref()))
    .bind(col(|r| r.account.as_deref()))
    .bind(col(|r| r.operation.as_deref()))
    .bind(col(|r| r.payment_id.as_deref()))
    .bind(rows.iter().map(|r| r.amount_minor).collect::<Vec<_>>())
    .bind(col(|r| r.currency.as_deref()))
    .bind(col(|r| r.reply_to.as_deref()))
    .bind(col(|r| r.correlation_id.as_deref()))
    .bind(owner)
    .bind(secs(lease))
    .bind(secs(recheck))
    .bind(
        claims
            .iter()
            .map(|c| c.gateway.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        claims
            .iter()
            .map(|c| c.payment_key.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        claims
            .iter()
            .map(|c| c.command_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(intents.iter().map(|i| i.command_id).collect::<Vec<_>>())
    .bind(intents.iter().map(|i| i.purpose).collect::<Vec<_>>())
    .fetch_all(conn)
    .await;
    let taken = match taken {
        Ok(taken) => taken,
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(STORED_MEANWHILE) => {
            return Ok(None)
        }
        Err(error) => return Err(error.into()),
    };
    if taken.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        taken
            .into_iter()
            .map(|(id, granted, attempt_no, in_flight)| {
                let started = attempt_no.zip(in_flight);
                (id, Taken { granted, started })
            })
            .collect(),
    ))
}
