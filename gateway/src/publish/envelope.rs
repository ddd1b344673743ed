//! The CloudEvents 1.0 JSON envelope every published event travels in, and the bus subject
//! it is published under (SPEC "Events").
//!
//! The payload is embedded as raw JSON, never parsed into a value tree: platforms send ids
//! larger than 2^53 (Shopify's `820982911946154500`) that a float round trip would corrupt,
//! and consumers verifying against the original body need it unchanged.

use std::cell::Cell;

use base64::display::Base64Display;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

/// The content type of a payload that is not JSON and came without one.
const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";
const JSON_CONTENT_TYPE: &str = "application/json";

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// `EventData::Json` promised JSON but the bytes are not.
    #[error("event data is not valid JSON: {0}")]
    InvalidJson(String),
    /// A required CloudEvents attribute is empty.
    #[error("envelope attribute `{0}` must not be empty")]
    EmptyAttribute(&'static str),
    #[error("invalid subject: {0}")]
    InvalidSubject(String),
    #[error("cannot serialize the envelope: {0}")]
    Serialize(#[from] serde_json::Error),
}

/// The payload of an event.
#[derive(Debug, Clone, Copy)]
pub enum EventData<'a> {
    /// JSON the plugin produced (or the body itself): embedded unchanged; must be valid.
    Json(&'a [u8]),
    /// A raw request body: embedded as JSON when it is JSON, else base64 in `data_base64`
    /// with its content type (default `application/octet-stream`).
    Body {
        bytes: &'a [u8],
        content_type: Option<&'a str>,
    },
}

/// Everything an envelope says about one event.
#[derive(Debug, Clone, Copy)]
pub struct EnvelopeInput<'a> {
    /// Stable for a given webhook and event index; also the `Nats-Msg-Id`.
    pub id: &'a str,
    /// The hookgate source name; the envelope's `source` is `hookgate/<source>`.
    pub source: &'a str,
    pub event_type: &'a str,
    /// The entity id the plugin reports; omitted from the envelope when `None`.
    pub subject: Option<&'a str>,
    /// When the event occurred as the source says, else when it was received.
    pub time: DateTime<Utc>,
    pub data: EventData<'a>,
    pub correlation_id: &'a str,
    /// hookgate's stored entry id.
    pub webhook_id: uuid::Uuid,
    /// Omitted from the envelope when `None`.
    pub tenant: Option<&'a str>,
    /// `name@version` of the plugin that mapped the webhook.
    pub plugin: &'a str,
}

/// Serialized in this field order, which is the order SPEC lists them in, so envelopes
/// read naturally in the file sink and in `nats sub` output.
#[derive(Serialize)]
struct Envelope<'a> {
    specversion: &'static str,
    id: &'a str,
    source: SourceAttr<'a>,
    #[serde(rename = "type")]
    event_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<&'a str>,
    time: String,
    datacontenttype: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Located<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_base64: Option<Base64Attr<'a>>,
    correlationid: &'a str,
    webhookid: uuid::Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<&'a str>,
    plugin: &'a str,
}

/// `hookgate/<source>`, written without an intermediate `String`.
struct SourceAttr<'a>(&'a str);

impl Serialize for SourceAttr<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("hookgate/{}", self.0))
    }
}

/// The payload, which notes where in the output it starts as it is written.
struct Located<'a> {
    raw: &'a RawValue,
    written: &'a Cell<usize>,
    starts_at: &'a Cell<Option<usize>>,
}

impl Serialize for Located<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // serde_json has written the key and its colon by now, and buffers nothing.
        self.starts_at.set(Some(self.written.get()));
        self.raw.serialize(serializer)
    }
}

/// The output buffer, publishing its length after every write.
struct CountingWriter<'a> {
    out: Vec<u8>,
    written: &'a Cell<usize>,
}

impl std::io::Write for CountingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.out.extend_from_slice(buf);
        self.written.set(self.out.len());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Base64 of the payload, streamed into the output instead of allocated first.
struct Base64Attr<'a>(&'a [u8]);

impl Serialize for Base64Attr<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&Base64Display::new(self.0, &STANDARD))
    }
}

/// Parses `bytes` as one JSON value without building a tree (it only validates and borrows).
fn as_raw_json(bytes: &[u8]) -> Result<&RawValue, serde_json::Error> {
    serde_json::from_slice::<&RawValue>(bytes)
}

/// An encoded envelope, and where the request body sits in it when the event's data is
/// the body itself, so storage can keep the body once (in the entry) and not twice.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub bytes: Bytes,
    /// Byte offset of [`embedded_body`] of the request body within `bytes`.
    pub body_at: Option<usize>,
}

/// What of a JSON request body an envelope embeds: the body without the whitespace JSON
/// allows around a value, which a JSON parser does not keep.
pub fn embedded_body(body: &[u8]) -> &[u8] {
    let is_space = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    let start = body.iter().position(|b| !is_space(b)).unwrap_or(body.len());
    let end = body
        .iter()
        .rposition(|b| !is_space(b))
        .map_or(start, |i| i + 1);
    &body[start..end]
}

/// The envelope as stored when its data is the entry's body: everything but the body.
/// `None` if `body_at` does not locate that body in `envelope`.
pub fn without_body(envelope: &[u8], body_at: usize, body: &[u8]) -> Option<Vec<u8>> {
    let data = embedded_body(body);
    let end = body_at.checked_add(data.len())?;
    if envelope.get(body_at..end)? != data {
        return None;
    }
    let mut stored = Vec::with_capacity(envelope.len() - data.len());
    stored.extend_from_slice(&envelope[..body_at]);
    stored.extend_from_slice(&envelope[end..]);
    Some(stored)
}

/// The envelope [`without_body`] stored, made whole again; `None` if `body_at` is past
/// its end (a corrupt row).
pub fn with_body(stored: &[u8], body_at: usize, body: &[u8]) -> Option<Bytes> {
    let (head, tail) = (stored.get(..body_at)?, stored.get(body_at..)?);
    let data = embedded_body(body);
    let mut whole = Vec::with_capacity(stored.len() + data.len());
    whole.extend_from_slice(head);
    whole.extend_from_slice(data);
    whole.extend_from_slice(tail);
    Some(Bytes::from(whole))
}

/// Encodes one event as a CloudEvents 1.0 JSON envelope (SPEC "Events").
pub fn encode(input: &EnvelopeInput) -> Result<Bytes, EnvelopeError> {
    encode_located(input).map(|encoded| encoded.bytes)
}

/// [`encode`], also telling where the request body went when the data is the body.
pub fn encode_located(input: &EnvelopeInput) -> Result<Encoded, EnvelopeError> {
    for (name, value) in [
        ("id", input.id),
        ("source", input.source),
        ("type", input.event_type),
        ("plugin", input.plugin),
    ] {
        if value.is_empty() {
            return Err(EnvelopeError::EmptyAttribute(name));
        }
    }

    // `is_body`: the data is the request body itself, which storage may then keep once.
    let (datacontenttype, data, data_base64, payload_len, is_body) = match input.data {
        EventData::Json(bytes) => {
            let raw = as_raw_json(bytes).map_err(|e| EnvelopeError::InvalidJson(e.to_string()))?;
            (JSON_CONTENT_TYPE, Some(raw), None, bytes.len(), false)
        }
        EventData::Body {
            bytes,
            content_type,
        } => match as_raw_json(bytes) {
            Ok(raw) => {
                // The parser borrows the value from the body; it is the embedded body
                // exactly when both are the same bytes.
                let embedded = embedded_body(bytes);
                let same = std::ptr::eq(raw.get().as_ptr(), embedded.as_ptr())
                    && raw.get().len() == embedded.len();
                (JSON_CONTENT_TYPE, Some(raw), None, bytes.len(), same)
            }
            // Not JSON (a form-encoded body, say): carried verbatim as base64, with the
            // content type the sender declared so consumers can decode it.
            Err(_) => (
                content_type
                    .filter(|ct| !ct.trim().is_empty())
                    .unwrap_or(DEFAULT_CONTENT_TYPE),
                None,
                Some(Base64Attr(bytes)),
                bytes.len().div_ceil(3) * 4,
                false,
            ),
        },
    };

    let written = Cell::new(0);
    let data_at = Cell::new(None);
    let envelope = Envelope {
        specversion: "1.0",
        id: input.id,
        source: SourceAttr(input.source),
        event_type: input.event_type,
        subject: input.subject,
        time: input.time.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        datacontenttype,
        data: data.map(|raw| Located {
            raw,
            written: &written,
            starts_at: &data_at,
        }),
        data_base64,
        correlationid: input.correlation_id,
        webhookid: input.webhook_id,
        tenant: input.tenant,
        plugin: input.plugin,
    };

    // The attributes are small; reserving for the payload avoids regrowing the buffer.
    let mut out = CountingWriter {
        out: Vec::with_capacity(payload_len + 512),
        written: &written,
    };
    serde_json::to_writer(&mut out, &envelope)?;
    Ok(Encoded {
        bytes: Bytes::from(out.out),
        body_at: data_at.get().filter(|_| is_body),
    })
}

/// The bus subject of an event: `<prefix>.<source>.<type>`.
///
/// Each part must be a valid run of NATS subject tokens: non-empty, no whitespace or
/// control characters, no wildcards (`*`, `>`), no empty token (`..`, leading or trailing
/// `.`). The prefix and the type may hold several tokens (`acme.webhooks`, `order.created`).
pub fn subject(prefix: &str, source: &str, event_type: &str) -> Result<String, EnvelopeError> {
    check_subject_part("prefix", prefix)?;
    check_subject_part("source", source)?;
    check_subject_part("event type", event_type)?;
    Ok(format!("{prefix}.{source}.{event_type}"))
}

fn check_subject_part(what: &str, part: &str) -> Result<(), EnvelopeError> {
    let bad = |problem: &str| EnvelopeError::InvalidSubject(format!("{what} {part:?} {problem}"));
    if part.is_empty() {
        return Err(bad("is empty"));
    }
    if part.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("contains whitespace or a control character"));
    }
    if part.contains(['*', '>']) {
        return Err(bad("contains a wildcard (`*` or `>`)"));
    }
    if part.starts_with('.') || part.ends_with('.') || part.contains("..") {
        return Err(bad("has an empty token (leading, trailing or doubled `.`)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use chrono::TimeZone;

    fn input<'a>(data: EventData<'a>) -> EnvelopeInput<'a> {
        EnvelopeInput {
            id: "evt-1",
            source: "shopify",
            event_type: "order.created",
            subject: Some("820982911946154500"),
            time: Utc
                .with_ymd_and_hms(2026, 11, 29, 6, 40, 24)
                .single()
                .expect("valid test time"),
            data,
            correlation_id: "corr-1",
            webhook_id: uuid::Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0001),
            tenant: Some("shop.myshopify.com"),
            plugin: "shopify@1.2.0",
        }
    }

    /// The envelope as text, and the key order of its top-level object.
    fn keys_in_order(bytes: &[u8]) -> Vec<String> {
        let map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(bytes).expect("envelope is a JSON object");
        // serde_json's Map is sorted unless preserve_order is on, so read the order from
        // the text instead.
        let text = std::str::from_utf8(bytes).expect("utf-8");
        let mut keys: Vec<(usize, String)> = map
            .keys()
            .map(|k| {
                let pos = text
                    .find(&format!("\"{k}\":"))
                    .expect("key appears in text");
                (pos, k.clone())
            })
            .collect();
        keys.sort();
        keys.into_iter().map(|(_, k)| k).collect()
    }

    #[test]
    fn big_numbers_and_whitespace_are_embedded_byte_for_byte() {
        let body =
            br#"{"id": 820982911946154500,  "total_price":"10.00","weight":1.10000000000000008882,
  "line_items":[ {"id":123456789012345678901234567890} ]}"#;
        let out = encode(&input(EventData::Json(body))).expect("encodes");
        let text = std::str::from_utf8(&out).expect("utf-8");
        let body_text = std::str::from_utf8(body).expect("utf-8");
        assert!(
            text.contains(&format!("\"data\":{body_text}")),
            "payload not embedded unchanged: {text}"
        );
        assert!(text.contains("820982911946154500"));
        assert!(text.contains("123456789012345678901234567890"));
    }

    #[test]
    fn body_that_is_json_is_embedded_as_json() {
        let body = br#"{"object":"event","created":1700000000}"#;
        let out = encode(&input(EventData::Body {
            bytes: body,
            content_type: Some("application/json; charset=utf-8"),
        }))
        .expect("encodes");
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["datacontenttype"], "application/json");
        assert_eq!(v["data"]["created"], 1_700_000_000);
        assert!(v.get("data_base64").is_none());
    }

    #[test]
    fn a_json_body_is_located_and_the_envelope_rebuilt_from_it() {
        // Whitespace around the value is not part of the embedded data.
        let body = b" \r\n{\"id\": 820982911946154500, \"note\":\"a \\\"quoted\\\" word\"}\n\t";
        let encoded = encode_located(&input(EventData::Body {
            bytes: body,
            content_type: Some("application/json"),
        }))
        .expect("encodes");
        let at = encoded.body_at.expect("the data is the body");
        let data = embedded_body(body);
        assert_eq!(data.first(), Some(&b'{'));
        assert_eq!(data.last(), Some(&b'}'));
        assert_eq!(&encoded.bytes[at..at + data.len()], data);

        let stored = without_body(&encoded.bytes, at, body).expect("body found at its offset");
        assert_eq!(stored.len(), encoded.bytes.len() - data.len());
        assert!(!stored.windows(6).any(|w| w == b"quoted"), "body left in");
        let rebuilt = with_body(&stored, at, body).expect("offset within the stored bytes");
        assert_eq!(rebuilt, encoded.bytes);
    }

    #[test]
    fn only_a_body_embedded_verbatim_is_located() {
        let plugin_data = encode_located(&input(EventData::Json(br#"{"a":1}"#))).expect("encodes");
        assert_eq!(plugin_data.body_at, None, "plugin output is not the body");
        let form = encode_located(&input(EventData::Body {
            bytes: b"a=1&b=2",
            content_type: None,
        }))
        .expect("encodes");
        assert_eq!(form.body_at, None, "base64 is not the body's bytes");
    }

    #[test]
    fn a_wrong_offset_is_refused_not_spliced() {
        let body = br#"{"a":1}"#;
        let encoded = encode_located(&input(EventData::Body {
            bytes: body,
            content_type: None,
        }))
        .expect("encodes");
        let at = encoded.body_at.expect("located");
        assert_eq!(without_body(&encoded.bytes, at + 1, body), None);
        assert_eq!(
            without_body(&encoded.bytes, encoded.bytes.len(), body),
            None
        );
        assert_eq!(with_body(b"short", 6, body), None);
    }

    #[test]
    fn non_json_body_goes_to_data_base64_with_its_content_type() {
        let body = b"payload=%7B%22a%22%3A1%7D&token=x";
        let out = encode(&input(EventData::Body {
            bytes: body,
            content_type: Some("application/x-www-form-urlencoded"),
        }))
        .expect("encodes");
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["datacontenttype"], "application/x-www-form-urlencoded");
        assert!(v.get("data").is_none());
        let decoded = STANDARD
            .decode(v["data_base64"].as_str().expect("string"))
            .expect("base64");
        assert_eq!(decoded, body);
    }

    #[test]
    fn non_json_body_without_content_type_defaults_to_octet_stream() {
        let body = [0xff_u8, 0x00, 0x10, b'{'];
        let out = encode(&input(EventData::Body {
            bytes: &body,
            content_type: None,
        }))
        .expect("encodes");
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["datacontenttype"], "application/octet-stream");
        let decoded = STANDARD
            .decode(v["data_base64"].as_str().expect("string"))
            .expect("base64");
        assert_eq!(decoded, body);
    }

    #[test]
    fn json_data_that_is_not_json_is_an_error() {
        let err = encode(&input(EventData::Json(b"{not json"))).unwrap_err();
        assert!(matches!(err, EnvelopeError::InvalidJson(_)), "{err:?}");
    }

    #[test]
    fn field_set_and_values_are_exactly_as_spec() {
        let out = encode(&input(EventData::Json(br#"{"id":1}"#))).expect("encodes");
        assert_eq!(
            keys_in_order(&out),
            [
                "specversion",
                "id",
                "source",
                "type",
                "subject",
                "time",
                "datacontenttype",
                "data",
                "correlationid",
                "webhookid",
                "tenant",
                "plugin",
            ]
        );
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["id"], "evt-1");
        assert_eq!(v["source"], "hookgate/shopify");
        assert_eq!(v["type"], "order.created");
        assert_eq!(v["subject"], "820982911946154500");
        assert_eq!(v["time"], "2026-11-29T06:40:24Z");
        assert_eq!(v["datacontenttype"], "application/json");
        assert_eq!(v["correlationid"], "corr-1");
        assert_eq!(v["webhookid"], "01930000-0000-7000-8000-000000000001");
        assert_eq!(v["tenant"], "shop.myshopify.com");
        assert_eq!(v["plugin"], "shopify@1.2.0");
    }

    #[test]
    fn time_keeps_sub_second_precision_in_utc() {
        let mut i = input(EventData::Json(b"{}"));
        i.time = Utc
            .timestamp_opt(1_700_000_000, 123_000_000)
            .single()
            .expect("valid");
        let v: serde_json::Value =
            serde_json::from_slice(&encode(&i).expect("encodes")).expect("json");
        assert_eq!(v["time"], "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn tenant_and_subject_are_omitted_when_none() {
        let mut i = input(EventData::Json(b"{}"));
        i.tenant = None;
        i.subject = None;
        let out = encode(&i).expect("encodes");
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert!(v.get("tenant").is_none(), "{v}");
        assert!(v.get("subject").is_none(), "{v}");
        assert!(!std::str::from_utf8(&out).expect("utf-8").contains("null"));
    }

    #[test]
    fn empty_required_attributes_are_refused() {
        let mut i = input(EventData::Json(b"{}"));
        i.id = "";
        assert!(matches!(
            encode(&i),
            Err(EnvelopeError::EmptyAttribute("id"))
        ));
    }

    #[test]
    fn subject_joins_valid_parts() {
        assert_eq!(
            subject("webhooks", "shopify", "order.created").expect("valid"),
            "webhooks.shopify.order.created"
        );
        assert_eq!(
            subject("acme.webhooks", "stripe", "customer.subscription.updated").expect("valid"),
            "acme.webhooks.stripe.customer.subscription.updated"
        );
    }

    #[test]
    fn subject_refuses_bad_parts_and_names_the_problem() {
        let cases = [
            (("", "shopify", "order.created"), "prefix", "empty"),
            (("webhooks", "", "order.created"), "source", "empty"),
            (("webhooks", "shopify", ""), "event type", "empty"),
            (("webhooks", "sho pify", "x"), "source", "whitespace"),
            (
                ("webhooks", "shopify", "order\tcreated"),
                "event type",
                "whitespace",
            ),
            (("web*", "shopify", "x"), "prefix", "wildcard"),
            (("webhooks", "shopify", "order.>"), "event type", "wildcard"),
            (
                ("webhooks", "shopify", "order..created"),
                "event type",
                "empty token",
            ),
            ((".webhooks", "shopify", "x"), "prefix", "empty token"),
            (("webhooks.", "shopify", "x"), "prefix", "empty token"),
            (
                ("webhooks", "shopify", "order."),
                "event type",
                "empty token",
            ),
        ];
        for ((p, s, t), part, problem) in cases {
            let err = subject(p, s, t).expect_err("must be refused");
            let msg = err.to_string();
            assert!(
                msg.contains(part) && msg.contains(problem),
                "{p:?} {s:?} {t:?}: {msg}"
            );
        }
    }
}
