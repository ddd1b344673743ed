//! Hot reload: every trigger (admin call, file drop, config edit, SIGHUP, the CLI), broken
//! candidates refused while the old set keeps serving, the fixtures gate, dry runs, and a
//! reload under steady load that fails no request and leaves each webhook's provenance.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::support::{
    ADMIN_TOKEN, Backend, Harness, Options, SHOPIFY_SECRET, eventually, free_port, shopify_order,
    stripe_payment, wasm_dir,
};
use hookgate::client::HttpClient;
use hookgate::sample::{self, SignedWebhook};

/// The contract-0.1 build of the Shopify plugin: same name and version as the bundled one,
/// other bytes — a "new version" of a running plugin.
fn shopify_v01() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/plugins/shopify-0.1.0.wasm")
}

fn sha256_of(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).expect("read plugin")))
}

/// Copies `from` into `dir` as `name` the documented way: written aside, renamed into place.
fn deploy(from: &Path, dir: &Path, name: &str) {
    let partial = dir.join(format!(".{name}.partial"));
    std::fs::copy(from, &partial).expect("copy plugin");
    std::fs::rename(&partial, dir.join(name)).expect("rename plugin");
}

fn write_aside(dir: &Path, name: &str, bytes: &[u8]) {
    let partial = dir.join(format!(".{name}.partial"));
    std::fs::write(&partial, bytes).expect("write");
    std::fs::rename(&partial, dir.join(name)).expect("rename");
}

/// One fixture for the Shopify plugin, signed with the fixture's own secret; `topic` is
/// what it expects the mapping to say (the plugin maps the header's topic).
fn shopify_fixture(name: &str, expected_topic: &str) -> String {
    let secret = "fixture-secret-1";
    let webhook = sample::shopify(
        secret,
        "orders/create",
        "fixture-shop.myshopify.com",
        "evt-fixture-1",
        sample::SHOPIFY_ORDER.as_bytes(),
    );
    let headers: BTreeMap<&str, &str> = webhook
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    serde_json::json!({ "fixtures": [{
        "name": name,
        "request": { "headers": headers, "body": String::from_utf8_lossy(&webhook.body) },
        "secrets": [secret],
        "expect": { "verified": true, "secret": 0, "topic": expected_topic },
    }]})
    .to_string()
}

async fn still_serving(harness: &Harness, after: &str) {
    let reply = harness
        .post(&shopify_order(&uuid::Uuid::new_v4().to_string()))
        .await;
    assert!(
        (200..300).contains(&reply.status),
        "after {after}: {}",
        reply.status
    );
}

fn shopify_sha(plugins: &serde_json::Value) -> String {
    plugins["plugins"]
        .as_array()
        .and_then(|all| all.iter().find(|p| p["name"] == "shopify"))
        .and_then(|p| p["sha256"].as_str())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn broken_candidates_are_refused_and_the_old_set_keeps_serving() {
    // Reloads by the admin call only, so each file change is judged alone.
    let mut options = Options::new(Backend::Embedded);
    options.watch = false;
    let mut harness = Harness::start(options).await;
    let dir = harness.plugin_dir();
    let bundled_sha = shopify_sha(&harness.admin_get("/api/v1/admin/plugins").await.json());
    assert_eq!(bundled_sha.len(), 64);

    let nothing = harness.admin_post("/api/v1/admin/reload").await;
    assert_eq!(nothing.status, 200, "{:?}", nothing.json());
    assert_eq!(nothing.json()["result"], "unchanged");

    let refused = |reply: &hookgate::client::Reply, what: &str, reason: &str| {
        let body = reply.json();
        assert_eq!(reply.status, 422, "{body}");
        assert_eq!(body["result"], "rejected", "{body}");
        let rejected = body["rejected"].as_array().expect("rejected list");
        assert!(
            rejected
                .iter()
                .any(|r| r["what"].as_str().is_some_and(|w| w.contains(what))
                    && r["reason"].as_str().is_some_and(|t| t.contains(reason))),
            "expected {what}: {reason} in {body}"
        );
    };
    // Garbage bytes.
    write_aside(&dir, "github.wasm", b"this is not a component");
    refused(
        &harness.admin_post("/api/v1/admin/reload").await,
        "github.wasm",
        "",
    );
    still_serving(&harness, "garbage").await;
    let plugins = harness.admin_get("/api/v1/admin/plugins").await.json();
    assert!(
        plugins["rejected"].to_string().contains("github.wasm"),
        "{plugins}"
    );
    let health = harness.admin_get("/api/v1/health").await.json();
    assert_eq!(health["status"], "degraded", "{health}");
    std::fs::remove_file(dir.join("github.wasm")).expect("remove");

    // A component without the contract's exports.
    deploy(&wasm_dir().join("partial.wasm"), &dir, "partial.wasm");
    refused(
        &harness.admin_post("/api/v1/admin/reload").await,
        "partial.wasm",
        "map",
    );
    std::fs::remove_file(dir.join("partial.wasm")).expect("remove");

    // A plugin that traps on its own fixture.
    deploy(&wasm_dir().join("chaos.wasm"), &dir, "chaos.wasm");
    let trap_fixture = serde_json::json!({ "fixtures": [{
        "name": "chaos traps",
        "request": { "headers": {}, "body": "{}" },
        "secrets": ["s"],
        "settings": { "mode": "trap" },
        "expect": { "verified": true },
    }]});
    write_aside(
        &dir,
        "chaos.fixtures.json",
        trap_fixture.to_string().as_bytes(),
    );
    refused(
        &harness.admin_post("/api/v1/admin/reload").await,
        "chaos.wasm",
        "chaos traps",
    );
    std::fs::remove_file(dir.join("chaos.wasm")).expect("remove");
    std::fs::remove_file(dir.join("chaos.fixtures.json")).expect("remove");

    // A new Shopify build whose fixture fails: named in the reason, not swapped in.
    deploy(&shopify_v01(), &dir, "shopify.wasm");
    write_aside(
        &dir,
        "shopify.fixtures.json",
        shopify_fixture("expects another topic", "orders/paid").as_bytes(),
    );
    refused(
        &harness.admin_post("/api/v1/admin/reload").await,
        "shopify.wasm",
        "expects another topic",
    );
    let plugins = harness.admin_get("/api/v1/admin/plugins").await.json();
    assert_eq!(shopify_sha(&plugins), bundled_sha, "{plugins}");
    still_serving(&harness, "failing fixture").await;

    // An invalid configuration.
    let mut broken = harness.options.clone();
    broken.extra = "[sources.nameless]\nplugin = \"nonexistent\"\nsecrets = [\"x\"]\n".into();
    harness.rewrite_config(broken);
    refused(
        &harness.admin_post("/api/v1/admin/reload").await,
        "config",
        "nonexistent",
    );
    still_serving(&harness, "invalid config").await;

    // Fixed: the fixture now holds, the config is valid again — applied whole.
    write_aside(
        &dir,
        "shopify.fixtures.json",
        shopify_fixture("maps the topic", "orders/create").as_bytes(),
    );
    let mut fixed = harness.options.clone();
    fixed.extra = String::new();
    harness.rewrite_config(fixed);
    let applied = harness.admin_post("/api/v1/admin/reload").await;
    let body = applied.json();
    assert_eq!(applied.status, 200, "{body}");
    assert_eq!(body["result"], "applied", "{body}");
    assert_eq!(body["plugins"]["replaced"][0]["name"], "shopify", "{body}");
    assert_eq!(body["fixtures"][0]["passed"], 1, "{body}");
    assert_eq!(body["sources"]["replaced"], serde_json::json!(["shopify"]));
    let new_sha = sha256_of(&shopify_v01());
    let plugins = harness.admin_get("/api/v1/admin/plugins").await.json();
    assert_eq!(shopify_sha(&plugins), new_sha, "{plugins}");
    assert!(plugins["rejected"].is_null(), "{plugins}");
    let health = harness.admin_get("/api/v1/health").await.json();
    assert_eq!(health["status"], "ok", "{health}");

    // Provenance: the next webhook names the build that handled it.
    let reply = harness.post(&shopify_order("after-the-swap")).await;
    let id = reply.json()["id"].as_str().expect("id").to_owned();
    let entry = harness
        .admin_get(&format!("/api/v1/admin/webhooks/{id}"))
        .await
        .json();
    assert_eq!(entry["plugin_sha256"], new_sha.as_str(), "{entry}");

    let metrics = harness
        .client
        .get(&harness.url("/metrics"), &[])
        .await
        .expect("metrics");
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains("hookgate_reloads_total{result=\"rejected\"} 5"),
        "{text}"
    );
    assert!(
        text.contains("hookgate_reloads_total{result=\"applied\"} 1"),
        "{text}"
    );
    harness.cleanup().await;
}

#[tokio::test]
async fn a_dry_run_validates_and_changes_nothing() {
    let mut options = Options::new(Backend::Embedded);
    options.watch = false;
    let mut harness = Harness::start(options).await;
    let mut options = harness.options.clone();
    options.extra =
        format!("[sources.shop2]\nplugin = \"shopify\"\nsecrets = [\"{SHOPIFY_SECRET}\"]\n");
    harness.rewrite_config(options);
    let reply = harness
        .admin_post("/api/v1/admin/reload?dry_run=true")
        .await;
    let body = reply.json();
    assert_eq!(reply.status, 200, "{body}");
    assert_eq!(body["result"], "validated", "{body}");
    assert_eq!(
        body["sources"]["added"],
        serde_json::json!(["shop2"]),
        "{body}"
    );
    let mut webhook = shopify_order("dry-run");
    webhook.path = "/api/v1/webhooks/shop2".into();
    assert_eq!(harness.post(&webhook).await.status, 404);

    let bad = harness
        .admin_post("/api/v1/admin/reload?dry_run=maybe")
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"], "bad_request");
    let wrong_method = harness.admin_get("/api/v1/admin/reload").await;
    assert_eq!(wrong_method.status, 405);
    let anonymous = harness
        .client
        .send(
            http::Method::POST,
            &harness.url("/api/v1/admin/reload"),
            &[],
            Vec::new(),
        )
        .await
        .expect("request");
    assert_eq!(anonymous.status, 401);

    let applied = harness.admin_post("/api/v1/admin/reload").await;
    assert_eq!(applied.json()["result"], "applied");
    assert!((200..300).contains(&harness.post(&webhook).await.status));
    harness.cleanup().await;
}

#[tokio::test]
async fn a_dropped_plugin_and_an_edited_config_reload_by_themselves() {
    let mut harness = Harness::start(Options::new(Backend::Embedded)).await;
    let new_sha = sha256_of(&shopify_v01());
    deploy(&shopify_v01(), &harness.plugin_dir(), "shopify.wasm");
    let swapped = eventually(Duration::from_secs(15), || async {
        let plugins = harness.admin_get("/api/v1/admin/plugins").await.json();
        (shopify_sha(&plugins) == new_sha).then_some(plugins)
    })
    .await
    .expect("the dropped plugin serves within 15 s");
    assert_eq!(swapped["last_reload"]["trigger"], "watch", "{swapped}");

    let mut options = harness.options.clone();
    options.extra =
        format!("[sources.shop2]\nplugin = \"shopify\"\nsecrets = [\"{SHOPIFY_SECRET}\"]\n");
    harness.rewrite_config(options);
    let mut webhook = shopify_order("edited-config");
    webhook.path = "/api/v1/webhooks/shop2".into();
    let accepted = eventually(Duration::from_secs(15), || async {
        let status = harness.post(&webhook).await.status;
        (200..300).contains(&status).then_some(status)
    })
    .await;
    assert!(accepted.is_some(), "the edited config serves within 15 s");
    harness.cleanup().await;
}

/// The reload under load the issue asks for: a plugin replaced, a source added, another
/// removed and a secret rotated while four connections send signed webhooks.
#[tokio::test]
async fn reloads_under_load_fail_no_request() {
    const SENDERS: usize = 4;
    const PER_SENDER: usize = 500;
    let rotated = "shpss_rotated_secret_2718";
    let doomed = "[sources.doomed]\nplugin = \"stripe\"\nsecrets = [\"whsec_doomed\"]\n";
    let mut options = Options::new(Backend::Production);
    options.extra = doomed.to_owned();
    let harness = Harness::start(options).await;
    let bundled_sha = shopify_sha(&harness.admin_get("/api/v1/admin/plugins").await.json());
    let new_sha = sha256_of(&shopify_v01());
    let base = harness.base.clone();

    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let secret = Arc::new(std::sync::Mutex::new(SHOPIFY_SECRET.to_owned()));
    let mut senders = Vec::new();
    for sender in 0..SENDERS {
        let base = base.clone();
        let sent = sent.clone();
        let secret = secret.clone();
        senders.push(tokio::spawn(async move {
            let client = HttpClient::new();
            let mut failures = Vec::new();
            for i in 0..PER_SENDER {
                let key = secret.lock().unwrap().clone();
                let webhook = sample::shopify(
                    &key,
                    "orders/create",
                    "load.myshopify.com",
                    &format!("load-{sender}-{i}"),
                    sample::SHOPIFY_ORDER.as_bytes(),
                );
                let reply = client.post_webhook(&base, &webhook).await.expect("request");
                if !(200..300).contains(&reply.status) {
                    failures.push((
                        reply.status,
                        String::from_utf8_lossy(&reply.body).into_owned(),
                    ));
                }
                sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            failures
        }));
    }
    let wait_sent = |n: usize| {
        let sent = sent.clone();
        async move {
            eventually(Duration::from_secs(60), || async {
                (sent.load(std::sync::atomic::Ordering::Relaxed) >= n).then_some(())
            })
            .await
            .expect("load progresses");
        }
    };

    let doomed_webhook = || {
        let now = chrono::Utc::now().timestamp();
        let mut webhook = sample::stripe(
            "whsec_doomed",
            now,
            &sample::stripe_event(&format!("evt_{}", uuid::Uuid::new_v4().simple()), now),
        );
        webhook.path = "/api/v1/webhooks/doomed".into();
        webhook
    };
    wait_sent(200).await;
    assert!((200..300).contains(&harness.post(&doomed_webhook()).await.status));

    // A new build of the running plugin, dropped into the directory.
    deploy(&shopify_v01(), &harness.plugin_dir(), "shopify.wasm");
    eventually(Duration::from_secs(15), || async {
        let plugins = harness.admin_get("/api/v1/admin/plugins").await.json();
        (shopify_sha(&plugins) == new_sha).then_some(())
    })
    .await
    .expect("new plugin serves");
    wait_sent(600).await;

    // A source added, another removed, a secret rotated in: one config edit.
    let path = harness.names.dir.join("hookgate.toml");
    let text = std::fs::read_to_string(&path)
        .expect("config")
        .replace(
            &format!("secrets = [\"{SHOPIFY_SECRET}\"]"),
            &format!("secrets = [\"{SHOPIFY_SECRET}\", \"{rotated}\"]"),
        )
        .replace(
            doomed,
            &format!("[sources.added]\nplugin = \"shopify\"\nsecrets = [\"{rotated}\"]\n"),
        );
    write_aside(&harness.names.dir, "hookgate.toml", text.as_bytes());
    // The watcher may take the edit first; either way it serves once this returns.
    let reply = harness.admin_post("/api/v1/admin/reload").await;
    let body = reply.json();
    assert_eq!(reply.status, 200, "{body}");
    let doomed_gone = harness.post(&doomed_webhook()).await;
    assert_eq!(doomed_gone.status, 404, "the removed source is gone");
    let mut added = sample::shopify(
        rotated,
        "orders/create",
        "added.myshopify.com",
        "added-1",
        sample::SHOPIFY_ORDER.as_bytes(),
    );
    added.path = "/api/v1/webhooks/added".into();
    assert!((200..300).contains(&harness.post(&added).await.status));
    // Senders move to the rotated secret; the old one still verifies meanwhile.
    *secret.lock().unwrap() = rotated.to_owned();

    let mut failures = Vec::new();
    for sender in senders {
        failures.extend(sender.await.expect("sender"));
    }
    assert!(failures.is_empty(), "failed requests: {failures:?}");

    // Every load webhook stored once, by one of the two builds, both of which served.
    let mut by_sha: BTreeMap<String, usize> = BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/admin/webhooks?source=shopify&limit=500&cursor={c}"),
            None => "/api/v1/admin/webhooks?source=shopify&limit=500".to_owned(),
        };
        let page = harness.admin_get(&path).await.json();
        for item in page["items"].as_array().expect("items") {
            *by_sha
                .entry(item["plugin_sha256"].as_str().unwrap_or("none").to_owned())
                .or_default() += 1;
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    // Rotation telemetry: both secrets of `shopify` matched, each named by a fingerprint;
    // no secret value in any admin output.
    let sources = harness.admin_get("/api/v1/admin/sources").await;
    let listing = sources.json();
    let shopify = listing["sources"]
        .as_array()
        .and_then(|all| all.iter().find(|s| s["name"] == "shopify"))
        .expect("shopify listed");
    let secrets = shopify["secrets"].as_array().expect("secrets");
    assert_eq!(secrets.len(), 2, "{shopify}");
    for secret in secrets {
        assert!(secret["matches"].as_u64().unwrap_or(0) > 0, "{shopify}");
        assert!(secret["last_matched_at"].is_string(), "{shopify}");
    }
    let plugins = harness.admin_get("/api/v1/admin/plugins").await;
    let metrics = harness
        .client
        .get(&harness.url("/metrics"), &[])
        .await
        .expect("metrics");
    for output in [&sources.body, &plugins.body, &metrics.body, &reply.body] {
        let text = String::from_utf8_lossy(output);
        assert!(
            !text.contains(SHOPIFY_SECRET) && !text.contains(rotated),
            "a secret leaked: {text}"
        );
    }

    let total: usize = by_sha.values().sum();
    assert_eq!(total, SENDERS * PER_SENDER, "{by_sha:?}");
    assert_eq!(by_sha.len(), 2, "{by_sha:?}");
    assert!(
        by_sha[&bundled_sha] > 0 && by_sha[&new_sha] > 0,
        "{by_sha:?}"
    );
    harness.cleanup().await;
}

#[tokio::test]
async fn sighup_and_the_cli_reload_a_running_binary() {
    let dir = tempfile::tempdir().expect("dir");
    let port = free_port();
    let config = dir.path().join("hookgate.toml");
    let write = |sources: &str| {
        let text = format!(
            r#"listen = "127.0.0.1:{port}"
admin_token = "{ADMIN_TOKEN}"
[storage]
url = "sqlite://{dir}/hookgate.db"
[dedupe]
url = "memory://"
[bus]
url = "file://{dir}/events.jsonl"
[plugins]
dir = "{dir}/plugins.d"
cache_dir = "{cache}"
watch = false
{sources}"#,
            dir = dir.path().display(),
            cache = crate::support::plugin_cache_dir().display(),
        );
        write_aside(dir.path(), "hookgate.toml", text.as_bytes());
    };
    write(&format!(
        "[sources.shopify]\nsecrets = [\"{SHOPIFY_SECRET}\"]\n"
    ));
    let mut child = Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(["serve", "--config", &config.display().to_string()])
        .env_clear()
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn hookgate");
    let base = format!("http://127.0.0.1:{port}");
    let client = HttpClient::new();
    let ready = eventually(Duration::from_secs(60), || async {
        let reply = client
            .get(&format!("{base}/api/v1/health/ready"), &[])
            .await
            .ok()?;
        (reply.status == 200).then_some(())
    })
    .await;
    let result = async {
        ready.ok_or("gateway not ready")?;
        let stripe = stripe_payment("evt_sighup");
        let before = client.post_webhook(&base, &stripe).await.map_err(|e| e.to_string())?;
        if before.status != 404 {
            return Err(format!("stripe before reload: {}", before.status));
        }
        write(&format!(
            "[sources.shopify]\nsecrets = [\"{SHOPIFY_SECRET}\"]\n[sources.stripe]\nsecrets = [\"{}\"]\n",
            crate::support::STRIPE_SECRET
        ));
        let status = Command::new("kill")
            .args(["-HUP", &child.id().to_string()])
            .status()
            .map_err(|e| e.to_string())?;
        if !status.success() {
            return Err("kill -HUP failed".to_owned());
        }
        let accepted = eventually(Duration::from_secs(15), || async {
            let reply = client.post_webhook(&base, &stripe).await.ok()?;
            (200..300).contains(&reply.status).then_some(())
        })
        .await;
        accepted.ok_or("stripe not served after SIGHUP")?;
        let plugins = client
            .get(
                &format!("{base}/api/v1/admin/plugins"),
                &[("authorization".into(), format!("Bearer {ADMIN_TOKEN}"))],
            )
            .await
            .map_err(|e| e.to_string())?
            .json();
        if plugins["last_reload"]["trigger"] != "signal" {
            return Err(format!("last reload not by signal: {plugins}"));
        }

        // The CLI: a dry run with the right token, then a refusal with a wrong one.
        let cli = |token: &str| {
            Command::new(env!("CARGO_BIN_EXE_hookgate"))
                .args(["reload", "--url", &base, "--dry-run", "--token", token])
                .env_clear()
                .output()
                .expect("run hookgate reload")
        };
        let ok = cli(ADMIN_TOKEN);
        let text = String::from_utf8_lossy(&ok.stdout);
        if !ok.status.success() || !text.contains("\"validated\"") {
            return Err(format!("hookgate reload: {text}"));
        }
        let refused = cli("wrong-token");
        let message = String::from_utf8_lossy(&refused.stderr);
        if refused.status.success() || !message.contains("401") {
            return Err(format!("wrong token accepted: {message}"));
        }
        Ok(())
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    result.unwrap();
}

fn chaos_webhook(secret: &str, n: usize) -> SignedWebhook {
    use hmac::{Hmac, Mac};
    let body = format!("{{\"n\":{n}}}").into_bytes();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(&body);
    SignedWebhook {
        path: "/api/v1/webhooks/chaotic".into(),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("x-sig".into(), hex::encode(mac.finalize().into_bytes())),
        ],
        body,
    }
}

/// The dry run re-maps the last stored webhooks of a changed source through the version
/// serving now and through the candidate, and says what would change.
#[tokio::test]
async fn a_dry_run_remaps_recent_webhooks_through_the_candidate() {
    let mut options = Options::new(Backend::Embedded);
    options.watch = false;
    let mut harness = Harness::start(options).await;
    deploy(
        &wasm_dir().join("chaos.wasm"),
        &harness.plugin_dir(),
        "chaos.wasm",
    );
    let mut with_chaos = harness.options.clone();
    with_chaos.extra =
        "[sources.chaotic]\nplugin = \"chaos\"\nsecrets = [\"chaos-secret\"]\n".into();
    harness.rewrite_config(with_chaos.clone());
    let applied = harness.admin_post("/api/v1/admin/reload").await;
    assert_eq!(applied.json()["result"], "applied", "{:?}", applied.json());
    for n in 0..3 {
        let reply = harness.post(&chaos_webhook("chaos-secret", n)).await;
        assert_eq!(reply.status, 200, "{:?}", reply.json());
    }

    // The same plugin with settings that make it fail to map: every webhook would fail.
    let mut failing = with_chaos.clone();
    failing
        .extra
        .push_str("[sources.chaotic.settings]\nmap_mode = \"error\"\n");
    harness.rewrite_config(failing);
    let reply = harness
        .admin_post("/api/v1/admin/reload?dry_run=true&sample=10")
        .await;
    let body = reply.json();
    assert_eq!(reply.status, 200, "{body}");
    assert_eq!(body["result"], "validated", "{body}");
    let remapped = body["remapped"]
        .as_array()
        .and_then(|all| all.iter().find(|p| p["source"] == "chaotic"))
        .unwrap_or_else(|| panic!("no preview for chaotic: {body}"));
    assert_eq!(remapped["sampled"], 3, "{remapped}");
    assert_eq!(remapped["now_failing"], 3, "{remapped}");
    assert_eq!(remapped["same"], 0, "{remapped}");
    let change = &remapped["changes"][0];
    assert_eq!(change["change"], "now_failing", "{change}");
    assert!(change["before"]["events"].is_array(), "{change}");
    assert!(
        change["error"]
            .as_str()
            .is_some_and(|e| e.contains("chaos")),
        "{change}"
    );

    // Nothing was swapped: the webhooks still map.
    assert_eq!(
        harness.post(&chaos_webhook("chaos-secret", 9)).await.status,
        200
    );
    // An unchanged candidate re-maps nothing.
    harness.rewrite_config(with_chaos);
    let same = harness
        .admin_post("/api/v1/admin/reload?dry_run=true")
        .await
        .json();
    assert!(same.get("remapped").is_none(), "{same}");
    let bad = harness
        .admin_post("/api/v1/admin/reload?dry_run=true&sample=0")
        .await;
    assert_eq!(bad.status, 400);
    harness.cleanup().await;
}
