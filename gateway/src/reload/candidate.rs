//! Builds what serves webhooks — the plugin set and the source table — from a
//! configuration, at start and for every reload, and judges a reload's candidate before it
//! may serve: every plugin loads, every new or changed one passes its fixtures, every
//! source binds.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use crate::config::Config;
use crate::ingest::rotation::fingerprint;
use crate::ingest::{SourceRuntime, SourceTable};
use crate::plugin::{
    Credentials, Plugin, PluginEngine, PluginOrigin, PluginRegistry, RegistryOptions,
    bundled_fixtures, load_fixtures, run_fixtures,
};
use hookgate_plugin_sdk::keys::PublicKey;

/// The plugin set a configuration asks for: the bundled plugins its enabled sources use,
/// overridden by the plugin directory's files. Components already in `previous` (same
/// SHA-256) are taken from it. Blocking: compiles on this thread.
pub fn load_plugins(
    engine: &PluginEngine,
    config: &Config,
    previous: Option<PluginRegistry>,
) -> PluginRegistry {
    let dir = config
        .plugins
        .dir
        .is_dir()
        .then(|| config.plugins.dir.clone());
    PluginRegistry::build(
        engine,
        &RegistryOptions {
            dir,
            cache_dir: Some(config.plugins.cache_dir.clone()),
            skip_bundled: false,
            bundled_only: Some(
                config
                    .enabled_sources()
                    .map(|(name, source)| source.plugin_name(name).to_owned())
                    .collect(),
            ),
            previous,
        },
    )
}

/// Binds each enabled source to its plugin, secrets and settings.
pub fn bind_sources(config: &Config, plugins: &PluginRegistry) -> anyhow::Result<SourceTable> {
    let mut table = HashMap::new();
    for (name, source) in config.enabled_sources() {
        let plugin_name = source.plugin_name(name);
        let plugin = plugins.get(plugin_name).cloned().with_context(|| {
            format!("sources.{name}.plugin: no plugin named \"{plugin_name}\" is loaded")
        })?;
        let retry_window = plugin.metadata().retry_window_hours;
        let keys = source
            .keys
            .iter()
            .enumerate()
            .map(|(i, text)| {
                PublicKey::parse(text).with_context(|| format!("sources.{name}.keys[{i}]"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let public_url = source.public_url.as_ref().or(config.public_url.as_ref());
        table.insert(
            name.to_owned(),
            Arc::new(SourceRuntime {
                name: name.to_owned(),
                credentials: Credentials {
                    secrets: source
                        .secrets
                        .iter()
                        .map(|s| s.expose().as_bytes().to_vec())
                        .collect(),
                    keys: keys.into(),
                    public_url: public_url.map(|url| Arc::from(url.as_str())),
                    allow_raw_mac: source.allow_raw_mac,
                },
                settings: Arc::new(
                    source
                        .settings
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                ),
                dedupe_ttl: config.dedupe_ttl_for(name, retry_window),
                secret_ids: source
                    .secrets
                    .iter()
                    .map(|s| fingerprint(s.expose().as_bytes()))
                    .collect(),
                plugin,
            }),
        );
    }
    Ok(table)
}

/// Something that keeps a candidate from serving.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rejection {
    /// What was rejected: `config`, a plugin file, `bundled plugin NAME`.
    pub what: String,
    /// Why, in one line; never a secret.
    pub reason: String,
}

/// What a plugin's fixtures gave when the candidate was judged.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FixtureSummary {
    pub plugin: String,
    pub version: String,
    /// The fixtures file, or `bundled`.
    pub fixtures: String,
    pub passed: usize,
    pub failed: usize,
}

/// Where a plugin's fixtures are: `NAME.fixtures.json` beside its file, or the bundled
/// plugin's own.
fn fixtures_of(plugin: &Plugin, origin: &PluginOrigin) -> Option<(String, Result<String, String>)> {
    match origin {
        PluginOrigin::Bundled => {
            bundled_fixtures(plugin.name()).map(|text| ("bundled".to_owned(), Ok(text.to_owned())))
        }
        PluginOrigin::Path(file) => {
            let sidecar = sidecar_fixtures(file);
            sidecar.is_file().then(|| {
                let text = std::fs::read_to_string(&sidecar).map_err(|e| e.to_string());
                (sidecar.display().to_string(), text)
            })
        }
    }
}

/// `dir/NAME.fixtures.json` for `dir/NAME.wasm`.
pub fn sidecar_fixtures(wasm: &Path) -> PathBuf {
    wasm.with_extension("fixtures.json")
}

/// Judges the plugins of `candidate` that `running` does not already serve (new, or the
/// same name with other bytes): each must pass its fixtures, when it ships any. Blocking:
/// runs guest code. Returns the fixture runs and what failed.
pub fn gate_plugins(
    candidate: &PluginRegistry,
    running: &PluginRegistry,
) -> (Vec<FixtureSummary>, Vec<Rejection>) {
    let mut summaries = Vec::new();
    let mut rejections: Vec<Rejection> = candidate
        .errors()
        .iter()
        .map(|error| Rejection {
            what: match error.bundled_name {
                Some(name) => format!("bundled plugin {name}"),
                None => error.origin.to_string(),
            },
            reason: error.error.to_string(),
        })
        .collect();
    for info in candidate.list() {
        if running
            .get(&info.name)
            .is_some_and(|p| p.sha256_hex() == info.sha256)
        {
            continue;
        }
        let Some(plugin) = candidate.get(&info.name) else {
            continue;
        };
        let Some((fixtures_name, text)) = fixtures_of(plugin, &info.origin) else {
            tracing::info!(plugin = %info.name, version = %info.version, "plugin ships no fixtures; loaded unchecked");
            continue;
        };
        let what = info.origin.to_string();
        let fixtures = match text.map_err(|e| format!("cannot read {fixtures_name}: {e}")) {
            Ok(text) => load_fixtures(&text)
                .map_err(|e| format!("{fixtures_name} is not a fixtures file: {e}")),
            Err(reason) => Err(reason),
        };
        let fixtures = match fixtures {
            Ok(fixtures) => fixtures,
            Err(reason) => {
                rejections.push(Rejection { what, reason });
                continue;
            }
        };
        let report = run_fixtures(plugin, &fixtures);
        if let Some(failed) = report.results.iter().find(|r| !r.passed) {
            rejections.push(Rejection {
                what,
                reason: format!(
                    "fixture \"{}\" of {} failed: {}",
                    failed.name,
                    report.plugin,
                    failed.mismatch.as_deref().unwrap_or(&failed.outcome)
                ),
            });
        }
        summaries.push(FixtureSummary {
            plugin: info.name.clone(),
            version: info.version.clone(),
            fixtures: fixtures_name,
            passed: report.passed(),
            failed: report.failed(),
        });
    }
    (summaries, rejections)
}
