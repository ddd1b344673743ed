//! Watches the config file and the plugin directory and reloads once they have been quiet
//! for a moment, so a file still being copied is not read half-written (the documented
//! deploy is a `.wasm` renamed into place, which lands at once).
//!
//! They are polled (a `stat` of the config file and a listing of the plugin directory every
//! `POLL`) rather than watched through inotify. inotify can only watch the config file's
//! directory (editors replace the file by renaming a new one over it), and it cannot be
//! told to ignore writes: with the database or the events file in that directory, every
//! write woke the watcher, which cost the embedded mode a fifth of its throughput.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

use super::{Reloader, Trigger};

/// How long the watched files must be quiet before a reload starts.
pub const QUIET: Duration = Duration::from_millis(750);

/// How often the config file and the plugin directory are looked at.
pub const POLL: Duration = Duration::from_millis(500);

/// Keeps the watch alive; dropping it stops it.
pub struct FileWatch {
    _watcher: notify::PollWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl FileWatch {
    /// Watches `config_file` (a file renamed over it counts as a change) and `plugin_dir`
    /// (when it exists). Returns `None` when there is nothing to watch.
    pub fn start(
        reloader: Arc<Reloader>,
        config_file: Option<&Path>,
        plugin_dir: &Path,
        mut shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<Option<Self>> {
        let config_file = config_file.map(absolute);
        let plugin_dir = plugin_dir.is_dir().then(|| absolute(plugin_dir));
        if config_file.is_none() && plugin_dir.is_none() {
            return Ok(None);
        }
        let (changed_tx, mut changed) = mpsc::unbounded_channel::<()>();
        let relevant = {
            let config_file = config_file.clone();
            let plugin_dir = plugin_dir.clone();
            move |path: &Path| {
                config_file.as_deref() == Some(path)
                    || plugin_dir
                        .as_deref()
                        .is_some_and(|dir| path.parent() == Some(dir) && is_plugin_file(path))
            }
        };
        let mut watcher = notify::PollWatcher::new(
            move |event: notify::Result<notify::Event>| {
                let Ok(event) = event else { return };
                if event.kind.is_access() {
                    return;
                }
                if event.paths.iter().any(|p| relevant(p)) {
                    let _ = changed_tx.send(());
                }
            },
            notify::Config::default().with_poll_interval(POLL),
        )?;
        if let Some(file) = &config_file {
            watcher.watch(file, RecursiveMode::NonRecursive)?;
        }
        if let Some(dir) = &plugin_dir {
            watcher.watch(dir, RecursiveMode::NonRecursive)?;
        }
        tracing::info!(
            config = ?config_file,
            plugins = ?plugin_dir,
            "watching for changes to reload"
        );
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.changed() => return,
                    first = changed.recv() => if first.is_none() { return },
                }
                // Wait until nothing has changed for QUIET.
                while let Ok(Some(())) = tokio::time::timeout(QUIET, changed.recv()).await {}
                reloader.reload(Trigger::Watch, false).await;
            }
        });
        Ok(Some(Self {
            _watcher: watcher,
            task,
        }))
    }
}

impl Drop for FileWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn is_plugin_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.ends_with(".wasm") || name.ends_with(".fixtures.json")
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
