//! pipeline: the public object. `push` adds samples to the lookahead window (each gets a
//! prefetch ticket resolved in the background) and forms batches in push order; a scheduler
//! thread takes each batch's resolved samples from the prefetcher, plans the batch and
//! hands its chunk ops to the worker pool, which reads, decodes and assembles straight into
//! the batch's output buffer; `pop` returns batches in push order.
//!
//! Owns: the config, the prefetcher (caches), the worker pool, the output buffer pool and
//! the stats. Resources are fixed at construction: `n_io_threads` threads, at most
//! `n_batch_buffers` output buffers, cache capacities. A failed batch is returned as its
//! error by the `pop` that reaches it; the pipeline then continues with the next batch.

mod buffers;
mod config;
mod device;
mod stats;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{unbounded, Receiver, Sender};

pub use config::{Config, OutDtype};

use crate::assemble::{self, OutBuffer};
use crate::error::{err, Error, Result};
use crate::io::WorkerPool;
use crate::plan::{self, ChunkOp, ChunkSource, ResolvedSample};
use crate::prefetch::{self, Prefetcher, Resolved};
use crate::store;
use buffers::{BufferPool, Lease};
use stats::Stats;

/// One sample: the array's uri and its box.
#[derive(Debug, Clone)]
struct SampleSpec {
    uri: String,
    aabb: Vec<(i64, i64)>,
    /// Set when the sample was invalid at push: its batch fails with this error.
    error: Option<Error>,
    /// Its prefetch ticket (valid samples).
    ticket: Option<u64>,
}

struct BatchJob {
    seq: u64,
    samples: Vec<SampleSpec>,
    formed_at: Instant,
}

/// The in-flight state of one batch, shared by its chunk jobs.
struct InFlight {
    seq: u64,
    samples: Vec<SampleSpec>,
    formed_at: Instant,
    remaining: AtomicUsize,
    error: Mutex<Option<Error>>,
    lease: Mutex<Option<Lease>>,
    resolved: Mutex<Option<Resolved>>,
    device: device::DeviceSlot,
}

impl InFlight {
    fn fail(&self, e: Error) {
        let mut slot = self.error.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(e);
        }
    }
    fn failed(&self) -> bool {
        self.error.lock().unwrap_or_else(PoisonError::into_inner).is_some()
    }
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
}

impl Shared {
    fn window(&self) -> MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn finish(&self, batch: &InFlight) {
        // Pins go back before the batch stops counting as in flight: a scheduler that saw
        // no batch in flight and no room would otherwise fail a batch that fits.
        if let Some(mut r) = batch.resolved.lock().unwrap_or_else(PoisonError::into_inner).take() {
            self.prefetch.release(&mut r);
        }
        self.running.fetch_sub(1, Ordering::AcqRel);
        let error = batch.error.lock().unwrap_or_else(PoisonError::into_inner).take();
        let lease = batch.lease.lock().unwrap_or_else(PoisonError::into_inner).take();
        let result = match (error, lease) {
            (Some(e), _) => Err(e),
            (None, Some(lease)) => Ok(Batch {
                lease,
                shape: std::iter::once(i64::from(self.cfg.samples_per_batch)).chain(self.cfg.sample_shape.iter().map(|&s| s as i64)).collect(),
                dtype: self.cfg.dtype,
                samples: batch.samples.clone(),
                device: device::take(batch),
            }),
            (None, None) => Err(err!(Shutdown, "batch {} has no output buffer", batch.seq)),
        };
        self.stats.batch_done(batch.formed_at.elapsed(), result.is_ok());
        let mut w = self.window();
        w.in_flight -= 1;
        w.done.insert(batch.seq, result);
        drop(w);
        self.changed.notify_all();
    }
}

/// Decrements a batch's outstanding-job count when dropped (also on unwind), finishing the
/// batch when it reaches zero.
struct JobGuard {
    shared: Arc<Shared>,
    batch: Arc<InFlight>,
}

impl Drop for JobGuard {
    fn drop(&mut self) {
        if self.batch.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.finish(&self.batch);
        }
    }
}

/// A running pipeline. `push`, `pop`, `stats_json` and `close` may be called from any
/// thread.
pub struct Pipeline {
    shared: Arc<Shared>,
    jobs: Mutex<Option<Sender<BatchJob>>>,
    scheduler: Mutex<Option<JoinHandle<()>>>,
    pool: Arc<Mutex<Option<WorkerPool>>>,
}

/// One finished batch: owns its output buffer (returned to the pipeline's pool on drop).
pub struct Batch {
    lease: Lease,
    shape: Vec<i64>,
    dtype: OutDtype,
    samples: Vec<SampleSpec>,
    device: Option<device::DeviceWork>,
}

impl Pipeline {
    /// Validates `cfg`, fixes every resource and starts the threads.
    ///
    /// # Errors
    /// InvalidArgument (naming the knob) for an invalid config; OutOfMemory when threads
    /// cannot start. (Cache capacities are checked against an array's geometry when the
    /// prefetcher first sees it: prefetch's module doc.)
    pub fn new(cfg: Config) -> Result<Self> {
        cfg.validate()?;
        // What a batch needs of each cache depends on the arrays' geometry: the prefetcher
        // checks the capacities when it first sees an array (prefetch's module doc).
        let pool = WorkerPool::new(cfg.n_io_threads as usize)?;
        let gpu_mode = cfg.device.starts_with("cuda") && cfg.decode != "cpu";
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
            },
            pool.spawner(),
        );
        prefetch.check_arrays(&cfg.arrays)?;
        let slab_bytes = if gpu_mode { cfg.staging_bytes as usize } else { cfg.batch_bytes() };
        let shared = Arc::new(Shared {
            gpu_mode,
            running: AtomicUsize::new(0),
            decoded: Mutex::new(crate::cache::decoded::DecodedCache::new(cfg.decoded_cache_bytes)),
            buffers: Arc::new(BufferPool::new(cfg.n_batch_buffers as usize, slab_bytes)),
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
            std::thread::Builder::new()
                .name("damacy-scheduler".into())
                .spawn(move || schedule(&shared, &pool, &rx))
                .map_err(|e| err!(OutOfMemory, "cannot start the scheduler thread: {e}"))?
        };
        Ok(Self { shared, jobs: Mutex::new(Some(tx)), scheduler: Mutex::new(Some(scheduler)), pool })
    }

    /// Offers one sample; `Ok(false)` when the lookahead window is full.
    ///
    /// A box whose extent differs from `sample_shape` is accepted and fails its batch with
    /// InvalidArgument at `pop`.
    ///
    /// # Errors
    /// Shutdown after `close`.
    pub fn push(&self, uri: &str, starts: &[i64], stops: &[i64]) -> Result<bool> {
        let cfg = &self.shared.cfg;
        // An invalid box does not fail `push`: like every other problem with a sample, it
        // fails the sample's batch, so batch boundaries stay where the caller expects them.
        let extent: Vec<i64> = starts.iter().zip(stops).map(|(a, b)| b - a).collect();
        let error = if starts.len() != stops.len() {
            Some(err!(InvalidArgument, "{uri}: box has {} starts and {} stops", starts.len(), stops.len()))
        } else if extent.len() != cfg.sample_shape.len() || extent.iter().zip(&cfg.sample_shape).any(|(&e, &s)| e != s as i64) {
            Some(err!(InvalidArgument, "{uri}: box extent {extent:?} differs from sample_shape {:?}", cfg.sample_shape))
        } else if uri.is_empty() {
            Some(err!(InvalidArgument, "empty uri"))
        } else {
            None
        };
        let mut w = self.shared.window();
        if self.shared.shutdown.load(Ordering::Acquire) {
            return Err(err!(Shutdown, "push on a closed pipeline"));
        }
        if w.unpopped >= u64::from(cfg.lookahead_samples) {
            return Ok(false);
        }
        let aabb: Vec<(i64, i64)> = starts.iter().copied().zip(stops.iter().copied()).collect();
        let ticket = error.is_none().then(|| self.shared.prefetch.submit(uri, &aabb));
        w.forming.push(SampleSpec { uri: uri.to_string(), aabb, error, ticket });
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
                w.next_pop += 1;
                w.unpopped -= spb;
                drop(w);
                self.shared.changed.notify_all();
                return result.map(|b| {
                    b.lease.mark_popped();
                    self.shared.stats.batch_popped();
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
                    return Err(err!(TryAgain, "no complete batch pushed after {timeout} s: {} sample(s) pushed toward the next batch, samples_per_batch = {spb}", w.forming.len()));
                }
                return Err(err!(TryAgain, "batch {seq} not ready after {timeout} s (pop_timeout_s)"));
            }
            let wait = (deadline - now).min(Duration::from_millis(100));
            w = self.shared.changed.wait_timeout(w, wait).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    /// Samples pushed and not yet returned by `pop`.
    pub fn pending_samples(&self) -> u64 {
        self.shared.window().unpopped
    }

    /// Statistics as a JSON object.
    pub fn stats_json(&self) -> String {
        let decoded = self.shared.decoded.lock().unwrap_or_else(PoisonError::into_inner).stats();
        self.shared.stats.to_json(&self.shared.prefetch.stats(), decoded, &self.shared.buffers)
    }

    /// Stops the threads; always returns, also with work in flight. Idempotent. Batches
    /// already popped stay valid.
    pub fn close(&self) {
        self.shared.shutdown.store(true, Ordering::Release);
        self.shared.changed.notify_all();
        self.shared.buffers.close();
        self.shared.prefetch.close();
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(t) = self.scheduler.lock().unwrap_or_else(PoisonError::into_inner).take() {
            let _ = t.join();
        }
        if let Some(mut pool) = self.pool.lock().unwrap_or_else(PoisonError::into_inner).take() {
            pool.shutdown();
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

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch").field("shape", &self.shape).field("dtype", &self.dtype).finish_non_exhaustive()
    }
}

impl Batch {
    /// The output bytes.
    pub fn bytes(&mut self) -> &mut [u8] {
        self.lease.bytes_mut()
    }
    /// `[samples_per_batch, *sample_shape]`.
    pub fn shape(&self) -> Vec<i64> {
        self.shape.clone()
    }
    /// "f32" or "bf16".
    pub fn dtype(&self) -> String {
        self.dtype.name().into()
    }
    /// `true` when the batch carries device work instead of output bytes.
    pub fn is_gpu(&self) -> bool {
        self.device.is_some()
    }
    /// Staged compressed bytes (device path; the whole slab, ops index into it).
    pub fn staging(&mut self) -> &mut [u8] {
        if self.device.is_some() { self.lease.bytes_mut() } else { &mut [] }
    }
    /// Decoded arena size (device path).
    pub fn decoded_bytes(&self) -> u64 {
        self.device.as_ref().map_or(0, |d| d.decoded_bytes)
    }
    /// Decode ops (device path).
    pub fn decode_ops(&self) -> &[crate::ffi::GpuDecodeOp] {
        self.device.as_ref().map_or(&[], |d| &d.decode_ops)
    }
    /// Unshuffle ops (device path).
    pub fn unshuffle_ops(&self) -> &[crate::ffi::GpuUnshuffleOp] {
        self.device.as_ref().map_or(&[], |d| &d.unshuffle_ops)
    }
    /// The uri and chunk of decode op `i` (device path).
    pub fn decode_op_context(&self, i: u32) -> String {
        self.device.as_ref().map_or_else(String::new, |d| d.context(i as usize))
    }
    /// Copy and fill ops (device path).
    pub fn copy_ops(&self) -> &[crate::ffi::GpuCopyOp] {
        self.device.as_ref().map_or(&[], |d| &d.copy_ops)
    }
    /// The batch's samples as JSON.
    pub fn samples_json(&self) -> String {
        let v: Vec<_> = self.samples.iter().map(|s| serde_json::json!({"uri": s.uri, "aabb": s.aabb.iter().map(|&(a, b)| [a, b]).collect::<Vec<_>>()})).collect();
        serde_json::Value::Array(v).to_string()
    }
}

/// The scheduler thread: resolves, plans and dispatches batches in push order.
fn schedule(shared: &Arc<Shared>, pool: &Arc<Mutex<Option<WorkerPool>>>, rx: &Receiver<BatchJob>) {
    while let Ok(job) = rx.recv() {
        let batch = Arc::new(InFlight {
            seq: job.seq,
            samples: job.samples,
            formed_at: job.formed_at,
            remaining: AtomicUsize::new(1),
            error: Mutex::new(None),
            lease: Mutex::new(None),
            resolved: Mutex::new(None),
            device: Mutex::new(None),
        });
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
        if let Err(e) = dispatch(shared, pool, &batch) {
            batch.fail(e);
        }
        drop(pool_guard);
        drop(guard);
    }
}

fn dispatch(shared: &Arc<Shared>, pool: &WorkerPool, batch: &Arc<InFlight>) -> Result<()> {
    let cfg = &shared.cfg;
    let t0 = Instant::now();
    let others = || shared.running.load(Ordering::Acquire) > 1;
    let tickets: Vec<u64> = batch.samples.iter().filter_map(|s| s.ticket).collect();
    let mut resolved = shared.prefetch.resolve_batch(&tickets, &others)?;
    if let Some(e) = batch.samples.iter().find_map(|s| s.error.clone()) {
        shared.prefetch.release(&mut resolved);
        return Err(e);
    }
    let plan = {
        let samples: Vec<ResolvedSample<'_>> = resolved
            .arrays
            .iter()
            .zip(&batch.samples)
            .map(|((meta, root), s)| ResolvedSample { meta, root, uri: &s.uri, aabb: &s.aabb })
            .collect();
        plan::plan_batch(&samples, &resolved, cfg.out_of_bounds_fill)
    };
    let plan = match plan {
        Ok(plan) => plan,
        Err(e) => {
            *batch.resolved.lock().unwrap_or_else(PoisonError::into_inner) = Some(resolved);
            return Err(e);
        }
    };
    shared.stats.planned(t0.elapsed(), &plan);
    if shared.gpu_mode {
        let r = device::dispatch(shared, pool, batch, plan, &resolved.layouts());
        *batch.resolved.lock().unwrap_or_else(PoisonError::into_inner) = Some(resolved);
        return r;
    }
    *batch.resolved.lock().unwrap_or_else(PoisonError::into_inner) = Some(resolved);
    if plan.read_bytes > cfg.staging_bytes {
        return Err(err!(BudgetExceeded, "batch {} reads {} bytes, over staging_bytes = {}; raise `staging_bytes` or use smaller samples", batch.seq, plan.read_bytes, cfg.staging_bytes));
    }
    let lease = shared.buffers.acquire(&shared.shutdown).ok_or_else(|| err!(Shutdown, "pipeline closed"))?;
    // SAFETY: the lease's buffer lives in `batch.lease` until `finish`, which runs after
    // every job below dropped its guard; jobs write disjoint voxels (planner invariant).
    let out = unsafe { OutBuffer::new(lease.ptr(), lease.len(), cfg.dtype, cfg.sample_voxels()) };
    *batch.lease.lock().unwrap_or_else(PoisonError::into_inner) = Some(lease);

    // Ranges of shard files are read by coalesced read ops (adjacent chunks of one file in
    // one pread, up to max_read_op_bytes); each read job then decodes and assembles the
    // chunks it read. Whole-file and absent chunks get a job each; fills one job.
    // Chunks found decoded in the cache are not read: their op's source becomes Absent and
    // `cached` holds the bytes the job assembles from.
    let mut plan = plan;
    let mut cached: Vec<Option<Arc<Vec<u8>>>> = vec![None; plan.chunk_ops.len()];
    {
        let mut cache = shared.decoded.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.enabled() {
            for (i, op) in plan.chunk_ops.iter_mut().enumerate() {
                if let Some(v) = cache_key(&op.source).and_then(|k| cache.get(&k)) {
                    cached[i] = Some(v);
                    op.source = ChunkSource::Absent;
                }
            }
        }
    }
    let cached = Arc::new(cached);
    let staging = crate::plan::device::layout(&plan, cfg.max_read_op_bytes, MAX_READ_GAP, &|_| None);
    shared.stats.coalesced(&staging);
    let sample_shape = Arc::new(cfg.sample_shape.clone());
    let arrays = Arc::new(plan.arrays);
    if !plan.fill_ops.is_empty() {
        let (arrays, sample_shape, fills) = (Arc::clone(&arrays), Arc::clone(&sample_shape), plan.fill_ops);
        spawn_job(shared, pool, batch, move |_, _| {
            for f in &fills {
                let meta = &arrays[f.array as usize];
                // SAFETY: see `out` above.
                unsafe { assemble::fill_region(&meta.fill, meta.dtype, f.sample, &f.region, &out, &sample_shape) };
            }
            Ok(())
        });
    }
    let plan_ops = Arc::new(plan.chunk_ops);
    for read in staging.reads {
        let (ops, arrays, sample_shape) = (Arc::clone(&plan_ops), Arc::clone(&arrays), Arc::clone(&sample_shape));
        spawn_job(shared, pool, batch, move |shared, batch| {
            let t0 = Instant::now();
            let file = store::ReadFile::open(&read.path)?.ok_or_else(|| err!(Storage, "{}: shard file vanished", read.path.display()))?;
            let bytes = file.read_at(read.offset, read.len as usize)?;
            shared.stats.read_op(read.len, t0.elapsed());
            for &i in &read.chunks {
                let op = &ops[i];
                let ChunkSource::Range { offset, nbytes, .. } = op.source else { continue };
                let at = (offset - read.offset) as usize;
                let encoded = &bytes[at..at + nbytes as usize];
                let meta = &arrays[op.array as usize];
                let key = cache_key(&op.source);
                decode_and_assemble(shared, op, meta, Some(encoded), key, &out, &sample_shape).map_err(|e| chunk_context(e, batch, op))?;
            }
            Ok(())
        });
    }
    for i in 0..plan_ops.len() {
        if matches!(plan_ops[i].source, ChunkSource::Range { .. }) {
            continue;
        }
        let (ops, arrays, sample_shape, cached) = (Arc::clone(&plan_ops), Arc::clone(&arrays), Arc::clone(&sample_shape), Arc::clone(&cached));
        spawn_job(shared, pool, batch, move |shared, batch| {
            let op = &ops[i];
            let meta = &arrays[op.array as usize];
            if let Some(decoded) = &cached[i] {
                let t = Instant::now();
                for c in &op.copies {
                    // SAFETY: exclusive voxels (planner invariant).
                    unsafe { assemble::copy_region(decoded, meta.dtype, meta.chunk_shape(), c, &out, &sample_shape) };
                }
                shared.stats.chunk_cached(t.elapsed());
                return Ok(());
            }
            let t0 = Instant::now();
            let encoded = match &op.source {
                ChunkSource::File(path) => store::read_file(path).map_err(|e| chunk_context(e, batch, op))?,
                _ => None,
            };
            shared.stats.read_op(encoded.as_ref().map_or(0, |e| e.len() as u64), t0.elapsed());
            let key = encoded.as_ref().and_then(|_| cache_key(&op.source));
            decode_and_assemble(shared, op, meta, encoded.as_deref(), key, &out, &sample_shape).map_err(|e| chunk_context(e, batch, op))
        });
    }
    Ok(())
}

/// Largest gap between two chunk ranges of one file that a read op reads through.
const MAX_READ_GAP: u64 = 64 << 10;

fn chunk_context(e: Error, batch: &InFlight, op: &ChunkOp) -> Error {
    let uri = op.copies.first().map_or("?", |c| batch.samples[c.sample as usize].uri.as_str());
    e.context(format_args!("{uri}: chunk {:?}", op.coords))
}

/// Queues one job of `batch` on the pool; its error fails the batch. Jobs of a batch that
/// already failed, or of a closed pipeline, do nothing.
fn spawn_job(shared: &Arc<Shared>, pool: &WorkerPool, batch: &Arc<InFlight>, f: impl FnOnce(&Shared, &InFlight) -> Result<()> + Send + 'static) {
    batch.remaining.fetch_add(1, Ordering::AcqRel);
    let guard = JobGuard { shared: Arc::clone(shared), batch: Arc::clone(batch) };
    pool.spawn(move || {
        let guard = guard;
        if guard.shared.shutdown.load(Ordering::Acquire) || guard.batch.failed() {
            return;
        }
        if let Err(e) = f(&guard.shared, &guard.batch) {
            guard.batch.fail(e);
        }
    });
}

thread_local! {
    static DECODED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The decoded-cache key of a chunk stored at `source`.
fn cache_key(source: &ChunkSource) -> Option<crate::cache::decoded::ChunkKey> {
    match source {
        ChunkSource::Range { path, offset, .. } => Some(((**path).clone(), *offset)),
        ChunkSource::File(path) => Some((path.clone(), 0)),
        ChunkSource::Absent => None,
    }
}

/// Decodes one chunk's `encoded` bytes (None: absent, fill) and writes its copies; with a
/// `key` and the decoded cache on, keeps the decoded chunk for later batches.
fn decode_and_assemble(
    shared: &Shared,
    op: &ChunkOp,
    meta: &crate::zarr::ArrayMeta,
    encoded: Option<&[u8]>,
    key: Option<crate::cache::decoded::ChunkKey>,
    out: &OutBuffer,
    sample_shape: &[u64],
) -> Result<()> {
    let t1 = Instant::now();
    let Some(encoded) = encoded else {
        for c in &op.copies {
            // SAFETY: exclusive voxels (planner invariant).
            unsafe { assemble::fill_copy(&meta.fill, meta.dtype, c, out, sample_shape) };
        }
        shared.stats.chunk_filled(t1.elapsed());
        return Ok(());
    };
    let assemble_from = |buf: &[u8]| {
        let t2 = Instant::now();
        for c in &op.copies {
            // SAFETY: exclusive voxels (planner invariant).
            unsafe { assemble::copy_region(buf, meta.dtype, meta.chunk_shape(), c, out, sample_shape) };
        }
        shared.stats.chunk_decoded(0, std::time::Duration::ZERO, t2 - t1, t2.elapsed());
    };
    let caching = key.is_some() && shared.decoded.lock().unwrap_or_else(PoisonError::into_inner).enabled();
    if caching {
        let mut buf = vec![0u8; meta.codec.decoded_len()];
        meta.codec.decode_into(encoded, &mut buf)?;
        assemble_from(&buf);
        if let Some(key) = key {
            shared.decoded.lock().unwrap_or_else(PoisonError::into_inner).insert(key, Arc::new(buf));
        }
        return Ok(());
    }
    DECODED.with_borrow_mut(|buf| {
        buf.resize(meta.codec.decoded_len(), 0);
        meta.codec.decode_into(encoded, buf)?;
        assemble_from(buf);
        Ok(())
    })
}

/// Array facts as JSON: shape, dtype, chunk and shard shape, codecs, bytes on disk.
///
/// # Errors
/// NotFound, InvalidArgument, DtypeMismatch from reading the metadata.
pub fn array_info_json(uri: &str) -> Result<String> {
    let meta = prefetch::load_array_meta(uri)?;
    let root = store::array_root(uri)?;
    let (mut files, mut bytes) = (0u64, 0u64);
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => {
                    files += 1;
                    bytes += m.len();
                }
                Err(_) => {}
            }
        }
    }
    let sharding = meta.sharding.as_ref();
    Ok(serde_json::json!({
        "uri": uri,
        "shape": meta.shape,
        "data_type": meta.data_type,
        "chunk_shape": meta.chunk_shape(),
        "shard_shape": sharding.map(|_| meta.grid_shape.clone()),
        "index_location": sharding.map(|s| if s.index_at_start { "start" } else { "end" }),
        "codecs": meta.chunk_codecs,
        "files": files,
        "bytes_on_disk": bytes,
        "bytes_decoded": meta.shape.iter().product::<u64>() * meta.dtype.size() as u64,
    })
    .to_string())
}
