//! Native tests of the GitHub plugin: the shared signature vectors, GitHub's documented test
//! values, the mapping table, `ping`, form-encoded deliveries and the edge cases.

use hookgate_plugin_sdk::{
    HashAlgorithm, MapError, MapOutcome, Mapping, Request, Settings, SourcePlugin, TestHost,
    VerifyError, hex_encode,
};
use serde_json::Value;

use crate::GitHub;

#[path = "../../test_vectors.rs"]
mod test_vectors;
use test_vectors::{vector_host, vector_request, vectors};

fn events(req: &Request) -> Mapping {
    match GitHub::map(req, &Settings::new()) {
        Ok(MapOutcome::Events(m)) => m,
        other => panic!("expected events, got {other:?}"),
    }
}

fn map_error(req: &Request) -> MapError {
    match GitHub::map(req, &Settings::new()) {
        Err(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

/// The refusal each invalid vector should get.
fn expected_refusal(name: &str) -> Option<fn(&VerifyError) -> bool> {
    Some(match name {
        "github-sha1-only" => |e| matches!(e, VerifyError::MissingSignature(_)),
        "github-tampered" => |e| matches!(e, VerifyError::Mismatch(_)),
        _ => return None,
    })
}

#[test]
fn signature_vectors() {
    for v in vectors("github") {
        let name = v["name"].as_str().expect("name");
        let host = vector_host(&v);
        let req = vector_request(&v);
        let result = GitHub::verify(&req, &host.handles(), &[], &Settings::new());
        match v["expect"].as_str() {
            Some("valid") => {
                let verified = result.unwrap_or_else(|e| panic!("{name}: refused: {e}"));
                let last = v["secrets"].as_array().expect("secrets").len() - 1;
                assert_eq!(
                    verified.secret.and_then(|h| host.secret_index(h)),
                    Some(last),
                    "{name}: matched secret"
                );
                let headers = &v["headers"];
                let body: Value = serde_json::from_str(v["body"].as_str().expect("body"))
                    .expect("vector body is JSON");
                let event = headers["X-GitHub-Event"].as_str().expect("event");
                let m = events(&req);
                assert_eq!(m.topic, event, "{name}");
                assert_eq!(
                    m.idempotency_key.as_deref(),
                    headers["X-GitHub-Delivery"].as_str(),
                    "{name}"
                );
                assert_eq!(
                    m.tenant.as_deref(),
                    body["repository"]["full_name"].as_str(),
                    "{name}"
                );
                assert_eq!(m.occurred_at, None, "{name}");
                assert_eq!(m.events.len(), 1, "{name}");
                let expected_type = match body["action"].as_str() {
                    Some(action) => format!("{event}.{action}"),
                    None => event.to_owned(),
                };
                assert_eq!(m.events[0].event_type, expected_type, "{name}");
                assert_eq!(m.events[0].subject.as_deref(), Some("2"), "{name}");
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

/// The test values of "Validating webhook deliveries" (docs.github.com), verbatim.
#[test]
fn githubs_documented_test_values_verify() {
    let host = TestHost::new().secrets(["It's a Secret to Everybody"]);
    let req = Request::post()
        .with_header(
            "X-Hub-Signature-256",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        )
        .with_body(&b"Hello, World!"[..]);
    let verified = GitHub::verify(&req, &host.handles(), &[], &Settings::new()).expect("valid");
    assert_eq!(verified.secret, Some(host.handles()[0]));
    // Upper-case hex is the same signature.
    let upper = Request::post()
        .with_header(
            "X-Hub-Signature-256",
            "sha256=757107EA0EB2509FC211221CCE984B8A37570B6D7586C22C46F4379C8B043E17",
        )
        .with_body(&b"Hello, World!"[..]);
    assert!(GitHub::verify(&upper, &host.handles(), &[], &Settings::new()).is_ok());
    let other_body = Request::post()
        .with_header(
            "X-Hub-Signature-256",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        )
        .with_body(&b"Hello, World?"[..]);
    assert!(matches!(
        GitHub::verify(&other_body, &host.handles(), &[], &Settings::new()),
        Err(VerifyError::Mismatch(_))
    ));
}

fn signature(host: &TestHost, index: usize, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex_encode(&host.sign(index, HashAlgorithm::Sha256, body))
    )
}

#[test]
fn verify_reports_the_matching_secret_and_refuses_others() {
    let host = TestHost::new().secrets(["old", "new"]);
    let body = br#"{"zen":"Keep it logically awesome."}"#;
    for index in [0, 1] {
        let req = Request::post()
            .with_header("X-Hub-Signature-256", signature(&host, index, body))
            .with_body(&body[..]);
        let ok = GitHub::verify(&req, &host.handles(), &[], &Settings::new()).expect("valid");
        assert_eq!(ok.secret.and_then(|h| host.secret_index(h)), Some(index));
    }
    let req = Request::post()
        .with_header("X-Hub-Signature-256", signature(&host, 1, body))
        .with_body(&body[..]);
    assert!(matches!(
        GitHub::verify(&req, &[host.handles()[0]], &[], &Settings::new()),
        Err(VerifyError::Mismatch(_))
    ));
    assert!(matches!(
        GitHub::verify(&req, &[], &[], &Settings::new()),
        Err(VerifyError::Mismatch(_))
    ));
}

#[test]
fn verify_classifies_bad_signatures() {
    let host = TestHost::new().secrets(["s"]);
    let body = &b"{}"[..];
    let good = signature(&host, 0, body);
    let check = |headers: &[(&str, &str)]| {
        let mut req = Request::post().with_body(body);
        for (k, v) in headers {
            req = req.with_header(*k, *v);
        }
        GitHub::verify(&req, &host.handles(), &[], &Settings::new())
    };
    let sha1 = hex_encode(&host.sign(0, HashAlgorithm::Sha1, body));
    let missing: [&[(&str, &str)]; 4] = [
        &[],
        &[("X-Hub-Signature-256", "")],
        &[("X-Hub-Signature-256", "  ")],
        // A valid SHA-1 signature is not enough.
        &[("X-Hub-Signature", &format!("sha1={sha1}"))],
    ];
    for headers in missing {
        assert!(
            matches!(check(headers), Err(VerifyError::MissingSignature(_))),
            "{headers:?}"
        );
    }
    let hex = good.trim_start_matches("sha256=");
    let malformed = [
        hex.to_owned(),
        format!("SHA256={hex}"),
        format!("sha1={sha1}"),
        format!("sha256 ={hex}"),
        "sha256=".to_owned(),
        "sha256=zz".to_owned(),
        format!("sha256={}", &hex[..62]),
        format!("sha256={hex}00"),
        format!("sha256={hex},sha256={hex}"),
        "\u{0}\u{fffd}".to_owned(),
    ];
    for value in &malformed {
        assert!(
            matches!(
                check(&[("X-Hub-Signature-256", value)]),
                Err(VerifyError::MalformedSignature(_))
            ),
            "{value:?}"
        );
    }
    assert!(matches!(
        check(&[(
            "X-Hub-Signature-256",
            &format!("sha256={}", "ab".repeat(32))
        )]),
        Err(VerifyError::Mismatch(_))
    ));
    assert!(check(&[("X-Hub-Signature-256", &good)]).is_ok());
    assert!(
        check(&[("X-Hub-Signature-256", &format!(" {good} "))]).is_ok(),
        "surrounding spaces are tolerated"
    );
}

fn delivery(event: &str, body: &str) -> Request {
    Request::post()
        .with_header("X-GitHub-Event", event)
        .with_header("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")
        .with_header("Content-Type", "application/json")
        .with_body(body.as_bytes())
}

const REPO: &str = r#""repository":{"id":186853002,"full_name":"Codertocat/Hello-World"},"organization":{"login":"Codertocat"}"#;

#[test]
fn mapping_table() {
    let _host = TestHost::new();
    // (X-GitHub-Event, payload fields besides the repository, event type, subject)
    let table: &[(&str, &str, &str, &str)] = &[
        (
            "pull_request",
            r#""action":"opened","number":2,"pull_request":{"id":279147437,"number":2}"#,
            "pull_request.opened",
            "2",
        ),
        (
            "pull_request",
            r#""action":"closed","number":4,"pull_request":{"id":279147437}"#,
            "pull_request.closed",
            "4",
        ),
        (
            "pull_request_review",
            r#""action":"submitted","review":{"id":7},"pull_request":{"number":5}"#,
            "pull_request_review.submitted",
            "5",
        ),
        (
            "pull_request_review_comment",
            r#""action":"created","comment":{"id":8},"pull_request":{"number":6}"#,
            "pull_request_review_comment.created",
            "6",
        ),
        (
            "issues",
            r#""action":"closed","issue":{"id":444500041,"number":1}"#,
            "issues.closed",
            "1",
        ),
        (
            "issue_comment",
            r#""action":"created","issue":{"number":9},"comment":{"id":492700400}"#,
            "issue_comment.created",
            "9",
        ),
        (
            "discussion",
            r#""action":"answered","discussion":{"id":1,"number":90}"#,
            "discussion.answered",
            "90",
        ),
        (
            "push",
            r#""ref":"refs/heads/main","before":"6113728f","after":"0000000000""#,
            "push",
            "refs/heads/main",
        ),
        (
            "create",
            r#""ref":"simple-tag","ref_type":"tag""#,
            "create",
            "simple-tag",
        ),
        (
            "release",
            r#""action":"published","release":{"id":11248810,"tag_name":"0.0.1"}"#,
            "release.published",
            "11248810",
        ),
        (
            "check_run",
            r#""action":"completed","check_run":{"id":128620228}"#,
            "check_run.completed",
            "128620228",
        ),
        (
            "workflow_run",
            r#""action":"requested","workflow_run":{"id":30433642,"name":"Build"}"#,
            "workflow_run.requested",
            "30433642",
        ),
        (
            "workflow_job",
            r#""action":"in_progress","workflow_job":{"id":9223372036854775807123}"#,
            "workflow_job.in_progress",
            // Every digit kept.
            "9223372036854775807123",
        ),
        (
            "milestone",
            r#""action":"created","milestone":{"id":4317517,"number":1}"#,
            "milestone.created",
            "1",
        ),
        (
            "deployment_status",
            r#""action":"created","deployment_status":{"id":"DS_1"}"#,
            "deployment_status.created",
            "DS_1",
        ),
        // No object named after the event: the repository.
        (
            "star",
            r#""action":"created","starred_at":"2019-05-15T15:20:40Z""#,
            "star.created",
            "Codertocat/Hello-World",
        ),
        (
            "repository",
            r#""action":"renamed","changes":{}"#,
            "repository.renamed",
            "Codertocat/Hello-World",
        ),
        (
            "status",
            r#""sha":"6113728f27ae82c7b1a177c8d03f9e96e0adf246","state":"success""#,
            "status",
            "Codertocat/Hello-World",
        ),
        // An action explicitly null is no action.
        (
            "gollum",
            r#""action":null,"pages":[]"#,
            "gollum",
            "Codertocat/Hello-World",
        ),
    ];
    for (event, fields, event_type, subject) in table {
        let body = format!("{{{fields},{REPO}}}");
        let m = events(&delivery(event, &body));
        assert_eq!(m.topic, *event, "{event}");
        assert_eq!(m.events.len(), 1, "{event}");
        assert_eq!(m.events[0].event_type, *event_type, "{event}");
        assert_eq!(m.events[0].subject.as_deref(), Some(*subject), "{event}");
        assert_eq!(m.events[0].data, None, "{event}");
        assert_eq!(
            m.tenant.as_deref(),
            Some("Codertocat/Hello-World"),
            "{event}"
        );
        assert_eq!(
            m.idempotency_key.as_deref(),
            Some("72d3162e-cc78-11e3-81ab-4c9367dc0958"),
            "{event}"
        );
        assert_eq!(m.occurred_at, None, "{event}");
    }
}

#[test]
fn tenant_is_the_repository_else_the_organization() {
    let _host = TestHost::new();
    let org_only =
        r#"{"action":"member_added","membership":{},"organization":{"login":"octo-org","id":1}}"#;
    let m = events(&delivery("organization", org_only));
    assert_eq!(m.tenant.as_deref(), Some("octo-org"));
    // The organization object is the subject of an organization event (its id).
    assert_eq!(m.events[0].subject.as_deref(), Some("1"));
    let neither = r#"{"action":"created","installation":{"id":2311213}}"#;
    let m = events(&delivery("installation", neither));
    assert_eq!(m.tenant, None);
    assert_eq!(m.events[0].subject.as_deref(), Some("2311213"));
    // Odd shapes are no tenant rather than a failure.
    let odd = r#"{"repository":"Codertocat/Hello-World","organization":{"login":""}}"#;
    let m = events(&delivery("push", odd));
    assert_eq!((m.tenant, m.events[0].subject.clone()), (None, None));
    let escaped = r#"{"repository":{"full_name":"a\/b\u0021"}}"#;
    assert_eq!(
        events(&delivery("push", escaped)).tenant.as_deref(),
        Some("a/b!")
    );
}

#[test]
fn tenant_hint_reads_the_same_tenant() {
    let _host = TestHost::new();
    let body = format!(r#"{{"action":"opened",{REPO}}}"#);
    assert_eq!(
        GitHub::tenant_hint(&delivery("pull_request", &body), &Settings::new()).as_deref(),
        Some("Codertocat/Hello-World")
    );
    let org = r#"{"organization":{"login":"octo-org"}}"#;
    assert_eq!(
        GitHub::tenant_hint(&delivery("team", org), &Settings::new()).as_deref(),
        Some("octo-org")
    );
    for garbage in ["", "not json", "[]", r#"{"repository":{}}"#] {
        assert_eq!(
            GitHub::tenant_hint(&delivery("push", garbage), &Settings::new()),
            None,
            "{garbage:?}"
        );
    }
}

#[test]
fn ping_is_answered_and_not_stored() {
    let _host = TestHost::new();
    let body = r#"{"zen":"Design for failure.","hook_id":292430182,"hook":{"type":"Repository"}}"#;
    for req in [
        delivery("ping", body),
        // Whatever the body: the handshake is about the endpoint.
        delivery("ping", ""),
    ] {
        match GitHub::map(&req, &Settings::new()) {
            Ok(MapOutcome::Respond(h)) => {
                assert_eq!(h.status, 200);
                assert_eq!(h.content_type, "application/json");
                assert!(h.headers.is_empty());
                let json: Value = serde_json::from_slice(&h.body).expect("JSON");
                assert_eq!(json, serde_json::json!({"ok": true}));
            }
            other => panic!("expected a handshake, got {other:?}"),
        }
    }
}

#[test]
fn headers_the_mapping_needs() {
    let host = TestHost::new();
    let body = format!(r#"{{"action":"opened",{REPO}}}"#);
    let no_event = Request::post()
        .with_header("X-GitHub-Delivery", "d-1")
        .with_body(body.as_bytes());
    assert!(matches!(map_error(&no_event), MapError::MissingField(_)));
    assert!(matches!(
        map_error(&delivery("  ", &body)),
        MapError::MissingField(_)
    ));
    // Without X-GitHub-Delivery the host falls back to the body's SHA-256.
    let no_delivery = Request::post()
        .with_header("X-GitHub-Event", "issues")
        .with_body(body.as_bytes());
    assert!(host.take_logs().is_empty());
    assert_eq!(events(&no_delivery).idempotency_key, None);
    assert!(!host.logs().is_empty(), "a warning is logged");
    // The URL topic segment plays no part.
    let with_topic = delivery("issues", &body).with_topic("something-else");
    assert_eq!(events(&with_topic).events[0].event_type, "issues.opened");
}

#[test]
fn names_that_cannot_be_subject_tokens_are_refused() {
    let _host = TestHost::new();
    for event in [
        "pull request",
        "pull_request.x",
        "push>",
        "*",
        "Push",
        "pull/request",
    ] {
        assert!(
            matches!(
                map_error(&delivery(event, "{}")),
                MapError::UnsupportedTopic(_)
            ),
            "{event:?}"
        );
    }
    for action in ["", "re opened", "a.b", ">", "Opened"] {
        let body = format!(r#"{{"action":"{action}"}}"#);
        assert!(
            matches!(
                map_error(&delivery("issues", &body)),
                MapError::UnsupportedTopic(_)
            ),
            "{action:?}"
        );
    }
}

#[test]
fn malformed_payloads() {
    let _host = TestHost::new();
    let malformed: [&[u8]; 9] = [
        b"",
        b"not json",
        b"[1,2]",
        b"\"push\"",
        br#"{"action":"opened""#,
        br#"{"action":"opened"} trailing"#,
        br#"{"action":7}"#,
        br#"{"action":["opened"]}"#,
        b"{\"action\":\"opened\",\"z\":\"\xff\"}",
    ];
    for body in malformed {
        let req = Request::post()
            .with_header("X-GitHub-Event", "issues")
            .with_body(body);
        assert!(
            matches!(map_error(&req), MapError::MalformedPayload(_)),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
}

/// A body encoded the way GitHub encodes `application/x-www-form-urlencoded` deliveries.
fn form_encode(json: &str) -> String {
    let mut out = String::from("payload=");
    for b in json.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[test]
fn form_encoded_deliveries_carry_the_json_as_data() {
    let host = TestHost::new().secrets(["s"]);
    let json = format!(
        r#"{{"action":"opened","pull_request":{{"number":3,"title":"a + b & c = ü"}},{REPO}}}"#
    );
    let body = form_encode(&json);
    let req = Request::post()
        .with_header("X-GitHub-Event", "pull_request")
        .with_header("X-GitHub-Delivery", "d-2")
        .with_header(
            "Content-Type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )
        .with_header("X-Hub-Signature-256", signature(&host, 0, body.as_bytes()))
        .with_body(body.as_bytes());
    // The signature covers the form body as sent.
    assert!(GitHub::verify(&req, &host.handles(), &[], &Settings::new()).is_ok());
    let m = events(&req);
    assert_eq!(m.events[0].event_type, "pull_request.opened");
    assert_eq!(m.events[0].subject.as_deref(), Some("3"));
    assert_eq!(m.tenant.as_deref(), Some("Codertocat/Hello-World"));
    assert_eq!(m.events[0].data.as_deref(), Some(json.as_str()));
    assert_eq!(
        GitHub::tenant_hint(&req, &Settings::new()).as_deref(),
        Some("Codertocat/Hello-World")
    );

    let form = |body: &str| {
        Request::post()
            .with_header("X-GitHub-Event", "push")
            .with_header("Content-Type", "application/x-www-form-urlencoded")
            .with_body(body.as_bytes())
    };
    // Other fields are ignored; `+` is a space.
    let m = events(&form("other=1&payload=%7B%22ref%22%3A%22a+b%22%7D"));
    assert_eq!(m.events[0].subject.as_deref(), Some("a b"));
    assert_eq!(m.events[0].data.as_deref(), Some(r#"{"ref":"a b"}"#));
    assert!(matches!(
        map_error(&form("other=1")),
        MapError::MissingField(_)
    ));
    assert!(matches!(map_error(&form("")), MapError::MissingField(_)));
    for bad in [
        "payload=%7",
        "payload=%zz",
        "payload=%7B%7D&payload=%7B%7D",
        "payload=%FF",
        "payload=not+json",
        "payload=%5B%5D",
    ] {
        assert!(
            matches!(map_error(&form(bad)), MapError::MalformedPayload(_)),
            "{bad}"
        );
    }
    // A JSON delivery that happens to look like a form is still read as JSON.
    assert!(matches!(
        map_error(&delivery("push", "payload=%7B%7D")),
        MapError::MalformedPayload(_)
    ));
}

#[test]
fn metadata_describes_the_plugin() {
    let m = GitHub::metadata();
    assert_eq!(m.name, "github");
    assert_eq!(m.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(m.retry_window_hours, 72);
}
