//! hookgate source plugin for Shopify webhooks: checks `X-Shopify-Hmac-Sha256` and maps
//! each delivery to one domain event (`orders/create` -> `order.created`, ...).

use hookgate_plugin_sdk::{
    DomainEvent, HashAlgorithm, KeyHandle, MapError, MapOutcome, Mapping, Metadata, Part, Request,
    SecretHandle, Settings, SourcePlugin, Timestamp, Verified, VerifyError,
};
use serde::Deserialize;
use serde_json::value::RawValue;

#[path = "../../fields.rs"]
#[allow(dead_code, reason = "the shared file's id helpers serve other plugins")]
mod fields;
mod json;
#[path = "../../json_object.rs"]
mod json_object;

use json_object::Object;

/// The Shopify source plugin.
pub struct Shopify;

hookgate_plugin_sdk::export_plugin!(Shopify);

/// Length of an HMAC-SHA256.
const MAC_LEN: usize = 32;

/// Reads a Shopify header in its classic `X-Shopify-*` spelling or the unprefixed
/// `Shopify-*` one of Shopify's newer event deliveries; `suffix` is lower case.
fn shopify_header<'a>(req: &'a Request, suffix: &str) -> Option<&'a str> {
    req.headers()
        .iter()
        .find(|(name, _)| {
            let name = name.strip_prefix("x-").unwrap_or(name);
            name.strip_prefix("shopify-")
                .is_some_and(|rest| rest.eq_ignore_ascii_case(suffix))
        })
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty())
}

impl SourcePlugin for Shopify {
    fn metadata() -> Metadata {
        Metadata {
            name: "shopify".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Shopify webhooks (HMAC-SHA256 of the raw body, base64)".into(),
            // "Webhooks will now be retried a total of 8 times over 4 hours" — Shopify
            // developer changelog, 2024-09-10,
            // https://shopify.dev/changelog/updates-to-webhook-retry-mechanism (the older
            // 19 retries over 48 hours no longer apply).
            retry_window_hours: 4,
        }
    }

    fn tenant_hint(req: &Request, _settings: &Settings) -> Option<String> {
        shopify_header(req, "shop-domain").map(str::to_owned)
    }

    fn verify(
        req: &Request,
        secrets: &[SecretHandle],
        _keys: &[KeyHandle],
        _settings: &Settings,
    ) -> Result<Verified, VerifyError> {
        let header = shopify_header(req, "hmac-sha256").ok_or_else(|| {
            VerifyError::MissingSignature("no X-Shopify-Hmac-Sha256 header".into())
        })?;
        let mac = hookgate_plugin_sdk::base64_decode(header).ok_or_else(|| {
            VerifyError::MalformedSignature("X-Shopify-Hmac-Sha256 is not base64".into())
        })?;
        if mac.len() != MAC_LEN {
            return Err(VerifyError::MalformedSignature(format!(
                "X-Shopify-Hmac-Sha256 decodes to {} bytes, not {MAC_LEN}",
                mac.len()
            )));
        }
        let verified = hookgate_plugin_sdk::hmac_verify(
            req,
            secrets,
            HashAlgorithm::Sha256,
            &[Part::Body],
            &[mac],
        )
        .map(Verified::by)
        .ok_or_else(|| VerifyError::Mismatch("no configured secret signs this body".into()))?;
        // The signature covers only the body, so nothing binds the URL's topic to it: a
        // body signed for one topic posted to another topic's URL would become that
        // topic's event. Shopify always sends X-Shopify-Topic; when the URL names a
        // different one, the URL was not Shopify's and the delivery is refused (401).
        if let (Some(url), Some(header)) = (url_topic(req), shopify_header(req, "topic"))
            && url != header
        {
            return Err(VerifyError::Rejected(format!(
                "URL topic {url:?} contradicts X-Shopify-Topic {header:?}"
            )));
        }
        Ok(verified)
    }

    fn map(req: &Request, _settings: &Settings) -> Result<MapOutcome, MapError> {
        let topic = topic(req)?;
        // `from_str`, not `from_slice`: the slice reader lets invalid UTF-8 through in
        // strings it skips, and the body becomes the JSON `data` of the event unchanged.
        let body = std::str::from_utf8(req.body())
            .map_err(|e| MapError::MalformedPayload(format!("body is not UTF-8: {e}")))?;
        let payload: Object<Payload<'_>> = serde_json::from_str(body)
            .map_err(|e| MapError::MalformedPayload(format!("body is not a JSON object: {e}")))?;
        let payload = payload.0;

        let idempotency_key = shopify_header(req, "event-id")
            .or_else(|| shopify_header(req, "webhook-id"))
            .map(|id| format!("{topic}:{id}"));
        let occurred_at = shopify_header(req, "triggered-at").and_then(|at| {
            if fields::is_rfc3339(at) {
                Some(Timestamp::Rfc3339(at.to_owned()))
            } else {
                hookgate_plugin_sdk::warn!("ignoring X-Shopify-Triggered-At: not RFC 3339");
                None
            }
        });
        let subject = subject(&topic, &payload)?;

        Ok(MapOutcome::Events(Mapping {
            idempotency_key,
            tenant: shopify_header(req, "shop-domain").map(str::to_owned),
            events: vec![DomainEvent {
                event_type: event_type(&topic),
                subject,
                data: None,
            }],
            topic,
            occurred_at,
        }))
    }
}

/// The top-level fields the mapping needs; everything else is checked for syntax only.
#[derive(Deserialize)]
struct Payload<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    customer: Option<&'a RawValue>,
    #[serde(borrow, default)]
    shop_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    shop_domain: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct IdOnly<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
}

/// The topic the URL names, normalised: `orders-create` stands for `orders/create`, since
/// Shopify topics contain no `-`.
fn url_topic(req: &Request) -> Option<String> {
    match req.topic().map(str::trim).filter(|t| !t.is_empty())? {
        path if path.contains('/') => Some(path.to_owned()),
        path => Some(path.replace('-', "/")),
    }
}

/// The topic from the URL (`orders-create` standing for `orders/create`, since Shopify
/// topics contain no `-`), else from the topic header.
fn topic(req: &Request) -> Result<String, MapError> {
    let topic = match url_topic(req) {
        Some(path) => path,
        None => shopify_header(req, "topic")
            .ok_or_else(|| {
                MapError::MissingField("topic: neither in the URL nor in X-Shopify-Topic".into())
            })?
            .to_owned(),
    };
    if let (Some(url), Some(header)) = (req.topic(), shopify_header(req, "topic"))
        && header != topic
    {
        hookgate_plugin_sdk::warn!("URL topic {url:?} differs from X-Shopify-Topic {header:?}");
    }
    // The event type derived from it becomes NATS subject tokens.
    let valid = topic.split('/').all(|segment| {
        !segment.is_empty()
            && segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    });
    if valid {
        Ok(topic)
    } else {
        Err(MapError::UnsupportedTopic(format!(
            "{topic:?} is not a Shopify topic"
        )))
    }
}

/// Shopify topic -> hookgate event type, per SPEC.md "Events".
fn event_type(topic: &str) -> String {
    let known = match topic {
        "orders/create" => "order.created",
        "orders/updated" => "order.updated",
        "orders/paid" => "order.paid",
        "orders/cancelled" => "order.cancelled",
        "orders/fulfilled" => "order.fulfilled",
        "products/create" => "product.created",
        "products/update" => "product.updated",
        "products/delete" => "product.deleted",
        "inventory_levels/update" => "inventory_level.updated",
        "inventory_items/create" => "inventory_item.created",
        "inventory_items/update" => "inventory_item.updated",
        "inventory_items/delete" => "inventory_item.deleted",
        "app/uninstalled" => "app.uninstalled",
        "shop/update" => "shop.updated",
        "customers/data_request" => "customer.data_requested",
        "customers/redact" => "customer.redacted",
        "shop/redact" => "shop.redacted",
        other => return other.replace('/', "."),
    };
    known.to_owned()
}

/// The entity id: the payload's `id`; compliance webhooks carry none, so theirs come
/// from the customer or the shop they are about.
fn subject(topic: &str, payload: &Payload<'_>) -> Result<Option<String>, MapError> {
    if let Some(id) = payload.id.and_then(json::id_text) {
        return Ok(Some(id));
    }
    let fallback = match topic {
        "customers/redact" | "customers/data_request" => match payload.customer {
            Some(customer) => {
                let customer: Object<IdOnly<'_>> = serde_json::from_str(customer.get())
                    .map_err(|e| MapError::MalformedPayload(format!("customer: {e}")))?;
                customer.0.id.and_then(json::id_text)
            }
            None => None,
        },
        "shop/redact" => payload
            .shop_id
            .and_then(json::id_text)
            .or_else(|| payload.shop_domain.and_then(json::id_text)),
        _ => None,
    };
    Ok(fallback)
}

#[cfg(test)]
mod tests;
