//! Private PostgreSQL, Redis and NATS servers for one test run.
//!
//! A *set* of servers lives in `<target>/test-services/set-<id>/`: their data, their logs,
//! the `endpoints` they listen on and a `lease` file. Every test process that uses a set
//! holds a shared `flock` on its lease until it exits; the set's watchdog (`reaper.sh`,
//! detached) stops the servers and deletes the directory once the lease is free: two
//! seconds after, once the `cargo test` that ran the processes has exited, or after a grace
//! period while it still runs (`HOOKGATE_TEST_SERVICES_GRACE` seconds, default 120, long
//! enough to span the test binaries that need no server). `<target>/test-services/current` names the set
//! the next test process should join, and `<target>/test-services/lock` serialises finding,
//! starting and stopping sets.
//!
//! Binaries come from `PATH` (and the `sbin` directories; PostgreSQL's also from
//! `/usr/lib/postgresql/<N>/bin`). Where one is missing and this is Debian as root, the
//! package is installed with `apt-get`; otherwise the error names what to install.
//! PostgreSQL refuses to run as root, so as root it runs as the `postgres` user (or
//! `nobody`).

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::{Endpoint, Kind, Origin};

const REAPER: &str = include_str!("reaper.sh");
const DEFAULT_GRACE_SECONDS: u64 = 120;
const READY_WITHIN: Duration = Duration::from_secs(60);

/// The private servers of `kinds` for this test run: the run's set if it has them all and
/// they answer, else a new set. The process keeps a lease on it until it exits.
pub(crate) fn shared(kinds: &[Kind]) -> Result<Vec<(Kind, Endpoint)>, String> {
    let root = state_root();
    fs::create_dir_all(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    let lock = open_lock(&root)?;
    lock.lock()
        .map_err(|e| format!("cannot lock {}: {e}", root.display()))?;
    let set = match PrivateSet::current(&root) {
        Some(set) if set.covers(kinds) && set.alive() => set,
        _ => {
            let set = PrivateSet::start(&root, kinds, grace())?;
            fs::write(root.join("current"), set.id())
                .map_err(|e| format!("cannot record the set: {e}"))?;
            set
        }
    };
    // Held until the process exits: the watchdog stops the set only when no process does.
    std::mem::forget(set.lease()?);
    set.note_cargo_run();
    let endpoints = kinds
        .iter()
        .map(|kind| (*kind, set.endpoint(*kind).expect("covered").clone()))
        .collect();
    Ok(endpoints)
}

/// `<target>/test-services`, the target directory being the one holding the running test
/// executable (it carries cargo's `CACHEDIR.TAG`).
pub fn state_root() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let target = exe
        .ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../target"));
    target.join("test-services")
}

fn grace() -> u64 {
    std::env::var("HOOKGATE_TEST_SERVICES_GRACE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_GRACE_SECONDS)
}

fn open_lock(root: &Path) -> Result<File, String> {
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(root.join("lock"))
        .map_err(|e| format!("cannot open {}/lock: {e}", root.display()))
}

/// A shared lock on a set's lease: the set runs at least as long as it is held.
pub struct Lease(#[allow(dead_code)] File);

/// One set of private servers and its watchdog.
#[derive(Debug)]
pub struct PrivateSet {
    dir: PathBuf,
    endpoints: Vec<(Kind, Endpoint)>,
    reaper: u32,
}

/// A server process started for a set.
struct Started {
    kind: Kind,
    endpoint: Endpoint,
    child: Child,
    /// The signal that shuts it down cleanly.
    stop_signal: &'static str,
    /// Data kept outside the set's directory (PostgreSQL's, when its user cannot reach
    /// the target directory), deleted with the set.
    outside: Option<PathBuf>,
}

impl PrivateSet {
    /// Starts servers of `kinds` in a new set under `root`, with a watchdog that stops them
    /// `grace` seconds after the last lease is released. The caller should take a lease
    /// before the watchdog's first look (a second).
    pub fn start(root: &Path, kinds: &[Kind], grace: u64) -> Result<Self, String> {
        let kinds: BTreeSet<Kind> = kinds.iter().copied().collect();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let id = format!("set-{}-{nanos}", std::process::id());
        let dir = root.join(&id);
        fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        File::create(dir.join("lease")).map_err(|e| format!("cannot create the lease: {e}"))?;
        require_binaries(&kinds)?;

        let mut started: Vec<Started> = Vec::new();
        let outcome = kinds.iter().try_for_each(|kind| {
            started.push(start_server(*kind, &dir)?);
            Ok::<_, String>(())
        });
        let outcome = outcome.and_then(|()| {
            started
                .iter_mut()
                .try_for_each(|server| wait_ready(server, &dir))
        });
        if let Err(problem) = outcome {
            for server in &mut started {
                let _ = server.child.kill();
                let _ = server.child.wait();
                if let Some(outside) = &server.outside {
                    let _ = fs::remove_dir_all(outside);
                }
            }
            let _ = fs::remove_dir_all(&dir);
            return Err(problem);
        }

        let mut reaper = Command::new("sh");
        reaper
            .arg("-c")
            .arg(REAPER)
            .arg("hookgate-test-services-reaper")
            .arg(root)
            .arg(&dir)
            .arg(grace.to_string());
        for server in &started {
            reaper.arg(format!("{}:{}", server.child.id(), server.stop_signal));
        }
        reaper.arg("--");
        reaper.args(started.iter().filter_map(|s| s.outside.as_ref()));
        let reaper = reaper
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start the test servers' watchdog (sh): {e}"))?
            .id();

        let endpoints: Vec<(Kind, Endpoint)> = started
            .into_iter()
            .map(|server| (server.kind, server.endpoint))
            .collect();
        let mut record = format!("reaper {reaper}\n");
        for (kind, endpoint) in &endpoints {
            record.push_str(&format!("{} {}\n", kind.name(), endpoint.url));
        }
        fs::write(dir.join("endpoints"), record)
            .map_err(|e| format!("cannot write {}/endpoints: {e}", dir.display()))?;
        Ok(Self {
            dir,
            endpoints,
            reaper,
        })
    }

    /// The set `root/current` names, if its record is complete.
    fn current(root: &Path) -> Option<Self> {
        let id = fs::read_to_string(root.join("current")).ok()?;
        let dir = root.join(id.trim());
        let record = fs::read_to_string(dir.join("endpoints")).ok()?;
        let mut reaper = None;
        let mut endpoints = Vec::new();
        for line in record.lines() {
            let (name, value) = line.split_once(' ')?;
            if name == "reaper" {
                reaper = value.parse().ok();
            } else if let Some(kind) = Kind::ALL.into_iter().find(|k| k.name() == name) {
                endpoints.push((kind, Endpoint::new(value.to_owned(), Origin::Private).ok()?));
            }
        }
        Some(Self {
            dir,
            endpoints,
            reaper: reaper?,
        })
    }

    pub fn id(&self) -> String {
        self.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn endpoint(&self, kind: Kind) -> Option<&Endpoint> {
        self.endpoints
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, e)| e)
    }

    fn covers(&self, kinds: &[Kind]) -> bool {
        kinds.iter().all(|kind| self.endpoint(*kind).is_some())
    }

    /// Its watchdog runs and every server answers.
    fn alive(&self) -> bool {
        Path::new(&format!("/proc/{}", self.reaper)).exists()
            && self
                .endpoints
                .iter()
                .all(|(_, endpoint)| crate::answers(&endpoint.address))
    }

    /// Records the `cargo test` running this process, if it is one: while it runs, the
    /// watchdog keeps the set up between its test binaries for the full grace period.
    fn note_cargo_run(&self) {
        let parent = std::os::unix::process::parent_id();
        let comm = fs::read_to_string(format!("/proc/{parent}/comm")).unwrap_or_default();
        if comm.trim() == "cargo" {
            let runs = File::options()
                .create(true)
                .append(true)
                .open(self.dir.join("runs"));
            if let Ok(mut runs) = runs {
                let _ = writeln!(runs, "{parent}");
            }
        }
    }

    pub fn lease(&self) -> Result<Lease, String> {
        let file = File::open(self.dir.join("lease"))
            .map_err(|e| format!("cannot open {}/lease: {e}", self.dir.display()))?;
        file.lock_shared()
            .map_err(|e| format!("cannot lease {}: {e}", self.dir.display()))?;
        Ok(Lease(file))
    }
}

fn free_port() -> Result<u16, String> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free loopback port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

/// `dir/NAME.log`, as a child's standard output and error.
fn log_file(dir: &Path, name: &str) -> Result<(File, File), String> {
    let path = dir.join(format!("{name}.log"));
    let out = File::create(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    Ok((out, err))
}

fn start_server(kind: Kind, dir: &Path) -> Result<Started, String> {
    let port = free_port()?;
    let (out, err) = log_file(dir, kind.name())?;
    let mut outside = None;
    let (mut command, url, stop_signal) = match kind {
        Kind::Redis => {
            let data = dir.join("redis");
            fs::create_dir_all(&data).map_err(|e| e.to_string())?;
            let mut command = Command::new(find_binary("redis-server").expect("required"));
            command
                .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .arg("--dir")
                .arg(&data);
            (command, format!("redis://127.0.0.1:{port}"), "TERM")
        }
        Kind::Nats => {
            let data = dir.join("nats");
            fs::create_dir_all(&data).map_err(|e| e.to_string())?;
            let mut command = Command::new(find_binary("nats-server").expect("required"));
            command
                .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
                .arg(&data);
            (command, format!("nats://127.0.0.1:{port}"), "TERM")
        }
        Kind::Postgres => {
            let bin = postgres_bin_dir().expect("required");
            let user = unprivileged_user()?;
            let mut home = dir.join("postgres");
            fs::create_dir_all(&home).map_err(|e| e.to_string())?;
            if let Some(user) = &user {
                std::os::unix::fs::chown(&home, Some(user.uid), Some(user.gid))
                    .map_err(|e| format!("cannot hand {} to {}: {e}", home.display(), user.name))?;
                if !user.can_write(&home) {
                    // The target directory is out of that user's reach (a private home,
                    // say): keep PostgreSQL's data in the temporary directory instead.
                    home = std::env::temp_dir().join(format!(
                        "hookgate-test-postgres-{}",
                        dir.file_name().unwrap_or_default().to_string_lossy()
                    ));
                    fs::create_dir_all(&home).map_err(|e| e.to_string())?;
                    std::os::unix::fs::chown(&home, Some(user.uid), Some(user.gid))
                        .map_err(|e| e.to_string())?;
                    outside = Some(home.clone());
                }
            }
            let data = home.join("data");
            let (initdb_out, initdb_err) = log_file(dir, "initdb")?;
            let status = initdb_command(&bin, &data, &home, user.as_ref())
                .stdout(initdb_out)
                .stderr(initdb_err)
                .status()
                .map_err(|e| format!("cannot run {}: {e}", bin.join("initdb").display()))?;
            if !status.success() {
                return Err(format!(
                    "initdb failed ({status}):\n{}",
                    tail(&dir.join("initdb.log"))
                ));
            }
            let mut command = postgres_command(&bin, &data, &home, port, user.as_ref());
            command
                .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
                .args(["-c", "full_page_writes=off", "-c", "max_connections=300"]);
            (
                command,
                format!("postgres://postgres@127.0.0.1:{port}/postgres"),
                // Fast shutdown: open connections are closed rather than waited for.
                "INT",
            )
        }
    };
    let child = command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        // Its own process group: a Ctrl-C at the terminal stops the tests, and the
        // watchdog, not the signal, stops the servers.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start the private {}: {e}", kind.name()))?;
    Ok(Started {
        kind,
        endpoint: Endpoint::new(url, Origin::Private)?,
        child,
        stop_signal,
        outside,
    })
}

fn wait_ready(server: &mut Started, dir: &Path) -> Result<(), String> {
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        if let Ok(Some(status)) = server.child.try_wait() {
            return Err(format!(
                "the private {} exited at start ({status}):\n{}",
                server.kind.name(),
                tail(&dir.join(format!("{}.log", server.kind.name())))
            ));
        }
        if ready(server.kind, &server.endpoint.address) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the private {} did not answer within {} s:\n{}",
                server.kind.name(),
                READY_WITHIN.as_secs(),
                tail(&dir.join(format!("{}.log", server.kind.name())))
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether the server at `address` does its job: Redis answers PING, NATS announces
/// JetStream, PostgreSQL accepts connections (`pg_isready`).
pub fn ready(kind: Kind, address: &str) -> bool {
    match kind {
        Kind::Redis => exchange(address, Some(b"PING\r\n")).is_some_and(|r| r.starts_with("+PONG")),
        Kind::Nats => exchange(address, None)
            .is_some_and(|r| r.starts_with("INFO") && r.contains("\"jetstream\":true")),
        Kind::Postgres => {
            let Some(bin) = postgres_bin_dir() else {
                return false;
            };
            let Some((host, port)) = address.rsplit_once(':') else {
                return false;
            };
            Command::new(bin.join("pg_isready"))
                .args([
                    "-q", "-h", host, "-p", port, "-U", "postgres", "-d", "postgres",
                ])
                .status()
                .is_ok_and(|s| s.success())
        }
    }
}

/// Connects, optionally sends `request`, and returns the first bytes answered.
fn exchange(address: &str, request: Option<&[u8]>) -> Option<String> {
    let addr = address.parse().ok()?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    if let Some(request) = request {
        stream.write_all(request).ok()?;
    }
    let mut buffer = [0u8; 4096];
    let read = stream.read(&mut buffer).ok()?;
    Some(String::from_utf8_lossy(&buffer[..read]).into_owned())
}

fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// `initdb` of a throwaway cluster in `data` (superuser `postgres`, trust auth), run from
/// `home` as `user` when given (PostgreSQL refuses to run as root).
pub fn initdb_command(bin: &Path, data: &Path, home: &Path, user: Option<&User>) -> Command {
    let mut initdb = Command::new(bin.join("initdb"));
    initdb
        .arg("-D")
        .arg(data)
        .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale"])
        .arg("--no-sync")
        .current_dir(home);
    if let Some(user) = user {
        initdb.uid(user.uid).gid(user.gid);
    }
    initdb
}

/// `postgres` on `data`, listening on 127.0.0.1:`port` only (no Unix socket), run from
/// `home` as `user` when given; the caller adds its own durability settings.
pub fn postgres_command(
    bin: &Path,
    data: &Path,
    home: &Path,
    port: u16,
    user: Option<&User>,
) -> Command {
    let mut command = Command::new(bin.join("postgres"));
    command
        .arg("-D")
        .arg(data)
        .args(["-p", &port.to_string()])
        .args(["-c", "listen_addresses=127.0.0.1"])
        .args(["-c", "unix_socket_directories="])
        .current_dir(home);
    if let Some(user) = user {
        command.uid(user.uid).gid(user.gid);
    }
    command
}

/// An unprivileged account to run PostgreSQL as, when this process is root.
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl User {
    pub fn can_write(&self, dir: &Path) -> bool {
        Command::new("test")
            .arg("-w")
            .arg(dir)
            .uid(self.uid)
            .gid(self.gid)
            .status()
            .is_ok_and(|s| s.success())
    }
}

pub fn unprivileged_user() -> Result<Option<User>, String> {
    let root = fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    if !root {
        return Ok(None);
    }
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    for wanted in ["postgres", "nobody"] {
        for line in passwd.lines() {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() > 3
                && fields[0] == wanted
                && let (Ok(uid), Ok(gid)) = (fields[2].parse(), fields[3].parse())
            {
                return Ok(Some(User {
                    name: wanted.to_owned(),
                    uid,
                    gid,
                }));
            }
        }
    }
    Err(
        "running as root, and neither a `postgres` nor a `nobody` user exists to run the \
         private PostgreSQL as (it refuses to run as root)"
            .into(),
    )
}

/// An executable named `name` on `PATH` or in the `sbin` directories.
pub fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// The directory holding `initdb`, `postgres` and `pg_isready`: from `PATH`, else the
/// newest `/usr/lib/postgresql/<N>/bin` (Debian keeps them there).
pub fn postgres_bin_dir() -> Option<PathBuf> {
    if let Some(initdb) = find_binary("initdb") {
        // Often a link into the version's own directory, where its siblings are.
        let initdb = fs::canonicalize(&initdb).unwrap_or(initdb);
        return initdb.parent().map(Path::to_path_buf);
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_string_lossy().parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn installed(kind: Kind) -> bool {
    match kind {
        Kind::Postgres => postgres_bin_dir().is_some(),
        Kind::Redis => find_binary("redis-server").is_some(),
        Kind::Nats => find_binary("nats-server").is_some(),
    }
}

/// Installs Debian `packages` with `apt-get` (refreshing the package lists if the first try
/// fails), when this runs as root on Debian; false anywhere else or when it fails. Test
/// binaries run at once and each may need something, so the installs take turns on a lock
/// file: two `apt-get`s at a time fail on dpkg's own lock.
pub fn apt_install(packages: &[&str]) -> bool {
    let root = fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    if packages.is_empty()
        || !root
        || !Path::new("/etc/debian_version").exists()
        || find_binary("apt-get").is_none()
    {
        return false;
    }
    let Ok(lock) = File::create(std::env::temp_dir().join("hookgate-test-apt.lock")) else {
        return false;
    };
    // Released when `lock` is dropped, at the end of this function.
    if lock.lock().is_err() {
        return false;
    }
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let mut install = vec!["install", "-y", "-q", "--no-install-recommends"];
    install.extend_from_slice(packages);
    apt(&install) || (apt(&["update", "-q"]) && apt(&install))
}

fn debian_package(kind: Kind) -> &'static str {
    match kind {
        Kind::Postgres => "postgresql",
        Kind::Redis => "redis-server",
        Kind::Nats => "nats-server",
    }
}

/// Makes sure the servers' binaries and `flock` (the watchdog's) are there, installing
/// the missing ones with `apt-get` on Debian as root.
fn require_binaries(kinds: &BTreeSet<Kind>) -> Result<(), String> {
    let mut missing: Vec<&str> = kinds
        .iter()
        .filter(|kind| !installed(**kind))
        .map(|kind| debian_package(*kind))
        .collect();
    if find_binary("flock").is_none() {
        missing.push("util-linux");
    }
    if missing.is_empty() {
        return Ok(());
    }
    if apt_install(&missing) && kinds.iter().all(|k| installed(*k)) {
        return Ok(());
    }
    Err(format!(
        "the tests need PostgreSQL, Redis and NATS with JetStream; none answers at its test \
         address and these are not installed to start a private one: {}. Install them \
         (Debian: apt-get install {}), or point HOOKGATE_TEST_DATABASE_URL, \
         HOOKGATE_TEST_REDIS_URL and HOOKGATE_TEST_NATS_URL at running servers",
        missing.join(", "),
        missing.join(" ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Starts a set of its own (not the run's), checks each server does its job, then
    /// releases the lease and watches the watchdog stop them and delete their data.
    #[test]
    fn a_private_set_serves_and_is_stopped_once_unused() {
        let root = tempfile_dir();
        File::create(root.join("lock")).expect("lock file");
        let set = PrivateSet::start(&root, &Kind::ALL, 1).unwrap_or_else(|e| panic!("{e}"));
        let lease = set.lease().expect("lease");
        for kind in Kind::ALL {
            let endpoint = set.endpoint(kind).expect("started");
            assert_eq!(endpoint.origin, Origin::Private);
            assert!(ready(kind, &endpoint.address), "{kind:?} at {endpoint:?}");
        }
        // Held for longer than the grace period: the lease keeps the set up.
        std::thread::sleep(Duration::from_secs(2));
        assert!(set.alive(), "a leased set keeps running");
        drop(lease);
        let deadline = Instant::now() + Duration::from_secs(20);
        while set.dir().exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(!set.dir().exists(), "the watchdog deletes the set's data");
        for kind in Kind::ALL {
            let endpoint = set.endpoint(kind).expect("started");
            assert!(
                !crate::answers(&endpoint.address),
                "{kind:?} is stopped with its set"
            );
        }
        let _ = fs::remove_dir_all(&root);
    }

    fn tempfile_dir() -> PathBuf {
        let dir = state_root().join(format!(
            "selftest-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        fs::create_dir_all(&dir).expect("test dir");
        dir
    }
}
