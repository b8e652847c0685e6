//! The output buffer pool: at most `n_batch_buffers` buffers of one batch each, the first
//! allocated when the pool is made (so a batch too large for this machine fails at
//! construction with OutOfMemory, not with an abort later), the others on first use, all
//! recycled when the batch (its tensor) is dropped. A buffer outliving its pipeline is
//! freed normally.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use crate::error::{err, Result};

/// Alignment of every buffer: enough for every output dtype and 16-byte vector loads (large
/// buffers come page-aligned from mmap anyway). Not more: above the allocator's minimum
/// alignment (16), `alloc_zeroed` is `aligned_alloc` plus a memset that touches every page
/// up front (a 64-byte alignment cost ~0.3 s per staging slab and tripled the GPU quick
/// bench's time, dev/perf.md); at 16 it is `calloc`, whose fresh mmap pages are zero for free.
const ALIGN: usize = 16;

/// Zeroed, 64-byte aligned bytes; allocation failure is an error, not an abort.
struct Aligned {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: `Aligned` owns its allocation exclusively; moving it between threads moves that
// ownership.
unsafe impl Send for Aligned {}

impl Aligned {
    fn new(len: u64) -> Result<Self> {
        let size = usize::try_from(len).ok().filter(|&n| n <= isize::MAX as usize - ALIGN).ok_or_else(|| err!(OutOfMemory, "a buffer of {len} bytes cannot be allocated"))?;
        let layout = Layout::from_size_align(size.max(1), ALIGN).map_err(|_| err!(OutOfMemory, "a buffer of {len} bytes cannot be allocated"))?;
        // SAFETY: `layout` has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).ok_or_else(|| {
            err!(OutOfMemory, "cannot allocate a {len}-byte batch buffer; lower `samples_per_batch`/`sample_shape` (CPU path) or `staging_bytes` (device path), or `n_batch_buffers`")
        })?;
        Ok(Self { ptr, len: size })
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout (which succeeded then).
        unsafe { dealloc(self.ptr.as_ptr(), Layout::from_size_align_unchecked(self.len.max(1), ALIGN)) };
    }
}

struct Free {
    buffers: Vec<Aligned>,
    allocated: usize,
}

/// Pool of output buffers.
pub(super) struct BufferPool {
    free: Mutex<Free>,
    available: Condvar,
    capacity: usize,
    bytes: u64,
    held_by_caller: AtomicUsize,
    closed: AtomicBool,
}

impl BufferPool {
    /// A pool of `capacity` buffers of `bytes` each; allocates the first one now.
    ///
    /// # Errors
    /// OutOfMemory when the first buffer cannot be allocated.
    pub(super) fn new(capacity: usize, bytes: u64) -> Result<Self> {
        let first = Aligned::new(bytes)?;
        Ok(Self {
            free: Mutex::new(Free { buffers: vec![first], allocated: 1 }),
            available: Condvar::new(),
            capacity,
            bytes,
            held_by_caller: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        })
    }

    /// A buffer, waiting for one to be released; `None` once `shutdown` is set or the pool
    /// is closed.
    ///
    /// # Errors
    /// OutOfMemory when a new buffer cannot be allocated.
    pub(super) fn acquire(self: &Arc<Self>, shutdown: &AtomicBool) -> Result<Option<Lease>> {
        let mut f = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if shutdown.load(Ordering::Acquire) || self.closed.load(Ordering::Acquire) {
                return Ok(None);
            }
            if let Some(buf) = f.buffers.pop() {
                return Ok(Some(Lease { buf: Some(buf), pool: Arc::clone(self), popped: AtomicBool::new(false) }));
            }
            if f.allocated < self.capacity {
                f.allocated += 1;
                drop(f);
                let buf = Aligned::new(self.bytes).inspect_err(|_| {
                    self.free.lock().unwrap_or_else(PoisonError::into_inner).allocated -= 1;
                })?;
                return Ok(Some(Lease { buf: Some(buf), pool: Arc::clone(self), popped: AtomicBool::new(false) }));
            }
            f = self.available.wait_timeout(f, Duration::from_millis(100)).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    /// `true` when every buffer is held by a batch the caller popped and still holds.
    pub(super) fn starved(&self) -> bool {
        self.held_by_caller.load(Ordering::Acquire) >= self.capacity
    }

    /// Buffers held by the caller now.
    pub(super) fn held_by_caller(&self) -> usize {
        self.held_by_caller.load(Ordering::Acquire)
    }

    /// Buffers allocated so far.
    pub(super) fn allocated(&self) -> usize {
        self.free.lock().unwrap_or_else(PoisonError::into_inner).allocated
    }

    /// Wakes waiters; later acquires fail; released buffers are freed.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.free.lock().unwrap_or_else(PoisonError::into_inner).buffers.clear();
        self.available.notify_all();
    }

    fn put_back(&self, buf: Aligned, popped: bool) {
        if popped {
            self.held_by_caller.fetch_sub(1, Ordering::AcqRel);
        }
        let mut f = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        if !self.closed.load(Ordering::Acquire) {
            f.buffers.push(buf);
        }
        drop(f);
        self.available.notify_all();
    }
}

/// One buffer on loan; returns to its pool when dropped.
pub(super) struct Lease {
    buf: Option<Aligned>,
    pool: Arc<BufferPool>,
    popped: AtomicBool,
}

impl Lease {
    pub(super) fn ptr(&self) -> *mut u8 {
        self.buf.as_ref().map_or(std::ptr::null_mut(), |b| b.ptr.as_ptr())
    }
    pub(super) fn len(&self) -> usize {
        self.buf.as_ref().map_or(0, |b| b.len)
    }
    pub(super) fn bytes_mut(&mut self) -> &mut [u8] {
        match &mut self.buf {
            // SAFETY: `ptr` holds `len` initialised (zeroed, then written) bytes owned by this
            // lease; `&mut self` makes the view exclusive.
            Some(b) => unsafe { std::slice::from_raw_parts_mut(b.ptr.as_ptr(), b.len) },
            None => &mut [],
        }
    }
    /// Marks the lease as handed to the caller (counts toward starvation).
    pub(super) fn mark_popped(&self) {
        if !self.popped.swap(true, Ordering::AcqRel) {
            self.pool.held_by_caller.fetch_add(1, Ordering::AcqRel);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            self.pool.put_back(buf, self.popped.load(Ordering::Acquire));
        }
    }
}
