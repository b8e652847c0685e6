//! The worker pool. Threads take jobs from one crossbeam channel: metadata and
//! shard-index loads for the prefetcher, and the chunk jobs (read, decode, assemble) of the
//! batches in flight. `n_io_threads` threads are started at construction; a pipeline that
//! reads an object store grows the pool once by `n_remote_io_threads` (a remote read
//! blocks its thread for a round trip, so threads bound the requests in flight), through a
//! [`Grower`]. `shutdown` waits a bounded time: a thread stuck in the kernel (a hung
//! network mount) is detached and exits when its read returns; everything it touches is
//! reference-counted, so nothing it uses is freed under it.

use std::sync::{Arc, Condvar, Mutex, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{unbounded, Receiver, Sender};

type Job = Box<dyn FnOnce() + Send + 'static>;

/// The threads of a pool and what starting another needs.
struct Threads {
    rx: Receiver<Job>,
    handles: Mutex<Vec<JoinHandle<()>>>,
    /// Threads still running (each decrements it as it exits).
    alive: Arc<(Mutex<usize>, Condvar)>,
}

impl Threads {
    /// Starts threads until there are `n` (never fewer than one).
    fn grow_to(&self, n: usize) -> crate::Result<()> {
        let mut handles = self.handles.lock().unwrap_or_else(PoisonError::into_inner);
        for i in handles.len()..n.max(1) {
            let rx = self.rx.clone();
            *self.alive.0.lock().unwrap_or_else(PoisonError::into_inner) += 1;
            let counted = Alive(Arc::clone(&self.alive));
            let t = std::thread::Builder::new()
                .name(format!("damacy-io-{i}"))
                .spawn(move || {
                    let _counted = counted;
                    while let Ok(job) = rx.recv() {
                        // A job never unwinds past here: a panic is a bug, but it must not
                        // take the worker (and every later batch) down with it.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    }
                })
                .map_err(|e| crate::error::err!(OutOfMemory, "cannot start I/O thread {i}: {e}"))?;
            handles.push(t);
        }
        Ok(())
    }
}

/// A pool of worker threads.
pub struct WorkerPool {
    tx: Option<Arc<Sender<Job>>>,
    threads: Arc<Threads>,
}

/// Counts a worker out when its thread ends, however it ends.
struct Alive(Arc<(Mutex<usize>, Condvar)>);

impl Drop for Alive {
    fn drop(&mut self) {
        let (n, cv) = &*self.0;
        *n.lock().unwrap_or_else(PoisonError::into_inner) -= 1;
        cv.notify_all();
    }
}

/// Grows a [`WorkerPool`] from elsewhere (no effect once the pool shut down).
#[derive(Clone)]
pub struct Grower {
    threads: Weak<Threads>,
    tx: Weak<Sender<Job>>,
}

impl Grower {
    /// Starts threads until the pool has `n`.
    ///
    /// # Errors
    /// OutOfMemory when a thread cannot be spawned.
    pub fn grow_to(&self, n: usize) -> crate::Result<()> {
        match (self.threads.upgrade(), self.tx.upgrade()) {
            (Some(threads), Some(_running)) => threads.grow_to(n),
            _ => Ok(()),
        }
    }
}

impl WorkerPool {
    /// Starts `n` threads named `damacy-io-<i>`.
    ///
    /// # Errors
    /// OutOfMemory when a thread cannot be spawned.
    pub fn new(n: usize) -> crate::Result<Self> {
        let (tx, rx) = unbounded::<Job>();
        let threads = Arc::new(Threads { rx, handles: Mutex::new(Vec::with_capacity(n)), alive: Arc::new((Mutex::new(0usize), Condvar::new())) });
        threads.grow_to(n)?;
        Ok(Self { tx: Some(Arc::new(tx)), threads })
    }

    /// A handle that grows this pool from elsewhere.
    pub fn grower(&self) -> Grower {
        Grower { threads: Arc::downgrade(&self.threads), tx: self.tx.as_ref().map_or_else(Weak::new, Arc::downgrade) }
    }

    /// Queues a job; dropped silently after shutdown.
    pub fn spawn(&self, job: impl FnOnce() + Send + 'static) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Box::new(job));
        }
    }

    /// A handle that queues jobs from elsewhere (the prefetcher's own tasks) without
    /// keeping the pool alive: after shutdown its jobs are dropped.
    pub fn spawner(&self) -> Spawner {
        Spawner(self.tx.as_ref().map_or_else(Weak::new, Arc::downgrade))
    }

    /// Number of threads.
    pub fn threads(&self) -> usize {
        self.threads.handles.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Stops accepting jobs and waits at most `timeout` for the threads to finish the jobs
    /// queued (callers make those jobs return early); threads still busy then are detached.
    /// Returns how many were detached. Idempotent.
    pub fn shutdown(&mut self, timeout: Duration) -> usize {
        // Taken first: a grower racing with this starts nothing once the sender is gone.
        let mut handles = std::mem::take(&mut *self.threads.handles.lock().unwrap_or_else(PoisonError::into_inner));
        if self.tx.is_none() && handles.is_empty() {
            return 0;
        }
        self.tx = None;
        let deadline = Instant::now() + timeout;
        let (n, cv) = &*self.threads.alive;
        let mut left = n.lock().unwrap_or_else(PoisonError::into_inner);
        while *left > 0 {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            left = cv.wait_timeout(left, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
        }
        let stuck = *left;
        drop(left);
        for t in handles.drain(..) {
            if t.is_finished() {
                let _ = t.join();
            }
            // else: detached; it ends when its job returns.
        }
        stuck
    }
}

/// Queues jobs on a [`WorkerPool`] while it runs.
#[derive(Clone)]
pub struct Spawner(Weak<Sender<Job>>);

impl Spawner {
    /// Queues a job; `false` (job dropped) after the pool shut down.
    pub fn spawn(&self, job: impl FnOnce() + Send + 'static) -> bool {
        self.0.upgrade().is_some_and(|tx| tx.send(Box::new(job)).is_ok())
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        self.shutdown(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_is_bounded_when_a_job_is_stuck() {
        let mut pool = WorkerPool::new(2).unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        pool.spawn(move || {
            let _ = rx.recv(); // stuck until the test lets it go
        });
        pool.spawn(|| {});
        std::thread::sleep(Duration::from_millis(20));
        let t0 = Instant::now();
        assert_eq!(pool.shutdown(Duration::from_millis(200)), 1, "the stuck thread is detached");
        assert!(t0.elapsed() < Duration::from_secs(2));
        drop(tx); // it finishes later, on its own
    }
}
