//! Tests of loading, layering, interpolation, validation and redaction.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name| map.get(name).cloned()
}

/// Loads `text` as a config file through the public entry point.
fn load_text(
    text: &str,
    env: &[(&str, &str)],
    overrides: &CliOverrides,
) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().map_err(|error| ConfigError::Read {
        path: PathBuf::from("tempdir"),
        error,
    })?;
    let path = dir.path().join("hookgate.toml");
    std::fs::write(&path, text).map_err(|error| ConfigError::Read {
        path: path.clone(),
        error,
    })?;
    Config::load(Some(&path), &env_of(env), overrides)
}

fn load_err(text: &str, env: &[(&str, &str)]) -> String {
    match load_text(text, env, &CliOverrides::default()) {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(e) => e.to_string(),
    }
}

fn addr(text: &str) -> SocketAddr {
    text.parse()
        .unwrap_or_else(|_| panic!("bad test address {text}"))
}

#[test]
fn no_file_and_no_env_is_the_embedded_mode() -> TestResult {
    let config = Config::load_file(None, &env_of(&[]), &CliOverrides::default())?;
    assert_eq!(config.listen, addr("0.0.0.0:8012"));
    assert_eq!(config.storage.url.expose(), "sqlite://data/hookgate.db");
    assert_eq!(config.storage.kind(), Some(StorageKind::Sqlite));
    assert_eq!(config.storage.schema, "hookgate");
    assert_eq!(config.dedupe.url.expose(), "memory://");
    assert_eq!(config.dedupe.kind(), Some(DedupeKind::Memory));
    assert_eq!(config.dedupe.ttl(), Duration::from_secs(24 * 3600));
    assert_eq!(config.bus.url.expose(), "file://data/events.jsonl");
    assert_eq!(
        config.bus.kind(),
        Some(BusKind::File {
            path: PathBuf::from("data/events.jsonl")
        })
    );
    assert_eq!(config.bus.stream, "WEBHOOKS");
    assert_eq!(config.bus.subject_prefix, "webhooks");
    assert!(config.bus.create_stream);
    assert_eq!(config.bus.duplicate_window(), Duration::from_secs(600));
    assert_eq!(config.bus.retry_max_age(), Duration::from_secs(72 * 3600));
    assert_eq!(config.max_payload_bytes(), 10_485_760);
    assert_eq!(config.file(), None);
    assert_eq!(config.plugins.dir, PathBuf::from("plugins.d"));
    assert_eq!(config.plugins.timeout(), Duration::from_millis(1000));
    assert_eq!(config.plugins.memory_bytes(), 64 * 1_048_576);
    assert_eq!(config.http.max_concurrency, 1024);
    assert!(config.admin_token.is_none());
    assert_eq!(config.log_format, LogFormat::Pretty);
    assert!(config.sources.is_empty());
    assert_eq!(
        config.warnings(),
        [
            "source \"shopify\" disabled: SHOPIFY_WEBHOOK_SECRET is not set",
            "source \"stripe\" disabled: STRIPE_WEBHOOK_SECRET is not set",
        ]
    );
    Ok(())
}

#[test]
fn a_default_source_exists_when_its_secret_is_set() -> TestResult {
    let env = env_of(&[
        ("SHOPIFY_WEBHOOK_SECRET", "shpss_one"),
        ("STRIPE_WEBHOOK_SECRET", ""),
    ]);
    let config = Config::load_file(None, &env, &CliOverrides::default())?;
    let shopify = config.sources.get("shopify").ok_or("shopify missing")?;
    assert_eq!(shopify.plugin.as_deref(), Some("shopify"));
    assert!(shopify.enabled);
    let secrets: Vec<&str> = shopify.secrets.iter().map(Secret::expose).collect();
    assert_eq!(secrets, ["shpss_one"]);
    // An empty variable counts as unset.
    assert!(!config.sources.contains_key("stripe"));
    assert_eq!(
        config.warnings(),
        ["source \"stripe\" disabled: STRIPE_WEBHOOK_SECRET is not set"]
    );
    Ok(())
}

#[test]
fn comma_separated_secrets_are_trimmed_and_empty_items_dropped() -> TestResult {
    let env = env_of(&[(
        "STRIPE_WEBHOOK_SECRET",
        " whsec_new , whsec_old,, ,whsec_older ",
    )]);
    let config = Config::load_file(None, &env, &CliOverrides::default())?;
    let stripe = config.sources.get("stripe").ok_or("stripe missing")?;
    let secrets: Vec<&str> = stripe.secrets.iter().map(Secret::expose).collect();
    assert_eq!(secrets, ["whsec_new", "whsec_old", "whsec_older"]);

    // The same list semantics for a file secret written as exactly `${VAR}`.
    let config = load_text(
        "[sources.acme]\nsecrets = [\"${ACME_SECRETS}\", \"literal,with,commas\"]\n",
        &[("ACME_SECRETS", "a1, a2")],
        &CliOverrides::default(),
    )?;
    let acme = config.sources.get("acme").ok_or("acme missing")?;
    let secrets: Vec<&str> = acme.secrets.iter().map(Secret::expose).collect();
    assert_eq!(secrets, ["a1", "a2", "literal,with,commas"]);
    Ok(())
}

#[test]
fn file_values_replace_defaults() -> TestResult {
    let text = r#"
listen = "127.0.0.1:9000"
max_payload_size_mb = 3
log_format = "json"
[http]
max_concurrency = 64
[storage]
url = "postgres://root@127.0.0.1:5432/test"
schema = "hg_file"
[dedupe]
url = "redis://127.0.0.1:6379"
ttl_hours = 5
[bus]
url = "nats://127.0.0.1:4222"
stream = "HG_FILE"
subject_prefix = "acme.hooks"
create_stream = false
[plugins]
dir = "/opt/plugins"
"#;
    let config = load_text(text, &[("DATABASE_URL", "")], &CliOverrides::default())?;
    assert_eq!(config.listen, addr("127.0.0.1:9000"));
    assert_eq!(config.max_payload_bytes(), 3 * 1_048_576);
    assert_eq!(config.log_format, LogFormat::Json);
    assert_eq!(config.http.max_concurrency, 64);
    // Unset by the empty DATABASE_URL: the file's value stands.
    assert_eq!(
        config.storage.url.expose(),
        "postgres://root@127.0.0.1:5432/test"
    );
    assert_eq!(config.storage.kind(), Some(StorageKind::Postgres));
    assert_eq!(config.storage.schema, "hg_file");
    assert_eq!(config.dedupe.kind(), Some(DedupeKind::Redis));
    assert_eq!(config.dedupe.ttl_hours, 5);
    assert_eq!(config.bus.kind(), Some(BusKind::Nats));
    assert_eq!(config.bus.stream, "HG_FILE");
    assert_eq!(config.bus.subject_prefix, "acme.hooks");
    assert!(!config.bus.create_stream);
    assert_eq!(config.plugins.dir, PathBuf::from("/opt/plugins"));
    // Keys the file leaves out keep their defaults.
    assert_eq!(
        config.http.body_read_timeout(),
        Duration::from_millis(30_000)
    );
    assert_eq!(config.bus.duplicate_window_seconds, 600);
    Ok(())
}

#[test]
fn environment_overrides_file() -> TestResult {
    let text = r#"
listen = "127.0.0.1:9000"
max_payload_size_mb = 3
admin_token = "from-file"
log_format = "json"
[storage]
url = "sqlite://file.db"
[dedupe]
url = "memory://"
ttl_hours = 5
[bus]
url = "file://file.jsonl"
[plugins]
dir = "file-plugins"
[sources.shopify]
secrets = ["file-secret"]
dedupe_ttl_hours = 7
"#;
    let env = [
        ("LISTEN_ADDR", "127.0.0.1:9100"),
        ("MAX_PAYLOAD_SIZE_MB", "20"),
        ("ADMIN_TOKEN", "from-env"),
        ("LOG_FORMAT", "pretty"),
        ("DATABASE_URL", "postgres://root@127.0.0.1/test"),
        ("REDIS_URL", "redis://127.0.0.1:6379"),
        ("DEDUP_TTL_HOURS", "48"),
        ("NATS_URL", "nats://127.0.0.1:4222"),
        ("PLUGIN_DIR", "env-plugins"),
        ("SHOPIFY_WEBHOOK_SECRET", "env-secret-1,env-secret-2"),
    ];
    let config = load_text(text, &env, &CliOverrides::default())?;
    assert_eq!(config.listen, addr("127.0.0.1:9100"));
    assert_eq!(config.max_payload_bytes(), 20 * 1_048_576);
    assert_eq!(
        config.admin_token.as_ref().map(Secret::expose),
        Some("from-env")
    );
    assert_eq!(config.log_format, LogFormat::Pretty);
    assert_eq!(
        config.storage.url.expose(),
        "postgres://root@127.0.0.1/test"
    );
    assert_eq!(config.dedupe.url.expose(), "redis://127.0.0.1:6379");
    assert_eq!(config.dedupe.ttl_hours, 48);
    assert_eq!(config.bus.url.expose(), "nats://127.0.0.1:4222");
    assert_eq!(config.plugins.dir, PathBuf::from("env-plugins"));
    let shopify = config.sources.get("shopify").ok_or("shopify missing")?;
    let secrets: Vec<&str> = shopify.secrets.iter().map(Secret::expose).collect();
    assert_eq!(secrets, ["env-secret-1", "env-secret-2"]);
    // The environment replaces the secrets only; the file's other keys stand.
    assert_eq!(shopify.dedupe_ttl_hours, Some(7));
    // A file-defined source raises no "disabled" warning; the absent stripe does.
    assert_eq!(
        config.warnings(),
        ["source \"stripe\" disabled: STRIPE_WEBHOOK_SECRET is not set"]
    );
    Ok(())
}

#[test]
fn command_line_overrides_environment() -> TestResult {
    let overrides = CliOverrides {
        listen: Some(addr("127.0.0.1:9300")),
    };
    let config = load_text(
        "listen = \"127.0.0.1:9100\"\n",
        &[("LISTEN_ADDR", "127.0.0.1:9200")],
        &overrides,
    )?;
    assert_eq!(config.listen, addr("127.0.0.1:9300"));
    let config = Config::load_file(
        None,
        &env_of(&[("LISTEN_ADDR", "127.0.0.1:9200")]),
        &overrides,
    )?;
    assert_eq!(config.listen, addr("127.0.0.1:9300"));
    Ok(())
}

#[test]
fn bad_environment_values_name_the_variable() {
    let cases = [
        ("LISTEN_ADDR", "localhost"),
        ("MAX_PAYLOAD_SIZE_MB", "ten"),
        ("DEDUP_TTL_HOURS", "-1"),
        ("LOG_FORMAT", "xml"),
    ];
    for (var, value) in cases {
        let err = Config::load_file(None, &env_of(&[(var, value)]), &CliOverrides::default())
            .map(|_| ())
            .map_err(|e| e.to_string());
        let Err(message) = err else {
            panic!("{var}={value} was accepted");
        };
        assert!(message.contains(var), "{message}");
        assert!(message.contains(value), "{message}");
    }
    // A parseable value that breaks a rule is reported under its key.
    let err = Config::load_file(
        None,
        &env_of(&[("MAX_PAYLOAD_SIZE_MB", "0")]),
        &CliOverrides::default(),
    );
    assert!(
        matches!(&err, Err(ConfigError::Invalid(p)) if p[0].key == "max_payload_size_mb"),
        "{err:?}"
    );
}

#[test]
fn file_strings_are_interpolated_from_the_environment() -> TestResult {
    let text = r#"
admin_token = "${HG_TOKEN}"
[storage]
url = "postgres://${PG_USER}@${PG_HOST:-127.0.0.1}:5432/test"
[sources.acme]
secrets = ["prefix-${ACME_PART}"]
[sources.acme.settings]
region = "${ACME_REGION}"
literal = "$${NOT_A_VAR}"
"#;
    let env = [
        ("HG_TOKEN", "tok-123"),
        ("PG_USER", "root"),
        ("ACME_PART", "xyz"),
        ("ACME_REGION", "eu-west"),
    ];
    let config = load_text(text, &env, &CliOverrides::default())?;
    assert_eq!(
        config.admin_token.as_ref().map(Secret::expose),
        Some("tok-123")
    );
    assert_eq!(
        config.storage.url.expose(),
        "postgres://root@127.0.0.1:5432/test"
    );
    let acme = config.sources.get("acme").ok_or("acme missing")?;
    assert_eq!(acme.secrets.first().map(Secret::expose), Some("prefix-xyz"));
    assert_eq!(
        acme.settings.get("region").map(String::as_str),
        Some("eu-west")
    );
    assert_eq!(
        acme.settings.get("literal").map(String::as_str),
        Some("${NOT_A_VAR}")
    );
    Ok(())
}

#[test]
fn an_unset_variable_is_an_error_naming_key_and_variable() {
    assert_eq!(
        load_err("[storage]\nurl = \"${HG_NO_SUCH_DB}\"\n", &[]),
        "storage.url: environment variable HG_NO_SUCH_DB is not set"
    );
    assert_eq!(
        load_err(
            "[sources.acme.settings]\nregion = \"${HG_NO_REGION}\"\n",
            &[("ACME", "x")]
        ),
        "sources.acme.settings.region: environment variable HG_NO_REGION is not set"
    );
    // With another secret present, an unset one is a plain error, not "no secret".
    assert_eq!(
        load_err(
            "[sources.shopify]\nsecrets = [\"literal\", \"${SHOPIFY_WEBHOOK_SECRET}\"]\n",
            &[]
        ),
        "sources.shopify.secrets[1]: environment variable SHOPIFY_WEBHOOK_SECRET is not set"
    );
    let message = load_err("listen = \"${HG_BROKEN\"\n", &[]);
    assert!(message.starts_with("listen: unterminated"), "{message}");
}

#[test]
fn a_source_whose_only_secret_is_unset_has_no_secret() {
    let message = load_err(
        "[sources.shopify]\nsecrets = [\"${SHOPIFY_WEBHOOK_SECRET}\"]\n",
        &[],
    );
    assert_eq!(
        message,
        "invalid configuration: sources.shopify: no secret or key configured \
         (SHOPIFY_WEBHOOK_SECRET is not set)"
    );
    let message = load_err(
        "[sources.acme]\nsecrets = [\"${ACME_NEW}\", \"${ACME_OLD}\"]\n",
        &[("ACME_NEW", "")],
    );
    assert!(
        message
            .contains("sources.acme: no secret or key configured (ACME_NEW, ACME_OLD are not set)"),
        "{message}"
    );
}

#[test]
fn a_file_source_needs_a_secret_unless_disabled() -> TestResult {
    let message = load_err("[sources.acme]\nplugin = \"shopify\"\n", &[]);
    assert_eq!(
        message,
        "invalid configuration: sources.acme: no secret or key configured"
    );
    let message = load_err("[sources.acme]\nsecrets = [\"\", \"  \"]\n", &[]);
    assert!(
        message.contains("sources.acme.secrets[0]: is empty"),
        "{message}"
    );
    assert!(
        message.contains("sources.acme.secrets[1]: is empty"),
        "{message}"
    );

    let config = load_text(
        "[sources.acme]\nenabled = false\n[sources.beta]\nsecrets = [\"b\"]\n",
        &[],
        &CliOverrides::default(),
    )?;
    assert!(!config.sources.get("acme").ok_or("acme missing")?.enabled);
    let enabled: Vec<&str> = config.enabled_sources().map(|(name, _)| name).collect();
    assert_eq!(enabled, ["beta"]);
    Ok(())
}

#[test]
fn the_plugin_defaults_to_the_source_name() -> TestResult {
    let config = load_text(
        "[sources.acme]\nsecrets = [\"a\"]\n[sources.eu]\nplugin = \"shopify\"\nsecrets = [\"b\"]\n",
        &[],
        &CliOverrides::default(),
    )?;
    let acme = config.sources.get("acme").ok_or("acme missing")?;
    assert_eq!(acme.plugin.as_deref(), Some("acme"));
    assert_eq!(acme.plugin_name("acme"), "acme");
    let eu = config.sources.get("eu").ok_or("eu missing")?;
    assert_eq!(eu.plugin_name("eu"), "shopify");
    Ok(())
}

#[test]
fn unknown_keys_are_named_with_their_path_and_line() {
    let message = load_err("listn = \"127.0.0.1:1\"\n", &[]);
    assert!(
        message.contains(":1:1: listn: unknown field `listn`"),
        "{message}"
    );

    let message = load_err("[storage]\nurl = \"sqlite://x.db\"\nuri = \"x\"\n", &[]);
    assert!(
        message.contains(":3:1: storage.uri: unknown field `uri`"),
        "{message}"
    );

    let message = load_err(
        "[sources.shopify]\nsecrets = [\"x\"]\n\n[sources.shopify.settings]\nk = \"v\"\n[sources.stripe]\nsecret = \"x\"\n",
        &[],
    );
    assert!(
        message.contains(":7:1: sources.stripe.secret: unknown field `secret`"),
        "{message}"
    );

    let message = load_err("[plugins]\ntimeout = 5\n", &[]);
    assert!(
        message.contains("plugins.timeout: unknown field `timeout`"),
        "{message}"
    );
    assert!(
        message.contains("timeout_ms"),
        "the message lists the known keys: {message}"
    );
}

#[test]
fn wrongly_typed_values_are_named() {
    let message = load_err("[dedupe]\nttl_hours = \"24\"\n", &[]);
    assert!(message.contains(":2:13: dedupe.ttl_hours:"), "{message}");
    let message = load_err("listen = \"not an address\"\n", &[]);
    assert!(message.contains(":1:10: listen:"), "{message}");
    let message = load_err("log_format = \"xml\"\n", &[]);
    assert!(
        message.contains("log_format: unknown variant `xml`"),
        "{message}"
    );
    let message = load_err(
        "[sources.acme]\nsecrets = [\"a\"]\nsettings = { port = 5 }\n",
        &[],
    );
    assert!(message.contains("sources.acme.settings.port:"), "{message}");
}

#[test]
fn invalid_toml_names_the_line() {
    let message = load_err("listen = \"0.0.0.0:8012\"\n[storage\n", &[]);
    assert!(message.contains(":2:"), "{message}");
    assert!(message.contains("invalid TOML"), "{message}");
}

#[test]
fn bad_urls_are_refused_with_their_key_and_without_password() {
    let message = load_err("[storage]\nurl = \"mysql://u:hunter2@db/x\"\n", &[]);
    assert!(
        message.contains("storage.url: `mysql://u:***@db/x`: unsupported scheme `mysql`"),
        "{message}"
    );
    assert!(!message.contains("hunter2"), "{message}");

    let message = load_err("", &[("REDIS_URL", "memcached://127.0.0.1:11211")]);
    assert!(message.contains("dedupe.url:"), "{message}");
    let message = load_err("", &[("NATS_URL", "nats://:4222")]);
    assert!(
        message.contains("bus.url:") && message.contains("no host"),
        "{message}"
    );
    let message = load_err("[bus]\nurl = \"kafka://k:9092\"\n", &[]);
    assert!(message.contains("bus.url:"), "{message}");
}

#[test]
fn every_broken_rule_is_reported_at_once() {
    let text = r#"
max_payload_size_mb = 0
[http]
header_read_timeout_ms = 0
max_concurrency = 0
[storage]
schema = "Hook-Gate"
[dedupe]
ttl_hours = 0
[bus]
stream = "web.hooks"
subject_prefix = "webhooks.>"
duplicate_window_seconds = 0
retry_max_age_hours = 0
[plugins]
timeout_ms = 0
memory_mb = 0
[sources.Shopify]
secrets = ["x"]
[sources.ok]
plugin = "Bad Plugin"
secrets = ["y"]
dedupe_ttl_hours = 0
"#;
    let Err(ConfigError::Invalid(problems)) = load_text(text, &[], &CliOverrides::default()) else {
        panic!("expected validation problems");
    };
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    for key in [
        "max_payload_size_mb",
        "http.header_read_timeout_ms",
        "http.max_concurrency",
        "storage.schema",
        "dedupe.ttl_hours",
        "bus.stream",
        "bus.subject_prefix",
        "bus.duplicate_window_seconds",
        "bus.retry_max_age_hours",
        "plugins.timeout_ms",
        "plugins.memory_mb",
        "sources.Shopify",
        "sources.ok.plugin",
        "sources.ok.dedupe_ttl_hours",
    ] {
        assert!(keys.contains(&key), "{key} not reported in {keys:?}");
    }
    assert!(!keys.contains(&"http.body_read_timeout_ms"), "{keys:?}");
}

#[test]
fn unknown_plugins_name_source_and_plugin() -> TestResult {
    let config = load_text(
        "[sources.acme]\nplugin = \"acmepay\"\nsecrets = [\"a\"]\n[sources.off]\nplugin = \"later\"\nenabled = false\n",
        &[],
        &CliOverrides::default(),
    )?;
    let err = config.validate_plugins(&["stripe", "shopify"]);
    let Err(err) = err else {
        panic!("unknown plugin accepted");
    };
    assert_eq!(
        err.to_string(),
        "sources.acme.plugin: unknown plugin \"acmepay\" (known: shopify, stripe)"
    );
    // The disabled source's plugin is not checked.
    config.validate_plugins(&["acmepay"])?;
    Ok(())
}

#[test]
fn dedupe_ttl_is_the_sources_own_else_the_longer_of_global_and_plugin_window() -> TestResult {
    let config = load_text(
        "[dedupe]\nttl_hours = 24\n[sources.own]\nsecrets = [\"a\"]\ndedupe_ttl_hours = 2\n[sources.plain]\nsecrets = [\"b\"]\n",
        &[],
        &CliOverrides::default(),
    )?;
    let h = |n: u64| Duration::from_secs(n * 3600);
    assert_eq!(config.dedupe_ttl_for("own", 72), h(2));
    assert_eq!(config.dedupe_ttl_for("plain", 72), h(72));
    assert_eq!(config.dedupe_ttl_for("plain", 12), h(24));
    assert_eq!(config.dedupe_ttl_for("unknown", 0), h(24));
    Ok(())
}

#[test]
fn secrets_never_show_in_debug_or_redacted_toml() -> TestResult {
    let text = r#"
admin_token = "adm-9d1e-distinctive"
[storage]
url = "postgres://hg:pw-4c2b-distinctive@127.0.0.1:5432/test"
[dedupe]
url = "redis://:rd-77aa-distinctive@127.0.0.1:6379"
[sources.acme]
secrets = ["sec-5f0e-distinctive", "${ACME_OLD}"]
"#;
    let config = load_text(
        text,
        &[
            ("ACME_OLD", "old-3b3b-distinctive"),
            ("STRIPE_WEBHOOK_SECRET", "env-8e8e-distinctive"),
        ],
        &CliOverrides::default(),
    )?;
    let debug = format!("{config:?} {config:#?}");
    let shown = config.redacted_toml()?;
    for secret in [
        "adm-9d1e", "pw-4c2b", "rd-77aa", "sec-5f0e", "old-3b3b", "env-8e8e",
    ] {
        assert!(!debug.contains(secret), "{secret} in Debug: {debug}");
        assert!(
            !shown.contains(secret),
            "{secret} in redacted TOML: {shown}"
        );
    }
    assert!(
        shown.contains("postgres://hg:***@127.0.0.1:5432/test"),
        "{shown}"
    );
    assert!(shown.contains("redis://:***@127.0.0.1:6379"), "{shown}");
    assert!(shown.contains("admin_token = \"***\""), "{shown}");
    // The printed form is itself a valid config with the same shape.
    let reparsed = Config::from_toml(&shown, Path::new("shown.toml"), &env_of(&[]))?;
    assert_eq!(
        reparsed.storage.url.expose(),
        "postgres://hg:***@127.0.0.1:5432/test"
    );
    assert_eq!(
        reparsed.sources.get("acme").map(|s| s.secrets.len()),
        Some(2)
    );
    assert_eq!(
        reparsed.sources.get("stripe").map(|s| s.secrets.len()),
        Some(1)
    );
    // The values are still there for the code that needs them.
    assert_eq!(
        config.storage.url.expose(),
        "postgres://hg:pw-4c2b-distinctive@127.0.0.1:5432/test"
    );
    Ok(())
}

#[test]
fn the_annotated_example_parses_and_validates() -> TestResult {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/hookgate.toml");
    let env = [
        ("ADMIN_TOKEN", "example-admin"),
        ("SHOPIFY_WEBHOOK_SECRET", "shpss_a,shpss_b"),
        ("STRIPE_WEBHOOK_SECRET", "whsec_a"),
    ];
    let config = Config::load(Some(&path), &env_of(&env), &CliOverrides::default())?;
    config.validate_plugins(&["shopify", "stripe"])?;
    assert_eq!(
        config.admin_token.as_ref().map(Secret::expose),
        Some("example-admin")
    );
    assert_eq!(config.storage.kind(), Some(StorageKind::Postgres));
    assert_eq!(config.dedupe.kind(), Some(DedupeKind::Redis));
    assert_eq!(config.bus.kind(), Some(BusKind::Nats));
    assert_eq!(config.log_format, LogFormat::Json);
    let shopify = config.sources.get("shopify").ok_or("shopify missing")?;
    assert_eq!(shopify.secrets.len(), 2);
    assert_eq!(
        config.dedupe_ttl_for("shopify", 48),
        Duration::from_secs(48 * 3600)
    );
    let eu = config
        .sources
        .get("shopify-eu")
        .ok_or("shopify-eu missing")?;
    assert!(!eu.enabled);
    assert_eq!(eu.plugin_name("shopify-eu"), "shopify");
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());
    assert_eq!(config.file(), Some(path.as_path()));

    // Loading twice gives equal configurations; a changed secret makes them differ.
    let again = Config::load(Some(&path), &env_of(&env), &CliOverrides::default())?;
    assert_eq!(config, again);
    let mut rotated = env;
    rotated[2] = ("STRIPE_WEBHOOK_SECRET", "whsec_b");
    let rotated = Config::load(Some(&path), &env_of(&rotated), &CliOverrides::default())?;
    assert_ne!(config.sources.get("stripe"), rotated.sources.get("stripe"));
    assert_eq!(
        config.sources.get("shopify"),
        rotated.sources.get("shopify")
    );

    // Without its variables the example fails on the first unset one, naming it.
    let err = Config::load(Some(&path), &env_of(&[]), &CliOverrides::default())
        .map(|_| ())
        .map_err(|e| e.to_string());
    assert_eq!(
        err,
        Err("admin_token: environment variable ADMIN_TOKEN is not set".to_owned())
    );
    Ok(())
}

#[test]
fn an_explicit_missing_file_is_an_error_naming_it() {
    let path = Path::new("/nonexistent/hookgate-test/missing.toml");
    let err = Config::load(Some(path), &env_of(&[]), &CliOverrides::default())
        .map(|_| ())
        .map_err(|e| e.to_string());
    assert_eq!(
        err,
        Err("config file /nonexistent/hookgate-test/missing.toml not found".to_owned())
    );
}

#[test]
fn the_default_file_is_used_only_when_present() -> TestResult {
    let dir = tempfile::tempdir()?;
    assert_eq!(default_file_in(dir.path())?, None);
    let file = dir.path().join(DEFAULT_CONFIG_FILE);
    std::fs::write(&file, "listen = \"127.0.0.1:1\"\n")?;
    assert_eq!(default_file_in(dir.path())?, Some(file));
    Ok(())
}

#[test]
fn shape_errors_at_secret_keys_do_not_quote_the_value() {
    let message = load_err(
        "[sources.acme]\nsecrets = \"${ACME_SECRET}\"\n",
        &[("ACME_SECRET", "lit-6a6a-distinctive")],
    );
    assert!(
        message.contains("sources.acme.secrets: invalid value"),
        "{message}"
    );
    assert!(message.contains("expected a sequence"), "{message}");
    assert!(!message.contains("6a6a"), "{message}");
    let message = load_err("[sources.acme]\nsecrets = [\"ok\", 7]\n", &[]);
    assert!(
        message.contains("sources.acme.secrets[1]: invalid value"),
        "{message}"
    );
    let message = load_err("admin_token = 5\n", &[]);
    assert!(message.contains("admin_token: invalid value"), "{message}");
    // Elsewhere serde's message, value included, is kept: it helps and is harmless.
    let message = load_err("[bus]\nstream = 7\n", &[]);
    assert!(
        message.contains("bus.stream: invalid type: integer `7`"),
        "{message}"
    );
}

#[test]
fn an_empty_admin_token_closes_the_admin_api() -> TestResult {
    let config = load_text(
        "admin_token = \"${ADMIN_TOKEN:-}\"\n",
        &[
            ("SHOPIFY_WEBHOOK_SECRET", "s"),
            ("STRIPE_WEBHOOK_SECRET", "t"),
        ],
        &CliOverrides::default(),
    )?;
    assert!(config.admin_token.is_none());
    assert_eq!(
        config.warnings(),
        ["admin_token is empty: the admin API answers 401 to everything"]
    );
    let config = load_text("", &[("ADMIN_TOKEN", " tok-1\n")], &CliOverrides::default())?;
    assert_eq!(
        config.admin_token.as_ref().map(Secret::expose),
        Some("tok-1")
    );
    // A hand-built config with an empty token is still refused.
    let config = Config {
        admin_token: Some(Secret::new(" ")),
        ..Config::default()
    };
    let Err(ConfigError::Invalid(problems)) = config.validate() else {
        panic!("empty admin token accepted");
    };
    assert_eq!(problems[0].key, "admin_token");
    Ok(())
}

#[test]
fn dedupe_namespace_follows_the_storage_unless_set() -> TestResult {
    let namespace = |storage: &str| -> Result<String, ConfigError> {
        Ok(load_text(storage, &[], &CliOverrides::default())?.dedupe_namespace())
    };
    let a = namespace("[storage]\nurl = \"postgres://hg:one@db:5432/app\"\nschema = \"a\"\n")?;
    let same_db_other_password =
        namespace("[storage]\nurl = \"postgres://hg:two@db:5432/app\"\nschema = \"a\"\n")?;
    let other_schema =
        namespace("[storage]\nurl = \"postgres://hg:one@db:5432/app\"\nschema = \"b\"\n")?;
    let other_database =
        namespace("[storage]\nurl = \"postgres://hg:one@db:5432/other\"\nschema = \"a\"\n")?;
    assert_eq!(a.len(), 12);
    assert!(a.bytes().all(|b| b.is_ascii_hexdigit()), "{a}");
    assert_eq!(
        a, same_db_other_password,
        "a rotated password keeps the keys"
    );
    assert_ne!(a, other_schema);
    assert_ne!(a, other_database);
    assert_eq!(namespace("[dedupe]\nnamespace = \"shop-eu\"\n")?, "shop-eu");
    Ok(())
}

#[test]
fn dedupe_namespace_must_fit_in_a_key() {
    for bad in ["", "has space", "a:b", &"x".repeat(65)] {
        let message = load_err(&format!("[dedupe]\nnamespace = \"{bad}\"\n"), &[]);
        assert!(message.contains("dedupe.namespace"), "{bad:?}: {message}");
    }
}

#[test]
fn breakers_retry_budget_and_retention_have_safe_defaults() {
    let config = Config::default();
    let breaker = config.bus.breaker();
    assert!(breaker.enabled);
    assert!((breaker.failure_rate - 0.5).abs() < f64::EPSILON);
    assert_eq!(breaker.min_calls, 20);
    assert_eq!(breaker.window, Duration::from_secs(60));
    assert_eq!(breaker.cooldown, Duration::from_secs(30));
    assert_eq!(breaker.probe_calls, 3);
    assert_eq!(
        config.bus.retry_max_attempts, 0,
        "no attempts limit unless asked"
    );
    assert_eq!(
        config.storage.retention_days, 0,
        "entries kept unless asked"
    );
}

#[test]
fn breaker_and_retention_keys_are_read_and_checked() {
    let config = load_text(
        "[storage]\nretention_days = 30\n[bus]\nretry_max_attempts = 5\nbreaker_failure_percent = 25\nbreaker_min_calls = 4\nbreaker_window_secs = 10\nbreaker_cooldown_secs = 2\nbreaker_probe_calls = 1\n",
        &[],
        &CliOverrides::default(),
    )
    .expect("valid");
    assert_eq!(config.storage.retention_days, 30);
    assert_eq!(config.bus.retry_max_attempts, 5);
    let breaker = config.bus.breaker();
    assert!((breaker.failure_rate - 0.25).abs() < f64::EPSILON);
    assert_eq!(breaker.cooldown, Duration::from_secs(2));

    let text = "[storage]\nretention_days = 99999\n[bus]\nbreaker_failure_percent = 0\nbreaker_min_calls = 0\nbreaker_window_secs = 0\nbreaker_cooldown_secs = 100000\nbreaker_probe_calls = 0\n";
    let Err(ConfigError::Invalid(problems)) = load_text(text, &[], &CliOverrides::default()) else {
        panic!("expected validation problems");
    };
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    for key in [
        "storage.retention_days",
        "bus.breaker_failure_percent",
        "bus.breaker_min_calls",
        "bus.breaker_window_secs",
        "bus.breaker_cooldown_secs",
        "bus.breaker_probe_calls",
    ] {
        assert!(keys.contains(&key), "{key} not reported in {keys:?}");
    }
    // Off, the breaker keys are not judged.
    load_text(
        "[bus]\nbreaker_enabled = false\nbreaker_min_calls = 0\n",
        &[],
        &CliOverrides::default(),
    )
    .expect("a disabled breaker's settings do not matter");
    // A percent above 255 does not fit: a clear shape error naming the key.
    let message = load_err("[bus]\nbreaker_failure_percent = 300\n", &[]);
    assert!(message.contains("bus.breaker_failure_percent"), "{message}");
}
