//! The admin API's front door and its read-only endpoints; health and metrics.

use std::time::Duration;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_path_needs_the_token() {
    let harness = Harness::start(Options::new(Backend::Embedded)).await;
    let paths = [
        "/api/v1/admin/webhooks",
        "/api/v1/admin/plugins",
        "/api/v1/admin/nope",
        "/api/v1/admin/dlq",
        "/api/v1/admin",
    ];
    for path in paths {
        for auth in [None, Some("Bearer wrong"), Some(ADMIN_TOKEN)] {
            let headers: Vec<(String, String)> = auth
                .map(|a| vec![("authorization".into(), a.into())])
                .unwrap_or_default();
            let reply = harness
                .client
                .get(&harness.url(path), &headers)
                .await
                .expect("get");
            assert_eq!(reply.status, 401, "{path} with {auth:?}");
            assert_eq!(reply.json()["error"], "unauthorized");
        }
    }
    let listed = harness.admin_get("/api/v1/admin/webhooks").await;
    assert_eq!(listed.status, 200);
    let unknown = harness.admin_get("/api/v1/admin/nope").await;
    assert_eq!(
        unknown.status, 404,
        "unknown admin paths are 404 only behind the token"
    );
    harness.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_lists_filters_and_pages_stored_webhooks() {
    let harness = Harness::start(Options::new(Backend::Production)).await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let reply = harness
            .post(&shopify_order(&format!(
                "page-{n}-{}",
                uuid::Uuid::new_v4()
            )))
            .await;
        ids.push(reply.json()["id"].as_str().expect("id").to_owned());
    }
    harness
        .post(&stripe_payment(&format!(
            "evt_{}",
            uuid::Uuid::new_v4().simple()
        )))
        .await;

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let mut path = "/api/v1/admin/webhooks?source=shopify&limit=2".to_owned();
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let page = harness.admin_get(&path).await.json();
        for item in page["items"].as_array().expect("items") {
            assert_eq!(item["source"], "shopify");
            seen.push(item["id"].as_str().expect("id").to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids, "newest first, no gap, no repeat");

    let stripe = harness
        .admin_get("/api/v1/admin/webhooks?source=stripe&tenant=acct_1032D82eZvKYlo2C")
        .await
        .json();
    assert_eq!(stripe["items"].as_array().map(Vec::len), Some(1));
    let none = harness
        .admin_get("/api/v1/admin/webhooks?since=2999-01-01T00:00:00Z")
        .await
        .json();
    assert_eq!(none["items"].as_array().map(Vec::len), Some(0));
    let bad = harness
        .admin_get("/api/v1/admin/webhooks?status=bogus")
        .await;
    assert_eq!(bad.status, 400);

    let detail = harness
        .admin_get(&format!("/api/v1/admin/webhooks/{}", ids[0]))
        .await
        .json();
    assert_eq!(detail["id"], ids[0].as_str());
    assert_eq!(detail["events"].as_array().map(Vec::len), Some(1));
    assert!(
        detail["body"]
            .as_str()
            .is_some_and(|b| b.contains("820982911946154508"))
    );
    assert!(detail["headers"].as_array().is_some_and(|h| !h.is_empty()));
    assert_eq!(detail["headers_error"], serde_json::Value::Null);

    // Headers edited into something unreadable: the entry is still listed and shown.
    {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&postgres_url())
            .await
            .expect("PostgreSQL");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE \"{}\".webhook_entry_records SET headers = '[[' WHERE id = $1::uuid",
            harness.names.schema
        )))
        .bind(&ids[0])
        .execute(&mut conn)
        .await
        .expect("corrupt the headers");
    }
    let listing = harness
        .admin_get("/api/v1/admin/webhooks?source=shopify")
        .await;
    assert_eq!(listing.status, 200);
    let corrupt = harness
        .admin_get(&format!("/api/v1/admin/webhooks/{}", ids[0]))
        .await;
    assert_eq!(corrupt.status, 200);
    let corrupt = corrupt.json();
    assert_eq!(corrupt["headers"], serde_json::Value::Null);
    assert!(
        corrupt["headers_error"]
            .as_str()
            .is_some_and(|e| e.contains("headers cannot be read")),
        "{corrupt}"
    );
    assert_eq!(corrupt["events"].as_array().map(Vec::len), Some(1));

    let plugins = harness.admin_get("/api/v1/admin/plugins").await.json();
    let names: Vec<&str> = plugins["plugins"]
        .as_array()
        .expect("plugins")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(
        names.contains(&"shopify") && names.contains(&"stripe"),
        "{plugins}"
    );
    let text = plugins.to_string();
    assert!(
        !text.contains(SHOPIFY_SECRET) && !text.contains(STRIPE_SECRET),
        "no secret in admin output"
    );
    harness.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_every_dependency_and_metrics_are_prefixed() {
    let harness = Harness::start(Options::new(Backend::Production)).await;
    harness
        .post(&shopify_order(&uuid::Uuid::new_v4().to_string()))
        .await;
    // The relay counts its backlog every 5 s; on a busy machine the first count may come
    // after the gateway answers, and until then the report says "not counted yet".
    let body = eventually(Duration::from_secs(10), || async {
        let health = harness
            .client
            .get(&harness.url("/api/v1/health"), &[])
            .await
            .expect("health");
        assert_eq!(health.status, 200);
        let body = health.json();
        (body["outbox"]["status"] != "unknown").then_some(body)
    })
    .await
    .expect("the relay counted its backlog within 10 s");
    assert_eq!(body["status"], "ok", "{body}");
    assert_eq!(body["storage"]["kind"], "postgres");
    assert_eq!(body["dedupe"]["kind"], "redis");
    assert_eq!(body["bus"]["kind"], "nats");
    assert!(body["outbox"]["backlog"].is_u64(), "{body}");
    assert!(body["version"].is_string());
    for path in ["/api/v1/health/ready", "/api/v1/health/live"] {
        assert_eq!(
            harness
                .client
                .get(&harness.url(path), &[])
                .await
                .expect("get")
                .status,
            200,
            "{path}"
        );
    }
    let metrics = harness
        .client
        .get(&harness.url("/metrics"), &[])
        .await
        .expect("metrics");
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains(r#"hookgate_webhooks_received_total{source="shopify",outcome="accepted"} 1"#),
        "{text}"
    );
    assert!(
        text.contains("hookgate_plugin_call_duration_seconds_bucket"),
        "{text}"
    );
    // The one webhook waited for a writer once, and its batch asked the cache once.
    for timed in [
        "hookgate_storage_queue_wait_seconds_count 1",
        "hookgate_dedupe_lookup_duration_seconds_count 1",
    ] {
        assert!(text.contains(timed), "{timed} missing from {text}");
    }
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        assert!(line.starts_with("hookgate_"), "{line}");
    }
    harness.cleanup().await;
}
