//! The embedded mode: SQLite, in-memory dedupe, events appended to a JSON-lines file.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_lands_as_a_line_in_the_events_file() {
    let harness = Harness::start(Options::new(Backend::Embedded)).await;
    let shopify = harness
        .post(&shopify_order(&uuid::Uuid::new_v4().to_string()))
        .await;
    assert_eq!(shopify.status, 200, "{:?}", shopify.body);
    let stripe = harness.post(&stripe_payment("evt_embedded_1")).await;
    assert_eq!(stripe.status, 200, "{:?}", stripe.body);

    let lines = eventually(Duration::from_secs(10), || async {
        let lines = read_lines(&harness.events_file());
        (lines.len() >= 2).then_some(lines)
    })
    .await
    .expect("two lines in the events file");
    let types: Vec<&str> = lines.iter().filter_map(|l| l["type"].as_str()).collect();
    assert!(
        types.contains(&"order.created") && types.contains(&"payment_intent.succeeded"),
        "{types:?}"
    );
    let order = lines
        .iter()
        .find(|l| l["type"] == "order.created")
        .expect("order line");
    assert_eq!(order["webhookid"], shopify.json()["id"]);
    assert_eq!(order["source"], "hookgate/shopify");

    // A duplicate is not written again.
    let again = harness.post(&stripe_payment("evt_embedded_1")).await;
    assert_eq!(again.json()["status"], "duplicate");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(read_lines(&harness.events_file()).len(), 2);
    harness.cleanup().await;
}

/// The README's first command: `hookgate serve` with no config file and no environment
/// but a secret runs on the embedded defaults under `./data`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_on_embedded_defaults_with_an_empty_environment() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        listener.local_addr().expect("addr").port()
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .current_dir(dir.path())
        .env_clear()
        .env("SHOPIFY_WEBHOOK_SECRET", SHOPIFY_SECRET)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hookgate serve");
    let base = format!("http://127.0.0.1:{port}");
    let client = hookgate::client::HttpClient::new();
    let ready = eventually(Duration::from_secs(30), || async {
        let reply = client
            .get(&format!("{base}/api/v1/health/ready"), &[])
            .await
            .ok()?;
        (reply.status == 200).then_some(())
    })
    .await;
    if ready.is_none() {
        let _ = child.kill();
        let output = child.wait_with_output().expect("output");
        panic!(
            "gateway never became ready: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let reply = client
        .post_webhook(&base, &shopify_order("embedded-binary-1"))
        .await
        .expect("post");
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    // Stripe has no secret in this environment: it is left out, so 404.
    let stripe = client
        .post_webhook(&base, &stripe_payment("evt_x"))
        .await
        .expect("post");
    assert_eq!(stripe.status, 404);

    let events = dir.path().join("data/events.jsonl");
    let lines = eventually(Duration::from_secs(10), || async {
        let lines = read_lines(&events);
        (!lines.is_empty()).then_some(lines)
    })
    .await
    .expect("the event is appended to ./data/events.jsonl");
    assert_eq!(lines[0]["type"], "order.created");
    assert!(dir.path().join("data/hookgate.db").exists());

    // SIGTERM stops it cleanly.
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("gateway did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(status.success(), "exit {status}: {stderr}");
    assert!(
        stderr.contains("stripe"),
        "the disabled source is named in a warning: {stderr}"
    );
    assert!(
        !stderr.contains(SHOPIFY_SECRET),
        "secrets never reach the logs"
    );
}

/// HTTP/2 over cleartext (prior knowledge) is served on the same port, and the sender's
/// `X-Request-Id` becomes the correlation id of the stored entry and its event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_is_served_and_the_request_id_is_the_correlation_id() {
    use http_body_util::{BodyExt, Full};
    let harness = Harness::start(Options::new(Backend::Embedded)).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<bytes::Bytes>>();
    let webhook = shopify_order("h2c-1");
    let mut request = http::Request::builder()
        .method("POST")
        .uri(harness.url(&webhook.path));
    for (name, value) in &webhook.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    request = request.header("x-request-id", "req-h2c-42");
    let response = client
        .request(
            request
                .body(Full::new(bytes::Bytes::from(webhook.body.clone())))
                .expect("request"),
        )
        .await
        .expect("h2c response");
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("req-h2c-42")
    );
    let body: serde_json::Value = serde_json::from_slice(
        &response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes(),
    )
    .expect("json");
    let id = body["id"].as_str().expect("id").to_owned();
    let detail = harness
        .admin_get(&format!("/api/v1/admin/webhooks/{id}"))
        .await
        .json();
    assert_eq!(detail["correlation_id"], "req-h2c-42");
    let lines = eventually(Duration::from_secs(10), || async {
        let lines = read_lines(&harness.events_file());
        (!lines.is_empty()).then_some(lines)
    })
    .await
    .expect("event line");
    assert_eq!(lines[0]["correlationid"], "req-h2c-42");
    harness.cleanup().await;
}

/// `hookgate send` signs the sample like the platform and the gateway accepts it; sending
/// the same event id again shows the duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_command_signs_samples_the_gateway_accepts() {
    let harness = Harness::start(Options::new(Backend::Embedded)).await;
    let send = |source: &str, secret: &str, event_id: &str| {
        Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .args([
                "send",
                source,
                "--url",
                &harness.base,
                "--secret",
                secret,
                "--event-id",
                event_id,
            ])
            .env_clear()
            .output()
            .expect("run hookgate send")
    };
    for (source, secret, event_id) in [
        ("shopify", SHOPIFY_SECRET, "send-1"),
        ("stripe", STRIPE_SECRET, "evt_send_1"),
    ] {
        let first = send(source, secret, event_id);
        let stdout = String::from_utf8_lossy(&first.stdout);
        assert!(
            first.status.success(),
            "{source}: {stdout} {}",
            String::from_utf8_lossy(&first.stderr)
        );
        assert!(
            stdout.contains("-> 200") && stdout.contains("\"accepted\""),
            "{stdout}"
        );
        let again = send(source, secret, event_id);
        assert!(String::from_utf8_lossy(&again.stdout).contains("\"duplicate\""));
    }
    let wrong = send("shopify", "not-the-secret", "send-2");
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stdout).contains("-> 401"));
    let unknown = send("github", "x", "1");
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("shopify and stripe"));
    harness.cleanup().await;
}
