//! Converts between the generated WIT types and the crate's plain types, and runs a
//! [`SourcePlugin`] behind the generated `Guest` export. Used by
//! [`export_plugin!`](crate::export_plugin); not part of the public API.

use std::cell::RefCell;
use std::rc::Rc;

use crate::SourcePlugin;
use crate::bindings::hookgate::plugin::types as wit;
use crate::types::{
    DomainEvent, Handshake, MapError, MapOutcome, Mapping, Metadata, Request, Settings, Timestamp,
    Verified, VerifyError,
};

thread_local! {
    /// The webhook this instance serves. An instance serves one webhook (the host makes a
    /// fresh one for each), so what `tenant-hint` or `verify` read of the request (all
    /// the headers, say) is kept for `map` instead of crossing into the guest again.
    static CURRENT: RefCell<Option<Rc<Request>>> = const { RefCell::new(None) };
}

fn request(r: &wit::Request) -> Rc<Request> {
    CURRENT.with(|current| {
        let mut current = current.borrow_mut();
        match &*current {
            Some(request) => {
                request.rebind(r);
                Rc::clone(request)
            }
            None => {
                let request = Rc::new(Request::from_host(r));
                *current = Some(Rc::clone(&request));
                request
            }
        }
    })
}

/// Runs [`SourcePlugin::metadata`].
pub fn metadata<P: SourcePlugin>() -> wit::Metadata {
    let Metadata {
        name,
        version,
        description,
        retry_window_hours,
    } = P::metadata();
    wit::Metadata {
        name,
        version,
        description,
        retry_window_hours,
    }
}

/// Runs [`SourcePlugin::tenant_hint`].
pub fn tenant_hint<P: SourcePlugin>(
    req: &wit::Request,
    settings: Vec<(String, String)>,
) -> Option<String> {
    P::tenant_hint(&request(req), &Settings::from(settings))
}

/// Runs [`SourcePlugin::verify`].
pub fn verify<P: SourcePlugin>(
    req: &wit::Request,
    secrets: Vec<u32>,
    keys: Vec<u32>,
    settings: Vec<(String, String)>,
) -> Result<wit::Verified, wit::VerifyError> {
    match P::verify(&request(req), &secrets, &keys, &Settings::from(settings)) {
        Ok(Verified { secret, key }) => Ok(wit::Verified { secret, key }),
        Err(e) => Err(match e {
            VerifyError::MissingSignature(m) => wit::VerifyError::MissingSignature(m),
            VerifyError::MalformedSignature(m) => wit::VerifyError::MalformedSignature(m),
            VerifyError::Mismatch(m) => wit::VerifyError::Mismatch(m),
            VerifyError::Expired(m) => wit::VerifyError::Expired(m),
            VerifyError::Rejected(m) => wit::VerifyError::Rejected(m),
        }),
    }
}

/// Runs [`SourcePlugin::map`].
pub fn map<P: SourcePlugin>(
    req: &wit::Request,
    settings: Vec<(String, String)>,
) -> Result<wit::MapOutcome, wit::MapError> {
    match P::map(&request(req), &Settings::from(settings)) {
        Ok(MapOutcome::Events(m)) => Ok(wit::MapOutcome::Events(mapping(m))),
        Ok(MapOutcome::Respond(Handshake {
            status,
            content_type,
            headers,
            body,
        })) => Ok(wit::MapOutcome::Respond(wit::Handshake {
            status,
            content_type,
            headers,
            body,
        })),
        Err(e) => Err(match e {
            MapError::UnsupportedTopic(m) => wit::MapError::UnsupportedTopic(m),
            MapError::MalformedPayload(m) => wit::MapError::MalformedPayload(m),
            MapError::MissingField(m) => wit::MapError::MissingField(m),
            MapError::Other(m) => wit::MapError::Other(m),
        }),
    }
}

fn mapping(m: Mapping) -> wit::Mapping {
    wit::Mapping {
        idempotency_key: m.idempotency_key,
        tenant: m.tenant,
        topic: m.topic,
        occurred_at: m.occurred_at.map(|t| match t {
            Timestamp::UnixSeconds(s) => wit::Timestamp::UnixSeconds(s),
            Timestamp::Rfc3339(s) => wit::Timestamp::Rfc3339(s),
        }),
        events: m
            .events
            .into_iter()
            .map(
                |DomainEvent {
                     event_type,
                     subject,
                     data,
                 }| wit::DomainEvent {
                    event_type,
                    subject,
                    data,
                },
            )
            .collect(),
    }
}
