//! The set of loaded plugins by name: the bundled ones, overridden by those in the plugin
//! directory. Built whole from (engine, directory) so a reload can build a new one aside
//! and swap it in.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::engine::PluginEngine;
use super::load::{LoadOptions, Plugin, PluginLoadError};

/// Where a plugin was loaded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginOrigin {
    /// Embedded in the gateway binary.
    Bundled,
    /// A file in the plugin directory.
    Path(PathBuf),
}

impl fmt::Display for PluginOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bundled => f.write_str("bundled"),
            Self::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

/// One line of [`PluginRegistry::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// The plugin's name.
    pub name: String,
    /// Its semantic version.
    pub version: String,
    /// SHA-256 of its bytes, hex.
    pub sha256: String,
    /// Where it came from.
    pub origin: PluginOrigin,
}

/// A plugin that failed to load, kept for the admin API and health.
#[derive(Debug)]
pub struct RegistryError {
    /// What failed (a bundled plugin's name or a file).
    pub origin: PluginOrigin,
    /// For a bundled plugin, its name.
    pub bundled_name: Option<&'static str>,
    /// Why.
    pub error: PluginLoadError,
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.bundled_name, &self.origin) {
            (Some(name), _) => write!(f, "bundled plugin {name}: {}", self.error),
            (None, origin) => write!(f, "{origin}: {}", self.error),
        }
    }
}

/// Options for building a registry.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Directory of `*.wasm` plugins overriding or adding to the bundled ones.
    pub dir: Option<PathBuf>,
    /// Compile cache directory.
    pub cache_dir: Option<PathBuf>,
    /// Skip the bundled plugins (tests, or ops who ship every plugin in the directory).
    pub skip_bundled: bool,
    /// Load only these bundled plugins (the ones the sources use): each one compiled at
    /// start costs start-up time, and most deployments use two or three. `None` loads all.
    pub bundled_only: Option<BTreeSet<String>>,
    /// The registry in service: a component with the same SHA-256 as one of its plugins
    /// is taken from it instead of being compiled and validated again (a reload with one
    /// new file costs that file only).
    pub previous: Option<PluginRegistry>,
}

struct Entry {
    plugin: Arc<Plugin>,
    origin: PluginOrigin,
}

struct Inner {
    plugins: BTreeMap<String, Entry>,
    errors: Vec<RegistryError>,
}

/// Loaded plugins by name. Cheap to clone.
#[derive(Clone)]
pub struct PluginRegistry {
    inner: Arc<Inner>,
}

impl fmt::Debug for PluginRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginRegistry")
            .field("plugins", &self.inner.plugins.keys().collect::<Vec<_>>())
            .field("errors", &self.inner.errors.len())
            .finish()
    }
}

impl PluginRegistry {
    /// Loads the bundled plugins, then every `*.wasm` in `options.dir`. A file overrides
    /// the bundled plugin of the same name; a file whose stem is not its plugin's name is
    /// an error. Failures are collected per plugin, never fatal to the others (a broken
    /// `shopify.wasm` leaves the bundled `shopify` in service and shows in `errors()`).
    pub fn build(engine: &PluginEngine, options: &RegistryOptions) -> Self {
        let load = LoadOptions {
            cache_dir: options.cache_dir.clone(),
        };
        let mut plugins = BTreeMap::new();
        let mut errors = Vec::new();

        if !options.skip_bundled {
            let wanted = |name: &str| {
                options
                    .bundled_only
                    .as_ref()
                    .is_none_or(|only| only.contains(name))
            };
            for (name, bytes) in super::bundled().iter().filter(|(name, _)| wanted(name)) {
                match load_or_reuse(engine, bytes, &load, options.previous.as_ref()) {
                    Ok(plugin) => {
                        plugins.insert(
                            plugin.name().to_string(),
                            Entry {
                                plugin,
                                origin: PluginOrigin::Bundled,
                            },
                        );
                    }
                    Err(error) => errors.push(RegistryError {
                        origin: PluginOrigin::Bundled,
                        bundled_name: Some(name),
                        error,
                    }),
                }
            }
        }

        if let Some(dir) = &options.dir {
            match wasm_files(dir) {
                Err(error) => errors.push(RegistryError {
                    origin: PluginOrigin::Path(dir.clone()),
                    bundled_name: None,
                    error,
                }),
                Ok(files) => {
                    for file in files {
                        match load_file(engine, &file, &load, options.previous.as_ref()) {
                            Ok(plugin) => {
                                if plugins.contains_key(plugin.name()) {
                                    tracing::info!(
                                        plugin = plugin.name(),
                                        file = %file.display(),
                                        "plugin file overrides the bundled plugin"
                                    );
                                }
                                plugins.insert(
                                    plugin.name().to_string(),
                                    Entry {
                                        plugin,
                                        origin: PluginOrigin::Path(file),
                                    },
                                );
                            }
                            Err(error) => errors.push(RegistryError {
                                origin: PluginOrigin::Path(file),
                                bundled_name: None,
                                error,
                            }),
                        }
                    }
                }
            }
        }

        Self {
            inner: Arc::new(Inner { plugins, errors }),
        }
    }

    /// The plugin called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Plugin>> {
        self.inner.plugins.get(name).map(|e| &e.plugin)
    }

    /// Every loaded plugin, by name.
    pub fn list(&self) -> Vec<PluginInfo> {
        self.inner
            .plugins
            .iter()
            .map(|(name, e)| PluginInfo {
                name: name.clone(),
                version: e.plugin.metadata().version.clone(),
                sha256: e.plugin.sha256_hex(),
                origin: e.origin.clone(),
            })
            .collect()
    }

    /// The plugins that failed to load.
    pub fn errors(&self) -> &[RegistryError] {
        &self.inner.errors
    }

    /// Where the plugin called `name` came from.
    pub fn origin(&self, name: &str) -> Option<&PluginOrigin> {
        self.inner.plugins.get(name).map(|e| &e.origin)
    }

    fn by_sha256(&self, sha256: &[u8; 32]) -> Option<&Arc<Plugin>> {
        self.inner
            .plugins
            .values()
            .map(|e| &e.plugin)
            .find(|p| p.sha256() == *sha256)
    }
}

/// Loads a component, or takes the plugin of the same bytes from `previous`.
fn load_or_reuse(
    engine: &PluginEngine,
    bytes: &[u8],
    options: &LoadOptions,
    previous: Option<&PluginRegistry>,
) -> Result<Arc<Plugin>, PluginLoadError> {
    if let Some(previous) = previous {
        let sha256: [u8; 32] = Sha256::digest(bytes).into();
        if let Some(plugin) = previous.by_sha256(&sha256) {
            return Ok(plugin.clone());
        }
    }
    engine.load_with(bytes, options)
}

/// `*.wasm` files directly in `dir`, sorted so loading (and its error list) is stable.
fn wasm_files(dir: &Path) -> Result<Vec<PathBuf>, PluginLoadError> {
    let read_err = |e: std::io::Error| PluginLoadError::Read {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let path = entry.map_err(read_err)?.path();
        if path.extension().is_some_and(|e| e == "wasm") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Loads one plugin file and checks that its name matches the file's stem.
pub(crate) fn load_file(
    engine: &PluginEngine,
    file: &Path,
    options: &LoadOptions,
    previous: Option<&PluginRegistry>,
) -> Result<Arc<Plugin>, PluginLoadError> {
    let bytes = std::fs::read(file).map_err(|e| PluginLoadError::Read {
        path: file.to_path_buf(),
        reason: e.to_string(),
    })?;
    let plugin = load_or_reuse(engine, &bytes, options, previous)?;
    let stem = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    if stem != plugin.name() {
        return Err(PluginLoadError::NameMismatch {
            file: file.to_path_buf(),
            name: plugin.name().to_string(),
        });
    }
    Ok(plugin)
}
