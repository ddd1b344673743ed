//! Publishing events to the bus: the sink trait with its backends (a JSON-lines file for
//! the embedded mode, NATS JetStream for production), and the CloudEvents envelope.

use async_trait::async_trait;
use bytes::Bytes;

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

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The bus cannot be reached or did not acknowledge in time: retry later.
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    /// The bus refused this event (no stream for the subject, too large...).
    #[error("bus rejected the event: {0}")]
    Rejected(String),
    #[error("invalid bus url: {0}")]
    BadUrl(String),
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
