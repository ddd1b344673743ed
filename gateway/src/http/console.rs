//! The operator console: static files embedded in the binary and served at `/console/`
//! (so it works air-gapped, with no build step), and the admin `stats` endpoint whose
//! counters its overview turns into rates. The files themselves need no token; every
//! piece of data they show comes from the admin API, which does.

use http::{HeaderValue, Method, StatusCode, header};
use serde_json::json;

use super::State;
use super::error::{ApiError, HttpResponse, json_response, method_not_allowed};

pub const PREFIX: &str = "/console";

/// (file name, content type, bytes). Only these are served: no path reaches the disk.
const FILES: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../../console/index.html"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../console/style.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/api.js"),
    ),
    (
        "dom.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/dom.js"),
    ),
    (
        "pages.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/pages.js"),
    ),
];

/// Scripts and styles only from the console's own files (no inline code, so an injected
/// `<script>` could not run even if one reached the DOM), data only from this origin, and
/// never framed (clickjacking a replay button).
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; \
                   form-action 'self'; frame-ancestors 'none'";

/// `GET /console/...`. `path` starts with `/console`.
pub fn serve(method: &Method, path: &str) -> HttpResponse {
    if method != Method::GET && method != Method::HEAD {
        return method_not_allowed("GET, HEAD");
    }
    let rest = &path[PREFIX.len()..];
    if rest.is_empty() {
        // Relative asset URLs resolve against `/console/`, so the bare path redirects.
        let mut response = hardened(http::Response::new(Default::default()));
        *response.status_mut() = StatusCode::MOVED_PERMANENTLY;
        response
            .headers_mut()
            .insert(header::LOCATION, HeaderValue::from_static("/console/"));
        return response;
    }
    let name = match rest.strip_prefix('/') {
        Some("") => "index.html",
        Some(name) => name,
        None => return ApiError::not_found().into_response(),
    };
    let Some((_, content_type, body)) = FILES.iter().find(|(file, _, _)| *file == name) else {
        return ApiError::not_found().into_response();
    };
    let mut response = hardened(http::Response::new(http_body_util::Full::new(
        bytes::Bytes::from_static(body.as_bytes()),
    )));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn hardened(mut response: HttpResponse) -> HttpResponse {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // Always revalidated: a console from before an upgrade must not call a changed API.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// `GET /api/v1/admin/stats`: the gateway's counters since it started. The console polls
/// it and derives rates from the differences, so the gateway keeps no history for it.
pub fn stats(state: &State) -> HttpResponse {
    let text = state.metrics.encode();
    // Every metric read here is an integer counter or gauge: shown as integers.
    let mut webhooks = Vec::new();
    let mut scalars = serde_json::Map::new();
    for sample in text.lines().filter_map(parse_sample) {
        match sample.name {
            "hookgate_webhooks_received_total" => {
                let label = |key: &str| {
                    sample
                        .labels
                        .iter()
                        .find(|(k, _)| k == key)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default()
                };
                webhooks.push(json!({
                    "source": label("source"),
                    "outcome": label("outcome"),
                    "count": sample.value as i64,
                }));
            }
            "hookgate_events_published_total"
            | "hookgate_events_dead_lettered_total"
            | "hookgate_outbox_backlog"
            | "hookgate_dlq_size" => {
                let key = sample.name.trim_start_matches("hookgate_");
                scalars.insert(key.to_owned(), json!(sample.value as i64));
            }
            _ => {}
        }
    }
    let mut body = json!({
        "at": chrono::Utc::now().to_rfc3339(),
        "webhooks_received": webhooks,
    });
    if let Some(object) = body.as_object_mut() {
        object.extend(scalars);
    }
    json_response(StatusCode::OK, &body)
}

struct Sample<'a> {
    name: &'a str,
    labels: Vec<(String, String)>,
    value: f64,
}

/// One OpenMetrics sample line: `name{k="v",...} value`. Comments and anything this
/// does not understand give None.
fn parse_sample(line: &str) -> Option<Sample<'_>> {
    if line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices();
        let mut key = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '}' => break i,
                ',' => {}
                '=' => {
                    if chars.next()?.1 != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()?.1 {
                            '"' => break,
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            other => value.push(other),
                        }
                    }
                    labels.push((std::mem::take(&mut key), value));
                }
                c => key.push(c),
            }
        };
        rest = &inner[end + 1..];
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name,
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_with_escaped_labels_parse() {
        let sample =
            parse_sample(r#"hookgate_webhooks_received_total{source="a\"b",outcome="x"} 3"#)
                .expect("sample");
        assert_eq!(sample.name, "hookgate_webhooks_received_total");
        assert_eq!(sample.labels[0], ("source".into(), "a\"b".into()));
        assert_eq!(sample.labels[1], ("outcome".into(), "x".into()));
        assert_eq!(sample.value, 3.0);
        let bare = parse_sample("hookgate_dlq_size 7").expect("sample");
        assert!(bare.labels.is_empty());
        assert_eq!(bare.value, 7.0);
        assert!(parse_sample("# HELP hookgate_dlq_size x").is_none());
        assert!(parse_sample("broken{source=\"x").is_none());
    }

    #[test]
    fn only_known_files_are_served_with_a_strict_policy() {
        let index = serve(&Method::GET, "/console/");
        assert_eq!(index.status(), StatusCode::OK);
        let csp = index.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .expect("csp");
        assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"));
        assert!(!csp.contains("unsafe"));
        assert_eq!(index.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(
            serve(&Method::GET, "/console").status(),
            StatusCode::MOVED_PERMANENTLY
        );
        for missing in ["/console/../Cargo.toml", "/console/nope.js", "/consolex"] {
            assert_eq!(
                serve(&Method::GET, missing).status(),
                StatusCode::NOT_FOUND,
                "{missing}"
            );
        }
        assert_eq!(
            serve(&Method::POST, "/console/").status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[test]
    fn no_console_file_uses_inline_code_or_inner_html() {
        for (name, _, body) in FILES {
            assert!(!body.contains("innerHTML"), "{name} uses innerHTML");
            assert!(!body.contains("outerHTML"), "{name} uses outerHTML");
            assert!(!body.contains("insertAdjacentHTML"), "{name}");
            assert!(!body.contains("document.write"), "{name}");
            assert!(!body.contains("style="), "{name} has an inline style");
            assert!(!body.contains(" onclick="), "{name} has an inline handler");
        }
    }
}
