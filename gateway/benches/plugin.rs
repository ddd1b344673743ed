//! Cost of one webhook's plugin work: verify + map of a ~2 KB Shopify `orders/create`
//! through the bundled WASM plugin (a fresh instance per webhook, as in production)
//! against the same plugin code compiled natively, in the same run.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use hookgate::plugin::{
    CallInput, MapOutcome, PluginEngine, PluginLimits, PluginRegistry, Processed, RegistryOptions,
    WebhookRequest,
};
use hookgate_plugin_sdk::{Request, Settings, SourcePlugin, TestHost};
use shopify::Shopify;

const SECRET: &str = "shpss_bench_secret";

/// The sample order trimmed to about 2 KB, a typical `orders/create` size.
fn body() -> Vec<u8> {
    let mut order: serde_json::Value =
        serde_json::from_str(hookgate::sample::SHOPIFY_ORDER).expect("sample");
    if let Some(object) = order.as_object_mut() {
        for key in ["billing_address", "shipping_address", "shipping_lines"] {
            object.remove(key);
        }
    }
    serde_json::to_vec(&order).expect("json")
}

fn bench(c: &mut Criterion) {
    let body = body();
    let signed = hookgate::sample::shopify(
        SECRET,
        "orders/create",
        "bench.myshopify.com",
        "evt-1",
        &body,
    );
    eprintln!(
        "body: {} bytes, {} headers",
        signed.body.len(),
        signed.headers.len()
    );

    let engine = PluginEngine::new(PluginLimits::default()).expect("engine");
    let registry = PluginRegistry::build(&engine, &RegistryOptions::default());
    let plugin = registry.get("shopify").expect("bundled shopify").clone();
    let request = WebhookRequest {
        method: "POST".into(),
        topic: Some("orders-create".into()),
        query: None,
        headers: signed.headers.clone(),
        body: signed.body.clone().into(),
    };
    let secrets = vec![SECRET.as_bytes().to_vec()];
    let settings = Vec::new();
    let mut group = c.benchmark_group("shopify_verify_and_map");
    group.bench_function("wasm_fresh_instance", |b| {
        b.iter(|| {
            let processed = plugin
                .process(&CallInput {
                    request: &request,
                    secrets: &secrets,
                    settings: &settings,
                    now_unix_seconds: None,
                    correlation_id: "bench",
                })
                .expect("no fault");
            assert!(matches!(
                processed,
                Processed::Verified {
                    mapped: Ok(MapOutcome::Events(_)),
                    ..
                }
            ));
            black_box(processed)
        })
    });

    let host = TestHost::new().secrets([SECRET]);
    let handles = host.handles();
    let mut native = Request::post()
        .with_topic("orders-create")
        .with_body(signed.body.clone());
    for (name, value) in &signed.headers {
        native = native.with_header(name.clone(), value.clone());
    }
    let native_settings = Settings::new();
    group.bench_function("native", |b| {
        b.iter(|| {
            let verified = Shopify::verify(&native, &handles, &native_settings).expect("verified");
            let mapped = Shopify::map(&native, &native_settings).expect("mapped");
            black_box((verified, mapped))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
