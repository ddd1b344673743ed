//! The bundled plugins run through the real WASM host against every signature vector of
//! `shared/vectors/signatures.json` (produced by the platforms' SDKs).

use std::path::PathBuf;
use std::sync::Arc;

use hookgate::plugin::{
    CallInput, Credentials, MapOutcome, PluginEngine, PluginLimits, PluginRegistry, Processed,
    RegistryOptions, WebhookRequest,
};

fn vectors_path() -> PathBuf {
    if let Ok(path) = std::env::var("HOOKGATE_VECTORS") {
        return PathBuf::from(path);
    }
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .map(|dir| dir.join("shared/vectors/signatures.json"))
        .find(|candidate| candidate.exists())
        .unwrap_or_else(|| {
            panic!(
                "shared/vectors/signatures.json not found above {}; set HOOKGATE_VECTORS",
                manifest.display()
            )
        })
}

#[test]
fn every_vector_of_the_bundled_sources_through_wasm() {
    let text = std::fs::read_to_string(vectors_path()).expect("read vectors");
    let vectors: serde_json::Value = serde_json::from_str(&text).expect("vectors JSON");
    let engine = PluginEngine::new(PluginLimits::default()).expect("engine");
    let registry = PluginRegistry::build(
        &engine,
        &RegistryOptions {
            dir: None,
            cache_dir: Some(crate::support::plugin_cache_dir()),
            skip_bundled: false,
            bundled_only: None,
            previous: None,
        },
    );
    let mut checked = 0;
    for vector in vectors["vectors"].as_array().expect("vectors") {
        let source = vector["source"].as_str().expect("source");
        let Some(plugin) = registry.get(source) else {
            continue;
        };
        let name = vector["name"].as_str().expect("name");
        let request = Arc::new(WebhookRequest {
            method: "POST".into(),
            path: format!("/api/v1/webhooks/{source}"),
            topic: None,
            query: None,
            headers: vector["headers"]
                .as_object()
                .expect("headers")
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_ascii_lowercase(),
                        v.as_str().expect("header value").to_owned(),
                    )
                })
                .collect(),
            body: vector["body"]
                .as_str()
                .expect("body")
                .as_bytes()
                .to_vec()
                .into(),
        });
        let secrets: Vec<Vec<u8>> = vector["secrets"]
            .as_array()
            .expect("secrets")
            .iter()
            .map(|s| s.as_str().expect("secret").as_bytes().to_vec())
            .collect();
        let settings = Vec::new();
        let credentials = Credentials::with_secrets(secrets.clone());
        let processed = plugin
            .process(&CallInput {
                request: &request,
                credentials: &credentials,
                settings: &settings,
                now_unix_seconds: vector["now"].as_i64(),
                correlation_id: name,
            })
            .unwrap_or_else(|fault| panic!("{name}: plugin fault {fault}"));
        match (vector["expect"].as_str(), processed) {
            (
                Some("valid"),
                Processed::Verified {
                    matched_secret,
                    mapped,
                    ..
                },
            ) => {
                // The matching secret is the one the vector was signed with: the last listed.
                assert_eq!(matched_secret, Some(secrets.len() - 1), "{name}");
                let Ok(MapOutcome::Events(mapping)) = mapped else {
                    panic!("{name}: not mapped: {mapped:?}")
                };
                assert_eq!(mapping.events.len(), 1, "{name}");
            }
            (Some("invalid"), Processed::Rejected(_)) => {}
            (expect, processed) => panic!("{name}: expected {expect:?}, got {processed:?}"),
        }
        checked += 1;
    }
    let all = vectors["vectors"].as_array().map_or(0, Vec::len);
    assert_eq!(
        checked, all,
        "every vector has a bundled plugin and was checked"
    );
}
