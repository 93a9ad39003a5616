//! Threads that do nothing but hash passwords, at a lower CPU priority than the
//! rest of the process. During a burst of logins the other calls (and a database
//! on the same machine) are served first, and the hashes take the CPU time left
//! over; without a burst, they run at full speed all the same.

use std::{
    io,
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex, mpsc},
};

/// Linux's nice value for the hashing threads (0 is normal, 19 the lowest).
#[cfg(target_os = "linux")]
const NICENESS: libc::c_int = 10;

type Job = Box<dyn FnOnce() + Send>;

/// `count` hashing threads; they end when this is dropped.
pub struct HashingThreads {
    jobs: mpsc::Sender<Job>,
}

impl HashingThreads {
    pub fn start(count: usize) -> io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..count {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("password-hashing-{n}"))
                .spawn(move || {
                    lower_priority();
                    loop {
                        let job = queue.lock().map(|queue| queue.recv());
                        let Ok(Ok(job)) = job else { return };
                        // A panicking hash must not take its thread along; its
                        // caller learns of it when its answer never comes.
                        let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                    }
                })?;
        }
        Ok(Self { jobs })
    }

    /// Runs `work` on a hashing thread; `None` if it panicked.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (done, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(work());
        });
        self.jobs.send(job).ok()?;
        answer.await.ok()
    }
}

/// Lowers the calling thread's priority (on Linux, nice applies per thread). A
/// refusal leaves it as it was: slower reads during a burst, nothing worse.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: setpriority touches no memory of ours; `who` 0 is this thread.
        let refused = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, NICENESS) } != 0;
        if refused {
            tracing::debug!(error = %io::Error::last_os_error(), "cannot lower the priority of password hashing");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_on_a_hashing_thread_and_a_panic_leaves_the_threads_working() {
        let threads = HashingThreads::start(1).unwrap();
        let name = threads
            .run(|| std::thread::current().name().map(str::to_owned))
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("password-hashing-0"));

        assert!(threads.run(|| panic!("a bad hash")).await.is_none());
        assert_eq!(threads.run(|| 2 + 2).await, Some(4));
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashing_threads_run_at_a_lower_priority() {
        let threads = HashingThreads::start(1).unwrap();
        // SAFETY: getpriority only reads; `who` 0 is the calling thread.
        let nice = threads
            .run(|| unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) })
            .await
            .unwrap();
        assert!(nice >= NICENESS, "nice {nice}");
    }
}
