//! The output buffer pool: at most `n_batch_buffers` buffers of one batch each, allocated
//! on first use and recycled when the batch (its tensor) is dropped. A buffer outliving its
//! pipeline is freed normally.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

/// 16-byte aligned bytes (so every output dtype, and vector loads, are aligned).
struct Aligned {
    words: Vec<u128>,
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Self {
        Self { words: vec![0u128; len.div_ceil(16)], len }
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
    bytes: usize,
    held_by_caller: AtomicUsize,
    closed: AtomicBool,
}

impl BufferPool {
    pub(super) fn new(capacity: usize, bytes: usize) -> Self {
        Self {
            free: Mutex::new(Free { buffers: Vec::new(), allocated: 0 }),
            available: Condvar::new(),
            capacity,
            bytes,
            held_by_caller: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        }
    }

    /// A buffer, waiting for one to be released; `None` once `shutdown` is set or the pool
    /// is closed.
    pub(super) fn acquire(self: &Arc<Self>, shutdown: &AtomicBool) -> Option<Lease> {
        let mut f = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if shutdown.load(Ordering::Acquire) || self.closed.load(Ordering::Acquire) {
                return None;
            }
            if let Some(buf) = f.buffers.pop() {
                return Some(Lease { buf: Some(buf), pool: Arc::clone(self), popped: AtomicBool::new(false) });
            }
            if f.allocated < self.capacity {
                f.allocated += 1;
                drop(f);
                return Some(Lease { buf: Some(Aligned::new(self.bytes)), pool: Arc::clone(self), popped: AtomicBool::new(false) });
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
        self.buf.as_ref().map_or(std::ptr::null_mut(), |b| b.words.as_ptr().cast_mut().cast())
    }
    pub(super) fn len(&self) -> usize {
        self.buf.as_ref().map_or(0, |b| b.len)
    }
    pub(super) fn bytes_mut(&mut self) -> &mut [u8] {
        match &mut self.buf {
            Some(b) => {
                let len = b.len;
                // SAFETY: `words` holds at least `len` initialised bytes (u128 zeros); u8
                // has no alignment or validity requirements.
                unsafe { std::slice::from_raw_parts_mut(b.words.as_mut_ptr().cast::<u8>(), len) }
            }
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
