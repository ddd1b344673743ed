//! Native tests of the Shopify plugin: the shared signature vectors, the mapping table and
//! the header and payload edge cases.

use hookgate_plugin_sdk::{
    HashAlgorithm, MapError, MapOutcome, Mapping, Request, Settings, SourcePlugin, TestHost,
    Timestamp, VerifyError, base64_encode,
};
use serde_json::Value;

use crate::Shopify;

#[path = "../../test_vectors.rs"]
mod test_vectors;
use test_vectors::{vector_host, vector_request, vectors};

fn events(req: &Request) -> Mapping {
    match Shopify::map(req, &Settings::new()) {
        Ok(MapOutcome::Events(m)) => m,
        other => panic!("expected events, got {other:?}"),
    }
}

#[test]
fn signature_vectors() {
    for v in vectors("shopify") {
        let name = v["name"].as_str().expect("name");
        let host = vector_host(&v);
        let req = vector_request(&v);
        let result = Shopify::verify(&req, &host.handles(), &[], &Settings::new());
        match v["expect"].as_str() {
            Some("valid") => {
                let verified = result.unwrap_or_else(|e| panic!("{name}: refused: {e}"));
                // The vectors' signing secret is the last one listed (the others are old).
                let last = v["secrets"].as_array().expect("secrets").len() - 1;
                assert_eq!(
                    verified.secret.and_then(|h| host.secret_index(h)),
                    Some(last),
                    "{name}: matched secret"
                );
                let m = events(&req);
                let headers = &v["headers"];
                let topic = headers["X-Shopify-Topic"].as_str().expect("topic");
                assert_eq!(m.topic, topic, "{name}");
                assert_eq!(m.events.len(), 1, "{name}");
                assert_eq!(m.events[0].event_type, crate::event_type(topic), "{name}");
                assert!(m.events[0].data.is_none(), "{name}: raw body as data");
                let body: Value = serde_json::from_str(v["body"].as_str().expect("body"))
                    .expect("vector body is JSON");
                // Compare with the id's digits as written in the body, not via f64.
                let id = body["id"].to_string();
                assert!(
                    v["body"]
                        .as_str()
                        .expect("body")
                        .contains(&format!("\"id\":{id}"))
                );
                assert_eq!(m.events[0].subject.as_deref(), Some(id.as_str()), "{name}");
                assert_eq!(
                    m.tenant.as_deref(),
                    headers["X-Shopify-Shop-Domain"].as_str(),
                    "{name}"
                );
                assert_eq!(
                    m.idempotency_key,
                    Some(format!(
                        "{topic}:{}",
                        headers["X-Shopify-Event-Id"].as_str().expect("event id")
                    )),
                    "{name}"
                );
                assert_eq!(
                    m.occurred_at,
                    Some(Timestamp::Rfc3339(
                        headers["X-Shopify-Triggered-At"]
                            .as_str()
                            .expect("triggered at")
                            .to_owned()
                    )),
                    "{name}"
                );
            }
            Some("invalid") => {
                assert!(result.is_err(), "{name}: accepted: {result:?}");
            }
            other => panic!("{name}: unknown expectation {other:?}"),
        }
    }
}

const SECRET: &str = "test-secret";

/// A request signed the way Shopify does, with the given extra headers.
fn signed(body: &str, headers: &[(&str, &str)]) -> (TestHost, Request) {
    let host = TestHost::new().secrets(["other", SECRET]);
    let mac = host.sign(1, HashAlgorithm::Sha256, body.as_bytes());
    let mut req = Request::post().with_header("X-Shopify-Hmac-Sha256", base64_encode(&mac));
    for (k, v) in headers {
        req = req.with_header(*k, *v);
    }
    (host, req.with_body(body.as_bytes()))
}

#[test]
fn verify_reports_the_matching_secret_and_refuses_others() {
    let (host, req) = signed(r#"{"id":1}"#, &[]);
    let ok = Shopify::verify(&req, &host.handles(), &[], &Settings::new()).expect("valid");
    assert_eq!(ok.secret.and_then(|h| host.secret_index(h)), Some(1));
    // With only the other secret configured it is a mismatch.
    let only_other = [host.handles()[0]];
    assert!(matches!(
        Shopify::verify(&req, &only_other, &[], &Settings::new()),
        Err(VerifyError::Mismatch(_))
    ));
    assert!(matches!(
        Shopify::verify(&req, &[], &[], &Settings::new()),
        Err(VerifyError::Mismatch(_))
    ));
}

#[test]
fn verify_accepts_the_unprefixed_header() {
    let host = TestHost::new().secrets([SECRET]);
    let body = br#"{"id":2}"#;
    let mac = host.sign(0, HashAlgorithm::Sha256, body);
    let req = Request::post()
        .with_header("Shopify-Hmac-Sha256", base64_encode(&mac))
        .with_body(&body[..]);
    let ok = Shopify::verify(&req, &host.handles(), &[], &Settings::new()).expect("valid");
    assert_eq!(ok.secret, Some(host.handles()[0]));
}

#[test]
fn verify_classifies_bad_signatures() {
    let host = TestHost::new().secrets([SECRET]);
    let handles = host.handles();
    let check = |value: Option<&str>| {
        let mut req = Request::post().with_body(&b"{}"[..]);
        if let Some(v) = value {
            req = req.with_header("X-Shopify-Hmac-Sha256", v);
        }
        Shopify::verify(&req, &handles, &[], &Settings::new())
    };
    assert!(matches!(check(None), Err(VerifyError::MissingSignature(_))));
    assert!(matches!(
        check(Some("")),
        Err(VerifyError::MissingSignature(_))
    ));
    assert!(matches!(
        check(Some("not base64!")),
        Err(VerifyError::MalformedSignature(_))
    ));
    // Valid base64 of the wrong length (16 bytes).
    assert!(matches!(
        check(Some("AAAAAAAAAAAAAAAAAAAAAA==")),
        Err(VerifyError::MalformedSignature(_))
    ));
    // Right length, wrong MAC.
    assert!(matches!(
        check(Some(&base64_encode(&[7u8; 32]))),
        Err(VerifyError::Mismatch(_))
    ));
}

#[test]
fn every_listed_topic_maps_to_its_event_type() {
    let table = [
        ("orders/create", "order.created"),
        ("orders/updated", "order.updated"),
        ("orders/paid", "order.paid"),
        ("orders/cancelled", "order.cancelled"),
        ("orders/fulfilled", "order.fulfilled"),
        ("products/create", "product.created"),
        ("products/update", "product.updated"),
        ("products/delete", "product.deleted"),
        ("inventory_levels/update", "inventory_level.updated"),
        ("inventory_items/create", "inventory_item.created"),
        ("inventory_items/update", "inventory_item.updated"),
        ("inventory_items/delete", "inventory_item.deleted"),
        ("app/uninstalled", "app.uninstalled"),
        ("shop/update", "shop.updated"),
        ("customers/data_request", "customer.data_requested"),
        ("customers/redact", "customer.redacted"),
        ("shop/redact", "shop.redacted"),
        // Not in the table: `/` becomes `.`.
        ("fulfillments/create", "fulfillments.create"),
        ("app_subscriptions/update", "app_subscriptions.update"),
    ];
    let _host = TestHost::new();
    for (topic, expected) in table {
        let req = Request::post()
            .with_topic(topic.replace('/', "-"))
            .with_body(&br#"{"id":5}"#[..]);
        let m = events(&req);
        assert_eq!(m.topic, topic);
        assert_eq!(m.events[0].event_type, expected, "{topic}");
    }
}

#[test]
fn topic_from_path_in_both_forms_then_header() {
    let _host = TestHost::new();
    let body = &br#"{"id":5}"#[..];
    let dashed = Request::post().with_topic("orders-create").with_body(body);
    let slashed = Request::post().with_topic("orders/create").with_body(body);
    let header = Request::post()
        .with_header("X-Shopify-Topic", "orders/paid")
        .with_body(body);
    let unprefixed = Request::post()
        .with_header("Shopify-Topic", "products/delete")
        .with_body(body);
    let path_wins = Request::post()
        .with_topic("orders-updated")
        .with_header("X-Shopify-Topic", "orders/create")
        .with_body(body);
    assert_eq!(events(&dashed).topic, "orders/create");
    assert_eq!(events(&slashed).topic, "orders/create");
    assert_eq!(events(&header).events[0].event_type, "order.paid");
    assert_eq!(events(&unprefixed).events[0].event_type, "product.deleted");
    assert_eq!(events(&path_wins).topic, "orders/updated");

    let none = Request::post().with_body(body);
    assert!(matches!(
        Shopify::map(&none, &Settings::new()),
        Err(MapError::MissingField(_))
    ));
    for bad in [
        "orders create",
        "orders.create",
        "orders/*",
        "orders//create",
        "/",
    ] {
        let req = Request::post().with_topic(bad).with_body(body);
        assert!(
            matches!(
                Shopify::map(&req, &Settings::new()),
                Err(MapError::UnsupportedTopic(_))
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn headers_in_either_spelling_fill_the_mapping() {
    let _host = TestHost::new();
    let body = &br#"{"id":5}"#[..];
    let prefixed = Request::post()
        .with_header("X-Shopify-Topic", "orders/create")
        .with_header("X-Shopify-Shop-Domain", "a.myshopify.com")
        .with_header("X-Shopify-Event-Id", "ev-1")
        .with_header("X-Shopify-Webhook-Id", "wh-1")
        .with_header("X-Shopify-Triggered-At", "2025-11-24T15:20:00.000Z")
        .with_body(body);
    let m = events(&prefixed);
    assert_eq!(m.tenant.as_deref(), Some("a.myshopify.com"));
    assert_eq!(m.idempotency_key.as_deref(), Some("orders/create:ev-1"));
    assert_eq!(
        m.occurred_at,
        Some(Timestamp::Rfc3339("2025-11-24T15:20:00.000Z".into()))
    );
    assert_eq!(
        Shopify::tenant_hint(&prefixed, &Settings::new()).as_deref(),
        Some("a.myshopify.com")
    );

    let unprefixed = Request::post()
        .with_header("Shopify-Topic", "orders/paid")
        .with_header("Shopify-Shop-Domain", "b.myshopify.com")
        .with_header("Shopify-Webhook-Id", "wh-2")
        .with_header("Shopify-Triggered-At", "2025-11-24T15:20:00+01:00")
        .with_body(body);
    let m = events(&unprefixed);
    assert_eq!(m.tenant.as_deref(), Some("b.myshopify.com"));
    assert_eq!(
        m.idempotency_key.as_deref(),
        Some("orders/paid:wh-2"),
        "webhook id when the event id is absent"
    );
    assert_eq!(
        m.occurred_at,
        Some(Timestamp::Rfc3339("2025-11-24T15:20:00+01:00".into()))
    );
    assert_eq!(
        Shopify::tenant_hint(&unprefixed, &Settings::new()).as_deref(),
        Some("b.myshopify.com")
    );

    let bare = Request::post().with_topic("orders-create").with_body(body);
    let m = events(&bare);
    assert_eq!(m.idempotency_key, None, "host falls back to the body hash");
    assert_eq!(m.tenant, None);
    assert_eq!(m.occurred_at, None);
    assert_eq!(Shopify::tenant_hint(&bare, &Settings::new()), None);
}

#[test]
fn garbage_triggered_at_is_ignored_with_a_warning() {
    let host = TestHost::new();
    let req = Request::post()
        .with_topic("orders-create")
        .with_header("X-Shopify-Triggered-At", "yesterday")
        .with_body(&br#"{"id":5}"#[..]);
    assert_eq!(events(&req).occurred_at, None);
    assert_eq!(host.logs().len(), 1);
}

#[test]
fn big_integer_ids_keep_every_digit() {
    let _host = TestHost::new();
    for (body, subject) in [
        (r#"{"id":820982911946154500}"#, Some("820982911946154500")),
        (
            r#"{ "id" : 18446744073709551617 , "x": 1.5}"#,
            Some("18446744073709551617"),
        ),
        (
            r#"{"id":"gid://shopify/Order/1"}"#,
            Some("gid://shopify/Order/1"),
        ),
        (r#"{"id":null}"#, None),
        (r#"{"name":"no id"}"#, None),
    ] {
        let req = Request::post()
            .with_topic("orders-create")
            .with_body(body.as_bytes());
        assert_eq!(events(&req).events[0].subject.as_deref(), subject, "{body}");
    }
}

#[test]
fn compliance_topics_take_their_subject_from_what_they_are_about() {
    let _host = TestHost::new();
    let cases = [
        (
            "customers/redact",
            r#"{"shop_id":954889,"shop_domain":"s.myshopify.com","customer":{"id":191167,"email":"x@y"},"orders_to_redact":[1]}"#,
            Some("191167"),
        ),
        (
            "customers/data_request",
            r#"{"shop_id":954889,"customer":{"id":191168},"data_request":{"id":9999}}"#,
            Some("191168"),
        ),
        (
            "shop/redact",
            r#"{"shop_id":954889,"shop_domain":"s.myshopify.com"}"#,
            Some("954889"),
        ),
        (
            "shop/redact",
            r#"{"shop_domain":"s.myshopify.com"}"#,
            Some("s.myshopify.com"),
        ),
        ("customers/redact", r#"{"shop_id":954889}"#, None),
    ];
    for (topic, body, subject) in cases {
        let req = Request::post().with_topic(topic).with_body(body.as_bytes());
        assert_eq!(
            events(&req).events[0].subject.as_deref(),
            subject,
            "{topic} {body}"
        );
    }
    let bad_customer = Request::post()
        .with_topic("customers/redact")
        .with_body(&br#"{"customer":[191167]}"#[..]);
    assert!(matches!(
        Shopify::map(&bad_customer, &Settings::new()),
        Err(MapError::MalformedPayload(_))
    ));
}

#[test]
fn bodies_that_are_not_json_objects_are_malformed() {
    let _host = TestHost::new();
    for body in [
        &b"not json"[..],
        b"",
        b"[1,2]",
        b"[820982911946154500, null, null, null]",
        b"\"text\"",
        b"42",
        b"{\"id\":1",
        b"{\"id\":1} trailing",
        b"{\"id\":1,\"id\":2}",
        b"{\"a\":\"\xff\"}",
    ] {
        let req = Request::post().with_topic("orders-create").with_body(body);
        assert!(
            matches!(
                Shopify::map(&req, &Settings::new()),
                Err(MapError::MalformedPayload(_))
            ),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn metadata_describes_the_plugin() {
    let m = Shopify::metadata();
    assert_eq!(m.name, "shopify");
    assert_eq!(m.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(m.retry_window_hours, 4);
}

#[test]
fn rfc3339_check_refuses_what_the_host_would() {
    for ok in [
        "2025-11-24T15:20:00Z",
        "2025-11-24T15:20:00.000Z",
        "2025-11-24t15:20:00.123456-05:30",
    ] {
        assert!(crate::fields::is_rfc3339(ok), "{ok}");
    }
    for bad in [
        "",
        "2025-11-24",
        "2025-11-24T15:20:00",
        "2025-11-24T15:20:00.Z",
        "2025-11-24T15:20:00+0100",
        "2025-11-24T15:20:00Zjunk",
        "１２３４-11-24T15:20:00Z",
        // The right shape, no such day: the host would refuse the whole mapping.
        "2025-13-24T15:20:00Z",
        "2025-02-30T15:20:00Z",
    ] {
        assert!(!crate::fields::is_rfc3339(bad), "{bad}");
    }
}

#[test]
fn verify_refuses_a_url_topic_that_contradicts_the_signed_header() {
    // The signature covers only the body: a delivery replayed to another topic's URL must
    // not become that topic's event. The header is as unsigned as the URL, but Shopify
    // sets it, so a contradiction means the URL was changed.
    let body = r#"{"id":6}"#;
    let verify = |header: Option<&str>, url: Option<&str>| {
        let headers: Vec<(&str, &str)> =
            header.map(|h| ("X-Shopify-Topic", h)).into_iter().collect();
        let (host, mut req) = signed(body, &headers);
        if let Some(url) = url {
            req = req.with_topic(url);
        }
        Shopify::verify(&req, &host.handles(), &[], &Settings::new())
    };
    let header = Some("orders/create");
    assert!(matches!(
        verify(header, Some("orders-updated")),
        Err(VerifyError::Rejected(_))
    ));
    assert!(matches!(
        verify(header, Some("orders/cancelled")),
        Err(VerifyError::Rejected(_))
    ));
    for agreeing in ["orders-create", "orders/create"] {
        assert!(verify(header, Some(agreeing)).is_ok(), "{agreeing}");
    }
    // Either alone is fine.
    assert!(verify(header, None).is_ok());
    assert!(verify(None, Some("orders-updated")).is_ok());
}
