//! The bundled sources end to end on the production backends: each provider's signed
//! delivery in, its CloudEvent out on JetStream, the provider's retry answered as a
//! duplicate, a forged signature refused with 401, and the provider's handshake answered
//! without storing or publishing anything. Requests are signed here the way each provider
//! signs them.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signer, SigningKey};
use hmac::{Hmac, Mac};
use hookgate::client::Reply;
use hookgate::sample::SignedWebhook;
use sha2::Sha256;

use crate::support::*;

const GITHUB_SECRET: &str = "It's a Secret to Everybody";
const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
/// The raw key of the Standard Webhooks source; configured as `whsec_<base64>`.
const STANDARD_WEBHOOKS_KEY: &[u8] = b"standard-webhooks-test-key-0042!";
const SQUARE_KEY: &str = "Ibxx_5AKakO-3qeNVR61Dw";
/// The URL Square is told to post to; the gateway signs it, not its own address.
const SQUARE_PUBLIC_URL: &str = "https://hooks.example.com";

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn webhook(source: &str, headers: &[(&str, String)], body: &[u8]) -> SignedWebhook {
    SignedWebhook {
        path: format!("/api/v1/webhooks/{source}"),
        headers: headers
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.clone()))
            .collect(),
        body: body.to_vec(),
    }
}

fn accepted(reply: &Reply) -> String {
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let body = reply.json();
    assert_eq!(body["status"], "accepted", "{body}");
    body["id"].as_str().expect("id").to_owned()
}

fn duplicate_of(reply: &Reply, id: &str) {
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let body = reply.json();
    assert_eq!(body["status"], "duplicate", "{body}");
    assert_eq!(body["id"], id, "a duplicate names the first entry: {body}");
}

fn unauthorized(reply: &Reply) {
    assert_eq!(
        reply.status,
        401,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert!(
        content_type(reply).starts_with("application/json"),
        "{:?}",
        reply.headers
    );
    let body = reply.json();
    assert_eq!(body["error"], "unauthorized", "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

fn content_type(reply: &Reply) -> &str {
    reply
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// Waits for `count` messages in the test's stream, then checks that no more arrive
/// (duplicates and handshakes publish nothing) and that the source stored `count` entries.
async fn published(harness: &Harness, source: &str, count: usize) -> Vec<Message> {
    let messages =
        stream_messages(&harness.names.stream, count as u64, Duration::from_secs(10)).await;
    assert_eq!(messages.len(), count, "events on the stream");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        stream_count(&harness.names.stream).await,
        count as u64,
        "nothing more is published"
    );
    let listed = harness
        .admin_get(&format!("/api/v1/admin/webhooks?source={source}"))
        .await
        .json();
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(count),
        "entries stored: {listed}"
    );
    messages
}

/// The message of entry `webhook_id`, checked against the common envelope fields.
fn envelope_of(
    messages: &[Message],
    harness: &Harness,
    source: &str,
    webhook_id: &str,
) -> serde_json::Value {
    let message = messages
        .iter()
        .find(|m| m.json()["webhookid"] == webhook_id)
        .unwrap_or_else(|| panic!("no event of entry {webhook_id}"));
    let envelope = message.json();
    let event_type = envelope["type"].as_str().expect("type");
    assert_eq!(
        message.subject,
        format!("{}.{source}.{event_type}", harness.names.prefix)
    );
    assert_eq!(message.msg_id.as_deref(), envelope["id"].as_str());
    assert_eq!(envelope["specversion"], "1.0");
    assert_eq!(envelope["source"], format!("hookgate/{source}"));
    envelope
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_delivery_ping_duplicate_and_forgery() {
    let mut options = Options::new(Backend::Production);
    options.extra = format!("[sources.github]\nsecrets = [\"{GITHUB_SECRET}\"]\n");
    let harness = Harness::start(options).await;

    let github = |event: &str, delivery: &str, body: &[u8], secret: &str| {
        let signature = hex::encode(hmac_sha256(secret.as_bytes(), &[body]));
        webhook(
            "github",
            &[
                ("content-type", "application/json".into()),
                ("user-agent", "GitHub-Hookshot/044aadd".into()),
                ("x-github-event", event.into()),
                ("x-github-delivery", delivery.into()),
                ("x-github-hook-id", "292430182".into()),
                ("x-hub-signature-256", format!("sha256={signature}")),
            ],
            body,
        )
    };

    // The ping GitHub sends when the webhook is created: answered, nothing stored.
    let ping_body = br#"{"zen":"Design for failure.","hook_id":292430182,"hook":{"type":"Repository","id":292430182,"events":["pull_request"]},"repository":{"id":1296269,"full_name":"octo-org/hello-world"},"sender":{"login":"octocat","id":1}}"#;
    let ping = harness
        .post(&github(
            "ping",
            &uuid::Uuid::new_v4().to_string(),
            ping_body,
            GITHUB_SECRET,
        ))
        .await;
    assert_eq!(ping.status, 200, "{}", String::from_utf8_lossy(&ping.body));
    assert!(content_type(&ping).starts_with("application/json"));
    assert_eq!(ping.json(), serde_json::json!({ "ok": true }));

    // A pull request opened.
    let delivery = uuid::Uuid::new_v4().to_string();
    let body = br#"{"action":"opened","number":2,"pull_request":{"id":279147437,"number":2,"state":"open","title":"Update the README with new information."},"repository":{"id":1296269,"name":"hello-world","full_name":"octo-org/hello-world"},"organization":{"login":"octo-org","id":9919},"sender":{"login":"octocat","id":1}}"#;
    let id = accepted(
        &harness
            .post(&github("pull_request", &delivery, body, GITHUB_SECRET))
            .await,
    );
    // A redelivery keeps its X-GitHub-Delivery.
    duplicate_of(
        &harness
            .post(&github("pull_request", &delivery, body, GITHUB_SECRET))
            .await,
        &id,
    );
    // Signed with another secret, and a ping signed with another secret.
    unauthorized(
        &harness
            .post(&github(
                "pull_request",
                &uuid::Uuid::new_v4().to_string(),
                body,
                "not the secret",
            ))
            .await,
    );
    unauthorized(
        &harness
            .post(&github(
                "ping",
                &uuid::Uuid::new_v4().to_string(),
                ping_body,
                "not the secret",
            ))
            .await,
    );

    let messages = published(&harness, "github", 1).await;
    let envelope = envelope_of(&messages, &harness, "github", &id);
    assert_eq!(envelope["type"], "pull_request.opened");
    assert_eq!(envelope["subject"], "2");
    assert_eq!(envelope["tenant"], "octo-org/hello-world");
    assert_eq!(envelope["data"]["pull_request"]["id"], 279147437);
    harness.cleanup().await;
}

/// How a Standard Webhooks sender signs `{id}.{timestamp}.{body}`.
#[derive(Clone, Copy)]
enum Sign<'a> {
    /// `v1,<base64 HMAC-SHA256>` under this key (what `whsec_` holds).
    V1(&'a [u8]),
    /// `v1a,<base64 Ed25519>`, after an entry of a version the receiver must ignore.
    V1a(&'a SigningKey),
}

/// A Standard Webhooks delivery signed now; `prefix` is `webhook` or Svix's `svix`.
fn standard_webhook(prefix: &str, msg_id: &str, body: &[u8], sign: Sign<'_>) -> SignedWebhook {
    let timestamp = now().to_string();
    let content = [msg_id.as_bytes(), b".", timestamp.as_bytes(), b".", body].concat();
    let signature = match sign {
        Sign::V1(key) => format!("v1,{}", BASE64.encode(hmac_sha256(key, &[&content]))),
        Sign::V1a(key) => format!(
            "v2,aWdub3JlZA== v1a,{}",
            BASE64.encode(key.sign(&content).to_bytes())
        ),
    };
    webhook(
        "standard-webhooks",
        &[
            ("content-type", "application/json".into()),
            (&format!("{prefix}-id"), msg_id.into()),
            (&format!("{prefix}-timestamp"), timestamp),
            (&format!("{prefix}-signature"), signature),
        ],
        body,
    )
}

fn message_id() -> String {
    format!("msg_{}", uuid::Uuid::new_v4().simple())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_webhooks_v1_v1a_and_svix_deliveries() {
    let signing = SigningKey::from_bytes(&[7; 32]);
    let other = SigningKey::from_bytes(&[8; 32]);
    let mut options = Options::new(Backend::Production);
    options.extra = format!(
        "[sources.standard-webhooks]\nsecrets = [\"whsec_{}\"]\nkeys = [\"whpk_{}\"]\n",
        BASE64.encode(STANDARD_WEBHOOKS_KEY),
        BASE64.encode(signing.verifying_key().as_bytes()),
    );
    let harness = Harness::start(options).await;

    let invoice = br#"{"type":"invoice.paid","timestamp":"2024-05-01T10:20:30.000Z","data":{"id":"in_1PaidInvoice","amount":4200,"customer":"cus_42"}}"#;
    let contact = br#"{"type":"Contact.Created","timestamp":"2024-05-01T10:21:00Z","data":{"id":12345678901234567890,"email":"a@example.com"}}"#;
    let email = br#"{"type":"email.delivered","created_at":"2024-05-01T10:22:00Z","data":{"email_id":"4ef9a417"}}"#;
    let v1 = Sign::V1(STANDARD_WEBHOOKS_KEY);

    // v1 (HMAC under the whsec_ key).
    let first = message_id();
    let invoice_entry = accepted(
        &harness
            .post(&standard_webhook("webhook", &first, invoice, v1))
            .await,
    );
    // The retry: the same message id, a fresh timestamp and signature.
    duplicate_of(
        &harness
            .post(&standard_webhook("webhook", &first, invoice, v1))
            .await,
        &invoice_entry,
    );
    // v1a (Ed25519 under the whpk_ key).
    let contact_entry = accepted(
        &harness
            .post(&standard_webhook(
                "webhook",
                &message_id(),
                contact,
                Sign::V1a(&signing),
            ))
            .await,
    );
    // Svix's spelling of the headers, v1.
    let email_entry = accepted(
        &harness
            .post(&standard_webhook("svix", &message_id(), email, v1))
            .await,
    );
    // Forgeries: v1 under another key, v1a under another key pair.
    unauthorized(
        &harness
            .post(&standard_webhook(
                "webhook",
                &message_id(),
                invoice,
                Sign::V1(b"another-key-entirely-0000000000!"),
            ))
            .await,
    );
    unauthorized(
        &harness
            .post(&standard_webhook(
                "webhook",
                &message_id(),
                contact,
                Sign::V1a(&other),
            ))
            .await,
    );

    let messages = published(&harness, "standard-webhooks", 3).await;
    let invoice = envelope_of(&messages, &harness, "standard-webhooks", &invoice_entry);
    assert_eq!(invoice["type"], "invoice.paid");
    assert_eq!(invoice["subject"], "in_1PaidInvoice");
    assert!(invoice.get("tenant").is_none(), "{invoice}");
    assert!(
        invoice["time"]
            .as_str()
            .is_some_and(|t| t.starts_with("2024-05-01T10:20:30")),
        "{invoice}"
    );
    let contact = envelope_of(&messages, &harness, "standard-webhooks", &contact_entry);
    assert_eq!(contact["type"], "contact.created");
    assert_eq!(contact["subject"], "12345678901234567890");
    assert!(contact.get("tenant").is_none(), "{contact}");
    let email = envelope_of(&messages, &harness, "standard-webhooks", &email_entry);
    assert_eq!(email["type"], "email.delivered");
    assert!(email.get("subject").is_none(), "{email}");
    harness.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_event_url_verification_retry_and_forgery() {
    let mut options = Options::new(Backend::Production);
    options.extra = format!("[sources.slack]\nsecrets = [\"{SLACK_SECRET}\"]\n");
    let harness = Harness::start(options).await;

    let slack = |body: &[u8], secret: &str, retry: Option<u32>| {
        let timestamp = now().to_string();
        let signature = hex::encode(hmac_sha256(
            secret.as_bytes(),
            &[b"v0:", timestamp.as_bytes(), b":", body],
        ));
        let mut headers = vec![
            ("content-type", "application/json".to_owned()),
            (
                "user-agent",
                "Slackbot 1.0 (+https://api.slack.com/robots)".into(),
            ),
            ("x-slack-request-timestamp", timestamp),
            ("x-slack-signature", format!("v0={signature}")),
        ];
        if let Some(n) = retry {
            headers.push(("x-slack-retry-num", n.to_string()));
            headers.push(("x-slack-retry-reason", "http_timeout".into()));
        }
        webhook("slack", &headers, body)
    };

    // Saving the Request URL: the challenge comes back, nothing is stored.
    let challenge = "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P";
    let verification = format!(
        r#"{{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"{challenge}","type":"url_verification"}}"#
    );
    let reply = harness
        .post(&slack(verification.as_bytes(), SLACK_SECRET, None))
        .await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert!(content_type(&reply).starts_with("application/json"));
    assert_eq!(reply.json(), serde_json::json!({ "challenge": challenge }));
    unauthorized(
        &harness
            .post(&slack(verification.as_bytes(), "not the secret", None))
            .await,
    );

    let event_id = format!(
        "Ev{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10].to_uppercase()
    );
    let body = format!(
        r#"{{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","team_id":"T0001","api_app_id":"A0KRD7HC3","event":{{"type":"message","subtype":"channel_join","user":"U0002","text":"<@U0002> has joined the channel","channel":"C2147483705","channel_type":"channel","ts":"1700000000.000100","event_ts":"1700000000.000100"}},"type":"event_callback","event_id":"{event_id}","event_time":1700000000,"authorizations":[{{"team_id":"T0001","user_id":"U0001","is_bot":true}}]}}"#
    );
    let id = accepted(
        &harness
            .post(&slack(body.as_bytes(), SLACK_SECRET, None))
            .await,
    );
    // Slack's retry: signed anew, same event_id.
    duplicate_of(
        &harness
            .post(&slack(body.as_bytes(), SLACK_SECRET, Some(1)))
            .await,
        &id,
    );
    unauthorized(
        &harness
            .post(&slack(body.as_bytes(), "not the secret", None))
            .await,
    );

    let messages = published(&harness, "slack", 1).await;
    let envelope = envelope_of(&messages, &harness, "slack", &id);
    assert_eq!(envelope["type"], "message.channel_join");
    assert_eq!(envelope["subject"], "C2147483705");
    assert_eq!(envelope["tenant"], "T0001");
    assert!(
        envelope["time"]
            .as_str()
            .is_some_and(|t| t.starts_with("2023-11-14T22:13:20")),
        "event_time is when it occurred: {envelope}"
    );
    harness.cleanup().await;
}

/// A Discord delivery: Ed25519 over `X-Signature-Timestamp` + body, hex.
fn discord(key: &SigningKey, body: &[u8]) -> SignedWebhook {
    let timestamp = now().to_string();
    let signature = key.sign(&[timestamp.as_bytes(), body].concat());
    webhook(
        "discord",
        &[
            ("content-type", "application/json".into()),
            (
                "user-agent",
                "Discord-Interactions/1.0 (+https://discord.com)".into(),
            ),
            ("x-signature-ed25519", hex::encode(signature.to_bytes())),
            ("x-signature-timestamp", timestamp),
        ],
        body,
    )
}

async fn discord_harness(key: &SigningKey) -> Harness {
    let mut options = Options::new(Backend::Production);
    options.extra = format!(
        "[sources.discord]\nkeys = [\"{}\"]\n",
        hex::encode(key.verifying_key().as_bytes())
    );
    Harness::start(options).await
}

/// A snowflake made now, as Discord makes interaction ids.
fn snowflake() -> u64 {
    let ms = u64::try_from(chrono::Utc::now().timestamp_millis()).expect("after 1970");
    ((ms - 1_420_070_400_000) << 22) | (rand_bits() & 0x3f_ffff)
}

fn rand_bits() -> u64 {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discord_interaction_ping_command_and_forgery() {
    let key = SigningKey::from_bytes(&[1; 32]);
    let impostor = SigningKey::from_bytes(&[2; 32]);
    let harness = discord_harness(&key).await;

    // Discord's endpoint check: a PING signed right is answered PONG...
    let ping = br#"{"id":"1290000000000000000","application_id":"1234567890123456789","type":1,"token":"aW50ZXJhY3Rpb24tdG9rZW4","version":1}"#;
    let pong = harness.post(&discord(&key, ping)).await;
    assert_eq!(pong.status, 200, "{}", String::from_utf8_lossy(&pong.body));
    assert!(content_type(&pong).starts_with("application/json"));
    assert_eq!(pong.json(), serde_json::json!({ "type": 1 }));
    // ...and one signed wrong is refused with 401, or Discord drops the endpoint.
    unauthorized(&harness.post(&discord(&impostor, ping)).await);

    let interaction = snowflake();
    let body = format!(
        r#"{{"id":"{interaction}","application_id":"1234567890123456789","type":2,"data":{{"id":"1111111111111111111","name":"deploy","type":1,"options":[{{"name":"env","type":3,"value":"prod"}}]}},"guild_id":"290926798626357250","channel_id":"645027906669510667","member":{{"user":{{"id":"53908232506183680","username":"mason"}}}},"token":"aW50ZXJhY3Rpb24tdG9rZW4","version":1}}"#
    );
    let id = accepted(&harness.post(&discord(&key, body.as_bytes())).await);
    duplicate_of(&harness.post(&discord(&key, body.as_bytes())).await, &id);
    unauthorized(&harness.post(&discord(&impostor, body.as_bytes())).await);
    // A signature over another timestamp than the one sent.
    let mut moved = discord(&key, body.as_bytes());
    for (name, value) in &mut moved.headers {
        if name == "x-signature-timestamp" {
            *value = (value.parse::<i64>().expect("digits") + 1).to_string();
        }
    }
    unauthorized(&harness.post(&moved).await);

    let messages = published(&harness, "discord", 1).await;
    let envelope = envelope_of(&messages, &harness, "discord", &id);
    assert_eq!(envelope["type"], "interaction.application_command");
    assert_eq!(envelope["subject"], "deploy");
    assert_eq!(envelope["tenant"], "290926798626357250");
    harness.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discord_webhook_event_ping_event_and_forgery() {
    let key = SigningKey::from_bytes(&[3; 32]);
    let impostor = SigningKey::from_bytes(&[4; 32]);
    let harness = discord_harness(&key).await;

    // The webhook events URL's PING: 204, no body.
    let ping = br#"{"version":1,"application_id":"1234567890123456789","type":0}"#;
    let reply = harness.post(&discord(&key, ping)).await;
    assert_eq!(
        reply.status,
        204,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert!(reply.body.is_empty(), "{:?}", reply.body);
    // Discord asks for a valid Content-Type even on an empty answer.
    assert!(content_type(&reply).starts_with("application/json"));
    unauthorized(&harness.post(&discord(&impostor, ping)).await);

    let user = rand_bits() >> 8;
    let body = format!(
        r#"{{"version":1,"application_id":"1234567890123456789","type":1,"event":{{"type":"APPLICATION_AUTHORIZED","timestamp":"2024-10-18T14:42:53.064834","data":{{"integration_type":0,"scopes":["applications.commands"],"user":{{"id":"{user}","username":"someone"}},"guild":{{"id":"1234567890123456789","name":"A server"}}}}}}}}"#
    );
    let id = accepted(&harness.post(&discord(&key, body.as_bytes())).await);
    // Discord's retry resends the same body: a duplicate by the body's hash.
    duplicate_of(&harness.post(&discord(&key, body.as_bytes())).await, &id);
    unauthorized(&harness.post(&discord(&impostor, body.as_bytes())).await);

    let messages = published(&harness, "discord", 1).await;
    let envelope = envelope_of(&messages, &harness, "discord", &id);
    assert_eq!(envelope["type"], "application_authorized");
    assert_eq!(envelope["subject"], user.to_string());
    assert_eq!(envelope["tenant"], "1234567890123456789");
    assert!(
        envelope["time"]
            .as_str()
            .is_some_and(|t| t.starts_with("2024-10-18T14:42:53")),
        "event.timestamp read as UTC: {envelope}"
    );
    harness.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn square_through_generic_hmac_signs_the_public_url() {
    let settings = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/generic-hmac/square.toml"
    ))
    .expect("examples/generic-hmac/square.toml");
    // The example as shipped, with the key in place of the variable.
    assert!(settings.contains(&format!("public_url = \"{SQUARE_PUBLIC_URL}\"")));
    let mut options = Options::new(Backend::Production);
    options.extra = settings.replace("${SQUARE_WEBHOOK_SIGNATURE_KEY}", SQUARE_KEY);
    let harness = Harness::start(options).await;

    let square = |url: &str, path: &str, body: &[u8], key: &str| SignedWebhook {
        path: path.to_owned(),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("square-version".into(), "2024-10-17".into()),
            (
                "x-square-hmacsha256-signature".into(),
                BASE64.encode(hmac_sha256(key.as_bytes(), &[url.as_bytes(), body])),
            ),
        ],
        body: body.to_vec(),
    };
    let path = "/api/v1/webhooks/square";
    let signed_url = format!("{SQUARE_PUBLIC_URL}{path}");

    let event_id = uuid::Uuid::new_v4().to_string();
    let body = format!(
        r#"{{"merchant_id":"6SSW7HV8K2ST5","type":"payment.updated","event_id":"{event_id}","created_at":"2024-05-01T10:20:30.123Z","data":{{"type":"payment","id":"KkAkhdMsgzn59SM8A89WgKwekxLZY","object":{{"payment":{{"id":"KkAkhdMsgzn59SM8A89WgKwekxLZY","status":"COMPLETED","amount_money":{{"amount":100,"currency":"USD"}}}}}}}}}}"#
    );
    let id = accepted(
        &harness
            .post(&square(&signed_url, path, body.as_bytes(), SQUARE_KEY))
            .await,
    );
    // Square's retry: the same event_id.
    duplicate_of(
        &harness
            .post(&square(&signed_url, path, body.as_bytes(), SQUARE_KEY))
            .await,
        &id,
    );
    // The query is part of the signed URL: signed with it, the retry is still a duplicate...
    let with_query = format!("{path}?attempt=2");
    duplicate_of(
        &harness
            .post(&square(
                &format!("{SQUARE_PUBLIC_URL}{with_query}"),
                &with_query,
                body.as_bytes(),
                SQUARE_KEY,
            ))
            .await,
        &id,
    );
    // ...signed without it, refused.
    unauthorized(
        &harness
            .post(&square(
                &signed_url,
                &with_query,
                body.as_bytes(),
                SQUARE_KEY,
            ))
            .await,
    );
    // Signed over the gateway's own address instead of the public URL: refused.
    unauthorized(
        &harness
            .post(&square(
                &harness.url(path),
                path,
                body.as_bytes(),
                SQUARE_KEY,
            ))
            .await,
    );
    // Signed with another key: refused.
    unauthorized(
        &harness
            .post(&square(
                &signed_url,
                path,
                body.as_bytes(),
                "MCmhFRxGX82xMwg5FsaoQA",
            ))
            .await,
    );

    let messages = published(&harness, "square", 1).await;
    let envelope = envelope_of(&messages, &harness, "square", &id);
    assert_eq!(envelope["type"], "payment.updated");
    assert_eq!(envelope["subject"], "KkAkhdMsgzn59SM8A89WgKwekxLZY");
    assert_eq!(envelope["tenant"], "6SSW7HV8K2ST5");
    assert!(
        envelope["plugin"]
            .as_str()
            .is_some_and(|p| p.starts_with("generic-hmac@")),
        "{envelope}"
    );
    assert!(
        envelope["time"]
            .as_str()
            .is_some_and(|t| t.starts_with("2024-05-01T10:20:30")),
        "{envelope}"
    );
    harness.cleanup().await;
}

/// A `keys` entry that is no public key stops the gateway from starting, naming the entry:
/// at load (what `hookgate serve` does first), and at start for a config built in code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_is_not_a_key_is_refused_at_start_naming_it() {
    use hookgate::config::{CliOverrides, Config, SourceConfig};
    let dir = tempfile::tempdir().expect("temp dir");
    let base = format!(
        r#"listen = "127.0.0.1:0"

[storage]
url = "sqlite://{dir}/hookgate.db"

[dedupe]
url = "memory://"

[bus]
url = "file://{dir}/events.jsonl"

[plugins]
dir = "{dir}/plugins.d"
cache_dir = "{cache}"

[sources.shopify]
secrets = ["{SHOPIFY_SECRET}"]
"#,
        dir = dir.path().display(),
        cache = plugin_cache_dir().display(),
    );
    let load = |text: &str| {
        let path = dir.path().join("hookgate.toml");
        std::fs::write(&path, text).expect("write config");
        Config::load(Some(&path), &|_: &str| None, &CliOverrides::default())
    };

    let error = load(&format!("{base}\n[sources.x]\nkeys = [\"not a key\"]\n"))
        .expect_err("a key that does not parse is refused at load");
    let message = error.to_string();
    assert!(message.contains("sources.x.keys[0]"), "{message}");

    let mut config = load(&base).expect("the config without it loads");
    let mut discord = SourceConfig::new("discord", Vec::new());
    discord.keys = vec!["not a key".into()];
    config.sources.insert("discord".into(), discord);
    let Err(error) = hookgate::app::Gateway::start(&config).await else {
        panic!("the gateway started with a key that is not a key");
    };
    let message = format!("{error:#}");
    assert!(message.contains("sources.discord.keys[0]"), "{message}");
}
