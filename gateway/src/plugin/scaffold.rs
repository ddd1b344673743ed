//! `hookgate plugins new NAME --lang rust|js|python`: writes a plugin project that builds
//! and passes its own fixtures as it is. Each language's project starts from the GitHub
//! plugin of that language (the bundled Rust one, `examples/plugins/github-{js,py}`), so a
//! newcomer edits working code instead of a blank page; the templates are compiled into
//! the binary, so the command works anywhere.

use std::fmt;
use std::path::{Path, PathBuf};

/// The languages a plugin can be scaffolded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust with `hookgate-plugin-sdk`, built for wasm32-wasip2.
    Rust,
    /// JavaScript with componentize-js (npm).
    Js,
    /// Python with componentize-py (PyPI).
    Python,
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Rust => "rust",
            Self::Js => "js",
            Self::Python => "python",
        })
    }
}

/// Why a project could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// The name cannot name a plugin, a source and a package.
    #[error(
        "{0:?} is not a usable plugin name: lower-case letters, digits and '-', starting with a letter, at most 40 characters"
    )]
    BadName(String),
    /// The directory exists and holds something.
    #[error("{0} already exists and is not empty")]
    NotEmpty(PathBuf),
    /// Writing failed.
    #[error("cannot write {path}: {reason}")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
}

/// The contract every project builds against, as the gateway ships it.
const WIT: &str = include_str!("../../../wit/plugin.wit");
/// The GitHub fixtures: what the scaffolded plugin passes as it is.
const FIXTURES: &str = include_str!("../../templates/fixtures.json");

/// Files of a project: path relative to its directory, text, executable.
fn files(lang: Lang) -> &'static [(&'static str, &'static str, bool)] {
    match lang {
        Lang::Rust => &[
            (
                "Cargo.toml",
                include_str!("../../templates/rust/Cargo.toml"),
                false,
            ),
            (
                "src/lib.rs",
                include_str!("../../templates/rust/src/lib.rs"),
                false,
            ),
            (
                "build.sh",
                include_str!("../../templates/rust/build.sh"),
                true,
            ),
        ],
        Lang::Js => &[
            (
                "plugin.js",
                include_str!("../../../examples/plugins/github-js/github.js"),
                false,
            ),
            (
                "package.json",
                include_str!("../../templates/js/package.json"),
                false,
            ),
            (
                "package-lock.json",
                include_str!("../../templates/js/package-lock.json"),
                false,
            ),
            (
                "build.sh",
                include_str!("../../templates/js/build.sh"),
                true,
            ),
            ("wit/plugin.wit", WIT, false),
        ],
        Lang::Python => &[
            (
                "app.py",
                include_str!("../../../examples/plugins/github-py/app.py"),
                false,
            ),
            (
                "requirements.txt",
                include_str!("../../templates/python/requirements.txt"),
                false,
            ),
            (
                "build.sh",
                include_str!("../../templates/python/build.sh"),
                true,
            ),
            ("wit/plugin.wit", WIT, false),
        ],
    }
}

/// Plugin names become file names, source names, URL segments and package names.
fn valid_name(name: &str) -> bool {
    (1..=40).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Writes the project of plugin `name` in `lang` into `dir` (created; it must be absent
/// or empty). `sdk` is the path of `hookgate-plugin-sdk` a Rust project depends on.
/// Returns the files written.
pub fn scaffold(
    name: &str,
    lang: Lang,
    dir: &Path,
    sdk: &Path,
) -> Result<Vec<PathBuf>, ScaffoldError> {
    if !valid_name(name) {
        return Err(ScaffoldError::BadName(name.to_owned()));
    }
    let write_error = |path: &Path, e: std::io::Error| ScaffoldError::Write {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    if let Ok(mut entries) = std::fs::read_dir(dir)
        && entries.next().is_some()
    {
        return Err(ScaffoldError::NotEmpty(dir.to_path_buf()));
    }
    let crate_name = name.replace('-', "_");
    let sdk = sdk.display().to_string();
    // The JavaScript and Python projects are the GitHub examples themselves (tested end to
    // end), renamed: their plugin names occur once, in their metadata.
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("'github-js'", &format!("'{name}'"))
            .replace("\"github-py\"", &format!("\"{name}\""))
            .replace("{{crate}}", &crate_name)
            .replace("{{sdk}}", &sdk)
    };
    let fixtures_name = format!("{name}.fixtures.json");
    let mut all: Vec<(String, String, bool)> = files(lang)
        .iter()
        .map(|(path, text, exec)| ((*path).to_owned(), fill(text), *exec))
        .collect();
    all.push((fixtures_name, FIXTURES.to_owned(), false));

    let mut written = Vec::new();
    for (relative, text, executable) in all {
        let path = dir.join(&relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| write_error(parent, e))?;
        }
        std::fs::write(&path, text).map_err(|e| write_error(&path, e))?;
        if executable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| write_error(&path, e))?;
        }
        written.push(path);
    }
    Ok(written)
}

/// The SDK this binary was built beside: where a Rust project finds it unless told.
pub fn default_sdk_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-sdk")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_cannot_name_a_source_are_refused() {
        for bad in [
            "",
            "GitHub",
            "1st",
            "my_source",
            "a b",
            "trailing-",
            &"x".repeat(41),
        ] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        for good in ["acme", "acme-billing", "v2-source"] {
            assert!(valid_name(good), "{good:?}");
        }
    }

    #[test]
    fn every_placeholder_is_filled_and_nothing_is_overwritten() {
        let dir = tempfile::tempdir().expect("dir");
        for lang in [Lang::Rust, Lang::Js, Lang::Python] {
            let target = dir.path().join(lang.to_string());
            let written = scaffold("acme-billing", lang, &target, Path::new("/sdk")).unwrap();
            assert!(
                written
                    .iter()
                    .any(|p| p.ends_with("acme-billing.fixtures.json"))
            );
            for path in &written {
                let text = std::fs::read_to_string(path).unwrap();
                assert!(
                    !text.contains("{{"),
                    "{} keeps a placeholder",
                    path.display()
                );
            }
            assert!(matches!(
                scaffold("acme-billing", lang, &target, Path::new("/sdk")),
                Err(ScaffoldError::NotEmpty(_))
            ));
        }
        assert!(matches!(
            scaffold(
                "Bad Name",
                Lang::Js,
                &dir.path().join("x"),
                Path::new("/sdk")
            ),
            Err(ScaffoldError::BadName(_))
        ));
    }
}
