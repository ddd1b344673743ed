//! A test plugin that implements the whole `source-plugin` world and misbehaves on demand,
//! so the host's limits (deadline, memory cap, traps, bad answers) and its per-webhook
//! isolation can be tested against a real component.
//!
//! Settings: `hint_mode` = `trap` makes `tenant-hint` panic; `verify_mode` and `map_mode` (falling back to `mode`, then `ok`) pick the
//! behaviour of each call:
//! - `ok`: verify checks the hex HMAC-SHA256 in header `x-sig` with `hmac-verify`; map
//!   returns one `chaos.ok` event.
//! - `loop`: never returns. `alloc`: allocates without bound. `trap`: panics.
//! - `bad-handle`: verify asks for an HMAC under a handle that does not exist.
//! - `bad-secret`: verify claims a secret handle that was never handed out.
//! - `sleep` (verify): sleeps for 30 s through WASI, which the host must refuse.
//! - `wall-clock` (map): returns std's `SystemTime::now()` seconds as the event subject.
//! - `leak` (map): keeps the body in a `static` and returns the previous one, which must
//!   always be empty when every webhook gets a fresh instance.
//! - `bad-event` (map): returns an event type the host must refuse.
//! - `respond` (map): asks for a handshake response. `error` (map): a plugin map error.
//! - `flood` (map): returns `events` (setting, default 1000) events without data of their
//!   own, each carrying the whole body. `dirty-error` (map): an error text with a newline,
//!   a NUL and 5,000 more characters.

// The generated export glue passes records as flat arguments.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({
    // The sandbox tests need no 0.2 feature: this plugin stays on 0.1.0, which also keeps
    // the host's 0.1 path under test with a plugin that misbehaves.
    path: "../../../wit/v0.1",
    world: "source-plugin",
});

use hookgate::plugin::host::{self, HashAlgorithm, LogLevel};
use hookgate::plugin::types::{DomainEvent, Handshake, Mapping, Timestamp};
use std::sync::Mutex;

/// What the previous `map` on this instance saw; a fresh instance starts empty.
static PREVIOUS_BODY: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Chaos;

fn mode<'a>(settings: &'a Settings, key: &str) -> &'a str {
    let find = |k: &str| {
        settings
            .iter()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.as_str())
    };
    find(key).or_else(|| find("mode")).unwrap_or("ok")
}

fn header<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
    request
        .headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn spin_forever() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

fn hog_memory() -> ! {
    let mut kept: Vec<Vec<u8>> = Vec::new();
    loop {
        // Touch every chunk so the pages are really used.
        kept.push(vec![1u8; 1 << 20]);
        std::hint::black_box(&kept);
    }
}

impl Guest for Chaos {
    fn metadata() -> Metadata {
        Metadata {
            name: "chaos".to_string(),
            version: "0.1.0".to_string(),
            description: "Test plugin that misbehaves on demand".to_string(),
            retry_window_hours: 1,
        }
    }

    fn tenant_hint(request: Request, settings: Settings) -> Option<String> {
        if settings
            .iter()
            .any(|(k, v)| k == "hint_mode" && v == "trap")
        {
            panic!("chaos: trap requested in tenant-hint");
        }
        header(&request, "x-tenant").map(str::to_string)
    }

    fn verify(
        request: Request,
        secrets: Vec<SecretHandle>,
        settings: Settings,
    ) -> Result<Verified, VerifyError> {
        match mode(&settings, "verify_mode") {
            "loop" => spin_forever(),
            "alloc" => hog_memory(),
            "trap" => panic!("chaos: trap requested in verify"),
            "bad-handle" => match host::hmac(u32::MAX, HashAlgorithm::Sha256, &request.body) {
                None => Err(VerifyError::Rejected("hmac: unknown handle".to_string())),
                Some(_) => Ok(Verified {
                    secret: Some(u32::MAX),
                }),
            },
            "bad-secret" => Ok(Verified {
                secret: Some(u32::MAX - 1),
            }),
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_secs(30));
                Err(VerifyError::Rejected("slept".to_string()))
            }
            _ => {
                let Some(sig) = header(&request, "x-sig") else {
                    return Err(VerifyError::MissingSignature("x-sig".to_string()));
                };
                let Some(sig) = host::hex_decode(sig) else {
                    return Err(VerifyError::MalformedSignature(
                        "x-sig is not hex".to_string(),
                    ));
                };
                match host::hmac_verify(&secrets, HashAlgorithm::Sha256, &request.body, &[sig]) {
                    Some(handle) => Ok(Verified {
                        secret: Some(handle),
                    }),
                    None => Err(VerifyError::Mismatch("no secret matches x-sig".to_string())),
                }
            }
        }
    }

    fn map(request: Request, settings: Settings) -> Result<MapOutcome, MapError> {
        match mode(&settings, "map_mode") {
            "loop" => spin_forever(),
            "alloc" => hog_memory(),
            "trap" => panic!("chaos: trap requested in map"),
            "error" => Err(MapError::UnsupportedTopic(
                "chaos: error requested".to_string(),
            )),
            "respond" => Ok(MapOutcome::Respond(Handshake {
                status: 200,
                content_type: "text/plain".to_string(),
                body: b"challenge".to_vec(),
            })),
            "leak" => {
                let mut previous = PREVIOUS_BODY.lock().unwrap_or_else(|e| e.into_inner());
                let seen = String::from_utf8_lossy(&previous).into_owned();
                *previous = request.body.clone();
                Ok(MapOutcome::Events(Mapping {
                    idempotency_key: None,
                    tenant: None,
                    topic: "leak".to_string(),
                    occurred_at: None,
                    events: vec![DomainEvent {
                        event_type: "chaos.leak".to_string(),
                        subject: Some(seen),
                        data: None,
                    }],
                }))
            }
            "wall-clock" => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                Ok(MapOutcome::Events(Mapping {
                    idempotency_key: None,
                    tenant: None,
                    topic: "clock".to_string(),
                    occurred_at: None,
                    events: vec![DomainEvent {
                        event_type: "chaos.clock".to_string(),
                        subject: Some(now.to_string()),
                        data: None,
                    }],
                }))
            }
            "flood" => {
                let count = settings
                    .iter()
                    .find(|(k, _)| k == "events")
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(1000);
                Ok(MapOutcome::Events(Mapping {
                    idempotency_key: None,
                    tenant: None,
                    topic: "flood".to_string(),
                    occurred_at: None,
                    // No data of their own: each event carries the whole body.
                    events: (0..count)
                        .map(|i| DomainEvent {
                            event_type: "chaos.flood".to_string(),
                            subject: Some(i.to_string()),
                            data: None,
                        })
                        .collect(),
                }))
            }
            "dirty-error" => Err(MapError::Other(format!(
                "line one\nline\0two {}",
                "x".repeat(5000)
            ))),
            "bad-event" => Ok(MapOutcome::Events(Mapping {
                idempotency_key: None,
                tenant: None,
                topic: "bad".to_string(),
                occurred_at: None,
                events: vec![DomainEvent {
                    event_type: "has space.>".to_string(),
                    subject: None,
                    data: None,
                }],
            })),
            _ => {
                host::log(LogLevel::Info, "chaos: mapping");
                let body_hex = host::hex_encode(&host::sha256(&request.body));
                Ok(MapOutcome::Events(Mapping {
                    idempotency_key: header(&request, "x-id").map(str::to_string),
                    tenant: header(&request, "x-tenant").map(str::to_string),
                    topic: request.topic.clone().unwrap_or_else(|| "none".to_string()),
                    occurred_at: Some(Timestamp::UnixSeconds(host::now_unix_seconds())),
                    events: vec![DomainEvent {
                        event_type: "chaos.ok".to_string(),
                        subject: Some(body_hex),
                        data: Some(format!("{{\"len\":{}}}", request.body.len())),
                    }],
                }))
            }
        }
    }
}

export!(Chaos);
