//! An embedded gateway on port 0 for the HTTP properties, a raw HTTP/1.1 client that can
//! send what a well-behaved client library refuses to (any method token, any path bytes,
//! non-UTF-8 header values), and the proptest configuration.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hookgate::app::Gateway;
use hookgate::config::{CliOverrides, Config};
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const ADMIN_TOKEN: &str = "admin-token-for-properties-2718";
pub const SHOPIFY_SECRET: &str = "shpss_properties_5d4c3b2a";
/// Sources the HTTP properties' gateway serves.
pub const SOURCES: &[&str] = &["shopify", "stripe", "github"];

/// A runner of `cases` cases, or `PROPTEST_CASES` when set. No regression file: a
/// failure prints its minimal input, which becomes a named test beside the property.
pub fn runner(cases: u32) -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(cases);
    TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    })
}

pub fn plugin_cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache")
}

/// A gateway in embedded mode (SQLite, memory dedupe, JSON-lines file) with its own
/// directory, serving [`SOURCES`] with the admin API open to [`ADMIN_TOKEN`].
pub struct Embedded {
    pub gateway: Gateway,
    _dir: tempfile::TempDir,
}

impl Embedded {
    pub async fn start(extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().display();
        let text = format!(
            r#"
listen = "127.0.0.1:0"
admin_token = "{ADMIN_TOKEN}"
max_payload_size_mb = 1

[storage]
url = "sqlite://{root}/hookgate.db"

[dedupe]
url = "memory://"

[bus]
url = "file://{root}/events.jsonl"

[plugins]
dir = "{root}/plugins.d"
cache_dir = "{cache}"
watch = false

[sources.shopify]
secrets = ["{SHOPIFY_SECRET}"]

[sources.stripe]
secrets = ["whsec_properties"]

[sources.github]
secrets = ["github-properties"]
{extra}
"#,
            cache = plugin_cache_dir().display(),
        );
        let path = dir.path().join("hookgate.toml");
        std::fs::write(&path, text).expect("write config");
        let config = Config::load(Some(&path), &|_: &str| None, &CliOverrides::default())
            .unwrap_or_else(|e| panic!("property config rejected: {e}"));
        let gateway = Gateway::start(&config)
            .await
            .unwrap_or_else(|e| panic!("gateway did not start: {e:#}"));
        Self { gateway, _dir: dir }
    }
}

/// One parsed HTTP/1.1 response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// Names lower-cased, values as bytes.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// Sends `raw` (a whole request, which should ask for `Connection: close`) on a new
/// connection and reads the answer to the end. `Err` when the server closed without a
/// status line or took over 10 s: a panicking handler looks like that.
pub async fn exchange(addr: std::net::SocketAddr, raw: &[u8]) -> Result<Response, String> {
    let work = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream
            .write_all(raw)
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut bytes = Vec::new();
        // The server may answer and close before the whole request is read (413, 400),
        // so a reset after some bytes arrived still leaves an answer to parse.
        let _ = stream.read_to_end(&mut bytes).await;
        parse(&bytes)
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .map_err(|_| "no answer within 10 s".to_owned())?
}

fn parse(bytes: &[u8]) -> Result<Response, String> {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no complete response head in {} bytes", bytes.len()))?;
    let head = &bytes[..end];
    let mut lines = head.split(|b| *b == b'\n');
    let status_line = lines.next().unwrap_or_default();
    let status_line = String::from_utf8_lossy(status_line);
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, Vec<u8>)> = lines
        .filter_map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let colon = line.iter().position(|b| *b == b':')?;
            let name = String::from_utf8_lossy(&line[..colon]).to_ascii_lowercase();
            let value = line[colon + 1..].trim_ascii().to_vec();
            Some((name, value))
        })
        .collect();
    let mut body = bytes[end + 4..].to_vec();
    if let Some(length) = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse::<usize>().ok())
    {
        body.truncate(length);
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// A request with `Connection: close` and a `Content-Length` for `body`.
pub fn request(
    method: &[u8],
    target: &[u8],
    headers: &[(Vec<u8>, Vec<u8>)],
    body: &[u8],
) -> Vec<u8> {
    let mut raw = Vec::with_capacity(256 + body.len());
    raw.extend_from_slice(method);
    raw.push(b' ');
    raw.extend_from_slice(target);
    raw.extend_from_slice(b" HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n");
    for (name, value) in headers {
        raw.extend_from_slice(name);
        raw.extend_from_slice(b": ");
        raw.extend_from_slice(value);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    raw.extend_from_slice(body);
    raw
}
