//! The shared signature vectors (`shared/vectors/signatures.json`) as the plugins' native
//! tests read them. Included by each plugin's `tests.rs` with `#[path]`.

use hookgate_plugin_sdk::{Request, TestHost};
use serde_json::Value;

/// `signatures.json` from `HOOKGATE_VECTORS`, else `../../../shared/vectors/` from this
/// crate (the repo checked out beside `shared/`), else the nearest ancestor holding
/// `shared/vectors/` (a worktree one level deeper).
pub fn vectors(source: &str) -> Vec<Value> {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = match std::env::var_os("HOOKGATE_VECTORS") {
        Some(path) => std::path::PathBuf::from(path),
        None => std::iter::once(manifest.join("../../../shared/vectors/signatures.json"))
            .chain(
                manifest
                    .ancestors()
                    .map(|dir| dir.join("shared/vectors/signatures.json")),
            )
            .find(|candidate| candidate.is_file())
            .unwrap_or_else(|| manifest.join("../../../shared/vectors/signatures.json")),
    };
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "signature vectors not readable at {} ({e}); set HOOKGATE_VECTORS to their path",
            path.display()
        )
    });
    let all: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    let list: Vec<Value> = all["vectors"]
        .as_array()
        .expect("`vectors` array")
        .iter()
        .filter(|v| v["source"] == source)
        .cloned()
        .collect();
    assert!(
        !list.is_empty(),
        "no {source} vectors in {}",
        path.display()
    );
    list
}

pub fn vector_request(v: &Value) -> Request {
    let mut req = Request::post();
    for (name, value) in v["headers"].as_object().expect("headers object") {
        req = req.with_header(name.to_lowercase(), value.as_str().expect("header text"));
    }
    req.with_body(v["body"].as_str().expect("body text").as_bytes())
}

pub fn vector_host(v: &Value) -> TestHost {
    let secrets: Vec<&str> = v["secrets"]
        .as_array()
        .expect("secrets")
        .iter()
        .map(|s| s.as_str().expect("secret text"))
        .collect();
    TestHost::new()
        .secrets(secrets)
        .now(v["now"].as_i64().expect("now"))
}
