//! hookgate source plugin for Stripe webhooks: checks `Stripe-Signature` (HMAC-SHA256 of
//! `"{t}.{body}"`, timestamp tolerance) and maps each event to one domain event of the
//! same type.

use std::borrow::Cow;

use hookgate_plugin_sdk::{
    DomainEvent, HashAlgorithm, KeyHandle, MapError, MapOutcome, Mapping, Metadata, Part, Request,
    SecretHandle, Settings, SourcePlugin, Timestamp, Verified, VerifyError,
};
use serde::Deserialize;

#[path = "../../json_object.rs"]
mod json_object;

use json_object::Object;

/// The Stripe source plugin.
pub struct Stripe;

hookgate_plugin_sdk::export_plugin!(Stripe);

/// Stripe's own libraries default to five minutes.
const DEFAULT_TOLERANCE_SECONDS: u64 = 300;

/// Length of an HMAC-SHA256.
const MAC_LEN: usize = 32;

/// The parts of a `Stripe-Signature` header that matter.
struct SignatureHeader<'a> {
    /// The `t` value as sent: it is signed as text.
    timestamp_text: &'a str,
    timestamp: i64,
    /// Every `v1` signature that is well-formed hex of the right length.
    v1: Vec<Vec<u8>>,
}

/// Parses `t=...,v1=...,v1=...,v0=...`. Only `v1` is trusted; `v0` (test mode's
/// legacy scheme) and unknown schemes are ignored, as Stripe's libraries do.
fn parse_signature(header: &str) -> Result<SignatureHeader<'_>, VerifyError> {
    let mut timestamp_text = None;
    let mut v1_seen = false;
    let mut v1 = Vec::new();
    for item in header.split(',') {
        let Some((key, value)) = item.split_once('=') else {
            continue;
        };
        match key.trim() {
            "t" if timestamp_text.is_some() => {
                return Err(VerifyError::MalformedSignature(
                    "Stripe-Signature has more than one timestamp".into(),
                ));
            }
            "t" => timestamp_text = Some(value.trim()),
            "v1" => {
                v1_seen = true;
                match hookgate_plugin_sdk::hex_decode(value.trim()) {
                    Some(mac) if mac.len() == MAC_LEN => v1.push(mac),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    let timestamp_text = timestamp_text.ok_or_else(|| {
        VerifyError::MalformedSignature("Stripe-Signature has no timestamp".into())
    })?;
    let timestamp = Some(timestamp_text)
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse::<i64>().ok())
        .ok_or_else(|| {
            VerifyError::MalformedSignature("Stripe-Signature timestamp is not a number".into())
        })?;
    if !v1_seen {
        return Err(VerifyError::MissingSignature(
            "Stripe-Signature has no v1 signature".into(),
        ));
    }
    if v1.is_empty() {
        return Err(VerifyError::MalformedSignature(
            "no v1 signature in Stripe-Signature is 64 hex digits".into(),
        ));
    }
    Ok(SignatureHeader {
        timestamp_text,
        timestamp,
        v1,
    })
}

impl SourcePlugin for Stripe {
    fn metadata() -> Metadata {
        Metadata {
            name: "stripe".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Stripe webhooks (Stripe-Signature v1, timestamp tolerance)".into(),
            // Stripe retries failed deliveries in live mode for up to three days.
            retry_window_hours: 72,
        }
    }

    fn verify(
        req: &Request,
        secrets: &[SecretHandle],
        _keys: &[KeyHandle],
        settings: &Settings,
    ) -> Result<Verified, VerifyError> {
        let tolerance =
            hookgate_plugin_sdk::timestamp_tolerance(settings, DEFAULT_TOLERANCE_SECONDS)?;
        let header = req
            .header("stripe-signature")
            .filter(|h| !h.trim().is_empty())
            .ok_or_else(|| VerifyError::MissingSignature("no Stripe-Signature header".into()))?;
        let signature = parse_signature(header)?;

        // `{timestamp}.{body}`, assembled by the host: the body never enters the plugin.
        let signed = [
            Part::Literal(signature.timestamp_text.as_bytes()),
            Part::Literal(b"."),
            Part::Body,
        ];
        let handle = hookgate_plugin_sdk::hmac_verify(
            req,
            secrets,
            HashAlgorithm::Sha256,
            &signed,
            &signature.v1,
        )
        .ok_or_else(|| {
            VerifyError::Mismatch("no configured secret signs this timestamp and body".into())
        })?;

        // Checked after the signature, as Stripe's libraries do, so `expired` only ever
        // describes an authentic delivery; a future timestamp is refused as well.
        hookgate_plugin_sdk::check_timestamp(signature.timestamp, tolerance)?;
        Ok(Verified::by(handle))
    }

    fn map(req: &Request, _settings: &Settings) -> Result<MapOutcome, MapError> {
        let body = std::str::from_utf8(req.body())
            .map_err(|e| MapError::MalformedPayload(format!("body is not UTF-8: {e}")))?;
        let event: Object<Event<'_>> = serde_json::from_str(body)
            .map_err(|e| MapError::MalformedPayload(format!("body is not a Stripe event: {e}")))?;
        let event = event.0;

        let id = event
            .id
            .filter(|id| !id.is_empty())
            .ok_or_else(|| MapError::MissingField("id".into()))?;
        let event_type = event
            .event_type
            .filter(|t| !t.is_empty())
            .ok_or_else(|| MapError::MissingField("type".into()))?;
        // The type becomes NATS subject tokens.
        let valid_type = event_type.split('.').all(|token| {
            !token.is_empty()
                && token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
        if !valid_type {
            return Err(MapError::UnsupportedTopic(format!(
                "{event_type:?} is not a Stripe event type"
            )));
        }
        let subject = event
            .data
            .and_then(|data| data.0.object)
            .and_then(|object| object.0.id)
            .filter(|id| !id.is_empty())
            .map(Cow::into_owned);

        Ok(MapOutcome::Events(Mapping {
            idempotency_key: Some(id.into_owned()),
            tenant: event.account.filter(|a| !a.is_empty()).map(Cow::into_owned),
            topic: event_type.clone().into_owned(),
            occurred_at: event.created.map(Timestamp::UnixSeconds),
            events: vec![DomainEvent {
                event_type: event_type.into_owned(),
                subject,
                data: None,
            }],
        }))
    }
}

/// The fields of a Stripe event the mapping needs; the rest is checked for syntax only.
#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(rename = "type", borrow, default)]
    event_type: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    account: Option<Cow<'a, str>>,
    #[serde(default)]
    created: Option<i64>,
    #[serde(borrow, default)]
    data: Option<Object<Data<'a>>>,
}

#[derive(Deserialize)]
struct Data<'a> {
    #[serde(borrow, default)]
    object: Option<Object<DataObject<'a>>>,
}

#[derive(Deserialize)]
struct DataObject<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
}

#[cfg(test)]
mod tests;
