//! Starts a gateway in-process on port 0 with its own storage (SQLite file or a fresh
//! PostgreSQL schema), dedupe prefix and NATS stream, so tests run in parallel.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hookgate::app::Gateway;
use hookgate::client::{HttpClient, Reply};
use hookgate::config::{CliOverrides, Config};
use hookgate::sample::{self, SignedWebhook};

pub const SHOPIFY_SECRET: &str = "shpss_test_4f1d2c3b5a6978";
pub const STRIPE_SECRET: &str = "whsec_test_9a8b7c6d5e4f";
pub const ADMIN_TOKEN: &str = "admin-token-for-tests-3141592";

pub use hookgate_test_services::{nats_url, postgres_url, redis_url, services};

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// Where the gateway under test keeps things.
#[derive(Clone, Debug)]
pub enum Backend {
    /// SQLite, in-memory dedupe, JSON-lines file: the embedded defaults.
    Embedded,
    /// PostgreSQL (a fresh schema), Redis, NATS JetStream (a fresh stream).
    Production,
}

#[derive(Clone, Debug)]
pub struct Options {
    pub backend: Backend,
    /// Extra TOML appended to the generated config (more sources, limits...).
    pub extra: String,
    /// Top-level keys (placed before any table).
    pub top: String,
    /// More keys of the `[bus]` table (breakers, retry budget, `create_stream`...).
    pub bus: String,
    /// More keys of the `[storage]` table.
    pub storage: String,
    /// More keys of the `[plugins]` table (sandbox limits...).
    pub plugins: String,
    pub redis_url: Option<String>,
    pub nats_url: Option<String>,
    pub storage_url: Option<String>,
    /// Reuse this state (storage, stream...) of an earlier harness: a restart.
    pub reuse: Option<Names>,
    /// Reload on changes of the config file and plugin directory (`plugins.watch`).
    pub watch: bool,
    /// Components copied into the plugin directory before the gateway starts, as ops
    /// install one.
    pub plugin_files: Vec<PathBuf>,
}

impl Options {
    pub fn new(backend: Backend) -> Self {
        Self {
            backend,
            extra: String::new(),
            top: String::new(),
            bus: String::new(),
            storage: String::new(),
            plugins: String::new(),
            redis_url: None,
            nats_url: None,
            storage_url: None,
            reuse: None,
            watch: true,
            plugin_files: Vec::new(),
        }
    }
}

/// The names that make one test's state its own.
#[derive(Clone, Debug)]
pub struct Names {
    pub dir: PathBuf,
    pub schema: String,
    pub stream: String,
    pub prefix: String,
}

pub struct Harness {
    pub gateway: Option<Gateway>,
    /// The dedupe cache's key namespace, derived from this test's storage.
    pub dedupe_namespace: String,
    pub base: String,
    pub client: HttpClient,
    pub names: Names,
    pub options: Options,
    _tempdir: Option<tempfile::TempDir>,
}

impl Harness {
    pub async fn start(options: Options) -> Self {
        let (tempdir, names) = match &options.reuse {
            Some(names) => (None, names.clone()),
            None => {
                let tempdir = tempfile::tempdir().expect("temp dir");
                let names = Names {
                    dir: tempdir.path().to_path_buf(),
                    schema: unique("t_"),
                    stream: unique("T").to_uppercase(),
                    prefix: unique("hg"),
                };
                (Some(tempdir), names)
            }
        };
        // Created before start so that the gateway watches it.
        std::fs::create_dir_all(names.dir.join("plugins.d")).expect("plugin dir");
        for file in &options.plugin_files {
            let name = file.file_name().expect("a plugin file name");
            std::fs::copy(file, names.dir.join("plugins.d").join(name))
                .unwrap_or_else(|e| panic!("cannot install {}: {e}", file.display()));
        }
        let config = config_for(&options, &names);
        let dedupe_namespace = config.dedupe_namespace();
        let path = config_path(&names);
        // A reload reads the file again, with the same empty environment.
        let loader: hookgate::reload::ConfigLoader = std::sync::Arc::new(move || {
            Config::load(Some(&path), &|_: &str| None, &CliOverrides::default())
        });
        let gateway = Gateway::start_with(&config, loader)
            .await
            .unwrap_or_else(|e| panic!("gateway did not start: {e:#}"));
        let base = format!("http://{}", gateway.local_addr);
        Self {
            gateway: Some(gateway),
            dedupe_namespace,
            base,
            client: HttpClient::new(),
            names,
            options,
            _tempdir: tempdir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn post(&self, webhook: &SignedWebhook) -> Reply {
        self.client
            .post_webhook(&self.base, webhook)
            .await
            .expect("request")
    }

    pub async fn admin_get(&self, path: &str) -> Reply {
        self.client
            .get(
                &self.url(path),
                &[("authorization".into(), format!("Bearer {ADMIN_TOKEN}"))],
            )
            .await
            .expect("request")
    }

    pub async fn admin_post(&self, path: &str) -> Reply {
        self.client
            .send(
                http::Method::POST,
                &self.url(path),
                &[("authorization".into(), format!("Bearer {ADMIN_TOKEN}"))],
                Vec::new(),
            )
            .await
            .expect("request")
    }

    /// Writes the config file again from `options` (the gateway reads it on reload).
    pub fn rewrite_config(&mut self, options: Options) {
        write_config(&options, &self.names);
        self.options = options;
    }

    /// The plugin directory the config names (not created).
    pub fn plugin_dir(&self) -> PathBuf {
        self.names.dir.join("plugins.d")
    }

    pub fn events_file(&self) -> PathBuf {
        self.names.dir.join("events.jsonl")
    }

    /// Stops the gateway (graceful), keeping its state for a restart.
    pub async fn stop(&mut self) {
        if let Some(gateway) = self.gateway.take() {
            gateway.stop().await;
        }
    }

    /// Drops the PostgreSQL schema, the NATS stream and the Redis keys of this test.
    pub async fn cleanup(mut self) {
        self.stop().await;
        if let Backend::Production = self.options.backend {
            drop_schema(&self.names.schema).await;
            delete_stream(&self.names.stream).await;
            delete_keys(&format!("hookgate:{}:*", self.dedupe_namespace)).await;
        }
    }
}

pub fn config_path(names: &Names) -> PathBuf {
    names.dir.join("hookgate.toml")
}

pub fn config_for(options: &Options, names: &Names) -> Config {
    let path = write_config(options, names);
    Config::load(Some(&path), &|_: &str| None, &CliOverrides::default())
        .unwrap_or_else(|e| panic!("test config rejected: {e}"))
}

fn write_config(options: &Options, names: &Names) -> PathBuf {
    let dir = names.dir.display();
    let (storage, dedupe, bus) = match options.backend {
        Backend::Embedded => (
            format!("sqlite://{dir}/hookgate.db"),
            "memory://".to_owned(),
            format!("file://{dir}/events.jsonl"),
        ),
        Backend::Production => (postgres_url(), redis_url(), nats_url()),
    };
    let storage = options.storage_url.clone().unwrap_or(storage);
    let dedupe = options.redis_url.clone().unwrap_or(dedupe);
    let bus = options.nats_url.clone().unwrap_or(bus);
    let text = format!(
        r#"
listen = "127.0.0.1:0"
admin_token = "{ADMIN_TOKEN}"
{top}

[storage]
url = "{storage}"
schema = "{schema}"
{storage_extra}

[dedupe]
url = "{dedupe}"

[bus]
url = "{bus}"
stream = "{stream}"
subject_prefix = "{prefix}"
{bus_extra}

[plugins]
dir = "{dir}/plugins.d"
cache_dir = "{cache}"
watch = {watch}
{plugins_extra}

[sources.shopify]
secrets = ["{SHOPIFY_SECRET}"]

[sources.stripe]
secrets = ["{STRIPE_SECRET}"]

{extra}
"#,
        top = options.top,
        schema = names.schema,
        stream = names.stream,
        prefix = names.prefix,
        cache = plugin_cache_dir().display(),
        extra = options.extra,
        watch = options.watch,
        bus_extra = options.bus,
        storage_extra = options.storage,
        plugins_extra = options.plugins,
    );
    let path = config_path(names);
    // Written aside and renamed over, as an operator's deploy would: the watcher must never
    // read it half-written.
    let partial = names.dir.join("hookgate.toml.partial");
    std::fs::write(&partial, text).expect("write config");
    std::fs::rename(&partial, &path).expect("rename config");
    path
}

/// Shared across tests so each compiles a plugin once per machine, not once per test.
pub fn plugin_cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache")
}

/// The directory where the build put the test plugins (chaos, partial).
pub fn wasm_dir() -> PathBuf {
    PathBuf::from(env!("HOOKGATE_WASM_DIR"))
}

pub fn shopify_order(event_id: &str) -> SignedWebhook {
    sample::shopify(
        SHOPIFY_SECRET,
        "orders/create",
        "example-shop.myshopify.com",
        event_id,
        sample::SHOPIFY_ORDER.as_bytes(),
    )
}

pub fn stripe_payment(event_id: &str) -> SignedWebhook {
    let now = chrono::Utc::now().timestamp();
    sample::stripe(STRIPE_SECRET, now, &sample::stripe_event(event_id, now))
}

/// Polls `check` until it returns Some, for at most `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The complete lines of a JSON-lines file: a line still being appended (no newline yet)
/// is left for the next read, as any tailing consumer would.
pub fn read_lines(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is JSON"))
        .collect()
}

async fn nats() -> async_nats::jetstream::Context {
    let client = async_nats::connect(nats_url())
        .await
        .unwrap_or_else(|e| panic!("NATS at {} is unreachable: {e}", nats_url()));
    async_nats::jetstream::new(client)
}

/// A message read back from JetStream.
pub struct Message {
    pub subject: String,
    pub msg_id: Option<String>,
    pub payload: bytes::Bytes,
}

impl Message {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).expect("JSON envelope")
    }
}

pub async fn stream_count(stream: &str) -> u64 {
    messages_in(&nats().await, stream).await
}

/// Messages in `stream`; 0 when there is no such stream.
async fn messages_in(js: &async_nats::jetstream::Context, stream: &str) -> u64 {
    match js.get_stream(stream).await {
        Ok(mut stream) => stream.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    }
}

/// Waits until the stream holds `count` messages (at most `limit`), then reads them all.
pub async fn stream_messages(stream: &str, count: u64, limit: Duration) -> Vec<Message> {
    eventually(limit, || async {
        (stream_count(stream).await >= count).then_some(())
    })
    .await;
    let js = nats().await;
    let Ok(stream) = js.get_stream(stream).await else {
        return Vec::new();
    };
    let mut messages = Vec::new();
    let mut seq = 1;
    while let Ok(raw) = stream.get_raw_message(seq).await {
        let msg_id = raw
            .headers
            .get("Nats-Msg-Id")
            .map(|v| v.as_str().to_owned());
        messages.push(Message {
            subject: raw.subject.to_string(),
            msg_id,
            payload: raw.payload,
        });
        seq += 1;
    }
    messages
}

pub async fn delete_stream(stream: &str) {
    let _ = nats().await.delete_stream(stream).await;
}

pub async fn drop_schema(schema: &str) {
    use sqlx::Connection;
    if let Ok(mut conn) = sqlx::PgConnection::connect(&postgres_url()).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
        )))
        .execute(&mut conn)
        .await;
    }
}

/// Deletes the keys of the test run's Redis that match `pattern`.
pub async fn delete_keys(pattern: &str) {
    use fred::prelude::{ClientLike, KeysInterface};
    use futures::TryStreamExt;
    let Ok(config) = fred::prelude::Config::from_url(&redis_url()) else {
        return;
    };
    let Ok(client) = fred::prelude::Builder::from_config(config).build() else {
        return;
    };
    if client.init().await.is_err() {
        return;
    }
    let mut pages = client.scan_buffered(pattern, Some(500), None);
    let mut keys: Vec<fred::types::Key> = Vec::new();
    while let Ok(Some(key)) = pages.try_next().await {
        keys.push(key);
    }
    if !keys.is_empty() {
        let _: Result<i64, _> = client.del(keys).await;
    }
    let _ = client.quit().await;
}

/// A nats-server of the test's own on a free loopback port, killed by PID.
pub struct OwnNats {
    pub port: u16,
    pub store_dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
    listener.local_addr().expect("addr").port()
}

impl OwnNats {
    /// A port for a server not started yet: `url()` refuses connections until `start`.
    pub fn reserve() -> Self {
        Self {
            port: free_port(),
            store_dir: tempfile::tempdir().expect("dir"),
            child: None,
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub async fn start(&mut self) {
        self.start_with_config("").await;
    }

    /// Starts it with `config` (nats-server configuration text: `max_payload: 8192`...)
    /// besides the address, port and JetStream store.
    pub async fn start_with_config(&mut self, config: &str) {
        let binary = hookgate_test_services::private::find_binary("nats-server")
            .expect("nats-server must be installed for the fault tests");
        let mut command = std::process::Command::new(binary);
        if !config.is_empty() {
            let file = self.store_dir.path().join("nats-server.conf");
            std::fs::write(&file, config).expect("write the nats-server config");
            command.arg("-c").arg(file);
        }
        let child = command
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.store_dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let url = self.url();
        eventually(Duration::from_secs(10), || async {
            async_nats::connect(&url).await.ok().map(|_| ())
        })
        .await
        .expect("own nats-server accepts connections");
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A clean stop (SIGTERM, by its PID): what JetStream acknowledged is on disk.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            crate::child::stop_child(child, "TERM", Duration::from_secs(20));
        }
    }

    /// Messages in `stream` on this server; 0 while it is down.
    pub async fn count(&self, stream: &str) -> u64 {
        let Ok(client) = async_nats::connect(self.url()).await else {
            return 0;
        };
        messages_in(&async_nats::jetstream::new(client), stream).await
    }
}

impl Drop for OwnNats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP relay to a real server that the test can cut and restore, to take PostgreSQL or
/// Redis away from the gateway without touching the shared server.
pub struct Cuttable {
    pub port: u16,
    cut: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl Cuttable {
    pub async fn start(target: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (cut, _) = tokio::sync::watch::channel(false);
        let cut = std::sync::Arc::new(cut);
        let target = target.to_owned();
        let state = cut.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if *state.borrow() {
                    continue;
                }
                let mut watch = state.subscribe();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = watch.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Self { port, cut, task }
    }

    /// Where clients reach the server through the relay.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    pub fn restore(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for Cuttable {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A redis-server of the test's own on a free loopback port, killed by PID. Nothing is
/// persisted: a restart comes back empty, as a cache may.
pub struct OwnRedis {
    pub port: u16,
    child: Option<std::process::Child>,
}

impl OwnRedis {
    pub async fn start() -> Self {
        let mut redis = Self {
            port: free_port(),
            child: None,
        };
        redis.restart().await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again) on its port.
    pub async fn restart(&mut self) {
        let binary = hookgate_test_services::private::find_binary("redis-server")
            .expect("redis-server must be installed for the fault tests");
        let child = std::process::Command::new(binary)
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let address = format!("127.0.0.1:{}", self.port);
        eventually(Duration::from_secs(10), || async {
            hookgate_test_services::private::ready(hookgate_test_services::Kind::Redis, &address)
                .then_some(())
        })
        .await
        .expect("own redis-server answers PING");
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A PostgreSQL server of the test's own (initdb in a temporary directory, run as the
/// `postgres` user when this is root), stopped and started by its PID.
pub struct OwnPostgres {
    pub port: u16,
    data: PathBuf,
    home: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl OwnPostgres {
    pub async fn start() -> Self {
        use hookgate_test_services::private::{
            initdb_command, postgres_bin_dir, unprivileged_user,
        };
        let bin = postgres_bin_dir().expect("PostgreSQL (initdb) must be installed");
        let user = unprivileged_user().unwrap_or_else(|e| panic!("{e}"));
        let home = tempfile::tempdir().expect("temp dir");
        if let Some(user) = &user {
            std::os::unix::fs::chown(home.path(), Some(user.uid), Some(user.gid))
                .expect("hand the data directory to the postgres user");
        }
        let data = home.path().join("data");
        let mut initdb = initdb_command(&bin, &data, home.path(), user.as_ref());
        let output = tokio::task::spawn_blocking(move || initdb.output())
            .await
            .expect("initdb task")
            .expect("run initdb");
        assert!(
            output.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let mut postgres = Self {
            port: free_port(),
            data,
            home,
            child: None,
        };
        postgres.restart().await;
        postgres
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server (again) on its data and port, and waits until it accepts
    /// connections.
    pub async fn restart(&mut self) {
        use hookgate_test_services::private::{
            postgres_bin_dir, postgres_command, unprivileged_user,
        };
        let bin = postgres_bin_dir().expect("PostgreSQL must be installed");
        let user = unprivileged_user().unwrap_or_else(|e| panic!("{e}"));
        let log = std::fs::File::create(self.home.path().join("postgres.log")).expect("log");
        let mut command =
            postgres_command(&bin, &self.data, self.home.path(), self.port, user.as_ref());
        command
            // No fsync: a stopped process, not a lost machine. Commits stay synchronous,
            // so an acknowledged commit is in the server's files when it stops.
            .args(["-c", "fsync=off", "-c", "max_connections=100"])
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        self.child = Some(command.spawn().expect("start postgres"));
        let address = format!("127.0.0.1:{}", self.port);
        let ready = eventually(Duration::from_secs(30), || {
            let address = address.clone();
            async move {
                tokio::task::spawn_blocking(move || {
                    hookgate_test_services::private::ready(
                        hookgate_test_services::Kind::Postgres,
                        &address,
                    )
                })
                .await
                .ok()
                .filter(|ready| *ready)
                .map(|_| ())
            }
        })
        .await;
        assert!(
            ready.is_some(),
            "own PostgreSQL did not start:\n{}",
            std::fs::read_to_string(self.home.path().join("postgres.log")).unwrap_or_default()
        );
    }

    /// A fast shutdown (SIGINT to the postmaster, by its PID): sessions are cut, the server
    /// stops and refuses connections until `restart`.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            crate::child::stop_child(child, "INT", Duration::from_secs(20));
        }
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}
