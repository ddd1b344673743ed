//! Conversions between the WIT types of the generated bindings and the gateway's own
//! ([`types`](super::types)), in both directions: the one place where the two meet, so
//! the plain types never depend on generated code.

use super::bindings::wit;
use super::types::{
    DomainEvent, Handshake, MapError, MapOutcome, Mapping, Metadata, Timestamp, VerifyError,
    WebhookRequest, validate_map_outcome,
};

pub(crate) fn request_to_wit(r: &WebhookRequest) -> wit::Request {
    wit::Request {
        method: r.method.clone(),
        topic: r.topic.clone(),
        query: r.query.clone(),
        headers: r.headers.clone(),
        body: r.body.to_vec(),
    }
}

pub(crate) fn metadata_from_wit(m: wit::Metadata) -> Metadata {
    Metadata {
        name: m.name,
        version: m.version,
        description: m.description,
        retry_window_hours: m.retry_window_hours,
    }
}

pub(crate) fn verify_error_from_wit(e: wit::VerifyError) -> VerifyError {
    match e {
        wit::VerifyError::MissingSignature(s) => VerifyError::MissingSignature(s),
        wit::VerifyError::MalformedSignature(s) => VerifyError::MalformedSignature(s),
        wit::VerifyError::Mismatch(s) => VerifyError::Mismatch(s),
        wit::VerifyError::Expired(s) => VerifyError::Expired(s),
        wit::VerifyError::Rejected(s) => VerifyError::Rejected(s),
    }
}

pub(crate) fn map_error_from_wit(e: wit::MapError) -> MapError {
    match e {
        wit::MapError::UnsupportedTopic(s) => MapError::UnsupportedTopic(s),
        wit::MapError::MalformedPayload(s) => MapError::MalformedPayload(s),
        wit::MapError::MissingField(s) => MapError::MissingField(s),
        wit::MapError::Other(s) => MapError::Other(s),
    }
}

/// Converts and checks a plugin's `map` result; the error says what is wrong with it.
pub(crate) fn map_outcome_from_wit(o: wit::MapOutcome) -> Result<MapOutcome, String> {
    let outcome = match o {
        wit::MapOutcome::Events(m) => MapOutcome::Events(Mapping {
            idempotency_key: m.idempotency_key,
            tenant: m.tenant,
            topic: m.topic,
            occurred_at: m.occurred_at.map(|t| match t {
                wit::Timestamp::UnixSeconds(s) => Timestamp::UnixSeconds(s),
                wit::Timestamp::Rfc3339(s) => Timestamp::Rfc3339(s),
            }),
            events: m
                .events
                .into_iter()
                .map(|e| DomainEvent {
                    event_type: e.event_type,
                    subject: e.subject,
                    data: e.data,
                })
                .collect(),
        }),
        wit::MapOutcome::Respond(h) => MapOutcome::Respond(Handshake {
            status: h.status,
            content_type: h.content_type,
            body: h.body,
        }),
    };
    validate_map_outcome(&outcome)?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_outcome_checks_timestamps_and_handshakes() {
        let mapping = |occurred_at| {
            wit::MapOutcome::Events(wit::Mapping {
                idempotency_key: None,
                tenant: None,
                topic: "t".into(),
                occurred_at,
                events: vec![],
            })
        };
        assert!(
            map_outcome_from_wit(mapping(Some(wit::Timestamp::Rfc3339(
                "2025-11-24T15:20:00.000Z".into()
            ))))
            .is_ok()
        );
        assert!(
            map_outcome_from_wit(mapping(Some(wit::Timestamp::Rfc3339("yesterday".into()))))
                .is_err()
        );
        assert!(
            map_outcome_from_wit(mapping(Some(wit::Timestamp::UnixSeconds(i64::MAX)))).is_err()
        );
        let respond = |status| {
            wit::MapOutcome::Respond(wit::Handshake {
                status,
                content_type: "text/plain".into(),
                body: vec![],
            })
        };
        assert!(map_outcome_from_wit(respond(200)).is_ok());
        assert!(map_outcome_from_wit(respond(302)).is_err());
    }
}
