//! The admin API. Every path under `/api/v1/admin/` answers 401 without the configured
//! bearer token (compared in constant time), so nothing about it leaks; with no token
//! configured it answers 401 to everything.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::State;
use super::error::{ApiError, HttpResponse, json_response, method_not_allowed};
use crate::store::{Cursor, EntryFilter, EntryStatus, StoredEntry, StoredEvent};

pub(super) const DEFAULT_PAGE: u32 = 50;
pub(super) const MAX_PAGE: u32 = 500;

/// Compares digests so neither the token's length nor its content shows in the timing.
fn authorized(expected: Option<&str>, header: Option<&str>) -> bool {
    let (Some(expected), Some(header)) = (expected, header) else {
        return false;
    };
    let Some(given) = header.strip_prefix("Bearer ") else {
        return false;
    };
    let expected = Sha256::digest(expected.as_bytes());
    let given = Sha256::digest(given.trim().as_bytes());
    expected.ct_eq(&given).into()
}

pub async fn handle(state: &State, request: Request<Incoming>, path: &str) -> HttpResponse {
    let header = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !authorized(state.admin_token.as_deref(), header) {
        let mut response =
            ApiError::unauthorized("a valid admin bearer token is required").into_response();
        response.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        );
        return response;
    }
    let rest = path.trim_start_matches("/api/v1/admin").trim_matches('/');
    let segments: Vec<&str> = if rest.is_empty() {
        Vec::new()
    } else {
        rest.split('/').collect()
    };
    let method = request.method().clone();
    let query = request.uri().query().unwrap_or("").to_owned();
    let result = match (segments.as_slice(), &method) {
        (["webhooks"], &Method::GET) => list_webhooks(state, &query).await,
        (["webhooks", "replay"], &Method::POST) => super::replay::bulk(state, &query).await,
        (["webhooks", "replay"], _) => return method_not_allowed("POST"),
        (["webhooks", id], &Method::GET) => get_webhook(state, id).await,
        (["webhooks", id, "replay"], &Method::POST) => super::replay::one(state, id, &query).await,
        (["dlq"], &Method::GET) => super::replay::list_dlq(state, &query).await,
        (["dlq", "replay"], &Method::POST) => super::replay::replay_dlq(state, &query).await,
        (["replays"], &Method::GET) => super::replay::list_jobs(state, &query).await,
        (["replays", id], &Method::GET) => super::replay::get_job(state, id, &query).await,
        (["plugins"], &Method::GET) => Ok(list_plugins(state)),
        (["sources"], &Method::GET) => Ok(list_sources(state)),
        (["stats"], &Method::GET) => Ok(super::console::stats(state)),
        (["stats"], _) => return method_not_allowed("GET"),
        (["sources"], _) => return method_not_allowed("GET"),
        (["secrets"], &Method::GET) => super::secrets::list(state, &parse_query(&query)).await,
        (["secrets"], &Method::POST) => super::secrets::add(state, request).await,
        (["secrets"], _) => return method_not_allowed("GET, POST"),
        (["secrets", source, tenant, id], &Method::DELETE) => {
            super::secrets::remove(state, source, tenant, id).await
        }
        (["secrets", _, _, _], _) => return method_not_allowed("DELETE"),
        (["reload"], &Method::POST) => reload(state, &query).await,
        (["reload"], _) => return method_not_allowed("POST"),
        (["webhooks", _, "replay"] | ["dlq", "replay"], _) => {
            return method_not_allowed("POST");
        }
        (["webhooks" | "plugins" | "dlq" | "replays"], _)
        | (["webhooks", _] | ["replays", _], _) => return method_not_allowed("GET"),
        _ => Err(ApiError::not_found()),
    };
    result.unwrap_or_else(ApiError::into_response)
}

pub(super) fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |text: &str| {
                percent_encoding::percent_decode_str(&text.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(key), decode(value))
        })
        .collect()
}

pub(super) fn parse_time(key: &str, value: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| ApiError::bad_request(format!("`{key}` must be an RFC 3339 date-time")))
}

pub(super) fn encode_cursor(entry: &StoredEntry) -> String {
    URL_SAFE_NO_PAD.encode(format!(
        "{}|{}",
        entry.received_at.timestamp_micros(),
        entry.id
    ))
}

pub(super) fn decode_cursor(text: &str) -> Result<Cursor, ApiError> {
    let invalid = || ApiError::bad_request("`cursor` is not a cursor this API returned");
    let raw = URL_SAFE_NO_PAD.decode(text).map_err(|_| invalid())?;
    let raw = String::from_utf8(raw).map_err(|_| invalid())?;
    let (micros, id) = raw.split_once('|').ok_or_else(invalid)?;
    let micros: i64 = micros.parse().map_err(|_| invalid())?;
    Ok(Cursor {
        received_at: DateTime::from_timestamp_micros(micros).ok_or_else(invalid)?,
        id: Uuid::parse_str(id).map_err(|_| invalid())?,
    })
}

/// Reads one of the listing's filters into `filter`; false when `key` is none of them.
/// Bulk replay takes the same filters.
pub(super) fn entry_filter_param(
    filter: &mut EntryFilter,
    key: &str,
    value: String,
) -> Result<bool, ApiError> {
    match key {
        "source" => filter.source = Some(value),
        "tenant" => filter.tenant = Some(value),
        "plugin" => filter.plugin = Some(value),
        "plugin_version" => filter.plugin_version = Some(value),
        "status" => {
            filter.status = Some(EntryStatus::parse(&value).ok_or_else(|| {
                ApiError::bad_request("`status` must be one of accepted, published, failed, dead")
            })?)
        }
        "since" => filter.since = Some(parse_time("since", &value)?),
        "until" => filter.until = Some(parse_time("until", &value)?),
        _ => return Ok(false),
    }
    Ok(true)
}

pub(super) fn parse_limit(value: &str, max: u32) -> Result<u32, ApiError> {
    value
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| ApiError::bad_request(format!("`limit` must be between 1 and {max}")))
}

pub(super) fn unknown_parameter(key: &str) -> ApiError {
    ApiError::bad_request(format!("unknown query parameter `{key}`"))
}

async fn list_webhooks(state: &State, query: &str) -> Result<HttpResponse, ApiError> {
    let mut filter = EntryFilter::default();
    let mut after = None;
    let mut limit = DEFAULT_PAGE;
    for (key, value) in parse_query(query) {
        match key.as_str() {
            "cursor" => after = Some(decode_cursor(&value)?),
            "limit" => limit = parse_limit(&value, MAX_PAGE)?,
            other => {
                if !entry_filter_param(&mut filter, other, value)? {
                    return Err(unknown_parameter(other));
                }
            }
        }
    }
    let mut entries = state
        .store
        .list_entries(&filter, after, limit + 1)
        .await
        .map_err(storage_error)?;
    let more = entries.len() > limit as usize;
    entries.truncate(limit as usize);
    let next_cursor = if more {
        entries.last().map(encode_cursor)
    } else {
        None
    };
    let items: Vec<serde_json::Value> = entries.iter().map(entry_summary).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "items": items, "next_cursor": next_cursor }),
    ))
}

async fn get_webhook(state: &State, id: &str) -> Result<HttpResponse, ApiError> {
    let id =
        Uuid::parse_str(id).map_err(|_| ApiError::bad_request("the webhook id must be a UUID"))?;
    let (entry, events) = state
        .store
        .get_entry(id)
        .await
        .map_err(storage_error)?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no webhook with this id",
            )
        })?;
    let mut body = entry_summary(&entry);
    body["headers"] = match entry.headers_error {
        None => json!(entry.headers),
        Some(_) => serde_json::Value::Null,
    };
    body["headers_error"] = json!(entry.headers_error);
    match std::str::from_utf8(&entry.body) {
        Ok(text) => body["body"] = json!(text),
        Err(_) => body["body_base64"] = json!(STANDARD.encode(&entry.body)),
    }
    body["events"] = json!(events.iter().map(event_detail).collect::<Vec<_>>());
    body["replays"] = super::replay::replays_of(state, entry.id).await?;
    Ok(json_response(StatusCode::OK, &body))
}

fn list_plugins(state: &State) -> HttpResponse {
    let (plugins, errors) = super::plugin_listing(state);
    let reloads = state.reloader.status();
    json_response(
        StatusCode::OK,
        &json!({
            "plugins": plugins,
            "load_errors": errors,
            "rejected": reloads.last_rejected.as_ref().map(|r| &r.rejected),
            "last_reload": reloads.last,
            "last_reload_success_at": reloads.last_success_at,
        }),
    )
}

/// The sources serving now: their plugin build and, per secret, only its fingerprint and
/// when it last matched (rotation: an old secret that stopped matching can go).
fn list_sources(state: &State) -> HttpResponse {
    let sources = state.pipeline.sources();
    let mut names: Vec<&String> = sources.keys().collect();
    names.sort();
    let listed: Vec<serde_json::Value> = names
        .into_iter()
        .filter_map(|name| sources.get(name))
        .map(|source| {
            let metadata = source.plugin.metadata();
            let secrets: Vec<serde_json::Value> = source
                .secret_ids
                .iter()
                .map(|id| {
                    let used = state.pipeline.secret_use(&source.name, id);
                    json!({
                        "id": id,
                        "matches": used.map_or(0, |u| u.matches),
                        "last_matched_at": used.map(|u| u.last_matched_at),
                    })
                })
                .collect();
            json!({
                "name": source.name,
                "plugin": {
                    "name": metadata.name,
                    "version": metadata.version,
                    "sha256": source.plugin.sha256_hex(),
                },
                "secrets": secrets,
                "keys": source.credentials.keys.len(),
                "public_url": source.credentials.public_url.as_deref(),
                "dedupe_ttl_seconds": source.dedupe_ttl.as_secs(),
            })
        })
        .collect();
    json_response(StatusCode::OK, &json!({ "sources": listed }))
}

/// `POST /reload[?dry_run=true]`: 200 with what changed (or would), 422 with the same shape
/// naming what was rejected when nothing changed.
async fn reload(state: &State, query: &str) -> Result<HttpResponse, ApiError> {
    let mut dry_run = false;
    let mut sample = crate::reload::preview::DEFAULT_SAMPLE;
    for (key, value) in parse_query(query) {
        match key.as_str() {
            "sample" => {
                sample = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=crate::reload::preview::MAX_SAMPLE).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "`sample` must be a number from 1 to {}",
                            crate::reload::preview::MAX_SAMPLE
                        ))
                    })?;
            }
            "dry_run" => {
                dry_run = match value.as_str() {
                    "" | "true" | "1" => true,
                    "false" | "0" => false,
                    _ => return Err(ApiError::bad_request("`dry_run` must be true or false")),
                }
            }
            _ => return Err(ApiError::bad_request(format!("unknown parameter `{key}`"))),
        }
    }
    let outcome = state
        .reloader
        .reload_sampling(crate::reload::Trigger::Admin, dry_run, sample)
        .await;
    let status = if outcome.result == crate::reload::ReloadResult::Rejected {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok(json_response(
        status,
        &serde_json::to_value(&outcome).unwrap_or_default(),
    ))
}

pub(super) fn entry_summary(entry: &StoredEntry) -> serde_json::Value {
    json!({
        "id": entry.id.to_string(),
        "source": entry.source,
        "topic": entry.topic,
        "tenant": entry.tenant,
        "idempotency_key": entry.idempotency_key,
        "status": entry.status.as_str(),
        "attempts": entry.attempts,
        "last_error": entry.last_error,
        "received_at": entry.received_at.to_rfc3339(),
        "plugin": entry.plugin,
        "plugin_version": entry.plugin_version,
        "plugin_sha256": entry.plugin_sha256,
        "correlation_id": entry.correlation_id,
        "body_size": entry.body.len(),
    })
}

pub(super) fn event_detail(event: &StoredEvent) -> serde_json::Value {
    let envelope: serde_json::Value = if event.envelope_error.is_some() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&event.envelope)
            .unwrap_or_else(|_| json!(String::from_utf8_lossy(&event.envelope)))
    };
    json!({
        "id": event.id,
        "seq": event.seq,
        "subject": event.subject,
        "status": event.status.as_str(),
        "attempts": event.attempts,
        "next_attempt_at": event.next_attempt_at.map(|t| t.to_rfc3339()),
        "published_at": event.published_at.map(|t| t.to_rfc3339()),
        "last_error": event.last_error,
        "envelope": envelope,
        "envelope_error": event.envelope_error,
    })
}

pub(super) fn storage_error(error: crate::store::StoreError) -> ApiError {
    tracing::warn!(%error, "admin query failed");
    match error {
        // What was read back is not what the gateway wrote: asking again will not help,
        // and the storage is up.
        crate::store::StoreError::Internal(_) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "stored data could not be read; the gateway's log says which",
        ),
        _ => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            "storage is unavailable",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_stored_data_is_an_internal_error_not_an_outage() {
        use crate::store::StoreError;
        let corrupt = storage_error(StoreError::Internal("corrupt row".into()));
        assert_eq!(corrupt.status, StatusCode::INTERNAL_SERVER_ERROR);
        let down = storage_error(StoreError::Unavailable("connection refused".into()));
        assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE);
        // Neither answer repeats the error itself, which may quote stored data.
        assert!(!corrupt.message.contains("corrupt row"));
        assert!(!down.message.contains("refused"));
    }

    #[test]
    fn bearer_token_rules() {
        assert!(authorized(Some("s3cret"), Some("Bearer s3cret")));
        assert!(!authorized(Some("s3cret"), Some("Bearer s3cre")));
        assert!(!authorized(Some("s3cret"), Some("s3cret")));
        assert!(!authorized(Some("s3cret"), None));
        assert!(!authorized(None, Some("Bearer anything")));
        assert!(!authorized(None, Some("Bearer ")));
    }

    #[test]
    fn cursor_round_trip_and_garbage() {
        let id = Uuid::now_v7();
        let at = DateTime::from_timestamp_micros(1_764_000_000_123_456).expect("time");
        let encoded = URL_SAFE_NO_PAD.encode(format!("{}|{}", at.timestamp_micros(), id));
        assert_eq!(
            decode_cursor(&encoded).expect("cursor"),
            Cursor {
                received_at: at,
                id
            }
        );
        assert!(decode_cursor("not-a-cursor").is_err());
    }
}
