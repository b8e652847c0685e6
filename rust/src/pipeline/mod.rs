//! pipeline: the public object. `push` adds samples to the lookahead window (each gets a
//! prefetch ticket resolved in the background) and forms batches in push order; a scheduler
//! thread takes each batch's resolved samples from the prefetcher, plans the batch and runs
//! it on the worker pool (`run`: io → decode → assemble per job); `pop` returns batches in
//! push order.
//!
//! Owns: the config, the prefetcher (caches), the worker pool, the output buffer pool and
//! the stats. Resources are fixed at construction: `n_io_threads` threads (plus
//! `n_remote_io_threads`, started once at the first object store sample), at most
//! `n_batch_buffers` output buffers (the first allocated at construction, so a batch that
//! cannot be allocated fails `Pipeline::new` with OutOfMemory), cache capacities. A failed
//! batch is returned as its error by the `pop` that reaches it; the pipeline then continues
//! with the next batch. `close` returns within [`CLOSE_TIMEOUT`] also when reads are stuck
//! in the kernel: threads still busy then are detached and end when their read returns.
//!
//! Calls: `prefetch`, `plan`, `io`, `decode`, `assemble`, `cache` (decoded chunks), `store`
//! (array info). Called by `ffi`.

mod batch;
mod buffers;
mod config;
mod run;
mod stats;
mod transform;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{unbounded, Receiver, Sender};

pub use batch::Batch;
pub use config::{Config, Decode, OutDtype, OutOfBounds, Recheck};
/// What `open_array` / `open_node` return (for the bridge, which imports nothing below `pipeline`).
pub(crate) use crate::plan::Array;
pub(crate) use crate::prefetch::MultiscaleInfo;

use crate::error::{err, Result};
use crate::ffi::records::SampleTransform;
use crate::io::{Spawner, WorkerPool};
use crate::plan::{self, ResolvedSample};
use crate::prefetch::{self, Prefetcher};
use batch::{InFlight, JobGuard, SampleSpec};
use buffers::BufferPool;
use stats::Stats;

/// How long `close` waits for the scheduler and the workers before detaching them.
pub(crate) const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

struct BatchJob {
    seq: u64,
    samples: Vec<SampleSpec>,
    formed_at: Instant,
}

#[derive(Default)]
struct Window {
    /// Samples of the batch being formed.
    forming: Vec<SampleSpec>,
    /// Batches formed so far (the next batch's sequence number).
    formed: u64,
    /// The next batch `pop` returns.
    next_pop: u64,
    /// Samples pushed and not yet returned by `pop`.
    unpopped: u64,
    /// Batches returned by `pop` and not yet reported delivered ([`Pipeline::delivered`]).
    undelivered: u64,
    /// Finished batches waiting for `pop`.
    done: BTreeMap<u64, Result<Batch>>,
    /// Batches handed to the scheduler and not yet finished.
    in_flight: u64,
}

struct Shared {
    cfg: Config,
    window: Mutex<Window>,
    changed: Condvar,
    shutdown: AtomicBool,
    prefetch: Prefetcher,
    buffers: Arc<BufferPool>,
    stats: Stats,
    /// Device path: stage compressed bytes and emit device ops instead of decoding.
    gpu_mode: bool,
    /// Batches the scheduler has started and that have not finished (their jobs run on the
    /// pool, so they finish without the scheduler's help).
    running: AtomicUsize,
    /// Decoded chunks kept across batches (CPU path; `decoded_cache_bytes`).
    decoded: Mutex<crate::cache::decoded::DecodedCache>,
    /// The device chunk store's bookkeeping (GPU path; `device_chunk_cache_bytes`).
    device_store: Mutex<crate::cache::device::DeviceStore>,
    /// Batches that failed after the device store planned chunks for them to keep, and
    /// their errors: a batch that fetches one of those chunks fails at pop with it
    /// (bounded: [`MAX_FAILED_KEEPERS`], oldest dropped first).
    failed_keepers: Mutex<BTreeMap<u64, crate::error::Error>>,
    /// When each object with decoded-cache entries was last confirmed at its generation
    /// (read, or checked): hits within `recheck_cached_data` seconds of it are not checked.
    validated: Mutex<Validated>,
}

/// Most failed keeper batches remembered (far more than batches in flight).
const MAX_FAILED_KEEPERS: usize = 4096;

/// (store id, object key) → the generation last confirmed and when.
type Validated = HashMap<(Arc<str>, Arc<str>), (crate::store::Generation, Instant)>;

/// Most objects `Shared::validated` remembers (entries older than the interval are dropped
/// first, then all).
const MAX_VALIDATED: usize = 1 << 16;

impl Shared {
    fn window(&self) -> MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The recheck interval when it is a positive number of seconds (the only case that
    /// needs `validated`).
    fn recheck_interval(&self) -> Option<Duration> {
        self.cfg.recheck_cached_data.interval().filter(|d| !d.is_zero())
    }

    /// `key` of store `store` was seen at `generation` just now. Only object stores
    /// (`remote`) keep the record: local hits are checked every batch ([`Self::must_recheck`]),
    /// so recording them would only cost a lock per decoded chunk.
    fn validated_now(&self, store: &Arc<str>, key: &Arc<str>, generation: &crate::store::Generation, remote: bool) {
        if !remote {
            return;
        }
        let Some(interval) = self.recheck_interval() else { return };
        let mut v = self.validated.lock().unwrap_or_else(PoisonError::into_inner);
        if v.len() >= MAX_VALIDATED {
            v.retain(|_, (_, at)| at.elapsed() < interval);
            if v.len() >= MAX_VALIDATED {
                v.clear();
            }
        }
        v.insert((Arc::clone(store), Arc::clone(key)), (generation.clone(), Instant::now()));
    }

    /// `true` when a decoded-cache hit on `key` (cached at `generation`) must check the
    /// object now. The interval applies to object stores (`remote`) only: a local hit is
    /// checked every batch unless rechecks are off.
    fn must_recheck(&self, store: &Arc<str>, key: &Arc<str>, generation: &crate::store::Generation, remote: bool) -> bool {
        let Some(trusted) = crate::store::trusted_for(self.cfg.recheck_cached_data.interval(), remote, Duration::ZERO) else { return false };
        if trusted.is_zero() {
            return true;
        }
        let v = self.validated.lock().unwrap_or_else(PoisonError::into_inner);
        !v.get(&(Arc::clone(store), Arc::clone(key))).is_some_and(|(g, at)| g == generation && at.elapsed() < trusted)
    }

    /// The first batch that was to keep chunks `b` fetches from the device store and failed
    /// before its device work ran, and its error (`None`: `b` can run as planned).
    fn failed_producer(&self, b: &Batch) -> Option<(u64, crate::error::Error)> {
        let producers = b.store_producers();
        if producers.is_empty() {
            return None;
        }
        let f = self.failed_keepers.lock().unwrap_or_else(PoisonError::into_inner);
        producers.iter().find_map(|p| f.get(p).map(|e| (*p, e.clone())))
    }

    /// Runs `b` again, with the device store off for it, because batch `producer` (which
    /// was to keep chunks `b` fetches) failed with `cause` before its device work ran: its
    /// samples are resolved anew and every chunk is read and decoded by `b` itself, into
    /// the staging slab of its first run. What `b` was to keep is never written either: it
    /// is forgotten, and `b` recorded as a failed keeper, so the batches planned to read it
    /// are run again the same way at their pop. The new run finishes as any batch does
    /// (`finish`: into `done` under the same sequence number, for `pop` to take).
    fn rerun(self: &Arc<Self>, spawner: &Spawner, b: Batch, producer: u64, cause: &crate::error::Error) {
        let seq = b.seq;
        if !b.store_keep_ops().is_empty() {
            self.failed_keeper(seq, cause.clone().context(format!("batch {seq} read chunks that batch {producer} was to keep on the device, and batch {producer} failed")));
        }
        self.stats.store_replan();
        let Batch { lease, samples, .. } = b;
        // Each valid sample's first ticket was taken by its first run: resolve it again.
        let samples = samples.into_iter().map(|s| SampleSpec { ticket: s.ticket.map(|_| self.prefetch.submit(&s.uri, &s.aabb)), ..s }).collect();
        let mut batch = InFlight::new(seq, samples, Instant::now());
        batch.rerun = true;
        let batch = Arc::new(batch);
        batch.set_lease(lease);
        self.window().in_flight += 1;
        self.running.fetch_add(1, Ordering::AcqRel);
        let guard = JobGuard { shared: Arc::clone(self), batch: Arc::clone(&batch) };
        let run = std::panic::AssertUnwindSafe(|| dispatch(self, spawner, &batch, &VecDeque::new()));
        match std::panic::catch_unwind(run) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => batch.fail(e),
            Err(p) => batch.fail(err!(Internal, "internal error planning batch {seq} again (a bug; please report it): {}", batch::panic_text(&*p))),
        }
        drop(guard);
    }

    /// Batch `seq`, planned to keep chunks in the device store, never writes them (it failed,
    /// or runs again without the store): they are forgotten, and `e` kept for the batches
    /// planned to fetch them (bounded: the oldest dropped first).
    fn failed_keeper(&self, seq: u64, e: crate::error::Error) {
        self.device_store.lock().unwrap_or_else(PoisonError::into_inner).forget_producer(seq);
        let mut f = self.failed_keepers.lock().unwrap_or_else(PoisonError::into_inner);
        f.insert(seq, e);
        while f.len() > MAX_FAILED_KEEPERS {
            f.pop_first();
        }
    }

    fn finish(&self, batch: &InFlight) {
        // Pins go back before the batch stops counting as in flight: a scheduler that saw
        // no batch in flight and no room would otherwise fail a batch that fits.
        if let Some(mut r) = batch.resolved.lock().unwrap_or_else(PoisonError::into_inner).take() {
            self.prefetch.release(&mut r);
        }
        self.running.fetch_sub(1, Ordering::AcqRel);
        let error = batch.error.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let (Some(e), true) = (&error, batch.keeps.load(Ordering::Acquire)) {
            // Its device work never runs: what it was to keep is never written. Forget it
            // (before the batch counts as done, so no later plan reads it) and remember the
            // error for the batches already planned to read it (checked at their pop).
            self.failed_keeper(batch.seq, e.clone());
        }
        let lease = batch.lease.lock().unwrap_or_else(PoisonError::into_inner).take();
        let result = match (error, lease) {
            (Some(e), _) => Err(e),
            (None, Some(lease)) => Ok(Batch {
                seq: batch.seq,
                lease,
                shape: std::iter::once(i64::from(self.cfg.samples_per_batch)).chain(self.cfg.sample_shape.iter().map(|&s| s as i64)).collect(),
                dtype: self.cfg.dtype,
                samples: batch.samples.clone(),
                device: batch.device.lock().unwrap_or_else(PoisonError::into_inner).take(),
            }),
            (None, None) => Err(err!(Shutdown, "batch {} has no output buffer", batch.seq)),
        };
        if !batch.rerun {
            // A re-run batch was counted when its first run finished.
            self.stats.batch_done(batch.formed_at.elapsed(), result.is_ok());
        }
        let mut w = self.window();
        w.in_flight -= 1;
        w.done.insert(batch.seq, result);
        drop(w);
        self.changed.notify_all();
    }
}

/// A running pipeline. `push`, `pop`, `stats_json` and `close` may be called from any
/// thread.
pub struct Pipeline {
    shared: Arc<Shared>,
    jobs: Mutex<Option<Sender<BatchJob>>>,
    scheduler: Mutex<Option<(JoinHandle<()>, Arc<AtomicBool>)>>,
    pool: Arc<Mutex<Option<WorkerPool>>>,
    /// Queues jobs on `pool` without its lock (which the scheduler holds while it waits for
    /// an output buffer): `pop` re-runs a batch with it.
    spawner: Spawner,
    /// Grows the pool by `n_remote_io_threads` at the first object store sample.
    grower: crate::io::Grower,
    /// Set once the pool was grown for object stores.
    remote_grown: AtomicBool,
}

impl Pipeline {
    /// Validates `cfg`, fixes every resource and starts the threads.
    ///
    /// # Errors
    /// InvalidArgument (naming the knob) for an invalid config; OutOfMemory when threads
    /// cannot start or one batch's buffer cannot be allocated. (Cache capacities are checked
    /// against an array's geometry when the prefetcher first sees it: prefetch's module doc.)
    pub fn new(cfg: Config) -> Result<Self> {
        cfg.validate()?;
        let gpu_mode = cfg.decodes_on_device();
        let slab_bytes = if gpu_mode { cfg.staging_bytes } else { cfg.batch_bytes()? };
        let buffers = Arc::new(BufferPool::new(cfg.n_batch_buffers as usize, slab_bytes)?);
        let pool = WorkerPool::new(cfg.n_io_threads as usize)?;
        let prefetch = Prefetcher::new(
            prefetch::Options {
                samples_per_batch: cfg.samples_per_batch,
                sample_shape: cfg.sample_shape.clone(),
                n_array_meta: cfg.n_array_meta_cache as usize,
                n_shard_index: cfg.n_shard_index_cache as usize,
                n_chunk_layout: cfg.n_chunk_layout_cache as usize,
                // Metadata loads take at most half the pool, so the chunk reads of the
                // batches in flight are never starved by the lookahead.
                max_inflight: (cfg.n_io_threads as usize).div_ceil(2),
                layouts: gpu_mode && cfg.n_chunk_layout_cache > 0,
                storage: Arc::new(cfg.storage_options.clone()),
                recheck_metadata: cfg.recheck_cached_data.interval(),
            },
            pool.spawner(),
        );
        prefetch.check_arrays(&cfg.arrays)?;
        let grower = pool.grower();
        let spawner = pool.spawner();
        let shared = Arc::new(Shared {
            gpu_mode,
            running: AtomicUsize::new(0),
            decoded: Mutex::new({
                // The device path decodes on the GPU: no host-side cache of decoded chunks.
                let policy = cfg.decoded_cache();
                crate::cache::decoded::DecodedCache::new(if gpu_mode { 0 } else { policy.bytes }, policy.window_batches)
            }),
            validated: Mutex::new(HashMap::new()),
            device_store: Mutex::new(crate::cache::device::DeviceStore::new(if gpu_mode { cfg.device_store_bytes() } else { 0 })),
            failed_keepers: Mutex::new(BTreeMap::new()),
            buffers,
            prefetch,
            stats: Stats::default(),
            window: Mutex::new(Window::default()),
            changed: Condvar::new(),
            shutdown: AtomicBool::new(false),
            cfg,
        });
        let pool = Arc::new(Mutex::new(Some(pool)));
        let (tx, rx) = unbounded::<BatchJob>();
        let scheduler = {
            let shared = Arc::clone(&shared);
            let pool = Arc::clone(&pool);
            let done = Arc::new(AtomicBool::new(false));
            let flag = Arc::clone(&done);
            let t = std::thread::Builder::new()
                .name("damacy-scheduler".into())
                .spawn(move || {
                    schedule(&shared, &pool, &rx);
                    flag.store(true, Ordering::Release);
                })
                .map_err(|e| err!(OutOfMemory, "cannot start the scheduler thread: {e}"))?;
            (t, done)
        };
        let this = Self { shared, jobs: Mutex::new(Some(tx)), scheduler: Mutex::new(Some(scheduler)), pool, spawner, grower, remote_grown: AtomicBool::new(false) };
        if let Some(uri) = this.shared.cfg.arrays.iter().find(|u| crate::store::is_remote_uri(u)) {
            this.reading_remote(uri)?;
        }
        Ok(this)
    }

    /// Grows the pool (once) for reads from an object store: each blocks a thread for a
    /// round trip, so `n_io_threads` alone would allow that many requests in flight.
    fn reading_remote(&self, uri: &str) -> Result<()> {
        let cfg = &self.shared.cfg;
        if cfg.n_remote_io_threads == 0 || self.remote_grown.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let n = cfg.n_io_threads as usize + cfg.n_remote_io_threads as usize;
        self.grower.grow_to(n).map_err(|e| err!(OutOfMemory, "{uri}: cannot start the {} threads of n_remote_io_threads: {}", cfg.n_remote_io_threads, e.message()))?;
        // Metadata loads may then take half the grown pool, as they take half of it before.
        self.shared.prefetch.raise_max_inflight(n.div_ceil(2));
        Ok(())
    }

    /// Offers one sample; `Ok(false)` when the lookahead window is full.
    ///
    /// A box whose extent differs from `sample_shape` is accepted and fails its batch with
    /// InvalidArgument at `pop`.
    ///
    /// # Errors
    /// Shutdown after `close`.
    pub fn push(&self, uri: &str, starts: &[i64], stops: &[i64]) -> Result<bool> {
        self.push_with(uri, starts, stops, None)
    }

    /// [`push`](Self::push) with the sample's transform (`ffi::SampleTransform`), applied
    /// where its batch is made (CPU path: by the workers; device path: by the extension's
    /// assemble kernel, [`Batch::transforms`]); a transform this pipeline cannot apply fails
    /// the sample's batch (InvalidArgument), as a bad box does.
    ///
    /// # Errors
    /// As [`push`](Self::push).
    pub fn push_with(&self, uri: &str, starts: &[i64], stops: &[i64], transform: Option<SampleTransform>) -> Result<bool> {
        let cfg = &self.shared.cfg;
        // An invalid box does not fail `push`: like every other problem with a sample, it
        // fails the sample's batch, so batch boundaries stay where the caller expects them.
        let extent: Option<Vec<i64>> = starts.iter().zip(stops).map(|(a, b)| b.checked_sub(*a)).collect();
        let error = if starts.len() != stops.len() {
            Some(err!(InvalidArgument, "{uri}: box has {} starts and {} stops", starts.len(), stops.len()))
        } else if extent.as_ref().is_none_or(|ext| ext.len() != cfg.sample_shape.len() || ext.iter().zip(&cfg.sample_shape).any(|(&e, &s)| u64::try_from(e) != Ok(s))) {
            let aabb: Vec<(i64, i64)> = starts.iter().copied().zip(stops.iter().copied()).collect();
            Some(err!(InvalidArgument, "{uri}: box {aabb:?} has an extent other than sample_shape {:?}", cfg.sample_shape))
        } else if uri.is_empty() {
            Some(err!(InvalidArgument, "empty uri"))
        } else {
            transform.as_ref().and_then(|t| transform::check(cfg, uri, t))
        };
        if error.is_none() && !self.remote_grown.load(Ordering::Acquire) && crate::store::is_remote_uri(uri) {
            self.reading_remote(uri)?;
        }
        let mut w = self.shared.window();
        if self.shared.shutdown.load(Ordering::Acquire) {
            return Err(err!(Shutdown, "push on a closed pipeline"));
        }
        if w.unpopped >= u64::from(cfg.lookahead()) {
            return Ok(false);
        }
        let aabb: Vec<(i64, i64)> = starts.iter().copied().zip(stops.iter().copied()).collect();
        let ticket = error.is_none().then(|| self.shared.prefetch.submit(uri, &aabb));
        w.forming.push(SampleSpec { uri: uri.to_string(), aabb, error, ticket, transform });
        w.unpopped += 1;
        self.shared.stats.sample_pushed();
        if w.forming.len() == cfg.samples_per_batch as usize {
            let job = BatchJob { seq: w.formed, samples: std::mem::take(&mut w.forming), formed_at: Instant::now() };
            w.formed += 1;
            w.in_flight += 1;
            let sent = self.jobs.lock().unwrap_or_else(PoisonError::into_inner).as_ref().is_some_and(|tx| tx.send(job).is_ok());
            if !sent {
                return Err(err!(Shutdown, "push on a closed pipeline"));
            }
        }
        Ok(true)
    }

    /// The next batch in push order, waiting at most `timeout_s` (negative: the config's
    /// `pop_timeout_s`).
    ///
    /// # Errors
    /// The batch's own error (its pipeline stays usable); TryAgain when the next batch is
    /// not complete or not ready within the timeout; PoolStarved when every output buffer is held
    /// by live batches; Shutdown after `close`.
    pub fn pop(&self, timeout_s: f64) -> Result<Box<Batch>> {
        let timeout = if timeout_s < 0.0 || !timeout_s.is_finite() { self.shared.cfg.pop_timeout_s } else { timeout_s };
        let deadline = Instant::now() + Duration::from_secs_f64(timeout.min(1e9));
        let spb = u64::from(self.shared.cfg.samples_per_batch);
        let mut w = self.shared.window();
        loop {
            if self.shared.shutdown.load(Ordering::Acquire) {
                return Err(err!(Shutdown, "pop on a closed pipeline"));
            }
            let seq = w.next_pop;
            if let Some(result) = w.done.remove(&seq) {
                // Every producer of this batch's store fetches is an earlier batch, finished
                // before this one is popped: its outcome is known. One that failed before its
                // device work ran never writes what this batch would fetch: this batch runs
                // again without the store (its device work is launched only after this pop),
                // and this loop waits for that run as for any batch.
                let result = match result.map(|b| (self.shared.failed_producer(&b), b)) {
                    Ok((Some((p, cause)), b)) => {
                        drop(w);
                        self.shared.rerun(&self.spawner, b, p, &cause);
                        w = self.shared.window();
                        continue;
                    }
                    Ok((None, b)) => Ok(b),
                    Err(e) => Err(e),
                };
                w.next_pop += 1;
                w.unpopped -= spb;
                // A failed batch reaches the caller now, as the error; a finished one when
                // the extension says so (`delivered`).
                w.undelivered += u64::from(result.is_ok());
                drop(w);
                self.shared.changed.notify_all();
                return result.map(|b| {
                    b.lease.mark_popped();
                    Box::new(b)
                });
            }
            if seq < w.formed && self.shared.buffers.starved() {
                return Err(err!(
                    PoolStarved,
                    "all {} output buffers are held by live batch tensors; drop (or .clone()) batches you keep, or raise `n_batch_buffers`",
                    self.shared.cfg.n_batch_buffers
                ));
            }
            let now = Instant::now();
            if now >= deadline {
                if seq >= w.formed {
                    return Err(err!(TryAgain, "no complete batch pushed within the timeout: {} sample(s) pushed toward the next batch, samples_per_batch = {spb}", w.forming.len()));
                }
                return Err(err!(TryAgain, "batch {seq} not ready within the timeout (pop_timeout_s or the timeout given to pop)"));
            }
            let wait = (deadline - now).min(Duration::from_millis(100));
            w = self.shared.changed.wait_timeout(w, wait).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    /// `n` more batches popped earlier reached the caller (the extension keeps device
    /// batches launched ahead, so a popped batch reaches the caller later); `failed`: they
    /// reached it as an error raised on the device side (counted in `batches_failed`, not
    /// `batches`).
    pub fn delivered(&self, n: u64, failed: bool) {
        let mut w = self.shared.window();
        let n = n.min(w.undelivered);
        w.undelivered -= n;
        drop(w);
        if failed {
            // A batch failed on the device: what it kept in the device store cannot be
            // trusted (the extension fails the batches already launched that read it).
            self.shared.device_store.lock().unwrap_or_else(PoisonError::into_inner).clear();
            self.shared.stats.failed(n);
        } else {
            self.shared.stats.delivered(n);
        }
    }

    /// How many more samples `push` takes before it returns `false`: the look-ahead window's
    /// free places (only `push` fills them and only `pop` frees them, `samples_per_batch` at
    /// a time, so between the caller's own calls this is exact).
    pub fn window_room(&self) -> u64 {
        let w = self.shared.window();
        u64::from(self.shared.cfg.lookahead()).saturating_sub(w.unpopped)
    }

    /// Samples pushed and not yet delivered as part of a batch.
    pub fn pending_samples(&self) -> u64 {
        let w = self.shared.window();
        w.unpopped + w.undelivered * u64::from(self.shared.cfg.samples_per_batch)
    }

    /// Statistics.
    pub fn stats(&self) -> crate::ffi::records::Stats {
        // The device path has no host-side decoded cache: its counts are the device store's.
        let decoded = if self.shared.gpu_mode {
            self.shared.device_store.lock().unwrap_or_else(PoisonError::into_inner).stats()
        } else {
            self.shared.decoded.lock().unwrap_or_else(PoisonError::into_inner).stats()
        };
        self.shared.stats.record(&self.shared.prefetch.stats(), decoded, &self.shared.buffers)
    }

    /// Statistics as a JSON object.
    pub fn stats_json(&self) -> String {
        serde_json::to_string(&self.stats()).unwrap_or_default()
    }

    /// Stops the threads; returns within about [`CLOSE_TIMEOUT`], also with work in flight
    /// or reads stuck in the kernel (those threads are detached). Idempotent. Batches
    /// already popped stay valid.
    pub fn close(&self) {
        let deadline = Instant::now() + CLOSE_TIMEOUT;
        self.shared.shutdown.store(true, Ordering::Release);
        self.shared.changed.notify_all();
        self.shared.buffers.close();
        self.shared.prefetch.close();
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some((t, done)) = self.scheduler.lock().unwrap_or_else(PoisonError::into_inner).take() {
            while !done.load(Ordering::Acquire) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            if done.load(Ordering::Acquire) {
                let _ = t.join();
            } // else: detached, stuck in a read; it exits when the read returns.
        }
        if let Some(mut pool) = self.pool.lock().unwrap_or_else(PoisonError::into_inner).take() {
            pool.shutdown(deadline.saturating_duration_since(Instant::now()));
        }
        let mut w = self.shared.window();
        w.done.clear();
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.close();
    }
}

/// The scheduler thread: resolves, plans and dispatches batches in push order. Batches
/// formed meanwhile wait in `later` (in order), where the planner sees them: the look-ahead
/// window of the device chunk store.
fn schedule(shared: &Arc<Shared>, pool: &Arc<Mutex<Option<WorkerPool>>>, rx: &Receiver<BatchJob>) {
    let mut later: VecDeque<BatchJob> = VecDeque::new();
    loop {
        let job = match later.pop_front() {
            Some(job) => job,
            None => match rx.recv() {
                Ok(job) => job,
                Err(_) => break,
            },
        };
        later.extend(rx.try_iter());
        let batch = Arc::new(InFlight::new(job.seq, job.samples, job.formed_at));
        shared.running.fetch_add(1, Ordering::AcqRel);
        // The scheduler holds one count until dispatch is done, so the batch cannot finish
        // early; dropping this guard releases it.
        let guard = JobGuard { shared: Arc::clone(shared), batch: Arc::clone(&batch) };
        if shared.shutdown.load(Ordering::Acquire) {
            batch.fail(err!(Shutdown, "pipeline closed"));
            continue;
        }
        let pool_guard = pool.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(pool) = pool_guard.as_ref() else { continue };
        // A panic while planning (a bug) fails this batch, never the scheduler.
        let run = std::panic::AssertUnwindSafe(|| dispatch(shared, &pool.spawner(), &batch, &later));
        match std::panic::catch_unwind(run) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => batch.fail(e),
            Err(p) => batch.fail(err!(Internal, "internal error planning batch {} (a bug; please report it): {}", batch.seq, batch::panic_text(&*p))),
        }
        drop(pool_guard);
        drop(guard);
    }
}

fn dispatch(shared: &Arc<Shared>, pool: &Spawner, batch: &Arc<InFlight>, later: &VecDeque<BatchJob>) -> Result<()> {
    let t0 = Instant::now();
    // A re-run (on the popping thread) waits for cache room freed by the other batches at
    // most `pop_timeout_s`: the scheduler's batch may hold its pins while it waits for an
    // output buffer that only a pop frees.
    let wait_until = batch.rerun.then(|| t0 + Duration::from_secs_f64(shared.cfg.pop_timeout_s.min(1e9)));
    let others = || shared.running.load(Ordering::Acquire) > 1 && wait_until.is_none_or(|t| Instant::now() < t);
    let tickets: Vec<u64> = batch.samples.iter().filter_map(|s| s.ticket).collect();
    let mut resolved = shared.prefetch.resolve_batch(&tickets, &others)?;
    if let Some(e) = batch.samples.iter().find_map(|s| s.error.clone()) {
        shared.prefetch.release(&mut resolved);
        return Err(e);
    }
    let plan = {
        let samples: Vec<ResolvedSample<'_>> = resolved.arrays.iter().zip(&batch.samples).map(|(array, s)| ResolvedSample { array, aabb: &s.aabb }).collect();
        plan::plan_batch(&samples, &resolved, shared.cfg.out_of_bounds_fill())
    };
    let plan = match plan {
        Ok(plan) => plan,
        Err(e) => {
            batch.set_resolved(resolved);
            return Err(e);
        }
    };
    shared.stats.planned(t0.elapsed(), &plan);
    let later = later.iter().flat_map(|j| j.samples.iter().map(move |s| (j.seq, s.uri.as_str(), s.aabb.as_slice())));
    let r = if shared.gpu_mode { run::run_device(shared, pool, batch, plan, &resolved.layouts(), later) } else { run::run_cpu(shared, pool, batch, plan, later) };
    batch.set_resolved(resolved);
    r
}

/// Opens the array at `uri` (its metadata and decoders); with `usage`, also counts its
/// stored objects and bytes (listing the whole array).
///
/// # Errors
/// NotFound, InvalidArgument, DtypeMismatch, Storage from reading the metadata or listing.
pub(crate) fn open_array(uri: &str, usage: bool) -> Result<(Arc<plan::Array>, (u64, u64))> {
    let array = prefetch::load_array(uri)?;
    let du = if usage { array.store.du()? } else { (0, 0) };
    Ok((Arc::new(array), du))
}

/// What `uri` names, for `info`: an array (with its usage, as [`open_array`]), or an
/// OME-NGFF multiscale group without a level (with its levels' metadata).
///
/// # Errors
/// As [`open_array`], and those of opening any level of a multiscale group.
pub(crate) fn open_node(uri: &str, usage: bool) -> Result<Node> {
    Ok(match prefetch::open_node(uri)? {
        prefetch::Opened::Array(array) => {
            let du = if usage { array.store.du()? } else { (0, 0) };
            Node::Array(Arc::new(*array), du)
        }
        prefetch::Opened::Multiscale(m) => Node::Multiscale(m),
    })
}

/// What [`open_node`] found.
pub(crate) enum Node {
    /// An array and its (objects, bytes) stored (zeros without `usage`).
    Array(Arc<plan::Array>, (u64, u64)),
    /// A multiscale group's levels.
    Multiscale(prefetch::MultiscaleInfo),
}

#[cfg(test)]
mod tests;
