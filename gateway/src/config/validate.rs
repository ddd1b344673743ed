//! Whole-configuration checks: the rules a field's type cannot express, each reported with
//! the key at fault and why, all at once so an operator fixes a file in one pass.

use std::fmt;

use super::{Config, ConfigError, ServiceUrl};

/// Largest body limit accepted: bodies are held in memory, and beyond this a typo (`10000`
/// for `10`) is far likelier than intent.
const MAX_PAYLOAD_MB: u64 = 4096;

/// Longest source name: it becomes a URL path segment, a NATS subject token and a label.
const MAX_SOURCE_NAME: usize = 64;

/// PostgreSQL truncates identifiers beyond this many bytes.
const MAX_SCHEMA_NAME: usize = 63;

/// Longest breaker window and cool-down, in seconds.
const MAX_BREAKER_SECS: u64 = 86_400;

/// Longest retention: a century, past which the cut-off date would be out of range.
const MAX_RETENTION_DAYS: u64 = 36_500;

/// One broken rule: the key (`sources.shopify`, `storage.url`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path of the offending value.
    pub key: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            reason: reason.into(),
        });
    }

    fn positive(&mut self, key: &str, value: u64) {
        if value == 0 {
            self.add(key, "must be greater than 0");
        }
    }
}

impl Config {
    /// Checks the configuration as a whole; the error lists every problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Problems::default();
        let p = &mut problems;

        p.positive("max_payload_size_mb", self.max_payload_size_mb);
        if self.max_payload_size_mb > MAX_PAYLOAD_MB {
            p.add(
                "max_payload_size_mb",
                format!("must be at most {MAX_PAYLOAD_MB} (MiB)"),
            );
        }
        if self
            .admin_token
            .as_ref()
            .is_some_and(|t| t.expose().trim().is_empty())
        {
            p.add(
                "admin_token",
                "is empty (leave it out to keep the admin API closed)",
            );
        }

        if let Some(key) = &self.secrets_key
            && let Err(error) = crate::secrets::SecretsKey::parse(key.expose())
        {
            p.add("secrets_key", error.to_string());
        }

        p.positive(
            "http.header_read_timeout_ms",
            self.http.header_read_timeout_ms,
        );
        p.positive("http.body_read_timeout_ms", self.http.body_read_timeout_ms);
        p.positive("http.max_concurrency", self.http.max_concurrency);
        p.positive(
            "http.first_byte_timeout_ms",
            self.http.first_byte_timeout_ms,
        );
        p.positive("http.idle_timeout_ms", self.http.idle_timeout_ms);
        p.positive(
            "http.max_connection_age_ms",
            self.http.max_connection_age_ms,
        );
        p.positive("http.max_connections", self.http.max_connections);
        p.positive(
            "http.http2_max_concurrent_streams",
            u64::from(self.http.http2_max_concurrent_streams),
        );
        p.positive(
            "http.http2_keep_alive_interval_ms",
            self.http.http2_keep_alive_interval_ms,
        );
        p.positive(
            "http.http2_keep_alive_timeout_ms",
            self.http.http2_keep_alive_timeout_ms,
        );
        p.positive(
            "http.body_min_rate_bytes_per_second",
            self.http.body_min_rate_bytes_per_second,
        );
        for (key, value) in [
            ("http.source_share_percent", self.http.source_share_percent),
            ("http.client_share_percent", self.http.client_share_percent),
        ] {
            if !(1..=100).contains(&value) {
                p.add(key, "must be a percentage from 1 to 100");
            }
        }

        check_url(
            p,
            "storage.url",
            &self.storage.url,
            &["sqlite", "postgres", "postgresql"],
        );
        if !is_schema_name(&self.storage.schema) {
            p.add(
                "storage.schema",
                format!(
                    "`{}` is not a schema name (lower-case letters, digits and `_`, not starting \
                     with a digit, at most {MAX_SCHEMA_NAME} characters)",
                    self.storage.schema
                ),
            );
        }

        check_url(
            p,
            "dedupe.url",
            &self.dedupe.url,
            &["memory", "redis", "rediss"],
        );
        p.positive("dedupe.ttl_hours", self.dedupe.ttl_hours);
        if let Some(namespace) = &self.dedupe.namespace {
            let fits = !namespace.is_empty()
                && namespace.len() <= 64
                && namespace.bytes().all(|b| b.is_ascii_graphic() && b != b':');
            if !fits {
                p.add(
                    "dedupe.namespace",
                    "must be 1 to 64 printable ASCII characters, without spaces or `:`",
                );
            }
        }

        check_url(p, "bus.url", &self.bus.url, &["file", "nats"]);
        if !is_stream_name(&self.bus.stream) {
            p.add(
                "bus.stream",
                format!(
                    "`{}` is not a JetStream stream name (no spaces, `.`, `*`, `>`, `/` or `\\`)",
                    self.bus.stream
                ),
            );
        }
        if !is_subject_prefix(&self.bus.subject_prefix) {
            p.add(
                "bus.subject_prefix",
                format!(
                    "`{}` is not a NATS subject prefix (dot-separated non-empty tokens without \
                     spaces, `*` or `>`)",
                    self.bus.subject_prefix
                ),
            );
        }
        p.positive(
            "bus.duplicate_window_seconds",
            self.bus.duplicate_window_seconds,
        );
        p.positive("bus.retry_max_age_hours", self.bus.retry_max_age_hours);
        if self.bus.breaker_enabled {
            if !(1..=100).contains(&self.bus.breaker_failure_percent) {
                p.add(
                    "bus.breaker_failure_percent",
                    "must be between 1 and 100 (the share of failed publishes, in percent, \
                     that opens a subject's breaker)",
                );
            }
            p.positive(
                "bus.breaker_min_calls",
                u64::from(self.bus.breaker_min_calls),
            );
            p.positive("bus.breaker_window_secs", self.bus.breaker_window_secs);
            p.positive("bus.breaker_cooldown_secs", self.bus.breaker_cooldown_secs);
            p.positive(
                "bus.breaker_probe_calls",
                u64::from(self.bus.breaker_probe_calls),
            );
            // Beyond a day a typo is likelier than intent, and an open breaker that long
            // would hold a subject's events for a day after the bus is fine again.
            for (key, value) in [
                ("bus.breaker_window_secs", self.bus.breaker_window_secs),
                ("bus.breaker_cooldown_secs", self.bus.breaker_cooldown_secs),
            ] {
                if value > MAX_BREAKER_SECS {
                    p.add(key, format!("must be at most {MAX_BREAKER_SECS} (a day)"));
                }
            }
        }
        if self.storage.retention_days > MAX_RETENTION_DAYS {
            p.add(
                "storage.retention_days",
                format!("must be at most {MAX_RETENTION_DAYS} (0 keeps entries for ever)"),
            );
        }

        if self.plugins.dir.as_os_str().is_empty() {
            p.add("plugins.dir", "is empty");
        }
        if self.plugins.cache_dir.as_os_str().is_empty() {
            p.add("plugins.cache_dir", "is empty");
        }
        p.positive("plugins.timeout_ms", self.plugins.timeout_ms);
        p.positive("plugins.memory_mb", self.plugins.memory_mb);
        p.positive("plugins.queue_wait_ms", self.plugins.queue_wait_ms);
        p.positive(
            "plugins.max_concurrent_calls",
            self.plugins.max_concurrent_calls,
        );
        p.positive("plugins.max_events", u64::from(self.plugins.max_events));
        p.positive(
            "plugins.max_event_bytes_mb",
            self.plugins.max_event_bytes_mb,
        );
        p.positive(
            "plugins.max_error_chars",
            u64::from(self.plugins.max_error_chars),
        );
        if let Some(url) = &self.public_url
            && let Err(why) = public_url_problem(url)
        {
            p.add("public_url", why);
        }

        for (name, source) in &self.sources {
            let key = format!("sources.{name}");
            if !is_name(name) {
                p.add(
                    key.clone(),
                    format!(
                        "`{name}` is not a valid source name ([a-z0-9][a-z0-9_-]*, at most \
                         {MAX_SOURCE_NAME} characters: it becomes a URL path segment and a \
                         NATS subject token)"
                    ),
                );
            }
            let plugin = source.plugin_name(name);
            if !is_name(plugin) {
                p.add(
                    format!("{key}.plugin"),
                    format!("`{plugin}` is not a valid plugin name ([a-z0-9][a-z0-9_-]*)"),
                );
            }
            if source.enabled
                && source.secrets.is_empty()
                && source.keys.is_empty()
                && !source.tenant_secrets
            {
                let why = match source.unset_secret_vars.as_slice() {
                    [] => String::new(),
                    vars => format!(" ({} not set)", describe_vars(vars)),
                };
                p.add(key.clone(), format!("no secret or key configured{why}"));
            }
            for (i, text) in source.keys.iter().enumerate() {
                if let Err(e) = hookgate_plugin_sdk::keys::PublicKey::parse(text) {
                    p.add(format!("{key}.keys[{i}]"), e.to_string());
                }
            }
            if let Some(url) = &source.public_url
                && let Err(why) = public_url_problem(url)
            {
                p.add(format!("{key}.public_url"), why);
            }
            for (i, secret) in source.secrets.iter().enumerate() {
                if secret.expose().trim().is_empty() {
                    p.add(format!("{key}.secrets[{i}]"), "is empty");
                }
            }
            if source.dedupe_ttl_hours == Some(0) {
                p.add(format!("{key}.dedupe_ttl_hours"), "must be greater than 0");
            }
            if source.settings.keys().any(String::is_empty) {
                p.add(format!("{key}.settings"), "has an empty key");
            }
        }

        if problems.0.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems.0))
        }
    }

    /// Checks that every enabled source's plugin is among `known` (bundled plus plugin
    /// directory), which only the plugin registry knows. Disabled sources are skipped: a
    /// source may be declared ahead of its plugin.
    pub fn validate_plugins(&self, known: &[&str]) -> Result<(), ConfigError> {
        for (name, source) in self.enabled_sources() {
            let plugin = source.plugin_name(name);
            if !known.contains(&plugin) {
                let mut known: Vec<String> = known.iter().map(|k| (*k).to_owned()).collect();
                known.sort();
                return Err(ConfigError::UnknownPlugin {
                    source_name: name.to_owned(),
                    plugin: plugin.to_owned(),
                    known,
                });
            }
        }
        Ok(())
    }
}

fn describe_vars(vars: &[String]) -> String {
    match vars {
        [one] => format!("{one} is"),
        many => format!("{} are", many.join(", ")),
    }
}

/// `[a-z0-9][a-z0-9_-]*`, bounded.
pub(crate) fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= MAX_SOURCE_NAME
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// Lower case only: PostgreSQL folds unquoted identifiers to lower case, so a mixed-case
/// name would mean different schemas depending on whether some query quotes it.
fn is_schema_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= MAX_SCHEMA_NAME
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn is_stream_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '.' | '*' | '>' | '/' | '\\'))
}

fn is_subject_prefix(prefix: &str) -> bool {
    prefix.split('.').all(|token| {
        !token.is_empty()
            && token
                .chars()
                .all(|c| c.is_ascii_graphic() && !matches!(c, '*' | '>'))
    })
}

fn check_url(p: &mut Problems, key: &str, url: &ServiceUrl, allowed: &[&str]) {
    if let Err(reason) = url_problem(url.expose(), allowed) {
        // The masked form: a password must not reach the error message.
        p.add(key, format!("`{}`: {reason}", url.masked()));
    }
}

fn url_problem(url: &str, allowed: &[&str]) -> Result<(), String> {
    let expected = || format!("expected one of {}", allowed.join(", "));
    let Some((scheme, rest)) = url.split_once(':') else {
        return Err(format!("not a URL ({})", expected()));
    };
    let scheme = scheme.to_ascii_lowercase();
    if !allowed.contains(&scheme.as_str()) {
        return Err(format!("unsupported scheme `{scheme}` ({})", expected()));
    }
    match scheme.as_str() {
        // sqlx also takes `sqlite::memory:` and `sqlite:relative/path`.
        "sqlite" => match rest.strip_prefix("//").unwrap_or(rest) {
            "" => Err("no database file".to_owned()),
            _ => Ok(()),
        },
        "memory" => match rest {
            "" | "//" => Ok(()),
            _ => Err("memory dedupe takes no address: write `memory://`".to_owned()),
        },
        "file" => match rest.strip_prefix("//") {
            Some(path) if !path.is_empty() => Ok(()),
            _ => Err("expected file://<path>".to_owned()),
        },
        "nats" => url
            .split(',')
            .try_for_each(|server| match server.trim().split_once("://") {
                Some((s, rest)) if s.eq_ignore_ascii_case("nats") => check_authority(rest, false),
                _ => Err(format!("`{}` is not a nats:// server", server.trim())),
            }),
        "postgres" | "postgresql" => match rest.strip_prefix("//") {
            // A Unix socket connection names its host in the query instead.
            Some(rest) => check_authority(rest, rest.contains("host=")),
            None => Err(format!("expected {scheme}://host/database")),
        },
        _ => match rest.strip_prefix("//") {
            Some(rest) => check_authority(rest, false),
            None => Err(format!("expected {scheme}://host:port")),
        },
    }
}

/// Host (and port, if given) of `[user[:password]@]host[:port][/...]`.
fn check_authority(rest: &str, host_optional: bool) -> Result<(), String> {
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let host_port = authority
        .rfind('@')
        .map_or(authority, |at| &authority[at + 1..]);
    let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
        let Some((host, after)) = bracketed.split_once(']') else {
            return Err("unterminated `[` in host".to_owned());
        };
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(format!("unexpected `{after}` after host")),
            },
        }
    } else {
        match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    if host.is_empty() && !host_optional {
        return Err("no host".to_owned());
    }
    if host.chars().any(|c| c.is_whitespace()) {
        return Err("host contains whitespace".to_owned());
    }
    if let Some(port) = port
        && port.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err(format!("`{port}` is not a port number"));
    }
    Ok(())
}

/// Why `url` cannot be the address senders sign: an absolute http(s) URL without query
/// or fragment (the request's own path and query are appended to it).
fn public_url_problem(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("must start with https:// or http://")?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err("names no host".into());
    }
    if url.contains(['?', '#']) || url.chars().any(char::is_whitespace) {
        return Err("must have no query, fragment or spaces".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_rules() {
        let storage = ["sqlite", "postgres", "postgresql"];
        assert_eq!(url_problem("sqlite://data/hookgate.db", &storage), Ok(()));
        assert_eq!(url_problem("sqlite::memory:", &storage), Ok(()));
        assert_eq!(
            url_problem("postgres://root@127.0.0.1:5432/test", &storage),
            Ok(())
        );
        assert_eq!(
            url_problem("postgresql://u:p@[::1]:5432/test", &storage),
            Ok(())
        );
        assert_eq!(
            url_problem("postgres:///test?host=/run/postgresql", &storage),
            Ok(())
        );
        assert!(url_problem("sqlite://", &storage).is_err());
        assert!(url_problem("mysql://h/db", &storage).is_err());
        assert!(url_problem("postgres://h:notaport/db", &storage).is_err());
        assert!(url_problem("postgres:///db", &storage).is_err());
        assert!(url_problem("just-a-path", &storage).is_err());

        let dedupe = ["memory", "redis", "rediss"];
        assert_eq!(url_problem("memory://", &dedupe), Ok(()));
        assert_eq!(url_problem("redis://127.0.0.1:6379/0", &dedupe), Ok(()));
        assert_eq!(url_problem("rediss://:pw@cache:6380", &dedupe), Ok(()));
        assert!(url_problem("memory://somewhere", &dedupe).is_err());
        assert!(url_problem("redis://", &dedupe).is_err());
        assert!(url_problem("redis:127.0.0.1", &dedupe).is_err());

        let bus = ["file", "nats"];
        assert_eq!(url_problem("file://data/events.jsonl", &bus), Ok(()));
        assert_eq!(url_problem("nats://127.0.0.1:4222", &bus), Ok(()));
        assert_eq!(url_problem("nats://a:4222, nats://b:4222", &bus), Ok(()));
        assert!(url_problem("file://", &bus).is_err());
        assert!(url_problem("nats://a:4222,http://b", &bus).is_err());
        assert!(url_problem("kafka://broker:9092", &bus).is_err());
    }

    #[test]
    fn name_rules() {
        assert!(is_name("shopify"));
        assert!(is_name("shop-2_eu"));
        assert!(is_name("0day"));
        assert!(!is_name(""));
        assert!(!is_name("Shopify"));
        assert!(!is_name("-x"));
        assert!(!is_name("a.b"));
        assert!(!is_name("a/b"));
        assert!(!is_name(&"a".repeat(MAX_SOURCE_NAME + 1)));

        assert!(is_stream_name("WEBHOOKS"));
        assert!(!is_stream_name("WEB HOOKS"));
        assert!(!is_stream_name("web.hooks"));
        assert!(!is_stream_name(""));

        assert!(is_subject_prefix("webhooks"));
        assert!(is_subject_prefix("acme.webhooks"));
        assert!(!is_subject_prefix("webhooks."));
        assert!(!is_subject_prefix("web*"));
        assert!(!is_subject_prefix("a b"));
        assert!(!is_subject_prefix(""));

        assert!(is_schema_name("hookgate"));
        assert!(is_schema_name("hg_test_1"));
        assert!(!is_schema_name("HookGate"));
        assert!(!is_schema_name("1x"));
        assert!(!is_schema_name("a;drop"));
    }
}
