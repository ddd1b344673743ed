//! Write hookgate source plugins in Rust: one [`SourcePlugin`] impl and one
//! [`export_plugin!`] line.
//!
//! A source plugin knows one webhook sender: how its signature is checked ([`verify`]) and
//! how its payload becomes domain events ([`map`]). hookgate runs it as a sandboxed
//! WebAssembly component (`cargo build --target wasm32-wasip2`), one fresh instance per
//! webhook. The delivery stays in the host ([`Request`] reads it on demand), and so do
//! secrets and keys: `verify` gets opaque [`SecretHandle`]s and [`KeyHandle`]s and asks the
//! host to check MACs ([`hmac_verify`]) or public-key signatures ([`signature_verify`])
//! over parts of the request ([`Part`]), so the body is never copied just to be signed.
//!
//! On any target other than `wasm32` the host helpers run a native implementation driven
//! by a `TestHost` (native targets only), so a plugin's logic is unit-tested with plain `cargo test`.
//!
//! [`verify`]: SourcePlugin::verify
//! [`map`]: SourcePlugin::map
//!
//! # Example
//!
//! A complete plugin for a sender that signs the raw body with HMAC-SHA256, hex-encoded
//! in `X-Signature`, and sends `{"id": "...", "kind": "..."}`. Its `Cargo.toml` has
//! `crate-type = ["cdylib", "rlib"]`.
//!
//! ```
//! use hookgate_plugin_sdk::{
//!     DomainEvent, HashAlgorithm, KeyHandle, MapError, MapOutcome, Mapping, Metadata, Part,
//!     Request, SecretHandle, Settings, SourcePlugin, Verified, VerifyError,
//! };
//!
//! pub struct Acme;
//!
//! impl SourcePlugin for Acme {
//!     fn metadata() -> Metadata {
//!         Metadata {
//!             name: "acme".into(),
//!             version: env!("CARGO_PKG_VERSION").into(),
//!             description: "Acme webhooks".into(),
//!             retry_window_hours: 24,
//!         }
//!     }
//!
//!     fn verify(
//!         req: &Request,
//!         secrets: &[SecretHandle],
//!         _keys: &[KeyHandle],
//!         _settings: &Settings,
//!     ) -> Result<Verified, VerifyError> {
//!         let header = req
//!             .header("x-signature")
//!             .ok_or_else(|| VerifyError::MissingSignature("x-signature".into()))?;
//!         let candidate = hookgate_plugin_sdk::hex_decode(header)
//!             .ok_or_else(|| VerifyError::MalformedSignature("not hex".into()))?;
//!         // The host MACs the body it holds: it is never copied into the plugin.
//!         hookgate_plugin_sdk::hmac_verify(req, secrets, HashAlgorithm::Sha256, &[Part::Body], &[candidate])
//!             .map(Verified::by)
//!             .ok_or_else(|| VerifyError::Mismatch("no configured secret matches".into()))
//!     }
//!
//!     fn map(req: &Request, _settings: &Settings) -> Result<MapOutcome, MapError> {
//!         // A real plugin parses the body with serde_json; this one reads a header.
//!         let kind = req
//!             .header("x-kind")
//!             .ok_or_else(|| MapError::MissingField("x-kind".into()))?;
//!         hookgate_plugin_sdk::debug!("mapping a {kind} webhook");
//!         Ok(MapOutcome::Events(Mapping {
//!             idempotency_key: req.header("x-delivery").map(str::to_owned),
//!             tenant: None,
//!             topic: kind.to_owned(),
//!             occurred_at: None,
//!             events: vec![DomainEvent {
//!                 event_type: format!("acme.{kind}"),
//!                 subject: None,
//!                 data: None,
//!             }],
//!         }))
//!     }
//! }
//!
//! hookgate_plugin_sdk::export_plugin!(Acme);
//!
//! // A native unit test of the plugin: no WASM runtime involved.
//! use hookgate_plugin_sdk::{TestHost, hex_encode};
//!
//! let host = TestHost::new().secrets(["old-secret", "current-secret"]);
//! let handles = host.handles();
//! let body = br#"{"id":"1"}"#;
//! // Signed as the sender would, with the second secret.
//! let signature = hex_encode(&host.sign(1, HashAlgorithm::Sha256, body));
//! let req = Request::post()
//!     .with_header("X-Signature", signature)
//!     .with_header("X-Kind", "created")
//!     .with_body(&body[..]);
//!
//! let verified = Acme::verify(&req, &handles, &[], &Settings::new()).unwrap();
//! assert_eq!(verified.secret.and_then(|h| host.secret_index(h)), Some(1));
//! let Ok(MapOutcome::Events(mapping)) = Acme::map(&req, &Settings::new()) else {
//!     panic!("expected events");
//! };
//! assert_eq!(mapping.events[0].event_type, "acme.created");
//! assert_eq!(host.logs()[0].message, "mapping a created webhook");
//! ```

#![deny(missing_docs)]

#[doc(hidden)]
#[allow(missing_docs, dead_code, clippy::all)]
pub mod bindings;
mod freshness;
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod glue;
mod host;
#[cfg(not(target_arch = "wasm32"))]
pub mod keys;
#[cfg(not(target_arch = "wasm32"))]
mod testing;
mod types;

pub use freshness::{TOLERANCE_SETTING, check_timestamp, timestamp_tolerance};
pub use host::{
    base64_decode, base64_encode, constant_time_eq, hex_decode, hex_encode, hmac, hmac_verify,
    hmac_verify_encoded, log, now_unix_seconds, sha256, signature_verify,
};
#[cfg(not(target_arch = "wasm32"))]
pub use testing::{LogEntry, TestHost};
pub use types::{
    DomainEvent, Handshake, HashAlgorithm, KeyHandle, LogLevel, MapError, MapOutcome, Mapping,
    Metadata, Part, Request, SecretEncoding, SecretHandle, Settings, SignatureAlgorithm, Timestamp,
    Verified, VerifyError,
};

/// A webhook source, implemented once per plugin and exported with [`export_plugin!`].
///
/// hookgate calls `tenant_hint` and `verify` on every delivery, then `map` if the
/// signature holds, each in a fresh instance: keep no state between calls.
pub trait SourcePlugin {
    /// Who the plugin is. Called once when the plugin is loaded.
    fn metadata() -> Metadata;

    /// The tenant a delivery claims to belong to, read before verification so the host can
    /// pick that tenant's secrets. The default says the source has no tenants.
    fn tenant_hint(req: &Request, settings: &Settings) -> Option<String> {
        let _ = (req, settings);
        None
    }

    /// Checks that the delivery is authentic, with the host checking MACs under the given
    /// secret handles ([`hmac_verify`]) or signatures under the given public-key handles
    /// ([`signature_verify`]); reports the handle that matched.
    fn verify(
        req: &Request,
        secrets: &[SecretHandle],
        keys: &[KeyHandle],
        settings: &Settings,
    ) -> Result<Verified, VerifyError>;

    /// Turns a verified delivery into domain events (or a handshake response).
    fn map(req: &Request, settings: &Settings) -> Result<MapOutcome, MapError>;
}

/// Exports a [`SourcePlugin`] as the component's `source-plugin` world.
///
/// Write it once, at the root of the plugin crate: `hookgate_plugin_sdk::export_plugin!(MyPlugin);`.
/// It only emits code when compiling for `wasm32`, so native builds and tests of the
/// plugin crate are unaffected.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __HookgateExport;

            impl $crate::bindings::Guest for __HookgateExport {
                fn metadata() -> $crate::bindings::Metadata {
                    $crate::glue::metadata::<$plugin>()
                }

                fn tenant_hint(
                    request: &$crate::bindings::Request,
                    settings: $crate::bindings::Settings,
                ) -> ::core::option::Option<::std::string::String> {
                    $crate::glue::tenant_hint::<$plugin>(request, settings)
                }

                fn verify(
                    request: &$crate::bindings::Request,
                    secrets: ::std::vec::Vec<$crate::bindings::SecretHandle>,
                    keys: ::std::vec::Vec<$crate::bindings::KeyHandle>,
                    settings: $crate::bindings::Settings,
                ) -> ::core::result::Result<
                    $crate::bindings::Verified,
                    $crate::bindings::VerifyError,
                > {
                    $crate::glue::verify::<$plugin>(request, secrets, keys, settings)
                }

                fn map(
                    request: &$crate::bindings::Request,
                    settings: $crate::bindings::Settings,
                ) -> ::core::result::Result<
                    $crate::bindings::MapOutcome,
                    $crate::bindings::MapError,
                > {
                    $crate::glue::map::<$plugin>(request, settings)
                }
            }

            $crate::__export_source_plugin_impl!(__HookgateExport with_types_in $crate::bindings);
        };
    };
}

#[cfg(test)]
mod tests;
