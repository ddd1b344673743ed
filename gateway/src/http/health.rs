//! Health: the full report (`/api/v1/health`) and readiness (`/health/ready`).
//! Storage and plugins decide readiness; the dedupe cache and the bus only degrade,
//! since ingestion goes on without them.

use std::time::Duration;

use http::StatusCode;
use serde_json::json;

use super::State;
use super::error::{HttpResponse, json_response};
use crate::publish::breaker::{NotClosed, State as BreakerState};

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

async fn probe<E: std::fmt::Display>(
    check: impl Future<Output = Result<(), E>>,
) -> Result<(), String> {
    match tokio::time::timeout(PROBE_TIMEOUT, check).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("no answer within 2 s".to_owned()),
    }
}

fn component(kind: &str, result: &Result<(), String>) -> serde_json::Value {
    match result {
        Ok(()) => json!({ "status": "ok", "kind": kind }),
        Err(error) => json!({ "status": "down", "kind": kind, "error": error }),
    }
}

pub async fn full(state: &State) -> HttpResponse {
    let (storage, dedupe, bus) = tokio::join!(
        probe(state.store.ping()),
        probe(state.dedupe.ping()),
        probe(state.sink.ping()),
    );
    let sources = state.pipeline.sources();
    let (plugins, load_errors) = super::plugin_listing(state);
    let outbox = outbox_json(&state.metrics, chrono::Utc::now().timestamp_millis());
    let reloads = state.reloader.status();
    let breakers = state.breakers.not_closed(std::time::Instant::now());
    let any_open = breakers.iter().any(|b| b.state == BreakerState::Open);
    let status = if storage.is_err() || plugins.is_empty() {
        "down"
    } else if dedupe.is_err()
        || bus.is_err()
        || !load_errors.is_empty()
        || any_open
        || reloads.last_rejected.is_some()
    {
        "degraded"
    } else {
        "ok"
    };
    let code = if status == "down" {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    json_response(
        code,
        &json!({
            "status": status,
            "version": env!("CARGO_PKG_VERSION"),
            "storage": component(state.store.kind(), &storage),
            "dedupe": component(state.dedupe.kind(), &dedupe),
            "bus": component(state.sink.kind(), &bus),
            "plugins": plugins,
            "plugin_errors": load_errors,
            "sources": sources.keys().collect::<Vec<_>>(),
            "outbox": outbox,
            "reload": {
                "last_result": reloads.last.as_ref().map(|r| r.result),
                "last_at": reloads.last.as_ref().map(|r| r.at),
                "last_success_at": reloads.last_success_at,
                "rejected": reloads.last_rejected.as_ref().map(|r| &r.rejected),
            },
            "breakers": breakers_json(&breakers),
        }),
    )
}

/// How long counts of the relay stay "ok"; it counts every 5 s, so older ones mean it is
/// stuck or the storage does not answer its count.
const OUTBOX_COUNT_FRESH_MS: i64 = 30_000;

/// The outbox backlog and DLQ size as the relay last counted them, with their age: the
/// report is unauthenticated, so it must not cost the storage two `count(*)` per request.
fn outbox_json(metrics: &crate::metrics::Metrics, now_ms: i64) -> serde_json::Value {
    let at = metrics
        .outbox_counted_at_ms
        .load(std::sync::atomic::Ordering::Acquire);
    if at == 0 {
        return json!({ "status": "unknown", "error": "not counted yet" });
    }
    let age_ms = now_ms.saturating_sub(at).max(0);
    json!({
        "status": if age_ms <= OUTBOX_COUNT_FRESH_MS { "ok" } else { "stale" },
        "backlog": metrics.outbox_backlog.get(),
        "dlq": metrics.dlq_size.get(),
        "counted_at": chrono::DateTime::from_timestamp_millis(at),
        "age_seconds": age_ms / 1000,
    })
}

/// The breakers that are not closed (an open one holds its subject's events back).
fn breakers_json(breakers: &[NotClosed]) -> serde_json::Value {
    serde_json::Value::Array(
        breakers
            .iter()
            .map(|b| {
                let mut item = json!({ "subject": b.subject, "state": b.state.as_str() });
                if let Some(retry_in) = b.retry_in {
                    item["retry_in_seconds"] = json!(retry_in.as_secs_f64().ceil() as u64);
                }
                item
            })
            .collect(),
    )
}

/// How long readiness stays withdrawn after a failed storage batch. Not until the next
/// success: a balancer that stops sending would then never see one. After this the node
/// takes traffic again, and a write that still fails withdraws it again.
const WRITE_FAILURE_HOLD_MS: i64 = 5_000;

pub async fn ready(state: &State) -> HttpResponse {
    let storage = probe(state.store.ping()).await.and_then(|()| {
        writes_failing(
            state
                .metrics
                .storage_write_failed_at_ms
                .load(std::sync::atomic::Ordering::Acquire),
            chrono::Utc::now().timestamp_millis(),
        )
    });
    let plugins_loaded = !state.pipeline.plugins().list().is_empty();
    match (storage, plugins_loaded) {
        (Ok(()), true) => json_response(StatusCode::OK, &json!({ "status": "ready" })),
        (storage, plugins_loaded) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({
                "status": "not_ready",
                "storage": storage.err().unwrap_or_else(|| "ok".to_owned()),
                "plugins_loaded": plugins_loaded,
            }),
        ),
    }
}

/// A store that answers pings may still refuse writes (a full disk): the last batch's
/// outcome tells, for `WRITE_FAILURE_HOLD_MS`.
fn writes_failing(failed_at_ms: i64, now_ms: i64) -> Result<(), String> {
    if failed_at_ms != 0 && now_ms.saturating_sub(failed_at_ms) < WRITE_FAILURE_HOLD_MS {
        Err(format!(
            "the last storage write failed {} ms ago",
            now_ms.saturating_sub(failed_at_ms).max(0)
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{outbox_json, writes_failing};
    use crate::metrics::Metrics;
    use std::sync::atomic::Ordering;

    #[test]
    fn outbox_counts_come_from_the_relay_with_their_age() {
        let metrics = Metrics::new();
        assert_eq!(outbox_json(&metrics, 1_000_000)["status"], "unknown");
        metrics.outbox_backlog.set(7);
        metrics.dlq_size.set(2);
        metrics
            .outbox_counted_at_ms
            .store(1_000_000, Ordering::Release);
        let fresh = outbox_json(&metrics, 1_004_000);
        assert_eq!(fresh["status"], "ok");
        assert_eq!(fresh["backlog"], 7);
        assert_eq!(fresh["dlq"], 2);
        assert_eq!(fresh["age_seconds"], 4);
        assert_eq!(outbox_json(&metrics, 1_100_000)["status"], "stale");
    }

    #[test]
    fn a_failed_write_withdraws_readiness_for_a_while() {
        assert!(writes_failing(0, 1_000_000).is_ok(), "never failed");
        let failed = writes_failing(1_000_000, 1_001_200).unwrap_err();
        assert!(failed.contains("1200 ms ago"), "{failed}");
        assert!(writes_failing(1_000_000, 1_004_999).is_err());
        assert!(
            writes_failing(1_000_000, 1_005_000).is_ok(),
            "held 5 s, then ready"
        );
    }
}
