//! The retention purge: removes published webhook entries (with their events) once they
//! are older than `[storage] retention_days`, from a periodic task of the gateway and from
//! `hookgate purge`. Entries that are failed, dead or still have an event to publish are
//! never touched: they are what an operator may still need to replay.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

/// Entries deleted per statement: short transactions that never hold the tables long.
const CHUNK: u32 = 1000;
/// How often the gateway purges; also the delay of the first purge after start, so a
/// start is not slowed by it.
pub const INTERVAL: Duration = Duration::from_secs(3600);
const FIRST_PURGE_AFTER: Duration = Duration::from_secs(60);

/// The cut-off for entries older than `days` days, or `None` when out of range.
pub fn cutoff(now: DateTime<Utc>, days: u64) -> Option<DateTime<Utc>> {
    let days = i64::try_from(days).ok()?;
    now.checked_sub_signed(chrono::Duration::try_days(days)?)
}

/// Deletes every purgeable entry received before `before`, a chunk at a time; returns how
/// many went. With `dry_run`, counts them and deletes nothing.
pub async fn purge(
    store: &dyn Store,
    before: DateTime<Utc>,
    dry_run: bool,
) -> Result<u64, StoreError> {
    if dry_run {
        return store.count_purgeable(before).await;
    }
    // Bounded by what was there at the start: rows locked elsewhere are skipped by a
    // chunk, so "fewer than a chunk" is not proof that nothing is left.
    let expected = store.count_purgeable(before).await?;
    let mut deleted = 0u64;
    let rounds = expected / u64::from(CHUNK) + 2;
    for _ in 0..rounds {
        let n = store.purge_published(before, CHUNK).await?;
        deleted += n;
        if n == 0 || deleted >= expected {
            break;
        }
        // Leave the storage to the pipeline between chunks.
        tokio::task::yield_now().await;
    }
    Ok(deleted)
}

/// Starts the periodic purge of entries older than `retention_days`; it stops with
/// `shutdown`.
pub fn start(
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    retention_days: u64,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick =
            tokio::time::interval_at(tokio::time::Instant::now() + FIRST_PURGE_AFTER, INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        return;
                    }
                }
                _ = tick.tick() => {
                    let Some(before) = cutoff(Utc::now(), retention_days) else {
                        return;
                    };
                    match purge(store.as_ref(), before, false).await {
                        Ok(0) => tracing::debug!(%before, "retention purge: nothing to remove"),
                        Ok(n) => {
                            metrics.entries_purged.inc_by(n);
                            tracing::info!(removed = n, %before, "retention purge removed published entries");
                        }
                        Err(error) => tracing::warn!(%error, "retention purge failed; next try in an hour"),
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::cutoff;
    use chrono::TimeZone;

    #[test]
    fn cutoff_is_days_back_and_never_panics() {
        let now = chrono::Utc
            .with_ymd_and_hms(2026, 3, 31, 12, 0, 0)
            .single()
            .expect("time");
        assert_eq!(
            cutoff(now, 30),
            chrono::Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).single()
        );
        assert_eq!(cutoff(now, 0), Some(now));
        assert_eq!(cutoff(now, u64::MAX), None);
    }
}
