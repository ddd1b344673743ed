//! Every error status of the webhook API, each with its JSON body.

use std::time::Duration;

use hookgate::sample::SignedWebhook;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

fn assert_error(reply: &hookgate::client::Reply, status: u16, code: &str) {
    assert_eq!(
        reply.status,
        status,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let body = reply.json();
    assert_eq!(body["error"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_failures_are_401_and_never_stored() {
    let harness = Harness::start(Options::new(Backend::Embedded)).await;
    let mut forged = shopify_order("forged-1");
    for (name, value) in forged.headers.iter_mut() {
        if name == "x-shopify-hmac-sha256" {
            *value = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into();
        }
    }
    assert_error(&harness.post(&forged).await, 401, "unauthorized");

    let mut unsigned = shopify_order("unsigned-1");
    unsigned
        .headers
        .retain(|(name, _)| name != "x-shopify-hmac-sha256");
    assert_error(&harness.post(&unsigned).await, 401, "unauthorized");

    let mut tampered = stripe_payment("evt_tampered");
    tampered.body.extend_from_slice(b" ");
    assert_error(&harness.post(&tampered).await, 401, "unauthorized");

    let stale =
        hookgate::sample::stripe(STRIPE_SECRET, chrono::Utc::now().timestamp() - 3600, b"{}");
    assert_error(&harness.post(&stale).await, 401, "unauthorized");

    let listed = harness.admin_get("/api/v1/admin/webhooks").await.json();
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(0),
        "nothing stored: {listed}"
    );
    let metrics = harness
        .client
        .get(&harness.url("/metrics"), &[])
        .await
        .expect("metrics");
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains(r#"hookgate_webhooks_received_total{source="shopify",outcome="rejected"} 2"#),
        "{text}"
    );
    harness.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_source_method_and_path_errors() {
    let harness = Harness::start(Options::new(Backend::Embedded)).await;
    let mut unknown = shopify_order("x");
    unknown.path = "/api/v1/webhooks/github".into();
    assert_error(&harness.post(&unknown).await, 404, "unknown_source");

    let get = harness
        .client
        .get(&harness.url("/api/v1/webhooks/shopify"), &[])
        .await
        .expect("get");
    assert_error(&get, 405, "method_not_allowed");
    assert_eq!(
        get.headers.get("allow").and_then(|v| v.to_str().ok()),
        Some("POST")
    );

    let nowhere = harness
        .client
        .get(&harness.url("/nowhere"), &[])
        .await
        .expect("get");
    assert_error(&nowhere, 404, "not_found");
    harness.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_413_declared_or_chunked() {
    let mut options = Options::new(Backend::Embedded);
    options.top = "max_payload_size_mb = 1".into();
    let harness = Harness::start(options).await;
    let limit = 1024 * 1024;

    // Exactly at the limit is accepted (then fails verification: it is not signed).
    let at_limit = SignedWebhook {
        path: "/api/v1/webhooks/shopify/orders-create".into(),
        headers: vec![],
        body: vec![b' '; limit],
    };
    assert_error(&harness.post(&at_limit).await, 401, "unauthorized");
    let over = SignedWebhook {
        body: vec![b' '; limit + 1],
        ..at_limit.clone()
    };
    assert_error(&harness.post(&over).await, 413, "payload_too_large");

    // 100 MB announced, chunked, never fully sent: refused while reading, not buffered.
    let address = harness.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    stream
        .write_all(b"POST /api/v1/webhooks/shopify HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n")
        .await
        .expect("write head");
    let chunk = vec![b'a'; 64 * 1024];
    let mut sent = 0usize;
    let mut response = Vec::new();
    // Bounded: at most 100 MB, stops as soon as the gateway answers.
    while sent < 100 * 1024 * 1024 {
        let header = format!("{:x}\r\n", chunk.len());
        let write = async {
            stream.write_all(header.as_bytes()).await?;
            stream.write_all(&chunk).await?;
            stream.write_all(b"\r\n").await
        };
        if write.await.is_err() {
            break;
        }
        sent += chunk.len();
        let mut buffer = [0u8; 4096];
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(1), stream.read(&mut buffer)).await
        {
            response.extend_from_slice(&buffer[..n]);
            if n > 0 {
                break;
            }
        }
    }
    if response.is_empty() {
        let mut buffer = [0u8; 4096];
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer)).await
        {
            response.extend_from_slice(&buffer[..n]);
        }
    }
    let text = String::from_utf8_lossy(&response);
    assert!(
        text.starts_with("HTTP/1.1 413"),
        "got {text:?} after {sent} bytes"
    );
    assert!(sent < 8 * limit, "refused early, after {sent} bytes");
    harness.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_time_out_with_408_and_load_is_shed_with_429() {
    let mut options = Options::new(Backend::Embedded);
    options.extra = "[http]\nbody_read_timeout_ms = 300\nmax_concurrency = 1\n".into();
    let harness = Harness::start(options).await;
    let address = harness.base.trim_start_matches("http://").to_owned();
    // Holds the only slot: announces a body and sends none of it.
    let mut slow = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    slow.write_all(
        b"POST /api/v1/webhooks/shopify HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n",
    )
    .await
    .expect("write");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let shed = harness.post(&shopify_order("shed-1")).await;
    assert_error(&shed, 429, "overloaded");

    let mut buffer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut buffer))
        .await
        .expect("answered within the timeout")
        .expect("read");
    let text = String::from_utf8_lossy(&buffer[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    // The slot is free again.
    let reply = harness.post(&shopify_order("after-408")).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    harness.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_fault_during_verify_is_500_and_during_map_the_webhook_is_stored_failed() {
    let mut options = Options::new(Backend::Embedded);
    options.extra = "[sources.trapping]\nplugin = \"chaos\"\nsecrets = [\"k\"]\n[sources.trapping.settings]\nverify_mode = \"trap\"\n\n\
         [sources.unmappable]\nplugin = \"chaos\"\nsecrets = [\"k\"]\n[sources.unmappable.settings]\nverify_mode = \"ok\"\nmap_mode = \"trap\"\n"
        .into();
    // The chaos plugin comes from the plugin dir, like an ops-installed one.
    options.plugin_files = vec![wasm_dir().join("chaos.wasm")];
    let harness = Harness::start(options).await;
    let body = br#"{"id": 1}"#.to_vec();
    let signature = {
        use hmac::{Hmac, Mac};
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(b"k").expect("key");
        mac.update(&body);
        hex::encode(mac.finalize().into_bytes())
    };
    let trapping = SignedWebhook {
        path: "/api/v1/webhooks/trapping".into(),
        headers: vec![("x-sig".into(), signature.clone())],
        body: body.clone(),
    };
    assert_error(&harness.post(&trapping).await, 500, "plugin_fault");

    let unmappable = SignedWebhook {
        path: "/api/v1/webhooks/unmappable".into(),
        ..trapping.clone()
    };
    let reply = harness.post(&unmappable).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.json()["status"], "accepted");
    let id = reply.json()["id"].as_str().expect("id").to_owned();
    let detail = harness
        .admin_get(&format!("/api/v1/admin/webhooks/{id}"))
        .await
        .json();
    assert_eq!(detail["status"], "failed", "{detail}");
    assert!(
        detail["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("plugin fault")),
        "{detail}"
    );
    // The sender's retry of the same bytes is a duplicate of the failed entry.
    let again = harness.post(&unmappable).await.json();
    assert_eq!(again["status"], "duplicate");
    assert_eq!(again["id"], id.as_str());
    harness.cleanup().await;
}
