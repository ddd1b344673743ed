//! Per-tenant secrets: a webhook for a tenant verifies with that tenant's secrets only;
//! adding, rotating and removing them through the admin API and the CLI takes effect
//! without a restart; no secret value comes out of any API, metric or log.

use std::process::Command;
use std::time::Duration;

use crate::support::{ADMIN_TOKEN, Backend, Harness, Options, eventually};
use hookgate::client::Reply;
use hookgate::sample::{self, SignedWebhook};

const KEY: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
const SHOP_A: &str = "shop-a.myshopify.com";
const SHOP_B: &str = "shop-b.myshopify.com";
const SECRET_A: &str = "tenant-a-secret-5f2c81";
const SECRET_A2: &str = "tenant-a-rotated-77d1e0";
const SECRET_B: &str = "tenant-b-secret-a93b44";

fn order(secret: &str, shop: &str, event_id: &str) -> SignedWebhook {
    let mut webhook = sample::shopify(
        secret,
        "orders/create",
        shop,
        event_id,
        sample::SHOPIFY_ORDER.as_bytes(),
    );
    webhook.path = "/api/v1/webhooks/shops".into();
    webhook
}

async fn add(harness: &Harness, tenant: &str, secrets: &[&str]) -> Reply {
    let body = serde_json::json!({ "source": "shops", "tenant": tenant, "secrets": secrets });
    harness
        .client
        .send(
            http::Method::POST,
            &harness.url("/api/v1/admin/secrets"),
            &[
                ("authorization".into(), format!("Bearer {ADMIN_TOKEN}")),
                ("content-type".into(), "application/json".into()),
            ],
            body.to_string().into_bytes(),
        )
        .await
        .expect("request")
}

fn hookgate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(args)
        .env_clear()
        .env("HOOKGATE_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .expect("run hookgate")
}

// Multi-threaded: the CLI runs as a blocking child process while this gateway serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenant_verifies_with_its_own_secrets_and_changes_apply_at_once() {
    let mut options = Options::new(Backend::Production);
    options.top = format!("secrets_key = \"{KEY}\"");
    options.extra = "[sources.shops]\nplugin = \"shopify\"\ntenant_secrets = true\n".into();
    let harness = Harness::start(options).await;

    // No tenant has secrets yet: nothing verifies.
    assert_eq!(
        harness.post(&order(SECRET_A, SHOP_A, "e1")).await.status,
        401
    );

    let added = add(&harness, SHOP_A, &[SECRET_A]).await;
    assert_eq!(added.status, 201, "{:?}", added.json());
    add(&harness, SHOP_B, &[SECRET_B]).await;
    assert_eq!(
        harness.post(&order(SECRET_A, SHOP_A, "e2")).await.status,
        200
    );
    assert_eq!(
        harness.post(&order(SECRET_B, SHOP_B, "e3")).await.status,
        200
    );
    // A's secret does not open B's door, nor the other way round.
    assert_eq!(
        harness.post(&order(SECRET_A, SHOP_B, "e4")).await.status,
        401
    );
    assert_eq!(
        harness.post(&order(SECRET_B, SHOP_A, "e5")).await.status,
        401
    );
    // An unknown tenant falls back to the source's own secrets: it has none.
    assert_eq!(
        harness
            .post(&order(SECRET_A, "stranger.myshopify.com", "e6"))
            .await
            .status,
        401
    );

    // Rotation through the CLI: the new secret is added beside the old one...
    let base = harness.base.clone();
    let cli_add = hookgate(&[
        "secrets", "add", "--url", &base, "--source", "shops", "--tenant", SHOP_A, "--secret",
        SECRET_A2,
    ]);
    assert!(
        cli_add.status.success(),
        "{}",
        String::from_utf8_lossy(&cli_add.stderr)
    );
    assert_eq!(
        harness.post(&order(SECRET_A2, SHOP_A, "e7")).await.status,
        200
    );
    assert_eq!(
        harness.post(&order(SECRET_A, SHOP_A, "e8")).await.status,
        200
    );

    // ...the listing shows which one still matches, never a value...
    let listed = hookgate(&["secrets", "list", "--url", &base, "--tenant", SHOP_A]);
    let text = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(listed.status.success(), "{text}");
    let listing: serde_json::Value = serde_json::from_str(&text).expect("JSON listing");
    let secrets = listing["secrets"].as_array().expect("secrets");
    assert_eq!(secrets.len(), 2, "{listing}");
    for secret in secrets {
        assert!(secret["matches"].as_u64().unwrap_or(0) >= 1, "{listing}");
    }
    let old_id = secrets
        .iter()
        .find(|s| s["fingerprint"] == hookgate::ingest::rotation::fingerprint(SECRET_A.as_bytes()))
        .and_then(|s| s["id"].as_str())
        .expect("the old secret is listed")
        .to_owned();

    // ...and the old one is removed: it stops verifying at once.
    let removed = hookgate(&[
        "secrets", "remove", "--url", &base, "--source", "shops", "--tenant", SHOP_A, &old_id,
    ]);
    assert!(
        removed.status.success(),
        "{}",
        String::from_utf8_lossy(&removed.stderr)
    );
    assert_eq!(
        harness.post(&order(SECRET_A, SHOP_A, "e9")).await.status,
        401
    );
    assert_eq!(
        harness.post(&order(SECRET_A2, SHOP_A, "e10")).await.status,
        200
    );
    let again = hookgate(&[
        "secrets", "remove", "--url", &base, "--source", "shops", "--tenant", SHOP_A, &old_id,
    ]);
    assert!(!again.status.success());

    // Bad input: a clear error, nothing written.
    for (body, code) in [
        (
            serde_json::json!({ "source": "nope", "tenant": "t", "secrets": ["x"] }),
            422,
        ),
        (
            serde_json::json!({ "source": "shops", "tenant": "", "secrets": ["x"] }),
            400,
        ),
        (
            serde_json::json!({ "source": "shops", "tenant": "t", "secrets": [] }),
            400,
        ),
        (serde_json::json!({ "source": "shops", "tenant": "t" }), 400),
    ] {
        let reply = harness
            .client
            .send(
                http::Method::POST,
                &harness.url("/api/v1/admin/secrets"),
                &[("authorization".into(), format!("Bearer {ADMIN_TOKEN}"))],
                body.to_string().into_bytes(),
            )
            .await
            .expect("request");
        assert_eq!(reply.status, code, "{body}: {:?}", reply.json());
        assert!(reply.json()["error"].is_string());
    }
    let anonymous = harness
        .client
        .get(&harness.url("/api/v1/admin/secrets"), &[])
        .await
        .expect("request");
    assert_eq!(anonymous.status, 401);

    // No value anywhere an operator can look.
    let outputs = [
        harness.admin_get("/api/v1/admin/secrets").await.body,
        harness.admin_get("/api/v1/admin/sources").await.body,
        harness.admin_get("/api/v1/admin/plugins").await.body,
        harness
            .client
            .get(&harness.url("/metrics"), &[])
            .await
            .expect("metrics")
            .body,
    ];
    for output in outputs {
        let text = String::from_utf8_lossy(&output);
        for secret in [SECRET_A, SECRET_A2, SECRET_B, KEY] {
            assert!(!text.contains(secret), "a secret leaked: {text}");
        }
    }
    harness.cleanup().await;
}

/// A second gateway on the same storage sees a change made through the first within its
/// refresh period, with no restart and no database read per webhook.
#[tokio::test]
async fn another_instance_picks_changes_up() {
    let mut options = Options::new(Backend::Production);
    options.top = format!("secrets_key = \"{KEY}\"");
    options.extra = "[sources.shops]\nplugin = \"shopify\"\ntenant_secrets = true\n".into();
    let first = Harness::start(options.clone()).await;
    let mut second_options = options;
    second_options.reuse = Some(first.names.clone());
    let second = Harness::start(second_options).await;

    assert_eq!(first.post(&order(SECRET_B, SHOP_B, "x1")).await.status, 401);
    assert_eq!(add(&first, SHOP_B, &[SECRET_B]).await.status, 201);
    let seen = eventually(Duration::from_secs(15), || async {
        let status = second
            .post(&order(SECRET_B, SHOP_B, &uuid::Uuid::new_v4().to_string()))
            .await
            .status;
        (status == 200).then_some(())
    })
    .await;
    assert!(
        seen.is_some(),
        "the second instance never saw the new secret"
    );
    let mut second = second;
    second.stop().await;
    first.cleanup().await;
}

#[tokio::test]
async fn without_a_key_tenant_secrets_cannot_be_added() {
    let mut options = Options::new(Backend::Embedded);
    options.extra = "[sources.shops]\nplugin = \"shopify\"\ntenant_secrets = true\n".into();
    let harness = Harness::start(options).await;
    let reply = add(&harness, SHOP_A, &[SECRET_A]).await;
    assert_eq!(reply.status, 409);
    assert_eq!(reply.json()["error"], "secrets_key_missing");
    harness.cleanup().await;
}
