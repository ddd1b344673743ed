//! Contract 0.1.0 (`gateway/wit/v0.1`), kept so components built against it load and serve
//! unchanged: its bindings, its host functions (on the shared [`CallState`]) and the
//! conversions of its types. The request crosses into the guest as a record, once for
//! `verify` and once for `map`.

use hookgate_plugin_sdk::{self as sdk, Part, SecretEncoding};

use super::state::{self, CallState};
use super::types::WebhookRequest;

wasmtime::component::bindgen!({
    path: "wit/v0.1",
    world: "source-plugin",
});

/// The WIT types of this version, under a short name for the conversions.
pub(crate) use self::hookgate::plugin::types as wit;

use self::hookgate::plugin::host::{HashAlgorithm, LogLevel};

pub(crate) fn request_to_wit(r: &WebhookRequest) -> wit::Request {
    wit::Request {
        method: r.method.clone(),
        topic: r.topic.clone(),
        query: r.query.clone(),
        headers: r.headers.clone(),
        body: r.body.to_vec(),
    }
}

super::convert::common_conversions!();

pub(crate) fn handshake_from_wit(h: wit::Handshake) -> super::types::Handshake {
    super::types::Handshake {
        status: h.status,
        content_type: h.content_type,
        headers: Vec::new(),
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

impl hookgate::plugin::host::Host for CallState {
    /// 0.1 had no grant: the raw MAC is withheld unless the source allows it, as in 0.2.
    fn hmac(&mut self, secret: u32, a: HashAlgorithm, message: Vec<u8>) -> Option<Vec<u8>> {
        self.raw_mac(
            secret,
            &SecretEncoding::Raw,
            algorithm(a),
            &[Part::Literal(&message)],
        )
        .ok()
    }

    fn hmac_verify(
        &mut self,
        secrets: Vec<u32>,
        a: HashAlgorithm,
        message: Vec<u8>,
        candidates: Vec<Vec<u8>>,
    ) -> Option<u32> {
        self.mac_verify(
            &secrets,
            &SecretEncoding::Raw,
            algorithm(a),
            &[Part::Literal(&message)],
            &candidates,
        )
    }

    fn sha256(&mut self, data: Vec<u8>) -> Vec<u8> {
        CallState::sha256(self, &[Part::Literal(&data)]).unwrap_or_default()
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
