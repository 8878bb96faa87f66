//! The worker: commands from RabbitMQ, run once in effect, recorded in
//! Postgres, results published.
//!
//! Tasks, each in its own module:
//! - [`consumer`]: keeps a broker session alive and hands each delivery to
//!   [`intake`], which stores it (or dead-letters it) and acks it after the commit;
//! - [`executor`]: runs one command against its gateway under its leases;
//! - [`scheduler`]: picks up what is due in Postgres (retries, commands whose
//!   payment was busy, `unknown` outcomes to reconcile, commands of crashed
//!   instances) and renews this instance's leases;
//! - [`relay`]: publishes the outbox with publisher confirms.
//!
//! They share one [`Worker`]. `docs/architecture.md` walks a command through them.

pub mod backoff;
pub mod batch;
pub mod completion;
pub mod consumer;
pub mod decide;
mod exchanges;
pub mod executor;
pub mod intake;
pub mod intent;
pub mod reconcile;
pub mod relay;
pub mod retry;
pub mod scheduler;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{watch, Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::broker::{Publisher, Topology};
use crate::command::ValidCommand;
use crate::config::{Config, WorkerSettings};
use crate::gateways::registry::Accounts;
use crate::metrics::Metrics;
use crate::outcome::Rejected;
use crate::store::commands::{CommandRow, NewCommand};
use crate::store::Store;

/// How long a command waits for a busy payment before it looks again. The
/// holder's release wakes it at once; this bounds the wait when that wake-up
/// is missed (the holder released between the waiter's failed claim and its
/// deferral becoming visible) or when the holder's instance died.
pub const BUSY_PAYMENT_RECHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// What every task of one worker instance shares.
pub struct Worker {
    /// This instance's identity in leases. New at every start: a restarted
    /// process does not trust the leases of its previous life.
    pub owner: Uuid,
    pub store: Store,
    pub accounts: Accounts,
    pub settings: WorkerSettings,
    pub topology: Topology,
    pub amqp: crate::config::AmqpSettings,
    pub relay: relay::RelaySettings,
    /// The current broker session's publisher; `None` while disconnected.
    pub publisher: watch::Receiver<Option<Publisher>>,
    publisher_tx: watch::Sender<Option<Publisher>>,
    /// One permit per command in flight in this instance.
    pub permits: Arc<Semaphore>,
    active: Mutex<HashSet<String>>,
    pub wake_outbox: Notify,
    pub wake_scheduler: Arc<Notify>,
    pub shutdown: CancellationToken,
    /// How often the scheduler looks for due commands when nothing wakes it.
    pub poll_interval: Duration,
    pub metrics: Arc<Metrics>,
    /// Commits decided outcomes, many per transaction.
    pub completer: completion::Completer,
    /// Commits recovery points before calls, many per transaction.
    pub intents: intent::Intents,
    /// The events the completion writer committed, for the relay to publish
    /// from memory (a bounded hand-over); taken by the relay when it starts.
    fresh_events: Mutex<Option<relay::HandoverReceiver>>,
}

impl Worker {
    pub fn new(
        config: &Config,
        store: Store,
        accounts: Accounts,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Arc<Worker> {
        let (publisher_tx, publisher) = watch::channel(None);
        let owner = Uuid::new_v4();
        let (fresh_tx, fresh_rx) = relay::handover(config.relay.handover_capacity, metrics.clone());
        let wake_scheduler = Arc::new(Notify::new());
        let completer = completion::Completer::start(
            store.clone(),
            owner,
            config.amqp.result_exchange.clone(),
            fresh_tx,
            wake_scheduler.clone(),
        );
        let store_for_intents = store.clone();
        Arc::new(Worker {
            owner,
            store,
            accounts,
            settings: config.worker.clone(),
            topology: Topology::from_settings(&config.amqp),
            amqp: config.amqp.clone(),
            relay: config.relay,
            publisher,
            publisher_tx,
            permits: Arc::new(Semaphore::new(config.worker.max_in_flight)),
            active: Mutex::new(HashSet::new()),
            wake_outbox: Notify::new(),
            wake_scheduler,
            shutdown,
            poll_interval: Duration::from_millis(250),
            metrics,
            completer,
            intents: intent::Intents::start(store_for_intents, owner),
            fresh_events: Mutex::new(Some(fresh_rx)),
        })
    }

    pub(crate) fn set_publisher(&self, publisher: Option<Publisher>) {
        self.publisher_tx.send_replace(publisher);
        self.wake_outbox.notify_one();
    }

    fn track(&self, id: &str) {
        self.active
            .lock()
            .expect("not poisoned")
            .insert(id.to_string());
    }

    fn untrack(&self, id: &str) {
        self.active.lock().expect("not poisoned").remove(id);
    }

    /// The commands this instance is driving right now.
    pub fn active_ids(&self) -> Vec<String> {
        self.active
            .lock()
            .expect("not poisoned")
            .iter()
            .cloned()
            .collect()
    }

    /// Whether a broker session is up right now.
    pub fn broker_connected(&self) -> bool {
        self.publisher.borrow().is_some()
    }

    /// Commands being driven right now (not counting deliveries in intake).
    pub fn driving(&self) -> usize {
        self.active.lock().expect("not poisoned").len()
    }

    pub fn in_flight(&self) -> usize {
        self.settings.max_in_flight - self.permits.available_permits()
    }
}

/// The key of a command's payment lease ([`PaymentKey::of`]).
///
/// [`PaymentKey::of`]: crate::store::leases::PaymentKey::of
pub fn payment_key(payment_id: Option<&str>, command_id: &str) -> crate::store::leases::PaymentKey {
    crate::store::leases::PaymentKey::of(payment_id, command_id)
}

/// A command this instance holds the lease of, ready to drive.
#[derive(Clone)]
pub struct Job {
    pub row: CommandRow,
    pub valid: ValidCommand,
    /// Whether the payment lease was already taken (at intake).
    pub payment_leased: bool,
    /// The in-flight attempt row when intake already committed the recovery
    /// point of the first attempt: the executor calls at once.
    pub intent_row: Option<i64>,
}

impl Job {
    /// The key of the payment lease: the payment id, or one of its own for
    /// commands that have none (`transaction_list`).
    pub fn payment_key(&self) -> crate::store::leases::PaymentKey {
        payment_key(self.valid.request.payment_id(), &self.row.id)
    }

    pub fn reply_correlation(&self) -> Option<&str> {
        self.row
            .correlation_id
            .as_deref()
            .or(Some(self.row.id.as_str()))
    }

    /// Rebuilds a job from its stored row (the scheduler's path). The stored
    /// payload holds the contract's fields only; read leniently (rows stored
    /// by earlier versions hold the whole body, unknown fields and an amount
    /// with spaces included), since the command was accepted when it arrived.
    pub fn from_row(row: CommandRow, accounts: &Accounts) -> Result<Job, Rejected> {
        let mut command: crate::command::Command =
            serde_json::from_str(&row.payload).map_err(|e| {
                Rejected::invalid("payload", crate::telemetry::Escaped::new(&e.to_string()))
            })?;
        if let Some(amount) = &mut command.amount {
            *amount = amount.trim().to_string();
        }
        let valid = intake::validate(&command, accounts)?;
        Ok(Job {
            row,
            valid,
            payment_leased: false,
            intent_row: None,
        })
    }

    /// A job for a command just inserted and leased at intake (the fast path).
    pub fn fresh(new: &NewCommand, valid: ValidCommand, owner: Uuid, lease: Duration) -> Job {
        let now = OffsetDateTime::now_utc();
        Job {
            row: CommandRow {
                id: new.id.clone(),
                payload: new.payload.clone(),
                fingerprint: new.fingerprint.clone(),
                gateway: new.gateway.clone(),
                account: new.account.clone(),
                operation: new.operation.clone(),
                payment_id: new.payment_id.clone(),
                amount_minor: new.amount_minor,
                currency: new.currency.clone(),
                reply_to: new.reply_to.clone(),
                correlation_id: new.correlation_id.clone(),
                state: crate::store::lifecycle::CommandState::Running,
                phase: crate::store::lifecycle::Phase::Ready,
                attempts: 0,
                next_run_at: Some(now),
                lease_owner: Some(owner),
                lease_until: Some(now + lease),
                before_snapshot: None,
                outcome: None,
                reason: None,
                result: None,
                settled_outcome: None,
                settled_result: None,
                reconcile_checks: 0,
                pending_replays: 0,
                received_at: now,
                decided_at: None,
                settled_at: None,
            },
            valid,
            payment_leased: true,
            intent_row: None,
        }
    }
}

/// Runs the worker until `shutdown` is cancelled, then stops taking commands,
/// lets those in flight finish within the grace period, hands back the rest,
/// flushes the outbox, and returns.
pub async fn run(worker: Arc<Worker>) -> anyhow::Result<()> {
    tracing::info!(owner = %worker.owner, queue = %worker.topology.command_queue, "worker starting");
    let scheduler = tokio::spawn(scheduler::run(worker.clone()));
    let heartbeat = tokio::spawn(scheduler::heartbeat(worker.clone()));
    let relay_stop = CancellationToken::new();
    let fresh = worker
        .fresh_events
        .lock()
        .expect("not poisoned")
        .take()
        .expect("one relay per worker");
    let relay = tokio::spawn(relay::run(worker.clone(), fresh, relay_stop.clone()));

    // On a runtime worker thread, like the executors it spawns and the
    // writers it feeds. Awaited in place it ran on the thread that called
    // `block_on` (main), outside the runtime's workers: every delivery, every
    // intake statement and every ack then crossed threads (a futex wake-up
    // each way), which at light load was most of the worker's CPU per
    // command (docs/performance.md, "Efficiency at every load").
    let session = match tokio::spawn(consumer::run(worker.clone())).await {
        Ok(session) => session,
        Err(error) => {
            tracing::error!(%error, "the consumer task failed; stopping");
            worker.shutdown.cancel();
            None
        }
    };

    // Draining: no new deliveries or claims; wait for what is in flight.
    let grace = worker.settings.shutdown_grace;
    let total = worker.settings.max_in_flight as u32;
    let drained = tokio::time::timeout(grace, worker.permits.acquire_many(total)).await;
    match drained {
        Ok(_) => tracing::info!("all in-flight commands finished"),
        Err(_) => tracing::warn!(
            in_flight = worker.in_flight(),
            "shutdown grace period over; commands still calling keep their lease and are resumed by the next instance"
        ),
    }
    let _ = scheduler.await;
    heartbeat.abort();
    match worker.store.pool().acquire().await {
        Ok(mut conn) => match crate::store::commands::hand_back(&mut conn, worker.owner).await {
            Ok(n) if n > 0 => {
                tracing::info!(handed_back = n, "handed back commands not yet started")
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "could not hand back commands; their leases will expire")
            }
        },
        Err(error) => {
            tracing::warn!(%error, "database unavailable at shutdown; leases will expire")
        }
    }

    // Flush the outbox before closing the broker session.
    relay_stop.cancel();
    worker.wake_outbox.notify_one();
    let _ = tokio::time::timeout(Duration::from_secs(10), relay).await;
    if let Some(session) = session {
        session.close().await;
    }
    worker.store.close().await;
    tracing::info!("worker stopped");
    Ok(())
}
