//! The accept loop: HTTP/1.1 with keep-alive and HTTP/2 over cleartext (h2c, prior
//! knowledge) on one port, and the limits that keep a client from holding a connection:
//! a cap on open connections (beyond it a new one is closed at once), a first-byte
//! timeout, a deadline for the first request head (it also covers a half-sent HTTP/2
//! preface, which hyper's version sniffing would wait on for ever), an idle limit and a
//! maximum age; then a graceful stop that lets requests in flight finish.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use super::{HttpLimits, State, route};
use crate::metrics::ReasonLabel;

/// How long requests in flight may take to finish once a stop, or a connection's close
/// (idle, age), is asked for.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

pub async fn serve(listener: TcpListener, state: Arc<State>, mut shutdown: watch::Receiver<bool>) {
    let limits = state.limits.clone();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.http2_keep_alive_interval))
        .keep_alive_timeout(limits.http2_keep_alive_timeout)
        .max_concurrent_streams(limits.http2_max_concurrent_streams);
    let builder = Arc::new(builder);
    // One permit per open connection; all of them back means every connection ended.
    let capacity = limits
        .max_connections
        .clamp(1, u32::MAX as usize)
        .min(Semaphore::MAX_PERMITS);
    let connections = Arc::new(Semaphore::new(capacity));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Typically EMFILE: back off briefly instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = connections.clone().try_acquire_owned() else {
                    // Closed rather than queued: a queued socket looks open to its client,
                    // which then waits out its own timeout; a closed one is retried now.
                    state
                        .metrics
                        .http_rejected
                        .get_or_create(&ReasonLabel { reason: "connection_limit" })
                        .inc();
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let activity = Arc::new(Activity::new());
                let io = TokioIo::new(Watched {
                    inner: stream,
                    activity: activity.clone(),
                    seen: false,
                });
                let service = {
                    let state = state.clone();
                    let activity = activity.clone();
                    let peer = peer.ip();
                    service_fn(move |request| {
                        let state = state.clone();
                        let busy = activity.begin();
                        async move {
                            let response = route(state, peer, request).await;
                            drop(busy);
                            Ok::<_, Infallible>(response)
                        }
                    })
                };
                let connection = builder.serve_connection(io, service).into_owned();
                let limits = limits.clone();
                let mut shutdown = shutdown.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    let mut connection = std::pin::pin!(connection);
                    let mut closing = None;
                    let mut stopping = *shutdown.borrow();
                    loop {
                        let now = Instant::now();
                        let wake = match step(&activity, &limits, now, closing, stopping) {
                            Step::Drop(reason) => {
                                tracing::debug!(reason, "connection dropped");
                                return;
                            }
                            Step::Close(reason) => {
                                tracing::debug!(reason, "closing a connection gracefully");
                                connection.as_mut().graceful_shutdown();
                                closing = Some(now);
                                continue;
                            }
                            Step::WaitUntil(wake) => wake,
                        };
                        tokio::select! {
                            result = connection.as_mut() => {
                                if let Err(error) = result {
                                    tracing::debug!(%error, "connection ended with an error");
                                }
                                return;
                            }
                            () = tokio::time::sleep_until(wake) => {}
                            changed = shutdown.changed(), if !stopping => {
                                stopping = changed.is_err() || *shutdown.borrow();
                            }
                        }
                    }
                });
            }
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
        }
    }
    drop(listener);
    // Each connection saw the stop itself and is closing; wait for all of them.
    let all = u32::try_from(capacity).unwrap_or(u32::MAX);
    if tokio::time::timeout(
        DRAIN_TIMEOUT + Duration::from_secs(1),
        connections.acquire_many(all),
    )
    .await
    .is_err()
    {
        tracing::warn!("requests still in flight after the drain timeout; closing");
    }
}

/// What the connection's timers need to know of it; updated by the reads and by the
/// service, read by the connection's timer ([`step`]).
struct Activity {
    opened: Instant,
    first_byte: AtomicBool,
    seen_request: AtomicBool,
    in_flight: AtomicUsize,
    /// When the last request ended, in ms since `opened`.
    idle_since_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            first_byte: AtomicBool::new(false),
            seen_request: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
        }
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.seen_request.store(true, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Busy(self.clone())
    }

    fn idle_since(&self) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let ms = self.idle_since_ms.load(Ordering::Relaxed);
        Some(self.opened + Duration::from_millis(ms))
    }
}

/// A request being handled; its drop marks the end of it (also when it is cancelled).
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let ms = u64::try_from(self.0.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.idle_since_ms.fetch_max(ms, Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a connection's timer decides.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Drop it now: it never sent a request, or did not finish closing in time.
    Drop(&'static str),
    /// Ask it to finish what it has and close.
    Close(&'static str),
    /// Look again then.
    WaitUntil(Instant),
}

/// The limits of one connection applied at `now`; `closing` is when it was asked to close.
fn step(
    activity: &Activity,
    limits: &HttpLimits,
    now: Instant,
    closing: Option<Instant>,
    stopping: bool,
) -> Step {
    let opened = activity.opened;
    if let Some(since) = closing {
        return if now >= since + DRAIN_TIMEOUT {
            Step::Drop("drain_timeout")
        } else {
            Step::WaitUntil(since + DRAIN_TIMEOUT)
        };
    }
    if stopping {
        return Step::Close("stop");
    }
    let age_limit = opened + limits.max_connection_age;
    if now >= age_limit {
        return Step::Close("max_age");
    }
    let wake = if activity.seen_request.load(Ordering::Relaxed) {
        match activity.idle_since() {
            Some(since) if now >= since + limits.idle_timeout => return Step::Close("idle"),
            Some(since) => since + limits.idle_timeout,
            // Busy: look again an idle period later.
            None => now + limits.idle_timeout,
        }
    } else {
        let first_byte = activity.first_byte.load(Ordering::Relaxed);
        if !first_byte && now >= opened + limits.first_byte_timeout {
            return Step::Drop("first_byte_timeout");
        }
        if now >= opened + limits.header_read_timeout {
            return Step::Drop("header_timeout");
        }
        if first_byte {
            opened + limits.header_read_timeout
        } else {
            (opened + limits.first_byte_timeout).min(opened + limits.header_read_timeout)
        }
    };
    Step::WaitUntil(wake.min(age_limit).max(now + Duration::from_millis(5)))
}

/// The TCP stream, noting when its first byte arrives.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
    seen: bool,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if !this.seen && buf.filled().len() > before {
            this.seen = true;
            this.activity.first_byte.store(true, Ordering::Relaxed);
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> HttpLimits {
        HttpLimits {
            max_body_bytes: 1024,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            body_min_rate_bytes_per_second: 1024,
            body_rate_grace: Duration::from_secs(2),
            max_concurrency: 8,
            source_share_percent: 50,
            client_share_percent: 25,
            first_byte_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            max_connection_age: Duration::from_secs(3600),
            max_connections: 16,
            http2_max_concurrent_streams: 128,
            http2_keep_alive_interval: Duration::from_secs(30),
            http2_keep_alive_timeout: Duration::from_secs(20),
        }
    }

    #[test]
    fn a_connection_that_sends_nothing_or_no_head_is_dropped() {
        let limits = limits();
        let activity = Activity::new();
        let at = |s: u64| activity.opened + Duration::from_secs(s);
        assert_eq!(
            step(&activity, &limits, at(1), None, false),
            Step::WaitUntil(at(5))
        );
        assert_eq!(
            step(&activity, &limits, at(5), None, false),
            Step::Drop("first_byte_timeout")
        );
        activity.first_byte.store(true, Ordering::Relaxed);
        assert_eq!(
            step(&activity, &limits, at(5), None, false),
            Step::WaitUntil(at(10))
        );
        assert_eq!(
            step(&activity, &limits, at(10), None, false),
            Step::Drop("header_timeout")
        );
    }

    #[test]
    fn idle_age_and_stop_close_gracefully_then_drop_after_the_drain() {
        let limits = limits();
        let activity = Arc::new(Activity::new());
        let at = |s: u64| activity.opened + Duration::from_secs(s);
        activity.first_byte.store(true, Ordering::Relaxed);
        let busy = activity.begin();
        // Busy connections are never idle, whatever the time.
        assert!(matches!(
            step(&activity, &limits, at(100), None, false),
            Step::WaitUntil(_)
        ));
        drop(busy);
        let since = activity.idle_since().expect("idle");
        assert_eq!(
            step(
                &activity,
                &limits,
                since + Duration::from_secs(60),
                None,
                false
            ),
            Step::Close("idle")
        );
        assert_eq!(
            step(&activity, &limits, at(3600), None, false),
            Step::Close("max_age")
        );
        assert_eq!(
            step(&activity, &limits, at(1), None, true),
            Step::Close("stop")
        );
        assert_eq!(
            step(&activity, &limits, at(20), Some(at(1)), false),
            Step::Drop("drain_timeout")
        );
    }
}
