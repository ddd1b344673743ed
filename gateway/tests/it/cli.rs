//! The command line: `--help`, `plugins export` and `plugins check` on good and bad files.

use std::process::Command;

use crate::support::wasm_dir;

fn hookgate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(args)
        .env_clear()
        .output()
        .expect("run hookgate")
}

#[test]
fn help_lists_the_commands() {
    let output = hookgate(&["--help"]);
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    for command in ["serve", "migrate", "plugins", "send", "replay"] {
        assert!(
            text.contains(command),
            "{command} missing from --help: {text}"
        );
    }
}

#[test]
fn plugins_export_then_check_prints_metadata() {
    let dir = tempfile::tempdir().expect("dir");
    let export = hookgate(&["plugins", "export", &dir.path().display().to_string()]);
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    for name in ["shopify", "stripe"] {
        let path = dir.path().join(format!("{name}.wasm"));
        let check = hookgate(&["plugins", "check", &path.display().to_string()]);
        let text = String::from_utf8_lossy(&check.stdout);
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stderr)
        );
        assert!(text.contains(name) && text.contains("0.1.0"), "{text}");
        // What an author checks first: which contract, what it imports, how big.
        assert!(
            text.contains("contract:     hookgate:plugin@0.2.0"),
            "{text}"
        );
        assert!(
            text.lines().any(|l| l.starts_with("imports:")
                && l.contains("hookgate:plugin/host@0.2.0")
                && l.contains("hookgate:plugin/types@0.2.0")),
            "{text}"
        );
        let size = std::fs::metadata(&path).expect("exported file").len();
        assert!(
            text.contains(&format!("size:         {size} bytes")),
            "{text}"
        );
    }
}

#[test]
fn plugins_check_refuses_bad_files_in_one_line() {
    let dir = tempfile::tempdir().expect("dir");
    let text_file = dir.path().join("notes.wasm");
    std::fs::write(&text_file, "hello").expect("write");
    let core_module = dir.path().join("core.wasm");
    std::fs::write(&core_module, b"\0asm\x01\0\0\0").expect("write");
    let cases = [
        (text_file, "not"),
        (core_module, "component"),
        (wasm_dir().join("partial.wasm"), "map"),
        (dir.path().join("missing.wasm"), "missing.wasm"),
    ];
    for (path, expected) in cases {
        let output = hookgate(&["plugins", "check", &path.display().to_string()]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{} accepted", path.display());
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.to_lowercase().contains(expected),
            "{} -> {stderr}",
            path.display()
        );
    }
}
