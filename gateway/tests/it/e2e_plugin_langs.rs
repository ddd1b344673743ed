//! The example plugins in JavaScript and Python (`examples/plugins/github-{js,py}`), built
//! by their own build scripts, served by a running gateway from its plugin directory:
//! each passes its own fixtures offline (what `hookgate plugins test` runs), then a signed delivery
//! becomes an event, its redelivery a duplicate, a forgery a 401 and the ping a handshake,
//! exactly as with the bundled Rust plugin.

use std::path::Path;
use std::time::Duration;

use hmac::{Hmac, Mac};
use hookgate::plugin::{self, LoadOptions, PluginEngine, PluginLimits};
use hookgate::sample::SignedWebhook;
use sha2::Sha256;

use crate::example_plugins::example_plugin;
use crate::support::*;

const SECRET: &str = "It's a Secret to Everybody";

fn github(source: &str, event: &str, delivery: &str, body: &[u8], secret: &str) -> SignedWebhook {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("any key");
    mac.update(body);
    let signature = hex::encode(mac.finalize().into_bytes());
    SignedWebhook {
        path: format!("/api/v1/webhooks/{source}"),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("x-github-event".into(), event.into()),
            ("x-github-delivery".into(), delivery.into()),
            ("x-hub-signature-256".into(), format!("sha256={signature}")),
        ],
        body: body.to_vec(),
    }
}

/// Runs the plugin's sidecar fixtures as `hookgate plugins test` does, through the
/// compiled-artifact cache the gateway below uses too (a 12-18 MB component takes seconds
/// to compile).
fn passes_its_fixtures(name: &str, wasm: &Path) {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/plugins")
        .join(name)
        .join(format!("{name}.fixtures.json"));
    let text = std::fs::read_to_string(&fixtures).expect("fixtures file");
    let fixtures = plugin::load_fixtures(&text).expect("fixtures parse");
    let engine = PluginEngine::new(PluginLimits::default()).expect("engine");
    let options = LoadOptions {
        cache_dir: Some(plugin_cache_dir()),
    };
    let loaded = engine
        .load_with(&std::fs::read(wasm).expect("component"), &options)
        .unwrap_or_else(|e| panic!("{name} does not load: {e}"));
    assert_eq!(loaded.metadata().name, name);
    let report = plugin::run_fixtures(&loaded, &fixtures);
    assert!(report.all_passed(), "{name} fails its fixtures:\n{report}");
    assert_eq!(report.results.len(), 4, "{report}");
}

async fn serves_github(name: &str) {
    let wasm = example_plugin(name);
    passes_its_fixtures(name, &wasm);

    // The plugin is in the directory before the gateway starts, as an operator deploys it.
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("plugins.d")).expect("plugin dir");
    std::fs::copy(
        &wasm,
        dir.path().join("plugins.d").join(format!("{name}.wasm")),
    )
    .expect("deploy the plugin");
    let mut options = Options::new(Backend::Embedded);
    options.extra = format!("[sources.{name}]\nsecrets = [\"{SECRET}\"]\n");
    options.reuse = Some(Names {
        dir: dir.path().to_path_buf(),
        schema: unique("t_"),
        stream: unique("T").to_uppercase(),
        prefix: unique("hg"),
    });
    let harness = Harness::start(options).await;

    let ping_body =
        br#"{"zen":"Design for failure.","hook_id":292430182,"hook":{"type":"Repository"}}"#;
    let ping = harness
        .post(&github(name, "ping", "ping-1", ping_body, SECRET))
        .await;
    assert_eq!(ping.status, 200, "{}", String::from_utf8_lossy(&ping.body));
    assert_eq!(ping.json(), serde_json::json!({ "ok": true }));

    let body = br#"{"action":"opened","number":2,"pull_request":{"id":279147437,"number":2},"repository":{"id":1296269,"full_name":"octo-org/hello-world"},"sender":{"login":"octocat"}}"#;
    let signed = github(name, "pull_request", "delivery-1", body, SECRET);
    let first = harness.post(&signed).await;
    assert_eq!(
        first.status,
        200,
        "{}",
        String::from_utf8_lossy(&first.body)
    );
    assert_eq!(first.json()["status"], "accepted", "{}", first.json());
    let id = first.json()["id"].as_str().expect("id").to_owned();

    let again = harness.post(&signed).await;
    assert_eq!(again.json()["status"], "duplicate", "{}", again.json());
    assert_eq!(again.json()["id"], id);

    let forged = harness
        .post(&github(
            name,
            "pull_request",
            "delivery-2",
            body,
            "not the secret",
        ))
        .await;
    assert_eq!(
        forged.status,
        401,
        "{}",
        String::from_utf8_lossy(&forged.body)
    );
    assert_eq!(forged.json()["error"], "unauthorized");

    eventually(Duration::from_secs(10), || async {
        let lines = read_lines(&harness.events_file());
        (!lines.is_empty()).then_some(lines)
    })
    .await
    .expect("the event reaches the events file");
    // Only the delivery: the ping, the duplicate and the forgery publish nothing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lines = read_lines(&harness.events_file());
    assert_eq!(lines.len(), 1, "{lines:?}");
    let event = &lines[0];
    assert_eq!(event["type"], "pull_request.opened");
    assert_eq!(event["source"], format!("hookgate/{name}"));
    assert_eq!(event["subject"], "2");
    assert_eq!(event["tenant"], "octo-org/hello-world");
    assert_eq!(event["webhookid"], id.as_str());
    assert_eq!(event["data"]["pull_request"]["id"], 279147437);
    harness.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_github_plugin_serves_webhooks() {
    serves_github("github-js").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_github_plugin_serves_webhooks() {
    serves_github("github-py").await;
}
