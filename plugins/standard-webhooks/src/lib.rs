//! hookgate source plugin for Standard Webhooks
//! (<https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md>):
//! checks `webhook-signature` (`v1` HMAC-SHA256 and `v1a` Ed25519 over
//! `{id}.{timestamp}.{body}`, timestamp tolerance), also in Svix's `svix-*` spelling, and
//! maps each message to one domain event of its `type`.

use std::borrow::Cow;

use hookgate_plugin_sdk::{
    DomainEvent, HashAlgorithm, KeyHandle, MapError, MapOutcome, Mapping, Metadata, Part, Request,
    SecretEncoding, SecretHandle, Settings, SignatureAlgorithm, SourcePlugin, Timestamp, Verified,
    VerifyError,
};
use serde::Deserialize;
use serde_json::value::RawValue;

#[path = "../../fields.rs"]
mod fields;
#[path = "../../json_object.rs"]
mod json_object;

use json_object::Object;

/// The Standard Webhooks source plugin.
pub struct StandardWebhooks;

hookgate_plugin_sdk::export_plugin!(StandardWebhooks);

/// The reference libraries' tolerance (`WEBHOOK_TOLERANCE_IN_SECONDS = 5 * 60`), applied
/// to timestamps in the past and in the future alike.
const DEFAULT_TOLERANCE_SECONDS: u64 = 300;

/// Length of an HMAC-SHA256 (`v1`).
const MAC_LEN: usize = 32;

/// Length of an Ed25519 signature (`v1a`).
const ED25519_LEN: usize = 64;

/// At most this many `v1a` signatures of one header are checked. Each costs the host an
/// Ed25519 verification per configured key, and the header is read before anything is
/// authenticated; a sender rotating keys sends two or three.
const MAX_V1A: usize = 8;

/// The gateway refuses longer event types (they become NATS subject tokens).
const MAX_EVENT_TYPE: usize = 255;

/// The three headers of a message, in one spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Headers {
    id: &'static str,
    timestamp: &'static str,
    signature: &'static str,
}

/// The spec's own spelling: "All of the headers should be prefixed with `webhook-`".
const STANDARD: Headers = Headers {
    id: "webhook-id",
    timestamp: "webhook-timestamp",
    signature: "webhook-signature",
};

/// Svix's spelling of the same scheme, the default for its customers
/// (<https://docs.svix.com/receiving/verifying-payloads/how-manual>: "`svix-id`,
/// `svix-timestamp`, `svix-signature` ... The Svix libraries support both").
const SVIX: Headers = Headers {
    id: "svix-id",
    timestamp: "svix-timestamp",
    signature: "svix-signature",
};

/// The spelling a delivery uses: the one whose signature header it carries, `webhook-`
/// first. All three headers are then read in that spelling, so a delivery is never
/// checked with the id of one spelling and the timestamp of the other.
fn headers_of(req: &Request) -> Option<Headers> {
    [STANDARD, SVIX].into_iter().find(|h| {
        req.header(h.signature)
            .is_some_and(|value| !value.trim().is_empty())
    })
}

/// The usable signatures of a `webhook-signature` header.
struct Signatures {
    /// `v1`: HMAC-SHA256 under a `whsec_` secret.
    v1: Vec<Vec<u8>>,
    /// `v1a`: Ed25519 under a `whpk_` public key.
    v1a: Vec<Vec<u8>>,
}

/// Parses the space-delimited list of `{version},{base64}` entries. Entries of other
/// versions, and entries that are not `version,signature` at all, are skipped as the
/// reference libraries skip them; a `v1`/`v1a` entry that does not decode to a signature
/// of the right length can never match and is skipped too.
fn parse_signatures(header: &str) -> Result<Signatures, VerifyError> {
    let mut known_version_seen = false;
    let mut signatures = Signatures {
        v1: Vec::new(),
        v1a: Vec::new(),
    };
    for entry in header.split_ascii_whitespace() {
        let Some((version, encoded)) = entry.split_once(',') else {
            continue;
        };
        let decode = |len: usize| {
            hookgate_plugin_sdk::base64_decode(encoded).filter(|signature| signature.len() == len)
        };
        match version {
            "v1" => {
                known_version_seen = true;
                signatures.v1.extend(decode(MAC_LEN));
            }
            "v1a" => {
                known_version_seen = true;
                if signatures.v1a.len() < MAX_V1A {
                    signatures.v1a.extend(decode(ED25519_LEN));
                }
            }
            _ => {}
        }
    }
    if !known_version_seen {
        return Err(VerifyError::MissingSignature(
            "the signature header has no v1 or v1a signature".into(),
        ));
    }
    if signatures.v1.is_empty() && signatures.v1a.is_empty() {
        return Err(VerifyError::MalformedSignature(
            "no v1 or v1a signature in the signature header is base64 of the right length".into(),
        ));
    }
    Ok(signatures)
}

/// The timestamp header: integer Unix seconds. Only digits are accepted (no sign, no
/// spaces): the reference libraries parse it as an integer, and a sender never writes
/// anything else.
fn parse_timestamp(text: &str) -> Option<i64> {
    Some(text)
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse().ok())
}

impl SourcePlugin for StandardWebhooks {
    fn metadata() -> Metadata {
        Metadata {
            name: "standard-webhooks".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description:
                "Standard Webhooks and Svix (v1 HMAC-SHA256, v1a Ed25519, timestamp tolerance)"
                    .into(),
            // The spec's example retry schedule ends 75 h 35 min 5 s after the first
            // attempt ("Deliverability and reliability", standard-webhooks.md); Svix's own
            // ends after about 27 h 35 min (https://docs.svix.com/retries). The longer one
            // covers both.
            retry_window_hours: 76,
        }
    }

    fn verify(
        req: &Request,
        secrets: &[SecretHandle],
        keys: &[KeyHandle],
        settings: &Settings,
    ) -> Result<Verified, VerifyError> {
        let tolerance =
            hookgate_plugin_sdk::timestamp_tolerance(settings, DEFAULT_TOLERANCE_SECONDS)?;
        let headers = headers_of(req).ok_or_else(|| {
            VerifyError::MissingSignature("no webhook-signature or svix-signature header".into())
        })?;
        let signatures = parse_signatures(req.header(headers.signature).unwrap_or_default())?;
        if req.header(headers.id).is_none_or(|id| id.trim().is_empty()) {
            return Err(VerifyError::MalformedSignature(format!(
                "no {} header: the id is part of the signed content",
                headers.id
            )));
        }
        let timestamp = req
            .header(headers.timestamp)
            .and_then(parse_timestamp)
            .ok_or_else(|| {
                VerifyError::MalformedSignature(format!(
                    "{} is absent or not integer Unix seconds",
                    headers.timestamp
                ))
            })?;

        // `{id}.{timestamp}.{body}`, assembled by the host. The timestamp is signed as the
        // reference libraries sign it, the integer written back in decimal, which is the
        // header itself for anything a sender writes.
        let timestamp_text = timestamp.to_string();
        let signed = [
            Part::Header(headers.id),
            Part::Literal(b"."),
            Part::Literal(timestamp_text.as_bytes()),
            Part::Literal(b"."),
            Part::Body,
        ];
        // Any entry may match (several are sent while a secret or key is rotated). The
        // secret is `whsec_<base64 of the key>`, the prefix optional as in the reference
        // libraries.
        let by_secret = (!signatures.v1.is_empty() && !secrets.is_empty())
            .then(|| {
                hookgate_plugin_sdk::hmac_verify_encoded(
                    req,
                    secrets,
                    SecretEncoding::Base64("whsec_"),
                    HashAlgorithm::Sha256,
                    &signed,
                    &signatures.v1,
                )
            })
            .flatten()
            .map(Verified::by);
        let verified = by_secret
            .or_else(|| {
                if keys.is_empty() {
                    return None;
                }
                signatures.v1a.iter().find_map(|signature| {
                    hookgate_plugin_sdk::signature_verify(
                        req,
                        keys,
                        SignatureAlgorithm::Ed25519,
                        &signed,
                        signature,
                    )
                })
                .map(Verified::by_key)
            })
            .ok_or_else(|| {
                VerifyError::Mismatch(
                    "no configured secret (v1) or public key (v1a) signs this id, timestamp and body"
                        .into(),
                )
            })?;

        // Checked after the signature, as Stripe's plugin does, so `expired` only ever
        // describes an authentic delivery; the reference libraries refuse timestamps too
        // old and too new alike. Each retry is signed afresh with its own timestamp.
        hookgate_plugin_sdk::check_timestamp(timestamp, tolerance)?;
        Ok(verified)
    }

    fn map(req: &Request, _settings: &Settings) -> Result<MapOutcome, MapError> {
        let headers =
            headers_of(req).ok_or_else(|| MapError::MissingField("webhook-signature".into()))?;
        let id = req
            .header(headers.id)
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .ok_or_else(|| MapError::MissingField(headers.id.into()))?;
        if !fields::usable(id) {
            return Err(MapError::MalformedPayload(format!(
                "{} is longer than {} bytes or holds control characters",
                headers.id,
                fields::MAX_TEXT
            )));
        }

        // `from_str`, not `from_slice`: the slice reader lets invalid UTF-8 through in
        // strings it skips, and the body becomes the JSON `data` of the event unchanged.
        let body = std::str::from_utf8(req.body())
            .map_err(|e| MapError::MalformedPayload(format!("body is not UTF-8: {e}")))?;
        let payload: Object<Payload<'_>> = serde_json::from_str(body)
            .map_err(|e| MapError::MalformedPayload(format!("body is not a JSON object: {e}")))?;
        let payload = payload.0;

        let topic = payload
            .event_type
            .filter(|t| !t.is_empty())
            .ok_or_else(|| MapError::MissingField("type".into()))?;
        let event_type = event_type(&topic)?;
        // The payload's `timestamp` is when the event occurred; the header's is when this
        // attempt was made ("Webhook metadata" in the spec), the best there is without it.
        let stated = payload
            .timestamp
            .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
            .filter(|at| fields::is_rfc3339(at));
        if payload.timestamp.is_some() && stated.is_none() {
            hookgate_plugin_sdk::warn!("ignoring the payload timestamp: not an RFC 3339 string");
        }
        let occurred_at = stated.map(Timestamp::Rfc3339).or_else(|| {
            req.header(headers.timestamp)
                .and_then(parse_timestamp)
                .map(Timestamp::UnixSeconds)
        });
        // `data.id` when `data` is an object with one (the spec's "thin payload" carries
        // exactly that); the spec does not dictate the payload, so its absence is fine.
        let subject = payload
            .data
            .and_then(|data| serde_json::from_str::<Object<IdOnly<'_>>>(data.get()).ok())
            .and_then(|data| data.0.id)
            .and_then(fields::id_text);

        Ok(MapOutcome::Events(Mapping {
            idempotency_key: Some(id.to_owned()),
            tenant: None,
            topic: topic.into_owned(),
            occurred_at,
            events: vec![DomainEvent {
                event_type,
                subject,
                data: None,
            }],
        }))
    }
}

/// The event type as hookgate publishes it: the payload's `type` in lower case. The spec
/// recommends full-stop delimited identifiers of `[a-zA-Z0-9_]`; `-` is let through too.
/// Anything else (spaces, NATS wildcards, empty tokens) cannot become a subject.
fn event_type(topic: &str) -> Result<String, MapError> {
    let lower = topic.to_ascii_lowercase();
    let valid = lower.len() <= MAX_EVENT_TYPE
        && lower.split('.').all(|token| {
            !token.is_empty()
                && token
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        });
    if valid {
        Ok(lower)
    } else {
        Err(MapError::UnsupportedTopic(format!(
            "{:?} is not a dot-separated event type of letters, digits, `_` and `-`",
            topic.chars().take(64).collect::<String>()
        )))
    }
}

/// The payload fields the mapping needs (the spec's recommended structure); the rest is
/// checked for syntax only.
#[derive(Deserialize)]
struct Payload<'a> {
    #[serde(rename = "type", borrow, default)]
    event_type: Option<Cow<'a, str>>,
    /// Read as raw JSON: a timestamp that is not a string is only not used.
    #[serde(borrow, default)]
    timestamp: Option<&'a RawValue>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct IdOnly<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
}

#[cfg(test)]
mod tests;
