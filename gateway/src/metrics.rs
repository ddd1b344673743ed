//! Prometheus metrics: one registry, every name prefixed `hookgate_`, served at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceOutcome {
    pub source: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabel {
    pub plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginFailure {
    pub plugin: String,
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

/// A secret by its fingerprint (`ingest::rotation::fingerprint`), never its value.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SecretLabel {
    pub source: String,
    pub secret: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SubjectLabel {
    pub subject: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BreakerTransition {
    pub subject: String,
    /// The state entered: closed, half_open, open.
    pub to: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReplayLabel {
    /// `remap` or `requeue`.
    pub kind: &'static str,
    /// `queued`, `no_events`, `failed` or `requeued`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~13 s: plugin calls sit at the low end, slow storage at the high end.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 19))
}

/// Every metric the gateway exports.
pub struct Metrics {
    registry: Registry,
    pub webhooks_received: Family<SourceOutcome, Counter>,
    pub request_duration: Family<SourceLabel, Histogram>,
    pub plugin_call_duration: Family<PluginLabel, Histogram>,
    pub plugin_failures: Family<PluginFailure, Counter>,
    pub dedupe_hits: Family<SourceLabel, Counter>,
    pub dedupe_errors: Counter,
    pub dedupe_lookup_duration: Histogram,
    pub storage_queue_wait: Histogram,
    pub storage_batch_size: Histogram,
    pub storage_commit_duration: Histogram,
    pub events_published: Counter,
    pub publish_duration: Histogram,
    pub publish_failures: Family<ReasonLabel, Counter>,
    pub events_dead_lettered: Counter,
    pub outbox_backlog: Gauge,
    pub dlq_size: Gauge,
    /// When the relay last counted `outbox_backlog` and `dlq_size`, Unix ms (0 = never):
    /// the health report serves those counts with their age instead of counting itself.
    pub outbox_counted_at_ms: std::sync::atomic::AtomicI64,
    /// When a storage batch last failed, Unix ms; 0 once a batch is stored again. Readiness
    /// reads it: a store that answers pings but cannot write (a full disk) is not ready.
    pub storage_write_failed_at_ms: std::sync::atomic::AtomicI64,
    pub http_rejected: Family<ReasonLabel, Counter>,
    pub reloads: Family<ResultLabel, Counter>,
    pub reload_rejections: Gauge,
    pub last_reload_success: Gauge,
    pub secret_matches: Family<SecretLabel, Counter>,
    pub breaker_state: Family<SubjectLabel, Gauge>,
    pub breaker_transitions: Family<BreakerTransition, Counter>,
    pub entries_purged: Counter,
    pub replays: Family<ReplayLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("hookgate");
        let webhooks_received = Family::<SourceOutcome, Counter>::default();
        registry.register(
            "webhooks_received",
            "Webhooks received, by source and outcome (accepted, duplicate, handshake, rejected, unknown_source, plugin_fault, unavailable, error); a webhook stored as failed counts as accepted",
            webhooks_received.clone(),
        );
        let request_duration = Family::<SourceLabel, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register_with_unit(
            "webhook_request_duration",
            "Time from the first byte of a webhook request to its response, by source",
            Unit::Seconds,
            request_duration.clone(),
        );
        let plugin_call_duration = Family::<PluginLabel, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register_with_unit(
            "plugin_call_duration",
            "Time of one plugin run (fresh instance, verify and map), by plugin",
            Unit::Seconds,
            plugin_call_duration.clone(),
        );
        let plugin_failures = Family::<PluginFailure, Counter>::default();
        registry.register(
            "plugin_failures",
            "Plugin calls that trapped, timed out or ran out of memory, by plugin and kind",
            plugin_failures.clone(),
        );
        let dedupe_hits = Family::<SourceLabel, Counter>::default();
        registry.register(
            "dedupe_hits",
            "Webhooks answered as duplicates, by source",
            dedupe_hits.clone(),
        );
        let dedupe_errors = Counter::default();
        registry.register(
            "dedupe_errors",
            "Dedupe cache calls that failed or were skipped while the cache was behind (storage decided)",
            dedupe_errors.clone(),
        );
        let dedupe_lookup_duration = latency_histogram();
        registry.register_with_unit(
            "dedupe_lookup_duration",
            "Time of one dedupe cache lookup, made for a storage batch's keys at once",
            Unit::Seconds,
            dedupe_lookup_duration.clone(),
        );
        let storage_queue_wait = latency_histogram();
        registry.register_with_unit(
            "storage_queue_wait",
            "Time a webhook waits for a storage writer to take it into a batch",
            Unit::Seconds,
            storage_queue_wait.clone(),
        );
        let storage_batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 11));
        registry.register(
            "storage_batch_size",
            "Webhooks committed per storage transaction",
            storage_batch_size.clone(),
        );
        let storage_commit_duration = latency_histogram();
        registry.register_with_unit(
            "storage_commit_duration",
            "Time of one storage batch transaction",
            Unit::Seconds,
            storage_commit_duration.clone(),
        );
        let events_published = Counter::default();
        registry.register(
            "events_published",
            "Events acknowledged by the bus",
            events_published.clone(),
        );
        let publish_duration = latency_histogram();
        registry.register_with_unit(
            "publish_duration",
            "Time to publish one batch of events and receive every acknowledgement",
            Unit::Seconds,
            publish_duration.clone(),
        );
        let publish_failures = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "publish_failures",
            "Event publications that failed, by reason: unavailable (retried), rejected (refused for good: dead-lettered), config",
            publish_failures.clone(),
        );
        let events_dead_lettered = Counter::default();
        registry.register(
            "events_dead_lettered",
            "Events moved to the dead-letter queue after their retry budget",
            events_dead_lettered.clone(),
        );
        let outbox_backlog = Gauge::default();
        registry.register(
            "outbox_backlog",
            "Events stored but not yet published",
            outbox_backlog.clone(),
        );
        let dlq_size = Gauge::default();
        registry.register(
            "dlq_size",
            "Events in the dead-letter queue",
            dlq_size.clone(),
        );
        let http_rejected = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "http_rejected",
            "Requests refused before reaching a source (too large, timeout, shed, bad request)",
            http_rejected.clone(),
        );
        let reloads = Family::<ResultLabel, Counter>::default();
        registry.register(
            "reloads",
            "Reload attempts, whatever their trigger, by result (applied, unchanged, validated, rejected)",
            reloads.clone(),
        );
        let reload_rejections = Gauge::default();
        registry.register(
            "reload_rejections",
            "What the last reload attempt rejected (plugins that failed to load or pass their fixtures, config errors); 0 after a success",
            reload_rejections.clone(),
        );
        let last_reload_success = Gauge::default();
        registry.register_with_unit(
            "last_reload_success_timestamp",
            "Unix time of the last reload that applied or found nothing to change",
            Unit::Seconds,
            last_reload_success.clone(),
        );
        let secret_matches = Family::<SecretLabel, Counter>::default();
        registry.register(
            "secret_matches",
            "Verified webhooks by source and the secret that matched (its fingerprint: the first 8 bytes of its SHA-256, hex)",
            secret_matches.clone(),
        );
        let breaker_state = Family::<SubjectLabel, Gauge>::default();
        registry.register(
            "breaker_state",
            "Circuit breaker of each bus subject published lately: 0 closed, 1 half-open, 2 open",
            breaker_state.clone(),
        );
        let breaker_transitions = Family::<BreakerTransition, Counter>::default();
        registry.register(
            "breaker_transitions",
            "Circuit breaker changes of state, by subject and state entered",
            breaker_transitions.clone(),
        );
        let entries_purged = Counter::default();
        registry.register(
            "entries_purged",
            "Published webhook entries (with their events) removed by the retention purge",
            entries_purged.clone(),
        );
        let replays = Family::<ReplayLabel, Counter>::default();
        registry.register(
            "replays",
            "Webhooks replayed by an operator, by kind (remap, requeue) and outcome",
            replays.clone(),
        );
        registry.register(
            "build",
            "hookgate build information",
            Info::new(VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        Self {
            registry,
            webhooks_received,
            request_duration,
            plugin_call_duration,
            plugin_failures,
            dedupe_hits,
            dedupe_errors,
            dedupe_lookup_duration,
            storage_queue_wait,
            storage_batch_size,
            storage_commit_duration,
            events_published,
            publish_duration,
            publish_failures,
            events_dead_lettered,
            outbox_backlog,
            dlq_size,
            outbox_counted_at_ms: std::sync::atomic::AtomicI64::new(0),
            storage_write_failed_at_ms: std::sync::atomic::AtomicI64::new(0),
            http_rejected,
            reloads,
            reload_rejections,
            last_reload_success,
            secret_matches,
            breaker_state,
            breaker_transitions,
            entries_purged,
            replays,
        }
    }

    /// Counts one reload attempt.
    pub fn reload(&self, result: &'static str, rejections: usize) {
        self.reloads.get_or_create(&ResultLabel { result }).inc();
        self.reload_rejections
            .set(i64::try_from(rejections).unwrap_or(i64::MAX));
    }

    pub fn reload_succeeded(&self, at: chrono::DateTime<chrono::Utc>) {
        self.last_reload_success.set(at.timestamp());
    }

    pub fn webhook(&self, source: &str, outcome: &'static str) {
        self.webhooks_received
            .get_or_create(&SourceOutcome {
                source: source.to_owned(),
                outcome,
            })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prefixed_and_labelled() {
        let metrics = Metrics::new();
        metrics.webhook("shopify", "accepted");
        metrics.webhook("shopify", "accepted");
        let text = metrics.encode();
        assert!(
            text.contains(
                "hookgate_webhooks_received_total{source=\"shopify\",outcome=\"accepted\"} 2"
            ),
            "{text}"
        );
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            assert!(line.starts_with("hookgate_"), "unprefixed metric: {line}");
        }
    }

    /// The names operators query: a counter's samples end in `_total`, an info's in
    /// `_info`, the others keep the family's name. A labelled family is exported only once
    /// it has a child, so each gets one here.
    fn exported_names() -> std::collections::BTreeSet<String> {
        let metrics = Metrics::new();
        let source = SourceLabel {
            source: "shopify".into(),
        };
        let plugin = PluginLabel {
            plugin: "shopify".into(),
        };
        let reason = ReasonLabel { reason: "any" };
        metrics.webhook("shopify", "accepted");
        metrics.request_duration.get_or_create(&source).observe(0.0);
        metrics
            .plugin_call_duration
            .get_or_create(&plugin)
            .observe(0.0);
        metrics
            .plugin_failures
            .get_or_create(&PluginFailure {
                plugin: "shopify".into(),
                kind: "trap",
            })
            .inc();
        metrics.dedupe_hits.get_or_create(&source).inc();
        metrics.publish_failures.get_or_create(&reason).inc();
        metrics.http_rejected.get_or_create(&reason).inc();
        metrics.reload("applied", 0);
        metrics
            .secret_matches
            .get_or_create(&SecretLabel {
                source: "shopify".into(),
                secret: "0".into(),
            })
            .inc();
        metrics
            .breaker_state
            .get_or_create(&SubjectLabel {
                subject: "webhooks.shopify.order.created".into(),
            })
            .set(0);
        metrics
            .breaker_transitions
            .get_or_create(&BreakerTransition {
                subject: "webhooks.shopify.order.created".into(),
                to: "open",
            })
            .inc();
        metrics
            .replays
            .get_or_create(&ReplayLabel {
                kind: "remap",
                outcome: "queued",
            })
            .inc();
        metrics
            .encode()
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|declaration| {
                let (name, kind) = declaration.split_once(' ')?;
                Some(match kind {
                    "counter" => format!("{name}_total"),
                    "info" => format!("{name}_info"),
                    _ => name.to_owned(),
                })
            })
            .collect()
    }

    #[test]
    fn the_readme_lists_every_metric_and_no_other() {
        let readme = include_str!("../../README.md");
        let section = readme
            .split("\n## Metrics\n")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .expect("README.md has a Metrics section");
        let listed: std::collections::BTreeSet<String> = section
            .split('`')
            .filter(|word| word.starts_with("hookgate_"))
            .map(str::to_owned)
            .collect();
        assert_eq!(listed, exported_names());
    }
}
