//! The fast layer of duplicate detection: a TTL cache of idempotency keys already stored.
//!
//! It is only a shortcut: the storage's unique (source, idempotency key) is the last
//! word. A key is remembered only after its webhook is durably stored, so a webhook whose
//! storage failed gets through on the sender's retry.
//!
//! Keys are looked up and remembered a batch at a time (the webhooks of one storage
//! commit): one round trip to Redis for many webhooks instead of two for each.

use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

pub mod memory;
pub mod redis;

#[derive(Debug, thiserror::Error)]
pub enum DedupeError {
    #[error("dedupe cache unavailable: {0}")]
    Unavailable(String),
    #[error("invalid dedupe url: {0}")]
    BadUrl(String),
}

/// A key to remember, with the entry it points to and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remembered<'a> {
    pub key: &'a str,
    pub entry_id: Uuid,
    pub ttl: Duration,
}

#[async_trait]
pub trait Dedupe: Send + Sync + 'static {
    /// For each key, in order, the entry id the cache remembers under it, if any.
    async fn lookup_many(&self, keys: &[&str]) -> Result<Vec<Option<Uuid>>, DedupeError>;

    /// Remembers each key -> entry id for its TTL (keeping the first value of a key
    /// already set).
    async fn remember_many(&self, items: &[Remembered<'_>]) -> Result<(), DedupeError>;

    /// The entry id stored under `key`, if the cache remembers it.
    async fn lookup(&self, key: &str) -> Result<Option<Uuid>, DedupeError> {
        Ok(self.lookup_many(&[key]).await?.into_iter().next().flatten())
    }

    /// Remembers `key` -> `entry_id` for `ttl` (keeps the first value if already set).
    async fn remember(&self, key: &str, entry_id: Uuid, ttl: Duration) -> Result<(), DedupeError> {
        self.remember_many(&[Remembered { key, entry_id, ttl }])
            .await
    }

    /// A cheap reachability check for health.
    async fn ping(&self) -> Result<(), DedupeError>;

    /// Short name for health output (`memory`, `redis`).
    fn kind(&self) -> &'static str;
}

/// The cache key of a webhook: within the deployment's `namespace` (see
/// `Config::dedupe_namespace`), so deployments sharing a Redis never collide, and within
/// its source, so sources never do.
pub fn cache_key(namespace: &str, source: &str, idempotency_key: &str) -> String {
    format!("hookgate:{namespace}:dedupe:{source}:{idempotency_key}")
}

/// Opens the backend the URL names: `memory://` or `redis://host:port[/db]`.
pub async fn connect(url: &str) -> Result<std::sync::Arc<dyn Dedupe>, DedupeError> {
    if url.starts_with("memory:") {
        Ok(std::sync::Arc::new(memory::MemoryDedupe::new()))
    } else if url.starts_with("redis://") || url.starts_with("rediss://") {
        Ok(std::sync::Arc::new(redis::RedisDedupe::connect(url).await?))
    } else {
        Err(DedupeError::BadUrl(
            "expected memory:// or redis://...".into(),
        ))
    }
}
