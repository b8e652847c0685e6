//! Pipeline statistics: lock-free counters plus a bounded window of batch latencies.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use super::buffers::BufferPool;
use crate::cache::CacheStats;
use crate::ffi::records::{CacheCounts, PrefetchCounts};
use crate::plan::{BatchPlan, ChunkSource};
use crate::prefetch::PrefetchStats;

const LATENCY_WINDOW: usize = 1024;

#[derive(Default)]
pub(super) struct Stats {
    samples_pushed: AtomicU64,
    batches_done: AtomicU64,
    batches_failed: AtomicU64,
    batches_delivered: AtomicU64,
    chunks_planned: AtomicU64,
    chunk_copies: AtomicU64,
    chunks_decoded: AtomicU64,
    chunks_filled: AtomicU64,
    read_ops: AtomicU64,
    bytes_read: AtomicU64,
    plan_ns: AtomicU64,
    io_ns: AtomicU64,
    decode_ns: AtomicU64,
    assemble_ns: AtomicU64,
    staged_bytes: AtomicU64,
    chunks_cached: AtomicU64,
    device_read_ops: AtomicU64,
    blocks_decoded: AtomicU64,
    blocks_skipped: AtomicU64,
    cpu_bytes_decoded: AtomicU64,
    store_replans: AtomicU64,
    latencies_us: Mutex<VecDeque<u64>>,
}

fn ns(d: Duration) -> u64 {
    d.as_nanos() as u64
}

fn cache(c: CacheStats) -> CacheCounts {
    CacheCounts { hits: c.hits, misses: c.misses, evictions: c.evictions }
}

impl Stats {
    pub(super) fn sample_pushed(&self) {
        self.samples_pushed.fetch_add(1, Relaxed);
    }
    /// `n` batches reached the caller (as tensors).
    pub(super) fn delivered(&self, n: u64) {
        self.batches_delivered.fetch_add(n, Relaxed);
    }
    /// `n` batches finished here failed on the device side (a GPU decode error).
    pub(super) fn failed(&self, n: u64) {
        self.batches_failed.fetch_add(n, Relaxed);
    }
    pub(super) fn planned(&self, t: Duration, plan: &BatchPlan) {
        self.plan_ns.fetch_add(ns(t), Relaxed);
        self.chunks_planned.fetch_add(plan.chunk_ops.len() as u64, Relaxed);
        let copies: usize = plan.chunk_ops.iter().map(|o| o.copies.len()).sum();
        self.chunk_copies.fetch_add(copies as u64, Relaxed);
        let reads = plan.chunk_ops.iter().filter(|o| !matches!(o.source, ChunkSource::Absent)).count();
        self.read_ops.fetch_add(reads as u64, Relaxed);
    }
    pub(super) fn chunk_decoded(&self, bytes: u64, io: Duration, decode: Duration, assemble: Duration) {
        self.chunks_decoded.fetch_add(1, Relaxed);
        self.bytes_read.fetch_add(bytes, Relaxed);
        self.io_ns.fetch_add(ns(io), Relaxed);
        self.decode_ns.fetch_add(ns(decode), Relaxed);
        self.assemble_ns.fetch_add(ns(assemble), Relaxed);
    }
    /// A device batch staged: bytes into the staging slab, in these read ops.
    pub(super) fn staged(&self, layout: &crate::plan::staging::StagingLayout) {
        self.staged_bytes.fetch_add(layout.staging_bytes, Relaxed);
        self.coalesced(layout);
    }
    /// Read ops of a batch after coalescing (both paths).
    pub(super) fn coalesced(&self, layout: &crate::plan::staging::StagingLayout) {
        self.device_read_ops.fetch_add(layout.reads.len() as u64, Relaxed);
    }
    /// Blosc blocks of a device batch: decoded, and skipped because no copy reads them.
    pub(super) fn blocks(&self, decoded: u64, skipped: u64) {
        self.blocks_decoded.fetch_add(decoded, Relaxed);
        self.blocks_skipped.fetch_add(skipped, Relaxed);
    }
    /// Decoded bytes a CPU decode produced (a whole chunk, a prefix, or a span of blosc
    /// blocks).
    pub(super) fn cpu_decoded(&self, bytes: usize) {
        self.cpu_bytes_decoded.fetch_add(bytes as u64, Relaxed);
    }
    pub(super) fn read_op(&self, bytes: u64, io: Duration) {
        self.bytes_read.fetch_add(bytes, Relaxed);
        self.io_ns.fetch_add(ns(io), Relaxed);
    }
    /// A chunk assembled from the decoded cache.
    pub(super) fn chunk_cached(&self, assemble: Duration) {
        self.chunks_cached.fetch_add(1, Relaxed);
        self.assemble_ns.fetch_add(ns(assemble), Relaxed);
    }
    /// A chunk handed to the device for decoding.
    pub(super) fn device_chunk(&self) {
        self.chunks_decoded.fetch_add(1, Relaxed);
    }
    /// A device batch run again without the device chunk store (a batch whose kept chunks
    /// it was to fetch failed first).
    pub(super) fn store_replan(&self) {
        self.store_replans.fetch_add(1, Relaxed);
    }
    pub(super) fn chunk_filled(&self, assemble: Duration) {
        self.chunks_filled.fetch_add(1, Relaxed);
        self.assemble_ns.fetch_add(ns(assemble), Relaxed);
    }
    pub(super) fn batch_done(&self, latency: Duration, ok: bool) {
        if ok { &self.batches_done } else { &self.batches_failed }.fetch_add(1, Relaxed);
        let mut l = self.latencies_us.lock().unwrap_or_else(PoisonError::into_inner);
        if l.len() == LATENCY_WINDOW {
            l.pop_front();
        }
        l.push_back(latency.as_micros() as u64);
    }

    /// The record the bridge and the JSON are made of.
    pub(super) fn record(&self, caches: &PrefetchStats, decoded: CacheStats, buffers: &BufferPool) -> crate::ffi::records::Stats {
        let mut lat: Vec<u64> = self.latencies_us.lock().unwrap_or_else(PoisonError::into_inner).iter().copied().collect();
        lat.sort_unstable();
        let pct = |p: f64| -> f64 {
            if lat.is_empty() {
                return 0.0;
            }
            let i = ((lat.len() - 1) as f64 * p).round() as usize;
            lat[i] as f64 / 1e3
        };
        let secs = |a: &AtomicU64| a.load(Relaxed) as f64 / 1e9;
        let planned = self.chunks_planned.load(Relaxed);
        let copies = self.chunk_copies.load(Relaxed);
        crate::ffi::records::Stats {
            samples_pushed: self.samples_pushed.load(Relaxed),
            batches: self.batches_delivered.load(Relaxed),
            batches_completed: self.batches_done.load(Relaxed),
            batches_failed: self.batches_failed.load(Relaxed),
            chunks_decoded: self.chunks_decoded.load(Relaxed),
            chunks_filled: self.chunks_filled.load(Relaxed),
            chunk_reuse: if planned == 0 { 0.0 } else { copies as f64 / planned as f64 },
            read_ops: self.read_ops.load(Relaxed),
            bytes_read: self.bytes_read.load(Relaxed),
            coalesced_read_ops: self.device_read_ops.load(Relaxed),
            staged_bytes: self.staged_bytes.load(Relaxed),
            blosc_blocks_decoded: self.blocks_decoded.load(Relaxed),
            blosc_blocks_skipped: self.blocks_skipped.load(Relaxed),
            cpu_bytes_decoded: self.cpu_bytes_decoded.load(Relaxed),
            device_store_replans: self.store_replans.load(Relaxed),
            array_meta: cache(caches.array_meta),
            shard_index: cache(caches.shard_index),
            chunk_layout: cache(caches.chunk_layout),
            prefetch: PrefetchCounts {
                samples_ready_ahead: caches.ready_ahead,
                samples_resolved_inline: caches.resolved_inline,
                deferrals: caches.deferrals,
                samples_parked: caches.parked,
            },
            decoded_cache: cache(decoded),
            chunks_from_cache: self.chunks_cached.load(Relaxed),
            time_plan_s: secs(&self.plan_ns),
            time_io_s: secs(&self.io_ns),
            time_decode_s: secs(&self.decode_ns),
            time_assemble_s: secs(&self.assemble_ns),
            batch_latency_p50_ms: pct(0.5),
            batch_latency_p99_ms: pct(0.99),
            buffers_allocated: buffers.allocated() as u64,
            buffers_held_by_caller: buffers.held_by_caller() as u64,
        }
    }
}
