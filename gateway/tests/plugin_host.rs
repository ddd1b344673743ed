//! The plugin host against real components: the `chaos` test plugin (misbehaves on
//! demand) and `partial` (a component of another world), built by `build.rs`.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use hookgate::plugin::{
    CallInput, CompiledFrom, Credentials, EPOCH_TICK, LoadOptions, MapError, MapFailure,
    MapOutcome, OwnedCallInput, Plugin, PluginEngine, PluginFault, PluginLimits, PluginLoadError,
    PluginOrigin, PluginRegistry, Processed, RegistryOptions, Settings, Timestamp, VerifyError,
    WebhookRequest, check_file,
};

const TIMEOUT: Duration = Duration::from_millis(200);
const MEMORY: usize = 16 << 20;

fn wasm_path(name: &str) -> PathBuf {
    PathBuf::from(env!("HOOKGATE_WASM_DIR")).join(format!("{name}.wasm"))
}

fn wasm(name: &str) -> Vec<u8> {
    std::fs::read(wasm_path(name)).unwrap_or_else(|e| panic!("{name}.wasm: {e}"))
}

fn engine() -> PluginEngine {
    PluginEngine::new(PluginLimits {
        timeout: TIMEOUT,
        memory_bytes: MEMORY,
        max_instances: 32,
        ..PluginLimits::default()
    })
    .expect("engine")
}

/// One engine and chaos plugin shared by the tests of this binary (compiling takes tens
/// of milliseconds; each test still gets fresh instances, which is what is under test).
fn chaos() -> &'static Arc<Plugin> {
    static CHAOS: OnceLock<Arc<Plugin>> = OnceLock::new();
    CHAOS.get_or_init(|| engine().load(&wasm("chaos")).expect("chaos loads"))
}

fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn request(secret: &[u8], body: &'static [u8]) -> Arc<WebhookRequest> {
    Arc::new(WebhookRequest {
        method: "POST".into(),
        path: "/api/v1/webhooks/chaos/orders%2Fcreate".into(),
        topic: Some("orders/create".into()),
        query: None,
        headers: vec![
            ("x-sig".into(), sign(secret, body)),
            ("x-id".into(), "delivery-1".into()),
            ("x-tenant".into(), "shop-1".into()),
        ],
        body: Bytes::from_static(body),
    })
}

fn settings(pairs: &[(&str, &str)]) -> Settings {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn run(
    plugin: &Plugin,
    req: &Arc<WebhookRequest>,
    secrets: &[Vec<u8>],
    s: &Settings,
) -> Result<Processed, PluginFault> {
    plugin.process(&CallInput {
        request: req,
        credentials: &Credentials::with_secrets(secrets.to_vec()),
        settings: s,
        now_unix_seconds: Some(1_700_000_000),
        correlation_id: "test",
    })
}

/// An `ok` call must succeed and map one event: used after every fault to show the plugin
/// is unharmed.
fn assert_ok_call(plugin: &Plugin) {
    let secrets = vec![b"s3cret".to_vec()];
    let req = request(b"s3cret", b"{\"id\":1}");
    match run(plugin, &req, &secrets, &settings(&[])) {
        Ok(Processed::Verified {
            matched_secret: Some(0),
            mapped: Ok(MapOutcome::Events(m)),
            ..
        }) => {
            assert_eq!(m.tenant.as_deref(), Some("shop-1"));
            assert_eq!(m.idempotency_key.as_deref(), Some("delivery-1"));
            assert_eq!(m.topic, "orders/create");
            assert_eq!(m.occurred_at, Some(Timestamp::UnixSeconds(1_700_000_000)));
            assert_eq!(m.events.len(), 1);
            assert_eq!(m.events[0].event_type, "chaos.ok");
            assert_eq!(m.events[0].data.as_deref(), Some("{\"len\":8}"));
        }
        other => panic!("ok call failed: {other:?}"),
    }
}

#[test]
fn ok_call_verifies_maps_and_reads_the_clock_override() {
    assert_ok_call(chaos());
}

#[test]
fn wrong_signature_is_rejected_and_nothing_is_mapped() {
    let secrets = vec![b"s3cret".to_vec()];
    let req = request(b"other", b"{}");
    let out = run(chaos(), &req, &secrets, &settings(&[])).unwrap();
    assert!(
        matches!(out, Processed::Rejected(VerifyError::Mismatch(_))),
        "{out:?}"
    );

    let mut unsigned = request(b"s3cret", b"{}");
    Arc::make_mut(&mut unsigned)
        .headers
        .retain(|(n, _)| n != "x-sig");
    let out = run(chaos(), &unsigned, &secrets, &settings(&[])).unwrap();
    assert!(
        matches!(out, Processed::Rejected(VerifyError::MissingSignature(_))),
        "{out:?}"
    );
}

#[test]
fn rotation_reports_the_secret_that_matched() {
    let secrets = vec![b"old".to_vec(), b"new".to_vec()];
    for (signer, expected) in [(&b"new"[..], 1), (&b"old"[..], 0)] {
        let req = request(signer, b"{\"rotate\":true}");
        match run(chaos(), &req, &secrets, &settings(&[])).unwrap() {
            Processed::Verified { matched_secret, .. } => {
                assert_eq!(matched_secret, Some(expected))
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn loop_times_out_within_the_deadline_and_the_plugin_still_serves() {
    for key in ["verify_mode", "map_mode"] {
        let started = Instant::now();
        let out = run(
            chaos(),
            &request(b"k", b"{}"),
            &[b"k".to_vec()],
            &settings(&[(key, "loop")]),
        );
        let elapsed = started.elapsed();
        match key {
            "verify_mode" => assert_eq!(out, Err(PluginFault::Timeout)),
            _ => assert!(
                matches!(
                    &out,
                    Ok(Processed::Verified {
                        mapped: Err(MapFailure::Fault(PluginFault::Timeout)),
                        ..
                    })
                ),
                "{out:?}"
            ),
        }
        // Deadlines count whole epoch ticks, so the first may come almost at once.
        assert!(
            elapsed >= TIMEOUT - EPOCH_TICK,
            "interrupted early: {elapsed:?}"
        );
        assert!(elapsed < TIMEOUT * 5, "deadline overrun: {elapsed:?}");
        assert_ok_call(chaos());
    }
}

#[test]
fn memory_hog_is_out_of_memory_and_the_plugin_still_serves() {
    let out = run(
        chaos(),
        &request(b"k", b"{}"),
        &[b"k".to_vec()],
        &settings(&[("verify_mode", "alloc")]),
    );
    assert_eq!(out, Err(PluginFault::OutOfMemory));
    assert_ok_call(chaos());
    let out = run(
        chaos(),
        &request(b"k", b"{}"),
        &[b"k".to_vec()],
        &settings(&[("map_mode", "alloc")]),
    );
    assert!(
        matches!(
            &out,
            Ok(Processed::Verified {
                mapped: Err(MapFailure::Fault(PluginFault::OutOfMemory)),
                ..
            })
        ),
        "{out:?}"
    );
    assert_ok_call(chaos());
}

#[test]
fn trap_in_verify_is_a_fault_and_the_plugin_still_serves() {
    let out = run(
        chaos(),
        &request(b"k", b"{}"),
        &[b"k".to_vec()],
        &settings(&[("verify_mode", "trap")]),
    );
    match out {
        // The guest's panic message (from its stderr) explains the trap.
        Err(PluginFault::Trap(detail)) => {
            assert!(
                detail.contains("chaos: trap requested in verify"),
                "{detail}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_ok_call(chaos());
}

#[test]
fn trap_in_map_after_a_good_verify_is_verified_with_a_map_fault() {
    let out = run(
        chaos(),
        &request(b"k", b"{}"),
        &[b"k".to_vec()],
        &settings(&[("map_mode", "trap")]),
    );
    match out {
        Ok(Processed::Verified {
            matched_secret: Some(0),
            mapped: Err(MapFailure::Fault(PluginFault::Trap(_))),
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    assert_ok_call(chaos());
}

#[test]
fn plugin_map_errors_and_handshakes_come_through() {
    let req = request(b"k", b"{}");
    let secrets = [b"k".to_vec()];
    match run(chaos(), &req, &secrets, &settings(&[("map_mode", "error")])).unwrap() {
        Processed::Verified {
            mapped: Err(MapFailure::Plugin(MapError::UnsupportedTopic(_))),
            ..
        } => {}
        other => panic!("{other:?}"),
    }
    match run(
        chaos(),
        &req,
        &secrets,
        &settings(&[("map_mode", "respond")]),
    )
    .unwrap()
    {
        Processed::Verified {
            mapped: Ok(MapOutcome::Respond(h)),
            ..
        } => {
            assert_eq!((h.status, h.body.as_slice()), (200, &b"challenge"[..]));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_handles_get_none_and_invented_handles_are_refused() {
    let req = request(b"k", b"{}");
    let secrets = [b"k".to_vec()];
    let out = run(
        chaos(),
        &req,
        &secrets,
        &settings(&[("verify_mode", "bad-handle")]),
    )
    .unwrap();
    assert!(
        matches!(out, Processed::Rejected(VerifyError::Rejected(_))),
        "{out:?}"
    );
    let out = run(
        chaos(),
        &req,
        &secrets,
        &settings(&[("verify_mode", "bad-secret")]),
    );
    assert!(matches!(out, Err(PluginFault::Invalid(_))), "{out:?}");
    let out = run(
        chaos(),
        &req,
        &secrets,
        &settings(&[("map_mode", "bad-event")]),
    )
    .unwrap();
    assert!(
        matches!(
            out,
            Processed::Verified {
                mapped: Err(MapFailure::Fault(PluginFault::Invalid(_))),
                ..
            }
        ),
        "{out:?}"
    );
}

#[test]
fn every_webhook_gets_a_fresh_instance() {
    let secrets = [b"k".to_vec()];
    let leak = settings(&[("map_mode", "leak")]);
    for body in [&b"first body"[..], b"second body", b"third"] {
        let body: &'static [u8] = Box::leak(body.to_vec().into_boxed_slice());
        match run(chaos(), &request(b"k", body), &secrets, &leak).unwrap() {
            Processed::Verified {
                mapped: Ok(MapOutcome::Events(m)),
                ..
            } => {
                // The plugin returns what its previous `map` saw: always nothing.
                assert_eq!(m.events[0].subject.as_deref(), Some(""));
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn concurrent_calls_from_several_threads() {
    let plugin = chaos();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..6)
            .map(|t| {
                scope.spawn(move || {
                    for i in 0..20 {
                        // Some threads misbehave meanwhile: they must not disturb others.
                        if t == 0 && i % 5 == 0 {
                            let out = run(
                                plugin,
                                &request(b"k", b"{}"),
                                &[b"k".to_vec()],
                                &settings(&[("verify_mode", "trap")]),
                            );
                            assert!(matches!(out, Err(PluginFault::Trap(_))));
                        } else {
                            assert_ok_call(plugin);
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("thread");
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_async_returns_the_verified_mapping() {
    let input = OwnedCallInput {
        request: request(b"k", b"{\"id\":1}"),
        credentials: Credentials::with_secrets(vec![b"k".to_vec()]),
        settings: Arc::new(settings(&[])),
        now_unix_seconds: Some(5),
        correlation_id: "async".into(),
    };
    match chaos().process_async(input).await.unwrap() {
        Processed::Verified {
            matched_secret,
            mapped: Ok(MapOutcome::Events(m)),
            ..
        } => {
            assert_eq!(matched_secret, Some(0));
            assert_eq!(m.occurred_at, Some(Timestamp::UnixSeconds(5)));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn staged_calls_let_the_caller_pick_secrets_from_the_tenant_hint() {
    let req = request(b"tenant-secret", b"{}");
    let s = settings(&[]);
    let mut call = chaos().start(&req, None, "staged").unwrap();
    let tenant = call.tenant_hint(&s).unwrap();
    assert_eq!(tenant.as_deref(), Some("shop-1"));
    let verified = call
        .verify(
            &Credentials::with_secrets([b"wrong".to_vec(), b"tenant-secret".to_vec()].to_vec()),
            &s,
        )
        .unwrap()
        .expect("signature holds");
    assert_eq!(verified.matched_secret(), Some(1));
    assert!(matches!(verified.map(&s), Ok(MapOutcome::Events(_))));
}

#[test]
fn component_of_another_world_is_refused_naming_the_missing_export() {
    let err = engine().load(&wasm("partial")).unwrap_err();
    assert!(matches!(err, PluginLoadError::WrongWorld(_)), "{err:?}");
    let text = err.to_string();
    assert!(!text.contains('\n'), "{text}");
    assert!(
        text.contains("tenant-hint") || text.contains("verify") || text.contains("map"),
        "does not name what is missing: {text}"
    );
}

#[test]
fn non_wasm_and_core_modules_are_refused() {
    let e = engine();
    assert!(matches!(
        e.load(b"<html>not wasm</html>"),
        Err(PluginLoadError::NotWasm)
    ));
    assert!(matches!(e.load(b""), Err(PluginLoadError::NotWasm)));
    // The smallest valid core module: magic and version 1, no sections.
    assert!(matches!(
        e.load(b"\0asm\x01\0\0\0"),
        Err(PluginLoadError::NotAComponent)
    ));
    // A component preamble with garbage after it.
    assert!(matches!(
        e.load(b"\0asm\x0d\0\x01\0garbage"),
        Err(PluginLoadError::Compile(_))
    ));
}

#[test]
fn loaded_plugin_exposes_metadata_hash_and_size() {
    let bytes = wasm("chaos");
    let p = chaos();
    assert_eq!(p.name(), "chaos");
    assert_eq!(p.metadata().version, "0.1.0");
    assert_eq!(p.metadata().retry_window_hours, 1);
    assert_eq!(p.size(), bytes.len());
    use sha2::Digest;
    assert_eq!(p.sha256_hex(), hex::encode(sha2::Sha256::digest(&bytes)));
}

#[test]
fn compile_cache_is_written_then_read_and_survives_corruption() {
    let e = engine();
    let dir = tempfile::tempdir().unwrap();
    let options = LoadOptions {
        cache_dir: Some(dir.path().join("cache")),
    };
    let bytes = wasm("chaos");

    let first = e.load_with(&bytes, &options).unwrap();
    assert_eq!(first.compiled_from(), CompiledFrom::Compiled);
    let files = cache_files(&dir.path().join("cache"));
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].to_string_lossy().contains(&first.sha256_hex()));

    let second = e.load_with(&bytes, &options).unwrap();
    assert_eq!(second.compiled_from(), CompiledFrom::Cache);
    assert_ok_call(&second);

    // Damage the artifact: it is ignored, recompiled and rewritten.
    let mut damaged = std::fs::read(&files[0]).unwrap();
    let mid = damaged.len() / 2;
    damaged[mid] ^= 0xff;
    std::fs::write(&files[0], &damaged).unwrap();
    let third = e.load_with(&bytes, &options).unwrap();
    assert_eq!(third.compiled_from(), CompiledFrom::Compiled);
    assert_ok_call(&third);
    let fourth = e.load_with(&bytes, &options).unwrap();
    assert_eq!(fourth.compiled_from(), CompiledFrom::Cache);

    // Truncated to nothing: same.
    std::fs::write(&files[0], b"").unwrap();
    assert_eq!(
        e.load_with(&bytes, &options).unwrap().compiled_from(),
        CompiledFrom::Compiled
    );
}

#[test]
fn registry_loads_a_directory_and_collects_errors_per_file() {
    let e = engine();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("chaos.wasm"), wasm("chaos")).unwrap();
    std::fs::write(dir.path().join("broken.wasm"), b"not wasm").unwrap();
    std::fs::write(dir.path().join("partial.wasm"), wasm("partial")).unwrap();
    std::fs::write(dir.path().join("renamed.wasm"), wasm("chaos")).unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"ignored").unwrap();

    let registry = PluginRegistry::build(
        &e,
        &RegistryOptions {
            dir: Some(dir.path().to_path_buf()),
            cache_dir: None,
            skip_bundled: true,
            ..RegistryOptions::default()
        },
    );
    let list = registry.list();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].name, "chaos");
    assert_eq!(
        list[0].origin,
        PluginOrigin::Path(dir.path().join("chaos.wasm"))
    );
    assert_ok_call(registry.get("chaos").unwrap());
    assert!(registry.get("renamed").is_none());

    let mut errors: Vec<String> = registry.errors().iter().map(|e| e.to_string()).collect();
    errors.sort();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(
        errors[0].contains("broken.wasm") && errors[0].contains("not a WebAssembly"),
        "{errors:?}"
    );
    assert!(
        errors[1].contains("partial.wasm") && errors[1].contains("source plugin"),
        "{errors:?}"
    );
    assert!(
        errors[2].contains("renamed.wasm") && errors[2].contains("chaos.wasm"),
        "{errors:?}"
    );

    // A clone shares the same plugins.
    let clone = registry.clone();
    assert!(Arc::ptr_eq(
        clone.get("chaos").unwrap(),
        registry.get("chaos").unwrap()
    ));
}

#[test]
fn registry_reports_a_missing_directory() {
    let registry = PluginRegistry::build(
        &engine(),
        &RegistryOptions {
            dir: Some(PathBuf::from("/nonexistent/hookgate-plugins")),
            cache_dir: None,
            skip_bundled: true,
            ..RegistryOptions::default()
        },
    );
    assert!(registry.list().is_empty());
    assert_eq!(registry.errors().len(), 1);
    assert!(
        registry.errors()[0]
            .to_string()
            .contains("/nonexistent/hookgate-plugins")
    );
}

#[test]
fn check_file_reports_a_good_plugin_and_one_line_errors_for_bad_ones() {
    let e = engine();
    let report = check_file(&e, &wasm_path("chaos")).unwrap();
    let text = report.to_string();
    for needle in [
        "chaos",
        "0.1.0",
        "Test plugin that misbehaves",
        "1 h",
        &report.sha256,
        "OK",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }

    let dir = tempfile::tempdir().unwrap();
    let not_wasm = dir.path().join("x.wasm");
    std::fs::write(&not_wasm, b"hello").unwrap();
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    for (path, needle) in [
        (not_wasm, "not a WebAssembly"),
        (core, "core WebAssembly module"),
        (wasm_path("partial"), "not a hookgate source plugin"),
        (dir.path().join("missing.wasm"), "cannot read"),
    ] {
        let err = check_file(&e, &path).unwrap_err().to_string();
        assert!(err.contains(needle), "{path:?}: {err}");
        assert!(!err.contains('\n'), "{path:?}: {err}");
    }
}

#[test]
fn calls_beyond_the_instance_limit_are_busy_not_blocked() {
    let e = PluginEngine::new(PluginLimits {
        timeout: TIMEOUT,
        memory_bytes: MEMORY,
        max_instances: 1,
        ..PluginLimits::default()
    })
    .unwrap();
    let plugin = e.load(&wasm("chaos")).unwrap();
    let req = request(b"k", b"{}");
    let held = plugin.start(&req, None, "held").unwrap();
    let started = Instant::now();
    let second = plugin.start(&req, None, "second");
    assert!(matches!(second, Err(PluginFault::Busy(_))), "{second:?}");
    assert!(started.elapsed() < TIMEOUT, "waited for a slot");
    drop(held);
    assert_ok_call(&plugin);
}

#[test]
fn a_trapped_call_cannot_be_resumed() {
    let req = request(b"k", b"{}");
    let mut call = chaos().start(&req, None, "trapped").unwrap();
    let s = settings(&[("hint_mode", "trap")]);
    match call.tenant_hint(&s) {
        Err(PluginFault::Trap(detail)) => assert!(detail.contains("tenant-hint"), "{detail}"),
        other => panic!("{other:?}"),
    }
    // The instance is dead: verify must not run guest code on it.
    match call.verify(
        &Credentials::with_secrets([b"k".to_vec()].to_vec()),
        &settings(&[]),
    ) {
        Err(PluginFault::Trap(detail)) => assert!(detail.contains("already failed"), "{detail}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn instance_slots_are_returned_after_faults() {
    // More calls than slots, many of them trapping: a leaked slot would make later calls
    // fail with Busy.
    let e = PluginEngine::new(PluginLimits {
        timeout: TIMEOUT,
        memory_bytes: MEMORY,
        max_instances: 2,
        ..PluginLimits::default()
    })
    .unwrap();
    let plugin = e.load(&wasm("chaos")).unwrap();
    for i in 0..10 {
        let mode = if i % 2 == 0 { "trap" } else { "alloc" };
        let out = run(
            &plugin,
            &request(b"k", b"{}"),
            &[b"k".to_vec()],
            &settings(&[("verify_mode", mode)]),
        );
        assert!(
            matches!(out, Err(PluginFault::Trap(_) | PluginFault::OutOfMemory)),
            "{out:?}"
        );
    }
    assert_ok_call(&plugin);
}

/// Measures the per-webhook overhead (fresh store, instantiate, tenant-hint, verify, map,
/// body copy) for a 2 KB body. A measurement, not a check: run it in release with
/// `cargo test --release -p hookgate --test plugin_host -- --ignored --nocapture overhead`.
#[test]
#[ignore = "timing report; meaningful only in release builds"]
fn overhead_report() {
    let body: &'static [u8] = Box::leak(vec![b'x'; 2048].into_boxed_slice());
    let mut req = request(b"k", body);
    for i in 0..10 {
        Arc::make_mut(&mut req)
            .headers
            .push((format!("x-extra-{i}"), "value".repeat(4)));
    }
    let secrets = [b"k".to_vec()];
    let s = settings(&[]);
    let plugin = chaos();
    let mut samples = Vec::with_capacity(2000);
    for _ in 0..2000 {
        let t = Instant::now();
        let out = run(plugin, &req, &secrets, &s);
        samples.push(t.elapsed());
        assert!(matches!(out, Ok(Processed::Verified { mapped: Ok(_), .. })));
    }
    let mut phases = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..2000 {
        let t0 = Instant::now();
        let call = plugin.start(&req, None, "bench").unwrap();
        let t1 = Instant::now();
        let verified = call
            .verify(&Credentials::with_secrets(secrets.clone()), &s)
            .unwrap()
            .unwrap();
        let t2 = Instant::now();
        verified.map(&s).unwrap();
        let t3 = Instant::now();
        phases[0].push(t1 - t0);
        phases[1].push(t2 - t1);
        phases[2].push(t3 - t2);
    }
    for (name, mut p) in ["instantiate", "verify", "map+drop"]
        .into_iter()
        .zip(phases)
    {
        p.sort();
        println!("{name}: median {:?}", p[p.len() / 2]);
    }
    samples.sort();
    println!(
        "per-webhook overhead: median {:?}, p90 {:?}, p99 {:?}",
        samples[samples.len() / 2],
        samples[samples.len() * 9 / 10],
        samples[samples.len() * 99 / 100]
    );
}

#[test]
fn sleeping_is_refused_at_once_not_waited_out() {
    let started = Instant::now();
    let out = run(
        chaos(),
        &request(b"k", b"{}"),
        &[b"k".to_vec()],
        &settings(&[("verify_mode", "sleep")]),
    );
    match out {
        Err(PluginFault::Trap(detail)) => assert!(detail.contains("may not sleep"), "{detail}"),
        other => panic!("{other:?}"),
    }
    assert!(
        started.elapsed() < TIMEOUT,
        "slept: {:?}",
        started.elapsed()
    );
    assert_ok_call(chaos());
}

#[test]
fn wasi_wall_clock_tells_the_same_time_as_now() {
    let out = run(
        chaos(),
        &request(b"k", b"{}"),
        &[b"k".to_vec()],
        &settings(&[("map_mode", "wall-clock")]),
    );
    match out {
        Ok(Processed::Verified {
            mapped: Ok(MapOutcome::Events(m)),
            ..
        }) => {
            // `run` overrides the clock with 1_700_000_000.
            assert_eq!(m.events[0].subject.as_deref(), Some("1700000000"));
        }
        other => panic!("{other:?}"),
    }
}

fn map_failure(out: Processed) -> MapFailure {
    match out {
        Processed::Verified {
            mapped: Err(failure),
            ..
        } => failure,
        other => panic!("expected a map failure, got {other:?}"),
    }
}

#[test]
fn output_beyond_the_limits_is_refused_with_the_reason() {
    let secrets = [b"k".to_vec()];
    let small = request(b"k", b"{\"id\":1}");
    // Within the default limit of 100 events: mapped.
    let out = run(
        chaos(),
        &small,
        &secrets,
        &settings(&[("map_mode", "flood"), ("events", "100")]),
    )
    .unwrap();
    assert!(
        matches!(&out, Processed::Verified { mapped: Ok(MapOutcome::Events(m)), .. } if m.events.len() == 100),
        "{out:?}"
    );
    // One more than the limit: refused before the host does anything with them.
    let flood = settings(&[("map_mode", "flood"), ("events", "101")]);
    match map_failure(run(chaos(), &small, &secrets, &flood).unwrap()) {
        MapFailure::Fault(PluginFault::Invalid(reason)) => {
            assert!(reason.contains("plugins.max_events"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // Few events, but each carries a 1 MiB body: over the bytes limit of a tighter engine.
    let body: &'static [u8] = Box::leak(vec![b'x'; 1 << 20].into_boxed_slice());
    let big = request(b"k", body);
    let tight = PluginEngine::new(PluginLimits {
        timeout: Duration::from_secs(5),
        memory_bytes: 64 << 20,
        max_instances: 2,
        output: hookgate::plugin::OutputLimits {
            max_event_bytes: 4 << 20,
            ..hookgate::plugin::OutputLimits::default()
        },
        ..PluginLimits::default()
    })
    .unwrap()
    .load_with(&wasm("chaos"), &cached())
    .unwrap();
    let five = settings(&[("map_mode", "flood"), ("events", "5")]);
    match map_failure(run(&tight, &big, &secrets, &five).unwrap()) {
        MapFailure::Fault(PluginFault::Invalid(reason)) => {
            assert!(reason.contains("plugins.max_event_bytes_mb"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let four = settings(&[("map_mode", "flood"), ("events", "4")]);
    assert!(matches!(
        run(&tight, &big, &secrets, &four).unwrap(),
        Processed::Verified {
            mapped: Ok(MapOutcome::Events(_)),
            ..
        }
    ));
}

#[test]
fn plugin_error_text_is_cut_and_stripped_of_control_characters() {
    let secrets = [b"k".to_vec()];
    let req = request(b"k", b"{}");
    let dirty = settings(&[("map_mode", "dirty-error")]);
    match map_failure(run(chaos(), &req, &secrets, &dirty).unwrap()) {
        MapFailure::Plugin(MapError::Other(text)) => {
            assert!(!text.contains('\0') && !text.contains('\n'), "{text:?}");
            assert!(text.starts_with("line one line two"), "{text:?}");
            // The default limit, 1,024 characters, and a mark that it was cut.
            assert_eq!(text.chars().count(), 1025, "{text:?}");
            assert!(text.ends_with('…'));
        }
        other => panic!("{other:?}"),
    }
}

/// The bundled Shopify plugin as built against contract 0.1.0 (kept under
/// `tests/data/plugins`): it loads and serves unchanged beside 0.2 plugins.
#[test]
fn a_contract_0_1_component_still_loads_and_serves() {
    use hookgate::plugin::{Contract, Credentials};
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/plugins/shopify-0.1.0.wasm"
    );
    let e = engine();
    let old = e
        .load_with(&std::fs::read(fixture).unwrap(), &cached())
        .expect("0.1.0 loads");
    assert_eq!(old.contract(), Contract::V0_1);
    assert_eq!(old.metadata().name, "shopify");
    let (_, bytes) = hookgate::plugin::bundled()
        .iter()
        .find(|(name, _)| *name == "shopify")
        .expect("bundled shopify");
    let current = &e
        .load_with(bytes, &cached())
        .expect("bundled shopify loads");
    assert_eq!(current.contract(), Contract::V0_2);

    let secret = b"shpss_fixture_secret";
    let signed = hookgate::sample::shopify(
        std::str::from_utf8(secret).unwrap(),
        "orders/create",
        "fixture.myshopify.com",
        "evt-fixture-1",
        hookgate::sample::SHOPIFY_ORDER.as_bytes(),
    );
    let request = Arc::new(WebhookRequest {
        method: "POST".into(),
        path: "/api/v1/webhooks/shopify/orders-create".into(),
        topic: Some("orders-create".into()),
        query: None,
        headers: signed.headers.clone(),
        body: signed.body.clone().into(),
    });
    let credentials = Credentials::with_secrets(vec![b"other".to_vec(), secret.to_vec()]);
    let mut outcomes = Vec::new();
    for plugin in [&old, current] {
        let out = plugin
            .process(&CallInput {
                request: &request,
                credentials: &credentials,
                settings: &Vec::new(),
                now_unix_seconds: None,
                correlation_id: "fixture",
            })
            .unwrap();
        match out {
            Processed::Verified {
                matched_secret: Some(1),
                mapped: Ok(MapOutcome::Events(mapping)),
                ..
            } => outcomes.push(mapping),
            other => panic!("{:?}: {other:?}", plugin.contract()),
        }
    }
    assert_eq!(outcomes[0], outcomes[1], "both contracts map alike");
    assert_eq!(outcomes[0].events[0].event_type, "order.created");

    // A tampered body is refused by the old plugin as by the new.
    let mut tampered = (*request).clone();
    tampered.body = bytes::Bytes::from_static(b"{\"id\":2}");
    let out = old
        .process(&CallInput {
            request: &Arc::new(tampered),
            credentials: &credentials,
            settings: &Vec::new(),
            now_unix_seconds: None,
            correlation_id: "fixture",
        })
        .unwrap();
    assert!(
        matches!(out, Processed::Rejected(VerifyError::Mismatch(_))),
        "{out:?}"
    );
}

/// Compiled components cached across test runs: compiling in a debug build takes seconds.
fn cached() -> LoadOptions {
    LoadOptions {
        cache_dir: Some(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache")),
    }
}

#[test]
fn a_webhook_has_one_deadline_across_its_exports() {
    // The budget starts with the instance: time spent before `verify` (another export, a
    // secrets lookup) is gone from it, rather than each export getting a full deadline.
    let req = request(b"k", b"{}");
    let call = chaos().start(&req, None, "budget").expect("start");
    std::thread::sleep(TIMEOUT + 2 * EPOCH_TICK);
    let out = call.verify(
        &Credentials::with_secrets(vec![b"k".to_vec()]),
        &settings(&[]),
    );
    assert!(matches!(out, Err(PluginFault::Timeout)), "{out:?}");
    assert_ok_call(chaos());
}

/// The compiled artifacts in a cache directory (its key file left out).
fn cache_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|f| f.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "acwasm" || e == "cwasm"))
        .collect();
    files.sort();
    files
}

#[test]
fn a_cache_file_this_install_did_not_write_is_never_run() {
    use std::os::unix::fs::PermissionsExt;
    let e = engine();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let options = LoadOptions {
        cache_dir: Some(cache.clone()),
    };
    let chaos_bytes = wasm("chaos");
    let chaos = e.load_with(&chaos_bytes, &options).unwrap();
    assert_eq!(chaos.compiled_from(), CompiledFrom::Compiled);
    // Another component's artifact, with its valid checksum or MAC, copied under chaos's
    // name, as anyone able to write the directory could leave it: never run as chaos.
    let shopify = e
        .load_with(hookgate::plugin::bundled()[0].1, &options)
        .unwrap();
    let files = cache_files(&cache);
    assert_eq!(files.len(), 2, "{files:?}");
    let (chaos_file, shopify_file) = if files[0].to_string_lossy().contains(&chaos.sha256_hex()) {
        (&files[0], &files[1])
    } else {
        (&files[1], &files[0])
    };
    assert!(
        shopify_file
            .to_string_lossy()
            .contains(&shopify.sha256_hex())
    );
    std::fs::copy(shopify_file, chaos_file).unwrap();
    let again = e.load_with(&chaos_bytes, &options).unwrap();
    assert_eq!(again.compiled_from(), CompiledFrom::Compiled);
    assert_eq!(again.name(), "chaos");
    assert_ok_call(&again);
    let mode = std::fs::metadata(&cache).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "cache directory mode {mode:o}");
}
