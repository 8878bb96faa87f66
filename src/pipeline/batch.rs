//! Group commit: many tasks' writes in one transaction, without waiting for company.
//!
//! Each caller of a [`Batcher`] submits its item and waits for the commit
//! that includes it. When fewer than the allowed number of writes are in
//! progress, the caller writes at once on its own task, with whatever else
//! has queued up (up to a maximum): at low load a batch is a single item,
//! written without handing it to another task and waking that task's thread,
//! and nobody waits longer than their own commit. Items submitted while every
//! write slot is busy queue up and share the next batch, written by a task
//! started for them when a write ends: under load, commits and statements are
//! shared, and the caller that happened to write first does not go on writing
//! for others.
//!
//! Several writes (a small number, `writers`) may be in progress at once,
//! each of its own items: with one, an item arriving while a batch was being
//! written waited for that whole write and then its own (at 300 commands/s
//! the completion writer's wait grew from 0.1 to 1.6 ms p50; docs/performance.md,
//! seventh session). The batches are disjoint, so the writes only contend on
//! what their statements share (payments released, commands woken), and each
//! writer locks in the order of ids or retries a deadlock.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::store::StoreError;

type Reply<R> = oneshot::Sender<Result<R, Arc<StoreError>>>;
type Written<R> = Pin<Box<dyn Future<Output = Result<Vec<R>, StoreError>> + Send>>;
type Write<T, R> = dyn Fn(Vec<T>) -> Written<R> + Send + Sync;

pub struct Batcher<T, R> {
    shared: Arc<Shared<T, R>>,
}

struct Shared<T, R> {
    max_batch: usize,
    /// The most writes in progress at once.
    writers: usize,
    write: Box<Write<T, R>>,
    state: Mutex<State<T, R>>,
}

struct State<T, R> {
    queue: VecDeque<(T, Reply<R>)>,
    /// Writes in progress (callers' or tasks'). At `writers`, new items wait
    /// for the next batch; below it, the queue is empty (a write that ends
    /// with items queued passes its slot to a task that writes them).
    writing: usize,
}

impl<T, R> Clone for Batcher<T, R> {
    fn clone(&self) -> Self {
        Batcher {
            shared: self.shared.clone(),
        }
    }
}

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// Makes the batcher: at most `max_batch` items per write, at most
    /// `writers` (at least one) writes at once. `write` must return one result
    /// per item, in order, and either commit all of its batch or none of it;
    /// it may run concurrently with itself, on other items.
    pub fn start<F, Fut>(max_batch: usize, writers: usize, write: F) -> Batcher<T, R>
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<R>, StoreError>> + Send + 'static,
    {
        let write: Box<Write<T, R>> = Box::new(move |items| Box::pin(write(items)));
        Batcher {
            shared: Arc::new(Shared {
                max_batch,
                writers: writers.max(1),
                write,
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    writing: 0,
                }),
            }),
        }
    }

    /// Submits one item and waits for the commit that includes it.
    pub async fn submit(&self, item: T) -> Result<R, StoreError> {
        let (reply, answer) = oneshot::channel();
        let batch = {
            let mut state = self.shared.state.lock().expect("batch state");
            state.queue.push_back((item, reply));
            (state.writing < self.shared.writers).then(|| {
                state.writing += 1;
                // Taken under the same lock: an item submitted meanwhile
                // takes the next free slot (or queues) instead of joining
                // this batch and waiting on a write that started without it.
                self.shared.take_locked(&mut state)
            })
        };
        if let Some(batch) = batch {
            // Ends the write in progress even if this future is dropped
            // mid-write: whoever queued meanwhile gets a writer task.
            let turn = Turn(Some(self.shared.clone()));
            self.shared.write_batch(batch).await;
            drop(turn);
        }
        match answer.await {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(error)) => Err(StoreError::Batch(error)),
            Err(_) => Err(StoreError::WriterStopped),
        }
    }
}

impl<T: Send + 'static, R: Send + 'static> Shared<T, R> {
    /// The next batch: what has queued up, at most `max_batch` items.
    fn take(&self) -> Vec<(T, Reply<R>)> {
        self.take_locked(&mut self.state.lock().expect("batch state"))
    }

    fn take_locked(&self, state: &mut State<T, R>) -> Vec<(T, Reply<R>)> {
        let n = state.queue.len().min(self.max_batch);
        state.queue.drain(..n).collect()
    }

    /// Writes one batch and answers each of its callers.
    async fn write_batch(&self, batch: Vec<(T, Reply<R>)>) {
        if batch.is_empty() {
            return;
        }
        let (items, replies): (Vec<T>, Vec<Reply<R>>) = batch.into_iter().unzip();
        match (self.write)(items).await {
            Ok(results) => {
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(Ok(result));
                }
            }
            Err(error) => {
                let error = Arc::new(error);
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }

    /// Ends a write: its slot passes to a writer task when items queued up
    /// meanwhile, and is freed otherwise.
    fn end_turn(self: Arc<Self>) {
        let mut state = self.state.lock().expect("batch state");
        if state.queue.is_empty() {
            state.writing -= 1;
            return;
        }
        drop(state);
        // Outside a runtime (it is shutting down) nobody is left to answer.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let batch = self.take();
                self.write_batch(batch).await;
                self.end_turn();
            });
        }
    }
}

/// A write slot, held by the caller or task writing.
struct Turn<T: Send + 'static, R: Send + 'static>(Option<Arc<Shared<T, R>>>);

impl<T: Send + 'static, R: Send + 'static> Drop for Turn<T, R> {
    fn drop(&mut self) {
        if let Some(shared) = self.0.take() {
            shared.end_turn();
        }
    }
}
