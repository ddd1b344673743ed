//! hookgate source plugin for Slack's Events API: checks `X-Slack-Signature` (HMAC-SHA256
//! of `v0:{timestamp}:{body}`, timestamp tolerance), answers the `url_verification`
//! challenge, and maps each `event_callback` to one domain event named after the inner
//! event (`app_mention`, `message`, `message.channel_join`).
//!
//! Slack's rules followed here:
//! - signature: <https://api.slack.com/authentication/verifying-requests-from-slack>
//! - envelope, retries: <https://api.slack.com/apis/events-api> and
//!   <https://api.slack.com/apis/http>
//! - the challenge: <https://api.slack.com/events/url_verification>

use std::borrow::Cow;

use hookgate_plugin_sdk::{
    DomainEvent, Handshake, HashAlgorithm, KeyHandle, MapError, MapOutcome, Mapping, Metadata,
    Part, Request, SecretHandle, Settings, SourcePlugin, Timestamp, Verified, VerifyError,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

#[path = "../../json_object.rs"]
mod json_object;

use json_object::Object;

/// The Slack source plugin.
pub struct Slack;

hookgate_plugin_sdk::export_plugin!(Slack);

/// Slack's guide checks that the timestamp differs from local time by no more than five
/// minutes, against replays (Verifying requests from Slack).
const DEFAULT_TOLERANCE_SECONDS: u64 = 300;

/// Length of an HMAC-SHA256.
const MAC_LEN: usize = 32;

/// The signature header's version prefix: "the version number right now is always v0".
const SIGNATURE_PREFIX: &str = "v0=";

/// The timestamp header, signed as sent.
const TIMESTAMP_HEADER: &str = "x-slack-request-timestamp";

impl SourcePlugin for Slack {
    fn metadata() -> Metadata {
        Metadata {
            name: "slack".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Slack Events API (X-Slack-Signature v0, timestamp tolerance)".into(),
            // Slack retries a failed event three times: immediately, after one minute and
            // after five minutes (Events API, "Failure conditions" / "Retries"), so every
            // retry arrives within about six minutes; an hour covers it.
            retry_window_hours: 1,
        }
    }

    // No tenant hint: the signing secret belongs to the Slack app, whichever workspace
    // (`team_id`) the event comes from, so the tenant cannot choose the secret.

    fn verify(
        req: &Request,
        secrets: &[SecretHandle],
        _keys: &[KeyHandle],
        settings: &Settings,
    ) -> Result<Verified, VerifyError> {
        let tolerance =
            hookgate_plugin_sdk::timestamp_tolerance(settings, DEFAULT_TOLERANCE_SECONDS)?;
        let header = req
            .header("x-slack-signature")
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .ok_or_else(|| VerifyError::MissingSignature("no X-Slack-Signature header".into()))?;
        let hex = header.strip_prefix(SIGNATURE_PREFIX).ok_or_else(|| {
            VerifyError::MalformedSignature(format!(
                "X-Slack-Signature does not start with {SIGNATURE_PREFIX}"
            ))
        })?;
        let mac = hookgate_plugin_sdk::hex_decode(hex)
            .filter(|mac| mac.len() == MAC_LEN)
            .ok_or_else(|| {
                VerifyError::MalformedSignature(
                    "X-Slack-Signature is not v0= and 64 hex digits".into(),
                )
            })?;
        let timestamp_text = req.header(TIMESTAMP_HEADER).ok_or_else(|| {
            VerifyError::MissingSignature("no X-Slack-Request-Timestamp header".into())
        })?;
        // Read exactly as the host will sign it: digits only, nothing trimmed.
        let timestamp = Some(timestamp_text)
            .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|t| t.parse::<i64>().ok())
            .ok_or_else(|| {
                VerifyError::MalformedSignature(
                    "X-Slack-Request-Timestamp is not a number of seconds".into(),
                )
            })?;

        // `v0:{timestamp}:{body}`, assembled by the host: the body never enters the plugin.
        let signed = [
            Part::Literal(b"v0:"),
            Part::Header(TIMESTAMP_HEADER),
            Part::Literal(b":"),
            Part::Body,
        ];
        let handle =
            hookgate_plugin_sdk::hmac_verify(req, secrets, HashAlgorithm::Sha256, &signed, &[mac])
                .ok_or_else(|| {
                    VerifyError::Mismatch(
                        "no configured signing secret signs this timestamp and body".into(),
                    )
                })?;

        // Checked after the signature, so `expired` only ever describes an authentic
        // request; a timestamp too far in the future is refused as well.
        hookgate_plugin_sdk::check_timestamp(timestamp, tolerance)?;
        Ok(Verified::by(handle))
    }

    fn map(req: &Request, _settings: &Settings) -> Result<MapOutcome, MapError> {
        // `from_str`, not `from_slice`: the slice reader lets invalid UTF-8 through in
        // strings it skips, and the body becomes the JSON `data` of the event unchanged.
        let body = std::str::from_utf8(req.body())
            .map_err(|e| MapError::MalformedPayload(format!("body is not UTF-8: {e}")))?;
        let envelope: Object<Envelope<'_>> = serde_json::from_str(body).map_err(|e| {
            MapError::MalformedPayload(format!("body is not an Events API payload: {e}"))
        })?;
        let envelope = envelope.0;

        match non_empty(envelope.kind.as_deref()) {
            None => Err(MapError::MissingField("type".into())),
            Some("url_verification") => challenge(&envelope),
            Some("event_callback") => {
                if let Some(retry) = req.header("x-slack-retry-num") {
                    // The same `event_id` as the first attempt: a duplicate for the host.
                    let reason = req.header("x-slack-retry-reason").unwrap_or("unknown");
                    hookgate_plugin_sdk::debug!("Slack retry {retry} ({reason})");
                }
                event_callback(envelope)
            }
            Some("app_rate_limited") => Ok(MapOutcome::Events(Mapping {
                // No id of its own: the body's SHA-256.
                idempotency_key: None,
                tenant: owned(envelope.team_id),
                topic: "app_rate_limited".into(),
                occurred_at: envelope.minute_rate_limited.map(Timestamp::UnixSeconds),
                events: vec![DomainEvent {
                    event_type: "app_rate_limited".into(),
                    // The app whose events were held back.
                    subject: owned(envelope.api_app_id),
                    data: None,
                }],
            })),
            Some(other) => Err(MapError::UnsupportedTopic(format!(
                "{other:?} is not an Events API payload type"
            ))),
        }
    }
}

/// `url_verification`: answered with its challenge, as JSON (Slack accepts plain text,
/// a form or JSON); nothing is stored.
fn challenge(envelope: &Envelope<'_>) -> Result<MapOutcome, MapError> {
    #[derive(Serialize)]
    struct Answer<'a> {
        challenge: &'a str,
    }
    let challenge = non_empty(envelope.challenge.as_deref())
        .ok_or_else(|| MapError::MissingField("challenge".into()))?;
    let body = serde_json::to_vec(&Answer { challenge })
        .map_err(|e| MapError::Other(format!("cannot encode the challenge: {e}")))?;
    Ok(MapOutcome::Respond(Handshake::json(body)))
}

/// `event_callback`: one domain event of the inner event's type.
fn event_callback(envelope: Envelope<'_>) -> Result<MapOutcome, MapError> {
    let event_id =
        owned(envelope.event_id).ok_or_else(|| MapError::MissingField("event_id".into()))?;
    let event = envelope
        .event
        .ok_or_else(|| MapError::MissingField("event".into()))?
        .0;
    let inner = non_empty(event.kind.as_deref())
        .ok_or_else(|| MapError::MissingField("event.type".into()))?
        .to_owned();
    if !is_token(&inner) {
        return Err(MapError::UnsupportedTopic(format!(
            "{inner:?} is not a Slack event type"
        )));
    }
    let event_type = match (&*inner, event.subtype) {
        // A plain message stays `message`; edits, deletions, joins, bot posts... are told
        // apart by their subtype, so a consumer of new messages is not sent them.
        ("message", Some(subtype)) => {
            let subtype: Option<String> = serde_json::from_str(subtype.get())
                .map_err(|_| MapError::MalformedPayload("event.subtype is not a string".into()))?;
            match subtype.filter(|s| !s.is_empty()) {
                None => inner.clone(),
                Some(subtype) if is_token(&subtype) => format!("message.{subtype}"),
                Some(subtype) => {
                    return Err(MapError::UnsupportedTopic(format!(
                        "{subtype:?} is not a Slack message subtype"
                    )));
                }
            }
        }
        _ => inner.clone(),
    };
    // Where it happened, else who it is about.
    let subject = event
        .channel
        .and_then(entity_id)
        .or_else(|| {
            event
                .item
                .and_then(|item| serde_json::from_str::<Item<'_>>(item.get()).ok())
                .and_then(|item| item.channel)
                .and_then(entity_id)
        })
        .or_else(|| event.user.and_then(entity_id));

    Ok(MapOutcome::Events(Mapping {
        idempotency_key: Some(event_id),
        tenant: owned(envelope.team_id),
        topic: inner,
        occurred_at: envelope.event_time.map(Timestamp::UnixSeconds),
        events: vec![DomainEvent {
            event_type,
            subject,
            data: None,
        }],
    }))
}

/// A type usable as a NATS subject token: Slack's are lower-case words joined by `_`.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn non_empty(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.is_empty())
}

fn owned(s: Option<Cow<'_, str>>) -> Option<String> {
    s.filter(|s| !s.is_empty()).map(Cow::into_owned)
}

/// An id given either as a string (`"C123"`) or as an object with an `id`
/// (`channel_created`'s channel, `user_change`'s user); `None` for anything else.
fn entity_id(raw: &RawValue) -> Option<String> {
    let id = match raw.get().as_bytes().first()? {
        b'"' => serde_json::from_str::<Cow<'_, str>>(raw.get()).ok(),
        b'{' => serde_json::from_str::<Item<'_>>(raw.get()).ok()?.id,
        _ => None,
    };
    owned(id)
}

/// The outer payload of every Events API request; the rest is checked for syntax only.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    challenge: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    team_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    api_app_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    event_id: Option<Cow<'a, str>>,
    #[serde(default)]
    event_time: Option<i64>,
    #[serde(default)]
    minute_rate_limited: Option<i64>,
    #[serde(borrow, default)]
    event: Option<Object<Event<'a>>>,
}

/// The inner event's fields the mapping needs; their shapes vary by event type, so they
/// stay raw until read.
#[derive(Deserialize)]
struct Event<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    subtype: Option<&'a RawValue>,
    #[serde(borrow, default)]
    channel: Option<&'a RawValue>,
    #[serde(borrow, default)]
    item: Option<&'a RawValue>,
    #[serde(borrow, default)]
    user: Option<&'a RawValue>,
}

/// An object holding an `id` or a `channel` (a reaction's or pin's `item`).
#[derive(Deserialize)]
struct Item<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    channel: Option<&'a RawValue>,
}

#[cfg(test)]
mod tests;
