//! One batch in flight and one finished: the state its jobs share ([`InFlight`]), the
//! guard that finishes it when its last job ends ([`JobGuard`]; or, once, starts its next
//! phase instead: [`InFlight::then`]), how a job is queued
//! ([`spawn_job`]: an error *or a panic* fails the batch, typed and naming the job), and
//! the finished [`Batch`] handed to `pop`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use super::buffers::Lease;
use super::{OutDtype, Shared};
use crate::decode::device::DeviceOp;
use crate::error::{err, Error, Result};
use crate::ffi::records::{GpuChecksumOp, GpuCopyOp, GpuDecodeOp, GpuUnshuffleOp, SampleTransform};
use crate::io::Spawner;
use crate::prefetch::Resolved;

/// One sample: the array's uri and its box.
#[derive(Debug, Clone)]
pub(super) struct SampleSpec {
    pub(super) uri: String,
    pub(super) aabb: Vec<(i64, i64)>,
    /// Set when the sample was invalid at push: its batch fails with this error.
    pub(super) error: Option<Error>,
    /// Its prefetch ticket (valid samples).
    pub(super) ticket: Option<u64>,
    /// Its transform, applied where the batch is made (checked at push): by the pipeline's
    /// workers on the CPU path, by the extension on the device path.
    pub(super) transform: Option<SampleTransform>,
}

/// Device work of one batch, filled in by its jobs.
#[derive(Debug, Default)]
pub(super) struct DeviceWork {
    /// Decoded arena bytes.
    pub(super) decoded_bytes: u64,
    /// Decompression ops.
    pub(super) decode_ops: Vec<GpuDecodeOp>,
    /// Content checksums of decode ops (zstd frames with the flag).
    pub(super) checksum_ops: Vec<GpuChecksumOp>,
    /// Unshuffle ops.
    pub(super) unshuffle_ops: Vec<GpuUnshuffleOp>,
    /// Copy and fill ops.
    pub(super) copy_ops: Vec<GpuCopyOp>,
    /// Per decode op: the chunk op it belongs to (index into `chunk_names`).
    pub(super) decode_chunk: Vec<u32>,
    /// Per chunk op: "uri: chunk [coords]".
    pub(super) chunk_names: Vec<String>,
    /// Device chunk store: copies out of the pool into the decoded arena (chunks an earlier
    /// batch kept), run before assembling (`Copy` decode ops: source offsets in the pool).
    pub(super) store_fetch: Vec<GpuDecodeOp>,
    /// Device chunk store: copies of decoded chunks from the arena into the pool, run after
    /// the fetches (destination offsets in the pool).
    pub(super) store_keep: Vec<GpuDecodeOp>,
    /// The pool's size (0: no store).
    pub(super) store_bytes: u64,
    /// The batches that keep the chunks `store_fetch` reads (this batch fails if one of
    /// them failed).
    pub(super) producers: Vec<u64>,
}

impl DeviceWork {
    /// "uri: chunk [..]" of decode op `i`.
    pub(super) fn context(&self, i: usize) -> String {
        self.decode_chunk.get(i).and_then(|&c| self.chunk_names.get(c as usize)).cloned().unwrap_or_else(|| format!("decode op {i}"))
    }

    /// Appends one chunk's device ops. A checksum applies to the decode op just before it
    /// (`decode::device::prepare` emits it so).
    pub(super) fn push(&mut self, chunk: usize, ops: Vec<DeviceOp>) {
        for op in ops {
            match op {
                DeviceOp::Decode(o) => {
                    self.decode_ops.push(o);
                    self.decode_chunk.push(chunk as u32);
                }
                DeviceOp::Checksum(expected) => {
                    if let Some(last) = self.decode_ops.len().checked_sub(1) {
                        self.checksum_ops.push(GpuChecksumOp { decode_op: last as u32, expected });
                    }
                }
                DeviceOp::Unshuffle(o) => self.unshuffle_ops.push(o),
            }
        }
    }
}

/// The in-flight state of one batch, shared by its jobs.
pub(super) struct InFlight {
    pub(super) seq: u64,
    pub(super) samples: Vec<SampleSpec>,
    pub(super) formed_at: Instant,
    pub(super) remaining: AtomicUsize,
    /// Set when the device chunk store planned chunks for this batch to keep.
    pub(super) keeps: std::sync::atomic::AtomicBool,
    /// A device batch run again without the device chunk store, because a batch it was to
    /// fetch kept chunks from failed before its device work ran ([`super::Pipeline::pop`]):
    /// every chunk is read and decoded by this batch itself, and its lease is already set.
    pub(super) rerun: bool,
    pub(super) error: Mutex<Option<Error>>,
    pub(super) lease: Mutex<Option<Lease>>,
    pub(super) resolved: Mutex<Option<Resolved>>,
    pub(super) device: Mutex<Option<DeviceWork>>,
    /// Work that starts when every job so far has ended (the CPU path's sample transforms):
    /// it queues the phase's jobs, and the batch finishes when those end.
    pub(super) next_phase: Mutex<Option<Phase>>,
}

/// A batch's next phase ([`InFlight::then`]): queues its jobs with [`spawn_job`].
pub(super) type Phase = Box<dyn FnOnce(&Arc<Shared>, &Arc<InFlight>) + Send>;

impl InFlight {
    pub(super) fn new(seq: u64, samples: Vec<SampleSpec>, formed_at: Instant) -> Self {
        Self {
            seq,
            samples,
            formed_at,
            remaining: AtomicUsize::new(1),
            keeps: std::sync::atomic::AtomicBool::new(false),
            rerun: false,
            error: Mutex::new(None),
            lease: Mutex::new(None),
            resolved: Mutex::new(None),
            device: Mutex::new(None),
            next_phase: Mutex::new(None),
        }
    }

    /// Runs `phase` once the jobs queued so far (and the planner's count) have ended, unless
    /// the batch failed by then; the batch finishes after the jobs `phase` queues.
    pub(super) fn then(&self, phase: Phase) {
        *self.next_phase.lock().unwrap_or_else(PoisonError::into_inner) = Some(phase);
    }

    /// Records the batch's first error.
    pub(super) fn fail(&self, e: Error) {
        let mut slot = self.error.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(e);
        }
    }

    pub(super) fn failed(&self) -> bool {
        self.error.lock().unwrap_or_else(PoisonError::into_inner).is_some()
    }

    /// The uri of sample `i` (for messages).
    pub(super) fn uri(&self, sample: u32) -> &str {
        self.samples.get(sample as usize).map_or("?", |s| s.uri.as_str())
    }

    pub(super) fn set_resolved(&self, r: Resolved) {
        *self.resolved.lock().unwrap_or_else(PoisonError::into_inner) = Some(r);
    }

    pub(super) fn set_lease(&self, l: Lease) {
        *self.lease.lock().unwrap_or_else(PoisonError::into_inner) = Some(l);
    }

    pub(super) fn with_device(&self, f: impl FnOnce(&mut DeviceWork)) {
        if let Some(d) = self.device.lock().unwrap_or_else(PoisonError::into_inner).as_mut() {
            f(d);
        }
    }
}

/// Decrements a batch's outstanding-job count when dropped (also on unwind), finishing the
/// batch when it reaches zero.
pub(super) struct JobGuard {
    pub(super) shared: Arc<Shared>,
    pub(super) batch: Arc<InFlight>,
}

impl Drop for JobGuard {
    fn drop(&mut self) {
        while self.batch.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The last job of a phase: no other job of the batch runs now.
            let next = if self.batch.failed() || self.shared.shutdown.load(Ordering::Acquire) {
                None
            } else {
                self.batch.next_phase.lock().unwrap_or_else(PoisonError::into_inner).take()
            };
            let Some(next) = next else {
                self.shared.finish(&self.batch);
                return;
            };
            // This guard counts again while the phase queues its jobs, then lets go (the loop).
            self.batch.remaining.fetch_add(1, Ordering::AcqRel);
            let run = std::panic::AssertUnwindSafe(|| next(&self.shared, &self.batch));
            if let Err(payload) = std::panic::catch_unwind(run) {
                self.batch.fail(err!(Internal, "batch {}: starting its next phase panicked (a bug; please report it): {}", self.batch.seq, panic_text(&*payload)));
            }
        }
    }
}

/// The text of a panic payload.
pub(super) fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Queues one job of `batch` on the pool. Its error fails the batch; so does a panic, as
/// an error naming `what` the job was doing (never a success with part of the output
/// unwritten). Jobs of a batch that already failed, or of a closed pipeline, do nothing.
pub(super) fn spawn_job(
    shared: &Arc<Shared>,
    pool: &Spawner,
    batch: &Arc<InFlight>,
    what: impl FnOnce(&InFlight) -> String + Send + 'static,
    f: impl FnOnce(&Shared, &InFlight) -> Result<()> + Send + 'static,
) {
    batch.remaining.fetch_add(1, Ordering::AcqRel);
    let guard = JobGuard { shared: Arc::clone(shared), batch: Arc::clone(batch) };
    // A pool shut down drops the job, and with it the guard: the batch still finishes.
    pool.spawn(move || {
        let guard = guard;
        if guard.shared.shutdown.load(Ordering::Acquire) || guard.batch.failed() {
            return;
        }
        let run = std::panic::AssertUnwindSafe(|| f(&guard.shared, &guard.batch));
        match std::panic::catch_unwind(run) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => guard.batch.fail(e),
            Err(payload) => {
                let e = err!(Internal, "{}: panicked (a bug; please report it): {}", what(&guard.batch), panic_text(&*payload));
                guard.batch.fail(e);
            }
        }
    });
}

/// One finished batch: owns its output buffer (returned to the pipeline's pool on drop).
pub struct Batch {
    pub(super) seq: u64,
    pub(super) lease: Lease,
    pub(super) shape: Vec<i64>,
    pub(super) dtype: OutDtype,
    pub(super) samples: Vec<SampleSpec>,
    pub(super) device: Option<DeviceWork>,
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
    /// The output dtype.
    pub fn dtype_of(&self) -> OutDtype {
        self.dtype
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
    pub fn decode_ops(&self) -> &[GpuDecodeOp] {
        self.device.as_ref().map_or(&[], |d| &d.decode_ops)
    }
    /// Content checksums to verify after decompression (device path).
    pub fn checksum_ops(&self) -> &[GpuChecksumOp] {
        self.device.as_ref().map_or(&[], |d| &d.checksum_ops)
    }
    /// Unshuffle ops (device path).
    pub fn unshuffle_ops(&self) -> &[GpuUnshuffleOp] {
        self.device.as_ref().map_or(&[], |d| &d.unshuffle_ops)
    }
    /// The uri and chunk of decode op `i` (device path).
    pub fn decode_op_context(&self, i: u32) -> String {
        self.device.as_ref().map_or_else(String::new, |d| d.context(i as usize))
    }
    /// Copy and fill ops (device path).
    pub fn copy_ops(&self) -> &[GpuCopyOp] {
        self.device.as_ref().map_or(&[], |d| &d.copy_ops)
    }
    /// Device chunk store copies out of the pool, before assembling (device path).
    pub fn store_fetch_ops(&self) -> &[GpuDecodeOp] {
        self.device.as_ref().map_or(&[], |d| &d.store_fetch)
    }
    /// Device chunk store copies into the pool, after the fetches (device path).
    pub fn store_keep_ops(&self) -> &[GpuDecodeOp] {
        self.device.as_ref().map_or(&[], |d| &d.store_keep)
    }
    /// The device chunk store's pool size (device path; 0: off).
    pub fn device_store_bytes(&self) -> u64 {
        self.device.as_ref().map_or(0, |d| d.store_bytes)
    }
    /// The batches whose kept chunks this batch reads from the pool (device path).
    pub fn store_producers(&self) -> &[u64] {
        self.device.as_ref().map_or(&[], |d| &d.producers)
    }
    /// The batch's sequence number (push order, from 0).
    pub fn seq(&self) -> u64 {
        self.seq
    }
    /// The batch's samples (uri and box), in batch order.
    pub fn samples(&self) -> impl Iterator<Item = (&str, &[(i64, i64)])> {
        self.samples.iter().map(|s| (s.uri.as_str(), s.aabb.as_slice()))
    }

    /// The samples' transforms still to apply on the device, in batch order (identity for a
    /// sample pushed without one): a device batch's; empty for a CPU-made batch (its workers
    /// applied them) and when no sample of the batch has one.
    pub fn transforms(&self) -> Vec<SampleTransform> {
        if self.device.is_none() {
            return Vec::new();
        }
        super::transform::of_batch(self.samples.iter().map(|s| s.transform.as_ref()))
    }
}
