//! Configuration: the TOML file, environment overrides, `${VAR}` interpolation, built-in
//! defaults (the embedded mode), validation and redaction.
//!
//! [`Config::load`] layers, lowest first: built-in defaults, the file, the environment,
//! command-line flags; then [`Config::validate`] checks the whole. The result is plain
//! data that the runtime turns into backends; it knows nothing about them.
//!
//! Decisions worth knowing:
//! - A source secret written as exactly `${VAR}` takes the variable as a comma-separated
//!   list (rotation), like `SHOPIFY_WEBHOOK_SECRET` itself. When *every* secret of a source
//!   is such a reference to an unset variable, the source is left without secrets and
//!   validation refuses it with `sources.<name>: no secret or key configured (VAR is not set)`:
//!   the operator learns what is missing, not just which variable. Any other unset
//!   variable is an error naming the key and the variable.
//! - A source with `enabled = false` may have no secret: it is not served.
//! - An empty `admin_token` in the file (`"${ADMIN_TOKEN:-}"`) means no token, with a
//!   warning: the admin API stays closed.
//! - Relative paths (SQLite file, events file, plugin and cache dirs) are relative to the
//!   working directory, not to the config file, as the SPEC says.

mod interpolate;
mod redact;
mod validate;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use interpolate::{Env, ExpandError, KeyPath, expand, expand_table, key_path_at, whole_reference};
pub use redact::{REDACTED, Secret, ServiceUrl};
pub use validate::Problem;

/// The file looked for in the working directory when no `--config` is given.
pub const DEFAULT_CONFIG_FILE: &str = "hookgate.toml";

/// The sources that exist without a file, each enabled by its secret's variable.
pub const DEFAULT_SOURCES: [(&str, &str); 2] = [
    ("shopify", "SHOPIFY_WEBHOOK_SECRET"),
    ("stripe", "STRIPE_WEBHOOK_SECRET"),
];

const MIB: u64 = 1_048_576;
const HOUR: u64 = 3600;

/// Everything that can go wrong loading or validating a configuration. Messages name the
/// file, key or variable at fault; none of them contains a secret.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// An explicitly given config file does not exist.
    #[error("config file {} not found", path.display())]
    NotFound { path: PathBuf },
    /// The config file exists but could not be read.
    #[error("cannot read config file {}: {error}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{}:{line}:{column}: invalid TOML: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// The file is TOML but does not fit the configuration's shape (unknown key, wrong type).
    #[error("{}:{line}:{column}: {key}: {message}", path.display())]
    Shape {
        path: PathBuf,
        line: usize,
        column: usize,
        key: String,
        message: String,
    },
    /// A `${VAR}` names a variable that is not set (or is empty).
    #[error("{key}: environment variable {var} is not set")]
    UnsetVariable { key: String, var: String },
    /// A `${...}` is malformed.
    #[error("{key}: {reason}")]
    Interpolation { key: String, reason: String },
    /// An environment variable holds a value that cannot be used.
    #[error("environment variable {var}: {reason}")]
    Env { var: String, reason: String },
    /// The merged configuration breaks one or more rules.
    #[error("invalid configuration: {}", join_problems(.0))]
    Invalid(Vec<Problem>),
    /// A source names a plugin that is neither bundled nor in the plugin directory.
    #[error(
        "sources.{source_name}.plugin: unknown plugin \"{plugin}\" (known: {})",
        known.join(", ")
    )]
    UnknownPlugin {
        source_name: String,
        plugin: String,
        known: Vec<String>,
    },
    /// The configuration could not be rendered as TOML.
    #[error("cannot render configuration: {0}")]
    Render(String),
}

fn join_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Command-line flags that override both environment and file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CliOverrides {
    /// `--listen ADDR`.
    pub listen: Option<SocketAddr>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line, for log shippers.
    Json,
    /// Human-readable lines.
    #[default]
    Pretty,
}

impl LogFormat {
    fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "json" => Some(Self::Json),
            "pretty" => Some(Self::Pretty),
            _ => None,
        }
    }
}

/// The whole configuration. Every key is optional; [`Config::default`] is the embedded
/// mode (SQLite, in-memory dedupe, events to a JSON-lines file, no sources).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server binds (`LISTEN_ADDR`, `--listen`).
    pub listen: SocketAddr,
    /// Largest accepted webhook body, in MiB (`MAX_PAYLOAD_SIZE_MB`).
    pub max_payload_size_mb: u64,
    /// Bearer token of the admin API (`ADMIN_TOKEN`); none = the admin API answers 401.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<Secret>,
    /// Key that seals per-tenant secrets at rest (`HOOKGATE_SECRETS_KEY`): 32 bytes, base64
    /// or hex. Without it tenant secrets can be neither added nor used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_key: Option<Secret>,
    /// `LOG_FORMAT`.
    pub log_format: LogFormat,
    /// The gateway's address as senders see it (`https://hooks.example.com`), for sources
    /// that sign the URL they post to: the signed URL is this with the request's path and
    /// query. A source's own `public_url` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// HTTP server limits.
    pub http: HttpConfig,
    /// Durable storage (the outbox).
    pub storage: StorageConfig,
    /// The fast duplicate cache.
    pub dedupe: DedupeConfig,
    /// Where events are published.
    pub bus: BusConfig,
    /// Plugin loading and sandbox limits.
    pub plugins: PluginsConfig,
    /// Webhook sources by name (the `{source}` path segment).
    pub sources: BTreeMap<String, SourceConfig>,
    #[serde(skip)]
    warnings: Vec<String>,
    #[serde(skip)]
    file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 8012)),
            max_payload_size_mb: 10,
            admin_token: None,
            secrets_key: None,
            log_format: LogFormat::default(),
            public_url: None,
            http: HttpConfig::default(),
            storage: StorageConfig::default(),
            dedupe: DedupeConfig::default(),
            bus: BusConfig::default(),
            plugins: PluginsConfig::default(),
            sources: BTreeMap::new(),
            warnings: Vec::new(),
            file: None,
        }
    }
}

/// HTTP server knobs (not in the SPEC; defaults sized so 64 steady connections never shed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Time allowed to receive the request line and headers; also the time a new
    /// connection has to deliver its first request head (either protocol).
    pub header_read_timeout_ms: u64,
    /// Time a new connection has to send its first byte before it is closed.
    pub first_byte_timeout_ms: u64,
    /// A connection with no request in flight for this long is closed (both protocols).
    pub idle_timeout_ms: u64,
    /// A connection older than this is asked to close (GOAWAY / `connection: close`)
    /// once its requests in flight are done, so clients rebalance.
    pub max_connection_age_ms: u64,
    /// Open connections beyond which new ones are closed as soon as accepted.
    pub max_connections: u64,
    /// HTTP/2 streams a client may have open at once on one connection.
    pub http2_max_concurrent_streams: u32,
    /// Interval of the HTTP/2 keep-alive pings; a peer that does not answer one within
    /// `http2_keep_alive_timeout_ms` is disconnected.
    pub http2_keep_alive_interval_ms: u64,
    /// See `http2_keep_alive_interval_ms`.
    pub http2_keep_alive_timeout_ms: u64,
    /// Time allowed to receive the whole body (slow senders answer 408).
    pub body_read_timeout_ms: u64,
    /// Slowest accepted body, after `body_rate_grace_ms`: a body that falls behind this
    /// rate answers 408 without waiting for `body_read_timeout_ms`.
    pub body_min_rate_bytes_per_second: u64,
    /// Time before `body_min_rate_bytes_per_second` applies.
    pub body_rate_grace_ms: u64,
    /// Requests in flight beyond which new ones are shed with 429.
    pub max_concurrency: u64,
    /// Share of `max_concurrency`, in percent, one source may hold; beyond it that
    /// source's webhooks are shed with 429 while others still get through.
    pub source_share_percent: u64,
    /// Share of `max_concurrency`, in percent, one client IP address may hold.
    pub client_share_percent: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            header_read_timeout_ms: 10_000,
            first_byte_timeout_ms: 5_000,
            idle_timeout_ms: 60_000,
            max_connection_age_ms: 3_600_000,
            max_connections: 4096,
            http2_max_concurrent_streams: 128,
            http2_keep_alive_interval_ms: 30_000,
            http2_keep_alive_timeout_ms: 20_000,
            body_read_timeout_ms: 30_000,
            body_min_rate_bytes_per_second: 1024,
            body_rate_grace_ms: 2_000,
            max_concurrency: 1024,
            source_share_percent: 50,
            client_share_percent: 25,
        }
    }
}

impl HttpConfig {
    /// `header_read_timeout_ms` as a duration.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    /// `body_read_timeout_ms` as a duration.
    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_millis(self.body_read_timeout_ms)
    }
}

/// Which storage backend a URL selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageKind {
    /// `sqlite:` — embedded, file relative to the working directory.
    Sqlite,
    /// `postgres:` / `postgresql:`.
    Postgres,
}

/// Durable storage settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// `sqlite://data/hookgate.db` or `postgres://user@host/db` (`DATABASE_URL`).
    pub url: ServiceUrl,
    /// PostgreSQL schema holding the tables.
    pub schema: String,
    /// Published entries (with their events) older than this many days are purged; 0 keeps
    /// them for ever. Failed, dead and unpublished entries are never purged. An entry's
    /// idempotency key goes with it: a sender retrying a purged webhook would be accepted
    /// again, so keep this above the longest retry window of a source (Stripe: 3 days).
    pub retention_days: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            url: ServiceUrl::new("sqlite://data/hookgate.db"),
            schema: "hookgate".to_owned(),
            retention_days: 0,
        }
    }
}

impl StorageConfig {
    /// The backend the URL's scheme selects; `None` only for a URL `validate` refuses.
    pub fn kind(&self) -> Option<StorageKind> {
        match self.url.scheme().as_str() {
            "sqlite" => Some(StorageKind::Sqlite),
            "postgres" | "postgresql" => Some(StorageKind::Postgres),
            _ => None,
        }
    }
}

/// Which dedupe cache a URL selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DedupeKind {
    /// `memory://` — per process, lost on restart.
    Memory,
    /// `redis://` / `rediss://`.
    Redis,
}

/// Dedupe cache settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DedupeConfig {
    /// `memory://` or `redis://host:port` (`REDIS_URL`).
    pub url: ServiceUrl,
    /// How long a seen idempotency key is remembered (`DEDUP_TTL_HOURS`).
    pub ttl_hours: u64,
    /// What sets this deployment's cache keys apart from another's in a shared Redis.
    /// Unset, it is derived from the storage's identity: gateways sharing a storage share
    /// their keys, gateways with storages of their own never see each other's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl Default for DedupeConfig {
    fn default() -> Self {
        Self {
            url: ServiceUrl::new("memory://"),
            ttl_hours: 24,
            namespace: None,
        }
    }
}

impl DedupeConfig {
    /// The cache the URL's scheme selects; `None` only for a URL `validate` refuses.
    pub fn kind(&self) -> Option<DedupeKind> {
        match self.url.scheme().as_str() {
            "memory" => Some(DedupeKind::Memory),
            "redis" | "rediss" => Some(DedupeKind::Redis),
            _ => None,
        }
    }

    /// `ttl_hours` as a duration.
    pub fn ttl(&self) -> Duration {
        hours(self.ttl_hours)
    }
}

/// Which event sink a URL selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusKind {
    /// `file://path` — JSON lines appended to a file relative to the working directory.
    File { path: PathBuf },
    /// `nats://host:port` — JetStream.
    Nats,
}

/// Event bus settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusConfig {
    /// `file://data/events.jsonl` or `nats://host:4222` (`NATS_URL`).
    pub url: ServiceUrl,
    /// JetStream stream name.
    pub stream: String,
    /// First subject token(s): events go to `<prefix>.<source>.<type>`.
    pub subject_prefix: String,
    /// Create (or update) the stream at start.
    pub create_stream: bool,
    /// The stream's `Nats-Msg-Id` duplicate window.
    pub duplicate_window_seconds: u64,
    /// An event is dead-lettered only after retrying this long.
    pub retry_max_age_hours: u64,
    /// An event is dead-lettered after this many failed attempts too; 0 = no limit.
    pub retry_max_attempts: u32,
    /// Per-subject circuit breakers on publishing.
    pub breaker_enabled: bool,
    /// Failed share of a subject's publishes in the window, in percent, that opens its
    /// breaker (1-100).
    pub breaker_failure_percent: u8,
    /// Publishes of a subject in the window below which its breaker never opens.
    pub breaker_min_calls: u32,
    /// The sliding window of publish outcomes, in seconds.
    pub breaker_window_secs: u64,
    /// How long an open breaker holds its subject's events before probing, in seconds.
    pub breaker_cooldown_secs: u64,
    /// Probe publishes that must succeed to close a half-open breaker.
    pub breaker_probe_calls: u32,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            url: ServiceUrl::new("file://data/events.jsonl"),
            stream: "WEBHOOKS".to_owned(),
            subject_prefix: "webhooks".to_owned(),
            create_stream: true,
            duplicate_window_seconds: 600,
            retry_max_age_hours: 72,
            retry_max_attempts: 0,
            breaker_enabled: true,
            breaker_failure_percent: 50,
            breaker_min_calls: 20,
            breaker_window_secs: 60,
            breaker_cooldown_secs: 30,
            breaker_probe_calls: 3,
        }
    }
}

impl BusConfig {
    /// The sink the URL's scheme selects; `None` only for a URL `validate` refuses.
    pub fn kind(&self) -> Option<BusKind> {
        let url = self.url.expose();
        match self.url.scheme().as_str() {
            "file" => {
                let path = url.split_once("://").map(|(_, path)| path)?;
                Some(BusKind::File {
                    path: PathBuf::from(path),
                })
            }
            "nats" => Some(BusKind::Nats),
            _ => None,
        }
    }

    /// `duplicate_window_seconds` as a duration.
    pub fn duplicate_window(&self) -> Duration {
        Duration::from_secs(self.duplicate_window_seconds)
    }

    /// `retry_max_age_hours` as a duration.
    pub fn retry_max_age(&self) -> Duration {
        hours(self.retry_max_age_hours)
    }

    /// The `breaker_*` keys as the relay's breaker settings.
    pub fn breaker(&self) -> crate::publish::breaker::BreakerConfig {
        crate::publish::breaker::BreakerConfig {
            enabled: self.breaker_enabled,
            failure_rate: f64::from(self.breaker_failure_percent) / 100.0,
            min_calls: self.breaker_min_calls,
            window: Duration::from_secs(self.breaker_window_secs),
            cooldown: Duration::from_secs(self.breaker_cooldown_secs),
            probe_calls: self.breaker_probe_calls,
        }
    }
}

/// Plugin loading and sandbox limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginsConfig {
    /// Directory watched for `*.wasm` (`PLUGIN_DIR`); missing = bundled plugins only.
    pub dir: PathBuf,
    /// Where compiled components are cached between runs (kept 0700, files MACed with a
    /// per-install key).
    pub cache_dir: PathBuf,
    /// Deadline of one webhook's plugin calls together (tenant-hint, verify, map).
    pub timeout_ms: u64,
    /// Memory cap of one plugin instance, in MiB.
    pub memory_mb: u64,
    /// Most events one webhook may map to; beyond, it is stored failed.
    pub max_events: u32,
    /// Most bytes the events of one webhook may carry in all (an event without data of
    /// its own carries the whole body), in MiB; beyond, it is stored failed.
    pub max_event_bytes_mb: u64,
    /// Longest error or log text kept from a plugin, in characters; longer is cut.
    pub max_error_chars: u32,
    /// Reload when the config file or a file of `dir` changes; false leaves reloads to
    /// SIGHUP and the admin API (a read-only mount, or deploys that reload explicitly).
    pub watch: bool,
    /// Longest a webhook waits for a thread to run its plugin; beyond, `503`.
    pub queue_wait_ms: u64,
    /// Webhooks one plugin may have in flight (queued or running); beyond, `503`.
    pub max_concurrent_calls: u64,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("plugins.d"),
            cache_dir: PathBuf::from("data/plugin-cache"),
            timeout_ms: 1000,
            memory_mb: 64,
            max_events: 100,
            max_event_bytes_mb: 32,
            max_error_chars: 1024,
            watch: true,
            queue_wait_ms: 2000,
            max_concurrent_calls: 256,
        }
    }
}

impl PluginsConfig {
    /// `queue_wait_ms` as a duration.
    pub fn queue_wait(&self) -> Duration {
        Duration::from_millis(self.queue_wait_ms)
    }

    /// `timeout_ms` as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// `memory_mb` in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_mb.saturating_mul(MIB)
    }

    /// `max_event_bytes_mb` in bytes.
    pub fn max_event_bytes(&self) -> u64 {
        self.max_event_bytes_mb.saturating_mul(MIB)
    }
}

/// One webhook source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Its secrets may come per tenant from the database (`hookgate secrets add`); then it
    /// needs none of its own.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tenant_secrets: bool,
    /// The plugin that verifies and maps it; defaults to the source's name (filled in by
    /// [`Config::load`], so it is always set on a loaded config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// Signing secrets; several = rotation, any may match.
    #[serde(default)]
    pub secrets: Vec<Secret>,
    /// Public keys for sources that sign with a key pair (Ed25519, ECDSA P-256, RSA): PEM,
    /// DER as base64 or hex, or the raw key; several = rotation, any may match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    /// The URL senders post this source's webhooks to, for sources that sign it; overrides
    /// the global `public_url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// Grants the plugin the raw `hmac` host call. Off by default: a plugin that can MAC
    /// any message could hand out valid signatures for this source.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_raw_mac: bool,
    /// Overrides the dedupe TTL for this source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedupe_ttl_hours: Option<u64>,
    /// A disabled source answers 404, like an unknown one.
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// Free-form strings handed to the plugin.
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// Variables whose absence left this source without secrets, for the error message.
    #[serde(skip)]
    unset_secret_vars: Vec<String>,
}

fn enabled_by_default() -> bool {
    true
}

impl SourceConfig {
    /// An enabled source bound to `plugin`, with these secrets and nothing else.
    pub fn new(plugin: impl Into<String>, secrets: Vec<Secret>) -> Self {
        Self {
            plugin: Some(plugin.into()),
            tenant_secrets: false,
            secrets,
            keys: Vec::new(),
            public_url: None,
            allow_raw_mac: false,
            dedupe_ttl_hours: None,
            enabled: true,
            settings: BTreeMap::new(),
            unset_secret_vars: Vec::new(),
        }
    }

    /// The plugin name, falling back to the source's name as the file's default.
    pub fn plugin_name<'a>(&'a self, source_name: &'a str) -> &'a str {
        self.plugin.as_deref().unwrap_or(source_name)
    }
}

impl Config {
    /// Loads the configuration: defaults, then the file (`path`, or `hookgate.toml` in the
    /// working directory if present), then the environment (looked up through `env`), then
    /// `overrides`; then validates it. An explicitly given `path` that does not exist is an
    /// error naming it.
    pub fn load(
        path: Option<&Path>,
        env: &impl Fn(&str) -> Option<String>,
        overrides: &CliOverrides,
    ) -> Result<Self, ConfigError> {
        let file = Self::resolve_file(path)?;
        Self::load_file(file.as_deref(), env, overrides)
    }

    /// The file [`Config::load`] reads for `path`: `path` itself, else `hookgate.toml` in
    /// the working directory if present, else none.
    pub fn resolve_file(path: Option<&Path>) -> Result<Option<PathBuf>, ConfigError> {
        match path {
            Some(path) => Ok(Some(path.to_path_buf())),
            None => default_file_in(Path::new(".")),
        }
    }

    /// [`Config::load`] with the process environment.
    pub fn load_from_process_env(
        path: Option<&Path>,
        overrides: &CliOverrides,
    ) -> Result<Self, ConfigError> {
        Self::load(path, &|name: &str| std::env::var(name).ok(), overrides)
    }

    /// Parses and interpolates one TOML document, without environment overrides or
    /// validation. `origin` names the document in error messages.
    pub fn from_toml(
        text: &str,
        origin: &Path,
        env: &impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        parse_document(text, origin, &Env::new(env))
    }

    fn load_file(
        file: Option<&Path>,
        env: &impl Fn(&str) -> Option<String>,
        overrides: &CliOverrides,
    ) -> Result<Self, ConfigError> {
        let env = Env::new(env);
        let mut config = match file {
            Some(path) => {
                let text = read_file(path)?;
                let mut config = parse_document(&text, path, &env)?;
                config.file = Some(path.to_path_buf());
                // `"${ADMIN_TOKEN:-}"` is the natural way to write an optional token; empty
                // then means none, which keeps the admin API closed (fail-closed).
                if config
                    .admin_token
                    .as_ref()
                    .is_some_and(|t| t.expose().trim().is_empty())
                {
                    config.admin_token = None;
                    config.warnings.push(
                        "admin_token is empty: the admin API answers 401 to everything".to_owned(),
                    );
                }
                config
            }
            None => Self::default(),
        };
        config.apply_env(&env)?;
        if let Some(listen) = overrides.listen {
            config.listen = listen;
        }
        config.validate()?;
        Ok(config)
    }

    /// Environment over file. Sources `shopify`/`stripe` come into being here when their
    /// secret variable is set; otherwise, unless the file defined them, they are left out
    /// with a warning.
    fn apply_env(&mut self, env: &Env<'_>) -> Result<(), ConfigError> {
        if let Some(value) = env.get("LISTEN_ADDR") {
            self.listen = value.trim().parse().map_err(|_| ConfigError::Env {
                var: "LISTEN_ADDR".to_owned(),
                reason: format!("`{value}` is not a socket address (like 0.0.0.0:8012)"),
            })?;
        }
        if let Some(mb) = env_number(env, "MAX_PAYLOAD_SIZE_MB")? {
            self.max_payload_size_mb = mb;
        }
        if let Some(token) = env.get("ADMIN_TOKEN") {
            // Trimmed: a token read with `$(cat file)` keeps a newline no header can carry.
            self.admin_token = Some(Secret::new(token.trim()));
        }
        if let Some(key) = env.get("HOOKGATE_SECRETS_KEY") {
            self.secrets_key = Some(Secret::new(key.trim()));
        }
        if let Some(value) = env.get("LOG_FORMAT") {
            self.log_format = LogFormat::parse(&value).ok_or_else(|| ConfigError::Env {
                var: "LOG_FORMAT".to_owned(),
                reason: format!("`{value}` is neither json nor pretty"),
            })?;
        }
        if let Some(url) = env.get("DATABASE_URL") {
            self.storage.url = ServiceUrl::new(url.trim());
        }
        if let Some(url) = env.get("REDIS_URL") {
            self.dedupe.url = ServiceUrl::new(url.trim());
        }
        if let Some(hours) = env_number(env, "DEDUP_TTL_HOURS")? {
            self.dedupe.ttl_hours = hours;
        }
        if let Some(url) = env.get("NATS_URL") {
            self.bus.url = ServiceUrl::new(url.trim());
        }
        if let Some(dir) = env.get("PLUGIN_DIR") {
            self.plugins.dir = PathBuf::from(dir);
        }
        for (name, var) in DEFAULT_SOURCES {
            let secrets = env.get(var).map(|v| split_secrets(&v)).unwrap_or_default();
            if !secrets.is_empty() {
                let source = self
                    .sources
                    .entry(name.to_owned())
                    .or_insert_with(|| SourceConfig::new(name, Vec::new()));
                source.secrets = secrets;
                source.unset_secret_vars.clear();
            } else if !self.sources.contains_key(name) {
                self.warnings
                    .push(format!("source \"{name}\" disabled: {var} is not set"));
            }
        }
        Ok(())
    }

    /// The file this configuration was read from, if any: what a reload watches.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Things the operator should hear about at start (a default source left out, ...).
    /// Not errors: the gateway runs.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The largest accepted body in bytes (`max_payload_size_mb` MiB).
    pub fn max_payload_bytes(&self) -> u64 {
        self.max_payload_size_mb.saturating_mul(MIB)
    }

    /// The enabled sources, by name.
    pub fn enabled_sources(&self) -> impl Iterator<Item = (&str, &SourceConfig)> {
        self.sources
            .iter()
            .filter(|(_, source)| source.enabled)
            .map(|(name, source)| (name.as_str(), source))
    }

    /// How long a seen idempotency key of `source` is remembered: the source's own
    /// `dedupe_ttl_hours` if set, else the longer of the global TTL and the plugin's
    /// declared retry window (a key must outlive the sender's retries).
    pub fn dedupe_ttl_for(&self, source: &str, plugin_retry_window_hours: u32) -> Duration {
        match self.sources.get(source).and_then(|s| s.dedupe_ttl_hours) {
            Some(own) => hours(own),
            None => hours(
                self.dedupe
                    .ttl_hours
                    .max(u64::from(plugin_retry_window_hours)),
            ),
        }
    }

    /// The dedupe cache's key namespace: `dedupe.namespace`, else 12 hex digits of the
    /// SHA-256 of the storage's identity (its URL without the password, and the schema).
    pub fn dedupe_namespace(&self) -> String {
        if let Some(namespace) = &self.dedupe.namespace {
            return namespace.clone();
        }
        use sha2::{Digest, Sha256};
        let identity = format!("{}\n{}", self.storage.url.masked(), self.storage.schema);
        hex::encode(&Sha256::digest(identity.as_bytes())[..6])
    }

    /// The configuration as TOML with every secret, the admin token and URL passwords
    /// replaced by `***`; safe to print (`hookgate config show`).
    pub fn redacted_toml(&self) -> Result<String, ConfigError> {
        toml::to_string_pretty(self).map_err(|e| ConfigError::Render(e.to_string()))
    }
}

/// `hookgate.toml` in `dir` if it exists. "Exists" includes a dangling or unreadable
/// entry: better to fail on it than to silently run on defaults.
fn default_file_in(dir: &Path) -> Result<Option<PathBuf>, ConfigError> {
    let candidate = dir.join(DEFAULT_CONFIG_FILE);
    match std::fs::symlink_metadata(&candidate) {
        Ok(_) => Ok(Some(candidate)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(ConfigError::Read {
            path: candidate,
            error,
        }),
    }
}

fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|error| {
        if error.kind() == std::io::ErrorKind::NotFound {
            ConfigError::NotFound {
                path: path.to_path_buf(),
            }
        } else {
            ConfigError::Read {
                path: path.to_path_buf(),
                error,
            }
        }
    })
}

fn parse_document(text: &str, origin: &Path, env: &Env<'_>) -> Result<Config, ConfigError> {
    let mut doc = toml::de::DeTable::parse(text).map_err(|e| {
        let (line, column) = line_column(text, e.span().map_or(0, |s| s.start));
        ConfigError::Syntax {
            path: origin.to_path_buf(),
            line,
            column,
            message: e.message().trim_end().to_owned(),
        }
    })?;
    expand_table(doc.get_mut(), &KeyPath::default(), env)
        .map_err(|(key, error)| expand_error(key.to_string(), error))?;
    // Kept for mapping error spans back to key paths; spans are the same in both copies.
    let index = doc.get_ref().clone();
    let mut config = Config::deserialize(toml::de::Deserializer::from(doc)).map_err(|e| {
        let pos = e.span().map_or(0, |s| s.start);
        let (line, column) = line_column(text, pos);
        let key = key_path_at(&index, pos);
        let message = match &key {
            Some(key) if key.holds_secret() => scrub_value(e.message()),
            _ => e.message().trim_end().to_owned(),
        };
        ConfigError::Shape {
            path: origin.to_path_buf(),
            line,
            column,
            key: key.map_or_else(|| "(top level)".to_owned(), |p| p.to_string()),
            message,
        }
    })?;
    for (name, source) in &mut config.sources {
        resolve_secrets(name, source, env)?;
        if source.plugin.is_none() {
            source.plugin = Some(name.clone());
        }
    }
    Ok(config)
}

/// Serde quotes the offending value (`invalid type: string "...", expected a sequence`);
/// at a secret's key that value may be the secret, so only the expectation is kept.
fn scrub_value(message: &str) -> String {
    const HIDDEN: &str = "invalid value (not shown: it may be a secret)";
    match message.split_once(", expected ") {
        Some((_, expected)) => format!("{HIDDEN}, expected {}", expected.trim_end()),
        None => HIDDEN.to_owned(),
    }
}

fn expand_error(key: String, error: ExpandError) -> ConfigError {
    match error {
        ExpandError::Unset { var } => ConfigError::UnsetVariable { key, var },
        ExpandError::Malformed { reason } => ConfigError::Interpolation { key, reason },
    }
}

/// Interpolates a file-defined source's secrets. A secret written as exactly `${VAR}` is a
/// comma-separated list, like the `*_WEBHOOK_SECRET` variables. If every secret is such a
/// reference to an unset variable, the source keeps no secret and `validate` says why;
/// otherwise an unset variable is an error naming the key.
fn resolve_secrets(
    name: &str,
    source: &mut SourceConfig,
    env: &Env<'_>,
) -> Result<(), ConfigError> {
    let path = KeyPath::default().key("sources").key(name).key("secrets");
    let mut resolved = Vec::with_capacity(source.secrets.len());
    let mut unset = Vec::new();
    for (i, secret) in source.secrets.iter().enumerate() {
        let raw = secret.expose();
        match whole_reference(raw) {
            Some(var) => match env.get(var) {
                Some(value) => resolved.extend(split_secrets(&value)),
                None => unset.push((path.index(i).to_string(), var.to_owned())),
            },
            None => {
                let expanded =
                    expand(raw, env).map_err(|e| expand_error(path.index(i).to_string(), e))?;
                resolved.push(Secret::new(expanded));
            }
        }
    }
    if let Some((key, var)) = unset.first()
        && !resolved.is_empty()
    {
        return Err(ConfigError::UnsetVariable {
            key: key.clone(),
            var: var.clone(),
        });
    }
    source.secrets = resolved;
    source.unset_secret_vars = unset.into_iter().map(|(_, var)| var).collect();
    Ok(())
}

/// `a, b,,c` -> `a`, `b`, `c`: rotation lists, whitespace trimmed, empty items ignored.
fn split_secrets(value: &str) -> Vec<Secret> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(Secret::new)
        .collect()
}

fn env_number(env: &Env<'_>, var: &str) -> Result<Option<u64>, ConfigError> {
    env.get(var)
        .map(|value| {
            value.trim().parse::<u64>().map_err(|_| ConfigError::Env {
                var: var.to_owned(),
                reason: format!("`{value}` is not a whole number"),
            })
        })
        .transpose()
}

fn hours(h: u64) -> Duration {
    Duration::from_secs(h.saturating_mul(HOUR))
}

/// 1-based line and column (in characters) of byte offset `pos`.
fn line_column(text: &str, pos: usize) -> (usize, usize) {
    let pos = pos.min(text.len());
    let before = text.get(..pos).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}
