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
