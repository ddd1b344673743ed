//! The NATS JetStream sink against a real NATS server (the test run's, see
//! `hookgate-test-services`), with the envelope it carries.
//!
//! Each test has its own stream name and subject prefix and deletes its stream at the end,
//! even when it fails.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures::{FutureExt, StreamExt};
use hookgate::publish::envelope::{self, EnvelopeInput, EventData};
use hookgate::publish::nats::{NatsSink, is_server_failure};
use hookgate::publish::{BusOptions, EventSink, Outgoing, PublishError};
use uuid::Uuid;

#[path = "common/tcp_relay.rs"]
mod tcp_relay;
use tcp_relay::Relay;

use hookgate_test_services::nats_url;

fn nats_addr() -> SocketAddr {
    hookgate_test_services::services().nats.socket_addr()
}

/// A JetStream context of our own, to inspect and clean up behind the sink. Fails the
/// test with a clear message when the test NATS is not running.
async fn admin() -> jetstream::Context {
    let url = nats_url();
    let client = tokio::time::timeout(Duration::from_secs(3), async_nats::connect(&url))
        .await
        .unwrap_or_else(|_| panic!("NATS at {url} did not answer within 3 s; tests need it"))
        .unwrap_or_else(|e| panic!("NATS at {url} is unreachable ({e}); tests need it"));
    jetstream::new(client)
}

#[derive(Clone)]
struct Env {
    options: BusOptions,
    js: jetstream::Context,
}

/// Runs `body` with a unique stream and subject prefix, then deletes the stream.
async fn with_stream<F, Fut>(create_stream: bool, body: F)
where
    F: FnOnce(Env) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let js = admin().await;
    let tag = Uuid::new_v4().simple().to_string();
    let env = Env {
        options: BusOptions {
            stream: format!("HGTEST_{tag}"),
            subject_prefix: format!("hgtest.{tag}"),
            create_stream,
            duplicate_window: Duration::from_secs(120),
        },
        js: js.clone(),
    };
    let stream = env.options.stream.clone();
    let outcome = std::panic::AssertUnwindSafe(body(env)).catch_unwind().await;
    // Absent when the test never created it; that is fine.
    let _ = js.delete_stream(&stream).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Creates a stream as an operator would, retrying a JetStream 500: the server fails a
/// create when another test deletes the account's last stream at that moment.
async fn operator_creates(js: &jetstream::Context, config: jetstream::stream::Config) {
    let mut attempts = 0;
    loop {
        match js.create_stream(config.clone()).await {
            Ok(_) => return,
            Err(e) if attempts < 5 && is_server_failure(&e) => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("operator stream {}: {e:?}", config.name),
        }
    }
}

/// Events as the relay sends them: envelopes from the real encoder, subjects from the real
/// subject builder.
fn events(prefix: &str, n: usize) -> Vec<Outgoing> {
    let webhook_id = Uuid::now_v7();
    (0..n)
        .map(|i| {
            let id = format!("{webhook_id}-{i}");
            let body = format!(r#"{{"id": 820982911946154500, "index": {i}}}"#);
            let envelope = envelope::encode(&EnvelopeInput {
                id: &id,
                source: "shopify",
                event_type: "order.created",
                subject: Some("820982911946154500"),
                time: chrono::Utc::now(),
                data: EventData::Json(body.as_bytes()),
                correlation_id: "corr",
                webhook_id,
                tenant: Some("shop.myshopify.com"),
                plugin: "shopify@1.0.0",
            })
            .expect("encode");
            Outgoing {
                subject: envelope::subject(prefix, "shopify", "order.created").expect("subject"),
                id,
                envelope,
            }
        })
        .collect()
}

async fn stream_messages(js: &jetstream::Context, stream: &str) -> u64 {
    let mut s = js.get_stream(stream).await.expect("stream exists");
    s.info().await.expect("stream info").state.messages
}

/// Reads every message of the stream back through an ephemeral pull consumer.
async fn read_back(js: &jetstream::Context, stream: &str, n: usize) -> Vec<async_nats::Message> {
    let s = js.get_stream(stream).await.expect("stream exists");
    let consumer = s
        .create_consumer(consumer::pull::Config {
            ack_policy: consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .expect("consumer");
    let mut batch = consumer
        .fetch()
        .max_messages(n + 1)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .expect("fetch");
    let mut out = Vec::new();
    // Bounded by the fetch expiry; the outer timeout guards against a stuck server.
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(5), batch.next()).await {
        out.push(m.expect("message").message.clone());
    }
    out
}

#[tokio::test]
async fn publishes_a_batch_with_message_ids_and_exact_bytes() {
    with_stream(true, |env| async move {
        let sink = NatsSink::connect(&nats_url(), &env.options)
            .await
            .expect("connect");
        sink.ping().await.expect("ping");
        assert_eq!(sink.kind(), "nats");

        // Created at start, with the configured subjects, window and storage.
        let mut s = env
            .js
            .get_stream(&env.options.stream)
            .await
            .expect("stream");
        let info = s.info().await.expect("info");
        assert_eq!(
            info.config.subjects,
            vec![format!("{}.>", env.options.subject_prefix)]
        );
        assert_eq!(info.config.duplicate_window, Duration::from_secs(120));
        assert_eq!(info.config.storage, jetstream::stream::StorageType::File);

        let batch = events(&env.options.subject_prefix, 5);
        let results = sink.publish_batch(&batch).await;
        assert_eq!(results.len(), batch.len());
        assert!(results.iter().all(Result::is_ok), "{results:?}");

        let got = read_back(&env.js, &env.options.stream, batch.len()).await;
        assert_eq!(got.len(), batch.len());
        for (sent, got) in batch.iter().zip(&got) {
            assert_eq!(got.payload, sent.envelope, "payload differs");
            assert_eq!(got.subject.as_str(), sent.subject);
            let msg_id = got
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Msg-Id"))
                .map(|v| v.as_str().to_owned());
            assert_eq!(msg_id.as_deref(), Some(sent.id.as_str()));
        }
        assert!(
            std::str::from_utf8(&got[0].payload)
                .expect("utf-8")
                .contains(r#""data":{"id": 820982911946154500"#)
        );
    })
    .await;
}

#[tokio::test]
async fn republishing_the_same_ids_stores_nothing_new() {
    with_stream(true, |env| async move {
        let sink = NatsSink::connect(&nats_url(), &env.options)
            .await
            .expect("connect");
        let batch = events(&env.options.subject_prefix, 4);
        assert!(sink.publish_batch(&batch).await.iter().all(Result::is_ok));
        assert_eq!(stream_messages(&env.js, &env.options.stream).await, 4);

        // A re-publish after a lost ack: acknowledged as duplicates, which is success.
        let again = sink.publish_batch(&batch).await;
        assert!(again.iter().all(Result::is_ok), "{again:?}");
        assert_eq!(stream_messages(&env.js, &env.options.stream).await, 4);

        // New ids in the same batch still get stored.
        let mut mixed = batch.clone();
        mixed.extend(events(&env.options.subject_prefix, 2));
        assert!(sink.publish_batch(&mixed).await.iter().all(Result::is_ok));
        assert_eq!(stream_messages(&env.js, &env.options.stream).await, 6);
    })
    .await;
}

#[tokio::test]
async fn one_result_per_event_in_order() {
    with_stream(true, |env| async move {
        let sink = NatsSink::connect(&nats_url(), &env.options)
            .await
            .expect("connect");
        let mut batch = events(&env.options.subject_prefix, 3);
        // No stream covers this subject: JetStream has no responder for it.
        batch[1].subject = format!("hgtest-nostream.{}.x", Uuid::new_v4().simple());
        let results = sink.publish_batch(&batch).await;
        assert_eq!(results.len(), 3);
        assert!(results[0].is_ok(), "{results:?}");
        assert!(
            matches!(results[1], Err(PublishError::Rejected(_))),
            "{results:?}"
        );
        assert!(results[2].is_ok(), "{results:?}");
        assert_eq!(stream_messages(&env.js, &env.options.stream).await, 2);
    })
    .await;
}

/// With `create_stream = false` and no stream, JetStream has no responder for the subject:
/// the sink reports `Rejected` (the bus refused the event; retrying will not help until an
/// operator creates the stream).
#[tokio::test]
async fn without_a_stream_and_create_stream_false_events_are_rejected() {
    with_stream(false, |env| async move {
        let sink = NatsSink::connect(&nats_url(), &env.options)
            .await
            .expect("connect");
        let start = Instant::now();
        let results = sink
            .publish_batch(&events(&env.options.subject_prefix, 2))
            .await;
        assert_eq!(results.len(), 2);
        for r in &results {
            assert!(matches!(r, Err(PublishError::Rejected(_))), "{results:?}");
        }
        assert!(start.elapsed() < Duration::from_secs(5));
        // And it did not create the stream behind our back.
        assert!(env.js.get_stream(&env.options.stream).await.is_err());
    })
    .await;
}

#[tokio::test]
async fn unreachable_nats_connects_and_publish_fails_fast() {
    let options = BusOptions {
        stream: format!("HGTEST_{}", Uuid::new_v4().simple()),
        subject_prefix: "hgtest.unreachable".into(),
        create_stream: true,
        duplicate_window: Duration::from_secs(120),
    };
    let start = Instant::now();
    let sink = tokio::time::timeout(
        Duration::from_secs(3),
        NatsSink::connect("nats://127.0.0.1:1", &options),
    )
    .await
    .expect("connect returns promptly")
    .expect("connect succeeds while NATS is down");
    assert!(start.elapsed() < Duration::from_secs(3));

    let start = Instant::now();
    let results = sink.publish_batch(&events("hgtest.unreachable", 3)).await;
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(results.len(), 3);
    for r in &results {
        assert!(
            matches!(r, Err(PublishError::Unavailable(_))),
            "{results:?}"
        );
    }
    assert!(matches!(
        sink.ping().await,
        Err(PublishError::Unavailable(_))
    ));
}

#[tokio::test]
async fn bad_urls_and_prefixes_are_refused() {
    let options = BusOptions {
        stream: "HGTEST_BAD".into(),
        subject_prefix: "bad prefix".into(),
        create_stream: false,
        duplicate_window: Duration::from_secs(120),
    };
    let err = NatsSink::connect(&nats_url(), &options)
        .await
        .err()
        .expect("must fail");
    assert!(matches!(err, PublishError::BadUrl(_)), "{err:?}");
}

/// A loopback port nothing listens on (bound, then released).
async fn free_port() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    l.local_addr().expect("addr")
}

#[tokio::test]
async fn creates_the_stream_on_first_publish_once_nats_is_up_and_recovers_after_outage() {
    with_stream(true, |env| async move {
        let addr = free_port().await;
        let sink = NatsSink::connect_with_timeout(
            &format!("nats://{addr}"),
            &env.options,
            Duration::from_secs(1),
        )
        .await
        .expect("connect while NATS is down");
        let batch = events(&env.options.subject_prefix, 3);
        let down = sink.publish_batch(&batch).await;
        assert!(
            down.iter()
                .all(|r| matches!(r, Err(PublishError::Unavailable(_)))),
            "{down:?}"
        );
        assert!(env.js.get_stream(&env.options.stream).await.is_err());

        // NATS "comes up": the client reconnects on its own.
        let relay = Relay::start(addr, nats_addr()).await;
        let mut up = false;
        for _ in 0..100 {
            if sink.ping().await.is_ok() {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(up, "did not reconnect within 10 s");
        let results = sink.publish_batch(&batch).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(stream_messages(&env.js, &env.options.stream).await, 3);

        // NATS goes away again: publishes fail as Unavailable, quickly.
        relay.stop().await;
        let mut saw_unavailable = false;
        for _ in 0..20 {
            let start = Instant::now();
            let r = sink
                .publish_batch(&events(&env.options.subject_prefix, 1))
                .await;
            assert!(start.elapsed() < Duration::from_secs(3), "slow failure");
            match &r[0] {
                Err(PublishError::Unavailable(_)) => {
                    saw_unavailable = true;
                    break;
                }
                other => assert!(other.is_ok(), "unexpected {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(saw_unavailable, "publishes kept succeeding with NATS gone");
    })
    .await;
}

#[tokio::test]
async fn an_existing_stream_is_amended_not_replaced() {
    with_stream(true, |env| async move {
        // An operator created the stream with their own limits and another window.
        let max_age = Duration::from_secs(7 * 24 * 3600);
        operator_creates(
            &env.js,
            jetstream::stream::Config {
                name: env.options.stream.clone(),
                subjects: vec![format!("{}.legacy.>", env.options.subject_prefix)],
                duplicate_window: Duration::from_secs(30),
                max_age,
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            },
        )
        .await;

        let sink = NatsSink::connect(&nats_url(), &env.options)
            .await
            .expect("connect");
        let mut s = env
            .js
            .get_stream(&env.options.stream)
            .await
            .expect("stream");
        let info = s.info().await.expect("info");
        assert_eq!(info.config.max_age, max_age, "operator limit was reset");
        assert_eq!(info.config.duplicate_window, env.options.duplicate_window);
        // The old subject is under the new prefix-wide one, which replaces it (JetStream
        // refuses overlapping subjects in one stream).
        assert_eq!(
            info.config.subjects,
            vec![format!("{}.>", env.options.subject_prefix)]
        );

        let results = sink
            .publish_batch(&events(&env.options.subject_prefix, 2))
            .await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
    })
    .await;
}

#[tokio::test]
async fn a_stream_config_the_server_refuses_stops_connect() {
    with_stream(true, |env| async move {
        // Another stream already owns the subjects: JetStream refuses the overlap.
        let other = format!("{}_OTHER", env.options.stream);
        operator_creates(
            &env.js,
            jetstream::stream::Config {
                name: other.clone(),
                subjects: vec![format!("{}.>", env.options.subject_prefix)],
                ..Default::default()
            },
        )
        .await;
        let result = NatsSink::connect(&nats_url(), &env.options).await;
        let _ = env.js.delete_stream(&other).await;
        let err = result.err().expect("connect must fail");
        assert!(matches!(err, PublishError::Rejected(_)), "{err:?}");
        assert!(err.to_string().contains(&env.options.stream), "{err}");
    })
    .await;
}

#[tokio::test]
async fn an_invalid_subject_is_rejected() {
    with_stream(true, |env| async move {
        let sink = NatsSink::connect(&nats_url(), &env.options)
            .await
            .expect("connect");
        let mut batch = events(&env.options.subject_prefix, 1);
        batch[0].subject = format!("{}..bad", env.options.subject_prefix);
        let results = sink.publish_batch(&batch).await;
        assert!(
            matches!(results[0], Err(PublishError::Rejected(_))),
            "{results:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_stream_deleted_at_runtime_is_recreated() {
    with_stream(true, |env| async move {
        let sink = NatsSink::connect(&nats_url(), &env.options)
            .await
            .expect("connect");
        let first = sink
            .publish_batch(&events(&env.options.subject_prefix, 1))
            .await;
        assert!(first[0].is_ok(), "{first:?}");
        env.js
            .delete_stream(&env.options.stream)
            .await
            .expect("delete");

        // The publish that finds it missing is retryable, not a refusal of the event...
        let missing = sink
            .publish_batch(&events(&env.options.subject_prefix, 1))
            .await;
        assert!(
            matches!(missing[0], Err(PublishError::Unavailable(_))),
            "{missing:?}"
        );
        // ...and the next one recreates the stream and gets through.
        let again = sink
            .publish_batch(&events(&env.options.subject_prefix, 2))
            .await;
        assert!(again.iter().all(Result::is_ok), "{again:?}");
        assert_eq!(stream_messages(&env.js, &env.options.stream).await, 2);
    })
    .await;
}

#[tokio::test]
async fn dropping_the_sink_closes_its_connection() {
    let _ = admin().await;
    let relay = Relay::start("127.0.0.1:0".parse().expect("addr"), nats_addr()).await;
    let options = BusOptions {
        stream: format!("HGTEST_{}", Uuid::new_v4().simple()),
        subject_prefix: "hgtest.drop".into(),
        create_stream: false,
        duplicate_window: Duration::from_secs(120),
    };
    let sink = NatsSink::connect(&format!("nats://{}", relay.addr), &options)
        .await
        .expect("connect");
    sink.ping().await.expect("connected");
    assert!(
        relay.open_connections() >= 1,
        "no relayed connection while in use"
    );
    drop(sink);
    assert!(
        relay.all_closed_within(Duration::from_millis(2500)).await,
        "connection still open 2.5 s after drop"
    );
    relay.stop().await;
}
