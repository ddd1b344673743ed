//! Loading a plugin: recognise the bytes, compile them (through an on-disk cache of
//! compiled artifacts), check that the component implements `source-plugin`, build its
//! `InstancePre` once and ask it who it is.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use wasmtime::Store;
use wasmtime::component::Component;

use super::engine::{PluginEngine, one_line};
use super::fault::classify_trap;
use super::state::CallState;
use super::types::{Metadata, validate_metadata};
use super::{v0_1, v0_2};

/// Why a plugin could not be loaded. `Display` is one line naming the problem.
#[derive(Debug, thiserror::Error)]
pub enum PluginLoadError {
    /// The file could not be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// The bytes are not WebAssembly at all.
    #[error("not a WebAssembly file (no \\0asm header)")]
    NotWasm,
    /// A core module was given where a component is needed.
    #[error(
        "a core WebAssembly module, not a component: build the plugin for wasm32-wasip2 (or run it through `wasm-tools component new`)"
    )]
    NotAComponent,
    /// The component does not implement the `source-plugin` world of any contract
    /// version the gateway knows.
    #[error(
        "not a hookgate source plugin (world hookgate:plugin/source-plugin, contract 0.2.0 or 0.1.0): {0}"
    )]
    WrongWorld(String),
    /// The plugin's metadata is unusable.
    #[error("bad plugin metadata: {0}")]
    BadMetadata(String),
    /// wasmtime could not compile or instantiate the component.
    #[error("cannot compile the component: {0}")]
    Compile(String),
    /// `metadata()` trapped, ran out of time or memory.
    #[error("metadata() failed: {0}")]
    MetadataCall(String),
    /// A plugin directory file is named after another plugin than the one inside it.
    #[error("file {file} holds plugin {name:?}; name the file {name}.wasm")]
    NameMismatch {
        /// The file.
        file: PathBuf,
        /// The plugin's metadata name.
        name: String,
    },
}

/// Where a compiled component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompiledFrom {
    /// Compiled now (and written to the cache, if any).
    Compiled,
    /// Read from the on-disk cache of compiled artifacts.
    Cache,
}

/// The contract versions the gateway serves; a component is served by the one it was
/// built against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Contract {
    /// `hookgate:plugin@0.1.0`: the request copied in, HMAC only.
    V0_1,
    /// `hookgate:plugin@0.2.0`: the request as a resource, message parts, public keys.
    V0_2,
}

impl Contract {
    /// The contract's version, as its WIT package names it.
    pub fn version(self) -> &'static str {
        match self {
            Self::V0_1 => "0.1.0",
            Self::V0_2 => "0.2.0",
        }
    }

    /// The version a component imports the contract's interfaces at; `None` when it
    /// imports none of them (then it is not a source plugin of any version).
    fn of(component: &Component, engine: &wasmtime::Engine) -> Option<Self> {
        let imports: Vec<String> = component
            .component_type()
            .imports(engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        let imports_version = |version: &str| {
            imports.iter().any(|name| {
                name.strip_prefix("hookgate:plugin/")
                    .and_then(|rest| rest.split_once('@'))
                    .is_some_and(|(_, v)| v == version)
            })
        };
        [Self::V0_2, Self::V0_1]
            .into_iter()
            .find(|contract| imports_version(contract.version()))
    }
}

/// The pre-instantiated component, typed by its contract.
pub(crate) enum PluginPre {
    V0_1(v0_1::SourcePluginPre<CallState>),
    V0_2(v0_2::SourcePluginPre<CallState>),
}

impl PluginPre {
    fn contract(&self) -> Contract {
        match self {
            Self::V0_1(_) => Contract::V0_1,
            Self::V0_2(_) => Contract::V0_2,
        }
    }
}

/// A loaded, validated plugin, ready to serve calls.
pub struct Plugin {
    pub(crate) engine: PluginEngine,
    pub(crate) pre: PluginPre,
    pub(crate) name: Arc<str>,
    metadata: Metadata,
    sha256: [u8; 32],
    size: usize,
    compiled_from: CompiledFrom,
    /// This plugin's calls in flight (`PluginLimits::max_calls_per_plugin`).
    pub(crate) calls: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("metadata", &self.metadata)
            .field("sha256", &self.sha256_hex())
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    /// What the plugin said about itself at load.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The plugin's name (from its metadata).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// SHA-256 of the component's bytes.
    pub fn sha256(&self) -> [u8; 32] {
        self.sha256
    }

    /// SHA-256 of the component's bytes, lower-case hex.
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }

    /// Size of the component, in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether the compiled code came from the cache.
    pub fn compiled_from(&self) -> CompiledFrom {
        self.compiled_from
    }

    /// The contract version the component was built against.
    pub fn contract(&self) -> Contract {
        self.pre.contract()
    }
}

/// Options for loading.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Directory of compiled artifacts; none compiles every time.
    pub cache_dir: Option<PathBuf>,
}

impl PluginEngine {
    /// Loads a plugin from its component bytes, without a compile cache.
    pub fn load(&self, wasm: &[u8]) -> Result<Arc<Plugin>, PluginLoadError> {
        self.load_with(wasm, &LoadOptions::default())
    }

    /// Loads a plugin from its component bytes.
    pub fn load_with(
        &self,
        wasm: &[u8],
        options: &LoadOptions,
    ) -> Result<Arc<Plugin>, PluginLoadError> {
        classify_bytes(wasm)?;
        let sha256: [u8; 32] = Sha256::digest(wasm).into();
        let (component, compiled_from) =
            self.compile(wasm, &sha256, options.cache_dir.as_deref())?;

        let instance_pre = self
            .shared
            .linker
            .instantiate_pre(&component)
            .map_err(|e| PluginLoadError::WrongWorld(one_line(&e)))?;
        let wrong_world = |e: wasmtime::Error| PluginLoadError::WrongWorld(one_line(&e));
        // A component that imports no contract interface is judged against the current
        // contract, which names what it lacks.
        let pre = match Contract::of(&component, &self.shared.engine).unwrap_or(Contract::V0_2) {
            Contract::V0_1 => {
                PluginPre::V0_1(v0_1::SourcePluginPre::new(instance_pre).map_err(wrong_world)?)
            }
            Contract::V0_2 => {
                PluginPre::V0_2(v0_2::SourcePluginPre::new(instance_pre).map_err(wrong_world)?)
            }
        };

        let metadata = self.call_metadata(&pre)?;
        validate_metadata(&metadata).map_err(PluginLoadError::BadMetadata)?;

        Ok(Arc::new(Plugin {
            engine: self.clone(),
            pre,
            name: Arc::from(metadata.name.as_str()),
            metadata,
            sha256,
            size: wasm.len(),
            compiled_from,
            calls: Arc::new(tokio::sync::Semaphore::new(
                self.shared
                    .limits
                    .max_calls_per_plugin
                    .clamp(1, tokio::sync::Semaphore::MAX_PERMITS),
            )),
        }))
    }

    fn call_metadata(&self, pre: &PluginPre) -> Result<Metadata, PluginLoadError> {
        let mut store = self.new_store(Arc::from("(loading)"), "load", None);
        let called = match pre {
            PluginPre::V0_1(pre) => pre
                .instantiate(&mut store)
                .and_then(|i| i.call_metadata(&mut store))
                .map(v0_1::metadata_from_wit),
            PluginPre::V0_2(pre) => pre
                .instantiate(&mut store)
                .and_then(|i| i.call_metadata(&mut store))
                .map(v0_2::metadata_from_wit),
        };
        called
            .map_err(|e| PluginLoadError::MetadataCall(classify_trap(&e, store.data()).to_string()))
    }

    pub(crate) fn new_store(
        &self,
        plugin: Arc<str>,
        correlation_id: &str,
        now: Option<i64>,
    ) -> Store<CallState> {
        let shared = &self.shared;
        let state = CallState::new(plugin, correlation_id, now, shared.limits.memory_bytes);
        let mut store = Store::new(&shared.engine, state);
        store.limiter(|s| s.limiter());
        store.set_epoch_deadline(shared.deadline_ticks);
        store
    }

    fn compile(
        &self,
        wasm: &[u8],
        sha256: &[u8; 32],
        cache_dir: Option<&Path>,
    ) -> Result<(Component, CompiledFrom), PluginLoadError> {
        let engine = &self.shared.engine;
        let Some(dir) = cache_dir else {
            let c =
                Component::new(engine, wasm).map_err(|e| PluginLoadError::Compile(one_line(&e)))?;
            return Ok((c, CompiledFrom::Compiled));
        };

        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let name = format!(
            "{}-{:016x}.{CACHE_EXTENSION}",
            hex::encode(sha256),
            hasher.finish()
        );
        let file = dir.join(&name);
        // Without a usable key (a directory someone else owns, a read-only disk) the cache
        // is not used at all: compiling only costs time.
        let key = cache_key(dir)
            .inspect_err(|e| {
                tracing::warn!(cache = %dir.display(), error = %e, "plugin compile cache unusable; compiling");
            })
            .ok();

        if let Some(key) = &key
            && let Some(component) = self.read_cached(&file, &name, key)
        {
            return Ok((component, CompiledFrom::Cache));
        }

        let artifact = engine
            .precompile_component(wasm)
            .map_err(|e| PluginLoadError::Compile(one_line(&e)))?;
        // SAFETY: `artifact` was produced just now by this very engine.
        let component = unsafe { Component::deserialize(engine, &artifact) }
            .map_err(|e| PluginLoadError::Compile(one_line(&e)))?;
        if let Some(key) = &key
            && let Err(e) = write_cached(dir, &file, &name, key, &artifact)
        {
            // The cache only saves time: a read-only or full disk must not stop loading.
            tracing::warn!(cache = %file.display(), error = %e, "cannot write the plugin compile cache");
        }
        Ok((component, CompiledFrom::Compiled))
    }

    fn read_cached(&self, file: &Path, name: &str, key: &[u8; 32]) -> Option<Component> {
        let bytes = std::fs::read(file).ok()?;
        if bytes.len() <= MAC_LEN {
            return None;
        }
        let (mac, artifact) = bytes.split_at(MAC_LEN);
        if cache_mac(key, name)
            .chain_update(artifact)
            .verify_slice(mac)
            .is_err()
        {
            tracing::warn!(cache = %file.display(), "ignoring a plugin compile cache file this install did not write (or a damaged one)");
            return None;
        }
        // SAFETY: wasmtime runs a deserialized artifact as native code without checking
        // it. The file carries the MAC of this install's key (kept in a 0700 directory of
        // the gateway's user) over its name and bytes: only this gateway wrote it, for
        // these exact component bytes and this engine's compatibility hash.
        match unsafe { Component::deserialize(&self.shared.engine, artifact) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(cache = %file.display(), error = %one_line(&e), "ignoring an unusable plugin compile cache file");
                None
            }
        }
    }
}

/// Cache files: `<sha256>-<engine hash>.acwasm`, a MAC then the artifact.
const CACHE_EXTENSION: &str = "acwasm";
const MAC_LEN: usize = 32;
/// The install's cache key, in the cache directory.
const KEY_FILE: &str = "cache.key";

fn cache_mac(key: &[u8; 32], name: &str) -> Hmac<Sha256> {
    // A key of any length is accepted: this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(name.as_bytes());
    mac.update(b"\0");
    mac
}

/// Makes `dir` a directory of this user only (0700), refusing one another user owns,
/// then reads its key, or makes one (32 random bytes, 0600) on first use.
fn cache_key(dir: &Path) -> std::io::Result<[u8; 32]> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = std::fs::metadata(dir)?;
    // Linux: /proc/self is owned by the process's user.
    if let Ok(me) = std::fs::metadata("/proc/self")
        && meta.uid() != me.uid()
    {
        return Err(std::io::Error::other(format!(
            "owned by uid {}, not this process's uid {}",
            meta.uid(),
            me.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let path = dir.join(KEY_FILE);
    let read = |path: &Path| -> std::io::Result<[u8; 32]> {
        let bytes = std::fs::read(path)?;
        <[u8; 32]>::try_from(bytes.as_slice())
            .map_err(|_| std::io::Error::other(format!("{} is not 32 bytes", path.display())))
    };
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(mut file) => {
            use chacha20poly1305::aead::{KeyInit, OsRng};
            use std::io::Write;
            let key: [u8; 32] =
                chacha20poly1305::XChaCha20Poly1305::generate_key(&mut OsRng).into();
            file.write_all(&key)?;
            file.sync_all()?;
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // Another loader may be writing it this instant: give it a moment.
            for _ in 0..50 {
                if let Ok(key) = read(&path) {
                    return Ok(key);
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            read(&path)
        }
        Err(e) => Err(e),
    }
}

fn write_cached(
    dir: &Path,
    file: &Path,
    name: &str,
    key: &[u8; 32],
    artifact: &[u8],
) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mac = cache_mac(key, name)
        .chain_update(artifact)
        .finalize()
        .into_bytes();
    let mut contents = Vec::with_capacity(MAC_LEN + artifact.len());
    contents.extend_from_slice(&mac);
    contents.extend_from_slice(artifact);
    // Written aside then renamed, so a concurrent loader never reads half a file.
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    std::io::Write::write_all(&mut out, &contents)?;
    drop(out);
    std::fs::rename(&tmp, file).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Tells components from core modules and from non-WebAssembly bytes by their preamble.
fn classify_bytes(wasm: &[u8]) -> Result<(), PluginLoadError> {
    const MAGIC: &[u8] = b"\0asm";
    if wasm.len() < 8 || &wasm[..4] != MAGIC {
        return Err(PluginLoadError::NotWasm);
    }
    // Bytes 4..6 are the version, 6..8 the layer: 0 for core modules, 1 for components.
    match wasm[6..8] {
        [0, 0] => Err(PluginLoadError::NotAComponent),
        [1, 0] => Ok(()),
        _ => Err(PluginLoadError::Compile("unknown WebAssembly layer".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preamble_classification() {
        assert!(matches!(classify_bytes(b""), Err(PluginLoadError::NotWasm)));
        assert!(matches!(
            classify_bytes(b"{\"json\": 1}"),
            Err(PluginLoadError::NotWasm)
        ));
        assert!(matches!(
            classify_bytes(b"\0asm\x01\0\0\0"),
            Err(PluginLoadError::NotAComponent)
        ));
        assert!(classify_bytes(b"\0asm\x0d\0\x01\0").is_ok());
    }
}
