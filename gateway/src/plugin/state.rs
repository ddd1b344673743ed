//! What one call's store holds (the delivery, the source's credentials, the clock, log
//! tags, limits) and the host functions of the contract, written once for every contract
//! version: each version's bindings (`v0_1`, `v0_2`) only translate its WIT types to
//! these.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use hookgate_plugin_sdk::{HashAlgorithm, LogLevel, Part, SecretEncoding, SignatureAlgorithm};
use subtle::ConstantTimeEq;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

use super::types::{Credentials, WebhookRequest, truncate};

/// Longest log line a plugin may write; the rest is cut so a plugin cannot flood the log
/// with one call.
pub(crate) const MAX_LOG_MESSAGE: usize = 2048;

/// Guest stderr kept per call; a panic message fits, a flood does not.
const GUEST_STDERR_CAPACITY: usize = 2048;

/// Everything one call's store holds. Built fresh for every webhook and dropped after it,
/// so nothing a plugin does survives to the next webhook.
pub(crate) struct CallState {
    /// The delivery, which contract 0.2 plugins read through the `request` resource and
    /// name in message parts.
    request: Option<Arc<WebhookRequest>>,
    /// The source's secrets (behind handles `0..n`), keys and signed URL. Shared with the
    /// source, never copied into guest memory; dropped once `verify` is done.
    credentials: Credentials,
    now_override: Option<i64>,
    plugin: Arc<str>,
    correlation_id: String,
    limits: MemoryCap,
    /// Created only when the guest touches WASI (std does on panic, for stderr): it grants
    /// nothing, and most calls never need it.
    wasi: Option<WasiCtx>,
    /// The guest's stderr (where std prints a panic message), kept to explain traps.
    stderr: Option<MemoryOutputPipe>,
    pub(crate) table: ResourceTable,
}

impl CallState {
    pub(crate) fn new(
        plugin: Arc<str>,
        correlation_id: &str,
        now_override: Option<i64>,
        memory_bytes: usize,
    ) -> Self {
        Self {
            request: None,
            credentials: Credentials::default(),
            now_override,
            plugin,
            correlation_id: correlation_id.to_string(),
            limits: MemoryCap::new(memory_bytes),
            wasi: None,
            stderr: None,
            table: ResourceTable::new(),
        }
    }

    pub(crate) fn limiter(&mut self) -> &mut MemoryCap {
        &mut self.limits
    }

    /// Whether the guest was refused memory during this call: a trap after that is the
    /// memory cap's doing.
    pub(crate) fn memory_exhausted(&self) -> bool {
        self.limits.hit
    }

    /// What the guest wrote to stderr, on one line, if anything.
    pub(crate) fn guest_stderr(&self) -> Option<String> {
        let bytes = self.stderr.as_ref()?.contents();
        let text = String::from_utf8_lossy(&bytes);
        let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
        (!line.is_empty()).then_some(line)
    }

    pub(crate) fn set_request(&mut self, request: Arc<WebhookRequest>) {
        self.request = Some(request);
    }

    pub(crate) fn request(&self) -> Option<&WebhookRequest> {
        self.request.as_deref()
    }

    /// Hands the source's credentials to the call; `Credentials::default()` takes them
    /// away again once `verify` is done.
    pub(crate) fn set_credentials(&mut self, credentials: Credentials) {
        self.credentials = credentials;
    }

    /// The URL the sender signed: the configured public URL with the request's path and
    /// query.
    pub(crate) fn public_url(&self) -> Option<String> {
        let base = self.credentials.public_url.as_deref()?;
        let request = self.request.as_deref()?;
        let mut url = base.trim_end_matches('/').to_owned();
        url.push_str(&request.path);
        if let Some(query) = &request.query {
            url.push('?');
            url.push_str(query);
        }
        Some(url)
    }

    /// Feeds each part of a message to `sink` in order; `None` when a part names what the
    /// request lacks (a header, the public URL), so the check fails.
    fn each_part(&self, parts: &[Part<'_>], mut sink: impl FnMut(&[u8])) -> Option<()> {
        let request = self.request.as_deref();
        for part in parts {
            match part {
                Part::Body => sink(&request?.body),
                Part::Header(name) => sink(request?.header(name)?.as_bytes()),
                Part::PublicUrl => sink(self.public_url()?.as_bytes()),
                Part::Literal(bytes) => sink(bytes),
            }
        }
        Some(())
    }

    /// The MAC key of the secret behind `handle`, read as `encoding` says.
    fn mac_key(&self, handle: u32, encoding: &SecretEncoding<'_>) -> Option<Vec<u8>> {
        let secret = self
            .credentials
            .secrets
            .get(usize::try_from(handle).ok()?)?;
        encoding.key(secret)
    }

    fn mac(
        &self,
        handle: u32,
        encoding: &SecretEncoding<'_>,
        algorithm: HashAlgorithm,
        parts: &[Part<'_>],
    ) -> Option<Vec<u8>> {
        let mut key = self.mac_key(handle, encoding)?;
        // The body is fed to the MAC where it lies: never copied to be signed.
        macro_rules! compute {
            ($hash:ty) => {{
                let mut mac = Hmac::<$hash>::new_from_slice(&key).ok()?;
                self.each_part(parts, |bytes| mac.update(bytes))
                    .map(|()| mac.finalize().into_bytes().to_vec())
            }};
        }
        let result = match algorithm {
            HashAlgorithm::Sha1 => compute!(sha1::Sha1),
            HashAlgorithm::Sha256 => compute!(sha2::Sha256),
            HashAlgorithm::Sha512 => compute!(sha2::Sha512),
        };
        // Keep decoded key copies from lingering in freed heap memory.
        key.iter_mut().for_each(|b| *b = 0);
        std::hint::black_box(&key);
        result
    }

    /// `hmac-verify`: the first handle (in the plugin's order) whose MAC equals one of the
    /// candidates.
    pub(crate) fn mac_verify(
        &self,
        handles: &[u32],
        encoding: &SecretEncoding<'_>,
        algorithm: HashAlgorithm,
        parts: &[Part<'_>],
        candidates: &[Vec<u8>],
    ) -> Option<u32> {
        let mut matched = None;
        // Each secret is tried once however often the plugin repeats its handle: this
        // loop runs in the host, out of reach of the epoch deadline.
        let mut tried = vec![false; self.credentials.secrets.len()];
        for &handle in handles {
            let Some(index) = usize::try_from(handle).ok().filter(|&i| i < tried.len()) else {
                continue;
            };
            if std::mem::replace(&mut tried[index], true) {
                continue;
            }
            let Some(expected) = self.mac(handle, encoding, algorithm, parts) else {
                continue;
            };
            // Every candidate is compared, match or not, so timing says nothing about
            // which one (or whether any) matched.
            let mut hit = subtle::Choice::from(0);
            for candidate in candidates {
                hit |= expected.as_slice().ct_eq(candidate.as_slice());
            }
            if bool::from(hit) && matched.is_none() {
                matched = Some(handle);
            }
        }
        matched
    }

    /// `hmac`: the MAC itself, for sources whose configuration grants it.
    pub(crate) fn raw_mac(
        &self,
        handle: u32,
        encoding: &SecretEncoding<'_>,
        algorithm: HashAlgorithm,
        parts: &[Part<'_>],
    ) -> Result<Vec<u8>, String> {
        if !self.credentials.allow_raw_mac {
            return Err("the raw hmac is not granted to this source (allow_raw_mac)".into());
        }
        self.mac(handle, encoding, algorithm, parts).ok_or_else(|| {
            "unknown secret handle, a secret that does not decode, or a message part the \
             request lacks"
                .into()
        })
    }

    /// `signature-verify`: the first key handle whose key verifies the signature.
    pub(crate) fn signature_verify(
        &self,
        handles: &[u32],
        algorithm: SignatureAlgorithm,
        parts: &[Part<'_>],
        signature: &[u8],
    ) -> Option<u32> {
        let keys = &self.credentials.keys;
        if keys.is_empty() {
            return None;
        }
        // Public-key verification needs the whole message at once.
        let mut message = Vec::new();
        self.each_part(parts, |bytes| message.extend_from_slice(bytes))?;
        let mut tried = vec![false; keys.len()];
        handles.iter().copied().find(|&handle| {
            let Some(index) = usize::try_from(handle).ok().filter(|&i| i < keys.len()) else {
                return false;
            };
            !std::mem::replace(&mut tried[index], true)
                && keys[index].verify(algorithm, &message, signature)
        })
    }

    /// `sha256` of a message; `None` when a part is absent.
    pub(crate) fn sha256(&self, parts: &[Part<'_>]) -> Option<Vec<u8>> {
        use sha2::Digest;
        let mut hash = sha2::Sha256::new();
        self.each_part(parts, |bytes| hash.update(bytes))?;
        Some(hash.finalize().to_vec())
    }

    pub(crate) fn now_unix_seconds(&self) -> i64 {
        now_seconds(self.now_override)
    }

    /// `log`: one line in the gateway's log, tagged with the plugin and the request.
    pub(crate) fn log(&self, level: LogLevel, message: &str) {
        let message = truncate(message, MAX_LOG_MESSAGE);
        // A plugin must not forge log lines: control characters (newlines, escapes)
        // become spaces.
        let cleaned;
        let message = if message.contains(char::is_control) {
            cleaned = message.replace(char::is_control, " ");
            cleaned.as_str()
        } else {
            message
        };
        let plugin = &*self.plugin;
        let correlation_id = self.correlation_id.as_str();
        match level {
            LogLevel::Trace => {
                tracing::trace!(target: "hookgate::plugin::guest", plugin, correlation_id, "{message}")
            }
            LogLevel::Debug => {
                tracing::debug!(target: "hookgate::plugin::guest", plugin, correlation_id, "{message}")
            }
            LogLevel::Info => {
                tracing::info!(target: "hookgate::plugin::guest", plugin, correlation_id, "{message}")
            }
            LogLevel::Warn => {
                tracing::warn!(target: "hookgate::plugin::guest", plugin, correlation_id, "{message}")
            }
            LogLevel::Error => {
                tracing::error!(target: "hookgate::plugin::guest", plugin, correlation_id, "{message}")
            }
        }
    }
}

/// Standard base64 with padding, as the contract's `base64-encode` says.
pub(crate) fn base64_encode(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

pub(crate) fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    bool::from(a.ct_eq(b))
}

/// The memory cap of one instance: every linear memory of the component counts against one
/// budget. A component may have up to four memories, and the pooling allocator bounds each
/// on its own; a cap per memory would let a plugin hold four times its budget. Also records
/// whether the cap was reached, which is how a memory hog is told apart from any other trap.
pub(crate) struct MemoryCap {
    max: usize,
    /// Bytes of every linear memory of the store so far (wasmtime asks before creating a
    /// memory too, with `current` 0, so initial sizes count).
    total: usize,
    hit: bool,
}

impl MemoryCap {
    fn new(max: usize) -> Self {
        Self {
            max,
            total: 0,
            hit: false,
        }
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = (self.total - current.min(self.total)).saturating_add(desired);
        let allowed = total <= self.max && maximum.is_none_or(|m| desired <= m);
        if allowed {
            self.total = total;
        } else {
            self.hit = true;
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables are bounded by the pooling allocator's slots; only the module's own
        // maximum is checked here.
        let allowed = maximum.is_none_or(|m| desired <= m);
        if !allowed {
            self.hit = true;
        }
        Ok(allowed)
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        // The default context has no preopens, no environment, no arguments, no network
        // and no inherited stdio: linking WASI satisfies std's imports, nothing more.
        let stderr = &mut self.stderr;
        let now = Duration::from_secs(u64::try_from(now_seconds(self.now_override)).unwrap_or(0));
        let ctx = self.wasi.get_or_insert_with(|| {
            let pipe = MemoryOutputPipe::new(GUEST_STDERR_CAPACITY);
            *stderr = Some(pipe.clone());
            WasiCtx::builder()
                .stderr(pipe)
                // The contract grants no clock beyond `now`: WASI's clocks tell the same
                // second (honouring the override) and a monotonic time that stands still.
                .wall_clock(FixedWallClock(now))
                .monotonic_clock(FrozenMonotonicClock)
                .allow_tcp(false)
                .allow_udp(false)
                .allow_ip_name_lookup(false)
                .build()
        });
        WasiCtxView {
            ctx,
            table: &mut self.table,
        }
    }
}

struct FixedWallClock(Duration);

impl HostWallClock for FixedWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        self.0
    }
}

struct FrozenMonotonicClock;

impl HostMonotonicClock for FrozenMonotonicClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// The time a plugin sees: the override, or the system clock in whole seconds.
fn now_seconds(now_override: Option<i64>) -> i64 {
    now_override.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn state(secrets: &[&[u8]]) -> CallState {
        let secrets: Vec<Vec<u8>> = secrets.iter().map(|s| s.to_vec()).collect();
        let mut state = CallState::new(Arc::from("t"), "cid", Some(1_700_000_000), 1 << 20);
        state.set_credentials(Credentials {
            secrets: secrets.into(),
            ..Credentials::default()
        });
        state.set_request(Arc::new(WebhookRequest {
            method: "POST".into(),
            path: "/api/v1/webhooks/square".into(),
            topic: None,
            query: Some("a=1".into()),
            headers: vec![("x-ts".into(), "1700000000".into())],
            body: Bytes::from_static(b"body"),
        }));
        state
    }

    fn reference_mac(key: &[u8], message: &[u8]) -> Vec<u8> {
        let mut mac = Hmac::<sha2::Sha512>::new_from_slice(key).unwrap();
        mac.update(message);
        mac.finalize().into_bytes().to_vec()
    }

    #[test]
    fn raw_mac_matches_a_known_vector_only_when_granted() {
        // RFC 4231 test case 2.
        let mut s = state(&[b"Jefe"]);
        let message = [Part::Literal(b"what do ya want for nothing?")];
        let raw = SecretEncoding::Raw;
        let refused = s.raw_mac(0, &raw, HashAlgorithm::Sha256, &message);
        assert!(refused.is_err_and(|e| e.contains("allow_raw_mac")));
        s.credentials.allow_raw_mac = true;
        let mac = s.raw_mac(0, &raw, HashAlgorithm::Sha256, &message).unwrap();
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(s.raw_mac(1, &raw, HashAlgorithm::Sha256, &message).is_err());
        assert!(
            s.raw_mac(u32::MAX, &raw, HashAlgorithm::Sha1, &message)
                .is_err()
        );
    }

    #[test]
    fn mac_verify_reports_the_matching_secret_over_request_parts() {
        let s = state(&[b"old", b"new"]);
        let raw = SecretEncoding::Raw;
        let parts = [Part::Header("X-TS"), Part::Literal(b"."), Part::Body];
        let sig = reference_mac(b"new", b"1700000000.body");
        let found = s.mac_verify(
            &[0, 1, 7],
            &raw,
            HashAlgorithm::Sha512,
            &parts,
            &[b"junk".to_vec(), sig],
        );
        assert_eq!(found, Some(1));
        // Repeated handles are tried once; the first match in the plugin's order wins.
        let sig_old = reference_mac(b"old", b"1700000000.body");
        let found = s.mac_verify(
            &[1, 1, 0, 0],
            &raw,
            HashAlgorithm::Sha512,
            &parts,
            std::slice::from_ref(&sig_old),
        );
        assert_eq!(found, Some(0));
        assert_eq!(
            s.mac_verify(&[0, 1], &raw, HashAlgorithm::Sha512, &parts, &[vec![]]),
            None
        );
        // A part the request lacks fails the check.
        let missing = [Part::Header("x-absent"), Part::Body];
        assert_eq!(
            s.mac_verify(&[0], &raw, HashAlgorithm::Sha512, &missing, &[sig_old]),
            None
        );
    }

    #[test]
    fn the_public_url_is_the_configured_base_with_path_and_query() {
        let mut s = state(&[]);
        assert_eq!(s.public_url(), None, "none configured");
        s.credentials.public_url = Some(Arc::from("https://hooks.example.com/"));
        assert_eq!(
            s.public_url().as_deref(),
            Some("https://hooks.example.com/api/v1/webhooks/square?a=1")
        );
        assert_eq!(
            s.sha256(&[Part::PublicUrl]),
            Some({
                use sha2::Digest;
                sha2::Sha256::digest(b"https://hooks.example.com/api/v1/webhooks/square?a=1")
                    .to_vec()
            })
        );
    }

    #[test]
    fn codecs_and_clock() {
        let s = state(&[]);
        assert_eq!(base64_encode(b"hi"), "aGk=");
        assert_eq!(base64_decode("aGk="), Some(b"hi".to_vec()));
        assert_eq!(base64_decode("a*"), None);
        assert!(constant_time_eq(&[1, 2], &[1, 2]));
        assert!(!constant_time_eq(&[1, 2], &[1, 3]));
        assert!(!constant_time_eq(&[1, 2], &[1]));
        assert_eq!(s.now_unix_seconds(), 1_700_000_000);
        assert_eq!(
            hex::encode(s.sha256(&[Part::Literal(b"abc")]).unwrap()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn log_lines_carry_plugin_and_correlation_id_and_cannot_be_forged() {
        use std::sync::Mutex;
        let captured = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = Arc::clone(&captured);
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || WriteTo(Arc::clone(&sink)))
            .finish();
        let s = state(&[]);
        tracing::subscriber::with_default(subscriber, || {
            s.log(
                LogLevel::Warn,
                &format!("hello\nFORGED line {}", "x".repeat(5000)),
            );
        });
        let text = String::from_utf8(captured.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("WARN"), "{text}");
        assert!(text.contains("plugin=\"t\""), "{text}");
        assert!(text.contains("correlation_id=\"cid\""), "{text}");
        assert!(text.contains("hello FORGED line"), "{text}");
        assert!(
            text.len() < MAX_LOG_MESSAGE + 300,
            "not truncated: {} bytes",
            text.len()
        );
    }

    struct WriteTo(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for WriteTo {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn memory_cap_counts_every_memory_of_the_instance() {
        let mut cap = MemoryCap::new(4 << 20);
        // Two memories created at 1 MiB and 2 MiB: 3 MiB of 4.
        assert!(cap.memory_growing(0, 1 << 20, None).unwrap());
        assert!(cap.memory_growing(0, 2 << 20, None).unwrap());
        // The first may grow by 1 MiB, not by 2: each alone would be under the cap.
        assert!(!cap.memory_growing(1 << 20, 3 << 20, None).unwrap());
        assert!(cap.hit);
        assert!(cap.memory_growing(1 << 20, 2 << 20, None).unwrap());
        // A third memory finds the budget spent.
        assert!(!cap.memory_growing(0, 1 << 16, None).unwrap());
    }

    #[test]
    fn memory_cap_records_refusals() {
        let mut cap = MemoryCap::new(1 << 20);
        assert!(cap.memory_growing(0, 1 << 16, None).unwrap());
        assert!(!cap.hit);
        assert!(!cap.memory_growing(1 << 16, 2 << 20, None).unwrap());
        assert!(cap.hit);
    }
}
