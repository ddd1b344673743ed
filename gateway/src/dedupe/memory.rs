//! In-process dedupe cache for the embedded mode: a sharded TTL map.
//!
//! Expired entries are ignored on lookup and dropped in bulk when a shard grows past a
//! threshold that doubles with the live entries, so memory stays proportional to the keys
//! still live while each insert costs amortised O(1).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use uuid::Uuid;

use super::{Dedupe, DedupeError, Remembered};

/// Shards keep concurrent requests from queuing on a single lock.
const SHARDS: usize = 16;
/// A shard never purges below this size: scanning tiny maps often would cost more than
/// the memory it frees.
const MIN_PURGE_LEN: usize = 1024;

struct Entry {
    id: Uuid,
    expires_at: Instant,
}

struct Shard {
    map: HashMap<String, Entry>,
    /// Purge when the map reaches this length.
    purge_at: usize,
}

impl Shard {
    fn new() -> Self {
        Self {
            map: HashMap::new(),
            purge_at: MIN_PURGE_LEN,
        }
    }

    fn purge_expired(&mut self, now: Instant) {
        self.map.retain(|_, e| e.expires_at > now);
        // Doubling keeps the purge cost amortised when most entries are live.
        self.purge_at = (self.map.len() * 2).max(MIN_PURGE_LEN);
        if self.map.capacity() > self.purge_at * 2 {
            self.map.shrink_to(self.purge_at);
        }
    }
}

/// The `memory://` dedupe backend.
pub struct MemoryDedupe {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
}

impl Default for MemoryDedupe {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryDedupe {
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::new())).collect(),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, key: &str) -> MutexGuard<'_, Shard> {
        let index = (self.hasher.hash_one(key) as usize) % self.shards.len();
        // A panic while holding the lock cannot leave a map half-updated in a way that
        // matters for a cache, so a poisoned lock is simply reused.
        self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Entries currently held, including expired ones not yet purged (for metrics and
    /// for tests of the memory bound).
    pub fn entries(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).map.len())
            .sum()
    }
}

impl MemoryDedupe {
    fn lookup_one(&self, key: &str, now: Instant) -> Option<Uuid> {
        let shard = self.shard(key);
        shard
            .map
            .get(key)
            .filter(|e| e.expires_at > now)
            .map(|e| e.id)
    }

    fn remember_one(&self, item: &Remembered<'_>, now: Instant) {
        // A TTL too large for `Instant` means "for as long as the process lives".
        let expires_at = now
            .checked_add(item.ttl)
            .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600));
        let fresh = Entry {
            id: item.entry_id,
            expires_at,
        };
        let mut shard = self.shard(item.key);
        if let Some(existing) = shard.map.get_mut(item.key) {
            if existing.expires_at <= now {
                *existing = fresh;
            }
            // else: keep the first value, as Redis `SET NX` does.
            return;
        }
        if shard.map.len() >= shard.purge_at {
            shard.purge_expired(now);
        }
        shard.map.insert(item.key.to_owned(), fresh);
    }
}

#[async_trait]
impl Dedupe for MemoryDedupe {
    async fn lookup_many(&self, keys: &[&str]) -> Result<Vec<Option<Uuid>>, DedupeError> {
        let now = Instant::now();
        Ok(keys.iter().map(|key| self.lookup_one(key, now)).collect())
    }

    async fn remember_many(&self, items: &[Remembered<'_>]) -> Result<(), DedupeError> {
        let now = Instant::now();
        for item in items {
            self.remember_one(item, now);
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), DedupeError> {
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn remember_then_lookup_and_first_value_wins() {
        let d = MemoryDedupe::new();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(d.lookup("k").await.expect("lookup"), None);
        d.remember("k", a, Duration::from_secs(60))
            .await
            .expect("remember");
        d.remember("k", b, Duration::from_secs(60))
            .await
            .expect("remember");
        assert_eq!(d.lookup("k").await.expect("lookup"), Some(a));
        assert_eq!(d.lookup("other").await.expect("lookup"), None);
    }

    #[tokio::test]
    async fn expired_entries_are_ignored_and_can_be_replaced() {
        let d = MemoryDedupe::new();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        d.remember("k", a, Duration::from_millis(50))
            .await
            .expect("remember");
        assert_eq!(d.lookup("k").await.expect("lookup"), Some(a));
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(d.lookup("k").await.expect("lookup"), None);
        d.remember("k", b, Duration::from_secs(60))
            .await
            .expect("remember");
        assert_eq!(d.lookup("k").await.expect("lookup"), Some(b));
    }

    #[tokio::test]
    async fn purge_bounds_memory_by_live_keys() {
        let d = MemoryDedupe::new();
        let ttl = Duration::from_millis(30);
        // Many rounds of short-lived keys: without purging the map would hold them all.
        let rounds = 40;
        let per_round = 2_000;
        for round in 0..rounds {
            for i in 0..per_round {
                d.remember(&format!("r{round}-{i}"), Uuid::new_v4(), ttl)
                    .await
                    .expect("remember");
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        let held = d.entries();
        // Each shard purges when it reaches MIN_PURGE_LEN (live keys stay far below it).
        let bound = SHARDS * MIN_PURGE_LEN + per_round * 2;
        assert!(
            held <= bound,
            "holds {held} entries after {} inserts, bound {bound}",
            rounds * per_round
        );
        // Live keys are never purged.
        let live = Uuid::new_v4();
        d.remember("live", live, Duration::from_secs(60))
            .await
            .expect("remember");
        for i in 0..(SHARDS * MIN_PURGE_LEN * 3) {
            d.remember(&format!("x{i}"), Uuid::new_v4(), Duration::from_millis(1))
                .await
                .expect("remember");
        }
        assert_eq!(d.lookup("live").await.expect("lookup"), Some(live));
    }

    #[tokio::test]
    async fn concurrent_remembers_keep_one_value() {
        let d = Arc::new(MemoryDedupe::new());
        let ids: Vec<Uuid> = (0..32).map(|_| Uuid::new_v4()).collect();
        let tasks: Vec<_> = ids
            .iter()
            .map(|&id| {
                let d = d.clone();
                tokio::spawn(async move { d.remember("same", id, Duration::from_secs(60)).await })
            })
            .collect();
        for t in tasks {
            t.await.expect("join").expect("remember");
        }
        let got = d.lookup("same").await.expect("lookup").expect("remembered");
        assert!(ids.contains(&got));
        // Every later remember keeps that first value.
        d.remember("same", Uuid::new_v4(), Duration::from_secs(60))
            .await
            .expect("remember");
        assert_eq!(d.lookup("same").await.expect("lookup"), Some(got));
    }
}
