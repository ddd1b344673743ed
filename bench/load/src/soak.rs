//! `--mode soak`: a long, steady load against a production-backend gateway (PostgreSQL,
//! Redis, JetStream) while its NATS server is killed and restarted, to show what hours of
//! service would: throughput that holds over time, an outbox that absorbs each outage and
//! drains after it, memory that does not creep, and every acknowledged webhook published
//! exactly once.
//!
//! The tool starts its own `nats-server` (JetStream, file storage in a temporary directory)
//! on a free loopback port, so killing it touches nothing else on the machine, and runs
//! the gateway as a child process of its own (this binary, hidden mode `gateway-process`),
//! so its resident memory is the gateway's alone. Both children are stopped by their PID.
//!
//! Every loop is bounded: the load by `--minutes` and `--max-requests`, each wait by a
//! deadline.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use futures_util::StreamExt as _;
use http_body_util::{BodyExt, Full};

use hookgate::app::Gateway;
use hookgate::config::{CliOverrides, Config};

use crate::{Args, SECRET, connect, load_webhook};

/// Backlog samples per second (the outbox count is one indexed `count(*)`).
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// Longest wait for the outbox to drain after an outage, and after the load ends.
const DRAIN_LIMIT: Duration = Duration::from_secs(300);

/// Hidden mode `gateway-process`: serve the configuration in `--config` until SIGTERM.
pub async fn serve_gateway(args: &Args) -> anyhow::Result<()> {
    let path = args
        .config
        .as_deref()
        .context("gateway-process needs --config")?;
    let config = Config::load(Some(path), &|_: &str| None, &CliOverrides::default())?;
    let gateway = Gateway::start(&config).await.context("start gateway")?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    term.recv().await;
    gateway.stop().await;
    Ok(())
}

/// A child process stopped by its PID: SIGTERM, then SIGKILL after `grace`. Dropped
/// without a stop (an error or panic on the way), it is killed.
struct Child {
    name: &'static str,
    child: tokio::process::Child,
    pid: i32,
}

impl Child {
    fn spawn(name: &'static str, command: &mut tokio::process::Command) -> anyhow::Result<Self> {
        let child = command
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {name}"))?;
        let pid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .with_context(|| format!("{name} exited at once"))?;
        Ok(Self { name, child, pid })
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) with the PID of a child this process started and has not yet
        // reaped, so the PID cannot belong to another process.
        unsafe {
            libc::kill(self.pid, signal);
        }
    }

    async fn stop(mut self, signal: libc::c_int, grace: Duration) {
        self.signal(signal);
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            eprintln!(
                "soak: {} did not stop within {grace:?}; killing it",
                self.name
            );
            self.signal(libc::SIGKILL);
            let _ = self.child.wait().await;
        }
    }

    fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn wait_listening(addr: SocketAddr, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// The private NATS server: always the same port and store directory, so a restart
/// finds its stream and the messages it had acknowledged.
struct Nats {
    binary: PathBuf,
    port: u16,
    store: PathBuf,
    log: PathBuf,
}

impl Nats {
    async fn start(&self) -> anyhow::Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Child::spawn(
            "nats-server",
            tokio::process::Command::new(&self.binary)
                .args([
                    "-a",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-js",
                    "-sd",
                ])
                .arg(&self.store)
                .stdout(log.try_clone()?)
                .stderr(log),
        )?;
        if !wait_listening(
            SocketAddr::from(([127, 0, 0, 1], self.port)),
            Duration::from_secs(15),
        )
        .await
        {
            bail!(
                "nats-server did not listen on {} within 15 s; its log: {}",
                self.port,
                self.log.display()
            );
        }
        Ok(child)
    }
}

/// What the load saw in one reporting interval.
#[derive(Default)]
struct Interval {
    accepted: u64,
    errors: u64,
    latencies_us: Vec<u32>,
}

struct Shared {
    intervals: Mutex<Vec<Interval>>,
    /// Entry ids the gateway acknowledged: what the stream must hold, once each.
    acknowledged: Mutex<Vec<String>>,
    sent: AtomicU64,
    stop: AtomicBool,
}

pub async fn run(args: &Args) -> anyhow::Result<()> {
    let minutes = args.minutes.max(1);
    let run_for = Duration::from_secs(minutes * 60);
    let report = Duration::from_secs(args.report_seconds.max(1));
    let dir = tempfile::tempdir()?;
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let schema = format!("soak_{suffix}");
    let stream = format!("SOAK_{}", suffix.to_uppercase());

    let nats = Nats {
        binary: args.nats_server.clone(),
        port: free_port()?,
        store: dir.path().join("jetstream"),
        log: dir.path().join("nats-server.log"),
    };
    let nats_url = format!("nats://127.0.0.1:{}", nats.port);
    let mut nats_child = Some(nats.start().await?);

    let gateway_port = free_port()?;
    let config_path = dir.path().join("hookgate.toml");
    std::fs::write(
        &config_path,
        format!(
            "listen = \"127.0.0.1:{gateway_port}\"\n[storage]\nurl = \"{}\"\nschema = \"{schema}\"\n\
             [dedupe]\nurl = \"{}\"\n[bus]\nurl = \"{nats_url}\"\nstream = \"{stream}\"\n\
             subject_prefix = \"soak{suffix}\"\n[plugins]\ndir = \"{dir}/plugins.d\"\n\
             cache_dir = \"{dir}/cache\"\n[sources.shopify]\nsecrets = [\"{SECRET}\"]\n",
            args.database_url,
            args.redis_url,
            dir = dir.path().display()
        ),
    )?;
    let gateway_log = std::fs::File::create(dir.path().join("gateway.log"))?;
    let gateway = Child::spawn(
        "gateway",
        tokio::process::Command::new(std::env::current_exe()?)
            .args(["--mode", "gateway-process", "--config"])
            .arg(&config_path)
            .stdout(gateway_log.try_clone()?)
            .stderr(gateway_log),
    )?;
    let addr = SocketAddr::from(([127, 0, 0, 1], gateway_port));
    if !wait_listening(addr, Duration::from_secs(120)).await {
        bail!(
            "the gateway did not listen within 120 s (see its log in {})",
            dir.path().display()
        );
    }
    let backlog = Backlog::connect(&args.database_url, &schema).await?;

    eprintln!(
        "soak: {minutes} min at {}/s over {} connections; NATS (pid {}, port {}) killed with {} \
         and restarted {} times, down {} s each",
        args.rate,
        args.connections,
        nats_child.as_ref().map_or(0, |c| c.pid),
        nats.port,
        signal_name(args.nats_kill_signal()),
        args.restarts,
        args.outage_seconds
    );

    let shared = Arc::new(Shared {
        intervals: Mutex::new(Vec::new()),
        acknowledged: Mutex::new(Vec::new()),
        sent: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let started = Instant::now();
    let rss_start = gateway.rss_kib();
    let workers = spawn_load(args, addr, started, run_for, report, &shared);

    // Outages at even spacing inside the run, each NATS down for `outage_seconds`.
    let restarts = args.restarts;
    let kill_at: Vec<Duration> = (1..=restarts)
        .map(|i| run_for * i / (restarts + 1))
        .collect();
    let mut samples: Vec<(Duration, u64)> = Vec::new();
    let mut outages: Vec<Outage> = Vec::new();
    let mut next_report = report;
    let mut printed = 0usize;
    println!(
        "\n| minute:second | accepted/s | errors | p50 ms | p99 ms | outbox backlog | gateway RSS MiB |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    while started.elapsed() < run_for {
        let now = started.elapsed();
        if let Some(current) = outages.last_mut()
            && current.restarted_at.is_none()
            && now >= current.killed_at + Duration::from_secs(args.outage_seconds)
        {
            nats_child = Some(nats.start().await?);
            current.restarted_at = Some(started.elapsed());
            eprintln!(
                "soak: {:>5.1} s NATS restarted (pid {})",
                started.elapsed().as_secs_f64(),
                nats_child.as_ref().map_or(0, |c| c.pid)
            );
        }
        if outages.len() < kill_at.len() && now >= kill_at[outages.len()] {
            let before = samples
                .iter()
                .rev()
                .take_while(|(at, _)| *at + Duration::from_secs(10) >= now)
                .map(|(_, n)| *n)
                .max()
                .unwrap_or(0);
            if let Some(child) = nats_child.take() {
                eprintln!(
                    "soak: {:>5.1} s killing NATS (pid {}) with {}",
                    now.as_secs_f64(),
                    child.pid,
                    signal_name(args.nats_kill_signal())
                );
                child
                    .stop(args.nats_kill_signal(), Duration::from_secs(10))
                    .await;
            }
            outages.push(Outage {
                killed_at: started.elapsed(),
                restarted_at: None,
                baseline: before,
                peak: before,
                drained_at: None,
            });
        }
        let count = backlog.count().await;
        let at = started.elapsed();
        samples.push((at, count));
        for outage in &mut outages {
            if outage.drained_at.is_none() {
                outage.peak = outage.peak.max(count);
                if let Some(restarted) = outage.restarted_at
                    && at > restarted
                    && count <= outage.baseline.max(args.rate / 10)
                {
                    outage.drained_at = Some(at);
                }
            }
        }
        if at >= next_report {
            printed = print_intervals(&shared, printed, report, &samples, gateway.rss_kib());
            next_report += report;
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
    shared.stop.store(true, Ordering::Relaxed);
    for worker in workers {
        let _ = worker.await;
    }
    let load_ended = started.elapsed();
    // An outage whose restart fell past the end of the load still gets its server back.
    if nats_child.is_none() {
        nats_child = Some(nats.start().await?);
        if let Some(current) = outages.last_mut() {
            current.restarted_at = Some(started.elapsed());
        }
    }
    print_intervals(&shared, printed, report, &samples, gateway.rss_kib());

    // Let the outbox drain completely before counting the stream.
    let drain_deadline = Instant::now() + DRAIN_LIMIT;
    let mut final_backlog = backlog.count().await;
    while final_backlog > 0 && Instant::now() < drain_deadline {
        let at = started.elapsed();
        for outage in &mut outages {
            if outage.drained_at.is_none() {
                outage.peak = outage.peak.max(final_backlog);
            }
        }
        samples.push((at, final_backlog));
        tokio::time::sleep(SAMPLE_EVERY).await;
        final_backlog = backlog.count().await;
    }
    for outage in &mut outages {
        if outage.drained_at.is_none() && final_backlog == 0 {
            outage.drained_at = Some(started.elapsed());
        }
    }
    let drained_after_load = started.elapsed().saturating_sub(load_ended);
    let rss_end = gateway.rss_kib();

    let acknowledged = std::mem::take(
        &mut *shared
            .acknowledged
            .lock()
            .unwrap_or_else(|e| e.into_inner()),
    );
    let sent = shared.sent.load(Ordering::Relaxed);
    let totals = shared
        .intervals
        .lock()
        .map(|i| {
            (
                i.iter().map(|x| x.accepted).sum::<u64>(),
                i.iter().map(|x| x.errors).sum::<u64>(),
            )
        })
        .unwrap_or_default();

    println!();
    println!(
        "| outage | NATS down at | restarted at | backlog before | backlog peak | drained after restart |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (n, outage) in outages.iter().enumerate() {
        let drain = match (outage.restarted_at, outage.drained_at) {
            (Some(restarted), Some(drained)) => {
                format!("{:.1} s", drained.saturating_sub(restarted).as_secs_f64())
            }
            _ => "not drained".to_owned(),
        };
        println!(
            "| {} | {:.0} s | {} | {} | {} | {drain} |",
            n + 1,
            outage.killed_at.as_secs_f64(),
            outage
                .restarted_at
                .map_or("-".to_owned(), |r| format!("{:.0} s", r.as_secs_f64())),
            outage.baseline,
            outage.peak
        );
    }
    let mib =
        |kib: Option<u64>| kib.map_or("?".to_owned(), |k| format!("{:.1}", k as f64 / 1024.0));
    println!(
        "\nrequests sent {sent}, accepted {}, errors {}; mean {:.0} accepted/s over {:.0} s",
        totals.0,
        totals.1,
        totals.0 as f64 / load_ended.as_secs_f64(),
        load_ended.as_secs_f64()
    );
    println!(
        "gateway RSS: {} MiB at start (after start-up, before load), {} MiB at the end (load over, outbox drained)",
        mib(rss_start),
        mib(rss_end)
    );
    println!(
        "outbox after the load: drained to {final_backlog} in {:.1} s",
        drained_after_load.as_secs_f64()
    );

    let verdict = exactly_once(&nats_url, &stream, &acknowledged).await;
    match &verdict {
        Ok(report) => println!("{report}"),
        Err(error) => println!("exactly-once check failed to run: {error:#}"),
    }

    gateway.stop(libc::SIGTERM, Duration::from_secs(30)).await;
    if let Some(child) = nats_child {
        child.stop(libc::SIGTERM, Duration::from_secs(10)).await;
    }
    drop_schema(&args.database_url, &schema).await;
    verdict.map(|_| ())
}

/// The gateway's schema (the stream went with the private NATS server's directory).
async fn drop_schema(url: &str, schema: &str) {
    use sqlx::Connection;
    if let Ok(mut conn) = sqlx::PgConnection::connect(url).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
        )))
        .execute(&mut conn)
        .await;
    }
}

fn signal_name(signal: libc::c_int) -> &'static str {
    match signal {
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}

struct Outage {
    killed_at: Duration,
    restarted_at: Option<Duration>,
    /// The largest backlog of the 10 s before the kill: what "drained" returns to.
    baseline: u64,
    peak: u64,
    drained_at: Option<Duration>,
}

/// Counts the outbox's pending events in the gateway's schema, as its relay does.
struct Backlog {
    pool: sqlx::PgPool,
    query: String,
}

impl Backlog {
    async fn connect(url: &str, schema: &str) -> anyhow::Result<Self> {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await
            .context("connect to PostgreSQL")?;
        Ok(Self {
            pool,
            query: format!(
                "SELECT count(*) FROM \"{schema}\".webhook_events WHERE status = 'pending'"
            ),
        })
    }

    async fn count(&self) -> u64 {
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(self.query.clone()))
            .fetch_one(&self.pool)
            .await
            .map_or(0, |n| u64::try_from(n).unwrap_or(0))
    }
}

/// Prints the intervals completed since `printed`; returns how many are printed now.
fn print_intervals(
    shared: &Shared,
    printed: usize,
    report: Duration,
    samples: &[(Duration, u64)],
    rss_kib: Option<u64>,
) -> usize {
    let intervals = shared.intervals.lock().unwrap_or_else(|e| e.into_inner());
    // The last interval may still be filling; it is printed next time (or at the end).
    let complete = if shared.stop.load(Ordering::Relaxed) {
        intervals.len()
    } else {
        intervals.len().saturating_sub(1)
    };
    for (n, interval) in intervals.iter().enumerate().take(complete).skip(printed) {
        let end = report * (n as u32 + 1);
        let mut latencies = interval.latencies_us.clone();
        latencies.sort_unstable();
        let backlog = samples
            .iter()
            .rev()
            .find(|(at, _)| *at <= end)
            .map_or(0, |(_, n)| *n);
        let seconds = end.as_secs();
        println!(
            "| {}:{:02} | {:.0} | {} | {:.2} | {:.2} | {} | {} |",
            seconds / 60,
            seconds % 60,
            interval.accepted as f64 / report.as_secs_f64(),
            interval.errors,
            crate::percentile(&latencies, 0.5),
            crate::percentile(&latencies, 0.99),
            backlog,
            rss_kib.map_or("?".to_owned(), |k| format!("{:.1}", k as f64 / 1024.0)),
        );
    }
    complete.max(printed)
}

/// `connections` workers sending at `rate` webhooks/s in all, each on its own schedule
/// (never catching up in a burst after a slow answer), until `run_for` or the stop flag.
fn spawn_load(
    args: &Args,
    addr: SocketAddr,
    started: Instant,
    run_for: Duration,
    report: Duration,
    shared: &Arc<Shared>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let connections = args.connections.max(1);
    let per_worker = Duration::from_secs_f64(connections as f64 / args.rate.max(1) as f64);
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    (0..connections)
        .map(|worker| {
            let shared = shared.clone();
            let run = run.clone();
            let max = args.max_requests;
            tokio::spawn(async move {
                let offset = per_worker.mul_f64(worker as f64 / connections as f64);
                let mut next = started + offset;
                let mut sender = None;
                let mut n = 0u64;
                while !shared.stop.load(Ordering::Relaxed) && started.elapsed() < run_for {
                    let now = Instant::now();
                    if next > now {
                        tokio::time::sleep(next - now).await;
                    }
                    // The sleep may cross the end; a request sent after it would open an
                    // interval of its own.
                    if started.elapsed() >= run_for {
                        break;
                    }
                    next = (next + per_worker).max(Instant::now());
                    if shared.sent.fetch_add(1, Ordering::Relaxed) >= max {
                        break;
                    }
                    let sent = Instant::now();
                    let outcome =
                        send(&mut sender, addr, &format!("soak-{run}-{worker}-{n}")).await;
                    n += 1;
                    let took = sent.elapsed();
                    let slot =
                        (sent.duration_since(started).as_nanos() / report.as_nanos()) as usize;
                    let mut intervals = shared.intervals.lock().unwrap_or_else(|e| e.into_inner());
                    while intervals.len() <= slot {
                        intervals.push(Interval::default());
                    }
                    let interval = &mut intervals[slot];
                    match outcome {
                        Some(id) => {
                            interval.accepted += 1;
                            interval
                                .latencies_us
                                .push(took.as_micros().min(u32::MAX as u128) as u32);
                            drop(intervals);
                            shared
                                .acknowledged
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(id);
                        }
                        None => interval.errors += 1,
                    }
                }
            })
        })
        .collect()
}

/// One webhook; the entry id when the gateway answered `accepted`.
async fn send(
    sender: &mut Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
    addr: SocketAddr,
    event_id: &str,
) -> Option<String> {
    if sender.is_none() {
        *sender = connect(addr).await.ok();
    }
    let s = sender.as_mut()?;
    let webhook = load_webhook(event_id);
    let mut request = hyper::Request::builder()
        .method("POST")
        .uri(&webhook.path)
        .header("host", "127.0.0.1");
    for (name, value) in &webhook.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let request = request.body(Full::new(Bytes::from(webhook.body))).ok()?;
    let answer = async {
        let response = s.send_request(request).await.ok()?;
        let ok = response.status().is_success();
        let body = response.into_body().collect().await.ok()?.to_bytes();
        ok.then_some(body)
    };
    let Some(body) = tokio::time::timeout(Duration::from_secs(30), answer)
        .await
        .ok()
        .flatten()
    else {
        *sender = None;
        return None;
    };
    let value: serde_json::Value = serde_json::from_slice(&body).ok()?;
    (value["status"] == "accepted")
        .then(|| value["id"].as_str().map(str::to_owned))
        .flatten()
}

/// Reads the whole stream: every acknowledged webhook's event must be there exactly once
/// (one event per Shopify `orders/create`), under a message id seen once, and nothing
/// else may be.
async fn exactly_once(url: &str, stream: &str, acknowledged: &[String]) -> anyhow::Result<String> {
    let client = async_nats::connect(url).await?;
    let js = async_nats::jetstream::new(client);
    let mut handle = js.get_stream(stream).await?;
    let total = handle.info().await?.state.messages;
    let consumer = handle
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await?;
    let mut messages = consumer.messages().await?;
    let mut per_webhook: HashMap<String, u32> = HashMap::with_capacity(acknowledged.len());
    let mut msg_ids: HashSet<String> = HashSet::with_capacity(acknowledged.len());
    let mut repeated_ids = 0u64;
    let mut unreadable = 0u64;
    let mut read = 0u64;
    let deadline = Instant::now() + Duration::from_secs(900);
    while read < total && Instant::now() < deadline {
        let Ok(Some(message)) =
            tokio::time::timeout(Duration::from_secs(30), messages.next()).await
        else {
            break;
        };
        let message = message?;
        read += 1;
        let id = message
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        if !msg_ids.insert(id) {
            repeated_ids += 1;
        }
        match serde_json::from_slice::<serde_json::Value>(&message.payload)
            .ok()
            .and_then(|envelope| envelope["webhookid"].as_str().map(str::to_owned))
        {
            Some(webhook) => *per_webhook.entry(webhook).or_default() += 1,
            None => unreadable += 1,
        }
    }
    let acknowledged_set: HashSet<&str> = acknowledged.iter().map(String::as_str).collect();
    let missing = acknowledged_set
        .iter()
        .filter(|id| !per_webhook.contains_key(**id))
        .count();
    let twice = per_webhook.values().filter(|n| **n > 1).count();
    let unexpected = per_webhook
        .keys()
        .filter(|id| !acknowledged_set.contains(id.as_str()))
        .count();
    let ok = missing == 0
        && twice == 0
        && repeated_ids == 0
        && unreadable == 0
        && read == total
        && acknowledged_set.len() == acknowledged.len();
    let summary = format!(
        "exactly once: {} — {} webhooks acknowledged ({} distinct ids), {read} of {total} stream \
         messages read, {} distinct message ids; missing {missing}, published more than once \
         {twice}, repeated message ids {repeated_ids}, not acknowledged {unexpected}, unreadable {unreadable}",
        if ok { "yes" } else { "NO" },
        acknowledged.len(),
        acknowledged_set.len(),
        msg_ids.len(),
    );
    if !ok {
        bail!("{summary}");
    }
    Ok(summary)
}
