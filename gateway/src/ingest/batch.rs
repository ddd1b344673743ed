//! Group commit: webhooks arriving concurrently are written in one storage transaction,
//! and each caller is answered only once that transaction has committed.
//!
//! A per-request transaction costs a commit (an fsync) and several round trips per
//! webhook; batching turns that into one commit for every webhook that arrived while the
//! previous commit was in flight, so latency stays one commit while throughput scales.
//!
//! The dedupe cache is asked and told a batch at a time too: before the commit, which
//! webhooks it already knows (those are answered as duplicates and not written); after
//! it, the keys of those now stored. A webhook's key is remembered only once its commit
//! succeeded, and before its caller is answered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::dedupe::{Dedupe, Remembered};
use crate::metrics::Metrics;
use crate::store::{InsertOutcome, NewWebhook, Store, StoreError};

type Reply = oneshot::Sender<Result<InsertOutcome, StoreError>>;

/// A webhook waiting for its batch.
struct Pending {
    webhook: NewWebhook,
    /// Its key in the dedupe cache, and how long the cache keeps it.
    cache_key: String,
    ttl: Duration,
    reply: Reply,
}

/// A webhook of the batch being written, once its record went into the batch.
struct Waiting {
    cache_key: String,
    ttl: Duration,
    reply: Reply,
}

/// The sending side; cheap to clone.
#[derive(Clone)]
pub struct BatchWriter {
    queue: mpsc::Sender<Pending>,
}

impl BatchWriter {
    /// Starts `writers` tasks that drain the queue into batches of at most `max_batch`.
    /// More than one writer overlaps one batch's commit with the next one's round trips.
    pub fn start(
        store: Arc<dyn Store>,
        dedupe: Arc<dyn Dedupe>,
        metrics: Arc<Metrics>,
        max_batch: usize,
        writers: usize,
    ) -> Self {
        let (queue, receiver) = mpsc::channel::<Pending>(max_batch * writers.max(1) * 4);
        let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
        for _ in 0..writers.max(1) {
            let writer = Writer {
                store: store.clone(),
                dedupe: dedupe.clone(),
                metrics: metrics.clone(),
            };
            tokio::spawn(writer.run(receiver.clone(), max_batch));
        }
        Self { queue }
    }

    /// Stores one webhook unless the dedupe cache already knows `cache_key` (then the
    /// outcome is the duplicate it points to); returns once its batch has committed (or
    /// failed) and its key is remembered for `ttl`.
    pub async fn insert(
        &self,
        webhook: NewWebhook,
        cache_key: String,
        ttl: Duration,
    ) -> Result<InsertOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending {
                webhook,
                cache_key,
                ttl,
                reply,
            })
            .await
            .map_err(|_| StoreError::Unavailable("storage writer stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("storage writer stopped".into()))?
    }
}

struct Writer {
    store: Arc<dyn Store>,
    dedupe: Arc<dyn Dedupe>,
    metrics: Arc<Metrics>,
}

impl Writer {
    async fn run(
        self,
        receiver: Arc<tokio::sync::Mutex<mpsc::Receiver<Pending>>>,
        max_batch: usize,
    ) {
        let mut items = Vec::with_capacity(max_batch);
        loop {
            {
                // Only one writer collects at a time, so batches are as full as the queue
                // allows.
                let mut receiver = receiver.lock().await;
                if receiver.recv_many(&mut items, max_batch).await == 0 {
                    return;
                }
            }
            self.write(std::mem::take(&mut items)).await;
        }
    }

    async fn write(&self, items: Vec<Pending>) {
        let cached = self.cached(&items).await;
        let mut batch = Vec::with_capacity(items.len());
        let mut waiting = Vec::with_capacity(items.len());
        for (item, cached) in items.into_iter().zip(cached) {
            match cached {
                Some(existing_id) => {
                    let _ = item
                        .reply
                        .send(Ok(InsertOutcome::Duplicate { existing_id }));
                }
                None => {
                    batch.push(item.webhook);
                    waiting.push(Waiting {
                        cache_key: item.cache_key,
                        ttl: item.ttl,
                        reply: item.reply,
                    });
                }
            }
        }
        if batch.is_empty() {
            return;
        }
        let started = Instant::now();
        let result = self.store.insert_batch(&batch).await;
        self.metrics
            .storage_commit_duration
            .observe(started.elapsed().as_secs_f64());
        self.metrics.storage_batch_size.observe(batch.len() as f64);
        match result {
            Ok(outcomes) if outcomes.len() == waiting.len() => {
                self.remember(&batch, &waiting, &outcomes).await;
                for (waiting, outcome) in waiting.into_iter().zip(outcomes) {
                    let _ = waiting.reply.send(Ok(outcome));
                }
            }
            Ok(outcomes) => {
                let message = format!(
                    "storage returned {} outcomes for {} webhooks",
                    outcomes.len(),
                    waiting.len()
                );
                tracing::error!(%message, "storage batch answered wrongly");
                for waiting in waiting {
                    let _ = waiting
                        .reply
                        .send(Err(StoreError::Internal(message.clone())));
                }
            }
            Err(error) => {
                let message = error.to_string();
                let unavailable = matches!(error, StoreError::Unavailable(_));
                tracing::warn!(error = %message, batch = batch.len(), "storage batch failed");
                for waiting in waiting {
                    let _ = waiting.reply.send(Err(if unavailable {
                        StoreError::Unavailable(message.clone())
                    } else {
                        StoreError::Internal(message.clone())
                    }));
                }
            }
        }
    }

    /// What the dedupe cache knows of each item; nothing when it cannot be asked (the
    /// storage's unique key still decides).
    async fn cached(&self, items: &[Pending]) -> Vec<Option<uuid::Uuid>> {
        let keys: Vec<&str> = items.iter().map(|item| item.cache_key.as_str()).collect();
        match self.dedupe.lookup_many(&keys).await {
            Ok(found) if found.len() == items.len() => found,
            Ok(found) => {
                self.metrics.dedupe_errors.inc();
                tracing::debug!(
                    keys = items.len(),
                    answers = found.len(),
                    "dedupe lookup answered short"
                );
                vec![None; items.len()]
            }
            Err(error) => {
                self.metrics.dedupe_errors.inc();
                tracing::debug!(%error, "dedupe lookup failed");
                vec![None; items.len()]
            }
        }
    }

    /// Remembers the committed batch's keys: each new entry's own id, or the id of the
    /// entry that already held its key.
    async fn remember(
        &self,
        batch: &[NewWebhook],
        waiting: &[Waiting],
        outcomes: &[InsertOutcome],
    ) {
        let items: Vec<Remembered<'_>> = batch
            .iter()
            .zip(waiting)
            .zip(outcomes)
            .map(|((webhook, waiting), outcome)| Remembered {
                key: &waiting.cache_key,
                entry_id: match outcome {
                    InsertOutcome::Inserted => webhook.entry.id,
                    InsertOutcome::Duplicate { existing_id } => *existing_id,
                },
                ttl: waiting.ttl,
            })
            .collect();
        if let Err(error) = self.dedupe.remember_many(&items).await {
            self.metrics.dedupe_errors.inc();
            tracing::debug!(%error, "dedupe remember failed");
        }
    }
}
