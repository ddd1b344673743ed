//! The gateway's own view of what plugins take and return, mirroring the WIT types, so
//! nothing outside `plugin` depends on generated bindings; plus the checks the host makes
//! on what a plugin returns.

use std::fmt;

use bytes::Bytes;

/// A source's free-form settings handed to its plugin, as (key, value) pairs.
pub type Settings = Vec<(String, String)>;

/// One webhook delivery as the plugin sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookRequest {
    /// HTTP method, upper case.
    pub method: String,
    /// The request's path as received, still percent-encoded (`/api/v1/webhooks/square`):
    /// the part of the signed URL that follows the configured `public_url`.
    pub path: String,
    /// The topic segment of the URL, percent-decoded.
    pub topic: Option<String>,
    /// The raw query string without `?`.
    pub query: Option<String>,
    /// Headers, names in lower case: in arrival order, except that the repeats of a name
    /// follow its first appearance (the HTTP library keeps headers by name).
    pub headers: Vec<(String, String)>,
    /// The raw body.
    pub body: Bytes,
}

impl WebhookRequest {
    /// The value of the first header named `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What a source holds for its plugin to verify with: secret values (the plugin sees
/// handles `0..n` in this order), public keys (likewise), the URL senders sign, and
/// whether the raw `hmac` is granted. Cheap to clone; `Debug` shows counts, never values.
#[derive(Clone, Default)]
pub struct Credentials {
    /// Secret values, in configuration order.
    pub secrets: std::sync::Arc<[Vec<u8>]>,
    /// Public keys, in configuration order.
    pub keys: std::sync::Arc<[hookgate_plugin_sdk::keys::PublicKey]>,
    /// The gateway's address as senders see it; the request's path and query follow.
    pub public_url: Option<std::sync::Arc<str>>,
    /// Whether the plugin may obtain raw MACs (a signing oracle otherwise withheld).
    pub allow_raw_mac: bool,
}

impl Credentials {
    /// Just these secrets.
    pub fn with_secrets(secrets: impl Into<std::sync::Arc<[Vec<u8>]>>) -> Self {
        Self {
            secrets: secrets.into(),
            ..Self::default()
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field(
                "secrets",
                &format_args!("<{} redacted>", self.secrets.len()),
            )
            .field("keys", &self.keys.len())
            .field("public_url", &self.public_url)
            .field("allow_raw_mac", &self.allow_raw_mac)
            .finish()
    }
}

/// Caps on what a plugin may return for one webhook, so a plugin cannot run the host out
/// of memory or fill the store; beyond them the webhook is stored failed with the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputLimits {
    /// Most events.
    pub max_events: usize,
    /// Most bytes of event data in all (an event without data of its own counts the body).
    pub max_event_bytes: u64,
    /// Longest error text kept, in characters.
    pub max_error_chars: usize,
}

impl Default for OutputLimits {
    fn default() -> Self {
        Self {
            max_events: 100,
            max_event_bytes: 32 * 1024 * 1024,
            max_error_chars: 1024,
        }
    }
}

/// Who a plugin is, as it declared itself at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// Short lower-case name.
    pub name: String,
    /// Semantic version.
    pub version: String,
    /// One line for operators.
    pub description: String,
    /// How long the sender retries a delivery, in hours.
    pub retry_window_hours: u32,
}

/// Why a delivery is not authentic (the plugin's own answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyError {
    /// The signature is absent.
    MissingSignature(String),
    /// The signature cannot be parsed.
    MalformedSignature(String),
    /// No configured secret produces this signature.
    Mismatch(String),
    /// The signature's timestamp is outside the tolerance.
    Expired(String),
    /// Any other reason.
    Rejected(String),
}

impl VerifyError {
    /// The same error with its text made safe to log and store (see [`sanitize`]).
    pub(crate) fn sanitized(self, max_chars: usize) -> Self {
        let clean = |text: String| sanitize(&text, max_chars);
        match self {
            Self::MissingSignature(m) => Self::MissingSignature(clean(m)),
            Self::MalformedSignature(m) => Self::MalformedSignature(clean(m)),
            Self::Mismatch(m) => Self::Mismatch(clean(m)),
            Self::Expired(m) => Self::Expired(clean(m)),
            Self::Rejected(m) => Self::Rejected(clean(m)),
        }
    }

    /// A stable machine code for logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingSignature(_) => "missing_signature",
            Self::MalformedSignature(_) => "malformed_signature",
            Self::Mismatch(_) => "signature_mismatch",
            Self::Expired(_) => "signature_expired",
            Self::Rejected(_) => "rejected",
        }
    }

    /// The plugin's explanation.
    pub fn detail(&self) -> &str {
        match self {
            Self::MissingSignature(s)
            | Self::MalformedSignature(s)
            | Self::Mismatch(s)
            | Self::Expired(s)
            | Self::Rejected(s) => s,
        }
    }
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            Self::MissingSignature(_) => "missing signature",
            Self::MalformedSignature(_) => "malformed signature",
            Self::Mismatch(_) => "signature mismatch",
            Self::Expired(_) => "signature expired",
            Self::Rejected(_) => "rejected",
        };
        write!(f, "{what}: {}", self.detail())
    }
}

impl std::error::Error for VerifyError {}

/// Why a verified webhook cannot be mapped (the plugin's own answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapError {
    /// The plugin does not know this topic.
    UnsupportedTopic(String),
    /// The body is not what the source sends.
    MalformedPayload(String),
    /// A needed header or field is absent.
    MissingField(String),
    /// Anything else.
    Other(String),
}

impl MapError {
    /// The same error with its text made safe to log and store (see [`sanitize`]).
    pub(crate) fn sanitized(self, max_chars: usize) -> Self {
        let clean = |text: String| sanitize(&text, max_chars);
        match self {
            Self::UnsupportedTopic(m) => Self::UnsupportedTopic(clean(m)),
            Self::MalformedPayload(m) => Self::MalformedPayload(clean(m)),
            Self::MissingField(m) => Self::MissingField(clean(m)),
            Self::Other(m) => Self::Other(clean(m)),
        }
    }

    /// A stable machine code for logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnsupportedTopic(_) => "unsupported_topic",
            Self::MalformedPayload(_) => "malformed_payload",
            Self::MissingField(_) => "missing_field",
            Self::Other(_) => "other",
        }
    }
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnsupportedTopic(s) => write!(f, "unsupported topic: {s}"),
            Self::MalformedPayload(s) => write!(f, "malformed payload: {s}"),
            Self::MissingField(s) => write!(f, "missing field: {s}"),
            Self::Other(s) => write!(f, "map failed: {s}"),
        }
    }
}

impl std::error::Error for MapError {}

/// When something happened, as the plugin said it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Timestamp {
    /// Seconds since the Unix epoch.
    UnixSeconds(i64),
    /// An RFC 3339 date-time, checked by the host to parse.
    Rfc3339(String),
}

impl Timestamp {
    /// The instant as a UTC date-time (both forms were checked when the plugin returned).
    pub fn to_utc(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        match self {
            Self::UnixSeconds(s) => chrono::DateTime::from_timestamp(*s, 0),
            Self::Rfc3339(s) => chrono::DateTime::parse_from_rfc3339(s)
                .ok()
                .map(|t| t.with_timezone(&chrono::Utc)),
        }
    }
}

/// One domain event derived from a webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainEvent {
    /// Dot-separated type, safe as a NATS subject part.
    pub event_type: String,
    /// The entity the event is about.
    pub subject: Option<String>,
    /// JSON text; none means the raw body.
    pub data: Option<String>,
}

/// What a webhook means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// The source's duplicate marker; none means the body's SHA-256.
    pub idempotency_key: Option<String>,
    /// The tenant the webhook belongs to.
    pub tenant: Option<String>,
    /// The normalised topic.
    pub topic: String,
    /// When the source says the event occurred.
    pub occurred_at: Option<Timestamp>,
    /// The events to publish, in order.
    pub events: Vec<DomainEvent>,
}

/// A response to send as is instead of storing the webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    /// HTTP status, 200-299.
    pub status: u16,
    /// The body's content type.
    pub content_type: String,
    /// More response headers (contract 0.2); checked by [`validate_map_outcome`].
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// The result of a successful `map`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapOutcome {
    /// Store the webhook and publish these events.
    Events(Mapping),
    /// Answer with this response; store nothing.
    Respond(Handshake),
}

/// Longest text the host accepts in an identifier-like field from a plugin.
const MAX_FIELD: usize = 1024;

/// Checks what a plugin says about itself: a name usable in config and file names, a
/// semantic version and a one-line description.
pub(crate) fn validate_metadata(m: &Metadata) -> Result<(), String> {
    let name_ok = !m.name.is_empty()
        && m.name.len() <= 64
        && m.name.starts_with(|c: char| c.is_ascii_lowercase())
        && m.name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !name_ok {
        return Err(format!(
            "name {:?} must be 1-64 characters of a-z, 0-9, '-' or '_', starting with a letter",
            m.name
        ));
    }
    if !is_semver(&m.version) {
        return Err(format!(
            "version {:?} is not a semantic version (like 1.2.0)",
            m.version
        ));
    }
    if m.description.trim().is_empty() {
        return Err("description is empty".into());
    }
    if m.description.len() > MAX_FIELD || m.description.contains(['\n', '\r']) {
        return Err("description must be one line of at most 1024 bytes".into());
    }
    Ok(())
}

/// `MAJOR.MINOR.PATCH` with optional `-pre` and `+build` parts (SemVer 2.0.0).
fn is_semver(v: &str) -> bool {
    let (v, build) = match v.split_once('+') {
        Some((v, b)) => (v, Some(b)),
        None => (v, None),
    };
    let (core, pre) = match v.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (v, None),
    };
    let numeric = |s: &str| {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'))
    };
    let ident = |s: &str| {
        !s.is_empty()
            && s.split('.').all(|part| {
                !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
    };
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| numeric(p))
        && pre.is_none_or(ident)
        && build.is_none_or(ident)
}

/// Checks what a plugin's `map` returned: text fields of bounded length without control
/// characters, a timestamp that means an instant, event types usable as subject tokens, a
/// 2xx handshake with a usable content type. The error says what is wrong.
pub(crate) fn validate_map_outcome(
    o: &MapOutcome,
    limits: &OutputLimits,
    body_len: usize,
) -> Result<(), String> {
    match o {
        MapOutcome::Events(m) => {
            if m.events.len() > limits.max_events {
                return Err(format!(
                    "{} events, more than the {} allowed per webhook (plugins.max_events)",
                    m.events.len(),
                    limits.max_events
                ));
            }
            let bytes: u64 = m
                .events
                .iter()
                .map(|e| e.data.as_ref().map_or(body_len, String::len) as u64)
                .sum();
            if bytes > limits.max_event_bytes {
                return Err(format!(
                    "the events carry {bytes} bytes, more than the {} allowed per webhook \
                     (plugins.max_event_bytes_mb)",
                    limits.max_event_bytes
                ));
            }
            if let Some(key) = &m.idempotency_key {
                check_text("idempotency key", key)?;
            }
            if let Some(tenant) = &m.tenant {
                check_text("tenant", tenant)?;
            }
            check_text("topic", &m.topic)?;
            match &m.occurred_at {
                Some(Timestamp::UnixSeconds(s))
                    if chrono::DateTime::from_timestamp(*s, 0).is_none() =>
                {
                    return Err(format!("occurred-at {s} is out of range"));
                }
                Some(Timestamp::Rfc3339(s)) if chrono::DateTime::parse_from_rfc3339(s).is_err() => {
                    return Err(format!("occurred-at {:?} is not RFC 3339", truncate(s, 64)));
                }
                _ => {}
            }
            for e in &m.events {
                check_event_type(&e.event_type)?;
                if let Some(subject) = &e.subject {
                    check_text("event subject", subject)?;
                }
            }
            Ok(())
        }
        MapOutcome::Respond(h) => {
            if !(200..=299).contains(&h.status) {
                return Err(format!("handshake status {} is not 2xx", h.status));
            }
            if h.content_type.is_empty()
                || h.content_type.len() > MAX_FIELD
                || h.content_type.chars().any(|c| c.is_control())
            {
                return Err("handshake content-type is empty or not a header value".into());
            }
            for (name, value) in &h.headers {
                check_handshake_header(name, value)?;
            }
            Ok(())
        }
    }
}

/// Headers a handshake may not set: framing and connection management are the server's,
/// and the content type has its own field.
const RESERVED_HEADERS: &[&str] = &[
    "connection",
    "content-length",
    "content-type",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "date",
    "server",
];

fn check_handshake_header(name: &str, value: &str) -> Result<(), String> {
    let name_ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !name_ok {
        return Err(format!(
            "handshake header name {:?} is not a header token",
            truncate(name, 64)
        ));
    }
    if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(format!("handshake may not set the {name} header"));
    }
    if value.len() > MAX_FIELD || value.chars().any(char::is_control) {
        return Err(format!("handshake header {name} has no valid value"));
    }
    Ok(())
}

/// `text` as it may be stored and logged: control characters (NUL included, which
/// PostgreSQL refuses in text) become spaces, and it is cut at `max_chars` characters.
pub(crate) fn sanitize(text: &str, max_chars: usize) -> String {
    let mut out: String = text
        .chars()
        .take(max_chars)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().nth(max_chars).is_some() {
        out.push('…');
    }
    out
}

fn check_text(what: &str, value: &str) -> Result<(), String> {
    if value.len() > MAX_FIELD {
        return Err(format!("{what} is longer than {MAX_FIELD} bytes"));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("{what} contains control characters"));
    }
    Ok(())
}

/// Event types become NATS subject tokens: dot-separated, no empty token, no spaces or
/// wildcards.
fn check_event_type(t: &str) -> Result<(), String> {
    let ok = !t.is_empty()
        && t.len() <= 255
        && t.split('.').all(|token| {
            !token.is_empty()
                && token
                    .chars()
                    .all(|c| !c.is_whitespace() && !c.is_control() && c != '*' && c != '>')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "event type {:?} is not a dot-separated name without spaces, '*' or '>'",
            truncate(t, 64)
        ))
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str, version: &str, description: &str) -> Metadata {
        Metadata {
            name: name.into(),
            version: version.into(),
            description: description.into(),
            retry_window_hours: 48,
        }
    }

    #[test]
    fn metadata_accepts_a_sane_plugin() {
        assert!(validate_metadata(&meta("shopify", "1.2.0", "Shopify webhooks")).is_ok());
        assert!(validate_metadata(&meta("my-src_2", "0.1.0-rc.1+build.5", "x")).is_ok());
    }

    #[test]
    fn metadata_refuses_bad_names() {
        for name in ["", "Shopify", "1abc", "sho pify", "a/b", &"a".repeat(65)] {
            let err = validate_metadata(&meta(name, "1.0.0", "d")).unwrap_err();
            assert!(err.contains("name"), "{name:?}: {err}");
        }
    }

    #[test]
    fn metadata_refuses_bad_versions() {
        for version in [
            "", "1", "1.0", "v1.0.0", "1.0.0.0", "01.0.0", "1.0.0-", "1.0.x",
        ] {
            let err = validate_metadata(&meta("ok", version, "d")).unwrap_err();
            assert!(err.contains("version"), "{version:?}: {err}");
        }
    }

    #[test]
    fn metadata_refuses_empty_or_multiline_descriptions() {
        assert!(validate_metadata(&meta("ok", "1.0.0", "  ")).is_err());
        assert!(validate_metadata(&meta("ok", "1.0.0", "a\nb")).is_err());
    }

    #[test]
    fn event_types_must_be_subject_safe() {
        assert!(check_event_type("order.created").is_ok());
        for bad in ["", "a..b", ".a", "a b", "a.*", "a.>", "a\tb"] {
            assert!(check_event_type(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 10), "abc");
    }

    #[test]
    fn verify_error_display_names_the_kind() {
        let e = VerifyError::Mismatch("no secret".into());
        assert_eq!(e.to_string(), "signature mismatch: no secret");
        assert_eq!(e.code(), "signature_mismatch");
    }
}
