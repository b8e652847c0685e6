// Private: the per-thread work of the fused augmentation kernel (augment.cu), written once as
// __host__ __device__ code so that kernels_test.cu also runs it over an emulated grid on the
// host (the index math and the axis-map decoding are then checked without a GPU).
//
// Work split: blockIdx.y is the sample (grid-stride over the batch), a block covers
// kAugPairsPerThread * kAugThreads consecutive element pairs (2m, 2m + 1) of that sample in C
// order of the output, one thread one pair per step: the noise draws its normals in
// Box-Muller pairs, so a pair costs one log, one sqrt and one sincos. The sample's axis map
// is decoded once per thread and sample (block-uniform, broadcast loads).
//
// Rounding follows the torch path it replaces (python/damacy/transforms.py), op by op:
// x * scale and + shift rounded separately (__fmul_rn / __fadd_rn: nvcc would contract them
// into an fma otherwise), r = sqrt(ln(u) * factor), theta = u * float(2 pi), z = r * cos /
// sin(theta), y + z. The host versions round the same way except for log/sqrt/sin/cos.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "damacy/detail/gpu_augment.h"
#include "kernels_impl.cuh"  // DAMACY_HD and the portable primitives (bits_to_f32)

namespace damacy::gpu::detail {

inline constexpr int kAugThreads = 256;
inline constexpr int kAugPairsPerThread = 4;
inline constexpr int kAugMaxDims = kAugmentMaxDims;

// aug_mul, aug_add, aug_sincos, lowbias32, uniform23: kernels_impl.cuh (the assemble kernel
// applies the same intensity and noise when Augment is fused into it).

DAMACY_HD uint64_t aug_load_word(const int64_t* p) {
#if defined(__CUDA_ARCH__)
  return static_cast<uint64_t>(__ldg(reinterpret_cast<const long long*>(p)));
#else
  return static_cast<uint64_t>(*p);
#endif
}

template <class T>
struct AugIo;
template <>
struct AugIo<float> {
  static DAMACY_HD float load(float v) { return v; }
  static DAMACY_HD float store(float f) { return f; }
};
template <>
struct AugIo<double> {
  static DAMACY_HD float load(double v) { return static_cast<float>(v); }  // round to nearest
  static DAMACY_HD double store(float f) { return static_cast<double>(f); }
};
template <>
struct AugIo<__half> {
  static DAMACY_HD float load(__half v) { return __half2float(v); }
  static DAMACY_HD __half store(float f) { return __float2half_rn(f); }
};
template <>
struct AugIo<__nv_bfloat16> {
  static DAMACY_HD float load(__nv_bfloat16 v) { return __bfloat162float(v); }
  static DAMACY_HD __nv_bfloat16 store(float f) { return __float2bfloat16_rn(f); }
};

/// Per output axis d of one sample: the signed input stride of one step along d, and the
/// input offset of output element 0 (the batch offset included). Index: int32_t when every
/// offset of input and output fits (aug_fits_int32: fewer registers, 32-bit multiplies), else
/// int64_t.
template <class Index>
struct SampleMap {
  Index step[kAugMaxDims];
  Index start;
};

/// Whether every element offset of input and output (the batch dim included) is below 2**31.
inline bool aug_fits_int32(const AugmentShape& s) {
  uint64_t in = (s.batch ? s.batch - 1 : 0) * static_cast<uint64_t>(s.in_stride[0]);
  uint64_t out = (s.batch ? s.batch - 1 : 0) * static_cast<uint64_t>(s.out_stride[0]);
  for (uint32_t d = 0; d < s.ndim && d < static_cast<uint32_t>(kAugMaxDims); ++d) {
    const uint64_t n = s.size[d] ? s.size[d] - 1 : 0;
    in += n * static_cast<uint64_t>(s.in_stride[1 + d]);
    out += n * static_cast<uint64_t>(s.out_stride[1 + d]);
  }
  return in < (uint64_t(1) << 31) && out < (uint64_t(1) << 31);
}

/// Decodes a parameter row's map word (gpu_augment.h); an invalid map is the identity.
template <class Index>
DAMACY_HD SampleMap<Index> decode_map(uint64_t word, uint64_t sample, const AugmentShape& s) {
  const int nd = static_cast<int>(s.ndim);
  int src[kAugMaxDims];
  bool rev[kAugMaxDims];
  uint32_t used = 0;
  bool ok = true;
#pragma unroll
  for (int d = 0; d < kAugMaxDims; ++d) {
    src[d] = d;
    rev[d] = false;
    if (d < nd) {
      const int e = nd - d;  // output axis -e
      const unsigned code = static_cast<unsigned>(word >> (8 * (e - 1))) & 0xffu;
      const int se = (code & 0xfu) ? static_cast<int>(code & 0xfu) : e;
      if (se > nd) {
        ok = false;
      } else {
        const int sa = nd - se;
        ok = ok && s.size[sa] == s.size[d];
        used |= 1u << sa;
        src[d] = sa;
        rev[d] = (code & 0x10u) != 0;
      }
    }
  }
  ok = ok && used == (1u << nd) - 1u;  // nd <= 8
  SampleMap<Index> m;
  m.start = static_cast<Index>(sample) * static_cast<Index>(s.in_stride[0]);
#pragma unroll
  for (int d = 0; d < kAugMaxDims; ++d) {
    m.step[d] = 0;
    if (d < nd) {
      const int sa = ok ? src[d] : d;
      const bool r = ok && rev[d];
      const Index st = static_cast<Index>(s.in_stride[1 + sa]);
      m.step[d] = r ? -st : st;
      if (r) m.start += st * static_cast<Index>(s.size[d] - 1);
    }
  }
  return m;
}

/// The C-order coordinates of element j of a sample.
DAMACY_HD void coords_of(uint32_t j, const AugmentShape& s, uint32_t (&c)[kAugMaxDims]) {
  const int nd = static_cast<int>(s.ndim);
#pragma unroll
  for (int d = kAugMaxDims - 1; d >= 0; --d) {
    c[d] = 0;
    if (d < nd) {
      const uint32_t n = s.size[d];
      c[d] = j % n;
      j /= n;
    }
  }
}

/// The next element in C order (c must not be the last one).
DAMACY_HD void advance(const AugmentShape& s, uint32_t (&c)[kAugMaxDims]) {
  const int nd = static_cast<int>(s.ndim);
  bool carry = true;
#pragma unroll
  for (int d = kAugMaxDims - 1; d >= 0; --d) {
    if (d < nd && carry) {
      if (++c[d] == s.size[d]) {
        c[d] = 0;
      } else {
        carry = false;
      }
    }
  }
}

template <class Index>
DAMACY_HD void offsets(const AugmentShape& s, const SampleMap<Index>& m, uint64_t sample,
                           const uint32_t (&c)[kAugMaxDims], Index& in, Index& out) {
  const int nd = static_cast<int>(s.ndim);
  in = m.start;
  out = static_cast<Index>(sample) * static_cast<Index>(s.out_stride[0]);
#pragma unroll
  for (int d = 0; d < kAugMaxDims; ++d) {
    if (d < nd) {
      in += static_cast<Index>(c[d]) * m.step[d];
      out += static_cast<Index>(c[d]) * static_cast<Index>(s.out_stride[1 + d]);
    }
  }
}

/// Pairs of a sample: ceil(per_sample / 2).
DAMACY_HD uint32_t aug_pairs(const AugmentShape& s) { return s.per_sample / 2 + (s.per_sample & 1u); }

/// Elements of one thread's run: kAugPairsPerThread consecutive pairs.
inline constexpr int kAugRun = 2 * kAugPairsPerThread;

/// `n` consecutive elements at p[0..n) as one or two vector accesses when they are whole
/// 8- or 16-byte words at aligned addresses (device only; false: the caller goes element by
/// element). The run's bytes are 8 (u8), 16 (u16/f16/bf16), 32 (f32) or 64 (f64).
template <class T>
DAMACY_HD bool aug_store_run(T* p, const T (&v)[kAugRun]) {
#if defined(__CUDA_ARCH__)
  constexpr int kBytes = static_cast<int>(sizeof(T)) * kAugRun;
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  if constexpr (kBytes % 16 == 0) {
    if (a % 16 != 0) return false;
#pragma unroll
    for (int i = 0; i < kBytes / 16; ++i) {
      uint4 q;
      memcpy(&q, reinterpret_cast<const unsigned char*>(v) + 16 * i, 16);
      reinterpret_cast<uint4*>(p)[i] = q;
    }
    return true;
  } else if constexpr (kBytes == 8) {
    if (a % 8 != 0) return false;
    uint2 q;
    memcpy(&q, v, 8);
    *reinterpret_cast<uint2*>(p) = q;
    return true;
  }
#endif
  (void)p;
  (void)v;
  return false;
}

template <class T>
DAMACY_HD bool aug_load_run(const T* p, T (&v)[kAugRun]) {
#if defined(__CUDA_ARCH__)
  constexpr int kBytes = static_cast<int>(sizeof(T)) * kAugRun;
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  if constexpr (kBytes % 16 == 0) {
    if (a % 16 != 0) return false;
#pragma unroll
    for (int i = 0; i < kBytes / 16; ++i) {
      const uint4 q = __ldg(reinterpret_cast<const uint4*>(p) + i);
      memcpy(reinterpret_cast<unsigned char*>(v) + 16 * i, &q, 16);
    }
    return true;
  } else if constexpr (kBytes == 8) {
    if (a % 8 != 0) return false;
    const uint2 q = __ldg(reinterpret_cast<const uint2*>(p));
    memcpy(v, &q, 8);
    return true;
  }
#endif
  (void)p;
  (void)v;
  return false;
}

/// Thread `thread` of block `block` (blockIdx.x) for sample `sample` (blockIdx.y, strided):
/// one run of kAugRun consecutive output elements (C order), starting at element
/// 2 * kAugPairsPerThread * (block * kAugThreads + thread). Its coordinates are found by
/// division once and then advanced element by element; a run inside one output row of a
/// contiguous output is stored as one or two vector words, and read as such when it comes
/// forward-contiguous from the input (no turn or flip of the last axis); otherwise element
/// by element (a gather for turns). T: the storage type (the bits for geometry alone);
/// Index: int32_t only when aug_fits_int32(shape).
template <class T, bool kIntensity, class Index>
DAMACY_HD void augment_words(uint64_t block, uint32_t thread, uint64_t sample, const T* __restrict__ x,
                                 T* __restrict__ out, uint64_t w0, uint64_t w1, uint64_t w2,
                                 const AugmentShape& shape, float noise_factor);

/// augment_words with sample `sample`'s row of the device table `params`.
template <class T, bool kIntensity, class Index>
DAMACY_HD void augment_thread(uint64_t block, uint32_t thread, uint64_t sample, const T* __restrict__ x,
                                  T* __restrict__ out, const int64_t* __restrict__ params,
                                  const AugmentShape& shape, float noise_factor) {
  if (uint64_t(kAugRun) * (block * kAugThreads + thread) >= shape.per_sample) return;
  const int64_t* row = params + sample * kAugmentParamWords;
  const uint64_t w0 = kIntensity ? aug_load_word(row) : 0;
  const uint64_t w1 = kIntensity ? aug_load_word(row + 1) : 0;
  augment_words<T, kIntensity, Index>(block, thread, sample, x, out, w0, w1, aug_load_word(row + 2), shape,
                                      noise_factor);
}

/// The run of thread `thread` of block `block` for sample `sample`, whose parameter row is
/// (w0, w1, w2) (gpu_augment.h; w0 and w1 unused without intensity).
template <class T, bool kIntensity, class Index>
DAMACY_HD void augment_words(uint64_t block, uint32_t thread, uint64_t sample, const T* __restrict__ x,
                                 T* __restrict__ out, uint64_t w0, uint64_t w1, uint64_t w2,
                                 const AugmentShape& shape, float noise_factor) {
  const uint64_t j_begin = uint64_t(kAugRun) * (block * kAugThreads + thread);
  if (j_begin >= shape.per_sample) return;
  const uint32_t j0 = static_cast<uint32_t>(j_begin);
  const uint32_t n = static_cast<uint32_t>(shape.per_sample - j_begin < uint64_t(kAugRun) ? shape.per_sample - j_begin
                                                                                       : uint64_t(kAugRun));
  const float two_pi = static_cast<float>(6.283185307179586);
  const SampleMap<Index> map = decode_map<Index>(w2, sample, shape);
  float scale = 1.0f, shift = -0.0f;
  uint32_t g = 0, b = 0;
  if constexpr (kIntensity) {
    scale = bits_to_f32(static_cast<uint32_t>(w0));
    shift = bits_to_f32(static_cast<uint32_t>(w0 >> 32));
    g = static_cast<uint32_t>(w1);
    b = static_cast<uint32_t>(w1 >> 32);
  }
  const int last = static_cast<int>(shape.ndim) - 1;
  uint32_t c[kAugMaxDims];
  coords_of(j0, shape, c);
  Index in0, out0;
  offsets(shape, map, sample, c, in0, out0);
  // The last axis's coordinate, extent, input step and output stride, selected by unrolled
  // compares (indexing the register arrays by `last` would put them in local memory).
  uint32_t c_last = 0, n_last = 0;
  Index step = 0, ostep = 0;
#pragma unroll
  for (int d = 0; d < kAugMaxDims; ++d) {
    if (d == last) {
      c_last = c[d];
      n_last = shape.size[d];
      step = map.step[d];
      ostep = static_cast<Index>(shape.out_stride[1 + d]);
    }
  }
  // The whole run in one output row (the last axis), so element e is at out0 + e * ostep
  // and in0 + e * step.
  const bool one_row = last >= 0 && n == uint32_t(kAugRun) && c_last + uint32_t(kAugRun) <= n_last;
  T v[kAugRun];
  Index out_at[kAugRun];
  bool vec_out = false;
  if (one_row) {
    vec_out = ostep == 1;
    if (!(step == 1 && aug_load_run(x + in0, v))) {
#pragma unroll
      for (int e = 0; e < kAugRun; ++e) v[e] = x[in0 + static_cast<Index>(e) * step];
    }
#pragma unroll
    for (int e = 0; e < kAugRun; ++e) out_at[e] = out0 + static_cast<Index>(e) * ostep;
  } else {
    // Phase 1: every element's offsets and loads; phase 2 below: arithmetic and stores.
#pragma unroll
    for (int e = 0; e < kAugRun; ++e) {
      out_at[e] = 0;
      if (static_cast<uint32_t>(e) < n) {
        Index in = in0;
        if (e == 0) {
          out_at[e] = out0;
        } else {
          advance(shape, c);
          offsets(shape, map, sample, c, in, out_at[e]);
        }
        v[e] = x[in];
      }
    }
  }
  if constexpr (kIntensity) {
#pragma unroll
    for (int k = 0; k < kAugPairsPerThread; ++k) {
      const int e0 = 2 * k;
      if (static_cast<uint32_t>(e0) >= n) break;
      const bool second = static_cast<uint32_t>(e0 + 1) < n;
      float y0 = aug_add(aug_mul(AugIo<T>::load(v[e0]), scale), shift);
      float y1 = second ? aug_add(aug_mul(AugIo<T>::load(v[e0 + 1]), scale), shift) : 0.0f;
      if (noise_factor != 0.0f) {
        const uint32_t c0 = g * (j0 + static_cast<uint32_t>(e0)) + b;  // mod 2**32
        const float u0 = uniform23(c0);
        const float u1 = uniform23(c0 + g);
        const float r = sqrtf(aug_mul(logf(u0), noise_factor));
        float sn, cs;
        aug_sincos(aug_mul(u1, two_pi), &sn, &cs);
        y0 = aug_add(y0, aug_mul(r, cs));
        y1 = aug_add(y1, aug_mul(r, sn));
      }
      v[e0] = AugIo<T>::store(y0);
      if (second) v[e0 + 1] = AugIo<T>::store(y1);
    }
  }
  if (vec_out && aug_store_run(out + out0, v)) return;
#pragma unroll
  for (int e = 0; e < kAugRun; ++e) {
    if (static_cast<uint32_t>(e) < n) out[out_at[e]] = v[e];
  }
}

}  // namespace damacy::gpu::detail
