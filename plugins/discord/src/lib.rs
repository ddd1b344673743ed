//! hookgate source plugin for Discord's HTTP deliveries: interactions
//! (<https://discord.com/developers/docs/interactions/overview>) and webhook events
//! (<https://discord.com/developers/docs/events/webhook-events>). Both are signed alike,
//! Ed25519 over `X-Signature-Timestamp` followed by the body, under the application's
//! public key. PINGs are answered as Discord asks; every other delivery becomes one
//! domain event.

use std::borrow::Cow;

use hookgate_plugin_sdk::{
    DomainEvent, Handshake, KeyHandle, MapError, MapOutcome, Mapping, Metadata, Part, Request,
    SecretHandle, Settings, SignatureAlgorithm, SourcePlugin, Timestamp, Verified, VerifyError,
};
use serde::Deserialize;
use serde_json::value::RawValue;

// Shared with the standard-webhooks plugin: the gateway's rules for returned values.
#[path = "../../fields.rs"]
mod fields;
#[path = "../../json_object.rs"]
mod json_object;

use json_object::Object;

/// The Discord source plugin.
pub struct Discord;

hookgate_plugin_sdk::export_plugin!(Discord);

/// Discord documents no freshness window for `X-Signature-Timestamp` (an open question,
/// <https://github.com/discord/discord-api-docs/issues/6209>), so this one is hookgate's:
/// long enough for webhook events, which Discord retries "for up to 10 minutes" and may
/// not sign afresh; shorter than the retry window, the least time the gateway remembers
/// keys for ([`Metadata::retry_window_hours`]), so a replay is either a duplicate or
/// expired.
const DEFAULT_TOLERANCE_SECONDS: u64 = 900;

/// The signature header (hex) and the timestamp header, whose text is signed.
const SIGNATURE_HEADER: &str = "x-signature-ed25519";
const TIMESTAMP_HEADER: &str = "x-signature-timestamp";

/// Length of an Ed25519 signature.
const SIGNATURE_LEN: usize = 64;

/// The gateway refuses longer event types (they become NATS subject tokens).
const MAX_EVENT_TYPE: usize = 255;

/// The first millisecond of 2015, where snowflake timestamps count from
/// (<https://discord.com/developers/docs/reference#snowflakes>).
const DISCORD_EPOCH_MS: u64 = 1_420_070_400_000;

/// Interaction type `PING`, answered with callback type `PONG` (also 1).
const INTERACTION_PING: i64 = 1;

/// Webhook event types: `PING` (answered with 204) and `Event`.
const WEBHOOK_PING: i64 = 0;
const WEBHOOK_EVENT: i64 = 1;

impl SourcePlugin for Discord {
    fn metadata() -> Metadata {
        Metadata {
            name: "discord".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Discord interactions and webhook events (Ed25519, PING answered)".into(),
            // Interactions are not retried: an app has 3 seconds to answer one, after which
            // its token is invalidated. Webhook events are retried "for up to 10 minutes"
            // (https://discord.com/developers/docs/events/webhook-events#responding-to-events).
            retry_window_hours: 1,
        }
    }

    fn verify(
        req: &Request,
        _secrets: &[SecretHandle],
        keys: &[KeyHandle],
        settings: &Settings,
    ) -> Result<Verified, VerifyError> {
        let tolerance =
            hookgate_plugin_sdk::timestamp_tolerance(settings, DEFAULT_TOLERANCE_SECONDS)?;
        let header = req
            .header(SIGNATURE_HEADER)
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .ok_or_else(|| VerifyError::MissingSignature("no X-Signature-Ed25519 header".into()))?;
        let signature = hookgate_plugin_sdk::hex_decode(header)
            .filter(|s| s.len() == SIGNATURE_LEN)
            .ok_or_else(|| {
                VerifyError::MalformedSignature(
                    "X-Signature-Ed25519 is not 128 hex digits (a 64-byte Ed25519 signature)"
                        .into(),
                )
            })?;
        let timestamp_text = req.header(TIMESTAMP_HEADER).ok_or_else(|| {
            VerifyError::MalformedSignature(
                "no X-Signature-Timestamp header: it is part of the signed message".into(),
            )
        })?;

        // `timestamp + body`, as in Discord's examples
        // (https://discord.com/developers/docs/interactions/overview#setting-up-an-endpoint-validating-security-request-headers).
        // Discord also sends invalid signatures on purpose and expects them refused (401).
        let signed = [Part::Header(TIMESTAMP_HEADER), Part::Body];
        let key = hookgate_plugin_sdk::signature_verify(
            req,
            keys,
            SignatureAlgorithm::Ed25519,
            &signed,
            &signature,
        )
        .ok_or_else(|| {
            VerifyError::Mismatch("no configured public key signs this timestamp and body".into())
        })?;

        // Checked after the signature, so `expired` only ever describes an authentic
        // delivery; a future timestamp is refused as well. Discord writes Unix seconds; an
        // authentic timestamp of another shape cannot be checked, and is refused rather
        // than let through unchecked.
        let timestamp = Some(timestamp_text.trim())
            .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|t| t.parse::<i64>().ok())
            .ok_or_else(|| {
                VerifyError::Rejected(
                    "X-Signature-Timestamp is not Unix seconds: its age cannot be checked".into(),
                )
            })?;
        hookgate_plugin_sdk::check_timestamp(timestamp, tolerance)?;
        Ok(Verified::by_key(key))
    }

    fn map(req: &Request, _settings: &Settings) -> Result<MapOutcome, MapError> {
        // `from_str`, not `from_slice`: the slice reader lets invalid UTF-8 through in
        // strings it skips, and the body becomes the JSON `data` of the event unchanged.
        let body = std::str::from_utf8(req.body())
            .map_err(|e| MapError::MalformedPayload(format!("body is not UTF-8: {e}")))?;
        let envelope: Object<Envelope<'_>> = serde_json::from_str(body)
            .map_err(|e| MapError::MalformedPayload(format!("body is not a JSON object: {e}")))?;
        let envelope = envelope.0;

        // Two shapes reach the same kind of endpoint, and both use `type: 1`: an
        // interaction PING, and a webhook event. Only a webhook event has an `event`
        // object; only a webhook PING has type 0, which no interaction has.
        match (envelope.event, envelope.kind) {
            (Some(event), kind) => webhook_event(kind, event),
            (None, Some(WEBHOOK_PING)) => Ok(webhook_ping()),
            (None, Some(kind)) => interaction(kind, &envelope),
            (None, None) => Err(MapError::MissingField("type".into())),
        }
    }
}

/// The fields of either shape that tell them apart, and an interaction's.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", default)]
    kind: Option<i64>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    guild_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    event: Option<&'a RawValue>,
}

/// "Your app is expected to acknowledge the request by returning a `200` response with a
/// `PONG` payload (which has the same `type: 1`)."
fn pong() -> MapOutcome {
    MapOutcome::Respond(Handshake::json(&br#"{"type":1}"#[..]))
}

/// "Your app is expected to acknowledge the request by returning a `204` response with an
/// empty body", with a valid `Content-Type` all the same.
fn webhook_ping() -> MapOutcome {
    MapOutcome::Respond(Handshake {
        status: 204,
        content_type: "application/json".into(),
        headers: Vec::new(),
        body: Vec::new(),
    })
}

/// An interaction (<https://discord.com/developers/docs/interactions/receiving-and-responding#interaction-object>).
fn interaction(kind: i64, envelope: &Envelope<'_>) -> Result<MapOutcome, MapError> {
    if kind == INTERACTION_PING {
        return Ok(pong());
    }
    let id = envelope
        .id
        .and_then(fields::id_text)
        .ok_or_else(|| MapError::MissingField("id".into()))?;
    let (topic, event_type, subject_field) =
        match INTERACTION_TYPES.iter().find(|(known, ..)| *known == kind) {
            Some(&(_, name, field)) => (
                name.to_owned(),
                format!("interaction.{}", name.to_ascii_lowercase()),
                Some(field),
            ),
            // A type added after this plugin: still published, under its number, so
            // consumers can answer it without waiting for a new plugin.
            None => (kind.to_string(), format!("interaction.type_{kind}"), None),
        };
    let data = envelope
        .data
        .and_then(|data| serde_json::from_str::<Object<InteractionData<'_>>>(data.get()).ok())
        .map(|data| data.0);
    let subject = subject_field
        .zip(data)
        .and_then(|(field, data)| match field {
            DataField::Name => data.name,
            DataField::CustomId => data.custom_id,
        })
        .and_then(fields::id_text)
        .unwrap_or_else(|| id.clone());

    Ok(MapOutcome::Events(Mapping {
        occurred_at: snowflake_time(&id).map(Timestamp::UnixSeconds),
        idempotency_key: Some(id),
        // Absent when the interaction comes from a DM.
        tenant: envelope.guild_id.and_then(fields::id_text),
        topic,
        events: vec![DomainEvent {
            event_type,
            subject: Some(subject),
            data: None,
        }],
    }))
}

/// Discord's interaction types besides PING, by `type`, with the field of `data` that
/// names what the user used: the command, or the component or modal by the `custom_id`
/// the app gave it.
const INTERACTION_TYPES: [(i64, &str, DataField); 4] = [
    (2, "APPLICATION_COMMAND", DataField::Name),
    (3, "MESSAGE_COMPONENT", DataField::CustomId),
    (4, "APPLICATION_COMMAND_AUTOCOMPLETE", DataField::Name),
    (5, "MODAL_SUBMIT", DataField::CustomId),
];

#[derive(Clone, Copy)]
enum DataField {
    Name,
    CustomId,
}

#[derive(Deserialize)]
struct InteractionData<'a> {
    #[serde(borrow, default)]
    name: Option<&'a RawValue>,
    #[serde(borrow, default)]
    custom_id: Option<&'a RawValue>,
}

/// When a snowflake was made, in Unix seconds: its top 42 bits count milliseconds since
/// [`DISCORD_EPOCH_MS`].
fn snowflake_time(id: &str) -> Option<i64> {
    let id: u64 = Some(id)
        .filter(|id| id.bytes().all(|b| b.is_ascii_digit()))?
        .parse()
        .ok()?;
    i64::try_from(((id >> 22) + DISCORD_EPOCH_MS) / 1000).ok()
}

/// A webhook event (<https://discord.com/developers/docs/events/webhook-events#payload-structure>).
fn webhook_event(kind: Option<i64>, event: &RawValue) -> Result<MapOutcome, MapError> {
    match kind {
        Some(WEBHOOK_PING) => return Ok(webhook_ping()),
        Some(WEBHOOK_EVENT) => {}
        Some(other) => {
            return Err(MapError::UnsupportedTopic(format!(
                "webhook type {other} (0 is PING, 1 an event)"
            )));
        }
        None => return Err(MapError::MissingField("type".into())),
    }
    let event: Object<EventBody<'_>> = serde_json::from_str(event.get())
        .map_err(|e| MapError::MalformedPayload(format!("event is not an event body: {e}")))?;
    let event = event.0;
    let topic = event
        .event_type
        .filter(|t| !t.is_empty())
        .ok_or_else(|| MapError::MissingField("event.type".into()))?;
    let event_type = topic.to_ascii_lowercase();
    // Discord's event types are `UPPER_SNAKE_CASE` names; a single subject token.
    let valid = event_type.len() <= MAX_EVENT_TYPE
        && event_type
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !valid {
        return Err(MapError::UnsupportedTopic(format!(
            "{:?} is not a Discord event type",
            topic.chars().take(64).collect::<String>()
        )));
    }
    let occurred_at = event
        .timestamp
        .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
        .and_then(|at| utc_time(&at))
        .map(Timestamp::Rfc3339);
    if event.timestamp.is_some() && occurred_at.is_none() {
        hookgate_plugin_sdk::warn!("ignoring event.timestamp: not an ISO 8601 date-time");
    }
    let data = event
        .data
        .and_then(|data| serde_json::from_str::<Object<EventData<'_>>>(data.get()).ok())
        .map(|data| data.0);
    let id_of = |raw: Option<&RawValue>| {
        raw.and_then(|raw| serde_json::from_str::<Object<IdOnly<'_>>>(raw.get()).ok())
            .and_then(|object| object.0.id)
            .and_then(fields::id_text)
    };
    // The entity: an entitlement's or message's own `id`; for the (de)authorization
    // events, which carry none, the user's.
    let subject = data.as_ref().and_then(|data| {
        data.id
            .and_then(fields::id_text)
            .or_else(|| id_of(data.user))
    });
    // The guild, as for interactions: `guild_id`, or the guild object of
    // `APPLICATION_AUTHORIZED`.
    let tenant = data.as_ref().and_then(|data| {
        data.guild_id
            .and_then(fields::id_text)
            .or_else(|| id_of(data.guild))
    });

    Ok(MapOutcome::Events(Mapping {
        // A webhook event carries no id of its own: the gateway keys it by the SHA-256
        // of the body, the same for each retry of it.
        idempotency_key: None,
        tenant,
        topic: topic.into_owned(),
        occurred_at,
        events: vec![DomainEvent {
            event_type,
            subject,
            data: None,
        }],
    }))
}

/// `event.timestamp` as RFC 3339. Discord's examples write it without an offset
/// (`2024-10-18T14:42:53.064834`); Discord's times are UTC, so such a value is read as
/// UTC.
fn utc_time(at: &str) -> Option<String> {
    if fields::is_rfc3339(at) {
        return Some(at.to_owned());
    }
    let utc = format!("{at}Z");
    fields::is_rfc3339(&utc).then_some(utc)
}

#[derive(Deserialize)]
struct EventBody<'a> {
    #[serde(rename = "type", borrow, default)]
    event_type: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    timestamp: Option<&'a RawValue>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct EventData<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    guild_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    guild: Option<&'a RawValue>,
    #[serde(borrow, default)]
    user: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct IdOnly<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
}

#[cfg(test)]
mod tests;
