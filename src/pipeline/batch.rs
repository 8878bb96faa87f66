//! Group commit: many tasks' writes in one transaction, without waiting for company.
//!
//! A [`Batcher`] owns one writer task. Each caller submits its item and waits
//! for the commit that includes it; the writer takes whatever has queued up
//! while the previous commit ran (up to a maximum) and writes it in one go. At
//! low load a batch is a single item, so nobody waits longer than their own
//! commit; under load, commits and statements are shared.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::store::StoreError;

type Reply<R> = oneshot::Sender<Result<R, Arc<StoreError>>>;

pub struct Batcher<T, R> {
    queue: mpsc::Sender<(T, Reply<R>)>,
}

impl<T, R> Clone for Batcher<T, R> {
    fn clone(&self) -> Self {
        Batcher {
            queue: self.queue.clone(),
        }
    }
}

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// Starts the writer. `write` must return one result per item, in order,
    /// and either commit all of its batch or none of it.
    pub fn start<F, Fut>(max_batch: usize, write: F) -> Batcher<T, R>
    where
        F: Fn(Vec<T>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<R>, StoreError>> + Send,
    {
        let (queue, mut inbox) = mpsc::channel::<(T, Reply<R>)>(4 * max_batch);
        tokio::spawn(async move {
            while let Some(first) = inbox.recv().await {
                let mut batch = vec![first];
                while batch.len() < max_batch {
                    match inbox.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                let (items, replies): (Vec<T>, Vec<Reply<R>>) = batch.into_iter().unzip();
                match write(items).await {
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
        });
        Batcher { queue }
    }

    /// Submits one item and waits for the commit that includes it.
    pub async fn submit(&self, item: T) -> Result<R, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((item, reply))
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        match answer.await {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(error)) => Err(StoreError::Batch(error)),
            Err(_) => Err(StoreError::WriterStopped),
        }
    }
}
