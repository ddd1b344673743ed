//! Hostile clients: connections that send nothing or stall, too many connections, slow
//! bodies, and one source or one client trying to take every permit. Each limit is kept
//! small through config so the tests run in seconds; timings are asserted with wide
//! margins ("closed within"), never exactly.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hookgate::sample::SignedWebhook;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::support::*;

/// Generous bound for "closed soon" on a loaded 2-core machine; the limits under test are
/// all below one second.
const SOON: Duration = Duration::from_secs(6);

fn address(harness: &Harness) -> SocketAddr {
    harness
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("address")
}

/// Connects from `from` (any 127.0.0.0/8 address works on loopback), so a test can be
/// several clients.
async fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((from, 0)))
        .expect("bind a loopback address");
    socket.connect(to).await.expect("connect")
}

/// Reads and discards until the peer closes; true when it did within `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut buffer = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Reads until a whole response head is in (or `limit`), returns it as text.
async fn read_head(stream: &mut TcpStream, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    let mut response = Vec::new();
    let mut buffer = [0u8; 4096];
    while !response.windows(4).any(|w| w == b"\r\n\r\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Ok(Ok(n)) if n > 0 => response.extend_from_slice(&buffer[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&response).into_owned()
}

fn raw_request(webhook: &SignedWebhook) -> Vec<u8> {
    let mut head = format!(
        "POST {} HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n",
        webhook.path,
        webhook.body.len()
    );
    for (name, value) in &webhook.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&webhook.body);
    bytes
}

/// Starts a request to `path` announcing `length` body bytes and sends none of them.
async fn stalled_post(from: [u8; 4], to: SocketAddr, path: &str, length: usize) -> TcpStream {
    let mut stream = connect_from(from, to).await;
    stream
        .write_all(
            format!("POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {length}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("write head");
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_half_open_connections_are_closed() {
    let mut options = Options::new(Backend::Embedded);
    options.extra =
        "[http]\nfirst_byte_timeout_ms = 300\nheader_read_timeout_ms = 600\nidle_timeout_ms = 600\n"
            .into();
    let harness = Harness::start(options).await;
    let to = address(&harness);

    // Sends nothing at all.
    let mut silent = connect_from([127, 0, 0, 1], to).await;
    // Sends the start of the HTTP/2 preface and stops.
    let mut half_preface = connect_from([127, 0, 0, 1], to).await;
    half_preface
        .write_all(b"PRI * HTTP/2.0\r\n")
        .await
        .expect("write");
    // Sends the whole preface and an empty SETTINGS frame, then never opens a stream.
    let mut no_stream = connect_from([127, 0, 0, 1], to).await;
    no_stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .expect("write");
    // Starts an HTTP/1.1 request head and stops.
    let mut half_head = connect_from([127, 0, 0, 1], to).await;
    half_head
        .write_all(b"POST /api/v1/webhooks/shopify HTTP/1.1\r\nhost:")
        .await
        .expect("write");

    for (name, stream) in [
        ("silent", &mut silent),
        ("half preface", &mut half_preface),
        ("preface without a stream", &mut no_stream),
        ("half head", &mut half_head),
    ] {
        assert!(
            closed_within(stream, SOON).await,
            "the {name} connection is still open"
        );
    }
    harness.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed_on_both_protocols() {
    let mut options = Options::new(Backend::Embedded);
    options.extra = "[http]\nidle_timeout_ms = 500\n".into();
    let harness = Harness::start(options).await;
    let to = address(&harness);

    // HTTP/1.1: one request, then nothing.
    let mut h1 = connect_from([127, 0, 0, 1], to).await;
    h1.write_all(b"GET /api/v1/health/live HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let head = read_head(&mut h1, SOON).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(closed_within(&mut h1, SOON).await, "idle HTTP/1.1 kept");

    // HTTP/2 (prior knowledge): one request, then nothing; the client answers pings, so
    // only the idle limit can end it.
    let stream = connect_from([127, 0, 0, 1], to).await;
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("h2 handshake");
    let driver = tokio::spawn(connection);
    let request = http::Request::get(format!("{}/api/v1/health/live", harness.base))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("h2 response");
    assert_eq!(response.status(), 200);
    drop(response);
    let ended = tokio::time::timeout(SOON, driver).await;
    assert!(ended.is_ok(), "idle HTTP/2 connection kept");
    harness.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_connection_is_closed_at_its_maximum_age() {
    let mut options = Options::new(Backend::Embedded);
    options.extra = "[http]\nmax_connection_age_ms = 500\n".into();
    let harness = Harness::start(options).await;
    let to = address(&harness);
    let mut stream = connect_from([127, 0, 0, 1], to).await;
    let started = Instant::now();
    let mut told_to_close = false;
    // Bounded: one request every 100 ms for at most SOON.
    while started.elapsed() < SOON {
        if stream
            .write_all(b"GET /api/v1/health/live HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .is_err()
        {
            told_to_close = true;
            break;
        }
        let head = read_head(&mut stream, Duration::from_secs(2)).await;
        if head.is_empty() || head.to_ascii_lowercase().contains("connection: close") {
            told_to_close = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(told_to_close, "a connection kept busy outlived its age");
    harness.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_closed() {
    let mut options = Options::new(Backend::Embedded);
    options.extra = "[http]\nmax_connections = 2\n".into();
    let harness = Harness::start(options).await;
    let to = address(&harness);
    let first = connect_from([127, 0, 0, 1], to).await;
    let second = connect_from([127, 0, 0, 1], to).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = connect_from([127, 0, 0, 1], to).await;
    assert!(
        closed_within(&mut third, SOON).await,
        "a connection over the limit was kept"
    );
    drop((first, second));
    // Bounded: the slots free as soon as the server sees the two closed.
    let answered = eventually(SOON, || async {
        let mut stream = connect_from([127, 0, 0, 1], to).await;
        stream
            .write_all(b"GET /api/v1/health/live HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .ok()?;
        let head = read_head(&mut stream, Duration::from_secs(1)).await;
        head.starts_with("HTTP/1.1 200").then_some(())
    })
    .await;
    assert!(answered.is_some(), "the freed slots were not reused");
    harness.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_source_is_refused_before_its_body_is_read() {
    let mut options = Options::new(Backend::Embedded);
    options.extra = "[http]\nbody_read_timeout_ms = 20000\nbody_rate_grace_ms = 20000\n".into();
    let harness = Harness::start(options).await;
    let to = address(&harness);
    let started = Instant::now();
    let mut stream = stalled_post([127, 0, 0, 1], to, "/api/v1/webhooks/nosuch", 1000).await;
    let head = read_head(&mut stream, SOON).await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head:?}");
    assert!(started.elapsed() < SOON);
    harness.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_body_is_cut_off_at_the_minimum_rate() {
    let mut options = Options::new(Backend::Embedded);
    options.extra = "[http]\nbody_read_timeout_ms = 30000\nbody_min_rate_bytes_per_second = 1000\nbody_rate_grace_ms = 300\n".into();
    let harness = Harness::start(options).await;
    let to = address(&harness);
    let mut stream = stalled_post([127, 0, 0, 1], to, "/api/v1/webhooks/shopify", 10_000).await;
    let started = Instant::now();
    let mut answered = String::new();
    // Bounded: one byte every 100 ms (10 B/s) for at most SOON.
    while started.elapsed() < SOON {
        if stream.write_all(b"a").await.is_err() {
            break;
        }
        let mut buffer = [0u8; 1024];
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buffer)).await
        {
            answered = String::from_utf8_lossy(&buffer[..n]).into_owned();
            break;
        }
    }
    assert!(answered.starts_with("HTTP/1.1 408"), "{answered:?}");
    harness.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_source_cannot_take_every_permit() {
    let mut options = Options::new(Backend::Embedded);
    options.extra = "[http]\nmax_concurrency = 4\nsource_share_percent = 50\nclient_share_percent = 100\nbody_read_timeout_ms = 20000\nbody_rate_grace_ms = 20000\n".into();
    let harness = Harness::start(options).await;
    let to = address(&harness);
    let path = "/api/v1/webhooks/shopify/orders-create";
    let a = stalled_post([127, 0, 0, 1], to, path, 100).await;
    let b = stalled_post([127, 0, 0, 1], to, path, 100).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let shed = harness.post(&shopify_order("share-1")).await;
    assert_eq!(shed.status, 429, "{}", String::from_utf8_lossy(&shed.body));
    assert_eq!(shed.json()["error"], "overloaded");
    // Another source still gets through.
    let other = harness.post(&stripe_payment("evt_share_1")).await;
    assert_eq!(
        other.status,
        200,
        "{}",
        String::from_utf8_lossy(&other.body)
    );
    // Closed by the client, the stalled requests end at once rather than at the drain.
    drop((a, b));
    harness.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_cannot_take_every_permit() {
    let mut options = Options::new(Backend::Embedded);
    options.extra = "[http]\nmax_concurrency = 4\nsource_share_percent = 100\nclient_share_percent = 50\nbody_read_timeout_ms = 20000\nbody_rate_grace_ms = 20000\n".into();
    let harness = Harness::start(options).await;
    let to = address(&harness);
    let path = "/api/v1/webhooks/shopify/orders-create";
    let a = stalled_post([127, 0, 0, 2], to, path, 100).await;
    let b = stalled_post([127, 0, 0, 2], to, path, 100).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut greedy = connect_from([127, 0, 0, 2], to).await;
    greedy
        .write_all(&raw_request(&shopify_order("client-1")))
        .await
        .expect("write");
    let head = read_head(&mut greedy, SOON).await;
    assert!(head.starts_with("HTTP/1.1 429"), "{head:?}");
    // Another client, same source, still gets through.
    let mut other = connect_from([127, 0, 0, 3], to).await;
    other
        .write_all(&raw_request(&shopify_order("client-2")))
        .await
        .expect("write");
    let head = read_head(&mut other, SOON).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head:?}");
    drop((a, b));
    harness.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_shows_the_relays_outbox_counts_with_their_age() {
    let harness = Harness::start(Options::new(Backend::Embedded)).await;
    let reply = harness.post(&shopify_order("health-count-1")).await;
    assert_eq!(reply.status, 200);
    // The relay counts at start and every 5 s; the report serves its last count.
    let outbox = eventually(SOON, || async {
        let health = harness
            .client
            .get(&harness.url("/api/v1/health"), &[])
            .await
            .ok()?
            .json();
        (health["outbox"]["status"] == "ok").then(|| health["outbox"].clone())
    })
    .await
    .expect("the outbox counts reach the health report");
    assert!(outbox["backlog"].is_i64(), "{outbox}");
    assert!(outbox["dlq"].is_i64(), "{outbox}");
    assert!(outbox["counted_at"].is_string(), "{outbox}");
    assert!(
        outbox["age_seconds"].as_i64().is_some_and(|age| age <= 30),
        "{outbox}"
    );
    harness.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_at_its_call_cap_answers_503_and_other_plugins_go_on() {
    let mut options = Options::new(Backend::Embedded);
    options.plugins = "timeout_ms = 2000\nmax_concurrent_calls = 1\n".into();
    options.extra = "[sources.spinning]\nplugin = \"chaos\"\nsecrets = [\"k\"]\n[sources.spinning.settings]\nverify_mode = \"loop\"\n".into();
    options.plugin_files = vec![wasm_dir().join("chaos.wasm")];
    let harness = Harness::start(options).await;
    let spinning = SignedWebhook {
        path: "/api/v1/webhooks/spinning".into(),
        headers: vec![("x-sig".into(), "00".into())],
        body: b"{}".to_vec(),
    };
    // Holds the plugin's only call slot until its deadline.
    let first = {
        let client = harness.client.clone();
        let base = harness.base.clone();
        let webhook = spinning.clone();
        tokio::spawn(async move { client.post_webhook(&base, &webhook).await })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    let started = Instant::now();
    let busy = harness.post(&spinning).await;
    assert_eq!(busy.status, 503, "{}", String::from_utf8_lossy(&busy.body));
    assert_eq!(busy.json()["error"], "plugin_busy");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused at once"
    );
    // Another plugin is not held by it.
    let other = harness.post(&shopify_order("cap-1")).await;
    assert_eq!(
        other.status,
        200,
        "{}",
        String::from_utf8_lossy(&other.body)
    );
    let first = first.await.expect("joined").expect("reply");
    assert_eq!(first.status, 500, "the spinning call times out");
    harness.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shopify_url_topic_contradicting_the_header_is_refused() {
    let harness = Harness::start(Options::new(Backend::Embedded)).await;
    // Signed for orders/create (X-Shopify-Topic), posted to another topic's URL.
    let mut moved = shopify_order("topic-moved-1");
    moved.path = "/api/v1/webhooks/shopify/orders-cancelled".into();
    let reply = harness.post(&moved).await;
    assert_eq!(
        reply.status,
        401,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.json()["error"], "unauthorized");
    // The same delivery to its own topic's URL is accepted.
    let mut agreeing = shopify_order("topic-moved-1");
    agreeing.path = "/api/v1/webhooks/shopify/orders%2Fcreate".into();
    let reply = harness.post(&agreeing).await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    harness.cleanup().await;
}
