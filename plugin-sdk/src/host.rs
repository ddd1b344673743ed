//! Safe wrappers over the host imports. In a WASM guest they call the gateway; on any
//! other target they run the native test host (`TestHost`) so plugin
//! logic is unit-tested with plain `cargo test`.

use crate::types::{HashAlgorithm, LogLevel, SecretHandle};

#[cfg(target_arch = "wasm32")]
use crate::bindings::hookgate::plugin::host as imp;
#[cfg(not(target_arch = "wasm32"))]
use crate::testing::native as imp;

#[cfg(target_arch = "wasm32")]
fn wit_algorithm(algorithm: HashAlgorithm) -> imp::HashAlgorithm {
    match algorithm {
        HashAlgorithm::Sha1 => imp::HashAlgorithm::Sha1,
        HashAlgorithm::Sha256 => imp::HashAlgorithm::Sha256,
        HashAlgorithm::Sha512 => imp::HashAlgorithm::Sha512,
    }
}

#[cfg(target_arch = "wasm32")]
fn wit_level(level: LogLevel) -> imp::LogLevel {
    match level {
        LogLevel::Trace => imp::LogLevel::Trace,
        LogLevel::Debug => imp::LogLevel::Debug,
        LogLevel::Info => imp::LogLevel::Info,
        LogLevel::Warn => imp::LogLevel::Warn,
        LogLevel::Error => imp::LogLevel::Error,
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn wit_algorithm(algorithm: HashAlgorithm) -> HashAlgorithm {
    algorithm
}

#[cfg(not(target_arch = "wasm32"))]
fn wit_level(level: LogLevel) -> LogLevel {
    level
}

/// HMAC of `message` under the secret behind `secret`; `None` if the handle is unknown.
pub fn hmac(secret: SecretHandle, algorithm: HashAlgorithm, message: &[u8]) -> Option<Vec<u8>> {
    imp::hmac(secret, wit_algorithm(algorithm), message)
}

/// Checks every candidate signature against the HMAC of `message` under each of `secrets`,
/// in constant time, and returns the first handle that matches.
///
/// This is the call to use for verification: the comparison happens in the host, and a
/// secret roll (several secrets, several signatures) costs one call.
pub fn hmac_verify(
    secrets: &[SecretHandle],
    algorithm: HashAlgorithm,
    message: &[u8],
    candidates: &[Vec<u8>],
) -> Option<SecretHandle> {
    imp::hmac_verify(secrets, wit_algorithm(algorithm), message, candidates)
}

/// SHA-256 digest of `data`.
pub fn sha256(data: &[u8]) -> Vec<u8> {
    imp::sha256(data)
}

/// Equality that takes the same time wherever the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    imp::constant_time_eq(a, b)
}

/// Standard base64 (RFC 4648 section 4) with padding.
pub fn base64_encode(data: &[u8]) -> String {
    imp::base64_encode(data)
}

/// Decodes standard base64 with padding; `None` if `text` is not valid base64.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    imp::base64_decode(text)
}

/// Lower-case hex.
pub fn hex_encode(data: &[u8]) -> String {
    imp::hex_encode(data)
}

/// Decodes hex in either case; `None` if `text` is not valid hex.
pub fn hex_decode(text: &str) -> Option<Vec<u8>> {
    imp::hex_decode(text)
}

/// The current time, in seconds since the Unix epoch (the only clock a plugin has).
pub fn now_unix_seconds() -> i64 {
    imp::now_unix_seconds()
}

/// Writes a line to the gateway's log, tagged with the plugin and the request. Prefer the
/// [`info!`](crate::info)-style macros.
pub fn log(level: LogLevel, message: &str) {
    imp::log(wit_level(level), message)
}

/// Logs `format!(...)` at [`LogLevel::Trace`].
#[macro_export]
macro_rules! trace {
    ($($arg:tt)*) => { $crate::log($crate::LogLevel::Trace, &::std::format!($($arg)*)) };
}

/// Logs `format!(...)` at [`LogLevel::Debug`].
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::log($crate::LogLevel::Debug, &::std::format!($($arg)*)) };
}

/// Logs `format!(...)` at [`LogLevel::Info`].
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log($crate::LogLevel::Info, &::std::format!($($arg)*)) };
}

/// Logs `format!(...)` at [`LogLevel::Warn`].
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::log($crate::LogLevel::Warn, &::std::format!($($arg)*)) };
}

/// Logs `format!(...)` at [`LogLevel::Error`].
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::log($crate::LogLevel::Error, &::std::format!($($arg)*)) };
}
