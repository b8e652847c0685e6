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

#if defined(__CUDACC__)
#define DAMACY_AUG_HD __host__ __device__ __forceinline__
#else
#define DAMACY_AUG_HD inline
#endif

namespace damacy::gpu::detail {

inline constexpr int kAugThreads = 256;
inline constexpr int kAugPairsPerThread = 4;
inline constexpr int kAugMaxDims = kAugmentMaxDims;

// ------------------------------------------------------------------------------------------
// Portable primitives (device intrinsic / host equivalent).

DAMACY_AUG_HD float aug_mul(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  volatile float p = a * b;  // never contracted into an fma with the add that follows
  return p;
#endif
}

DAMACY_AUG_HD float aug_add(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  volatile float s = a + b;
  return s;
#endif
}

DAMACY_AUG_HD float aug_bits_to_float(uint32_t v) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(v);
#else
  float f;
  std::memcpy(&f, &v, sizeof f);
  return f;
#endif
}

DAMACY_AUG_HD uint64_t aug_load_word(const int64_t* p) {
#if defined(__CUDA_ARCH__)
  return static_cast<uint64_t>(__ldg(reinterpret_cast<const long long*>(p)));
#else
  return static_cast<uint64_t>(*p);
#endif
}

DAMACY_AUG_HD void aug_sincos(float t, float* s, float* c) {
#if defined(__CUDA_ARCH__)
  sincosf(t, s, c);
#else
  *s = std::sin(t);
  *c = std::cos(t);
#endif
}

// Chris Wellons' hash-prospector lowbias32, [16 21f0aaad 15 735a2d97 15].
DAMACY_AUG_HD uint32_t lowbias32(uint32_t h) {
  h ^= h >> 16;
  h *= 0x21f0aaadu;
  h ^= h >> 15;
  h *= 0x735a2d97u;
  h ^= h >> 15;
  return h;
}

// The contract's uniform of counter c: (floor(h / 2**9) + 0.5) / 2**23, exact in float.
DAMACY_AUG_HD float uniform23(uint32_t c) {
  return (static_cast<float>(lowbias32(c) >> 9) + 0.5f) * 0x1p-23f;
}

template <class T>
struct AugIo;
template <>
struct AugIo<float> {
  static DAMACY_AUG_HD float load(float v) { return v; }
  static DAMACY_AUG_HD float store(float f) { return f; }
};
template <>
struct AugIo<double> {
  static DAMACY_AUG_HD float load(double v) { return static_cast<float>(v); }  // round to nearest
  static DAMACY_AUG_HD double store(float f) { return static_cast<double>(f); }
};
template <>
struct AugIo<__half> {
  static DAMACY_AUG_HD float load(__half v) { return __half2float(v); }
  static DAMACY_AUG_HD __half store(float f) { return __float2half_rn(f); }
};
template <>
struct AugIo<__nv_bfloat16> {
  static DAMACY_AUG_HD float load(__nv_bfloat16 v) { return __bfloat162float(v); }
  static DAMACY_AUG_HD __nv_bfloat16 store(float f) { return __float2bfloat16_rn(f); }
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
DAMACY_AUG_HD SampleMap<Index> decode_map(uint64_t word, uint64_t sample, const AugmentShape& s) {
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
DAMACY_AUG_HD void coords_of(uint32_t j, const AugmentShape& s, uint32_t (&c)[kAugMaxDims]) {
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
DAMACY_AUG_HD void advance(const AugmentShape& s, uint32_t (&c)[kAugMaxDims]) {
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
DAMACY_AUG_HD void offsets(const AugmentShape& s, const SampleMap<Index>& m, uint64_t sample,
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
DAMACY_AUG_HD uint32_t aug_pairs(const AugmentShape& s) { return s.per_sample / 2 + (s.per_sample & 1u); }

/// Thread `thread` of block `block` (blockIdx.x) for sample `sample` (blockIdx.y, strided):
/// its kAugPairsPerThread pairs. T: the storage type (the bits for geometry alone); Index:
/// int32_t only when aug_fits_int32(shape).
template <class T, bool kIntensity, class Index>
DAMACY_AUG_HD void augment_thread(uint64_t block, uint32_t thread, uint64_t sample, const T* __restrict__ x,
                                  T* __restrict__ out, const int64_t* __restrict__ params,
                                  const AugmentShape& shape, float noise_factor) {
  const uint32_t pairs = aug_pairs(shape);
  const float two_pi = static_cast<float>(6.283185307179586);
  const int64_t* row = params + sample * kAugmentParamWords;
  const SampleMap<Index> map = decode_map<Index>(aug_load_word(row + 2), sample, shape);
  float scale = 1.0f, shift = -0.0f;
  uint32_t g = 0, b = 0;
  if constexpr (kIntensity) {
    const uint64_t w0 = aug_load_word(row);
    const uint64_t w1 = aug_load_word(row + 1);
    scale = aug_bits_to_float(static_cast<uint32_t>(w0));
    shift = aug_bits_to_float(static_cast<uint32_t>(w0 >> 32));
    g = static_cast<uint32_t>(w1);
    b = static_cast<uint32_t>(w1 >> 32);
  }
  // Phase 1: every pair's offsets and loads (up to 2 * kAugPairsPerThread loads in flight per
  // thread); phase 2: the arithmetic and the stores.
  Index out_at[kAugPairsPerThread][2];
  T v[kAugPairsPerThread][2];
  bool has[kAugPairsPerThread][2];
#pragma unroll
  for (int k = 0; k < kAugPairsPerThread; ++k) {
    const uint64_t m = (block * kAugPairsPerThread + k) * kAugThreads + thread;
    has[k][0] = m < pairs;
    has[k][1] = has[k][0] && 2 * m + 1 < shape.per_sample;  // 2m + 1 <= 2**32 - 1: no wrap
    out_at[k][0] = out_at[k][1] = 0;
    if (has[k][0]) {
      uint32_t c[kAugMaxDims];
      coords_of(static_cast<uint32_t>(2 * m), shape, c);
      Index in;
      offsets(shape, map, sample, c, in, out_at[k][0]);
      v[k][0] = x[in];
      if (has[k][1]) {
        advance(shape, c);
        offsets(shape, map, sample, c, in, out_at[k][1]);
        v[k][1] = x[in];
      }
    }
  }
#pragma unroll
  for (int k = 0; k < kAugPairsPerThread; ++k) {
    if (!has[k][0]) break;
    if constexpr (kIntensity) {
      const uint32_t j0 = static_cast<uint32_t>(2 * ((block * kAugPairsPerThread + k) * kAugThreads + thread));
      float y0 = aug_add(aug_mul(AugIo<T>::load(v[k][0]), scale), shift);
      float y1 = has[k][1] ? aug_add(aug_mul(AugIo<T>::load(v[k][1]), scale), shift) : 0.0f;
      if (noise_factor != 0.0f) {
        const uint32_t c0 = g * j0 + b;  // mod 2**32
        const float u0 = uniform23(c0);
        const float u1 = uniform23(c0 + g);
        const float r = sqrtf(aug_mul(logf(u0), noise_factor));
        float sn, cs;
        aug_sincos(aug_mul(u1, two_pi), &sn, &cs);
        y0 = aug_add(y0, aug_mul(r, cs));
        y1 = aug_add(y1, aug_mul(r, sn));
      }
      out[out_at[k][0]] = AugIo<T>::store(y0);
      if (has[k][1]) out[out_at[k][1]] = AugIo<T>::store(y1);
    } else {
      out[out_at[k][0]] = v[k][0];
      if (has[k][1]) out[out_at[k][1]] = v[k][1];
    }
  }
}

}  // namespace damacy::gpu::detail
