//! NATS JetStream sink: publishes each envelope with `Nats-Msg-Id` = event id and counts it
//! published only on its PubAck.
//!
//! NATS being down must not stop the gateway: the client connects and reconnects in the
//! background, publishing while disconnected fails at once with `Unavailable` (the outbox
//! keeps the events), and the stream is created on the first publish that finds NATS up
//! if it could not be at start.

use std::collections::HashMap;
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
        // The same rules the relay's subjects are built with.
        super::envelope::subject(&options.subject_prefix, "source", "type")
            .map_err(|e| PublishError::BadUrl(format!("bus subject prefix: {e}")))?;
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

    /// Creates the stream, or brings an existing one to what hookgate needs (its subjects
    /// include `<prefix>.>`, the configured duplicate window), once; later calls are free.
    ///
    /// An existing stream is amended rather than replaced, so the limits an operator set
    /// on it (max age, replicas, ...) survive a gateway start.
    async fn ensure_stream(&self) -> Result<(), PublishError> {
        if self.stream_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let name = &self.options.stream;
        let wanted_subject = format!("{}.>", self.options.subject_prefix);
        // A few rounds: another gateway instance may create the stream between our lookup
        // and our create, and the server may fail a create transiently.
        for _ in 0..CREATE_ROUNDS {
            match self.jetstream.get_stream(name).await {
                Ok(existing) => {
                    let mut config = existing.cached_info().config.clone();
                    let mut changed = false;
                    if !config.subjects.iter().any(|s| covers(s, &wanted_subject)) {
                        // JetStream refuses overlapping subjects within a stream, and the
                        // ones under our prefix are covered by `<prefix>.>` anyway.
                        config.subjects.retain(|s| !covers(&wanted_subject, s));
                        config.subjects.push(wanted_subject.clone());
                        changed = true;
                    }
                    if config.duplicate_window != self.options.duplicate_window {
                        config.duplicate_window = self.options.duplicate_window;
                        changed = true;
                    }
                    if config.storage != stream::StorageType::File {
                        // Storage cannot be changed in place; say so rather than fail.
                        tracing::warn!(stream = %name, storage = ?config.storage,
                            "existing stream does not use file storage; left as is");
                    }
                    if changed {
                        self.jetstream
                            .update_stream(&config)
                            .await
                            .map_err(|e| stream_error("update", name, &e))?;
                    }
                    self.mark_stream_ready();
                    return Ok(());
                }
                Err(e) if is_stream_not_found(&e) => {
                    match self.jetstream.create_stream(self.stream_config()).await {
                        Ok(_) => {
                            self.mark_stream_ready();
                            return Ok(());
                        }
                        Err(e)
                            if is_jetstream_code(&e, jetstream::ErrorCode::STREAM_NAME_EXIST) =>
                        {
                            continue;
                        }
                        Err(e) if is_server_failure(&e) => {
                            // Seen when another stream of the account is deleted at the
                            // same moment: the server removes the account's store
                            // directory under the create. The next attempt succeeds.
                            tracing::debug!(stream = %name, error = %e, "stream create failed on the server; retrying");
                            tokio::time::sleep(CREATE_RETRY_DELAY).await;
                            continue;
                        }
                        Err(e) => return Err(stream_error("create", name, &e)),
                    }
                }
                Err(e) => {
                    use async_nats::jetstream::context::GetStreamErrorKind as K;
                    let msg = format!("cannot look up stream {name}: {e}");
                    return Err(match e.kind() {
                        K::Request => PublishError::Unavailable(msg),
                        _ => PublishError::Rejected(msg),
                    });
                }
            }
        }
        Err(PublishError::Unavailable(format!(
            "stream {name} kept changing while being created; will retry"
        )))
    }

    fn mark_stream_ready(&self) {
        // Concurrent first publishes may both get here; the work above is idempotent.
        self.stream_ready.store(true, Ordering::Release);
        tracing::info!(stream = %self.options.stream, "jetstream stream ready");
    }

    /// Publishes one chunk. `stalled` is set once a send times out: the connection is
    /// not draining, so the rest of the batch fails at once instead of each event
    /// waiting out its own timeout.
    async fn publish_chunk(
        &self,
        events: &[Outgoing],
        stalled: &mut bool,
    ) -> Vec<Result<(), Failure>> {
        // Send every message first, then wait for the acks together: one round trip per
        // chunk instead of one per event.
        let mut pending = Vec::with_capacity(events.len());
        for event in events {
            if *stalled {
                pending.push(Err(Failure::Final(PublishError::Unavailable(
                    "not sent: an earlier publish of this batch timed out".into(),
                ))));
                continue;
            }
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
                Ok(Err(e)) => Err(Failure::Final(classify(&e))),
                Err(_) => {
                    *stalled = true;
                    Err(Failure::Final(PublishError::Unavailable(
                        "timed out sending".into(),
                    )))
                }
            });
        }
        join_all(
            pending
                .into_iter()
                .zip(events)
                .map(|(p, event)| async move {
                    match p {
                        // A duplicate ack means JetStream already holds this id: success.
                        Ok(ack) => ack
                            .await
                            .map(|_ack| ())
                            .map_err(|e| self.ack_error(&e, event)),
                        Err(e) => Err(e),
                    }
                }),
        )
        .await
    }

    /// Maps a failed ack. Our own stream missing (deleted while the gateway runs) is not
    /// a refusal of the event: the next publish recreates the stream, so it is retryable.
    /// Any other "no responders" is confirmed before it counts as permanent.
    fn ack_error(&self, err: &jetstream::context::PublishError, event: &Outgoing) -> Failure {
        if err.kind() == PublishErrorKind::StreamNotFound {
            if self.options.create_stream
                && covers(
                    &format!("{}.>", self.options.subject_prefix),
                    &event.subject,
                )
            {
                self.stream_ready.store(false, Ordering::Release);
                return Failure::Final(PublishError::Unavailable(format!(
                    "stream {} is missing; it is recreated on the next publish",
                    self.options.stream
                )));
            }
            return Failure::NoResponders;
        }
        Failure::Final(classify(err))
    }

    /// What "no responders" on `subject` means. JetStream also answers so, for a moment,
    /// while a clustered stream elects a leader; only when the server confirms that no
    /// stream captures the subject is the event refused for good.
    async fn no_stream(&self, subject: &str) -> PublishError {
        match self.jetstream.stream_by_subject(subject).await {
            Err(e) if e.kind() == jetstream::context::GetStreamByNameErrorKind::NotFound => {
                PublishError::Rejected(format!("no JetStream stream is bound to subject {subject}"))
            }
            Err(e) if e.kind() == jetstream::context::GetStreamByNameErrorKind::InvalidSubject => {
                PublishError::Rejected(format!("invalid subject {subject}"))
            }
            Ok(stream) => PublishError::Unavailable(format!(
                "stream {stream} did not answer for subject {subject}"
            )),
            Err(e) => PublishError::Unavailable(format!(
                "no stream answered for subject {subject}, and the stream lookup failed: {e}"
            )),
        }
    }
}

/// A publish that failed, before "no responders" is looked into.
enum Failure {
    Final(PublishError),
    NoResponders,
}

/// Whether every subject matched by `pattern` is also matched by `wider`, token by token
/// (`*` one token, `>` one or more trailing tokens).
fn covers(wider: &str, pattern: &str) -> bool {
    let mut w = wider.split('.');
    let mut p = pattern.split('.');
    loop {
        match (w.next(), p.next()) {
            // An empty token is no valid subject at all, so nothing covers it.
            (_, Some("")) | (Some(""), _) => return false,
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(t)) if t != ">" => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

fn is_stream_not_found(err: &jetstream::context::GetStreamError) -> bool {
    matches!(err.kind(), jetstream::context::GetStreamErrorKind::JetStream(e)
        if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
}

/// Attempts at creating or amending the stream before `ensure_stream` gives up for now.
const CREATE_ROUNDS: usize = 4;
const CREATE_RETRY_DELAY: Duration = Duration::from_millis(100);

/// A JetStream 500: the server failed, the request itself was fine (worth a retry).
pub fn is_server_failure(err: &jetstream::context::CreateStreamError) -> bool {
    matches!(err.kind(), jetstream::context::CreateStreamErrorKind::JetStream(e)
        if e.code() == 500)
}

fn is_jetstream_code(
    err: &jetstream::context::CreateStreamError,
    code: jetstream::ErrorCode,
) -> bool {
    matches!(err.kind(), jetstream::context::CreateStreamErrorKind::JetStream(e)
        if e.error_code() == code)
}

/// A stream configuration the server refuses is an operator's problem (`Rejected`);
/// anything else is the server being unreachable or slow (`Unavailable`).
fn stream_error(
    action: &str,
    name: &str,
    err: &jetstream::context::CreateStreamError,
) -> PublishError {
    use async_nats::jetstream::context::CreateStreamErrorKind as K;
    let msg = format!("cannot {action} stream {name}: {err}");
    match err.kind() {
        K::JetStream(_) | K::EmptyStreamName | K::InvalidStreamName | K::DomainAndExternalSet => {
            PublishError::Rejected(msg)
        }
        _ => PublishError::Unavailable(msg),
    }
}

/// Connection and timeout problems are worth retrying, and so is a stream refusing for a
/// while (full with `discard = new`, short of resources, between leaders); an event larger
/// than the server or the stream takes, or an invalid subject, will never get through.
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
        // `Other` covers an error reply from JetStream, an invalid subject and local
        // failures (the client shut down, an unreadable reply).
        _ => {
            let source = std::error::Error::source(err);
            if let Some(js) = source.and_then(|s| s.downcast_ref::<jetstream::Error>()) {
                let msg = format!("{msg}: {js}");
                if is_permanent_refusal(js.error_code()) {
                    PublishError::Rejected(msg)
                } else {
                    PublishError::Unavailable(msg)
                }
            } else if source.is_some_and(|s| {
                s.downcast_ref::<async_nats::subject::SubjectError>()
                    .is_some()
            }) {
                PublishError::Rejected(msg)
            } else {
                PublishError::Unavailable(msg)
            }
        }
    }
}

/// JetStream refusals that resending the same message cannot get past.
fn is_permanent_refusal(code: jetstream::ErrorCode) -> bool {
    code == jetstream::ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM
        || code == jetstream::ErrorCode::STREAM_HEADER_EXCEEDS_MAXIMUM
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
        let mut stalled = false;
        for chunk in events.chunks(PIPELINE_CHUNK) {
            results.extend(self.publish_chunk(chunk, &mut stalled).await);
        }
        // One stream lookup per subject that had no responders, not one per event.
        let mut looked_up: HashMap<&str, PublishError> = HashMap::new();
        let mut resolved = Vec::with_capacity(results.len());
        for (result, event) in results.into_iter().zip(events) {
            resolved.push(match result {
                Ok(()) => Ok(()),
                Err(Failure::Final(e)) => Err(e),
                Err(Failure::NoResponders) => {
                    let subject = event.subject.as_str();
                    if !looked_up.contains_key(subject) {
                        let verdict = self.no_stream(subject).await;
                        looked_up.insert(subject, verdict);
                    }
                    Err(looked_up
                        .get(subject)
                        .cloned()
                        .unwrap_or_else(|| PublishError::Unavailable("no stream answered".into())))
                }
            });
        }
        resolved
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

    fn max_message_bytes(&self) -> Option<u64> {
        if self.client.connection_state() != State::Connected {
            return None;
        }
        let max = self.client.server_info().max_payload;
        (max > 0).then(|| u64::try_from(max).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::covers;

    #[test]
    fn covers_follows_nats_wildcards() {
        assert!(covers("webhooks.>", "webhooks.>"));
        assert!(covers(">", "webhooks.>"));
        assert!(covers("webhooks.>", "webhooks.legacy.>"));
        assert!(covers("webhooks.>", "webhooks.shopify.order"));
        assert!(covers("*.>", "webhooks.>"));
        assert!(covers("webhooks.*", "webhooks.shopify"));
        assert!(!covers("webhooks.*", "webhooks.>"));
        assert!(!covers("webhooks.legacy.>", "webhooks.>"));
        assert!(!covers("webhooks.>", "webhooks"));
        assert!(!covers("other.>", "webhooks.>"));
        assert!(!covers("webhooks", "webhooks.a"));
        assert!(!covers("webhooks.>", "webhooks..x"));
        assert!(!covers("webhooks.>", "webhooks."));
    }
}
