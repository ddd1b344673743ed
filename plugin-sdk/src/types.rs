//! The plain Rust types a plugin works with: what the host hands in and what the plugin
//! returns. They mirror `wit/plugin.wit` one to one.

use std::fmt;

/// An opaque reference to one configured secret of the source, valid for one call.
///
/// The plugin never sees the secret itself: it passes handles to [`crate::hmac`] or
/// [`crate::hmac_verify`] and reports the one that matched in [`Verified`].
pub type SecretHandle = u32;

/// One webhook delivery, exactly as it reached the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    method: String,
    topic: Option<String>,
    query: Option<String>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    /// A request with the given HTTP method, no topic, query, headers or body; complete it
    /// with the `with_*` methods (handy in tests).
    pub fn new(method: impl Into<String>) -> Self {
        Self {
            method: method.into(),
            topic: None,
            query: None,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Shorthand for `Request::new("POST")`.
    pub fn post() -> Self {
        Self::new("POST")
    }

    /// Sets the URL topic segment (percent-decoded, as sent).
    pub fn with_topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = Some(topic.into());
        self
    }

    /// Sets the raw query string (without `?`).
    pub fn with_query(mut self, query: impl Into<String>) -> Self {
        self.query = Some(query.into());
        self
    }

    /// Appends a header. The name is lower-cased, as the host does.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let mut name = name.into();
        name.make_ascii_lowercase();
        self.headers.push((name, value.into()));
        self
    }

    /// Sets the raw body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// HTTP method, upper case (`POST`).
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The topic segment of the URL (`/api/v1/webhooks/{source}/{topic}`), percent-decoded,
    /// exactly as sent; `None` when the URL has none.
    pub fn topic(&self) -> Option<&str> {
        self.topic.as_deref()
    }

    /// The raw query string without `?`, if any.
    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }

    /// The first value of header `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name` (compared case-insensitively), in arrival order.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All headers in arrival order; names in lower case.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The raw body, byte for byte: signatures are computed over these bytes.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    pub(crate) fn from_parts(
        method: String,
        topic: Option<String>,
        query: Option<String>,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> Self {
        Self {
            method,
            topic,
            query,
            headers,
            body,
        }
    }
}

/// Free-form settings from the source's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings(Vec<(String, String)>);

impl Settings {
    /// No settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a setting (handy in tests).
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.0.push((key.into(), value.into()));
        self
    }

    /// The value of `key` (exact match); the first one if the key repeats.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every (key, value) pair, in configuration order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl From<Vec<(String, String)>> for Settings {
    fn from(pairs: Vec<(String, String)>) -> Self {
        Self(pairs)
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Settings {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

/// Who the plugin is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// Short name, lower case (`shopify`).
    pub name: String,
    /// Semantic version of the plugin (`1.2.0`); usually `env!("CARGO_PKG_VERSION")`.
    pub version: String,
    /// One line for operators.
    pub description: String,
    /// How long the sender keeps retrying a delivery, in hours: the gateway remembers an
    /// idempotency key at least this long unless configured otherwise.
    pub retry_window_hours: u32,
}

/// A delivery that passed verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Verified {
    /// The secret that matched, when the scheme uses one.
    pub secret: Option<SecretHandle>,
}

impl Verified {
    /// Verified with the secret behind `handle`.
    pub fn by(handle: SecretHandle) -> Self {
        Self {
            secret: Some(handle),
        }
    }
}

/// Why a delivery is not authentic. The text is for logs; never put secret material in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyError {
    /// The signature header (or parameter) is absent.
    MissingSignature(String),
    /// The signature is present but cannot be parsed.
    MalformedSignature(String),
    /// No configured secret produces this signature.
    Mismatch(String),
    /// The signature's timestamp is outside the allowed tolerance.
    Expired(String),
    /// Any other reason to refuse the delivery.
    Rejected(String),
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingSignature(m) => write!(f, "missing signature: {m}"),
            Self::MalformedSignature(m) => write!(f, "malformed signature: {m}"),
            Self::Mismatch(m) => write!(f, "signature mismatch: {m}"),
            Self::Expired(m) => write!(f, "signature expired: {m}"),
            Self::Rejected(m) => write!(f, "rejected: {m}"),
        }
    }
}

impl std::error::Error for VerifyError {}

/// When something happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Timestamp {
    /// Seconds since the Unix epoch.
    UnixSeconds(i64),
    /// An RFC 3339 date-time (`2025-11-24T15:20:00.000Z`).
    Rfc3339(String),
}

/// One internal domain event derived from a webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainEvent {
    /// Event type, dot-separated (`order.created`); part of the NATS subject, so no
    /// spaces, `*` or `>`.
    pub event_type: String,
    /// The id of the entity the event is about, if any.
    pub subject: Option<String>,
    /// The event's data as JSON text; `None` means the webhook's raw body, unchanged.
    pub data: Option<String>,
}

/// What a webhook means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// The source's own duplicate marker, stable across retries; `None` makes the host use
    /// the SHA-256 of the raw body.
    pub idempotency_key: Option<String>,
    /// The tenant (shop, account) the webhook belongs to, if any.
    pub tenant: Option<String>,
    /// The normalised topic (`orders/create`; for Stripe the event type).
    pub topic: String,
    /// When the source says the event occurred; `None` means when it was received.
    pub occurred_at: Option<Timestamp>,
    /// The domain events to publish, in order. May be empty.
    pub events: Vec<DomainEvent>,
}

/// A response the host sends as it is, instead of storing the webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    /// HTTP status, 200-299.
    pub status: u16,
    /// The `content-type` of the body.
    pub content_type: String,
    /// The response body.
    pub body: Vec<u8>,
}

/// The result of a successful `map`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapOutcome {
    /// Store the webhook and publish these events.
    Events(Mapping),
    /// Answer with this response; nothing is stored or published.
    Respond(Handshake),
}

/// Why a verified webhook cannot be mapped; the host stores it as failed for replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapError {
    /// The plugin does not know this topic or event type.
    UnsupportedTopic(String),
    /// The body is not what the source sends (bad JSON, wrong shape).
    MalformedPayload(String),
    /// A header or field the mapping needs is absent.
    MissingField(String),
    /// Anything else.
    Other(String),
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnsupportedTopic(m) => write!(f, "unsupported topic: {m}"),
            Self::MalformedPayload(m) => write!(f, "malformed payload: {m}"),
            Self::MissingField(m) => write!(f, "missing field: {m}"),
            Self::Other(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for MapError {}

/// Hash function of an HMAC computed by the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashAlgorithm {
    /// HMAC-SHA1 (legacy schemes only).
    Sha1,
    /// HMAC-SHA256.
    Sha256,
    /// HMAC-SHA512.
    Sha512,
}

/// Severity of a log line written through the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// Very detailed tracing.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected but handled.
    Warn,
    /// A failure.
    Error,
}
