//! The production path: signed webhook -> PostgreSQL + Redis -> JetStream message.

use std::time::Duration;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shopify_webhook_reaches_jetstream_as_a_cloudevent() {
    let harness = Harness::start(Options::new(Backend::Production)).await;
    let event_id = uuid::Uuid::new_v4().to_string();
    let reply = harness.post(&shopify_order(&event_id)).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let body = reply.json();
    assert_eq!(body["status"], "accepted");
    let entry_id = body["id"].as_str().expect("id").to_owned();

    let messages = stream_messages(&harness.names.stream, 1, Duration::from_secs(10)).await;
    assert_eq!(messages.len(), 1, "one event in the stream");
    let message = &messages[0];
    assert_eq!(
        message.subject,
        format!("{}.shopify.order.created", harness.names.prefix)
    );
    let envelope = message.json();
    assert_eq!(
        message.msg_id.as_deref(),
        envelope["id"].as_str(),
        "Nats-Msg-Id is the event id"
    );
    assert_eq!(envelope["specversion"], "1.0");
    assert_eq!(envelope["type"], "order.created");
    assert_eq!(envelope["source"], "hookgate/shopify");
    assert_eq!(envelope["subject"], "820982911946154508");
    assert_eq!(envelope["webhookid"], entry_id);
    assert_eq!(envelope["tenant"], "example-shop.myshopify.com");
    assert_eq!(envelope["datacontenttype"], "application/json");
    assert!(
        envelope["plugin"]
            .as_str()
            .is_some_and(|p| p.starts_with("shopify@"))
    );
    assert!(
        envelope["correlationid"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
    );
    // The payload is embedded unchanged: every digit of the id survives.
    let raw = std::str::from_utf8(&message.payload).expect("utf-8");
    assert!(
        raw.contains(hookgate::sample::SHOPIFY_ORDER.trim_end()),
        "data must be the raw body, byte for byte"
    );

    // The entry is marked published once the bus acknowledged.
    let published = eventually(Duration::from_secs(10), || async {
        let detail = harness
            .admin_get(&format!("/api/v1/admin/webhooks/{entry_id}"))
            .await
            .json();
        (detail["status"] == "published").then_some(detail)
    })
    .await
    .expect("entry becomes published");
    assert_eq!(published["topic"], "orders/create");
    assert_eq!(
        published["idempotency_key"],
        format!("orders/create:{event_id}")
    );
    assert_eq!(published["events"][0]["status"], "published");
    harness.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripe_webhook_reaches_jetstream_with_its_type_unchanged() {
    let harness = Harness::start(Options::new(Backend::Production)).await;
    let event_id = format!("evt_{}", uuid::Uuid::new_v4().simple());
    let reply = harness.post(&stripe_payment(&event_id)).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.json()["status"], "accepted");

    let messages = stream_messages(&harness.names.stream, 1, Duration::from_secs(10)).await;
    assert_eq!(messages.len(), 1);
    let envelope = messages[0].json();
    assert_eq!(
        messages[0].subject,
        format!("{}.stripe.payment_intent.succeeded", harness.names.prefix)
    );
    assert_eq!(envelope["type"], "payment_intent.succeeded");
    assert_eq!(envelope["subject"], "pi_3QbT9xLkdIwHu7ix0f3XwZ7c");
    assert_eq!(envelope["tenant"], "acct_1032D82eZvKYlo2C");
    assert_eq!(envelope["data"]["id"], event_id.as_str());
    harness.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_duplicates_are_answered_with_the_first_id_and_published_once() {
    let harness = Harness::start(Options::new(Backend::Production)).await;
    let event_id = uuid::Uuid::new_v4().to_string();
    let first = harness.post(&shopify_order(&event_id)).await.json();
    assert_eq!(first["status"], "accepted");
    for _ in 0..3 {
        // Shopify's retry: same event id, a new webhook id and timestamp.
        let again = harness.post(&shopify_order(&event_id)).await;
        assert_eq!(again.status, 200);
        assert_eq!(again.json()["status"], "duplicate");
        assert_eq!(again.json()["id"], first["id"]);
    }
    let messages = stream_messages(&harness.names.stream, 1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(stream_count(&harness.names.stream).await, 1);
    let listed = harness
        .admin_get("/api/v1/admin/webhooks?source=shopify")
        .await
        .json();
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(1));
    harness.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicates_store_one_entry_and_one_event() {
    let harness = Harness::start(Options::new(Backend::Production)).await;
    let event_id = format!("evt_{}", uuid::Uuid::new_v4().simple());
    let webhook = stripe_payment(&event_id);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let client = harness.client.clone();
        let base = harness.base.clone();
        let webhook = webhook.clone();
        tasks.push(tokio::spawn(async move {
            client
                .post_webhook(&base, &webhook)
                .await
                .expect("request")
                .json()
        }));
    }
    let mut accepted = 0;
    let mut ids = std::collections::HashSet::new();
    for task in tasks {
        let body = task.await.expect("task");
        match body["status"].as_str() {
            Some("accepted") => accepted += 1,
            Some("duplicate") => {}
            other => panic!("unexpected status {other:?}: {body}"),
        }
        ids.insert(body["id"].as_str().expect("id").to_owned());
    }
    assert_eq!(accepted, 1, "exactly one delivery is stored");
    assert_eq!(ids.len(), 1, "every answer names the same entry");
    stream_messages(&harness.names.stream, 1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stream_count(&harness.names.stream).await, 1);
    harness.cleanup().await;
}
