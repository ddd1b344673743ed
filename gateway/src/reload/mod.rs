//! Hot reload: the configuration and the plugin directory read again, a new plugin set and
//! source table built aside and judged, then swapped in whole — or nothing changes.
//!
//! Every trigger (a watched file, SIGHUP, the admin API) runs the same [`Reloader::reload`],
//! one at a time. Requests in flight finish on the sources they started with: the pipeline
//! hands out the table as an `Arc`, and a swap only replaces what later requests get.

pub mod candidate;
pub mod preview;
pub mod watch;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::{Config, ConfigError};
use crate::ingest::{Pipeline, SourceTable};
use crate::metrics::Metrics;
use crate::plugin::{PluginEngine, PluginRegistry};
use crate::store::Store;
use candidate::{FixtureSummary, Rejection};

/// Reads the configuration again, as at start (same file, environment and flags).
pub type ConfigLoader = Arc<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;

/// What started a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The config file or the plugin directory changed.
    Watch,
    /// SIGHUP.
    Signal,
    /// `POST /api/v1/admin/reload`.
    Admin,
}

/// How a reload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReloadResult {
    /// The candidate was swapped in.
    Applied,
    /// The candidate was valid and equal to what serves: nothing to swap.
    Unchanged,
    /// A dry run found the candidate valid; nothing was swapped.
    Validated,
    /// The candidate was refused; what serves is untouched.
    Rejected,
}

impl ReloadResult {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Unchanged => "unchanged",
            Self::Validated => "validated",
            Self::Rejected => "rejected",
        }
    }
}

/// A plugin as a reload reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PluginVersion {
    pub name: String,
    pub version: String,
    pub sha256: String,
    pub origin: String,
}

/// A plugin whose bytes changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PluginChange {
    pub name: String,
    pub from: PluginVersion,
    pub to: PluginVersion,
}

/// What a candidate changes in the plugin set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PluginDiff {
    pub added: Vec<PluginVersion>,
    pub replaced: Vec<PluginChange>,
    pub removed: Vec<PluginVersion>,
    pub unchanged: Vec<PluginVersion>,
}

/// What a candidate changes in the sources, by name. A source is replaced when its
/// plugin's bytes or its own configuration (secrets, keys, settings...) changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SourceDiff {
    pub added: Vec<String>,
    pub replaced: Vec<String>,
    pub removed: Vec<String>,
    pub unchanged: Vec<String>,
}

/// The answer of one reload, as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadOutcome {
    pub result: ReloadResult,
    pub trigger: Trigger,
    pub dry_run: bool,
    pub at: DateTime<Utc>,
    pub duration_ms: u64,
    pub plugins: PluginDiff,
    pub sources: SourceDiff,
    /// What kept the candidate from serving; empty unless `result` is `rejected`.
    pub rejected: Vec<Rejection>,
    /// Fixtures run for new or changed plugins.
    pub fixtures: Vec<FixtureSummary>,
    /// Settings that changed in the file but only take effect at the next start.
    pub restart_required: Vec<String>,
    /// Dry runs: the last stored webhooks of each replaced source, re-mapped through the
    /// version serving now and the candidate.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remapped: Vec<preview::SourcePreview>,
}

/// What the admin API and health show of past reloads.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadStatus {
    pub last: Option<ReloadOutcome>,
    pub last_success_at: Option<DateTime<Utc>>,
    /// The last refused candidate, until a later reload succeeds.
    pub last_rejected: Option<ReloadOutcome>,
}

/// Runs reloads of one gateway.
pub struct Reloader {
    engine: PluginEngine,
    pipeline: Arc<Pipeline>,
    metrics: Arc<Metrics>,
    store: Arc<dyn Store>,
    loader: ConfigLoader,
    /// The configuration the gateway started with: settings outside `sources` are only
    /// read at start, so a change of them is reported against this.
    started: Config,
    /// The configuration the sources were last bound from.
    applied: Mutex<Config>,
    /// One reload at a time, whatever its trigger.
    running: tokio::sync::Mutex<()>,
    status: Mutex<ReloadStatus>,
}

impl Reloader {
    pub fn new(
        engine: PluginEngine,
        pipeline: Arc<Pipeline>,
        metrics: Arc<Metrics>,
        store: Arc<dyn Store>,
        loader: ConfigLoader,
        started: Config,
    ) -> Self {
        Self {
            engine,
            pipeline,
            metrics,
            store,
            loader,
            applied: Mutex::new(started.clone()),
            started,
            running: tokio::sync::Mutex::new(()),
            status: Mutex::new(ReloadStatus::default()),
        }
    }

    /// Past reloads, for the admin API and health.
    pub fn status(&self) -> ReloadStatus {
        lock(&self.status).clone()
    }

    /// Reads the configuration and plugin directory again, builds and judges the
    /// candidate off the request path and swaps it in whole unless `dry_run` — or, on any
    /// failure, changes nothing and says why.
    pub async fn reload(&self, trigger: Trigger, dry_run: bool) -> ReloadOutcome {
        self.reload_sampling(trigger, dry_run, preview::DEFAULT_SAMPLE)
            .await
    }

    /// [`reload`](Self::reload); a dry run re-maps the last `sample` stored webhooks of
    /// each replaced source through both versions.
    pub async fn reload_sampling(
        &self,
        trigger: Trigger,
        dry_run: bool,
        sample: u32,
    ) -> ReloadOutcome {
        let _one_at_a_time = self.running.lock().await;
        let started = Instant::now();
        let mut outcome = self.attempt(trigger, dry_run, sample).await;
        outcome.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.record(&outcome);
        outcome
    }

    async fn attempt(&self, trigger: Trigger, dry_run: bool, sample: u32) -> ReloadOutcome {
        let mut outcome = ReloadOutcome {
            result: ReloadResult::Rejected,
            trigger,
            dry_run,
            at: Utc::now(),
            duration_ms: 0,
            plugins: PluginDiff::default(),
            sources: SourceDiff::default(),
            rejected: Vec::new(),
            fixtures: Vec::new(),
            restart_required: Vec::new(),
            remapped: Vec::new(),
        };
        let config = match (self.loader)() {
            Ok(config) => config,
            Err(error) => {
                outcome.rejected.push(Rejection {
                    what: "config".to_owned(),
                    reason: error.to_string(),
                });
                return outcome;
            }
        };
        outcome.restart_required = restart_required(&self.started, &config);

        let running_plugins = self.pipeline.plugins();
        let running_sources = self.pipeline.sources();
        let engine = self.engine.clone();
        let previous = running_plugins.clone();
        let built = tokio::task::spawn_blocking(move || {
            let plugins = candidate::load_plugins(&engine, &config, Some(previous.clone()));
            let (fixtures, rejected) = candidate::gate_plugins(&plugins, &previous);
            let sources = candidate::bind_sources(&config, &plugins);
            (config, plugins, fixtures, rejected, sources)
        })
        .await;
        let (config, plugins, fixtures, mut rejected, sources) = match built {
            Ok(built) => built,
            Err(error) => {
                outcome.rejected.push(Rejection {
                    what: "reload".to_owned(),
                    reason: format!("building the candidate failed: {error}"),
                });
                return outcome;
            }
        };
        outcome.fixtures = fixtures;
        let sources = match sources {
            Ok(sources) => Some(sources),
            Err(error) => {
                rejected.push(Rejection {
                    what: "config".to_owned(),
                    reason: format!("{error:#}"),
                });
                None
            }
        };
        outcome.plugins = plugin_diff(&running_plugins, &plugins);
        if let Some(sources) = &sources {
            let applied = lock(&self.applied).clone();
            outcome.sources = source_diff(&applied, &running_sources, &config, sources);
        }
        let Some(sources) = sources.filter(|_| rejected.is_empty()) else {
            outcome.rejected = rejected;
            return outcome;
        };

        let changed = !(outcome.plugins.added.is_empty()
            && outcome.plugins.replaced.is_empty()
            && outcome.plugins.removed.is_empty()
            && outcome.sources.added.is_empty()
            && outcome.sources.replaced.is_empty()
            && outcome.sources.removed.is_empty());
        outcome.result = if dry_run {
            outcome.remapped = preview::remap_recent(
                &self.store,
                &running_sources,
                &sources,
                &outcome.sources.replaced,
                sample.min(preview::MAX_SAMPLE),
            )
            .await;
            ReloadResult::Validated
        } else if changed {
            self.pipeline.replace(sources, plugins);
            *lock(&self.applied) = config;
            ReloadResult::Applied
        } else {
            ReloadResult::Unchanged
        };
        outcome
    }

    fn record(&self, outcome: &ReloadOutcome) {
        self.metrics
            .reload(outcome.result.as_str(), outcome.rejected.len());
        let mut status = lock(&self.status);
        status.last = Some(outcome.clone());
        match outcome.result {
            ReloadResult::Rejected => {
                tracing::error!(
                    trigger = ?outcome.trigger,
                    rejected = ?outcome.rejected,
                    "reload rejected; the running plugins and sources keep serving"
                );
                status.last_rejected = Some(outcome.clone());
            }
            ReloadResult::Applied | ReloadResult::Unchanged => {
                tracing::info!(
                    trigger = ?outcome.trigger,
                    result = outcome.result.as_str(),
                    plugins_added = ?names(&outcome.plugins.added),
                    plugins_replaced = ?outcome.plugins.replaced.iter().map(|c| format!("{} {} -> {}", c.name, c.from.version, c.to.version)).collect::<Vec<_>>(),
                    plugins_removed = ?names(&outcome.plugins.removed),
                    sources_added = ?outcome.sources.added,
                    sources_replaced = ?outcome.sources.replaced,
                    sources_removed = ?outcome.sources.removed,
                    duration_ms = outcome.duration_ms,
                    "reload done"
                );
                status.last_success_at = Some(outcome.at);
                status.last_rejected = None;
                self.metrics.reload_succeeded(outcome.at);
            }
            ReloadResult::Validated => {
                tracing::info!(trigger = ?outcome.trigger, "reload dry run: the candidate is valid");
            }
        }
        for setting in &outcome.restart_required {
            tracing::warn!(%setting, "setting changed in the configuration; it takes effect at the next start");
        }
    }
}

fn names(plugins: &[PluginVersion]) -> Vec<&str> {
    plugins.iter().map(|p| p.name.as_str()).collect()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The top-level settings that are read only at start, by name, when they differ.
fn restart_required(started: &Config, candidate: &Config) -> Vec<String> {
    let mut changed = Vec::new();
    let mut check = |name: &str, same: bool| {
        if !same {
            changed.push(name.to_owned());
        }
    };
    check("listen", started.listen == candidate.listen);
    check(
        "max_payload_size_mb",
        started.max_payload_size_mb == candidate.max_payload_size_mb,
    );
    check("admin_token", started.admin_token == candidate.admin_token);
    check("log_format", started.log_format == candidate.log_format);
    check("http", started.http == candidate.http);
    check("storage", started.storage == candidate.storage);
    check("dedupe", started.dedupe == candidate.dedupe);
    check("bus", started.bus == candidate.bus);
    // The plugin directory's contents reload; where it is and the sandbox limits do not.
    let mut started_plugins = started.plugins.clone();
    started_plugins.dir.clone_from(&candidate.plugins.dir);
    check("plugins", started_plugins == candidate.plugins);
    check("plugins.dir", started.plugins.dir == candidate.plugins.dir);
    changed
}

fn version_of(registry: &PluginRegistry, name: &str) -> Option<PluginVersion> {
    let plugin = registry.get(name)?;
    Some(PluginVersion {
        name: name.to_owned(),
        version: plugin.metadata().version.clone(),
        sha256: plugin.sha256_hex(),
        origin: registry
            .origin(name)
            .map(ToString::to_string)
            .unwrap_or_default(),
    })
}

fn plugin_diff(running: &PluginRegistry, candidate: &PluginRegistry) -> PluginDiff {
    let names: BTreeSet<String> = running
        .list()
        .into_iter()
        .chain(candidate.list())
        .map(|info| info.name)
        .collect();
    let mut diff = PluginDiff::default();
    for name in names {
        match (version_of(running, &name), version_of(candidate, &name)) {
            (None, Some(to)) => diff.added.push(to),
            (Some(from), None) => diff.removed.push(from),
            (Some(from), Some(to)) if from.sha256 == to.sha256 => diff.unchanged.push(to),
            (Some(from), Some(to)) => diff.replaced.push(PluginChange { name, from, to }),
            (None, None) => {}
        }
    }
    diff
}

fn source_diff(
    applied: &Config,
    running: &SourceTable,
    config: &Config,
    candidate: &SourceTable,
) -> SourceDiff {
    let names: BTreeSet<&String> = running.keys().chain(candidate.keys()).collect();
    let settings = |config: &Config, name: &str| {
        config.sources.get(name).map(|s| {
            (
                s.clone(),
                s.public_url.clone().or(config.public_url.clone()),
            )
        })
    };
    let mut diff = SourceDiff::default();
    for name in names {
        match (running.get(name), candidate.get(name)) {
            (None, Some(_)) => diff.added.push(name.clone()),
            (Some(_), None) => diff.removed.push(name.clone()),
            (Some(old), Some(new)) => {
                let same = old.plugin.sha256() == new.plugin.sha256()
                    && settings(applied, name) == settings(config, name);
                if same {
                    diff.unchanged.push(name.clone());
                } else {
                    diff.replaced.push(name.clone());
                }
            }
            (None, None) => {}
        }
    }
    diff
}

/// The sources bound to each plugin, for listings.
pub fn sources_by_plugin(sources: &SourceTable) -> BTreeMap<String, Vec<String>> {
    let mut by_plugin: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for source in sources.values() {
        by_plugin
            .entry(source.plugin.name().to_owned())
            .or_default()
            .push(source.name.clone());
    }
    for names in by_plugin.values_mut() {
        names.sort();
    }
    by_plugin
}
