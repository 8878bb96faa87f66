//! The outbox relay: publishes committed events with publisher confirms.
//!
//! An event row is marked published only after the broker confirmed every copy
//! of it (the result exchange, and `reply_to` when the command had one). A
//! crash between confirm and mark publishes it again: delivery is at least
//! once, with the same `message_id`, as the contract says.
//!
//! Two ways in. The completion writer hands over the events it just
//! committed ([`Fresh`]), claimed in their rows, and they are published from
//! memory at once: no read of the outbox on the way to the broker. Everything
//! else (rejections and replays from intake, settled unknowns, fresh events
//! that could not be published, claims left by a crashed instance) is found
//! by polling the table for unclaimed rows.
//!
//! A fresh round does not wait for the one before it: its messages are sent
//! while earlier rounds' confirms (the broker's disk write) are outstanding,
//! and each round's confirms and mark are awaited on a task of its own, at
//! most [`ROUNDS_IN_FLIGHT`] at once. A row is still in one round at a time:
//! the poll leaves the rows of rounds in flight alone, and the relay settles
//! every round in flight before its last pass and before it stops.
//!
//! Nothing here can hang or grow without bound:
//! - the hand-over from the completion writer holds at most
//!   `handover_capacity` events ([`handover`]); when it is full the writer
//!   does not wait: the rows are committed and claimed for [`CLAIM`], and the
//!   poll publishes them once the claim expires;
//! - confirms are awaited for at most `confirm_timeout`; then the unconfirmed
//!   rows are unsent, the channel is abandoned (the consumer reopens the
//!   session) and the poll publishes them again, with the same message ids.
//!
//! A row that can never be published is abandoned: kept with its error
//! (`abandoned_at`, `last_error`), counted apart from the backlog, and never
//! tried again. That is decided before sending for an event over
//! `max_event_size` or with a name AMQP cannot carry, and after the broker
//! refused the row [`MAX_REFUSALS`] times in a row while it was published on
//! its own (a refusal in a batch may be another message's fault, so it only
//! makes the row publish alone from then on), with other events confirmed
//! between the refusals (a broker that refuses everything is the broker's
//! problem, not the rows'). No connection, no confirm in time, a nack: those
//! never abandon a row.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::{self, JoinSet};
use tokio_util::sync::CancellationToken;

use super::Worker;
use crate::broker::{fits_short_string, Outgoing, PublishError, Publisher};
use crate::metrics::Metrics;
use crate::store::{outbox, StoreError};

/// Rows published per transaction.
pub const BATCH: i64 = 500;

/// How often the outbox is polled when nothing wakes the relay.
pub const POLL_EVERY: Duration = Duration::from_millis(500);

/// How long the committing instance keeps its fresh events to itself. They
/// are normally published within milliseconds; a crashed instance's last
/// events wait this long for another relay (a 60 s claim made the chaos run's
/// events after each kill wait a minute). A publish slower than this (a
/// broker in trouble) may be repeated by the poll: at least once, same
/// message id.
pub const CLAIM: Duration = Duration::from_secs(5);

/// Refusals in a row, on its own, before a row is abandoned.
pub const MAX_REFUSALS: i32 = 3;

/// `[relay]`: how the relay waits and what it gives up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelaySettings {
    /// How long a publish waits for the broker's confirms.
    pub confirm_timeout: Duration,
    /// The largest event body published (bytes). Keep it at or under the
    /// broker's `max_message_size` (RabbitMQ: 128 MiB in 3.x, 16 MiB in 4.x).
    pub max_event_size: usize,
    /// Events the completion writer may hand over before the relay takes them.
    pub handover_capacity: usize,
}

impl Default for RelaySettings {
    fn default() -> Self {
        RelaySettings {
            confirm_timeout: Duration::from_secs(30),
            max_event_size: 16 * 1024 * 1024,
            handover_capacity: 4096,
        }
    }
}

/// The bounded hand-over from the completion writer to the relay: at most
/// `capacity` events wait in it.
pub fn handover(capacity: usize, metrics: Arc<Metrics>) -> (Handover, HandoverReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    (
        Handover {
            tx,
            queued: queued.clone(),
            capacity,
            metrics,
        },
        HandoverReceiver { rx, queued },
    )
}

/// The completion writer's end.
#[derive(Clone)]
pub struct Handover {
    tx: mpsc::UnboundedSender<Vec<Fresh>>,
    queued: Arc<AtomicUsize>,
    capacity: usize,
    metrics: Arc<Metrics>,
}

impl Handover {
    /// Hands events over without ever waiting. False when they did not fit
    /// (or the relay is gone): they are committed and claimed, so the poll
    /// publishes them once the claim expires.
    pub fn offer(&self, events: Vec<Fresh>) -> bool {
        let n = events.len();
        if n == 0 {
            return true;
        }
        let room = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                (queued + n <= self.capacity).then_some(queued + n)
            })
            .is_ok();
        if room && self.tx.send(events).is_ok() {
            return true;
        }
        if room {
            self.queued.fetch_sub(n, Ordering::AcqRel);
        }
        self.metrics.left_to_poll(n as u64);
        false
    }

    /// Events waiting now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }
}

/// The relay's end.
pub struct HandoverReceiver {
    rx: mpsc::UnboundedReceiver<Vec<Fresh>>,
    queued: Arc<AtomicUsize>,
}

impl HandoverReceiver {
    pub async fn recv(&mut self) -> Option<Vec<Fresh>> {
        let events = self.rx.recv().await?;
        self.queued.fetch_sub(events.len(), Ordering::AcqRel);
        Some(events)
    }

    pub fn try_recv(&mut self) -> Option<Vec<Fresh>> {
        let events = self.rx.try_recv().ok()?;
        self.queued.fetch_sub(events.len(), Ordering::AcqRel);
        Some(events)
    }
}

/// An outbox row and the copies of its event to publish: handed over by the
/// completion writer for the events it just committed, or read by the poll.
#[derive(Debug)]
pub struct Fresh {
    pub row: i64,
    pub messages: Vec<Outgoing>,
}

/// The copies of one event: to the result exchange, and to `reply_to` when
/// there is one.
#[allow(clippy::too_many_arguments)]
pub fn messages_of(
    exchange: &str,
    routing_key: &str,
    message_id: uuid::Uuid,
    command_id: Option<&str>,
    reply_to: Option<&str>,
    reply_correlation_id: Option<&str>,
    body: Vec<u8>,
) -> Vec<Outgoing> {
    let mut messages = Vec::with_capacity(2);
    let reply_to = reply_to.filter(|r| !r.is_empty());
    let reply_body = reply_to.map(|_| body.clone());
    let mut event = Outgoing::json(exchange, routing_key, body);
    event.message_id = Some(message_id.to_string());
    event.correlation_id = command_id.map(str::to_string);
    messages.push(event);
    if let (Some(reply_to), Some(body)) = (reply_to, reply_body) {
        let mut reply = Outgoing::json("", reply_to, body);
        reply.message_id = Some(message_id.to_string());
        reply.correlation_id = reply_correlation_id.or(command_id).map(str::to_string);
        messages.push(reply);
    }
    messages
}

/// Publishes until `stop` is cancelled, then makes a last pass to flush.
pub async fn run(w: Arc<Worker>, mut fresh: HandoverReceiver, stop: CancellationToken) {
    let mut relay = Relay::new(w.clone());
    let mut open = true;
    // The poll's own clock: a stream of fresh events must not keep it from
    // running (a sleep started afresh at every turn of this loop never ended
    // under steady load, and rows left to the poll waited for a lull).
    let mut poll = tokio::time::interval(POLL_EVERY);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = stop.is_cancelled();
        let room = relay.has_room();
        tokio::select! {
            batch = fresh.recv(), if open && room => match batch {
                Some(batch) => {
                    relay.publish_fresh(batch, &mut fresh).await;
                    if !stop.is_cancelled() {
                        continue;
                    }
                }
                None => open = false,
            },
            Some(settled) = relay.in_flight.join_next_with_id() => {
                relay.settle(settled).await;
                if !stop.is_cancelled() {
                    continue;
                }
            }
            _ = w.wake_outbox.notified() => {}
            _ = poll.tick() => {}
            _ = stop.cancelled(), if !stopping => {}
        }
        if stop.is_cancelled() {
            // Whatever the completion writer handed over last goes first,
            // and every round in flight is settled (confirmed and marked, or
            // left to the poll below) before the last pass.
            while let Some(batch) = fresh.try_recv() {
                relay.publish_fresh(batch, &mut fresh).await;
            }
            relay.settle_all().await;
        }
        if let Some(publisher) = relay.publisher() {
            loop {
                match relay.poll_once(&publisher).await {
                    Ok(n) if n as i64 == BATCH && publisher.is_open() => continue,
                    Ok(_) => break,
                    Err(error) => {
                        tracing::warn!(%error, "outbox relay: database error");
                        break;
                    }
                }
            }
        }
        if stop.is_cancelled() && (stopping || relay.publisher().is_none()) {
            relay.settle_all().await;
            return;
        }
    }
}

/// Fresh rounds sent whose confirms (and then marks) are still awaited. While
/// they are, the relay publishes the events committed meanwhile: an event
/// decided during a round no longer waits for that round's confirms (the
/// broker's disk write) before its own publish starts. Past this many, the
/// relay takes no more from the hand-over until one settles; what queues up
/// meanwhile goes out together in the next round, so the unconfirmed messages
/// are at most this many rounds of [`BATCH`] events.
pub const ROUNDS_IN_FLIGHT: usize = 4;

/// The relay's state between rounds: the fresh rounds in flight, and what it
/// needs to tell a row the broker refuses from a broker that refuses
/// everything.
struct Relay {
    w: Arc<Worker>,
    settings: RelaySettings,
    /// Rows confirmed by this relay so far.
    confirmed: u64,
    /// For each row refused on its own: `confirmed` at that refusal. A
    /// refusal counts only if other rows were confirmed since the last one.
    refused: HashMap<i64, u64>,
    /// Fresh rounds sent and not yet settled ([`ROUNDS_IN_FLIGHT`]), each on
    /// a task of its own that awaits its confirms and then marks its rows.
    in_flight: JoinSet<Settled>,
    /// The rows of each of those rounds, by task. The poll leaves them
    /// alone even once their claim has expired (a round can wait for its
    /// confirms longer than [`CLAIM`]), so that no row is ever in two of
    /// this relay's rounds at once.
    in_flight_rows: HashMap<task::Id, Vec<i64>>,
}

/// What a fresh round's task hands back once its confirms are in.
struct Settled {
    round: Round,
    /// Whether its task took care of the mark (all its rows confirmed; a
    /// failed mark leaves them claimed, for the poll once the claim expires);
    /// otherwise [`Relay::settle`] records the round.
    marked: bool,
}

impl Relay {
    fn new(w: Arc<Worker>) -> Relay {
        let settings = w.relay;
        Relay {
            w,
            settings,
            confirmed: 0,
            refused: HashMap::new(),
            in_flight: JoinSet::new(),
            in_flight_rows: HashMap::new(),
        }
    }

    /// The current session's publisher, unless it is closed (abandoned after
    /// a timeout, or closed by the broker) and not replaced yet.
    fn publisher(&self) -> Option<Publisher> {
        self.w.publisher.borrow().clone().filter(Publisher::is_open)
    }

    /// Whether another fresh round may be sent now.
    fn has_room(&self) -> bool {
        self.in_flight.len() < ROUNDS_IN_FLIGHT
    }

    /// Publishes fresh events (this batch and any that queued up behind it)
    /// and leaves their confirms and marks to a task of their own; what
    /// cannot be sent is released to the poll at once.
    async fn publish_fresh(&mut self, first: Vec<Fresh>, more: &mut HandoverReceiver) {
        // Only on the way out can this be called without room.
        while !self.has_room() {
            if let Some(settled) = self.in_flight.join_next_with_id().await {
                self.settle(settled).await;
            }
        }
        let mut events = first;
        while events.len() < BATCH as usize {
            match more.try_recv() {
                Some(batch) => events.extend(batch),
                None => break,
            }
        }
        let mut round = Round::default();
        let events = round.screen(events, self.settings.max_event_size);
        if !events.is_empty() {
            match self.publisher() {
                Some(publisher) => self.send_fresh(&publisher, events).await,
                None => round.not_sent(&events, "not connected to RabbitMQ"),
            }
        }
        if !round.is_empty() {
            self.record_now(&round).await;
        }
    }

    /// Sends a fresh round and spawns the wait for its confirms. A row is
    /// still marked only after every copy of it is confirmed, and until then
    /// it stays claimed (for [`CLAIM`]) and in `in_flight_rows`, so no poll
    /// takes it; a round not wholly confirmed is recorded by
    /// [`Relay::settle`] as a round always was (failed rows to the poll, at
    /// least once, same message ids). A timeout abandons the channel from the
    /// task at once: the rounds sent after it are failed by the channel's
    /// close or by their own deadlines, and no new round is sent on it.
    async fn send_fresh(&mut self, publisher: &Publisher, events: Vec<Fresh>) {
        let (rows, owners, messages) = split(events);
        let sending = publisher
            .send_all(&messages, self.settings.confirm_timeout)
            .await;
        let (w, publisher) = (self.w.clone(), publisher.clone());
        let task_rows = rows.clone();
        let handle = self.in_flight.spawn(async move {
            let results = sending.confirmed().await;
            let (round, timed_out) = sort(task_rows, &owners, &results);
            if timed_out {
                gave_up(&w, &publisher).await;
            }
            let marked = round.all_published();
            if marked {
                mark(&w, &round.published).await;
            }
            Settled { round, marked }
        });
        self.in_flight_rows.insert(handle.id(), rows);
    }

    /// Takes a settled fresh round back: counts its confirms, and records it
    /// unless its task marked it.
    async fn settle(&mut self, joined: Result<(task::Id, Settled), task::JoinError>) {
        let id = match &joined {
            Ok((id, _)) => *id,
            Err(error) => error.id(),
        };
        self.in_flight_rows.remove(&id);
        let Settled { round, marked } = match joined {
            Ok((_, settled)) => settled,
            Err(error) => {
                // Its rows stay claimed and unmarked: the poll publishes them
                // once the claim expires (at least once, same message ids).
                tracing::error!(%error, "outbox relay: a round's task failed");
                return;
            }
        };
        self.count(&round);
        if !marked {
            self.record_now(&round).await;
        }
    }

    /// Settles every fresh round in flight (before the last pass, and before
    /// the relay stops: dropped, their marks would be cancelled).
    async fn settle_all(&mut self) {
        while let Some(settled) = self.in_flight.join_next_with_id().await {
            self.settle(settled).await;
        }
    }

    /// Records a round on a pooled connection and wakes the poll for what it
    /// released.
    async fn record_now(&mut self, round: &Round) {
        let recorded = async {
            let mut conn = self.w.store.pool().acquire().await?;
            self.record(&mut conn, round).await
        }
        .await;
        if let Err(error) = recorded {
            // The rows stay claimed and unpublished: once the claim expires the
            // poll publishes them again (at least once, same message ids).
            tracing::warn!(%error, "outbox relay: could not mark fresh events");
        }
        if !round.failed.is_empty() || !round.refused.is_empty() {
            self.w.wake_outbox.notify_one();
        }
    }

    /// Publishes one batch of unpublished rows found by polling; returns how
    /// many rows it took. Rows the broker refused before go out one at a time.
    async fn poll_once(&mut self, publisher: &Publisher) -> Result<usize, StoreError> {
        let mut conn = self.w.store.pool().acquire().await?;
        if !outbox::any_unpublished(&mut conn).await? {
            return Ok(0);
        }
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        let mut rows = outbox::lock_unpublished(&mut tx, BATCH).await?;
        // A fresh round still waiting for its confirms past its claim keeps
        // its rows: they are published once at a time, by that round.
        let in_flight: HashSet<i64> = self.in_flight_rows.values().flatten().copied().collect();
        rows.retain(|row| !in_flight.contains(&row.id));
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(0);
        }
        let taken = rows.len();
        let (suspects, rows): (Vec<_>, Vec<_>) =
            rows.into_iter().partition(|row| row.refused_at.is_some());
        let mut round = Round::default();
        let events = round.screen(
            rows.into_iter().map(fresh_of).collect(),
            self.settings.max_event_size,
        );
        self.publish(publisher, events, false, &mut round).await;
        let suspects = round.screen(
            suspects.into_iter().map(fresh_of).collect(),
            self.settings.max_event_size,
        );
        for event in suspects {
            // A refusal closes the channel: the rest wait for the next session.
            if !publisher.is_open() {
                break;
            }
            self.publish(publisher, vec![event], true, &mut round).await;
        }
        self.record(&mut tx, &round).await?;
        tx.commit().await?;
        Ok(taken)
    }

    /// Publishes `events` together, waits for their confirms, and sorts each
    /// row into `round`.
    async fn publish(
        &mut self,
        publisher: &Publisher,
        events: Vec<Fresh>,
        alone: bool,
        round: &mut Round,
    ) {
        if events.is_empty() {
            return;
        }
        let (rows, owners, messages) = split(events);
        let results = publisher
            .publish_all(&messages, self.settings.confirm_timeout)
            .await;
        let (mut sorted, timed_out) = sort(rows, &owners, &results);
        self.count(&sorted);
        if timed_out {
            gave_up(&self.w, publisher).await;
        }
        if alone {
            // A refusal counts against the row only when it was published
            // alone, and only if other rows got through since its last
            // refusal (since this relay started, for its first): a broker
            // refusing everything is no evidence against any row.
            for (row, strike, _) in &mut sorted.refused {
                *strike = self.confirmed > self.refused.get(row).copied().unwrap_or(0);
                if *strike {
                    self.refused.insert(*row, self.confirmed);
                }
            }
        }
        round.take(sorted);
    }

    /// Counts a round's confirms towards telling refusals apart.
    fn count(&mut self, sorted: &Round) {
        for row in &sorted.published {
            self.refused.remove(row);
        }
        self.confirmed += sorted.published.len() as u64;
        if self.refused.len() > 10_000 {
            // Rows another instance published or abandoned meanwhile.
            self.refused.clear();
        }
    }

    /// Writes what a round did to the outbox, and counts and logs it.
    async fn record(
        &mut self,
        conn: &mut sqlx::PgConnection,
        round: &Round,
    ) -> Result<(), StoreError> {
        outbox::mark_published(conn, &round.published).await?;
        if let Some((_, error)) = round.failed.first() {
            let ids: Vec<i64> = round.failed.iter().map(|(id, _)| *id).collect();
            outbox::mark_failed(conn, &ids, error).await?;
            tracing::warn!(failed = ids.len(), %error, "some events were not confirmed; they stay in the outbox");
        }
        let mut abandoned = round.unpublishable.clone();
        if !round.refused.is_empty() {
            let given_up = outbox::mark_refused(conn, &round.refused, MAX_REFUSALS).await?;
            for (id, _, error) in round
                .refused
                .iter()
                .filter(|(id, ..)| given_up.contains(id))
            {
                self.refused.remove(id);
                abandoned.push((
                    *id,
                    format!("refused by the broker {MAX_REFUSALS} times, published alone: {error}"),
                ));
            }
            tracing::warn!(
                refused = round.refused.len(),
                error = %round.refused[0].2,
                "the broker closed the channel over unconfirmed events; they are published one at a time from now on"
            );
        }
        if !round.unpublishable.is_empty() {
            outbox::abandon(conn, &round.unpublishable).await?;
        }
        for (row, reason) in &abandoned {
            tracing::error!(outbox_row = row, %reason, "event abandoned: it can never be published; it stays in the outbox with its error");
        }
        self.w.metrics.published(round.published.len() as u64);
        self.w.metrics.abandoned(abandoned.len() as u64);
        Ok(())
    }
}

/// The rows of `events`, and their messages each with the index of its row.
fn split(events: Vec<Fresh>) -> (Vec<i64>, Vec<usize>, Vec<Outgoing>) {
    let mut rows = Vec::with_capacity(events.len());
    let mut messages = Vec::with_capacity(events.len() * 2);
    let mut owners = Vec::with_capacity(events.len() * 2);
    for (i, event) in events.into_iter().enumerate() {
        rows.push(event.row);
        for message in event.messages {
            messages.push(message);
            owners.push(i);
        }
    }
    (rows, owners, messages)
}

/// Each row's fate from its messages' confirms: published when every copy
/// was confirmed; refused when the broker said no to any copy (a refusal
/// says more about the row than any other error); failed otherwise.
/// Refusals are sorted as no strike: only [`Relay::publish`] of a row
/// alone can count one. Also says whether a confirm timed out.
fn sort(rows: Vec<i64>, owners: &[usize], results: &[Result<(), PublishError>]) -> (Round, bool) {
    let mut errors: Vec<Option<&PublishError>> = vec![None; rows.len()];
    let mut sorted = Round::default();
    let mut timed_out = false;
    for (result, &i) in results.iter().zip(owners) {
        if let Err(error) = result {
            timed_out |= matches!(error, PublishError::ConfirmTimeout(_));
            if errors[i].is_none_or(|e| !e.is_refusal()) {
                errors[i] = Some(error);
            }
        }
    }
    for (row, error) in rows.into_iter().zip(errors) {
        match error {
            None => sorted.published.push(row),
            Some(error) if error.is_refusal() => {
                sorted.refused.push((row, false, error.to_string()))
            }
            Some(error) => sorted.failed.push((row, error.to_string())),
        }
    }
    (sorted, timed_out)
}

/// After a confirm timeout: count it, say so, and close the channel so that
/// the consumer opens a new session; the unconfirmed rows go to the poll.
async fn gave_up(w: &Worker, publisher: &Publisher) {
    w.metrics.confirm_timed_out();
    tracing::warn!(
        timeout = ?w.relay.confirm_timeout,
        "the broker did not confirm in time; reopening the session, the events stay in the outbox"
    );
    publisher.abandon().await;
}

/// Marks confirmed fresh rows published, on a pooled connection of the
/// round's own task. A mark that fails leaves them claimed and unmarked: the
/// poll publishes them once the claim expires (at least once, same message
/// ids), as a failed mark always did.
async fn mark(w: &Worker, rows: &[i64]) {
    let marked = async {
        let mut conn = w.store.pool().acquire().await?;
        outbox::mark_published(&mut conn, rows).await
    }
    .await;
    match marked {
        Ok(()) => w.metrics.published(rows.len() as u64),
        Err(error) => tracing::warn!(%error, "outbox relay: could not mark fresh events"),
    }
}

/// What one round did, by outbox row.
#[derive(Default)]
struct Round {
    published: Vec<i64>,
    /// Not confirmed for a reason that says nothing about the row.
    failed: Vec<(i64, String)>,
    /// Refused by the broker: (row, whether it counts as a strike, error).
    refused: Vec<(i64, bool, String)>,
    /// Never sent: it cannot be published, ever.
    unpublishable: Vec<(i64, String)>,
}

impl Round {
    /// Nothing in it.
    fn is_empty(&self) -> bool {
        self.published.is_empty()
            && self.failed.is_empty()
            && self.refused.is_empty()
            && self.unpublishable.is_empty()
    }

    /// Every row confirmed: nothing failed, refused or unpublishable.
    fn all_published(&self) -> bool {
        self.failed.is_empty() && self.refused.is_empty() && self.unpublishable.is_empty()
    }

    /// Adds a publish's rows ([`sort`]).
    fn take(&mut self, sorted: Round) {
        self.published.extend(sorted.published);
        self.failed.extend(sorted.failed);
        self.refused.extend(sorted.refused);
        self.unpublishable.extend(sorted.unpublishable);
    }

    /// Keeps the events that can be published; the others are abandoned.
    fn screen(&mut self, events: Vec<Fresh>, max_size: usize) -> Vec<Fresh> {
        events
            .into_iter()
            .filter(|event| match unpublishable(event, max_size) {
                Some(reason) => {
                    self.unpublishable.push((event.row, reason));
                    false
                }
                None => true,
            })
            .collect()
    }

    fn not_sent(&mut self, events: &[Fresh], why: &str) {
        self.failed
            .extend(events.iter().map(|e| (e.row, why.to_string())));
    }
}

/// Why an event can never be published, if it cannot: its body is over the
/// limit, or a name does not fit the 255 bytes AMQP gives it. (The reason
/// names sizes only: the body is not repeated in logs.)
pub fn unpublishable(event: &Fresh, max_size: usize) -> Option<String> {
    for message in &event.messages {
        if message.body.len() > max_size {
            return Some(format!(
                "event body of {} bytes is over max_event_size ({max_size} bytes)",
                message.body.len()
            ));
        }
        if !fits_short_string(&message.exchange) || !fits_short_string(&message.routing_key) {
            return Some(format!(
                "exchange or routing key longer than 255 bytes ({} / {})",
                message.exchange.len(),
                message.routing_key.len()
            ));
        }
    }
    None
}

fn fresh_of(row: outbox::OutboxRow) -> Fresh {
    Fresh {
        row: row.id,
        messages: messages_of(
            &row.exchange,
            &row.routing_key,
            row.message_id,
            row.command_id.as_deref(),
            row.reply_to.as_deref(),
            row.reply_correlation_id.as_deref(),
            row.body.into_bytes(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(row: i64, body: usize) -> Fresh {
        Fresh {
            row,
            messages: messages_of(
                "events",
                "paymentz.capture.succeeded",
                uuid::Uuid::new_v4(),
                Some("c-1"),
                Some("reply.q"),
                None,
                vec![b'x'; body],
            ),
        }
    }

    #[tokio::test]
    async fn the_handover_holds_at_most_its_capacity_and_never_waits() {
        let metrics = Arc::new(Metrics::new());
        let (tx, mut rx) = handover(4, metrics.clone());
        assert!(tx.offer(vec![event(1, 10), event(2, 10), event(3, 10)]));
        assert!(!tx.offer(vec![event(4, 10), event(5, 10)]), "5 > 4");
        assert!(tx.offer(vec![event(6, 10)]), "exactly 4");
        assert!(!tx.offer(vec![event(7, 10)]));
        assert_eq!(tx.queued(), 4);
        assert_eq!(rx.recv().await.unwrap().len(), 3);
        assert_eq!(tx.queued(), 1, "taking a batch makes room");
        assert!(tx.offer(vec![event(8, 10), event(9, 10)]));
        assert_eq!(rx.try_recv().unwrap()[0].row, 6);
        assert_eq!(rx.try_recv().unwrap().len(), 2);
        assert_eq!(tx.queued(), 0);
        drop(rx);
        assert!(!tx.offer(vec![event(10, 10)]), "no relay: left to the poll");
        assert_eq!(tx.queued(), 0);
        assert!(
            metrics
                .render()
                .contains("backoffice_events_left_to_poll_total 4"),
            "{}",
            metrics.render()
        );
    }

    #[test]
    fn an_event_over_the_limit_or_with_an_overlong_name_cannot_be_published() {
        assert_eq!(unpublishable(&event(1, 1024), 1024), None);
        let reason = unpublishable(&event(1, 1025), 1024).unwrap();
        assert_eq!(
            reason,
            "event body of 1025 bytes is over max_event_size (1024 bytes)"
        );
        let mut long = event(2, 10);
        long.messages[1].routing_key = "q".repeat(256);
        assert!(unpublishable(&long, 1024)
            .unwrap()
            .starts_with("exchange or routing key longer than 255 bytes"));
    }
}
