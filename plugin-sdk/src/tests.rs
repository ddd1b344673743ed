//! Tests of the native host and of the glue between the plain and the generated types.

use crate::bindings::hookgate::plugin::types as wit;
use crate::*;

const RFC4231_KEY: &str = "Jefe";
const RFC4231_DATA: &[u8] = b"what do ya want for nothing?";

fn mac_hex(host: &TestHost, alg: HashAlgorithm) -> String {
    let handle = host.handle(0).expect("one secret configured");
    hex_encode(&hmac(handle, alg, RFC4231_DATA).expect("known handle"))
}

#[test]
fn hmac_matches_published_known_answers() {
    let host = TestHost::new().secrets([RFC4231_KEY]);
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
fn unknown_handles_compute_nothing() {
    let host = TestHost::new().secrets(["a"]);
    let known = host.handle(0).expect("one secret");
    assert!(host.handle(1).is_none());
    assert!(hmac(known.wrapping_add(1), HashAlgorithm::Sha256, b"x").is_none());
    assert!(hmac(0, HashAlgorithm::Sha256, b"x").is_none());
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
    let msg = b"payload";
    let by_new = hmac(handles[1], HashAlgorithm::Sha256, msg).expect("known handle");
    let garbage = vec![0u8; 32];
    let short = by_new[..16].to_vec();

    // The matching candidate may be anywhere in the list; others are ignored.
    let matched = hmac_verify(
        &handles,
        HashAlgorithm::Sha256,
        msg,
        &[garbage.clone(), short.clone(), by_new.clone()],
    );
    assert_eq!(matched, Some(handles[1]));

    // Only the handles passed are tried.
    assert_eq!(
        hmac_verify(
            &[handles[0], handles[2]],
            HashAlgorithm::Sha256,
            msg,
            std::slice::from_ref(&by_new)
        ),
        None
    );
    // A truncated MAC, another message or another algorithm never match.
    assert_eq!(
        hmac_verify(&handles, HashAlgorithm::Sha256, msg, &[short]),
        None
    );
    assert_eq!(
        hmac_verify(
            &handles,
            HashAlgorithm::Sha256,
            b"payload2",
            std::slice::from_ref(&by_new)
        ),
        None
    );
    assert_eq!(
        hmac_verify(
            &handles,
            HashAlgorithm::Sha512,
            msg,
            std::slice::from_ref(&by_new)
        ),
        None
    );
    assert_eq!(
        hmac_verify(&[], HashAlgorithm::Sha256, msg, &[by_new]),
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

/// A plugin that echoes its inputs back, to check the glue moves every field.
struct Echo;

impl SourcePlugin for Echo {
    fn metadata() -> Metadata {
        Metadata {
            name: "echo".into(),
            version: "1.2.3".into(),
            description: "test".into(),
            retry_window_hours: 7,
        }
    }

    fn tenant_hint(req: &Request, settings: &Settings) -> Option<String> {
        Some(format!(
            "{}|{}",
            req.header("x-tenant")?,
            settings.get("suffix")?
        ))
    }

    fn verify(
        req: &Request,
        secrets: &[SecretHandle],
        _settings: &Settings,
    ) -> Result<Verified, VerifyError> {
        match req.method() {
            "POST" => Ok(Verified {
                secret: secrets.last().copied(),
            }),
            other => Err(VerifyError::Expired(other.to_owned())),
        }
    }

    fn map(req: &Request, _settings: &Settings) -> Result<MapOutcome, MapError> {
        if req.topic() == Some("handshake") {
            return Ok(MapOutcome::Respond(Handshake {
                status: 201,
                content_type: "text/plain".into(),
                body: req.body().to_vec(),
            }));
        }
        let topic = req
            .topic()
            .ok_or_else(|| MapError::MissingField("topic".into()))?;
        Ok(MapOutcome::Events(Mapping {
            idempotency_key: req.query().map(str::to_owned),
            tenant: None,
            topic: topic.to_owned(),
            occurred_at: Some(Timestamp::UnixSeconds(5)),
            events: vec![DomainEvent {
                event_type: "x.y".into(),
                subject: Some("s".into()),
                data: Some("{}".into()),
            }],
        }))
    }
}

crate::export_plugin!(Echo);

fn wit_request(method: &str, topic: Option<&str>) -> wit::Request {
    wit::Request {
        method: method.into(),
        topic: topic.map(str::to_owned),
        query: Some("k".into()),
        headers: vec![("x-tenant".into(), "t1".into())],
        body: b"body".to_vec(),
    }
}

#[test]
fn glue_carries_every_field_both_ways() {
    let m = glue::metadata::<Echo>();
    assert_eq!(
        (m.name.as_str(), m.version.as_str(), m.retry_window_hours),
        ("echo", "1.2.3", 7)
    );

    let settings = vec![("suffix".to_owned(), "s".to_owned())];
    assert_eq!(
        glue::tenant_hint::<Echo>(wit_request("POST", None), settings.clone()).as_deref(),
        Some("t1|s")
    );

    match glue::verify::<Echo>(wit_request("POST", None), vec![9, 11], vec![]) {
        Ok(wit::Verified { secret }) => assert_eq!(secret, Some(11)),
        Err(e) => panic!("unexpected {e:?}"),
    }
    match glue::verify::<Echo>(wit_request("GET", None), vec![], vec![]) {
        Err(wit::VerifyError::Expired(m)) => assert_eq!(m, "GET"),
        other => panic!("unexpected {other:?}"),
    }

    match glue::map::<Echo>(wit_request("POST", Some("t/x")), vec![]) {
        Ok(wit::MapOutcome::Events(m)) => {
            assert_eq!(m.topic, "t/x");
            assert_eq!(m.idempotency_key.as_deref(), Some("k"));
            assert!(matches!(
                m.occurred_at,
                Some(wit::Timestamp::UnixSeconds(5))
            ));
            assert_eq!(m.events.len(), 1);
            assert_eq!(m.events[0].event_type, "x.y");
            assert_eq!(m.events[0].subject.as_deref(), Some("s"));
            assert_eq!(m.events[0].data.as_deref(), Some("{}"));
        }
        other => panic!("unexpected {other:?}"),
    }
    match glue::map::<Echo>(wit_request("POST", Some("handshake")), vec![]) {
        Ok(wit::MapOutcome::Respond(h)) => {
            assert_eq!((h.status, h.content_type.as_str()), (201, "text/plain"));
            assert_eq!(h.body, b"body");
        }
        other => panic!("unexpected {other:?}"),
    }
    match glue::map::<Echo>(wit_request("POST", None), vec![]) {
        Err(wit::MapError::MissingField(f)) => assert_eq!(f, "topic"),
        other => panic!("unexpected {other:?}"),
    }
}
