//! Circuit breakers, one per bus subject: while a subject keeps failing, its events wait in
//! the outbox instead of being sent again and again, and the other subjects keep flowing.
//!
//! A breaker is *closed* while the failure rate over a sliding time window of publish
//! outcomes stays below the threshold, or too few calls were made to judge (a minimum of
//! calls keeps one unlucky publish of a quiet subject from opening it). Past it, the
//! breaker *opens* for a cool-down, during which nothing of that subject is attempted.
//! Then it is *half-open*: a few probe publishes go through; when they all succeed it
//! closes with a fresh window, and the first that fails opens it again.
//!
//! Only outcomes that say something about the subject count: a permanent refusal of one
//! event (too large, no stream) is that event's problem, and a bus connection that is down
//! is everyone's, with nothing to learn per subject (see the relay).
//!
//! The logic is pure: every call takes `now`, so tests drive the clock.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How the breakers of a relay behave (`[bus] breaker_*`).
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Off: every event is always attempted.
    pub enabled: bool,
    /// Failures over calls in the window at or above which the breaker opens (0 < r <= 1).
    pub failure_rate: f64,
    /// Calls in the window below which the breaker never opens.
    pub min_calls: u32,
    /// How far back outcomes count.
    pub window: Duration,
    /// How long an open breaker refuses calls before probing.
    pub cooldown: Duration,
    /// Probe successes that close a half-open breaker (also the probes let through at once).
    pub probe_calls: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            failure_rate: 0.5,
            min_calls: 20,
            window: Duration::from_secs(60),
            cooldown: Duration::from_secs(30),
            probe_calls: 3,
        }
    }
}

/// Where a breaker stands, as metrics and health show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Closed,
    HalfOpen,
    Open,
}

impl State {
    /// The `hookgate_breaker_state` gauge value.
    pub fn gauge(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::HalfOpen => 1,
            Self::Open => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::HalfOpen => "half_open",
            Self::Open => "open",
        }
    }
}

/// Whether an event of the subject may be published now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allow,
    /// Open: nothing is attempted before `until`.
    Open {
        until: Instant,
    },
    /// Half-open with every probe slot taken: ask again once the probes have answered.
    ProbesBusy,
}

/// What one admitted publish did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// A failure that may pass (timeout, the stream full, the server busy).
    Failure,
    /// Says nothing about the subject (a permanent refusal of the event, the connection
    /// down): a probe slot it held is freed, nothing else changes.
    Ignored,
}

/// A change of state, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: State,
    pub to: State,
}

/// Buckets the window is cut into: the window slides by a tenth of its length.
const BUCKETS: u32 = 10;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    start: Instant,
    succeeded: u32,
    failed: u32,
}

/// Outcomes of the last `window`, in buckets so memory stays constant whatever the rate.
#[derive(Debug, Clone)]
struct Window {
    length: Duration,
    bucket: Duration,
    buckets: VecDeque<Bucket>,
}

impl Window {
    fn new(length: Duration) -> Self {
        Self {
            length,
            bucket: (length / BUCKETS).max(Duration::from_millis(1)),
            buckets: VecDeque::with_capacity(BUCKETS as usize + 1),
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some(first) = self.buckets.front() {
            if now.saturating_duration_since(first.start) >= self.length {
                self.buckets.pop_front();
            } else {
                break;
            }
        }
    }

    fn add(&mut self, now: Instant, success: bool) {
        self.expire(now);
        let current_is_full = self
            .buckets
            .back()
            .is_none_or(|last| now.saturating_duration_since(last.start) >= self.bucket);
        if current_is_full {
            self.buckets.push_back(Bucket {
                start: now,
                succeeded: 0,
                failed: 0,
            });
        }
        let Some(current) = self.buckets.back_mut() else {
            return;
        };
        if success {
            current.succeeded = current.succeeded.saturating_add(1);
        } else {
            current.failed = current.failed.saturating_add(1);
        }
    }

    /// (calls, failures) within the window.
    fn totals(&self) -> (u64, u64) {
        self.buckets.iter().fold((0, 0), |(calls, failed), b| {
            (
                calls + u64::from(b.succeeded) + u64::from(b.failed),
                failed + u64::from(b.failed),
            )
        })
    }

    fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    fn clear(&mut self) {
        self.buckets.clear();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { in_flight: u32, succeeded: u32 },
}

/// The breaker of one subject.
#[derive(Debug, Clone)]
pub struct Breaker {
    phase: Phase,
    window: Window,
}

impl Breaker {
    pub fn new(config: &BreakerConfig) -> Self {
        Self {
            phase: Phase::Closed,
            window: Window::new(config.window),
        }
    }

    /// The current state (an open breaker whose cool-down is over says open until
    /// [`Breaker::advance`] or [`Breaker::admit`] moves it on).
    pub fn state(&self) -> State {
        match self.phase {
            Phase::Closed => State::Closed,
            Phase::Open { .. } => State::Open,
            Phase::HalfOpen { .. } => State::HalfOpen,
        }
    }

    /// Until when an open breaker refuses calls.
    pub fn open_until(&self) -> Option<Instant> {
        match self.phase {
            Phase::Open { until } => Some(until),
            _ => None,
        }
    }

    /// Moves an open breaker whose cool-down is over to half-open.
    pub fn advance(&mut self, now: Instant) -> Option<Transition> {
        match self.phase {
            Phase::Open { until } if now >= until => {
                self.phase = Phase::HalfOpen {
                    in_flight: 0,
                    succeeded: 0,
                };
                Some(Transition {
                    from: State::Open,
                    to: State::HalfOpen,
                })
            }
            _ => None,
        }
    }

    /// Whether one event may be published now; an allowed probe takes a slot until its
    /// outcome is recorded.
    pub fn admit(
        &mut self,
        config: &BreakerConfig,
        now: Instant,
    ) -> (Admission, Option<Transition>) {
        let transition = self.advance(now);
        let admission = match &mut self.phase {
            Phase::Closed => Admission::Allow,
            Phase::Open { until } => Admission::Open { until: *until },
            Phase::HalfOpen {
                in_flight,
                succeeded,
            } => {
                if in_flight.saturating_add(*succeeded) < config.probe_calls.max(1) {
                    *in_flight += 1;
                    Admission::Allow
                } else {
                    Admission::ProbesBusy
                }
            }
        };
        (admission, transition)
    }

    /// Records the outcome of an admitted publish.
    pub fn record(
        &mut self,
        config: &BreakerConfig,
        now: Instant,
        outcome: Outcome,
    ) -> Option<Transition> {
        match &mut self.phase {
            Phase::Closed => {
                let success = match outcome {
                    Outcome::Success => true,
                    Outcome::Failure => false,
                    Outcome::Ignored => return None,
                };
                self.window.add(now, success);
                let (calls, failed) = self.window.totals();
                let tripped = calls >= u64::from(config.min_calls.max(1))
                    && failed as f64 >= config.failure_rate * calls as f64;
                tripped.then(|| self.open(config, now, State::Closed))
            }
            // Outcomes of calls let through before it opened: the verdict is already in.
            Phase::Open { .. } => None,
            Phase::HalfOpen {
                in_flight,
                succeeded,
            } => match outcome {
                Outcome::Success => {
                    *in_flight = in_flight.saturating_sub(1);
                    *succeeded += 1;
                    (*succeeded >= config.probe_calls.max(1)).then(|| {
                        self.phase = Phase::Closed;
                        self.window.clear();
                        Transition {
                            from: State::HalfOpen,
                            to: State::Closed,
                        }
                    })
                }
                Outcome::Failure => Some(self.open(config, now, State::HalfOpen)),
                Outcome::Ignored => {
                    *in_flight = in_flight.saturating_sub(1);
                    None
                }
            },
        }
    }

    fn open(&mut self, config: &BreakerConfig, now: Instant, from: State) -> Transition {
        self.phase = Phase::Open {
            until: now + config.cooldown,
        };
        self.window.clear();
        Transition {
            from,
            to: State::Open,
        }
    }

    /// Closed with nothing in its window: indistinguishable from a new breaker.
    fn is_idle(&mut self, now: Instant) -> bool {
        self.window.expire(now);
        self.phase == Phase::Closed && self.window.is_empty()
    }
}

/// A breaker that is not closed, as health lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotClosed {
    pub subject: String,
    pub state: State,
    /// Left of an open breaker's cool-down.
    pub retry_in: Option<Duration>,
}

/// Called on every change of state with the subject.
pub type Observer = Box<dyn Fn(&str, Transition) + Send + Sync>;

/// The breakers of every subject, shared by the relay (which drives them) and health
/// (which reads them).
pub struct Breakers {
    config: BreakerConfig,
    subjects: Mutex<HashMap<String, Breaker>>,
    observer: Observer,
}

impl Breakers {
    pub fn new(config: BreakerConfig, observer: Observer) -> Self {
        Self {
            config,
            subjects: Mutex::new(HashMap::new()),
            observer,
        }
    }

    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Breaker>> {
        // The map is consistent after every statement, so a panic elsewhere while it was
        // held leaves nothing half-done.
        self.subjects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One admission per subject given, in order (one lock for a whole batch).
    pub fn admit_all<'a>(
        &self,
        subjects: impl IntoIterator<Item = &'a str>,
        now: Instant,
    ) -> Vec<Admission> {
        if !self.config.enabled {
            return subjects.into_iter().map(|_| Admission::Allow).collect();
        }
        let mut map = self.lock();
        subjects
            .into_iter()
            .map(|subject| {
                let breaker = match map.get_mut(subject) {
                    Some(breaker) => breaker,
                    None => map
                        .entry(subject.to_owned())
                        .or_insert_with(|| Breaker::new(&self.config)),
                };
                let (admission, transition) = breaker.admit(&self.config, now);
                if let Some(transition) = transition {
                    (self.observer)(subject, transition);
                }
                admission
            })
            .collect()
    }

    /// Records the outcomes of admitted publishes.
    pub fn record_all<'a>(
        &self,
        outcomes: impl IntoIterator<Item = (&'a str, Outcome)>,
        now: Instant,
    ) {
        if !self.config.enabled {
            return;
        }
        let mut map = self.lock();
        for (subject, outcome) in outcomes {
            let Some(breaker) = map.get_mut(subject) else {
                continue;
            };
            if let Some(transition) = breaker.record(&self.config, now, outcome) {
                (self.observer)(subject, transition);
            }
        }
        // Closed breakers with nothing to remember go, so the map holds the subjects
        // seen lately, not every subject ever published.
        if map.len() > 64 {
            map.retain(|_, breaker| !breaker.is_idle(now));
        }
    }

    /// The breakers that are not closed, by subject; open ones whose cool-down is over
    /// are moved to half-open first, so an idle subject does not look open for ever.
    pub fn not_closed(&self, now: Instant) -> Vec<NotClosed> {
        let mut map = self.lock();
        let mut listed: Vec<NotClosed> = map
            .iter_mut()
            .filter_map(|(subject, breaker)| {
                if let Some(transition) = breaker.advance(now) {
                    (self.observer)(subject, transition);
                }
                let state = breaker.state();
                (state != State::Closed).then(|| NotClosed {
                    subject: subject.clone(),
                    state,
                    retry_in: breaker
                        .open_until()
                        .map(|until| until.saturating_duration_since(now)),
                })
            })
            .collect();
        listed.sort_by(|a, b| a.subject.cmp(&b.subject));
        listed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BreakerConfig {
        BreakerConfig {
            enabled: true,
            failure_rate: 0.5,
            min_calls: 4,
            window: Duration::from_secs(10),
            cooldown: Duration::from_secs(5),
            probe_calls: 2,
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// Admits and records one call at `now`.
    fn call(breaker: &mut Breaker, config: &BreakerConfig, now: Instant, outcome: Outcome) {
        assert_eq!(breaker.admit(config, now).0, Admission::Allow);
        breaker.record(config, now, outcome);
    }

    /// A breaker opened at `t0` by four failures.
    fn opened(config: &BreakerConfig, t0: Instant) -> Breaker {
        let mut breaker = Breaker::new(config);
        for _ in 0..4 {
            call(&mut breaker, config, t0, Outcome::Failure);
        }
        assert_eq!(breaker.state(), State::Open);
        breaker
    }

    #[test]
    fn opens_at_the_failure_rate_once_enough_calls_were_made() {
        let config = config();
        let t0 = Instant::now();
        let mut breaker = Breaker::new(&config);
        call(&mut breaker, &config, t0, Outcome::Success);
        call(&mut breaker, &config, t0, Outcome::Failure);
        call(&mut breaker, &config, t0, Outcome::Success);
        assert_eq!(
            breaker.state(),
            State::Closed,
            "3 calls are below the minimum"
        );
        // 2 of 4 failed: 50%, the threshold.
        assert_eq!(breaker.admit(&config, t0).0, Admission::Allow);
        let transition = breaker.record(&config, t0, Outcome::Failure);
        assert_eq!(
            transition,
            Some(Transition {
                from: State::Closed,
                to: State::Open
            })
        );
        assert_eq!(
            breaker.admit(&config, t0 + secs(1)).0,
            Admission::Open {
                until: t0 + config.cooldown
            }
        );
    }

    #[test]
    fn stays_closed_below_the_failure_rate() {
        let config = config();
        let t0 = Instant::now();
        let mut breaker = Breaker::new(&config);
        for n in 0..20 {
            let outcome = if n % 3 == 2 {
                Outcome::Failure
            } else {
                Outcome::Success
            };
            call(&mut breaker, &config, t0, outcome);
        }
        assert_eq!(
            breaker.state(),
            State::Closed,
            "a third failing is below half"
        );
    }

    #[test]
    fn stays_closed_below_the_minimum_of_calls_even_when_all_fail() {
        let config = config();
        let t0 = Instant::now();
        let mut breaker = Breaker::new(&config);
        for _ in 0..3 {
            call(&mut breaker, &config, t0, Outcome::Failure);
        }
        assert_eq!(breaker.state(), State::Closed);
        // Failures older than the window no longer count towards the minimum.
        call(&mut breaker, &config, t0 + secs(11), Outcome::Failure);
        assert_eq!(breaker.state(), State::Closed, "the window slid past them");
        for _ in 0..3 {
            call(&mut breaker, &config, t0 + secs(12), Outcome::Failure);
        }
        assert_eq!(breaker.state(), State::Open);
    }

    #[test]
    fn ignored_outcomes_do_not_count() {
        let config = config();
        let t0 = Instant::now();
        let mut breaker = Breaker::new(&config);
        for _ in 0..10 {
            call(&mut breaker, &config, t0, Outcome::Ignored);
        }
        call(&mut breaker, &config, t0, Outcome::Failure);
        assert_eq!(breaker.state(), State::Closed);
    }

    #[test]
    fn half_open_after_the_cool_down_with_limited_probes() {
        let config = config();
        let t0 = Instant::now();
        let mut breaker = opened(&config, t0);
        assert!(matches!(
            breaker.admit(&config, t0 + secs(4)).0,
            Admission::Open { .. }
        ));
        let (admission, transition) = breaker.admit(&config, t0 + secs(5));
        assert_eq!(admission, Admission::Allow, "the first probe");
        assert_eq!(
            transition,
            Some(Transition {
                from: State::Open,
                to: State::HalfOpen
            })
        );
        assert_eq!(breaker.admit(&config, t0 + secs(5)).0, Admission::Allow);
        assert_eq!(
            breaker.admit(&config, t0 + secs(5)).0,
            Admission::ProbesBusy,
            "only probe_calls probes at once"
        );
    }

    #[test]
    fn closes_when_the_probes_succeed() {
        let config = config();
        let t0 = Instant::now();
        let mut breaker = opened(&config, t0);
        let later = t0 + secs(6);
        assert_eq!(breaker.admit(&config, later).0, Admission::Allow);
        assert_eq!(breaker.admit(&config, later).0, Admission::Allow);
        assert_eq!(breaker.record(&config, later, Outcome::Success), None);
        assert_eq!(breaker.state(), State::HalfOpen, "one probe is not enough");
        assert_eq!(
            breaker.record(&config, later, Outcome::Success),
            Some(Transition {
                from: State::HalfOpen,
                to: State::Closed
            })
        );
        assert_eq!(breaker.admit(&config, later).0, Admission::Allow);
        // A fresh window: the failures that opened it are forgotten.
        breaker.record(&config, later, Outcome::Failure);
        assert_eq!(breaker.state(), State::Closed);
    }

    #[test]
    fn reopens_when_a_probe_fails() {
        let config = config();
        let t0 = Instant::now();
        let mut breaker = opened(&config, t0);
        let later = t0 + secs(6);
        assert_eq!(breaker.admit(&config, later).0, Admission::Allow);
        breaker.record(&config, later, Outcome::Success);
        assert_eq!(breaker.admit(&config, later).0, Admission::Allow);
        assert_eq!(
            breaker.record(&config, later, Outcome::Failure),
            Some(Transition {
                from: State::HalfOpen,
                to: State::Open
            })
        );
        assert_eq!(
            breaker.admit(&config, later + secs(1)).0,
            Admission::Open {
                until: later + config.cooldown
            },
            "a new cool-down from the failed probe"
        );
    }

    #[test]
    fn an_ignored_probe_frees_its_slot() {
        let config = config();
        let t0 = Instant::now();
        let mut breaker = opened(&config, t0);
        let later = t0 + secs(6);
        assert_eq!(breaker.admit(&config, later).0, Admission::Allow);
        assert_eq!(breaker.admit(&config, later).0, Admission::Allow);
        assert_eq!(breaker.admit(&config, later).0, Admission::ProbesBusy);
        breaker.record(&config, later, Outcome::Ignored);
        assert_eq!(breaker.state(), State::HalfOpen);
        assert_eq!(breaker.admit(&config, later).0, Admission::Allow);
    }

    #[test]
    fn subjects_have_breakers_of_their_own_and_changes_are_observed() {
        let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
        let observed = seen.clone();
        let breakers = Breakers::new(
            config(),
            Box::new(move |subject: &str, t: Transition| {
                observed
                    .lock()
                    .expect("observer lock")
                    .push((subject.to_owned(), t.to));
            }),
        );
        let t0 = Instant::now();
        for _ in 0..4 {
            assert_eq!(
                breakers.admit_all(["a", "b"], t0),
                vec![Admission::Allow, Admission::Allow]
            );
            breakers.record_all([("a", Outcome::Failure), ("b", Outcome::Success)], t0);
        }
        let admissions = breakers.admit_all(["a", "b"], t0 + secs(1));
        assert!(matches!(admissions[0], Admission::Open { .. }));
        assert_eq!(admissions[1], Admission::Allow);
        let listed = breakers.not_closed(t0 + secs(1));
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].subject, "a");
        assert_eq!(listed[0].state, State::Open);
        assert_eq!(listed[0].retry_in, Some(secs(4)));
        // Past the cool-down, health sees it half-open even without traffic.
        let listed = breakers.not_closed(t0 + secs(6));
        assert_eq!(listed[0].state, State::HalfOpen);
        assert_eq!(
            *seen.lock().expect("observer lock"),
            vec![
                ("a".to_owned(), State::Open),
                ("a".to_owned(), State::HalfOpen)
            ]
        );
    }

    #[test]
    fn disabled_breakers_allow_everything() {
        let breakers = Breakers::new(
            BreakerConfig {
                enabled: false,
                ..config()
            },
            Box::new(|_: &str, _: Transition| {}),
        );
        let t0 = Instant::now();
        for _ in 0..10 {
            assert_eq!(breakers.admit_all(["a"], t0), vec![Admission::Allow]);
            breakers.record_all([("a", Outcome::Failure)], t0);
        }
        assert!(breakers.not_closed(t0).is_empty());
    }
}
