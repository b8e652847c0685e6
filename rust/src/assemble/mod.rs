//! assemble: writes decoded chunk regions and fill regions into a batch's output buffer,
//! casting to the output dtype on the way (f32: `as f32` from the source value, rounding to
//! nearest even, so u32/i32/u64/i64 beyond 2^24 and f64 lose precision and f64 beyond f32's
//! range becomes ±inf; bf16: the f32 value rounded to nearest even; bool: 0 or 1).
//!
//! The output buffer is shared by the worker threads; each voxel is written by exactly one
//! op (the planner's invariant), which is what makes the unsynchronised writes sound.
//! Calls nothing; called by the pipeline's workers.

use crate::pipeline::OutDtype;
use crate::plan::{Copy, Region};
use crate::zarr::SourceDtype;

/// A batch's output memory, written concurrently by workers at disjoint voxels.
#[derive(Debug, Clone, Copy)]
pub struct OutBuffer {
    ptr: *mut u8,
    len: usize,
    /// Output dtype.
    pub dtype: OutDtype,
    /// Elements per sample.
    sample_voxels: usize,
}

// SAFETY: an `OutBuffer` is a view of memory owned by the batch's buffer lease, which
// outlives every op of the batch (the batch completes only after all ops finished); ops
// write disjoint voxels (planner invariant), so sharing the pointer across threads is sound.
unsafe impl Send for OutBuffer {}
// SAFETY: as above.
unsafe impl Sync for OutBuffer {}

impl OutBuffer {
    /// A view of `len` bytes at `ptr`.
    ///
    /// # Safety
    /// `ptr..ptr+len` must stay valid and unaliased by other writers for as long as the
    /// view is used, and concurrent users must write disjoint voxels.
    pub unsafe fn new(ptr: *mut u8, len: usize, dtype: OutDtype, sample_voxels: usize) -> Self {
        Self { ptr, len, dtype, sample_voxels }
    }

    /// The bytes of `n` elements starting at element `at`.
    ///
    /// # Safety
    /// No other thread may access these elements concurrently.
    #[allow(clippy::mut_from_ref)]
    unsafe fn elems(&self, at: usize, n: usize) -> &mut [u8] {
        let size = self.dtype.size();
        assert!((at + n) * size <= self.len, "output write out of range");
        // SAFETY: in range (asserted); exclusive per the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(at * size), n * size) }
    }
}

type RowCast = fn(&[u8], &mut [u8]);

trait Load {
    const SIZE: usize;
    fn load(b: &[u8]) -> f32;
}

macro_rules! load_int {
    ($name:ident, $t:ty) => {
        struct $name;
        impl Load for $name {
            const SIZE: usize = std::mem::size_of::<$t>();
            #[inline(always)]
            fn load(b: &[u8]) -> f32 {
                <$t>::from_ne_bytes(b.try_into().unwrap_or_default()) as f32
            }
        }
    };
}
load_int!(LU8, u8);
load_int!(LI8, i8);
load_int!(LU16, u16);
load_int!(LI16, i16);
load_int!(LU32, u32);
load_int!(LI32, i32);
load_int!(LU64, u64);
load_int!(LI64, i64);
load_int!(LF32, f32);
load_int!(LF64, f64);

struct LBool;
impl Load for LBool {
    const SIZE: usize = 1;
    #[inline(always)]
    fn load(b: &[u8]) -> f32 {
        f32::from(u8::from(b[0] != 0))
    }
}
struct LF16;
impl Load for LF16 {
    const SIZE: usize = 2;
    #[inline(always)]
    fn load(b: &[u8]) -> f32 {
        half::f16::from_ne_bytes([b[0], b[1]]).to_f32()
    }
}
struct LBf16;
impl Load for LBf16 {
    const SIZE: usize = 2;
    #[inline(always)]
    fn load(b: &[u8]) -> f32 {
        half::bf16::from_ne_bytes([b[0], b[1]]).to_f32()
    }
}

fn to_f32<L: Load>(src: &[u8], dst: &mut [u8]) {
    for (s, d) in src.chunks_exact(L::SIZE).zip(dst.chunks_exact_mut(4)) {
        d.copy_from_slice(&L::load(s).to_ne_bytes());
    }
}

fn to_bf16<L: Load>(src: &[u8], dst: &mut [u8]) {
    for (s, d) in src.chunks_exact(L::SIZE).zip(dst.chunks_exact_mut(2)) {
        d.copy_from_slice(&half::bf16::from_f32(L::load(s)).to_ne_bytes());
    }
}

fn row_cast(src: SourceDtype, out: OutDtype) -> RowCast {
    macro_rules! pick {
        ($l:ty) => {
            match out {
                OutDtype::F32 => to_f32::<$l> as RowCast,
                OutDtype::Bf16 => to_bf16::<$l> as RowCast,
            }
        };
    }
    match src {
        SourceDtype::Bool => pick!(LBool),
        SourceDtype::U8 => pick!(LU8),
        SourceDtype::I8 => pick!(LI8),
        SourceDtype::U16 => pick!(LU16),
        SourceDtype::I16 => pick!(LI16),
        SourceDtype::U32 => pick!(LU32),
        SourceDtype::I32 => pick!(LI32),
        SourceDtype::U64 => pick!(LU64),
        SourceDtype::I64 => pick!(LI64),
        SourceDtype::F16 => pick!(LF16),
        SourceDtype::Bf16 => pick!(LBf16),
        SourceDtype::F32 => pick!(LF32),
        SourceDtype::F64 => pick!(LF64),
    }
}

/// Calls `f(src_row_start, dst_row_start)` (element offsets) for every row along the last
/// dimension of a box of `extent`, placed at `src_start` in a `src_shape` array and at
/// `dst_start` in a `dst_shape` array.
fn for_each_row(extent: &[u64], src_shape: &[u64], src_start: &[u64], dst_shape: &[u64], dst_start: &[u64], mut f: impl FnMut(usize, usize)) {
    let rank = extent.len();
    let strides = |shape: &[u64]| {
        let mut s = vec![1u64; rank];
        for d in (0..rank.saturating_sub(1)).rev() {
            s[d] = s[d + 1] * shape[d + 1];
        }
        s
    };
    let (ss, ds) = (strides(src_shape), strides(dst_shape));
    let mut idx = vec![0u64; rank];
    loop {
        let so: u64 = (0..rank).map(|d| (src_start[d] + idx[d]) * ss[d]).sum();
        let dof: u64 = (0..rank).map(|d| (dst_start[d] + idx[d]) * ds[d]).sum();
        f(so as usize, dof as usize);
        let mut d = rank - 1;
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            idx[d] += 1;
            if idx[d] < extent[d] {
                break;
            }
            idx[d] = 0;
            if d == 0 {
                return;
            }
        }
    }
}

/// Copies one region of a decoded chunk (native-endian `src` elements of `chunk_shape`)
/// into its sample.
///
/// # Safety
/// The destination voxels must not be accessed concurrently (planner invariant).
pub unsafe fn copy_region(src: &[u8], src_dtype: SourceDtype, chunk_shape: &[u64], copy: &Copy, out: &OutBuffer, sample_shape: &[u64]) {
    let cast = row_cast(src_dtype, out.dtype);
    let es = src_dtype.size();
    let row = *copy.extent.last().unwrap_or(&1) as usize;
    let base = copy.sample as usize * out.sample_voxels;
    for_each_row(&copy.extent, chunk_shape, &copy.chunk_start, sample_shape, &copy.sample_start, |s, d| {
        // SAFETY: exclusive per this function's contract.
        let dst = unsafe { out.elems(base + d, row) };
        cast(&src[s * es..(s + row) * es], dst);
    });
}

/// Writes the fill value (one native-endian source element) into a region of a sample.
///
/// # Safety
/// As [`copy_region`].
pub unsafe fn fill_region(fill: &[u8], src_dtype: SourceDtype, sample: u32, region: &Region, out: &OutBuffer, sample_shape: &[u64]) {
    let mut one = [0u8; 4];
    let osize = out.dtype.size();
    row_cast(src_dtype, out.dtype)(fill, &mut one[..osize]);
    let row = *region.extent.last().unwrap_or(&1) as usize;
    let base = sample as usize * out.sample_voxels;
    let zeros = vec![0u64; region.start.len()];
    for_each_row(&region.extent, &region.extent, &zeros, sample_shape, &region.start, |_, d| {
        // SAFETY: exclusive per this function's contract.
        let dst = unsafe { out.elems(base + d, row) };
        for e in dst.chunks_exact_mut(osize) {
            e.copy_from_slice(&one[..osize]);
        }
    });
}

/// Fills a whole decoded-chunk copy with the fill value (absent chunk).
///
/// # Safety
/// As [`copy_region`].
pub unsafe fn fill_copy(fill: &[u8], src_dtype: SourceDtype, copy: &Copy, out: &OutBuffer, sample_shape: &[u64]) {
    let region = Region { start: copy.sample_start.clone(), extent: copy.extent.clone() };
    // SAFETY: forwarded contract.
    unsafe { fill_region(fill, src_dtype, copy.sample, &region, out, sample_shape) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_and_casts_a_region() {
        // chunk 2x3 of u16: 0..6; copy its column 1..3 of row 1 into sample (1,2) at (0,0).
        let src: Vec<u8> = (0u16..6).flat_map(u16::to_ne_bytes).collect();
        let mut dst = vec![0u8; 2 * 2 * 4];
        let out = unsafe { OutBuffer::new(dst.as_mut_ptr(), dst.len(), OutDtype::F32, 2) };
        let copy = Copy { sample: 1, chunk_start: vec![1, 1], sample_start: vec![0, 0], extent: vec![1, 2] };
        unsafe { copy_region(&src, SourceDtype::U16, &[2, 3], &copy, &out, &[1, 2]) };
        let got: Vec<f32> = dst.chunks_exact(4).map(|b| f32::from_ne_bytes(b.try_into().unwrap())).collect();
        assert_eq!(got, [0.0, 0.0, 4.0, 5.0]);
    }

    #[test]
    fn fills_with_nan_and_rounds_to_bf16() {
        let mut dst = vec![0u8; 3 * 2];
        let out = unsafe { OutBuffer::new(dst.as_mut_ptr(), dst.len(), OutDtype::Bf16, 3) };
        let r = Region { start: vec![1], extent: vec![2] };
        unsafe { fill_region(&f64::NAN.to_ne_bytes(), SourceDtype::F64, 0, &r, &out, &[3]) };
        let got: Vec<half::bf16> = dst.chunks_exact(2).map(|b| half::bf16::from_ne_bytes([b[0], b[1]])).collect();
        assert_eq!(got[0].to_bits(), 0);
        assert!(got[1].is_nan() && got[2].is_nan());
        let mut one = [0u8; 2];
        to_bf16::<LU32>(&16_777_217u32.to_ne_bytes(), &mut one);
        assert_eq!(half::bf16::from_ne_bytes(one).to_f32(), 16_777_216.0);
    }
}
