//! Cost of one webhook's plugin work: verify + map of a ~2 KB Shopify `orders/create`
//! through the bundled WASM plugin (a fresh instance per webhook, as in production)
//! against the same plugin code compiled natively, in the same run.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use hookgate::plugin::{
    CallInput, Credentials, MapOutcome, PluginEngine, PluginLimits, PluginRegistry, Processed,
    RegistryOptions, WebhookRequest,
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
    // The same plugin as built against contract 0.1.0 (request copied in twice), kept as
    // a test fixture: the contract's own cost, measured beside 0.2 in the same run.
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/plugins/shopify-0.1.0.wasm"
    );
    let plugin_v0_1 = engine
        .load(&std::fs::read(fixture).expect("0.1.0 fixture"))
        .expect("0.1.0 plugin loads");
    let request = Arc::new(WebhookRequest {
        method: "POST".into(),
        path: "/api/v1/webhooks/shopify/orders-create".into(),
        topic: Some("orders-create".into()),
        query: None,
        headers: signed.headers.clone(),
        body: signed.body.clone().into(),
    });
    let credentials = Credentials::with_secrets(vec![SECRET.as_bytes().to_vec()]);
    let settings = Vec::new();
    let mut group = c.benchmark_group("shopify_verify_and_map");
    for (name, plugin) in [
        ("wasm_fresh_instance", &plugin),
        ("wasm_fresh_instance_contract_0_1", &plugin_v0_1),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let processed = plugin
                    .process(&CallInput {
                        request: &request,
                        credentials: &credentials,
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
    }

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
            let verified =
                Shopify::verify(&native, &handles, &[], &native_settings).expect("verified");
            let mapped = Shopify::map(&native, &native_settings).expect("mapped");
            black_box((verified, mapped))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
