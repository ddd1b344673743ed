//! The threads guest code runs on.
//!
//! A plugin call is synchronous and CPU-bound, so it must stay off the async workers. It
//! first ran on tokio's blocking pool, where every call takes the pool's mutex and wakes a
//! parked thread: under load those futex calls, and the mutex spinning in `sched_yield`,
//! were about a tenth of the gateway's CPU. A fixed set of threads fed by one queue takes
//! the next call without a syscall while it is busy, and wakes a thread only when all sleep.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::thread;
use std::time::{Duration, Instant};

type Job = Box<dyn FnOnce() + Send>;

/// The sending side; the threads stop once it is dropped and the queue is drained.
pub(crate) struct GuestThreads {
    jobs: flume::Sender<Job>,
}

impl GuestThreads {
    /// Starts `count` threads (at least one). They enter the tokio runtime of the caller,
    /// if any, as the blocking pool's threads did: WASI's synchronous host functions use
    /// it to run their async implementation.
    pub(crate) fn start(count: usize) -> std::io::Result<Self> {
        let (jobs, queue) = flume::unbounded::<Job>();
        let runtime = tokio::runtime::Handle::try_current().ok();
        for index in 0..count.max(1) {
            let queue = queue.clone();
            let runtime = runtime.clone();
            thread::Builder::new()
                .name(format!("hookgate-guest-{index}"))
                .spawn(move || {
                    let _entered = runtime.as_ref().map(|handle| handle.enter());
                    while let Ok(job) = queue.recv() {
                        job();
                    }
                })?;
        }
        Ok(Self { jobs })
    }

    /// Runs `work` on one of the threads. Work whose caller is gone by the time a thread
    /// takes it (the request was cancelled) is skipped, and so is work that waited in the
    /// queue longer than `max_wait`: its sender has likely given up, and running it would
    /// only make the queue longer for the next ones.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        max_wait: Duration,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Refusal> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let queued = Instant::now();
        let job: Job = Box::new(move || {
            if reply.is_closed() {
                return;
            }
            if queued.elapsed() > max_wait {
                let _ = reply.send(Err(Refusal::QueueWait));
                return;
            }
            let _ = reply.send(catch_unwind(AssertUnwindSafe(work)).map_err(|_| Refusal::Panicked));
        });
        self.jobs.send(job).map_err(|_| Refusal::Panicked)?;
        answer.await.unwrap_or(Err(Refusal::Panicked))
    }
}

/// Why work did not run to an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// It panicked (a host bug; the thread carries on), or the threads are gone.
    Panicked,
    /// It waited in the queue longer than allowed and was not run.
    QueueWait,
}

/// Guest threads for this machine: as many as it has cores, and two at least, so one
/// call running to its deadline does not stall every other webhook.
pub(crate) fn default_count() -> usize {
    thread::available_parallelism().map_or(2, |cores| cores.get().max(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn runs_work_off_the_calling_thread_and_returns_its_value() {
        let threads = GuestThreads::start(2).unwrap();
        let caller = thread::current().id();
        let (value, ran_on) = threads
            .run(WAIT, move || (6 * 7, thread::current().id()))
            .await
            .unwrap();
        assert_eq!(value, 42);
        assert_ne!(ran_on, caller);
    }

    #[tokio::test]
    async fn a_panicking_job_answers_none_and_the_thread_serves_the_next_one() {
        let threads = GuestThreads::start(1).unwrap();
        let panicked: Result<(), _> = threads.run(WAIT, || panic!("guest host bug")).await;
        assert_eq!(panicked, Err(Refusal::Panicked));
        assert_eq!(
            threads.run(WAIT, || "still serving").await,
            Ok("still serving")
        );
    }

    #[tokio::test]
    async fn threads_see_the_runtime_of_their_creator() {
        let threads = GuestThreads::start(1).unwrap();
        let inside = threads
            .run(WAIT, || tokio::runtime::Handle::try_current().is_ok())
            .await;
        assert_eq!(inside, Ok(true));
    }

    /// Occupies the only thread until the returned sender is dropped or sent to.
    async fn occupy(threads: &std::sync::Arc<GuestThreads>) -> std::sync::mpsc::Sender<()> {
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let (started, running) = tokio::sync::oneshot::channel();
        let held = threads.clone();
        tokio::spawn(async move {
            held.run(WAIT, move || {
                let _ = started.send(());
                let _ = wait.recv_timeout(Duration::from_secs(10));
            })
            .await
        });
        running.await.expect("the blocker runs");
        release
    }

    #[tokio::test]
    async fn work_whose_caller_is_gone_is_skipped() {
        let threads = std::sync::Arc::new(GuestThreads::start(1).unwrap());
        let release = occupy(&threads).await;
        let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = ran.clone();
        // Queued behind the blocker, then abandoned, as a cancelled request does.
        let abandoned = tokio::time::timeout(
            Duration::from_millis(50),
            threads.run(WAIT, move || {
                flag.store(true, std::sync::atomic::Ordering::SeqCst)
            }),
        )
        .await;
        assert!(abandoned.is_err(), "it could not have run yet");
        drop(release);
        // Runs after the abandoned job: the queue is first in, first out.
        assert_eq!(threads.run(WAIT, || ()).await, Ok(()));
        assert!(
            !ran.load(std::sync::atomic::Ordering::SeqCst),
            "cancelled work ran"
        );
    }

    #[tokio::test]
    async fn work_that_waited_too_long_is_refused() {
        let threads = std::sync::Arc::new(GuestThreads::start(1).unwrap());
        let release = occupy(&threads).await;
        let waiting = {
            let threads = threads.clone();
            tokio::spawn(async move { threads.run(Duration::from_millis(20), || "ran").await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(release);
        let answer = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("answered")
            .expect("joined");
        assert_eq!(answer, Err(Refusal::QueueWait));
    }
}
