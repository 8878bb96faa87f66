//! The `outbox` table: result events committed in the same transaction as the
//! outcome they report, waiting for the relay to publish them with confirms,
//! and the ones it gave up on (`abandoned_at`, with `last_error`).

use sqlx::PgConnection;
use uuid::Uuid;

use super::StoreError;
use crate::events::ResultEvent;

/// A fresh event id: a time-ordered UUID (version 7), not a random one.
///
/// `outbox.message_id` is unique, so every staged event adds an entry to
/// its B-tree. With random (version 4) ids each entry landed on a random
/// leaf of an index that grows with the table: with 10,000,000 events kept,
/// a 390 MB index whose leaves were mostly not in memory, so the completion
/// writer's statement read one leaf from disk and wrote one full-page image
/// per event (2,000 events: 690 ms against 51 ms with ordered ids,
/// docs/performance.md, sixth session). Ids ordered by time all land on the
/// index's newest leaves, whatever its size. They stay unique (a
/// millisecond clock, then random bits; one process's ids are strictly
/// ordered), and nothing reads meaning into their order.
pub fn new_message_id() -> Uuid {
    Uuid::now_v7()
}

/// Stages an event. It is published once the surrounding transaction commits.
pub async fn enqueue(
    conn: &mut PgConnection,
    exchange: &str,
    event: &ResultEvent,
    reply_to: Option<&str>,
    reply_correlation_id: Option<&str>,
) -> Result<Uuid, StoreError> {
    let message_id = new_message_id();
    // Text, not a serde_json::Value: a Value would round the numbers of the
    // command's metadata, which the event echoes unchanged.
    let body = serde_json::to_string(event).expect("events always serialize");
    sqlx::query(
        "INSERT INTO outbox (message_id, command_id, exchange, routing_key, reply_to, reply_correlation_id, body)
         VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)",
    )
    .bind(message_id)
    .bind(&event.command_id)
    .bind(exchange)
    .bind(event.routing_key())
    .bind(reply_to)
    .bind(reply_correlation_id)
    .bind(body)
    .execute(conn)
    .await?;
    Ok(message_id)
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxRow {
    pub id: i64,
    pub message_id: Uuid,
    pub command_id: Option<String>,
    pub exchange: String,
    pub routing_key: String,
    pub reply_to: Option<String>,
    pub reply_correlation_id: Option<String>,
    /// The event as JSON text (read as `body::text`: through a
    /// serde_json::Value the numbers of its metadata could be rounded).
    pub body: String,
    /// When the broker last refused it: it is published alone from then on.
    pub refused_at: Option<time::OffsetDateTime>,
}

/// Whether [`lock_unpublished`] would find a row: one autocommit
/// statement, so that the relay's poll of an outbox with nothing to publish
/// (its usual state: fresh events are published from memory) is one round
/// trip instead of a transaction's three.
pub async fn any_unpublished(conn: &mut PgConnection) -> Result<bool, StoreError> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM outbox
                         WHERE published_at IS NULL AND abandoned_at IS NULL
                           AND (claimed_until IS NULL OR claimed_until < now()))",
    )
    .fetch_one(conn)
    .await
    .map_err(StoreError::from)
}

/// Takes the oldest unpublished rows and locks them for this transaction, so
/// that two relays (two instances) do not publish the same rows at once. Rows
/// claimed by the instance that committed them are left to it until the
/// claim expires (a refused row is held back the same way); abandoned rows
/// are not taken again.
pub async fn lock_unpublished(
    conn: &mut PgConnection,
    limit: i64,
) -> Result<Vec<OutboxRow>, StoreError> {
    sqlx::query_as(
        "SELECT id, message_id, command_id, exchange, routing_key, reply_to, reply_correlation_id,
                body::text AS body, refused_at
         FROM outbox
         WHERE published_at IS NULL AND abandoned_at IS NULL
           AND (claimed_until IS NULL OR claimed_until < now())
         ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(conn)
    .await
    .map_err(StoreError::from)
}

/// Marks rows whose every copy the broker confirmed.
///
/// The mark's commit does not wait for its WAL flush (`synchronous_commit`
/// off for this statement's transaction only): a mark lost with a crash of
/// PostgreSQL leaves its rows unpublished, and the relay publishes them
/// again with the same message ids, at least once, as after a worker crash
/// between a confirm and its mark. Waiting for the flush would only queue
/// the commits that must be durable (intake, recovery point, outcome)
/// behind one more flush per round: at 300 commands/s a mark was one commit
/// in four. Inside the poll's transaction the whole round commits so, and
/// all of it is of the same kind: a refusal or an abandonment lost with the
/// mark is found again on the unpublished row and recorded again.
pub async fn mark_published(conn: &mut PgConnection, ids: &[i64]) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true))
         UPDATE outbox SET published_at = now(), publish_attempts = publish_attempts + 1
          WHERE id = ANY($1) AND EXISTS (SELECT 1 FROM relaxed)",
    )
    .bind(ids)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records a failed publish. A row claimed for publishing from memory gives
/// up its claim, so the poll takes it from now on; a row the poll took was
/// not claimed, so clearing the claim changes nothing for it.
pub async fn mark_failed(
    conn: &mut PgConnection,
    ids: &[i64],
    error: &str,
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE outbox SET claimed_until = NULL, publish_attempts = publish_attempts + 1, last_error = $2
         WHERE id = ANY($1)",
    )
    .bind(ids)
    .bind(error)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records that the broker refused these rows: `(row, strike, error)`, a
/// strike when it was refused on its own (see `pipeline::relay`). A refused
/// row is published alone from now on, and held back for a while (2^strikes
/// seconds, at most a minute) so that a message that breaks the connection
/// does not break it twice a second. A row reaching `abandon_at` strikes is
/// abandoned; returns those rows.
pub async fn mark_refused(
    conn: &mut PgConnection,
    refused: &[(i64, bool, String)],
    abandon_at: i32,
) -> Result<Vec<i64>, StoreError> {
    if refused.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = refused.iter().map(|r| r.0).collect();
    let strikes: Vec<bool> = refused.iter().map(|r| r.1).collect();
    let errors: Vec<&str> = refused.iter().map(|r| r.2.as_str()).collect();
    let rows: Vec<(i64, bool)> = sqlx::query_as(
        "UPDATE outbox o
            SET refused_at = now(),
                refusals = o.refusals + u.strike::int,
                publish_attempts = o.publish_attempts + 1,
                last_error = CASE WHEN o.refusals + u.strike::int >= $4
                                  THEN format('refused by the broker %s times, published alone: %s', $4, u.error)
                                  ELSE u.error END,
                claimed_until = now() + make_interval(secs => least(60, power(2, o.refusals + u.strike::int))),
                abandoned_at = CASE WHEN o.refusals + u.strike::int >= $4 THEN now() END
           FROM UNNEST($1::bigint[], $2::bool[], $3::text[]) AS u(id, strike, error)
          WHERE o.id = u.id AND o.published_at IS NULL
         RETURNING o.id, o.abandoned_at IS NOT NULL",
    )
    .bind(&ids)
    .bind(&strikes)
    .bind(&errors)
    .bind(abandon_at)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, abandoned)| abandoned.then_some(id))
        .collect())
}

/// Gives up on rows that can never be published, each with its reason. They
/// stay in the table (with `abandoned_at` and `last_error`) for a person to
/// look at; the relay does not take them again.
pub async fn abandon(conn: &mut PgConnection, rows: &[(i64, String)]) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
    let reasons: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    sqlx::query(
        "UPDATE outbox o
            SET abandoned_at = now(), last_error = u.reason, claimed_until = NULL
           FROM UNNEST($1::bigint[], $2::text[]) AS u(id, reason)
          WHERE o.id = u.id AND o.published_at IS NULL",
    )
    .bind(&ids)
    .bind(&reasons)
    .execute(conn)
    .await?;
    Ok(())
}

/// Events still to publish (abandoned ones excluded): how many, and the age
/// of the oldest in seconds.
pub async fn backlog(conn: &mut PgConnection) -> Result<(i64, f64), StoreError> {
    sqlx::query_as(
        "SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(created_at))::float8, 0)
         FROM outbox WHERE published_at IS NULL AND abandoned_at IS NULL",
    )
    .fetch_one(conn)
    .await
    .map_err(StoreError::from)
}

/// Every event stored for a command, oldest first (for `show`).
pub async fn for_command(
    conn: &mut PgConnection,
    command_id: &str,
) -> Result<Vec<(Uuid, serde_json::Value, Option<time::OffsetDateTime>)>, StoreError> {
    sqlx::query_as(
        "SELECT message_id, body, published_at FROM outbox WHERE command_id = $1 ORDER BY id",
    )
    .bind(command_id)
    .fetch_all(conn)
    .await
    .map_err(StoreError::from)
}

/// One event to stage in a batch.
#[derive(Debug, Clone)]
pub struct Staged<'a> {
    pub exchange: &'a str,
    pub command_id: &'a str,
    pub routing_key: String,
    /// The event, already serialized (the same value is stored as the command's result).
    pub body: &'a str,
    pub reply_to: Option<&'a str>,
    pub reply_correlation_id: Option<&'a str>,
}

/// [`enqueue`] for many events in one statement, claimed for `claim` by the
/// caller, who publishes them itself once the transaction commits. Returns
/// each event's row id and message id, in the order of `staged`.
pub async fn enqueue_many(
    conn: &mut PgConnection,
    staged: &[Staged<'_>],
    claim: std::time::Duration,
) -> Result<Vec<(i64, Uuid)>, StoreError> {
    if staged.is_empty() {
        return Ok(Vec::new());
    }
    let message_ids: Vec<Uuid> = staged.iter().map(|_| new_message_id()).collect();
    let command_ids: Vec<&str> = staged.iter().map(|s| s.command_id).collect();
    let exchanges: Vec<&str> = staged.iter().map(|s| s.exchange).collect();
    let routing_keys: Vec<&str> = staged.iter().map(|s| s.routing_key.as_str()).collect();
    let reply_tos: Vec<Option<&str>> = staged.iter().map(|s| s.reply_to).collect();
    let correlations: Vec<Option<&str>> = staged.iter().map(|s| s.reply_correlation_id).collect();
    let bodies: Vec<&str> = staged.iter().map(|s| s.body).collect();
    let rows: Vec<(Uuid, i64)> = sqlx::query_as(
        "INSERT INTO outbox (message_id, command_id, exchange, routing_key, reply_to, reply_correlation_id,
                             body, claimed_until)
         SELECT m, c, e, r, rt, rc, b, now() + make_interval(secs => $8)
           FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[]::jsonb[])
                AS u(m, c, e, r, rt, rc, b)
         RETURNING message_id, id",
    )
    .bind(&message_ids)
    .bind(&command_ids)
    .bind(&exchanges)
    .bind(&routing_keys)
    .bind(&reply_tos)
    .bind(&correlations)
    .bind(&bodies)
    .bind(claim.as_secs_f64())
    .fetch_all(conn)
    .await?;
    let ids: std::collections::HashMap<Uuid, i64> = rows.into_iter().collect();
    Ok(message_ids.into_iter().map(|m| (ids[&m], m)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PostgreSQL orders `uuid` by its bytes, as `Uuid`'s `Ord` does: ids
    /// made one after the other must sort after each other, or each insert
    /// into `outbox_message_id_key` lands on a random leaf again.
    #[test]
    fn message_ids_sort_in_the_order_they_are_made() {
        let ids: Vec<Uuid> = (0..2000).map(|_| new_message_id()).collect();
        assert!(
            ids.windows(2).all(|pair| pair[0] < pair[1]),
            "ids out of order"
        );
        assert_eq!(ids[0].get_version_num(), 7);
    }
}
