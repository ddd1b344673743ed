//! The webhook permits: at most `max_concurrency` webhooks in flight, of which one source
//! may hold only its share and one client IP address only its share, so a handful of
//! slow or greedy clients cannot shed every other sender with 429.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// Why a permit was refused, for the `http_rejected` metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Every permit is taken.
    Global,
    /// This source holds its share.
    Source,
    /// This client holds its share.
    Client,
}

impl Refused {
    pub fn reason(self) -> &'static str {
        match self {
            Self::Global => "shed",
            Self::Source => "shed_source",
            Self::Client => "shed_client",
        }
    }
}

#[derive(Default)]
struct Held {
    total: usize,
    by_source: HashMap<String, usize>,
    by_client: HashMap<IpAddr, usize>,
}

pub struct Budget {
    max: usize,
    per_source: usize,
    per_client: usize,
    held: Mutex<Held>,
}

/// A share of `max` in percent, at least one.
fn share(max: usize, percent: u64) -> usize {
    let percent = usize::try_from(percent.min(100)).unwrap_or(100);
    (max.saturating_mul(percent).div_ceil(100)).max(1)
}

impl Budget {
    pub fn new(max: usize, source_percent: u64, client_percent: u64) -> Arc<Self> {
        let max = max.max(1);
        Arc::new(Self {
            max,
            per_source: share(max, source_percent),
            per_client: share(max, client_percent),
            held: Mutex::new(Held::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Held> {
        // The counters stay consistent even if a holder panicked: every update is a
        // single step.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A permit for one webhook of `source` from `client`, or why not.
    pub fn try_acquire(self: &Arc<Self>, source: &str, client: IpAddr) -> Result<Permit, Refused> {
        let mut held = self.lock();
        if held.total >= self.max {
            return Err(Refused::Global);
        }
        if held.by_source.get(source).copied().unwrap_or(0) >= self.per_source {
            return Err(Refused::Source);
        }
        if held.by_client.get(&client).copied().unwrap_or(0) >= self.per_client {
            return Err(Refused::Client);
        }
        held.total += 1;
        match held.by_source.get_mut(source) {
            Some(count) => *count += 1,
            None => {
                held.by_source.insert(source.to_owned(), 1);
            }
        }
        *held.by_client.entry(client).or_insert(0) += 1;
        Ok(Permit {
            budget: self.clone(),
            source: source.to_owned(),
            client,
        })
    }

    /// Permits held now (for tests and health).
    pub fn held(&self) -> usize {
        self.lock().total
    }
}

/// Returned on drop.
pub struct Permit {
    budget: Arc<Budget>,
    source: String,
    client: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut held = self.budget.lock();
        held.total = held.total.saturating_sub(1);
        if let Some(count) = held.by_source.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                held.by_source.remove(&self.source);
            }
        }
        if let Some(count) = held.by_client.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                held.by_client.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn shares_round_up_and_are_never_zero() {
        assert_eq!(share(1024, 50), 512);
        assert_eq!(share(5, 50), 3);
        assert_eq!(share(1, 1), 1);
        assert_eq!(share(4, 100), 4);
    }

    #[test]
    fn a_source_and_a_client_are_held_to_their_share() {
        let budget = Budget::new(4, 50, 100);
        let first = budget.try_acquire("shopify", A).expect("first");
        let _second = budget.try_acquire("shopify", B).expect("second");
        assert_eq!(
            budget.try_acquire("shopify", A).err(),
            Some(Refused::Source)
        );
        let _other = budget.try_acquire("stripe", A).expect("another source");
        drop(first);
        let _again = budget.try_acquire("shopify", A).expect("freed");
        assert_eq!(budget.held(), 3);

        let budget = Budget::new(4, 100, 50);
        let _a1 = budget.try_acquire("s", A).expect("a1");
        let _a2 = budget.try_acquire("s", A).expect("a2");
        assert_eq!(budget.try_acquire("s", A).err(), Some(Refused::Client));
        let _b1 = budget.try_acquire("s", B).expect("b1");
        let _b2 = budget.try_acquire("s", B).expect("b2");
        assert_eq!(budget.try_acquire("t", B).err(), Some(Refused::Global));
    }

    #[test]
    fn released_permits_leave_no_keys_behind() {
        let budget = Budget::new(8, 50, 50);
        for _ in 0..3 {
            let _p = budget.try_acquire("x", A).expect("permit");
        }
        let held = budget.lock();
        assert_eq!(held.total, 0);
        assert!(held.by_source.is_empty() && held.by_client.is_empty());
    }
}
