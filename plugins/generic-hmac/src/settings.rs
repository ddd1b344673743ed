//! The source's `[sources.<name>.settings]`, read and checked as a whole on every call:
//! the plugin keeps no state, and a bad setting must be named, never guessed around.

use hookgate_plugin_sdk::{HashAlgorithm, SecretEncoding, Settings};

use crate::pointer::Pointer;
use crate::template::{self, Piece};

/// Every setting the plugin reads; any other key is refused, so a typo (`signature_heder`)
/// is reported instead of silently falling back to a default.
pub(crate) const KEYS: &[&str] = &[
    "signature_header",
    "signature_prefix",
    "signature_separator",
    "signature_encoding",
    "algorithm",
    "secret_encoding",
    "secret_prefix",
    "signed_content",
    "timestamp_header",
    "timestamp_tolerance_seconds",
    "timestamp_unit",
    "event_type",
    "idempotency_key",
    "tenant",
    "subject",
    "occurred_at",
];

/// Five minutes, the tolerance most senders that sign a timestamp recommend (Stripe,
/// Slack, Standard Webhooks).
pub(crate) const DEFAULT_TOLERANCE_SECONDS: u64 = 300;

/// A setting that cannot be used, with the key it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SettingError {
    pub(crate) key: String,
    pub(crate) why: String,
}

impl std::fmt::Display for SettingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "setting {}: {}", self.key, self.why)
    }
}

fn error(key: &str, why: impl Into<String>) -> SettingError {
    SettingError {
        key: key.to_owned(),
        why: why.into(),
    }
}

/// How the signature travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Hex,
    Base64,
}

/// The unit of the timestamp header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    Seconds,
    Milliseconds,
}

/// How a configured secret holds the key; the prefix is borrowed when handed to the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SecretKey {
    Raw,
    Base64(String),
    Hex(String),
}

impl SecretKey {
    pub(crate) fn encoding(&self) -> SecretEncoding<'_> {
        match self {
            Self::Raw => SecretEncoding::Raw,
            Self::Base64(prefix) => SecretEncoding::Base64(prefix),
            Self::Hex(prefix) => SecretEncoding::Hex(prefix),
        }
    }
}

/// One piece of the signed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Signed {
    Text(String),
    Body,
    Url,
    Header(String),
}

/// One piece of a value read from the delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    Text(String),
    Header(String),
    Json(Pointer),
}

/// A value setting: where the value comes from, and the setting's text for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Value {
    pub(crate) text: String,
    pub(crate) pieces: Vec<Source>,
}

impl Value {
    pub(crate) fn uses_json(&self) -> bool {
        self.pieces.iter().any(|p| matches!(p, Source::Json(_)))
    }
}

/// The verification half of the settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VerifyConfig {
    pub(crate) signature_header: String,
    pub(crate) signature_prefix: String,
    pub(crate) signature_separator: Option<String>,
    pub(crate) encoding: Encoding,
    pub(crate) algorithm: HashAlgorithm,
    pub(crate) secret: SecretKey,
    pub(crate) signed: Vec<Signed>,
    pub(crate) timestamp: Option<TimestampCheck>,
}

/// The optional freshness check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TimestampCheck {
    pub(crate) header: String,
    pub(crate) tolerance_seconds: u64,
    pub(crate) unit: Unit,
}

/// The mapping half of the settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MapConfig {
    pub(crate) event_type: Value,
    pub(crate) idempotency_key: Option<Value>,
    pub(crate) tenant: Option<Value>,
    pub(crate) subject: Option<Value>,
    pub(crate) occurred_at: Option<Value>,
}

impl MapConfig {
    pub(crate) fn uses_json(&self) -> bool {
        std::iter::once(&self.event_type)
            .chain(&self.idempotency_key)
            .chain(&self.tenant)
            .chain(&self.subject)
            .chain(&self.occurred_at)
            .any(Value::uses_json)
    }
}

/// Every setting, checked: what `verify` and `map` each need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Config {
    pub(crate) verify: VerifyConfig,
    pub(crate) map: MapConfig,
}

impl Config {
    /// Reads and checks every setting. Both halves are checked on every call, so a
    /// mistake in the mapping settings is refused by `verify` already, at the first
    /// delivery, rather than leaving every webhook stored as failed.
    pub(crate) fn parse(settings: &Settings) -> Result<Self, SettingError> {
        check_keys(settings)?;
        Ok(Self {
            verify: verify_config(settings)?,
            map: map_config(settings)?,
        })
    }
}

fn check_keys(settings: &Settings) -> Result<(), SettingError> {
    let mut seen: Vec<&str> = Vec::new();
    for (key, _) in settings.iter() {
        if !KEYS.contains(&key) {
            return Err(error(
                key,
                format!("unknown; generic-hmac reads {}", KEYS.join(", ")),
            ));
        }
        if seen.contains(&key) {
            return Err(error(key, "given more than once"));
        }
        seen.push(key);
    }
    Ok(())
}

fn required<'a>(settings: &'a Settings, key: &str) -> Result<&'a str, SettingError> {
    match settings.get(key) {
        Some(value) if !value.trim().is_empty() => Ok(value),
        _ => Err(error(key, "required")),
    }
}

/// The value of `key` from a closed list, `default` when absent.
fn choice<T: Copy>(
    settings: &Settings,
    key: &str,
    default: T,
    options: &[(&str, T)],
) -> Result<T, SettingError> {
    let Some(value) = settings.get(key) else {
        return Ok(default);
    };
    options
        .iter()
        .find(|(name, _)| *name == value)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
            let expected = match names.as_slice() {
                [a, b] => format!("{a} or {b}"),
                _ => {
                    let (last, head) = names.split_last().unwrap_or((&"", &[]));
                    format!("{}, or {last}", head.join(", "))
                }
            };
            error(key, format!("expected {expected}, not {value:?}"))
        })
}

/// A header name as HTTP allows it (RFC 9110 `token`).
fn header_name(key: &str, name: &str) -> Result<String, SettingError> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if valid {
        Ok(name.to_owned())
    } else {
        Err(error(key, format!("{name:?} is not an HTTP header name")))
    }
}

fn verify_config(settings: &Settings) -> Result<VerifyConfig, SettingError> {
    let signature_header = header_name(
        "signature_header",
        required(settings, "signature_header")?.trim(),
    )?;
    let signature_prefix = settings.get("signature_prefix").unwrap_or("").to_owned();
    let signature_separator = match settings.get("signature_separator") {
        None => None,
        Some("") => {
            return Err(error(
                "signature_separator",
                "empty; leave it out when the header holds one signature",
            ));
        }
        Some(sep) => Some(sep.to_owned()),
    };
    let encoding = choice(
        settings,
        "signature_encoding",
        Encoding::Hex,
        &[("hex", Encoding::Hex), ("base64", Encoding::Base64)],
    )?;
    let algorithm = choice(
        settings,
        "algorithm",
        HashAlgorithm::Sha256,
        &[
            ("sha256", HashAlgorithm::Sha256),
            ("sha1", HashAlgorithm::Sha1),
            ("sha512", HashAlgorithm::Sha512),
        ],
    )?;

    #[derive(Clone, Copy)]
    enum Kind {
        Raw,
        Base64,
        Hex,
    }
    let kind = choice(
        settings,
        "secret_encoding",
        Kind::Raw,
        &[
            ("raw", Kind::Raw),
            ("base64", Kind::Base64),
            ("hex", Kind::Hex),
        ],
    )?;
    let prefix = settings.get("secret_prefix");
    let secret = match (kind, prefix) {
        (Kind::Raw, Some(_)) => {
            return Err(error(
                "secret_prefix",
                "only used with secret_encoding base64 or hex (a raw secret is used whole)",
            ));
        }
        (Kind::Raw, None) => SecretKey::Raw,
        (Kind::Base64, p) => SecretKey::Base64(p.unwrap_or("").to_owned()),
        (Kind::Hex, p) => SecretKey::Hex(p.unwrap_or("").to_owned()),
    };

    let signed = signed_content(settings.get("signed_content").unwrap_or("{body}"))
        .map_err(|why| error("signed_content", why))?;
    let timestamp = timestamp_check(settings, &signed)?;

    Ok(VerifyConfig {
        signature_header,
        signature_prefix,
        signature_separator,
        encoding,
        algorithm,
        secret,
        signed,
        timestamp,
    })
}

/// `signed_content` as message parts: `{body}`, `{url}`, `{header:Name}` and text.
pub(crate) fn signed_content(text: &str) -> Result<Vec<Signed>, String> {
    let mut parts = Vec::new();
    for piece in template::parse(text)? {
        parts.push(match piece {
            Piece::Text(text) => Signed::Text(text),
            Piece::Placeholder("body") => Signed::Body,
            Piece::Placeholder("url") => Signed::Url,
            Piece::Placeholder(other) => match other.strip_prefix("header:") {
                Some(name) => Signed::Header(
                    header_name("signed_content", name).map_err(|e| e.why)?,
                ),
                None => {
                    return Err(format!(
                        "unknown placeholder {{{other}}}; expected {{body}}, {{url}} or {{header:Name}}"
                    ));
                }
            },
        });
    }
    // A MAC that leaves the body out would let anyone replay its headers with a body of
    // their own.
    if !parts.contains(&Signed::Body) {
        return Err("must contain {body}: a signature that does not cover the body does not authenticate it".into());
    }
    Ok(parts)
}

fn timestamp_check(
    settings: &Settings,
    signed: &[Signed],
) -> Result<Option<TimestampCheck>, SettingError> {
    let Some(header) = settings.get("timestamp_header") else {
        for key in ["timestamp_tolerance_seconds", "timestamp_unit"] {
            if settings.get(key).is_some() {
                return Err(error(key, "only used with timestamp_header"));
            }
        }
        return Ok(None);
    };
    let header = header_name("timestamp_header", header.trim())?;
    // A timestamp the signature does not cover proves nothing: a replay would carry a
    // fresh one.
    let covered = signed
        .iter()
        .any(|part| matches!(part, Signed::Header(name) if name.eq_ignore_ascii_case(&header)));
    if !covered {
        return Err(error(
            "timestamp_header",
            format!(
                "signed_content must contain {{header:{header}}}, or the timestamp is not authenticated"
            ),
        ));
    }
    let tolerance_seconds = match settings.get("timestamp_tolerance_seconds") {
        None => DEFAULT_TOLERANCE_SECONDS,
        Some(text) => text
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|&s| s > 0)
            .ok_or_else(|| {
                // Fail closed: a typo must not turn the replay check off.
                error(
                    "timestamp_tolerance_seconds",
                    format!("expected a positive whole number of seconds, not {text:?}"),
                )
            })?,
    };
    let unit = choice(
        settings,
        "timestamp_unit",
        Unit::Seconds,
        &[("s", Unit::Seconds), ("ms", Unit::Milliseconds)],
    )?;
    Ok(Some(TimestampCheck {
        header,
        tolerance_seconds,
        unit,
    }))
}

fn map_config(settings: &Settings) -> Result<MapConfig, SettingError> {
    let optional = |key: &str, allow: Allow| -> Result<Option<Value>, SettingError> {
        settings
            .get(key)
            .map(|text| value(text, allow).map_err(|why| error(key, why)))
            .transpose()
    };
    let event_type = value(required(settings, "event_type")?, Allow::Any)
        .map_err(|why| error("event_type", why))?;
    Ok(MapConfig {
        event_type,
        idempotency_key: optional("idempotency_key", Allow::Any)?,
        tenant: optional("tenant", Allow::Any)?,
        subject: optional("subject", Allow::Any)?,
        occurred_at: optional("occurred_at", Allow::SingleField)?,
    })
}

/// What forms a value setting accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Allow {
    /// `header:Name`, `json:/pointer`, `const:text`, or a `{...}` template of them.
    Any,
    /// `header:Name` or `json:/pointer` alone (a time is not assembled from pieces).
    SingleField,
}

/// Parses a value setting.
pub(crate) fn value(text: &str, allow: Allow) -> Result<Value, String> {
    let single = if let Some(name) = text.strip_prefix("header:") {
        Some(Source::Header(header_name("", name).map_err(|e| e.why)?))
    } else if let Some(pointer) = text.strip_prefix("json:") {
        Some(Source::Json(Pointer::parse(pointer)?))
    } else if let Some(constant) = text.strip_prefix("const:") {
        if allow == Allow::SingleField {
            return Err("expected header:Name or json:/pointer".into());
        }
        if constant.is_empty() {
            return Err("const: needs a value".into());
        }
        Some(Source::Text(constant.to_owned()))
    } else {
        None
    };
    let pieces = match single {
        Some(source) => vec![source],
        None if allow == Allow::Any && text.contains('{') => template_value(text)?,
        None if allow == Allow::Any => {
            return Err(format!(
                "{text:?}: expected header:Name, json:/pointer, const:value or a template such as {{json:/type}}.{{header:X-Action}}"
            ));
        }
        None => return Err(format!("{text:?}: expected header:Name or json:/pointer")),
    };
    Ok(Value {
        text: text.to_owned(),
        pieces,
    })
}

fn template_value(text: &str) -> Result<Vec<Source>, String> {
    let mut pieces = Vec::new();
    for piece in template::parse(text)? {
        pieces.push(match piece {
            Piece::Text(text) => Source::Text(text),
            Piece::Placeholder(p) => {
                if let Some(name) = p.strip_prefix("header:") {
                    Source::Header(header_name("", name).map_err(|e| e.why)?)
                } else if let Some(pointer) = p.strip_prefix("json:") {
                    Source::Json(Pointer::parse(pointer)?)
                } else {
                    return Err(format!(
                        "unknown placeholder {{{p}}}; expected {{header:Name}} or {{json:/pointer}}"
                    ));
                }
            }
        });
    }
    if !pieces.iter().any(|p| !matches!(p, Source::Text(_))) {
        return Err(format!(
            "{text:?} has no placeholder; write const:value for a fixed value"
        ));
    }
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Settings {
        Settings::new()
            .with("signature_header", "X-Signature")
            .with("event_type", "json:/type")
    }

    fn err(settings: Settings) -> String {
        Config::parse(&settings).unwrap_err().to_string()
    }

    #[test]
    fn defaults() {
        let config = Config::parse(&base()).expect("minimal settings");
        let v = &config.verify;
        assert_eq!(v.signature_header, "X-Signature");
        assert_eq!(v.signature_prefix, "");
        assert_eq!(v.signature_separator, None);
        assert_eq!(v.encoding, Encoding::Hex);
        assert_eq!(v.algorithm, HashAlgorithm::Sha256);
        assert_eq!(v.secret, SecretKey::Raw);
        assert_eq!(v.signed, vec![Signed::Body]);
        assert_eq!(v.timestamp, None);
        let m = &config.map;
        assert_eq!(
            m.event_type.pieces,
            vec![Source::Json(Pointer::parse("/type").unwrap())]
        );
        assert_eq!(m.idempotency_key, None);
        assert_eq!(m.tenant, None);
        assert_eq!(m.subject, None);
        assert_eq!(m.occurred_at, None);
    }

    #[test]
    fn everything_set() {
        let settings = Settings::new()
            .with("signature_header", "X-Zm-Signature")
            .with("signature_prefix", "v0=")
            .with("signature_separator", ",")
            .with("signature_encoding", "base64")
            .with("algorithm", "sha512")
            .with("secret_encoding", "base64")
            .with("secret_prefix", "whsec_")
            .with(
                "signed_content",
                "v0:{header:X-Zm-Request-Timestamp}:{url}:{body}",
            )
            .with("timestamp_header", "x-zm-request-timestamp")
            .with("timestamp_tolerance_seconds", "60")
            .with("timestamp_unit", "ms")
            .with("event_type", "{header:X-Kind}.{json:/action}")
            .with("idempotency_key", "header:X-Delivery")
            .with("tenant", "json:/account/id")
            .with("subject", "json:/data/id")
            .with("occurred_at", "header:X-Sent-At");
        let config = Config::parse(&settings).expect("valid settings");
        let v = &config.verify;
        assert_eq!(v.signature_prefix, "v0=");
        assert_eq!(v.signature_separator.as_deref(), Some(","));
        assert_eq!(v.encoding, Encoding::Base64);
        assert_eq!(v.algorithm, HashAlgorithm::Sha512);
        assert_eq!(v.secret, SecretKey::Base64("whsec_".into()));
        assert_eq!(
            v.signed,
            vec![
                Signed::Text("v0:".into()),
                Signed::Header("X-Zm-Request-Timestamp".into()),
                Signed::Text(":".into()),
                Signed::Url,
                Signed::Text(":".into()),
                Signed::Body,
            ]
        );
        assert_eq!(
            v.timestamp,
            Some(TimestampCheck {
                header: "x-zm-request-timestamp".into(),
                tolerance_seconds: 60,
                unit: Unit::Milliseconds,
            })
        );
        assert_eq!(
            config.map.event_type.pieces,
            vec![
                Source::Header("X-Kind".into()),
                Source::Text(".".into()),
                Source::Json(Pointer::parse("/action").unwrap()),
            ]
        );
        assert!(config.map.uses_json());
    }

    #[test]
    fn hex_secret_with_and_without_prefix() {
        let config = Config::parse(&base().with("secret_encoding", "hex")).unwrap();
        assert_eq!(config.verify.secret, SecretKey::Hex(String::new()));
        let config = Config::parse(
            &base()
                .with("secret_encoding", "hex")
                .with("secret_prefix", "key_"),
        )
        .unwrap();
        assert_eq!(config.verify.secret, SecretKey::Hex("key_".into()));
    }

    #[test]
    fn the_brief_example_message() {
        assert_eq!(
            err(base().with("signature_encoding", "base32")),
            "setting signature_encoding: expected hex or base64, not \"base32\""
        );
        assert_eq!(
            err(base().with("algorithm", "md5")),
            "setting algorithm: expected sha256, sha1, or sha512, not \"md5\""
        );
        assert_eq!(
            err(base().with("secret_encoding", "utf8")),
            "setting secret_encoding: expected raw, base64, or hex, not \"utf8\""
        );
        assert_eq!(
            err(base()
                .with("timestamp_header", "X-T")
                .with("signed_content", "{header:X-T}{body}")
                .with("timestamp_unit", "us")),
            "setting timestamp_unit: expected s or ms, not \"us\""
        );
    }

    #[test]
    fn unknown_and_repeated_keys() {
        let e = err(base().with("signature_heder", "x"));
        assert!(
            e.starts_with(
                "setting signature_heder: unknown; generic-hmac reads signature_header, "
            ),
            "{e}"
        );
        assert_eq!(
            err(base().with("event_type", "json:/kind")),
            "setting event_type: given more than once"
        );
    }

    #[test]
    fn required_settings() {
        assert_eq!(
            err(Settings::new().with("event_type", "json:/type")),
            "setting signature_header: required"
        );
        assert_eq!(
            err(Settings::new().with("signature_header", "X-S")),
            "setting event_type: required"
        );
        assert_eq!(
            err(Settings::new()
                .with("signature_header", " ")
                .with("event_type", "json:/type")),
            "setting signature_header: required"
        );
    }

    #[test]
    fn header_names_must_be_tokens() {
        for bad in ["X Sig", "X:Sig", "X-Sig\u{e9}"] {
            let e = err(Settings::new()
                .with("signature_header", bad)
                .with("event_type", "json:/t"));
            assert_eq!(
                e,
                format!("setting signature_header: {bad:?} is not an HTTP header name")
            );
        }
        let e = err(base()
            .with("timestamp_header", "X Ts")
            .with("signed_content", "{body}"));
        assert_eq!(
            e,
            "setting timestamp_header: \"X Ts\" is not an HTTP header name"
        );
        let e = err(base().with("tenant", "header:X Shop"));
        assert_eq!(e, "setting tenant: \"X Shop\" is not an HTTP header name");
        let e = err(base().with("signed_content", "{header:}{body}"));
        assert_eq!(e, "setting signed_content: \"\" is not an HTTP header name");
    }

    #[test]
    fn signed_content_errors() {
        let e = err(base().with("signed_content", "{url}"));
        assert!(
            e.starts_with("setting signed_content: must contain {body}"),
            "{e}"
        );
        let e = err(base().with("signed_content", "{body}{method}"));
        assert_eq!(
            e,
            "setting signed_content: unknown placeholder {method}; expected {body}, {url} or {header:Name}"
        );
        let e = err(base().with("signed_content", "{body"));
        assert!(
            e.starts_with("setting signed_content: `{` at byte 0 is not closed"),
            "{e}"
        );
    }

    #[test]
    fn signed_content_forms() {
        assert_eq!(signed_content("{body}"), Ok(vec![Signed::Body]));
        assert_eq!(
            signed_content("{{{body}}}"),
            Ok(vec![
                Signed::Text("{".into()),
                Signed::Body,
                Signed::Text("}".into())
            ])
        );
        assert_eq!(
            signed_content("{header:X-Id}.{header:X-Ts}.{body}"),
            Ok(vec![
                Signed::Header("X-Id".into()),
                Signed::Text(".".into()),
                Signed::Header("X-Ts".into()),
                Signed::Text(".".into()),
                Signed::Body,
            ])
        );
    }

    #[test]
    fn timestamp_settings_must_fit_together() {
        assert_eq!(
            err(base().with("timestamp_tolerance_seconds", "60")),
            "setting timestamp_tolerance_seconds: only used with timestamp_header"
        );
        assert_eq!(
            err(base().with("timestamp_unit", "ms")),
            "setting timestamp_unit: only used with timestamp_header"
        );
        assert_eq!(
            err(base().with("timestamp_header", "X-Ts")),
            "setting timestamp_header: signed_content must contain {header:X-Ts}, or the timestamp is not authenticated"
        );
        let signed = |tolerance: &str| {
            base()
                .with("timestamp_header", "X-Ts")
                .with("signed_content", "{header:x-ts}.{body}")
                .with("timestamp_tolerance_seconds", tolerance)
        };
        assert!(
            Config::parse(&signed("1")).is_ok(),
            "header names match in any case"
        );
        for bad in ["", "0", "-5", "5m", "1.5"] {
            let e = err(signed(bad));
            assert!(
                e.starts_with(
                    "setting timestamp_tolerance_seconds: expected a positive whole number"
                ),
                "{bad:?}: {e}"
            );
        }
    }

    #[test]
    fn secret_and_separator_settings() {
        assert_eq!(
            err(base().with("secret_prefix", "whsec_")),
            "setting secret_prefix: only used with secret_encoding base64 or hex (a raw secret is used whole)"
        );
        assert_eq!(
            err(base().with("signature_separator", "")),
            "setting signature_separator: empty; leave it out when the header holds one signature"
        );
        let config = Config::parse(&base().with("signature_separator", " ")).unwrap();
        assert_eq!(config.verify.signature_separator.as_deref(), Some(" "));
    }

    #[test]
    fn value_forms() {
        let json = |p: &str| Source::Json(Pointer::parse(p).unwrap());
        assert_eq!(
            value("header:X-Event", Allow::Any).unwrap().pieces,
            vec![Source::Header("X-Event".into())]
        );
        assert_eq!(
            value("json:/event/type", Allow::Any).unwrap().pieces,
            vec![json("/event/type")]
        );
        assert_eq!(
            value("json:", Allow::Any).unwrap().pieces,
            vec![json("")],
            "the whole document"
        );
        assert_eq!(
            value("const:order.created", Allow::Any).unwrap().pieces,
            vec![Source::Text("order.created".into())]
        );
        assert_eq!(
            value("{json:/object_type}.{json:/metric}", Allow::Any)
                .unwrap()
                .pieces,
            vec![
                json("/object_type"),
                Source::Text(".".into()),
                json("/metric")
            ]
        );
        assert_eq!(
            value("{header:X-Topic}:{json:/id}", Allow::Any)
                .unwrap()
                .text,
            "{header:X-Topic}:{json:/id}"
        );
        assert_eq!(
            value("header:X-Sent-At", Allow::SingleField)
                .unwrap()
                .pieces,
            vec![Source::Header("X-Sent-At".into())]
        );
    }

    #[test]
    fn value_errors() {
        let e = value("type", Allow::Any).unwrap_err();
        assert!(
            e.starts_with(
                "\"type\": expected header:Name, json:/pointer, const:value or a template"
            ),
            "{e}"
        );
        assert_eq!(
            value("json:type", Allow::Any).unwrap_err(),
            "JSON pointer \"type\" must start with `/`"
        );
        assert_eq!(
            value("json:/a~2", Allow::Any).unwrap_err(),
            "JSON pointer \"/a~2\": `~` must be followed by 0 or 1"
        );
        assert_eq!(
            value("const:", Allow::Any).unwrap_err(),
            "const: needs a value"
        );
        assert_eq!(
            value("header:", Allow::Any).unwrap_err(),
            "\"\" is not an HTTP header name"
        );
        assert_eq!(
            value("{body}", Allow::Any).unwrap_err(),
            "unknown placeholder {body}; expected {header:Name} or {json:/pointer}"
        );
        assert_eq!(
            value("{{literal}}", Allow::Any).unwrap_err(),
            "\"{{literal}}\" has no placeholder; write const:value for a fixed value"
        );
        assert_eq!(
            value("const:x", Allow::SingleField).unwrap_err(),
            "expected header:Name or json:/pointer"
        );
        assert_eq!(
            value("{json:/a}{json:/b}", Allow::SingleField).unwrap_err(),
            "\"{json:/a}{json:/b}\": expected header:Name or json:/pointer"
        );
        let e = err(base().with("occurred_at", "const:now"));
        assert_eq!(
            e,
            "setting occurred_at: expected header:Name or json:/pointer"
        );
        let e = err(base().with("tenant", "{json:/a"));
        assert!(
            e.starts_with("setting tenant: `{` at byte 0 is not closed"),
            "{e}"
        );
    }

    #[test]
    fn uses_json_only_when_a_pointer_is_configured() {
        let headers_only = Settings::new()
            .with("signature_header", "X-S")
            .with("event_type", "header:X-Event")
            .with("idempotency_key", "header:X-Id");
        assert!(!Config::parse(&headers_only).unwrap().map.uses_json());
        assert!(
            Config::parse(&headers_only.with("subject", "json:/id"))
                .unwrap()
                .map
                .uses_json()
        );
    }
}
