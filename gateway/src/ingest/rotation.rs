//! Which secret verified each webhook, so an operator rotating secrets can see that an old
//! one no longer matches before removing it. Secrets are named by a fingerprint (the first
//! 8 bytes of their SHA-256, hex): stable across reloads and reorderings, never the value.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

/// A secret's public name.
pub fn fingerprint(secret: &[u8]) -> String {
    let digest = Sha256::digest(secret);
    hex::encode(&digest[..8])
}

/// Matches of one secret since the gateway started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SecretUse {
    pub matches: u64,
    pub last_matched_at: DateTime<Utc>,
}

/// Matches by (source, fingerprint); outlives reloads, so a secret kept across one keeps
/// its history.
#[derive(Debug, Default)]
pub struct SecretUsage {
    by_secret: Mutex<HashMap<(String, String), SecretUse>>,
}

impl SecretUsage {
    pub fn record(&self, source: &str, fingerprint: &str, at: DateTime<Utc>) {
        let mut map = self
            .by_secret
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match map.get_mut(&(source.to_owned(), fingerprint.to_owned())) {
            Some(seen) => {
                seen.matches += 1;
                seen.last_matched_at = seen.last_matched_at.max(at);
            }
            None => {
                map.insert(
                    (source.to_owned(), fingerprint.to_owned()),
                    SecretUse {
                        matches: 1,
                        last_matched_at: at,
                    },
                );
            }
        }
    }

    pub fn get(&self, source: &str, fingerprint: &str) -> Option<SecretUse> {
        self.by_secret
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(source.to_owned(), fingerprint.to_owned()))
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_short_stable_and_not_the_secret() {
        let a = fingerprint(b"shpss_secret");
        assert_eq!(a.len(), 16);
        assert_eq!(a, fingerprint(b"shpss_secret"));
        assert_ne!(a, fingerprint(b"shpss_secret2"));
        assert!(!a.contains("shpss"));
    }

    #[test]
    fn usage_counts_and_keeps_the_latest_time() {
        let usage = SecretUsage::default();
        let early = DateTime::from_timestamp(1_000, 0).unwrap();
        let late = DateTime::from_timestamp(2_000, 0).unwrap();
        usage.record("shopify", "aa", late);
        usage.record("shopify", "aa", early);
        assert_eq!(
            usage.get("shopify", "aa"),
            Some(SecretUse {
                matches: 2,
                last_matched_at: late
            })
        );
        assert_eq!(usage.get("stripe", "aa"), None);
    }
}
