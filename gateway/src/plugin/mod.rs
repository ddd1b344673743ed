//! The plugin host: loads source plugins (WASM components) and runs them sandboxed.
//!
//! One [`PluginEngine`] per process; [`PluginEngine::load`] compiles and validates a
//! component once; [`Plugin::process`] runs each webhook on a fresh instance under a
//! deadline and a memory cap. [`PluginRegistry`] holds the loaded plugins by name.

mod call;
mod check;
mod convert;
mod engine;
mod fault;
mod fixtures;
mod guest_threads;
mod load;
mod registry;
pub mod scaffold;
mod state;
mod types;
mod v0_1;
mod v0_2;

use std::path::{Path, PathBuf};

pub use call::{
    Call, CallInput, MapFailure, OwnedCallInput, Processed, TenantLookup, VerifiedCall,
};
pub use check::{CheckReport, check_file};
pub use engine::{EPOCH_TICK, EngineError, PluginEngine, PluginLimits};
pub use fault::PluginFault;
pub use fixtures::{
    Expectation, ExpectedEvent, ExpectedHandshake, ExpectedTime, Fixture, FixtureError,
    FixtureReport, FixtureRequest, FixtureResult, bundled_fixtures, load_fixtures, run_fixtures,
};
pub use load::{CompiledFrom, Contract, LoadOptions, Plugin, PluginLoadError};
pub use registry::{PluginInfo, PluginOrigin, PluginRegistry, RegistryError, RegistryOptions};
pub use types::{
    Credentials, DomainEvent, Handshake, MapError, MapOutcome, Mapping, Metadata, OutputLimits,
    Settings, Timestamp, VerifyError, WebhookRequest,
};

/// The plugins built into the gateway binary, as (name, component bytes).
pub fn bundled() -> &'static [(&'static str, &'static [u8])] {
    macro_rules! plugin {
        ($name:literal, $file:literal) => {
            (
                $name,
                include_bytes!(concat!(env!("HOOKGATE_WASM_DIR"), "/", $file, ".wasm")),
            )
        };
    }
    &[
        plugin!("shopify", "shopify"),
        plugin!("stripe", "stripe"),
        plugin!("github", "github"),
        plugin!("standard-webhooks", "standard_webhooks"),
        plugin!("slack", "slack"),
        plugin!("discord", "discord"),
        plugin!("generic-hmac", "generic_hmac"),
    ]
}

/// Writes the bundled plugins into `dir` as `<name>.wasm` (created if missing), for ops
/// who want to inspect or pin them; returns the files written.
pub fn export_bundled(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for (name, bytes) in bundled() {
        let file = dir.join(format!("{name}.wasm"));
        std::fs::write(&file, bytes)?;
        written.push(file);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_plugins_are_components_and_export_writes_them() {
        let names: Vec<_> = bundled().iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "shopify",
                "stripe",
                "github",
                "standard-webhooks",
                "slack",
                "discord",
                "generic-hmac"
            ]
        );
        for (name, bytes) in bundled() {
            assert!(
                bytes.starts_with(b"\0asm\x0d\0\x01\0"),
                "{name} is not a component"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let written = export_bundled(&dir.path().join("out")).unwrap();
        assert_eq!(written.len(), bundled().len());
        for ((_, bytes), file) in bundled().iter().zip(&written) {
            assert_eq!(std::fs::read(file).unwrap(), *bytes);
        }
    }
}
