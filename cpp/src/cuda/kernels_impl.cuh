// Private: the per-thread work of the GPU kernels, written once as __host__ __device__ code.
//
// kernels.cu wraps these in __global__ functions; kernels_test.cu also runs them on the host
// over an emulated grid (phase by phase, as separated by __syncthreads), so the index math,
// the unshuffle transposes and the casts are checked on a machine without a GPU. Nothing
// here allocates, synchronises or launches.
//
// Casts follow the CPU path (rust/src/assemble): value -> f32 with round-to-nearest-even
// (ints, f64), exact for bool (0/1), u8/i8/u16/i16, f16, bf16; bf16 output is the f32 value
// rounded to nearest even. NaN payloads may differ from the CPU path (the GPU converters
// return canonical NaNs); NaN stays NaN.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "op_views.h"

#if defined(__CUDACC__)
#define DAMACY_HD __host__ __device__ __forceinline__
#else
#define DAMACY_HD inline
#endif

namespace damacy::gpu::detail {

// ------------------------------------------------------------------------------------------
// Portable primitives (device intrinsic / host equivalent).

DAMACY_HD uint64_t umul64hi(uint64_t a, uint64_t b) {
#if defined(__CUDA_ARCH__)
  return __umul64hi(a, b);
#else
  return static_cast<uint64_t>((static_cast<unsigned __int128>(a) * b) >> 64);
#endif
}

/// __byte_perm without the sign-replicate mode: result byte i = byte (s >> 4i) & 7 of y:x.
DAMACY_HD uint32_t byte_perm(uint32_t x, uint32_t y, uint32_t s) {
#if defined(__CUDA_ARCH__)
  return __byte_perm(x, y, s);
#else
  const uint64_t v = (static_cast<uint64_t>(y) << 32) | x;
  uint32_t r = 0;
  for (int i = 0; i < 4; ++i) {
    const uint32_t sel = (s >> (4 * i)) & 7u;
    r |= static_cast<uint32_t>((v >> (8 * sel)) & 0xffu) << (8 * i);
  }
  return r;
#endif
}

DAMACY_HD float bits_to_f32(uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(b);
#else
  float f;
  std::memcpy(&f, &b, 4);
  return f;
#endif
}

DAMACY_HD double bits_to_f64(uint64_t b) {
#if defined(__CUDA_ARCH__)
  return __longlong_as_double(static_cast<long long>(b));
#else
  double d;
  std::memcpy(&d, &b, 8);
  return d;
#endif
}

// Round-to-nearest-even conversions (the host's default rounding mode is assumed unchanged).
DAMACY_HD float u32_to_f32(uint32_t x) {
#if defined(__CUDA_ARCH__)
  return __uint2float_rn(x);
#else
  return static_cast<float>(x);
#endif
}
DAMACY_HD float i32_to_f32(int32_t x) {
#if defined(__CUDA_ARCH__)
  return __int2float_rn(x);
#else
  return static_cast<float>(x);
#endif
}
DAMACY_HD float u64_to_f32(uint64_t x) {
#if defined(__CUDA_ARCH__)
  return __ull2float_rn(x);
#else
  return static_cast<float>(x);
#endif
}
DAMACY_HD float i64_to_f32(int64_t x) {
#if defined(__CUDA_ARCH__)
  return __ll2float_rn(x);
#else
  return static_cast<float>(x);
#endif
}
DAMACY_HD float f64_to_f32(double x) {
#if defined(__CUDA_ARCH__)
  return __double2float_rn(x);
#else
  return static_cast<float>(x);
#endif
}
DAMACY_HD float f16_to_f32(uint16_t bits) {
  __half_raw r;
  r.x = bits;
  return __half2float(__half(r));
}

/// log2 of the element size of a source dtype code (0 for unknown codes: they are rejected
/// on the host, this only keeps a bad code from reading far).
DAMACY_HD uint32_t src_dtype_shift(uint32_t code) {
  switch (code) {
    case kU16: case kI16: case kF16: case kBf16: return 1;
    case kU32: case kI32: case kF32: return 2;
    case kU64: case kI64: case kF64: return 3;
    default: return 0;
  }
}

/// One source element (its little-endian bits, zero-extended) as f32, like the CPU path.
DAMACY_HD float src_to_f32(uint64_t raw, uint32_t code) {
  switch (code) {
    case kBool: return (raw & 0xffu) != 0 ? 1.0f : 0.0f;
    case kU8: return static_cast<float>(static_cast<uint8_t>(raw));
    case kI8: return static_cast<float>(static_cast<int8_t>(static_cast<uint8_t>(raw)));
    case kU16: return static_cast<float>(static_cast<uint16_t>(raw));
    case kI16: return static_cast<float>(static_cast<int16_t>(static_cast<uint16_t>(raw)));
    case kU32: return u32_to_f32(static_cast<uint32_t>(raw));
    case kI32: return i32_to_f32(static_cast<int32_t>(static_cast<uint32_t>(raw)));
    case kU64: return u64_to_f32(raw);
    case kI64: return i64_to_f32(static_cast<int64_t>(raw));
    case kF16: return f16_to_f32(static_cast<uint16_t>(raw));
    case kBf16: return bits_to_f32(static_cast<uint32_t>(raw & 0xffffu) << 16);
    case kF32: return bits_to_f32(static_cast<uint32_t>(raw));
    case kF64: return f64_to_f32(bits_to_f64(raw));
    default: return bits_to_f32(0x7fc00000u);
  }
}

template <class OutT>
DAMACY_HD OutT f32_to_out(float f);
template <>
DAMACY_HD float f32_to_out<float>(float f) {
  return f;
}
template <>
DAMACY_HD __nv_bfloat16 f32_to_out<__nv_bfloat16>(float f) {
  return __float2bfloat16_rn(f);
}

// ------------------------------------------------------------------------------------------
// Intensity and noise arithmetic shared by the assemble kernel and the augment kernel
// (augment_impl.cuh): the rounding of transforms.py's torch path, op by op.

DAMACY_HD float aug_mul(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  volatile float p = a * b;  // never contracted into an fma with the add that follows
  return p;
#endif
}

DAMACY_HD float aug_add(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  volatile float s = a + b;
  return s;
#endif
}

DAMACY_HD void aug_sincos(float t, float* s, float* c) {
#if defined(__CUDA_ARCH__)
  sincosf(t, s, c);
#else
  *s = std::sin(t);
  *c = std::cos(t);
#endif
}

// Chris Wellons' hash-prospector lowbias32, [16 21f0aaad 15 735a2d97 15].
DAMACY_HD uint32_t lowbias32(uint32_t h) {
  h ^= h >> 16;
  h *= 0x21f0aaadu;
  h ^= h >> 15;
  h *= 0x735a2d97u;
  h ^= h >> 15;
  return h;
}

// The contract's uniform of counter c: (floor(h / 2**9) + 0.5) / 2**23, exact in float.
DAMACY_HD float uniform23(uint32_t c) {
  return (static_cast<float>(lowbias32(c) >> 9) + 0.5f) * 0x1p-23f;
}

/// Loads one element of 1 << shift bytes (little endian); byte-wise when misaligned.
DAMACY_HD uint64_t load_elem(const uint8_t* p, uint32_t shift) {
  const uint32_t size = 1u << shift;
  if ((reinterpret_cast<uintptr_t>(p) & (size - 1)) == 0) {
#if defined(__CUDA_ARCH__)
    switch (shift) {
      case 0: return __ldg(p);
      case 1: return __ldg(reinterpret_cast<const unsigned short*>(p));
      case 2: return __ldg(reinterpret_cast<const unsigned int*>(p));
      default: return __ldg(reinterpret_cast<const unsigned long long*>(p));
    }
#else
    switch (shift) {
      case 0: return *p;
      case 1: return *reinterpret_cast<const uint16_t*>(p);
      case 2: return *reinterpret_cast<const uint32_t*>(p);
      default: return *reinterpret_cast<const uint64_t*>(p);
    }
#endif
  }
  uint64_t v = 0;
  for (uint32_t i = 0; i < size; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}

// ------------------------------------------------------------------------------------------
// Assemble: copy + cast + fill of boxes into the batch output, one launch per batch.
//
// Voxel space: the ops' voxels laid end to end in op order (op k owns
// [prefix[k], prefix[k+1]) in C order over its extent). A CTA of kAsmThreads threads takes a
// tile of kAsmTile consecutive voxels; thread t handles voxels tile + j*kAsmThreads + t,
// j < kAsmPerThread, so each warp-wide load and store covers 32 consecutive voxels of one row
// (coalesced whatever the alignment of the box). The CTA finds the ops its tile touches
// (warp-wide 32-ary search of the prefix), turns up to kAsmMaxTileOps of them into AsmPlans
// in shared memory (strides, fast-division magics, step constants) and the threads walk their
// voxels: the first voxel of an op by three fast divisions, each later one (+kAsmThreads) by
// mixed-radix digit addition with carries (no division in the loop).

constexpr int kAsmThreads = 256;
constexpr int kAsmPerThread = 8;
constexpr uint64_t kAsmTile = uint64_t(kAsmThreads) * kAsmPerThread;
constexpr int kAsmMaxTileOps = 32;

constexpr uint32_t kPlanFill = 1;
constexpr uint32_t kPlanWide = 2;  // >= 2^32 voxels: 64-bit division for the first voxel

/// n / d for n < 2^32, 1 <= d < 2^32: q = hi64(n * m) with m = floor((2^64-1)/d) + 1 (d >= 2);
/// exact because n*(m - 2^64/d)/2^64 < 2^-32 < 1/d.
DAMACY_HD uint64_t fastdiv_magic(uint32_t d) { return d > 1 ? ~uint64_t(0) / d + 1 : 0; }
DAMACY_HD uint32_t fastdiv(uint32_t n, uint32_t d, uint64_t m) {
  return d > 1 ? static_cast<uint32_t>(umul64hi(n, m)) : (d == 1 ? n : 0);
}

constexpr uint32_t kPlanIntensity = 4;  // scale, shift (and noise) on the cast value
constexpr uint32_t kPlanNoise = 8;

/// Per-op constants of the assemble walk (shared memory; 264 bytes).
struct AsmPlan {
  uint64_t src_base;  // byte offset in the decoded arena of the element at chunk_start
  uint64_t dst_base;  // element index in the output of the voxel at sample_start
  uint64_t cs0, cs1, cs2;  // chunk element strides of dims 0..2 (dim 3: 1)
  uint64_t ds0, ds1, ds2, ds3;  // output element strides of dims 0..3 (mod 2^64: a flipped
                                // axis has a negative one), after the sample's transform
  uint64_t src_step, dst_step;        // offset change of +kAsmThreads voxels, no carry
  uint64_t src_w3, src_w2, src_w1;    // extra change when digit 3/2/1 carries (mod 2^64)
  uint64_t dst_w3, dst_w2, dst_w1;
  uint64_t fill_bits;
  uint64_t m3, m2, m1;  // fast-division magics of e3, e2, e1
  uint64_t sample_base;  // output element index of the sample's first element (noise counter)
  uint32_t e1, e2, e3;  // extents (e0 is never needed)
  uint32_t a1, a2, a3;  // digits of kAsmThreads in radix (e1, e2, e3); a0 never needed
  uint32_t dtype, shift, flags;
  float scale, shift_by, noise_factor;  // intensity (kPlanIntensity)
  uint32_t noise_g, noise_b;
};

/// The shape of every sample, padded to rank 4, and its strides.
struct SampleGeom {
  uint64_t sample_voxels;
  uint32_t shape[4];
};

/// Output strides per *source* axis of a sample under a transform's axis map (damacy::augment
/// word 2, over the 4 padded dims), and the offset of the voxel at the source origin: output
/// axis d reads source axis s(d), backwards when reversed, so source voxel p lands at
/// sum_d os_d * (rev_d ? n_d - 1 - p_s(d) : p_s(d)). A map that is not a permutation of the
/// 4 dims or pairs dims of different extents is the identity (Rust validates maps at push).
DAMACY_HD void transform_strides(uint64_t map, const SampleGeom& g, uint64_t (&e)[4], uint64_t& origin) {
  const uint64_t os[4] = {uint64_t(g.shape[1]) * g.shape[2] * g.shape[3], uint64_t(g.shape[2]) * g.shape[3],
                          g.shape[3], 1};
  int src[4];
  bool rev[4];
  uint32_t used = 0;
  bool ok = true;
  for (int d = 0; d < 4; ++d) {
    const int ax = 4 - d;  // output axis -ax
    const uint32_t code = static_cast<uint32_t>(map >> (8 * (ax - 1))) & 0xffu;
    const int se = (code & 0xfu) ? static_cast<int>(code & 0xfu) : ax;
    src[d] = d;
    rev[d] = false;
    if (se > 4) {
      ok = false;
    } else {
      src[d] = 4 - se;
      rev[d] = (code & 0x10u) != 0;
      used |= 1u << src[d];
      ok = ok && g.shape[src[d]] == g.shape[d];
    }
  }
  ok = ok && used == 0xfu;
  origin = 0;
  for (int d = 0; d < 4; ++d) e[d] = os[d];
  if (!ok) return;
  for (int d = 0; d < 4; ++d) {
    e[src[d]] = rev[d] ? uint64_t(0) - os[d] : os[d];
    if (rev[d]) origin += os[d] * (g.shape[d] - 1);
  }
}

/// `tf`: the transform of the op's sample, or null (none).
DAMACY_HD AsmPlan make_asm_plan(const CopyOpView& op, const SampleGeom& g,
                                const SampleTransformView* tf = nullptr) {
  AsmPlan p{};
  const uint32_t* e = op.extent;
  p.e1 = e[1];
  p.e2 = e[2];
  p.e3 = e[3];
  p.m1 = fastdiv_magic(e[1]);
  p.m2 = fastdiv_magic(e[2]);
  p.m3 = fastdiv_magic(e[3]);
  p.dtype = op.src_dtype;
  p.shift = src_dtype_shift(op.src_dtype);
  p.flags = op.fill ? kPlanFill : 0;
  const uint64_t voxels = uint64_t(e[0]) * e[1] * e[2] * e[3];  // < 2^64 for valid ops
  if ((voxels >> 32) != 0) p.flags |= kPlanWide;
  p.fill_bits = op.fill_bits;

  const uint32_t* c = op.chunk_shape;
  p.cs2 = c[3];
  p.cs1 = uint64_t(c[2]) * c[3];
  p.cs0 = p.cs1 * c[1];
  uint64_t ds[4];
  uint64_t origin = 0;
  transform_strides(tf ? tf->map : 0, g, ds, origin);
  p.ds0 = ds[0];
  p.ds1 = ds[1];
  p.ds2 = ds[2];
  p.ds3 = ds[3];
  p.sample_base = uint64_t(op.sample) * g.sample_voxels;
  if (tf && tf->intensity) {
    p.flags |= kPlanIntensity | (tf->noise_factor != 0.0f ? kPlanNoise : 0);
    p.scale = tf->scale;
    p.shift_by = tf->shift;
    p.noise_factor = tf->noise_factor;
    p.noise_g = tf->noise_g;
    p.noise_b = tf->noise_b;
  }

  const uint32_t* cst = op.chunk_start;
  const uint64_t src_corner = cst[0] * p.cs0 + cst[1] * p.cs1 + cst[2] * p.cs2 + cst[3];
  p.src_base = op.chunk_offset + (src_corner << p.shift);
  const uint32_t* sst = op.sample_start;
  p.dst_base = p.sample_base + origin + sst[0] * p.ds0 + sst[1] * p.ds1 + sst[2] * p.ds2 + sst[3] * p.ds3;

  // Digits of the step: kAsmThreads = ((a0*e1 + a1)*e2 + a2)*e3 + a3.
  uint64_t t = kAsmThreads;
  uint64_t a3 = 0, a2 = 0, a1 = 0, a0 = 0;
  if (e[3] != 0 && e[2] != 0 && e[1] != 0) {
    a3 = t % e[3];
    t /= e[3];
    a2 = t % e[2];
    t /= e[2];
    a1 = t % e[1];
    a0 = t / e[1];
  }
  p.a1 = static_cast<uint32_t>(a1);
  p.a2 = static_cast<uint32_t>(a2);
  p.a3 = static_cast<uint32_t>(a3);
  p.src_step = a0 * p.cs0 + a1 * p.cs1 + a2 * p.cs2 + a3;
  p.dst_step = a0 * p.ds0 + a1 * p.ds1 + a2 * p.ds2 + a3 * p.ds3;
  p.src_w3 = p.cs2 - e[3];
  p.src_w2 = p.cs1 - uint64_t(e[2]) * p.cs2;
  p.src_w1 = p.cs0 - uint64_t(e[1]) * p.cs1;
  p.dst_w3 = p.ds2 - uint64_t(e[3]) * p.ds3;
  p.dst_w2 = p.ds1 - uint64_t(e[2]) * p.ds2;
  p.dst_w1 = p.ds0 - uint64_t(e[1]) * p.ds1;
  return p;
}

/// Position of one voxel inside its op: digits 1..3 and the element offsets (relative to the
/// box corners) in the chunk and in the output.
struct AsmCursor {
  uint32_t i1, i2, i3;
  uint64_t src, dst;
};

/// The cursor of the `local`-th voxel (C order over the extent) of the op.
DAMACY_HD AsmCursor asm_locate(const AsmPlan& p, uint64_t local) {
  uint64_t i0;
  AsmCursor c;
  if ((p.flags & kPlanWide) == 0) {
    const uint32_t l = static_cast<uint32_t>(local);
    const uint32_t q3 = fastdiv(l, p.e3, p.m3);
    c.i3 = l - q3 * p.e3;
    const uint32_t q2 = fastdiv(q3, p.e2, p.m2);
    c.i2 = q3 - q2 * p.e2;
    const uint32_t q1 = fastdiv(q2, p.e1, p.m1);
    c.i1 = q2 - q1 * p.e1;
    i0 = q1;
  } else {
    const uint64_t q3 = local / p.e3;
    c.i3 = static_cast<uint32_t>(local - q3 * p.e3);
    const uint64_t q2 = q3 / p.e2;
    c.i2 = static_cast<uint32_t>(q3 - q2 * p.e2);
    const uint64_t q1 = q2 / p.e1;
    c.i1 = static_cast<uint32_t>(q2 - q1 * p.e1);
    i0 = q1;
  }
  c.src = i0 * p.cs0 + c.i1 * p.cs1 + c.i2 * p.cs2 + c.i3;
  c.dst = i0 * p.ds0 + c.i1 * p.ds1 + c.i2 * p.ds2 + c.i3 * p.ds3;
  return c;
}

/// Moves the cursor kAsmThreads voxels forward inside the same op (caller checked).
DAMACY_HD void asm_step(const AsmPlan& p, AsmCursor& c) {
  c.i3 += p.a3;
  c.src += p.src_step;
  c.dst += p.dst_step;
  if (c.i3 >= p.e3) {
    c.i3 -= p.e3;
    c.i2 += 1;
    c.src += p.src_w3;
    c.dst += p.dst_w3;
  }
  c.i2 += p.a2;
  if (c.i2 >= p.e2) {
    c.i2 -= p.e2;
    c.i1 += 1;
    c.src += p.src_w2;
    c.dst += p.dst_w2;
  }
  c.i1 += p.a1;
  if (c.i1 >= p.e1) {
    c.i1 -= p.e1;
    c.src += p.src_w1;
    c.dst += p.dst_w1;
  }
}

/// Largest k in [0, n) with prefix[k] <= v (0 when none); serial binary search.
DAMACY_HD int find_op_serial(const uint64_t* prefix, int n, uint64_t v) {
  int lo = 0, hi = n;  // answer in [lo, hi)
  while (hi - lo > 1) {
    const int mid = lo + (hi - lo) / 2;
    if (prefix[mid] <= v) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return lo;
}

template <class OutT>
DAMACY_HD float out_to_f32(OutT v);
template <>
DAMACY_HD float out_to_f32<float>(float v) {
  return v;
}
template <>
DAMACY_HD float out_to_f32<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}

/// The intensity change of output element `dst` (plan with kPlanIntensity), as the augment
/// kernel applies it to an assembled batch: the value rounded to OutT first, then x * scale,
/// + shift, + the contract's normal z_j (j = dst's C-order index in its sample, Box-Muller
/// of the pair (2m, 2m+1) that holds j), each rounded separately.
template <class OutT>
DAMACY_HD float asm_intensity(const AsmPlan& p, float f, uint64_t dst) {
  float y = aug_add(aug_mul(out_to_f32<OutT>(f32_to_out<OutT>(f)), p.scale), p.shift_by);
  if (p.flags & kPlanNoise) {
    const uint32_t j = static_cast<uint32_t>(dst - p.sample_base);
    const uint32_t c0 = p.noise_g * (j & ~1u) + p.noise_b;  // mod 2**32
    const float r = sqrtf(aug_mul(logf(uniform23(c0)), p.noise_factor));
    float sn, cs;
    aug_sincos(aug_mul(uniform23(c0 + p.noise_g), static_cast<float>(6.283185307179586)), &sn, &cs);
    y = aug_add(y, aug_mul(r, (j & 1u) ? sn : cs));
  }
  return y;
}

/// One thread's voxels of one op group: plans[0..cnt) cover voxels [firsts[0], firsts[cnt]).
/// Phase 1 locates every voxel and issues all loads; phase 2 casts and stores. kIntensity:
/// some plan may carry an intensity change (a batch with fused Augment rows).
template <class OutT, bool kIntensity = false>
DAMACY_HD void assemble_thread(uint32_t tid, uint64_t tile_begin, uint64_t tile_end,
                               const AsmPlan* plans, const uint64_t* firsts, int cnt,
                               const uint8_t* decoded, OutT* out) {
  constexpr uint32_t kSkip = 0xffffffffu;
  const uint64_t group_begin = firsts[0];
  const uint64_t group_end = firsts[cnt];
  uint64_t raw[kAsmPerThread];
  uint64_t dst[kAsmPerThread];
  uint32_t code[kAsmPerThread];
  int plan_of[kAsmPerThread];
  int k = -1;
  AsmCursor cur{};
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int j = 0; j < kAsmPerThread; ++j) {
    const uint64_t v = tile_begin + uint64_t(j) * kAsmThreads + tid;
    code[j] = kSkip;
    raw[j] = 0;
    dst[j] = 0;
    plan_of[j] = 0;
    // Valid voxels of this thread are consecutive in j, so a cursor that is still inside
    // op k was placed exactly kAsmThreads voxels back.
    if (v < tile_end && v >= group_begin && v < group_end) {
      if (k >= 0 && v < firsts[k + 1]) {
        asm_step(plans[k], cur);
      } else {
        if (k < 0) k = 0;
        while (v >= firsts[k + 1]) ++k;  // firsts[cnt] = group_end > v: terminates
        cur = asm_locate(plans[k], v - firsts[k]);
      }
      const AsmPlan& p = plans[k];
      code[j] = p.dtype;
      dst[j] = p.dst_base + cur.dst;
      plan_of[j] = k;
      raw[j] = (p.flags & kPlanFill) ? p.fill_bits
                                      : load_elem(decoded + p.src_base + (cur.src << p.shift),
                                                  p.shift);
    }
  }
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int j = 0; j < kAsmPerThread; ++j) {
    if (code[j] == kSkip) continue;
    float f = src_to_f32(raw[j], code[j]);
    if constexpr (kIntensity) {
      const AsmPlan& p = plans[plan_of[j]];
      if (p.flags & kPlanIntensity) f = asm_intensity<OutT>(p, f, dst[j]);
    }
    out[dst[j]] = f32_to_out<OutT>(f);
  }
}

// ------------------------------------------------------------------------------------------
// Unshuffle (c-blosc 1.x semantics), out of place: src and dst are the same block's bytes in
// the scratch copy and in the arena. `w` is this worker's index among `nw` workers sharing
// the block (grid-stride); any (w, nw) split writes every byte exactly once.
//
// Byte shuffle (shuffle-generic.h, unshuffle_generic_inline), typesize T > 1:
//   n = len / T; dst[i*T + j] = src[j*n + i] for i < n, j < T; the last len % T bytes copied.
// T <= 1: plain copy (blosc skips the filter).
// Bit shuffle (shuffle.c blosc_internal_bitunshuffle + bitshuffle-generic.c):
//   size = len / T elements; when size % 8 == 0, bit b*8+r (byte b, bit r) of element e comes
//   from bit e%8 of src[(8b + r) * (size/8) + e/8], and the last len - size*T bytes are copied;
//   when size % 8 != 0 the whole block is copied as is (blosc never bit-shuffled it).

DAMACY_HD void copy_bytes(const uint8_t* s, uint8_t* d, uint64_t len, uint64_t w, uint64_t nw) {
  if (((reinterpret_cast<uintptr_t>(s) | reinterpret_cast<uintptr_t>(d)) & 15u) == 0) {
    const uint64_t n16 = len / 16;
    for (uint64_t i = w; i < n16; i += nw) {
      reinterpret_cast<uint4*>(d)[i] = reinterpret_cast<const uint4*>(s)[i];
    }
    for (uint64_t i = n16 * 16 + w; i < len; i += nw) d[i] = s[i];
  } else {
    for (uint64_t i = w; i < len; i += nw) d[i] = s[i];
  }
}

/// 4x4 byte transpose: out[e] byte j = in[j] byte e.
DAMACY_HD void transpose4x4(uint32_t w0, uint32_t w1, uint32_t w2, uint32_t w3, uint32_t* e) {
  const uint32_t t0 = byte_perm(w0, w1, 0x5140);  // w0b0 w1b0 w0b1 w1b1
  const uint32_t t1 = byte_perm(w0, w1, 0x7362);  // w0b2 w1b2 w0b3 w1b3
  const uint32_t t2 = byte_perm(w2, w3, 0x5140);
  const uint32_t t3 = byte_perm(w2, w3, 0x7362);
  e[0] = byte_perm(t0, t2, 0x5410);
  e[1] = byte_perm(t0, t2, 0x7632);
  e[2] = byte_perm(t1, t3, 0x5410);
  e[3] = byte_perm(t1, t3, 0x7632);
}

/// Elements 4q..4q+3 of a byte-shuffled block with typesize T in {2,4,8}; src 4-aligned rows
/// (n % 4 == 0, src 4-aligned), dst 16-aligned.
template <int T>
DAMACY_HD void byte_unshuffle_quad(const uint8_t* s, uint8_t* d, uint64_t n, uint64_t q) {
  uint32_t w[T];
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int j = 0; j < T; ++j) w[j] = *reinterpret_cast<const uint32_t*>(s + j * n + 4 * q);
  if constexpr (T == 2) {
    uint2 o;
    o.x = byte_perm(w[0], w[1], 0x5140);
    o.y = byte_perm(w[0], w[1], 0x7362);
    *reinterpret_cast<uint2*>(d + 8 * q) = o;
  } else if constexpr (T == 4) {
    uint32_t e[4];
    transpose4x4(w[0], w[1], w[2], w[3], e);
    *reinterpret_cast<uint4*>(d + 16 * q) = make_uint4(e[0], e[1], e[2], e[3]);
  } else {
    uint32_t lo[4], hi[4];
    transpose4x4(w[0], w[1], w[2], w[3], lo);
    transpose4x4(w[4], w[5], w[6], w[7], hi);
    *reinterpret_cast<uint4*>(d + 32 * q) = make_uint4(lo[0], hi[0], lo[1], hi[1]);
    *reinterpret_cast<uint4*>(d + 32 * q + 16) = make_uint4(lo[2], hi[2], lo[3], hi[3]);
  }
}

DAMACY_HD void byte_unshuffle_block(const uint8_t* s, uint8_t* d, uint64_t len, uint32_t T,
                                    uint64_t w, uint64_t nw) {
  if (T <= 1) {
    copy_bytes(s, d, len, w, nw);
    return;
  }
  const uint64_t n = len / T;
  const bool rows4 = (n % 4 == 0) && (reinterpret_cast<uintptr_t>(s) % 4 == 0) &&
                     (reinterpret_cast<uintptr_t>(d) % 16 == 0);
  if (rows4 && T == 2) {
    for (uint64_t q = w; q < n / 4; q += nw) byte_unshuffle_quad<2>(s, d, n, q);
  } else if (rows4 && T == 4) {
    for (uint64_t q = w; q < n / 4; q += nw) byte_unshuffle_quad<4>(s, d, n, q);
  } else if (rows4 && T == 8) {
    for (uint64_t q = w; q < n / 4; q += nw) byte_unshuffle_quad<8>(s, d, n, q);
  } else {
    for (uint64_t i = w; i < n; i += nw) {
      for (uint32_t j = 0; j < T; ++j) d[i * T + j] = s[j * n + i];
    }
  }
  for (uint64_t b = n * T + w; b < len; b += nw) d[b] = s[b];
}

/// TRANS_BIT_8X8 of bitshuffle-generic.h (little endian): byte k bit r <- byte r bit k.
DAMACY_HD uint64_t trans_bit_8x8(uint64_t x) {
  uint64_t t;
  t = (x ^ (x >> 7)) & 0x00AA00AA00AA00AAull;
  x = x ^ t ^ (t << 7);
  t = (x ^ (x >> 14)) & 0x0000CCCC0000CCCCull;
  x = x ^ t ^ (t << 14);
  t = (x ^ (x >> 28)) & 0x00000000F0F0F0F0ull;
  x = x ^ t ^ (t << 28);
  return x;
}

/// Byte b of the 8 elements of group g, transposed: byte k of the result is byte b of
/// element 8g + k.
DAMACY_HD uint64_t bit_group_byte(const uint8_t* s, uint64_t nrow, uint64_t g, uint32_t b) {
  uint64_t x = 0;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int r = 0; r < 8; ++r) x |= uint64_t(s[(uint64_t(b) * 8 + r) * nrow + g]) << (8 * r);
  return trans_bit_8x8(x);
}

/// Group g (elements 8g..8g+7) of a bit-shuffled block with typesize T in {1,2,4,8}, built
/// in registers and stored with 8- or 16-byte stores (dst 16-aligned).
template <int T>
DAMACY_HD void bit_unshuffle_group(const uint8_t* s, uint8_t* d, uint64_t nrow, uint64_t g) {
  uint32_t o[2 * T];
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int i = 0; i < 2 * T; ++i) o[i] = 0;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int b = 0; b < T; ++b) {
    const uint64_t x = bit_group_byte(s, nrow, g, b);
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
    for (int k = 0; k < 8; ++k) {
      const int pos = k * T + b;  // compile-time after unrolling
      o[pos / 4] |= static_cast<uint32_t>((x >> (8 * k)) & 0xffu) << (8 * (pos % 4));
    }
  }
  uint8_t* dg = d + g * 8 * T;
  if constexpr (T == 1) {
    *reinterpret_cast<uint2*>(dg) = make_uint2(o[0], o[1]);
  } else {
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
    for (int i = 0; i < T / 2; ++i) {
      reinterpret_cast<uint4*>(dg)[i] = make_uint4(o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]);
    }
  }
}

DAMACY_HD void bit_unshuffle_block(const uint8_t* s, uint8_t* d, uint64_t len, uint32_t T,
                                   uint64_t w, uint64_t nw) {
  const uint64_t size = T == 0 ? 0 : len / T;
  if (T == 0 || size % 8 != 0) {
    copy_bytes(s, d, len, w, nw);
    return;
  }
  const uint64_t nrow = size / 8;  // bytes per bit row = number of 8-element groups
  const bool aligned = reinterpret_cast<uintptr_t>(d) % 16 == 0;
  if (aligned && T == 1) {
    for (uint64_t g = w; g < nrow; g += nw) bit_unshuffle_group<1>(s, d, nrow, g);
  } else if (aligned && T == 2) {
    for (uint64_t g = w; g < nrow; g += nw) bit_unshuffle_group<2>(s, d, nrow, g);
  } else if (aligned && T == 4) {
    for (uint64_t g = w; g < nrow; g += nw) bit_unshuffle_group<4>(s, d, nrow, g);
  } else if (aligned && T == 8) {
    for (uint64_t g = w; g < nrow; g += nw) bit_unshuffle_group<8>(s, d, nrow, g);
  } else {
    for (uint64_t g = w; g < nrow; g += nw) {
      for (uint32_t b = 0; b < T; ++b) {
        const uint64_t x = bit_group_byte(s, nrow, g, b);
        for (int k = 0; k < 8; ++k) d[(g * 8 + k) * T + b] = static_cast<uint8_t>(x >> (8 * k));
      }
    }
  }
  for (uint64_t b = size * T + w; b < len; b += nw) d[b] = s[b];
}

/// One unshuffle op for worker w of nw; `kind_filter` 0 = every kind, else only that kind.
/// Unknown kinds are copied (the op's bytes must still reach the arena).
DAMACY_HD void unshuffle_op(const UnshuffleOpView& op, const uint8_t* src_arena,
                            uint8_t* dst_arena, uint32_t kind_filter, uint64_t w, uint64_t nw) {
  if (kind_filter != 0 && op.kind != kind_filter) return;
  const uint8_t* s = src_arena + op.offset;
  uint8_t* d = dst_arena + op.offset;
  switch (op.kind) {
    case kByteShuffle: byte_unshuffle_block(s, d, op.len, op.typesize, w, nw); break;
    case kBitShuffle: bit_unshuffle_block(s, d, op.len, op.typesize, w, nw); break;
    default: copy_bytes(s, d, op.len, w, nw); break;
  }
}

/// One decode op of codec 0 (stored raw / decoded on the CPU): staging -> arena.
DAMACY_HD void decode_copy_op(const DecodeOpView& op, const uint8_t* staging, uint8_t* arena,
                              uint64_t w, uint64_t nw) {
  if (op.codec != kCodecCopy) return;
  const uint64_t len = op.src_len < op.dst_len ? op.src_len : op.dst_len;
  copy_bytes(staging + op.src_offset, arena + op.dst_offset, len, w, nw);
}

// ------------------------------------------------------------------------------------------
// XXH64 (seed 0) of a decoded zstd frame, for its Content_Checksum (RFC 8878 §3.1.1: the
// lower 32 bits, little endian, after the last block). A port of the xxHash specification
// (doc/xxhash_spec.md, XXH64): four accumulators over 32-byte stripes, then the tail.
// xxh64 below is the one-thread form (the host reference of the tests); the kernel hashes a
// frame with one warp (xxh_warp_* below): each accumulator is a sequential chain over the
// stripes, so a frame cannot be split, but its bytes can be staged for the chains.

constexpr uint64_t kXxhP1 = 0x9E3779B185EBCA87ull;
constexpr uint64_t kXxhP2 = 0xC2B2AE3D27D4EB4Full;
constexpr uint64_t kXxhP3 = 0x165667B19E3779F9ull;
constexpr uint64_t kXxhP4 = 0x85EBCA77C2B2AE63ull;
constexpr uint64_t kXxhP5 = 0x27D4EB2F165667C5ull;

DAMACY_HD uint64_t xxh_rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

DAMACY_HD uint64_t xxh_round(uint64_t acc, uint64_t input) {
  acc += input * kXxhP2;
  return xxh_rotl(acc, 31) * kXxhP1;
}

DAMACY_HD uint64_t xxh_merge(uint64_t acc, uint64_t v) {
  acc ^= xxh_round(0, v);
  return acc * kXxhP1 + kXxhP4;
}

/// Little-endian loads; `aligned`: p is 8-byte aligned (device: one wide load).
DAMACY_HD uint64_t xxh_read64(const uint8_t* p, bool aligned) {
#if defined(__CUDA_ARCH__)
  if (aligned) return *reinterpret_cast<const uint64_t*>(p);
#else
  (void)aligned;
#endif
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

DAMACY_HD uint32_t xxh_read32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}

/// Initial value of accumulator j (0..3), seed 0.
DAMACY_HD uint64_t xxh_acc_init(uint32_t j) {
  return j == 0 ? kXxhP1 + kXxhP2 : j == 1 ? kXxhP2 : j == 2 ? 0 : 0 - kXxhP1;
}

/// The four accumulators after the last stripe -> h (before `h += len`).
DAMACY_HD uint64_t xxh_converge(uint64_t v1, uint64_t v2, uint64_t v3, uint64_t v4) {
  uint64_t h = xxh_rotl(v1, 1) + xxh_rotl(v2, 7) + xxh_rotl(v3, 12) + xxh_rotl(v4, 18);
  h = xxh_merge(h, v1);
  h = xxh_merge(h, v2);
  h = xxh_merge(h, v3);
  return xxh_merge(h, v4);
}

/// The `rem` (< 32) bytes at `p` after the last stripe, then the avalanche; `h` includes len.
DAMACY_HD uint64_t xxh_finish(uint64_t h, const uint8_t* p, uint64_t rem, bool aligned) {
  const uint8_t* const end = p + rem;
  while (end - p >= 8) {
    h ^= xxh_round(0, xxh_read64(p, aligned));
    h = xxh_rotl(h, 27) * kXxhP1 + kXxhP4;
    p += 8;
  }
  if (end - p >= 4) {
    h ^= uint64_t(xxh_read32(p)) * kXxhP1;
    h = xxh_rotl(h, 23) * kXxhP2 + kXxhP3;
    p += 4;
  }
  while (p < end) {
    h ^= uint64_t(*p) * kXxhP5;
    h = xxh_rotl(h, 11) * kXxhP1;
    ++p;
  }
  h ^= h >> 33;
  h *= kXxhP2;
  h ^= h >> 29;
  h *= kXxhP3;
  h ^= h >> 32;
  return h;
}

/// XXH64 of `len` bytes at `p`, seed 0, by one thread.
DAMACY_HD uint64_t xxh64(const uint8_t* p, uint64_t len) {
  const uint8_t* const end = p + len;
  const bool aligned = (reinterpret_cast<uintptr_t>(p) & 7) == 0;
  uint64_t h;
  if (len >= 32) {
    uint64_t v1 = xxh_acc_init(0), v2 = xxh_acc_init(1), v3 = xxh_acc_init(2), v4 = xxh_acc_init(3);
    const uint8_t* const limit = end - 32;
    do {
      // Four independent chains: their loads and multiplies overlap.
      const uint64_t a = xxh_read64(p, aligned), b = xxh_read64(p + 8, aligned);
      const uint64_t c = xxh_read64(p + 16, aligned), d = xxh_read64(p + 24, aligned);
      v1 = xxh_round(v1, a);
      v2 = xxh_round(v2, b);
      v3 = xxh_round(v3, c);
      v4 = xxh_round(v4, d);
      p += 32;
    } while (p <= limit);
    h = xxh_converge(v1, v2, v3, v4);
  } else {
    h = kXxhP5;
  }
  return xxh_finish(h + len, p, static_cast<uint64_t>(end - p), aligned);
}

// Warp per frame (checksum_kernel). The frame's stripes [p, p + 32 * stripes) are read as
// 16-byte vectors from base = p rounded down to 16 (vector v = bytes base + 16 v ..+ 16), in
// tiles of kXxhTileVecs vectors (4 KiB): all 32 lanes load a tile with coalesced 16-byte
// loads (lane l: vectors i * 32 + l of the tile, i < kXxhLaneVecs) into a shared-memory ring
// of two tiles (vector v at ring vector v mod 2 kXxhTileVecs); while lanes 0..3 consume
// tile k (the ring holding tiles k and k + 1), tile k + 2's loads are in flight, into
// registers (checksum_kernel's step k + 1). Lane j owns accumulator j and takes word
// j of each stripe starting in tile k (stripes 128 k ..< 128 (k + 1): a stripe starts at
// head + 32 s, head = p - base < 16), reading its last words from tile k + 1 when the
// stripe runs into it. Lane 0 then merges the four accumulators and hashes the tail (< 32
// bytes) from global memory with xxh_finish, as xxh64 does. The vectors at either end that
// are partly outside the stripes are read byte by byte (never past the frame), their outside
// bytes zero: no consumed word uses them.

constexpr int kXxhLaneVecs = 8;                               // vectors per lane per tile
constexpr uint64_t kXxhTileVecs = 32 * kXxhLaneVecs;          // 256
constexpr uint64_t kXxhTileBytes = 16 * kXxhTileVecs;         // 4 KiB
constexpr uint64_t kXxhTileStripes = kXxhTileBytes / 32;      // 128
constexpr uint32_t kXxhRingWords = 2 * kXxhTileBytes / 8;     // two tiles of u64: 8 KiB
static_assert((kXxhRingWords & (kXxhRingWords - 1)) == 0, "ring index by mask");

struct XxhWarpFrame {
  const uint8_t* base;  // p rounded down to 16 bytes
  uint64_t stripes;     // len / 32
  uint64_t vecs;        // vectors from base covering the stripes (0 when there are none)
  uint64_t tiles;       // ceil(vecs / kXxhTileVecs)
  uint32_t head;        // p - base, < 16
};

DAMACY_HD XxhWarpFrame xxh_warp_frame(const uint8_t* p, uint64_t len) {
  XxhWarpFrame f;
  f.head = static_cast<uint32_t>(reinterpret_cast<uintptr_t>(p) & 15);
  f.base = p - f.head;
  f.stripes = len / 32;
  f.vecs = f.stripes == 0 ? 0 : (f.head + 32 * f.stripes + 15) / 16;
  f.tiles = (f.vecs + kXxhTileVecs - 1) / kXxhTileVecs;
  return f;
}

#if defined(__CUDACC__)
#define DAMACY_HD_NOINLINE __host__ __device__ __noinline__ inline
#else
#define DAMACY_HD_NOINLINE inline
#endif

/// The bytes of vector `v` at `q` that lie in [head, end) (offsets from base), others zero:
/// the two partial vectors of a frame (head != 0), byte by byte, kept out of line.
DAMACY_HD_NOINLINE ulonglong2 xxh_load_partial_vec(const uint8_t* q, uint64_t lo, uint64_t head,
                                                   uint64_t end) {
  ulonglong2 r;
  r.x = 0;
  r.y = 0;
  for (uint32_t i = 0; i < 16; ++i) {
    const uint64_t b = lo + i >= head && lo + i < end ? uint64_t(q[i]) : 0;
    if (i < 8) {
      r.x |= b << (8 * i);
    } else {
      r.y |= b << (8 * (i - 8));
    }
  }
  return r;
}

/// Vector `v` (< f.vecs) of the frame: bytes outside the stripes read as zero, never loaded.
DAMACY_HD ulonglong2 xxh_load_vec(const XxhWarpFrame& f, uint64_t v) {
  const uint8_t* const q = f.base + 16 * v;
  const uint64_t lo = 16 * v, end = f.head + 32 * f.stripes;  // offsets from base
  if (lo >= f.head && lo + 16 <= end) {
#if defined(__CUDA_ARCH__)
    return __ldg(reinterpret_cast<const ulonglong2*>(q));
#else
    ulonglong2 r;
    std::memcpy(&r.x, q, 8);
    std::memcpy(&r.y, q + 8, 8);
    return r;
#endif
  }
  return xxh_load_partial_vec(q, lo, f.head, end);
}

/// Vector `x` (frame vector `v`) into the ring.
DAMACY_HD void xxh_ring_put(uint64_t* ring, uint64_t v, ulonglong2 x) {
  const uint32_t w = static_cast<uint32_t>(2 * v) & (kXxhRingWords - 1);
#if defined(__CUDA_ARCH__)
  *reinterpret_cast<ulonglong2*>(ring + w) = x;
#else
  ring[w] = x.x;
  ring[w + 1] = x.y;
#endif
}

/// Input word at ring word `w` (any value: taken modulo the ring), shifted by `sh` bits
/// (the frame's head mod 8, in bits) when kShift.
template <bool kShift>
DAMACY_HD uint64_t xxh_ring_word(const uint64_t* ring, uint32_t w, uint32_t sh) {
  constexpr uint32_t mask = kXxhRingWords - 1;
  if constexpr (kShift) {
    return (ring[w & mask] >> sh) | (ring[(w + 1) & mask] << (64 - sh));
  } else {
    (void)sh;
    return ring[w & mask];
  }
}

constexpr uint32_t kXxhGroup = 8;  // stripes per group of xxh_consume_words

#if defined(__CUDA_ARCH__)
#define DAMACY_XXH_UNROLL(n) _Pragma(n)
#else
#define DAMACY_XXH_UNROLL(n)
#endif

/// Accumulator over `n` input words at ring words w, w + 4, ... In groups of kXxhGroup: the
/// next group's words are read (unconditionally: the ring is always there, words past `n`
/// go unused) and multiplied by P2 before the current group's rounds, so the ring reads and
/// those multiplies overlap the accumulator's dependent chain.
template <bool kShift>
DAMACY_HD uint64_t xxh_consume_words(uint64_t acc, const uint64_t* ring, uint32_t w, uint32_t sh,
                                     uint32_t n) {
  uint64_t x[kXxhGroup];
  DAMACY_XXH_UNROLL("unroll")
  for (uint32_t i = 0; i < kXxhGroup; ++i) x[i] = xxh_ring_word<kShift>(ring, w + 4 * i, sh) * kXxhP2;
  uint32_t s = 0;
  DAMACY_XXH_UNROLL("unroll 1")
  for (; s + kXxhGroup <= n; s += kXxhGroup) {
    uint64_t y[kXxhGroup];
    DAMACY_XXH_UNROLL("unroll")
    for (uint32_t i = 0; i < kXxhGroup; ++i) {
      y[i] = xxh_ring_word<kShift>(ring, w + 4 * (s + kXxhGroup + i), sh) * kXxhP2;
    }
    DAMACY_XXH_UNROLL("unroll")
    for (uint32_t i = 0; i < kXxhGroup; ++i) acc = xxh_rotl(acc + x[i], 31) * kXxhP1;  // xxh_round
    DAMACY_XXH_UNROLL("unroll")
    for (uint32_t i = 0; i < kXxhGroup; ++i) x[i] = y[i];
  }
  DAMACY_XXH_UNROLL("unroll")
  for (uint32_t i = 0; i < kXxhGroup; ++i) {
    if (s + i < n) acc = xxh_rotl(acc + x[i], 31) * kXxhP1;
  }
  return acc;
}

/// Accumulator `j` (0..3) over the stripes starting in tile `k`, read from the ring, which
/// holds tiles k and k + 1 (those that exist).
DAMACY_HD uint64_t xxh_consume_tile(uint64_t acc, const uint64_t* ring, const XxhWarpFrame& f,
                                    uint32_t j, uint64_t k) {
  const uint64_t s0 = k * kXxhTileStripes;
  const uint32_t n = static_cast<uint32_t>(f.stripes - s0 < kXxhTileStripes ? f.stripes - s0 : kXxhTileStripes);
  // Word j of stripe s = bytes head + 32 s + 8 j ..+ 8 of base: ring word head / 8 + 4 s + j
  // (mod the ring), shifted by head mod 8 bytes when that is not 0.
  const uint32_t w = static_cast<uint32_t>((f.head >> 3) + 4 * s0 + j) & (kXxhRingWords - 1);
  const uint32_t sh = 8 * (f.head & 7);
  return sh == 0 ? xxh_consume_words<false>(acc, ring, w, 0, n)
                 : xxh_consume_words<true>(acc, ring, w, sh, n);
}

/// XXH64 from the four accumulators (ignored when the frame has no stripe) and the tail.
DAMACY_HD uint64_t xxh_warp_finish(const XxhWarpFrame& f, const uint8_t* p, uint64_t len,
                                   uint64_t v1, uint64_t v2, uint64_t v3, uint64_t v4) {
  const uint64_t h = f.stripes == 0 ? kXxhP5 : xxh_converge(v1, v2, v3, v4);
  const bool aligned = (reinterpret_cast<uintptr_t>(p) & 7) == 0;
  return xxh_finish(h + len, p + 32 * f.stripes, len - 32 * f.stripes, aligned);
}

}  // namespace damacy::gpu::detail
