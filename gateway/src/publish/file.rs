//! JSON-lines file sink for the embedded mode: each envelope appended as one line.
//!
//! A batch counts as published only once it is on disk (`sync_data`), the same promise a
//! JetStream PubAck makes. Writes and syncs run on the blocking pool so an fsync never
//! stalls a tokio worker.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{EventSink, Outgoing, PublishError};

/// The `file://` sink.
pub struct FileSink {
    path: PathBuf,
    /// One writer at a time, so lines of concurrent batches never interleave.
    file: Arc<Mutex<File>>,
}

impl FileSink {
    /// Opens `path` for appending, creating it and its parent directories.
    pub async fn open(path: &Path) -> Result<Self, PublishError> {
        if path.as_os_str().is_empty() {
            return Err(PublishError::BadUrl("file:// needs a path".into()));
        }
        let owned = path.to_path_buf();
        let file = tokio::task::spawn_blocking(move || -> std::io::Result<File> {
            if let Some(parent) = owned.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)?;
            }
            OpenOptions::new().create(true).append(true).open(&owned)
        })
        .await
        .map_err(|e| PublishError::Unavailable(format!("open task failed: {e}")))?
        .map_err(|e| PublishError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        Ok(Self {
            path: path.to_path_buf(),
            file: Arc::new(Mutex::new(file)),
        })
    }

    /// The file the events are appended to.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Appends the batch as lines, all or nothing: on a failed write the file is cut back to
/// where the batch began so no torn line is left for the next batch to follow.
fn append_batch(file: &Mutex<File>, events: &[Outgoing]) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(events.iter().map(|e| e.envelope.len() + 1).sum());
    for event in events {
        let start = buf.len();
        buf.extend_from_slice(&event.envelope);
        // The payload is embedded with its own whitespace, which may include line breaks.
        // Outside strings they are insignificant JSON whitespace (inside strings they
        // would be escaped), so turning them into spaces keeps the same JSON on one line.
        for b in &mut buf[start..] {
            if *b == b'\n' || *b == b'\r' {
                *b = b' ';
            }
        }
        buf.push(b'\n');
    }
    // A panic in another batch cannot leave the `File` itself inconsistent.
    let mut file = file.lock().unwrap_or_else(|p| p.into_inner());
    let before = file.metadata()?.len();
    let written = file.write_all(&buf).and_then(|()| file.sync_data());
    if let Err(e) = written {
        // Best effort: if even this fails the error below still reports the batch failed.
        let _ = file.set_len(before).and_then(|()| file.sync_data());
        return Err(e);
    }
    Ok(())
}

#[async_trait]
impl EventSink for FileSink {
    async fn publish_batch(&self, events: &[Outgoing]) -> Vec<Result<(), PublishError>> {
        if events.is_empty() {
            return Vec::new();
        }
        let file = self.file.clone();
        // `Bytes` clones are cheap: the envelopes themselves are not copied here.
        let owned = events.to_vec();
        let outcome = tokio::task::spawn_blocking(move || append_batch(&file, &owned))
            .await
            .map_err(|e| format!("write task failed: {e}"))
            .and_then(|r| r.map_err(|e| format!("cannot append to {}: {e}", self.path.display())));
        match outcome {
            Ok(()) => events.iter().map(|_| Ok(())).collect(),
            Err(msg) => events
                .iter()
                .map(|_| Err(PublishError::Unavailable(msg.clone())))
                .collect(),
        }
    }

    async fn ping(&self) -> Result<(), PublishError> {
        // The file being deleted or its disk unmounted under us is what health should show.
        tokio::fs::metadata(&self.path)
            .await
            .map(|_| ())
            .map_err(|e| PublishError::Unavailable(format!("{}: {e}", self.path.display())))
    }

    fn kind(&self) -> &'static str {
        "file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn event(i: usize, tag: &str) -> Outgoing {
        Outgoing {
            id: format!("{tag}-{i}"),
            subject: format!("webhooks.test.{tag}"),
            envelope: Bytes::from(format!(r#"{{"id":"{tag}-{i}","data":{{"n":{i}}}}}"#)),
        }
    }

    #[tokio::test]
    async fn creates_parent_dirs_and_appends_lines_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("data/nested/events.jsonl");
        let sink = FileSink::open(&path).await.expect("open");
        assert!(path.exists());
        let first: Vec<_> = (0..5).map(|i| event(i, "a")).collect();
        let second: Vec<_> = (5..8).map(|i| event(i, "a")).collect();
        for batch in [&first, &second] {
            let results = sink.publish_batch(batch).await;
            assert_eq!(results.len(), batch.len());
            assert!(results.iter().all(Result::is_ok), "{results:?}");
        }
        let text = std::fs::read_to_string(&path).expect("read");
        let expected: Vec<String> = first
            .iter()
            .chain(&second)
            .map(|e| String::from_utf8(e.envelope.to_vec()).expect("utf-8"))
            .collect();
        assert_eq!(text.lines().collect::<Vec<_>>(), expected);
        assert!(text.ends_with('\n'));
        sink.ping().await.expect("ping");
    }

    #[tokio::test]
    async fn reopening_appends_instead_of_truncating() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.jsonl");
        let sink = FileSink::open(&path).await.expect("open");
        assert!(sink.publish_batch(&[event(0, "a")]).await[0].is_ok());
        drop(sink);
        let sink = FileSink::open(&path).await.expect("reopen");
        assert!(sink.publish_batch(&[event(1, "a")]).await[0].is_ok());
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().count(), 2);
    }

    #[tokio::test]
    async fn line_breaks_inside_an_envelope_stay_on_one_line_as_the_same_json() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.jsonl");
        let sink = FileSink::open(&path).await.expect("open");
        let envelope =
            Bytes::from_static(b"{\"id\":\"x\",\"data\":{\r\n  \"n\": 820982911946154500\n}}");
        let out = Outgoing {
            id: "x".into(),
            subject: "webhooks.t.x".into(),
            envelope: envelope.clone(),
        };
        assert!(sink.publish_batch(&[out]).await[0].is_ok());
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().count(), 1, "{text:?}");
        let line = text.lines().next().expect("one line");
        assert!(line.contains("820982911946154500"));
        let a: serde_json::Value = serde_json::from_str(line).expect("json line");
        let b: serde_json::Value = serde_json::from_slice(&envelope).expect("json");
        assert_eq!(a, b);
    }

    #[tokio::test]
    async fn concurrent_batches_do_not_interleave() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.jsonl");
        let sink = Arc::new(FileSink::open(&path).await.expect("open"));
        let writers = 8;
        let per_batch = 50;
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                let sink = sink.clone();
                tokio::spawn(async move {
                    let batch: Vec<_> =
                        (0..per_batch).map(|i| event(i, &format!("w{w}"))).collect();
                    sink.publish_batch(&batch).await
                })
            })
            .collect();
        for t in tasks {
            let results = t.await.expect("join");
            assert!(results.iter().all(Result::is_ok), "{results:?}");
        }
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), writers * per_batch);
        // Each batch must be one contiguous run of its own lines, in its own order.
        for chunk in lines.chunks(per_batch) {
            let v: serde_json::Value = serde_json::from_str(chunk[0]).expect("json");
            let id = v["id"].as_str().expect("id");
            let tag = id.split('-').next().expect("tag");
            for (i, line) in chunk.iter().enumerate() {
                let v: serde_json::Value = serde_json::from_str(line).expect("json");
                assert_eq!(v["id"], format!("{tag}-{i}"), "interleaved: {chunk:?}");
            }
        }
    }

    #[tokio::test]
    async fn unopenable_path_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A regular file where a directory is needed.
        let blocker = dir.path().join("blocker");
        std::fs::write(&blocker, b"x").expect("write");
        let err = FileSink::open(&blocker.join("events.jsonl"))
            .await
            .err()
            .expect("must fail");
        assert!(matches!(err, PublishError::Unavailable(_)), "{err:?}");
    }
}
