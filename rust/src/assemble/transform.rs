//! The sample transform pass of CPU-made batches (Augment fused into the pipeline; the record
//! is `ffi::SampleTransform`, its contract dev/ops.md `push_many`): one finished sample of
//! the output buffer (every copy and fill written) rewritten in place, with the values the
//! assemble kernel gives on the GPU path:
//! - geometry, any dtype: output axis -e reads source axis -s (byte e-1 of the map, s =
//!   code & 0xf, 0: itself), backwards when bit 4 is set. The sample is copied to a scratch
//!   buffer and gathered back row by row (output C order; dims merged where they run on, so a
//!   flip of the outer axes moves whole planes);
//! - intensity, float outputs: per element, in f32, `x * scale` then `+ shift` then `+ noise`
//!   (module `noise`: j = the element's C-order index in the transformed sample), each
//!   rounded on its own, stored back in the output dtype (bf16: round to nearest even). The
//!   output already holds the cast value, so this is the kernel's
//!   `out_to_f32(f32_to_out(x))` first step; applied per gathered row while it is in cache.
//!
//! Calls `noise`; called by the pipeline's workers, one sample per job.

use super::{noise, OutDtype};
use crate::error::{err, Result};
use crate::ffi::records::SampleTransform;

/// Axis-map slots of a transform word (damacy::augment's kAugmentMaxDims).
const MAP_SLOTS: usize = 8;

/// How a transformed sample reads its source: output element (i_0, .., i_k) of `dims`
/// (extent, source stride; outer first, dims merged where one runs on into the next) reads
/// source element `base + sum_d i_d * stride_d`.
#[derive(Debug, PartialEq)]
struct Walk {
    base: isize,
    dims: Vec<(usize, isize)>,
}

fn bad_map(shape: &[u64], map: u64) -> crate::error::Error {
    err!(Internal, "internal: transform map {map:#x} does not fit a sample of shape {shape:?} (checked at push)")
}

impl Walk {
    /// The walk of `map` over samples of `shape`; `None` when it moves nothing (identity,
    /// flips and swaps of extent-1 axes, empty samples).
    fn new(shape: &[u64], map: u64) -> Result<Option<Walk>> {
        let n = shape.len();
        if n > MAP_SLOTS || (n < MAP_SLOTS && map >> (8 * n) != 0) {
            return Err(bad_map(shape, map));
        }
        let ext: Vec<usize> = shape.iter().map(|&d| usize::try_from(d)).collect::<std::result::Result<_, _>>().map_err(|_| bad_map(shape, map))?;
        // The source's C-order strides (in elements); the sample fits memory, checked anyway.
        let mut stride = vec![0isize; n];
        let mut acc = 1isize;
        for a in (0..n).rev() {
            stride[a] = acc;
            acc = isize::try_from(ext[a]).ok().and_then(|e| acc.checked_mul(e)).ok_or_else(|| bad_map(shape, map))?;
        }
        if acc == 0 {
            return Ok(None);
        }
        let (mut used, mut base, mut moved) = (0u32, 0isize, false);
        let mut dims = Vec::with_capacity(n);
        for d in 0..n {
            let e = n - d;
            let code = (map >> (8 * (e - 1))) & 0xff;
            let s = match (code & 0xf) as usize {
                0 => e,
                s => s,
            };
            if code & !0x1f != 0 || s > n {
                return Err(bad_map(shape, map));
            }
            let a = n - s;
            if ext[a] != ext[d] || used & (1 << a) != 0 {
                return Err(bad_map(shape, map));
            }
            used |= 1 << a;
            if ext[d] == 1 {
                continue; // reversing or moving an axis of extent 1 moves nothing
            }
            let rev = code & 0x10 != 0;
            moved |= rev || a != d;
            if rev {
                base += (ext[d] as isize - 1) * stride[a];
                dims.push((ext[d], -stride[a]));
            } else {
                dims.push((ext[d], stride[a]));
            }
        }
        if !moved {
            return Ok(None);
        }
        let mut merged: Vec<(usize, isize)> = Vec::with_capacity(dims.len());
        for (len, st) in dims {
            match merged.last_mut() {
                Some(outer) if outer.1 == st * len as isize => *outer = (outer.0 * len, st),
                _ => merged.push((len, st)),
            }
        }
        Ok(Some(Walk { base, dims: merged }))
    }

    /// The innermost dim: (row length, source stride along the row).
    fn row(&self) -> (usize, isize) {
        self.dims.last().copied().unwrap_or((1, 1))
    }

    /// Calls `f(source element, output element)` at the start of every row, output in C order.
    fn rows(&self, mut f: impl FnMut(isize, usize)) {
        let (len, _) = self.row();
        let outer = &self.dims[..self.dims.len().saturating_sub(1)];
        let mut idx = [0usize; MAP_SLOTS];
        let (mut at, mut j) = (self.base, 0usize);
        loop {
            f(at, j);
            j += len;
            let mut d = outer.len();
            loop {
                if d == 0 {
                    return;
                }
                d -= 1;
                idx[d] += 1;
                at += outer[d].1;
                if idx[d] < outer[d].0 {
                    break;
                }
                at -= outer[d].1 * outer[d].0 as isize;
                idx[d] = 0;
            }
        }
    }
}

/// `dst[i] = src[at + i * stride]`.
#[inline]
fn gather<T: Copy>(src: &[T], at: isize, stride: isize, dst: &mut [T]) {
    let (n, at) = (dst.len(), at as usize);
    match stride {
        1 => dst.copy_from_slice(&src[at..at + n]),
        -1 => {
            for (d, s) in dst.iter_mut().zip(src[at + 1 - n..=at].iter().rev()) {
                *d = *s;
            }
        }
        _ => {
            for (i, d) in dst.iter_mut().enumerate() {
                *d = src[(at as isize + i as isize * stride) as usize];
            }
        }
    }
}

/// A float output element: its f32 value and back (round to nearest even).
trait FloatElem: Copy {
    fn get(self) -> f32;
    fn put(v: f32) -> Self;
}

impl FloatElem for f32 {
    #[inline(always)]
    fn get(self) -> f32 {
        self
    }
    #[inline(always)]
    fn put(v: f32) -> Self {
        v
    }
}

/// bf16, as its bits.
impl FloatElem for u16 {
    #[inline(always)]
    fn get(self) -> f32 {
        half::bf16::from_bits(self).to_f32()
    }
    #[inline(always)]
    fn put(v: f32) -> Self {
        half::bf16::from_f32(v).to_bits()
    }
}

/// The intensity change of output elements `j0..j0 + row.len()` of a sample.
fn intensity<E: FloatElem>(row: &mut [E], j0: usize, t: &SampleTransform) {
    let (scale, shift) = (t.scale, t.shift);
    if t.noise_factor == 0.0 {
        for x in row {
            *x = E::put(x.get() * scale + shift);
        }
        return;
    }
    let mut terms = [0f32; noise::BLOCK];
    let mut done = 0;
    while done < row.len() {
        // Blocks start at an even element (whole pairs); samples with noise have fewer than
        // 2^32 elements (checked at push), so the index fits the u32 counter.
        let at = j0 + done;
        let odd = at & 1;
        let len = (noise::BLOCK - odd).min(row.len() - done);
        noise::block(t.noise_g, t.noise_b, t.noise_factor, (at - odd) as u32, &mut terms);
        for (x, &noise) in row[done..done + len].iter_mut().zip(&terms[odd..]) {
            *x = E::put((x.get() * scale + shift) + noise);
        }
        done += len;
    }
}

/// `bytes` as elements of `T` (a plain integer or float type: every bit pattern is a value).
fn elems<T: Copy>(bytes: &mut [u8]) -> Result<&mut [T]> {
    // SAFETY: T is a plain number type (callers below), so any bytes are a valid T; the
    // middle part is aligned and in bounds by align_to_mut's contract.
    let (pre, mid, post) = unsafe { bytes.align_to_mut::<T>() };
    if !pre.is_empty() || !post.is_empty() {
        return Err(err!(Internal, "internal: a sample is not a whole number of aligned {}-byte elements", std::mem::size_of::<T>()));
    }
    Ok(mid)
}

/// Output elements `row` (the intensity change) takes at once after a walk's gather: a few
/// rows while they are in cache, and long enough that the noise's blocks are mostly full.
const GROUP: usize = 2048;

/// Applies `walk` (geometry) and then `row` (intensity) to `out`, gathered rows at a time
/// (runs of at least [`GROUP`] elements, or the rest); without a walk `row` runs over the
/// whole sample in place.
fn run<T: Copy>(out: &mut [T], scratch: &mut Vec<u64>, walk: Option<&Walk>, mut row: impl FnMut(&mut [T], usize)) -> Result<()> {
    let Some(walk) = walk else {
        row(out, 0);
        return Ok(());
    };
    let bytes = std::mem::size_of_val(out);
    let words = bytes.div_ceil(8);
    if scratch.len() < words {
        scratch.try_reserve_exact(words - scratch.len()).map_err(|_| err!(OutOfMemory, "cannot allocate {bytes} bytes of scratch to transform a sample"))?;
        scratch.resize(words, 0);
    }
    // SAFETY: u64 is aligned for every element type here and `words` u64 hold `bytes`.
    let src = elems::<T>(unsafe { std::slice::from_raw_parts_mut(scratch.as_mut_ptr().cast::<u8>(), bytes) })?;
    src.copy_from_slice(out);
    let (len, stride) = walk.row();
    let mut from = 0;
    walk.rows(|at, j| {
        gather(src, at, stride, &mut out[j..j + len]);
        if j + len - from >= GROUP {
            row(&mut out[from..j + len], from);
            from = j + len;
        }
    });
    if from < out.len() {
        row(&mut out[from..], from);
    }
    Ok(())
}

/// Applies `t` in place to one sample: `bytes` are its elements of `dtype` in C order, of
/// `shape`. `scratch` holds a copy of the sample while its geometry is gathered (grown to
/// the sample's size the first time, then reused: one per worker).
///
/// # Errors
/// OutOfMemory when the scratch cannot grow; Internal for what `transform::check` refuses at
/// push (a map that does not fit the shape, intensity on an integer dtype) or a misaligned
/// sample.
pub(crate) fn apply(bytes: &mut [u8], shape: &[u64], dtype: OutDtype, t: &SampleTransform, scratch: &mut Vec<u64>) -> Result<()> {
    let walk = Walk::new(shape, t.map)?;
    if walk.is_none() && !t.intensity {
        return Ok(());
    }
    let walk = walk.as_ref();
    match (dtype, t.intensity) {
        (OutDtype::F32, true) => run(elems::<f32>(bytes)?, scratch, walk, |r, j| intensity(r, j, t)),
        (OutDtype::Bf16, true) => run(elems::<u16>(bytes)?, scratch, walk, |r, j| intensity(r, j, t)),
        (OutDtype::U8, false) => run(elems::<u8>(bytes)?, scratch, walk, |_, _| ()),
        (OutDtype::Bf16, false) => run(elems::<u16>(bytes)?, scratch, walk, |_, _| ()),
        (OutDtype::F32 | OutDtype::I32, false) => run(elems::<u32>(bytes)?, scratch, walk, |_, _| ()),
        (OutDtype::I64, false) => run(elems::<u64>(bytes)?, scratch, walk, |_, _| ()),
        (d, true) => Err(err!(Internal, "internal: an intensity transform on a {} output (checked at push)", d.name())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (splitmix64).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// A random sample shape of `n` dims and a map word that fits it: a random permutation
    /// (extents equal along its cycles) with random reversals, sometimes written with the
    /// explicit source code for an axis that stays.
    fn random_case(rng: &mut Rng, n: usize) -> (Vec<u64>, u64) {
        let mut perm: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            perm.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let mut shape = vec![0u64; n];
        for d in 0..n {
            if shape[d] == 0 {
                let e = 1 + rng.below(7);
                let mut a = d;
                loop {
                    shape[a] = e;
                    a = perm[a];
                    if a == d {
                        break;
                    }
                }
            }
        }
        let mut map = 0u64;
        for (d, &a) in perm.iter().enumerate() {
            let (e, s) = (n - d, n - a);
            let code = if s != e || rng.below(2) == 0 { s as u64 } else { 0 };
            let rev = if rng.below(2) == 0 { 0x10 } else { 0 };
            map |= (code | rev) << (8 * (e - 1));
        }
        (shape, map)
    }

    /// The map read directly: per output axis d, (source axis, reversed).
    fn axes(n: usize, map: u64) -> Vec<(usize, bool)> {
        (0..n)
            .map(|d| {
                let e = n - d;
                let code = (map >> (8 * (e - 1))) & 0xff;
                let s = match (code & 0xf) as usize {
                    0 => e,
                    s => s,
                };
                (n - s, code & 0x10 != 0)
            })
            .collect()
    }

    /// For every output element (C order), the source element it reads: by definition, one
    /// multi-index at a time.
    fn reference_sources(shape: &[u64], map: u64) -> Vec<usize> {
        let n = shape.len();
        let total: u64 = shape.iter().product();
        let ax = axes(n, map);
        (0..total)
            .map(|mut lin| {
                let mut out_idx = vec![0u64; n];
                for d in (0..n).rev() {
                    out_idx[d] = lin % shape[d];
                    lin /= shape[d];
                }
                let mut src_idx = vec![0u64; n];
                for d in 0..n {
                    let (a, rev) = ax[d];
                    src_idx[a] = if rev { shape[d] - 1 - out_idx[d] } else { out_idx[d] };
                }
                src_idx.iter().zip(shape).fold(0u64, |acc, (&i, &e)| acc * e + i) as usize
            })
            .collect()
    }

    /// The contract's noise term of element j, in f64 from the f32 arguments.
    fn noise_ref(t: &SampleTransform, j: u32) -> f64 {
        let c0 = t.noise_g.wrapping_mul(j & !1).wrapping_add(t.noise_b);
        let r = (f64::from(noise::uniform23(c0)).ln() * f64::from(t.noise_factor)).sqrt();
        let theta = f64::from(noise::uniform23(c0.wrapping_add(t.noise_g)) * std::f32::consts::TAU);
        r * if j & 1 == 1 { theta.sin() } else { theta.cos() }
    }

    fn transform(rng: &mut Rng, map: u64, intensity: bool, noise: bool) -> SampleTransform {
        SampleTransform {
            map,
            scale: 0.5 + (rng.below(1000) as f32) / 500.0,
            shift: (rng.below(2000) as f32) / 100.0 - 10.0,
            noise_g: (rng.next() as u32) | 1,
            noise_b: (rng.next() as u32) >> 1,
            noise_factor: if noise { -2.0 * 0.7 * 0.7 } else { 0.0 },
            intensity,
        }
    }

    #[test]
    fn random_maps_match_the_direct_reference_for_every_dtype() {
        let mut rng = Rng(7);
        let mut scratch = Vec::new();
        for case in 0..600 {
            let n = 1 + case % 5;
            let (shape, map) = random_case(&mut rng, n);
            let total: usize = shape.iter().product::<u64>() as usize;
            let src_of = reference_sources(&shape, map);
            let dtype = [OutDtype::F32, OutDtype::Bf16, OutDtype::U8, OutDtype::I32, OutDtype::I64][case % 5];
            let noise = case % 3 == 0;
            let t = transform(&mut rng, map, dtype.is_float() && case % 7 != 0, noise);
            match dtype {
                OutDtype::F32 => {
                    let x: Vec<f32> = (0..total).map(|_| (rng.below(20_000) as f32 - 10_000.0) / 7.0).collect();
                    let mut bytes: Vec<u8> = x.iter().flat_map(|v| v.to_ne_bytes()).collect();
                    apply(&mut bytes, &shape, dtype, &t, &mut scratch).unwrap();
                    for (j, b) in bytes.chunks_exact(4).enumerate() {
                        let got = f32::from_ne_bytes(b.try_into().unwrap());
                        let v = x[src_of[j]];
                        if !t.intensity {
                            assert_eq!(got.to_bits(), v.to_bits(), "case {case} {shape:?} {map:#x} j {j}");
                            continue;
                        }
                        let base = v * t.scale + t.shift;
                        if noise {
                            let want = f64::from(base) + noise_ref(&t, j as u32);
                            assert!((f64::from(got) - want).abs() <= 2e-6 * want.abs().max(1.0), "case {case} j {j}: {got} vs {want}");
                        } else {
                            assert_eq!(got.to_bits(), base.to_bits(), "case {case} j {j}");
                        }
                    }
                }
                OutDtype::Bf16 => {
                    let x: Vec<u16> = (0..total).map(|_| half::bf16::from_f32((rng.below(2000) as f32 - 1000.0) / 3.0).to_bits()).collect();
                    let mut bytes: Vec<u8> = x.iter().flat_map(|v| v.to_ne_bytes()).collect();
                    apply(&mut bytes, &shape, dtype, &t, &mut scratch).unwrap();
                    for (j, b) in bytes.chunks_exact(2).enumerate() {
                        let got = half::bf16::from_ne_bytes([b[0], b[1]]);
                        let v = half::bf16::from_bits(x[src_of[j]]).to_f32();
                        if !t.intensity {
                            assert_eq!(got.to_bits(), x[src_of[j]], "case {case} j {j}");
                            continue;
                        }
                        let base = v * t.scale + t.shift;
                        if noise {
                            let want = f64::from(base) + noise_ref(&t, j as u32);
                            // one bf16 rounding of the f32 value: 2^-8 relative
                            assert!((f64::from(got.to_f32()) - want).abs() <= 4e-3 * want.abs().max(1.0), "case {case} j {j}: {got} vs {want}");
                        } else {
                            assert_eq!(got, half::bf16::from_f32(base), "case {case} j {j}");
                        }
                    }
                }
                _ => {
                    let es = dtype.size();
                    let x: Vec<u8> = (0..total * es).map(|_| rng.next() as u8).collect();
                    let mut bytes = x.clone();
                    apply(&mut bytes, &shape, dtype, &t, &mut scratch).unwrap();
                    for j in 0..total {
                        let s = src_of[j];
                        assert_eq!(bytes[j * es..(j + 1) * es], x[s * es..(s + 1) * es], "case {case} {dtype:?} {shape:?} {map:#x} j {j}");
                    }
                }
            }
        }
    }

    #[test]
    fn walks_merge_runs_and_skip_what_moves_nothing() {
        // identity, flips of extent-1 axes: nothing to do
        assert_eq!(Walk::new(&[4, 8, 8], 0).unwrap(), None);
        assert_eq!(Walk::new(&[4, 1, 8], 0x1000).unwrap(), None);
        assert_eq!(Walk::new(&[4, 8, 8], 0x0201).unwrap(), None); // the explicit identity
        assert_eq!(Walk::new(&[0, 8, 8], 0x11).unwrap(), None);
        // a flip of the outer axis moves whole planes: one row of 64 per plane
        assert_eq!(Walk::new(&[4, 8, 8], 0x10_00_00).unwrap(), Some(Walk { base: 3 * 64, dims: vec![(4, -64), (64, 1)] }));
        // a flip of every axis is one reversed run
        assert_eq!(Walk::new(&[4, 8, 8], 0x10_10_10).unwrap(), Some(Walk { base: 255, dims: vec![(256, -1)] }));
        // a quarter turn of the (-2, -1) plane: rows read down a column
        let w = Walk::new(&[2, 3, 3], 0x11_02).unwrap().unwrap();
        assert_eq!(w.row(), (3, 3));
        // maps that do not fit are errors, never reads out of bounds
        for (shape, map) in [(&[4u64, 8, 8][..], 0x01_00_03u64), (&[4, 8, 8], 0x0101), (&[4, 8, 8], 0x01_00_00_00), (&[8], 0x21)] {
            assert_eq!(Walk::new(shape, map).unwrap_err().status(), crate::error::Status::Internal, "{map:#x}");
        }
        let t = SampleTransform { intensity: true, scale: 2.0, ..SampleTransform::default() };
        assert!(apply(&mut [0u8; 4], &[4], OutDtype::U8, &t, &mut Vec::new()).is_err());
    }

    #[test]
    fn intensity_alone_is_in_place_and_identity_leaves_the_bytes() {
        let x: Vec<f32> = (0..10).map(|v| v as f32).collect();
        let mut bytes: Vec<u8> = x.iter().flat_map(|v| v.to_ne_bytes()).collect();
        let t = SampleTransform { intensity: true, scale: 3.0, shift: -1.0, ..SampleTransform::default() };
        let mut scratch = Vec::new();
        apply(&mut bytes, &[10], OutDtype::F32, &t, &mut scratch).unwrap();
        assert!(scratch.is_empty(), "no geometry: no scratch");
        let got: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_ne_bytes(b.try_into().unwrap())).collect();
        assert_eq!(got, x.iter().map(|v| v * 3.0 - 1.0).collect::<Vec<_>>());
        let before = bytes.clone();
        apply(&mut bytes, &[10], OutDtype::F32, &SampleTransform::default(), &mut scratch).unwrap();
        assert_eq!(bytes, before);
    }
}

#[cfg(test)]
mod bench {
    use super::*;
    use std::time::Instant;

    /// Per-sample cost on this machine: `cargo test --release -p damacy --lib
    /// assemble::transform::bench -- --ignored --nocapture` (bench_augment's samples:
    /// 32×64×64, flips of the 3 axes and a quarter turn of (y, x)).
    #[test]
    #[ignore = "timing, not a test"]
    fn per_sample_cost() {
        let shape = [32u64, 64, 64];
        let n = 32 * 64 * 64;
        let mut scratch = Vec::new();
        // turn k=1 of (-2, -1) with all three axes flipped, and a flip of z alone
        for (name, map) in [("turn+flips", 0x10_01_12u64 ^ 0x10_10_10 ^ 0x00_10_00 ^ 0x10), ("flip z", 0x10_00_00), ("flip x", 0x10), ("none", 0)] {
            for (dtype, intensity, factor) in [(OutDtype::F32, true, -0.02f32), (OutDtype::F32, true, 0.0), (OutDtype::F32, false, 0.0), (OutDtype::U8, false, 0.0)] {
                let t = SampleTransform { map, scale: 1.05, shift: 0.01, noise_g: 12345, noise_b: 678, noise_factor: factor, intensity };
                let mut bytes = vec![1u8; n * dtype.size()];
                let reps = 40;
                let t0 = Instant::now();
                for _ in 0..reps {
                    apply(&mut bytes, &shape, dtype, &t, &mut scratch).unwrap();
                }
                let us = t0.elapsed().as_secs_f64() / f64::from(reps) * 1e6;
                println!("{name:<11} {dtype:?} intensity {intensity} noise {}: {us:.0} us per sample ({:.2} ns per element)", factor != 0.0, us * 1e3 / n as f64);
            }
        }
        let mut z = [0f32; noise::BLOCK];
        let t0 = Instant::now();
        for p in 0..(n / noise::BLOCK) as u32 * 40 {
            noise::block(12345, 678, -0.02, p * noise::BLOCK as u32, &mut z);
        }
        println!("noise alone: {:.2} ns per element", t0.elapsed().as_secs_f64() * 1e9 / (n * 40) as f64);
    }
}
