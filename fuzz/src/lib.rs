//! What the fuzz targets share: one embedded gateway per fuzzing process, a raw HTTP/1.1
//! exchange with it, and the checks on an answer. The checks are those of the property
//! tests (`gateway/tests/properties/`), so a crash here and a failure there mean the same.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use hookgate::app::Gateway;
use hookgate::config::{CliOverrides, Config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const ADMIN_TOKEN: &str = "admin-token-for-fuzzing-1618";
pub const SHOPIFY_SECRET: &str = "shpss_fuzz_9e8d7c";

/// Statuses the SPEC lists for the API, and the console's redirect.
pub const ROUTER_STATUSES: &[u16] = &[200, 301, 400, 401, 404, 405, 408, 413, 429, 500, 503];
/// The admin API's besides (202 replay job, 201 tenant secret, 409 conflict, 422 reload).
pub const ADMIN_STATUSES: &[u16] = &[201, 202, 409, 422];
/// What hyper writes itself (README, "Responses hyper writes itself").
pub const HYPER_STATUSES: &[u16] = &[400, 414, 431];

pub struct Harness {
    pub runtime: tokio::runtime::Runtime,
    pub addr: SocketAddr,
    _gateway: Gateway,
    _dir: tempfile::TempDir,
}

/// The process's gateway: embedded mode (SQLite, memory dedupe, file sink) in a temporary
/// directory, sources shopify, stripe and github, the admin API behind [`ADMIN_TOKEN`].
pub fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().display();
        let text = format!(
            "listen = \"127.0.0.1:0\"\nadmin_token = \"{ADMIN_TOKEN}\"\nmax_payload_size_mb = 1\n\
             [http]\nheader_read_timeout_ms = 2000\nbody_read_timeout_ms = 2000\n\
             [storage]\nurl = \"sqlite://{root}/hookgate.db\"\n[dedupe]\nurl = \"memory://\"\n\
             [bus]\nurl = \"file://{root}/events.jsonl\"\n[plugins]\ndir = \"{root}/plugins.d\"\n\
             cache_dir = \"{root}/cache\"\nwatch = false\n\
             [sources.shopify]\nsecrets = [\"{SHOPIFY_SECRET}\"]\n\
             [sources.stripe]\nsecrets = [\"whsec_fuzz\"]\n[sources.github]\nsecrets = [\"gh-fuzz\"]\n"
        );
        let path = dir.path().join("hookgate.toml");
        std::fs::write(&path, text).expect("write config");
        let config = Config::load(Some(&path), &|_: &str| None, &CliOverrides::default())
            .expect("fuzz config");
        let gateway = runtime
            .block_on(Gateway::start(&config))
            .expect("gateway starts");
        Harness {
            addr: gateway.local_addr,
            runtime,
            _gateway: gateway,
            _dir: dir,
        }
    })
}

/// One answer.
pub struct Response {
    pub status: u16,
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
}

/// Writes `raw` on a new connection, closes the sending side and reads every answer to
/// the end (pipelined requests get one each). `None`: no complete answer in 5 s.
pub fn exchange(raw: &[u8]) -> Option<Vec<Response>> {
    let harness = harness();
    harness.runtime.block_on(async {
        let work = async {
            let mut stream = tokio::net::TcpStream::connect(harness.addr).await.ok()?;
            let _ = stream.write_all(raw).await;
            let _ = stream.shutdown().await;
            let mut bytes = Vec::new();
            let _ = stream.read_to_end(&mut bytes).await;
            Some(parse_all(&bytes))
        };
        tokio::time::timeout(Duration::from_secs(5), work)
            .await
            .ok()?
    })
}

fn parse_all(mut bytes: &[u8]) -> Vec<Response> {
    let mut out = Vec::new();
    while let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = &bytes[..end];
        let mut lines = head.split(|b| *b == b'\n');
        let status_line = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
        let Some(status) = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.trim().parse().ok())
        else {
            break;
        };
        let headers: Vec<(String, Vec<u8>)> = lines
            .filter_map(|line| {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let colon = line.iter().position(|b| *b == b':')?;
                Some((
                    String::from_utf8_lossy(&line[..colon]).to_ascii_lowercase(),
                    line[colon + 1..].trim_ascii().to_vec(),
                ))
            })
            .collect();
        let length = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse::<usize>().ok())
            .unwrap_or(0);
        let rest = &bytes[end + 4..];
        let body = rest[..length.min(rest.len())].to_vec();
        bytes = &rest[length.min(rest.len())..];
        out.push(Response {
            status,
            headers,
            body,
        });
    }
    out
}

/// The router's answers carry `x-request-id`; hyper's own carry none and no body. A
/// router error with a body has the SPEC's JSON shape.
pub fn check(response: &Response) {
    if response.header("x-request-id").is_none() {
        assert!(
            HYPER_STATUSES.contains(&response.status) && response.body.is_empty(),
            "hyper answered {} with {} body bytes",
            response.status,
            response.body.len()
        );
        return;
    }
    assert!(
        ROUTER_STATUSES.contains(&response.status) || ADMIN_STATUSES.contains(&response.status),
        "status {} is not one the SPEC lists",
        response.status
    );
    if response.status >= 400 && !response.body.is_empty() {
        let json: serde_json::Value =
            serde_json::from_slice(&response.body).expect("an error body is JSON");
        assert!(
            json["error"].as_str().is_some_and(|s| !s.is_empty())
                && json["message"].as_str().is_some_and(|s| !s.is_empty()),
            "error body without error and message: {json}"
        );
    }
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
