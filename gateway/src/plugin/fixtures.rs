//! Plugin fixtures: recorded deliveries with the outcome a plugin must give for each, run
//! offline (no gateway, database or network) by `hookgate plugins test`, and meant to gate
//! a plugin version before it is swapped in.
//!
//! A plugin `NAME.wasm` ships them beside it as `NAME.fixtures.json`:
//!
//! ```json
//! { "fixtures": [ {
//!     "name": "valid order",
//!     "request": { "method": "POST", "path": "/api/v1/webhooks/shopify", "topic": null,
//!                  "query": null, "headers": { "X-Shopify-Topic": "orders/create" },
//!                  "body": "{\"id\":1}" },
//!     "secrets": ["..."], "keys": ["<public key text>"], "settings": { "k": "v" },
//!     "public_url": "https://hooks.example.com", "now": 1764000000,
//!     "expect": { "verified": true, "secret": 0, "idempotency_key": "...", "tenant": "...",
//!                 "topic": "orders/create", "occurred_at": "2025-11-24T15:20:00Z",
//!                 "events": [ { "type": "order.created", "subject": "1" } ] }
//! } ] }
//! ```
//!
//! - `request`: `method` defaults to `POST`; `path` to `/api/v1/webhooks/<plugin name>`
//!   (followed by `/<topic>` when `topic` is set); `topic` and `query` to none (the topic is
//!   never derived from `path`); header names are lower-cased as the gateway does, in the
//!   order written; the body is `body` (text) or `body_base64`, or empty.
//! - `secrets`, `keys` (any form a source's `keys` accepts), `settings`, `public_url`: the
//!   source's configuration. `now`: the clock the plugin reads (Unix seconds); absent, the
//!   system clock, which suits only schemes that sign no timestamp.
//! - `expect`: `verified` (required); then either `error` (a refusal: `missing_signature`,
//!   `malformed_signature`, `signature_mismatch`, `signature_expired`, `rejected`; the
//!   contract's names `missing-signature`, `mismatch`, `expired`, ... work too), or what a
//!   verified delivery gives: `secret` and `key` (indexes of the one that matched), and
//!   `map_error` (`unsupported_topic`, `malformed_payload`, `missing_field`, `other`), or
//!   a mapping (`idempotency_key`, `tenant`, `topic`, `occurred_at` as Unix seconds or
//!   RFC 3339 text, `events`: each `type` and `subject`, the count checked too), or a
//!   `handshake` (`status`, `content_type`, `body` as text).
//!
//! A field absent from `expect` is not checked; `null` expects none (`"tenant": null`).
//! A plugin fault (trap, timeout, invalid output) always fails the fixture.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use hookgate_plugin_sdk::keys::PublicKey;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::call::{MapFailure, OwnedCallInput, Processed};
use super::fault::PluginFault;
use super::load::Plugin;
use super::types::{
    Credentials, Handshake, MapError, MapOutcome, Mapping, Timestamp, VerifyError, WebhookRequest,
    sanitize,
};

/// The fixtures shipped with a bundled plugin (`plugins/<name>/fixtures.json`), by the
/// plugin's name.
pub fn bundled_fixtures(name: &str) -> Option<&'static str> {
    Some(match name {
        "shopify" => include_str!("../../../plugins/shopify/fixtures.json"),
        "stripe" => include_str!("../../../plugins/stripe/fixtures.json"),
        "github" => include_str!("../../../plugins/github/fixtures.json"),
        "standard-webhooks" => include_str!("../../../plugins/standard-webhooks/fixtures.json"),
        "slack" => include_str!("../../../plugins/slack/fixtures.json"),
        "discord" => include_str!("../../../plugins/discord/fixtures.json"),
        "generic-hmac" => include_str!("../../../plugins/generic-hmac/fixtures.json"),
        _ => return None,
    })
}

/// Why a fixtures file cannot be used. `Display` is one line naming the fixture, the field
/// and where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FixtureError {
    /// Not JSON, or not `{"fixtures": [...]}`.
    #[error("not a fixtures file: {0}")]
    File(String),
    /// The list is empty: a file that tests nothing must not pass.
    #[error("the \"fixtures\" list is empty")]
    Empty,
    /// One fixture is malformed.
    #[error("fixture {fixture}: {message}")]
    Fixture {
        /// Which one: its position, name and line (`#2 "valid order" (line 14)`).
        fixture: String,
        /// What is wrong, naming the field.
        message: String,
    },
}

/// One recorded delivery, the source configuration it is checked with, and what the
/// plugin must make of it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    /// Unique within the file.
    pub name: String,
    /// The delivery.
    pub request: FixtureRequest,
    /// The source's secrets, in order (the plugin sees handles `0..n`).
    #[serde(default)]
    pub secrets: Vec<String>,
    /// The source's public keys, in order, as a source's `keys` accepts them.
    #[serde(default)]
    pub keys: Vec<String>,
    /// The source's settings, in the order written.
    #[serde(default, deserialize_with = "ordered_strings")]
    pub settings: Vec<(String, String)>,
    /// The gateway's address as the sender sees it.
    #[serde(default)]
    pub public_url: Option<String>,
    /// The clock the plugin reads, Unix seconds; none is the system clock.
    #[serde(default)]
    pub now: Option<i64>,
    /// The outcome the plugin must give.
    pub expect: Expectation,
}

/// A delivery as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureRequest {
    /// HTTP method; `POST` when absent.
    #[serde(default = "post")]
    pub method: String,
    /// The request path; `/api/v1/webhooks/<plugin>[/<topic>]` when absent.
    #[serde(default)]
    pub path: Option<String>,
    /// The URL's topic segment, percent-decoded.
    #[serde(default)]
    pub topic: Option<String>,
    /// The raw query string, without `?`.
    #[serde(default)]
    pub query: Option<String>,
    /// Headers in the order written; names are lower-cased when run.
    #[serde(default, deserialize_with = "ordered_strings")]
    pub headers: Vec<(String, String)>,
    /// The body as text.
    #[serde(default)]
    pub body: Option<String>,
    /// The body as standard base64, for bodies that are not UTF-8.
    #[serde(default)]
    pub body_base64: Option<String>,
}

/// What the plugin must give; an absent field is not checked, `Some(None)` (JSON `null`)
/// expects none.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// Whether the signature must hold.
    pub verified: bool,
    /// The refusal's code ([`VerifyError::code`]), when not verified.
    #[serde(default)]
    pub error: Option<String>,
    /// Index of the secret that must match.
    #[serde(default, deserialize_with = "present")]
    pub secret: Option<Option<usize>>,
    /// Index of the key that must match.
    #[serde(default, deserialize_with = "present")]
    pub key: Option<Option<usize>>,
    /// The map error's code ([`MapError::code`]).
    #[serde(default)]
    pub map_error: Option<String>,
    /// The mapping's idempotency key.
    #[serde(default, deserialize_with = "present")]
    pub idempotency_key: Option<Option<String>>,
    /// The mapping's tenant.
    #[serde(default, deserialize_with = "present")]
    pub tenant: Option<Option<String>>,
    /// The mapping's topic.
    #[serde(default)]
    pub topic: Option<String>,
    /// When the event occurred, as the plugin says.
    #[serde(default, deserialize_with = "present")]
    pub occurred_at: Option<Option<ExpectedTime>>,
    /// The events, all of them, in order.
    #[serde(default)]
    pub events: Option<Vec<ExpectedEvent>>,
    /// The handshake answered instead of storing.
    #[serde(default)]
    pub handshake: Option<ExpectedHandshake>,
}

/// An expected `occurred_at`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ExpectedTime {
    /// A JSON integer: Unix seconds.
    UnixSeconds(i64),
    /// A JSON string: RFC 3339 text, compared as written.
    Rfc3339(String),
}

/// One expected event.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedEvent {
    /// The event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The subject; absent is not checked, `null` expects none.
    #[serde(default, deserialize_with = "present")]
    pub subject: Option<Option<String>>,
}

/// An expected handshake.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedHandshake {
    /// HTTP status.
    #[serde(default)]
    pub status: Option<u16>,
    /// The body's content type.
    #[serde(default)]
    pub content_type: Option<String>,
    /// The body, as text.
    #[serde(default)]
    pub body: Option<String>,
}

fn post() -> String {
    "POST".to_owned()
}

/// `Some(value)` for a present field, `null` included, so `#[serde(default)]` leaves
/// absent fields `None`.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// A JSON object of strings as (key, value) pairs in the order written (repeats kept).
fn ordered_strings<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
    struct Pairs;
    impl<'de> Visitor<'de> for Pairs {
        type Value = Vec<(String, String)>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object of strings")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut pairs = Vec::new();
            while let Some(pair) = map.next_entry()? {
                pairs.push(pair);
            }
            Ok(pairs)
        }
    }
    d.deserialize_map(Pairs)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FixturesFile<'a> {
    #[serde(borrow)]
    fixtures: Vec<&'a RawValue>,
}

/// Only the name, to label a fixture whose other fields are wrong.
#[derive(Deserialize)]
struct NameOnly {
    #[serde(default)]
    name: Option<serde_json::Value>,
}

/// Parses and checks a fixtures file. Errors name the fixture (position, name, line) and
/// the field.
pub fn load_fixtures(text: &str) -> Result<Vec<Fixture>, FixtureError> {
    let file: FixturesFile<'_> =
        serde_json::from_str(text).map_err(|e| FixtureError::File(e.to_string()))?;
    if file.fixtures.is_empty() {
        return Err(FixtureError::Empty);
    }
    let mut fixtures = Vec::with_capacity(file.fixtures.len());
    let mut names = HashSet::new();
    for (i, raw) in file.fixtures.iter().enumerate() {
        let (line, column) = position(text, raw.get());
        let name = serde_json::from_str::<NameOnly>(raw.get())
            .ok()
            .and_then(|n| n.name)
            .and_then(|n| n.as_str().map(str::to_owned));
        let label = match &name {
            Some(name) => format!("#{} {name:?} (line {line})", i + 1),
            None => format!("#{} (line {line})", i + 1),
        };
        let invalid = |message: String| FixtureError::Fixture {
            fixture: label.clone(),
            message,
        };
        let fixture: Fixture = parse(raw.get(), line, column).map_err(invalid)?;
        validate(&fixture).map_err(invalid)?;
        if !names.insert(fixture.name.clone()) {
            return Err(invalid("another fixture has the same name".into()));
        }
        fixtures.push(fixture);
    }
    Ok(fixtures)
}

/// Line and column (1-based) where `part`, a slice of `text`, starts.
fn position(text: &str, part: &str) -> (usize, usize) {
    let offset = (part.as_ptr() as usize)
        .saturating_sub(text.as_ptr() as usize)
        .min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |n| n + 1) + 1;
    (line, column)
}

/// Deserializes one fixture; an error's position is given in the whole file.
fn parse<T: DeserializeOwned>(raw: &str, line: usize, column: usize) -> Result<T, String> {
    serde_json::from_str(raw).map_err(|e| {
        let text = e.to_string();
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        let message = text.strip_suffix(&suffix).unwrap_or(&text);
        if e.line() == 0 {
            return message.to_owned();
        }
        let at_line = line + e.line() - 1;
        let at_column = if e.line() == 1 {
            column + e.column() - 1
        } else {
            e.column()
        };
        format!("{message} (line {at_line}, column {at_column})")
    })
}

/// The refusal codes, by every name they are written with.
fn verify_code(name: &str) -> Option<&'static str> {
    Some(match name {
        "missing_signature" | "missing-signature" => "missing_signature",
        "malformed_signature" | "malformed-signature" => "malformed_signature",
        "signature_mismatch" | "mismatch" => "signature_mismatch",
        "signature_expired" | "expired" => "signature_expired",
        "rejected" => "rejected",
        _ => return None,
    })
}

/// The map error codes, by every name they are written with.
fn map_code(name: &str) -> Option<&'static str> {
    Some(match name {
        "unsupported_topic" | "unsupported-topic" => "unsupported_topic",
        "malformed_payload" | "malformed-payload" => "malformed_payload",
        "missing_field" | "missing-field" => "missing_field",
        "other" => "other",
        _ => return None,
    })
}

/// Checks what serde cannot: one body form, known codes, expectations that can hold
/// together.
fn validate(f: &Fixture) -> Result<(), String> {
    if f.name.trim().is_empty() {
        return Err("name is empty".into());
    }
    let r = &f.request;
    if r.body.is_some() && r.body_base64.is_some() {
        return Err("request has both body and body_base64; give one".into());
    }
    if let Some(b64) = &r.body_base64 {
        BASE64
            .decode(b64)
            .map_err(|e| format!("request.body_base64 is not standard base64: {e}"))?;
    }
    if r.method.trim().is_empty() {
        return Err("request.method is empty".into());
    }
    if let Some(path) = &r.path
        && !path.starts_with('/')
    {
        return Err(format!("request.path {path:?} does not start with '/'"));
    }
    let e = &f.expect;
    if let Some(code) = &e.error
        && verify_code(code).is_none()
    {
        return Err(format!(
            "expect.error {code:?} is not a refusal code (missing_signature, \
             malformed_signature, signature_mismatch, signature_expired, rejected)"
        ));
    }
    if let Some(code) = &e.map_error
        && map_code(code).is_none()
    {
        return Err(format!(
            "expect.map_error {code:?} is not a map error code (unsupported_topic, \
             malformed_payload, missing_field, other)"
        ));
    }
    let mapping_fields = [
        ("idempotency_key", e.idempotency_key.is_some()),
        ("tenant", e.tenant.is_some()),
        ("topic", e.topic.is_some()),
        ("occurred_at", e.occurred_at.is_some()),
        ("events", e.events.is_some()),
    ];
    if e.verified {
        if e.error.is_some() {
            return Err("expect.error describes a refusal: it needs \"verified\": false".into());
        }
    } else {
        let verified_only = [
            ("secret", e.secret.is_some()),
            ("key", e.key.is_some()),
            ("map_error", e.map_error.is_some()),
            ("handshake", e.handshake.is_some()),
        ];
        if let Some((field, _)) = verified_only
            .iter()
            .chain(&mapping_fields)
            .find(|(_, set)| *set)
        {
            return Err(format!(
                "expect.{field} describes a verified delivery: it needs \"verified\": true"
            ));
        }
    }
    if e.map_error.is_some() {
        let outcome_fields = [("handshake", e.handshake.is_some())];
        if let Some((field, _)) = mapping_fields
            .iter()
            .chain(&outcome_fields)
            .find(|(_, set)| *set)
        {
            return Err(format!(
                "expect.map_error and expect.{field} cannot both hold: a map error has no mapping"
            ));
        }
    }
    if e.handshake.is_some()
        && let Some((field, _)) = mapping_fields.iter().find(|(_, set)| *set)
    {
        return Err(format!(
            "expect.handshake and expect.{field} cannot both hold: a handshake stores nothing"
        ));
    }
    Ok(())
}

/// What running one fixture gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixtureResult {
    /// The fixture's name.
    pub name: String,
    /// Whether every expectation held.
    pub passed: bool,
    /// What happened, in one line: verified with which secret or key, or why not; then
    /// the mapping, the map error or the handshake.
    pub outcome: String,
    /// The first expectation that did not hold, when failed.
    pub mismatch: Option<String>,
}

/// What running a plugin's fixtures gave: one row per fixture, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixtureReport {
    /// The plugin, as `name@version`.
    pub plugin: String,
    /// One per fixture.
    pub results: Vec<FixtureResult>,
}

impl FixtureReport {
    /// Fixtures that passed.
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.passed).count()
    }

    /// Fixtures that failed.
    pub fn failed(&self) -> usize {
        self.results.len() - self.passed()
    }

    /// Whether there were fixtures and all passed.
    pub fn all_passed(&self) -> bool {
        !self.results.is_empty() && self.failed() == 0
    }
}

impl fmt::Display for FixtureReport {
    /// A table (name, PASS/FAIL, outcome; a failure's mismatch on the line below) and a
    /// closing `N passed, M failed`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .results
            .iter()
            .map(|r| r.name.chars().count())
            .max()
            .unwrap_or(0);
        for r in &self.results {
            let verdict = if r.passed { "PASS" } else { "FAIL" };
            writeln!(f, "{:width$}  {verdict}  {}", r.name, r.outcome)?;
            if let Some(mismatch) = &r.mismatch {
                writeln!(f, "{:width$}        {mismatch}", "")?;
            }
        }
        write!(f, "{} passed, {} failed", self.passed(), self.failed())
    }
}

/// Runs each fixture through `plugin` ([`Plugin::process`], with the fixture's clock) and
/// compares the outcome with its expectation. Blocking: runs guest code on this thread.
pub fn run_fixtures(plugin: &Plugin, fixtures: &[Fixture]) -> FixtureReport {
    let metadata = plugin.metadata();
    FixtureReport {
        plugin: format!("{}@{}", metadata.name, metadata.version),
        results: fixtures.iter().map(|f| run_one(plugin, f)).collect(),
    }
}

fn run_one(plugin: &Plugin, fixture: &Fixture) -> FixtureResult {
    let result = |outcome: String, mismatch: Option<String>| FixtureResult {
        name: fixture.name.clone(),
        passed: mismatch.is_none(),
        outcome,
        mismatch,
    };
    let input = match call_input(plugin.name(), fixture) {
        Ok(input) => input,
        Err(reason) => return result(format!("not run: {reason}"), Some(reason)),
    };
    let processed = plugin.process(&input.as_input());
    result(
        describe(&processed),
        compare(&fixture.expect, &processed).err(),
    )
}

/// Path characters that stand for themselves in a topic segment.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// The call input a fixture describes; an error names what cannot be used.
fn call_input(plugin: &str, f: &Fixture) -> Result<OwnedCallInput, String> {
    let r = &f.request;
    let body = match (&r.body, &r.body_base64) {
        (Some(text), _) => Bytes::from(text.clone().into_bytes()),
        (None, Some(b64)) => Bytes::from(
            BASE64
                .decode(b64)
                .map_err(|e| format!("request.body_base64 is not base64: {e}"))?,
        ),
        (None, None) => Bytes::new(),
    };
    let path = r.path.clone().unwrap_or_else(|| {
        let mut path = format!("/api/v1/webhooks/{plugin}");
        for segment in r.topic.iter().flat_map(|t| t.split('/')) {
            path.push('/');
            path.extend(utf8_percent_encode(segment, SEGMENT));
        }
        path
    });
    let keys = f
        .keys
        .iter()
        .enumerate()
        .map(|(i, text)| PublicKey::parse(text).map_err(|e| format!("key {i} does not parse: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(OwnedCallInput {
        request: Arc::new(WebhookRequest {
            method: r.method.trim().to_ascii_uppercase(),
            path,
            topic: r.topic.clone(),
            query: r.query.clone(),
            headers: r
                .headers
                .iter()
                .map(|(name, value)| (name.to_ascii_lowercase(), value.clone()))
                .collect(),
            body,
        }),
        credentials: Credentials {
            secrets: f.secrets.iter().map(|s| s.as_bytes().to_vec()).collect(),
            keys: keys.into(),
            public_url: f.public_url.as_deref().map(Arc::from),
            allow_raw_mac: false,
        },
        settings: Arc::new(f.settings.clone()),
        now_unix_seconds: f.now,
        correlation_id: "fixture".into(),
    })
}

/// `value`, or `none`.
fn shown(value: Option<&str>) -> &str {
    value.unwrap_or("none")
}

fn time_text(t: &Timestamp) -> String {
    match t {
        Timestamp::UnixSeconds(s) => s.to_string(),
        Timestamp::Rfc3339(s) => s.clone(),
    }
}

fn expected_time_text(t: &ExpectedTime) -> String {
    match t {
        ExpectedTime::UnixSeconds(s) => s.to_string(),
        ExpectedTime::Rfc3339(s) => s.clone(),
    }
}

/// What happened, in one line.
fn describe(processed: &Result<Processed, PluginFault>) -> String {
    let (matched_secret, matched_key, mapped) = match processed {
        Err(fault) => return format!("plugin fault: {fault}"),
        Ok(Processed::Rejected(e)) => return format!("refused {}: {}", e.code(), e.detail()),
        Ok(Processed::Verified {
            matched_secret,
            matched_key,
            mapped,
        }) => (matched_secret, matched_key, mapped),
    };
    let by = match (matched_secret, matched_key) {
        (Some(s), Some(k)) => format!("secret {s}, key {k}"),
        (Some(s), None) => format!("secret {s}"),
        (None, Some(k)) => format!("key {k}"),
        (None, None) => "no secret or key named".to_owned(),
    };
    let what = match mapped {
        Err(MapFailure::Plugin(e)) => format!("map error {}: {}", e.code(), map_detail(e)),
        Err(MapFailure::Fault(fault)) => format!("plugin fault in map: {fault}"),
        Ok(MapOutcome::Respond(h)) => {
            let body = String::from_utf8_lossy(&h.body);
            let body = if body.is_empty() {
                "empty body".to_owned()
            } else {
                sanitize(&body, 60)
            };
            format!("handshake {} {} {body}", h.status, h.content_type)
        }
        Ok(MapOutcome::Events(m)) => {
            let events: Vec<String> = m
                .events
                .iter()
                .map(|e| match &e.subject {
                    Some(subject) => format!("{}({subject})", e.event_type),
                    None => e.event_type.clone(),
                })
                .collect();
            let mut text = format!(
                "topic {}, key {}, tenant {}",
                m.topic,
                shown(m.idempotency_key.as_deref()),
                shown(m.tenant.as_deref())
            );
            if let Some(at) = &m.occurred_at {
                text.push_str(&format!(", at {}", time_text(at)));
            }
            text.push_str(&format!(", events {}", events.join(" ")));
            text
        }
    };
    format!("verified ({by}); {what}")
}

fn map_detail(e: &MapError) -> &str {
    match e {
        MapError::UnsupportedTopic(s)
        | MapError::MalformedPayload(s)
        | MapError::MissingField(s)
        | MapError::Other(s) => s,
    }
}

/// `Err` with the first expectation that does not hold.
fn compare(e: &Expectation, processed: &Result<Processed, PluginFault>) -> Result<(), String> {
    let (matched_secret, matched_key, mapped) = match processed {
        Err(fault) => return Err(format!("the plugin failed: {fault}")),
        Ok(Processed::Rejected(refused)) => return compare_refusal(e, refused),
        Ok(Processed::Verified {
            matched_secret,
            matched_key,
            mapped,
        }) => (*matched_secret, *matched_key, mapped),
    };
    if !e.verified {
        return Err(format!(
            "expected a refusal{}, got verified",
            e.error
                .as_deref()
                .and_then(verify_code)
                .map(|c| format!(" ({c})"))
                .unwrap_or_default()
        ));
    }
    for (what, want, got) in [
        ("secret", e.secret, matched_secret),
        ("key", e.key, matched_key),
    ] {
        if let Some(want) = want
            && want != got
        {
            let text = |i: Option<usize>| i.map_or("none".to_owned(), |i| i.to_string());
            return Err(format!("expected {what} {}, got {}", text(want), text(got)));
        }
    }
    let wants_mapping = e.idempotency_key.is_some()
        || e.tenant.is_some()
        || e.topic.is_some()
        || e.occurred_at.is_some()
        || e.events.is_some();
    match mapped {
        Err(MapFailure::Fault(fault)) => Err(format!("the plugin failed in map: {fault}")),
        Err(MapFailure::Plugin(error)) => match e.map_error.as_deref().and_then(map_code) {
            Some(want) if want != error.code() => Err(format!(
                "expected map error {want}, got map error {}",
                error.code()
            )),
            Some(_) => Ok(()),
            None if wants_mapping => Err(format!(
                "expected events, got map error {}: {}",
                error.code(),
                map_detail(error)
            )),
            None if e.handshake.is_some() => Err(format!(
                "expected a handshake, got map error {}: {}",
                error.code(),
                map_detail(error)
            )),
            None => Ok(()),
        },
        Ok(outcome) => {
            if let Some(want) = e.map_error.as_deref().and_then(map_code) {
                let got = match outcome {
                    MapOutcome::Events(_) => "events",
                    MapOutcome::Respond(_) => "a handshake",
                };
                return Err(format!("expected map error {want}, got {got}"));
            }
            match outcome {
                MapOutcome::Respond(h) => {
                    if wants_mapping {
                        return Err(format!("expected events, got a handshake ({})", h.status));
                    }
                    compare_handshake(e.handshake.as_ref(), h)
                }
                MapOutcome::Events(m) => {
                    if e.handshake.is_some() {
                        return Err(format!(
                            "expected a handshake, got events (topic {})",
                            m.topic
                        ));
                    }
                    compare_mapping(e, m)
                }
            }
        }
    }
}

fn compare_refusal(e: &Expectation, refused: &VerifyError) -> Result<(), String> {
    if e.verified {
        return Err(format!(
            "expected verified, got refused {}: {}",
            refused.code(),
            refused.detail()
        ));
    }
    match e.error.as_deref().and_then(verify_code) {
        Some(want) if want != refused.code() => Err(format!(
            "expected refusal {want}, got {}: {}",
            refused.code(),
            refused.detail()
        )),
        _ => Ok(()),
    }
}

fn compare_handshake(want: Option<&ExpectedHandshake>, got: &Handshake) -> Result<(), String> {
    let Some(want) = want else { return Ok(()) };
    if let Some(status) = want.status
        && status != got.status
    {
        return Err(format!(
            "expected handshake status {status}, got {}",
            got.status
        ));
    }
    if let Some(content_type) = &want.content_type
        && *content_type != got.content_type
    {
        return Err(format!(
            "expected handshake content type {content_type}, got {}",
            got.content_type
        ));
    }
    if let Some(body) = &want.body
        && body.as_bytes() != got.body.as_slice()
    {
        return Err(format!(
            "expected handshake body {}, got {}",
            sanitize(body, 80),
            sanitize(&String::from_utf8_lossy(&got.body), 80)
        ));
    }
    Ok(())
}

fn compare_mapping(e: &Expectation, m: &Mapping) -> Result<(), String> {
    let fields = [
        (
            "idempotency key",
            &e.idempotency_key,
            m.idempotency_key.as_deref(),
        ),
        ("tenant", &e.tenant, m.tenant.as_deref()),
    ];
    for (what, want, got) in fields {
        if let Some(want) = want
            && want.as_deref() != got
        {
            return Err(format!(
                "expected {what} {}, got {}",
                shown(want.as_deref()),
                shown(got)
            ));
        }
    }
    if let Some(topic) = &e.topic
        && *topic != m.topic
    {
        return Err(format!("expected topic {topic}, got {}", m.topic));
    }
    if let Some(want) = &e.occurred_at {
        let same = match (want, &m.occurred_at) {
            (None, None) => true,
            (Some(ExpectedTime::UnixSeconds(a)), Some(Timestamp::UnixSeconds(b))) => a == b,
            (Some(ExpectedTime::Rfc3339(a)), Some(Timestamp::Rfc3339(b))) => a == b,
            _ => false,
        };
        if !same {
            return Err(format!(
                "expected occurred_at {}, got {}",
                want.as_ref().map_or("none".to_owned(), expected_time_text),
                m.occurred_at.as_ref().map_or("none".to_owned(), time_text)
            ));
        }
    }
    let Some(events) = &e.events else {
        return Ok(());
    };
    for (i, (want, got)) in events.iter().zip(&m.events).enumerate() {
        let which = if events.len() > 1 {
            format!(" (event {})", i + 1)
        } else {
            String::new()
        };
        if want.event_type != got.event_type {
            return Err(format!(
                "expected event type {}, got {}{which}",
                want.event_type, got.event_type
            ));
        }
        if let Some(subject) = &want.subject
            && subject.as_deref() != got.subject.as_deref()
        {
            return Err(format!(
                "expected subject {}, got {}{which}",
                shown(subject.as_deref()),
                shown(got.subject.as_deref())
            ));
        }
    }
    if events.len() != m.events.len() {
        return Err(format!(
            "expected {} events, got {}",
            events.len(),
            m.events.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use super::*;
    use crate::plugin::{LoadOptions, PluginEngine, PluginLimits, bundled};

    fn engine() -> &'static PluginEngine {
        static ENGINE: OnceLock<PluginEngine> = OnceLock::new();
        ENGINE.get_or_init(|| PluginEngine::new(PluginLimits::default()).expect("engine"))
    }

    fn load_bundled(name: &str) -> Arc<Plugin> {
        let (_, bytes) = bundled()
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("no bundled plugin {name}"));
        let options = LoadOptions {
            cache_dir: Some(std::env::temp_dir().join("hookgate-test-plugin-cache")),
        };
        engine()
            .load_with(bytes, &options)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// The shared Shopify vector (`shopify-valid`), with `expect` filled in by the test.
    fn shopify_fixture(name: &str, expect: &str) -> String {
        format!(
            r#"{{ "fixtures": [ {{
  "name": "{name}",
  "request": {{
    "headers": {{
      "X-Shopify-Topic": "orders/create",
      "X-Shopify-Shop-Domain": "example-shop.myshopify.com",
      "X-Shopify-Event-Id": "98880550-7158-44d4-b7cd-2c97c8a091b5",
      "X-Shopify-Hmac-Sha256": "w0+F7nWkX9IpibXKlH204nA6q0YnpKJPQwOaEC/X7pM="
    }},
    "body": "{{\"id\":820982911946154500,\"email\":\"jon@example.com\",\"total_price\":\"403.00\",\"currency\":\"USD\",\"line_items\":[{{\"id\":866550311766439000,\"title\":\"IPod Nano - 8GB\",\"quantity\":1,\"price\":\"199.00\"}}]}}"
  }},
  "secrets": ["old-secret", "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"],
  "now": 1764000000,
  "expect": {expect}
}} ] }}"#
        )
    }

    fn run(text: &str) -> FixtureReport {
        let fixtures = load_fixtures(text).expect("valid fixtures");
        run_fixtures(&load_bundled("shopify"), &fixtures)
    }

    #[test]
    fn a_fixture_that_holds_passes_and_says_what_happened() {
        let report = run(&shopify_fixture(
            "valid order",
            r#"{ "verified": true, "secret": 1, "key": null, "tenant": "example-shop.myshopify.com",
                 "idempotency_key": "orders/create:98880550-7158-44d4-b7cd-2c97c8a091b5",
                 "topic": "orders/create", "occurred_at": null,
                 "events": [ { "type": "order.created", "subject": "820982911946154500" } ] }"#,
        ));
        let row = &report.results[0];
        assert!(row.passed, "{report}");
        assert_eq!(row.mismatch, None);
        assert_eq!(
            row.outcome,
            "verified (secret 1); topic orders/create, \
             key orders/create:98880550-7158-44d4-b7cd-2c97c8a091b5, \
             tenant example-shop.myshopify.com, events order.created(820982911946154500)"
        );
        assert!(report.all_passed());
        assert!(report.plugin.starts_with("shopify@"), "{}", report.plugin);
        assert!(
            report.to_string().ends_with("1 passed, 0 failed"),
            "{report}"
        );
    }

    #[test]
    fn a_fixture_that_does_not_hold_names_the_first_mismatch() {
        let cases = [
            (
                r#"{ "verified": true, "events": [ { "type": "order.updated" } ] }"#,
                "expected event type order.updated, got order.created",
            ),
            (
                r#"{ "verified": true, "secret": 0 }"#,
                "expected secret 0, got 1",
            ),
            (
                r#"{ "verified": false, "error": "mismatch" }"#,
                "expected a refusal (signature_mismatch), got verified",
            ),
            (
                r#"{ "verified": true, "tenant": null }"#,
                "expected tenant none, got example-shop.myshopify.com",
            ),
            (
                r#"{ "verified": true, "events": [ { "type": "order.created" }, { "type": "x" } ] }"#,
                "expected 2 events, got 1",
            ),
            (
                r#"{ "verified": true, "map_error": "missing_field" }"#,
                "expected map error missing_field, got events",
            ),
            (
                r#"{ "verified": true, "handshake": { "status": 200 } }"#,
                "expected a handshake, got events (topic orders/create)",
            ),
        ];
        for (expect, mismatch) in cases {
            let report = run(&shopify_fixture("f", expect));
            let row = &report.results[0];
            assert!(!row.passed, "{expect}");
            assert_eq!(row.mismatch.as_deref(), Some(mismatch), "{expect}");
            assert!(!report.all_passed());
            let table = report.to_string();
            assert!(table.contains("  FAIL  verified (secret 1); "), "{table}");
            assert!(table.contains(mismatch), "{table}");
            assert!(table.ends_with("0 passed, 1 failed"), "{table}");
        }
    }

    #[test]
    fn refusals_and_unusable_keys_are_reported() {
        let tampered =
            shopify_fixture("tampered", r#"{ "verified": true }"#).replace("403.00", "0.01");
        let report = run(&tampered);
        let row = &report.results[0];
        assert_eq!(
            row.mismatch.as_deref(),
            Some(
                "expected verified, got refused signature_mismatch: \
                 no configured secret signs this body"
            )
        );
        assert!(
            row.outcome.starts_with("refused signature_mismatch"),
            "{row:?}"
        );

        let refused = tampered.replace(
            r#""verified": true"#,
            r#""verified": false, "error": "signature_mismatch""#,
        );
        assert!(run(&refused).all_passed());
        let other_refusal = tampered.replace(
            r#""verified": true"#,
            r#""verified": false, "error": "expired""#,
        );
        assert_eq!(
            run(&other_refusal).results[0].mismatch.as_deref(),
            Some(
                "expected refusal signature_expired, got signature_mismatch: \
                 no configured secret signs this body"
            )
        );

        let bad_key = shopify_fixture("bad key", r#"{ "verified": true }"#)
            .replace(r#""now":"#, r#""keys": ["not a key"], "now":"#);
        let row = &run(&bad_key).results[0];
        assert!(!row.passed);
        assert!(
            row.mismatch
                .as_deref()
                .is_some_and(|m| m.starts_with("key 0 does not parse: ")),
            "{row:?}"
        );
    }

    #[test]
    fn bad_files_are_refused_naming_the_fixture_and_the_field() {
        let err = |text: &str| load_fixtures(text).unwrap_err().to_string();

        let unknown = shopify_fixture("valid order", r#"{ "verified": true, "tenants": "x" }"#);
        let message = err(&unknown);
        assert!(
            message.starts_with(r#"fixture #1 "valid order" (line 1): unknown field `tenants`"#),
            "{message}"
        );
        assert!(message.ends_with("(line 14, column 41)"), "{message}");

        let wrong_type = shopify_fixture("typed", r#"{ "verified": "yes" }"#);
        let message = err(&wrong_type);
        assert!(
            message.starts_with(r#"fixture #1 "typed" (line 1): invalid type: string "yes""#),
            "{message}"
        );

        let missing = r#"{ "fixtures": [
            { "name": "ok", "request": {}, "expect": { "verified": false } },
            { "name": "no expect", "request": {} }
        ] }"#;
        assert_eq!(
            err(missing),
            r#"fixture #2 "no expect" (line 3): missing field `expect` (line 3, column 50)"#
        );

        let contradictory =
            shopify_fixture("both", r#"{ "verified": false, "tenant": "example" }"#);
        assert_eq!(
            err(&contradictory),
            r#"fixture #1 "both" (line 1): expect.tenant describes a verified delivery: it needs "verified": true"#
        );
        let unknown_code = shopify_fixture("code", r#"{ "verified": false, "error": "nope" }"#);
        assert!(err(&unknown_code).contains(r#"expect.error "nope" is not a refusal code"#));

        let duplicate = r#"{ "fixtures": [
            { "name": "a", "request": {}, "expect": { "verified": false } },
            { "name": "a", "request": {}, "expect": { "verified": false } }
        ] }"#;
        assert_eq!(
            err(duplicate),
            r#"fixture #2 "a" (line 3): another fixture has the same name"#
        );
        assert!(err("[]").starts_with("not a fixtures file: "));
        assert!(err(r#"{"fixtures": [], "extra": 1}"#).contains("unknown field `extra`"));
        assert_eq!(err(r#"{"fixtures": []}"#), "the \"fixtures\" list is empty");
    }

    #[test]
    fn the_request_is_built_as_the_gateway_would() {
        let fixtures = load_fixtures(
            r#"{ "fixtures": [ { "name": "r",
                "request": { "method": "post", "topic": "orders/create", "query": "a=1",
                             "headers": { "X-B": "2", "X-A": "1" }, "body_base64": "/w==" },
                "secrets": ["s"], "settings": { "z": "1", "a": "2" },
                "public_url": "https://hooks.example.com", "now": 5,
                "expect": { "verified": false } } ] }"#,
        )
        .expect("valid");
        let input = call_input("shopify", &fixtures[0]).expect("usable");
        let r = &input.request;
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/api/v1/webhooks/shopify/orders/create");
        assert_eq!(r.topic.as_deref(), Some("orders/create"));
        assert_eq!(r.query.as_deref(), Some("a=1"));
        assert_eq!(
            r.headers,
            [("x-b".into(), "2".into()), ("x-a".into(), "1".into())]
        );
        assert_eq!(r.body.as_ref(), [0xff]);
        assert_eq!(
            *input.settings,
            [("z".into(), "1".into()), ("a".into(), "2".into())]
        );
        assert_eq!(input.credentials.secrets.len(), 1);
        assert_eq!(
            input.credentials.public_url.as_deref(),
            Some("https://hooks.example.com")
        );
        assert_eq!(input.now_unix_seconds, Some(5));
    }

    /// What makes the bundled plugins ship fixtures: each has some, valid and refused
    /// deliveries among them, and all pass.
    #[test]
    fn every_bundled_plugin_passes_its_fixtures() {
        for (name, _) in bundled() {
            let text = bundled_fixtures(name).unwrap_or_else(|| panic!("{name}: no fixtures"));
            let fixtures = load_fixtures(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(
                fixtures.iter().any(|f| f.expect.verified)
                    && fixtures.iter().any(|f| !f.expect.verified),
                "{name}: needs a valid and a refused delivery"
            );
            let report = run_fixtures(&load_bundled(name), &fixtures);
            assert!(report.all_passed(), "{name}:\n{report}");
        }
    }
}
