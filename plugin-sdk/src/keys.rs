//! Public keys configured for a source (`keys = [...]`) and the signature checks made
//! with them, shared by the gateway and the native test host so both accept the same
//! keys and the same signatures.
//!
//! Keys are accepted as operators find them in providers' documentation: PEM
//! (`PUBLIC KEY` or `RSA PUBLIC KEY`), DER as base64 or hex, raw Ed25519 or SEC1 P-256
//! bytes as base64 or hex, and Standard Webhooks' `whpk_` spelling. Ed25519, ECDSA P-256
//! and RSA (2048 to 8192 bits) keys are supported. The cryptography is RustCrypto's
//! (`ed25519-dalek`, `p256`, `rsa`); this module only recognises formats and dispatches.

use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use p256::ecdsa::signature::Verifier as _;
use rsa::pkcs1::DecodeRsaPublicKey as _;
use rsa::pkcs8::spki::SubjectPublicKeyInfoRef;
use rsa::pkcs8::{DecodePublicKey as _, EncodePublicKey as _, ObjectIdentifier};
use rsa::traits::PublicKeyParts as _;
use sha1::Sha1;
use sha2::{Digest as _, Sha256};

use crate::types::SignatureAlgorithm;

/// Smaller RSA moduli are within reach of well-funded attackers (NIST disallowed them
/// after 2013); a provider still using one should be told, not silently trusted.
const RSA_MIN_BITS: usize = 2048;
/// No webhook provider uses more; the bound keeps the cost of a check, paid on every
/// delivery, predictable.
const RSA_MAX_BITS: usize = 8192;

const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// Providers publish base64 with either alphabet and with or without padding; the
/// spelling carries no meaning, so any is accepted.
const BASE64_STANDARD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const BASE64_URL_SAFE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a configured key was refused. The message names the problem and never contains
/// the key text: a private key pasted by mistake must not reach the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError(String);

impl KeyError {
    fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }

    fn private(what: &str) -> Self {
        Self(format!(
            "{what}: a public key is expected, not a private one"
        ))
    }
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KeyError {}

/// A public key a source's signatures are checked with: Ed25519, ECDSA P-256 or RSA.
///
/// Built only by [`PublicKey::parse`] or [`PublicKey::from_der`], so it always holds a
/// usable key (a valid curve point, an RSA modulus of at least 2048 bits).
#[derive(Clone)]
pub struct PublicKey {
    key: Key,
    /// The key's SubjectPublicKeyInfo DER, re-encoded by us so the same key has the same
    /// fingerprint whatever format it was given in.
    spki: Vec<u8>,
}

#[derive(Clone)]
enum Key {
    Ed25519(ed25519_dalek::VerifyingKey),
    P256(p256::ecdsa::VerifyingKey),
    Rsa(rsa::RsaPublicKey),
}

impl PublicKey {
    /// Parses a key as operators paste it. Whitespace around the key, and inside base64
    /// or PEM, is ignored. Accepted:
    /// - PEM: `-----BEGIN PUBLIC KEY-----` (SubjectPublicKeyInfo of Ed25519, P-256 or
    ///   RSA) or `-----BEGIN RSA PUBLIC KEY-----` (PKCS#1);
    /// - the DER of either, as base64 (standard or URL-safe, padded or not) or hex;
    /// - raw key bytes as base64 or hex: 32 bytes are Ed25519, 33 or 65 bytes SEC1 P-256;
    /// - `whpk_<base64>`: Standard Webhooks' spelling of a raw Ed25519 key.
    ///
    /// A private key (PEM `PRIVATE KEY`, `EC PRIVATE KEY`, `RSA PRIVATE KEY`, private-key
    /// DER, or a `whsk_` prefix) is refused with a message saying a public key is
    /// expected; no error message contains the input.
    pub fn parse(text: &str) -> Result<PublicKey, KeyError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(KeyError::new("empty: no key given"));
        }
        if text.contains("-----BEGIN") {
            return parse_pem(text);
        }
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        if compact.starts_with("whsk_") {
            return Err(KeyError::private(
                "`whsk_` prefix (a Standard Webhooks signing key)",
            ));
        }
        if let Some(rest) = compact.strip_prefix("whpk_") {
            let raw = BASE64_STANDARD.decode(rest).map_err(|_| {
                KeyError::new("`whpk_` key: the part after the prefix is not base64")
            })?;
            return match <[u8; 32]>::try_from(raw.as_slice()) {
                Ok(raw) => Self::ed25519(&raw),
                Err(_) => Err(KeyError::new(format!(
                    "`whpk_` key of {} bytes: an Ed25519 key is 32",
                    raw.len()
                ))),
            };
        }
        let bytes =
            decode_text(&compact).ok_or_else(|| KeyError::new("not PEM, DER, base64 or hex"))?;
        Self::from_bytes(&bytes)
    }

    /// Parses DER: a SubjectPublicKeyInfo (Ed25519, P-256 or RSA) or a PKCS#1
    /// `RSAPublicKey`.
    pub fn from_der(der: &[u8]) -> Result<PublicKey, KeyError> {
        if let Ok(spki) = SubjectPublicKeyInfoRef::try_from(der) {
            return Self::from_spki(&spki, der);
        }
        if rsa::pkcs1::RsaPublicKey::try_from(der).is_ok() {
            return Self::from_pkcs1(der);
        }
        if looks_like_private_key(der) {
            return Err(KeyError::private("DER private key"));
        }
        Err(KeyError::new(
            "DER that is neither a SubjectPublicKeyInfo nor a PKCS#1 RSA public key",
        ))
    }

    /// The key's kind, for operators: `ed25519`, `ecdsa-p256` or `rsa-<bits>`.
    pub fn kind(&self) -> String {
        match &self.key {
            Key::Ed25519(_) => "ed25519".to_owned(),
            Key::P256(_) => "ecdsa-p256".to_owned(),
            Key::Rsa(key) => format!("rsa-{}", key.n().bits()),
        }
    }

    /// The first 16 lower-case hex digits of the SHA-256 of the key's
    /// SubjectPublicKeyInfo DER: shown to operators to tell keys apart, the same whatever
    /// format the key was given in.
    pub fn fingerprint(&self) -> String {
        hex::encode(&Sha256::digest(&self.spki)[..8])
    }

    /// Whether `signature` is a valid `algorithm` signature of `message` by this key.
    ///
    /// `false`, never a panic, when the algorithm does not suit the key's kind or the
    /// signature is malformed. ECDSA signatures may be DER or the fixed 64-byte
    /// `r || s`. Ed25519 is checked strictly (RFC 8032 verification plus rejection of
    /// small-order and non-canonical points), so one signature cannot be reshaped into
    /// another that also passes.
    pub fn verify(&self, algorithm: SignatureAlgorithm, message: &[u8], signature: &[u8]) -> bool {
        match (&self.key, algorithm) {
            (Key::Ed25519(key), SignatureAlgorithm::Ed25519) => {
                ed25519_dalek::Signature::from_slice(signature)
                    .is_ok_and(|sig| key.verify_strict(message, &sig).is_ok())
            }
            (Key::P256(key), SignatureAlgorithm::EcdsaP256Sha256) => {
                verify_ecdsa(key, message, signature)
            }
            (Key::Rsa(key), SignatureAlgorithm::RsaPkcs1v15Sha256) => key
                .verify(
                    rsa::Pkcs1v15Sign::new::<Sha256>(),
                    &Sha256::digest(message),
                    signature,
                )
                .is_ok(),
            (Key::Rsa(key), SignatureAlgorithm::RsaPkcs1v15Sha1) => key
                .verify(
                    rsa::Pkcs1v15Sign::new::<Sha1>(),
                    &Sha1::digest(message),
                    signature,
                )
                .is_ok(),
            // An algorithm of another key kind: a configuration or plugin mistake, and
            // never a valid signature.
            _ => false,
        }
    }

    /// Decoded base64 or hex: raw key bytes when the length says so, DER otherwise.
    fn from_bytes(bytes: &[u8]) -> Result<PublicKey, KeyError> {
        match (bytes.len(), bytes.first()) {
            (32, _) => {
                let mut raw = [0; 32];
                raw.copy_from_slice(bytes);
                Self::ed25519(&raw)
            }
            (33, Some(0x02 | 0x03)) | (65, Some(0x04)) => {
                let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(bytes)
                    .map_err(|_| KeyError::new("P-256 key: not a valid curve point"))?;
                Self::new(Key::P256(key))
            }
            // DER opens with a SEQUENCE tag.
            (_, Some(0x30)) => Self::from_der(bytes),
            (len, _) => Err(KeyError::new(format!(
                "{len} bytes that are not DER: a raw key is 32 bytes (Ed25519) or 33 or 65 \
                 bytes (SEC1 P-256)"
            ))),
        }
    }

    fn ed25519(raw: &[u8; 32]) -> Result<PublicKey, KeyError> {
        let key = ed25519_dalek::VerifyingKey::from_bytes(raw)
            .map_err(|_| KeyError::new("Ed25519 key: not a valid curve point"))?;
        Self::new(Key::Ed25519(key))
    }

    fn from_spki(spki: &SubjectPublicKeyInfoRef<'_>, der: &[u8]) -> Result<PublicKey, KeyError> {
        let oid = spki.algorithm.oid;
        let key = if oid == OID_ED25519 {
            let key = ed25519_dalek::VerifyingKey::from_public_key_der(der)
                .map_err(|_| KeyError::new("Ed25519 key: not a valid curve point"))?;
            Key::Ed25519(key)
        } else if oid == OID_EC_PUBLIC_KEY {
            match spki.algorithm.parameters_oid() {
                Ok(curve) if curve == OID_P256 => {}
                Ok(curve) => {
                    return Err(KeyError::new(format!(
                        "EC key on curve {curve}: only P-256 ({OID_P256}) is supported"
                    )));
                }
                Err(_) => return Err(KeyError::new("EC key without a named curve")),
            }
            let key = p256::ecdsa::VerifyingKey::from_public_key_der(der)
                .map_err(|_| KeyError::new("P-256 key: not a valid curve point"))?;
            Key::P256(key)
        } else if oid == OID_RSA_ENCRYPTION {
            let pkcs1 = spki
                .subject_public_key
                .as_bytes()
                .ok_or_else(|| KeyError::new("RSA key: malformed SubjectPublicKeyInfo"))?;
            check_rsa_size(pkcs1)?;
            let key = rsa::RsaPublicKey::from_public_key_der(der)
                .map_err(|_| KeyError::new("RSA key: malformed modulus or public exponent"))?;
            Key::Rsa(key)
        } else {
            return Err(KeyError::new(format!(
                "SubjectPublicKeyInfo of algorithm {oid}: Ed25519, EC P-256 or RSA is expected"
            )));
        };
        Self::new(key)
    }

    fn from_pkcs1(der: &[u8]) -> Result<PublicKey, KeyError> {
        check_rsa_size(der)?;
        let key = rsa::RsaPublicKey::from_pkcs1_der(der)
            .map_err(|_| KeyError::new("RSA key: malformed modulus or public exponent"))?;
        Self::new(Key::Rsa(key))
    }

    /// The one constructor: refuses keys that cannot be trusted and fixes the SPKI.
    fn new(key: Key) -> Result<PublicKey, KeyError> {
        let spki = match &key {
            Key::Ed25519(key) => {
                // A small-order key "verifies" signatures nobody made with plain RFC 8032
                // checking; `verify_strict` refuses them, so such a key is useless anyway.
                if key.is_weak() {
                    return Err(KeyError::new(
                        "Ed25519 key of small order: not a usable key",
                    ));
                }
                key.to_public_key_der()
            }
            Key::P256(key) => key.to_public_key_der(),
            Key::Rsa(key) => key.to_public_key_der(),
        }
        .map_err(|_| KeyError::new("the key cannot be encoded as SubjectPublicKeyInfo"))?;
        Ok(PublicKey {
            key,
            spki: spki.into_vec(),
        })
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("kind", &self.kind())
            .field("fingerprint", &self.fingerprint())
            .finish()
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.spki == other.spki
    }
}

impl Eq for PublicKey {}

/// One PEM block. Text around it is ignored (tools print explanations there), but only
/// one key per entry: a second block would be silently dropped otherwise.
fn parse_pem(text: &str) -> Result<PublicKey, KeyError> {
    // Look at every block's label before anything else, so that a private key anywhere
    // in the text (an `EC PARAMETERS` block comes before `EC PRIVATE KEY`) is named as such.
    let labels: Vec<&str> = text
        .split("-----BEGIN ")
        .skip(1)
        .map(|after| after.split("-----").next().unwrap_or_default())
        .collect();
    if let Some(label) = labels.iter().find(|label| label.contains("PRIVATE")) {
        return Err(KeyError::private(&format!(
            "PEM label {}",
            show_label(label)
        )));
    }
    if labels.len() > 1 {
        return Err(KeyError::new("several PEM blocks: give one key per entry"));
    }
    let label = labels.first().copied().unwrap_or_default();
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let body = text
        .split_once(&begin)
        .and_then(|(_, after)| after.split_once(&end))
        .map(|(body, _)| body)
        .ok_or_else(|| {
            KeyError::new(format!(
                "PEM block {} without its matching END line",
                show_label(label)
            ))
        })?;
    let body: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    let der = BASE64_STANDARD
        .decode(body)
        .map_err(|_| KeyError::new(format!("PEM {}: the body is not base64", show_label(label))))?;
    match label {
        "PUBLIC KEY" => match SubjectPublicKeyInfoRef::try_from(der.as_slice()) {
            Ok(spki) => PublicKey::from_spki(&spki, &der),
            Err(_) => Err(KeyError::new(
                "PEM `PUBLIC KEY`: the body is not a SubjectPublicKeyInfo",
            )),
        },
        "RSA PUBLIC KEY" => PublicKey::from_pkcs1(&der),
        "CERTIFICATE" => Err(KeyError::new(
            "PEM `CERTIFICATE`: give the certificate's public key instead \
             (`openssl x509 -pubkey -noout`)",
        )),
        _ => Err(KeyError::new(format!(
            "PEM label {}: `PUBLIC KEY` or `RSA PUBLIC KEY` is expected",
            show_label(label)
        ))),
    }
}

/// A PEM label for an error message. Real labels are short upper-case words; anything
/// else may be part of a pasted secret and is not repeated.
fn show_label(label: &str) -> String {
    let plain = label.len() <= 40
        && label
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b' ');
    if plain {
        format!("`{label}`")
    } else {
        "(unrecognised)".to_owned()
    }
}

/// Hex first: an even-length string of hex digits is hex. (A base64 key made only of hex
/// digits is possible but vanishingly rare: 22 of its 64 letters, at every position.)
fn decode_text(compact: &str) -> Option<Vec<u8>> {
    if compact.len().is_multiple_of(2) && compact.bytes().all(|b| b.is_ascii_hexdigit()) {
        return hex::decode(compact).ok();
    }
    BASE64_STANDARD
        .decode(compact)
        .or_else(|_| BASE64_URL_SAFE.decode(compact))
        .ok()
}

/// Refuses RSA moduli outside [`RSA_MIN_BITS`]..=[`RSA_MAX_BITS`] with a message naming
/// the size, before the `rsa` crate's own checks, whose errors do not say.
fn check_rsa_size(pkcs1: &[u8]) -> Result<(), KeyError> {
    let key = rsa::pkcs1::RsaPublicKey::try_from(pkcs1)
        .map_err(|_| KeyError::new("RSA key: not a PKCS#1 RSAPublicKey"))?;
    let bits = rsa::BigUint::from_bytes_be(key.modulus.as_bytes()).bits();
    if bits < RSA_MIN_BITS {
        return Err(KeyError::new(format!(
            "RSA key of {bits} bits: at least {RSA_MIN_BITS} are required"
        )));
    }
    if bits > RSA_MAX_BITS {
        return Err(KeyError::new(format!(
            "RSA key of {bits} bits: at most {RSA_MAX_BITS} are supported"
        )));
    }
    Ok(())
}

/// Only used to word an error. Every private-key DER form (PKCS#8, PKCS#1
/// `RSAPrivateKey`, SEC1 `ECPrivateKey`) opens with a SEQUENCE whose first element is a
/// one-byte version INTEGER, 0 or 1; neither public form does.
fn looks_like_private_key(der: &[u8]) -> bool {
    let [0x30, len, rest @ ..] = der else {
        return false;
    };
    // Short-form length, or long form: the low bits count the length bytes that follow.
    let skip = if len & 0x80 == 0 {
        0
    } else {
        usize::from(len & 0x7f)
    };
    matches!(rest.get(skip..skip + 3), Some([0x02, 0x01, 0x00 | 0x01]))
}

/// ECDSA signatures travel as DER (X.509, most SDKs) or as fixed `r || s` (JOSE,
/// WebCrypto). Trying both is safe: each decodes to the same `(r, s)` a forger would need.
fn verify_ecdsa(key: &p256::ecdsa::VerifyingKey, message: &[u8], signature: &[u8]) -> bool {
    let holds = |sig: p256::ecdsa::Signature| key.verify(message, &sig).is_ok();
    p256::ecdsa::Signature::from_der(signature).is_ok_and(holds)
        || (signature.len() == 64 && p256::ecdsa::Signature::from_slice(signature).is_ok_and(holds))
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::Signer as _;
    use rsa::pkcs1::EncodeRsaPrivateKey as _;
    use rsa::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};

    use super::*;

    const MESSAGE: &[u8] = b"hookgate keys interop";

    // Made once with `openssl genrsa 2048` (PKCS#8), then `openssl rsa -pubout` and
    // `openssl rsa -RSAPublicKey_out`. Test material only.
    const RSA_2048_PRIVATE_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDXIadujdZMdvBt
sgiKME5px6B8CT5e5Nb1QeBaGnhfQjM2xR6pfwIOk4jRbSlOl3b4XCHjiVvexR0/
8imQEBm/aglSwtfhKBHCYhLjJ/ICiS+0d13JyzYJXWyxUry1684FihzUayr7vtD2
FqBPtmVj45zt3C+xRJj/A1Wr0F605/NlBlv47F8HLe38E44B8kGeCSEwpjLf5FSJ
o7D7FqhBe9jmZFh8acP5AwCNu6hrQBbTrsFVrOy9uyp/Zl+4U68HF1Y0c5Se0V5i
baNCdqx9rfAmAwj8ryagM/6fVq09hH3mawBrGPzzWw/LgKGqrKilZgLq+sHyRC5g
W/R05sD9AgMBAAECggEACvV9bH3QNVv3unbPxY5ZaD0RmU/1O+tHYf4FmkFv8VZT
eo5HFhZQugJc/WIksQq5NkSnO0qTggEjkM7avCp9zUjvCabATYl3giHx2V1/EA8B
/Zz5C58M9SQrtcrDrzbAa3rSJiYBbgqV5XtYlkbx2klNhLZrPYoDizYVxqdaM7fn
O0vqUXJGsWQUJyqF8P9mH34suGgMNCd1hDBQQnrbRyIIDa+xywTJCvJEM8zTKyjP
RO/zypywRnvdXhMuPD0LTB5B/GmhKCc79eYyA4UO7BhvSODM0+YekMGHZdzFf8P6
Rln9pFaTjOGPms7+onulTtTMSZf44JY/J2wj9WJstwKBgQDyy/TrNwlqVawIH1FU
5D3g1g+Acuvnrzk4fab/eZWgg5xwf9+cmWhb8/M9Uh33HyN73W5hB/igHSfKDoXC
emxBcM85a9gYXAFq+vTdVKttqtMwRR0sWFbUdNoUX/lzMkM23c1ctypwnwrmcE2U
IMfuLmWPsScFNimN3P1N6UaRMwKBgQDi1I+5uua9qW9gQ9fM9KdyscqbIx4zZ0qO
D3NmVfqDAedKq3li/zfYYNM/8xyj/ozpCvA6ErMekSbsMmq7RMitGtvyGPXZSrgE
fm0CYB63n301LTo704vaeskhFTcDBbxY/XoFhdRoj5RBZ+Htt7ovtks+Uv83ug/8
+keUI9jFDwKBgCHNS1fD3ce0DbNDyOrsq8C1jIrxdO5Ycrruo2VF5BLov8rZwqPm
p6TFncOXvxw8dZA1D7zqgy6nYHa89tpQeOnTbsYrwXYCuR/PuG9n7kXiVmyN8rXN
xqjla8cSZYQoJztoPcL+rSXovne+gs5wkeUTCIisvSX4mGhrr8g9BdoJAoGAOD8T
QK/65Y7tQkawbW9BUmyJ2/xSUdbMIvvr1rV9QB0puFda61R0CaDA4XusX3IQiP0g
YpYeenbt2uYJl1RQGrStU5Qi6nXfuaWL7GnfVBMlXhlP9mPXqx6FX0G+eW5jrQF1
z4bHDAKGdc2HtYW4kno2oEa+aJgnvMhnFXHqH7sCgYEAht68ksx1o0xoKYvtiHlj
pxWrd2EPblGyiElH40xQ9vYhPGqzzj/8FeA/zKIpBXX49ykbjUgmKGRyZg3GISZb
PI5SjS+fmNGQsdyXERKweXps/BzefA3V1BnB7uEnSKshpeoWq3c9KEw/6PlHJjax
iw0aCCuTdmrnyXssfSupLKM=
-----END PRIVATE KEY-----
";
    const RSA_2048_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA1yGnbo3WTHbwbbIIijBO
acegfAk+XuTW9UHgWhp4X0IzNsUeqX8CDpOI0W0pTpd2+Fwh44lb3sUdP/IpkBAZ
v2oJUsLX4SgRwmIS4yfyAokvtHddycs2CV1ssVK8tevOBYoc1Gsq+77Q9hagT7Zl
Y+Oc7dwvsUSY/wNVq9BetOfzZQZb+OxfBy3t/BOOAfJBngkhMKYy3+RUiaOw+xao
QXvY5mRYfGnD+QMAjbuoa0AW067BVazsvbsqf2ZfuFOvBxdWNHOUntFeYm2jQnas
fa3wJgMI/K8moDP+n1atPYR95msAaxj881sPy4ChqqyopWYC6vrB8kQuYFv0dObA
/QIDAQAB
-----END PUBLIC KEY-----
";
    const RSA_2048_PKCS1_PEM: &str = "-----BEGIN RSA PUBLIC KEY-----
MIIBCgKCAQEA1yGnbo3WTHbwbbIIijBOacegfAk+XuTW9UHgWhp4X0IzNsUeqX8C
DpOI0W0pTpd2+Fwh44lb3sUdP/IpkBAZv2oJUsLX4SgRwmIS4yfyAokvtHddycs2
CV1ssVK8tevOBYoc1Gsq+77Q9hagT7ZlY+Oc7dwvsUSY/wNVq9BetOfzZQZb+Oxf
By3t/BOOAfJBngkhMKYy3+RUiaOw+xaoQXvY5mRYfGnD+QMAjbuoa0AW067BVazs
vbsqf2ZfuFOvBxdWNHOUntFeYm2jQnasfa3wJgMI/K8moDP+n1atPYR95msAaxj8
81sPy4ChqqyopWYC6vrB8kQuYFv0dObA/QIDAQAB
-----END RSA PUBLIC KEY-----
";
    // Another `openssl genrsa 2048` key, public part only: "a wrong key".
    const OTHER_RSA_2048_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEArRUUeJf9MBWcRYwqI8Ox
Po/RsQkE7QP3Rvw35YHVzg9Rs+LD6zgNDeIqk6+cAvS4tSz8Oep23o075hYRuN9N
1rP/xmeRPraZv+lQ3/jKIwbxjFnLIrNSCjpQ3ByEpRkUbGBAe1q8j551L/32lO1/
HfWvjZglxsN6X0QCleBU8ncRwWjBIGIXWtmHCnwN56dzHP6KYcHOuWJB0nygoUon
HyEvDCU6wvhLB+ABKIJ2aXKwCONnNUSGhK326aS2m4wrpnpvQ0wDR+Ob3xcBw+Sn
BrRyZ8Nm+v8kZV5NCTJYdTEg4mKbVr2nwPIecUAtv9cKGcxAr8KU/o9LMA+EO+rH
qQIDAQAB
-----END PUBLIC KEY-----
";
    // `openssl genrsa 1024`, then `openssl rsa -pubout`: too weak to be accepted.
    const RSA_1024_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDZXMsnfYGnx5pRDaxePZvznOe6
NywOlZcclPlfnezcz32YyTij5muFdosEZqcudErsgPOcXLsvlaF164UNa6zIp/zG
rlbm5mEGbuwxqTppfJ4FDE6/U63yeR0JdXpG0KZFFbBAWv08u5jL4G8HbN4xB7x1
eLgGdmfLMEcwbJ0V4wIDAQAB
-----END PUBLIC KEY-----
";
    // `openssl dgst -sha256 -sign` and `openssl dgst -sha1 -sign` of MESSAGE with
    // RSA_2048_PRIVATE_PEM, hex.
    const OPENSSL_RSA_SHA256_SIG: &str = "4bb7e2506a680147be12518c8501dbe18a94d5bcc9c9a3eca16f78386509c298c94f6d7d8b0591222718807020ca1743a185faeacde202670e05a312510615499f106e01ea6bef9b6d21ad6a44ea7fa3bcf4984fe15a8aff16988762fcfb46d6c9c6b14ff62d137110f9d1a48123ca078c2ee94c23198965dd9f75b4b41619cb0d0fc6f40260a8f265c58c8f99b7e93104c2a54689a10d802117149de5bf72710e1d451ce2c80618bc003cc979ffaaa7d7b9211d1cbcb58664cb5dd65f6378c259767bb74fa741c8eb62db431bfe38ab147ed786145ca330eff84351f61aea1b97aafc9fe86221389367dcd8ec4daabd7c4ce8248311999de1d4f7a8246a5aeb";
    const OPENSSL_RSA_SHA1_SIG: &str = "b97a00671e7a73af6e22f9c0dd7c21b33a89151a498974fa0d3b26fe9bf23a2378cb27ee32bbebc2dbbcd21fb3675970b9f7ee2f7553fd7452bde3935d41629809bcba37845ed7d3e4b85627f9e546db524a9435b6f44dffa80e3fea2a47bff50e17137a06d3c50a4b02e384cdcb3eea63717ab4a8035d9c0a15b1400735b763251bd671ded18ae3324d6005edb4a02a69b9d4391e77536ebc1c28ad17217ed052f8ea20925ed2af0791f359abe3b19b6a3e048509be6856ab24f182a94dd64292841ea031983d983abe67fc310a9afa5eae14fcda3bcffb8895665532ef9c8f3364aab465db320b53a756306658001b770381f819b1c35a77be8e6efe9b4d85";
    // `openssl ecparam -name prime256v1 -genkey`, `openssl ec -pubout`, and
    // `openssl dgst -sha256 -sign` of MESSAGE: DER, with the high S OpenSSL leaves as is.
    const OPENSSL_P256_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEJhbMKa8CQZWWyT67B/IRuYoug2zD
SJ3C80HadChK23+Pw9AG13Wk2rZkuZT5buiMhMTP0T9Uuwha3pblvs91CA==
-----END PUBLIC KEY-----
";
    const OPENSSL_P256_SIG: &str = "30460221008bccbce2b9b0a53caf57e1e5ac0672d3f7629abe5ff5e0dc4e87af1fac64f1bc022100bb098648f667095bf3ce41f6069bed852e60fb9c8b3132532286653e3c8f7376";

    /// RFC 8032, section 7.1, TEST 2 (a one-byte message).
    const RFC8032_TEST2_SECRET: &str =
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb";
    const RFC8032_TEST2_PUBLIC: &str =
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c";
    const RFC8032_TEST2_MESSAGE: &str = "72";
    const RFC8032_TEST2_SIGNATURE: &str = "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00";

    const B64: GeneralPurpose = base64::engine::general_purpose::STANDARD;
    const B64_URL: GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

    const ALL_ALGORITHMS: [SignatureAlgorithm; 4] = [
        SignatureAlgorithm::Ed25519,
        SignatureAlgorithm::EcdsaP256Sha256,
        SignatureAlgorithm::RsaPkcs1v15Sha256,
        SignatureAlgorithm::RsaPkcs1v15Sha1,
    ];

    fn ed25519_signer() -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&[7; 32])
    }

    fn p256_signer() -> p256::ecdsa::SigningKey {
        p256::ecdsa::SigningKey::from_bytes(&[0x42; 32].into()).expect("a valid scalar")
    }

    fn rsa_signer() -> rsa::RsaPrivateKey {
        rsa::RsaPrivateKey::from_pkcs8_pem(RSA_2048_PRIVATE_PEM).expect("the test key parses")
    }

    fn rsa_sign_sha256(message: &[u8]) -> Vec<u8> {
        rsa_signer()
            .sign(rsa::Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(message))
            .expect("signs")
    }

    fn rsa_sign_sha1(message: &[u8]) -> Vec<u8> {
        rsa_signer()
            .sign(rsa::Pkcs1v15Sign::new::<Sha1>(), &Sha1::digest(message))
            .expect("signs")
    }

    /// PEM as tools write it: 64-column base64 lines.
    fn pem(label: &str, der: &[u8]) -> String {
        let body = B64.encode(der);
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|line| std::str::from_utf8(line).expect("base64 is ASCII"))
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    }

    /// The DER inside one of the PEM constants.
    fn pem_der(pem: &str) -> Vec<u8> {
        let body: String = pem
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .collect();
        B64.decode(body).expect("the constant is PEM")
    }

    fn accepted(text: &str) -> PublicKey {
        PublicKey::parse(text).unwrap_or_else(|error| panic!("refused ({error}): {text}"))
    }

    /// Refused, with a message that says `expected` and repeats no 8 characters of the
    /// input (PEM label words aside: naming the label is the point).
    fn assert_refused(input: &str, expected: &str) {
        let message = match PublicKey::parse(input) {
            Ok(key) => panic!("accepted as {key:?}: {input}"),
            Err(error) => error.to_string(),
        };
        assert!(
            message.contains(expected),
            "`{message}` does not say `{expected}`"
        );
        let tokens = input.split(|c: char| c.is_whitespace() || c == '-');
        for token in tokens.filter(|token| !token.bytes().all(|b| b.is_ascii_uppercase())) {
            for window in token.as_bytes().windows(8) {
                assert!(
                    !message.as_bytes().windows(8).any(|part| part == window),
                    "`{message}` repeats the input"
                );
            }
        }
    }

    /// One key of each kind, the algorithm it signs with, and its signature of MESSAGE.
    fn signed_by_each_kind() -> Vec<(PublicKey, SignatureAlgorithm, Vec<u8>)> {
        let ed25519 = ed25519_signer();
        let p256 = p256_signer();
        let p256_signature: p256::ecdsa::Signature = p256.sign(MESSAGE);
        vec![
            (
                accepted(&hex::encode(ed25519.verifying_key().to_bytes())),
                SignatureAlgorithm::Ed25519,
                ed25519.sign(MESSAGE).to_bytes().to_vec(),
            ),
            (
                accepted(&hex::encode(p256.verifying_key().to_encoded_point(true))),
                SignatureAlgorithm::EcdsaP256Sha256,
                p256_signature.to_der().as_bytes().to_vec(),
            ),
            (
                accepted(RSA_2048_PUBLIC_PEM),
                SignatureAlgorithm::RsaPkcs1v15Sha256,
                rsa_sign_sha256(MESSAGE),
            ),
            (
                accepted(RSA_2048_PUBLIC_PEM),
                SignatureAlgorithm::RsaPkcs1v15Sha1,
                rsa_sign_sha1(MESSAGE),
            ),
        ]
    }

    #[test]
    fn ed25519_key_in_every_format_verifies() {
        let signer = ed25519_signer();
        let raw = signer.verifying_key().to_bytes();
        let der = signer.verifying_key().to_public_key_der().expect("encodes");
        let der = der.as_bytes();
        let signature = signer.sign(MESSAGE).to_bytes();
        let expected = PublicKey::from_der(der).expect("SPKI DER");
        for form in [
            pem("PUBLIC KEY", der),
            B64.encode(der),
            B64_URL.encode(der),
            hex::encode(der),
            hex::encode(raw),
            hex::encode_upper(raw),
            B64.encode(raw),
            B64_URL.encode(raw),
            format!("whpk_{}", B64.encode(raw)),
        ] {
            let key = accepted(&form);
            assert_eq!(key.kind(), "ed25519");
            assert_eq!(key, expected, "{form}");
            assert!(
                key.verify(SignatureAlgorithm::Ed25519, MESSAGE, &signature),
                "{form}"
            );
        }
    }

    #[test]
    fn p256_key_in_every_format_verifies() {
        let signer = p256_signer();
        let public = signer.verifying_key();
        let der = public.to_public_key_der().expect("encodes");
        let der = der.as_bytes();
        let compressed = public.to_encoded_point(true);
        let uncompressed = public.to_encoded_point(false);
        let signature: p256::ecdsa::Signature = signer.sign(MESSAGE);
        let expected = PublicKey::from_der(der).expect("SPKI DER");
        for form in [
            pem("PUBLIC KEY", der),
            B64.encode(der),
            hex::encode(der),
            hex::encode(compressed),
            B64_URL.encode(compressed),
            hex::encode(uncompressed),
            B64.encode(uncompressed),
        ] {
            let key = accepted(&form);
            assert_eq!(key.kind(), "ecdsa-p256");
            assert_eq!(key, expected, "{form}");
            let algorithm = SignatureAlgorithm::EcdsaP256Sha256;
            assert!(
                key.verify(algorithm, MESSAGE, signature.to_der().as_bytes()),
                "{form}"
            );
            assert!(
                key.verify(algorithm, MESSAGE, &signature.to_bytes()),
                "{form}"
            );
        }
    }

    #[test]
    fn rsa_key_in_every_format_verifies() {
        let spki = pem_der(RSA_2048_PUBLIC_PEM);
        let pkcs1 = pem_der(RSA_2048_PKCS1_PEM);
        let signature = rsa_sign_sha256(MESSAGE);
        let expected = PublicKey::from_der(&spki).expect("SPKI DER");
        assert_eq!(PublicKey::from_der(&pkcs1).expect("PKCS#1 DER"), expected);
        for form in [
            RSA_2048_PUBLIC_PEM.to_owned(),
            RSA_2048_PKCS1_PEM.to_owned(),
            B64.encode(&spki),
            B64_URL.encode(&spki),
            hex::encode(&spki),
            B64.encode(&pkcs1),
            hex::encode(&pkcs1),
        ] {
            let key = accepted(&form);
            assert_eq!(key.kind(), "rsa-2048");
            assert_eq!(key, expected, "{form}");
            assert!(key.verify(SignatureAlgorithm::RsaPkcs1v15Sha256, MESSAGE, &signature));
        }
    }

    #[test]
    fn whitespace_and_text_around_pem_are_ignored() {
        let expected = accepted(RSA_2048_PUBLIC_PEM);
        let body: String = RSA_2048_PUBLIC_PEM
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .collect();
        for form in [
            format!("\n\n  {RSA_2048_PUBLIC_PEM}  \n"),
            RSA_2048_PUBLIC_PEM.replace('\n', "\r\n    "),
            RSA_2048_PUBLIC_PEM.replace('\n', " "),
            format!("-----BEGIN PUBLIC KEY-----{body}-----END PUBLIC KEY-----"),
            format!("Your public key:\n{RSA_2048_PUBLIC_PEM}Keep it at hand.\n"),
            body.as_bytes()
                .chunks(50)
                .map(|part| std::str::from_utf8(part).expect("ASCII"))
                .collect::<Vec<_>>()
                .join("\n  "),
        ] {
            assert_eq!(accepted(&form), expected, "{form}");
        }
    }

    #[test]
    fn base64_of_either_alphabet_with_or_without_padding_and_hex_of_either_case() {
        assert_eq!(decode_text("-_8"), Some(vec![0xfb, 0xff]));
        assert_eq!(decode_text("+/8="), Some(vec![0xfb, 0xff]));
        assert_eq!(decode_text("+/8"), Some(vec![0xfb, 0xff]));
        assert_eq!(decode_text("-_8="), Some(vec![0xfb, 0xff]));
        assert_eq!(decode_text("0aFf"), Some(vec![0x0a, 0xff]));
        assert_eq!(decode_text("+_8"), None);
        assert_eq!(decode_text("not base64!"), None);
    }

    #[test]
    fn ecdsa_accepts_der_and_fixed_signatures() {
        let signer = p256_signer();
        let key = accepted(&hex::encode(signer.verifying_key().to_encoded_point(false)));
        let signature: p256::ecdsa::Signature = signer.sign(MESSAGE);
        let der = signature.to_der();
        let fixed = signature.to_bytes();
        assert_ne!(der.as_bytes(), &fixed[..]);
        assert!(key.verify(SignatureAlgorithm::EcdsaP256Sha256, MESSAGE, der.as_bytes()));
        assert!(key.verify(SignatureAlgorithm::EcdsaP256Sha256, MESSAGE, &fixed));
        // Neither encoding padded or cut short.
        let mut long = fixed.to_vec();
        long.push(0);
        assert!(!key.verify(SignatureAlgorithm::EcdsaP256Sha256, MESSAGE, &long));
        assert!(!key.verify(SignatureAlgorithm::EcdsaP256Sha256, MESSAGE, &fixed[..63]));
        let der = der.as_bytes();
        assert!(!key.verify(
            SignatureAlgorithm::EcdsaP256Sha256,
            MESSAGE,
            &der[..der.len() - 1]
        ));
    }

    #[test]
    fn signatures_made_by_openssl_verify() {
        let rsa = accepted(RSA_2048_PUBLIC_PEM);
        let sha256 = hex::decode(OPENSSL_RSA_SHA256_SIG).expect("hex");
        let sha1 = hex::decode(OPENSSL_RSA_SHA1_SIG).expect("hex");
        assert!(rsa.verify(SignatureAlgorithm::RsaPkcs1v15Sha256, MESSAGE, &sha256));
        assert!(rsa.verify(SignatureAlgorithm::RsaPkcs1v15Sha1, MESSAGE, &sha1));
        // PKCS#1 v1.5 signing is deterministic: ours are byte for byte OpenSSL's.
        assert_eq!(rsa_sign_sha256(MESSAGE), sha256);
        assert_eq!(rsa_sign_sha1(MESSAGE), sha1);

        let p256 = accepted(OPENSSL_P256_PUBLIC_PEM);
        let der = hex::decode(OPENSSL_P256_SIG).expect("hex");
        let fixed = p256::ecdsa::Signature::from_der(&der)
            .expect("DER")
            .to_bytes();
        assert!(p256.verify(SignatureAlgorithm::EcdsaP256Sha256, MESSAGE, &der));
        assert!(p256.verify(SignatureAlgorithm::EcdsaP256Sha256, MESSAGE, &fixed));
        assert!(!p256.verify(SignatureAlgorithm::EcdsaP256Sha256, b"hookgate keys", &der));
    }

    #[test]
    fn rfc8032_test_2() {
        let key = accepted(RFC8032_TEST2_PUBLIC);
        let message = hex::decode(RFC8032_TEST2_MESSAGE).expect("hex");
        let signature = hex::decode(RFC8032_TEST2_SIGNATURE).expect("hex");
        assert!(key.verify(SignatureAlgorithm::Ed25519, &message, &signature));
        assert!(!key.verify(SignatureAlgorithm::Ed25519, b"", &signature));

        // The published secret gives the published key and, deterministically, signature.
        let secret: [u8; 32] = hex::decode(RFC8032_TEST2_SECRET)
            .expect("hex")
            .try_into()
            .expect("32 bytes");
        let signer = ed25519_dalek::SigningKey::from_bytes(&secret);
        assert_eq!(
            hex::encode(signer.verifying_key().to_bytes()),
            RFC8032_TEST2_PUBLIC
        );
        assert_eq!(
            hex::encode(signer.sign(&message).to_bytes()),
            RFC8032_TEST2_SIGNATURE
        );
    }

    #[test]
    fn wrong_message_wrong_key_or_flipped_bit_fails() {
        let other_keys = [
            accepted(&hex::encode(
                ed25519_dalek::SigningKey::from_bytes(&[8; 32])
                    .verifying_key()
                    .to_bytes(),
            )),
            accepted(&hex::encode(
                p256::ecdsa::SigningKey::from_bytes(&[0x43; 32].into())
                    .expect("a valid scalar")
                    .verifying_key()
                    .to_encoded_point(true),
            )),
            accepted(OTHER_RSA_2048_PUBLIC_PEM),
            accepted(OTHER_RSA_2048_PUBLIC_PEM),
        ];
        for ((key, algorithm, signature), other_key) in
            signed_by_each_kind().into_iter().zip(other_keys)
        {
            assert!(key.verify(algorithm, MESSAGE, &signature), "{algorithm:?}");
            assert!(
                !key.verify(algorithm, b"hookgate keys interop!", &signature),
                "{algorithm:?}"
            );
            assert!(!key.verify(algorithm, b"", &signature), "{algorithm:?}");
            assert!(
                !other_key.verify(algorithm, MESSAGE, &signature),
                "{algorithm:?}"
            );
            for bit in [0, 7, signature.len() * 4 + 3, signature.len() * 8 - 1] {
                let mut flipped = signature.clone();
                flipped[bit / 8] ^= 1 << (bit % 8);
                assert!(
                    !key.verify(algorithm, MESSAGE, &flipped),
                    "{algorithm:?}, bit {bit}"
                );
            }
        }
    }

    #[test]
    fn an_algorithm_of_another_kind_never_verifies() {
        let kind_of = |algorithm| match algorithm {
            SignatureAlgorithm::Ed25519 => "ed25519",
            SignatureAlgorithm::EcdsaP256Sha256 => "ecdsa-p256",
            SignatureAlgorithm::RsaPkcs1v15Sha256 | SignatureAlgorithm::RsaPkcs1v15Sha1 => "rsa",
        };
        let signed = signed_by_each_kind();
        for (key, _, _) in &signed {
            let wrong_algorithms = ALL_ALGORITHMS
                .into_iter()
                .filter(|algorithm| !key.kind().starts_with(kind_of(*algorithm)));
            for wrong in wrong_algorithms {
                // Every signature, including the one made for this very key.
                for (_, made_as, signature) in &signed {
                    assert!(
                        !key.verify(wrong, MESSAGE, signature),
                        "{key:?} {wrong:?} {made_as:?}"
                    );
                }
            }
        }
        // Spelled out: an Ed25519 signature checked as RSA, by either key.
        let ed25519 = &signed[0];
        let rsa = &signed[2];
        assert!(
            !rsa.0
                .verify(SignatureAlgorithm::RsaPkcs1v15Sha256, MESSAGE, &ed25519.2)
        );
        assert!(
            !ed25519
                .0
                .verify(SignatureAlgorithm::RsaPkcs1v15Sha256, MESSAGE, &ed25519.2)
        );
    }

    #[test]
    fn rsa_sha1_and_sha256_are_not_interchangeable() {
        let key = accepted(RSA_2048_PUBLIC_PEM);
        let sha256 = rsa_sign_sha256(MESSAGE);
        let sha1 = rsa_sign_sha1(MESSAGE);
        assert!(key.verify(SignatureAlgorithm::RsaPkcs1v15Sha256, MESSAGE, &sha256));
        assert!(key.verify(SignatureAlgorithm::RsaPkcs1v15Sha1, MESSAGE, &sha1));
        assert!(!key.verify(SignatureAlgorithm::RsaPkcs1v15Sha1, MESSAGE, &sha256));
        assert!(!key.verify(SignatureAlgorithm::RsaPkcs1v15Sha256, MESSAGE, &sha1));
    }

    #[test]
    fn malformed_signatures_are_false_not_panics() {
        let modulus_sized = rsa_sign_sha256(MESSAGE).len();
        for (key, algorithm, _) in signed_by_each_kind() {
            for signature in [
                vec![],
                vec![0],
                vec![0; 63],
                vec![0; 64],
                vec![0xff; 64],
                vec![0; 65],
                vec![0x30; 72],
                vec![0; modulus_sized],
                vec![0xff; modulus_sized],
                vec![0; modulus_sized + 1],
                vec![0xff; 4096],
            ] {
                assert!(!key.verify(algorithm, MESSAGE, &signature), "{algorithm:?}");
            }
        }
    }

    #[test]
    fn private_keys_are_refused_without_repeating_them() {
        const EXPECTED: &str = "a public key is expected";
        assert_refused(RSA_2048_PRIVATE_PEM, "PEM label `PRIVATE KEY`");
        assert_refused(
            &B64.encode(pem_der(RSA_2048_PRIVATE_PEM)),
            "DER private key",
        );
        let rsa_pkcs1 = rsa_signer()
            .to_pkcs1_pem(rsa::pkcs8::LineEnding::LF)
            .expect("encodes");
        assert_refused(&rsa_pkcs1, "PEM label `RSA PRIVATE KEY`");
        assert_refused(&B64.encode(pem_der(&rsa_pkcs1)), "DER private key");

        let ec = p256::SecretKey::from_bytes(&[0x42; 32].into())
            .expect("a valid scalar")
            .to_sec1_der()
            .expect("encodes");
        let ec_pem = pem("EC PRIVATE KEY", &ec);
        assert_refused(&ec_pem, "PEM label `EC PRIVATE KEY`");
        // As `openssl ecparam -genkey` prints it.
        assert_refused(
            &format!(
                "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n{ec_pem}"
            ),
            "PEM label `EC PRIVATE KEY`",
        );
        assert_refused(&hex::encode(&ec), "DER private key");

        let ed25519 = ed25519_signer().to_pkcs8_der().expect("encodes");
        assert_refused(
            &pem("PRIVATE KEY", ed25519.as_bytes()),
            "PEM label `PRIVATE KEY`",
        );
        assert_refused(&B64_URL.encode(ed25519.as_bytes()), "DER private key");
        assert_refused(
            &pem("ENCRYPTED PRIVATE KEY", &[0x30; 80]),
            "`ENCRYPTED PRIVATE KEY`",
        );
        assert_refused(
            &pem("OPENSSH PRIVATE KEY", &[0x6f; 80]),
            "`OPENSSH PRIVATE KEY`",
        );
        assert_refused(&format!("whsk_{}", B64.encode([9; 32])), "`whsk_`");
        for input in [RSA_2048_PRIVATE_PEM, &rsa_pkcs1, &ec_pem] {
            assert!(
                PublicKey::parse(input)
                    .expect_err("refused")
                    .to_string()
                    .contains(EXPECTED)
            );
        }
        assert!(
            PublicKey::parse("whsk_AAAA")
                .expect_err("refused")
                .to_string()
                .contains(EXPECTED)
        );
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        assert_refused("", "empty");
        assert_refused(" \n\t ", "empty");
        assert_refused("not a key at all!", "not PEM, DER, base64 or hex");
        assert_refused("ключ", "not PEM, DER, base64 or hex");
        assert_refused(&B64.encode([0x55; 40]), "40 bytes that are not DER");
        assert_refused(&hex::encode([0x55; 64]), "64 bytes that are not DER");
        assert_refused("whpk_AAAA", "`whpk_` key of 3 bytes");
        assert_refused(
            "whpk_not base64!",
            "`whpk_` key: the part after the prefix is not base64",
        );
        assert_refused(
            &hex::encode([0x30, 3, 1, 2, 3]),
            "neither a SubjectPublicKeyInfo nor",
        );
        assert_refused(
            "-----BEGIN PUBLIC KEY-----\nnot base64!\n-----END PUBLIC KEY-----",
            "the body is not base64",
        );
        assert_refused(
            &pem("PUBLIC KEY", &pem_der(RSA_2048_PKCS1_PEM)),
            "the body is not a SubjectPublicKeyInfo",
        );
        assert_refused(
            &RSA_2048_PUBLIC_PEM.replace("END PUBLIC", "END RSA PUBLIC"),
            "without its matching END line",
        );
        assert_refused(
            &format!("{RSA_2048_PUBLIC_PEM}{OPENSSL_P256_PUBLIC_PEM}"),
            "several PEM blocks",
        );
        assert_refused(&pem("CERTIFICATE", &[0x30; 80]), "openssl x509 -pubkey");
        assert_refused(&pem("SSH2 PUBLIC KEY", &[0x30; 80]), "`SSH2 PUBLIC KEY`");
        assert_refused(&pem("lower case label", &[0x30; 80]), "(unrecognised)");

        // X25519 (1.3.101.110) is a key-agreement key, not a signing one.
        let mut x25519 = hex::decode("302a300506032b656e032100").expect("hex");
        x25519.extend([9; 32]);
        assert_refused(&B64.encode(&x25519), "algorithm 1.3.101.110");

        // A P-384 (1.3.132.0.34) key.
        let curve = ObjectIdentifier::new_unwrap("1.3.132.0.34");
        let point = [4; 97];
        let spki = SubjectPublicKeyInfoRef {
            algorithm: rsa::pkcs8::spki::AlgorithmIdentifierRef {
                oid: OID_EC_PUBLIC_KEY,
                parameters: Some((&curve).into()),
            },
            subject_public_key: rsa::pkcs8::der::asn1::BitStringRef::from_bytes(&point)
                .expect("bit string"),
        };
        let der = rsa::pkcs8::der::Encode::to_der(&spki).expect("encodes");
        assert_refused(&pem("PUBLIC KEY", &der), "EC key on curve 1.3.132.0.34");
    }

    #[test]
    fn weak_or_invalid_keys_are_refused() {
        let weak = "RSA key of 1024 bits: at least 2048 are required";
        assert_refused(RSA_1024_PUBLIC_PEM, weak);
        assert_refused(&B64.encode(pem_der(RSA_1024_PUBLIC_PEM)), weak);

        let not_a_point = "P-256 key: not a valid curve point";
        let mut off_curve = vec![4];
        off_curve.extend([1; 64]);
        assert_refused(&hex::encode(&off_curve), not_a_point);
        let mut beyond_field = vec![2];
        beyond_field.extend([0xff; 32]);
        assert_refused(&B64.encode(&beyond_field), not_a_point);
        // The same point wrapped in a SubjectPublicKeyInfo.
        let good = p256_signer()
            .verifying_key()
            .to_public_key_der()
            .expect("encodes");
        let mut bad = good.as_bytes().to_vec();
        let point_start = bad.len() - 64;
        bad[point_start..].fill(1);
        assert_refused(&pem("PUBLIC KEY", &bad), not_a_point);

        // The identity point: of small order, so it would "verify" forged signatures.
        let mut identity = [0; 32];
        identity[0] = 1;
        assert_refused(&hex::encode(identity), "Ed25519 key of small order");
        assert_refused(
            &format!("whpk_{}", B64.encode(identity)),
            "Ed25519 key of small order",
        );
        // y = 2 is not the y of any point of the curve.
        let mut no_point = [0; 32];
        no_point[0] = 2;
        assert_refused(
            &hex::encode(no_point),
            "Ed25519 key: not a valid curve point",
        );
    }

    #[test]
    fn fingerprints_tell_keys_apart_and_ignore_the_format() {
        let rsa = accepted(RSA_2048_PUBLIC_PEM);
        let fingerprint = rsa.fingerprint();
        assert_eq!(fingerprint.len(), 16);
        assert!(
            fingerprint
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_eq!(
            fingerprint,
            hex::encode(&Sha256::digest(pem_der(RSA_2048_PUBLIC_PEM))[..8])
        );
        assert_eq!(accepted(RSA_2048_PKCS1_PEM).fingerprint(), fingerprint);
        assert_ne!(
            accepted(OTHER_RSA_2048_PUBLIC_PEM).fingerprint(),
            fingerprint
        );
        let kinds: Vec<String> = signed_by_each_kind()
            .iter()
            .map(|(key, _, _)| key.fingerprint())
            .collect();
        assert_ne!(kinds[0], kinds[1]);
        assert_ne!(kinds[1], kinds[2]);

        let debug = format!("{rsa:?}");
        assert!(
            debug.contains("rsa-2048") && debug.contains(&fingerprint),
            "{debug}"
        );
    }
}
