//! Builds the example plugins of `examples/plugins/` (JavaScript, Python) with their own
//! build scripts, once per content: the output is named after a hash of everything the
//! build reads (the plugin's directory and `wit/`), so a second `cargo test` reuses it and
//! any edit rebuilds it. The build needs npm or PyPI; a failure says so and fails the test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use sha2::{Digest, Sha256};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the gateway is in the workspace")
        .to_path_buf()
}

/// Every file under `dir` (sorted, skipping installed tool trees), into `hasher`.
fn hash_tree(hasher: &mut Sha256, root: &Path, dir: &Path) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if matches!(name, "node_modules" | "__pycache__" | ".venv" | "target") {
            continue;
        }
        if path.is_dir() {
            hash_tree(hasher, root, &path);
        } else {
            let relative = path.strip_prefix(root).unwrap_or(&path);
            hasher.update(relative.to_string_lossy().as_bytes());
            hasher.update([0]);
            let bytes = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            hasher.update((bytes.len() as u64).to_le_bytes());
            hasher.update(&bytes);
        }
    }
}

/// Makes sure the plugin toolchain of `lang` (`js`, `python`) can be installed: Node.js
/// with npm, or Python 3 with its `venv` module. On Debian as root they are installed when
/// missing, as the test servers are; elsewhere the build script's error names them.
pub fn require_toolchain(lang: &str) {
    let (present, packages): (fn() -> bool, &[&str]) = match lang {
        "js" => (|| runs("npm", &["--version"]), &["nodejs", "npm"]),
        "python" => (
            || {
                runs("python3", &["-m", "venv", "--help"])
                    && runs("python3", &["-m", "ensurepip", "--version"])
            },
            &["python3", "python3-venv"],
        ),
        _ => return,
    };
    if !present() {
        hookgate_test_services::private::apt_install(packages);
    }
}

fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The component of example plugin `name` (`github-js`, `github-py`), built if its inputs
/// changed since the last build.
pub fn example_plugin(name: &str) -> PathBuf {
    // Tests of one binary run in parallel: one build at a time, the others then find it.
    static BUILDING: OnceLock<Mutex<()>> = OnceLock::new();
    let _one_at_a_time = BUILDING
        .get_or_init(|| Mutex::new(()))
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());

    let root = workspace();
    let source = root.join("examples/plugins").join(name);
    let mut hasher = Sha256::new();
    hash_tree(&mut hasher, &root, &source);
    hash_tree(&mut hasher, &root, &root.join("wit"));
    let hash = hex::encode(hasher.finalize());
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("example-plugins");
    let out = out_dir.join(format!("{name}-{}.wasm", &hash[..16]));
    if out.is_file() {
        return out;
    }
    std::fs::create_dir_all(&out_dir).expect("example plugin dir");
    require_toolchain(if name.ends_with("-py") {
        "python"
    } else {
        "js"
    });
    let partial = out_dir.join(format!("{name}-{}.wasm.partial", &hash[..16]));
    let output = Command::new("bash")
        .arg(source.join("build.sh"))
        .arg(&partial)
        .current_dir(&root)
        .output()
        .unwrap_or_else(|e| panic!("cannot run bash for {name}'s build.sh: {e}"));
    assert!(
        output.status.success() && partial.is_file(),
        "building the example plugin {name} failed ({}); it needs Node.js/npm or Python 3 \
         and the npm or PyPI registry:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    // Renamed into place only once complete: an interrupted build is never reused.
    std::fs::rename(&partial, &out).expect("rename the built plugin");
    out
}
