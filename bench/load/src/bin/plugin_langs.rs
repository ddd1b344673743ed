//! `hookgate-plugin-langs`: the same GitHub source plugin written in Rust (bundled), in
//! JavaScript and in Python (`examples/plugins/github-{js,py}`), measured side by side in
//! one run: component size, compile time, cold load from the compiled-artifact cache,
//! per-webhook latency, CPU and page faults with a fresh instance per webhook, and
//! throughput through an embedded gateway (SQLite, memory dedupe, events file).
//!
//! Build the example plugins first (`examples/plugins/github-js/build.sh`,
//! `examples/plugins/github-py/build.sh`; both write to `target/plugins/`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use hmac::{Hmac, Mac};
use hookgate::app::Gateway;
use hookgate::client::HttpClient;
use hookgate::config::{CliOverrides, Config};
use hookgate::plugin;
use hookgate::plugin::{
    CallInput, Credentials, LoadOptions, MapOutcome, PluginEngine, PluginLimits, Processed,
    WebhookRequest,
};
use hookgate::sample::SignedWebhook;
use sha2::Sha256;

// The gateway's own allocator: the gateway runs inside this process.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SECRET: &str = "It's a Secret to Everybody";

#[derive(Parser, Debug)]
#[command(about = "The GitHub plugin in Rust, JavaScript and Python, measured in one run")]
struct Args {
    /// Plugins to measure, as NAME=FILE.wasm; `github` alone is the bundled Rust plugin.
    #[arg(long = "plugin", default_values_t = [
        "github".to_owned(),
        "github-js=target/plugins/github-js.wasm".to_owned(),
        "github-py=target/plugins/github-py.wasm".to_owned(),
    ])]
    plugins: Vec<String>,
    /// Webhooks per plugin for the per-call figures (fresh instance each).
    #[arg(long, default_value_t = 500)]
    calls: u32,
    /// Concurrent keep-alive connections of the gateway load.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Measured seconds of gateway load per plugin (after one second of warm-up); 0 skips it.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
}

/// Process CPU time (user + system) and minor page faults so far.
fn usage() -> (Duration, u64) {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    (tv(ru.ru_utime) + tv(ru.ru_stime), ru.ru_minflt as u64)
}

/// A signed `pull_request.opened` delivery (the size of a small real one, ~2 KB).
fn github_webhook(source: &str, delivery: &str) -> SignedWebhook {
    let title = "Update the README with new information. ".repeat(40);
    let body = format!(
        r#"{{"action":"opened","number":2,"pull_request":{{"id":279147437,"number":2,"title":"{title}"}},"repository":{{"id":186853002,"full_name":"Codertocat/Hello-World"}},"sender":{{"login":"Codertocat"}}}}"#
    );
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(SECRET.as_bytes()).expect("any key");
    mac.update(body.as_bytes());
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    SignedWebhook {
        path: format!("/api/v1/webhooks/{source}"),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("x-github-event".into(), "pull_request".into()),
            ("x-github-delivery".into(), delivery.into()),
            ("x-github-hook-id".into(), "292430182".into()),
            ("user-agent".into(), "GitHub-Hookshot/044aadd".into()),
            ("x-hub-signature-256".into(), signature),
        ],
        body: body.into_bytes(),
    }
}

struct Row {
    name: String,
    size: usize,
    compile: Duration,
    cold_load: Duration,
    call_mean: Duration,
    call_p50: Duration,
    call_p99: Duration,
    call_cpu: Duration,
    call_faults: u64,
    /// Mean instantiate, verify, map + teardown.
    phases: [Duration; 3],
    rate: f64,
    gateway_cpu: Duration,
    gateway_p50: Duration,
}

fn bytes_of(spec: &str) -> anyhow::Result<(String, Vec<u8>)> {
    match spec.split_once('=') {
        Some((name, path)) => {
            let bytes = std::fs::read(path).with_context(|| {
                format!("cannot read {path}: build it first (examples/plugins/{name}/build.sh)")
            })?;
            Ok((name.to_owned(), bytes))
        }
        None => plugin::bundled()
            .iter()
            .find(|(name, _)| *name == spec)
            .map(|(name, bytes)| ((*name).to_owned(), bytes.to_vec()))
            .with_context(|| format!("{spec} is not a bundled plugin; give NAME=FILE.wasm")),
    }
}

fn measure_calls(
    engine: &PluginEngine,
    name: &str,
    wasm: &[u8],
    calls: u32,
) -> anyhow::Result<Row> {
    let started = Instant::now();
    engine
        .load(wasm)
        .with_context(|| format!("{name} does not load"))?;
    let compile = started.elapsed();
    let cache = tempfile::tempdir()?;
    let options = LoadOptions {
        cache_dir: Some(cache.path().to_path_buf()),
    };
    engine.load_with(wasm, &options)?;
    let started = Instant::now();
    let plugin = engine.load_with(wasm, &options)?;
    let cold_load = started.elapsed();

    let webhook = github_webhook(name, "72d3162e-cc78-11e3-81ab-4c9367dc0958");
    let request = Arc::new(WebhookRequest {
        method: "POST".into(),
        path: webhook.path.clone(),
        topic: None,
        query: None,
        headers: webhook.headers.clone(),
        body: webhook.body.clone().into(),
    });
    let credentials = Credentials::with_secrets(vec![SECRET.as_bytes().to_vec()]);
    let settings = Vec::new();
    let input = CallInput {
        request: &request,
        credentials: &credentials,
        settings: &settings,
        now_unix_seconds: None,
        correlation_id: "langs",
    };
    // One webhook as `Plugin::process` runs it, timed by phase: a fresh instance from the
    // pooling allocator, `verify`, then `map` and the instance's teardown (its slot reset).
    let call = |phases: &mut [Duration; 3]| -> anyhow::Result<()> {
        let t0 = Instant::now();
        let started = plugin.start(&request, None, "langs")?;
        let t1 = Instant::now();
        let verified = match started.verify(&credentials, &settings)? {
            Ok(verified) => verified,
            Err(e) => bail!("{name}: verification failed: {e:?}"),
        };
        let t2 = Instant::now();
        let mapped = verified.map(&settings);
        let t3 = Instant::now();
        if !matches!(mapped, Ok(MapOutcome::Events(_))) {
            bail!("{name}: unexpected mapping {mapped:?}");
        }
        phases[0] += t1 - t0;
        phases[1] += t2 - t1;
        phases[2] += t3 - t2;
        Ok(())
    };
    let mut warm = [Duration::ZERO; 3];
    for _ in 0..calls.div_ceil(10) {
        call(&mut warm)?;
    }
    // The same webhook through `process`, the gateway's path, must agree.
    match plugin.process(&input) {
        Ok(Processed::Verified {
            mapped: Ok(MapOutcome::Events(_)),
            ..
        }) => {}
        other => bail!("{name}: unexpected outcome {other:?}"),
    }
    let mut phases = [Duration::ZERO; 3];
    let mut took = Vec::with_capacity(calls as usize);
    let (cpu0, faults0) = usage();
    for _ in 0..calls {
        let started = Instant::now();
        call(&mut phases)?;
        took.push(started.elapsed());
    }
    let (cpu1, faults1) = usage();
    let n = calls.max(1);
    let total: Duration = took.iter().sum();
    took.sort_unstable();
    Ok(Row {
        name: name.to_owned(),
        size: wasm.len(),
        compile,
        cold_load,
        call_mean: total / n,
        call_p50: took[took.len() / 2],
        call_p99: took[(took.len() * 99 / 100).min(took.len() - 1)],
        call_cpu: (cpu1 - cpu0) / n,
        call_faults: (faults1 - faults0) / u64::from(n),
        phases: phases.map(|p| p / n),
        rate: 0.0,
        gateway_cpu: Duration::ZERO,
        gateway_p50: Duration::ZERO,
    })
}

/// Signed webhooks through an embedded gateway for `seconds`, `connections` at a time.
async fn measure_gateway(
    row: &mut Row,
    wasm: &[u8],
    bundled: bool,
    args: &Args,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("plugins.d"))?;
    let name = &row.name;
    let plugin_line = if bundled {
        String::new()
    } else {
        std::fs::write(
            dir.path().join("plugins.d").join(format!("{name}.wasm")),
            wasm,
        )?;
        format!("plugin = \"{name}\"\n")
    };
    let config_text = format!(
        "listen = \"127.0.0.1:0\"\n[storage]\nurl = \"sqlite://{d}/hookgate.db\"\n[dedupe]\nurl = \"memory://\"\n\
         [bus]\nurl = \"file://{d}/events.jsonl\"\n[plugins]\ndir = \"{d}/plugins.d\"\ncache_dir = \"{d}/cache\"\n\
         [sources.{name}]\n{plugin_line}secrets = [\"{SECRET}\"]\n",
        d = dir.path().display()
    );
    let path = dir.path().join("hookgate.toml");
    std::fs::write(&path, config_text)?;
    let config = Config::load(Some(&path), &|_: &str| None, &CliOverrides::default())?;
    let gateway = Gateway::start(&config).await.context("start gateway")?;
    let base = format!("http://{}", gateway.local_addr);

    let counter = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let measure_from = start + Duration::from_secs(1);
    let stop_at = measure_from + Duration::from_secs(args.seconds);
    let mut workers = Vec::new();
    for _ in 0..args.connections {
        let counter = counter.clone();
        let base = base.clone();
        let name = name.clone();
        workers.push(tokio::spawn(async move {
            let client = HttpClient::new();
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            while Instant::now() < stop_at {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let webhook = github_webhook(&name, &format!("delivery-{n}"));
                let sent = Instant::now();
                let reply = client.post_webhook(&base, &webhook).await;
                let ok = matches!(&reply, Ok(r) if r.status == 200
                    && r.body.windows(10).any(|w| w == b"\"accepted\""));
                if sent >= measure_from && Instant::now() <= stop_at {
                    if ok {
                        latencies.push(sent.elapsed());
                    } else {
                        errors += 1;
                    }
                }
            }
            (latencies, errors)
        }));
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let (cpu0, _) = usage();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for worker in workers {
        let (l, e) = worker.await?;
        latencies.extend(l);
        errors += e;
    }
    let (cpu1, _) = usage();
    if errors > 0 {
        bail!("{name}: {errors} webhooks were not accepted");
    }
    latencies.sort_unstable();
    let accepted = latencies.len().max(1);
    row.rate = latencies.len() as f64 / args.seconds as f64;
    row.gateway_cpu = (cpu1 - cpu0) / accepted as u32;
    row.gateway_p50 = latencies
        .get(latencies.len() / 2)
        .copied()
        .unwrap_or_default();
    gateway.stop().await;
    Ok(())
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let engine = PluginEngine::new(PluginLimits::default())?;
    let mut rows = Vec::new();
    for spec in &args.plugins {
        let (name, wasm) = bytes_of(spec)?;
        eprintln!("measuring {name} ({} bytes)...", wasm.len());
        let mut row =
            tokio::task::block_in_place(|| measure_calls(&engine, &name, &wasm, args.calls))?;
        if args.seconds > 0 {
            measure_gateway(&mut row, &wasm, !spec.contains('='), &args).await?;
        }
        rows.push(row);
    }
    let rust = rows.first().map(|r| (r.call_mean, r.rate));
    println!("Per-webhook phases (mean): instantiate | verify | map + teardown");
    for r in &rows {
        println!(
            "  {}: {} ms | {} ms | {} ms",
            r.name,
            ms(r.phases[0]),
            ms(r.phases[1]),
            ms(r.phases[2])
        );
    }
    println!(
        "| plugin | size | compile | cold load | call mean | p50 | p99 | CPU/call | faults/call | gateway webhooks/s | p50 | CPU/webhook | call vs first | rate vs first |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        let (base_call, base_rate) = rust.unwrap_or((r.call_mean, r.rate));
        println!(
            "| {} | {:.1} MB | {} ms | {} ms | {} ms | {} ms | {} ms | {} ms | {} | {:.0} | {} ms | {} ms | {:.1}x | {:.2}x |",
            r.name,
            r.size as f64 / 1e6,
            ms(r.compile),
            ms(r.cold_load),
            ms(r.call_mean),
            ms(r.call_p50),
            ms(r.call_p99),
            ms(r.call_cpu),
            r.call_faults,
            r.rate,
            ms(r.gateway_p50),
            ms(r.gateway_cpu),
            r.call_mean.as_secs_f64() / base_call.as_secs_f64().max(1e-9),
            if base_rate > 0.0 {
                r.rate / base_rate
            } else {
                0.0
            },
        );
    }
    Ok(())
}
