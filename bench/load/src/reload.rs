//! `--mode reload`: what a hot reload costs. One production-mode gateway (PostgreSQL,
//! Redis, NATS) is loaded twice for the same time: once untouched, once while a new build
//! of its Shopify plugin is renamed into the plugin directory every two seconds (alternating
//! two builds, so each swap is a real replacement). Reports the request p50/p99 of both
//! phases and, per swap, the time from the rename to the new build serving.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

use hookgate::app::Gateway;
use hookgate::config::{CliOverrides, Config};

use crate::{Args, RunResult, SECRET, check_delivery, cleanup, load, stream_count};

/// The contract-0.1 build of the Shopify plugin kept for the tests: same behaviour, other
/// bytes.
fn older_shopify() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../gateway/tests/data/plugins/shopify-0.1.0.wasm")
}

pub async fn run(args: &Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let plugins = dir.path().join("plugins.d");
    std::fs::create_dir_all(&plugins)?;
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let schema = format!("load_{suffix}");
    let stream = format!("LOAD_{}", suffix.to_uppercase());
    let config_text = format!(
        "listen = \"127.0.0.1:0\"\n[storage]\nurl = \"{}\"\nschema = \"{schema}\"\n[dedupe]\nurl = \"{}\"\n\
         [bus]\nurl = \"{}\"\nstream = \"{stream}\"\nsubject_prefix = \"load{suffix}\"\n[plugins]\ndir = \"{}\"\n\
         cache_dir = \"{}/cache\"\n[sources.shopify]\nsecrets = [\"{SECRET}\"]\n",
        args.database_url,
        args.redis_url,
        args.nats_url,
        plugins.display(),
        dir.path().display()
    );
    let path = dir.path().join("hookgate.toml");
    std::fs::write(&path, config_text)?;
    let config = Config::load(Some(&path), &|_: &str| None, &CliOverrides::default())?;
    let gateway = Gateway::start(&config).await.context("start gateway")?;

    let builds = [
        std::fs::read(older_shopify()).context("read the older Shopify build")?,
        hookgate::plugin::bundled()
            .iter()
            .find(|(name, _)| *name == "shopify")
            .map(|(_, bytes)| bytes.to_vec())
            .context("bundled shopify")?,
    ];

    let quiet = load("steady load, no reload", gateway.local_addr, args, None).await?;

    let swapping = {
        let gateway = &gateway;
        let plugins = plugins.clone();
        let builds = &builds;
        let until = Instant::now() + Duration::from_secs(args.warmup_seconds + args.seconds);
        async move {
            let mut latencies = Vec::new();
            let mut swap = 0usize;
            tokio::time::sleep(Duration::from_secs(args.warmup_seconds)).await;
            while Instant::now() + Duration::from_secs(2) < until {
                let bytes = &builds[swap % 2];
                let partial = plugins.join(".shopify.wasm.partial");
                std::fs::write(&partial, bytes).ok()?;
                let want = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes));
                let landed = Instant::now();
                std::fs::rename(&partial, plugins.join("shopify.wasm")).ok()?;
                let deadline = landed + Duration::from_secs(30);
                loop {
                    let serving = gateway
                        .state
                        .pipeline
                        .sources()
                        .get("shopify")
                        .map(|s| s.plugin.sha256_hex());
                    if serving.as_deref() == Some(want.as_str()) {
                        latencies.push(landed.elapsed());
                        break;
                    }
                    if Instant::now() > deadline {
                        eprintln!("reload: swap {swap} did not serve within 30 s");
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                swap += 1;
                tokio::time::sleep(Duration::from_secs(2).saturating_sub(landed.elapsed())).await;
            }
            Some(latencies)
        }
    };
    let (during, swaps) = tokio::join!(
        load(
            "steady load, plugin swapped every 2 s",
            gateway.local_addr,
            args,
            None
        ),
        swapping
    );
    let during = during?;
    let swaps = swaps.unwrap_or_default();

    report(&quiet, &during, &swaps);
    let accepted = hookgate_accepted(&gateway);
    check_delivery("reload", accepted, || stream_count(&args.nats_url, &stream)).await;
    gateway.stop().await;
    cleanup(args, &schema, &stream).await;
    Ok(())
}

fn hookgate_accepted(gateway: &Gateway) -> u64 {
    crate::accepted_count(&gateway.state.metrics.encode())
}

fn report(quiet: &RunResult, during: &RunResult, swaps: &[Duration]) {
    let mut ms: Vec<f64> = swaps.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let at = |p: f64| {
        if ms.is_empty() {
            0.0
        } else {
            ms[((ms.len() as f64 - 1.0) * p).round() as usize]
        }
    };
    println!();
    println!("| phase | requests/s | p50 ms | p99 ms | errors |");
    println!("|---|---:|---:|---:|---:|");
    for run in [quiet, during] {
        println!(
            "| {} | {:.0} | {:.2} | {:.2} | {} |",
            run.name,
            run.rate(),
            run.p50_ms,
            run.p99_ms,
            run.errors
        );
    }
    println!(
        "\nplugin swaps: {} — file renamed into place to new build serving: p50 {:.0} ms, max {:.0} ms \
         (0.75 s of it is the watcher's quiet period)",
        ms.len(),
        at(0.5),
        at(1.0)
    );
    println!(
        "during/quiet: throughput {:.2}x, p50 {:.2}x, p99 {:.2}x",
        during.rate() / quiet.rate(),
        during.p50_ms / quiet.p50_ms,
        during.p99_ms / quiet.p99_ms
    );
}
