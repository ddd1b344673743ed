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
//! succeeded. Telling the cache is left to a task of its own, so a writer answers its
//! batch and takes the next one without waiting for the cache's round trip: the cache
//! is a shortcut, and a duplicate that arrives before its key is cached is still caught
//! by the storage's unique key (measured: +3% production throughput, BENCHMARKS.md).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::dedupe::{Dedupe, Remembered};
use crate::metrics::Metrics;
use crate::store::{InsertOutcome, NewWebhook, Store, StoreError};

type Reply = oneshot::Sender<Result<InsertOutcome, StoreError>>;

/// A webhook waiting for its batch.
struct Pending {
    /// When it joined the queue, for the queue-wait metric.
    queued: Instant,
    webhook: NewWebhook,
    /// Its key in the dedupe cache, and how long the cache keeps it.
    cache_key: String,
    ttl: Duration,
    reply: Reply,
}

/// A key to tell the dedupe cache, once its webhook is stored.
struct ToRemember {
    key: String,
    entry_id: uuid::Uuid,
    ttl: Duration,
}

/// Batches of stored keys waiting for the cache. When the cache is slower than the
/// writers, further keys are dropped rather than held: the storage still decides.
const REMEMBER_QUEUE_BATCHES: usize = 256;

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
        let (remember, stored_keys) = mpsc::channel(REMEMBER_QUEUE_BATCHES);
        tokio::spawn(remember_stored(
            dedupe.clone(),
            metrics.clone(),
            stored_keys,
        ));
        for _ in 0..writers.max(1) {
            let writer = Writer {
                store: store.clone(),
                dedupe: dedupe.clone(),
                metrics: metrics.clone(),
                remember: remember.clone(),
            };
            tokio::spawn(writer.run(receiver.clone(), max_batch));
        }
        Self { queue }
    }

    /// Stores one webhook unless the dedupe cache already knows `cache_key` (then the
    /// outcome is the duplicate it points to); returns once its batch has committed (or
    /// failed). The key is handed to the cache for `ttl` after the commit, and may reach it
    /// a moment after this returns.
    pub async fn insert(
        &self,
        webhook: NewWebhook,
        cache_key: String,
        ttl: Duration,
    ) -> Result<InsertOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending {
                queued: Instant::now(),
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
    /// To [`remember_stored`].
    remember: mpsc::Sender<Vec<ToRemember>>,
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
        let taken = Instant::now();
        for item in &items {
            self.metrics
                .storage_queue_wait
                .observe(taken.duration_since(item.queued).as_secs_f64());
        }
        let cached = self.cached(&items).await;
        self.metrics
            .dedupe_lookup_duration
            .observe(taken.elapsed().as_secs_f64());
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
                self.metrics
                    .storage_write_failed_at_ms
                    .store(0, std::sync::atomic::Ordering::Release);
                let mut stored = Vec::with_capacity(waiting.len());
                for ((webhook, waiting), outcome) in batch.iter().zip(waiting).zip(outcomes) {
                    stored.push(ToRemember {
                        key: waiting.cache_key,
                        // A duplicate's key points to the entry that already held it.
                        entry_id: match outcome {
                            InsertOutcome::Inserted => webhook.entry.id,
                            InsertOutcome::Duplicate { existing_id } => existing_id,
                        },
                        ttl: waiting.ttl,
                    });
                    let _ = waiting.reply.send(Ok(outcome));
                }
                if self.remember.try_send(stored).is_err() {
                    self.metrics.dedupe_errors.inc();
                    tracing::debug!("dedupe cache behind; a batch of stored keys left uncached");
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
                self.metrics.storage_write_failed_at_ms.store(
                    chrono::Utc::now().timestamp_millis().max(1),
                    std::sync::atomic::Ordering::Release,
                );
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
}

/// Tells the dedupe cache the keys of stored webhooks, every batch that is waiting in one
/// call; ends when the writers are gone.
async fn remember_stored(
    dedupe: Arc<dyn Dedupe>,
    metrics: Arc<Metrics>,
    mut stored_keys: mpsc::Receiver<Vec<ToRemember>>,
) {
    let mut batches = Vec::new();
    while stored_keys
        .recv_many(&mut batches, REMEMBER_QUEUE_BATCHES)
        .await
        > 0
    {
        let items: Vec<Remembered<'_>> = batches
            .iter()
            .flatten()
            .map(|stored| Remembered {
                key: &stored.key,
                entry_id: stored.entry_id,
                ttl: stored.ttl,
            })
            .collect();
        if let Err(error) = dedupe.remember_many(&items).await {
            metrics.dedupe_errors.inc();
            tracing::debug!(%error, "dedupe remember failed");
        }
        drop(items);
        batches.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::webhook;
    use chrono::Utc;

    async fn writer_over(dedupe: Arc<dyn Dedupe>) -> (BatchWriter, Arc<dyn Store>) {
        let store = crate::store::connect("sqlite::memory:", "unused")
            .await
            .expect("in-memory store");
        store.migrate().await.expect("migrations");
        let writer = BatchWriter::start(store.clone(), dedupe, Arc::new(Metrics::new()), 16, 2);
        (writer, store)
    }

    /// The cache learns a stored key after the answer: wait for it, boundedly.
    async fn cached(dedupe: &dyn Dedupe, key: &str) -> Option<uuid::Uuid> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let found = dedupe.lookup(key).await.expect("cache lookup");
            if found.is_some() || Instant::now() > deadline {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn stored_keys_reach_the_cache(dedupe: Arc<dyn Dedupe>) {
        let (writer, _store) = writer_over(dedupe.clone()).await;
        let idempotency_key = format!("batch-test-{}", uuid::Uuid::now_v7());
        let cache_key = crate::dedupe::cache_key("batch-tests", "shopify", &idempotency_key);
        let ttl = Duration::from_secs(60);
        let first = webhook("shopify", &idempotency_key, Utc::now(), 1);
        let first_id = first.entry.id;
        let outcome = writer.insert(first, cache_key.clone(), ttl).await;
        assert!(
            matches!(outcome, Ok(InsertOutcome::Inserted)),
            "{outcome:?}"
        );
        assert_eq!(cached(dedupe.as_ref(), &cache_key).await, Some(first_id));

        // The cache knows the key now: the twin is answered as the first's duplicate.
        let twin = webhook("shopify", &idempotency_key, Utc::now(), 1);
        let outcome = writer.insert(twin, cache_key.clone(), ttl).await;
        assert!(
            matches!(outcome, Ok(InsertOutcome::Duplicate { existing_id }) if existing_id == first_id),
            "{outcome:?}"
        );
    }

    async fn a_duplicate_missed_by_the_cache_is_caught_and_cached(dedupe: Arc<dyn Dedupe>) {
        let (writer, store) = writer_over(dedupe.clone()).await;
        let idempotency_key = format!("batch-test-{}", uuid::Uuid::now_v7());
        let cache_key = crate::dedupe::cache_key("batch-tests", "shopify", &idempotency_key);
        // Stored behind the cache's back: only the storage's unique key knows it.
        let first = webhook("shopify", &idempotency_key, Utc::now(), 1);
        let first_id = first.entry.id;
        store.insert_batch(&[first]).await.expect("direct insert");
        let twin = webhook("shopify", &idempotency_key, Utc::now(), 1);
        let outcome = writer
            .insert(twin, cache_key.clone(), Duration::from_secs(60))
            .await;
        assert!(
            matches!(outcome, Ok(InsertOutcome::Duplicate { existing_id }) if existing_id == first_id),
            "{outcome:?}"
        );
        assert_eq!(
            cached(dedupe.as_ref(), &cache_key).await,
            Some(first_id),
            "the cache learns the entry that holds the key"
        );
    }

    async fn redis() -> Arc<dyn Dedupe> {
        let url = hookgate_test_services::redis_url();
        let dedupe = crate::dedupe::connect(&url).await.expect("redis url");
        dedupe
            .ping()
            .await
            .unwrap_or_else(|e| panic!("the test run's Redis at {url} does not answer: {e}"));
        dedupe
    }

    #[tokio::test]
    async fn stored_keys_reach_the_memory_cache() {
        stored_keys_reach_the_cache(Arc::new(crate::dedupe::memory::MemoryDedupe::new())).await;
    }

    #[tokio::test]
    async fn stored_keys_reach_redis() {
        stored_keys_reach_the_cache(redis().await).await;
    }

    #[tokio::test]
    async fn a_duplicate_missed_by_the_memory_cache_is_caught_and_cached() {
        a_duplicate_missed_by_the_cache_is_caught_and_cached(Arc::new(
            crate::dedupe::memory::MemoryDedupe::new(),
        ))
        .await;
    }

    #[tokio::test]
    async fn a_duplicate_missed_by_redis_is_caught_and_cached() {
        a_duplicate_missed_by_the_cache_is_caught_and_cached(redis().await).await;
    }
}
