//! Publishing events to the bus: the sink trait with its backends (a JSON-lines file for
//! the embedded mode, NATS JetStream for production), and the CloudEvents envelope.

use async_trait::async_trait;
use bytes::Bytes;

pub mod breaker;
pub mod envelope;
pub mod file;
pub mod nats;
pub mod relay;

/// One event to publish: the outbox row's subject, id and encoded envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Also the `Nats-Msg-Id`, so the bus drops re-publishes.
    pub id: String,
    pub subject: String,
    pub envelope: Bytes,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum PublishError {
    /// The bus cannot be reached or did not acknowledge in time: retry later.
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    /// The bus refused this event for good: resending it cannot succeed (larger than the
    /// server takes, no stream bound to its subject, an invalid subject). What a bus
    /// refuses for a while (a stream full, a server short of resources) is `Unavailable`.
    #[error("bus rejected the event: {0}")]
    Rejected(String),
    #[error("invalid bus url: {0}")]
    BadUrl(String),
}

impl PublishError {
    /// Whether retrying the same event is pointless: the relay dead-letters it at once.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Rejected(_))
    }
}

#[async_trait]
pub trait EventSink: Send + Sync + 'static {
    /// Publishes every event and waits until the bus has acknowledged each (JetStream
    /// PubAck; file appended and flushed). Returns one result per event, in order.
    async fn publish_batch(&self, events: &[Outgoing]) -> Vec<Result<(), PublishError>>;

    /// A cheap reachability check for health.
    async fn ping(&self) -> Result<(), PublishError>;

    /// Short name for health output (`file`, `nats`).
    fn kind(&self) -> &'static str;

    /// The largest message the bus takes, in bytes, when it says (NATS: the connected
    /// server's `max_payload`); `None` when it sets no limit or is not connected.
    fn max_message_bytes(&self) -> Option<u64> {
        None
    }
}

/// Envelope attributes around an event's data; a body that is not JSON also grows by a
/// third as base64. Room kept on top of the body when comparing with the bus's limit.
const ENVELOPE_ROOM: u64 = 4096;

/// The warning to log when the gateway accepts webhooks (`max_body_bytes`) whose events
/// the bus would refuse (`bus_max` bytes): they would all be dead-lettered.
pub fn payload_limit_warning(max_body_bytes: u64, bus_max: u64) -> Option<String> {
    (max_body_bytes.saturating_add(ENVELOPE_ROOM) > bus_max).then(|| {
        format!(
            "max_payload_size_mb lets in bodies of up to {max_body_bytes} bytes, but the NATS \
             server's max_payload is {bus_max} bytes: the event of a webhook larger than about \
             {} bytes will be refused by the bus and dead-lettered. Raise max_payload on the \
             server (up to 64 MB) or lower max_payload_size_mb",
            bus_max.saturating_sub(ENVELOPE_ROOM)
        )
    })
}

/// Settings the NATS backend needs beyond its URL.
#[derive(Debug, Clone)]
pub struct BusOptions {
    /// JetStream stream name (`WEBHOOKS`).
    pub stream: String,
    /// Subject prefix (`webhooks`); the stream covers `<prefix>.>`.
    pub subject_prefix: String,
    /// Create (or update) the stream at start.
    pub create_stream: bool,
    /// The stream's duplicate window for `Nats-Msg-Id`.
    pub duplicate_window: std::time::Duration,
}

/// Opens the backend the URL names: `file://path` (relative to the working directory,
/// parent directory created) or `nats://host:port`.
pub async fn connect(
    url: &str,
    options: &BusOptions,
) -> Result<std::sync::Arc<dyn EventSink>, PublishError> {
    if let Some(path) = url.strip_prefix("file://") {
        Ok(std::sync::Arc::new(
            file::FileSink::open(std::path::Path::new(path)).await?,
        ))
    } else if url.starts_with("nats://") {
        Ok(std::sync::Arc::new(
            nats::NatsSink::connect(url, options).await?,
        ))
    } else {
        Err(PublishError::BadUrl(
            "expected file://path or nats://host:port".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::payload_limit_warning;

    #[test]
    fn warns_only_when_a_body_could_outgrow_the_bus() {
        const MIB: u64 = 1_048_576;
        let warning = payload_limit_warning(10 * MIB, MIB).expect("10 MiB over 1 MiB");
        assert!(
            warning.contains("10485760") && warning.contains("1048576"),
            "{warning}"
        );
        assert!(payload_limit_warning(MIB, 8 * MIB).is_none());
        assert!(
            payload_limit_warning(MIB, MIB).is_some(),
            "the envelope around a body of exactly max_payload does not fit"
        );
    }
}
