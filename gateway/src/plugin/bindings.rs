//! Generated bindings for the `source-plugin` world and the host side of its imports:
//! the per-call store data (secrets, clock, log tags, limits) and the functions a plugin
//! may call.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use subtle::ConstantTimeEq;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

use super::types::truncate;

wasmtime::component::bindgen!({
    path: "../wit",
    world: "source-plugin",
});

/// The WIT types, under a short name for the conversions in `convert`.
pub(crate) use self::hookgate::plugin::types as wit;

use self::hookgate::plugin::host::{HashAlgorithm, LogLevel};

/// Longest log line a plugin may write; the rest is cut so a plugin cannot flood the log
/// with one call.
const MAX_LOG_MESSAGE: usize = 2048;

/// Guest stderr kept per call; a panic message fits, a flood does not.
const GUEST_STDERR_CAPACITY: usize = 2048;

/// Everything one call's store holds. Built fresh for every webhook and dropped after it,
/// so nothing a plugin does survives to the next webhook.
pub(crate) struct CallState {
    /// Secret values behind handles `0..n`. They never cross into guest memory.
    secrets: Vec<Vec<u8>>,
    now_override: Option<i64>,
    plugin: Arc<str>,
    correlation_id: String,
    limits: MemoryCap,
    /// Created only when the guest touches WASI (std does on panic, for stderr): it grants
    /// nothing, and most calls never need it.
    wasi: Option<WasiCtx>,
    /// The guest's stderr (where std prints a panic message), kept to explain traps.
    stderr: Option<MemoryOutputPipe>,
    table: ResourceTable,
}

impl CallState {
    pub(crate) fn new(
        plugin: Arc<str>,
        correlation_id: &str,
        now_override: Option<i64>,
        memory_bytes: usize,
    ) -> Self {
        Self {
            secrets: Vec::new(),
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

    /// Puts the secrets behind handles `0..n`, wiping the previous ones.
    pub(crate) fn set_secrets(&mut self, secrets: &[Vec<u8>]) {
        self.wipe_secrets();
        self.secrets.extend(secrets.iter().cloned());
    }

    fn wipe_secrets(&mut self) {
        // Keep secret copies from lingering in freed heap memory.
        for secret in &mut self.secrets {
            secret.iter_mut().for_each(|b| *b = 0);
            std::hint::black_box(&secret);
        }
        self.secrets.clear();
    }

    fn secret(&self, handle: u32) -> Option<&[u8]> {
        self.secrets
            .get(usize::try_from(handle).ok()?)
            .map(Vec::as_slice)
    }
}

impl Drop for CallState {
    fn drop(&mut self) {
        self.wipe_secrets();
    }
}

/// `StoreLimits` plus a record of whether the cap was reached, which is how a memory hog
/// is told apart from any other trap.
pub(crate) struct MemoryCap {
    inner: StoreLimits,
    max: usize,
    hit: bool,
}

impl MemoryCap {
    fn new(max: usize) -> Self {
        Self {
            inner: StoreLimitsBuilder::new().memory_size(max).build(),
            max,
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
        let allowed = self.inner.memory_growing(current, desired, maximum)?
            && desired <= self.max
            && maximum.is_none_or(|m| desired <= m);
        if !allowed {
            self.hit = true;
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.inner.table_growing(current, desired, maximum)?;
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

impl self::hookgate::plugin::types::Host for CallState {}

fn mac(algorithm: HashAlgorithm, key: &[u8], message: &[u8]) -> Vec<u8> {
    // `new_from_slice` accepts keys of any length for HMAC; the fallback is unreachable
    // in practice and still answers with a value no signature can match.
    match algorithm {
        HashAlgorithm::Sha1 => Hmac::<sha1::Sha1>::new_from_slice(key)
            .map(|m| m.chain_update(message).finalize().into_bytes().to_vec())
            .unwrap_or_default(),
        HashAlgorithm::Sha256 => Hmac::<sha2::Sha256>::new_from_slice(key)
            .map(|m| m.chain_update(message).finalize().into_bytes().to_vec())
            .unwrap_or_default(),
        HashAlgorithm::Sha512 => Hmac::<sha2::Sha512>::new_from_slice(key)
            .map(|m| m.chain_update(message).finalize().into_bytes().to_vec())
            .unwrap_or_default(),
    }
}

impl hookgate::plugin::host::Host for CallState {
    fn hmac(&mut self, secret: u32, algorithm: HashAlgorithm, message: Vec<u8>) -> Option<Vec<u8>> {
        let key = self.secret(secret)?;
        Some(mac(algorithm, key, &message))
    }

    fn hmac_verify(
        &mut self,
        secrets: Vec<u32>,
        algorithm: HashAlgorithm,
        message: Vec<u8>,
        candidates: Vec<Vec<u8>>,
    ) -> Option<u32> {
        let mut matched = None;
        // Each secret is tried once however often the plugin repeats its handle: this
        // loop runs in the host, out of reach of the epoch deadline.
        let mut tried = vec![false; self.secrets.len()];
        for handle in secrets {
            let Some(index) = usize::try_from(handle).ok().filter(|&i| i < tried.len()) else {
                continue;
            };
            if std::mem::replace(&mut tried[index], true) {
                continue;
            }
            let key = self.secrets[index].as_slice();
            let expected = mac(algorithm, key, &message);
            // Every candidate is compared, match or not, so timing says nothing about
            // which one (or whether any) matched.
            let mut hit = subtle::Choice::from(0);
            for candidate in &candidates {
                hit |= expected.as_slice().ct_eq(candidate.as_slice());
            }
            if bool::from(hit) && matched.is_none() {
                matched = Some(handle);
            }
        }
        matched
    }

    fn sha256(&mut self, data: Vec<u8>) -> Vec<u8> {
        use sha2::Digest;
        sha2::Sha256::digest(&data).to_vec()
    }

    fn constant_time_eq(&mut self, a: Vec<u8>, b: Vec<u8>) -> bool {
        bool::from(a.as_slice().ct_eq(b.as_slice()))
    }

    fn base64_encode(&mut self, data: Vec<u8>) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(data)
    }

    fn base64_decode(&mut self, text: String) -> Option<Vec<u8>> {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.decode(text).ok()
    }

    fn hex_encode(&mut self, data: Vec<u8>) -> String {
        hex::encode(data)
    }

    fn hex_decode(&mut self, text: String) -> Option<Vec<u8>> {
        hex::decode(text).ok()
    }

    fn now_unix_seconds(&mut self) -> i64 {
        now_seconds(self.now_override)
    }

    fn log(&mut self, level: LogLevel, message: String) {
        let message = truncate(&message, MAX_LOG_MESSAGE);
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

#[cfg(test)]
mod tests {
    use super::hookgate::plugin::host::Host;
    use super::*;

    fn state(secrets: &[&[u8]]) -> CallState {
        let secrets: Vec<Vec<u8>> = secrets.iter().map(|s| s.to_vec()).collect();
        let mut state = CallState::new(Arc::from("t"), "cid", Some(1_700_000_000), 1 << 20);
        state.set_secrets(&secrets);
        state
    }

    #[test]
    fn hmac_matches_a_known_vector_and_refuses_unknown_handles() {
        // RFC 4231 test case 2.
        let mut s = state(&[b"Jefe"]);
        let mac = s
            .hmac(
                0,
                HashAlgorithm::Sha256,
                b"what do ya want for nothing?".to_vec(),
            )
            .unwrap();
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(s.hmac(1, HashAlgorithm::Sha256, b"x".to_vec()), None);
        assert_eq!(s.hmac(u32::MAX, HashAlgorithm::Sha1, b"x".to_vec()), None);
    }

    #[test]
    fn hmac_verify_reports_the_matching_secret() {
        let mut s = state(&[b"old", b"new"]);
        let sig = mac(HashAlgorithm::Sha512, b"new", b"body");
        let found = s.hmac_verify(
            vec![0, 1, 7],
            HashAlgorithm::Sha512,
            b"body".to_vec(),
            vec![b"junk".to_vec(), sig],
        );
        assert_eq!(found, Some(1));
        // Repeated handles are tried once; the first match in the plugin's order wins.
        let sig_old = mac(HashAlgorithm::Sha512, b"old", b"body");
        let found = s.hmac_verify(
            vec![1, 1, 0, 0],
            HashAlgorithm::Sha512,
            b"body".to_vec(),
            vec![sig_old],
        );
        assert_eq!(found, Some(0));
        let none = s.hmac_verify(
            vec![0, 1],
            HashAlgorithm::Sha512,
            b"body".to_vec(),
            vec![vec![]],
        );
        assert_eq!(none, None);
    }

    #[test]
    fn codecs_and_clock() {
        let mut s = state(&[]);
        assert_eq!(s.base64_encode(b"hi".to_vec()), "aGk=");
        assert_eq!(s.base64_decode("aGk=".into()), Some(b"hi".to_vec()));
        assert_eq!(s.base64_decode("a*".into()), None);
        assert_eq!(s.hex_encode(vec![0xab, 0x01]), "ab01");
        assert_eq!(s.hex_decode("AB01".into()), Some(vec![0xab, 0x01]));
        assert_eq!(s.hex_decode("abc".into()), None);
        assert!(s.constant_time_eq(vec![1, 2], vec![1, 2]));
        assert!(!s.constant_time_eq(vec![1, 2], vec![1, 3]));
        assert!(!s.constant_time_eq(vec![1, 2], vec![1]));
        assert_eq!(s.now_unix_seconds(), 1_700_000_000);
        assert_eq!(
            hex::encode(s.sha256(b"abc".to_vec())),
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
        let mut s = state(&[]);
        tracing::subscriber::with_default(subscriber, || {
            s.log(
                LogLevel::Warn,
                format!("hello\nFORGED line {}", "x".repeat(5000)),
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
    fn memory_cap_records_refusals() {
        let mut cap = MemoryCap::new(1 << 20);
        assert!(cap.memory_growing(0, 1 << 16, None).unwrap());
        assert!(!cap.hit);
        assert!(!cap.memory_growing(1 << 16, 2 << 20, None).unwrap());
        assert!(cap.hit);
    }
}
