//! `hookgate plugins new NAME --lang rust|js|python`: each project builds with its own
//! `build.sh` and passes its own fixtures through `hookgate plugins test`, as a newcomer
//! would run them. A build is reused while the scaffolded files are unchanged.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

fn hookgate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(args)
        .output()
        .expect("run hookgate")
}

fn workspace_target() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target")
}

/// Scaffolds `name` in `lang`, builds it (unless a build of the same files exists) and
/// returns the component and the project directory.
fn scaffold_and_build(name: &str, lang: &str, dir: &Path) -> (PathBuf, PathBuf) {
    let project = dir.join(name);
    let project_arg = project.display().to_string();
    let created = hookgate(&[
        "plugins",
        "new",
        name,
        "--lang",
        lang,
        "--dir",
        &project_arg,
    ]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let mut files: Vec<PathBuf> = String::from_utf8_lossy(&created.stdout)
        .lines()
        .filter(|l| !l.starts_with("next:"))
        .map(PathBuf::from)
        .collect();
    files.sort();
    assert!(files.iter().all(|f| f.starts_with(&project)), "{files:?}");
    let mut hasher = Sha256::new();
    for file in &files {
        hasher.update(
            file.strip_prefix(&project)
                .unwrap()
                .to_string_lossy()
                .as_bytes(),
        );
        hasher.update(std::fs::read(file).expect("scaffolded file"));
    }
    let hash = hex::encode(hasher.finalize());
    let built = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("scaffolds")
        .join(format!("{name}-{}.wasm", &hash[..16]));
    if !built.is_file() {
        std::fs::create_dir_all(built.parent().unwrap()).expect("scaffold output dir");
        crate::example_plugins::require_toolchain(lang);
        let partial = built.with_extension("partial");
        let output = Command::new("bash")
            .arg(project.join("build.sh"))
            .arg(&partial)
            // The tools and the Rust dependencies are shared with the examples' builds.
            .env(
                "HOOKGATE_TOOLS_DIR",
                workspace_target().join("plugin-tools"),
            )
            .env(
                "CARGO_TARGET_DIR",
                Path::new(env!("CARGO_TARGET_TMPDIR")).join("scaffold-target"),
            )
            .output()
            .expect("run build.sh");
        assert!(
            output.status.success(),
            "the {lang} scaffold does not build:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        std::fs::rename(&partial, &built).expect("keep the build");
    }
    (built, project)
}

fn builds_and_passes_its_fixtures(name: &str, lang: &str) {
    let dir = tempfile::tempdir().expect("dir");
    let (wasm, project) = scaffold_and_build(name, lang, dir.path());
    let fixtures = project.join(format!("{name}.fixtures.json"));
    let tested = hookgate(&[
        "plugins",
        "test",
        &wasm.display().to_string(),
        "--fixtures",
        &fixtures.display().to_string(),
    ]);
    let stdout = String::from_utf8_lossy(&tested.stdout);
    assert!(
        tested.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&tested.stderr)
    );
    // The plugin is named after the project, and every fixture ran.
    assert!(stdout.starts_with(&format!("{name}@")), "{stdout}");
    assert!(stdout.contains("4 passed, 0 failed"), "{stdout}");
}

#[test]
fn rust_scaffold_builds_and_passes_its_fixtures() {
    builds_and_passes_its_fixtures("acme-rs", "rust");
}

#[test]
fn javascript_scaffold_builds_and_passes_its_fixtures() {
    builds_and_passes_its_fixtures("acme-js", "js");
}

#[test]
fn python_scaffold_builds_and_passes_its_fixtures() {
    builds_and_passes_its_fixtures("acme-py", "python");
}

#[test]
fn scaffold_refuses_a_bad_name_and_a_used_directory() {
    let dir = tempfile::tempdir().expect("dir");
    let bad = hookgate(&["plugins", "new", "Acme Billing", "--lang", "js"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a usable plugin name"));
    std::fs::write(dir.path().join("keep.txt"), "mine").expect("file");
    let used = hookgate(&[
        "plugins",
        "new",
        "acme",
        "--lang",
        "python",
        "--dir",
        &dir.path().display().to_string(),
    ]);
    assert_eq!(used.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&used.stderr).contains("not empty"));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("keep.txt")).unwrap(),
        "mine"
    );
}
