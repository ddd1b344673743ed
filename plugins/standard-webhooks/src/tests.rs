//! Native tests of the Standard Webhooks plugin: the shared signature vectors, `v1` and
//! `v1a` signatures (alone and mixed), secret spellings, the Svix headers, the timestamp
//! tolerance and the mapping.

use ed25519_dalek::{Signer as _, SigningKey};
use hmac::{Hmac, Mac as _};
use hookgate_plugin_sdk::{
    MapError, MapOutcome, Mapping, Request, Settings, SourcePlugin, TestHost, Timestamp, Verified,
    VerifyError, base64_encode,
};
use serde_json::Value;

use crate::StandardWebhooks;

#[path = "../../test_vectors.rs"]
mod test_vectors;
use test_vectors::{vector_host, vector_request, vectors};

fn events(req: &Request) -> Mapping {
    match StandardWebhooks::map(req, &Settings::new()) {
        Ok(MapOutcome::Events(m)) => m,
        other => panic!("expected events, got {other:?}"),
    }
}

/// The refusal each invalid vector should get.
fn expected_refusal(name: &str) -> Option<fn(&VerifyError) -> bool> {
    Some(match name {
        "standard-webhooks-stale" => |e| matches!(e, VerifyError::Expired(_)),
        "standard-webhooks-id-swapped" => |e| matches!(e, VerifyError::Mismatch(_)),
        _ => return None,
    })
}

#[test]
fn signature_vectors() {
    let all = vectors("standard-webhooks");
    for name in [
        "standard-webhooks-valid",
        "standard-webhooks-valid-among-several",
        "standard-webhooks-stale",
        "standard-webhooks-id-swapped",
    ] {
        assert!(
            all.iter().any(|v| v["name"] == name),
            "vector {name} missing"
        );
    }
    for v in all {
        let name = v["name"].as_str().expect("name");
        let host = vector_host(&v);
        let req = vector_request(&v);
        let result = StandardWebhooks::verify(&req, &host.handles(), &[], &Settings::new());
        match v["expect"].as_str() {
            Some("valid") => {
                let verified = result.unwrap_or_else(|e| panic!("{name}: refused: {e}"));
                let last = v["secrets"].as_array().expect("secrets").len() - 1;
                assert_eq!(
                    verified.secret.and_then(|h| host.secret_index(h)),
                    Some(last),
                    "{name}: matched secret"
                );
                assert_eq!(verified.key, None, "{name}");
                let body: Value = serde_json::from_str(v["body"].as_str().expect("body"))
                    .expect("vector body is JSON");
                let m = events(&req);
                assert_eq!(Some(m.topic.as_str()), body["type"].as_str(), "{name}");
                assert_eq!(
                    m.idempotency_key.as_deref(),
                    v["headers"]["webhook-id"].as_str(),
                    "{name}"
                );
                assert_eq!(m.tenant, None, "{name}");
                assert_eq!(
                    m.occurred_at,
                    body["timestamp"]
                        .as_str()
                        .map(|t| Timestamp::Rfc3339(t.to_owned())),
                    "{name}"
                );
                assert_eq!(m.events.len(), 1, "{name}");
                assert_eq!(Some(m.events[0].event_type.as_str()), body["type"].as_str());
                assert_eq!(
                    m.events[0].subject.as_deref(),
                    body["data"]["id"].as_str(),
                    "{name}"
                );
                assert!(m.events[0].data.is_none(), "{name}: raw body as data");
            }
            Some("invalid") => {
                let err = result.expect_err(name);
                if let Some(expected) = expected_refusal(name) {
                    assert!(expected(&err), "{name}: wrong refusal {err:?}");
                }
            }
            other => panic!("{name}: unknown expectation {other:?}"),
        }
    }
}

const NOW: i64 = 1_764_000_000;
const ID: &str = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W";
const BODY: &str = r#"{"type":"invoice.paid","timestamp":"2025-11-24T15:00:00Z","data":{"id":"inv_123","amount":1500}}"#;
/// The MAC key of the tests' secret (at least 24 bytes, as the spec asks).
const KEY: &[u8] = b"hookgate standard-webhooks test key";

fn whsec(key: &[u8]) -> String {
    format!("whsec_{}", base64_encode(key))
}

/// A `v1,` entry: HMAC-SHA256 of `{id}.{t}.{body}` under `key`, as a sender signs.
fn v1(key: &[u8], id: &str, t: i64, body: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key length");
    mac.update(format!("{id}.{t}.{body}").as_bytes());
    format!("v1,{}", base64_encode(&mac.finalize().into_bytes()))
}

/// A `v1a,` entry: Ed25519 of `{id}.{t}.{body}` under `signer`.
fn v1a(signer: &SigningKey, id: &str, t: i64, body: &str) -> String {
    let signature = signer.sign(format!("{id}.{t}.{body}").as_bytes());
    format!("v1a,{}", base64_encode(&signature.to_bytes()))
}

/// The `whpk_` spelling of `signer`'s public key, as an operator configures it.
fn whpk(signer: &SigningKey) -> String {
    format!("whpk_{}", base64_encode(signer.verifying_key().as_bytes()))
}

fn request(signature: &str, t: i64, body: &str) -> Request {
    Request::post()
        .with_header("webhook-id", ID)
        .with_header("webhook-timestamp", t.to_string())
        .with_header("webhook-signature", signature)
        .with_body(body.as_bytes())
}

fn verify(host: &TestHost, req: &Request, settings: &Settings) -> Result<Verified, VerifyError> {
    StandardWebhooks::verify(req, &host.handles(), &host.key_handles(), settings)
}

/// Which configured secret (`Ok((Some(i), None))`) or key (`Ok((None, Some(i)))`) matched.
fn matched(host: &TestHost, req: &Request) -> Result<(Option<usize>, Option<usize>), VerifyError> {
    verify(host, req, &Settings::new()).map(|v| {
        (
            v.secret.and_then(|h| host.secret_index(h)),
            v.key.and_then(|h| host.key_index(h)),
        )
    })
}

#[test]
fn v1_with_and_without_the_whsec_prefix() {
    let signature = v1(KEY, ID, NOW, BODY);
    for secret in [whsec(KEY), base64_encode(KEY)] {
        let host = TestHost::new().secrets([secret.as_str()]).now(NOW);
        assert_eq!(
            matched(&host, &request(&signature, NOW, BODY)),
            Ok((Some(0), None)),
            "{secret}"
        );
    }
    // The secret's text is not the key: a secret that is not base64 never matches.
    let host = TestHost::new().secrets(["whsec_not base64!"]).now(NOW);
    assert!(matches!(
        matched(&host, &request(&signature, NOW, BODY)),
        Err(VerifyError::Mismatch(_))
    ));
}

#[test]
fn rotated_secrets_and_several_signatures() {
    let old = b"the old standard-webhooks test key";
    let host = TestHost::new().secrets([whsec(old), whsec(KEY)]).now(NOW);
    let by_old = v1(old, ID, NOW, BODY);
    let by_new = v1(KEY, ID, NOW, BODY);
    let junk = format!("v1,{}", base64_encode(&[7; 32]));
    assert_eq!(
        matched(&host, &request(&format!("{junk} {by_new}"), NOW, BODY)),
        Ok((Some(1), None))
    );
    assert_eq!(
        matched(&host, &request(&format!("{by_old} {junk}"), NOW, BODY)),
        Ok((Some(0), None))
    );
    assert!(matches!(
        matched(&host, &request(&junk, NOW, BODY)),
        Err(VerifyError::Mismatch(_))
    ));
}

#[test]
fn wrong_secret_or_tampered_content_is_a_mismatch() {
    let host = TestHost::new().secrets([whsec(KEY)]).now(NOW);
    let other_key = v1(b"some other standard-webhooks key", ID, NOW, BODY);
    assert!(matches!(
        matched(&host, &request(&other_key, NOW, BODY)),
        Err(VerifyError::Mismatch(_))
    ));
    let good = v1(KEY, ID, NOW, BODY);
    let tampered = BODY.replace("1500", "15000");
    assert!(matches!(
        matched(&host, &request(&good, NOW, &tampered)),
        Err(VerifyError::Mismatch(_))
    ));
    // The timestamp is signed too.
    assert!(matches!(
        matched(&host, &request(&good, NOW + 1, BODY)),
        Err(VerifyError::Mismatch(_))
    ));
}

/// Known answers from the reference libraries' own tests: `v1` from the Rust library's
/// `test_sign` (libraries/rust/src/lib.rs), `v1a` from the Go library's
/// `TestAsymmetricWebhookSign` (libraries/go/webhook_asymmetric_test.go), both in
/// github.com/standard-webhooks/standard-webhooks.
#[test]
fn reference_library_vectors() {
    let t = 1_649_367_553;
    let host = TestHost::new()
        .secrets(["whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"])
        .now(t);
    let req = Request::post()
        .with_header("webhook-id", "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk")
        .with_header("webhook-timestamp", t.to_string())
        .with_header(
            "webhook-signature",
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
        )
        .with_body(&br#"{"email":"test@example.com","username":"test_user"}"#[..]);
    assert_eq!(matched(&host, &req), Ok((Some(0), None)));

    // The Go test gives the signing key's seed; its public key is what an operator
    // configures.
    let seed = hookgate_plugin_sdk::base64_decode("VEVTVFNJR05JTkdLRVlET05PVFVTRVRISVNGT1JBTlk=")
        .expect("base64");
    let signer = SigningKey::from_bytes(&seed.try_into().expect("a 32-byte seed"));
    let t = 1_614_265_330;
    let host = TestHost::new()
        .keys([whpk(&signer)])
        .expect("whpk_ key parses")
        .now(t);
    let req = Request::post()
        .with_header("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek")
        .with_header("webhook-timestamp", t.to_string())
        .with_header(
            "webhook-signature",
            "v1a,tQ9V2XOqn7jL/DQenEFpqIugdBVtiMmER5mhSkXBNwM0mkATuDe6KYYUuxqtaiHeYGb7KaaBRdM5WqyeFiL8Ag==",
        )
        .with_body(&br#"{"test": 2432232314}"#[..]);
    assert_eq!(matched(&host, &req), Ok((None, Some(0))));
}

#[test]
fn v1a_verifies_with_whpk_keys() {
    let signer = SigningKey::from_bytes(&[0x5a; 32]);
    let other = SigningKey::from_bytes(&[0x17; 32]);
    let host = TestHost::new()
        .keys([whpk(&other), whpk(&signer)])
        .expect("whpk_ keys parse")
        .now(NOW);
    let signature = v1a(&signer, ID, NOW, BODY);
    assert_eq!(
        matched(&host, &request(&signature, NOW, BODY)),
        Ok((None, Some(1)))
    );
    // The same signature over other content, or under a key that is not configured.
    let tampered = BODY.replace("inv_123", "inv_124");
    assert!(matches!(
        matched(&host, &request(&signature, NOW, &tampered)),
        Err(VerifyError::Mismatch(_))
    ));
    let unknown = v1a(&SigningKey::from_bytes(&[0x99; 32]), ID, NOW, BODY);
    assert!(matches!(
        matched(&host, &request(&unknown, NOW, BODY)),
        Err(VerifyError::Mismatch(_))
    ));
    // A `v1a` signature is no `v1` one: without keys it cannot match.
    let secrets_only = TestHost::new().secrets([whsec(KEY)]).now(NOW);
    assert!(matches!(
        matched(&secrets_only, &request(&signature, NOW, BODY)),
        Err(VerifyError::Mismatch(_))
    ));
}

#[test]
fn mixed_v1_and_v1a_entries() {
    let signer = SigningKey::from_bytes(&[0x5a; 32]);
    let host = TestHost::new()
        .secrets([whsec(KEY)])
        .keys([whpk(&signer)])
        .expect("whpk_ key parses")
        .now(NOW);
    let good_v1 = v1(KEY, ID, NOW, BODY);
    let good_v1a = v1a(&signer, ID, NOW, BODY);
    let bad_v1 = format!("v1,{}", base64_encode(&[1; 32]));
    let bad_v1a = format!("v1a,{}", base64_encode(&[2; 64]));
    // The spec's example header carries one of each.
    assert_eq!(
        matched(&host, &request(&format!("{good_v1} {good_v1a}"), NOW, BODY)),
        Ok((Some(0), None))
    );
    assert_eq!(
        matched(&host, &request(&format!("{bad_v1} {good_v1a}"), NOW, BODY)),
        Ok((None, Some(0)))
    );
    assert_eq!(
        matched(&host, &request(&format!("{bad_v1a} {good_v1}"), NOW, BODY)),
        Ok((Some(0), None))
    );
    assert!(matches!(
        matched(&host, &request(&format!("{bad_v1} {bad_v1a}"), NOW, BODY)),
        Err(VerifyError::Mismatch(_))
    ));
    // Only keys configured: the `v1` entry is skipped, the `v1a` one matches.
    let keys_only = TestHost::new()
        .keys([whpk(&signer)])
        .expect("whpk_ key parses")
        .now(NOW);
    assert_eq!(
        matched(
            &keys_only,
            &request(&format!("{good_v1} {good_v1a}"), NOW, BODY)
        ),
        Ok((None, Some(0)))
    );
}

#[test]
fn too_many_v1a_entries_are_not_all_checked() {
    let signer = SigningKey::from_bytes(&[0x5a; 32]);
    let host = TestHost::new()
        .keys([whpk(&signer)])
        .expect("whpk_ key parses")
        .now(NOW);
    let junk = format!("v1a,{}", base64_encode(&[2; 64]));
    let good = v1a(&signer, ID, NOW, BODY);
    let within = format!("{} {good}", [junk.as_str(); crate::MAX_V1A - 1].join(" "));
    assert_eq!(
        matched(&host, &request(&within, NOW, BODY)),
        Ok((None, Some(0)))
    );
    let beyond = format!("{} {good}", [junk.as_str(); crate::MAX_V1A].join(" "));
    assert!(matches!(
        matched(&host, &request(&beyond, NOW, BODY)),
        Err(VerifyError::Mismatch(_))
    ));
}

#[test]
fn unknown_versions_are_ignored() {
    let host = TestHost::new().secrets([whsec(KEY)]).now(NOW);
    let good = v1(KEY, ID, NOW, BODY);
    let as_v2 = good.replacen("v1,", "v2,", 1);
    assert!(matches!(
        matched(&host, &request(&as_v2, NOW, BODY)),
        Err(VerifyError::MissingSignature(_))
    ));
    assert_eq!(
        matched(
            &host,
            &request(&format!("{as_v2} v1b,xyz {good}"), NOW, BODY)
        ),
        Ok((Some(0), None))
    );
}

#[test]
fn svix_header_spellings() {
    let host = TestHost::new().secrets([whsec(KEY)]).now(NOW);
    let req = Request::post()
        .with_header("svix-id", ID)
        .with_header("svix-timestamp", NOW.to_string())
        .with_header("svix-signature", v1(KEY, ID, NOW, BODY))
        .with_body(BODY.as_bytes());
    assert_eq!(matched(&host, &req), Ok((Some(0), None)));
    let m = events(&req);
    assert_eq!(m.idempotency_key.as_deref(), Some(ID));
    assert_eq!(m.events[0].event_type, "invoice.paid");

    // One spelling per delivery: the `webhook-` one when its signature header is there,
    // and its id and timestamp with it.
    let mixed = Request::post()
        .with_header("webhook-signature", v1(KEY, ID, NOW, BODY))
        .with_header("svix-id", ID)
        .with_header("svix-timestamp", NOW.to_string())
        .with_body(BODY.as_bytes());
    assert!(matches!(
        matched(&host, &mixed),
        Err(VerifyError::MalformedSignature(_))
    ));
    let both = request(&v1(KEY, ID, NOW, BODY), NOW, BODY)
        .with_header("svix-id", "msg_other")
        .with_header("svix-timestamp", "1")
        .with_header("svix-signature", "v1,AAAA");
    assert_eq!(matched(&host, &both), Ok((Some(0), None)));
    assert_eq!(events(&both).idempotency_key.as_deref(), Some(ID));
}

#[test]
fn tolerance_applies_in_both_directions() {
    let host = TestHost::new().secrets([whsec(KEY)]).now(NOW);
    let at = |offset: i64| {
        let t = NOW + offset;
        matched(&host, &request(&v1(KEY, ID, t, BODY), t, BODY))
    };
    assert_eq!(at(0), Ok((Some(0), None)));
    assert_eq!(at(-300), Ok((Some(0), None)));
    assert_eq!(at(300), Ok((Some(0), None)));
    assert!(matches!(at(-301), Err(VerifyError::Expired(_))));
    assert!(
        matches!(at(301), Err(VerifyError::Expired(_))),
        "future timestamps too"
    );
    assert!(matches!(at(-86_400), Err(VerifyError::Expired(_))));
    // An unauthentic delivery is a mismatch, whatever its timestamp.
    let t = NOW - 86_400;
    let forged = request(
        &v1(b"some other standard-webhooks key", ID, t, BODY),
        t,
        BODY,
    );
    assert!(matches!(
        matched(&host, &forged),
        Err(VerifyError::Mismatch(_))
    ));
}

#[test]
fn tolerance_setting_is_honoured_and_must_be_a_number() {
    let host = TestHost::new().secrets([whsec(KEY)]).now(NOW);
    let t = NOW - 500;
    let req = request(&v1(KEY, ID, t, BODY), t, BODY);
    let wide = Settings::new().with("tolerance_seconds", "600");
    let narrow = Settings::new().with("tolerance_seconds", "10");
    assert!(verify(&host, &req, &wide).is_ok());
    assert!(matches!(
        verify(&host, &req, &Settings::new()),
        Err(VerifyError::Expired(_))
    ));
    assert!(matches!(
        verify(&host, &req, &narrow),
        Err(VerifyError::Expired(_))
    ));
    for bad in ["", "-1", "5m", "1.5"] {
        let settings = Settings::new().with("tolerance_seconds", bad);
        assert!(
            matches!(
                verify(&host, &req, &settings),
                Err(VerifyError::Rejected(_))
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn the_timestamp_is_signed_as_the_reference_libraries_write_it() {
    // They parse the header as an integer and sign it written back in decimal.
    let host = TestHost::new().secrets([whsec(KEY)]).now(NOW);
    let req = Request::post()
        .with_header("webhook-id", ID)
        .with_header("webhook-timestamp", format!("00{NOW}"))
        .with_header("webhook-signature", v1(KEY, ID, NOW, BODY))
        .with_body(BODY.as_bytes());
    assert_eq!(matched(&host, &req), Ok((Some(0), None)));
}

#[test]
fn garbage_headers_are_refused_without_panicking() {
    let host = TestHost::new().secrets([whsec(KEY)]).now(NOW);
    let good = v1(KEY, ID, NOW, BODY);
    let bad_signatures = [
        "v1",
        "v1,",
        "v1,not base64!",
        "v1,AAAA",
        "v1a,AAAA",
        &format!("v1,{}", base64_encode(&[0; 31])),
        &format!("v1a,{}", base64_encode(&[0; 32])),
        ",,, v1,=",
        "\u{0}\u{fffd}",
        "v1;abc",
        "t=1,v1=abc",
    ];
    for signature in bad_signatures {
        let result = matched(&host, &request(signature, NOW, BODY));
        assert!(
            matches!(
                result,
                Err(VerifyError::MalformedSignature(_) | VerifyError::MissingSignature(_))
            ),
            "{signature:?}: {result:?}"
        );
    }
    for timestamp in [
        "",
        "abc",
        "-5",
        "+1764000000",
        "1764000000.5",
        " ",
        "99999999999999999999",
    ] {
        let req = Request::post()
            .with_header("webhook-id", ID)
            .with_header("webhook-timestamp", timestamp)
            .with_header("webhook-signature", good.as_str())
            .with_body(BODY.as_bytes());
        assert!(
            matches!(
                matched(&host, &req),
                Err(VerifyError::MalformedSignature(_))
            ),
            "{timestamp:?}"
        );
    }
    let no_id = Request::post()
        .with_header("webhook-timestamp", NOW.to_string())
        .with_header("webhook-signature", good.as_str())
        .with_body(BODY.as_bytes());
    assert!(matches!(
        matched(&host, &no_id),
        Err(VerifyError::MalformedSignature(_))
    ));
    let no_timestamp = Request::post()
        .with_header("webhook-id", ID)
        .with_header("webhook-signature", good.as_str())
        .with_body(BODY.as_bytes());
    assert!(matches!(
        matched(&host, &no_timestamp),
        Err(VerifyError::MalformedSignature(_))
    ));
    for unsigned in [
        Request::post().with_body(BODY.as_bytes()),
        request("  ", NOW, BODY),
    ] {
        assert!(matches!(
            matched(&host, &unsigned),
            Err(VerifyError::MissingSignature(_))
        ));
    }
}

#[test]
fn map_reads_the_message() {
    let _host = TestHost::new();
    let m = events(&request("v1,x", NOW, BODY));
    assert_eq!(m.topic, "invoice.paid");
    assert_eq!(m.idempotency_key.as_deref(), Some(ID));
    assert_eq!(m.tenant, None);
    assert_eq!(
        m.occurred_at,
        Some(Timestamp::Rfc3339("2025-11-24T15:00:00Z".into()))
    );
    assert_eq!(m.events.len(), 1);
    assert_eq!(m.events[0].event_type, "invoice.paid");
    assert_eq!(m.events[0].subject.as_deref(), Some("inv_123"));
    assert_eq!(m.events[0].data, None);

    // The spec's "full payload" example.
    let full = r#"{"type":"contact.created","timestamp":"2022-11-03T20:26:10.344522Z",
        "data":{"id":"1f81eb52-5198-4599-803e-771906343485","type":"contact","fullName":"John Smith"}}"#;
    let m = events(&request("v1,x", NOW, full));
    assert_eq!(m.events[0].event_type, "contact.created");
    assert_eq!(
        m.events[0].subject.as_deref(),
        Some("1f81eb52-5198-4599-803e-771906343485")
    );
    assert_eq!(
        m.occurred_at,
        Some(Timestamp::Rfc3339("2022-11-03T20:26:10.344522Z".into()))
    );

    // Event types are published in lower case; the topic keeps the sender's spelling.
    let m = events(&request(
        "v1,x",
        NOW,
        r#"{"type":"Invoice.Payment_Failed-2"}"#,
    ));
    assert_eq!(m.topic, "Invoice.Payment_Failed-2");
    assert_eq!(m.events[0].event_type, "invoice.payment_failed-2");

    // Numeric ids keep every digit.
    let m = events(&request(
        "v1,x",
        NOW,
        r#"{"type":"a.b","data":{"id":12345678901234567890}}"#,
    ));
    assert_eq!(m.events[0].subject.as_deref(), Some("12345678901234567890"));
}

#[test]
fn map_falls_back_where_the_payload_says_less() {
    let _host = TestHost::new();
    // No usable event timestamp: the attempt's header timestamp.
    for body in [
        r#"{"type":"a.b"}"#,
        r#"{"type":"a.b","timestamp":null}"#,
        r#"{"type":"a.b","timestamp":"2022-11-03 20:26:10"}"#,
        r#"{"type":"a.b","timestamp":1667507170}"#,
    ] {
        let m = events(&request("v1,x", NOW, body));
        assert_eq!(m.occurred_at, Some(Timestamp::UnixSeconds(NOW)), "{body}");
    }
    // No subject without `data.id`; `data` may be anything.
    for body in [
        r#"{"type":"a.b","id":"top_level"}"#,
        r#"{"type":"a.b","data":{"foo":"bar"}}"#,
        r#"{"type":"a.b","data":["x"]}"#,
        r#"{"type":"a.b","data":"text"}"#,
        r#"{"type":"a.b","data":{"id":{"nested":1}}}"#,
        r#"{"type":"a.b","data":{"id":"line\nbreak"}}"#,
    ] {
        let m = events(&request("v1,x", NOW, body));
        assert_eq!(m.events[0].subject, None, "{body}");
    }
    // Svix spelling: the id and timestamp come from its headers.
    let svix = Request::post()
        .with_header("svix-id", "msg_svix")
        .with_header("svix-timestamp", "1700000000")
        .with_header("svix-signature", "v1,x")
        .with_body(&br#"{"type":"a.b"}"#[..]);
    let m = events(&svix);
    assert_eq!(m.idempotency_key.as_deref(), Some("msg_svix"));
    assert_eq!(m.occurred_at, Some(Timestamp::UnixSeconds(1_700_000_000)));
}

#[test]
fn map_refuses_what_a_sender_does_not_send() {
    let _host = TestHost::new();
    let map = |req: &Request| StandardWebhooks::map(req, &Settings::new());
    for body in [r#"{"data":{}}"#, r#"{"type":""}"#, r#"{"type":null}"#] {
        assert!(
            matches!(
                map(&request("v1,x", NOW, body)),
                Err(MapError::MissingField(_))
            ),
            "{body}"
        );
    }
    let malformed: [&[u8]; 7] = [
        b"",
        b"not json",
        b"[\"invoice.paid\"]",
        br#"{"type":7}"#,
        br#"{"type":"a.b"} trailing"#,
        br#"{"type":"a.b","data":{"id":"x"}"#,
        b"{\"type\":\"a.b\",\"z\":\"\xff\"}",
    ];
    for body in malformed {
        let req = request("v1,x", NOW, "").with_body(body);
        assert!(
            matches!(map(&req), Err(MapError::MalformedPayload(_))),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    for bad_type in [
        "invoice paid",
        "invoice.>",
        "invoice.*",
        "invoice..paid",
        ".x",
        "x.",
        "é.x",
    ] {
        let body = format!(r#"{{"type":"{bad_type}"}}"#);
        assert!(
            matches!(
                map(&request("v1,x", NOW, &body)),
                Err(MapError::UnsupportedTopic(_))
            ),
            "{bad_type}"
        );
    }
    let long_type = format!(r#"{{"type":"{}"}}"#, "a".repeat(256));
    assert!(matches!(
        map(&request("v1,x", NOW, &long_type)),
        Err(MapError::UnsupportedTopic(_))
    ));
    // An id the gateway could not store as a key.
    let long_id = Request::post()
        .with_header("webhook-id", "m".repeat(1025))
        .with_header("webhook-timestamp", NOW.to_string())
        .with_header("webhook-signature", "v1,x")
        .with_body(BODY.as_bytes());
    assert!(matches!(map(&long_id), Err(MapError::MalformedPayload(_))));
    let no_id = Request::post()
        .with_header("webhook-signature", "v1,x")
        .with_body(BODY.as_bytes());
    assert!(matches!(map(&no_id), Err(MapError::MissingField(_))));
}

#[test]
fn metadata_describes_the_plugin() {
    let m = StandardWebhooks::metadata();
    assert_eq!(m.name, "standard-webhooks");
    assert_eq!(m.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(m.retry_window_hours, 76);
    assert_eq!(
        StandardWebhooks::tenant_hint(&request("v1,x", NOW, BODY), &Settings::new()),
        None
    );
}
