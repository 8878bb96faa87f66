//! The completion writer: commits decided outcomes, their events, their
//! attempts and the release of their payments, many commands per transaction.
//!
//! Every executor hands its decision here and waits for the commit, so each
//! outcome is still committed before anything depends on it; what changes is
//! that decisions arriving while a commit is in progress share the next one
//! (group commit), and each table gets one statement per batch. At low load a
//! batch is one command and nothing waits for company.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::batch::Batcher;
use super::relay::{messages_of, Fresh, CLAIM};
use crate::events::ResultEvent;
use crate::store::attempts::{self, Recording};
use crate::store::commands::{self, Decision, PaymentClaim};
use crate::store::outbox::{self, Staged};
use crate::store::{Store, StoreError};

/// The most decisions committed together.
pub const MAX_BATCH: usize = 256;

/// One command's decision, with everything its transaction writes.
#[derive(Debug)]
pub struct Conclusion {
    pub decision: Decision,
    pub event: ResultEvent,
    pub claim: PaymentClaim,
    pub recording: Option<Recording>,
    pub reply_to: Option<String>,
    pub reply_correlation_id: Option<String>,
}

/// What the commit did for one conclusion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// Decided, with this many pending replays published along.
    Decided { replays: i32 },
    /// This instance no longer held the command: nothing was decided (its
    /// exchanges were still recorded). The new owner settles it.
    LeaseLost,
}

/// Commits conclusions, many per transaction.
#[derive(Clone)]
pub struct Completer {
    batcher: Batcher<Conclusion, Committed>,
}

impl Completer {
    /// Starts the writer task.
    ///
    /// The events it commits go to `fresh`, for the relay to publish from memory.
    pub fn start(
        store: Store,
        owner: uuid::Uuid,
        exchange: String,
        fresh: mpsc::UnboundedSender<Vec<Fresh>>,
    ) -> Completer {
        let exchange = Arc::new(exchange);
        let batcher = Batcher::start(MAX_BATCH, move |batch: Vec<Conclusion>| {
            let store = store.clone();
            let exchange = exchange.clone();
            let fresh = fresh.clone();
            async move {
                crate::store::retry_transient(|| write(&store, owner, &exchange, &batch, &fresh))
                    .await
            }
        });
        Completer { batcher }
    }

    /// Commits one conclusion (with whatever else is waiting) and says what happened.
    pub async fn commit(&self, conclusion: Conclusion) -> Result<Committed, StoreError> {
        self.batcher.submit(conclusion).await
    }
}

async fn write(
    store: &Store,
    owner: uuid::Uuid,
    exchange: &str,
    batch: &[Conclusion],
    fresh: &mpsc::UnboundedSender<Vec<Fresh>>,
) -> Result<Vec<Committed>, StoreError> {
    let mut tx = store.pool().begin().await?;
    let recordings: Vec<&Recording> = batch.iter().filter_map(|c| c.recording.as_ref()).collect();
    attempts::record_many(&mut tx, &recordings).await?;
    let decisions: Vec<&Decision> = batch.iter().map(|c| &c.decision).collect();
    let claims: Vec<&PaymentClaim> = batch.iter().map(|c| &c.claim).collect();
    let decided: HashMap<String, i32> =
        commands::decide_many(&mut tx, owner, &decisions, &claims).await?;
    // Replays are rare: the pending ones are read only for commands whose
    // counter says they have some.
    let with_replays: Vec<&str> = batch
        .iter()
        .map(|c| c.decision.id.as_str())
        .filter(|id| decided.get(*id).is_some_and(|&n| n > 0))
        .collect();
    let pending = commands::take_pending_replays(&mut tx, &with_replays).await?;
    let mut replay_bodies = Vec::with_capacity(pending.len());
    let mut results = Vec::with_capacity(batch.len());
    for c in batch {
        if decided.contains_key(&c.decision.id) {
            let mine: Vec<&commands::PendingReplay> = pending
                .iter()
                .filter(|p| p.command_id == c.decision.id)
                .collect();
            for p in &mine {
                let body = serde_json::to_value(c.event.replay()).expect("events serialize");
                replay_bodies.push((c, *p, body));
            }
            results.push(Committed::Decided {
                replays: mine.len() as i32,
            });
        } else {
            results.push(Committed::LeaseLost);
        }
    }
    let mut staged: Vec<Staged<'_>> = batch
        .iter()
        .filter(|c| decided.contains_key(&c.decision.id))
        .map(|c| stage(exchange, c, &c.decision.result))
        .collect();
    // A replay goes to the duplicate's own reply_to, not the original's.
    staged.extend(replay_bodies.iter().map(|(c, pending, body)| Staged {
        reply_to: pending.reply_to.as_deref(),
        reply_correlation_id: pending.reply_correlation_id.as_deref(),
        ..stage(exchange, c, body)
    }));
    let rows = outbox::enqueue_many(&mut tx, &staged, CLAIM).await?;
    tx.commit().await?;
    let events: Vec<Fresh> = staged
        .iter()
        .zip(rows)
        .map(|(s, (row, message_id))| Fresh {
            row,
            messages: messages_of(
                s.exchange,
                &s.routing_key,
                message_id,
                Some(s.command_id),
                s.reply_to,
                s.reply_correlation_id,
                serde_json::to_vec(s.body).expect("events serialize"),
            ),
        })
        .collect();
    // A relay that is gone (shutting down) leaves them to the poll, once
    // their claim expires.
    let _ = fresh.send(events);
    Ok(results)
}

fn stage<'a>(exchange: &'a str, c: &'a Conclusion, body: &'a serde_json::Value) -> Staged<'a> {
    Staged {
        exchange,
        command_id: c.decision.id.as_str(),
        routing_key: c.event.routing_key(),
        body,
        reply_to: c.reply_to.as_deref(),
        reply_correlation_id: c.reply_correlation_id.as_deref(),
    }
}
