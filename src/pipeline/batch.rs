//! Group commit: many tasks' writes in one transaction, without waiting for company.
//!
//! Each caller of a [`Batcher`] submits its item and waits for the commit
//! that includes it. When no write is in progress, the caller writes at once
//! on its own task, with whatever else has queued up (up to a maximum): at
//! low load a batch is a single item, written without handing it to another
//! task and waking that task's thread, and nobody waits longer than their
//! own commit. Items submitted while a write is in progress queue up and
//! share the next one, written by a task started for them when the current
//! write ends: under load, commits and statements are shared, and the
//! caller that happened to write first does not go on writing for others.

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
    write: Box<Write<T, R>>,
    state: Mutex<State<T, R>>,
}

struct State<T, R> {
    queue: VecDeque<(T, Reply<R>)>,
    /// A write is in progress (a caller's, or a task's): new items wait for
    /// the next batch.
    writing: bool,
}

impl<T, R> Clone for Batcher<T, R> {
    fn clone(&self) -> Self {
        Batcher {
            shared: self.shared.clone(),
        }
    }
}

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// Makes the batcher. `write` must return one result per item, in order,
    /// and either commit all of its batch or none of it.
    pub fn start<F, Fut>(max_batch: usize, write: F) -> Batcher<T, R>
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<R>, StoreError>> + Send + 'static,
    {
        let write: Box<Write<T, R>> = Box::new(move |items| Box::pin(write(items)));
        Batcher {
            shared: Arc::new(Shared {
                max_batch,
                write,
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    writing: false,
                }),
            }),
        }
    }

    /// Submits one item and waits for the commit that includes it.
    pub async fn submit(&self, item: T) -> Result<R, StoreError> {
        let (reply, answer) = oneshot::channel();
        let lead = {
            let mut state = self.shared.state.lock().expect("batch state");
            state.queue.push_back((item, reply));
            !std::mem::replace(&mut state.writing, true)
        };
        if lead {
            // Ends the write in progress even if this future is dropped
            // mid-write: whoever queued meanwhile gets a writer task.
            let turn = Turn(Some(self.shared.clone()));
            let batch = self.shared.take();
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
        let mut state = self.state.lock().expect("batch state");
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

    /// Ends a write: the turn passes to a writer task when items queued up
    /// meanwhile, and is free otherwise.
    fn end_turn(self: Arc<Self>) {
        let mut state = self.state.lock().expect("batch state");
        if state.queue.is_empty() {
            state.writing = false;
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

/// The turn to write, held by the caller or task writing.
struct Turn<T: Send + 'static, R: Send + 'static>(Option<Arc<Shared<T, R>>>);

impl<T: Send + 'static, R: Send + 'static> Drop for Turn<T, R> {
    fn drop(&mut self) {
        if let Some(shared) = self.0.take() {
            shared.end_turn();
        }
    }
}
