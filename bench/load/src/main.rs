//! `hookgate-load`: a load generator for hookgate. Sends distinct, correctly signed Shopify
//! webhooks over N keep-alive connections for a fixed time, reports requests/s, latency
//! percentiles and errors, then counts the published events to prove none was lost. In
//! the same run it measures a bare hyper server that reads the body and answers 200: the
//! ceiling every figure is compared with.
//!
//! `--mode seed` measures the Python service hookgate replaces (`bench/seed`, run as a
//! child process), which issue 3's floor is stated against; `--mode floor` runs it beside
//! the ceiling and both gateway modes and gives each row's ratio to it as well.
//!
//! The load comes from the tool's own client (`--driver builtin`) or from wrk in a
//! process of its own (`--driver wrk`), the tool the reference figures were taken
//! with: then the webhooks are signed up front and wrk replays them, each once.
//!
//! Everything runs on this machine's loopback; every loop is bounded by count and time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use hookgate::app::Gateway;
use hookgate::config::{CliOverrides, Config};
use hookgate::sample;

mod reload;
mod seed;
mod soak;
mod wrk;

// glibc's malloc was a seventh of the gateway's CPU under load (fragmentation
// consolidation of the many short-lived body and envelope buffers); mimalloc's
// per-thread free lists avoid that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SECRET: &str = "load-test-secret";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Ceiling,
    Embedded,
    Production,
    /// The seed's Python stack (needs `just bench-seed-setup`).
    Seed,
    /// Ceiling, embedded and production.
    All,
    /// Ceiling, seed, embedded and production: issue 3's floor is production at 10x seed.
    Floor,
    /// Production loaded with and without a plugin swapped in every 2 s: what a hot
    /// reload costs requests, and how long a dropped plugin takes to serve.
    Reload,
    /// Production at a steady rate for `--minutes` while a private NATS server is killed
    /// and restarted `--restarts` times: throughput over time, outbox backlog and drain,
    /// gateway memory, and every acknowledged webhook published exactly once.
    Soak,
    /// The soak's gateway, run as a child process of the tool (`--config`).
    #[value(hide = true)]
    GatewayProcess,
}

/// How the soak stops its NATS server for an outage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum KillSignal {
    /// A clean stop: NATS flushes what it acknowledged.
    Term,
    /// A crash: NATS keeps only what reached its files.
    Kill,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Driver {
    /// The tool's own hyper client, in the same process as the server.
    Builtin,
    /// wrk (`apt-get install wrk`), in a process of its own, replaying pre-signed requests.
    Wrk,
}

#[derive(Parser)]
#[command(about = "Load generator for hookgate (loopback only)")]
struct Args {
    #[arg(long, value_enum, default_value = "all")]
    mode: Mode,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Measured seconds per mode (after warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[arg(long, default_value_t = 2)]
    warmup_seconds: u64,
    #[arg(long, value_enum, default_value = "builtin")]
    driver: Driver,
    /// wrk driver: distinct webhooks signed up front for the measured time (warm-up gets
    /// its own fifth as many). If wrk sends more it starts over, and the repeats are
    /// answered as duplicates and reported.
    #[arg(long, default_value_t = 200_000)]
    wrk_requests: usize,
    /// Hard cap on requests per mode, whatever the time.
    #[arg(long, default_value_t = 2_000_000)]
    max_requests: u64,
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    database_url: String,
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Seed mode: the venv's Python (default: target/seed-venv/bin/python in the workspace,
    /// made by `just bench-seed-setup`).
    #[arg(long)]
    seed_python: Option<std::path::PathBuf>,
    /// Seed mode: uvicorn worker processes, one per core as the seed was deployed.
    #[arg(long, default_value_t = 2)]
    seed_workers: usize,
    /// Soak: how long the load runs.
    #[arg(long, default_value_t = 10)]
    minutes: u64,
    /// Soak: webhooks per second in all, spread over the connections.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Soak: one row of the throughput table per this many seconds.
    #[arg(long, default_value_t = 10)]
    report_seconds: u64,
    /// Soak: NATS outages, evenly spaced in the run.
    #[arg(long, default_value_t = 2)]
    restarts: u32,
    /// Soak: how long NATS stays down each time.
    #[arg(long, default_value_t = 20)]
    outage_seconds: u64,
    /// Soak: how NATS is stopped for an outage (default: a crash).
    #[arg(long, value_enum, default_value = "kill")]
    nats_kill: KillSignal,
    /// Soak: the nats-server binary the tool starts on a free loopback port.
    #[arg(long, default_value = "nats-server")]
    nats_server: std::path::PathBuf,
    /// gateway-process: the configuration file to serve.
    #[arg(long, hide = true)]
    config: Option<std::path::PathBuf>,
}

impl Args {
    fn nats_kill_signal(&self) -> libc::c_int {
        match self.nats_kill {
            KillSignal::Term => libc::SIGTERM,
            KillSignal::Kill => libc::SIGKILL,
        }
    }
}

struct RunResult {
    name: &'static str,
    requests: u64,
    errors: u64,
    /// Webhooks the gateway accepted, warm-up included: what the sink must hold.
    accepted: u64,
    elapsed: Duration,
    p50_ms: f64,
    p99_ms: f64,
}

impl RunResult {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

/// The latency at quantile `p` of sorted microsecond samples, in milliseconds.
fn percentile(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let index = ((sorted_us.len() as f64 - 1.0) * p).round() as usize;
    sorted_us[index] as f64 / 1000.0
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    match args.mode {
        Mode::Reload => return reload::run(&args).await,
        Mode::Soak => return soak::run(&args).await,
        Mode::GatewayProcess => return soak::serve_gateway(&args).await,
        _ => {}
    }
    let modes: Vec<Mode> = match args.mode {
        Mode::All => vec![Mode::Ceiling, Mode::Embedded, Mode::Production],
        Mode::Floor => vec![Mode::Ceiling, Mode::Seed, Mode::Embedded, Mode::Production],
        other => vec![other],
    };
    let mut results = Vec::new();
    for mode in modes {
        let result = match mode {
            Mode::Ceiling => {
                let (addr, server) = bare_server().await?;
                let result = load(CEILING, addr, &args, None).await?;
                server.abort();
                result
            }
            Mode::Seed => seed::run(&args).await?,
            Mode::Embedded | Mode::Production => gateway_run(mode, &args).await?,
            Mode::All | Mode::Floor | Mode::Reload | Mode::Soak | Mode::GatewayProcess => {
                unreachable!("expanded above")
            }
        };
        print_result(&result, results.first());
        results.push(result);
    }
    let rate_of = |name: &str| results.iter().find(|r| r.name == name).map(RunResult::rate);
    let ceiling = rate_of(CEILING);
    let seed = rate_of(seed::NAME);
    // The seed column only where the seed was measured, so `--mode all` prints as before.
    let (seed_head, seed_rule) = match seed {
        Some(_) => (" ratio to seed |", "---:|"),
        None => ("", ""),
    };
    println!("\n| mode | webhooks/s | p50 ms | p99 ms | errors | ratio to ceiling |{seed_head}");
    println!("|---|---:|---:|---:|---:|---:|{seed_rule}");
    for result in &results {
        let ratio = |base: Option<f64>, digits: usize| {
            base.map(|b| format!("{:.digits$}", result.rate() / b))
                .unwrap_or_else(|| "-".into())
        };
        let seed_cell = match seed {
            Some(_) => format!(" {} |", ratio(seed, 1)),
            None => String::new(),
        };
        println!(
            "| {} | {:.0} | {:.2} | {:.2} | {} | {} |{seed_cell}",
            result.name,
            result.rate(),
            result.p50_ms,
            result.p99_ms,
            result.errors,
            ratio(ceiling, 2),
        );
    }
    if let (Some(seed), Some(production)) = (seed, rate_of(PRODUCTION)) {
        println!(
            "\nissue 3 floor: production is {:.1}x the seed stack (at least 10x asked)",
            production / seed
        );
    }
    Ok(())
}

const CEILING: &str = "bare hyper (ceiling)";
const PRODUCTION: &str = "production (PostgreSQL, Redis, JetStream)";

fn print_result(result: &RunResult, _ceiling: Option<&RunResult>) {
    eprintln!(
        "{}: {} requests in {:.1} s = {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, errors {}",
        result.name,
        result.requests,
        result.elapsed.as_secs_f64(),
        result.rate(),
        result.p50_ms,
        result.p99_ms,
        result.errors
    );
}

/// A hyper server that reads the whole body and answers 200: the ceiling.
async fn bare_server() -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |request: hyper::Request<hyper::body::Incoming>| async move {
                        let _ = request.into_body().collect().await;
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from_static(b"{\"status\":\"ok\"}"),
                        )))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((addr, task))
}

async fn gateway_run(mode: Mode, args: &Args) -> anyhow::Result<RunResult> {
    let dir = tempfile::tempdir()?;
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let (name, storage, dedupe, bus) = match mode {
        Mode::Embedded => (
            "embedded (SQLite, memory, file)",
            format!("sqlite://{}/hookgate.db", dir.path().display()),
            "memory://".to_owned(),
            format!("file://{}/events.jsonl", dir.path().display()),
        ),
        _ => (
            PRODUCTION,
            args.database_url.clone(),
            args.redis_url.clone(),
            args.nats_url.clone(),
        ),
    };
    let schema = format!("load_{suffix}");
    let stream = format!("LOAD_{}", suffix.to_uppercase());
    let prefix = format!("load{suffix}");
    let config_text = format!(
        "listen = \"127.0.0.1:0\"\n[storage]\nurl = \"{storage}\"\nschema = \"{schema}\"\n[dedupe]\nurl = \"{dedupe}\"\n\
         [bus]\nurl = \"{bus}\"\nstream = \"{stream}\"\nsubject_prefix = \"{prefix}\"\n[plugins]\ndir = \"{dir}/plugins.d\"\n\
         cache_dir = \"{dir}/cache\"\n[sources.shopify]\nsecrets = [\"{SECRET}\"]\n",
        dir = dir.path().display()
    );
    let path = dir.path().join("hookgate.toml");
    std::fs::write(&path, config_text)?;
    let config = Config::load(Some(&path), &|_: &str| None, &CliOverrides::default())?;
    let gateway = Gateway::start(&config).await.context("start gateway")?;
    let result = load(name, gateway.local_addr, args, Some(&gateway.state.metrics)).await?;
    print_batching(name, &gateway.state.metrics.encode());

    check_delivery(name, result.accepted, || async {
        match mode {
            Mode::Embedded => count_lines(&dir.path().join("events.jsonl")),
            _ => stream_count(&args.nats_url, &stream).await,
        }
    })
    .await;
    gateway.stop().await;
    if mode == Mode::Production {
        cleanup(args, &schema, &stream).await;
    }
    Ok(result)
}

/// Loads `addr` with the chosen driver. `gateway`: the target is the gateway, whose
/// metrics say how many webhooks it accepted (the bare server has none).
async fn load(
    name: &'static str,
    addr: SocketAddr,
    args: &Args,
    gateway: Option<&hookgate::metrics::Metrics>,
) -> anyhow::Result<RunResult> {
    match args.driver {
        Driver::Builtin => Ok(drive(name, addr, args, gateway.is_some()).await),
        Driver::Wrk => {
            let mut result = wrk::run(name, addr, args).await?;
            result.accepted = gateway.map_or(0, |metrics| accepted_count(&metrics.encode()));
            Ok(result)
        }
    }
}

/// Webhooks the gateway answered as accepted, from its own exposition.
fn accepted_count(exposition: &str) -> u64 {
    metric_sum(
        exposition,
        "hookgate_webhooks_received_total",
        "outcome=\"accepted\"",
    ) as u64
}

/// The sum of `metric`'s samples in an exposition, over the label sets that contain
/// `labels` (`""`: all of them).
fn metric_sum(exposition: &str, metric: &str, labels: &str) -> f64 {
    exposition
        .lines()
        .filter(|line| line.starts_with(metric) && line[metric.len()..].starts_with([' ', '{']))
        .filter(|line| line.contains(labels))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// How well concurrent webhooks were grouped: the figures that explain a run's throughput.
fn print_batching(name: &str, exposition: &str) {
    let value = |metric: &str| metric_sum(exposition, metric, "");
    let commits = value("hookgate_storage_batch_size_count");
    let stored = value("hookgate_storage_batch_size_sum");
    let publications = value("hookgate_publish_duration_seconds_count");
    let published = value("hookgate_events_published_total");
    let per = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let mean_ms = |histogram: &str| {
        per(
            value(&format!("{histogram}_sum")) * 1000.0,
            value(&format!("{histogram}_count")),
        )
    };
    eprintln!(
        "{name}: {commits} storage commits, {:.1} webhooks each, {:.2} ms each; \
         {publications} publications, {:.1} events each",
        per(stored, commits),
        mean_ms("hookgate_storage_commit_duration_seconds"),
        per(published, publications),
    );
    eprintln!(
        "{name}: mean server-side request {:.2} ms: plugin call {:.2} ms, waiting for a \
         storage writer {:.2} ms, then per batch a dedupe lookup of {:.2} ms and the commit",
        mean_ms("hookgate_webhook_request_duration_seconds"),
        mean_ms("hookgate_plugin_call_duration_seconds"),
        mean_ms("hookgate_storage_queue_wait_seconds"),
        mean_ms("hookgate_dedupe_lookup_duration_seconds"),
    );
}

/// Proves nothing was lost: every accepted webhook's event reaches the sink, which
/// `published` counts. The gateway's relay may still be publishing, so it is given time.
async fn check_delivery<F, Fut>(name: &str, expected: u64, published: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = u64>,
{
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut found = 0;
    while Instant::now() < deadline {
        found = published().await;
        if found >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("{name}: {expected} webhooks accepted (incl. warm-up), {found} events published");
    if found != expected {
        eprintln!("LOSS OR DUPLICATION: expected {expected} events, found {found}");
    }
}

fn count_lines(path: &std::path::Path) -> u64 {
    std::fs::read(path)
        .map(|bytes| bytes.iter().filter(|b| **b == b'\n').count() as u64)
        .unwrap_or(0)
}

async fn stream_count(url: &str, stream: &str) -> u64 {
    let Ok(client) = async_nats::connect(url).await else {
        return 0;
    };
    let js = async_nats::jetstream::new(client);
    match js.get_stream(stream).await {
        Ok(mut stream) => stream.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    }
}

async fn cleanup(args: &Args, schema: &str, stream: &str) {
    use sqlx::Connection;
    if let Ok(mut conn) = sqlx::PgConnection::connect(&args.database_url).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
        )))
        .execute(&mut conn)
        .await;
    }
    if let Ok(client) = async_nats::connect(&args.nats_url).await {
        let _ = async_nats::jetstream::new(client)
            .delete_stream(stream)
            .await;
    }
}

/// Runs `connections` workers for warm-up + measured time; only measured requests count
/// towards the rate and the latencies, every accepted one towards the loss check.
/// `expect_accepted`: the target is the gateway, which must accept every webhook (the
/// bare server answers with no status at all).
async fn drive(
    name: &'static str,
    addr: SocketAddr,
    args: &Args,
    expect_accepted: bool,
) -> RunResult {
    // Webhook ids unique to this run: Redis keeps the keys of earlier runs for the dedupe
    // TTL, and a repeated id would be answered as a duplicate, a much cheaper path.
    let run = Arc::new(uuid::Uuid::new_v4().simple().to_string()[..8].to_owned());
    let counter = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let measure_from = start + Duration::from_secs(args.warmup_seconds);
    let stop_at = measure_from + Duration::from_secs(args.seconds);
    let mut workers = Vec::new();
    for worker in 0..args.connections {
        let counter = counter.clone();
        let accepted = accepted.clone();
        let run = run.clone();
        let max = args.max_requests;
        workers.push(tokio::spawn(async move {
            let id_prefix = format!("load-{run}-{worker}");
            worker_loop(
                &id_prefix,
                expect_accepted,
                addr,
                counter,
                accepted,
                measure_from,
                stop_at,
                max,
            )
            .await
        }));
    }
    let mut latencies = Vec::new();
    let mut requests = 0;
    let mut errors = 0;
    for worker in workers {
        if let Ok((lat, errs)) = worker.await {
            requests += lat.len() as u64;
            errors += errs;
            latencies.extend(lat);
        }
    }
    let elapsed = Instant::now()
        .min(stop_at)
        .saturating_duration_since(measure_from)
        .max(Duration::from_millis(1));
    latencies.sort_unstable();
    RunResult {
        name,
        requests,
        errors,
        accepted: accepted.load(Ordering::Relaxed),
        elapsed,
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
    }
}

#[allow(clippy::too_many_arguments)]
async fn worker_loop(
    id_prefix: &str,
    expect_accepted: bool,
    addr: SocketAddr,
    counter: Arc<AtomicU64>,
    accepted: Arc<AtomicU64>,
    measure_from: Instant,
    stop_at: Instant,
    max_requests: u64,
) -> (Vec<u32>, u64) {
    let mut latencies = Vec::with_capacity(64 * 1024);
    let mut errors = 0u64;
    let mut sender = None;
    while Instant::now() < stop_at {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        if n >= max_requests {
            break;
        }
        if sender.is_none() {
            match connect(addr).await {
                Ok(s) => sender = Some(s),
                Err(_) => {
                    errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(s) = sender.as_mut() else { continue };
        let webhook = load_webhook(&format!("{id_prefix}-{n}"));
        let mut request = hyper::Request::builder()
            .method("POST")
            .uri(&webhook.path)
            .header("host", "127.0.0.1");
        for (name, value) in &webhook.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let Ok(request) = request.body(Full::new(Bytes::from(webhook.body))) else {
            continue;
        };
        let sent = Instant::now();
        let outcome = match s.send_request(request).await {
            Ok(response) => {
                let status = response.status();
                let body = response.into_body().collect().await.map(|b| b.to_bytes());
                match body {
                    Ok(body) if status.is_success() => Ok(body),
                    _ => Err(()),
                }
            }
            Err(_) => Err(()),
        };
        let took = sent.elapsed();
        match outcome {
            Ok(body) => {
                if body.windows(10).any(|w| w == b"\"accepted\"") {
                    accepted.fetch_add(1, Ordering::Relaxed);
                } else if expect_accepted && sent >= measure_from {
                    // Every webhook is new: anything but "accepted" (a duplicate) is wrong.
                    errors += 1;
                }
                if sent >= measure_from && Instant::now() <= stop_at {
                    latencies.push(took.as_micros().min(u32::MAX as u128) as u32);
                }
            }
            Err(()) => {
                if sent >= measure_from {
                    errors += 1;
                }
                sender = None;
            }
        }
    }
    (latencies, errors)
}

/// One signed `orders/create` webhook of the load, distinct by its event id.
fn load_webhook(event_id: &str) -> sample::SignedWebhook {
    sample::shopify(
        SECRET,
        "orders/create",
        "load.myshopify.com",
        event_id,
        sample::SHOPIFY_ORDER.as_bytes(),
    )
}

async fn connect(
    addr: SocketAddr,
) -> anyhow::Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}
