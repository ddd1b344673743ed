//! The real `hookgate` binary as a child process (so a test can SIGKILL it), a bounded
//! concurrent load of signed webhooks, and what the crash tests read back: the stored
//! entries and events (SQL) and the stream's message ids.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hookgate::client::HttpClient;
use hookgate::sample::SignedWebhook;

use crate::support::*;

/// How long a child may take from spawn to ready (a debug build compiling plugins on a
/// busy two-core machine is slow).
const READY_WITHIN: Duration = Duration::from_secs(90);

/// A `hookgate serve` child on a fixed loopback port, killed by its PID on drop.
pub struct ChildGateway {
    child: Option<Child>,
    /// Prepended to the command line (`nsenter -t PID -m --`), to run it elsewhere.
    wrapper: Vec<OsString>,
    config: PathBuf,
    pub port: u16,
    pub base: String,
    pub log: PathBuf,
}

impl ChildGateway {
    /// Starts the binary on `config` (listening on a free port) and waits until it is ready.
    pub async fn start(config: &Path, log: &Path) -> Self {
        Self::start_wrapped(&[], config, log).await
    }

    pub async fn start_wrapped(wrapper: &[&str], config: &Path, log: &Path) -> Self {
        let port = free_port();
        let mut gateway = Self {
            child: None,
            wrapper: wrapper.iter().map(OsString::from).collect(),
            config: config.to_path_buf(),
            port,
            base: format!("http://127.0.0.1:{port}"),
            log: log.to_path_buf(),
        };
        gateway.spawn().await;
        gateway
    }

    async fn spawn(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the child's log");
        let binary = env!("CARGO_BIN_EXE_hookgate");
        let mut command = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        // The SPEC's gateway needs no environment; an inherited DATABASE_URL or NATS_URL
        // would override the test's config.
        command
            .env_clear()
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        if let Some(path) = std::env::var_os("PATH")
            && !self.wrapper.is_empty()
        {
            // Only the wrapper (nsenter) is looked up; the gateway itself ignores PATH.
            command.env("PATH", path);
        }
        self.child = Some(command.spawn().expect("start the hookgate binary"));
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        let client = HttpClient::new();
        let url = format!("{}/api/v1/health/ready", self.base);
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "hookgate exited at start ({status}):\n{}",
                    tail(&self.log, 30)
                );
            }
            let ready = tokio::time::timeout(Duration::from_secs(2), client.get(&url, &[])).await;
            if let Ok(Ok(reply)) = ready
                && reply.status == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "hookgate was not ready within {READY_WITHIN:?}:\n{}",
                tail(&self.log, 30)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL, by the child's own PID: no drain, no last flush.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the graceful stop (SIGKILL after `limit`).
    pub fn terminate(&mut self, limit: Duration) {
        if let Some(child) = self.child.take() {
            stop_child(child, "TERM", limit);
        }
    }

    /// The same binary on the same config and port, after a kill.
    pub async fn restart(&mut self) {
        self.spawn().await;
    }
}

impl Drop for ChildGateway {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends `signal_name` (`TERM`, `INT`...) to a process this test started, by its PID, and
/// waits for it to exit; SIGKILL if it has not after `limit`.
pub fn stop_child(mut child: std::process::Child, signal_name: &str, limit: Duration) {
    let _ = Command::new("kill")
        .arg(format!("-{signal_name}"))
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Where a test's webhooks end up: a PostgreSQL schema and a JetStream stream.
#[derive(Clone, Debug)]
pub struct Ledger {
    pub storage_url: String,
    pub schema: String,
    pub nats_url: String,
    pub stream: String,
}

impl Ledger {
    /// The harness's: its own schema and stream, on the servers its options name.
    pub fn of(harness: &Harness) -> Self {
        Self {
            storage_url: harness
                .options
                .storage_url
                .clone()
                .unwrap_or_else(postgres_url),
            schema: harness.names.schema.clone(),
            nats_url: harness.options.nats_url.clone().unwrap_or_else(nats_url),
            stream: harness.names.stream.clone(),
        }
    }

    /// The stored entries: idempotency key -> entry id.
    pub async fn entries(&self) -> HashMap<String, String> {
        rows::<(String, String)>(
            &self.storage_url,
            &format!(
                "SELECT idempotency_key, id::text FROM \"{}\".webhook_entry_records",
                self.schema
            ),
        )
        .await
        .into_iter()
        .collect()
    }

    /// The stored events: (event id, entry id, status).
    pub async fn events(&self) -> Vec<(String, String, String)> {
        rows(
            &self.storage_url,
            &format!(
                "SELECT id, entry_id::text, status FROM \"{}\".webhook_events",
                self.schema
            ),
        )
        .await
    }

    /// Waits (at most `limit`) until no stored event is pending.
    pub async fn all_published(&self, limit: Duration) -> bool {
        eventually(limit, || async {
            let events = self.events().await;
            (!events.is_empty() && events.iter().all(|(_, _, status)| status == "published"))
                .then_some(())
        })
        .await
        .is_some()
    }

    /// The number of messages in the stream, and how many carry each message id.
    pub async fn published_ids(&self) -> (u64, HashMap<String, usize>) {
        let raw = own_stream_messages(&self.nats_url, &self.stream).await;
        let mut ids = HashMap::new();
        for id in &raw {
            *ids.entry(id.clone()).or_insert(0) += 1;
        }
        (raw.len() as u64, ids)
    }
}

/// A test's own schema, stream and dedupe keys on the shared servers, removed when it is
/// dropped, also when the test panics.
pub struct Scratch {
    pub names: Names,
    pub ledger: Ledger,
    pub dedupe_namespace: String,
    pub dir: tempfile::TempDir,
}

impl Scratch {
    /// A production config (PostgreSQL, Redis, NATS) in a fresh temporary directory.
    pub fn production(options: Options) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let names = Names {
            dir: dir.path().to_path_buf(),
            schema: unique("t_"),
            stream: unique("T").to_uppercase(),
            prefix: unique("hg"),
        };
        std::fs::create_dir_all(names.dir.join("plugins.d")).expect("plugin dir");
        let dedupe_namespace = write_child_config(&options, &names, &config_path(&names));
        Self {
            dedupe_namespace,
            ledger: Ledger {
                storage_url: options.storage_url.clone().unwrap_or_else(postgres_url),
                schema: names.schema.clone(),
                nats_url: options.nats_url.clone().unwrap_or_else(nats_url),
                stream: names.stream.clone(),
            },
            names,
            dir,
        }
    }

    /// The config file of the instances that share this scratch state.
    pub fn config(&self) -> PathBuf {
        config_path(&self.names)
    }

    /// Another config file on the same state, with other `options` (another bus URL...).
    pub fn variant(&self, name: &str, options: &Options) -> PathBuf {
        let names = Names {
            dir: self.dir.path().join(name),
            ..self.names.clone()
        };
        std::fs::create_dir_all(names.dir.join("plugins.d")).expect("plugin dir");
        let path = config_path(&names);
        write_child_config(options, &names, &path);
        path
    }

    pub fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }
}

/// Writes the config a child runs on; returns its dedupe namespace.
fn write_child_config(options: &Options, names: &Names, path: &Path) -> String {
    let mut options = options.clone();
    // A child never reloads: nothing to watch.
    options.watch = false;
    let config = config_for(&options, names);
    assert!(path.is_file(), "config written to {}", path.display());
    config.dedupe_namespace()
}

impl Drop for Scratch {
    fn drop(&mut self) {
        sweep(
            self.ledger.clone(),
            format!("hookgate:{}:*", self.dedupe_namespace),
        );
    }
}

/// Removes a harness's schema, stream and dedupe keys when dropped, also on a panic.
pub struct Sweeper {
    ledger: Ledger,
    keys: String,
}

impl Sweeper {
    pub fn of(harness: &Harness) -> Self {
        Self {
            ledger: Ledger::of(harness),
            keys: format!("hookgate:{}:*", harness.dedupe_namespace),
        }
    }
}

impl Drop for Sweeper {
    fn drop(&mut self) {
        sweep(self.ledger.clone(), self.keys.clone());
    }
}

fn sweep(ledger: Ledger, keys: String) {
    {
        let Ledger {
            storage_url,
            schema,
            nats_url,
            stream,
        } = ledger;
        // Drop may run inside the test's runtime (or while it unwinds): a runtime of its
        // own, on a thread of its own.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let cleanup = async {
                    drop_schema_at(&storage_url, &schema).await;
                    if let Ok(client) = async_nats::connect(&nats_url).await {
                        let _ = async_nats::jetstream::new(client)
                            .delete_stream(&stream)
                            .await;
                    }
                    delete_keys(&keys).await;
                };
                let _ = tokio::time::timeout(Duration::from_secs(20), cleanup).await;
            });
        });
        let _ = cleanup.join();
    }
}

async fn drop_schema_at(url: &str, schema: &str) {
    use sqlx::Connection;
    if let Ok(Ok(mut conn)) =
        tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(url)).await
    {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
        )))
        .execute(&mut conn)
        .await;
    }
}

async fn rows<T>(url: &str, sql: &str) -> Vec<T>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url} is unreachable: {e}"));
    let rows = sqlx::query_as::<_, T>(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_all(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let _ = conn.close().await;
    rows
}

/// The `Nats-Msg-Id` of every message in `stream`, in order.
pub async fn own_stream_messages(url: &str, stream: &str) -> Vec<String> {
    let client = async_nats::connect(url)
        .await
        .unwrap_or_else(|e| panic!("NATS at {url} is unreachable: {e}"));
    let js = async_nats::jetstream::new(client);
    let Ok(mut stream) = js.get_stream(stream).await else {
        return Vec::new();
    };
    let info = stream.info().await.expect("stream info");
    let (first, last) = (info.state.first_sequence, info.state.last_sequence);
    let mut ids = Vec::new();
    for seq in first..=last {
        if let Ok(raw) = stream.get_raw_message(seq).await {
            ids.push(
                raw.headers
                    .get("Nats-Msg-Id")
                    .map(|v| v.as_str().to_owned())
                    .unwrap_or_default(),
            );
        }
    }
    ids
}

/// What became of one webhook of a load.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Never sent: the load stopped first.
    Unsent,
    Answered {
        status: u16,
        body: serde_json::Value,
        /// The index of the target that answered.
        target: usize,
    },
    /// Sent (or being sent) when the connection failed or the time ran out.
    NoAnswer(String),
}

impl Outcome {
    /// The entry id of a 2xx answer.
    pub fn acknowledged(&self) -> Option<&str> {
        match self {
            Outcome::Answered { status, body, .. } if (200..300).contains(status) => {
                body["id"].as_str()
            }
            _ => None,
        }
    }
}

/// Concurrent senders over a fixed list of webhooks, bounded in count (the list) and time.
pub struct Load {
    pub targets: Vec<String>,
    pub concurrency: usize,
    pub limit: Duration,
    pub request_timeout: Duration,
    /// Each sender waits this long between its requests.
    pub pace: Duration,
    /// A request without an answer is sent to the next target (a load balancer's retry).
    pub failover: bool,
}

pub struct Running {
    /// 2xx answers so far.
    pub acked: Arc<AtomicUsize>,
    /// Answers of any status so far.
    pub answered: Arc<AtomicUsize>,
    /// The longest wait for an answer so far, in milliseconds.
    pub slowest_ms: Arc<std::sync::atomic::AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Outcome>>,
}

impl Load {
    pub fn new(targets: Vec<String>, concurrency: usize) -> Self {
        Self {
            targets,
            concurrency,
            limit: Duration::from_secs(60),
            request_timeout: Duration::from_secs(15),
            pace: Duration::ZERO,
            failover: false,
        }
    }

    pub fn start(self, webhooks: Arc<Vec<SignedWebhook>>) -> Running {
        let acked = Arc::new(AtomicUsize::new(0));
        let answered = Arc::new(AtomicUsize::new(0));
        let slowest_ms = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let outcomes = Arc::new(std::sync::Mutex::new(vec![Outcome::Unsent; webhooks.len()]));
        let next = Arc::new(AtomicUsize::new(0));
        let deadline = Instant::now() + self.limit;
        let load = Arc::new(self);
        let client = HttpClient::new();
        let mut senders = Vec::new();
        for _ in 0..load.concurrency {
            let (load, webhooks, outcomes, next) = (
                load.clone(),
                webhooks.clone(),
                outcomes.clone(),
                next.clone(),
            );
            let (acked, answered, stop, client) = (
                acked.clone(),
                answered.clone(),
                stop.clone(),
                client.clone(),
            );
            let slowest_ms = slowest_ms.clone();
            senders.push(tokio::spawn(async move {
                loop {
                    if stop.load(Ordering::Acquire) || Instant::now() > deadline {
                        return;
                    }
                    let n = next.fetch_add(1, Ordering::AcqRel);
                    let Some(webhook) = webhooks.get(n) else {
                        return;
                    };
                    let tries = if load.failover { load.targets.len() } else { 1 };
                    let mut outcome = Outcome::Unsent;
                    for attempt in 0..tries {
                        let target = (n + attempt) % load.targets.len();
                        let began = Instant::now();
                        let sent = tokio::time::timeout(
                            load.request_timeout,
                            client.post_webhook(&load.targets[target], webhook),
                        )
                        .await;
                        let waited = u64::try_from(began.elapsed().as_millis()).unwrap_or(0);
                        slowest_ms.fetch_max(waited, Ordering::AcqRel);
                        outcome = match sent {
                            Ok(Ok(reply)) => Outcome::Answered {
                                status: reply.status,
                                body: reply.json(),
                                target,
                            },
                            Ok(Err(error)) => Outcome::NoAnswer(format!("{error:#}")),
                            Err(_) => Outcome::NoAnswer("timed out".into()),
                        };
                        if matches!(outcome, Outcome::Answered { .. }) {
                            break;
                        }
                    }
                    if let Outcome::Answered { status, .. } = &outcome {
                        answered.fetch_add(1, Ordering::AcqRel);
                        if (200..300).contains(status) {
                            acked.fetch_add(1, Ordering::AcqRel);
                        }
                    }
                    outcomes.lock().expect("outcomes")[n] = outcome;
                    if !load.pace.is_zero() {
                        tokio::time::sleep(load.pace).await;
                    }
                }
            }));
        }
        let task = tokio::spawn(async move {
            for sender in senders {
                sender.await.expect("sender");
            }
            outcomes.lock().expect("outcomes").clone()
        });
        Running {
            acked,
            answered,
            slowest_ms,
            stop,
            task,
        }
    }
}

impl Running {
    /// Waits until `count` webhooks were acknowledged; false after `limit`.
    pub async fn wait_acked(&self, count: usize, limit: Duration) -> bool {
        eventually(limit, || async {
            (self.acked.load(Ordering::Acquire) >= count).then_some(())
        })
        .await
        .is_some()
    }

    /// No sender takes another webhook; those in flight finish.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    pub async fn finish(self) -> Vec<Outcome> {
        self.task.await.expect("load")
    }
}

/// `count` distinct signed Shopify orders; their event ids start with `tag`.
pub fn orders(tag: &str, count: usize) -> Vec<(String, SignedWebhook)> {
    let run = uuid::Uuid::new_v4().simple().to_string();
    (0..count)
        .map(|n| {
            let event_id = format!("{tag}-{run}-{n}");
            let webhook = shopify_order(&event_id);
            (format!("orders/create:{event_id}"), webhook)
        })
        .collect()
}

/// Tallies of a load's outcomes, for the report and the assertions.
#[derive(Debug, Default)]
pub struct Tally {
    pub acked: usize,
    /// 2xx answers naming an entry stored earlier: a distinct webhook answered so was
    /// stored by an attempt that got no answer.
    pub duplicates: usize,
    pub by_status: std::collections::BTreeMap<u16, usize>,
    pub no_answer: usize,
    pub unsent: usize,
    /// The first failure without an answer, to tell a kill from a timeout.
    pub first_error: Option<String>,
}

impl Tally {
    pub fn of(outcomes: &[Outcome]) -> Self {
        let mut tally = Self::default();
        for outcome in outcomes {
            match outcome {
                Outcome::Unsent => tally.unsent += 1,
                Outcome::NoAnswer(error) => {
                    tally.no_answer += 1;
                    tally.first_error.get_or_insert_with(|| error.clone());
                }
                Outcome::Answered { status, body, .. } => {
                    *tally.by_status.entry(*status).or_insert(0) += 1;
                    if (200..300).contains(status) {
                        tally.acked += 1;
                    }
                    if body["status"] == "duplicate" {
                        tally.duplicates += 1;
                    }
                }
            }
        }
        tally
    }
}

/// The proof of the crash tests: every acknowledged webhook is stored under the id it
/// was answered with, and every stored event is in the stream exactly once (and nothing
/// else is). Returns (raw messages, distinct ids, stored events).
pub async fn assert_exactly_once(
    ledger: &Ledger,
    keys: &[String],
    outcomes: &[Outcome],
    limit: Duration,
) -> (u64, usize, usize) {
    let entries = ledger.entries().await;
    for (key, outcome) in keys.iter().zip(outcomes) {
        if let Some(id) = outcome.acknowledged() {
            assert_eq!(
                entries.get(key).map(String::as_str),
                Some(id),
                "acknowledged webhook {key} is stored under the id it was answered with"
            );
        }
    }
    assert!(
        ledger.all_published(limit).await,
        "every stored event is published within {limit:?}: {} still pending",
        ledger
            .events()
            .await
            .iter()
            .filter(|(_, _, s)| s != "published")
            .count()
    );
    let events = ledger.events().await;
    let stored: HashSet<&str> = events.iter().map(|(id, _, _)| id.as_str()).collect();
    let entry_ids: HashSet<&str> = entries.values().map(String::as_str).collect();
    for (_, entry, _) in &events {
        assert!(entry_ids.contains(entry.as_str()), "event of no entry");
    }
    // The relay records a publication after JetStream's ack: wait for the stream to hold
    // at least every stored id, then take one more look for late repeats.
    let deadline = Instant::now() + limit;
    loop {
        let (_, ids) = ledger.published_ids().await;
        let missing: Vec<&&str> = stored
            .iter()
            .filter(|id| !ids.contains_key(**id))
            .take(5)
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stored events missing from the stream after {limit:?}, e.g. {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (raw, ids) = ledger.published_ids().await;
    let twice: Vec<_> = ids.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(
        twice.is_empty(),
        "ids in the stream more than once: {twice:?}"
    );
    let foreign: Vec<_> = ids
        .keys()
        .filter(|id| !stored.contains(id.as_str()))
        .take(5)
        .collect();
    assert!(
        foreign.is_empty(),
        "messages of no stored event: {foreign:?}"
    );
    assert_eq!(ids.len(), stored.len(), "one message id per stored event");
    (raw, ids.len(), stored.len())
}
