//! The seed comparator: issue 3 states the production floor as 10x the Python service
//! hookgate replaces, and this machine's speed moves too much from day to day for a figure
//! taken on another day, so the seed's stack (`bench/seed/app.py`: FastAPI on uvicorn,
//! Redis SET NX, two PostgreSQL commits, a JetStream publish) is started here as a child
//! process and given the same load in the same run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use super::{Args, Driver, RunResult, cleanup, connect, drive, load_webhook, stream_count};

pub const NAME: &str = "seed stack (FastAPI, Redis, PostgreSQL, JetStream)";

const APP: &str = include_str!("../../seed/app.py");

/// Where `just bench-seed-setup` puts the venv, found from any working directory.
fn default_python() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/seed-venv/bin/python")
}

pub async fn run(args: &Args) -> anyhow::Result<RunResult> {
    let python = args.seed_python.clone().unwrap_or_else(default_python);
    if !python.exists() {
        bail!(
            "no Python for the seed comparator at {}: run `just bench-seed-setup` \
             (python3 -m venv target/seed-venv && target/seed-venv/bin/pip install -r \
             bench/seed/requirements.txt) or pass --seed-python",
            python.display()
        );
    }
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("app.py"), APP)?;
    let ready_dir = dir.path().join("ready");
    std::fs::create_dir(&ready_dir)?;
    // Names of this run's own, as production mode has: nothing left by an earlier run
    // (rows, stream messages) can count towards this one.
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let schema = format!("seed_bench_{suffix}");
    let stream = format!("SEEDBENCH_{}", suffix.to_uppercase());
    let env = [
        ("SHOPIFY_WEBHOOK_SECRET", super::SECRET.to_owned()),
        ("DATABASE_URL", args.database_url.clone()),
        ("SEED_SCHEMA", schema.clone()),
        ("REDIS_URL", args.redis_url.clone()),
        ("NATS_URL", args.nats_url.clone()),
        ("SEED_STREAM", stream.clone()),
        ("SEED_SUBJECT_PREFIX", format!("seedbench{suffix}")),
        ("SEED_READY_DIR", ready_dir.display().to_string()),
    ];

    let mut server = start(&python, dir.path(), &ready_dir, &env, args.seed_workers).await?;
    let outcome = measure(&server, args, &schema, &stream).await;
    server.stop().await;
    let handled = handled_per_worker(&ready_dir);
    if !handled.is_empty() {
        eprintln!("{NAME}: webhooks handled per worker: {handled:?}");
    }
    cleanup(args, &schema, &stream).await;
    outcome
}

async fn measure(
    server: &Server,
    args: &Args,
    schema: &str,
    stream: &str,
) -> anyhow::Result<RunResult> {
    let addr = server.addr;
    smoke_check(addr).await?;
    let mut result = match args.driver {
        Driver::Builtin => drive(NAME, addr, args, true).await,
        Driver::Wrk => super::wrk::run(NAME, addr, args).await?,
    };
    let processed = processed_rows(args, schema).await?;
    // The smoke check's webhook was accepted too, and its event is in the stream.
    result.accepted = match args.driver {
        Driver::Builtin => result.accepted + 1,
        Driver::Wrk => processed,
    };
    eprintln!("{NAME}: {processed} rows marked processed in PostgreSQL");
    // The seed publishes before it answers, so the stream is complete by now; the wait is
    // the same bounded one as for the gateway.
    let nats_url = args.nats_url.clone();
    let stream = stream.to_owned();
    super::check_delivery(NAME, result.accepted, || stream_count(&nats_url, &stream)).await;
    Ok(result)
}

/// The comparator has to do the seed's work, not answer 200 to anything: one webhook
/// must be accepted, its repeat answered as a duplicate, and a bad signature refused.
async fn smoke_check(addr: SocketAddr) -> anyhow::Result<()> {
    let webhook = load_webhook(&format!("seed-smoke-{}", uuid::Uuid::new_v4().simple()));
    let mut forged = webhook.headers.clone();
    for (name, value) in &mut forged {
        if name == "x-shopify-hmac-sha256" {
            *value = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into();
        }
    }
    let checks = [
        ("a new webhook", &webhook.headers, 200, "accepted"),
        ("its repeat", &webhook.headers, 200, "duplicate"),
        ("a forged signature", &forged, 401, "error"),
    ];
    for (what, headers, want_status, want_word) in checks {
        let mut request = hyper::Request::builder()
            .method("POST")
            .uri(&webhook.path)
            .header("host", "127.0.0.1");
        for (name, value) in headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let request = request.body(Full::new(Bytes::from(webhook.body.clone())))?;
        let (status, body) = send(addr, request).await?;
        let word = format!("\"{want_word}\"");
        if status != want_status || !body.contains(&word) {
            bail!("seed stack answered {what} with {status} {body}, not {want_status} {word}");
        }
    }
    Ok(())
}

async fn send(
    addr: SocketAddr,
    request: hyper::Request<Full<Bytes>>,
) -> anyhow::Result<(u16, String)> {
    let mut sender = connect(addr).await?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

async fn processed_rows(args: &Args, schema: &str) -> anyhow::Result<u64> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&args.database_url).await?;
    let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM \"{schema}\".webhook_entries WHERE status = 'processed'"
    )))
    .fetch_one(&mut conn)
    .await?;
    Ok(count as u64)
}

fn handled_per_worker(ready_dir: &Path) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(ready_dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| entry.path().extension().is_some_and(|e| e == "handled"))
        .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
        .filter_map(|count| count.trim().parse().ok())
        .collect()
}

/// The uvicorn supervisor and its workers, in a process group of their own so that one
/// signal reaches all of them (the workers are its children, not ours).
struct Server {
    child: tokio::process::Child,
    pgid: u32,
    addr: SocketAddr,
    stopped: bool,
}

impl Server {
    async fn stop(&mut self) {
        signal_group(self.pgid, "TERM");
        // uvicorn waits for open requests and runs each worker's shutdown; past this it is
        // stuck, and is killed.
        if tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .is_err()
        {
            eprintln!("{NAME}: did not stop on SIGTERM, killing it");
        }
        // The supervisor may be gone with a worker or uvicorn's resource tracker left.
        signal_group(self.pgid, "KILL");
        let _ = self.child.wait().await;
        self.stopped = true;
    }
}

impl Drop for Server {
    /// An error or a panic between start and stop must not leave Python serving.
    fn drop(&mut self) {
        if !self.stopped {
            signal_group(self.pgid, "KILL");
        }
    }
}

/// Signals the process group `pgid` (the group of the child we started, by its id).
fn signal_group(pgid: u32, signal: &str) {
    let _ = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(format!("-{pgid}"))
        .stderr(Stdio::null())
        .status();
}

/// Starts uvicorn on a free loopback port and waits until every worker is up. The port
/// is found by binding port 0 and letting it go, so another process can take it in
/// between: then uvicorn exits at once, and another port is tried.
async fn start(
    python: &Path,
    app_dir: &Path,
    ready_dir: &Path,
    env: &[(&str, String)],
    workers: usize,
) -> anyhow::Result<Server> {
    let mut last_error = None;
    for _ in 0..3 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log_path = app_dir.join(format!("uvicorn-{port}.log"));
        let log = std::fs::File::create(&log_path)?;
        let mut command = tokio::process::Command::new(python);
        command
            .args(["-m", "uvicorn", "app:app", "--app-dir"])
            .arg(app_dir)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--workers", &workers.to_string()])
            // The well-tuned build: libuv's loop, the C HTTP parser, no line per request.
            .args(["--loop", "uvloop", "--http", "httptools", "--no-access-log"])
            .args(["--log-level", "warning"])
            .args(["--timeout-graceful-shutdown", "10"])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        let child = command.spawn().context("start the seed stack (uvicorn)")?;
        let pgid = child.id().context("the seed stack exited at once")?;
        let mut server = Server {
            child,
            pgid,
            addr,
            stopped: false,
        };
        match wait_ready(&mut server, ready_dir, workers).await {
            Ok(()) => return Ok(server),
            Err(error) => {
                server.stop().await;
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                let tail = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
                if !log.contains("address already in use") {
                    bail!("{error}; uvicorn's log:\n{tail}");
                }
                last_error = Some(error);
            }
        }
    }
    Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no free port")))
}

/// uvicorn listens before its workers have run their startup (pools, schema, stream),
/// and one worker up is not enough: the other's share of the load would wait in the
/// backlog. Each worker leaves a file in `ready_dir` when its startup is done.
async fn wait_ready(server: &mut Server, ready_dir: &Path, workers: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Some(status) = server.child.try_wait()? {
            bail!("the seed stack exited during startup ({status})");
        }
        let up = std::fs::read_dir(ready_dir).map_or(0, |entries| entries.count());
        if up >= workers {
            let request = hyper::Request::get("/api/v1/health/ready")
                .header("host", "127.0.0.1")
                .body(Full::new(Bytes::new()))?;
            if let Ok((200, _)) = send(server.addr, request).await {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the seed stack was not ready within 60 s")
}
