//! The `payment_leases` table: which command may act on a payment now, so
//! that two commands never call the gateway for the same payment at once.

use std::time::Duration;

use sqlx::PgConnection;
use uuid::Uuid;

use super::commands::secs;
use super::StoreError;

/// What a payment lease is taken on: the payment id, or, for a command that
/// names no payment (a transaction list), a key of its own (`list:<command
/// id>`) that no payment id can equal, so that it waits for nobody.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PaymentKey(String);

impl PaymentKey {
    pub fn of(payment_id: Option<&str>, command_id: &str) -> PaymentKey {
        match payment_id {
            Some(id) => PaymentKey(id.to_string()),
            None => PaymentKey(format!("list:{command_id}")),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A payment id is its own key.
impl From<&str> for PaymentKey {
    fn from(payment_id: &str) -> PaymentKey {
        PaymentKey(payment_id.to_string())
    }
}

impl std::ops::Deref for PaymentKey {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PaymentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Takes the lease on a payment for `command_id`: granted when free, expired,
/// or already this command's. The last case is a recovery: whoever holds the
/// command's own lease (taken exclusively by
/// [`claim_due`](super::commands::claim_due)) is its only runner,
/// so it inherits the payment lease of the command's previous, dead, runner.
pub async fn claim_payment(
    conn: &mut PgConnection,
    gateway: &str,
    payment_key: &str,
    command_id: &str,
    owner: Uuid,
    lease: Duration,
) -> Result<bool, StoreError> {
    let claim = PaymentClaim {
        gateway: gateway.to_string(),
        payment_key: payment_key.into(),
        command_id: command_id.to_string(),
    };
    Ok(!claim_payments(conn, &[claim], owner, lease)
        .await?
        .is_empty())
}

/// Releases a payment lease held by `command_id`, and wakes the commands that
/// were waiting for that payment, except those another transaction has
/// locked: they run at their recheck (the reason is at
/// [`conclude_many`](super::stages::conclude_many)).
pub async fn release_payment(
    conn: &mut PgConnection,
    gateway: &str,
    payment_key: &str,
    command_id: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "DELETE FROM payment_leases WHERE gateway = $1 AND payment_key = $2 AND command_id = $3",
    )
    .bind(gateway)
    .bind(payment_key)
    .bind(command_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE commands SET next_run_at = now()
         WHERE id IN (SELECT id FROM commands
                       WHERE gateway = $1 AND payment_id = $2 AND state = 'queued'
                         AND next_run_at > now()
                         FOR NO KEY UPDATE SKIP LOCKED)",
    )
    .bind(gateway)
    .bind(payment_key)
    .execute(conn)
    .await?;
    Ok(())
}

/// Makes a queued command due now if nobody holds its payment any more.
pub async fn wake_if_payment_free(
    conn: &mut PgConnection,
    id: &str,
    gateway: &str,
    payment_key: &str,
) -> Result<bool, StoreError> {
    // The lease row is read with a lock: a release that is deleting it right
    // now is waited for, and then the payment reads as free.
    let done = sqlx::query(
        "WITH lease AS (
            SELECT 1 FROM payment_leases WHERE gateway = $2 AND payment_key = $3 FOR KEY SHARE
         )
         UPDATE commands SET next_run_at = now()
         WHERE id = $1 AND state IN ('queued', 'unsettled')
           AND NOT EXISTS (SELECT 1 FROM lease)",
    )
    .bind(id)
    .bind(gateway)
    .bind(payment_key)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// One payment lease wanted by a command.
#[derive(Debug, Clone)]
pub struct PaymentClaim {
    pub gateway: String,
    pub payment_key: PaymentKey,
    pub command_id: String,
}

/// [`claim_payment`] for many commands in one statement. Each payment may
/// appear once; returns the command ids that got their lease.
pub async fn claim_payments(
    conn: &mut PgConnection,
    claims: &[PaymentClaim],
    owner: Uuid,
    lease: Duration,
) -> Result<std::collections::HashSet<String>, StoreError> {
    if claims.is_empty() {
        return Ok(Default::default());
    }
    let gateways: Vec<&str> = claims.iter().map(|c| c.gateway.as_str()).collect();
    let keys: Vec<&str> = claims.iter().map(|c| c.payment_key.as_str()).collect();
    let ids: Vec<&str> = claims.iter().map(|c| c.command_id.as_str()).collect();
    let granted: Vec<String> = sqlx::query_scalar(
        "INSERT INTO payment_leases (gateway, payment_key, command_id, owner, expires_at)
         SELECT g, k, c, $4, now() + make_interval(secs => $5)
           FROM UNNEST($1::text[], $2::text[], $3::text[]) AS u(g, k, c)
         ON CONFLICT (gateway, payment_key) DO UPDATE
            SET command_id = EXCLUDED.command_id, owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at
          WHERE payment_leases.expires_at < now()
             OR payment_leases.command_id = EXCLUDED.command_id
         RETURNING command_id",
    )
    .bind(&gateways)
    .bind(&keys)
    .bind(&ids)
    .bind(owner)
    .bind(secs(lease))
    .fetch_all(conn)
    .await?;
    Ok(granted.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_without_a_payment_has_a_key_of_its_own() {
        assert_eq!(PaymentKey::of(Some("55361"), "c1").as_str(), "55361");
        assert_eq!(PaymentKey::of(None, "c1").as_str(), "list:c1");
        assert_eq!(
            PaymentKey::from("55361"),
            PaymentKey::of(Some("55361"), "c2")
        );
    }
}
