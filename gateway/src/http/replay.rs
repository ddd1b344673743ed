//! The admin API's replay and dead-letter endpoints (behind the admin token, routed by
//! `admin.rs`): replay one webhook or many by filter (with a dry run), list and replay the
//! dead-letter queue, and follow bulk replays as jobs.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use http::{HeaderValue, StatusCode};
use serde_json::json;
use uuid::Uuid;

use super::State;
use super::admin::{
    DEFAULT_PAGE, MAX_PAGE, decode_cursor, encode_cursor, entry_filter_param, parse_limit,
    parse_query, parse_time, storage_error, unknown_parameter,
};
use super::error::{ApiError, HttpResponse, json_response};
use crate::ingest::replay::{Remap, Selection, job_state, token_fingerprint};
use crate::store::{
    DeadCursor, DeadFilter, DeadKind, DeadLetter, EntryFilter, ReplayFilter, ReplayJob,
    ReplayOutcome, ReplayRecord, StoredEntry,
};

/// Webhooks a dry run previews per page: each is a plugin call.
const DRY_RUN_PAGE: u32 = 20;
const MAX_DRY_RUN_PAGE: u32 = 100;
/// Replay records shown with a webhook.
const REPLAYS_SHOWN: u32 = 100;

/// Who asks: the fingerprint of the configured token, which the request's matched.
fn requester(state: &State) -> String {
    token_fingerprint(state.admin_token.as_deref().unwrap_or_default())
}

fn parse_bool(key: &str, value: &str) -> Result<bool, ApiError> {
    match value {
        "true" | "1" | "" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(ApiError::bad_request(format!(
            "`{key}` must be true or false"
        ))),
    }
}

fn parse_uuid(value: &str, what: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(value).map_err(|_| ApiError::bad_request(format!("the {what} must be a UUID")))
}

fn not_found(message: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
}

fn check_range(since: Option<DateTime<Utc>>, until: Option<DateTime<Utc>>) -> Result<(), ApiError> {
    match (since, until) {
        (Some(since), Some(until)) if since >= until => Err(ApiError::bad_request(
            "`since` must be earlier than `until`",
        )),
        _ => Ok(()),
    }
}

/// `POST /webhooks/{id}/replay[?dry_run=true]`.
pub async fn one(state: &State, id: &str, query: &str) -> Result<HttpResponse, ApiError> {
    let mut dry_run = false;
    for (key, value) in parse_query(query) {
        match key.as_str() {
            "dry_run" => dry_run = parse_bool("dry_run", &value)?,
            other => return Err(unknown_parameter(other)),
        }
    }
    let id = parse_uuid(id, "webhook id")?;
    let (entry, _) = state
        .store
        .get_entry(id)
        .await
        .map_err(storage_error)?
        .ok_or_else(|| not_found("no webhook with this id"))?;
    if dry_run {
        let remap = state.pipeline.remap_stored(&entry, Uuid::now_v7()).await;
        return Ok(json_response(
            StatusCode::OK,
            &json!({ "dry_run": true, "webhook": preview(&entry, &remap) }),
        ));
    }
    let record = state
        .pipeline
        .replay_entry(&state.store, &entry, &requester(state), None)
        .await
        .map_err(storage_error)?
        .ok_or_else(|| not_found("no webhook with this id"))?;
    if record.outcome == ReplayOutcome::Failed {
        // Recorded, but nothing was published: the answer says so in its status.
        let code = if record.plugin.is_none() {
            "source_unavailable"
        } else {
            "map_failed"
        };
        let message = record.error.clone().unwrap_or_default();
        return Ok(json_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!({ "error": code, "message": message, "replay": record_json(&record) }),
        ));
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({ "replay": record_json(&record) }),
    ))
}

/// `POST /webhooks/replay?<filters>[&dry_run=true]`: a job, or a page of previews.
pub async fn bulk(state: &State, query: &str) -> Result<HttpResponse, ApiError> {
    let mut filter = EntryFilter::default();
    let mut given = serde_json::Map::new();
    let mut dry_run = false;
    let mut all = false;
    let mut after = None;
    let mut limit = None;
    for (key, value) in parse_query(query) {
        match key.as_str() {
            "dry_run" => dry_run = parse_bool("dry_run", &value)?,
            "all" => all = parse_bool("all", &value)?,
            "cursor" => after = Some(decode_cursor(&value)?),
            "limit" => limit = Some(parse_limit(&value, MAX_DRY_RUN_PAGE)?),
            other => {
                if !entry_filter_param(&mut filter, other, value.clone())? {
                    return Err(unknown_parameter(other));
                }
                given.insert(other.to_owned(), json!(value));
            }
        }
    }
    check_range(filter.since, filter.until)?;
    // A bare POST must not re-publish every webhook ever stored.
    if given.is_empty() && !all {
        return Err(ApiError::bad_request(
            "a bulk replay needs a filter (source, status, tenant, since, until, plugin, \
             plugin_version), or all=true to replay every stored webhook",
        ));
    }
    if dry_run {
        let limit = limit.unwrap_or(DRY_RUN_PAGE);
        let mut entries = state
            .store
            .list_entries_oldest_first(&filter, after, limit + 1)
            .await
            .map_err(storage_error)?;
        let more = entries.len() > limit as usize;
        entries.truncate(limit as usize);
        let mut items = Vec::with_capacity(entries.len());
        for entry in &entries {
            let remap = state.pipeline.remap_stored(entry, Uuid::now_v7()).await;
            items.push(preview(entry, &remap));
        }
        let next_cursor = if more {
            entries.last().map(encode_cursor)
        } else {
            None
        };
        return Ok(json_response(
            StatusCode::OK,
            &json!({ "dry_run": true, "items": items, "next_cursor": next_cursor }),
        ));
    }
    if after.is_some() || limit.is_some() {
        return Err(ApiError::bad_request(
            "`cursor` and `limit` page a dry run; a replay job takes every matching webhook",
        ));
    }
    if all {
        given.insert("all".into(), json!(true));
    }
    start_job(state, Selection::Webhooks(filter), given).await
}

async fn start_job(
    state: &State,
    selection: Selection,
    given: serde_json::Map<String, serde_json::Value>,
) -> Result<HttpResponse, ApiError> {
    let filter_json = serde_json::Value::Object(given).to_string();
    let job = state
        .pipeline
        .start_replay_job(
            state.store.clone(),
            selection,
            filter_json,
            requester(state),
        )
        .await
        .map_err(storage_error)?;
    let mut response = json_response(StatusCode::ACCEPTED, &json!({ "job": job_json(&job) }));
    if let Ok(location) = HeaderValue::from_str(&format!("/api/v1/admin/replays/{}", job.id)) {
        response
            .headers_mut()
            .insert(http::header::LOCATION, location);
    }
    Ok(response)
}

/// The filters the dead-letter endpoints share.
fn dead_filter_param(filter: &mut DeadFilter, key: &str, value: String) -> Result<bool, ApiError> {
    match key {
        "source" => filter.source = Some(value),
        "tenant" => filter.tenant = Some(value),
        "since" => filter.since = Some(parse_time("since", &value)?),
        "until" => filter.until = Some(parse_time("until", &value)?),
        _ => return Ok(false),
    }
    Ok(true)
}

/// `GET /dlq?source&tenant&since&until&kind&cursor&limit`.
pub async fn list_dlq(state: &State, query: &str) -> Result<HttpResponse, ApiError> {
    let mut filter = DeadFilter::default();
    let mut after = None;
    let mut limit = DEFAULT_PAGE;
    for (key, value) in parse_query(query) {
        match key.as_str() {
            "kind" => {
                filter.kind = Some(
                    DeadKind::parse(&value)
                        .ok_or_else(|| ApiError::bad_request("`kind` must be event or webhook"))?,
                )
            }
            "cursor" => after = Some(decode_dead_cursor(&value)?),
            "limit" => limit = parse_limit(&value, MAX_PAGE)?,
            other => {
                if !dead_filter_param(&mut filter, other, value)? {
                    return Err(unknown_parameter(other));
                }
            }
        }
    }
    check_range(filter.since, filter.until)?;
    let mut items = state
        .store
        .dead_letters(&filter, after.as_ref(), limit + 1)
        .await
        .map_err(storage_error)?;
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    let next_cursor = if more {
        items.last().map(|item| encode_dead_cursor(&item.cursor()))
    } else {
        None
    };
    let items: Vec<serde_json::Value> = items.iter().map(dead_letter_json).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "items": items, "next_cursor": next_cursor }),
    ))
}

/// `POST /dlq/replay?event_id=...` (at once) or `?<filters>` / `?all=true` (a job).
pub async fn replay_dlq(state: &State, query: &str) -> Result<HttpResponse, ApiError> {
    let mut filter = DeadFilter::default();
    let mut given = serde_json::Map::new();
    let mut event_id = None;
    let mut all = false;
    for (key, value) in parse_query(query) {
        match key.as_str() {
            "event_id" if value.is_empty() => {
                return Err(ApiError::bad_request("`event_id` must not be empty"));
            }
            "event_id" => event_id = Some(value),
            "all" => all = parse_bool("all", &value)?,
            "kind" => {
                return Err(ApiError::bad_request(
                    "the dead-letter replay re-queues dead events; webhooks stored as failed \
                     are replayed with POST /api/v1/admin/webhooks/replay?status=failed",
                ));
            }
            other => {
                if !dead_filter_param(&mut filter, other, value.clone())? {
                    return Err(unknown_parameter(other));
                }
                given.insert(other.to_owned(), json!(value));
            }
        }
    }
    check_range(filter.since, filter.until)?;
    if let Some(event_id) = event_id {
        if !given.is_empty() || all {
            return Err(ApiError::bad_request(
                "`event_id` names one event: it takes no other filter",
            ));
        }
        let record = state
            .pipeline
            .requeue_dead_event(&state.store, &event_id, &requester(state))
            .await
            .map_err(storage_error)?
            .ok_or_else(|| not_found("no event with this id is in the dead-letter queue"))?;
        return Ok(json_response(
            StatusCode::OK,
            &json!({ "replay": record_json(&record) }),
        ));
    }
    if given.is_empty() && !all {
        return Err(ApiError::bad_request(
            "name a dead event (event_id), a filter (source, tenant, since, until), or \
             all=true to re-queue the whole dead-letter queue",
        ));
    }
    if all {
        given.insert("all".into(), json!(true));
    }
    start_job(state, Selection::Dlq(filter), given).await
}

/// `GET /replays?cursor&limit`: bulk replay jobs, newest first.
pub async fn list_jobs(state: &State, query: &str) -> Result<HttpResponse, ApiError> {
    let mut after = None;
    let mut limit = DEFAULT_PAGE;
    for (key, value) in parse_query(query) {
        match key.as_str() {
            "cursor" => after = Some(parse_uuid(&value, "cursor")?),
            "limit" => limit = parse_limit(&value, MAX_PAGE)?,
            other => return Err(unknown_parameter(other)),
        }
    }
    let mut jobs = state
        .store
        .list_replay_jobs(after, limit + 1)
        .await
        .map_err(storage_error)?;
    let more = jobs.len() > limit as usize;
    jobs.truncate(limit as usize);
    let next_cursor = if more {
        jobs.last().map(|job| job.id.to_string())
    } else {
        None
    };
    let items: Vec<serde_json::Value> = jobs.iter().map(job_json).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "items": items, "next_cursor": next_cursor }),
    ))
}

/// `GET /replays/{job_id}?cursor&limit`: the job, its progress and its replay records.
pub async fn get_job(state: &State, id: &str, query: &str) -> Result<HttpResponse, ApiError> {
    let mut after = None;
    let mut limit = DEFAULT_PAGE;
    for (key, value) in parse_query(query) {
        match key.as_str() {
            "cursor" => after = Some(parse_uuid(&value, "cursor")?),
            "limit" => limit = parse_limit(&value, MAX_PAGE)?,
            other => return Err(unknown_parameter(other)),
        }
    }
    let id = parse_uuid(id, "job id")?;
    let job = state
        .store
        .get_replay_job(id)
        .await
        .map_err(storage_error)?
        .ok_or_else(|| not_found("no replay job with this id"))?;
    let filter = ReplayFilter {
        job_id: Some(id),
        ..ReplayFilter::default()
    };
    let mut records = state
        .store
        .list_replays(&filter, after, limit + 1)
        .await
        .map_err(storage_error)?;
    let more = records.len() > limit as usize;
    records.truncate(limit as usize);
    let next_cursor = if more {
        records.last().map(|record| record.id.to_string())
    } else {
        None
    };
    let mut body = job_json(&job);
    body["replays"] = json!(records.iter().map(record_json).collect::<Vec<_>>());
    body["next_cursor"] = json!(next_cursor);
    Ok(json_response(StatusCode::OK, &body))
}

/// The replays of one webhook, for its detail view.
pub(super) async fn replays_of(
    state: &State,
    entry_id: Uuid,
) -> Result<serde_json::Value, ApiError> {
    let filter = ReplayFilter {
        entry_id: Some(entry_id),
        ..ReplayFilter::default()
    };
    let records = state
        .store
        .list_replays(&filter, None, REPLAYS_SHOWN)
        .await
        .map_err(storage_error)?;
    Ok(json!(records.iter().map(record_json).collect::<Vec<_>>()))
}

/// What a replay of `entry` would publish, or why it would fail.
fn preview(entry: &StoredEntry, remap: &Remap) -> serde_json::Value {
    let (plugin, outcome, events, error) = match remap {
        Remap::Mapped { plugin, remapped } => {
            let events: Vec<serde_json::Value> = remapped
                .events
                .iter()
                .map(|event| {
                    let envelope: serde_json::Value =
                        serde_json::from_slice(&event.envelope).unwrap_or(serde_json::Value::Null);
                    json!({
                        "id": event.id,
                        "subject": event.subject,
                        "type": envelope["type"],
                        "envelope": envelope,
                    })
                })
                .collect();
            let outcome = if events.is_empty() {
                ReplayOutcome::NoEvents
            } else {
                ReplayOutcome::Queued
            };
            (Some(plugin), outcome, events, None)
        }
        Remap::Failed { plugin, reason } => (
            plugin.as_ref(),
            ReplayOutcome::Failed,
            Vec::new(),
            Some(reason),
        ),
    };
    json!({
        "webhook_id": entry.id.to_string(),
        "source": entry.source,
        "status": entry.status.as_str(),
        "received_at": entry.received_at.to_rfc3339(),
        "plugin": plugin.map(|p| json!({ "name": p.name, "version": p.version, "sha256": p.sha256 })),
        "outcome": outcome.as_str(),
        "events": events,
        "error": error,
    })
}

fn record_json(record: &ReplayRecord) -> serde_json::Value {
    json!({
        "id": record.id.to_string(),
        "kind": record.kind.as_str(),
        "webhook_id": record.entry_id.to_string(),
        "job_id": record.job_id.map(|id| id.to_string()),
        "requested_at": record.requested_at.to_rfc3339(),
        "requested_by": record.requested_by,
        "plugin": record.plugin.as_ref().map(|p| json!({ "name": p.name, "version": p.version, "sha256": p.sha256 })),
        "event_ids": record.event_ids,
        "outcome": record.outcome.as_str(),
        "error": record.error,
    })
}

fn job_json(job: &ReplayJob) -> serde_json::Value {
    let filter: serde_json::Value =
        serde_json::from_str(&job.filter).unwrap_or_else(|_| json!(job.filter));
    json!({
        "id": job.id.to_string(),
        "kind": job.kind.as_str(),
        "filter": filter,
        "requested_by": job.requested_by,
        "status": job_state(job, Utc::now()),
        "progress": {
            "processed": job.progress.processed,
            "replayed": job.progress.replayed,
            "failed": job.progress.failed,
            "events": job.progress.events,
        },
        "created_at": job.created_at.to_rfc3339(),
        "updated_at": job.updated_at.to_rfc3339(),
        "finished_at": job.finished_at.map(|t| t.to_rfc3339()),
        "error": job.error,
    })
}

fn dead_letter_json(item: &DeadLetter) -> serde_json::Value {
    // How to re-drive it: a dead event is re-queued as it is; a failed webhook needs its
    // plugin fixed, then a replay.
    let replay = match &item.event_id {
        Some(event_id) => format!(
            "POST /api/v1/admin/dlq/replay?event_id={}",
            percent_encoding::utf8_percent_encode(event_id, percent_encoding::NON_ALPHANUMERIC)
        ),
        None => format!("POST /api/v1/admin/webhooks/{}/replay", item.entry_id),
    };
    json!({
        "kind": item.kind.as_str(),
        "webhook_id": item.entry_id.to_string(),
        "event_id": item.event_id,
        "source": item.source,
        "topic": item.topic,
        "tenant": item.tenant,
        "subject": item.subject,
        "attempts": item.attempts,
        "last_error": item.last_error,
        "received_at": item.received_at.to_rfc3339(),
        "plugin": item.plugin,
        "plugin_version": item.plugin_version,
        "replay": replay,
    })
}

fn encode_dead_cursor(cursor: &DeadCursor) -> String {
    URL_SAFE_NO_PAD.encode(format!(
        "{}|{}|{}",
        cursor.received_at.timestamp_micros(),
        cursor.entry_id,
        cursor.event_id
    ))
}

fn decode_dead_cursor(text: &str) -> Result<DeadCursor, ApiError> {
    let invalid = || ApiError::bad_request("`cursor` is not a cursor this API returned");
    let raw = URL_SAFE_NO_PAD.decode(text).map_err(|_| invalid())?;
    let raw = String::from_utf8(raw).map_err(|_| invalid())?;
    let mut parts = raw.splitn(3, '|');
    let (Some(micros), Some(entry), Some(event)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid());
    };
    let micros: i64 = micros.parse().map_err(|_| invalid())?;
    Ok(DeadCursor {
        received_at: DateTime::from_timestamp_micros(micros).ok_or_else(invalid)?,
        entry_id: Uuid::parse_str(entry).map_err(|_| invalid())?,
        event_id: event.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_cursor_round_trip_and_garbage() {
        let cursor = DeadCursor {
            received_at: DateTime::from_timestamp_micros(1_764_000_000_123_456).expect("time"),
            entry_id: Uuid::now_v7(),
            event_id: "0190-abc|with-bar".into(),
        };
        assert_eq!(
            decode_dead_cursor(&encode_dead_cursor(&cursor)).expect("cursor"),
            cursor
        );
        assert!(decode_dead_cursor("garbage").is_err());
        assert!(decode_dead_cursor(&URL_SAFE_NO_PAD.encode("1|not-a-uuid|x")).is_err());
    }

    #[test]
    fn booleans_and_ranges() {
        assert!(parse_bool("dry_run", "true").expect("bool"));
        assert!(!parse_bool("dry_run", "0").expect("bool"));
        assert_eq!(
            parse_bool("dry_run", "yes").expect_err("refused").status,
            StatusCode::BAD_REQUEST
        );
        let t = Utc::now();
        assert!(check_range(Some(t), Some(t)).is_err());
        assert!(check_range(Some(t), None).is_ok());
    }
}
