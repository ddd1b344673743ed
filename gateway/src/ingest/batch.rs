//! Group commit: webhooks arriving concurrently are written in one storage transaction,
//! and each caller is answered only once that transaction has committed.
//!
//! A per-request transaction costs a commit (an fsync) and several round trips per
//! webhook; batching turns that into one commit for every webhook that arrived while the
//! previous commit was in flight, so latency stays one commit while throughput scales.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;
use crate::store::{InsertOutcome, NewWebhook, Store, StoreError};

type Reply = oneshot::Sender<Result<InsertOutcome, StoreError>>;

/// The sending side; cheap to clone.
#[derive(Clone)]
pub struct BatchWriter {
    queue: mpsc::Sender<(NewWebhook, Reply)>,
}

impl BatchWriter {
    /// Starts `writers` tasks that drain the queue into batches of at most `max_batch`.
    /// More than one writer overlaps one batch's commit with the next one's round trips.
    pub fn start(
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        max_batch: usize,
        writers: usize,
    ) -> Self {
        let (queue, receiver) =
            mpsc::channel::<(NewWebhook, Reply)>(max_batch * writers.max(1) * 4);
        let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
        for _ in 0..writers.max(1) {
            tokio::spawn(write_loop(
                store.clone(),
                metrics.clone(),
                receiver.clone(),
                max_batch,
            ));
        }
        Self { queue }
    }

    /// Stores one webhook; returns once its batch has committed (or failed).
    pub async fn insert(&self, webhook: NewWebhook) -> Result<InsertOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((webhook, reply))
            .await
            .map_err(|_| StoreError::Unavailable("storage writer stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("storage writer stopped".into()))?
    }
}

async fn write_loop(
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    receiver: Arc<tokio::sync::Mutex<mpsc::Receiver<(NewWebhook, Reply)>>>,
    max_batch: usize,
) {
    let mut items = Vec::with_capacity(max_batch);
    loop {
        {
            // Only one writer collects at a time, so batches are as full as the queue allows.
            let mut receiver = receiver.lock().await;
            if receiver.recv_many(&mut items, max_batch).await == 0 {
                return;
            }
        }
        let (batch, replies): (Vec<NewWebhook>, Vec<Reply>) = items.drain(..).unzip();
        let started = Instant::now();
        let result = store.insert_batch(&batch).await;
        metrics
            .storage_commit_duration
            .observe(started.elapsed().as_secs_f64());
        metrics.storage_batch_size.observe(batch.len() as f64);
        match result {
            Ok(outcomes) if outcomes.len() == replies.len() => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Ok(outcomes) => {
                let message = format!(
                    "storage returned {} outcomes for {} webhooks",
                    outcomes.len(),
                    replies.len()
                );
                tracing::error!(%message, "storage batch answered wrongly");
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Internal(message.clone())));
                }
            }
            Err(error) => {
                let message = error.to_string();
                let unavailable = matches!(error, StoreError::Unavailable(_));
                tracing::warn!(error = %message, batch = batch.len(), "storage batch failed");
                for reply in replies {
                    let _ = reply.send(Err(if unavailable {
                        StoreError::Unavailable(message.clone())
                    } else {
                        StoreError::Internal(message.clone())
                    }));
                }
            }
        }
    }
}
