//! Sample webhooks signed the way each bundled source's platform signs them: what
//! `hookgate send` posts, and what the tests and the load generator use.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Shopify's sample `orders/create` payload (about 3 KB).
pub const SHOPIFY_ORDER: &str = include_str!("../../examples/payloads/shopify-orders-create.json");
/// Stripe's sample `payment_intent.succeeded` event.
pub const STRIPE_PAYMENT: &str =
    include_str!("../../examples/payloads/stripe-payment_intent.succeeded.json");

/// A request ready to send: path below the listen address, headers, body.
#[derive(Debug, Clone)]
pub struct SignedWebhook {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

fn hmac_sha256(secret: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// Shopify: `X-Shopify-Hmac-Sha256` = base64(HMAC-SHA256(secret, raw body)); the topic in
/// the path with `/` written `-`.
pub fn shopify(
    secret: &str,
    topic: &str,
    shop: &str,
    event_id: &str,
    body: &[u8],
) -> SignedWebhook {
    let signature = STANDARD.encode(hmac_sha256(secret.as_bytes(), &[body]));
    SignedWebhook {
        path: format!("/api/v1/webhooks/shopify/{}", topic.replace('/', "-")),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("x-shopify-topic".into(), topic.into()),
            ("x-shopify-hmac-sha256".into(), signature),
            ("x-shopify-shop-domain".into(), shop.into()),
            ("x-shopify-api-version".into(), "2025-10".into()),
            (
                "x-shopify-webhook-id".into(),
                uuid::Uuid::new_v4().to_string(),
            ),
            ("x-shopify-event-id".into(), event_id.into()),
            (
                "x-shopify-triggered-at".into(),
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            ),
        ],
        body: body.to_vec(),
    }
}

/// Stripe: `Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn stripe(secret: &str, timestamp: i64, body: &[u8]) -> SignedWebhook {
    let t = timestamp.to_string();
    let signature = hex::encode(hmac_sha256(secret.as_bytes(), &[t.as_bytes(), b".", body]));
    SignedWebhook {
        path: "/api/v1/webhooks/stripe".into(),
        headers: vec![
            (
                "content-type".into(),
                "application/json; charset=utf-8".into(),
            ),
            ("stripe-signature".into(), format!("t={t},v1={signature}")),
        ],
        body: body.to_vec(),
    }
}

/// The sample Stripe event with a fresh event id, so each one is a new webhook.
pub fn stripe_event(event_id: &str, created: i64) -> Vec<u8> {
    let mut event: serde_json::Value = serde_json::from_str(STRIPE_PAYMENT).unwrap_or_default();
    event["id"] = event_id.into();
    event["created"] = created.into();
    serde_json::to_vec(&event).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shopify_signature_matches_the_vectors_scheme() {
        // Recomputes the first vector of shared/vectors by the documented rule.
        let body = br#"{"id":820982911946154500,"email":"jon@example.com","total_price":"403.00","currency":"USD","line_items":[{"id":866550311766439000,"title":"IPod Nano - 8GB","quantity":1,"price":"199.00"}]}"#;
        let signed = shopify(
            "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",
            "orders/create",
            "s",
            "e",
            body,
        );
        let header = signed
            .headers
            .iter()
            .find(|(k, _)| k == "x-shopify-hmac-sha256")
            .map(|(_, v)| v.as_str());
        assert_eq!(header, Some("w0+F7nWkX9IpibXKlH204nA6q0YnpKJPQwOaEC/X7pM="));
        assert_eq!(signed.path, "/api/v1/webhooks/shopify/orders-create");
    }

    #[test]
    fn samples_are_json() {
        assert!(serde_json::from_str::<serde_json::Value>(SHOPIFY_ORDER).is_ok());
        let event: serde_json::Value =
            serde_json::from_slice(&stripe_event("evt_x", 5)).expect("json");
        assert_eq!(event["id"], "evt_x");
        assert_eq!(event["created"], 5);
    }
}
