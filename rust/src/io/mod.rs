//! io: the worker pool. A fixed number of threads (`n_io_threads`) take jobs from one
//! crossbeam channel: metadata and shard-index loads for the prefetcher, and chunk jobs
//! (positioned read, decode, assemble) for the batches in flight. Threads are started at
//! construction and joined by `shutdown`; nothing is spawned afterwards.

use std::sync::{Arc, Weak};
use std::thread::JoinHandle;

use crossbeam::channel::{unbounded, Sender};

type Job = Box<dyn FnOnce() + Send + 'static>;

/// A fixed-size pool of worker threads.
pub struct WorkerPool {
    tx: Option<Arc<Sender<Job>>>,
    threads: Vec<JoinHandle<()>>,
}

impl WorkerPool {
    /// Starts `n` threads named `damacy-io-<i>`.
    ///
    /// # Errors
    /// OutOfMemory when a thread cannot be spawned.
    pub fn new(n: usize) -> crate::Result<Self> {
        let (tx, rx) = unbounded::<Job>();
        let mut threads = Vec::with_capacity(n);
        for i in 0..n.max(1) {
            let rx = rx.clone();
            let t = std::thread::Builder::new()
                .name(format!("damacy-io-{i}"))
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        // A job never unwinds past here: a panic is a bug, but it must not
                        // take the worker (and every later batch) down with it.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    }
                })
                .map_err(|e| crate::error::err!(OutOfMemory, "cannot start I/O thread {i}: {e}"))?;
            threads.push(t);
        }
        Ok(Self { tx: Some(Arc::new(tx)), threads })
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
        self.threads.len()
    }

    /// Stops accepting jobs, lets queued jobs run, joins the threads. Idempotent.
    pub fn shutdown(&mut self) {
        self.tx = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
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
        self.shutdown();
    }
}
