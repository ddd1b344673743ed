//! The operator console in a real browser: headless Chromium driven through WebDriver
//! (the machine's `chromedriver`) against a gateway started in-process. The sign-in wall,
//! finding and replaying a webhook, a dry-run reload, tenant secret rotation, bulk replay
//! with its progress, and a hostile webhook body that must stay text.
//!
//! `HOOKGATE_SCREENSHOTS=1` also writes a screenshot of each page to `docs/console/`.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hookgate::sample::{self, SignedWebhook};
use serde_json::json;

use crate::support::{
    ADMIN_TOKEN, Backend, Harness, Options, SHOPIFY_SECRET, free_port, shopify_order,
    stripe_payment,
};

const KEY: &str = "5b1c0e7d9a3f4e2b8c6d0a1f3e5b7c9d5b1c0e7d9a3f4e2b8c6d0a1f3e5b7c9d";
const SHOP: &str = "console-shop.myshopify.com";
const TENANT_SECRET_1: &str = "console-tenant-secret-0a9c41";
const TENANT_SECRET_2: &str = "console-tenant-rotated-7be2d0";
const WAIT: Duration = Duration::from_secs(20);

/// `chromedriver` (with Chromium) from `PATH` or `/usr/bin`; on Debian as root the
/// packages are installed when missing, as the test servers are. Never skipped: a
/// machine without a browser fails with what to install.
fn browser_binaries() -> (PathBuf, PathBuf) {
    let find = || {
        let driver = hookgate_test_services::private::find_binary("chromedriver")
            .or_else(|| Some(PathBuf::from("/usr/bin/chromedriver")).filter(|p| p.is_file()));
        let browser = ["chromium", "chromium-browser", "google-chrome"]
            .iter()
            .find_map(|name| hookgate_test_services::private::find_binary(name))
            .or_else(|| Some(PathBuf::from("/usr/bin/chromium")).filter(|p| p.is_file()));
        driver.zip(browser)
    };
    if let Some(found) = find() {
        return found;
    }
    if hookgate_test_services::private::apt_install(&["chromium", "chromium-driver"])
        && let Some(found) = find()
    {
        return found;
    }
    panic!(
        "the console tests drive headless Chromium through chromedriver, and neither was \
         found on PATH or in /usr/bin: install them (Debian: apt-get install chromium \
         chromium-driver)"
    );
}

/// One chromedriver on a free loopback port and one browser session in it; the driver
/// process (ours, by its PID) is killed when this is dropped.
struct Browser {
    client: Option<Client>,
    driver: Child,
    base: String,
    profile: tempfile::TempDir,
}

impl Browser {
    async fn start(base: &str) -> Self {
        let (driver_path, browser_path) = browser_binaries();
        let port = free_port();
        let mut driver = Command::new(&driver_path)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver_path.display()));
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed() > WAIT {
                let _ = driver.kill();
                panic!("chromedriver did not listen on port {port} within {WAIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().expect("profile dir");
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": browser_path,
                "args": [
                    "--headless=new",
                    // Root in a container: Chromium's sandbox needs namespaces it may not get.
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    // No crash handler process that would outlive the browser.
                    "--disable-breakpad",
                    "--disable-crash-reporter",
                    "--window-size=1366,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object")
        };
        let client =
            match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(capabilities)
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(client) => client,
                Err(error) => {
                    let _ = driver.kill();
                    let _ = driver.wait();
                    panic!("no browser session from chromedriver: {error}");
                }
            };
        Self {
            client: Some(client),
            driver,
            base: base.to_owned(),
            profile,
        }
    }

    fn c(&self) -> &Client {
        self.client.as_ref().expect("open session")
    }

    async fn goto(&self, path: &str) {
        self.c()
            .goto(&format!("{}{path}", self.base))
            .await
            .expect("navigate");
    }

    /// Changes the hash route without reloading, as a click on a nav link does.
    async fn route(&self, hash: &str) {
        self.js(&format!("location.hash = {}", json!(hash))).await;
    }

    async fn js(&self, script: &str) -> serde_json::Value {
        self.c()
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("script `{script}` failed: {e}"))
    }

    /// The element at `css` once its text contains `text`.
    async fn wait_for(&self, css: &str, text: &str) -> Element {
        let started = Instant::now();
        loop {
            if let Ok(element) = self.c().find(Locator::Css(css)).await
                && let Ok(shown) = element.text().await
                && shown.contains(text)
            {
                return element;
            }
            if started.elapsed() > WAIT {
                let page = self.js("return document.body.innerText").await;
                panic!(
                    "`{css}` with text {text:?} did not appear within {WAIT:?}; the page \
                     shows:\n{}",
                    page.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `script` (an expression) is true in the page.
    async fn wait_until(&self, script: &str) {
        let started = Instant::now();
        // A page mid-render may lack an element the expression reads: that is "not yet".
        let probe = format!("try {{ return !!({script}); }} catch (e) {{ return false; }}");
        while self.js(&probe).await != json!(true) {
            if started.elapsed() > WAIT {
                let page = self.js("return document.body.innerText").await;
                panic!(
                    "`{script}` did not hold within {WAIT:?}; the page shows:\n{}",
                    page.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn click(&self, css: &str) {
        self.c()
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no `{css}` to click: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("cannot click `{css}`: {e}"));
    }

    async fn fill(&self, css: &str, text: &str) {
        let input = self
            .c()
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no `{css}` to fill: {e}"));
        input.clear().await.expect("clear");
        input.send_keys(text).await.expect("type");
    }

    async fn text(&self, css: &str) -> String {
        self.c()
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no `{css}`: {e}"))
            .text()
            .await
            .expect("text")
    }

    async fn sign_in(&self) {
        self.goto("/console/").await;
        self.wait_for("#signin", "Sign in").await;
        self.fill("#token", ADMIN_TOKEN).await;
        self.click("#signin button[type=submit]").await;
        self.wait_until("!document.getElementById('top').hidden")
            .await;
    }

    /// Requests the page made to the gateway's API so far.
    async fn api_calls(&self) -> Vec<String> {
        let calls = self
            .js("return performance.getEntriesByType('resource')\
                 .map(e => e.name).filter(n => n.includes('/api/'))")
            .await;
        serde_json::from_value(calls).unwrap_or_default()
    }

    async fn screenshot(&self, name: &str) {
        if std::env::var_os("HOOKGATE_SCREENSHOTS").is_none() {
            return;
        }
        let png = self.c().screenshot().await.expect("screenshot");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/console");
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
    }

    async fn close(mut self) {
        if let Some(client) = self.client.take() {
            // Ends the session, so chromedriver stops its Chromium before we stop it.
            let _ = client.close().await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        // A test that failed never closed its session, and chromedriver's death leaves its
        // Chromium running: stop the processes that use this browser's own profile.
        if self.client.is_some() {
            stop_processes_using(self.profile.path());
        }
    }
}

/// Sends SIGTERM to the processes started with `--user-data-dir=<profile>`: a directory
/// made for one test, so only that test's Chromium matches.
fn stop_processes_using(profile: &Path) {
    let marker = format!("--user-data-dir={}", profile.display());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if cmdline
            .split(|b| *b == 0)
            .any(|arg| arg == marker.as_bytes())
        {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    }
}

fn console_options() -> Options {
    let mut options = Options::new(Backend::Embedded);
    options.top = format!("secrets_key = \"{KEY}\"");
    options.extra = "[sources.shops]\nplugin = \"shopify\"\ntenant_secrets = true\n".into();
    // The reload is the console's to trigger: a file change must not apply it first.
    options.watch = false;
    options
}

fn tenant_order(secret: &str, event_id: &str) -> SignedWebhook {
    let mut webhook = sample::shopify(
        secret,
        "orders/create",
        SHOP,
        event_id,
        sample::SHOPIFY_ORDER.as_bytes(),
    );
    webhook.path = "/api/v1/webhooks/shops".into();
    webhook
}

async fn accepted_id(harness: &Harness, webhook: &SignedWebhook) -> String {
    let reply = harness.post(webhook).await;
    assert_eq!(reply.status, 200, "{:?}", reply.json());
    reply.json()["id"].as_str().expect("id").to_owned()
}

// Multi-threaded: WebDriver round trips block on the browser while this gateway serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_sign_in_wall_holds_without_a_token() {
    let harness = Harness::start(console_options()).await;
    accepted_id(&harness, &shopify_order("wall-1")).await;

    let page = harness
        .client
        .get(&harness.url("/console/"), &[])
        .await
        .expect("request");
    assert_eq!(page.status, 200);
    let csp = page.headers["content-security-policy"]
        .to_str()
        .expect("csp");
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(page.headers["x-content-type-options"], "nosniff");

    // The overview's counters: behind the token like the rest of the admin API.
    let anonymous = harness
        .client
        .get(&harness.url("/api/v1/admin/stats"), &[])
        .await
        .expect("request");
    assert_eq!(anonymous.status, 401);
    let stats = harness.admin_get("/api/v1/admin/stats").await.json();
    assert!(
        stats["webhooks_received"]
            .as_array()
            .expect("counters")
            .contains(&json!({ "source": "shopify", "outcome": "accepted", "count": 1 })),
        "{stats}"
    );

    let browser = Browser::start(&harness.base).await;
    // A deep link without a token: still only the form, and not one API call.
    for path in ["/console/", "/console/#/webhooks"] {
        browser.goto(path).await;
        browser.wait_for("#signin", "Admin token").await;
        assert_eq!(
            browser
                .js("return document.getElementById('top').hidden")
                .await,
            json!(true)
        );
        assert_eq!(
            browser
                .js("return document.querySelectorAll('main table, main section').length")
                .await,
            json!(0),
            "nothing but the sign-in form shows"
        );
        assert_eq!(browser.api_calls().await, Vec::<String>::new());
    }
    browser.screenshot("signin").await;

    // A wrong token is refused with the admin API's own message, and is not kept.
    browser.fill("#token", "not-the-token").await;
    browser.click("#signin button[type=submit]").await;
    browser
        .wait_for("#signin-message", "a valid admin bearer token is required")
        .await;
    assert_eq!(
        browser
            .js("return sessionStorage.length + localStorage.length")
            .await,
        json!(0)
    );
    assert_eq!(
        browser
            .js("return document.getElementById('top').hidden")
            .await,
        json!(true)
    );

    // The right one opens the console, and lives in this tab's session storage only.
    browser.fill("#token", ADMIN_TOKEN).await;
    browser.click("#signin button[type=submit]").await;
    browser.wait_for("#webhook-table", "shopify").await;
    assert_eq!(browser.js("return localStorage.length").await, json!(0));
    assert_eq!(
        browser.js("return document.cookie").await,
        json!(""),
        "no cookie carries the token"
    );
    // Signing out brings the wall back.
    browser.click("#sign-out").await;
    browser.wait_for("#signin", "Admin token").await;
    assert_eq!(browser.js("return sessionStorage.length").await, json!(0));
    browser.close().await;
    harness.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_operator_flows_in_a_browser() {
    let mut harness = Harness::start(console_options()).await;
    accepted_id(&harness, &shopify_order("flow-1")).await;
    let stripe = stripe_payment("evt_console_1");
    let stripe_id = accepted_id(&harness, &stripe).await;
    accepted_id(&harness, &stripe_payment("evt_console_2")).await;
    // Signed but not JSON: the plugin cannot map it, so it is stored as failed.
    let broken = sample::shopify(
        SHOPIFY_SECRET,
        "orders/create",
        "example-shop.myshopify.com",
        "flow-broken",
        b"this is not json",
    );
    let broken_id = accepted_id(&harness, &broken).await;

    let browser = Browser::start(&harness.base).await;
    browser.sign_in().await;

    // Overview: counters per source and outcome, and every dependency's health.
    browser.wait_for("#rates-table", "stripe").await;
    browser.wait_for("#deps", "storage").await;
    browser.screenshot("overview").await;

    // Webhooks: filter by source, open one, see its masked signature, replay it.
    browser.route("#/webhooks").await;
    browser.wait_for("#webhook-table", "shopify").await;
    browser.fill("#webhook-filters-source", "stripe").await;
    browser.click("#webhook-filters button[type=submit]").await;
    browser
        .wait_until(
            "location.hash.includes('source=stripe') && \
             document.querySelectorAll('#webhook-table tbody tr').length === 2 && \
             !document.getElementById('webhook-table').innerText.includes('shopify')",
        )
        .await;
    browser.screenshot("webhooks").await;
    browser
        .click(&format!("#webhook-table a[data-id='{stripe_id}']"))
        .await;
    browser.wait_for("#headers", "stripe-signature").await;
    let signature = stripe
        .headers
        .iter()
        .find(|(name, _)| name == "stripe-signature")
        .map(|(_, value)| value.clone())
        .expect("signature header");
    let page = browser.js("return document.body.innerText").await;
    let page = page.as_str().unwrap_or_default();
    assert!(
        !page.contains(&signature),
        "the signature shows in the page"
    );
    assert!(browser.text("#headers").await.contains("(masked)"));
    assert!(browser.text("#body").await.contains("evt_console_1"));
    browser.wait_for("#replays-empty", "Never replayed").await;
    browser.click("#replay").await;
    browser.wait_for("#replay-message", "new event").await;
    let detail = harness
        .admin_get(&format!("/api/v1/admin/webhooks/{stripe_id}"))
        .await
        .json();
    let new_event = detail["replays"][0]["event_ids"][0]
        .as_str()
        .expect("a replayed event")
        .to_owned();
    browser.wait_for("#replays", &new_event).await;
    browser.wait_for("#events", &new_event).await;
    browser.screenshot("webhook").await;

    // Failures: grouped by reason; a bulk replay shows its dry run, then runs as a job.
    browser.route("#/failures").await;
    browser.wait_for("#groups-table", "shopify").await;
    let reason = detail_error(&harness, &broken_id).await;
    browser.wait_for("#groups-table", &reason).await;
    browser.fill("#bulk-filters-source", "shopify").await;
    browser.click("#bulk-filters button[type=submit]").await;
    browser
        .wait_for("#dry-run-summary", "first 1 matching")
        .await;
    browser.wait_for("#bulk .preview", &broken_id[..8]).await;
    browser.click("#bulk-confirm").await;
    browser
        .wait_until("document.querySelector('#job[data-done]')")
        .await;
    let job = browser.text("#job-status").await;
    assert!(job.starts_with("completed: 1 processed"), "{job}");
    browser.screenshot("failures").await;

    // Plugins: a dry-run reload shows the source the file now adds, then applies it.
    let mut options = harness.options.clone();
    options.extra.push_str(&format!(
        "\n[sources.shop_two]\nplugin = \"shopify\"\nsecrets = [\"{SHOPIFY_SECRET}\"]\n"
    ));
    harness.rewrite_config(options);
    browser.route("#/plugins").await;
    browser.wait_for("#plugins-table", "shopify").await;
    browser.click("#reload-dry-run").await;
    browser.wait_for("#reload-result", "validated").await;
    let added = browser
        .js(
            "const dt = [...document.querySelectorAll('#reload-result dt')]\
             .find(d => d.textContent === 'Sources added'); \
             return dt.nextElementSibling.innerText.trim()",
        )
        .await;
    assert_eq!(
        added,
        json!("shop_two"),
        "the dry run's diff names the new source"
    );
    let sources = harness.admin_get("/api/v1/admin/sources").await.json();
    assert!(
        !sources.to_string().contains("shop_two"),
        "a dry run swaps nothing"
    );
    browser.screenshot("plugins").await;
    browser.click("#reload-apply").await;
    browser.wait_for("#reload-result", "applied").await;
    let sources = harness.admin_get("/api/v1/admin/sources").await.json();
    assert!(sources.to_string().contains("shop_two"));

    // Secrets: add one for a tenant, rotate (add the new one), remove the old one.
    browser.route("#/secrets").await;
    browser
        .wait_for("#tenant-secrets", "No tenant secret")
        .await;
    // A refused change shows the admin API's own message.
    browser.fill("#secret-source", "no_such_source").await;
    browser.fill("#secret-tenant", SHOP).await;
    browser.fill("#secret-value", TENANT_SECRET_1).await;
    browser.click("#secret-form button[type=submit]").await;
    browser
        .wait_for(
            "#secret-message .error",
            "no enabled source is named \"no_such_source\"",
        )
        .await;
    browser.fill("#secret-source", "shops").await;
    browser.fill("#secret-tenant", SHOP).await;
    browser.fill("#secret-value", TENANT_SECRET_1).await;
    browser.click("#secret-form button[type=submit]").await;
    browser.wait_for("#tenant-table", SHOP).await;
    assert_eq!(
        harness
            .post(&tenant_order(TENANT_SECRET_1, "t-1"))
            .await
            .status,
        200
    );
    let first = tenant_fingerprints(&harness).await;
    assert_eq!(first.len(), 1);
    browser
        .click(&format!(
            "#tenant-table button[aria-label='Rotate the secrets of {SHOP}']"
        ))
        .await;
    assert_eq!(
        browser.js("return document.activeElement.id").await,
        json!("secret-value"),
        "rotate takes the operator to the new secret's input"
    );
    browser.fill("#secret-value", TENANT_SECRET_2).await;
    browser.click("#secret-form button[type=submit]").await;
    browser
        .wait_until("document.querySelectorAll('#tenant-table tbody tr').length === 2")
        .await;
    browser.screenshot("secrets").await;
    let old = &first[0];
    browser
        .click(&format!(
            "#tenant-table button[aria-label='Remove secret {old}']"
        ))
        .await;
    browser
        .click(&format!(
            "#tenant-table button.danger[data-fingerprint='{old}']"
        ))
        .await;
    browser
        .wait_until(&format!(
            "document.querySelectorAll('#tenant-table tbody tr').length === 1 && \
             !document.getElementById('tenant-table').innerText.includes('{old}')"
        ))
        .await;
    assert_eq!(
        harness
            .post(&tenant_order(TENANT_SECRET_1, "t-2"))
            .await
            .status,
        401,
        "the removed secret no longer verifies"
    );
    assert_eq!(
        harness
            .post(&tenant_order(TENANT_SECRET_2, "t-3"))
            .await
            .status,
        200
    );
    let source = browser.c().source().await.expect("page source");
    assert!(!source.contains(TENANT_SECRET_1) && !source.contains(TENANT_SECRET_2));

    browser.close().await;
    harness.cleanup().await;
}

async fn detail_error(harness: &Harness, id: &str) -> String {
    let detail = harness
        .admin_get(&format!("/api/v1/admin/webhooks/{id}"))
        .await
        .json();
    assert_eq!(detail["status"], "failed", "{detail}");
    detail["last_error"]
        .as_str()
        .expect("last_error")
        .to_owned()
}

async fn tenant_fingerprints(harness: &Harness) -> Vec<String> {
    let listed = harness.admin_get("/api/v1/admin/secrets").await.json();
    listed["secrets"]
        .as_array()
        .expect("secrets")
        .iter()
        .map(|s| s["fingerprint"].as_str().expect("fingerprint").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_in_a_webhook_renders_as_text() {
    let harness = Harness::start(console_options()).await;
    let body = json!({
        "id": 820982911946154508_u64,
        "note": "<script>window.__hookgate_pwned = 1</script><img src=x onerror=\"window.__hookgate_pwned = 2\">",
    })
    .to_string();
    let mut webhook = sample::shopify(
        SHOPIFY_SECRET,
        "orders/create",
        "example-shop.myshopify.com",
        "xss-1",
        body.as_bytes(),
    );
    webhook.headers.push((
        "x-note".into(),
        "<script>window.__hookgate_pwned = 3</script>".into(),
    ));
    let id = accepted_id(&harness, &webhook).await;

    let browser = Browser::start(&harness.base).await;
    browser.sign_in().await;
    browser.route(&format!("#/webhooks/{id}")).await;
    browser
        .wait_for("#body", "<script>window.__hookgate_pwned = 1</script>")
        .await;
    browser
        .wait_for("#headers", "<script>window.__hookgate_pwned = 3</script>")
        .await;
    browser.click("#raw-toggle").await;
    browser.wait_for("#body", "onerror=").await;
    // Give an injected handler every chance to fire before looking.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        browser
            .js("return document.querySelectorAll('main script, main img, main iframe').length")
            .await,
        json!(0),
        "the body and headers made no element"
    );
    assert_eq!(
        browser.js("return typeof window.__hookgate_pwned").await,
        json!("undefined"),
        "no injected code ran"
    );
    assert_eq!(
        browser.js("return document.scripts.length").await,
        json!(1),
        "only the console's own module"
    );
    browser.close().await;
    harness.cleanup().await;
}
