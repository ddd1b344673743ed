//! `hookgate plugins check FILE.wasm`: load one plugin file, validate it and describe it.

use std::fmt;
use std::path::Path;

use super::engine::PluginEngine;
use super::load::{Contract, LoadOptions, Plugin, PluginLoadError, PluginPre};
use super::types::Metadata;

/// What `plugins check` reports about a plugin that loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// What the plugin says about itself.
    pub metadata: Metadata,
    /// SHA-256 of the file, hex.
    pub sha256: String,
    /// Size of the file, in bytes.
    pub size: usize,
    /// The contract version it was built against.
    pub contract: Contract,
    /// The interfaces the component imports, as it names them: the contract's, and any
    /// WASI ones its toolchain added (linked, but granting nothing).
    pub imports: Vec<String>,
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.metadata;
        writeln!(f, "name:         {}", m.name)?;
        writeln!(f, "version:      {}", m.version)?;
        writeln!(f, "description:  {}", m.description)?;
        writeln!(f, "retry window: {} h", m.retry_window_hours)?;
        writeln!(f, "sha256:       {}", self.sha256)?;
        writeln!(f, "size:         {} bytes", self.size)?;
        writeln!(
            f,
            "contract:     hookgate:plugin@{}",
            self.contract.version()
        )?;
        writeln!(f, "imports:      {}", self.imports.join(", "))?;
        write!(f, "exports:      metadata, tenant-hint, verify, map: OK")
    }
}

/// Loads and validates the plugin in `path` the way the gateway would (exports, metadata;
/// the file name need not match). The error's `Display` is one line naming the problem.
pub fn check_file(engine: &PluginEngine, path: &Path) -> Result<CheckReport, PluginLoadError> {
    let bytes = std::fs::read(path).map_err(|e| PluginLoadError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let plugin = engine.load_with(&bytes, &LoadOptions::default())?;
    Ok(CheckReport {
        metadata: plugin.metadata().clone(),
        sha256: plugin.sha256_hex(),
        size: plugin.size(),
        contract: plugin.contract(),
        imports: imports(&plugin),
    })
}

/// The component's import names, in the order it declares them.
fn imports(plugin: &Plugin) -> Vec<String> {
    let component = match &plugin.pre {
        PluginPre::V0_1(pre) => pre.instance_pre().component(),
        PluginPre::V0_2(pre) => pre.instance_pre().component(),
    };
    let engine = &plugin.engine.shared.engine;
    component
        .component_type()
        .imports(engine)
        .map(|(name, _)| name.to_owned())
        .collect()
}
