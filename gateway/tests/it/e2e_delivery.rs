//! Delivery when the bus refuses: per-subject circuit breakers, permanent publish errors
//! dead-lettered at once, the attempts budget, and the retention purge from the CLI.
//!
//! The bus failures are real JetStream refusals, set up with streams the test creates
//! (`create_stream = false`): a stream full with `discard = new` refuses for a while (a
//! transient failure, until it is purged), and a subject no stream captures is refused
//! for good.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use crate::support::*;

const SHOPIFY_TYPE: &str = "shopify.order.created";
const STRIPE_TYPE: &str = "stripe.payment_intent.succeeded";

async fn js() -> jetstream::Context {
    let client = async_nats::connect(nats_url())
        .await
        .unwrap_or_else(|e| panic!("NATS at {} is unreachable: {e}", nats_url()));
    jetstream::new(client)
}

/// A stream for `subjects`, as an operator would create it.
async fn create_stream(js: &jetstream::Context, name: &str, subjects: Vec<String>, max_msgs: i64) {
    let config = stream::Config {
        name: name.to_owned(),
        subjects,
        max_messages: max_msgs,
        discard: stream::DiscardPolicy::New,
        storage: stream::StorageType::Memory,
        ..Default::default()
    };
    // A JetStream 500 can come back when another test deletes its stream at that moment.
    for attempt in 0..5 {
        match js.create_stream(config.clone()).await {
            Ok(_) => return,
            Err(e) if attempt < 4 && hookgate::publish::nats::is_server_failure(&e) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("stream {name}: {e}"),
        }
    }
}

async fn entry_detail(harness: &Harness, id: &str) -> serde_json::Value {
    harness
        .admin_get(&format!("/api/v1/admin/webhooks/{id}"))
        .await
        .json()
}

async fn health(harness: &Harness) -> serde_json::Value {
    harness
        .client
        .get(&harness.url("/api/v1/health"), &[])
        .await
        .expect("health")
        .json()
}

async fn metrics(harness: &Harness) -> String {
    let reply = harness
        .client
        .get(&harness.url("/metrics"), &[])
        .await
        .expect("metrics");
    String::from_utf8_lossy(&reply.body).into_owned()
}

async fn post_accepted(harness: &Harness, webhook: &hookgate::sample::SignedWebhook) -> String {
    let reply = harness.post(webhook).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply.json()["id"].as_str().expect("entry id").to_owned()
}

fn shopify(tag: &str) -> hookgate::sample::SignedWebhook {
    shopify_order(&format!("{tag}-{}", uuid::Uuid::new_v4()))
}

fn stripe(tag: &str) -> hookgate::sample::SignedWebhook {
    stripe_payment(&format!("evt_{tag}_{}", uuid::Uuid::new_v4().simple()))
}

/// The breaker of the Shopify subject opens while its stream refuses (full), Stripe's
/// subject keeps flowing, events of the open subject wait without spending attempts, and
/// once the stream takes messages again the breaker closes and everything is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaker_opens_on_one_subject_while_another_flows_and_closes_after_recovery() {
    let mut options = Options::new(Backend::Production);
    options.bus = "create_stream = false\nbreaker_min_calls = 3\nbreaker_failure_percent = 50\n\
                   breaker_window_secs = 60\nbreaker_cooldown_secs = 8\nbreaker_probe_calls = 1\n"
        .to_owned();
    let harness = Harness::start(options).await;
    let js = js().await;
    let prefix = harness.names.prefix.clone();
    let shopify_subject = format!("{prefix}.{SHOPIFY_TYPE}");
    let shopify_stream = format!("{}_SHOPIFY", harness.names.stream);
    // Room for two Shopify events, then refusals until it is purged.
    create_stream(&js, &shopify_stream, vec![format!("{prefix}.shopify.>")], 2).await;
    create_stream(
        &js,
        &harness.names.stream,
        vec![format!("{prefix}.stripe.>")],
        -1,
    )
    .await;

    for n in 0..6 {
        post_accepted(&harness, &shopify(&format!("breaker-{n}"))).await;
    }
    let opened = eventually(Duration::from_secs(20), || async {
        let health = health(&harness).await;
        let open = health["breakers"].as_array().is_some_and(|list| {
            list.iter()
                .any(|b| b["subject"] == shopify_subject.as_str() && b["state"] == "open")
        });
        open.then_some(health)
    })
    .await
    .expect("the Shopify subject's breaker opens");
    assert_eq!(opened["status"], "degraded", "{opened}");
    let text = metrics(&harness).await;
    assert!(
        text.contains(&format!(
            "hookgate_breaker_state{{subject=\"{shopify_subject}\"}} 2"
        )),
        "{text}"
    );
    assert_eq!(stream_count(&shopify_stream).await, 2);

    // Stripe flows meanwhile.
    for n in 0..3 {
        post_accepted(&harness, &stripe(&format!("flowing{n}"))).await;
    }
    let flowed = eventually(Duration::from_secs(10), || async {
        (stream_count(&harness.names.stream).await >= 3).then_some(())
    })
    .await;
    assert!(
        flowed.is_some(),
        "{} of 3 Stripe events published while Shopify's breaker was open",
        stream_count(&harness.names.stream).await
    );

    // A webhook arriving while the breaker is open (its cool-down is 8 s) is stored, and
    // its event waits untried: no attempt is spent on it.
    let waiting = post_accepted(&harness, &shopify("while-open")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let detail = entry_detail(&harness, &waiting).await;
    assert_eq!(detail["status"], "accepted", "{detail}");
    assert_eq!(detail["events"][0]["status"], "pending", "{detail}");
    assert_eq!(detail["events"][0]["attempts"], 0, "{detail}");

    // Recovery: the stream takes messages again.
    js.get_stream(&shopify_stream)
        .await
        .expect("stream")
        .purge()
        .await
        .expect("purge");
    let mut bigger = js
        .get_stream(&shopify_stream)
        .await
        .expect("stream")
        .cached_info()
        .config
        .clone();
    bigger.max_messages = -1;
    js.update_stream(&bigger).await.expect("lift the limit");

    // The four refused at first and the one that waited, each delivered once (the purge
    // removed the first two).
    let delivered = eventually(Duration::from_secs(30), || async {
        (stream_count(&shopify_stream).await >= 5).then_some(())
    })
    .await;
    assert!(
        delivered.is_some(),
        "{} of 5 waiting Shopify events delivered after recovery",
        stream_count(&shopify_stream).await
    );
    let closed = eventually(Duration::from_secs(10), || async {
        let health = health(&harness).await;
        health["breakers"]
            .as_array()
            .is_some_and(Vec::is_empty)
            .then_some(health)
    })
    .await;
    assert!(
        closed.is_some(),
        "the breaker closes after its probe succeeds"
    );
    let text = metrics(&harness).await;
    assert!(
        text.contains(&format!(
            "hookgate_breaker_state{{subject=\"{shopify_subject}\"}} 0"
        )),
        "{text}"
    );
    for to in ["open", "half_open", "closed"] {
        assert!(
            text.contains(&format!(
                "hookgate_breaker_transitions_total{{subject=\"{shopify_subject}\",to=\"{to}\"}}"
            )),
            "no transition to {to}: {text}"
        );
    }
    let detail = entry_detail(&harness, &waiting).await;
    assert_eq!(detail["status"], "published", "{detail}");
    assert_eq!(
        stream_count(&harness.names.stream).await,
        3,
        "Stripe events once each"
    );
    let _ = js.delete_stream(&shopify_stream).await;
    harness.cleanup().await;
}

/// A subject no stream captures is a permanent refusal: its events are dead-lettered at
/// the first attempt with the reason, the breaker is not tripped by them, and the other
/// subject's events are delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_publish_error_dead_letters_at_once_with_its_reason() {
    let mut options = Options::new(Backend::Production);
    options.bus = "create_stream = false\nbreaker_min_calls = 2\n".to_owned();
    let harness = Harness::start(options).await;
    let js = js().await;
    let prefix = harness.names.prefix.clone();
    create_stream(
        &js,
        &harness.names.stream,
        vec![format!("{prefix}.shopify.>")],
        -1,
    )
    .await;

    let mut unbound = Vec::new();
    for n in 0..4 {
        unbound.push(post_accepted(&harness, &stripe(&format!("nostream{n}"))).await);
    }
    let delivered = post_accepted(&harness, &shopify("bound")).await;

    for id in &unbound {
        let dead = eventually(Duration::from_secs(10), || async {
            let detail = entry_detail(&harness, id).await;
            (detail["status"] == "dead").then_some(detail)
        })
        .await
        .unwrap_or_else(|| {
            panic!("the event of {id} was not dead-lettered at once");
        });
        let event = &dead["events"][0];
        assert_eq!(event["status"], "dead", "{dead}");
        assert_eq!(event["attempts"], 1, "one attempt, no retries: {dead}");
        let reason = event["last_error"].as_str().unwrap_or_default();
        assert!(
            reason.contains("no JetStream stream is bound to subject")
                && reason.contains(&format!("{prefix}.{STRIPE_TYPE}")),
            "{reason}"
        );
        assert_eq!(dead["last_error"], event["last_error"], "{dead}");
    }
    let published = eventually(Duration::from_secs(10), || async {
        let detail = entry_detail(&harness, &delivered).await;
        (detail["status"] == "published").then_some(())
    })
    .await;
    assert!(published.is_some(), "the Shopify event is delivered");
    assert_eq!(stream_count(&harness.names.stream).await, 1);
    let health = health(&harness).await;
    assert_eq!(
        health["breakers"],
        serde_json::json!([]),
        "refusals of events trip no breaker: {health}"
    );
    // The report shows the relay's last count (every 5 s), not a count of its own.
    let counted = eventually(Duration::from_secs(15), || async {
        let health = self::health(&harness).await;
        (health["outbox"]["dlq"] == 4).then_some(())
    })
    .await;
    assert!(counted.is_some(), "the DLQ size reaches the health report");

    // The cause fixed — the stream now captures Stripe's subjects too — the dead-letter
    // queue is replayed through the admin API and every dead event goes out.
    let listed = harness
        .admin_get("/api/v1/admin/dlq?kind=event")
        .await
        .json();
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(4),
        "{listed}"
    );
    js.update_stream(stream::Config {
        name: harness.names.stream.clone(),
        subjects: vec![format!("{prefix}.shopify.>"), format!("{prefix}.stripe.>")],
        storage: stream::StorageType::Memory,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    })
    .await
    .expect("bind the Stripe subjects");
    let replay = harness
        .admin_post("/api/v1/admin/dlq/replay?all=true")
        .await;
    assert!((200..300).contains(&replay.status), "{:?}", replay.json());
    for id in &unbound {
        let published = eventually(Duration::from_secs(20), || async {
            let detail = entry_detail(&harness, id).await;
            (detail["status"] == "published").then_some(())
        })
        .await;
        assert!(
            published.is_some(),
            "{id} was not published after the replay"
        );
    }
    assert_eq!(stream_count(&harness.names.stream).await, 5);
    let drained = eventually(Duration::from_secs(15), || async {
        let health = self::health(&harness).await;
        (health["outbox"]["dlq"] == 0).then_some(())
    })
    .await;
    assert!(drained.is_some(), "the DLQ is empty again");
    harness.cleanup().await;
}

/// An event larger than the server's `max_payload` (a private nats-server started with
/// 8 KiB) is dead-lettered at its first attempt with the reason; a small one beside it is
/// delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_over_the_server_max_payload_is_dead_lettered_at_once() {
    let mut nats = OwnNats::reserve();
    nats.start_with_config("max_payload: 8192\n").await;
    let mut options = Options::new(Backend::Production);
    options.nats_url = Some(nats.url());
    let harness = Harness::start(options).await;

    let big = format!(
        r#"{{"id":820982911946154501,"note":"{}"}}"#,
        "x".repeat(16 * 1024)
    );
    let too_large = post_accepted(
        &harness,
        &hookgate::sample::shopify(
            SHOPIFY_SECRET,
            "orders/create",
            "example-shop.myshopify.com",
            &uuid::Uuid::new_v4().to_string(),
            big.as_bytes(),
        ),
    )
    .await;
    let small = post_accepted(&harness, &shopify("fits")).await;

    let dead = eventually(Duration::from_secs(10), || async {
        let detail = entry_detail(&harness, &too_large).await;
        (detail["status"] == "dead").then_some(detail)
    })
    .await
    .expect("the oversized event is dead-lettered at once");
    let event = &dead["events"][0];
    assert_eq!(event["attempts"], 1, "{dead}");
    let reason = event["last_error"].as_str().unwrap_or_default();
    assert!(
        reason.contains("8192"),
        "the server's limit is named: {reason}"
    );
    let published = eventually(Duration::from_secs(10), || async {
        let detail = entry_detail(&harness, &small).await;
        (detail["status"] == "published").then_some(())
    })
    .await;
    assert!(published.is_some(), "the small event is delivered");
    assert_eq!(nats.count(&harness.names.stream).await, 1);
    harness.cleanup().await;
}

/// With `retry_max_attempts = 2`, an event its stream keeps refusing (full) is
/// dead-lettered after its second attempt, long before the age budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_attempts_budget_dead_letters_after_n_attempts() {
    let mut options = Options::new(Backend::Production);
    options.bus =
        "create_stream = false\nretry_max_attempts = 2\nbreaker_enabled = false\n".to_owned();
    let harness = Harness::start(options).await;
    let js = js().await;
    let prefix = harness.names.prefix.clone();
    create_stream(&js, &harness.names.stream, vec![format!("{prefix}.>")], 1).await;
    js.publish(format!("{prefix}.filler"), "x".into())
        .await
        .expect("publish")
        .await
        .expect("the filler is stored: the stream is full");

    let id = post_accepted(&harness, &shopify("budget")).await;
    let after_one = eventually(Duration::from_secs(5), || async {
        let detail = entry_detail(&harness, &id).await;
        (detail["events"][0]["attempts"] == 1).then_some(detail)
    })
    .await
    .expect("a first failed attempt");
    assert_eq!(after_one["events"][0]["status"], "pending", "{after_one}");

    let dead = eventually(Duration::from_secs(20), || async {
        let detail = entry_detail(&harness, &id).await;
        (detail["status"] == "dead").then_some(detail)
    })
    .await
    .expect("dead-lettered after its second attempt");
    let event = &dead["events"][0];
    assert_eq!(event["attempts"], 2, "{dead}");
    let reason = event["last_error"].as_str().unwrap_or_default();
    assert!(
        reason.contains("retry budget exhausted after 2 attempts"),
        "{reason}"
    );
    assert_eq!(
        stream_count(&harness.names.stream).await,
        1,
        "only the filler"
    );
    harness.cleanup().await;
}

/// While NATS is unreachable nothing is attempted, so even `retry_max_attempts = 1`
/// dead-letters nothing: the event waits with the reason, no attempt counted, and is
/// delivered once NATS is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_spends_no_attempts() {
    let mut nats = OwnNats::reserve();
    let mut options = Options::new(Backend::Production);
    options.nats_url = Some(nats.url());
    options.bus = "retry_max_attempts = 1\n".to_owned();
    let harness = Harness::start(options).await;
    let id = post_accepted(&harness, &shopify("outage")).await;
    let waiting = eventually(Duration::from_secs(10), || async {
        let detail = entry_detail(&harness, &id).await;
        detail["events"][0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("not connected"))
            .then_some(detail)
    })
    .await
    .expect("the event records why it waits");
    // Past the first retries an attempts-based backoff would have made.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let detail = entry_detail(&harness, &id).await;
    assert_eq!(
        detail["events"][0]["status"], "pending",
        "{waiting} then {detail}"
    );
    assert_eq!(detail["events"][0]["attempts"], 0, "{detail}");

    nats.start().await;
    let published = eventually(Duration::from_secs(30), || async {
        let detail = entry_detail(&harness, &id).await;
        (detail["status"] == "published").then_some(())
    })
    .await;
    assert!(published.is_some(), "delivered once NATS is up");
    assert_eq!(nats.count(&harness.names.stream).await, 1);
    harness.cleanup().await;
}

/// `hookgate purge --dry-run` counts the old published entries and deletes nothing;
/// without it they go, and nothing else does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_purge_command_counts_on_a_dry_run_then_removes_old_published_entries() {
    use hookgate::store::{EntryStatus, NewEntry, NewEvent, NewWebhook};

    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("hookgate.db");
    let config = dir.path().join("hookgate.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\nurl = \"sqlite://{}\"\nretention_days = 30\n",
            db.display()
        ),
    )
    .expect("config");
    let store = hookgate::store::connect(&format!("sqlite://{}", db.display()), "unused")
        .await
        .expect("store");
    store.migrate().await.expect("migrate");
    let old = chrono::Utc::now() - chrono::Duration::days(40);
    let webhook = |key: &str, received_at| {
        let id = uuid::Uuid::now_v7();
        NewWebhook {
            entry: NewEntry {
                id,
                source: "shopify".into(),
                topic: Some("orders/create".into()),
                tenant: None,
                idempotency_key: key.into(),
                headers: Vec::new(),
                body: bytes::Bytes::from_static(b"{}"),
                received_at,
                status: EntryStatus::Accepted,
                last_error: None,
                plugin: "shopify".into(),
                plugin_version: "0.1.0".into(),
                plugin_sha256: "00".repeat(32),
                correlation_id: "c".into(),
            },
            events: vec![NewEvent {
                id: format!("{id}:0"),
                seq: 0,
                subject: "webhooks.shopify.order.created".into(),
                envelope: bytes::Bytes::from_static(b"{}"),
                body_at: None,
            }],
        }
    };
    let old_published = webhook("old-published", old);
    let old_pending = webhook("old-pending", old);
    let new_published = webhook("new-published", chrono::Utc::now());
    store
        .insert_batch(&[
            old_published.clone(),
            old_pending.clone(),
            new_published.clone(),
        ])
        .await
        .expect("insert");
    store
        .mark_published(
            &[
                old_published.events[0].id.clone(),
                new_published.events[0].id.clone(),
            ],
            chrono::Utc::now(),
        )
        .await
        .expect("publish");

    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .args(args)
            .env_clear()
            .output()
            .expect("run hookgate")
    };
    let config_arg = config.display().to_string();
    let dry = run(&["purge", "--config", &config_arg, "--dry-run"]);
    let out = String::from_utf8_lossy(&dry.stdout);
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    assert!(
        out.starts_with("1 ") && out.contains("would be removed"),
        "{out}"
    );
    assert!(
        store
            .get_entry(old_published.entry.id)
            .await
            .expect("get")
            .is_some(),
        "a dry run deletes nothing"
    );

    let real = run(&["purge", "--config", &config_arg, "--older-than-days", "30"]);
    let out = String::from_utf8_lossy(&real.stdout);
    assert!(
        real.status.success(),
        "{}",
        String::from_utf8_lossy(&real.stderr)
    );
    assert!(out.starts_with("1 ") && out.contains("removed"), "{out}");
    assert!(
        store
            .get_entry(old_published.entry.id)
            .await
            .expect("get")
            .is_none()
    );
    for kept in [&old_pending, &new_published] {
        assert!(
            store.get_entry(kept.entry.id).await.expect("get").is_some(),
            "{} kept",
            kept.entry.idempotency_key
        );
    }

    // No retention configured and none given: refused, with the reason.
    std::fs::write(
        &config,
        format!("[storage]\nurl = \"sqlite://{}\"\n", db.display()),
    )
    .expect("config");
    let refused = run(&["purge", "--config", &config_arg]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--older-than-days"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}
