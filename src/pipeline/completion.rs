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

use tokio::sync::Notify;

use super::batch::Batcher;
use super::relay::{messages_of, Fresh, Handover, CLAIM};
use crate::events::ResultEvent;
use crate::store::attempts::Recording;
use crate::store::commands::{
    self, Concluded, ConcludedBatch, Decision, Outgoing, PaymentClaim, PendingReplay, Replays,
};
use crate::store::outbox::{self, Staged};
use crate::store::{Store, StoreError};
use uuid::Uuid;

/// The most decisions committed together.
pub const MAX_BATCH: usize = 256;

/// The most batches written at once. Two: a decision that arrives while a
/// batch is being written is committed beside it rather than after it, and
/// under load the batches still share commits. The batches are disjoint
/// (one executor per command, one conclusion each), and a batch locks its
/// commands in the order of their ids and releases only its own commands'
/// payment leases; the commands two batches wake wait on different payments
/// (a payment is held by one command at a time). A deadlock, should one
/// occur all the same, is retried ([`crate::store::retry_transient`]): the
/// statement is atomic, so a batch run again neither loses nor doubles an
/// outcome.
pub const WRITERS: usize = 2;

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
    /// Makes the writer.
    ///
    /// The events it commits go to `fresh`, for the relay to publish from
    /// memory; `scheduler` is woken when a released payment made waiting
    /// commands due.
    pub fn start(
        store: Store,
        owner: uuid::Uuid,
        exchange: String,
        fresh: Handover,
        scheduler: Arc<Notify>,
    ) -> Completer {
        let exchange = Arc::new(exchange);
        let batcher = Batcher::start(MAX_BATCH, WRITERS, move |batch: Vec<Conclusion>| {
            let store = store.clone();
            let exchange = exchange.clone();
            let fresh = fresh.clone();
            let scheduler = scheduler.clone();
            async move {
                let (results, woken) = write(&store, owner, &exchange, &batch, &fresh).await?;
                if woken > 0 {
                    scheduler.notify_one();
                }
                Ok(results)
            }
        });
        Completer { batcher }
    }

    /// Commits one conclusion (with whatever else is waiting) and says what happened.
    pub async fn commit(&self, conclusion: Conclusion) -> Result<Committed, StoreError> {
        self.batcher.submit(conclusion).await
    }
}

/// Commits a batch; returns what was committed for each, and how many
/// waiting commands the released payments made due.
///
/// One statement in autocommit does it all (exchanges, decisions, payment
/// releases, events) for the commands without pending replays: one round
/// trip. It leaves those with some undecided, for a transaction that takes
/// their replays with the decision ([`decide_with_replays`]). Each part is
/// retried on its own: the statement's commit stands whatever follows it.
async fn write(
    store: &Store,
    owner: uuid::Uuid,
    exchange: &str,
    batch: &[Conclusion],
    fresh: &Handover,
) -> Result<(Vec<Committed>, i64), StoreError> {
    // Commands are locked in the order of their ids, as intake locks the
    // duplicates it counts: two transactions that take the same locks in the
    // same order cannot deadlock.
    let mut sorted: Vec<&Conclusion> = batch.iter().collect();
    sorted.sort_unstable_by(|a, b| a.decision.id.cmp(&b.decision.id));
    let routing_keys: Vec<String> = sorted.iter().map(|c| c.event.routing_key()).collect();
    let events = outgoing(&sorted, &routing_keys);
    let recordings: Vec<&Recording> = sorted.iter().filter_map(|c| c.recording.as_ref()).collect();
    let ConcludedBatch {
        commands: concluded,
        mut woken,
    } = crate::store::retry_transient(|| async {
        let mut conn = store.pool().acquire().await?;
        let postpone = Replays::Postpone;
        conclude(
            &mut conn,
            owner,
            exchange,
            &sorted,
            &events,
            &recordings,
            postpone,
        )
        .await
    })
    .await?;
    let (postponed, their_events): (Vec<&Conclusion>, Vec<Outgoing<'_>>) = sorted
        .iter()
        .zip(&events)
        .filter(|(c, _)| {
            concluded
                .get(&c.decision.id)
                .is_some_and(|done| done.outbox_row.is_none())
        })
        .map(|(c, e)| (*c, *e))
        .unzip();
    let mut sent = decided_messages(exchange, &sorted, &events, &concluded);
    let mut with_replays = HashMap::new();
    if !postponed.is_empty() {
        let decided = crate::store::retry_transient(|| {
            decide_with_replays(store, owner, exchange, &postponed, &their_events)
        })
        .await;
        match decided {
            Ok((results, more, also_woken)) => {
                (with_replays, woken) = (results, woken + also_woken);
                sent.extend(more);
            }
            Err(error) => {
                // The statement's decisions are committed: their events go out.
                fresh.offer(sent);
                return Err(error);
            }
        }
    }
    let results = batch
        .iter()
        .map(|c| match with_replays.get(c.decision.id.as_str()) {
            Some(&committed) => committed,
            None if concluded.contains_key(&c.decision.id) => Committed::Decided { replays: 0 },
            None => Committed::LeaseLost,
        })
        .collect();
    // Never waits: when the relay is behind (its hand-over full) or gone
    // (shutting down), the poll publishes them once their claim expires.
    fresh.offer(sent);
    Ok((results, woken))
}

/// [`commands::conclude_many`] for these conclusions (in the order of their
/// ids) and their events.
async fn conclude(
    conn: &mut sqlx::PgConnection,
    owner: uuid::Uuid,
    exchange: &str,
    sorted: &[&Conclusion],
    events: &[Outgoing<'_>],
    recordings: &[&Recording],
    replays: Replays,
) -> Result<ConcludedBatch, StoreError> {
    let decisions: Vec<&Decision> = sorted.iter().map(|c| &c.decision).collect();
    let claims: Vec<&PaymentClaim> = sorted.iter().map(|c| &c.claim).collect();
    commands::conclude_many(
        conn, owner, &decisions, &claims, events, exchange, CLAIM, recordings, replays,
    )
    .await
}

/// Decides, in one transaction, the commands that have pending replays
/// (their exchanges are recorded already), and stages their replays.
/// (Replays are read here, after the decision locked the command, and not
/// in the deciding statement: its snapshot, taken before the lock, could
/// miss a duplicate counted in between.) Returns what was committed for
/// each, by command id, and the messages for the relay.
async fn decide_with_replays<'a>(
    store: &Store,
    owner: uuid::Uuid,
    exchange: &str,
    sorted: &[&'a Conclusion],
    events: &[Outgoing<'_>],
) -> Result<(HashMap<&'a str, Committed>, Vec<Fresh>, i64), StoreError> {
    let mut tx = store.pool().begin().await?;
    let decide = Replays::Decide;
    let batch = conclude(&mut tx, owner, exchange, sorted, events, &[], decide).await?;
    let concluded = &batch.commands;
    let ids: Vec<&str> = sorted
        .iter()
        .map(|c| c.decision.id.as_str())
        .filter(|id| concluded.get(*id).is_some_and(|c| c.pending_replays > 0))
        .collect();
    let pending = commands::take_pending_replays(&mut tx, &ids).await?;
    let (results, replay_bodies) = replays_of(sorted, concluded, &pending);
    let replays = staged_replays(exchange, &replay_bodies);
    let replay_rows = outbox::enqueue_many(&mut tx, &replays, CLAIM).await?;
    tx.commit().await?;

    let mut sent = decided_messages(exchange, sorted, events, concluded);
    sent.extend(replay_messages(&replays, replay_rows));
    let results = sorted
        .iter()
        .map(|c| c.decision.id.as_str())
        .zip(results)
        .collect();
    Ok((results, sent, batch.woken))
}

/// The result event of each conclusion (in `sorted`'s order), as its outbox row.
fn outgoing<'a>(sorted: &[&'a Conclusion], routing_keys: &'a [String]) -> Vec<Outgoing<'a>> {
    sorted
        .iter()
        .zip(routing_keys)
        .map(|(c, routing_key)| Outgoing {
            message_id: crate::store::outbox::new_message_id(),
            routing_key,
            reply_to: c.reply_to.as_deref(),
            reply_correlation_id: c.reply_correlation_id.as_deref(),
        })
        .collect()
}

/// A replay to stage: the conclusion replayed, the duplicate waiting for it,
/// and the replayed event's body.
type ReplayBody<'a> = (&'a Conclusion, &'a PendingReplay, String);

/// What the commit did for each conclusion of `batch` (in its order), and
/// the replays of the decided ones' pending duplicates.
fn replays_of<'a>(
    batch: &[&'a Conclusion],
    concluded: &HashMap<String, Concluded>,
    pending: &'a [PendingReplay],
) -> (Vec<Committed>, Vec<ReplayBody<'a>>) {
    let mut replay_bodies = Vec::with_capacity(pending.len());
    let mut results = Vec::with_capacity(batch.len());
    for &c in batch {
        if concluded.contains_key(&c.decision.id) {
            let mine: Vec<&PendingReplay> = pending
                .iter()
                .filter(|p| p.command_id == c.decision.id)
                .collect();
            for p in &mine {
                let body = serde_json::to_string(&c.event.replay()).expect("events serialize");
                replay_bodies.push((c, *p, body));
            }
            results.push(Committed::Decided {
                replays: mine.len() as i32,
            });
        } else {
            results.push(Committed::LeaseLost);
        }
    }
    (results, replay_bodies)
}

/// The replays as outbox rows. A replay goes to the duplicate's own
/// reply_to, not the original's.
fn staged_replays<'a>(exchange: &'a str, replay_bodies: &'a [ReplayBody<'a>]) -> Vec<Staged<'a>> {
    replay_bodies
        .iter()
        .map(|(c, pending, body)| Staged {
            exchange,
            command_id: c.decision.id.as_str(),
            routing_key: c.event.routing_key(),
            body,
            reply_to: pending.reply_to.as_deref(),
            reply_correlation_id: pending.reply_correlation_id.as_deref(),
        })
        .collect()
}

/// The messages of the decided commands' events, for the relay.
fn decided_messages(
    exchange: &str,
    sorted: &[&Conclusion],
    events: &[Outgoing<'_>],
    concluded: &HashMap<String, Concluded>,
) -> Vec<Fresh> {
    sorted
        .iter()
        .zip(events)
        .filter_map(|(c, e)| {
            let row = concluded.get(&c.decision.id)?.outbox_row?;
            Some(Fresh {
                row,
                messages: messages_of(
                    exchange,
                    e.routing_key,
                    e.message_id,
                    Some(&c.decision.id),
                    e.reply_to,
                    e.reply_correlation_id,
                    c.decision.result.clone().into_bytes(),
                ),
            })
        })
        .collect()
}

/// The messages of the replays, with their outbox rows and message ids.
fn replay_messages(replays: &[Staged<'_>], rows: Vec<(i64, Uuid)>) -> Vec<Fresh> {
    replays
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
                s.body.as_bytes().to_vec(),
            ),
        })
        .collect()
}
