//! The dry run's diff: the last stored webhooks of each source a candidate changes,
//! re-mapped through the version serving now and through the candidate, compared. An
//! operator sees what a new plugin version would change before it serves a single webhook.

use std::sync::Arc;

use serde::Serialize;
use serde_json::{Value, json};

use crate::ingest::replay::stored_request;
use crate::ingest::{SourceRuntime, SourceTable};
use crate::plugin::{MapFailure, MapOutcome, OwnedCallInput};
use crate::store::{EntryFilter, Store, StoredEntry};

/// Webhooks re-mapped per source unless the caller says otherwise.
pub const DEFAULT_SAMPLE: u32 = 100;
/// At most this many per source, so a dry run stays a quick look.
pub const MAX_SAMPLE: u32 = 1000;
/// Differences and new failures listed per source; the counts cover all.
const LISTED: usize = 20;

/// What the candidate makes of one source's recent webhooks.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SourcePreview {
    pub source: String,
    pub sampled: usize,
    /// Same mapping (topic, tenant, idempotency key, events) as now.
    pub same: usize,
    /// Mapped, but differently: both shown.
    pub different: usize,
    /// Mapped now, failing with the candidate.
    pub now_failing: usize,
    /// Failing now, mapped by the candidate.
    pub now_mapping: usize,
    /// Failing both ways.
    pub still_failing: usize,
    /// Up to 20 differing or newly failing webhooks.
    pub changes: Vec<Value>,
}

/// Re-maps the last `sample` stored webhooks of every source of `candidate` whose plugin or
/// settings differ from `running`'s through both. Sources new in the candidate have no
/// webhooks yet; sources it removes have nothing to compare with.
pub async fn remap_recent(
    store: &Arc<dyn Store>,
    running: &SourceTable,
    candidate: &SourceTable,
    changed: &[String],
    sample: u32,
) -> Vec<SourcePreview> {
    let mut previews = Vec::new();
    for name in changed {
        let (Some(now), Some(next)) = (running.get(name), candidate.get(name)) else {
            continue;
        };
        let filter = EntryFilter {
            source: Some(name.clone()),
            ..EntryFilter::default()
        };
        let mut preview = SourcePreview {
            source: name.clone(),
            ..SourcePreview::default()
        };
        let entries = match store.list_entries(&filter, None, sample).await {
            Ok(entries) => entries,
            Err(error) => {
                preview
                    .changes
                    .push(json!({ "error": format!("cannot read stored webhooks: {error}") }));
                previews.push(preview);
                continue;
            }
        };
        for entry in &entries {
            let before = remap(now, entry).await;
            let after = remap(next, entry).await;
            preview.sampled += 1;
            let change = match (&before, &after) {
                (Ok(a), Ok(b)) if a == b => {
                    preview.same += 1;
                    None
                }
                (Ok(a), Ok(b)) => {
                    preview.different += 1;
                    Some(json!({ "id": entry.id, "change": "different", "before": a, "after": b }))
                }
                (Ok(a), Err(reason)) => {
                    preview.now_failing += 1;
                    Some(
                        json!({ "id": entry.id, "change": "now_failing", "before": a, "error": reason }),
                    )
                }
                (Err(_), Ok(_)) => {
                    preview.now_mapping += 1;
                    None
                }
                (Err(_), Err(_)) => {
                    preview.still_failing += 1;
                    None
                }
            };
            if let Some(change) = change
                && preview.changes.len() < LISTED
            {
                preview.changes.push(change);
            }
        }
        previews.push(preview);
    }
    previews
}

/// What `source`'s plugin makes of a stored webhook, as comparable JSON, or why it fails.
async fn remap(source: &Arc<SourceRuntime>, entry: &StoredEntry) -> Result<Value, String> {
    let input = OwnedCallInput {
        request: stored_request(entry),
        credentials: Default::default(),
        settings: source.settings.clone(),
        now_unix_seconds: Some(entry.received_at.timestamp()),
        correlation_id: entry.correlation_id.clone(),
    };
    match source.plugin.map_stored_async(input).await {
        Ok(MapOutcome::Events(mapping)) => Ok(json!({
            "topic": mapping.topic,
            "tenant": mapping.tenant,
            "idempotency_key": mapping.idempotency_key,
            "events": mapping.events.iter().map(|event| json!({
                "type": event.event_type,
                "subject": event.subject,
                "data": event.data.as_deref().map(|text| {
                    serde_json::from_str::<Value>(text).unwrap_or_else(|_| Value::String(text.to_owned()))
                }),
            })).collect::<Vec<_>>(),
        })),
        Ok(MapOutcome::Respond(handshake)) => Ok(json!({ "handshake": handshake.status })),
        Err(MapFailure::Plugin(error)) => Err(error.to_string()),
        Err(MapFailure::Fault(fault)) => Err(format!("plugin fault: {fault}")),
    }
}
