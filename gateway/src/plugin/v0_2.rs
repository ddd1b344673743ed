//! Contract 0.2.0 (`wit/`), the current one: its bindings, its host functions (on the
//! shared [`CallState`]) and the conversions of its types. The delivery stays in the host
//! behind the `request` resource; the plugin reads the parts it needs and names the rest
//! (the body, a header, the signed URL) in the messages the host MACs or verifies.

use hookgate_plugin_sdk::{self as sdk, Part};
use wasmtime::component::Resource;

use super::state::{self, CallState};

/// The host side of the `request` resource: the one delivery of the call, held by
/// [`CallState`]; the resource only names it.
pub struct CallRequest;

wasmtime::component::bindgen!({
    path: "../wit",
    world: "source-plugin",
    with: {
        "hookgate:plugin/types@0.2.0.request": CallRequest,
    },
});

/// The WIT types of this version, under a short name for the conversions.
pub(crate) use self::hookgate::plugin::types as wit;

use self::hookgate::plugin::host::{HashAlgorithm, LogLevel, SignatureAlgorithm};
use self::hookgate::plugin::types::{MessagePart, SecretEncoding};

super::convert::common_conversions!();

pub(crate) fn handshake_from_wit(h: wit::Handshake) -> super::types::Handshake {
    super::types::Handshake {
        status: h.status,
        content_type: h.content_type,
        headers: h.headers,
        body: h.body,
    }
}

fn algorithm(a: HashAlgorithm) -> sdk::HashAlgorithm {
    match a {
        HashAlgorithm::Sha1 => sdk::HashAlgorithm::Sha1,
        HashAlgorithm::Sha256 => sdk::HashAlgorithm::Sha256,
        HashAlgorithm::Sha512 => sdk::HashAlgorithm::Sha512,
    }
}

fn signature_algorithm(a: SignatureAlgorithm) -> sdk::SignatureAlgorithm {
    match a {
        SignatureAlgorithm::Ed25519 => sdk::SignatureAlgorithm::Ed25519,
        SignatureAlgorithm::EcdsaP256Sha256 => sdk::SignatureAlgorithm::EcdsaP256Sha256,
        SignatureAlgorithm::RsaPkcs1v15Sha256 => sdk::SignatureAlgorithm::RsaPkcs1v15Sha256,
        SignatureAlgorithm::RsaPkcs1v15Sha1 => sdk::SignatureAlgorithm::RsaPkcs1v15Sha1,
    }
}

fn encoding(e: &SecretEncoding) -> sdk::SecretEncoding<'_> {
    match e {
        SecretEncoding::Raw => sdk::SecretEncoding::Raw,
        SecretEncoding::Base64(prefix) => sdk::SecretEncoding::Base64(prefix),
        SecretEncoding::Hex(prefix) => sdk::SecretEncoding::Hex(prefix),
    }
}

fn parts(message: &[MessagePart]) -> Vec<Part<'_>> {
    message
        .iter()
        .map(|part| match part {
            MessagePart::Body => Part::Body,
            MessagePart::Header(name) => Part::Header(name),
            MessagePart::PublicUrl => Part::PublicUrl,
            MessagePart::Literal(bytes) => Part::Literal(bytes),
        })
        .collect()
}

fn level(l: LogLevel) -> sdk::LogLevel {
    match l {
        LogLevel::Trace => sdk::LogLevel::Trace,
        LogLevel::Debug => sdk::LogLevel::Debug,
        LogLevel::Info => sdk::LogLevel::Info,
        LogLevel::Warn => sdk::LogLevel::Warn,
        LogLevel::Error => sdk::LogLevel::Error,
    }
}

impl self::hookgate::plugin::types::Host for CallState {}

/// Every read answers from the call's one delivery; a call without one (none exists
/// outside `verify`/`map`/`tenant-hint`) reads as empty.
impl self::hookgate::plugin::types::HostRequest for CallState {
    fn method(&mut self, _: Resource<CallRequest>) -> String {
        self.request().map(|r| r.method.clone()).unwrap_or_default()
    }

    fn topic(&mut self, _: Resource<CallRequest>) -> Option<String> {
        self.request()?.topic.clone()
    }

    fn query(&mut self, _: Resource<CallRequest>) -> Option<String> {
        self.request()?.query.clone()
    }

    fn public_url(&mut self, _: Resource<CallRequest>) -> Option<String> {
        CallState::public_url(self)
    }

    fn header(&mut self, _: Resource<CallRequest>, name: String) -> Option<String> {
        self.request()?.header(&name).map(str::to_owned)
    }

    fn headers(&mut self, _: Resource<CallRequest>) -> Vec<(String, String)> {
        self.request()
            .map(|r| r.headers.clone())
            .unwrap_or_default()
    }

    fn body_size(&mut self, _: Resource<CallRequest>) -> u64 {
        self.request().map_or(0, |r| r.body.len() as u64)
    }

    fn body(&mut self, _: Resource<CallRequest>) -> Vec<u8> {
        self.request().map(|r| r.body.to_vec()).unwrap_or_default()
    }

    fn drop(&mut self, request: Resource<CallRequest>) -> wasmtime::Result<()> {
        self.table.delete(request)?;
        Ok(())
    }
}

impl hookgate::plugin::host::Host for CallState {
    fn hmac_verify(
        &mut self,
        secrets: Vec<u32>,
        e: SecretEncoding,
        a: HashAlgorithm,
        message: Vec<MessagePart>,
        candidates: Vec<Vec<u8>>,
    ) -> Option<u32> {
        self.mac_verify(
            &secrets,
            &encoding(&e),
            algorithm(a),
            &parts(&message),
            &candidates,
        )
    }

    fn hmac(
        &mut self,
        secret: u32,
        e: SecretEncoding,
        a: HashAlgorithm,
        message: Vec<MessagePart>,
    ) -> Result<Vec<u8>, String> {
        self.raw_mac(secret, &encoding(&e), algorithm(a), &parts(&message))
    }

    fn signature_verify(
        &mut self,
        keys: Vec<u32>,
        a: SignatureAlgorithm,
        message: Vec<MessagePart>,
        signature: Vec<u8>,
    ) -> Option<u32> {
        CallState::signature_verify(
            self,
            &keys,
            signature_algorithm(a),
            &parts(&message),
            &signature,
        )
    }

    fn sha256(&mut self, message: Vec<MessagePart>) -> Vec<u8> {
        // A part the request lacks hashes as nothing: the digest then matches no one's.
        CallState::sha256(self, &parts(&message)).unwrap_or_default()
    }

    fn constant_time_eq(&mut self, a: Vec<u8>, b: Vec<u8>) -> bool {
        state::constant_time_eq(&a, &b)
    }

    fn base64_encode(&mut self, data: Vec<u8>) -> String {
        state::base64_encode(&data)
    }

    fn base64_decode(&mut self, text: String) -> Option<Vec<u8>> {
        state::base64_decode(&text)
    }

    fn hex_encode(&mut self, data: Vec<u8>) -> String {
        hex::encode(data)
    }

    fn hex_decode(&mut self, text: String) -> Option<Vec<u8>> {
        hex::decode(text).ok()
    }

    fn now_unix_seconds(&mut self) -> i64 {
        CallState::now_unix_seconds(self)
    }

    fn log(&mut self, l: LogLevel, message: String) {
        CallState::log(self, level(l), &message);
    }
}
