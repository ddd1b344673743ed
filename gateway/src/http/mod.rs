//! The HTTP front: accept loop and layers (server.rs), routing (here), webhook intake,
//! health and metrics, and the admin API.

pub mod admin;
pub mod budget;
pub mod console;
pub mod error;
pub mod health;
pub mod replay;
pub mod secrets;
pub mod server;
pub mod webhooks;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Method, Request, StatusCode};
use hyper::body::Incoming;
use tracing::Instrument;

use crate::dedupe::Dedupe;
use crate::ingest::Pipeline;
use crate::metrics::Metrics;
use crate::publish::EventSink;
use crate::reload::Reloader;
use crate::store::Store;
use error::{ApiError, HttpResponse, json_response, method_not_allowed};

/// Limits applied to every connection and request (see `[http]` in the config).
#[derive(Debug, Clone)]
pub struct HttpLimits {
    pub max_body_bytes: usize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub body_min_rate_bytes_per_second: u64,
    pub body_rate_grace: Duration,
    /// Requests handled at once; beyond it webhooks are shed with 429.
    pub max_concurrency: usize,
    pub source_share_percent: u64,
    pub client_share_percent: u64,
    pub first_byte_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connection_age: Duration,
    pub max_connections: usize,
    pub http2_max_concurrent_streams: u32,
    pub http2_keep_alive_interval: Duration,
    pub http2_keep_alive_timeout: Duration,
}

impl HttpLimits {
    pub fn from_config(config: &crate::config::Config) -> Self {
        let http = &config.http;
        let ms = Duration::from_millis;
        Self {
            max_body_bytes: usize::try_from(config.max_payload_bytes()).unwrap_or(usize::MAX),
            header_read_timeout: http.header_read_timeout(),
            body_read_timeout: http.body_read_timeout(),
            body_min_rate_bytes_per_second: http.body_min_rate_bytes_per_second,
            body_rate_grace: ms(http.body_rate_grace_ms),
            max_concurrency: usize::try_from(http.max_concurrency).unwrap_or(usize::MAX),
            source_share_percent: http.source_share_percent,
            client_share_percent: http.client_share_percent,
            first_byte_timeout: ms(http.first_byte_timeout_ms),
            idle_timeout: ms(http.idle_timeout_ms),
            max_connection_age: ms(http.max_connection_age_ms),
            max_connections: usize::try_from(http.max_connections).unwrap_or(usize::MAX),
            http2_max_concurrent_streams: http.http2_max_concurrent_streams,
            http2_keep_alive_interval: ms(http.http2_keep_alive_interval_ms),
            http2_keep_alive_timeout: ms(http.http2_keep_alive_timeout_ms),
        }
    }
}

/// What every handler can reach.
pub struct State {
    pub pipeline: Arc<Pipeline>,
    pub store: Arc<dyn Store>,
    pub dedupe: Arc<dyn Dedupe>,
    pub sink: Arc<dyn EventSink>,
    pub reloader: Arc<Reloader>,
    pub tenant_secrets: Arc<crate::secrets::TenantSecrets>,
    pub metrics: Arc<Metrics>,
    pub admin_token: Option<String>,
    pub limits: HttpLimits,
    /// Webhook permits: the global 429 limit and its per-source and per-client shares.
    pub budget: Arc<budget::Budget>,
    /// The relay's per-subject circuit breakers, for health.
    pub breakers: Arc<crate::publish::breaker::Breakers>,
}

const WEBHOOKS: &str = "/api/v1/webhooks/";
const ADMIN: &str = "/api/v1/admin";

/// Routes one request; every response carries the correlation id as `x-request-id`.
pub async fn route(state: Arc<State>, peer: IpAddr, request: Request<Incoming>) -> HttpResponse {
    let correlation_id = correlation_id(&request);
    let span = tracing::info_span!("request", correlation_id = %correlation_id);
    let mut response = dispatch(&state, request, &correlation_id, peer)
        .instrument(span)
        .await;
    if let Ok(value) = HeaderValue::from_str(&correlation_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

async fn dispatch(
    state: &Arc<State>,
    request: Request<Incoming>,
    correlation_id: &str,
    peer: IpAddr,
) -> HttpResponse {
    let path = request.uri().path().to_owned();
    if let Some(rest) = path.strip_prefix(WEBHOOKS) {
        return webhooks::handle(state, request, rest, correlation_id, peer).await;
    }
    if path == ADMIN || path.starts_with("/api/v1/admin/") {
        return admin::handle(state, request, &path).await;
    }
    if path == console::PREFIX || path.starts_with("/console/") {
        return console::serve(request.method(), &path);
    }
    let is_get = request.method() == Method::GET || request.method() == Method::HEAD;
    match path.as_str() {
        "/api/v1/health" if is_get => health::full(state).await,
        "/api/v1/health/ready" if is_get => health::ready(state).await,
        "/api/v1/health/live" if is_get => {
            json_response(StatusCode::OK, &serde_json::json!({ "status": "ok" }))
        }
        "/metrics" if is_get => {
            let mut response = http::Response::new(http_body_util::Full::new(bytes::Bytes::from(
                state.metrics.encode(),
            )));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        "/api/v1/health" | "/api/v1/health/ready" | "/api/v1/health/live" | "/metrics" => {
            method_not_allowed("GET, HEAD")
        }
        "/api/v1/webhooks" => ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_source",
            "the path must name a source",
        )
        .into_response(),
        _ => ApiError::not_found().into_response(),
    }
}

/// The request's own id (`X-Request-Id`, or the trace id of a W3C `traceparent`) when it
/// is sane, else a fresh one.
fn correlation_id<B>(request: &Request<B>) -> String {
    let headers = request.headers();
    if let Some(id) = headers.get("x-request-id").and_then(|v| v.to_str().ok())
        && !id.is_empty()
        && id.len() <= 128
        && id.bytes().all(|b| b.is_ascii_graphic())
    {
        return id.to_owned();
    }
    if let Some(parent) = headers.get("traceparent").and_then(|v| v.to_str().ok()) {
        let mut parts = parent.split('-');
        if let (Some(_version), Some(trace_id)) = (parts.next(), parts.next())
            && trace_id.len() == 32
            && trace_id.bytes().all(|b| b.is_ascii_hexdigit())
            && trace_id.bytes().any(|b| b != b'0')
        {
            return trace_id.to_ascii_lowercase();
        }
    }
    uuid::Uuid::new_v4().to_string()
}

/// The loaded plugins with the sources bound to each, and the plugins that failed to load:
/// what both the health report and the admin API show.
pub fn plugin_listing(state: &State) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    let plugins = state.pipeline.plugins();
    let bound = crate::reload::sources_by_plugin(&state.pipeline.sources());
    let listed = plugins
        .list()
        .into_iter()
        .map(|plugin| {
            let contract = plugins.get(&plugin.name).map(|p| p.contract().version());
            serde_json::json!({
                "name": plugin.name,
                "version": plugin.version,
                "sha256": plugin.sha256,
                "origin": plugin.origin.to_string(),
                "contract": contract,
                "sources": bound.get(&plugin.name).cloned().unwrap_or_default(),
            })
        })
        .collect();
    let errors = plugins
        .errors()
        .iter()
        .map(|error| serde_json::json!({ "origin": error.origin.to_string(), "error": error.to_string() }))
        .collect();
    (listed, errors)
}

#[cfg(test)]
mod tests {
    use super::correlation_id;

    fn request(headers: &[(&str, &str)]) -> http::Request<()> {
        let mut builder = http::Request::builder();
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).expect("request")
    }

    #[test]
    fn correlation_id_sources() {
        assert_eq!(
            correlation_id(&request(&[("x-request-id", "abc-123")])),
            "abc-123"
        );
        assert_eq!(
            correlation_id(&request(&[(
                "traceparent",
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"
            )])),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let generated = correlation_id(&request(&[("x-request-id", "has space")]));
        assert_eq!(generated.len(), 36);
        let zero = correlation_id(&request(&[(
            "traceparent",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        )]));
        assert_ne!(zero, "00000000000000000000000000000000");
    }
}
