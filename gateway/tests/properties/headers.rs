//! Header handling: arbitrary names, values (bytes over 0x7F included), repeats and
//! correlation ids, through the whole path a header takes: hyper, the plugin request
//! (values decoded lossily), the stored entry (JSON pairs in SQLite) and the admin view.

use proptest::prelude::*;

use crate::support::{ADMIN_TOKEN, Embedded, SHOPIFY_SECRET, exchange, request, runner};
use hookgate::sample;

/// A field value hyper accepts: visible ASCII, obs-text (0x80-0xFF) and inner blanks; the
/// ends may be blank too, which HTTP strips.
fn value() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        6 => 0x21u8..=0x7E,
        3 => 0x80u8..=0xFF,
        1 => prop::sample::select(vec![b' ', b'\t']),
    ];
    prop::collection::vec(byte, 0..40)
}

/// Names from a small pool, so that repeats (in any case) are common, and fresh ones.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec!["x-p-a", "X-P-A", "x-p-b", "X-p-B"]).prop_map(str::to_owned),
        "x-p-[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}",
    ]
}

fn trimmed(value: &[u8]) -> &[u8] {
    let start = value.iter().position(|b| !matches!(b, b' ' | b'\t'));
    let end = value.iter().rposition(|b| !matches!(b, b' ' | b'\t'));
    match (start, end) {
        (Some(start), Some(end)) => &value[start..=end],
        _ => &[],
    }
}

fn sane_request_id(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= 128 && id.iter().all(u8::is_ascii_graphic)
}

/// A signed Shopify webhook with arbitrary extra headers, an arbitrary shop domain and
/// maybe an `X-Request-Id`: accepted (or stored failed if the domain cannot be a tenant),
/// and the admin view shows every extra header, repeats kept, the name in lower case and
/// the value as sent (UTF-8, lossily), in arrival order except that a repeated name's
/// values follow its first appearance. The correlation id is the one sent
/// when it is sane and a fresh UUID otherwise, in the answer and on the entry alike.
#[test]
fn arbitrary_headers_reach_storage_as_sent() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let embedded = runtime.block_on(Embedded::start(""));
    let addr = embedded.gateway.local_addr;
    let inputs = (
        prop::collection::vec((name(), value()), 0..12),
        prop_oneof![
            "[a-z0-9-]{1,20}\\.myshopify\\.com".prop_map(String::into_bytes),
            value(),
        ],
        prop::option::of(value()),
    );
    let result = runner(256).run(&inputs, |(extra, shop, request_id)| {
        let event_id = uuid::Uuid::new_v4().to_string();
        let body = format!("{{\"id\":1,\"note\":\"{event_id}\"}}");
        // Signed for a placeholder shop; the header then carries the arbitrary bytes
        // (Shopify signs the body only).
        let signed = sample::shopify(
            SHOPIFY_SECRET,
            "orders/create",
            "placeholder",
            &event_id,
            body.as_bytes(),
        );
        let mut headers: Vec<(Vec<u8>, Vec<u8>)> = signed
            .headers
            .iter()
            .filter(|(n, _)| n != "x-shopify-shop-domain")
            .map(|(n, v)| (n.clone().into_bytes(), v.clone().into_bytes()))
            .collect();
        headers.push((b"x-shopify-shop-domain".to_vec(), shop.clone()));
        if let Some(id) = &request_id {
            headers.push((b"x-request-id".to_vec(), id.clone()));
        }
        for (name, value) in &extra {
            headers.push((name.clone().into_bytes(), value.clone()));
        }
        let raw = request(b"POST", signed.path.as_bytes(), &headers, &signed.body);
        let response = runtime
            .block_on(exchange(addr, &raw))
            .map_err(|e| TestCaseError::fail(format!("no answer: {e}")))?;
        prop_assert_eq!(
            response.status,
            200,
            "{:?}",
            String::from_utf8_lossy(&response.body)
        );
        let json = response.json().unwrap_or_default();
        prop_assert_eq!(json["status"].as_str(), Some("accepted"));
        let id = json["id"].as_str().unwrap_or_default().to_owned();

        let correlation = response.header("x-request-id").unwrap_or_default().to_vec();
        match request_id.as_deref().map(trimmed) {
            Some(sent) if sane_request_id(sent) => prop_assert_eq!(&correlation, sent),
            _ => prop_assert!(
                uuid::Uuid::parse_str(&String::from_utf8_lossy(&correlation)).is_ok(),
                "correlation id {:?} is not a fresh UUID",
                String::from_utf8_lossy(&correlation)
            ),
        }

        let auth = format!("Bearer {ADMIN_TOKEN}").into_bytes();
        let view = runtime
            .block_on(exchange(
                addr,
                &request(
                    b"GET",
                    format!("/api/v1/admin/webhooks/{id}").as_bytes(),
                    &[(b"authorization".to_vec(), auth)],
                    b"",
                ),
            ))
            .map_err(|e| TestCaseError::fail(format!("admin view: {e}")))?;
        prop_assert_eq!(view.status, 200);
        let entry = view.json().unwrap_or_default();
        let stored: Vec<(String, String)> =
            serde_json::from_value(entry["headers"].clone()).unwrap_or_default();
        let stored_extra: Vec<(String, String)> = stored
            .iter()
            .filter(|(n, _)| n.starts_with("x-p-"))
            .cloned()
            .collect();
        // The HTTP library keeps headers by name: each name at its first appearance, its
        // repeats after it in arrival order.
        let mut sent_extra: Vec<(String, String)> = Vec::new();
        for (n, v) in &extra {
            let name = n.to_ascii_lowercase();
            let value = String::from_utf8_lossy(trimmed(v)).into_owned();
            match sent_extra.iter().rposition(|(seen, _)| *seen == name) {
                Some(last) => sent_extra.insert(last + 1, (name, value)),
                None => sent_extra.push((name, value)),
            }
        }
        prop_assert_eq!(stored_extra, sent_extra);
        prop_assert_eq!(
            entry["correlation_id"].as_str().map(str::as_bytes),
            Some(correlation.as_slice())
        );
        // The plugin trims the domain (Unicode white space) and takes an empty one as none.
        let shop_text = String::from_utf8_lossy(&shop).trim().to_owned();
        let plain_domain = shop_text.ends_with(".myshopify.com");
        let tenant = (!shop_text.is_empty()).then_some(shop_text.as_str());
        match entry["status"].as_str() {
            Some("failed") => prop_assert!(
                !plain_domain,
                "a plain shop domain failed: {}",
                entry["last_error"]
            ),
            Some("accepted" | "published") => {
                prop_assert_eq!(entry["tenant"].as_str(), tenant)
            }
            other => prop_assert!(false, "entry status {other:?}"),
        }
        Ok(())
    });
    runtime.block_on(embedded.gateway.stop());
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

/// Any header bytes at all, and the signature headers repeated with arbitrary values in
/// any order: the router answers 200 or 401 (never 5xx, never a dropped connection), or
/// hyper refuses the head with one of its documented answers.
#[test]
fn arbitrary_header_bytes_and_repeated_signatures_never_fault() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let embedded = runtime.block_on(Embedded::start(""));
    let addr = embedded.gateway.local_addr;
    let shopify_names = prop::sample::select(vec![
        "x-shopify-hmac-sha256",
        "x-shopify-topic",
        "x-shopify-event-id",
        "x-shopify-webhook-id",
        "x-shopify-shop-domain",
        "x-shopify-triggered-at",
        "shopify-hmac-sha256",
        "shopify-topic",
        "content-length",
        "transfer-encoding",
    ]);
    let header = prop_oneof![
        3 => (shopify_names.prop_map(|n| n.as_bytes().to_vec()), value()),
        1 => (
            prop::collection::vec(any::<u8>(), 0..12),
            prop::collection::vec(any::<u8>(), 0..24)
        ),
    ];
    let inputs = (
        prop::collection::vec(header, 0..8),
        any::<prop::sample::Index>(),
    );
    let result = runner(384).run(&inputs, |(extra, at)| {
        let event_id = uuid::Uuid::new_v4().to_string();
        let body = format!("{{\"id\":2,\"note\":\"{event_id}\"}}");
        let signed = sample::shopify(
            SHOPIFY_SECRET,
            "orders/create",
            "shop.myshopify.com",
            &event_id,
            body.as_bytes(),
        );
        let mut headers: Vec<(Vec<u8>, Vec<u8>)> = signed
            .headers
            .iter()
            .map(|(n, v)| (n.clone().into_bytes(), v.clone().into_bytes()))
            .collect();
        let position = at.index(headers.len() + 1);
        for (offset, header) in extra.into_iter().enumerate() {
            headers.insert(position + offset, header);
        }
        let raw = request(b"POST", signed.path.as_bytes(), &headers, &signed.body);
        let response = runtime
            .block_on(exchange(addr, &raw))
            .map_err(|e| TestCaseError::fail(format!("no answer: {e}")))?;
        if response.header("x-request-id").is_none() {
            prop_assert!(
                [400, 413, 431].contains(&response.status),
                "hyper answered {}",
                response.status
            );
        } else {
            prop_assert!(
                [200, 400, 401, 408, 413].contains(&response.status),
                "router answered {}: {:?}",
                response.status,
                String::from_utf8_lossy(&response.body)
            );
        }
        Ok(())
    });
    runtime.block_on(embedded.gateway.stop());
    if let Err(failure) = result {
        panic!("{failure}");
    }
}
