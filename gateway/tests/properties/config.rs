//! Configuration: arbitrary TOML-ish text and arbitrary values for every known key give
//! either a configuration or an error that says where the problem is; a value that is
//! accepted is the value used; a password in a service URL never shows in what the
//! gateway prints.

use std::path::Path;

use hookgate::config::{Config, ConfigError, ServiceUrl};
use proptest::prelude::*;
use serde_json::Value;

use crate::support::runner;

const SOURCE: &str = "src";

/// Every key of the configuration, as dotted paths, read from the defaults themselves
/// (so a key added later is covered), plus the optional ones the defaults leave out and
/// those of a source.
fn known_keys() -> Vec<Vec<String>> {
    fn walk(prefix: &[String], value: &Value, out: &mut Vec<Vec<String>>) {
        if let Value::Object(map) = value {
            for (key, value) in map {
                let mut path = prefix.to_vec();
                path.push(key.clone());
                match value {
                    Value::Object(inner) if !inner.is_empty() => walk(&path, value, out),
                    _ => out.push(path),
                }
            }
        }
    }
    let defaults = serde_json::to_value(Config::default()).expect("defaults render");
    let mut keys = Vec::new();
    walk(&[], &defaults, &mut keys);
    let owned = |parts: &[&str]| parts.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    for optional in ["admin_token", "secrets_key", "public_url"] {
        keys.push(owned(&[optional]));
    }
    for leaf in [
        "plugin",
        "secrets",
        "keys",
        "public_url",
        "allow_raw_mac",
        "dedupe_ttl_hours",
        "enabled",
        "tenant_secrets",
        "settings",
    ] {
        keys.push(owned(&["sources", SOURCE, leaf]));
    }
    keys.retain(|k| k.first().map(String::as_str) != Some("sources") || k.len() == 3);
    keys
}

/// A TOML value, written as TOML.
fn toml_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        (0i64..100_000).prop_map(|n| n.to_string()),
        Just("0".to_owned()),
        Just("-1".to_owned()),
        prop::sample::select(vec!["1.5", "-0.0", "inf", "nan", "1e400"]).prop_map(str::to_owned),
        any::<bool>().prop_map(|b| b.to_string()),
        // Any string, escaped as a TOML basic string (JSON's escapes are TOML's).
        any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap_or_default()),
        "[a-z0-9:/@._${}-]{0,24}".prop_map(|s| serde_json::to_string(&s).unwrap_or_default()),
        prop::sample::select(vec![
            "\"${UNSET_VARIABLE}\"",
            "\"${}\"",
            "\"${A\"",
            "\"$${X}\"",
            "\"${X:-fallback}\"",
            "\"postgres://u:p@h/db\"",
            "\"redis://127.0.0.1:6379\"",
            "\"nats://127.0.0.1:4222\"",
            "\"memory://\"",
            "\"sqlite://x.db\"",
            "\"127.0.0.1:0\"",
            "\"[::1]:8012\"",
            "1979-05-27T07:32:00Z",
        ])
        .prop_map(str::to_owned),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec(("[a-z_]{1,8}", inner), 0..3).prop_map(|v| {
                let pairs: Vec<String> = v.iter().map(|(k, x)| format!("{k} = {x}")).collect();
                format!("{{{}}}", pairs.join(", "))
            }),
        ]
    })
}

/// `path = value` as a document: the key in its table, and the one source a `sources.*`
/// key needs to mean anything (with a secret, unless the key is the secrets themselves).
fn document(path: &[String], value: &str) -> String {
    let leaf = path.last().map(String::as_str).unwrap_or_default();
    match path {
        [key] => format!("{key} = {value}\n"),
        [first, source, _] if first == "sources" => {
            let mut lines = vec![format!("[sources.{source}]")];
            if leaf != "plugin" {
                lines.push("plugin = \"shopify\"".to_owned());
            }
            if leaf != "secrets" {
                lines.push("secrets = [\"s3cret\"]".to_owned());
            }
            lines.push(format!("{leaf} = {value}\n"));
            lines.join("\n")
        }
        _ => {
            let table = path[..path.len() - 1].join(".");
            format!("[{table}]\n{leaf} = {value}\n")
        }
    }
}

/// Parsing and validating as start-up and a reload do, with an empty environment.
fn load(text: &str) -> Result<Config, ConfigError> {
    let config = Config::from_toml(text, Path::new("hookgate.toml"), &|_: &str| None)?;
    config.validate()?;
    Ok(config)
}

fn lookup<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, key| v.get(key))
}

/// Any value for any known key: an error names the key (its dotted path or, inside a
/// table header, its own name); an accepted integer or boolean is the one in force.
#[test]
fn any_value_for_a_known_key_is_used_or_named_in_the_error() {
    let keys = known_keys();
    assert!(keys.len() > 40, "only {} keys found", keys.len());
    let inputs = (prop::sample::select(keys), toml_value());
    let result = runner(1024).run(&inputs, |(path, value)| {
        let text = document(&path, &value);
        let leaf = path.last().cloned().unwrap_or_default();
        match load(&text) {
            // A value that is not TOML at all (an inline table repeating a key) is a
            // syntax error: its position, on the key's line, is what names the problem.
            Err(ConfigError::Syntax { line, .. }) => {
                let key_line = text
                    .lines()
                    .position(|l| l.starts_with(&format!("{leaf} = ")))
                    .map_or(0, |n| n + 1);
                prop_assert_eq!(line, key_line, "{}", text);
            }
            Err(error) => {
                let message = error.to_string();
                let dotted = path.join(".");
                // A source without any credential is refused as a whole, by its name.
                let credential = ["secrets", "keys", "tenant_secrets"].contains(&leaf.as_str());
                let source = path[..path.len() - 1].join(".");
                prop_assert!(
                    message.contains(&dotted)
                        || message.contains(&leaf)
                        || (credential && message.contains(&format!("{source}:"))),
                    "the error for {dotted} = {value} does not name it: {message}"
                );
            }
            Ok(config) => {
                let rendered = serde_json::to_value(&config).unwrap_or_default();
                if let (Ok(written), Some(used)) = (
                    value
                        .parse::<i64>()
                        .map(Value::from)
                        .or_else(|_| value.parse::<bool>().map(Value::from)),
                    lookup(&rendered, &path),
                ) {
                    prop_assert_eq!(
                        used,
                        &written,
                        "{} = {} was accepted but {} is in force",
                        path.join("."),
                        value,
                        used
                    );
                }
            }
        }
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

/// TOML-ish text: fragments of real configuration, known and unknown keys, brackets,
/// quotes, `${` and junk in any order. Never a panic; an error is non-empty, and a syntax
/// error's position is inside the text.
#[test]
fn any_text_is_a_config_or_an_error_with_a_position() {
    let keys: Vec<String> = known_keys().iter().map(|k| k.join(".")).collect();
    let fragment = prop_oneof![
        prop::sample::select(keys).prop_map(|k| format!("{k} = ")),
        toml_value(),
        prop::sample::select(vec![
            "\n",
            "[",
            "]",
            "[[",
            "]]",
            "=",
            "\"",
            "'",
            "#",
            "${",
            "}",
            ".",
            " ",
            "[storage]\n",
            "[http]\n",
            "[sources.shopify]\n",
            "[sources.\"a b\"]\n",
            "[sources.x.settings]\n",
            "secrets = [\"x\"]\n",
            "listen = ",
            "url = ",
            "\u{feff}",
            "\r\n",
            "\t",
        ])
        .prop_map(str::to_owned),
        "[a-z_]{1,10} = ",
        any::<String>(),
    ];
    let inputs = prop::collection::vec(fragment, 0..24).prop_map(|parts| parts.concat());
    let result = runner(1024).run(&inputs, |text| {
        match load(&text) {
            Ok(_) => {}
            Err(error) => {
                let message = error.to_string();
                prop_assert!(!message.trim().is_empty());
                if let ConfigError::Syntax { line, column, .. }
                | ConfigError::Shape { line, column, .. } = &error
                {
                    let lines = text.split('\n').count();
                    prop_assert!(
                        *line >= 1 && *line <= lines + 1,
                        "line {line} of a {lines}-line text: {message}"
                    );
                    let line_len = text
                        .split('\n')
                        .nth(line.saturating_sub(1))
                        .map_or(0, |l| l.chars().count());
                    prop_assert!(
                        *column >= 1 && *column <= line_len + 1,
                        "column {column} of a {line_len}-character line: {message}"
                    );
                }
            }
        }
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

/// A password written into a service URL, percent-encoded or not (operators paste them
/// as they are), never appears in the masked URL nor in the configuration the gateway
/// prints (`hookgate config`, the admin API).
#[test]
fn a_url_password_never_shows_masked() {
    let scheme = prop::sample::select(vec!["postgres", "redis", "nats", "rediss"]);
    // Printable ASCII without a space; the marker makes the password distinctive.
    let password = "[!-~]{0,16}".prop_map(|p| format!("Pw{p}Zq"));
    let user = prop::option::of("[a-z0-9_.-]{0,8}");
    let tail = prop::sample::select(vec!["", "/db", "/0", "/db?sslmode=disable", "?x=1", "#f"]);
    let host = prop::sample::select(vec!["h", "db.local:5432", "127.0.0.1:6379", "[::1]:4222"]);
    let inputs = (scheme, user, password, host, tail);
    let result = runner(1024).run(&inputs, |(scheme, user, password, host, tail)| {
        let user = user.unwrap_or_default();
        let url = format!("{scheme}://{user}:{password}@{host}{tail}");
        let masked = ServiceUrl::new(url.clone()).masked();
        prop_assert!(
            !masked.contains(&password),
            "{url} masked as {masked} shows the password"
        );
        // The host still shows, so the operator can tell which server is meant.
        prop_assert!(
            masked.contains(host),
            "{url} masked as {masked} lost the host"
        );
        let text = format!(
            "[storage]\nurl = {}\n[dedupe]\nurl = {}\n",
            serde_json::to_string(&url).unwrap_or_default(),
            serde_json::to_string(&url).unwrap_or_default(),
        );
        if let Ok(config) = Config::from_toml(&text, Path::new("hookgate.toml"), &|_: &str| None) {
            let printed = config.redacted_toml().unwrap_or_default();
            prop_assert!(!printed.contains(&password), "printed config: {printed}");
            if let Err(error) = config.validate() {
                let message = error.to_string();
                prop_assert!(!message.contains(&password), "error: {message}");
            }
        }
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}
