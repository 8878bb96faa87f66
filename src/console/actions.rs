//! What an operator can do from the console, each written to the audit in
//! the transaction of its effect:
//!
//! - **reconcile now** an `unknown`: the pipeline's own reconciliation
//!   (`reconcile::reconcile_now`): one real inquiry, recorded as an attempt,
//!   and the same decision the scheduled checks make;
//! - **requeue** a dead letter: the CLI's `dead-letters requeue`
//!   (`ops::dead_letters::requeue_in`), its audit row in the transaction
//!   that marks it requeued;
//! - **requeue all that match** a reason: at most [`REQUEUE_CAP`] per
//!   request, each one as above; the answer counts what was requeued, what
//!   was refused (and why) and what is left beyond the cap;
//! - **release** a held authorization as a capture or a cancel, a reason
//!   required: the CLI's `notifications release`
//!   (`ops::notifications::release_in`), its audit row in the transaction
//!   that makes the command and closes the hold.
//!
//! A refusal decided here (already requeued, not unknown any more) is an
//! audit row too (`ok = false`), written on its own: nothing else happened.

use serde::Serialize;
use sqlx::Connection;

use super::auth::Caller;
use super::{Console, ConsoleError, REQUEUE_CAP};
use crate::ops::{Broker, OpsError};
use crate::pipeline::reconcile::{self, ReconcileNowError};
use crate::store::console::{self as queries, AuditEntry};

/// What an action came to, as the pages and the API report it.
#[derive(Debug, Clone, Serialize)]
pub struct Done {
    pub audit_id: i64,
    pub ok: bool,
    pub result: String,
}

/// A reason given with an action: trimmed, bounded, absent when blank.
pub fn reason(given: Option<&str>) -> Option<String> {
    let text: String = given?
        .chars()
        .filter(|c| !c.is_control() || *c == '\n')
        .take(1000)
        .collect();
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

fn entry(
    caller: &Caller,
    action: &'static str,
    target: String,
    reason: Option<String>,
) -> AuditEntry {
    AuditEntry {
        actor: caller.actor.clone(),
        role: caller.role,
        action,
        target: Some(target),
        reason,
    }
}

/// Writes a refusal's audit row on its own.
async fn refused(console: &Console, entry: &AuditEntry, why: &str) -> Result<Done, ConsoleError> {
    let mut conn = console.conn().await?;
    let audit_id = queries::audit(&mut conn, entry, false, why).await?;
    Ok(Done {
        audit_id,
        ok: false,
        result: why.to_string(),
    })
}

pub async fn reconcile(
    console: &Console,
    caller: &Caller,
    id: &str,
    why: Option<String>,
) -> Result<Done, ConsoleError> {
    let entry = entry(caller, "reconcile", id.to_string(), why);
    match reconcile::reconcile_now(&console.worker, id, &entry).await {
        Ok((audit_id, result)) => Ok(Done {
            audit_id,
            ok: true,
            result,
        }),
        Err(ReconcileNowError::NotFound(id)) => {
            Err(ConsoleError::NotFound(format!("no command with id `{id}`")))
        }
        Err(ReconcileNowError::Refused(why)) => refused(console, &entry, &why).await,
        Err(ReconcileNowError::Store(error)) => Err(error.into()),
    }
}

/// Requeues one dead letter with `broker`; its audit row in the same
/// transaction. A refusal is audited; an unknown id is not (nothing to act on).
async fn requeue_with(
    console: &Console,
    broker: &Broker,
    entry: &AuditEntry,
    id: i64,
) -> Result<Done, ConsoleError> {
    let mut conn = console.conn().await?;
    let mut tx = conn.begin().await?;
    match crate::ops::dead_letters::requeue_in(&mut tx, broker, id).await {
        Ok(()) => {
            let result = format!("requeued to `{}`", broker.topology.command_queue);
            let audit_id = queries::audit(&mut tx, entry, true, &result).await?;
            tx.commit().await.map_err(|error| {
                ConsoleError::BadInput(format!(
                    "dead letter {id} was published to the command queue, but marking it requeued failed ({error}): do not requeue it again"
                ))
            })?;
            Ok(Done {
                audit_id,
                ok: true,
                result,
            })
        }
        Err(OpsError::NotFound(why)) => Err(ConsoleError::NotFound(why)),
        Err(error) => {
            drop(tx);
            refused(console, entry, &error.to_string()).await
        }
    }
}

async fn broker(console: &Console) -> Result<Broker, String> {
    Broker::connect(&console.config)
        .await
        .map_err(|e| e.to_string())
}

pub async fn requeue(
    console: &Console,
    caller: &Caller,
    id: i64,
    why: Option<String>,
) -> Result<Done, ConsoleError> {
    let entry = entry(caller, "requeue", format!("dead-letter:{id}"), why);
    let broker = match broker(console).await {
        Ok(b) => b,
        Err(why) => return refused(console, &entry, &why).await,
    };
    let done = requeue_with(console, &broker, &entry, id).await;
    broker.close().await;
    done
}

/// Releases the open hold `id` as a capture or a cancel: the CLI's
/// `notifications release` (`ops::notifications::release_in`: the automated
/// command with rule "operator"), its audit row in the same transaction. A
/// reason is required; a refusal (not an open hold) is audited as not ok.
pub async fn release(
    console: &Console,
    caller: &Caller,
    id: i64,
    action: &str,
    why: Option<String>,
) -> Result<Done, ConsoleError> {
    let action = match action {
        "capture" => crate::notifications::rules::Action::Capture,
        "cancel" => crate::notifications::rules::Action::Cancel,
        other => {
            return Err(ConsoleError::BadInput(format!(
                "action `{other}`: release as `capture` or `cancel`"
            )))
        }
    };
    let Some(why) = why else {
        return Err(ConsoleError::BadInput(
            "a reason is required to release a hold".into(),
        ));
    };
    let entry = entry(caller, "release", format!("notification:{id}"), Some(why));
    let readers = crate::notifications::listener::readers(&console.config.accounts)
        .map_err(|e| ConsoleError::BadInput(e.to_string()))?;
    let ctx = crate::notifications::intake::Context::of_worker(
        console.worker.clone(),
        console.config.automation.clone(),
        readers,
    );
    let by = format!("console:{}", caller.actor);
    let mut conn = console.conn().await?;
    let mut tx = conn.begin().await?;
    match crate::ops::notifications::release_in(&ctx, &mut tx, id, action, &by).await? {
        Ok(command) => {
            let result = format!("released as a {}: command {command}", action.as_str());
            let audit_id = queries::audit(&mut tx, &entry, true, &result).await?;
            tx.commit().await?;
            ctx.after_commit("acted");
            Ok(Done {
                audit_id,
                ok: true,
                result,
            })
        }
        Err(why) => {
            drop(tx);
            drop(conn);
            refused(console, &entry, &why).await
        }
    }
}

/// What "requeue all that match" came to.
#[derive(Debug, Clone, Serialize)]
pub struct Bulk {
    pub audit_id: i64,
    pub matched: i64,
    pub requeued: Vec<i64>,
    /// Dead letters refused, with why (already requeued meanwhile, cut body).
    pub failed: Vec<(i64, String)>,
    /// Matching dead letters left because of the cap.
    pub left: i64,
    pub result: String,
}

/// Requeues the waiting dead letters whose reason contains `filter` (all
/// when `None`), oldest first, at most [`REQUEUE_CAP`]; one audit row per
/// dead letter (with its effect) and one for the whole request.
pub async fn requeue_matching(
    console: &Console,
    caller: &Caller,
    filter: Option<String>,
    why: Option<String>,
) -> Result<Bulk, ConsoleError> {
    let target = format!(
        "dead-letters matching {}",
        filter
            .as_deref()
            .map(|f| format!("reason containing {f:?}"))
            .unwrap_or_else(|| "anything".into())
    );
    let summary_entry = entry(caller, "requeue-matching", target, why.clone());
    let (ids, matched) = {
        let mut conn = console.conn().await?;
        queries::waiting_dead_letters_matching(&mut conn, filter.as_deref(), REQUEUE_CAP).await?
    };
    let mut requeued = Vec::new();
    let mut failed = Vec::new();
    let broker = match broker(console).await {
        Ok(b) => Some(b),
        Err(why) => {
            failed.extend(ids.iter().map(|id| (*id, why.clone())));
            None
        }
    };
    if let Some(broker) = &broker {
        for id in &ids {
            let one = entry(caller, "requeue", format!("dead-letter:{id}"), why.clone());
            match requeue_with(console, broker, &one, *id).await {
                Ok(done) if done.ok => requeued.push(*id),
                Ok(done) => failed.push((*id, done.result)),
                Err(error) => failed.push((*id, error.to_string())),
            }
        }
        broker.close().await;
    }
    let left = (matched - ids.len() as i64).max(0);
    let mut result = format!(
        "{} requeued, {} failed, {} left beyond the cap of {REQUEUE_CAP}",
        requeued.len(),
        failed.len(),
        left
    );
    // What failed, in the audit and on the page (the API has them all).
    for (id, why) in failed.iter().take(10) {
        result.push_str(&format!("; {id}: {why}"));
    }
    if failed.len() > 10 {
        result.push_str(&format!("; and {} more", failed.len() - 10));
    }
    let mut conn = console.conn().await?;
    let audit_id = queries::audit(&mut conn, &summary_entry, failed.is_empty(), &result).await?;
    Ok(Bulk {
        audit_id,
        matched,
        requeued,
        failed,
        left,
        result,
    })
}
