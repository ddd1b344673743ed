//! Embedded mode on a full disk: the SQLite database lives on a small tmpfs that the test
//! fills up. The gateway answers 503 for what it cannot store, never a 2xx, and the
//! database stays intact and serves again once there is room.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hookgate::client::HttpClient;

use crate::child::*;
use crate::support::*;

/// A tmpfs of `size` mounted in a mount namespace of its own, kept alive by a holder
/// process (killed by its PID on drop, the mount going with it). The gateway runs in that
/// namespace (`nsenter`); this process reaches the files through `/proc/<holder>/root`.
struct Tmpfs {
    holder: Child,
    mount: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let mount = tempfile::tempdir().expect("mount point");
        let mut holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            // Bounded: the holder outlives no test.
            .arg(r#"mount -t tmpfs -o size="$1" hookgate-full-disk "$2" && echo mounted && exec sleep 300"#)
            .args(["sh", size])
            .arg(mount.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("unshare (util-linux) must be installed for the full-disk test");
        let mut line = String::new();
        let _ = BufReader::new(holder.stdout.take().expect("stdout")).read_line(&mut line);
        if line.trim() != "mounted" {
            let _ = holder.kill();
            let output = holder.wait_with_output().expect("holder");
            panic!(
                "cannot mount a tmpfs in a mount namespace of the test's own (this test needs \
                 root, or unprivileged user namespaces): {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Self { holder, mount }
    }

    /// The path the gateway (inside the namespace) uses.
    fn inside(&self, name: &str) -> PathBuf {
        self.mount.path().join(name)
    }

    /// The same file as this process reaches it.
    fn outside(&self, name: &str) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/root{}",
            self.holder.id(),
            self.inside(name).display()
        ))
    }

    fn nsenter(&self) -> Vec<String> {
        vec![
            "nsenter".into(),
            "-t".into(),
            self.holder.id().to_string(),
            "-m".into(),
            "--".into(),
        ]
    }

    /// Fills what is left with a file, to the last page; returns its size.
    fn fill(&self) -> u64 {
        let mut file = std::fs::File::create(self.outside("filler")).expect("filler");
        let mut written = 0u64;
        for chunk in [1 << 20, 64 << 10, 4 << 10, 512] {
            let buffer = vec![0x5au8; chunk];
            // Bounded by the tmpfs's size.
            for _ in 0..100_000 {
                match file.write_all(&buffer).and_then(|()| file.flush()) {
                    Ok(()) => written += chunk as u64,
                    Err(_) => break,
                }
            }
        }
        written
    }

    fn free(&self) {
        std::fs::remove_file(self.outside("filler")).expect("remove the filler");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_storage_on_a_full_disk_answers_503_and_stays_intact() {
    let started = Instant::now();
    let tmpfs = Tmpfs::mount("16m");
    let dir = tempfile::tempdir().expect("temp dir");
    let names = Names {
        dir: dir.path().to_path_buf(),
        schema: "unused".into(),
        stream: "UNUSED".into(),
        prefix: unique("hg"),
    };
    std::fs::create_dir_all(names.dir.join("plugins.d")).expect("plugin dir");
    let mut options = Options::new(Backend::Embedded);
    options.watch = false;
    // Only the database is on the small disk; the event file is not.
    options.storage_url = Some(format!(
        "sqlite://{}",
        tmpfs.inside("hookgate.db").display()
    ));
    config_for(&options, &names);
    let wrapper = tmpfs.nsenter();
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let mut gateway = ChildGateway::start_wrapped(
        &wrapper,
        &config_path(&names),
        &dir.path().join("gateway.log"),
    )
    .await;
    let client = HttpClient::new();
    let post = |webhook: hookgate::sample::SignedWebhook| {
        let (client, base) = (client.clone(), gateway.base.clone());
        async move {
            client
                .post_webhook(&base, &webhook)
                .await
                .expect("the gateway answers")
        }
    };

    let mut acknowledged = Vec::new();
    for n in 0..30 {
        let reply = post(shopify_order(&format!(
            "before-{n}-{}",
            uuid::Uuid::new_v4()
        )))
        .await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        acknowledged.push(reply.json()["id"].as_str().expect("id").to_owned());
    }

    let filled = tmpfs.fill();
    // Concurrent senders, so that commits of several webhooks fail together.
    let (_, full): (Vec<_>, Vec<_>) = orders("full", 200).into_iter().unzip();
    let mut load = Load::new(vec![gateway.base.clone()], 8);
    load.limit = Duration::from_secs(30);
    let outcomes = load.start(std::sync::Arc::new(full.clone())).finish().await;
    let tally = Tally::of(&outcomes);
    assert_eq!(tally.no_answer + tally.unsent, 0, "{tally:?}");
    let mut refused = Vec::new();
    let mut accepted_while_full = 0;
    for (webhook, outcome) in full.iter().zip(&outcomes) {
        match outcome {
            // Some commits still fit (pages SQLite already had): they are stored.
            Outcome::Answered {
                status: 200, body, ..
            } => {
                accepted_while_full += 1;
                acknowledged.push(body["id"].as_str().expect("id").to_owned());
            }
            Outcome::Answered {
                status: 503, body, ..
            } => {
                assert_eq!(body["error"], "storage_unavailable", "{body}");
                assert!(
                    body["message"].as_str().is_some_and(|m| !m.is_empty()),
                    "{body}"
                );
                refused.push(webhook.clone());
            }
            other => panic!("full disk: {other:?}"),
        }
    }
    assert!(
        refused.len() >= 20,
        "the disk never showed full: {accepted_while_full} accepted after filling {filled} bytes"
    );
    // The store still answers pings; the failed writes are what withdraw readiness, so a
    // balancer stops sending to a node that cannot store.
    let ready_while_full = client
        .get(&format!("{}/api/v1/health/ready", gateway.base), &[])
        .await
        .expect("ready");
    assert_eq!(ready_while_full.status, 503, "{:?}", ready_while_full.body);
    let ready_while_full = ready_while_full.status;

    tmpfs.free();
    let freed = Instant::now();
    let first = refused[0].clone();
    let recovered = eventually(Duration::from_secs(20), || async {
        let reply = post(first.clone()).await;
        (reply.status == 200).then_some(reply)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "a refused webhook is accepted once there is room:\n{}",
            tail(&gateway.log, 20)
        )
    });
    let recovered_in = freed.elapsed();
    // A stored webhook makes the node ready again at once.
    let ready_again = client
        .get(&format!("{}/api/v1/health/ready", gateway.base), &[])
        .await
        .expect("ready");
    assert_eq!(ready_again.status, 200, "{:?}", ready_again.body);
    let mut stored_despite_503 = 0;
    for (n, webhook) in refused.iter().enumerate() {
        let reply = if n == 0 {
            recovered.clone()
        } else {
            post(webhook.clone()).await
        };
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        if reply.json()["status"] == "duplicate" {
            stored_despite_503 += 1;
        }
        acknowledged.push(reply.json()["id"].as_str().expect("id").to_owned());
    }
    assert_eq!(
        stored_despite_503, 0,
        "a 503 means the commit failed: nothing of it was stored"
    );
    for n in 0..20 {
        let reply = post(shopify_order(&format!(
            "after-{n}-{}",
            uuid::Uuid::new_v4()
        )))
        .await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        acknowledged.push(reply.json()["id"].as_str().expect("id").to_owned());
    }
    let admin = [("authorization".to_owned(), format!("Bearer {ADMIN_TOKEN}"))];
    for id in &acknowledged {
        let reply = client
            .get(
                &format!("{}/api/v1/admin/webhooks/{id}", gateway.base),
                &admin,
            )
            .await
            .expect("admin");
        assert_eq!(reply.status, 200, "acknowledged entry {id} is stored");
    }

    gateway.terminate(Duration::from_secs(15));
    // SQLite resolves `/proc/<pid>/root` as a plain link (to this namespace's `/`), so it
    // checks a byte-for-byte copy, with the WAL if one is left.
    let copy = tempfile::tempdir().expect("temp dir");
    for suffix in ["", "-wal"] {
        let from = tmpfs.outside(&format!("hookgate.db{suffix}"));
        if from.exists() {
            std::fs::copy(&from, copy.path().join(format!("hookgate.db{suffix}")))
                .expect("copy the database");
        }
    }
    let (integrity, entries) = inspect(&copy.path().join("hookgate.db")).await;
    // And the gateway opens it again.
    gateway.restart().await;
    let reply = client
        .get(
            &format!("{}/api/v1/admin/webhooks/{}", gateway.base, acknowledged[0]),
            &admin,
        )
        .await
        .expect("admin");
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    gateway.terminate(Duration::from_secs(15));
    assert_eq!(integrity, "ok");
    assert_eq!(
        entries,
        acknowledged.len() as i64,
        "exactly the acknowledged entries are stored"
    );
    eprintln!(
        "full disk ({filled} bytes of filler): {accepted_while_full} accepted while full, then \
         {} answered 503 storage_unavailable (ready said {ready_while_full}); room again: \
         accepted after {recovered_in:?}; {} acknowledged in all, {entries} entries, \
         integrity_check {integrity}; total {:?}",
        refused.len(),
        acknowledged.len(),
        started.elapsed()
    );
}

/// `PRAGMA integrity_check` and the number of entries of the database at `path`.
async fn inspect(path: &Path) -> (String, i64) {
    use sqlx::Connection;
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path);
    let mut conn = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut conn)
        .await
        .expect("integrity_check");
    let entries: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_entries")
        .fetch_one(&mut conn)
        .await
        .expect("count");
    let _ = conn.close().await;
    (integrity, entries)
}
