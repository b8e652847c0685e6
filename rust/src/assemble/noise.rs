//! The counter-based Gaussian noise of sample transforms on the CPU: python/damacy/transforms.py's
//! contract, written as the assemble kernel computes it (`asm_intensity`,
//! cpp/src/cuda/kernels_impl.cuh): for output element j of a sample, with the transform's
//! counter (g, b) and `factor` = -2 * noise_std**2,
//! `c0 = g * (j & !1) + b` (mod 2^32), `r = sqrt(ln(u(c0)) * factor)`,
//! `theta = u(c0 + g) * f32(2 pi)`, noise `r * (j odd ? sin : cos)(theta)`, each product
//! rounded to f32 on its own (no fused multiply-add), `u(c) = (lowbias32(c) >> 9 + 0.5) / 2^23`.
//!
//! `ln`, `sin` and `cos` are Cephes' single-precision polynomials (Moshier) written branch-free
//! so that a block of pairs vectorises: within 2 ulp of the correctly rounded value on the
//! contract's arguments (tests), so the noise matches the GPU's and torch's up to the last bits
//! of each function, as it does between those two. A block is compiled three times (x86-64's
//! baseline SSE2, AVX2, AVX-512F) and the widest the CPU has runs (0.55 / 1.2 / 2.8 ns per
//! element on the dev VM): the same IEEE operations in the same order, never contracted into
//! fused multiply-adds, so every variant gives the same bits (tested).

// Cephes' constants digit for digit as published (clippy would truncate them to the same
// f32 values), and the formulas' one-letter names.
#![allow(clippy::excessive_precision, clippy::many_single_char_names)]

/// Noise terms per [`block`] call (even: whole Box-Muller pairs).
pub(super) const BLOCK: usize = 128;
const PAIRS: usize = BLOCK / 2;

/// f32(2 pi), the kernel's `static_cast<float>(6.283185307179586)`.
const TWO_PI: f32 = std::f32::consts::TAU;

/// Chris Wellons' hash-prospector lowbias32, [16 21f0aaad 15 735a2d97 15].
#[inline(always)]
fn lowbias32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x21f0_aaad);
    h ^= h >> 15;
    h = h.wrapping_mul(0x735a_2d97);
    h ^ (h >> 15)
}

/// The contract's uniform of counter `c`: (floor(h / 2^9) + 0.5) / 2^23, exact in f32, in (0, 1).
#[inline(always)]
pub(super) fn uniform23(c: u32) -> f32 {
    // (below 2^23: the signed conversion, which vectorises, is exact)
    ((lowbias32(c) >> 9) as i32 as f32 + 0.5) * (1.0 / 8_388_608.0)
}

/// ln(x) for a positive normal `x` (Cephes `logf`): x = m * 2^e with m in [sqrt(1/2), sqrt(2)),
/// ln(1 + (m - 1)) by its polynomial, e * ln 2 in two parts.
#[inline(always)]
pub(super) fn ln(x: f32) -> f32 {
    let bits = x.to_bits();
    let mut e = ((bits >> 23) & 0xff) as i32 - 126;
    let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f00_0000); // [0.5, 1)
    let small = m < std::f32::consts::FRAC_1_SQRT_2;
    e -= i32::from(small);
    let x = if small { m + m - 1.0 } else { m - 1.0 };
    let z = x * x;
    let mut y = 7.037_683_6e-2_f32;
    y = y * x - 1.151_461_03e-1;
    y = y * x + 1.167_699_87e-1;
    y = y * x - 1.242_014_08e-1;
    y = y * x + 1.424_932_28e-1;
    y = y * x - 1.666_805_77e-1;
    y = y * x + 2.000_071_48e-1;
    y = y * x - 2.499_999_4e-1;
    y = y * x + 3.333_333_1e-1;
    y = y * x * z;
    let fe = e as f32;
    y += -2.121_944_4e-4 * fe;
    y += -0.5 * z;
    (x + y) + 0.693_359_375 * fe
}

/// (sin x, cos x) for 0 <= x < 2^21 (Cephes `sinf` / `cosf` polynomials): x reduced by
/// the nearest multiple q of pi/2 (pi/2 in three parts, the first two exact in their
/// products), both polynomials on the rest (|r| <= pi/4), picked and signed by q mod 4.
#[inline(always)]
pub(super) fn sin_cos(x: f32) -> (f32, f32) {
    const PIO2_1: f32 = 1.570_312_5;
    const PIO2_2: f32 = 4.837_512_969_970_703e-4;
    const PIO2_3: f32 = 7.549_789_954_891_882e-8;
    // 1.5 * 2^23 + t rounds t to an integer (ties to even) in the low mantissa bits
    const ROUND: f32 = 12_582_912.0;
    let k = x * std::f32::consts::FRAC_2_PI + ROUND;
    let quadrant = k.to_bits() & 3;
    let q = k - ROUND;
    let r = ((x - q * PIO2_1) - q * PIO2_2) - q * PIO2_3;
    let z = r * r;
    let s = ((-1.951_529_6e-4 * z + 8.332_160_9e-3) * z - 1.666_665_5e-1) * z * r + r;
    let c = ((2.443_315_7e-5 * z - 1.388_731_6e-3) * z + 4.166_664_6e-2) * z * z - 0.5 * z + 1.0;
    let (sin, cos) = if quadrant & 1 == 0 { (s, c) } else { (c, s) };
    let sin = if quadrant & 2 == 0 { sin } else { -sin };
    let cos = if (quadrant + 1) & 2 == 0 { cos } else { -cos };
    (sin, cos)
}

/// `z[i]` = the noise term of element `p0 + i` (`p0` even; counters mod 2^32) of a sample
/// whose transform has the counter (`g`, `b`) and `factor` = -2 * noise_std**2.
pub(super) fn block(g: u32, b: u32, factor: f32, p0: u32, z: &mut [f32; BLOCK]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: this CPU has AVX-512F (checked just now).
            return unsafe { block_avx512(g, b, factor, p0, z) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: this CPU has AVX2 (checked just now).
            return unsafe { block_avx2(g, b, factor, p0, z) };
        }
    }
    block_portable(g, b, factor, p0, z);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn block_avx512(g: u32, b: u32, factor: f32, p0: u32, z: &mut [f32; BLOCK]) {
    block_portable(g, b, factor, p0, z);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn block_avx2(g: u32, b: u32, factor: f32, p0: u32, z: &mut [f32; BLOCK]) {
    block_portable(g, b, factor, p0, z);
}

/// [`block`] for whichever vector unit the caller is compiled for (inlined into each).
#[inline(always)]
fn block_portable(g: u32, b: u32, factor: f32, p0: u32, z: &mut [f32; BLOCK]) {
    let mut r = [0f32; PAIRS];
    let mut theta = [0f32; PAIRS];
    for (m, (r, t)) in r.iter_mut().zip(theta.iter_mut()).enumerate() {
        let c0 = g.wrapping_mul(p0.wrapping_add(2 * m as u32)).wrapping_add(b);
        *r = (ln(uniform23(c0)) * factor).sqrt();
        *t = uniform23(c0.wrapping_add(g)) * TWO_PI;
    }
    for ((pair, &r), &t) in z.chunks_exact_mut(2).zip(&r).zip(&theta) {
        let (s, c) = sin_cos(t);
        pair[0] = r * c;
        pair[1] = r * s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in ulps between `got` and the f64 value `want` rounded to f32.
    fn ulps(got: f32, want: f64) -> i64 {
        let w = want as f32;
        let key = |v: f32| {
            let b = v.to_bits() as i32;
            i64::from(if b < 0 { i32::MIN - b } else { b })
        };
        (key(got) - key(w)).abs()
    }

    #[test]
    fn ln_sin_and_cos_are_within_two_ulp_on_the_contract_grid() {
        // Every 97th uniform of the 2^23 grid, and its ends.
        let ks = (0..1u32 << 23).step_by(97).chain([1, (1 << 23) - 2, (1 << 23) - 1]);
        let (mut worst_ln, mut worst_trig) = (0, 0.0f64);
        for k in ks {
            let u = (k as f32 + 0.5) * (1.0 / 8_388_608.0);
            worst_ln = worst_ln.max(ulps(ln(u), f64::from(u).ln()));
            let t = u * TWO_PI;
            let (s, c) = sin_cos(t);
            let t = f64::from(t);
            // near a zero of sin or cos an ulp of the result is tiny: judge the error
            // relative to 1/2 there (the noise is r times it, r < 6), else to the value
            for (got, want) in [(s, t.sin()), (c, t.cos())] {
                worst_trig = worst_trig.max((f64::from(got) - want).abs() / want.abs().max(0.5));
            }
        }
        assert!(worst_ln <= 2, "ln: {worst_ln} ulp");
        assert!(worst_trig <= 2.0 * f64::from(f32::EPSILON), "sin/cos: relative error {worst_trig:e}");
    }

    #[test]
    fn every_compiled_variant_gives_the_same_bits() {
        let (mut want, mut got) = ([0f32; BLOCK], [0f32; BLOCK]);
        for (i, p0) in [0u32, 2, 1 << 20, u32::MAX - 127].into_iter().enumerate() {
            let (g, b) = (0x9e37_79b9u32.wrapping_mul(i as u32 + 1) | 1, 0x7f4a_7c15u32 >> i);
            block_portable(g, b, -0.98, p0, &mut want);
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: checked.
                    unsafe { block_avx2(g, b, -0.98, p0, &mut got) };
                    assert_eq!(want.map(f32::to_bits), got.map(f32::to_bits), "avx2 at {p0}");
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: checked.
                    unsafe { block_avx512(g, b, -0.98, p0, &mut got) };
                    assert_eq!(want.map(f32::to_bits), got.map(f32::to_bits), "avx512f at {p0}");
                }
            }
            block(g, b, -0.98, p0, &mut got);
            assert_eq!(want.map(f32::to_bits), got.map(f32::to_bits), "dispatched at {p0}");
        }
    }

    #[test]
    fn the_block_is_the_contract_formula() {
        let (g, b, factor) = (0x1234_5679u32, 0x0bad_cafe_u32, -2.0f32 * 0.7 * 0.7);
        let mut z = [0f32; BLOCK];
        block(g, b, factor, 1000, &mut z);
        for (i, &got) in z.iter().enumerate() {
            let j = 1000 + i as u32;
            let c0 = g.wrapping_mul(j & !1).wrapping_add(b);
            let r = (f64::from(uniform23(c0)).ln() * f64::from(factor)).sqrt();
            let t = f64::from(uniform23(c0.wrapping_add(g)) * TWO_PI);
            let want = r * if j & 1 == 1 { t.sin() } else { t.cos() };
            assert!((f64::from(got) - want).abs() <= 4e-7 * r.max(1.0), "{i}: {got} vs {want}");
        }
        // the hash, against transforms.py's (Python ints masked to 32 bits)
        assert_eq!((lowbias32(0), lowbias32(1), lowbias32(0xdead_beef)), (0, 0x86d2_fa73, 0x2a2a_caf2));
    }
}
