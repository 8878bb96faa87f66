//! The queries behind the operator console (`src/console/`): the overview's
//! figures, the filtered and keyset-paginated command list, a payment's
//! commands, a command's events with their routing keys, and the audit
//! table (`console_audit`), written in the same transaction as each action.
//!
//! What the CLI already asks (a command with its attempts and events, the
//! commands needing a person, the dead letters) is asked through the same
//! functions (`store::reports`, `store::dead_letters`, `ops::show`); only
//! what the console alone needs is here. Every query is bounded (a `LIMIT`,
//! or a time window over an index) so that a page costs the same on a
//! table of a million commands as on a fresh one: `docs/console.md` has the
//! plans and the timings.

use sqlx::{PgConnection, Postgres, QueryBuilder};
use time::OffsetDateTime;
use uuid::Uuid;

use super::lifecycle::{CommandState, Role};
use super::StoreError;
use crate::outcome::Outcome;

/// The figures of the overview, read in one round trip per part.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct OverviewFigures {
    /// Commands leased and being driven (all instances).
    pub running: i64,
    /// Commands waiting for a retry or for their payment.
    pub queued: i64,
    /// Commands whose outcome is `unknown` and not settled yet.
    pub unknown_open: i64,
    /// When the oldest open unknown was decided.
    #[serde(with = "time::serde::rfc3339::option")]
    pub oldest_unknown_at: Option<OffsetDateTime>,
    pub outbox_backlog: i64,
    /// Age of the oldest event not yet published, in seconds.
    pub outbox_oldest_secs: f64,
    pub dead_letters_waiting: i64,
    /// Authorizations held for a person (open holds).
    pub holds_open: i64,
    /// The nearest deadline of an open hold.
    #[serde(with = "time::serde::rfc3339::option")]
    pub nearest_hold_deadline: Option<OffsetDateTime>,
    /// Commands received per minute over [`CHART_MINUTES`], by current outcome.
    pub per_minute: Vec<MinuteCount>,
    /// Gateway latency over [`LATENCY_MINUTES`], per gateway and purpose.
    pub latency: Vec<LatencyFigures>,
}

#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct MinuteCount {
    #[serde(with = "time::serde::rfc3339")]
    pub minute: OffsetDateTime,
    /// The current outcome, or `pending` while undecided.
    pub outcome: String,
    pub count: i64,
}

#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct LatencyFigures {
    pub gateway: String,
    /// The exchange's purpose as the gateway client recorded it (`refund`,
    /// `inquiry`, `auth`, ...).
    pub operation: String,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub exchanges: i64,
}

/// How far back the overview's chart goes.
pub const CHART_MINUTES: i64 = 180;
/// How far back the overview's latency figures look.
pub const LATENCY_MINUTES: i64 = 15;

/// The overview's figures. Each part is an index lookup or a scan of a
/// bounded time window; the whole is read at most once per refresh period
/// for every viewer together (`console::Console::overview`).
pub async fn overview(conn: &mut PgConnection) -> Result<OverviewFigures, StoreError> {
    // `queued` is counted as (queued + unsettled) - unsettled: both counts
    // are index-only scans of partial indexes whose predicates they match
    // (`commands_due`, `commands_unsettled`), where `state = 'queued'` alone
    // had to visit every row of `commands_due` (60 ms for 10,000 queued).
    let (
        running,
        due,
        unknown_open,
        oldest_unknown_at,
        outbox_backlog,
        outbox_oldest_secs,
        dead_letters_waiting,
        holds_open,
        nearest_hold_deadline,
    ): (
        i64,
        i64,
        i64,
        Option<OffsetDateTime>,
        i64,
        f64,
        i64,
        i64,
        Option<OffsetDateTime>,
    ) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM commands WHERE state = 'running'),
                (SELECT count(*) FROM commands WHERE state IN ('queued', 'unsettled')),
                (SELECT count(*) FROM commands WHERE state = 'unsettled'),
                (SELECT min(decided_at) FROM commands WHERE state = 'unsettled'),
                (SELECT count(*) FROM outbox WHERE published_at IS NULL AND abandoned_at IS NULL),
                COALESCE((SELECT EXTRACT(EPOCH FROM now() - min(created_at))::float8 FROM outbox
                          WHERE published_at IS NULL AND abandoned_at IS NULL), 0),
                (SELECT count(*) FROM dead_letters WHERE requeued_at IS NULL),
                (SELECT count(*) FROM notifications
                  WHERE decision = 'held' AND hold_closed_at IS NULL),
                (SELECT min(hold_deadline) FROM notifications
                  WHERE decision = 'held' AND hold_closed_at IS NULL)",
    )
    .fetch_one(&mut *conn)
    .await?;
    let per_minute = sqlx::query_as(
        "SELECT date_trunc('minute', received_at) AS minute,
                COALESCE(settled_outcome, outcome, 'pending') AS outcome, count(*) AS count
           FROM commands
          WHERE received_at > now() - make_interval(mins => $1)
          GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .bind(CHART_MINUTES as i32)
    .fetch_all(&mut *conn)
    .await?;
    let latency = sqlx::query_as(
        "SELECT c.gateway AS gateway, COALESCE(a.purpose, a.kind) AS operation,
                percentile_cont(0.5) WITHIN GROUP (ORDER BY a.latency_ms) AS p50_ms,
                percentile_cont(0.95) WITHIN GROUP (ORDER BY a.latency_ms) AS p95_ms,
                count(*) AS exchanges
           FROM attempts a JOIN commands c ON c.id = a.command_id
          WHERE a.started_at > now() - make_interval(mins => $1)
            AND a.latency_ms IS NOT NULL AND c.gateway IS NOT NULL
          GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .bind(LATENCY_MINUTES as i32)
    .fetch_all(&mut *conn)
    .await?;
    Ok(OverviewFigures {
        running,
        queued: (due - unknown_open).max(0),
        unknown_open,
        oldest_unknown_at,
        outbox_backlog,
        outbox_oldest_secs: outbox_oldest_secs.max(0.0),
        dead_letters_waiting,
        holds_open,
        nearest_hold_deadline,
        per_minute,
        latency,
    })
}

/// The command list's filters; every one optional, all combined with AND.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandFilter {
    /// The current outcome (the settled one for a settled unknown), or
    /// `pending` for commands not decided yet.
    pub outcome: Option<String>,
    pub state: Option<String>,
    pub gateway: Option<String>,
    pub account: Option<String>,
    pub operation: Option<String>,
    pub payment_id: Option<String>,
    /// An exact id, or the start of ids.
    pub id_prefix: Option<String>,
    /// A metadata key and the value it must have (compared as text).
    pub metadata: Option<(String, String)>,
    /// Received at or after.
    pub from: Option<OffsetDateTime>,
    /// Received before.
    pub to: Option<OffsetDateTime>,
}

/// Where the next page starts: after this command, in the list's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub received_at: OffsetDateTime,
    pub id: String,
}

/// A command as the list shows it.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct ListedCommand {
    pub id: String,
    pub gateway: Option<String>,
    pub account: Option<String>,
    pub operation: Option<String>,
    pub payment_id: Option<String>,
    pub amount_minor: Option<i64>,
    pub currency: Option<String>,
    pub state: CommandState,
    pub outcome: Option<Outcome>,
    pub settled_outcome: Option<Outcome>,
    pub reason: Option<String>,
    pub attempts: i32,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub decided_at: Option<OffsetDateTime>,
}

const LIST_COLUMNS: &str =
    "id, gateway, account, operation, payment_id, amount_minor, currency, state,
    outcome, settled_outcome, reason, attempts, received_at, decided_at";

/// Escapes `%`, `_` and `\` for a `LIKE` pattern.
fn like_prefix(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// One page of commands matching `filter`, newest received first, after
/// `after`; at most `limit` (the caller asks one more to know whether there
/// is a next page). Keyset pagination on `(received_at, id)`: page 1,000
/// costs what page 1 costs, and a command arriving meanwhile does not shift
/// the pages.
///
/// Two shapes. Without a search filter the list walks `commands_by_received`
/// and stops at `limit` matches. With one (an id prefix, a metadata value, a
/// payment id) the planner would walk the same index, expecting matches to
/// be common, and read the whole table for a value three commands have
/// (0.75 s on a million); so the matches are found first through their own
/// index (a materialized CTE: `commands_id_pattern`, `commands_metadata`,
/// `commands_by_payment`) and only those are sorted.
pub async fn list_commands(
    conn: &mut PgConnection,
    filter: &CommandFilter,
    after: Option<&Cursor>,
    limit: i64,
) -> Result<Vec<ListedCommand>, StoreError> {
    let searched =
        filter.id_prefix.is_some() || filter.metadata.is_some() || filter.payment_id.is_some();
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new("");
    if searched {
        push_search(&mut q, filter);
        q.push(format!(") SELECT {LIST_COLUMNS} FROM found WHERE true"));
    } else {
        q.push(format!("SELECT {LIST_COLUMNS} FROM commands WHERE true"));
    }
    push_filters(&mut q, filter, after);
    q.push(" ORDER BY received_at DESC, id DESC LIMIT ")
        .push_bind(limit);
    q.build_query_as()
        .fetch_all(conn)
        .await
        .map_err(StoreError::from)
}

/// The search of [`list_commands`]: the matches found through their own
/// index, as the materialized CTE `found` (left open for its last `)`).
fn push_search(q: &mut QueryBuilder<Postgres>, filter: &CommandFilter) {
    q.push(format!(
        "WITH found AS MATERIALIZED (SELECT {LIST_COLUMNS} FROM commands WHERE true"
    ));
    if let Some(payment_id) = &filter.payment_id {
        // The index is on (gateway, payment_id): name every gateway
        // (and none) when the filter does not.
        match &filter.gateway {
            Some(gateway) => q.push(" AND gateway = ").push_bind(gateway.clone()),
            None => q
                .push(" AND (gateway = ANY(")
                .push_bind(
                    crate::gateways::registry::GATEWAYS
                        .iter()
                        .map(|g| g.name.to_string())
                        .collect::<Vec<_>>(),
                )
                .push(") OR gateway IS NULL)"),
        };
        q.push(" AND payment_id = ").push_bind(payment_id.clone());
    }
    if let Some(prefix) = &filter.id_prefix {
        // `text_pattern_ops` index: a prefix is a range scan whatever the collation.
        q.push(" AND id LIKE ").push_bind(like_prefix(prefix));
    }
    if let Some((key, value)) = &filter.metadata {
        // Containment, for the GIN index on the metadata; a value may
        // have been sent as a string or as a number, so both are asked.
        q.push(" AND (payload->'metadata' @> ")
            .push_bind(serde_json::json!({ key: value }))
            .push("::jsonb");
        if let Ok(number) = value.parse::<serde_json::Number>() {
            q.push(" OR payload->'metadata' @> ")
                .push_bind(serde_json::json!({ key: number }))
                .push("::jsonb");
        }
        q.push(")");
    }
}

/// The filters of [`list_commands`] that narrow what the walk or the
/// search found, and the page's cursor.
fn push_filters(q: &mut QueryBuilder<Postgres>, filter: &CommandFilter, after: Option<&Cursor>) {
    match filter.outcome.as_deref() {
        Some("pending") => {
            q.push(" AND outcome IS NULL");
        }
        Some(outcome) => {
            q.push(" AND COALESCE(settled_outcome, outcome) = ")
                .push_bind(outcome.to_string());
        }
        None => {}
    }
    for (column, value) in [
        ("state", &filter.state),
        ("gateway", &filter.gateway),
        ("account", &filter.account),
        ("operation", &filter.operation),
    ] {
        if let Some(value) = value {
            q.push(format!(" AND {column} = ")).push_bind(value.clone());
        }
    }
    if let Some(from) = filter.from {
        q.push(" AND received_at >= ").push_bind(from);
    }
    if let Some(to) = filter.to {
        q.push(" AND received_at < ").push_bind(to);
    }
    if let Some(cursor) = after {
        q.push(" AND (received_at, id) < (")
            .push_bind(cursor.received_at)
            .push(", ")
            .push_bind(cursor.id.clone())
            .push(")");
    }
}

/// Every command on one payment, oldest first (bounded: a payment has a
/// handful of commands; a runaway producer's thousands are cut at `limit`).
pub async fn payment_commands(
    conn: &mut PgConnection,
    gateway: &str,
    payment_id: &str,
    limit: i64,
) -> Result<Vec<ListedCommand>, StoreError> {
    sqlx::query_as(&format!(
        "SELECT {LIST_COLUMNS} FROM commands WHERE gateway = $1 AND payment_id = $2
          ORDER BY received_at, id LIMIT $3"
    ))
    .bind(gateway)
    .bind(payment_id)
    .bind(limit)
    .fetch_all(conn)
    .await
    .map_err(StoreError::from)
}

/// One event of a command, as the timeline shows it.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct EventRow {
    pub message_id: Uuid,
    pub routing_key: String,
    pub reply_to: Option<String>,
    pub body: serde_json::Value,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub published_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub abandoned_at: Option<OffsetDateTime>,
    pub last_error: Option<String>,
}

pub async fn command_events(
    conn: &mut PgConnection,
    command_id: &str,
) -> Result<Vec<EventRow>, StoreError> {
    sqlx::query_as(
        "SELECT message_id, routing_key, reply_to, body, created_at, published_at, abandoned_at, last_error
           FROM outbox WHERE command_id = $1 ORDER BY id LIMIT 1000",
    )
    .bind(command_id)
    .fetch_all(conn)
    .await
    .map_err(StoreError::from)
}

/// Leases an `unknown` command to `owner` for an immediate reconciliation,
/// unless a runner holds it now. Returns its row, or `None` when it is not
/// unsettled or is leased (the scheduler is checking it this moment).
pub async fn claim_unsettled(
    conn: &mut PgConnection,
    id: &str,
    owner: Uuid,
    lease: std::time::Duration,
) -> Result<Option<super::commands::CommandRow>, StoreError> {
    sqlx::query_as(&format!(
        "UPDATE commands SET lease_owner = $2, lease_until = now() + make_interval(secs => $3),
                updated_at = now()
          WHERE id = $1 AND state = 'unsettled' AND (lease_until IS NULL OR lease_until < now())
         RETURNING {}",
        super::commands::COLUMNS
    ))
    .bind(id)
    .bind(owner)
    .bind(lease.as_secs_f64())
    .fetch_optional(conn)
    .await
    .map_err(StoreError::from)
}

/// Gives back a lease taken by [`claim_unsettled`] when nothing was done
/// (its payment was busy): the schedule is left as it was.
pub async fn unclaim_unsettled(
    conn: &mut PgConnection,
    id: &str,
    owner: Uuid,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE commands SET lease_owner = NULL, lease_until = NULL, updated_at = now()
          WHERE id = $1 AND lease_owner = $2 AND state = 'unsettled'",
    )
    .bind(id)
    .bind(owner)
    .execute(conn)
    .await?;
    Ok(())
}

/// Who asked for an action, and what for: one row of `console_audit` once
/// the result is known.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub actor: String,
    pub role: Role,
    pub action: &'static str,
    pub target: Option<String>,
    pub reason: Option<String>,
}

/// Writes the audit row of an action; call it in the transaction of the
/// action's effect. Returns the row's id.
pub async fn audit(
    conn: &mut PgConnection,
    entry: &AuditEntry,
    ok: bool,
    result: &str,
) -> Result<i64, StoreError> {
    sqlx::query_scalar(
        "INSERT INTO console_audit (actor, role, action, target, reason, ok, result)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
    )
    .bind(&entry.actor)
    .bind(entry.role)
    .bind(entry.action)
    .bind(&entry.target)
    .bind(&entry.reason)
    .bind(ok)
    .bind(result)
    .fetch_one(conn)
    .await
    .map_err(StoreError::from)
}

#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct AuditRow {
    pub id: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub actor: String,
    pub role: Role,
    pub action: String,
    pub target: Option<String>,
    pub reason: Option<String>,
    pub ok: bool,
    pub result: String,
}

const AUDIT_COLUMNS: &str = "id, at, actor, role, action, target, reason, ok, result";

/// A page of the audit, newest first, ids below `before`; only those about
/// `target` when given.
pub async fn audit_page(
    conn: &mut PgConnection,
    target: Option<&str>,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<AuditRow>, StoreError> {
    sqlx::query_as(&format!(
        "SELECT {AUDIT_COLUMNS} FROM console_audit
          WHERE ($1::text IS NULL OR target = $1) AND ($2::bigint IS NULL OR id < $2)
          ORDER BY id DESC LIMIT $3"
    ))
    .bind(target)
    .bind(before)
    .bind(limit)
    .fetch_all(conn)
    .await
    .map_err(StoreError::from)
}

pub async fn audit_row(conn: &mut PgConnection, id: i64) -> Result<Option<AuditRow>, StoreError> {
    sqlx::query_as(&format!(
        "SELECT {AUDIT_COLUMNS} FROM console_audit WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
    .map_err(StoreError::from)
}

/// The ids of waiting dead letters whose reason contains `reason` (any when
/// `None`), oldest first, at most `limit`, and how many match in all (one
/// statement, so the two agree): what "requeue all that match" works through.
pub async fn waiting_dead_letters_matching(
    conn: &mut PgConnection,
    reason: Option<&str>,
    limit: i64,
) -> Result<(Vec<i64>, i64), StoreError> {
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT id, count(*) OVER () FROM dead_letters
          WHERE requeued_at IS NULL AND ($1::text IS NULL OR strpos(reason, $1) > 0)
          ORDER BY id LIMIT $2",
    )
    .bind(reason)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    let matched = rows.first().map_or(0, |(_, n)| *n);
    Ok((rows.into_iter().map(|(id, _)| id).collect(), matched))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_is_matched_literally() {
        assert_eq!(like_prefix("ord_1%"), "ord\\_1\\%%");
        assert_eq!(like_prefix("a\\b"), "a\\\\b%");
    }
}
