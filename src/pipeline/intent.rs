//! The intent writer: commits the recovery point (`phase = 'calling'`, the
//! attempt count, the before-snapshot and an in-flight attempt row) of many
//! commands per transaction, just before their gateway calls.
//!
//! Each executor still waits for its own commit before it calls: the batch
//! only shares the transaction (see [`super::batch`]).

use super::batch::Batcher;
use crate::store::attempts::Recording;
use crate::store::commands;
use crate::store::{Store, StoreError};

pub const MAX_BATCH: usize = 256;

/// The most batches written at once: two, so that a snapshot command whose
/// inquiry ends while a batch is being written has its recovery point
/// committed beside it, not after it. Batches are disjoint (each executor
/// records its own command's intent), each locks its commands in the order
/// of their ids and inserts only their attempt rows: they do not contend.
pub const WRITERS: usize = 2;

/// The recovery point of one command about to call (in the store it becomes
/// a `commands::Intent`, its SQL parameters).
#[derive(Debug)]
pub struct RecoveryPoint {
    pub command_id: String,
    /// The operation, as the in-flight row's purpose.
    pub purpose: &'static str,
    pub before_snapshot: Option<serde_json::Value>,
    /// The before-snapshot inquiry's exchanges, recorded in the same commit.
    pub inquiry: Option<Recording>,
}

/// `Some((attempt number, in-flight row))`, or `None` if this instance no longer holds the command.
pub type Started = Option<(i32, i64)>;

#[derive(Clone)]
pub struct Intents {
    batcher: Batcher<RecoveryPoint, Started>,
}

impl Intents {
    pub fn start(store: Store, owner: uuid::Uuid) -> Intents {
        let batcher = Batcher::start(MAX_BATCH, WRITERS, move |batch: Vec<RecoveryPoint>| {
            let store = store.clone();
            async move { crate::store::retry_transient(|| write(&store, owner, &batch)).await }
        });
        Intents { batcher }
    }

    pub async fn record(&self, intent: RecoveryPoint) -> Result<Started, StoreError> {
        self.batcher.submit(intent).await
    }
}

/// One statement in autocommit: atomic by itself, and one round trip instead
/// of four (BEGIN, the inquiries, the intents, COMMIT) on the path of every
/// command that needs a before-snapshot.
async fn write(
    store: &Store,
    owner: uuid::Uuid,
    batch: &[RecoveryPoint],
) -> Result<Vec<Started>, StoreError> {
    let inquiries: Vec<&Recording> = batch.iter().filter_map(|i| i.inquiry.as_ref()).collect();
    let mut wanted: Vec<commands::Intent<'_>> = batch
        .iter()
        .map(|i| commands::Intent {
            command_id: i.command_id.as_str(),
            before_snapshot: i.before_snapshot.as_ref(),
            purpose: i.purpose,
        })
        .collect();
    // Locked in the order of their ids, as every batch writer does (see
    // `completion::write`).
    wanted.sort_unstable_by_key(|i| i.command_id);
    let mut conn = store.pool().acquire().await?;
    let started = commands::record_intents(&mut conn, owner, &wanted, &inquiries).await?;
    Ok(batch
        .iter()
        .map(|i| started.get(&i.command_id).copied())
        .collect())
}
