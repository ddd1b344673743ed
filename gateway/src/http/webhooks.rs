//! `POST /api/v1/webhooks/{source}[/{topic}]`: reads the body within its limits and hands
//! the delivery to the pipeline; maps each outcome to its status and JSON body.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use chrono::Utc;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use percent_encoding::percent_decode_str;

use super::error::{ApiError, HttpResponse, json_response, method_not_allowed};
use super::{HttpLimits, State};
use crate::ingest::{Delivery, IngestError, Ingested};
use crate::metrics::{ReasonLabel, SourceLabel};
use crate::plugin::WebhookRequest;

/// Splits `{source}[/{topic...}]`; the topic is percent-decoded per segment and the
/// segments joined with `/`, so `orders%2Fcreate`, `orders/create` and `orders-create`
/// all reach the plugin as the sender wrote them.
pub fn parse_path(rest: &str) -> Option<(String, Option<String>)> {
    let mut segments = rest.split('/');
    let source = segments.next().filter(|s| !s.is_empty())?;
    let source = percent_decode_str(source).decode_utf8().ok()?.into_owned();
    let mut topic_parts = Vec::new();
    for segment in segments.filter(|s| !s.is_empty()) {
        topic_parts.push(percent_decode_str(segment).decode_utf8().ok()?.into_owned());
    }
    let topic = if topic_parts.is_empty() {
        None
    } else {
        Some(topic_parts.join("/"))
    };
    Some((source, topic))
}

/// Checks the method, the path and the source before taking a permit and before reading
/// a byte of the body (so a client posting to a source that does not exist holds
/// nothing), then answers and times the answer.
pub async fn handle(
    state: &State,
    request: Request<Incoming>,
    rest: &str,
    correlation_id: &str,
    peer: IpAddr,
) -> HttpResponse {
    let started = Instant::now();
    if request.method() != Method::POST {
        return method_not_allowed("POST");
    }
    let Some((source, topic)) = parse_path(rest) else {
        return ApiError::bad_request(
            "the webhook path must be /api/v1/webhooks/{source}[/{topic}], UTF-8",
        )
        .into_response();
    };
    if !state.pipeline.sources().contains_key(&source) {
        // Not labelled by name: anyone can invent paths.
        state.metrics.webhook("unknown", "unknown_source");
        return ingest_error(IngestError::UnknownSource).into_response();
    }
    let _permit = match state.budget.try_acquire(&source, peer) {
        Ok(permit) => permit,
        Err(refused) => {
            state
                .metrics
                .http_rejected
                .get_or_create(&ReasonLabel {
                    reason: refused.reason(),
                })
                .inc();
            return ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "overloaded",
                "too many requests in flight; retry later",
            )
            .into_response();
        }
    };
    let response = respond(state, request, source.clone(), topic, correlation_id).await;
    state
        .metrics
        .request_duration
        .get_or_create(&SourceLabel { source })
        .observe(started.elapsed().as_secs_f64());
    response
}

async fn respond(
    state: &State,
    request: Request<Incoming>,
    source: String,
    topic: Option<String>,
    correlation_id: &str,
) -> HttpResponse {
    let received_at = Utc::now();
    let limit = state.limits.max_body_bytes;
    // Refuse a declared oversize body before reading a byte of it.
    if let Some(length) = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && length > limit as u64
    {
        return too_large(state, limit);
    }
    let (parts, body) = request.into_parts();
    let body = match read_body(body, limit, &state.limits).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => return too_large(state, limit),
        Err(BodyError::TooSlow) => {
            state
                .metrics
                .http_rejected
                .get_or_create(&ReasonLabel {
                    reason: "body_too_slow",
                })
                .inc();
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request body arrived slower than {} bytes per second",
                    state.limits.body_min_rate_bytes_per_second
                ),
            )
            .into_response();
        }
        Err(BodyError::Timeout) => {
            state
                .metrics
                .http_rejected
                .get_or_create(&ReasonLabel {
                    reason: "body_timeout",
                })
                .inc();
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request body did not arrive in time",
            )
            .into_response();
        }
        Err(BodyError::Broken(error)) => {
            state
                .metrics
                .http_rejected
                .get_or_create(&ReasonLabel {
                    reason: "bad_request",
                })
                .inc();
            return ApiError::bad_request(format!("could not read the request body: {error}"))
                .into_response();
        }
    };
    let headers = parts
        .headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let delivery = Delivery {
        source,
        request: WebhookRequest {
            method: parts.method.as_str().to_owned(),
            path: parts.uri.path().to_owned(),
            topic,
            query: parts.uri.query().map(str::to_owned),
            headers,
            body,
        },
        correlation_id: correlation_id.to_owned(),
        received_at,
    };
    match state.pipeline.ingest(delivery).await {
        Ok(Ingested::Accepted(id)) => json_response(
            StatusCode::OK,
            &serde_json::json!({ "status": "accepted", "id": id.to_string() }),
        ),
        Ok(Ingested::Duplicate(id)) => json_response(
            StatusCode::OK,
            &serde_json::json!({ "status": "duplicate", "id": id.to_string() }),
        ),
        Ok(Ingested::Handshake(handshake)) => handshake_response(handshake),
        Err(error) => ingest_error(error).into_response(),
    }
}

fn too_large(state: &State, limit: usize) -> HttpResponse {
    state
        .metrics
        .http_rejected
        .get_or_create(&ReasonLabel {
            reason: "too_large",
        })
        .inc();
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the body exceeds the limit of {limit} bytes"),
    )
    .into_response()
}

fn handshake_response(handshake: crate::plugin::Handshake) -> HttpResponse {
    let status = StatusCode::from_u16(handshake.status)
        .ok()
        .filter(StatusCode::is_success)
        .unwrap_or(StatusCode::OK);
    let mut response = http::Response::new(Full::new(Bytes::from(handshake.body)));
    *response.status_mut() = status;
    if let Ok(value) = http::HeaderValue::from_str(&handshake.content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    // Names and values were checked when the plugin returned them; `append` keeps a
    // header the plugin repeats.
    for (name, value) in &handshake.headers {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}

fn ingest_error(error: IngestError) -> ApiError {
    match error {
        IngestError::UnknownSource => ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_source",
            "no enabled source has this name",
        ),
        // The reason stays in the log: telling a forger why its signature failed helps it.
        IngestError::Rejected(_) => ApiError::unauthorized("signature verification failed"),
        IngestError::PluginFault(crate::plugin::PluginFault::Busy(_)) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "plugin_busy",
            "the source plugin is at capacity; retry later",
        ),
        IngestError::PluginFault(_) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "plugin_fault",
            "the source plugin failed while verifying the webhook",
        ),
        IngestError::StorageUnavailable(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            "the webhook could not be stored; retry later",
        ),
        IngestError::Internal(message) => {
            tracing::error!(%message, "internal error while ingesting");
            ApiError::internal()
        }
    }
}

enum BodyError {
    TooLarge,
    Timeout,
    TooSlow,
    Broken(String),
}

/// Reads the whole body, refusing it past `limit` bytes, past the body timeout, or as
/// soon as it falls behind the minimum rate: after the grace period, each frame must
/// arrive before `grace + received / rate` from the start.
async fn read_body(
    mut body: Incoming,
    limit: usize,
    limits: &HttpLimits,
) -> Result<Bytes, BodyError> {
    let started = tokio::time::Instant::now();
    let overall = started + limits.body_read_timeout;
    let rate = limits.body_min_rate_bytes_per_second.max(1);
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut received = 0usize;
    loop {
        let allowed = u64::try_from(received)
            .unwrap_or(u64::MAX)
            .saturating_mul(1000)
            / rate;
        let behind = started + limits.body_rate_grace + Duration::from_millis(allowed);
        let frame = match tokio::time::timeout_at(behind.min(overall), body.frame()).await {
            Err(_) if behind < overall => return Err(BodyError::TooSlow),
            Err(_) => return Err(BodyError::Timeout),
            Ok(None) => break,
            Ok(Some(Err(error))) => return Err(BodyError::Broken(error.to_string())),
            Ok(Some(Ok(frame))) => frame,
        };
        // Trailers carry nothing a webhook needs.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        received = received.saturating_add(data.len());
        if received > limit {
            return Err(BodyError::TooLarge);
        }
        if !data.is_empty() {
            chunks.push(data);
        }
    }
    Ok(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().unwrap_or_default(),
        _ => {
            let mut joined = BytesMut::with_capacity(received);
            for chunk in chunks {
                joined.extend_from_slice(&chunk);
            }
            joined.freeze()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::parse_path;

    #[test]
    fn topic_forms() {
        assert_eq!(parse_path("shopify"), Some(("shopify".into(), None)));
        assert_eq!(parse_path("shopify/"), Some(("shopify".into(), None)));
        assert_eq!(
            parse_path("shopify/orders-create"),
            Some(("shopify".into(), Some("orders-create".into())))
        );
        assert_eq!(
            parse_path("shopify/orders%2Fcreate"),
            Some(("shopify".into(), Some("orders/create".into())))
        );
        assert_eq!(
            parse_path("shopify/orders/create"),
            Some(("shopify".into(), Some("orders/create".into())))
        );
        assert_eq!(parse_path(""), None);
        assert_eq!(parse_path("%FF"), None);
    }
}
