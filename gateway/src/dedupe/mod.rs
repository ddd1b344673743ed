//! The fast layer of duplicate detection: a TTL cache of idempotency keys already stored.
//!
//! It is only a shortcut: the storage's unique (source, idempotency key) is the last
//! word. A key is remembered only after its webhook is durably stored, so a webhook whose
//! storage failed gets through on the sender's retry.

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

#[async_trait]
pub trait Dedupe: Send + Sync + 'static {
    /// The entry id stored under `key`, if the cache remembers it.
    async fn lookup(&self, key: &str) -> Result<Option<Uuid>, DedupeError>;

    /// Remembers `key` -> `entry_id` for `ttl` (keeps the first value if already set).
    async fn remember(&self, key: &str, entry_id: Uuid, ttl: Duration) -> Result<(), DedupeError>;

    /// A cheap reachability check for health.
    async fn ping(&self) -> Result<(), DedupeError>;

    /// Short name for health output (`memory`, `redis`).
    fn kind(&self) -> &'static str;
}

/// The cache key of a webhook: namespaced so sources never collide.
pub fn cache_key(source: &str, idempotency_key: &str) -> String {
    format!("hookgate:dedupe:{source}:{idempotency_key}")
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
