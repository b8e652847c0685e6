// The fused augmentation kernel (damacy/detail/gpu_augment.h): geometry, scale/shift and the
// counter-based noise of python/damacy/transforms.py in one pass over the batch. The
// per-thread work (and its work split and rounding) is in augment_impl.cuh, shared with the
// host emulation in kernels_test.cu; this file owns the grid and the launch.
#include <algorithm>
#include <climits>

#include "augment_impl.cuh"
#include "damacy/detail/gpu_augment.h"

namespace damacy::gpu {
namespace {

using detail::kAugPairsPerThread;
using detail::kAugThreads;

constexpr unsigned kMaxGridY = 65535;

template <class T, bool kIntensity, class Index>
__global__ void __launch_bounds__(kAugThreads)
    augment_kernel(const T* __restrict__ x, T* __restrict__ out, const int64_t* __restrict__ params,
                   AugmentShape shape, float noise_factor) {
  for (uint64_t sample = blockIdx.y; sample < shape.batch; sample += gridDim.y) {
    detail::augment_thread<T, kIntensity, Index>(blockIdx.x, threadIdx.x, sample, x, out, params, shape, noise_factor);
  }
}

// The rows by value: __grid_constant__ keeps them in the kernel's parameter space (no copy
// per thread), read with plain loads.
template <class T, bool kIntensity, class Index>
__global__ void __launch_bounds__(kAugThreads)
    augment_rows_kernel(const T* __restrict__ x, T* __restrict__ out, const __grid_constant__ AugmentArgRows rows,
                        AugmentShape shape, float noise_factor) {
  for (uint64_t sample = blockIdx.y; sample < shape.batch; sample += gridDim.y) {
    const int64_t* row = rows.w + sample * kAugmentParamWords;
    detail::augment_words<T, kIntensity, Index>(blockIdx.x, threadIdx.x, sample, x, out,
                                                kIntensity ? static_cast<uint64_t>(row[0]) : 0,
                                                kIntensity ? static_cast<uint64_t>(row[1]) : 0,
                                                static_cast<uint64_t>(row[2]), shape, noise_factor);
  }
}

template <class T, bool kIntensity>
cudaError_t launch(const void* d_x, void* d_out, const int64_t* d_params, const AugmentShape& shape,
                   float noise_factor, cudaStream_t stream, const AugmentArgRows* h_rows) {
  const uint64_t per_block = uint64_t(kAugThreads) * kAugPairsPerThread;
  const uint64_t blocks = (detail::aug_pairs(shape) + per_block - 1) / per_block;
  if (blocks > uint64_t(INT_MAX)) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(blocks),
                  static_cast<unsigned>(std::min<uint64_t>(shape.batch, kMaxGridY)), 1);
  const T* x = static_cast<const T*>(d_x);
  T* out = static_cast<T*>(d_out);
  const bool narrow = detail::aug_fits_int32(shape);
  if (h_rows != nullptr) {
    if (shape.batch > uint64_t(kAugmentArgRows)) return cudaErrorInvalidValue;
    auto* kernel = narrow ? augment_rows_kernel<T, kIntensity, int32_t> : augment_rows_kernel<T, kIntensity, int64_t>;
    kernel<<<grid, kAugThreads, 0, stream>>>(x, out, *h_rows, shape, noise_factor);
  } else {
    auto* kernel = narrow ? augment_kernel<T, kIntensity, int32_t> : augment_kernel<T, kIntensity, int64_t>;
    kernel<<<grid, kAugThreads, 0, stream>>>(x, out, d_params, shape, noise_factor);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_augment(const void* d_x, void* d_out, const int64_t* d_params,
                           const AugmentShape& shape, int dtype, bool intensity,
                           float noise_factor, cudaStream_t stream, const AugmentArgRows* h_rows) {
  if (shape.ndim > static_cast<uint32_t>(kAugmentMaxDims)) return cudaErrorInvalidValue;
  if (shape.batch == 0 || shape.per_sample == 0) return cudaSuccess;
  if (intensity) {
    switch (dtype) {
      case kAugF32: return launch<float, true>(d_x, d_out, d_params, shape, noise_factor, stream, h_rows);
      case kAugF16: return launch<__half, true>(d_x, d_out, d_params, shape, noise_factor, stream, h_rows);
      case kAugBf16: return launch<__nv_bfloat16, true>(d_x, d_out, d_params, shape, noise_factor, stream, h_rows);
      case kAugF64: return launch<double, true>(d_x, d_out, d_params, shape, noise_factor, stream, h_rows);
      default: return cudaErrorInvalidValue;
    }
  }
  switch (dtype) {
    case kAugBits8: return launch<uint8_t, false>(d_x, d_out, d_params, shape, 0.0f, stream, h_rows);
    case kAugF16:
    case kAugBf16:
    case kAugBits16: return launch<uint16_t, false>(d_x, d_out, d_params, shape, 0.0f, stream, h_rows);
    case kAugF32:
    case kAugBits32: return launch<uint32_t, false>(d_x, d_out, d_params, shape, 0.0f, stream, h_rows);
    case kAugF64:
    case kAugBits64: return launch<uint64_t, false>(d_x, d_out, d_params, shape, 0.0f, stream, h_rows);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace damacy::gpu
