//! The plain Rust types a plugin works with: what the host hands in and what the plugin
//! returns. They mirror `wit/plugin.wit` one to one.

use std::cell::OnceCell;
use std::fmt;

/// An opaque reference to one configured secret of the source, valid for one call.
///
/// The plugin never sees the secret itself: it passes handles to [`crate::hmac_verify`]
/// and reports the one that matched in [`Verified`].
pub type SecretHandle = u32;

/// One webhook delivery, exactly as it reached the gateway.
///
/// In a WASM guest the delivery stays in the host: each part is fetched the first time the
/// plugin reads it (all headers at once), and the body only if the plugin asks for it.
/// To check a signature over the body, pass [`Part::Body`] to the host instead of reading
/// it: the bytes are then never copied into the plugin.
///
/// In native tests it is built with [`Request::post`] and the `with_*` methods.
pub struct Request {
    /// The handle of the host's `request` borrowed by the current export call; each call
    /// lends it anew, so the glue rebinds it before the plugin runs.
    #[cfg(target_arch = "wasm32")]
    host: std::cell::Cell<Option<u32>>,
    method: OnceCell<String>,
    topic: OnceCell<Option<String>>,
    query: OnceCell<Option<String>>,
    public_url: OnceCell<Option<String>>,
    headers: OnceCell<Vec<(String, String)>>,
    body: OnceCell<Vec<u8>>,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method())
            .field("topic", &self.topic())
            .field("headers", &self.headers())
            .finish_non_exhaustive()
    }
}

impl Request {
    /// A request with the given HTTP method, no topic, query, headers or body; complete it
    /// with the `with_*` methods (handy in tests).
    pub fn new(method: impl Into<String>) -> Self {
        let request = Self::empty();
        let _ = request.method.set(method.into());
        let _ = request.headers.set(Vec::new());
        request
    }

    fn empty() -> Self {
        Self {
            #[cfg(target_arch = "wasm32")]
            host: std::cell::Cell::new(None),
            method: OnceCell::new(),
            topic: OnceCell::new(),
            query: OnceCell::new(),
            public_url: OnceCell::new(),
            headers: OnceCell::new(),
            body: OnceCell::new(),
        }
    }

    /// The delivery the host holds for this call.
    #[cfg(target_arch = "wasm32")]
    pub(crate) fn from_host(request: &crate::bindings::hookgate::plugin::types::Request) -> Self {
        let this = Self::empty();
        this.rebind(request);
        this
    }

    /// Points this request at the handle the current export call borrowed, keeping what
    /// earlier calls for the same webhook already read.
    #[cfg(target_arch = "wasm32")]
    pub(crate) fn rebind(&self, request: &crate::bindings::hookgate::plugin::types::Request) {
        self.host.set(Some(request.handle()));
    }

    /// The borrowed `request` of the current call. Never dropped by the guest (it is a
    /// borrow), hence `ManuallyDrop`.
    #[cfg(target_arch = "wasm32")]
    fn host(
        &self,
    ) -> Option<core::mem::ManuallyDrop<crate::bindings::hookgate::plugin::types::Request>> {
        let handle = self.host.get()?;
        // SAFETY: the handle is the live borrow of the export call now running: the glue
        // rebinds it at the start of every call.
        Some(core::mem::ManuallyDrop::new(unsafe {
            crate::bindings::hookgate::plugin::types::Request::from_handle(handle)
        }))
    }

    /// Shorthand for `Request::new("POST")`.
    pub fn post() -> Self {
        Self::new("POST")
    }

    /// Sets the URL topic segment (percent-decoded, as sent).
    pub fn with_topic(self, topic: impl Into<String>) -> Self {
        self.with(|r| r.topic = OnceCell::from(Some(topic.into())))
    }

    /// Sets the raw query string (without `?`).
    pub fn with_query(self, query: impl Into<String>) -> Self {
        self.with(|r| r.query = OnceCell::from(Some(query.into())))
    }

    /// Sets the URL the sender signed (the gateway's configured `public_url` with the
    /// request's path and query).
    pub fn with_public_url(self, url: impl Into<String>) -> Self {
        self.with(|r| r.public_url = OnceCell::from(Some(url.into())))
    }

    /// Appends a header. The name is lower-cased, as the host does.
    pub fn with_header(self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let mut name = name.into();
        name.make_ascii_lowercase();
        self.with(|r| {
            let mut headers = r.headers.take().unwrap_or_default();
            headers.push((name, value.into()));
            r.headers = OnceCell::from(headers);
        })
    }

    /// Sets the raw body.
    pub fn with_body(self, body: impl Into<Vec<u8>>) -> Self {
        self.with(|r| r.body = OnceCell::from(body.into()))
    }

    fn with(mut self, change: impl FnOnce(&mut Self)) -> Self {
        change(&mut self);
        self
    }

    /// HTTP method, upper case (`POST`).
    pub fn method(&self) -> &str {
        self.method.get_or_init(|| {
            #[cfg(target_arch = "wasm32")]
            if let Some(host) = self.host() {
                return host.method();
            }
            String::new()
        })
    }

    /// The topic segment of the URL (`/api/v1/webhooks/{source}/{topic}`), percent-decoded,
    /// exactly as sent; `None` when the URL has none.
    pub fn topic(&self) -> Option<&str> {
        self.topic
            .get_or_init(|| {
                #[cfg(target_arch = "wasm32")]
                if let Some(host) = self.host() {
                    return host.topic();
                }
                None
            })
            .as_deref()
    }

    /// The raw query string without `?`, if any.
    pub fn query(&self) -> Option<&str> {
        self.query
            .get_or_init(|| {
                #[cfg(target_arch = "wasm32")]
                if let Some(host) = self.host() {
                    return host.query();
                }
                None
            })
            .as_deref()
    }

    /// The URL the sender signed: the gateway's configured `public_url` with this
    /// request's path and query; `None` when none is configured for the source.
    pub fn public_url(&self) -> Option<&str> {
        self.public_url
            .get_or_init(|| {
                #[cfg(target_arch = "wasm32")]
                if let Some(host) = self.host() {
                    return host.public_url();
                }
                None
            })
            .as_deref()
    }

    /// The first value of header `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers()
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name` (compared case-insensitively), in arrival order.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers()
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All headers, names in lower case: in arrival order, except that the gateway puts
    /// the repeats of a name right after its first appearance.
    pub fn headers(&self) -> &[(String, String)] {
        self.headers.get_or_init(|| {
            #[cfg(target_arch = "wasm32")]
            if let Some(host) = self.host() {
                return host.headers();
            }
            Vec::new()
        })
    }

    /// The raw body, byte for byte. In a WASM guest this copies it into the plugin the
    /// first time: to check a signature over it, pass [`Part::Body`] to the host instead.
    pub fn body(&self) -> &[u8] {
        self.body.get_or_init(|| {
            #[cfg(target_arch = "wasm32")]
            if let Some(host) = self.host() {
                return host.body();
            }
            Vec::new()
        })
    }

    /// The bytes `parts` stand for in this request, as the host assembles them; `None`
    /// when a header or the public URL a part names is absent.
    pub fn message(&self, parts: &[Part<'_>]) -> Option<Vec<u8>> {
        let mut message = Vec::new();
        for part in parts {
            match part {
                Part::Body => message.extend_from_slice(self.body()),
                Part::Header(name) => message.extend_from_slice(self.header(name)?.as_bytes()),
                Part::PublicUrl => message.extend_from_slice(self.public_url()?.as_bytes()),
                Part::Literal(bytes) => message.extend_from_slice(bytes),
            }
        }
        Some(message)
    }
}

/// One piece of the message a MAC or signature covers, assembled by the host in the order
/// given: [`crate::hmac_verify`], [`crate::signature_verify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part<'a> {
    /// The raw body (never copied into the plugin).
    Body,
    /// The value of the first header with this name (any case); a missing header fails
    /// the check.
    Header(&'a str),
    /// The URL the sender signed ([`Request::public_url`]); none configured fails the check.
    PublicUrl,
    /// These bytes.
    Literal(&'a [u8]),
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
    /// The public key that matched, when the scheme uses one.
    pub key: Option<KeyHandle>,
}

impl Verified {
    /// Verified with the secret behind `handle`.
    pub fn by(handle: SecretHandle) -> Self {
        Self {
            secret: Some(handle),
            key: None,
        }
    }

    /// Verified with the public key behind `handle`.
    pub fn by_key(handle: KeyHandle) -> Self {
        Self {
            secret: None,
            key: Some(handle),
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
    /// No configured secret or key produces this signature.
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
    /// More response headers. The host refuses hop-by-hop and framing headers
    /// (`content-length`, `transfer-encoding`, `connection`, ...).
    pub headers: Vec<(String, String)>,
    /// The response body.
    pub body: Vec<u8>,
}

impl Handshake {
    /// A 200 JSON response with `body`, as most handshakes answer.
    pub fn json(body: impl Into<Vec<u8>>) -> Self {
        Self {
            status: 200,
            content_type: "application/json".into(),
            headers: Vec::new(),
            body: body.into(),
        }
    }
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

/// How a configured secret holds the MAC key ([`crate::hmac_verify_encoded`]). Most
/// schemes use the secret's bytes as they are; some write the key encoded, and the plugin,
/// which never sees the secret, tells the host how to read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretEncoding<'a> {
    /// The secret's bytes are the key.
    Raw,
    /// The key is the base64 (standard or URL-safe, padding optional) of the secret, with
    /// this prefix removed where the secret starts with it (Standard Webhooks: `whsec_`).
    Base64(&'a str),
    /// The key is the hex of the secret, with this prefix removed where present.
    Hex(&'a str),
}

#[cfg(not(target_arch = "wasm32"))]
impl SecretEncoding<'_> {
    /// The MAC key `secret` holds, or `None` when it does not decode. The gateway's host
    /// and the native test host read secrets with this one function.
    pub fn key(&self, secret: &[u8]) -> Option<Vec<u8>> {
        use base64::Engine as _;
        use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
        // Secrets are pasted in either alphabet, with or without padding.
        let lenient =
            GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
        let standard = GeneralPurpose::new(&base64::alphabet::STANDARD, lenient);
        let url_safe = GeneralPurpose::new(&base64::alphabet::URL_SAFE, lenient);
        let strip = |prefix: &str| secret.strip_prefix(prefix.as_bytes()).unwrap_or(secret);
        match self {
            Self::Raw => Some(secret.to_vec()),
            Self::Base64(prefix) => {
                let text = strip(prefix);
                standard
                    .decode(text)
                    .or_else(|_| url_safe.decode(text))
                    .ok()
            }
            Self::Hex(prefix) => hex::decode(strip(prefix)).ok(),
        }
    }
}

/// An opaque reference to one configured public key of the source, valid for one call.
pub type KeyHandle = u32;

/// Public-key signature schemes the host verifies ([`crate::signature_verify`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignatureAlgorithm {
    /// Ed25519 (RFC 8032); the signature is 64 bytes.
    Ed25519,
    /// ECDSA over P-256 with SHA-256; the signature is DER or 64 bytes `r || s`.
    EcdsaP256Sha256,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RsaPkcs1v15Sha256,
    /// RSASSA-PKCS1-v1_5 with SHA-1, for providers that still sign so.
    RsaPkcs1v15Sha1,
}
