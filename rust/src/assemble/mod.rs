//! assemble: writes decoded chunk regions and fill regions into a batch's output buffer,
//! casting to the output dtype on the way:
//! - f32: `as f32` from the source value, rounding to nearest even, so u32/i32/u64/i64
//!   beyond 2^24 and f64 lose precision and f64 beyond f32's range becomes ±inf;
//! - bf16: the f32 value rounded to nearest even; bool: 0 or 1;
//! - u8, i32, i64 (label outputs): Rust's `as` from the source value (f16/bf16 through their
//!   exact f32 value, bool as 0 or 1). Integer to integer keeps the low bits (two's
//!   complement wrap: u16 300 -> u8 44, i64 -1 -> u8 255, u64 2^63 -> i64 -2^63), exactly
//!   what numpy's `astype` does. Float to integer truncates toward zero and *saturates*:
//!   out-of-range values become the type's min or max, NaN becomes 0. numpy's `astype` agrees
//!   for in-range values; for NaN, ±inf and out-of-range floats it is platform-defined (x86:
//!   int32/int64 get the minimum value, uint8 wraps through int32) and warns.
//!
//! Fill values (the array's `fill_value`) go through the same casts.
//!
//! The output buffer is shared by the worker threads; each voxel is written by exactly one
//! op (the planner's invariant), which is what makes the unsynchronised writes sound.
//! `transform`: the per-sample transform pass of CPU-made batches (flips, turns, intensity
//! and noise; `noise` its counter-based draw), run once a sample's copies are all written.
//!
//! Calls nothing outside this stage; called by the pipeline's workers.

mod dtype;
mod noise;
mod transform;
pub use dtype::OutDtype;
pub(crate) use transform::apply as apply_transform;
use crate::error::{err, Result};
use crate::plan::{Copy, Region};
use crate::zarr::SourceDtype;

/// A batch's output memory, written concurrently by workers at disjoint voxels.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OutBuffer {
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
    pub(crate) unsafe fn new(ptr: *mut u8, len: usize, dtype: OutDtype, sample_voxels: usize) -> Self {
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

    /// The bytes of sample `i` (`None`: past the buffer's end).
    ///
    /// # Safety
    /// No other thread may access that sample's elements while the slice lives.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn sample(&self, i: usize) -> Option<&mut [u8]> {
        let bytes = self.sample_voxels.checked_mul(self.dtype.size())?;
        let at = i.checked_mul(bytes).filter(|&at| at.checked_add(bytes).is_some_and(|end| end <= self.len))?;
        // SAFETY: in range (checked); exclusive per the caller's contract.
        Some(unsafe { std::slice::from_raw_parts_mut(self.ptr.add(at), bytes) })
    }
}

type RowCast = fn(&[u8], &mut [u8]);

/// One source element type: how to read it (native-endian bytes) as each output type.
trait Load {
    const SIZE: usize;
    fn load(b: &[u8]) -> f32;
    fn load_u8(b: &[u8]) -> u8;
    fn load_i32(b: &[u8]) -> i32;
    fn load_i64(b: &[u8]) -> i64;
}

// Every conversion is a plain `as` (wrapping int -> int, saturating float -> int, NaN -> 0).
macro_rules! load_num {
    ($name:ident, $t:ty) => {
        struct $name;
        impl Load for $name {
            const SIZE: usize = std::mem::size_of::<$t>();
            #[inline(always)]
            fn load(b: &[u8]) -> f32 {
                Self::native(b) as f32
            }
            #[inline(always)]
            fn load_u8(b: &[u8]) -> u8 {
                Self::native(b) as u8
            }
            #[inline(always)]
            fn load_i32(b: &[u8]) -> i32 {
                Self::native(b) as i32
            }
            #[inline(always)]
            fn load_i64(b: &[u8]) -> i64 {
                Self::native(b) as i64
            }
        }
        impl $name {
            #[inline(always)]
            fn native(b: &[u8]) -> $t {
                <$t>::from_ne_bytes(b.try_into().unwrap_or_default())
            }
        }
    };
}
load_num!(LU8, u8);
load_num!(LI8, i8);
load_num!(LU16, u16);
load_num!(LI16, i16);
load_num!(LU32, u32);
load_num!(LI32, i32);
load_num!(LU64, u64);
load_num!(LI64, i64);
load_num!(LF32, f32);
load_num!(LF64, f64);

// Types read through another one: bool as 0/1 (u8), f16 and bf16 as their exact f32 value.
macro_rules! load_via {
    ($name:ident, $size:expr, $via:ty, $read:expr) => {
        struct $name;
        impl Load for $name {
            const SIZE: usize = $size;
            #[inline(always)]
            fn load(b: &[u8]) -> f32 {
                f32::from($read(b))
            }
            #[inline(always)]
            fn load_u8(b: &[u8]) -> u8 {
                $read(b) as u8
            }
            #[inline(always)]
            fn load_i32(b: &[u8]) -> i32 {
                $read(b) as i32
            }
            #[inline(always)]
            fn load_i64(b: &[u8]) -> i64 {
                $read(b) as i64
            }
        }
    };
}
load_via!(LBool, 1, u8, |b: &[u8]| -> u8 { u8::from(b[0] != 0) });
load_via!(LF16, 2, f32, |b: &[u8]| -> f32 { half::f16::from_ne_bytes([b[0], b[1]]).to_f32() });
load_via!(LBf16, 2, f32, |b: &[u8]| -> f32 { half::bf16::from_ne_bytes([b[0], b[1]]).to_f32() });

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

fn to_u8<L: Load>(src: &[u8], dst: &mut [u8]) {
    for (s, d) in src.chunks_exact(L::SIZE).zip(dst.iter_mut()) {
        *d = L::load_u8(s);
    }
}

fn to_i32<L: Load>(src: &[u8], dst: &mut [u8]) {
    for (s, d) in src.chunks_exact(L::SIZE).zip(dst.chunks_exact_mut(4)) {
        d.copy_from_slice(&L::load_i32(s).to_ne_bytes());
    }
}

fn to_i64<L: Load>(src: &[u8], dst: &mut [u8]) {
    for (s, d) in src.chunks_exact(L::SIZE).zip(dst.chunks_exact_mut(8)) {
        d.copy_from_slice(&L::load_i64(s).to_ne_bytes());
    }
}

fn row_cast(src: SourceDtype, out: OutDtype) -> RowCast {
    macro_rules! pick {
        ($l:ty) => {
            match out {
                OutDtype::F32 => to_f32::<$l> as RowCast,
                OutDtype::Bf16 => to_bf16::<$l> as RowCast,
                OutDtype::U8 => to_u8::<$l> as RowCast,
                OutDtype::I32 => to_i32::<$l> as RowCast,
                OutDtype::I64 => to_i64::<$l> as RowCast,
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

/// Copies one region of a decoded chunk into its sample. `src` holds the bytes
/// `src_offset..src_offset + src.len()` of the decoded chunk (native-endian elements of
/// `chunk_shape`, C order): the whole chunk, a prefix, or a span of blosc blocks.
///
/// # Errors
/// Internal, before anything is written, when the region reads bytes `src` does not hold
/// (a span or prefix decoded for other copies: a bug, never a read out of range).
///
/// # Safety
/// The destination voxels must not be accessed concurrently (planner invariant).
pub(crate) unsafe fn copy_region(src: &[u8], src_offset: usize, src_dtype: SourceDtype, chunk_shape: &[u64], copy: &Copy, out: &OutBuffer, sample_shape: &[u64]) -> Result<()> {
    let cast = row_cast(src_dtype, out.dtype);
    let es = src_dtype.size() as u64;
    let row = *copy.extent.last().unwrap_or(&1) as usize;
    // The rows of a box inside the chunk lie, in C order, between its first and its last
    // element: one check for the whole copy.
    let last: Vec<u64> = copy.chunk_start.iter().zip(&copy.extent).map(|(s, e)| (s + e).saturating_sub(1)).collect();
    let (first, last) = (ravel(&copy.chunk_start, chunk_shape), ravel(&last, chunk_shape));
    let (lo, hi) = (first.saturating_mul(es), last.saturating_add(1).saturating_mul(es));
    let (held_lo, held_hi) = (src_offset as u64, (src_offset as u64).saturating_add(src.len() as u64));
    let outside = || err!(Internal, "internal: a copy reads bytes {lo}..{hi} of its decoded chunk, which holds only {held_lo}..{held_hi} (a bug; please report it)");
    if lo < held_lo || hi > held_hi || copy.chunk_start.iter().zip(&copy.extent).zip(chunk_shape).any(|((s, e), n)| s + e > *n) {
        return Err(outside());
    }
    let base = copy.sample as usize * out.sample_voxels;
    let (es, offset) = (es as usize, src_offset);
    let mut result = Ok(());
    for_each_row(&copy.extent, chunk_shape, &copy.chunk_start, sample_shape, &copy.sample_start, |s, d| {
        // In range (checked above); `get` keeps even a broken invariant from reading outside.
        let Some(row_src) = (s * es).checked_sub(offset).and_then(|a| src.get(a..a + row * es)) else {
            result = Err(outside());
            return;
        };
        // SAFETY: exclusive per this function's contract.
        let dst = unsafe { out.elems(base + d, row) };
        cast(row_src, dst);
    });
    result
}

/// The C-order index of `coords` in a box of `shape`, saturating.
fn ravel(coords: &[u64], shape: &[u64]) -> u64 {
    coords.iter().zip(shape).fold(0u64, |acc, (c, n)| acc.saturating_mul(*n).saturating_add(*c))
}

/// Writes the fill value (one native-endian source element) into a region of a sample.
///
/// # Safety
/// As [`copy_region`].
pub(crate) unsafe fn fill_region(fill: &[u8], src_dtype: SourceDtype, sample: u32, region: &Region, out: &OutBuffer, sample_shape: &[u64]) {
    let mut one = [0u8; 8]; // the widest output element (i64)
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
pub(crate) unsafe fn fill_copy(fill: &[u8], src_dtype: SourceDtype, copy: &Copy, out: &OutBuffer, sample_shape: &[u64]) {
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
        unsafe { copy_region(&src, 0, SourceDtype::U16, &[2, 3], &copy, &out, &[1, 2]) }.unwrap();
        let got: Vec<f32> = dst.chunks_exact(4).map(|b| f32::from_ne_bytes(b.try_into().unwrap())).collect();
        assert_eq!(got, [0.0, 0.0, 4.0, 5.0]);
    }

    #[test]
    fn copies_from_a_span_and_refuses_bytes_it_does_not_hold() {
        // chunk 4x3 of u16: 0..12; the span holds rows 1..3 (elements 3..9, bytes 6..18).
        let span: Vec<u8> = (3u16..9).flat_map(u16::to_ne_bytes).collect();
        let mut dst = vec![0u8; 2 * 3 * 4];
        let out = unsafe { OutBuffer::new(dst.as_mut_ptr(), dst.len(), OutDtype::F32, 6) };
        let copy = Copy { sample: 0, chunk_start: vec![1, 1], sample_start: vec![0, 0], extent: vec![2, 2] };
        unsafe { copy_region(&span, 6, SourceDtype::U16, &[4, 3], &copy, &out, &[2, 3]) }.unwrap();
        let got: Vec<f32> = dst.chunks_exact(4).map(|b| f32::from_ne_bytes(b.try_into().unwrap())).collect();
        assert_eq!(got, [4.0, 5.0, 0.0, 7.0, 8.0, 0.0]);
        // Rows 0..2 (element 2 is before the span), rows 2..4 (element 9 after it), a box
        // reaching past the chunk: typed errors, nothing written.
        dst.fill(0xAB);
        for (start, extent) in [(vec![0, 2], vec![2, 1]), (vec![2, 0], vec![2, 1]), (vec![1, 2], vec![1, 2])] {
            let copy = Copy { sample: 0, chunk_start: start, sample_start: vec![0, 0], extent };
            let e = unsafe { copy_region(&span, 6, SourceDtype::U16, &[4, 3], &copy, &out, &[2, 3]) }.unwrap_err();
            assert_eq!(e.status(), crate::Status::Internal, "{e}");
        }
        assert!(dst.iter().all(|&b| b == 0xAB));
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

    fn cast_one<L: Load>(out: OutDtype, src: &[u8]) -> i64 {
        let mut d = [0u8; 8];
        row_cast_for::<L>(out)(src, &mut d[..out.size()]);
        match out {
            OutDtype::U8 => i64::from(d[0]),
            OutDtype::I32 => i64::from(i32::from_ne_bytes(d[..4].try_into().unwrap())),
            OutDtype::I64 => i64::from_ne_bytes(d),
            _ => unreachable!(),
        }
    }

    fn row_cast_for<L: Load>(out: OutDtype) -> RowCast {
        match out {
            OutDtype::U8 => to_u8::<L>,
            OutDtype::I32 => to_i32::<L>,
            OutDtype::I64 => to_i64::<L>,
            _ => unreachable!(),
        }
    }

    #[test]
    fn integer_outputs_wrap_ints_and_saturate_floats() {
        use OutDtype::{I32, I64, U8};
        // int -> int: two's complement wrap (numpy astype agrees).
        assert_eq!(cast_one::<LU16>(U8, &300u16.to_ne_bytes()), 44);
        assert_eq!(cast_one::<LI64>(U8, &(-1i64).to_ne_bytes()), 255);
        assert_eq!(cast_one::<LU64>(I64, &(1u64 << 63).to_ne_bytes()), i64::MIN);
        assert_eq!(cast_one::<LI64>(I32, &(1i64 << 32 | 7).to_ne_bytes()), 7);
        assert_eq!(cast_one::<LI8>(I64, &(-5i8).to_ne_bytes()), -5);
        assert_eq!(cast_one::<LBool>(I64, &[2u8]), 1);
        // float -> int: truncation toward zero, saturation, NaN -> 0.
        assert_eq!(cast_one::<LF32>(I32, &(-1.7f32).to_ne_bytes()), -1);
        assert_eq!(cast_one::<LF32>(I32, &1e10f32.to_ne_bytes()), i64::from(i32::MAX));
        assert_eq!(cast_one::<LF32>(U8, &(-3.0f32).to_ne_bytes()), 0);
        assert_eq!(cast_one::<LF64>(U8, &300.5f64.to_ne_bytes()), 255);
        assert_eq!(cast_one::<LF64>(I64, &f64::NAN.to_ne_bytes()), 0);
        assert_eq!(cast_one::<LF64>(I64, &f64::NEG_INFINITY.to_ne_bytes()), i64::MIN);
        assert_eq!(cast_one::<LF16>(I32, &half::f16::from_f32(-2.5).to_ne_bytes()), -2);
        assert_eq!(cast_one::<LBf16>(I64, &half::bf16::from_f32(3.0e38).to_ne_bytes()), i64::MAX);
    }

    #[test]
    fn copies_and_fills_integer_outputs() {
        // chunk 1x4 of i64 -> i64 output of one sample of 6: 4 copied, 2 filled with -9.
        let src: Vec<u8> = [i64::MIN, -1, 0, i64::MAX].iter().flat_map(|v| v.to_ne_bytes()).collect();
        let mut dst = vec![0u8; 6 * 8];
        let out = unsafe { OutBuffer::new(dst.as_mut_ptr(), dst.len(), OutDtype::I64, 6) };
        let copy = Copy { sample: 0, chunk_start: vec![0, 0], sample_start: vec![0, 0], extent: vec![1, 4] };
        unsafe { copy_region(&src, 0, SourceDtype::I64, &[1, 4], &copy, &out, &[1, 6]) }.unwrap();
        let r = Region { start: vec![0, 4], extent: vec![1, 2] };
        unsafe { fill_region(&(-9i64).to_ne_bytes(), SourceDtype::I64, 0, &r, &out, &[1, 6]) };
        let got: Vec<i64> = dst.chunks_exact(8).map(|b| i64::from_ne_bytes(b.try_into().unwrap())).collect();
        assert_eq!(got, [i64::MIN, -1, 0, i64::MAX, -9, -9]);
        // u16 -> u8 output, fill 65535 wraps to 255.
        let src: Vec<u8> = [1u16, 256, 511].iter().flat_map(|v| v.to_ne_bytes()).collect();
        let mut dst = vec![0u8; 4];
        let out = unsafe { OutBuffer::new(dst.as_mut_ptr(), dst.len(), OutDtype::U8, 4) };
        let copy = Copy { sample: 0, chunk_start: vec![0], sample_start: vec![0], extent: vec![3] };
        unsafe { copy_region(&src, 0, SourceDtype::U16, &[3], &copy, &out, &[4]) }.unwrap();
        let r = Region { start: vec![3], extent: vec![1] };
        unsafe { fill_region(&65535u16.to_ne_bytes(), SourceDtype::U16, 0, &r, &out, &[4]) };
        assert_eq!(dst, [1, 0, 255, 255]);
    }
}
