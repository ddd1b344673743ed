//! Native tests of the Slack plugin: Slack's documented signing example, the timestamp
//! tolerance, the header edge cases, the `url_verification` handshake and the mapping of
//! Events API payloads.

use hookgate_plugin_sdk::{
    HashAlgorithm, MapError, MapOutcome, Mapping, Request, Settings, SourcePlugin, TestHost,
    Timestamp, VerifyError, hex_encode,
};
use serde_json::Value;

use crate::Slack;

fn events(req: &Request) -> Mapping {
    match Slack::map(req, &Settings::new()) {
        Ok(MapOutcome::Events(m)) => m,
        other => panic!("expected events, got {other:?}"),
    }
}

fn map_error(body: &str) -> MapError {
    match Slack::map(
        &Request::post().with_body(body.as_bytes()),
        &Settings::new(),
    ) {
        Err(e) => e,
        other => panic!("{body}: expected an error, got {other:?}"),
    }
}

// The worked example of "Verifying requests from Slack"
// (https://api.slack.com/authentication/verifying-requests-from-slack), verbatim: a slash
// command's form body, signed as every Slack request is.
const DOC_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const DOC_TIMESTAMP: &str = "1531420618";
const DOC_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
const DOC_SIGNATURE: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

fn doc_request() -> Request {
    Request::post()
        .with_header("X-Slack-Request-Timestamp", DOC_TIMESTAMP)
        .with_header("X-Slack-Signature", DOC_SIGNATURE)
        .with_body(DOC_BODY.as_bytes())
}

#[test]
fn slacks_documented_example_verifies() {
    let host = TestHost::new()
        .secrets(["an-old-secret", DOC_SECRET])
        .now(1_531_420_618 + 60);
    let verified =
        Slack::verify(&doc_request(), &host.handles(), &[], &Settings::new()).expect("valid");
    assert_eq!(verified.secret.and_then(|h| host.secret_index(h)), Some(1));
    // The test host's signer agrees with Slack's example, so the tests below that sign
    // with it sign as Slack does.
    let message = format!("v0:{DOC_TIMESTAMP}:{DOC_BODY}");
    assert_eq!(
        format!(
            "v0={}",
            hex_encode(&host.sign(1, HashAlgorithm::Sha256, message.as_bytes()))
        ),
        DOC_SIGNATURE
    );
    // Today the example is long expired: the signature is checked first, then the age.
    let today = TestHost::new().secrets([DOC_SECRET]).now(1_764_000_000);
    assert!(matches!(
        Slack::verify(&doc_request(), &today.handles(), &[], &Settings::new()),
        Err(VerifyError::Expired(_))
    ));
    let wrong = TestHost::new()
        .secrets(["an-old-secret"])
        .now(1_764_000_000);
    assert!(matches!(
        Slack::verify(&doc_request(), &wrong.handles(), &[], &Settings::new()),
        Err(VerifyError::Mismatch(_))
    ));
}

const NOW: i64 = 1_764_000_000;
const BODY: &str = r#"{"token":"XXYYZZ","team_id":"T123ABC456","api_app_id":"A123ABC456","event":{"type":"app_mention","user":"U123ABC456","text":"<@U0LAN0Z89> is it everything a river should be?","ts":"1515449522.000016","channel":"C123ABC456","event_ts":"1515449522000016"},"type":"event_callback","event_id":"Ev123ABC456","event_time":1515449522,"authorizations":[{"team_id":"T123ABC456","user_id":"U123ABC456","is_bot":false}]}"#;

/// `X-Slack-Signature` for `t` and `body` under the `index`-th secret of `host`.
fn sign(host: &TestHost, index: usize, t: &str, body: &str) -> String {
    let mac = host.sign(
        index,
        HashAlgorithm::Sha256,
        format!("v0:{t}:{body}").as_bytes(),
    );
    format!("v0={}", hex_encode(&mac))
}

fn request(signature: Option<&str>, timestamp: Option<&str>, body: &str) -> Request {
    let mut req = Request::post();
    if let Some(t) = timestamp {
        req = req.with_header("X-Slack-Request-Timestamp", t);
    }
    if let Some(s) = signature {
        req = req.with_header("X-Slack-Signature", s);
    }
    req.with_body(body.as_bytes())
}

fn verify_at(host: &TestHost, offset: i64, settings: &Settings) -> Result<usize, VerifyError> {
    let t = (NOW + offset).to_string();
    let req = request(Some(&sign(host, 0, &t, BODY)), Some(&t), BODY);
    Slack::verify(&req, &host.handles(), &[], settings).map(|v| {
        v.secret
            .and_then(|h| host.secret_index(h))
            .expect("a configured secret")
    })
}

#[test]
fn tolerance_applies_in_both_directions() {
    let host = TestHost::new().secrets(["secret"]).now(NOW);
    let at = |offset| verify_at(&host, offset, &Settings::new());
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
    let host = TestHost::new().secrets(["secret"]).now(NOW);
    let wide = Settings::new().with("tolerance_seconds", "600");
    let narrow = Settings::new().with("tolerance_seconds", " 10 ");
    assert_eq!(verify_at(&host, -500, &wide), Ok(0));
    assert!(matches!(
        verify_at(&host, -500, &Settings::new()),
        Err(VerifyError::Expired(_))
    ));
    assert!(matches!(
        verify_at(&host, -11, &narrow),
        Err(VerifyError::Expired(_))
    ));
    assert_eq!(verify_at(&host, -10, &narrow), Ok(0));
    for bad in ["", "-1", "5m", "1.5", "300s"] {
        let settings = Settings::new().with("tolerance_seconds", bad);
        assert!(
            matches!(
                verify_at(&host, 0, &settings),
                Err(VerifyError::Rejected(_))
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn any_configured_secret_may_match() {
    let host = TestHost::new().secrets(["old", "new"]).now(NOW);
    let t = NOW.to_string();
    for index in [0, 1] {
        let req = request(Some(&sign(&host, index, &t, BODY)), Some(&t), BODY);
        let ok = Slack::verify(&req, &host.handles(), &[], &Settings::new()).expect("valid");
        assert_eq!(ok.secret.and_then(|h| host.secret_index(h)), Some(index));
    }
    let req = request(Some(&sign(&host, 1, &t, BODY)), Some(&t), BODY);
    assert!(matches!(
        Slack::verify(&req, &[host.handles()[0]], &[], &Settings::new()),
        Err(VerifyError::Mismatch(_))
    ));
}

#[test]
fn the_timestamp_and_the_body_are_both_signed() {
    let host = TestHost::new().secrets(["secret"]).now(NOW);
    let t = NOW.to_string();
    let good = sign(&host, 0, &t, BODY);
    let other_t = (NOW + 1).to_string();
    let tampered = BODY.replace("Ev123ABC456", "Ev999");
    // The same signature under another timestamp, over another body, or signed without
    // the `v0:` framing.
    let unframed = format!(
        "v0={}",
        hex_encode(&host.sign(0, HashAlgorithm::Sha256, BODY.as_bytes()))
    );
    for req in [
        request(Some(&good), Some(&other_t), BODY),
        request(Some(&good), Some(&t), &tampered),
        request(Some(&unframed), Some(&t), BODY),
    ] {
        assert!(matches!(
            Slack::verify(&req, &host.handles(), &[], &Settings::new()),
            Err(VerifyError::Mismatch(_))
        ));
    }
    assert!(
        Slack::verify(
            &request(
                Some(&good.to_uppercase().replacen("V0=", "v0=", 1)),
                Some(&t),
                BODY
            ),
            &host.handles(),
            &[],
            &Settings::new()
        )
        .is_ok(),
        "upper-case hex is the same MAC"
    );
}

#[test]
fn bad_headers_are_classified_without_panicking() {
    let host = TestHost::new().secrets(["secret"]).now(NOW);
    let t = NOW.to_string();
    let good = sign(&host, 0, &t, BODY);
    let check = |signature: Option<&str>, timestamp: Option<&str>| {
        Slack::verify(
            &request(signature, timestamp, BODY),
            &host.handles(),
            &[],
            &Settings::new(),
        )
    };
    for (signature, timestamp) in [
        (None, Some(t.as_str())),
        (Some(""), Some(t.as_str())),
        (Some("   "), Some(t.as_str())),
        (Some(good.as_str()), None),
    ] {
        assert!(
            matches!(
                check(signature, timestamp),
                Err(VerifyError::MissingSignature(_))
            ),
            "{signature:?} {timestamp:?}"
        );
    }
    let hex = good.trim_start_matches("v0=");
    let malformed_signatures = [
        hex.to_owned(),
        format!("v1={hex}"),
        format!("V0={hex}"),
        format!("v0:{hex}"),
        "v0=".to_owned(),
        "v0=zz".to_owned(),
        format!("v0={}", &hex[..62]),
        format!("v0={hex}ab"),
        format!("v0={hex},v0={hex}"),
        "\u{0}\u{fffd}".to_owned(),
    ];
    for signature in &malformed_signatures {
        assert!(
            matches!(
                check(Some(signature), Some(&t)),
                Err(VerifyError::MalformedSignature(_))
            ),
            "{signature:?}"
        );
    }
    for timestamp in [
        "",
        "abc",
        "-5",
        "+1764000000",
        "1764000000.5",
        " 1764000000",
        "99999999999999999999999",
    ] {
        assert!(
            matches!(
                check(Some(&good), Some(timestamp)),
                Err(VerifyError::MalformedSignature(_))
            ),
            "{timestamp:?}"
        );
    }
    assert!(matches!(
        check(Some(&format!("v0={}", "ab".repeat(32))), Some(&t)),
        Err(VerifyError::Mismatch(_))
    ));
    assert!(check(Some(&format!(" {good} ")), Some(&t)).is_ok());
}

#[test]
fn url_verification_is_answered_with_the_challenge() {
    let _host = TestHost::new();
    let body = r#"{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    let answer = |body: &str| match Slack::map(
        &Request::post().with_body(body.as_bytes()),
        &Settings::new(),
    ) {
        Ok(MapOutcome::Respond(h)) => {
            assert_eq!(h.status, 200);
            assert_eq!(h.content_type, "application/json");
            assert!(h.headers.is_empty());
            serde_json::from_slice::<Value>(&h.body).expect("JSON")
        }
        other => panic!("expected a handshake, got {other:?}"),
    };
    assert_eq!(
        answer(body),
        serde_json::json!({"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"})
    );
    // Echoed exactly, escapes and all, as valid JSON.
    let tricky = r#"{"type":"url_verification","challenge":"a\"b\\c<\/d>\u00e9"}"#;
    assert_eq!(
        answer(tricky),
        serde_json::json!({"challenge": "a\"b\\c</d>é"})
    );
    for missing in [
        r#"{"type":"url_verification"}"#,
        r#"{"type":"url_verification","challenge":""}"#,
        r#"{"type":"url_verification","challenge":null}"#,
    ] {
        assert!(
            matches!(map_error(missing), MapError::MissingField(_)),
            "{missing}"
        );
    }
    assert!(matches!(
        map_error(r#"{"type":"url_verification","challenge":7}"#),
        MapError::MalformedPayload(_)
    ));
}

fn callback(event: &str) -> String {
    format!(
        r#"{{"token":"XXYYZZ","team_id":"T123ABC456","api_app_id":"A123ABC456","event":{event},"type":"event_callback","event_id":"Ev123ABC456","event_time":1515449522}}"#
    )
}

#[test]
fn event_callbacks_map_to_their_event_type() {
    let _host = TestHost::new();
    // (inner event, event type, subject)
    let table: &[(&str, &str, Option<&str>)] = &[
        (
            r#"{"type":"app_mention","user":"U1","text":"hi","ts":"1.2","channel":"C1","event_ts":"1.2"}"#,
            "app_mention",
            Some("C1"),
        ),
        (
            r#"{"type":"message","channel":"C2","user":"U2","text":"Hello world","ts":"1355517523.000005","channel_type":"channel"}"#,
            "message",
            Some("C2"),
        ),
        (
            r#"{"type":"message","subtype":"channel_join","channel":"C3","user":"U3","text":"<@U3> has joined the channel"}"#,
            "message.channel_join",
            Some("C3"),
        ),
        (
            r#"{"type":"message","subtype":"message_changed","hidden":true,"channel":"C4","message":{"type":"message","user":"U4"}}"#,
            "message.message_changed",
            Some("C4"),
        ),
        (
            r#"{"type":"message","subtype":null,"channel":"C5"}"#,
            "message",
            Some("C5"),
        ),
        (
            r#"{"type":"reaction_added","user":"U5","reaction":"thumbsup","item_user":"U6","item":{"type":"message","channel":"C6","ts":"1360782400.498405"},"event_ts":"1360782804.083113"}"#,
            "reaction_added",
            Some("C6"),
        ),
        (
            r#"{"type":"channel_created","channel":{"id":"C7","name":"fun","created":1360782804,"creator":"U7"}}"#,
            "channel_created",
            Some("C7"),
        ),
        (
            r#"{"type":"user_change","user":{"id":"U8","name":"spengler"}}"#,
            "user_change",
            Some("U8"),
        ),
        (
            r#"{"type":"app_home_opened","user":"U9","tab":"home"}"#,
            "app_home_opened",
            Some("U9"),
        ),
        (
            r#"{"type":"file_shared","file_id":"F1","user_id":"U1","file":{"id":"F1"}}"#,
            "file_shared",
            None,
        ),
        (
            r#"{"type":"tokens_revoked","tokens":{"oauth":["UXXXXXXXX"],"bot":[]}}"#,
            "tokens_revoked",
            None,
        ),
    ];
    for (event, event_type, subject) in table {
        let m = events(&Request::post().with_body(callback(event).into_bytes()));
        let inner: Value = serde_json::from_str(event).expect("JSON");
        assert_eq!(Some(m.topic.as_str()), inner["type"].as_str(), "{event}");
        assert_eq!(m.idempotency_key.as_deref(), Some("Ev123ABC456"), "{event}");
        assert_eq!(m.tenant.as_deref(), Some("T123ABC456"), "{event}");
        assert_eq!(
            m.occurred_at,
            Some(Timestamp::UnixSeconds(1_515_449_522)),
            "{event}"
        );
        assert_eq!(m.events.len(), 1, "{event}");
        assert_eq!(m.events[0].event_type, *event_type, "{event}");
        assert_eq!(m.events[0].subject.as_deref(), *subject, "{event}");
        assert_eq!(m.events[0].data, None, "{event}: raw body as data");
    }
}

#[test]
fn retries_carry_the_same_key() {
    let host = TestHost::new().secrets(["secret"]).now(NOW);
    let t = NOW.to_string();
    let first = request(Some(&sign(&host, 0, &t, BODY)), Some(&t), BODY);
    // Slack signs each attempt anew, with a fresh timestamp.
    let t2 = (NOW + 60).to_string();
    let retry = request(Some(&sign(&host, 0, &t2, BODY)), Some(&t2), BODY)
        .with_header("X-Slack-Retry-Num", "1")
        .with_header("X-Slack-Retry-Reason", "http_timeout");
    let host = host.now(NOW + 61);
    assert!(Slack::verify(&retry, &host.handles(), &[], &Settings::new()).is_ok());
    let (a, b) = (events(&first), events(&retry));
    assert_eq!(a.idempotency_key.as_deref(), Some("Ev123ABC456"));
    assert_eq!(a, b);
    assert!(
        host.logs()
            .iter()
            .any(|l| l.message.contains("retry 1 (http_timeout)"))
    );
}

#[test]
fn app_rate_limited_is_stored_too() {
    let _host = TestHost::new();
    let body = r#"{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","type":"app_rate_limited","team_id":"T123456","minute_rate_limited":1518467820,"api_app_id":"A123456"}"#;
    let m = events(&Request::post().with_body(body.as_bytes()));
    assert_eq!(m.topic, "app_rate_limited");
    assert_eq!(m.idempotency_key, None, "the body's SHA-256");
    assert_eq!(m.tenant.as_deref(), Some("T123456"));
    assert_eq!(m.occurred_at, Some(Timestamp::UnixSeconds(1_518_467_820)));
    assert_eq!(m.events[0].event_type, "app_rate_limited");
    assert_eq!(m.events[0].subject.as_deref(), Some("A123456"));
}

#[test]
fn optional_envelope_fields_may_be_absent() {
    let _host = TestHost::new();
    let bare = r#"{"type":"event_callback","event_id":"Ev1","event":{"type":"app_uninstalled"}}"#;
    let m = events(&Request::post().with_body(bare.as_bytes()));
    assert_eq!(m.idempotency_key.as_deref(), Some("Ev1"));
    assert_eq!(
        (m.tenant, m.occurred_at, m.events[0].subject.clone()),
        (None, None, None)
    );
    assert_eq!(m.events[0].event_type, "app_uninstalled");
}

#[test]
fn what_slack_does_not_send_is_refused() {
    let _host = TestHost::new();
    let missing = [
        r#"{}"#,
        r#"{"type":""}"#,
        r#"{"type":null,"event_id":"Ev1"}"#,
        r#"{"type":"event_callback","event":{"type":"message"}}"#,
        r#"{"type":"event_callback","event_id":"","event":{"type":"message"}}"#,
        r#"{"type":"event_callback","event_id":"Ev1"}"#,
        r#"{"type":"event_callback","event_id":"Ev1","event":{}}"#,
        r#"{"type":"event_callback","event_id":"Ev1","event":{"type":""}}"#,
    ];
    for body in missing {
        assert!(
            matches!(map_error(body), MapError::MissingField(_)),
            "{body}"
        );
    }
    let malformed = [
        "",
        "not json",
        // A slash command or an interactive payload: not the Events API.
        DOC_BODY,
        "payload=%7B%22type%22%3A%22block_actions%22%7D",
        r#"["event_callback"]"#,
        r#"{"type":"event_callback","event_id":"Ev1","event":["message"]}"#,
        r#"{"type":"event_callback","event_id":"Ev1","event_time":"now","event":{"type":"message"}}"#,
        r#"{"type":"event_callback","event_id":7,"event":{"type":"message"}}"#,
        r#"{"type":"event_callback","event_id":"Ev1","event":{"type":"message","subtype":["x"]}}"#,
        r#"{"type":"event_callback","event_id":"Ev1","event":{"type":"message"}} trailing"#,
    ];
    for body in malformed {
        assert!(
            matches!(map_error(body), MapError::MalformedPayload(_)),
            "{body}"
        );
    }
    let invalid_utf8 = Slack::map(
        &Request::post().with_body(&b"{\"type\":\"event_callback\",\"x\":\"\xff\"}"[..]),
        &Settings::new(),
    );
    assert!(matches!(invalid_utf8, Err(MapError::MalformedPayload(_))));
    for body in [
        r#"{"type":"block_actions"}"#.to_owned(),
        r#"{"type":"Event_Callback"}"#.to_owned(),
        callback(r#"{"type":"app mention"}"#),
        callback(r#"{"type":"message.>"}"#),
        callback(r#"{"type":"Message"}"#),
        callback(r#"{"type":"message","subtype":"bot message"}"#),
        callback(r#"{"type":"message","subtype":"a.b"}"#),
    ] {
        assert!(
            matches!(map_error(&body), MapError::UnsupportedTopic(_)),
            "{body}"
        );
    }
}

#[test]
fn metadata_describes_the_plugin() {
    let m = Slack::metadata();
    assert_eq!(m.name, "slack");
    assert_eq!(m.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(m.retry_window_hours, 1);
    let _host = TestHost::new();
    // The signing secret is the app's, not the workspace's: no tenant hint.
    assert_eq!(
        Slack::tenant_hint(
            &Request::post().with_body(BODY.as_bytes()),
            &Settings::new()
        ),
        None
    );
}
