//! Safe wrappers over the host imports. In a WASM guest they call the gateway; on any
//! other target they run the native test host (`TestHost`) so plugin
//! logic is unit-tested with plain `cargo test`.

use crate::types::{
    HashAlgorithm, KeyHandle, LogLevel, Part, Request, SecretEncoding, SecretHandle,
    SignatureAlgorithm,
};

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
fn wit_signature(algorithm: SignatureAlgorithm) -> imp::SignatureAlgorithm {
    match algorithm {
        SignatureAlgorithm::Ed25519 => imp::SignatureAlgorithm::Ed25519,
        SignatureAlgorithm::EcdsaP256Sha256 => imp::SignatureAlgorithm::EcdsaP256Sha256,
        SignatureAlgorithm::RsaPkcs1v15Sha256 => imp::SignatureAlgorithm::RsaPkcs1v15Sha256,
        SignatureAlgorithm::RsaPkcs1v15Sha1 => imp::SignatureAlgorithm::RsaPkcs1v15Sha1,
    }
}

/// The parts as the host reads them: the request's own parts are named, not copied.
#[cfg(target_arch = "wasm32")]
fn wit_message(
    _request: &Request,
    parts: &[Part<'_>],
) -> Vec<crate::bindings::hookgate::plugin::types::MessagePart> {
    use crate::bindings::hookgate::plugin::types::MessagePart;
    parts
        .iter()
        .map(|part| match part {
            Part::Body => MessagePart::Body,
            Part::Header(name) => MessagePart::Header((*name).to_owned()),
            Part::PublicUrl => MessagePart::PublicUrl,
            Part::Literal(bytes) => MessagePart::Literal(bytes.to_vec()),
        })
        .collect()
}

#[cfg(target_arch = "wasm32")]
fn wit_encoding(
    encoding: SecretEncoding<'_>,
) -> crate::bindings::hookgate::plugin::types::SecretEncoding {
    use crate::bindings::hookgate::plugin::types::SecretEncoding as Wit;
    match encoding {
        SecretEncoding::Raw => Wit::Raw,
        SecretEncoding::Base64(prefix) => Wit::Base64(prefix.to_owned()),
        SecretEncoding::Hex(prefix) => Wit::Hex(prefix.to_owned()),
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
fn wit_signature(algorithm: SignatureAlgorithm) -> SignatureAlgorithm {
    algorithm
}

/// Natively the test host has no request of its own: the message is assembled here.
#[cfg(not(target_arch = "wasm32"))]
fn wit_message(request: &Request, parts: &[Part<'_>]) -> Option<Vec<u8>> {
    request.message(parts)
}

#[cfg(not(target_arch = "wasm32"))]
fn wit_encoding(encoding: SecretEncoding<'_>) -> SecretEncoding<'_> {
    encoding
}

#[cfg(not(target_arch = "wasm32"))]
fn wit_level(level: LogLevel) -> LogLevel {
    level
}

/// Checks every candidate MAC against the HMAC of `message` (parts of `request`) under
/// each of `secrets`, in constant time, and returns the first handle that matches.
///
/// This is the call to use for verification: the comparison happens in the host, the body
/// ([`Part::Body`]) is never copied into the plugin, and a secret roll (several secrets,
/// several signatures) costs one call.
pub fn hmac_verify(
    request: &Request,
    secrets: &[SecretHandle],
    algorithm: HashAlgorithm,
    message: &[Part<'_>],
    candidates: &[Vec<u8>],
) -> Option<SecretHandle> {
    hmac_verify_encoded(
        request,
        secrets,
        SecretEncoding::Raw,
        algorithm,
        message,
        candidates,
    )
}

/// [`hmac_verify`] for schemes whose secrets hold the key encoded (Standard Webhooks'
/// `whsec_<base64>`): the host reads each secret as `encoding` says; one that does not
/// decode never matches.
pub fn hmac_verify_encoded(
    request: &Request,
    secrets: &[SecretHandle],
    encoding: SecretEncoding<'_>,
    algorithm: HashAlgorithm,
    message: &[Part<'_>],
    candidates: &[Vec<u8>],
) -> Option<SecretHandle> {
    imp::hmac_verify(
        secrets,
        &wit_encoding(encoding),
        wit_algorithm(algorithm),
        &wit_message(request, message),
        candidates,
    )
}

/// The HMAC of `message` (parts of `request`) under the secret behind `secret`, for
/// schemes [`hmac_verify`] cannot express. The host grants it only to sources whose
/// configuration allows it (`allow_raw_mac`), since a plugin that could MAC arbitrary
/// messages could hand out valid signatures; the error says why it was refused.
pub fn hmac(
    request: &Request,
    secret: SecretHandle,
    encoding: SecretEncoding<'_>,
    algorithm: HashAlgorithm,
    message: &[Part<'_>],
) -> Result<Vec<u8>, String> {
    imp::hmac(
        secret,
        &wit_encoding(encoding),
        wit_algorithm(algorithm),
        &wit_message(request, message),
    )
}

/// Checks `signature` over `message` (parts of `request`) against each of `keys` that
/// suits `algorithm`, and returns the first key that verifies it.
pub fn signature_verify(
    request: &Request,
    keys: &[KeyHandle],
    algorithm: SignatureAlgorithm,
    message: &[Part<'_>],
    signature: &[u8],
) -> Option<KeyHandle> {
    imp::signature_verify(
        keys,
        wit_signature(algorithm),
        &wit_message(request, message),
        signature,
    )
}

/// SHA-256 digest of `data`.
pub fn sha256(data: &[u8]) -> Vec<u8> {
    #[cfg(target_arch = "wasm32")]
    {
        use crate::bindings::hookgate::plugin::types::MessagePart;
        imp::sha256(&[MessagePart::Literal(data.to_vec())])
    }
    #[cfg(not(target_arch = "wasm32"))]
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
