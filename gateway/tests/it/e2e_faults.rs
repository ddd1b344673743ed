//! Fault tests: a dependency dies mid-run and nothing acknowledged is lost.

use std::time::Duration;

use crate::support::*;

/// NATS is down from the start: ingestion goes on, events wait in the outbox, survive a
/// gateway restart, and drain once NATS is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_survives_a_nats_outage_and_a_gateway_restart() {
    let mut nats = OwnNats::reserve();
    let mut options = Options::new(Backend::Production);
    options.nats_url = Some(nats.url());
    let mut harness = Harness::start(options.clone()).await;
    let mut accepted = Vec::new();
    for n in 0..20 {
        let reply = harness
            .post(&shopify_order(&format!(
                "outage-{n}-{}",
                uuid::Uuid::new_v4()
            )))
            .await;
        assert_eq!(
            reply.status, 200,
            "accepted while NATS is down: {:?}",
            reply.body
        );
        accepted.push(reply.json()["id"].as_str().expect("id").to_owned());
    }
    let health = harness
        .client
        .get(&harness.url("/api/v1/health"), &[])
        .await
        .expect("health")
        .json();
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(
        harness
            .client
            .get(&harness.url("/api/v1/health/ready"), &[])
            .await
            .expect("ready")
            .status,
        200
    );
    harness.stop().await;

    nats.start().await;
    let mut restarted = options;
    restarted.reuse = Some(harness.names.clone());
    let second = Harness::start(restarted).await;
    let drained = eventually(Duration::from_secs(30), || async {
        (nats.count(&second.names.stream).await >= 20).then_some(())
    })
    .await;
    assert!(
        drained.is_some(),
        "all 20 events published after recovery, got {}",
        nats.count(&second.names.stream).await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        nats.count(&second.names.stream).await,
        20,
        "each event exactly once in the stream"
    );
    let published = eventually(Duration::from_secs(10), || async {
        let page = second
            .admin_get("/api/v1/admin/webhooks?status=published&limit=100")
            .await
            .json();
        (page["items"].as_array().map(Vec::len) == Some(20)).then_some(())
    })
    .await;
    assert!(published.is_some(), "every entry marked published");
    drop(harness);
    second.cleanup().await;
}

/// NATS is killed in the middle of a run and restarted: every acknowledged webhook's
/// event ends up in the stream exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_killed_mid_run_loses_nothing() {
    let mut nats = OwnNats::reserve();
    nats.start().await;
    let mut options = Options::new(Backend::Production);
    options.nats_url = Some(nats.url());
    let harness = Harness::start(options).await;
    let mut acknowledged = 0u64;
    for n in 0..30 {
        if n == 10 {
            nats.kill();
        }
        if n == 20 {
            nats.start().await;
        }
        let reply = harness
            .post(&stripe_payment(&format!(
                "evt_kill_{n}_{}",
                uuid::Uuid::new_v4().simple()
            )))
            .await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        acknowledged += 1;
    }
    let drained = eventually(Duration::from_secs(40), || async {
        (nats.count(&harness.names.stream).await >= acknowledged).then_some(())
    })
    .await;
    assert!(
        drained.is_some(),
        "{} of {acknowledged} events published",
        nats.count(&harness.names.stream).await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(nats.count(&harness.names.stream).await, acknowledged);
    harness.cleanup().await;
}

/// Redis unreachable: ingestion goes on and storage still refuses the duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_still_one_entry_per_webhook() {
    let redis = Cuttable::start(&services().redis.address).await;
    let mut options = Options::new(Backend::Production);
    options.redis_url = Some(services().redis.url_via(&redis.address()));
    let harness = Harness::start(options).await;
    redis.cut();
    let event_id = uuid::Uuid::new_v4().to_string();
    let first = harness.post(&shopify_order(&event_id)).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(first.json()["status"], "accepted");
    let second = harness.post(&shopify_order(&event_id)).await;
    assert_eq!(second.json()["status"], "duplicate");
    assert_eq!(second.json()["id"], first.json()["id"]);
    let health = harness
        .client
        .get(&harness.url("/api/v1/health"), &[])
        .await
        .expect("health")
        .json();
    assert_eq!(health["dedupe"]["status"], "down", "{health}");
    assert_eq!(
        stream_messages(&harness.names.stream, 1, Duration::from_secs(10))
            .await
            .len(),
        1
    );
    redis.restore();
    harness.cleanup().await;
}

/// PostgreSQL unreachable: 503 and nothing remembered, so the sender's retry gets through
/// once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_down_is_503_and_the_retry_is_accepted() {
    let postgres = Cuttable::start(&services().postgres.address).await;
    let mut options = Options::new(Backend::Production);
    options.storage_url = Some(services().postgres.url_via(&postgres.address()));
    let harness = Harness::start(options).await;
    postgres.cut();
    let webhook = shopify_order(&uuid::Uuid::new_v4().to_string());
    let reply = harness.post(&webhook).await;
    assert_eq!(reply.status, 503, "{:?}", reply.body);
    assert_eq!(reply.json()["error"], "storage_unavailable");
    let ready = harness
        .client
        .get(&harness.url("/api/v1/health/ready"), &[])
        .await
        .expect("ready");
    assert_eq!(ready.status, 503);

    postgres.restore();
    let retried = eventually(Duration::from_secs(20), || async {
        let reply = harness.post(&webhook).await;
        (reply.status == 200).then_some(reply)
    })
    .await
    .expect("the retry is accepted once storage is back");
    assert_eq!(
        retried.json()["status"],
        "accepted",
        "the failed attempt was not remembered as seen"
    );
    assert_eq!(
        stream_messages(&harness.names.stream, 1, Duration::from_secs(10))
            .await
            .len(),
        1
    );
    harness.cleanup().await;
}
