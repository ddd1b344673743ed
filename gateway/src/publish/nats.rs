//! NATS JetStream sink: publishes each envelope with `Nats-Msg-Id` = event id and counts it
//! published only on its PubAck.
//!
//! NATS being down must not stop the gateway: the client connects and reconnects in the
//! background, publishing while disconnected fails at once with `Unavailable` (the outbox
//! keeps the events), and the stream is created on the first publish that finds NATS up
//! if it could not be at start.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, stream};
use async_trait::async_trait;
use futures::future::join_all;
use tokio::sync::watch;

use super::{BusOptions, EventSink, Outgoing, PublishError};

/// How long a publish (or a stream API call) may wait for the server.
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Publishes sent before their acks are awaited. Bounded so one huge batch cannot hold
/// every in-flight permit of the JetStream context.
const PIPELINE_CHUNK: usize = 256;
/// How long `connect` waits for a reachable server before letting start-up go on.
const INITIAL_CONNECT_WAIT: Duration = Duration::from_secs(1);

/// The `nats://` sink.
pub struct NatsSink {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    options: BusOptions,
    /// The stream exists (or we were told not to create it).
    stream_ready: AtomicBool,
    timeout: Duration,
}

impl NatsSink {
    /// Connects with the default ack timeout (5 s). Succeeds even when NATS is down.
    pub async fn connect(url: &str, options: &BusOptions) -> Result<Self, PublishError> {
        Self::connect_with_timeout(url, options, DEFAULT_ACK_TIMEOUT).await
    }

    /// Like [`NatsSink::connect`], with the time a publish may wait for its PubAck.
    ///
    /// Creates or updates the stream when NATS is up at start; a stream configuration
    /// the server refuses (for example subjects overlapping another stream) is an error
    /// here, so a misconfiguration stops start-up instead of stalling the outbox.
    pub async fn connect_with_timeout(
        url: &str,
        options: &BusOptions,
        timeout: Duration,
    ) -> Result<Self, PublishError> {
        if options.subject_prefix.is_empty()
            || options.subject_prefix.contains([' ', '*', '>'])
            || options.subject_prefix.starts_with('.')
            || options.subject_prefix.ends_with('.')
        {
            return Err(PublishError::BadUrl(format!(
                "invalid subject prefix {:?}",
                options.subject_prefix
            )));
        }
        let (connected_tx, mut connected_rx) = watch::channel(false);
        let connected_tx = Arc::new(connected_tx);
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(2))
            // Back off from 50 ms to 2 s: recover quickly after a blip, without hammering.
            .reconnect_delay_callback(|attempts| {
                let exp = u32::try_from(attempts).unwrap_or(u32::MAX).min(6);
                Duration::from_millis(50 * 2_u64.pow(exp)).min(Duration::from_secs(2))
            })
            .event_callback(move |event| {
                let connected_tx = connected_tx.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            tracing::info!("nats connected");
                            connected_tx.send_replace(true);
                        }
                        async_nats::Event::Disconnected => {
                            tracing::warn!("nats disconnected");
                            connected_tx.send_replace(false);
                        }
                        other => tracing::warn!(event = %other, "nats event"),
                    }
                }
            })
            .connect(url)
            .await
            .map_err(|e| PublishError::BadUrl(e.to_string()))?;

        let jetstream = jetstream::ContextBuilder::new()
            .timeout(timeout)
            .build(client.clone());
        let sink = Self {
            client,
            jetstream,
            options: options.clone(),
            stream_ready: AtomicBool::new(!options.create_stream),
            timeout,
        };

        // Give a reachable server the chance to be ready for the first publish, without
        // delaying start-up by more than a second when it is down.
        let up = tokio::time::timeout(INITIAL_CONNECT_WAIT, connected_rx.wait_for(|c| *c))
            .await
            .is_ok_and(|r| r.is_ok());
        if !up {
            tracing::warn!("nats unreachable at start; publishing waits for it");
        } else if options.create_stream {
            match sink.ensure_stream().await {
                Ok(()) => {}
                Err(e @ PublishError::Rejected(_)) => return Err(e),
                // NATS went away again: the first publish that finds it up retries.
                Err(e) => tracing::warn!(error = %e, "stream not created yet"),
            }
        }
        Ok(sink)
    }

    fn stream_config(&self) -> stream::Config {
        stream::Config {
            name: self.options.stream.clone(),
            subjects: vec![format!("{}.>", self.options.subject_prefix)],
            duplicate_window: self.options.duplicate_window,
            storage: stream::StorageType::File,
            ..Default::default()
        }
    }

    /// Creates or updates the stream once; later calls are free.
    async fn ensure_stream(&self) -> Result<(), PublishError> {
        if self.stream_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let config = self.stream_config();
        match self.jetstream.create_or_update_stream(config).await {
            Ok(_) => {
                // Concurrent first publishes may both get here; the call is idempotent.
                self.stream_ready.store(true, Ordering::Release);
                tracing::info!(stream = %self.options.stream, "jetstream stream ready");
                Ok(())
            }
            Err(e) => {
                use async_nats::jetstream::context::CreateStreamErrorKind as K;
                let msg = format!("cannot create stream {}: {e}", self.options.stream);
                Err(match e.kind() {
                    K::JetStream(_) | K::EmptyStreamName | K::InvalidStreamName => {
                        PublishError::Rejected(msg)
                    }
                    _ => PublishError::Unavailable(msg),
                })
            }
        }
    }

    async fn publish_chunk(&self, events: &[Outgoing]) -> Vec<Result<(), PublishError>> {
        // Send every message first, then wait for the acks together: one round trip per
        // chunk instead of one per event.
        let mut pending = Vec::with_capacity(events.len());
        for event in events {
            let message = PublishMessage::build()
                .payload(event.envelope.clone())
                .message_id(&event.id);
            let sent = tokio::time::timeout(
                self.timeout,
                self.jetstream.send_publish(event.subject.clone(), message),
            )
            .await;
            pending.push(match sent {
                Ok(Ok(ack)) => Ok(ack),
                Ok(Err(e)) => Err(classify(&e)),
                Err(_) => Err(PublishError::Unavailable("timed out sending".into())),
            });
        }
        join_all(pending.into_iter().map(|p| async move {
            match p {
                // A duplicate ack means JetStream already holds this id: that is success.
                Ok(ack) => ack.await.map(|_ack| ()).map_err(|e| classify(&e)),
                Err(e) => Err(e),
            }
        }))
        .await
    }
}

/// Connection and timeout problems are worth retrying; what JetStream itself refuses is not
/// going to change by resending the same message.
fn classify(err: &jetstream::context::PublishError) -> PublishError {
    let msg = err.to_string();
    match err.kind() {
        PublishErrorKind::TimedOut
        | PublishErrorKind::BrokenPipe
        | PublishErrorKind::MaxAckPending => PublishError::Unavailable(msg),
        PublishErrorKind::StreamNotFound
        | PublishErrorKind::WrongLastMessageId
        | PublishErrorKind::WrongLastSequence
        | PublishErrorKind::MaxPayloadExceeded => PublishError::Rejected(msg),
        // `Other` covers both an error reply from JetStream and local failures (the client
        // shut down, an unreadable reply): only the former is a refusal.
        _ => {
            let from_jetstream = std::error::Error::source(err)
                .is_some_and(|s| s.downcast_ref::<jetstream::Error>().is_some());
            if from_jetstream {
                PublishError::Rejected(msg)
            } else {
                PublishError::Unavailable(msg)
            }
        }
    }
}

#[async_trait]
impl EventSink for NatsSink {
    async fn publish_batch(&self, events: &[Outgoing]) -> Vec<Result<(), PublishError>> {
        let all_unavailable = |msg: String| -> Vec<Result<(), PublishError>> {
            events
                .iter()
                .map(|_| Err(PublishError::Unavailable(msg.clone())))
                .collect()
        };
        if events.is_empty() {
            return Vec::new();
        }
        // While disconnected the client would buffer the messages and every ack would
        // time out; failing now lets the relay back off without holding a batch for 5 s.
        if self.client.connection_state() != State::Connected {
            return all_unavailable("nats is not connected".into());
        }
        if let Err(e) = self.ensure_stream().await {
            // Whatever the reason, these events were not published: keep them waiting in
            // the outbox until the stream exists rather than failing them one by one.
            return all_unavailable(e.to_string());
        }
        let mut results = Vec::with_capacity(events.len());
        for chunk in events.chunks(PIPELINE_CHUNK) {
            results.extend(self.publish_chunk(chunk).await);
        }
        results
    }

    async fn ping(&self) -> Result<(), PublishError> {
        match self.client.connection_state() {
            State::Connected => Ok(()),
            other => Err(PublishError::Unavailable(format!(
                "nats connection state: {other:?}"
            ))),
        }
    }

    fn kind(&self) -> &'static str {
        "nats"
    }
}
