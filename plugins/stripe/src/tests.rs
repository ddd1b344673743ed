//! Native tests of the Stripe plugin: the shared signature vectors, the header parser,
//! the timestamp tolerance and the event mapping.

use hookgate_plugin_sdk::{
    HashAlgorithm, MapError, MapOutcome, Mapping, Request, Settings, SourcePlugin, TestHost,
    Timestamp, VerifyError, hex_encode,
};
use serde_json::Value;

use crate::Stripe;

#[path = "../../test_vectors.rs"]
mod test_vectors;
use test_vectors::{vector_host, vector_request, vectors};

fn events(req: &Request) -> Mapping {
    match Stripe::map(req, &Settings::new()) {
        Ok(MapOutcome::Events(m)) => m,
        other => panic!("expected events, got {other:?}"),
    }
}

/// The refusal each invalid vector should get, where the reason is unambiguous.
fn expected_refusal(name: &str) -> Option<fn(&VerifyError) -> bool> {
    Some(match name {
        "stripe-stale-timestamp" => |e| matches!(e, VerifyError::Expired(_)),
        "stripe-tampered-body" | "stripe-wrong-secret" => |e| matches!(e, VerifyError::Mismatch(_)),
        "stripe-v0-only" => |e| matches!(e, VerifyError::MissingSignature(_)),
        "stripe-no-timestamp" | "stripe-garbage-header" => {
            |e| matches!(e, VerifyError::MalformedSignature(_))
        }
        _ => return None,
    })
}

#[test]
fn signature_vectors() {
    for v in vectors("stripe") {
        let name = v["name"].as_str().expect("name");
        let host = vector_host(&v);
        let req = vector_request(&v);
        let result = Stripe::verify(&req, &host.handles(), &[], &Settings::new());
        match v["expect"].as_str() {
            Some("valid") => {
                let verified = result.unwrap_or_else(|e| panic!("{name}: refused: {e}"));
                let last = v["secrets"].as_array().expect("secrets").len() - 1;
                assert_eq!(
                    verified.secret.and_then(|h| host.secret_index(h)),
                    Some(last),
                    "{name}: matched secret"
                );
                let body: Value = serde_json::from_str(v["body"].as_str().expect("body"))
                    .expect("vector body is JSON");
                let m = events(&req);
                assert_eq!(Some(m.topic.as_str()), body["type"].as_str(), "{name}");
                assert_eq!(m.idempotency_key.as_deref(), body["id"].as_str(), "{name}");
                assert_eq!(m.tenant.as_deref(), body["account"].as_str(), "{name}");
                assert_eq!(
                    m.occurred_at,
                    body["created"].as_i64().map(Timestamp::UnixSeconds),
                    "{name}"
                );
                assert_eq!(m.events.len(), 1, "{name}");
                assert_eq!(Some(m.events[0].event_type.as_str()), body["type"].as_str());
                assert_eq!(
                    m.events[0].subject.as_deref(),
                    body["data"]["object"]["id"].as_str(),
                    "{name}"
                );
                assert!(m.events[0].subject.is_some(), "{name}");
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
const BODY: &str = r#"{"id":"evt_1","type":"charge.succeeded","created":1763999999,"data":{"object":{"id":"ch_1"}}}"#;

/// A `v1=` item signing `t` and `body` with the `index`-th secret of `host`.
fn v1(host: &TestHost, index: usize, t: &str, body: &str) -> String {
    let mac = host.sign(
        index,
        HashAlgorithm::Sha256,
        format!("{t}.{body}").as_bytes(),
    );
    format!("v1={}", hex_encode(&mac))
}

fn request(header: &str, body: &str) -> Request {
    Request::post()
        .with_header("Stripe-Signature", header)
        .with_body(body.as_bytes())
}

fn verify_with(host: &TestHost, header: &str, settings: &Settings) -> Result<usize, VerifyError> {
    Stripe::verify(&request(header, BODY), &host.handles(), &[], settings).map(|v| {
        v.secret
            .and_then(|h| host.secret_index(h))
            .expect("a configured secret")
    })
}

#[test]
fn tolerance_applies_in_both_directions() {
    let host = TestHost::new().secrets(["whsec_a"]).now(NOW);
    let at = |offset: i64| {
        let t = (NOW + offset).to_string();
        verify_with(
            &host,
            &format!("t={t},{}", v1(&host, 0, &t, BODY)),
            &Settings::new(),
        )
    };
    assert_eq!(at(0), Ok(0));
    assert_eq!(at(-300), Ok(0));
    assert_eq!(at(300), Ok(0));
    assert!(matches!(at(-301), Err(VerifyError::Expired(_))));
    assert!(
        matches!(at(301), Err(VerifyError::Expired(_))),
        "future timestamps too"
    );
    assert!(matches!(at(-86_400), Err(VerifyError::Expired(_))));
}

#[test]
fn tolerance_setting_is_honoured_and_must_be_a_number() {
    let host = TestHost::new().secrets(["whsec_a"]).now(NOW);
    let t = (NOW - 500).to_string();
    let header = format!("t={t},{}", v1(&host, 0, &t, BODY));
    let wide = Settings::new().with("tolerance_seconds", "600");
    let narrow = Settings::new().with("tolerance_seconds", "10");
    assert_eq!(verify_with(&host, &header, &wide), Ok(0));
    assert!(matches!(
        verify_with(&host, &header, &Settings::new()),
        Err(VerifyError::Expired(_))
    ));
    assert!(matches!(
        verify_with(&host, &header, &narrow),
        Err(VerifyError::Expired(_))
    ));
    for bad in ["", "-1", "5m", "1.5"] {
        let settings = Settings::new().with("tolerance_seconds", bad);
        assert!(
            matches!(
                verify_with(&host, &header, &settings),
                Err(VerifyError::Rejected(_))
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn any_secret_times_any_v1_may_match() {
    let host = TestHost::new().secrets(["whsec_old", "whsec_new"]).now(NOW);
    let t = NOW.to_string();
    let old = v1(&host, 0, &t, BODY);
    let new = v1(&host, 1, &t, BODY);
    let junk = format!("v1={}", "ab".repeat(32));
    assert_eq!(
        verify_with(&host, &format!("t={t},{junk},{new}"), &Settings::new()),
        Ok(1)
    );
    assert_eq!(
        verify_with(&host, &format!("t={t},{old},{junk}"), &Settings::new()),
        Ok(0)
    );
    assert_eq!(
        verify_with(&host, &format!("{new},t={t}"), &Settings::new()),
        Ok(1),
        "any order"
    );
    assert!(matches!(
        verify_with(&host, &format!("t={t},{junk}"), &Settings::new()),
        Err(VerifyError::Mismatch(_))
    ));
    // The timestamp is part of what is signed.
    let other_t = (NOW + 1).to_string();
    assert!(matches!(
        verify_with(&host, &format!("t={other_t},{new}"), &Settings::new()),
        Err(VerifyError::Mismatch(_))
    ));
}

#[test]
fn v0_and_unknown_schemes_are_ignored() {
    let host = TestHost::new().secrets(["whsec_a"]).now(NOW);
    let t = NOW.to_string();
    let good = v1(&host, 0, &t, BODY);
    let as_v0 = good.replacen("v1=", "v0=", 1);
    let as_v2 = good.replacen("v1=", "v2=", 1);
    assert!(matches!(
        verify_with(&host, &format!("t={t},{as_v0}"), &Settings::new()),
        Err(VerifyError::MissingSignature(_))
    ));
    assert!(matches!(
        verify_with(&host, &format!("t={t},{as_v2}"), &Settings::new()),
        Err(VerifyError::MissingSignature(_))
    ));
    assert_eq!(
        verify_with(
            &host,
            &format!("t={t},{as_v0},{as_v2},{good}"),
            &Settings::new()
        ),
        Ok(0)
    );
}

#[test]
fn garbage_headers_are_refused_without_panicking() {
    let host = TestHost::new().secrets(["whsec_a"]).now(NOW);
    let t = NOW.to_string();
    let good = v1(&host, 0, &t, BODY);
    let malformed = [
        good.clone(),
        format!("t=,{good}"),
        format!("t=abc,{good}"),
        format!("t=-5,{good}"),
        format!("t=+{t},{good}"),
        format!("t=99999999999999999999999,{good}"),
        format!("t={t},t={t},{good}"),
        format!("t={t},v1=zz"),
        format!("t={t},v1=abc"),
        format!("t={t},v1="),
        "t=abc,v1=zz,,=,=".to_owned(),
        ",,,".to_owned(),
        "=".to_owned(),
        "t".to_owned(),
        "\u{0}\u{fffd}".to_owned(),
    ];
    for header in &malformed {
        let result = verify_with(&host, header, &Settings::new());
        assert!(
            matches!(
                result,
                Err(VerifyError::MalformedSignature(_) | VerifyError::MissingSignature(_))
            ),
            "{header:?}: {result:?}"
        );
    }
    let no_header = Request::post().with_body(BODY.as_bytes());
    assert!(matches!(
        Stripe::verify(&no_header, &host.handles(), &[], &Settings::new()),
        Err(VerifyError::MissingSignature(_))
    ));
    assert!(matches!(
        verify_with(&host, "  ", &Settings::new()),
        Err(VerifyError::MissingSignature(_))
    ));
    // Spaces around items, as some proxies rewrite them, are tolerated.
    assert_eq!(
        verify_with(&host, &format!("t={t}, {good}"), &Settings::new()),
        Ok(0)
    );
}

#[test]
fn map_reads_the_event() {
    let _host = TestHost::new();
    let body = r#"{"id":"evt_9","object":"event","account":"acct_42","created":1763999995,
        "type":"customer.subscription.updated",
        "data":{"object":{"id":"sub_7","items":{"data":[{"id":"si_1"}]}},"previous_attributes":{}}}"#;
    let m = events(&Request::post().with_body(body.as_bytes()));
    assert_eq!(m.topic, "customer.subscription.updated");
    assert_eq!(m.idempotency_key.as_deref(), Some("evt_9"));
    assert_eq!(m.tenant.as_deref(), Some("acct_42"));
    assert_eq!(m.occurred_at, Some(Timestamp::UnixSeconds(1_763_999_995)));
    assert_eq!(m.events.len(), 1);
    assert_eq!(m.events[0].event_type, "customer.subscription.updated");
    assert_eq!(m.events[0].subject.as_deref(), Some("sub_7"));
    assert_eq!(m.events[0].data, None);

    // Optional parts may be absent.
    let bare = r#"{"id":"evt_1","type":"ping"}"#;
    let m = events(&Request::post().with_body(bare.as_bytes()));
    assert_eq!(
        (m.tenant, m.occurred_at, m.events[0].subject.clone()),
        (None, None, None)
    );
    // Escaped strings are unescaped.
    let escaped =
        r#"{"id":"evt_\u0031","type":"charge.succeeded","data":{"object":{"id":"ch_\"q"}}}"#;
    let m = events(&Request::post().with_body(escaped.as_bytes()));
    assert_eq!(m.idempotency_key.as_deref(), Some("evt_1"));
    assert_eq!(m.events[0].subject.as_deref(), Some("ch_\"q"));
}

#[test]
fn map_refuses_what_stripe_does_not_send() {
    let _host = TestHost::new();
    let missing = [
        r#"{"type":"charge.succeeded"}"#,
        r#"{"id":"evt_1"}"#,
        r#"{"id":"","type":"x"}"#,
        r#"{"id":"evt_1","type":null}"#,
    ];
    for body in missing {
        let result = Stripe::map(
            &Request::post().with_body(body.as_bytes()),
            &Settings::new(),
        );
        assert!(
            matches!(result, Err(MapError::MissingField(_))),
            "{body}: {result:?}"
        );
    }
    let malformed: [&[u8]; 9] = [
        b"",
        b"not json",
        b"[\"evt_1\",\"charge.succeeded\"]",
        br#"{"id":"evt_1","type":"x","data":["o"]}"#,
        br#"{"id":"evt_1","type":"x","data":{"object":["ch_1"]}}"#,
        br#"{"id":"evt_1","type":"x","created":"yesterday"}"#,
        br#"{"id":7,"type":"x"}"#,
        br#"{"id":"evt_1","type":"x"} trailing"#,
        b"{\"id\":\"evt_1\",\"type\":\"x\",\"z\":\"\xff\"}",
    ];
    for body in malformed {
        let result = Stripe::map(&Request::post().with_body(body), &Settings::new());
        assert!(
            matches!(result, Err(MapError::MalformedPayload(_))),
            "{}: {result:?}",
            String::from_utf8_lossy(body)
        );
    }
    for bad_type in [
        "charge succeeded",
        "charge.>",
        "charge.*",
        "charge..succeeded",
        ".x",
    ] {
        let body = format!(r#"{{"id":"evt_1","type":"{bad_type}"}}"#);
        let result = Stripe::map(
            &Request::post().with_body(body.into_bytes()),
            &Settings::new(),
        );
        assert!(
            matches!(result, Err(MapError::UnsupportedTopic(_))),
            "{bad_type}"
        );
    }
}

#[test]
fn metadata_describes_the_plugin() {
    let m = Stripe::metadata();
    assert_eq!(m.name, "stripe");
    assert_eq!(m.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(m.retry_window_hours, 72);
    let req = Request::post().with_body(&br#"{"account":"acct_1"}"#[..]);
    assert_eq!(Stripe::tenant_hint(&req, &Settings::new()), None);
}
