//! Builds the WebAssembly source plugins that ship inside the gateway (`shopify`, `stripe`,
//! `github`, `standard-webhooks`, `slack`, `discord`, `generic-hmac`)
//! and the test plugins (`chaos`, `partial`) for `wasm32-wasip2`, with a nested
//! `cargo build --release`.
//!
//! Where ops find the `.wasm` files: `target/wasm-plugins/wasm32-wasip2/release/` at the
//! workspace root (`shopify.wasm`, `stripe.wasm`; the test plugins `chaos.wasm` and
//! `partial.wasm` sit beside them). `hookgate plugins export DIR` writes the bundled ones
//! out as well. The directory is handed to the crate as `HOOKGATE_WASM_DIR`.
//!
//! The nested build gets its own target directory and none of the outer build's cargo
//! configuration from the environment (flags, target, profile, jobserver, clippy wrapper):
//! the outer build may be for another target, with other flags, or a clippy run.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

/// Workspace packages built into `.wasm` files.
const PACKAGES: &[&str] = &[
    "hookgate-plugin-shopify",
    "hookgate-plugin-stripe",
    "hookgate-plugin-github",
    "hookgate-plugin-standard-webhooks",
    "hookgate-plugin-slack",
    "hookgate-plugin-discord",
    "hookgate-plugin-generic-hmac",
    "hookgate-test-plugin-chaos",
    "hookgate-test-plugin-partial",
];

/// Sources whose change must rebuild the plugins.
const WATCHED: &[&str] = &[
    "wit",
    "gateway/wit",
    "plugin-sdk/src",
    "plugin-sdk/Cargo.toml",
    "plugins",
    "gateway/tests/plugins",
    "Cargo.lock",
];

/// Environment variables (besides the `CARGO_*` family) through which the outer build's
/// configuration would leak into the nested one.
const CLEARED: &[&str] = &[
    "RUSTFLAGS",
    "RUSTDOCFLAGS",
    "RUSTC_WORKSPACE_WRAPPER",
    "CLIPPY_ARGS",
    "CLIPPY_CONF_DIR",
    "MAKEFLAGS",
    "MFLAGS",
    "TARGET",
    "HOST",
    "OUT_DIR",
    "PROFILE",
    "OPT_LEVEL",
    "DEBUG",
    "NUM_JOBS",
    "RUSTC_LINKER",
];

/// `CARGO_*` variables the nested build may keep: where cargo lives, its registry and
/// network settings. Everything else in that family configures the outer build.
const KEPT_CARGO: &[&str] = &[
    "CARGO_HOME",
    "CARGO_NET_OFFLINE",
    "CARGO_HTTP_",
    "CARGO_NET_",
    "CARGO_REGISTRIES_",
    "CARGO_REGISTRY_",
];

fn main() {
    if let Err(message) = run() {
        // A build script reports failure by exiting non-zero; the message is what the
        // developer reads.
        eprintln!("error: {message}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").ok_or("CARGO_MANIFEST_DIR is not set")?);
    let workspace = manifest_dir
        .parent()
        .ok_or("the gateway crate has no parent directory")?
        .to_path_buf();

    for path in WATCHED {
        println!("cargo:rerun-if-changed={}", workspace.join(path).display());
    }
    println!("cargo:rerun-if-changed=build.rs");

    ensure_target()?;

    let target_dir = workspace.join("target").join("wasm-plugins");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(&workspace)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            TARGET,
            "--target-dir",
        ])
        .arg(&target_dir);
    for package in PACKAGES {
        command.args(["-p", package]);
    }
    for (name, _) in env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        let cargo_var =
            name.starts_with("CARGO_") && !KEPT_CARGO.iter().any(|kept| name.starts_with(kept));
        if cargo_var || CLEARED.contains(&name) || name.starts_with("__CARGO") {
            command.env_remove(name);
        }
    }

    // Line tables would triple the size of the embedded plugins and nothing reads them:
    // traps are reported with the name section's function names.
    command.env("CARGO_PROFILE_RELEASE_DEBUG", "false");

    let status = command
        .status()
        .map_err(|e| format!("could not run cargo to build the plugins: {e}"))?;
    if !status.success() {
        return Err(format!(
            "building the WebAssembly plugins ({}) for {TARGET} failed ({status}); see the cargo output above",
            PACKAGES.join(", ")
        ));
    }

    let out = target_dir.join(TARGET).join("release");
    for name in [
        "shopify",
        "stripe",
        "github",
        "standard_webhooks",
        "slack",
        "discord",
        "generic_hmac",
        "chaos",
        "partial",
    ] {
        let file = out.join(format!("{name}.wasm"));
        if !file.is_file() {
            return Err(format!(
                "the plugin build did not produce {}",
                file.display()
            ));
        }
    }
    println!("cargo:rustc-env=HOOKGATE_WASM_DIR={}", out.display());
    Ok(())
}

/// Makes sure the standard library for `wasm32-wasip2` is installed, installing it with
/// rustup when possible: rust-toolchain.toml names it, but rustup installs listed targets
/// only when it installs the toolchain itself.
fn ensure_target() -> Result<(), String> {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| format!("could not run rustc to find its sysroot: {e}"))?;
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_string();
    if has_target(Path::new(&sysroot)) {
        return Ok(());
    }
    let added = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if added && has_target(Path::new(&sysroot)) {
        return Ok(());
    }
    Err(format!(
        "the Rust target {TARGET} is not installed (needed to build the bundled plugins). \
         Install it with `rustup target add {TARGET}` (run in the repository so the pinned \
         toolchain gets it), then build again"
    ))
}

fn has_target(sysroot: &Path) -> bool {
    sysroot
        .join("lib")
        .join("rustlib")
        .join(TARGET)
        .join("lib")
        .is_dir()
}
