//! {{name}}: a hookgate source plugin in Rust, started from the bundled GitHub plugin: checks `X-Hub-Signature-256` (HMAC-SHA256
//! of the raw body) and maps each delivery to one domain event named after the event and
//! its action (`pull_request.opened`, `push`); `ping` is answered as a handshake.
//!
//! GitHub's rules followed here:
//! - signature: <https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries>
//! - headers and payloads: <https://docs.github.com/en/webhooks/webhook-events-and-payloads>
//! - content types: `application/x-www-form-urlencoded` "will send the JSON payload as a
//!   form parameter called `payload`" (<https://docs.github.com/en/webhooks/using-webhooks/creating-webhooks>;
//!   worded so in <https://docs.github.com/en/marketplace/listing-on-github-marketplace/configuring-the-github-marketplace-webhook>).

use std::borrow::Cow;
use std::collections::BTreeMap;

use hookgate_plugin_sdk::{
    DomainEvent, Handshake, HashAlgorithm, KeyHandle, MapError, MapOutcome, Mapping, Metadata,
    Part, Request, SecretHandle, Settings, SourcePlugin, Verified, VerifyError,
};
use serde_json::value::RawValue;

/// The GitHub source plugin.
pub struct GitHub;

hookgate_plugin_sdk::export_plugin!(GitHub);

/// Length of an HMAC-SHA256.
const MAC_LEN: usize = 32;

/// The header's value is `sha256=` and the hex digest (Validating webhook deliveries).
const SIGNATURE_PREFIX: &str = "sha256=";

/// What a `ping` is answered with: GitHub only looks at the status.
const PING_RESPONSE: &str = r#"{"ok":true}"#;

impl SourcePlugin for GitHub {
    fn metadata() -> Metadata {
        Metadata {
            name: "{{name}}".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "GitHub webhooks (X-Hub-Signature-256, HMAC-SHA256 of the raw body)"
                .into(),
            // GitHub never retries on its own ("GitHub does not automatically redeliver
            // failed deliveries", https://docs.github.com/en/webhooks/using-webhooks/handling-failed-webhook-deliveries),
            // but a delivery can be redelivered by hand or through the REST API for three
            // days ("You can redeliver webhook deliveries that occurred in the past 3 days",
            // https://docs.github.com/en/webhooks/testing-and-troubleshooting-webhooks/redelivering-webhooks),
            // and a redelivery keeps its X-GitHub-Delivery (github/docs#32822): remembering
            // keys that long makes a redelivery of a stored delivery a duplicate.
            retry_window_hours: 72,
        }
    }

    /// The repository or organization the delivery names, so that a repository's (or an
    /// organization's) own webhook secret can be picked: GitHub sets one secret per webhook.
    fn tenant_hint(req: &Request, _settings: &Settings) -> Option<String> {
        let text = payload_text(req).ok()?;
        let payload = Object::parse(&text).ok()?;
        tenant(&payload)
    }

    fn verify(
        req: &Request,
        secrets: &[SecretHandle],
        _keys: &[KeyHandle],
        _settings: &Settings,
    ) -> Result<Verified, VerifyError> {
        let header = req
            .header("x-hub-signature-256")
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .ok_or_else(|| {
                // The SHA-1 `X-Hub-Signature` is sent "for compatibility with existing
                // integrations" only; it is never trusted, not even as a fallback.
                VerifyError::MissingSignature(if req.header("x-hub-signature").is_some() {
                    "only the SHA-1 X-Hub-Signature is present; X-Hub-Signature-256 is required"
                        .into()
                } else {
                    "no X-Hub-Signature-256 header (has the webhook a secret?)".into()
                })
            })?;
        let hex = header.strip_prefix(SIGNATURE_PREFIX).ok_or_else(|| {
            VerifyError::MalformedSignature(format!(
                "X-Hub-Signature-256 does not start with {SIGNATURE_PREFIX}"
            ))
        })?;
        let mac = hookgate_plugin_sdk::hex_decode(hex)
            .filter(|mac| mac.len() == MAC_LEN)
            .ok_or_else(|| {
                VerifyError::MalformedSignature(
                    "X-Hub-Signature-256 is not sha256= and 64 hex digits".into(),
                )
            })?;
        // The HMAC covers the raw body, whichever content type the webhook uses.
        hookgate_plugin_sdk::hmac_verify(req, secrets, HashAlgorithm::Sha256, &[Part::Body], &[mac])
            .map(Verified::by)
            .ok_or_else(|| VerifyError::Mismatch("no configured secret signs this body".into()))
    }

    fn map(req: &Request, _settings: &Settings) -> Result<MapOutcome, MapError> {
        let event = req
            .header("x-github-event")
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .ok_or_else(|| MapError::MissingField("X-GitHub-Event header".into()))?;
        if !is_token(event) {
            return Err(MapError::UnsupportedTopic(format!(
                "{event:?} is not a GitHub event name"
            )));
        }
        // Sent once when a webhook is created, to check the endpoint: nothing to store.
        if event == "ping" {
            return Ok(MapOutcome::Respond(Handshake::json(PING_RESPONSE)));
        }

        let text = payload_text(req)?;
        let payload = Object::parse(&text)?;

        let event_type = match payload.string("action")? {
            None => event.to_owned(),
            Some(action) if is_token(&action) => format!("{event}.{action}"),
            Some(action) => {
                return Err(MapError::UnsupportedTopic(format!(
                    "{action:?} is not a GitHub action"
                )));
            }
        };
        let idempotency_key = req
            .header("x-github-delivery")
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(str::to_owned);
        if idempotency_key.is_none() {
            // GitHub always sends it; without it the body's SHA-256 stands in, which a
            // redelivery (same body) shares too.
            hookgate_plugin_sdk::warn!("no X-GitHub-Delivery header: deduplicating on the body");
        }
        // A form-encoded delivery is not JSON: its event data is the `payload` field.
        let data = match &text {
            Cow::Borrowed(_) => None,
            Cow::Owned(json) => Some(json.clone()),
        };

        Ok(MapOutcome::Events(Mapping {
            idempotency_key,
            tenant: tenant(&payload),
            topic: event.to_owned(),
            // GitHub sends no delivery timestamp: the time received stands in.
            occurred_at: None,
            events: vec![DomainEvent {
                event_type,
                subject: subject(event, &payload),
                data,
            }],
        }))
    }
}

/// An event name or action usable as a NATS subject token: GitHub's are lower-case words
/// joined by `_`.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// The repository's `owner/name`, else the organization's login: the finest-grained owner a
/// delivery names, and the one whose webhook (and secret) sent it in most setups.
fn tenant(payload: &Object<'_>) -> Option<String> {
    let full_name = payload
        .object("repository")
        .and_then(|repository| repository.text("full_name"));
    full_name.or_else(|| {
        payload
            .object("organization")
            .and_then(|organization| organization.text("login"))
    })
}

/// The entity the event is about: the pull request, issue or discussion by its number; the
/// ref of a push, branch or tag; else the object named after the event by its `number` or
/// `id` (`release.id`, `check_run.id`, `workflow_run.id`, ...); else the repository's
/// `owner/name`.
fn subject(event: &str, payload: &Object<'_>) -> Option<String> {
    let numbered = |object: &str| payload.object(object).and_then(|o| o.id("number"));
    let subject = match event {
        "pull_request"
        | "pull_request_review"
        | "pull_request_review_comment"
        | "pull_request_review_thread" => {
            // `pull_request` events also carry the number at the top level.
            numbered("pull_request").or_else(|| payload.id("number"))
        }
        "issues" | "issue_comment" => numbered("issue"),
        "discussion" | "discussion_comment" => numbered("discussion"),
        "push" | "create" | "delete" => payload.text("ref"),
        // The repository itself: by the same name as the fallback below.
        "repository" => None,
        other => payload
            .object(other)
            .and_then(|o| o.id("number").or_else(|| o.id("id"))),
    };
    subject.or_else(|| {
        payload
            .object("repository")
            .and_then(|repository| repository.text("full_name"))
    })
}

/// The delivery's JSON text: the body itself, or (borrowed vs. owned tells them apart) the
/// decoded `payload` field of an `application/x-www-form-urlencoded` body.
fn payload_text(req: &Request) -> Result<Cow<'_, str>, MapError> {
    let form = req.header("content-type").is_some_and(|value| {
        let media_type = value.split(';').next().unwrap_or_default().trim();
        media_type.eq_ignore_ascii_case("application/x-www-form-urlencoded")
    });
    if form {
        return form_payload(req.body()).map(Cow::Owned);
    }
    // `from_str`, not `from_slice`: the slice reader lets invalid UTF-8 through in strings
    // it skips, and the body becomes the JSON `data` of the event unchanged.
    std::str::from_utf8(req.body())
        .map(Cow::Borrowed)
        .map_err(|e| MapError::MalformedPayload(format!("body is not UTF-8: {e}")))
}

/// The `payload` field of a form-encoded body, decoded.
fn form_payload(body: &[u8]) -> Result<String, MapError> {
    let mut found = None;
    for pair in body.split(|&b| b == b'&') {
        let (name, value) = match pair.iter().position(|&b| b == b'=') {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, &[][..]),
        };
        if form_decode(name)? != b"payload" {
            continue;
        }
        if found.is_some() {
            return Err(MapError::MalformedPayload(
                "the form has more than one payload field".into(),
            ));
        }
        found = Some(form_decode(value)?);
    }
    let bytes = found.ok_or_else(|| MapError::MissingField("payload form field".into()))?;
    String::from_utf8(bytes)
        .map_err(|e| MapError::MalformedPayload(format!("payload field is not UTF-8: {e}")))
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte.
fn form_decode(text: &[u8]) -> Result<Vec<u8>, MapError> {
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text;
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let byte = rest
                    .get(..2)
                    .and_then(|hex| std::str::from_utf8(hex).ok())
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                    .ok_or_else(|| {
                        MapError::MalformedPayload("bad percent-escape in the form body".into())
                    })?;
                out.push(byte);
                rest = &rest[2..];
            }
            _ => out.push(b),
        }
    }
    Ok(out)
}

/// A JSON object read one level deep: fields stay raw until asked for, so ids keep every
/// digit and the shapes of events the plugin does not know are never a reason to fail.
struct Object<'a> {
    fields: BTreeMap<String, &'a RawValue>,
}

impl<'a> Object<'a> {
    /// The delivery's top level: anything but a JSON object is malformed.
    fn parse(text: &'a str) -> Result<Self, MapError> {
        serde_json::from_str(text)
            .map(|fields| Self { fields })
            .map_err(|e| MapError::MalformedPayload(format!("body is not a JSON object: {e}")))
    }

    /// A nested object, if the field is one.
    fn object(&self, name: &str) -> Option<Object<'a>> {
        let raw = self.fields.get(name)?;
        serde_json::from_str(raw.get())
            .ok()
            .map(|fields| Object { fields })
    }

    /// A string field that must be a string when present (`action`); `None` when absent
    /// or null.
    fn string(&self, name: &str) -> Result<Option<String>, MapError> {
        match self.fields.get(name) {
            None => Ok(None),
            Some(raw) => serde_json::from_str::<Option<String>>(raw.get())
                .map_err(|_| MapError::MalformedPayload(format!("{name} is not a string"))),
        }
    }

    /// A non-empty string field, if it is one.
    fn text(&self, name: &str) -> Option<String> {
        self.string(name).ok().flatten().filter(|s| !s.is_empty())
    }

    /// An id as text: a number exactly as written (an `f64` would lose digits of large
    /// ids), a non-empty string unescaped; `None` for anything else.
    fn id(&self, name: &str) -> Option<String> {
        let text = self.fields.get(name)?.get();
        match text.as_bytes().first()? {
            b'"' => self.text(name),
            b'-' | b'0'..=b'9' => Some(text.to_owned()),
            _ => None,
        }
    }
}

