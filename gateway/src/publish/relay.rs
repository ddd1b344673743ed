//! The outbox relay: publishes stored events to the bus and records the outcome.
//!
//! Fresh events arrive straight from the pipeline after their commit (no polling delay),
//! and those arriving within a few milliseconds of each other share one publication;
//! a periodic sweep of the outbox picks up everything else: retries that came due, and
//! events left behind by a crash or a full hand-off queue. One task does both in turn,
//! fresh events first; the sweep takes only events received longer than a grace ago, and
//! a hand-off the last sweep already took is dropped, so a slow commit is not published
//! twice by this process.
//! Publishing is at-least-once; the `Nats-Msg-Id` (the event id) lets JetStream drop the
//! rare repeat.
//!
//! Each event goes through its subject's circuit breaker ([`super::breaker`]): those an
//! open breaker holds back are postponed in the outbox, untried. A failed publish is
//! retried with backoff until the retry budget (age, and attempts when configured) is
//! spent; one the bus refuses for good is dead-lettered at once; one not sent because the
//! connection is down waits without counting as an attempt.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::{mpsc, watch};

use crate::metrics::{BreakerTransition, Metrics, ReasonLabel, SubjectLabel};
use crate::publish::breaker::{Admission, BreakerConfig, Breakers, Outcome, State, Transition};
use crate::publish::{EventSink, Outgoing, PublishError};
use crate::store::{DueEvents, OutboxEvent, Store, UnreadableEvent};

/// Publications of one batch at most: the events a half-open breaker held back while its
/// probes were out get one more round each time the probes answer.
const MAX_ROUNDS: usize = 3;
/// When events a half-open breaker still holds back after the last round are tried again.
const PROBE_WAIT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Events per publication batch.
    pub batch_size: usize,
    /// Fresh events wait until this long after the previous publication began, so the
    /// sink's cost per batch (a file sink's fsync, a JetStream flush) is shared by all
    /// that arrived meanwhile. Under light load publications are further apart than this
    /// and nothing waits.
    pub gather: Duration,
    /// How often the outbox is swept for due events.
    pub poll_interval: Duration,
    /// The sweep leaves events younger than this to the direct hand-off.
    pub handoff_grace: Duration,
    /// Published events are recorded so at most this long after their acknowledgement
    /// (sooner when many are waiting). A crash in between only means a re-send.
    pub mark_interval: Duration,
    /// An event is dead-lettered only once it is older than this (counted from receipt).
    pub retry_max_age: Duration,
    /// First retry delay; doubles per attempt up to `max_backoff`.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// An event is dead-lettered after this many failed attempts; 0 = no limit (the age
    /// budget still applies). Attempts are only those made: not while its subject's
    /// breaker is open, nor while the bus connection is down.
    pub retry_max_attempts: u32,
    /// The per-subject circuit breakers.
    pub breaker: BreakerConfig,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 512,
            gather: Duration::from_millis(10),
            poll_interval: Duration::from_millis(500),
            handoff_grace: Duration::from_secs(2),
            mark_interval: Duration::from_millis(100),
            retry_max_age: Duration::from_secs(72 * 3600),
            base_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            retry_max_attempts: 0,
            breaker: BreakerConfig::default(),
        }
    }
}

/// Hands freshly committed events to the relay.
#[derive(Clone)]
pub struct RelayHandle {
    queue: mpsc::Sender<OutboxEvent>,
    breakers: Arc<Breakers>,
}

impl RelayHandle {
    /// The relay's circuit breakers, for health.
    pub fn breakers(&self) -> Arc<Breakers> {
        self.breakers.clone()
    }

    /// Never blocks: if the queue is full the events stay in the outbox for the sweep.
    pub fn notify(&self, events: Vec<OutboxEvent>) {
        for event in events {
            if self.queue.try_send(event).is_err() {
                break;
            }
        }
    }
}

pub struct Relay {
    store: Arc<dyn Store>,
    sink: Arc<dyn EventSink>,
    metrics: Arc<Metrics>,
    config: RelayConfig,
    breakers: Arc<Breakers>,
}

impl Relay {
    /// Starts the relay task; it stops when `shutdown` turns true, after the events it
    /// already holds are published or recorded as failed.
    pub fn start(
        store: Arc<dyn Store>,
        sink: Arc<dyn EventSink>,
        metrics: Arc<Metrics>,
        config: RelayConfig,
        shutdown: watch::Receiver<bool>,
    ) -> (RelayHandle, tokio::task::JoinHandle<()>) {
        let (queue, receiver) = mpsc::channel(config.batch_size * 16);
        let observed = metrics.clone();
        let breakers = Arc::new(Breakers::new(
            config.breaker.clone(),
            Box::new(move |subject: &str, transition: Transition| {
                observe_transition(&observed, subject, transition)
            }),
        ));
        let relay = Self {
            store,
            sink,
            metrics,
            config,
            breakers: breakers.clone(),
        };
        let task = tokio::spawn(relay.run(receiver, shutdown));
        (RelayHandle { queue, breakers }, task)
    }

    async fn run(
        self,
        mut receiver: mpsc::Receiver<OutboxEvent>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut sweep = tokio::time::interval(self.config.poll_interval);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stats = tokio::time::interval(Duration::from_secs(5));
        let mut mark_tick = tokio::time::interval(self.config.mark_interval);
        mark_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(self.config.batch_size);
        let mut swept = HashSet::new();
        // Published but not yet recorded so: recording is one write transaction whatever
        // the count, so it is done for many publications at once, off the publishing path.
        let mut unmarked = Vec::new();
        let mut last_publication = Instant::now();
        loop {
            // Timers before the queue: under sustained load the queue is always ready, and
            // a biased select would otherwise never sweep or record.
            tokio::select! {
                biased;
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        receiver.close();
                        while receiver.recv_many(&mut batch, self.config.batch_size).await > 0 {
                            batch.retain(|event| !swept.contains(&event.id));
                            self.publish(std::mem::take(&mut batch), &mut unmarked).await;
                        }
                        self.record_published(&mut unmarked).await;
                        return;
                    }
                }
                _ = mark_tick.tick(), if !unmarked.is_empty() => {
                    self.record_published(&mut unmarked).await;
                }
                _ = sweep.tick() => {
                    // The sweep must not take events that are published but not yet recorded.
                    self.record_published(&mut unmarked).await;
                    // A webhook whose commit came later than the grace can be committed while
                    // a sweep reads the outbox and so be seen by both paths: the ids the last
                    // sweep took are kept until the next one to drop such a hand-off.
                    swept.clear();
                    // One sweep per tick whatever the load; more while full batches come back,
                    // so a backlog drains at full speed, unless fresh events wait.
                    loop {
                        let found = self.sweep_once(&mut swept, &mut unmarked).await;
                        self.record_published(&mut unmarked).await;
                        if found < self.config.batch_size || !receiver.is_empty() {
                            break;
                        }
                    }
                }
                _ = stats.tick() => self.refresh_stats().await,
                received = receiver.recv_many(&mut batch, self.config.batch_size) => {
                    if received == 0 {
                        self.record_published(&mut unmarked).await;
                        return;
                    }
                    if batch.len() < self.config.batch_size {
                        tokio::time::sleep_until((last_publication + self.config.gather).into())
                            .await;
                        while batch.len() < self.config.batch_size {
                            match receiver.try_recv() {
                                Ok(event) => batch.push(event),
                                Err(_) => break,
                            }
                        }
                    }
                    last_publication = Instant::now();
                    batch.retain(|event| !swept.contains(&event.id));
                    self.publish(std::mem::take(&mut batch), &mut unmarked).await;
                    if unmarked.len() >= self.config.batch_size * 4 {
                        self.record_published(&mut unmarked).await;
                    }
                }
            }
        }
    }

    /// Records `unmarked` as published, and empties it.
    async fn record_published(&self, unmarked: &mut Vec<String>) {
        if unmarked.is_empty() {
            return;
        }
        // If this fails the events stay pending and are re-sent; JetStream drops the repeats.
        if let Err(error) = self.store.mark_published(unmarked, Utc::now()).await {
            tracing::warn!(%error, count = unmarked.len(), "could not record published events");
        }
        unmarked.clear();
    }

    /// Publishes one batch of due events, adding their ids to `swept`; returns how many it
    /// found.
    async fn sweep_once(&self, swept: &mut HashSet<String>, unmarked: &mut Vec<String>) -> usize {
        let Ok(grace) = chrono::Duration::from_std(self.config.handoff_grace) else {
            return 0;
        };
        let limit = u32::try_from(self.config.batch_size).unwrap_or(u32::MAX);
        match self.store.due_events(Utc::now() - grace, limit).await {
            Ok(DueEvents { events, unreadable }) => {
                let found = events.len() + unreadable.len();
                for event in unreadable {
                    self.dead_letter_unreadable(event).await;
                }
                swept.extend(events.iter().map(|event| event.id.clone()));
                if found > 0 {
                    self.publish(events, unmarked).await;
                }
                found
            }
            Err(error) => {
                tracing::warn!(%error, "outbox sweep failed");
                0
            }
        }
    }

    /// An event no envelope can be made of goes to the dead-letter queue at once: retrying
    /// cannot mend it, and an operator can see it there, with the reason.
    async fn dead_letter_unreadable(&self, event: UnreadableEvent) {
        self.metrics.events_dead_lettered.inc();
        let reason = format!("stored event cannot be read: {}", event.reason);
        tracing::error!(event_id = %event.id, entry_id = ?event.entry_id, error = %reason, "unreadable outbox event; dead-lettered");
        if let Err(error) = self.store.mark_dead(&event.id, &reason).await {
            tracing::warn!(%error, event_id = %event.id, "could not dead-letter an unreadable event");
        }
    }

    async fn refresh_stats(&self) {
        match self.store.outbox_stats().await {
            Ok(stats) => {
                self.metrics.outbox_backlog.set(stats.pending as i64);
                self.metrics.dlq_size.set(stats.dead as i64);
                self.metrics.outbox_counted_at_ms.store(
                    chrono::Utc::now().timestamp_millis(),
                    std::sync::atomic::Ordering::Release,
                );
            }
            Err(error) => tracing::debug!(%error, "outbox stats unavailable"),
        }
    }

    /// Publishes `events` through their subjects' breakers; the ids of those the bus
    /// acknowledged go to `unmarked`. Events a breaker holds back are postponed without
    /// counting an attempt: an open one's until its cool-down ends.
    async fn publish(&self, events: Vec<OutboxEvent>, unmarked: &mut Vec<String>) {
        let mut waiting = events;
        for round in 1..=MAX_ROUNDS {
            if waiting.is_empty() {
                return;
            }
            let now = Instant::now();
            let admissions = self
                .breakers
                .admit_all(waiting.iter().map(|event| event.subject.as_str()), now);
            let mut admitted = Vec::with_capacity(waiting.len());
            let mut held = Vec::new();
            let mut postponed = Vec::new();
            for (event, admission) in waiting.into_iter().zip(admissions) {
                match admission {
                    Admission::Allow => admitted.push(event),
                    Admission::Open { until } => {
                        postponed.push((event.id, wall_clock(until, now)));
                    }
                    Admission::ProbesBusy if round == MAX_ROUNDS => {
                        postponed.push((event.id, wall_clock(now + PROBE_WAIT, now)));
                    }
                    Admission::ProbesBusy => held.push(event),
                }
            }
            if !postponed.is_empty() {
                tracing::debug!(
                    count = postponed.len(),
                    "events held back by open circuit breakers"
                );
                if let Err(error) = self.store.postpone(&postponed, None).await {
                    // They stay due, and come back with the next sweep.
                    tracing::warn!(%error, count = postponed.len(), "could not postpone events behind an open breaker");
                }
            }
            self.attempt(admitted, unmarked).await;
            waiting = held;
        }
    }

    /// Publishes admitted events and records each outcome, with the breakers and the store.
    async fn attempt(&self, events: Vec<OutboxEvent>, unmarked: &mut Vec<String>) {
        if events.is_empty() {
            return;
        }
        let outgoing: Vec<Outgoing> = events
            .iter()
            .map(|event| Outgoing {
                id: event.id.clone(),
                subject: event.subject.clone(),
                envelope: event.envelope.clone(),
            })
            .collect();
        let started = Instant::now();
        let results = self.sink.publish_batch(&outgoing).await;
        self.metrics
            .publish_duration
            .observe(started.elapsed().as_secs_f64());

        // A bus connection that is down fails every subject alike: nothing to learn about
        // any one of them, and nothing was tried, so no attempt is counted either.
        let connected = !results
            .iter()
            .any(|r| matches!(r, Err(PublishError::Unavailable(_))))
            || self.sink.ping().await.is_ok();
        self.breakers.record_all(
            events.iter().zip(&results).map(|(event, result)| {
                let outcome = match result {
                    Ok(()) => Outcome::Success,
                    Err(e) if e.is_permanent() || !connected => Outcome::Ignored,
                    Err(_) => Outcome::Failure,
                };
                (event.subject.as_str(), outcome)
            }),
            Instant::now(),
        );

        let before = unmarked.len();
        let mut failed = Vec::new();
        for (event, result) in events.into_iter().zip(results) {
            match result {
                Ok(()) => unmarked.push(event.id),
                Err(error) => failed.push((event, error)),
            }
        }
        self.metrics
            .events_published
            .inc_by((unmarked.len() - before) as u64);
        if !connected {
            self.wait_for_connection(failed).await;
            return;
        }
        for (event, error) in failed {
            self.record_failure(event, error).await;
        }
    }

    /// Events not published because the bus connection is down wait without counting an
    /// attempt, so an outage never spends an attempts budget; their retries space out
    /// with their age, as an attempts-based backoff would.
    async fn wait_for_connection(&self, failed: Vec<(OutboxEvent, PublishError)>) {
        let Some(message) = failed.first().map(|(_, error)| error.to_string()) else {
            return;
        };
        self.metrics
            .publish_failures
            .get_or_create(&ReasonLabel {
                reason: "unavailable",
            })
            .inc_by(failed.len() as u64);
        let now = Utc::now();
        let postponed: Vec<(String, chrono::DateTime<Utc>)> = failed
            .into_iter()
            .map(|(event, _)| {
                let age = (now - event.created_at).to_std().unwrap_or_default();
                let delay = outage_backoff(&self.config, age, &event.id);
                (event.id, now + to_chrono(delay))
            })
            .collect();
        tracing::debug!(count = postponed.len(), error = %message, "bus not connected; events wait");
        if let Err(error) = self.store.postpone(&postponed, Some(&message)).await {
            tracing::warn!(%error, count = postponed.len(), "could not postpone events while the bus is down");
        }
    }

    async fn record_failure(&self, event: OutboxEvent, error: PublishError) {
        let reason = match error {
            PublishError::Unavailable(_) => "unavailable",
            PublishError::Rejected(_) => "rejected",
            PublishError::BadUrl(_) => "config",
        };
        self.metrics
            .publish_failures
            .get_or_create(&ReasonLabel { reason })
            .inc();
        let message = error.to_string();
        let now = Utc::now();
        let age = (now - event.created_at).to_std().unwrap_or_default();
        let attempts = u32::try_from(event.attempts).unwrap_or(0).saturating_add(1);
        let dead_because = if error.is_permanent() {
            Some(message.clone())
        } else if self.config.retry_max_attempts > 0 && attempts >= self.config.retry_max_attempts {
            Some(format!(
                "retry budget exhausted after {attempts} attempts: {message}"
            ))
        } else if age >= self.config.retry_max_age {
            Some(format!(
                "retry budget exhausted after {} hours: {message}",
                age.as_secs() / 3600
            ))
        } else {
            None
        };
        let delay = backoff(&self.config, event.attempts, &event.id);
        // The attempt is recorded whatever comes next, so a dead event's count is right.
        let mut outcome = self
            .store
            .mark_retry(&event.id, now + to_chrono(delay), &message)
            .await;
        if let Some(reason) = dead_because {
            self.metrics.events_dead_lettered.inc();
            if error.is_permanent() {
                tracing::error!(event_id = %event.id, entry_id = %event.entry_id, subject = %event.subject, error = %reason, "the bus refused the event for good; dead-lettered");
            } else {
                tracing::error!(event_id = %event.id, entry_id = %event.entry_id, error = %reason, "event exhausted its retry budget; dead-lettered");
            }
            if outcome.is_ok() {
                outcome = self.store.mark_dead(&event.id, &reason).await;
            }
        } else {
            tracing::debug!(event_id = %event.id, error = %message, retry_in = ?delay, "publish failed; will retry");
        }
        if let Err(error) = outcome {
            tracing::warn!(%error, event_id = %event.id, "could not record a publish failure");
        }
    }
}

/// Metrics and a log line for each breaker change.
fn observe_transition(metrics: &Metrics, subject: &str, transition: Transition) {
    metrics
        .breaker_state
        .get_or_create(&SubjectLabel {
            subject: subject.to_owned(),
        })
        .set(transition.to.gauge());
    metrics
        .breaker_transitions
        .get_or_create(&BreakerTransition {
            subject: subject.to_owned(),
            to: transition.to.as_str(),
        })
        .inc();
    match transition.to {
        State::Open => {
            tracing::warn!(%subject, from = transition.from.as_str(), "circuit breaker open: the subject's events wait in the outbox")
        }
        State::HalfOpen => tracing::info!(%subject, "circuit breaker half-open: probing"),
        State::Closed => {
            tracing::info!(%subject, "circuit breaker closed: the subject flows again")
        }
    }
}

/// The wall-clock time of a monotonic instant, for the outbox's next-attempt column.
fn wall_clock(at: Instant, now: Instant) -> chrono::DateTime<Utc> {
    Utc::now() + to_chrono(at.saturating_duration_since(now))
}

fn to_chrono(delay: Duration) -> chrono::Duration {
    chrono::Duration::from_std(delay).unwrap_or_else(|_| chrono::Duration::seconds(1))
}

/// The wait of an event while the bus is unreachable: an eighth of its age, between the
/// first and the longest backoff, with the same jitter.
fn outage_backoff(config: &RelayConfig, age: Duration, event_id: &str) -> Duration {
    let capped = (age / 8).max(config.base_backoff).min(config.max_backoff);
    let spread = event_id
        .bytes()
        .fold(0u32, |acc, b| acc.wrapping_mul(31).wrapping_add(b as u32))
        % 25;
    capped + capped * spread / 100
}

/// Exponential backoff with up to 25% jitter, derived from the event id so retries of a
/// burst spread out without a random number generator.
fn backoff(config: &RelayConfig, attempts: i32, event_id: &str) -> Duration {
    let exponent = attempts.clamp(0, 20) as u32;
    let base = config.base_backoff.saturating_mul(1u32 << exponent.min(20));
    let capped = base.min(config.max_backoff);
    let spread = event_id.bytes().fold(attempts as u32, |acc, b| {
        acc.wrapping_mul(31).wrapping_add(b as u32)
    }) % 25;
    capped + capped * spread / 100
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::file::FileSink;

    /// A relay over an in-memory SQLite outbox and a file sink in a temporary directory.
    struct Fixture {
        _dir: tempfile::TempDir,
        store: Arc<dyn Store>,
        path: std::path::PathBuf,
        handle: RelayHandle,
        metrics: Arc<Metrics>,
        stop: watch::Sender<bool>,
        task: tokio::task::JoinHandle<()>,
    }

    async fn outbox() -> Arc<dyn Store> {
        let store = crate::store::connect("sqlite::memory:", "unused")
            .await
            .expect("sqlite");
        store.migrate().await.expect("migrate");
        store
    }

    /// A freshly committed event as the pipeline hands it over, the `n`th of its `kind`.
    fn hand_off(kind: &str, n: impl std::fmt::Display) -> OutboxEvent {
        OutboxEvent {
            id: format!("{kind}-{n}"),
            entry_id: uuid::Uuid::now_v7(),
            subject: format!("webhooks.test.{kind}"),
            envelope: bytes::Bytes::from(format!("{{\"id\":\"{kind}-{n}\"}}")),
            attempts: 0,
            created_at: Utc::now(),
        }
    }

    impl Fixture {
        /// Starts a relay over `store`; its first sweep runs at once.
        async fn start(store: Arc<dyn Store>, poll_interval: Duration) -> Self {
            let dir = tempfile::tempdir().expect("temp dir");
            let path = dir.path().join("events.jsonl");
            let sink = Arc::new(FileSink::open(&path).await.expect("file sink"));
            let (stop, shutdown) = watch::channel(false);
            let config = RelayConfig {
                poll_interval,
                ..RelayConfig::default()
            };
            let metrics = Arc::new(Metrics::new());
            let (handle, task) =
                Relay::start(store.clone(), sink, metrics.clone(), config, shutdown);
            Self {
                _dir: dir,
                store,
                path,
                handle,
                metrics,
                stop,
                task,
            }
        }

        fn events_file(&self) -> String {
            std::fs::read_to_string(&self.path).unwrap_or_default()
        }

        fn lines(&self) -> usize {
            self.events_file().lines().count()
        }

        /// Batches handed to the sink so far.
        fn publications(&self) -> u64 {
            self.metrics
                .encode()
                .lines()
                .find_map(|line| line.strip_prefix("hookgate_publish_duration_seconds_count "))
                .and_then(|value| value.trim().parse().ok())
                .unwrap_or(0)
        }

        /// Stops the relay and waits for its drain; the events file stays readable.
        async fn stop(&mut self) {
            self.stop.send(true).expect("relay running");
            (&mut self.task).await.expect("relay task");
        }
    }

    /// A commit late enough for the sweep to see its events, whose hand-off then arrives
    /// after the sweep published them, is written once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hand_off_the_sweep_already_published_is_dropped() {
        let old = Utc::now() - chrono::Duration::seconds(30);
        let webhook = crate::store::tests::webhook("shopify", "late-commit", old, 1);
        let store = outbox().await;
        store.insert_batch(&[webhook]).await.expect("insert");
        let events = store.due_events(Utc::now(), 10).await.expect("due").events;
        assert_eq!(events.len(), 1);
        // The first tick sweeps at once; the next is out of the test's reach.
        let mut relay = Fixture::start(store, Duration::from_secs(3600)).await;

        let deadline = Instant::now() + Duration::from_secs(10);
        while relay.lines() == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(relay.lines(), 1, "the sweep publishes the overdue event");

        relay.handle.notify(events.clone());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(relay.lines(), 1, "the late hand-off is not written again");
        // Nor by the drain at shutdown.
        relay.handle.notify(events);
        relay.stop().await;
        assert_eq!(
            relay.lines(),
            1,
            "the late hand-off is not written at shutdown"
        );
    }

    /// An outbox row no envelope can be made of is dead-lettered by the sweep, with the
    /// reason, and the events beside it are published: one bad row does not stall the rest.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_sweep_dead_letters_an_unreadable_event_and_publishes_the_rest() {
        let sqlite = crate::store::sqlite::SqliteStore::connect("sqlite::memory:")
            .await
            .expect("sqlite");
        sqlite.migrate().await.expect("migrate");
        let pool = sqlite.pool().clone();
        let store: Arc<dyn Store> = Arc::new(sqlite);
        let old = Utc::now() - chrono::Duration::seconds(30);
        let good = crate::store::tests::webhook("shopify", "readable", old, 1);
        let bad = crate::store::tests::webhook("shopify", "unreadable", old, 1);
        store
            .insert_batch(&[good.clone(), bad.clone()])
            .await
            .expect("insert");
        let bad_id = bad.events[0].id.clone();
        sqlx::query("UPDATE webhook_events SET body_at = 1000000 WHERE id = ?")
            .bind(&bad_id)
            .execute(&pool)
            .await
            .expect("corrupt the row");

        let mut relay = Fixture::start(store, Duration::from_secs(3600)).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut status = (String::new(), None::<String>);
        while Instant::now() < deadline {
            status = sqlx::query_as("SELECT status, last_error FROM webhook_events WHERE id = ?")
                .bind(&bad_id)
                .fetch_one(&pool)
                .await
                .expect("read the row");
            if status.0 == "dead" && relay.lines() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(status.0, "dead");
        let reason = status.1.unwrap_or_default();
        assert!(reason.contains("cannot be read"), "{reason}");
        assert_eq!(relay.lines(), 1);
        assert!(relay.events_file().contains(&good.events[0].id));
        assert!(
            relay
                .metrics
                .encode()
                .contains("hookgate_events_dead_lettered_total 1"),
            "the dead-lettering is counted"
        );
        relay.stop().await;
    }

    /// Under a hand-off queue that never runs dry, an event left in the outbox (a retry, a
    /// crash's leftover) is still swept.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_sweep_runs_under_sustained_load() {
        let mut relay = Fixture::start(outbox().await, Duration::from_millis(50)).await;
        let handle = relay.handle.clone();

        let feeding = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let feeder = tokio::spawn({
            let feeding = feeding.clone();
            async move {
                let mut n = 0u64;
                let deadline = Instant::now() + Duration::from_secs(10);
                while feeding.load(std::sync::atomic::Ordering::Relaxed)
                    && Instant::now() < deadline
                {
                    n += 1;
                    handle.notify(vec![hand_off("fresh", n)]);
                    tokio::task::yield_now().await;
                }
            }
        });
        // Let the first (immediate) sweep pass with an empty outbox, then leave an overdue event.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let overdue = crate::store::tests::webhook(
            "shopify",
            "left-behind",
            Utc::now() - chrono::Duration::seconds(30),
            1,
        );
        let wanted = overdue.events[0].id.clone();
        relay.store.insert_batch(&[overdue]).await.expect("insert");

        let deadline = Instant::now() + Duration::from_secs(5);
        let mut swept = false;
        while !swept && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            swept = relay.events_file().contains(&wanted);
        }
        feeding.store(false, std::sync::atomic::Ordering::Relaxed);
        feeder.await.expect("feeder");
        relay.stop().await;
        assert!(
            swept,
            "the overdue event was never swept while hand-offs kept coming"
        );
    }

    /// Hand-offs arriving one by one, faster than the gather interval, share publications
    /// (each a sink write and fsync) instead of taking one each, and all are published.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hand_offs_arriving_together_share_a_publication() {
        let mut relay = Fixture::start(outbox().await, Duration::from_secs(3600)).await;
        const EVENTS: usize = 200;
        for n in 0..EVENTS {
            relay.handle.notify(vec![hand_off("gathered", n)]);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while relay.lines() < EVENTS && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        relay.stop().await;
        assert_eq!(relay.lines(), EVENTS, "every hand-off is published once");
        // At least 200 ms of hand-offs: ~20 gathered publications, 200 without gathering.
        let publications = relay.publications();
        assert!(
            publications <= EVENTS as u64 / 4,
            "{publications} publications for {EVENTS} hand-offs"
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let config = RelayConfig::default();
        let first = backoff(&config, 0, "a");
        let third = backoff(&config, 2, "a");
        assert!(
            first >= Duration::from_secs(1) && first < Duration::from_millis(1250),
            "{first:?}"
        );
        assert!(
            third >= Duration::from_secs(4) && third < Duration::from_secs(5),
            "{third:?}"
        );
        let late = backoff(&config, 30, "a");
        assert!(
            late >= config.max_backoff && late <= config.max_backoff * 5 / 4,
            "{late:?}"
        );
    }
}
