//! hookgate source plugin for senders that sign with an HMAC, configured by the source's
//! settings alone: which header holds the signature and how it is written, what message
//! is signed (`signed_content`, a template of the body, headers and the public URL), an
//! optional timestamp check, and where the event type, idempotency key, tenant, subject
//! and occurrence time come from (headers or JSON pointers into the body).
//!
//! Settings are checked on every call: `verify` refuses a delivery with
//! `rejected("setting <key>: <why>")` when one is wrong, which the gateway logs and counts.

use hookgate_plugin_sdk::{
    DomainEvent, HashAlgorithm, KeyHandle, MapError, MapOutcome, Mapping, Metadata, Part, Request,
    SecretHandle, Settings, SourcePlugin, Timestamp, Verified, VerifyError,
};
use serde_json::value::RawValue;

#[path = "../../fields.rs"]
#[allow(dead_code, reason = "the shared file's id helpers serve other plugins")]
mod fields;
mod pointer;
mod settings;
mod template;

use settings::{Config, Encoding, Signed, Source, TimestampCheck, Unit, Value, VerifyConfig};

/// The generic HMAC source plugin.
pub struct GenericHmac;

hookgate_plugin_sdk::export_plugin!(GenericHmac);

/// The longest text the host accepts in a key, tenant or subject (longer fails the
/// whole mapping, so it is refused here with a clearer message).
const MAX_FIELD: usize = 1024;

/// The longest event type the host accepts.
const MAX_EVENT_TYPE: usize = 255;

/// Latest Unix time the host can turn into a date (9999-12-31T23:59:59Z).
const MAX_UNIX_SECONDS: i64 = 253_402_300_799;

impl SourcePlugin for GenericHmac {
    fn metadata() -> Metadata {
        Metadata {
            name: "generic-hmac".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Any sender that signs with an HMAC, configured by the source's settings"
                .into(),
            // The plugin knows no sender, so no documented retry window: a day, the
            // gateway's own default. Operators set the sender's window per source with
            // `dedupe_ttl_hours` (Square retries for 72 hours, Customer.io for 7 days).
            retry_window_hours: 24,
        }
    }

    fn tenant_hint(req: &Request, settings: &Settings) -> Option<String> {
        // Read before verification to pick per-tenant secrets; a bad setting or body is
        // reported by `verify` and `map`, not here.
        let config = Config::parse(settings).ok()?;
        let tenant = config.map.tenant.as_ref()?;
        let doc = if tenant.uses_json() {
            Some(parse_body(req).ok()?)
        } else {
            None
        };
        text_value(tenant, "tenant", req, doc).ok().flatten()
    }

    fn verify(
        req: &Request,
        secrets: &[SecretHandle],
        _keys: &[KeyHandle],
        settings: &Settings,
    ) -> Result<Verified, VerifyError> {
        // The only channel for a configuration mistake at request time: the gateway logs
        // the refusal with its reason.
        let config = Config::parse(settings).map_err(|e| VerifyError::Rejected(e.to_string()))?;
        let v = &config.verify;
        let candidates = candidates(req, v)?;
        let timestamp = v
            .timestamp
            .as_ref()
            .map(|check| read_timestamp(req, check).map(|t| (check, t)))
            .transpose()?;

        // A part the host cannot find fails the match silently; say what is missing.
        for part in &v.signed {
            match part {
                Signed::Header(name) if req.header(name).is_none() => {
                    return Err(VerifyError::MissingSignature(format!(
                        "no {name} header, which signed_content covers"
                    )));
                }
                Signed::Url if req.public_url().is_none() => {
                    return Err(VerifyError::Rejected(
                        "signed_content has {url} but the source has no public_url".into(),
                    ));
                }
                _ => {}
            }
        }
        let message: Vec<Part<'_>> = v
            .signed
            .iter()
            .map(|part| match part {
                Signed::Text(text) => Part::Literal(text.as_bytes()),
                Signed::Body => Part::Body,
                Signed::Url => Part::PublicUrl,
                Signed::Header(name) => Part::Header(name),
            })
            .collect();
        let handle = hookgate_plugin_sdk::hmac_verify_encoded(
            req,
            secrets,
            v.secret.encoding(),
            v.algorithm,
            &message,
            &candidates,
        )
        .ok_or_else(|| {
            VerifyError::Mismatch(format!(
                "no configured secret signs this delivery as signed_content says ({} candidate{})",
                candidates.len(),
                if candidates.len() == 1 { "" } else { "s" }
            ))
        })?;

        // Checked after the signature, so `expired` only ever describes an authentic
        // delivery; a timestamp too far in the future is refused as well.
        if let Some((check, at)) = timestamp {
            let now = hookgate_plugin_sdk::now_unix_seconds();
            let age = now.abs_diff(at);
            if age > check.tolerance_seconds {
                return Err(VerifyError::Expired(format!(
                    "{} {at} is {age} s from now, tolerance {} s",
                    check.header, check.tolerance_seconds
                )));
            }
        }
        Ok(Verified::by(handle))
    }

    fn map(req: &Request, settings: &Settings) -> Result<MapOutcome, MapError> {
        let config = Config::parse(settings).map_err(|e| MapError::Other(e.to_string()))?;
        let m = &config.map;
        // The body is parsed only when a setting points into it: a sender whose event
        // type travels in a header may post any body.
        let doc = if m.uses_json() {
            Some(parse_body(req)?)
        } else {
            None
        };

        let raw_type = text_value(&m.event_type, "event_type", req, doc)?.ok_or_else(|| {
            MapError::MissingField(format!(
                "event_type: {} is absent or empty",
                m.event_type.text
            ))
        })?;
        let event_type = event_type(&raw_type).ok_or_else(|| {
            MapError::UnsupportedTopic(format!(
                "event type {raw_type:?} (from {}) is not dot-separated tokens of letters, digits, `_` and `-`",
                m.event_type.text
            ))
        })?;

        let idempotency_key = optional(m.idempotency_key.as_ref(), "idempotency_key", req, doc)?;
        if idempotency_key.is_none() && m.idempotency_key.is_some() {
            hookgate_plugin_sdk::debug!(
                "idempotency_key is absent from this delivery: the body's SHA-256 stands in"
            );
        }
        let tenant = optional(m.tenant.as_ref(), "tenant", req, doc)?;
        let subject = optional(m.subject.as_ref(), "subject", req, doc)?;
        let occurred_at = match &m.occurred_at {
            Some(value) => occurred_at(value, req, doc)?,
            None => None,
        };

        Ok(MapOutcome::Events(Mapping {
            idempotency_key,
            tenant,
            topic: event_type.clone(),
            occurred_at,
            events: vec![DomainEvent {
                event_type,
                subject,
                data: None,
            }],
        }))
    }
}

/// The well-formed signatures the header holds: split at the separator, trimmed, the
/// prefix removed (items without it are another scheme's and skipped, as PagerDuty's
/// and Stripe's libraries do), decoded, and of the algorithm's length.
fn candidates(req: &Request, v: &VerifyConfig) -> Result<Vec<Vec<u8>>, VerifyError> {
    let name = &v.signature_header;
    let header = req
        .header(name)
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .ok_or_else(|| VerifyError::MissingSignature(format!("no {name} header")))?;
    let items: Vec<&str> = match &v.signature_separator {
        Some(separator) => header.split(separator.as_str()).collect(),
        None => vec![header],
    };
    let mac_len = match v.algorithm {
        HashAlgorithm::Sha1 => 20,
        HashAlgorithm::Sha256 => 32,
        HashAlgorithm::Sha512 => 64,
    };
    let mut prefixed = 0usize;
    let mut macs = Vec::new();
    for item in items {
        let Some(signature) = item.trim().strip_prefix(v.signature_prefix.as_str()) else {
            continue;
        };
        if signature.is_empty() {
            continue;
        }
        prefixed += 1;
        let decoded = match v.encoding {
            Encoding::Hex => hookgate_plugin_sdk::hex_decode(signature),
            Encoding::Base64 => hookgate_plugin_sdk::base64_decode(signature),
        };
        if let Some(mac) = decoded.filter(|mac| mac.len() == mac_len) {
            macs.push(mac);
        }
    }
    if prefixed == 0 {
        return Err(VerifyError::MissingSignature(
            if v.signature_prefix.is_empty() {
                format!("no signature in {name}")
            } else {
                format!(
                    "no signature in {name} starts with {:?}",
                    v.signature_prefix
                )
            },
        ));
    }
    if macs.is_empty() {
        let encoding = match v.encoding {
            Encoding::Hex => "hex",
            Encoding::Base64 => "base64",
        };
        return Err(VerifyError::MalformedSignature(format!(
            "no signature in {name} is the {encoding} of {mac_len} bytes"
        )));
    }
    Ok(macs)
}

/// The timestamp header in Unix seconds.
fn read_timestamp(req: &Request, check: &TimestampCheck) -> Result<i64, VerifyError> {
    let name = &check.header;
    let text = req
        .header(name)
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| VerifyError::MissingSignature(format!("no {name} header")))?;
    let value = Some(text)
        .filter(|t| t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse::<i64>().ok())
        .ok_or_else(|| VerifyError::MalformedSignature(format!("{name} is not a whole number")))?;
    Ok(match check.unit {
        Unit::Seconds => value,
        Unit::Milliseconds => value / 1000,
    })
}

fn parse_body(req: &Request) -> Result<&RawValue, MapError> {
    // `from_str`, not `from_slice`: the slice reader lets invalid UTF-8 through in strings
    // it skips, and the body becomes the JSON `data` of the event unchanged.
    let text = std::str::from_utf8(req.body())
        .map_err(|e| MapError::MalformedPayload(format!("body is not UTF-8: {e}")))?;
    serde_json::from_str(text)
        .map_err(|e| MapError::MalformedPayload(format!("body is not JSON: {e}")))
}

/// A value setting read from the delivery as text; `None` when any piece of it is absent
/// (a missing header or member, JSON `null`, an empty string).
fn text_value(
    value: &Value,
    key: &str,
    req: &Request,
    doc: Option<&RawValue>,
) -> Result<Option<String>, MapError> {
    let mut out = String::new();
    for piece in &value.pieces {
        let text = match piece {
            Source::Text(text) => Some(text.clone()),
            Source::Header(name) => req
                .header(name)
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(str::to_owned),
            Source::Json(pointer) => {
                let doc =
                    doc.ok_or_else(|| MapError::Other(format!("{key}: the body was not read")))?;
                match pointer.find(doc).map_err(MapError::MalformedPayload)? {
                    Some(raw) => scalar_text(raw).map_err(|kind| {
                        MapError::MalformedPayload(format!(
                            "{key}: {} is {kind}, not a string or a number",
                            value.text
                        ))
                    })?,
                    None => None,
                }
            }
        };
        match text {
            Some(text) => out.push_str(&text),
            None => return Ok(None),
        }
    }
    Ok(Some(out))
}

/// A JSON scalar as text: a string unescaped, a number exactly as written (every digit
/// kept); `None` for `null` and `""`; the kind of anything else as the error.
fn scalar_text(raw: &RawValue) -> Result<Option<String>, &'static str> {
    let text = raw.get().trim();
    match text.as_bytes().first() {
        Some(b'"') => serde_json::from_str::<String>(text)
            .map(|s| Some(s).filter(|s| !s.is_empty()))
            .map_err(|_| "an invalid string"),
        Some(b'-' | b'0'..=b'9') => Ok(Some(text.to_owned())),
        Some(b'n') => Ok(None),
        Some(b't' | b'f') => Err("a boolean"),
        Some(b'{') => Err("an object"),
        Some(b'[') => Err("an array"),
        _ => Err("not a JSON value"),
    }
}

/// An optional text value, checked as the host will check it.
fn optional(
    value: Option<&Value>,
    key: &str,
    req: &Request,
    doc: Option<&RawValue>,
) -> Result<Option<String>, MapError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let text = text_value(value, key, req, doc)?;
    if let Some(text) = &text {
        if text.len() > MAX_FIELD {
            return Err(MapError::MalformedPayload(format!(
                "{key} ({}) is longer than {MAX_FIELD} bytes",
                value.text
            )));
        }
        if text.chars().any(char::is_control) {
            return Err(MapError::MalformedPayload(format!(
                "{key} ({}) contains control characters",
                value.text
            )));
        }
    }
    Ok(text)
}

/// The event type as a NATS subject: ASCII lower case, `/` read as `.` (a path-like type
/// is a hierarchy in both), and then nothing but dot-separated tokens of `[a-z0-9_-]`.
fn event_type(raw: &str) -> Option<String> {
    let normal: String = raw
        .chars()
        .map(|c| {
            if c == '/' {
                '.'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect();
    let valid = normal.len() <= MAX_EVENT_TYPE
        && normal.split('.').all(|token| {
            !token.is_empty()
                && token
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        });
    valid.then_some(normal)
}

/// `occurred_at`: Unix seconds (a JSON integer or a string of digits) or RFC 3339 text.
/// Anything else is logged and ignored: the receive time stands in, and the delivery is
/// not failed for a timestamp.
fn occurred_at(
    value: &Value,
    req: &Request,
    doc: Option<&RawValue>,
) -> Result<Option<Timestamp>, MapError> {
    let Some(text) = text_value(value, "occurred_at", req, doc)? else {
        return Ok(None);
    };
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(seconds) = text.parse::<i64>()
            && seconds <= MAX_UNIX_SECONDS
        {
            return Ok(Some(Timestamp::UnixSeconds(seconds)));
        }
    } else if fields::is_rfc3339(&text) {
        return Ok(Some(Timestamp::Rfc3339(text)));
    }
    hookgate_plugin_sdk::warn!(
        "ignoring occurred_at {:?} from {}: neither Unix seconds nor RFC 3339",
        truncate(&text, 64),
        value.text
    );
    Ok(None)
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests;
