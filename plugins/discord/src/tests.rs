//! Native tests of the Discord plugin, with an Ed25519 key made here (Discord's docs give
//! no test vector): the signature checks Discord's endpoint validation exercises, the
//! timestamp tolerance, the two PINGs and the mapping of interactions and webhook events.

use ed25519_dalek::{Signer as _, SigningKey};
use hookgate_plugin_sdk::{
    Handshake, MapError, MapOutcome, Mapping, Request, Settings, SourcePlugin, TestHost, Timestamp,
    VerifyError, hex_encode,
};

use crate::Discord;

const NOW: i64 = 1_764_000_000;

/// The application's key pair; the tests configure its public key as hex, the way the
/// Developer Portal shows it.
fn app_key() -> SigningKey {
    SigningKey::from_bytes(&[0x42; 32])
}

fn public_hex(key: &SigningKey) -> String {
    hex_encode(key.verifying_key().as_bytes())
}

fn host_with(keys: &[&SigningKey]) -> TestHost {
    TestHost::new()
        .keys(keys.iter().map(|k| public_hex(k)))
        .expect("hex Ed25519 keys parse")
        .now(NOW)
}

/// A delivery as Discord signs it: Ed25519 of `timestamp + body`, hex.
fn signed(key: &SigningKey, timestamp: &str, body: &str) -> Request {
    let signature = key.sign(format!("{timestamp}{body}").as_bytes());
    Request::post()
        .with_header("X-Signature-Ed25519", hex_encode(&signature.to_bytes()))
        .with_header("X-Signature-Timestamp", timestamp)
        .with_body(body.as_bytes())
}

fn verify(host: &TestHost, req: &Request) -> Result<Option<usize>, VerifyError> {
    Discord::verify(req, &host.handles(), &host.key_handles(), &Settings::new())
        .map(|v| v.key.and_then(|k| host.key_index(k)))
}

fn map(body: &str) -> Result<MapOutcome, MapError> {
    Discord::map(
        &Request::post().with_body(body.as_bytes()),
        &Settings::new(),
    )
}

fn events(body: &str) -> Mapping {
    match map(body) {
        Ok(MapOutcome::Events(m)) => m,
        other => panic!("expected events, got {other:?}"),
    }
}

fn handshake(body: &str) -> Handshake {
    match map(body) {
        Ok(MapOutcome::Respond(h)) => h,
        other => panic!("expected a handshake, got {other:?}"),
    }
}

const PING: &str = r#"{"app_permissions":"562949953601536","application_id":"1234560123453231555","entitlements":[],"id":"1300000000000000000","token":"aW50ZXJhY3Rpb246MTMwMDAw","type":1,"user":{"id":"111178765189277770","username":"someone"},"version":1}"#;

#[test]
fn a_signed_ping_is_answered_with_pong() {
    let key = app_key();
    let host = host_with(&[&key]);
    let req = signed(&key, &NOW.to_string(), PING);
    assert_eq!(verify(&host, &req), Ok(Some(0)));
    let pong = handshake(PING);
    assert_eq!(pong.status, 200);
    assert_eq!(pong.content_type, "application/json");
    assert_eq!(pong.body, br#"{"type":1}"#);
    assert!(pong.headers.is_empty());
}

/// Discord sends invalid signatures on purpose and removes endpoints that accept them.
#[test]
fn invalid_signatures_are_refused() {
    let key = app_key();
    let host = host_with(&[&key]);
    let t = NOW.to_string();
    let good = signed(&key, &t, PING);
    let good_signature = good
        .header("x-signature-ed25519")
        .expect("signed")
        .to_owned();
    let mismatch = |req: Request| {
        let result = verify(&host, &req);
        assert!(
            matches!(result, Err(VerifyError::Mismatch(_))),
            "{req:?}: {result:?}"
        );
    };

    // Another key, another body, another timestamp, one bit flipped.
    mismatch(signed(&SigningKey::from_bytes(&[0x43; 32]), &t, PING));
    mismatch(
        Request::post()
            .with_header("X-Signature-Ed25519", good_signature.as_str())
            .with_header("X-Signature-Timestamp", t.as_str())
            .with_body(PING.replace("someone", "someone else").into_bytes()),
    );
    mismatch(
        Request::post()
            .with_header("X-Signature-Ed25519", good_signature.as_str())
            .with_header("X-Signature-Timestamp", (NOW + 1).to_string())
            .with_body(PING.as_bytes()),
    );
    let mut flipped = hookgate_plugin_sdk::hex_decode(&good_signature).expect("hex");
    flipped[10] ^= 0x01;
    mismatch(
        Request::post()
            .with_header("X-Signature-Ed25519", hex_encode(&flipped))
            .with_header("X-Signature-Timestamp", t.as_str())
            .with_body(PING.as_bytes()),
    );
    // The timestamp goes before the body, with nothing between them.
    let swapped = key.sign(format!("{PING}{t}").as_bytes());
    mismatch(
        Request::post()
            .with_header("X-Signature-Ed25519", hex_encode(&swapped.to_bytes()))
            .with_header("X-Signature-Timestamp", t.as_str())
            .with_body(PING.as_bytes()),
    );
    // No key configured: nothing can match.
    let no_keys = TestHost::new().now(NOW);
    assert!(matches!(
        verify(&no_keys, &good),
        Err(VerifyError::Mismatch(_))
    ));
}

#[test]
fn missing_and_malformed_headers_are_refused_without_panicking() {
    let key = app_key();
    let host = host_with(&[&key]);
    let t = NOW.to_string();
    let good = signed(&key, &t, PING);
    let good_signature = good
        .header("x-signature-ed25519")
        .expect("signed")
        .to_owned();

    for req in [
        Request::post().with_body(PING.as_bytes()),
        Request::post()
            .with_header("X-Signature-Ed25519", "  ")
            .with_header("X-Signature-Timestamp", t.as_str())
            .with_body(PING.as_bytes()),
    ] {
        assert!(matches!(
            verify(&host, &req),
            Err(VerifyError::MissingSignature(_))
        ));
    }
    let malformed = [
        "zz".repeat(64),
        good_signature[..126].to_owned(),
        format!("{good_signature}00"),
        hookgate_plugin_sdk::base64_encode(&[0; 64]),
        "\u{0}\u{fffd}".to_owned(),
    ];
    for signature in &malformed {
        let req = Request::post()
            .with_header("X-Signature-Ed25519", signature.as_str())
            .with_header("X-Signature-Timestamp", t.as_str())
            .with_body(PING.as_bytes());
        assert!(
            matches!(verify(&host, &req), Err(VerifyError::MalformedSignature(_))),
            "{signature:?}"
        );
    }
    let no_timestamp = Request::post()
        .with_header("X-Signature-Ed25519", good_signature.as_str())
        .with_body(PING.as_bytes());
    assert!(matches!(
        verify(&host, &no_timestamp),
        Err(VerifyError::MalformedSignature(_))
    ));
    // Upper-case hex is hex too.
    let upper = Request::post()
        .with_header("X-Signature-Ed25519", good_signature.to_ascii_uppercase())
        .with_header("X-Signature-Timestamp", t.as_str())
        .with_body(PING.as_bytes());
    assert_eq!(verify(&host, &upper), Ok(Some(0)));
}

#[test]
fn the_matching_key_is_reported() {
    let old = SigningKey::from_bytes(&[0x01; 32]);
    let key = app_key();
    let host = host_with(&[&old, &key]);
    assert_eq!(
        verify(&host, &signed(&key, &NOW.to_string(), PING)),
        Ok(Some(1))
    );
    assert_eq!(
        verify(&host, &signed(&old, &NOW.to_string(), PING)),
        Ok(Some(0))
    );
}

#[test]
fn tolerance_applies_in_both_directions() {
    let key = app_key();
    let host = host_with(&[&key]);
    let at = |offset: i64| verify(&host, &signed(&key, &(NOW + offset).to_string(), PING));
    assert_eq!(at(0), Ok(Some(0)));
    assert_eq!(at(-900), Ok(Some(0)));
    assert_eq!(at(900), Ok(Some(0)));
    assert!(matches!(at(-901), Err(VerifyError::Expired(_))));
    assert!(
        matches!(at(901), Err(VerifyError::Expired(_))),
        "future timestamps too"
    );
    assert!(matches!(at(-86_400), Err(VerifyError::Expired(_))));
}

#[test]
fn tolerance_setting_is_honoured_and_must_be_a_number() {
    let key = app_key();
    let host = host_with(&[&key]);
    let req = signed(&key, &(NOW - 1_000).to_string(), PING);
    let with = |value: &str| {
        Discord::verify(
            &req,
            &[],
            &host.key_handles(),
            &Settings::new().with("tolerance_seconds", value),
        )
    };
    assert!(with("1200").is_ok());
    assert!(matches!(with("300"), Err(VerifyError::Expired(_))));
    assert!(matches!(verify(&host, &req), Err(VerifyError::Expired(_))));
    for bad in ["", "-1", "15m", "1.5"] {
        assert!(
            matches!(with(bad), Err(VerifyError::Rejected(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn an_authentic_timestamp_that_is_not_unix_seconds_is_refused() {
    let key = app_key();
    let host = host_with(&[&key]);
    for t in [
        "2025-11-24T15:00:00Z",
        "1764000000.5",
        "-1764000000",
        "",
        "99999999999999999999",
    ] {
        assert!(
            matches!(
                verify(&host, &signed(&key, t, PING)),
                Err(VerifyError::Rejected(_))
            ),
            "{t:?}"
        );
    }
}

#[test]
fn application_commands_become_events() {
    let _host = TestHost::new();
    // Snowflake 175928847299117063 is Discord's own example: made at 1462015105796 ms
    // (https://discord.com/developers/docs/reference#snowflakes).
    let body = r#"{"type":2,"id":"175928847299117063","application_id":"1234560123453231555",
        "token":"dG9rZW4","version":1,"guild_id":"290926798626357999","channel_id":"645027906669510667",
        "data":{"id":"771825006014889984","name":"blep","type":1,
            "options":[{"type":3,"name":"animal","value":"animal_dog"}]},
        "member":{"user":{"id":"53908232506183680","username":"Mason"},"roles":[]},
        "locale":"en-US","app_permissions":"442368"}"#;
    let m = events(body);
    assert_eq!(m.idempotency_key.as_deref(), Some("175928847299117063"));
    assert_eq!(m.tenant.as_deref(), Some("290926798626357999"));
    assert_eq!(m.topic, "APPLICATION_COMMAND");
    assert_eq!(m.occurred_at, Some(Timestamp::UnixSeconds(1_462_015_105)));
    assert_eq!(m.events.len(), 1);
    assert_eq!(m.events[0].event_type, "interaction.application_command");
    assert_eq!(m.events[0].subject.as_deref(), Some("blep"));
    assert_eq!(m.events[0].data, None);

    // Autocomplete names the command as well.
    let autocomplete = body.replace(r#""type":2,"#, r#""type":4,"#);
    let m = events(&autocomplete);
    assert_eq!(m.topic, "APPLICATION_COMMAND_AUTOCOMPLETE");
    assert_eq!(
        m.events[0].event_type,
        "interaction.application_command_autocomplete"
    );
    assert_eq!(m.events[0].subject.as_deref(), Some("blep"));
}

#[test]
fn components_and_modals_are_named_by_custom_id() {
    let _host = TestHost::new();
    let component = r#"{"type":3,"id":"1300000000000000001","token":"t","version":1,
        "guild_id":"290926798626357999",
        "data":{"custom_id":"click_one","component_type":2},"message":{"id":"1"}}"#;
    let m = events(component);
    assert_eq!(m.topic, "MESSAGE_COMPONENT");
    assert_eq!(m.events[0].event_type, "interaction.message_component");
    assert_eq!(m.events[0].subject.as_deref(), Some("click_one"));

    // From a DM: no guild, so no tenant.
    let modal = r#"{"type":5,"id":"1300000000000000002","token":"t","version":1,
        "user":{"id":"53908232506183680"},
        "data":{"custom_id":"feedback_form","components":[]}}"#;
    let m = events(modal);
    assert_eq!(m.topic, "MODAL_SUBMIT");
    assert_eq!(m.events[0].event_type, "interaction.modal_submit");
    assert_eq!(m.events[0].subject.as_deref(), Some("feedback_form"));
    assert_eq!(m.tenant, None);
    assert_eq!(m.idempotency_key.as_deref(), Some("1300000000000000002"));
}

#[test]
fn interactions_without_a_name_fall_back_to_their_id() {
    let _host = TestHost::new();
    for body in [
        r#"{"type":2,"id":"1300000000000000003"}"#,
        r#"{"type":2,"id":"1300000000000000003","data":null}"#,
        r#"{"type":2,"id":"1300000000000000003","data":["x"]}"#,
        r#"{"type":3,"id":"1300000000000000003","data":{"name":"not_a_custom_id"}}"#,
        r#"{"type":3,"id":"1300000000000000003","data":{"custom_id":"a\nb"}}"#,
    ] {
        let m = events(body);
        assert_eq!(
            m.events[0].subject.as_deref(),
            Some("1300000000000000003"),
            "{body}"
        );
    }
    // A type this plugin does not know yet is still published.
    let m = events(r#"{"type":9,"id":"1300000000000000004","data":{"name":"x"}}"#);
    assert_eq!(m.topic, "9");
    assert_eq!(m.events[0].event_type, "interaction.type_9");
    assert_eq!(m.events[0].subject.as_deref(), Some("1300000000000000004"));
    // An id that is not a snowflake: no occurrence time from it.
    let m = events(r#"{"type":2,"id":"abc"}"#);
    assert_eq!(m.occurred_at, None);
}

#[test]
fn a_webhook_ping_is_answered_with_204() {
    let _host = TestHost::new();
    for body in [
        r#"{"version":1,"application_id":"1234560123453231555","type":0}"#,
        r#"{"version":1,"application_id":"1234560123453231555","type":0,"event":{}}"#,
    ] {
        let h = handshake(body);
        assert_eq!(h.status, 204, "{body}");
        assert!(h.body.is_empty(), "{body}");
        assert_eq!(h.content_type, "application/json");
    }
}

#[test]
fn webhook_events_become_events() {
    let _host = TestHost::new();
    // Discord's APPLICATION_AUTHORIZED example, with a guild and a user filled in.
    let authorized = r#"{
      "version": 1,
      "application_id": "1234560123453231555",
      "type": 1,
      "event": {
        "type": "APPLICATION_AUTHORIZED",
        "timestamp": "2024-10-18T14:42:53.064834",
        "data": {
          "integration_type": 0,
          "scopes": ["applications.commands"],
          "user": {"id": "111178765189277770", "username": "someone"},
          "guild": {"id": "290926798626357999", "name": "a guild"}
        }
      }
    }"#;
    let m = events(authorized);
    assert_eq!(m.idempotency_key, None, "the gateway hashes the body");
    assert_eq!(m.topic, "APPLICATION_AUTHORIZED");
    assert_eq!(m.tenant.as_deref(), Some("290926798626357999"));
    assert_eq!(
        m.occurred_at,
        Some(Timestamp::Rfc3339("2024-10-18T14:42:53.064834Z".into()))
    );
    assert_eq!(m.events.len(), 1);
    assert_eq!(m.events[0].event_type, "application_authorized");
    assert_eq!(m.events[0].subject.as_deref(), Some("111178765189277770"));
    assert_eq!(m.events[0].data, None);

    // Discord's ENTITLEMENT_CREATE example.
    let entitlement = r#"{"version":1,"application_id":"1234560123453231555","type":1,
      "event":{"type":"ENTITLEMENT_CREATE","timestamp":"2024-10-18T18:41:21.109604",
        "data":{"application_id":"1234560123453231555","consumed":false,"deleted":false,
          "gift_code_flags":0,"id":"1234505980407808808","promotion_id":null,
          "sku_id":"123489045643835123","type":4,"user_id":"111178765189277770"}}}"#;
    let m = events(entitlement);
    assert_eq!(m.events[0].event_type, "entitlement_create");
    assert_eq!(m.events[0].subject.as_deref(), Some("1234505980407808808"));
    assert_eq!(m.tenant, None);

    // A timestamp with an offset is kept as it is; one that is no date-time is dropped.
    let with_offset = entitlement.replace("18:41:21.109604", "18:41:21.109604+00:00");
    assert_eq!(
        events(&with_offset).occurred_at,
        Some(Timestamp::Rfc3339(
            "2024-10-18T18:41:21.109604+00:00".into()
        ))
    );
    for bad in ["yesterday", "2024-10-18", "2024-13-18T18:41:21"] {
        let body = entitlement.replace("2024-10-18T18:41:21.109604", bad);
        assert_eq!(events(&body).occurred_at, None, "{bad}");
    }
    // Events with a guild_id and without data.
    let guild_id =
        r#"{"type":1,"event":{"type":"LOBBY_MESSAGE_CREATE","data":{"id":"9","guild_id":"77"}}}"#;
    let m = events(guild_id);
    assert_eq!(
        (m.tenant.as_deref(), m.events[0].subject.as_deref()),
        (Some("77"), Some("9"))
    );
    let bare = events(r#"{"type":1,"event":{"type":"QUEST_USER_ENROLLMENT"}}"#);
    assert_eq!(bare.events[0].event_type, "quest_user_enrollment");
    assert_eq!(
        (
            bare.tenant,
            bare.events[0].subject.clone(),
            bare.occurred_at
        ),
        (None, None, None)
    );
}

#[test]
fn map_refuses_what_discord_does_not_send() {
    let _host = TestHost::new();
    for body in [
        r#"{"version":1}"#,
        r#"{"type":2}"#,
        r#"{"type":2,"id":null}"#,
        r#"{"type":2,"id":""}"#,
        r#"{"event":{"type":"X"}}"#,
        r#"{"type":1,"event":{}}"#,
        r#"{"type":1,"event":{"type":""}}"#,
    ] {
        assert!(
            matches!(map(body), Err(MapError::MissingField(_))),
            "{body}: {:?}",
            map(body)
        );
    }
    let malformed: [&[u8]; 9] = [
        b"",
        b"not json",
        b"[1]",
        br#"{"type":"1"}"#,
        br#"{"type":1.5}"#,
        br#"{"type":1,"event":["APPLICATION_AUTHORIZED"]}"#,
        br#"{"type":1,"event":{"type":7}}"#,
        br#"{"type":1} trailing"#,
        b"{\"type\":1,\"z\":\"\xff\"}",
    ];
    for body in malformed {
        let result = Discord::map(&Request::post().with_body(body), &Settings::new());
        assert!(
            matches!(result, Err(MapError::MalformedPayload(_))),
            "{}: {result:?}",
            String::from_utf8_lossy(body)
        );
    }
    for body in [
        r#"{"type":2,"event":{"type":"APPLICATION_AUTHORIZED"}}"#,
        r#"{"type":1,"event":{"type":"APPLICATION.AUTHORIZED"}}"#,
        r#"{"type":1,"event":{"type":"APPLICATION AUTHORIZED"}}"#,
        r#"{"type":1,"event":{"type":"A>"}}"#,
    ] {
        assert!(
            matches!(map(body), Err(MapError::UnsupportedTopic(_))),
            "{body}"
        );
    }
}

#[test]
fn metadata_describes_the_plugin() {
    let m = Discord::metadata();
    assert_eq!(m.name, "discord");
    assert_eq!(m.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(m.retry_window_hours, 1);
    assert!(
        crate::DEFAULT_TOLERANCE_SECONDS < u64::from(m.retry_window_hours) * 3600,
        "a replay must be a duplicate or expired"
    );
    let req = Request::post().with_body(&br#"{"type":2,"guild_id":"1"}"#[..]);
    assert_eq!(Discord::tenant_hint(&req, &Settings::new()), None);
}
