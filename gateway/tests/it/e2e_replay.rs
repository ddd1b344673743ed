//! Replay and the dead-letter queue end to end: a plugin bug stores webhooks as failed,
//! the fixed plugin is bound, the replay publishes their events on JetStream; bulk replay
//! with its dry run and its job; dead events listed and re-queued; the admin API's guard
//! rails (401, 404, 400) on every new endpoint.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use hookgate::client::Reply;
use hookgate::ingest::SourceRuntime;
use hookgate::sample::{self, SignedWebhook};
use hookgate::store::{EntryStatus, NewEntry, NewEvent, NewWebhook};

use crate::support::*;

pub const CHAOS_SECRET: &str = "chaos-secret-for-replays";

/// A harness with source `buggy`, bound to the chaos plugin set to fail every mapping:
/// the plugin bug. Its deliveries carry what the Shopify plugin needs to map them.
pub async fn with_buggy_source(backend: Backend) -> Harness {
    let mut options = Options::new(backend);
    options.extra = format!(
        "[sources.buggy]\nplugin = \"chaos\"\nsecrets = [\"{CHAOS_SECRET}\"]\n\
         [sources.buggy.settings]\nmap_mode = \"error\"\n"
    );
    options.plugin_files = vec![wasm_dir().join("chaos.wasm")];
    Harness::start(options).await
}

/// A Shopify order delivered to `buggy`, signed the chaos plugin's way (`x-sig`).
pub fn buggy_delivery(n: usize) -> SignedWebhook {
    let event_id = format!("evt-{n}");
    // Distinct bytes per delivery: a webhook the plugin cannot map is keyed by its body.
    let body = format!("{}\n{}", sample::SHOPIFY_ORDER.trim_end(), " ".repeat(n));
    let body = body.into_bytes();
    let mut mac =
        <Hmac<sha2::Sha256> as Mac>::new_from_slice(CHAOS_SECRET.as_bytes()).expect("key");
    mac.update(&body);
    SignedWebhook {
        path: "/api/v1/webhooks/buggy".into(),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("x-sig".into(), hex::encode(mac.finalize().into_bytes())),
            ("x-shopify-topic".into(), "orders/create".into()),
            (
                "x-shopify-shop-domain".into(),
                "example-shop.myshopify.com".into(),
            ),
            ("x-shopify-event-id".into(), event_id),
        ],
        body,
    }
}

/// Binds `source` to `plugin` (loaded in the registry) with no settings: the fixed
/// plugin, as a reload would bind it.
pub fn bind_plugin(harness: &Harness, source: &str, plugin: &str) {
    let state = &harness.gateway.as_ref().expect("running").state;
    let mut table = (*state.pipeline.sources()).clone();
    let old = table.get(source).expect("configured source").clone();
    let plugin = state
        .pipeline
        .plugins()
        .get(plugin)
        .expect("loaded plugin")
        .clone();
    table.insert(
        source.to_owned(),
        Arc::new(SourceRuntime {
            name: old.name.clone(),
            plugin,
            credentials: old.credentials.clone(),
            settings: Arc::new(Vec::new()),
            dedupe_ttl: old.dedupe_ttl,
            secret_ids: old.secret_ids.clone(),
        }),
    );
    state.pipeline.replace_sources(table);
}

pub async fn admin_post(harness: &Harness, path: &str) -> Reply {
    harness
        .client
        .send(
            http::Method::POST,
            &harness.url(path),
            &[("authorization".into(), format!("Bearer {ADMIN_TOKEN}"))],
            Vec::new(),
        )
        .await
        .expect("request")
}

fn ok(reply: &Reply, status: u16) -> serde_json::Value {
    assert_eq!(
        reply.status,
        status,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    reply.json()
}

async fn status_of(harness: &Harness, id: &str) -> String {
    harness
        .admin_get(&format!("/api/v1/admin/webhooks/{id}"))
        .await
        .json()["status"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn until_status(harness: &Harness, id: &str, wanted: &str) {
    let reached = eventually(Duration::from_secs(15), || async {
        (status_of(harness, id).await == wanted).then_some(())
    })
    .await;
    assert!(
        reached.is_some(),
        "webhook {id} never became {wanted}: {}",
        status_of(harness, id).await
    );
}

/// Polls a job until it is no longer queued or running; its last view.
pub async fn finished_job(harness: &Harness, id: &str) -> serde_json::Value {
    eventually(Duration::from_secs(30), || async {
        let job = harness
            .admin_get(&format!("/api/v1/admin/replays/{id}"))
            .await
            .json();
        (!matches!(job["status"].as_str(), Some("queued" | "running"))).then_some(job)
    })
    .await
    .expect("the job finishes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_bug_fixed_then_replayed_publishes_the_events_and_is_recorded() {
    let harness = with_buggy_source(Backend::Production).await;
    let mut ids = Vec::new();
    for n in 0..2 {
        let reply = harness.post(&buggy_delivery(n)).await;
        ids.push(ok(&reply, 200)["id"].as_str().expect("id").to_owned());
    }
    for id in &ids {
        assert_eq!(status_of(&harness, id).await, "failed");
    }
    let dlq = ok(
        &harness.admin_get("/api/v1/admin/dlq?kind=webhook").await,
        200,
    );
    let listed: Vec<&str> = dlq["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["webhook_id"].as_str())
        .collect();
    assert_eq!(listed, [ids[1].as_str(), ids[0].as_str()], "{dlq}");

    // Replayed before the fix: still failing, recorded with the reason, nothing published.
    let early = admin_post(
        &harness,
        &format!("/api/v1/admin/webhooks/{}/replay", ids[0]),
    )
    .await;
    let early = ok(&early, 422);
    assert_eq!(early["error"], "map_failed");
    assert!(
        early["message"]
            .as_str()
            .is_some_and(|m| m.contains("chaos: error requested")),
        "{early}"
    );
    assert_eq!(early["replay"]["outcome"], "failed");
    assert_eq!(early["replay"]["plugin"]["name"], "chaos");
    assert_eq!(status_of(&harness, &ids[0]).await, "failed");

    bind_plugin(&harness, "buggy", "shopify");

    // The dry run shows the event the fixed plugin makes of it, and writes nothing.
    let dry = admin_post(
        &harness,
        &format!("/api/v1/admin/webhooks/{}/replay?dry_run=true", ids[0]),
    )
    .await;
    let dry = ok(&dry, 200);
    assert_eq!(dry["webhook"]["outcome"], "queued", "{dry}");
    assert_eq!(dry["webhook"]["events"][0]["type"], "order.created");
    assert_eq!(dry["webhook"]["plugin"]["name"], "shopify");

    let replayed = admin_post(
        &harness,
        &format!("/api/v1/admin/webhooks/{}/replay", ids[0]),
    )
    .await;
    let replay = ok(&replayed, 200)["replay"].clone();
    assert_eq!(replay["outcome"], "queued", "{replay}");
    assert_eq!(replay["kind"], "remap");
    assert_eq!(replay["webhook_id"], ids[0].as_str());
    assert_eq!(replay["plugin"]["name"], "shopify");
    assert_eq!(replay["plugin"]["version"], "0.1.0");
    assert_eq!(replay["plugin"]["sha256"].as_str().map(str::len), Some(64));
    let by = replay["requested_by"].as_str().expect("requested_by");
    assert!(
        by.starts_with("token:") && !by.contains(ADMIN_TOKEN),
        "{by}"
    );
    let event_id = replay["event_ids"][0]
        .as_str()
        .expect("one new event")
        .to_owned();
    assert_eq!(replay["event_ids"].as_array().map(Vec::len), Some(1));

    let messages = stream_messages(&harness.names.stream, 1, Duration::from_secs(15)).await;
    assert_eq!(messages.len(), 1, "one event out");
    let message = &messages[0];
    assert_eq!(
        message.subject,
        format!("{}.buggy.order.created", harness.names.prefix)
    );
    assert_eq!(message.msg_id.as_deref(), Some(event_id.as_str()));
    let envelope = message.json();
    assert_eq!(envelope["id"], event_id.as_str());
    assert_eq!(envelope["webhookid"], ids[0].as_str());
    assert_eq!(envelope["plugin"], "shopify@0.1.0");
    assert_eq!(envelope["subject"], "820982911946154508");
    until_status(&harness, &ids[0], "published").await;

    // The record is in the webhook's detail, the failed attempt before it.
    let detail = harness
        .admin_get(&format!("/api/v1/admin/webhooks/{}", ids[0]))
        .await
        .json();
    let outcomes: Vec<&str> = detail["replays"]
        .as_array()
        .expect("replays")
        .iter()
        .filter_map(|r| r["outcome"].as_str())
        .collect();
    assert_eq!(outcomes, ["failed", "queued"], "{detail}");
    assert_eq!(detail["topic"], "orders/create");
    assert_eq!(detail["events"][0]["status"], "published");
    // Only the other one is still in the dead-letter queue.
    let dlq = ok(&harness.admin_get("/api/v1/admin/dlq").await, 200);
    assert_eq!(dlq["items"].as_array().map(Vec::len), Some(1), "{dlq}");
    assert_eq!(dlq["items"][0]["webhook_id"], ids[1].as_str());

    // The rest by filter, as a job.
    let job = admin_post(
        &harness,
        "/api/v1/admin/webhooks/replay?source=buggy&status=failed",
    )
    .await;
    let job = ok(&job, 202)["job"]["id"]
        .as_str()
        .expect("job id")
        .to_owned();
    let done = finished_job(&harness, &job).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["progress"]["processed"], 1);
    assert_eq!(done["progress"]["failed"], 0);
    until_status(&harness, &ids[1], "published").await;
    assert_eq!(stream_count(&harness.names.stream).await, 2);
    let metrics = harness
        .client
        .get(&harness.url("/metrics"), &[])
        .await
        .expect("metrics");
    let text = String::from_utf8_lossy(&metrics.body);
    for line in [
        r#"hookgate_replays_total{kind="remap",outcome="queued"} 2"#,
        r#"hookgate_replays_total{kind="remap",outcome="failed"} 1"#,
    ] {
        assert!(text.contains(line), "{line} missing");
    }
    harness.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_replay_dry_run_writes_nothing_and_the_job_publishes_new_ids() {
    let harness = Harness::start(Options::new(Backend::Production)).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let reply = harness
            .post(&shopify_order(&format!(
                "bulk-{n}-{}",
                uuid::Uuid::new_v4()
            )))
            .await;
        ids.push(ok(&reply, 200)["id"].as_str().expect("id").to_owned());
    }
    harness
        .post(&stripe_payment(&format!(
            "evt_{}",
            uuid::Uuid::new_v4().simple()
        )))
        .await;
    let first = stream_messages(&harness.names.stream, 4, Duration::from_secs(15)).await;
    assert_eq!(first.len(), 4);
    let old_ids: Vec<String> = first.iter().filter_map(|m| m.msg_id.clone()).collect();
    for id in &ids {
        until_status(&harness, id, "published").await;
    }

    let none = admin_post(
        &harness,
        "/api/v1/admin/webhooks/replay?source=shopify&plugin_version=9.9.9&dry_run=true",
    )
    .await;
    assert_eq!(ok(&none, 200)["items"].as_array().map(Vec::len), Some(0));
    let dry = admin_post(
        &harness,
        "/api/v1/admin/webhooks/replay?source=shopify&plugin=shopify&plugin_version=0.1.0\
         &dry_run=true&limit=2",
    )
    .await;
    let dry = ok(&dry, 200);
    let page: Vec<&str> = dry["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["webhook_id"].as_str())
        .collect();
    assert_eq!(
        page,
        [ids[0].as_str(), ids[1].as_str()],
        "oldest first: {dry}"
    );
    for item in dry["items"].as_array().expect("items") {
        assert_eq!(item["outcome"], "queued");
        let would = item["events"][0]["id"].as_str().expect("an event");
        assert!(!old_ids.iter().any(|old| old == would), "a new id");
        assert_eq!(item["events"][0]["envelope"]["id"], would);
    }
    let cursor = dry["next_cursor"].as_str().expect("a second page");
    let rest = admin_post(
        &harness,
        &format!("/api/v1/admin/webhooks/replay?source=shopify&dry_run=true&cursor={cursor}"),
    )
    .await;
    let rest = ok(&rest, 200);
    assert_eq!(rest["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(rest["next_cursor"], serde_json::Value::Null);
    // Written: nothing.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(stream_count(&harness.names.stream).await, 4);
    let jobs = harness.admin_get("/api/v1/admin/replays").await.json();
    assert_eq!(jobs["items"].as_array().map(Vec::len), Some(0), "{jobs}");
    for id in &ids {
        let detail = harness
            .admin_get(&format!("/api/v1/admin/webhooks/{id}"))
            .await
            .json();
        assert_eq!(detail["events"].as_array().map(Vec::len), Some(1));
        assert_eq!(detail["replays"].as_array().map(Vec::len), Some(0));
    }

    let started = admin_post(&harness, "/api/v1/admin/webhooks/replay?source=shopify").await;
    let location = started
        .headers
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let started = ok(&started, 202);
    let job_id = started["job"]["id"].as_str().expect("job id").to_owned();
    assert_eq!(location, Some(format!("/api/v1/admin/replays/{job_id}")));
    assert_eq!(started["job"]["filter"]["source"], "shopify");
    let done = finished_job(&harness, &job_id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["progress"]["processed"], 3, "{done}");
    assert_eq!(done["progress"]["replayed"], 3);
    assert_eq!(done["progress"]["events"], 3);
    let records = done["replays"].as_array().expect("records");
    assert_eq!(records.len(), 3);
    assert!(records.iter().all(|r| r["job_id"] == job_id.as_str()));

    let all = stream_messages(&harness.names.stream, 7, Duration::from_secs(15)).await;
    assert_eq!(all.len(), 7, "three new events on top of the four");
    let new_ids: Vec<String> = all[4..].iter().filter_map(|m| m.msg_id.clone()).collect();
    assert!(new_ids.iter().all(|id| !old_ids.contains(id)), "new ids");
    for id in &ids {
        until_status(&harness, id, "published").await;
        let detail = harness
            .admin_get(&format!("/api/v1/admin/webhooks/{id}"))
            .await
            .json();
        let events = detail["events"].as_array().expect("events");
        assert_eq!(events.len(), 2, "the old event is kept: {detail}");
        assert!(events.iter().all(|e| e["status"] == "published"));
    }
    let jobs = harness.admin_get("/api/v1/admin/replays").await.json();
    assert_eq!(jobs["items"][0]["id"], job_id.as_str());
    harness.cleanup().await;
}

/// An entry whose one event waits in the outbox until an hour from now, so the relay
/// leaves it alone while the test dead-letters it.
fn waiting_webhook(harness: &Harness, n: usize) -> NewWebhook {
    let id = uuid::Uuid::now_v7();
    let event_id = uuid::Uuid::now_v7().to_string();
    let received_at = chrono::Utc::now() + chrono::Duration::hours(1);
    NewWebhook {
        entry: NewEntry {
            id,
            source: "shopify".into(),
            topic: Some("orders/create".into()),
            tenant: Some("example-shop.myshopify.com".into()),
            idempotency_key: format!("dlq-{n}-{id}"),
            headers: vec![("content-type".into(), "application/json".into())],
            body: Bytes::from_static(b"{\"id\":1}"),
            received_at,
            status: EntryStatus::Accepted,
            last_error: None,
            plugin: "shopify".into(),
            plugin_version: "0.1.0".into(),
            plugin_sha256: "00".repeat(32),
            correlation_id: format!("corr-{n}"),
        },
        events: vec![NewEvent {
            id: event_id.clone(),
            seq: 0,
            subject: format!("{}.shopify.order.created", harness.names.prefix),
            envelope: Bytes::from(format!("{{\"id\":\"{event_id}\",\"webhookid\":\"{id}\"}}")),
            body_at: None,
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_events_are_listed_and_requeued_then_published() {
    let harness = Harness::start(Options::new(Backend::Production)).await;
    let store = harness
        .gateway
        .as_ref()
        .expect("running")
        .state
        .store
        .clone();
    let webhooks: Vec<NewWebhook> = (0..2).map(|n| waiting_webhook(&harness, n)).collect();
    store.insert_batch(&webhooks).await.expect("insert");
    let events: Vec<String> = webhooks.iter().map(|w| w.events[0].id.clone()).collect();
    for event in &events {
        store
            .mark_dead(event, "bus rejected the event: no stream")
            .await
            .expect("dead");
    }

    let dlq = ok(
        &harness
            .admin_get("/api/v1/admin/dlq?kind=event&source=shopify")
            .await,
        200,
    );
    let listed: Vec<&str> = dlq["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["event_id"].as_str())
        .collect();
    assert_eq!(
        listed,
        [events[1].as_str(), events[0].as_str()],
        "newest first: {dlq}"
    );
    assert_eq!(
        dlq["items"][0]["last_error"],
        "bus rejected the event: no stream"
    );
    let page = ok(&harness.admin_get("/api/v1/admin/dlq?limit=1").await, 200);
    let cursor = page["next_cursor"].as_str().expect("a next page");
    let next = ok(
        &harness
            .admin_get(&format!("/api/v1/admin/dlq?limit=1&cursor={cursor}"))
            .await,
        200,
    );
    assert_eq!(next["items"][0]["event_id"], events[0].as_str());
    let none = ok(
        &harness.admin_get("/api/v1/admin/dlq?source=stripe").await,
        200,
    );
    assert_eq!(none["items"].as_array().map(Vec::len), Some(0));

    let one = admin_post(
        &harness,
        &format!("/api/v1/admin/dlq/replay?event_id={}", events[0]),
    )
    .await;
    let one = ok(&one, 200)["replay"].clone();
    assert_eq!(one["kind"], "requeue");
    assert_eq!(one["outcome"], "requeued");
    assert_eq!(one["event_ids"][0], events[0].as_str());
    let out = stream_messages(&harness.names.stream, 1, Duration::from_secs(15)).await;
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].msg_id.as_deref(), Some(events[0].as_str()));
    until_status(&harness, &webhooks[0].entry.id.to_string(), "published").await;
    let again = admin_post(
        &harness,
        &format!("/api/v1/admin/dlq/replay?event_id={}", events[0]),
    )
    .await;
    assert_eq!(again.status, 404, "no longer dead");

    let job = admin_post(&harness, "/api/v1/admin/dlq/replay?all=true").await;
    let job_id = ok(&job, 202)["job"]["id"].as_str().expect("job").to_owned();
    let done = finished_job(&harness, &job_id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["kind"], "dlq");
    assert_eq!(done["progress"]["events"], 1);
    let out = stream_messages(&harness.names.stream, 2, Duration::from_secs(15)).await;
    assert_eq!(out.len(), 2);
    assert_eq!(out[1].msg_id.as_deref(), Some(events[1].as_str()));
    until_status(&harness, &webhooks[1].entry.id.to_string(), "published").await;
    let empty = ok(&harness.admin_get("/api/v1/admin/dlq").await, 200);
    assert_eq!(empty["items"].as_array().map(Vec::len), Some(0), "{empty}");
    harness.cleanup().await;
}

fn assert_json_error(reply: &Reply, status: u16, code: &str, what: &str) {
    assert_eq!(
        reply.status,
        status,
        "{what}: {}",
        String::from_utf8_lossy(&reply.body)
    );
    let body = reply.json();
    assert_eq!(body["error"], code, "{what}: {body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_endpoints_refuse_without_token_unknown_ids_and_bad_filters() {
    let harness = Harness::start(Options::new(Backend::Embedded)).await;
    let unknown = uuid::Uuid::now_v7();
    let endpoints = [
        (
            http::Method::POST,
            format!("/api/v1/admin/webhooks/{unknown}/replay"),
        ),
        (
            http::Method::POST,
            "/api/v1/admin/webhooks/replay?source=shopify".to_owned(),
        ),
        (http::Method::GET, "/api/v1/admin/dlq".to_owned()),
        (
            http::Method::POST,
            "/api/v1/admin/dlq/replay?all=true".to_owned(),
        ),
        (http::Method::GET, "/api/v1/admin/replays".to_owned()),
        (
            http::Method::GET,
            format!("/api/v1/admin/replays/{unknown}"),
        ),
    ];
    for (method, path) in &endpoints {
        for auth in [None, Some("Bearer wrong-token")] {
            let headers: Vec<(String, String)> = auth
                .map(|a| vec![("authorization".into(), a.into())])
                .unwrap_or_default();
            let reply = harness
                .client
                .send(method.clone(), &harness.url(path), &headers, Vec::new())
                .await
                .expect("request");
            assert_json_error(
                &reply,
                401,
                "unauthorized",
                &format!("{method} {path} {auth:?}"),
            );
        }
    }
    // Nothing was started by the refused calls.
    let jobs = ok(&harness.admin_get("/api/v1/admin/replays").await, 200);
    assert_eq!(jobs["items"].as_array().map(Vec::len), Some(0));

    for path in [
        format!("/api/v1/admin/webhooks/{unknown}/replay"),
        format!("/api/v1/admin/webhooks/{unknown}/replay?dry_run=true"),
        "/api/v1/admin/dlq/replay?event_id=no-such-event".to_owned(),
    ] {
        assert_json_error(&admin_post(&harness, &path).await, 404, "not_found", &path);
    }
    assert_json_error(
        &harness
            .admin_get(&format!("/api/v1/admin/replays/{unknown}"))
            .await,
        404,
        "not_found",
        "unknown job",
    );

    for path in [
        "/api/v1/admin/webhooks/not-a-uuid/replay",
        "/api/v1/admin/webhooks/replay",
        "/api/v1/admin/webhooks/replay?status=bogus",
        "/api/v1/admin/webhooks/replay?since=yesterday",
        "/api/v1/admin/webhooks/replay?since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z",
        "/api/v1/admin/webhooks/replay?source=shopify&bogus=1",
        "/api/v1/admin/webhooks/replay?source=shopify&dry_run=maybe",
        "/api/v1/admin/webhooks/replay?source=shopify&limit=5",
        "/api/v1/admin/dlq/replay",
        "/api/v1/admin/dlq/replay?kind=webhook",
        "/api/v1/admin/dlq/replay?event_id=x&source=shopify",
        "/api/v1/admin/dlq/replay?until=never",
    ] {
        assert_json_error(&admin_post(&harness, path).await, 400, "bad_request", path);
    }
    for path in [
        "/api/v1/admin/dlq?kind=bogus",
        "/api/v1/admin/dlq?cursor=garbage",
        "/api/v1/admin/dlq?since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z",
        "/api/v1/admin/dlq?limit=0",
        "/api/v1/admin/replays/not-a-uuid",
        "/api/v1/admin/replays?cursor=x",
    ] {
        assert_json_error(&harness.admin_get(path).await, 400, "bad_request", path);
    }
    let wrong_method = harness.admin_get("/api/v1/admin/webhooks/replay").await;
    assert_json_error(&wrong_method, 405, "method_not_allowed", "GET on a replay");
    // The dead-letter queue of the embedded store answers too, empty.
    let dlq = ok(&harness.admin_get("/api/v1/admin/dlq").await, 200);
    assert_eq!(dlq["items"].as_array().map(Vec::len), Some(0));
    harness.cleanup().await;
}

async fn hookgate(args: &[&str], token_env: Option<&str>) -> std::process::Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_hookgate"));
    command.args(args).env_clear();
    if let Some(token) = token_env {
        command.env("HOOKGATE_ADMIN_TOKEN", token);
    }
    command.output().await.expect("run hookgate")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_the_dead_letter_queue_and_replays() {
    let harness = with_buggy_source(Backend::Embedded).await;
    let reply = harness.post(&buggy_delivery(0)).await;
    let id = ok(&reply, 200)["id"].as_str().expect("id").to_owned();
    let base = harness.base.clone();
    let with_token = ["--url", base.as_str(), "--token", ADMIN_TOKEN];

    let list = hookgate(&[&["dlq", "list"][..], &with_token[..]].concat(), None).await;
    let stdout = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    assert!(
        stdout.contains(&id) && stdout.contains("webhook"),
        "{stdout}"
    );
    assert!(stdout.contains("chaos: error requested"), "{stdout}");

    // Still the buggy plugin: the replay is refused, and says why.
    let early = hookgate(
        &[&["replay", id.as_str()][..], &with_token[..]].concat(),
        None,
    )
    .await;
    let stderr = String::from_utf8_lossy(&early.stderr);
    assert_eq!(early.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("422 map_failed") && stderr.contains("chaos"),
        "{stderr}"
    );

    bind_plugin(&harness, "buggy", "shopify");
    // The token from the environment this time.
    let replayed = hookgate(
        &["replay", id.as_str(), "--url", base.as_str()],
        Some(ADMIN_TOKEN),
    )
    .await;
    let stdout = String::from_utf8_lossy(&replayed.stdout);
    assert!(
        replayed.status.success(),
        "{}",
        String::from_utf8_lossy(&replayed.stderr)
    );
    assert!(
        stdout.contains("\"queued\"") && stdout.contains(&id),
        "{stdout}"
    );
    until_status(&harness, &id, "published").await;
    assert!(
        read_lines(&harness.events_file())
            .iter()
            .any(|e| e["webhookid"] == id.as_str()),
        "the event reached the file sink"
    );

    // Bulk, waiting for the job: nothing failed is left.
    let bulk = hookgate(
        &[
            &[
                "replay", "--source", "buggy", "--status", "failed", "--wait",
            ][..],
            &with_token[..],
        ]
        .concat(),
        None,
    )
    .await;
    let stderr = String::from_utf8_lossy(&bulk.stderr);
    assert!(bulk.status.success(), "{stderr}");
    assert!(stderr.contains("completed, 0 processed"), "{stderr}");

    let requeue = hookgate(
        &[&["dlq", "replay", "--all", "--wait"][..], &with_token[..]].concat(),
        None,
    )
    .await;
    let stderr = String::from_utf8_lossy(&requeue.stderr);
    assert!(requeue.status.success(), "{stderr}");
    assert!(stderr.contains("completed"), "{stderr}");
    let not_an_id = hookgate(
        &[&["replay", "not-a-uuid"][..], &with_token[..]].concat(),
        None,
    )
    .await;
    assert_eq!(not_an_id.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&not_an_id.stderr).contains("not a webhook id"));

    let empty = hookgate(&[&["dlq", "list"][..], &with_token[..]].concat(), None).await;
    assert!(String::from_utf8_lossy(&empty.stdout).contains("the dead-letter queue is empty"));

    let no_token = hookgate(&["dlq", "list", "--url", base.as_str()], None).await;
    assert_eq!(no_token.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&no_token.stderr).contains("HOOKGATE_ADMIN_TOKEN"));
    let wrong = hookgate(
        &["dlq", "list", "--url", base.as_str(), "--token", "nope"],
        None,
    )
    .await;
    assert_eq!(wrong.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        stderr.contains("401 unauthorized") && !stderr.contains("nope"),
        "{stderr}"
    );
    let unfiltered = hookgate(&[&["replay"][..], &with_token[..]].concat(), None).await;
    assert_eq!(unfiltered.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unfiltered.stderr).contains("needs a filter"));
    harness.cleanup().await;
}
