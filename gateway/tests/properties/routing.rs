//! Routing: any method and request target, answered by the router with a status the SPEC
//! lists and a JSON error body, or by hyper itself with one of the answers the README
//! documents; never a dropped connection (what a panicking handler leaves).

use proptest::prelude::*;

use crate::support::{ADMIN_TOKEN, Embedded, SOURCES, exchange, request, runner};

const PREFIXES: &[&str] = &[
    "/api/v1/webhooks/",
    "/api/v1/webhooks",
    "/api/v1/admin",
    "/api/v1/admin/",
    "/api/v1/health",
    "/api/v1/health/ready",
    "/api/v1/health/live",
    "/metrics",
    "/console",
    "/console/",
    "/",
    "",
];

fn method() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => Just(b"POST".to_vec()),
        2 => Just(b"GET".to_vec()),
        2 => prop::sample::select(vec!["HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "post", "TRACE"])
            .prop_map(|m| m.as_bytes().to_vec()),
        // Any token RFC 9110 allows as a method.
        1 => "[!#$%&'*+.^_`|~0-9A-Za-z-]{1,10}".prop_map(String::into_bytes),
        // Not a token: hyper's to refuse.
        1 => prop::collection::vec(any::<u8>(), 0..8),
    ]
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "shopify",
            "stripe",
            "github",
            "slack",
            "webhooks",
            "replay",
            "dlq",
            "plugins",
            "reload",
            "stats",
            "index.html",
            "app.js",
            "..",
            ".",
            ""
        ])
        .prop_map(str::to_owned),
        // pchar: unreserved, sub-delims, ':' and '@'.
        "[A-Za-z0-9._~!$&'()*+,;=:@-]{0,12}",
        // Escapes, valid UTF-8 or not.
        prop::collection::vec(any::<u8>(), 1..4).prop_map(|bytes| {
            bytes
                .iter()
                .map(|b| format!("%{b:02X}"))
                .collect::<String>()
        }),
        // A '%' that starts no escape.
        "%[G-Zg-z%]?[0-9A-Fa-f]?",
        // The encoded forms of a source name (`shop%69fy`) and of a topic.
        Just("shop%69fy".to_owned()),
        Just("orders%2Fcreate".to_owned()),
    ]
}

fn target() -> impl Strategy<Value = Vec<u8>> {
    let structured = (
        prop::sample::select(PREFIXES.to_vec()),
        prop::collection::vec(segment(), 0..5),
        prop::option::of("[A-Za-z0-9=&%._+/-]{0,24}"),
    )
        .prop_map(|(prefix, segments, query)| {
            let mut target = format!("{prefix}{}", segments.join("/"));
            if !target.starts_with('/') {
                target.insert(0, '/');
            }
            if let Some(query) = query {
                target.push('?');
                target.push_str(&query);
            }
            target.into_bytes()
        });
    prop_oneof![
        8 => structured,
        // Anything at all, including spaces, controls and bytes over 0x7F.
        1 => prop::collection::vec(any::<u8>(), 0..48),
        1 => Just(b"*".to_vec()),
        1 => "http://127\\.0\\.0\\.1/api/v1/[a-z/]{0,20}".prop_map(String::into_bytes),
    ]
}

/// `percent_decode_str(..).decode_utf8()`: an escape is `%` and two hex digits; any other
/// `%` stays as it is.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((high * 16 + low) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// What the SPEC says the answer to `method path` is, for the routes whose answer does
/// not depend on state: `None` where the property only checks the status is one of the
/// listed ones.
fn expected(method: &[u8], path: &str, with_token: bool) -> Option<u16> {
    let get_like = method == b"GET" || method == b"HEAD";
    if let Some(rest) = path.strip_prefix("/api/v1/webhooks/") {
        if method != b"POST" {
            return Some(405);
        }
        let mut segments = rest.split('/');
        let source = segments.next().filter(|s| !s.is_empty());
        let Some(source) = source.and_then(percent_decode) else {
            return Some(400);
        };
        if segments
            .filter(|s| !s.is_empty())
            .any(|s| percent_decode(s).is_none())
        {
            return Some(400);
        }
        // The bodies are unsigned: a known source's plugin refuses them.
        return Some(if SOURCES.contains(&source.as_str()) {
            401
        } else {
            404
        });
    }
    if path == "/api/v1/admin" || path.starts_with("/api/v1/admin/") {
        return (!with_token).then_some(401);
    }
    match path {
        "/api/v1/health/live" | "/metrics" => Some(if get_like { 200 } else { 405 }),
        "/api/v1/health" | "/api/v1/health/ready" => (!get_like).then_some(405),
        "/api/v1/webhooks" => Some(404),
        _ if path == "/console" || path.starts_with("/console/") => None,
        _ => Some(404),
    }
}

/// Statuses the SPEC lists for the API, and the console's redirect.
const ROUTER_STATUSES: &[u16] = &[200, 301, 400, 401, 404, 405, 408, 413, 429, 500, 503];
/// The admin API's besides: a replay job started (202), a tenant secret created (201), a
/// conflicting one (409), a reload refused (422).
const ADMIN_STATUSES: &[u16] = &[201, 202, 409, 422];
/// What hyper writes itself before a request reaches the router (README, "Responses
/// hyper writes itself").
const HYPER_STATUSES: &[u16] = &[400, 414, 431];

#[test]
fn any_method_and_target_gets_a_listed_status_and_a_json_error() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let embedded = runtime.block_on(Embedded::start(""));
    let addr = embedded.gateway.local_addr;
    let inputs = (
        method(),
        target(),
        prop::collection::vec(any::<u8>(), 0..128),
        any::<bool>(),
    );
    let result = runner(768).run(&inputs, |(method, target, body, with_token)| {
        let headers = if with_token {
            vec![(
                b"authorization".to_vec(),
                format!("Bearer {ADMIN_TOKEN}").into_bytes(),
            )]
        } else {
            Vec::new()
        };
        let raw = request(&method, &target, &headers, &body);
        let response = runtime
            .block_on(exchange(addr, &raw))
            .map_err(|e| TestCaseError::fail(format!("no answer: {e}")))?;
        // Every answer of the router carries the correlation id; hyper's own carry none.
        if response.header("x-request-id").is_none() {
            prop_assert!(
                HYPER_STATUSES.contains(&response.status),
                "hyper answered {} ({:?})",
                response.status,
                String::from_utf8_lossy(&response.body)
            );
            prop_assert!(response.body.is_empty());
            return Ok(());
        }
        let status = response.status;
        let is_admin = std::str::from_utf8(&target)
            .is_ok_and(|t| t.starts_with("/api/v1/admin") || t.contains("://"));
        prop_assert!(
            ROUTER_STATUSES.contains(&status)
                || (is_admin && with_token && ADMIN_STATUSES.contains(&status)),
            "status {status} is not one the SPEC lists"
        );
        if status >= 400 && method != b"HEAD" {
            let json = response.json();
            let code = json.as_ref().and_then(|j| j["error"].as_str());
            let message = json.as_ref().and_then(|j| j["message"].as_str());
            prop_assert!(
                code.is_some_and(|c| !c.is_empty()) && message.is_some_and(|m| !m.is_empty()),
                "{status} without a JSON error body: {:?}",
                String::from_utf8_lossy(&response.body)
            );
            prop_assert_eq!(
                response.header("content-type"),
                Some(&b"application/json"[..])
            );
        }
        if status == 405 {
            prop_assert!(response.header("allow").is_some(), "405 without Allow");
        }
        // Origin-form targets: the router's path is the target up to the query.
        if let Ok(text) = std::str::from_utf8(&target)
            && text.starts_with('/')
        {
            let path = text.split('?').next().unwrap_or_default();
            if let Some(want) = expected(&method, path, with_token) {
                prop_assert_eq!(
                    status,
                    want,
                    "{} {}",
                    String::from_utf8_lossy(&method),
                    text
                );
            }
        }
        Ok(())
    });
    // The gateway still serves after all of it.
    let live = runtime.block_on(exchange(
        addr,
        &request(b"GET", b"/api/v1/health/live", &[], b""),
    ));
    runtime.block_on(embedded.gateway.stop());
    if let Err(failure) = result {
        panic!("{failure}");
    }
    assert_eq!(live.map(|r| r.status).ok(), Some(200));
}

#[test]
fn the_oracle_decodes_like_the_router() {
    assert_eq!(percent_decode("shop%69fy").as_deref(), Some("shopify"));
    assert_eq!(percent_decode("%G1%").as_deref(), Some("%G1%"));
    assert_eq!(percent_decode("%FF"), None);
    assert_eq!(
        expected(b"POST", "/api/v1/webhooks/shop%69fy/x", false),
        Some(401)
    );
    assert_eq!(expected(b"GET", "/api/v1/webhooks/nope", false), Some(405));
}
