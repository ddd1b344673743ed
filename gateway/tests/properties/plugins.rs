//! The bundled plugins through the real wasmtime host over arbitrary bodies, headers and
//! settings, signed correctly or not: the outcome is always one the contract defines
//! (rejected, handshake, mapped, failed), a bundled plugin never traps, times out or
//! breaks the contract on any input, and what comes back stays within the configured
//! output limits. A correctly signed arbitrary JSON body verifies with the secret that
//! signed it, among several (rotation).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use ed25519_dalek::{Signer as _, SigningKey};
use hmac::{Hmac, Mac};
use hookgate::plugin::{
    CallInput, Credentials, MapFailure, MapOutcome, OutputLimits, Plugin, PluginEngine,
    PluginFault, PluginLimits, PluginRegistry, Processed, RegistryOptions, WebhookRequest,
};
use hookgate_plugin_sdk::keys::PublicKey;
use proptest::prelude::*;
use serde_json::Value;

use crate::support::{plugin_cache_dir, runner};

/// The clock the plugins read; signed timestamps are near it.
const NOW: i64 = 1_760_000_000;

/// Tight enough that ordinary deliveries cross them, so the host's enforcement is what
/// is under test.
const LIMITS: OutputLimits = OutputLimits {
    max_events: 1,
    max_event_bytes: 600,
    max_error_chars: 40,
};

fn registry() -> &'static PluginRegistry {
    static REGISTRY: OnceLock<PluginRegistry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let engine = PluginEngine::new(PluginLimits {
            // Far beyond what a bundled plugin needs, so that a loaded machine cannot turn
            // a slow call into a reported fault; a loop still shows.
            timeout: Duration::from_secs(5),
            output: LIMITS,
            ..PluginLimits::default()
        })
        .expect("engine");
        let registry = PluginRegistry::build(
            &engine,
            &RegistryOptions {
                dir: None,
                cache_dir: Some(plugin_cache_dir()),
                skip_bundled: false,
                bundled_only: None,
                previous: None,
            },
        );
        assert!(registry.errors().is_empty(), "{:?}", registry.errors());
        registry
    })
}

fn plugin(name: &str) -> Arc<Plugin> {
    registry()
        .get(name)
        .cloned()
        .unwrap_or_else(|| panic!("bundled plugin {name} not loaded"))
}

fn hmac256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// JSON whose keys are often the ones the bundled mappings read.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::from)),
        Just(serde_json::from_str("123456789012345678901234567890").unwrap_or_default()),
        any::<String>().prop_map(Value::from),
        prop::sample::select(vec![
            "url_verification",
            "event_callback",
            "payment_intent.succeeded",
            "orders/create",
            "push",
            "2025-01-01T00:00:00Z",
            "not a date",
            "",
        ])
        .prop_map(Value::from),
        (0i64..4).prop_map(Value::from),
    ];
    let key = prop_oneof![
        prop::sample::select(vec![
            "id",
            "type",
            "data",
            "object",
            "created",
            "account",
            "challenge",
            "token",
            "event",
            "event_id",
            "team_id",
            "api_app_id",
            "event_time",
            "application_id",
            "timestamp",
            "action",
            "repository",
            "installation",
            "sender",
            "msgId",
            "eventType",
        ])
        .prop_map(str::to_owned),
        any::<String>(),
    ];
    leaf.prop_recursive(3, 24, 5, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => json().prop_map(|v| serde_json::to_vec(&v).unwrap_or_default()),
        1 => prop::collection::vec(any::<u8>(), 0..256),
        1 => Just(Vec::new()),
        // Slack's form-encoded slash commands and interactivity payloads.
        1 => "[a-z_]{1,8}=[A-Za-z0-9%+]{0,16}(&[a-z_]{1,8}=[A-Za-z0-9%+]{0,16}){0,3}"
            .prop_map(String::into_bytes),
    ]
}

/// Header names each bundled plugin reads, so arbitrary values land where they matter.
const HEADER_NAMES: &[&str] = &[
    "x-shopify-topic",
    "x-shopify-hmac-sha256",
    "x-shopify-shop-domain",
    "x-shopify-event-id",
    "x-shopify-webhook-id",
    "x-shopify-triggered-at",
    "shopify-topic",
    "shopify-event-id",
    "stripe-signature",
    "x-hub-signature-256",
    "x-hub-signature",
    "x-github-event",
    "x-github-delivery",
    "x-github-hook-installation-target-id",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "svix-id",
    "svix-timestamp",
    "svix-signature",
    "x-slack-signature",
    "x-slack-request-timestamp",
    "x-slack-retry-num",
    "x-slack-retry-reason",
    "x-signature-ed25519",
    "x-signature-timestamp",
    "x-sig",
    "x-tenant",
    "content-type",
];

/// Arbitrary values (lossily decoded, as the gateway hands them over), often numbers or
/// near-valid signatures.
fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..48)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        any::<String>(),
        (NOW - 1000..NOW + 1000).prop_map(|t| t.to_string()),
        "(t=[0-9]{1,12},)?(v1=[0-9a-f]{0,64},?){0,3}",
        "(sha256=|v0=|v1,)[0-9a-fA-F]{0,70}",
        "[A-Za-z0-9+/=]{0,50}",
        prop::sample::select(vec![
            "application/json",
            "application/x-www-form-urlencoded",
            "orders/create",
            "push",
            "ping",
        ])
        .prop_map(str::to_owned),
    ]
}

fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    let name = prop_oneof![
        4 => prop::sample::select(HEADER_NAMES.to_vec()).prop_map(str::to_owned),
        1 => "[a-z0-9-]{1,16}",
    ];
    prop::collection::vec((name, header_value()), 0..8)
}

/// The settings the bundled plugins read, with arbitrary values, and unknown ones.
fn settings() -> impl Strategy<Value = Vec<(String, String)>> {
    let key = prop_oneof![
        prop::sample::select(vec![
            "timestamp_tolerance_seconds",
            "signature_header",
            "signature_prefix",
            "signature_separator",
            "signature_encoding",
            "algorithm",
            "secret_encoding",
            "secret_prefix",
            "signed_content",
            "timestamp_header",
            "timestamp_unit",
            "event_type",
            "idempotency_key",
            "tenant",
            "subject",
            "occurred_at",
        ])
        .prop_map(str::to_owned),
        "[a-z_]{1,12}",
    ];
    let value = prop_oneof![
        any::<String>(),
        "[0-9]{0,20}",
        "-[0-9]{1,5}",
        "(\\{(body|url|header:x-[a-z]{1,5}|json:/[a-z/]{0,8})\\}|[a-z.:/-]{0,6}){0,4}",
        "(json:/|header:)[a-z/~0-9-]{0,10}",
        prop::sample::select(vec![
            "hex",
            "base64",
            "sha1",
            "sha256",
            "sha512",
            "utf8",
            "seconds",
            "milliseconds",
        ])
        .prop_map(str::to_owned),
    ];
    prop::collection::vec((key, value), 0..4)
}

/// A delivery for `name`: arbitrary, or signed as the platform signs (the signature
/// headers go first, so arbitrary repeats after them do not hide them), with `secrets`.
#[derive(Debug, Clone)]
struct Case {
    body: Vec<u8>,
    headers: Vec<(String, String)>,
    settings: Vec<(String, String)>,
    topic: Option<String>,
    secrets: Vec<Vec<u8>>,
    signer: usize,
    signed: bool,
    skew: i64,
    seed: [u8; 32],
}

fn case() -> impl Strategy<Value = Case> {
    (
        body(),
        headers(),
        settings(),
        prop::option::of(prop_oneof![
            "[a-z_]{1,12}/[a-z_]{1,12}".boxed(),
            any::<String>().boxed()
        ]),
        prop::collection::hash_set(prop::collection::vec(any::<u8>(), 1..40), 1..4),
        any::<prop::sample::Index>(),
        any::<bool>(),
        prop_oneof![4 => Just(0i64), 1 => -1000i64..1000],
        any::<[u8; 32]>(),
    )
        .prop_map(
            |(body, headers, settings, topic, secrets, signer, signed, skew, seed)| {
                let secrets: Vec<Vec<u8>> = secrets.into_iter().collect();
                Case {
                    signer: signer.index(secrets.len()),
                    body,
                    headers,
                    settings,
                    topic,
                    secrets,
                    signed,
                    skew,
                    seed,
                }
            },
        )
}

/// Header or setting (name, value) pairs.
type Pairs = Vec<(String, String)>;

/// The signature headers `name`'s platform would send for `case`, and the settings it
/// needs; the source's credentials.
fn sign(name: &str, case: &Case) -> (Pairs, Pairs, Credentials) {
    let secret = case.secrets[case.signer].as_slice();
    let body = case.body.as_slice();
    let t = (NOW + case.skew).to_string();
    let pair = |n: &str, v: String| (n.to_owned(), v);
    let mut credentials = Credentials::with_secrets(case.secrets.clone());
    let mut settings = Vec::new();
    let headers = match name {
        "shopify" => vec![
            pair(
                "x-shopify-hmac-sha256",
                STANDARD.encode(hmac256(secret, &[body])),
            ),
            pair("x-shopify-topic", "orders/create".into()),
        ],
        "github" => vec![
            pair(
                "x-hub-signature-256",
                format!("sha256={}", hex::encode(hmac256(secret, &[body]))),
            ),
            pair("x-github-event", "push".into()),
        ],
        "stripe" => vec![pair(
            "stripe-signature",
            format!(
                "t={t},v1={}",
                hex::encode(hmac256(secret, &[t.as_bytes(), b".", body]))
            ),
        )],
        "slack" => vec![
            pair(
                "x-slack-signature",
                format!(
                    "v0={}",
                    hex::encode(hmac256(secret, &[b"v0:", t.as_bytes(), b":", body]))
                ),
            ),
            pair("x-slack-request-timestamp", t.clone()),
        ],
        "standard-webhooks" => {
            // The configured secret is `whsec_<base64 of the key>`.
            credentials = Credentials::with_secrets(
                case.secrets
                    .iter()
                    .map(|s| format!("whsec_{}", STANDARD.encode(s)).into_bytes())
                    .collect::<Vec<_>>(),
            );
            let id = "msg_property";
            vec![
                pair("webhook-id", id.into()),
                pair("webhook-timestamp", t.clone()),
                pair(
                    "webhook-signature",
                    format!(
                        "v1,{}",
                        STANDARD.encode(hmac256(
                            secret,
                            &[id.as_bytes(), b".", t.as_bytes(), b".", body]
                        ))
                    ),
                ),
            ]
        }
        "discord" => {
            let key = SigningKey::from_bytes(&case.seed);
            let public = PublicKey::parse(&hex::encode(key.verifying_key().as_bytes()))
                .expect("an Ed25519 public key in hex");
            credentials = Credentials {
                keys: vec![public].into(),
                ..Credentials::default()
            };
            let mut message = t.clone().into_bytes();
            message.extend_from_slice(body);
            vec![
                pair(
                    "x-signature-ed25519",
                    hex::encode(key.sign(&message).to_bytes()),
                ),
                pair("x-signature-timestamp", t.clone()),
            ]
        }
        "generic-hmac" => {
            settings = vec![
                pair("signature_header", "x-sig".into()),
                pair("event_type", "{json:/type}".into()),
                pair("idempotency_key", "json:/id".into()),
                pair("tenant", "header:x-tenant".into()),
            ];
            vec![pair("x-sig", hex::encode(hmac256(secret, &[body])))]
        }
        other => panic!("no signer for {other}"),
    };
    (headers, settings, credentials)
}

fn chars(text: &str) -> usize {
    text.chars().count()
}

/// What the host hands back for a bundled plugin is one of the defined outcomes within
/// the limits; a fault of a bundled plugin is a bug whatever the input.
fn check_outcome(
    outcome: &Result<Processed, PluginFault>,
    body_len: usize,
) -> Result<(), TestCaseError> {
    // Sanitised error text: at most the limit, then an ellipsis; no control characters.
    let bounded = |text: &str| {
        chars(text) <= LIMITS.max_error_chars + 1 && !text.chars().any(char::is_control)
    };
    match outcome {
        Err(fault) => prop_assert!(false, "the plugin faulted: {fault}"),
        Ok(Processed::Rejected(error)) => {
            prop_assert!(bounded(error.detail()), "unbounded rejection: {error:?}")
        }
        Ok(Processed::Verified { mapped, .. }) => match mapped {
            Ok(MapOutcome::Events(mapping)) => {
                prop_assert!(mapping.events.len() <= LIMITS.max_events);
                let bytes: usize = mapping
                    .events
                    .iter()
                    .map(|e| e.data.as_ref().map_or(body_len, String::len))
                    .sum();
                prop_assert!(
                    bytes as u64 <= LIMITS.max_event_bytes,
                    "{bytes} event bytes"
                );
                for event in &mapping.events {
                    if let Some(data) = &event.data {
                        prop_assert!(
                            serde_json::from_str::<serde::de::IgnoredAny>(data).is_ok(),
                            "event data is not JSON: {data}"
                        );
                    }
                }
            }
            Ok(MapOutcome::Respond(handshake)) => {
                prop_assert!((200..300).contains(&handshake.status))
            }
            Err(MapFailure::Plugin(error)) => {
                let text = error.to_string();
                let detail = text.split_once(": ").map_or(text.as_str(), |(_, d)| d);
                prop_assert!(bounded(detail), "unbounded map error: {error:?}")
            }
            // The host refusing what the plugin returned (over a limit, a field it cannot
            // store): the webhook is stored failed, which is a defined outcome.
            Err(MapFailure::Fault(PluginFault::Invalid(_))) => {}
            Err(MapFailure::Fault(fault)) => prop_assert!(false, "map faulted: {fault}"),
        },
    }
    Ok(())
}

fn run_case(name: &str, case: &Case) -> (Result<Processed, PluginFault>, usize) {
    let (mut headers, mut settings, credentials) = if case.signed {
        sign(name, case)
    } else {
        (
            Vec::new(),
            Vec::new(),
            Credentials::with_secrets(case.secrets.clone()),
        )
    };
    headers.extend(case.headers.iter().cloned());
    settings.extend(case.settings.iter().cloned());
    let request = Arc::new(WebhookRequest {
        method: "POST".into(),
        path: format!("/api/v1/webhooks/{name}"),
        topic: case.topic.clone(),
        query: None,
        headers,
        body: Bytes::from(case.body.clone()),
    });
    let outcome = plugin(name).process(&CallInput {
        request: &request,
        credentials: &credentials,
        settings: &settings,
        now_unix_seconds: Some(NOW),
        correlation_id: "property",
    });
    (outcome, case.body.len())
}

fn defined_outcomes(name: &str) {
    let result = runner(192).run(&case(), |case| {
        let (outcome, body_len) = run_case(name, &case);
        check_outcome(&outcome, body_len)
    });
    if let Err(failure) = result {
        panic!("{name}: {failure}");
    }
}

#[test]
fn shopify_outcomes_are_defined_and_bounded() {
    defined_outcomes("shopify");
}

#[test]
fn stripe_outcomes_are_defined_and_bounded() {
    defined_outcomes("stripe");
}

#[test]
fn github_outcomes_are_defined_and_bounded() {
    defined_outcomes("github");
}

#[test]
fn standard_webhooks_outcomes_are_defined_and_bounded() {
    defined_outcomes("standard-webhooks");
}

#[test]
fn slack_outcomes_are_defined_and_bounded() {
    defined_outcomes("slack");
}

#[test]
fn discord_outcomes_are_defined_and_bounded() {
    defined_outcomes("discord");
}

#[test]
fn generic_hmac_outcomes_are_defined_and_bounded() {
    defined_outcomes("generic-hmac");
}

/// Shopify and GitHub sign the body alone: any JSON body, signed with one of the
/// source's secrets, verifies and names that secret; the same body with one byte changed
/// does not.
#[test]
fn a_correctly_signed_json_body_verifies_for_shopify_and_github() {
    let inputs = (
        prop::sample::select(vec!["shopify", "github"]),
        json(),
        prop::collection::hash_set(prop::collection::vec(any::<u8>(), 1..64), 1..4),
        any::<prop::sample::Index>(),
        any::<prop::sample::Index>(),
    );
    let result = runner(256).run(&inputs, |(name, value, secrets, signer, flip)| {
        let secrets: Vec<Vec<u8>> = secrets.into_iter().collect();
        let mut case = Case {
            body: serde_json::to_vec(&value).unwrap_or_default(),
            headers: Vec::new(),
            settings: Vec::new(),
            topic: None,
            signer: signer.index(secrets.len()),
            secrets,
            signed: true,
            skew: 0,
            seed: [0; 32],
        };
        let (outcome, body_len) = run_case(name, &case);
        check_outcome(&outcome, body_len)?;
        match outcome {
            Ok(Processed::Verified { matched_secret, .. }) => {
                prop_assert_eq!(matched_secret, Some(case.signer))
            }
            other => prop_assert!(false, "{name}: a signed body did not verify: {other:?}"),
        }
        // Tampered after signing: refused.
        let (headers, _, _) = sign(name, &case);
        let at = flip.index(case.body.len());
        case.body[at] ^= 0x01;
        case.signed = false;
        case.headers = headers;
        let (outcome, _) = run_case(name, &case);
        prop_assert!(
            matches!(outcome, Ok(Processed::Rejected(_))),
            "{name}: a tampered body was not refused: {outcome:?}"
        );
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

/// The signers above sign as each platform does: without this the "signed" half of the
/// properties could be refused wholesale and the mapping paths never run.
#[test]
fn every_signer_produces_a_delivery_its_plugin_verifies() {
    for name in [
        "shopify",
        "stripe",
        "github",
        "standard-webhooks",
        "slack",
        "discord",
        "generic-hmac",
    ] {
        let case = Case {
            body: br#"{"type":"thing.done","id":"evt_1","event":{"type":"message"}}"#.to_vec(),
            headers: Vec::new(),
            settings: Vec::new(),
            topic: None,
            secrets: vec![b"first".to_vec(), b"second".to_vec()],
            signer: 1,
            signed: true,
            skew: 0,
            seed: [7; 32],
        };
        let (outcome, _) = run_case(name, &case);
        assert!(
            matches!(outcome, Ok(Processed::Verified { .. })),
            "{name}: {outcome:?}"
        );
    }
}
