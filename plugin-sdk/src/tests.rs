//! Tests of the native host. The glue to the generated types runs only in a WASM guest:
//! the gateway's plugin host tests drive it through real components.

use crate::*;

const RFC4231_KEY: &str = "Jefe";
const RFC4231_DATA: &[u8] = b"what do ya want for nothing?";

fn mac_hex(host: &TestHost, alg: HashAlgorithm) -> String {
    let handle = host.handle(0).expect("one secret configured");
    let req = Request::post().with_body(RFC4231_DATA);
    hex_encode(
        &hmac(&req, handle, SecretEncoding::Raw, alg, &[Part::Body])
            .expect("granted, known handle"),
    )
}

#[test]
fn hmac_matches_published_known_answers() {
    let host = TestHost::new().secrets([RFC4231_KEY]).allow_raw_mac();
    // RFC 2202 test case 2 (SHA-1) and RFC 4231 test case 2 (SHA-256, SHA-512).
    assert_eq!(
        mac_hex(&host, HashAlgorithm::Sha1),
        "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
    );
    assert_eq!(
        mac_hex(&host, HashAlgorithm::Sha256),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    assert_eq!(
        mac_hex(&host, HashAlgorithm::Sha512),
        "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554\
         9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"
    );
}

#[test]
fn sha256_matches_fips_180_known_answer() {
    assert_eq!(
        hex_encode(&sha256(b"abc")),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn the_raw_hmac_is_refused_unless_granted() {
    let req = Request::post().with_body(&b"x"[..]);
    let host = TestHost::new().secrets(["a"]);
    let handle = host.handle(0).expect("one secret");
    let refused = hmac(
        &req,
        handle,
        SecretEncoding::Raw,
        HashAlgorithm::Sha256,
        &[Part::Body],
    );
    assert!(refused.is_err_and(|e| e.contains("allow_raw_mac")));
    let host = host.allow_raw_mac();
    assert_eq!(
        hmac(
            &req,
            handle,
            SecretEncoding::Raw,
            HashAlgorithm::Sha256,
            &[Part::Body]
        ),
        Ok(host.sign(0, HashAlgorithm::Sha256, b"x"))
    );
}

#[test]
fn unknown_handles_compute_nothing() {
    let req = Request::post().with_body(&b"x"[..]);
    let host = TestHost::new().secrets(["a"]).allow_raw_mac();
    let known = host.handle(0).expect("one secret");
    assert!(host.handle(1).is_none());
    assert!(
        hmac(
            &req,
            known.wrapping_add(1),
            SecretEncoding::Raw,
            HashAlgorithm::Sha256,
            &[Part::Body]
        )
        .is_err()
    );
    assert!(
        hmac(
            &req,
            0,
            SecretEncoding::Raw,
            HashAlgorithm::Sha256,
            &[Part::Body]
        )
        .is_err()
    );
    assert_eq!(host.secret_index(known), Some(0));
    assert_eq!(host.secret_index(known.wrapping_add(1)), None);
}

#[test]
fn handles_are_not_list_indices() {
    let host = TestHost::new().secrets(["a", "b", "c"]);
    let handles = host.handles();
    assert_eq!(handles.len(), 3);
    assert!(handles.iter().all(|&h| h > 2), "{handles:?}");
    for (i, &h) in handles.iter().enumerate() {
        assert_eq!(host.secret_index(h), Some(i));
    }
}

#[test]
fn hmac_verify_reports_the_secret_that_matched() {
    let host = TestHost::new().secrets(["old", "new", "next"]);
    let handles = host.handles();
    let req = Request::post().with_body(&b"payload"[..]);
    let body = [Part::Body];
    let by_new = host.sign(1, HashAlgorithm::Sha256, b"payload");
    let garbage = vec![0u8; 32];
    let short = by_new[..16].to_vec();
    let verify = |handles: &[SecretHandle], alg, req: &Request, candidates: &[Vec<u8>]| {
        hmac_verify(req, handles, alg, &body, candidates)
    };

    // The matching candidate may be anywhere in the list; others are ignored.
    let all = [garbage.clone(), short.clone(), by_new.clone()];
    assert_eq!(
        verify(&handles, HashAlgorithm::Sha256, &req, &all),
        Some(handles[1])
    );
    // Only the handles passed are tried.
    let only_new = std::slice::from_ref(&by_new);
    assert_eq!(
        verify(
            &[handles[0], handles[2]],
            HashAlgorithm::Sha256,
            &req,
            only_new
        ),
        None
    );
    // A truncated MAC, another message or another algorithm never match.
    assert_eq!(
        verify(&handles, HashAlgorithm::Sha256, &req, &[short]),
        None
    );
    let other = Request::post().with_body(&b"payload2"[..]);
    assert_eq!(
        verify(&handles, HashAlgorithm::Sha256, &other, only_new),
        None
    );
    assert_eq!(
        verify(&handles, HashAlgorithm::Sha512, &req, only_new),
        None
    );
    assert_eq!(verify(&[], HashAlgorithm::Sha256, &req, only_new), None);
}

#[test]
fn message_parts_assemble_in_order_and_fail_when_absent() {
    let req = Request::post()
        .with_header("X-Timestamp", "1700000000")
        .with_public_url("https://hooks.example.com/api/v1/webhooks/square")
        .with_body(&b"{}"[..]);
    assert_eq!(
        req.message(&[
            Part::PublicUrl,
            Part::Literal(b"|"),
            Part::Header("x-timestamp"),
            Part::Literal(b"."),
            Part::Body,
        ])
        .as_deref(),
        Some(&b"https://hooks.example.com/api/v1/webhooks/square|1700000000.{}"[..])
    );
    assert_eq!(req.message(&[Part::Header("x-missing"), Part::Body]), None);
    assert_eq!(Request::post().message(&[Part::PublicUrl]), None);

    // A signature over an absent part never verifies.
    let host = TestHost::new().secrets(["s"]);
    let mac = host.sign(0, HashAlgorithm::Sha256, b"{}");
    let parts = [Part::Header("x-missing"), Part::Body];
    assert_eq!(
        hmac_verify(&req, &host.handles(), HashAlgorithm::Sha256, &parts, &[mac]),
        None
    );
}

#[test]
fn base64_round_trips_and_rejects_garbage() {
    let _host = TestHost::new();
    for data in [&b""[..], b"f", b"fo", b"foo", b"\x00\xff\xfe\x10 binary"] {
        let text = base64_encode(data);
        assert_eq!(base64_decode(&text).as_deref(), Some(data));
    }
    assert_eq!(base64_encode(b"fo"), "Zm8=");
    assert_eq!(base64_decode("Zm8=").as_deref(), Some(&b"fo"[..]));
    assert!(base64_decode("Zm8").is_none(), "padding is required");
    assert!(base64_decode("Zm8=!").is_none());
    assert!(
        base64_decode("Zm_-").is_none(),
        "URL-safe alphabet is not standard"
    );
}

#[test]
fn hex_round_trips_in_either_case() {
    let _host = TestHost::new();
    let data = b"\x00\x01\xab\xcd\xef\xff";
    assert_eq!(hex_encode(data), "0001abcdefff");
    assert_eq!(hex_decode("0001ABCDEFFF").as_deref(), Some(&data[..]));
    assert_eq!(hex_decode(&hex_encode(data)).as_deref(), Some(&data[..]));
    assert!(hex_decode("abc").is_none(), "odd length");
    assert!(hex_decode("zz").is_none());
}

#[test]
fn constant_time_eq_compares_content_and_length() {
    assert!(constant_time_eq(b"abc", b"abc"));
    assert!(!constant_time_eq(b"abc", b"abd"));
    assert!(!constant_time_eq(b"abc", b"abcd"));
    assert!(constant_time_eq(b"", b""));
}

#[test]
fn clock_is_frozen_by_the_test_host_and_real_otherwise() {
    {
        let _host = TestHost::new().now(1_764_000_000);
        assert_eq!(now_unix_seconds(), 1_764_000_000);
    }
    // Dropped: back to the real clock (after 2025-01-01).
    assert!(now_unix_seconds() > 1_735_689_600);
}

#[test]
fn logs_are_captured_per_thread() {
    let host = TestHost::new();
    crate::info!("hello {}", 42);
    crate::warn!("careful");
    let logs = host.take_logs();
    assert_eq!(
        logs,
        vec![
            LogEntry {
                level: LogLevel::Info,
                message: "hello 42".into()
            },
            LogEntry {
                level: LogLevel::Warn,
                message: "careful".into()
            },
        ]
    );
    assert!(host.logs().is_empty());
    let other = std::thread::spawn(|| {
        let host = TestHost::new();
        crate::error!("elsewhere");
        host.logs().len()
    })
    .join()
    .expect("thread");
    assert_eq!(other, 1);
    assert!(host.logs().is_empty(), "other threads' logs stay there");
}

#[test]
fn request_helpers_find_headers_case_insensitively() {
    let req = Request::post()
        .with_topic("orders-create")
        .with_query("a=1")
        .with_header("X-Thing", "first")
        .with_header("x-thing", "second")
        .with_body(&b"{}"[..]);
    assert_eq!(req.method(), "POST");
    assert_eq!(req.header("X-THING"), Some("first"));
    assert_eq!(
        req.header_values("x-Thing").collect::<Vec<_>>(),
        ["first", "second"]
    );
    assert_eq!(req.headers()[0].0, "x-thing", "names are stored lower-case");
    assert_eq!(req.header("missing"), None);
    assert_eq!(req.topic(), Some("orders-create"));
    assert_eq!(req.query(), Some("a=1"));
    assert_eq!(req.body(), b"{}");
}

#[test]
fn settings_lookup_is_exact_and_first_wins() {
    let s: Settings = [("a", "1"), ("b", "2"), ("a", "3")].into_iter().collect();
    assert_eq!(s.get("a"), Some("1"));
    assert_eq!(s.get("b"), Some("2"));
    assert_eq!(s.get("A"), None);
    assert_eq!(s.iter().count(), 3);
}

#[test]
fn signature_verify_reports_the_key_that_matched() {
    use ed25519_dalek::Signer;
    let signer = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let other = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
    let host = TestHost::new()
        .keys([
            hex_encode(other.verifying_key().as_bytes()),
            hex_encode(signer.verifying_key().as_bytes()),
        ])
        .expect("raw Ed25519 keys parse");
    let keys = host.key_handles();
    assert!(keys.iter().all(|k| host.secret_index(*k).is_none()));
    let req = Request::post()
        .with_header("x-signature-timestamp", "1700000000")
        .with_body(&b"{\"type\":1}"[..]);
    let signed = [Part::Header("x-signature-timestamp"), Part::Body];
    let signature = signer.sign(b"1700000000{\"type\":1}").to_bytes();

    let matched = signature_verify(
        &req,
        &keys,
        SignatureAlgorithm::Ed25519,
        &signed,
        &signature,
    );
    assert_eq!(matched.and_then(|k| host.key_index(k)), Some(1));
    // Another scheme, another message or only the other key: no match.
    let alg = SignatureAlgorithm::EcdsaP256Sha256;
    assert_eq!(
        signature_verify(&req, &keys, alg, &signed, &signature),
        None
    );
    let body_only = [Part::Body];
    let ed = SignatureAlgorithm::Ed25519;
    assert_eq!(
        signature_verify(&req, &keys, ed, &body_only, &signature),
        None
    );
    assert_eq!(
        signature_verify(&req, &keys[..1], ed, &signed, &signature),
        None
    );
    // A key that does not parse is refused when configured.
    assert!(TestHost::new().keys(["not a key"]).is_err());
}

#[test]
fn encoded_secrets_are_read_as_the_scheme_says() {
    // Standard Webhooks: `whsec_` + base64 of the key; the prefix is optional.
    let key = b"standard-webhooks-test-key-32byt";
    let host = TestHost::new().secrets([
        key.to_vec(),
        format!("whsec_{}", base64_encode(key)).into_bytes(),
        base64_encode(key).into_bytes(),
        b"whsec_!!not base64!!".to_vec(),
    ]);
    let handles = host.handles();
    let req = Request::post().with_body(&b"{}"[..]);
    let expected = host.sign(0, HashAlgorithm::Sha256, b"{}");
    let verify = |handles: &[SecretHandle], encoding| {
        let candidates = std::slice::from_ref(&expected);
        hmac_verify_encoded(
            &req,
            handles,
            encoding,
            HashAlgorithm::Sha256,
            &[Part::Body],
            candidates,
        )
    };
    let b64 = SecretEncoding::Base64("whsec_");
    assert_eq!(verify(&handles[1..2], b64), Some(handles[1]));
    assert_eq!(verify(&handles[2..3], b64), Some(handles[2]));
    assert_eq!(
        verify(&handles[3..], b64),
        None,
        "a secret that does not decode never matches"
    );
    assert_eq!(
        verify(&handles[1..], SecretEncoding::Raw),
        None,
        "the encoded text is not the key"
    );
    assert_eq!(
        SecretEncoding::Hex("k_").key(b"k_0aff").as_deref(),
        Some(&[0x0a, 0xff][..])
    );
    assert_eq!(SecretEncoding::Hex("").key(b"0g"), None);
}
