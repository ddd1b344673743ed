//! The threads guest code runs on.
//!
//! A plugin call is synchronous and CPU-bound, so it must stay off the async workers. It
//! first ran on tokio's blocking pool, where every call takes the pool's mutex and wakes a
//! parked thread: under load those futex calls, and the mutex spinning in `sched_yield`,
//! were about a tenth of the gateway's CPU. A fixed set of threads fed by one queue takes
//! the next call without a syscall while it is busy, and wakes a thread only when all sleep.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::thread;

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

    /// Runs `work` on one of the threads; `None` if it panicked (the thread carries on).
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            if let Ok(value) = catch_unwind(AssertUnwindSafe(work)) {
                let _ = reply.send(value);
            }
        });
        self.jobs.send(job).ok()?;
        answer.await.ok()
    }
}

/// Guest threads for this machine: as many as it has cores, and two at least, so one
/// call running to its deadline does not stall every other webhook.
pub(crate) fn default_count() -> usize {
    thread::available_parallelism().map_or(2, |cores| cores.get().max(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_work_off_the_calling_thread_and_returns_its_value() {
        let threads = GuestThreads::start(2).unwrap();
        let caller = thread::current().id();
        let (value, ran_on) = threads
            .run(move || (6 * 7, thread::current().id()))
            .await
            .unwrap();
        assert_eq!(value, 42);
        assert_ne!(ran_on, caller);
    }

    #[tokio::test]
    async fn a_panicking_job_answers_none_and_the_thread_serves_the_next_one() {
        let threads = GuestThreads::start(1).unwrap();
        let panicked: Option<()> = threads.run(|| panic!("guest host bug")).await;
        assert!(panicked.is_none());
        assert_eq!(threads.run(|| "still serving").await, Some("still serving"));
    }

    #[tokio::test]
    async fn threads_see_the_runtime_of_their_creator() {
        let threads = GuestThreads::start(1).unwrap();
        let inside = threads
            .run(|| tokio::runtime::Handle::try_current().is_ok())
            .await;
        assert_eq!(inside, Some(true));
    }
}
