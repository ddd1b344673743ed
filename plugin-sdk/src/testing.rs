//! The native test host: on non-WASM targets the host helpers run against this in-process
//! implementation, configured per thread by a [`TestHost`], so plugin logic is unit-tested
//! with plain `cargo test` and no WASM runtime.

use std::cell::RefCell;
use std::marker::PhantomData;

use crate::keys::{KeyError, PublicKey};
use crate::types::{HashAlgorithm, KeyHandle, LogLevel, SecretHandle};

/// Handles start here rather than at 0 so a plugin that confuses handles with list
/// indices fails its tests.
const FIRST_HANDLE: SecretHandle = 0x5EC0;
/// Key handles start elsewhere, so a plugin that passes one kind for the other fails too.
const FIRST_KEY_HANDLE: KeyHandle = 0x4E70;

/// One line a plugin logged through the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// Its severity.
    pub level: LogLevel,
    /// Its text.
    pub message: String,
}

#[derive(Default)]
struct State {
    secrets: Vec<Vec<u8>>,
    keys: Vec<PublicKey>,
    allow_raw_mac: bool,
    now: Option<i64>,
    logs: Vec<LogEntry>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

fn with_state<R>(f: impl FnOnce(&mut State) -> R) -> R {
    STATE.with(|s| f(&mut s.borrow_mut()))
}

/// The host a plugin sees in native tests, for the current thread.
///
/// Creating one resets the thread's host state (no secrets, the real clock, no logs);
/// dropping it resets it again. Tests run on separate threads, so they never share it.
///
/// ```
/// use hookgate_plugin_sdk::{HashAlgorithm, Part, Request, TestHost, hmac_verify};
///
/// let host = TestHost::new().secrets(["old", "new"]).now(1_764_000_000);
/// let handles = host.handles();
/// let req = Request::post().with_body(&b"body"[..]);
/// // The sender's side: what the second secret signs.
/// let mac = host.sign(1, HashAlgorithm::Sha256, b"body");
/// let matched = hmac_verify(&req, &handles, HashAlgorithm::Sha256, &[Part::Body], &[mac]);
/// assert_eq!(matched.and_then(|h| host.secret_index(h)), Some(1));
/// assert_eq!(hookgate_plugin_sdk::now_unix_seconds(), 1_764_000_000);
/// ```
pub struct TestHost {
    // The state is thread-local: keep the guard on the thread that configured it.
    _not_send: PhantomData<*const ()>,
}

impl TestHost {
    /// A fresh host for this thread: no secrets, the real clock, no logs.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        with_state(|s| *s = State::default());
        Self {
            _not_send: PhantomData,
        }
    }

    /// Configures the secrets, in order; their handles are [`TestHost::handles`].
    pub fn secrets<I>(self, secrets: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let secrets = secrets.into_iter().map(|s| s.as_ref().to_vec()).collect();
        with_state(|s| s.secrets = secrets);
        self
    }

    /// Configures the public keys, in order, as an operator writes them in `keys = [...]`
    /// (PEM, DER as base64 or hex, raw bytes...; see [`PublicKey::parse`]); their handles
    /// are [`TestHost::key_handles`].
    pub fn keys<I>(self, keys: I) -> Result<Self, KeyError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let keys = keys
            .into_iter()
            .map(|k| PublicKey::parse(k.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        with_state(|s| s.keys = keys);
        Ok(self)
    }

    /// Grants the raw [`crate::hmac`], as a source's `allow_raw_mac = true` does in the
    /// gateway. Without it the call is refused, as in the gateway.
    pub fn allow_raw_mac(self) -> Self {
        with_state(|s| s.allow_raw_mac = true);
        self
    }

    /// The sender's side of a test: the HMAC of `message` under the `index`-th configured
    /// secret, to build a correctly signed request.
    pub fn sign(&self, index: usize, algorithm: HashAlgorithm, message: &[u8]) -> Vec<u8> {
        with_state(|s| native::mac_with_key(&s.secrets[index], algorithm, message))
    }

    /// Freezes the clock at `unix_seconds`.
    pub fn now(self, unix_seconds: i64) -> Self {
        with_state(|s| s.now = Some(unix_seconds));
        self
    }

    /// The handles of the configured secrets, in the order given: pass them to `verify`.
    pub fn handles(&self) -> Vec<SecretHandle> {
        with_state(|s| (0..s.secrets.len()).filter_map(handle_of).collect())
    }

    /// The handle of the `index`-th configured secret.
    pub fn handle(&self, index: usize) -> Option<SecretHandle> {
        with_state(|s| {
            (index < s.secrets.len())
                .then(|| handle_of(index))
                .flatten()
        })
    }

    /// Which configured secret (its index) `handle` stands for.
    pub fn secret_index(&self, handle: SecretHandle) -> Option<usize> {
        with_state(|s| index_of(s, handle))
    }

    /// The handles of the configured public keys, in the order given.
    pub fn key_handles(&self) -> Vec<KeyHandle> {
        with_state(|s| {
            (0..s.keys.len())
                .filter_map(|i| key_handle_of(i, &s.keys))
                .collect()
        })
    }

    /// Which configured key (its index) `handle` stands for.
    pub fn key_index(&self, handle: KeyHandle) -> Option<usize> {
        with_state(|s| key_index_of(s, handle))
    }

    /// Everything logged so far on this thread.
    pub fn logs(&self) -> Vec<LogEntry> {
        with_state(|s| s.logs.clone())
    }

    /// Everything logged so far, clearing the log.
    pub fn take_logs(&self) -> Vec<LogEntry> {
        with_state(|s| std::mem::take(&mut s.logs))
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        with_state(|s| *s = State::default());
    }
}

fn handle_of(index: usize) -> Option<SecretHandle> {
    SecretHandle::try_from(index)
        .ok()
        .and_then(|i| FIRST_HANDLE.checked_add(i))
}

fn index_of(state: &State, handle: SecretHandle) -> Option<usize> {
    let index = usize::try_from(handle.checked_sub(FIRST_HANDLE)?).ok()?;
    (index < state.secrets.len()).then_some(index)
}

fn key_handle_of(index: usize, keys: &[PublicKey]) -> Option<KeyHandle> {
    (index < keys.len())
        .then(|| KeyHandle::try_from(index).ok())
        .flatten()
        .and_then(|i| FIRST_KEY_HANDLE.checked_add(i))
}

fn key_index_of(state: &State, handle: KeyHandle) -> Option<usize> {
    let index = usize::try_from(handle.checked_sub(FIRST_KEY_HANDLE)?).ok()?;
    (index < state.keys.len()).then_some(index)
}

/// Native implementations of the host imports, as the generated ones take them but with
/// the message already assembled from the request (`None`: a part it names is absent).
pub(crate) mod native {
    use base64::Engine as _;
    use hmac::{Hmac, Mac};
    use subtle::ConstantTimeEq;

    use super::{LogEntry, index_of, key_index_of, with_state};
    use crate::types::{
        HashAlgorithm, KeyHandle, LogLevel, SecretEncoding, SecretHandle, SignatureAlgorithm,
    };

    pub(crate) fn mac_with_key(key: &[u8], algorithm: HashAlgorithm, message: &[u8]) -> Vec<u8> {
        // `new_from_slice` accepts keys of any length for HMAC, so these cannot fail.
        match algorithm {
            HashAlgorithm::Sha1 => Hmac::<sha1::Sha1>::new_from_slice(key)
                .map(|m| m.chain_update(message).finalize().into_bytes().to_vec()),
            HashAlgorithm::Sha256 => Hmac::<sha2::Sha256>::new_from_slice(key)
                .map(|m| m.chain_update(message).finalize().into_bytes().to_vec()),
            HashAlgorithm::Sha512 => Hmac::<sha2::Sha512>::new_from_slice(key)
                .map(|m| m.chain_update(message).finalize().into_bytes().to_vec()),
        }
        .unwrap_or_default()
    }

    fn mac(
        secret: SecretHandle,
        encoding: &SecretEncoding<'_>,
        algorithm: HashAlgorithm,
        message: &[u8],
    ) -> Option<Vec<u8>> {
        with_state(|s| {
            let index = index_of(s, secret)?;
            let key = encoding.key(&s.secrets[index])?;
            Some(mac_with_key(&key, algorithm, message))
        })
    }

    pub(crate) fn hmac(
        secret: SecretHandle,
        encoding: &SecretEncoding<'_>,
        algorithm: HashAlgorithm,
        message: &Option<Vec<u8>>,
    ) -> Result<Vec<u8>, String> {
        if !with_state(|s| s.allow_raw_mac) {
            return Err("the raw hmac is not granted to this source (allow_raw_mac)".into());
        }
        let message = message
            .as_deref()
            .ok_or("a header or the public URL the message names is absent")?;
        mac(secret, encoding, algorithm, message)
            .ok_or_else(|| "unknown secret handle, or a secret that does not decode".into())
    }

    pub(crate) fn hmac_verify(
        secrets: &[SecretHandle],
        encoding: &SecretEncoding<'_>,
        algorithm: HashAlgorithm,
        message: &Option<Vec<u8>>,
        candidates: &[Vec<u8>],
    ) -> Option<SecretHandle> {
        let message = message.as_deref()?;
        secrets.iter().copied().find(|&handle| {
            mac(handle, encoding, algorithm, message).is_some_and(|mac| {
                candidates
                    .iter()
                    .fold(false, |hit, c| hit | constant_time_eq(&mac, c))
            })
        })
    }

    pub(crate) fn signature_verify(
        keys: &[KeyHandle],
        algorithm: SignatureAlgorithm,
        message: &Option<Vec<u8>>,
        signature: &[u8],
    ) -> Option<KeyHandle> {
        let message = message.as_deref()?;
        with_state(|s| {
            keys.iter().copied().find(|&handle| {
                key_index_of(s, handle)
                    .is_some_and(|index| s.keys[index].verify(algorithm, message, signature))
            })
        })
    }

    pub(crate) fn sha256(data: &[u8]) -> Vec<u8> {
        use sha2::Digest as _;
        sha2::Sha256::digest(data).to_vec()
    }

    pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
        a.ct_eq(b).into()
    }

    pub(crate) fn base64_encode(data: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(data)
    }

    pub(crate) fn base64_decode(text: &str) -> Option<Vec<u8>> {
        base64::engine::general_purpose::STANDARD.decode(text).ok()
    }

    pub(crate) fn hex_encode(data: &[u8]) -> String {
        hex::encode(data)
    }

    pub(crate) fn hex_decode(text: &str) -> Option<Vec<u8>> {
        hex::decode(text).ok()
    }

    pub(crate) fn now_unix_seconds() -> i64 {
        with_state(|s| s.now).unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        })
    }

    pub(crate) fn log(level: LogLevel, message: &str) {
        with_state(|s| {
            s.logs.push(LogEntry {
                level,
                message: message.to_owned(),
            })
        });
    }
}
