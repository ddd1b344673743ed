//! Conversions from the WIT types of the generated bindings to the gateway's own
//! ([`types`](super::types)): the one place where the two meet, so the plain types never
//! depend on generated code. The types every contract version shares have the same shape
//! in each, so one macro writes their conversions into each version's module.

/// Writes `metadata_from_wit`, `verify_error_from_wit`, `map_error_from_wit` and
/// `mapping_from_wit` for the `wit` module in scope.
macro_rules! common_conversions {
    () => {
        pub(crate) fn metadata_from_wit(m: wit::Metadata) -> super::types::Metadata {
            super::types::Metadata {
                name: m.name,
                version: m.version,
                description: m.description,
                retry_window_hours: m.retry_window_hours,
            }
        }

        pub(crate) fn verify_error_from_wit(e: wit::VerifyError) -> super::types::VerifyError {
            use super::types::VerifyError;
            match e {
                wit::VerifyError::MissingSignature(s) => VerifyError::MissingSignature(s),
                wit::VerifyError::MalformedSignature(s) => VerifyError::MalformedSignature(s),
                wit::VerifyError::Mismatch(s) => VerifyError::Mismatch(s),
                wit::VerifyError::Expired(s) => VerifyError::Expired(s),
                wit::VerifyError::Rejected(s) => VerifyError::Rejected(s),
            }
        }

        pub(crate) fn map_error_from_wit(e: wit::MapError) -> super::types::MapError {
            use super::types::MapError;
            match e {
                wit::MapError::UnsupportedTopic(s) => MapError::UnsupportedTopic(s),
                wit::MapError::MalformedPayload(s) => MapError::MalformedPayload(s),
                wit::MapError::MissingField(s) => MapError::MissingField(s),
                wit::MapError::Other(s) => MapError::Other(s),
            }
        }

        /// The plain form of a plugin's `map` result, not yet checked.
        pub(crate) fn map_outcome_from_wit(o: wit::MapOutcome) -> super::types::MapOutcome {
            use super::types::{DomainEvent, MapOutcome, Mapping, Timestamp};
            match o {
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
                wit::MapOutcome::Respond(h) => MapOutcome::Respond(handshake_from_wit(h)),
            }
        }
    };
}

pub(crate) use common_conversions;
