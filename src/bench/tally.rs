//! The run's result events: the exclusive queue that receives them, what
//! they said per command ([`Tally`]), and the loop that reads them while the
//! publisher runs.

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lapin::{Connection, Consumer};

use super::child::WorkerChild;
use super::workload::Workload;
use crate::broker::{consume_all, Topology};
use crate::events::ResultEvent;

/// An exclusive queue bound to every routing key of the result exchange.
pub(super) async fn bind_events(
    amqp: &Connection,
    topology: &Topology,
) -> anyhow::Result<Consumer> {
    let channel = amqp.create_channel().await?;
    Ok(consume_all(&channel, &topology.result_exchange, "bench-events").await?)
}

/// What the events said, per command.
pub(super) struct Tally {
    pub(super) index: HashMap<String, usize>,
    /// When each command's terminal event arrived.
    pub(super) arrival: Vec<Option<Instant>>,
    pub(super) completed: usize,
    pub(super) replays: usize,
    pub(super) reconciled: usize,
    pub(super) repeated: usize,
    pub(super) foreign: usize,
    pub(super) unreadable: usize,
    pub(super) outcomes: BTreeMap<String, usize>,
}

impl Tally {
    pub(super) fn new(workload: &Workload) -> Tally {
        Tally {
            index: workload
                .commands
                .iter()
                .enumerate()
                .map(|(i, c)| (c.id.clone(), i))
                .collect(),
            arrival: vec![None; workload.commands.len()],
            completed: 0,
            replays: 0,
            reconciled: 0,
            repeated: 0,
            foreign: 0,
            unreadable: 0,
            outcomes: BTreeMap::new(),
        }
    }

    pub(super) fn record(&mut self, body: &[u8], at: Instant) {
        let Ok(event) = serde_json::from_slice::<ResultEvent>(body) else {
            self.unreadable += 1;
            return;
        };
        let Some(&i) = self.index.get(&event.command_id) else {
            self.foreign += 1;
            return;
        };
        if event.replayed {
            self.replays += 1;
        } else if event.reconciled {
            self.reconciled += 1;
        } else if self.arrival[i].is_some() {
            self.repeated += 1;
        } else {
            self.arrival[i] = Some(at);
            self.completed += 1;
            *self
                .outcomes
                .entry(event.outcome.as_str().to_string())
                .or_insert(0) += 1;
        }
    }
}

pub(super) type Publishing = tokio::task::JoinHandle<anyhow::Result<Vec<Option<Instant>>>>;

/// Reads events until every command has its terminal event, while the
/// publisher runs; fails on a publishing error, a dead worker or the timeout.
pub(super) async fn collect(
    events: &mut Consumer,
    tally: &mut Tally,
    mut publishing: Publishing,
    worker: &mut WorkerChild,
    timeout: Duration,
    progress: &ProgressBar,
) -> anyhow::Result<Vec<Option<Instant>>> {
    let total = tally.arrival.len();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut published = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while tally.completed < total || published.is_none() {
        tokio::select! {
            delivery = events.next(), if tally.completed < total => match delivery {
                Some(Ok(delivery)) => {
                    tally.record(&delivery.data, Instant::now());
                    progress.set_position(tally.completed as u64);
                }
                Some(Err(error)) => return Err(error).context("reading result events"),
                None => bail!("the result event consumer was cancelled"),
            },
            done = &mut publishing, if published.is_none() => {
                published = Some(done.context("the publisher panicked")??);
            }
            _ = tick.tick() => {
                if let Some(status) = worker.exited() {
                    bail!(
                        "the worker exited ({status}) with {} of {total} commands complete",
                        tally.completed
                    );
                }
                progress.set_message(format!("{} replays", tally.replays));
            }
            _ = tokio::time::sleep_until(deadline) => {
                publishing.abort();
                bail!(
                    "timed out after {timeout:?}: {} of {total} commands have their terminal event \
                     (raise --timeout, or look at the worker's log)",
                    tally.completed
                );
            }
        }
    }
    Ok(published.expect("loop ends once published"))
}

pub(super) fn progress_bar(total: u64) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(total), target);
    if let Ok(style) = ProgressStyle::with_template(
        "{elapsed_precise} [{bar:40}] {pos}/{len} commands done, {per_sec}, {msg}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tally_separates_terminal_events_from_replays() {
        let workload = Workload::generate(3, "t", 1);
        let mut tally = Tally::new(&workload);
        let event = |id: &str, replayed: bool, reconciled: bool, outcome: &str| {
            serde_json::to_vec(&serde_json::json!({
                "command_id": id, "gateway": "paymentz", "account": "default",
                "operation": "capture", "payment_id": "1", "outcome": outcome,
                "amount": null, "currency": null, "gateway_status": null,
                "gateway_code": null, "description": null, "reference": null,
                "attempts": 1, "replayed": replayed, "reconciled": reconciled,
                "response": {}, "metadata": null, "occurred_at": "2026-01-01T00:00:00.000Z"
            }))
            .unwrap()
        };
        let ids: Vec<String> = workload.commands.iter().map(|c| c.id.clone()).collect();
        let now = Instant::now();
        tally.record(&event(&ids[0], false, false, "succeeded"), now);
        tally.record(&event(&ids[0], true, false, "succeeded"), now);
        tally.record(&event(&ids[0], false, false, "succeeded"), now);
        tally.record(&event(&ids[1], false, false, "unknown"), now);
        tally.record(&event(&ids[1], false, true, "succeeded"), now);
        tally.record(&event("someone-else", false, false, "succeeded"), now);
        tally.record(b"not json", now);
        assert_eq!(tally.completed, 2);
        assert_eq!(tally.replays, 1);
        assert_eq!(tally.repeated, 1);
        assert_eq!(tally.reconciled, 1);
        assert_eq!(tally.foreign, 1);
        assert_eq!(tally.unreadable, 1);
        assert_eq!(tally.outcomes["succeeded"], 1);
        assert_eq!(tally.outcomes["unknown"], 1);
        assert!(tally.arrival[2].is_none());
    }
}
