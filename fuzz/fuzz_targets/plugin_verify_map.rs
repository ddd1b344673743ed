//! The bundled plugins' `verify` and `map` through the real wasmtime host over arbitrary
//! bodies, headers, settings and topics, signed the way the platform signs or not: the
//! outcome is one the contract defines (rejected, handshake, mapped, failed), no bundled
//! plugin traps or times out, and the output stays within the configured limits.

#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arbitrary::Arbitrary;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use hookgate::plugin::{
    CallInput, Credentials, MapFailure, MapOutcome, OutputLimits, PluginEngine, PluginFault,
    PluginLimits, PluginRegistry, Processed, RegistryOptions, WebhookRequest,
};
use libfuzzer_sys::fuzz_target;

const PLUGINS: &[&str] = &[
    "shopify",
    "stripe",
    "github",
    "standard-webhooks",
    "slack",
    "discord",
    "generic-hmac",
];
const NOW: i64 = 1_760_000_000;
const LIMITS: OutputLimits = OutputLimits {
    max_events: 1,
    max_event_bytes: 600,
    max_error_chars: 40,
};

fn registry() -> &'static PluginRegistry {
    static REGISTRY: OnceLock<(tempfile::TempDir, PluginRegistry)> = OnceLock::new();
    &REGISTRY
        .get_or_init(|| {
            let engine = PluginEngine::new(PluginLimits {
                timeout: Duration::from_secs(5),
                output: LIMITS,
                ..PluginLimits::default()
            })
            .expect("engine");
            let cache = tempfile::tempdir().expect("cache dir");
            let registry = PluginRegistry::build(
                &engine,
                &RegistryOptions {
                    dir: None,
                    cache_dir: Some(cache.path().to_path_buf()),
                    skip_bundled: false,
                    bundled_only: None,
                    previous: None,
                },
            );
            (cache, registry)
        })
        .1
}

#[derive(Arbitrary, Debug)]
struct Input {
    plugin: u8,
    sign: bool,
    skew: i16,
    topic: Option<String>,
    secrets: Vec<Vec<u8>>,
    signer: u8,
    headers: Vec<(String, String)>,
    settings: Vec<(String, String)>,
    body: Vec<u8>,
}

fn hmac256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// The headers (and settings) the platform would send; Discord's Ed25519 is left
/// unsigned (its verify is fuzzed, its map only through the property tests).
fn signature(
    name: &str,
    secret: &[u8],
    body: &[u8],
    t: &str,
) -> (
    Vec<(String, String)>,
    Vec<(String, String)>,
    Option<Vec<u8>>,
) {
    let pair = |n: &str, v: String| (n.to_owned(), v);
    match name {
        "shopify" => (
            vec![pair(
                "x-shopify-hmac-sha256",
                STANDARD.encode(hmac256(secret, &[body])),
            )],
            vec![],
            None,
        ),
        "github" => (
            vec![pair(
                "x-hub-signature-256",
                format!("sha256={}", hex::encode(hmac256(secret, &[body]))),
            )],
            vec![],
            None,
        ),
        "stripe" => (
            vec![pair(
                "stripe-signature",
                format!(
                    "t={t},v1={}",
                    hex::encode(hmac256(secret, &[t.as_bytes(), b".", body]))
                ),
            )],
            vec![],
            None,
        ),
        "slack" => (
            vec![
                pair(
                    "x-slack-signature",
                    format!(
                        "v0={}",
                        hex::encode(hmac256(secret, &[b"v0:", t.as_bytes(), b":", body]))
                    ),
                ),
                pair("x-slack-request-timestamp", t.to_owned()),
            ],
            vec![],
            None,
        ),
        "standard-webhooks" => (
            vec![
                pair("webhook-id", "msg_fuzz".into()),
                pair("webhook-timestamp", t.to_owned()),
                pair(
                    "webhook-signature",
                    format!(
                        "v1,{}",
                        STANDARD.encode(hmac256(secret, &[b"msg_fuzz.", t.as_bytes(), b".", body]))
                    ),
                ),
            ],
            vec![],
            Some(format!("whsec_{}", STANDARD.encode(secret)).into_bytes()),
        ),
        "generic-hmac" => (
            vec![pair("x-sig", hex::encode(hmac256(secret, &[body])))],
            vec![
                pair("signature_header", "x-sig".into()),
                pair("event_type", "{json:/type}".into()),
                pair("idempotency_key", "json:/id".into()),
            ],
            None,
        ),
        _ => (vec![], vec![], None),
    }
}

// Compiling the plugins or starting the gateway takes seconds once per process: done
// before the first input, so that it is not reported as a slow unit.
fuzz_target!(init: {
    registry();
}, |input: Input| {
    let name = PLUGINS[usize::from(input.plugin) % PLUGINS.len()];
    let plugin = registry().get(name).expect("bundled plugin loaded");
    let mut secrets: Vec<Vec<u8>> = input.secrets.into_iter().take(4).collect();
    if secrets.is_empty() {
        secrets.push(b"fuzz-secret".to_vec());
    }
    let signer = usize::from(input.signer) % secrets.len();
    let t = (NOW + i64::from(input.skew)).to_string();
    let (mut headers, mut settings) = (Vec::new(), Vec::new());
    if input.sign {
        let (h, s, configured) = signature(name, &secrets[signer], &input.body, &t);
        headers = h;
        settings = s;
        if let Some(configured) = configured {
            secrets[signer] = configured;
        }
    }
    headers.extend(input.headers.into_iter().take(32));
    settings.extend(input.settings.into_iter().take(16));
    let request = Arc::new(WebhookRequest {
        method: "POST".into(),
        path: format!("/api/v1/webhooks/{name}"),
        topic: input.topic,
        query: None,
        headers,
        body: input.body.into(),
    });
    let body_len = request.body.len();
    let outcome = plugin.process(&CallInput {
        request: &request,
        credentials: &Credentials::with_secrets(secrets),
        settings: &settings,
        now_unix_seconds: Some(NOW),
        correlation_id: "fuzz",
    });
    let bounded = |text: &str| {
        text.chars().count() <= LIMITS.max_error_chars + 1 && !text.chars().any(char::is_control)
    };
    match outcome {
        Err(fault) => panic!("{name} faulted: {fault}"),
        Ok(Processed::Rejected(error)) => assert!(bounded(error.detail()), "{error:?}"),
        Ok(Processed::Verified { mapped, .. }) => match mapped {
            Ok(MapOutcome::Events(mapping)) => {
                assert!(mapping.events.len() <= LIMITS.max_events);
                let bytes: usize = mapping
                    .events
                    .iter()
                    .map(|e| e.data.as_ref().map_or(body_len, String::len))
                    .sum();
                assert!(bytes as u64 <= LIMITS.max_event_bytes);
            }
            Ok(MapOutcome::Respond(handshake)) => assert!((200..300).contains(&handshake.status)),
            Err(MapFailure::Plugin(error)) => {
                let text = error.to_string();
                let detail = text.split_once(": ").map_or(text.as_str(), |(_, d)| d);
                assert!(bounded(detail), "{error:?}");
            }
            Err(MapFailure::Fault(PluginFault::Invalid(_))) => {}
            Err(MapFailure::Fault(fault)) => panic!("{name} map faulted: {fault}"),
        },
    }
});
