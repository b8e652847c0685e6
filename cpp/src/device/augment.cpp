// damacy::augment on CUDA tensors (the schema is in cpp/src/ops/register.cpp, the contract in
// dev/ops.md; python/damacy/transforms.py calls it and registers its fake). This file exists
// only in the CUDA build: a CPU-only build has the schema and no kernel, and Python keeps its
// torch path there. Checks, output allocation (torch's allocator, the current stream) and one
// launch of the fused kernel (damacy/detail/gpu_augment.h) on the current stream under a
// device guard; no synchronisation.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime_api.h>
#include <torch/library.h>

#include "damacy/detail/gpu_augment.h"
#include "device/device_batch.h"
#include "damacy/errors.h"
#include "torch_errors.h"

namespace damacy::detail {
namespace {

using gpu::kAugmentMaxDims;
using gpu::kAugmentParamWords;

std::string shape_text(const at::Tensor& t) {
  std::string s = "[";
  for (int64_t d = 0; d < t.dim(); ++d) s += (d ? ", " : "") + std::to_string(t.size(d));
  return s + "]";
}

int dtype_code(const at::Tensor& x, bool intensity) {
  switch (x.scalar_type()) {
    case at::kFloat: return gpu::kAugF32;
    case at::kHalf: return gpu::kAugF16;
    case at::kBFloat16: return gpu::kAugBf16;
    case at::kDouble: return gpu::kAugF64;
    default: break;
  }
  if (intensity) {
    throw InvalidArgument(std::string("augment: intensity needs a floating-point tensor (float32, float16, "
                                      "bfloat16, float64), found ") + c10::toString(x.scalar_type()));
  }
  if (x.is_complex()) {
    // geometry of complex numbers would be a bit copy too, but nothing needs it
    throw InvalidArgument(std::string("augment: complex tensors are not supported, found ") +
                          c10::toString(x.scalar_type()));
  }
  switch (x.element_size()) {
    case 1: return gpu::kAugBits8;
    case 2: return gpu::kAugBits16;
    case 4: return gpu::kAugBits32;
    case 8: return gpu::kAugBits64;
    default:
      throw InvalidArgument(std::string("augment: unsupported dtype ") + c10::toString(x.scalar_type()));
  }
}

at::Tensor augment_launch(const at::Tensor& x, const at::Tensor& params, float factor, bool intensity);

at::Tensor augment_cuda(const at::Tensor& x, const at::Tensor& params, double noise_std, bool intensity) {
  if (!(std::isfinite(noise_std) && noise_std >= 0)) {
    throw InvalidArgument("augment: noise_std must be finite and >= 0, found " + std::to_string(noise_std));
  }
  return augment_launch(x, params, static_cast<float>(-2.0 * noise_std * noise_std), intensity);
}

// The op's checks and launch with the noise given as its factor (float(-2 * noise_std**2)).
at::Tensor augment_launch(const at::Tensor& x, const at::Tensor& params, float factor, bool intensity) {
  if (!x.is_cuda()) throw InvalidArgument("augment: x must be a CUDA tensor");
  if (x.dim() < 1 || x.dim() - 1 > kAugmentMaxDims) {
    throw InvalidArgument("augment: x must be [batch, *sample] with at most " + std::to_string(kAugmentMaxDims) +
                          " sample dims, found " + shape_text(x));
  }
  // params on the CPU: passed by value in the launch (at most kAugmentArgRows samples), so
  // the call needs no device copy of them.
  const bool by_value = params.device().is_cpu();
  if ((!by_value && params.device() != x.device()) || (by_value && x.size(0) > gpu::kAugmentArgRows) ||
      params.scalar_type() != at::kLong || params.dim() != 2 ||
      params.size(0) != x.size(0) || params.size(1) != kAugmentParamWords) {
    throw InvalidArgument("augment: params must be int64 [" + std::to_string(x.size(0)) + ", " +
                          std::to_string(kAugmentParamWords) + "] on " + x.device().str() + " (or on the CPU for at most " +
                          std::to_string(gpu::kAugmentArgRows) + " samples), found " +
                          std::string(c10::toString(params.scalar_type())) + " " + shape_text(params) + " on " +
                          params.device().str());
  }
  const int code = dtype_code(x, intensity);
  gpu::AugmentShape shape{};
  shape.batch = static_cast<uint64_t>(x.size(0));
  shape.ndim = static_cast<uint32_t>(x.dim() - 1);
  uint64_t per_sample = 1;
  for (uint32_t d = 0; d < shape.ndim; ++d) {
    const int64_t n = x.size(static_cast<int64_t>(d) + 1);
    shape.size[d] = static_cast<uint32_t>(std::min<int64_t>(n, UINT32_MAX));
    per_sample *= static_cast<uint64_t>(n);
    if (per_sample > UINT32_MAX) {
      throw InvalidArgument("augment: samples of at most 2**32 - 1 elements (the noise counter's range), found " +
                            shape_text(x));
    }
  }
  shape.per_sample = static_cast<uint32_t>(per_sample);
  return on_device("augment", [&] {
    const c10::cuda::CUDAGuard guard(x.device());
    at::Tensor out = at::empty_like(x);  // x's strides when x is dense; else torch's suggestion
    if (out.numel() == 0) return out;
    const at::Tensor p = params.contiguous();
    gpu::AugmentArgRows rows;
    if (by_value) std::memcpy(rows.w, p.const_data_ptr<int64_t>(), static_cast<size_t>(p.numel()) * sizeof(int64_t));
    for (int64_t d = 0; d < x.dim(); ++d) {
      shape.in_stride[d] = x.stride(d);
      shape.out_stride[d] = out.stride(d);
    }
    const cudaStream_t stream = at::cuda::getCurrentCUDAStream(x.get_device()).stream();
    const cudaError_t rc = gpu::launch_augment(x.const_data_ptr(), out.mutable_data_ptr(),
                                               by_value ? nullptr : p.const_data_ptr<int64_t>(), shape, code, intensity,
                                               intensity ? factor : 0.0f, stream, by_value ? &rows : nullptr);
    if (rc != cudaSuccess) {
      throw CudaError(std::string("augment: launch: ") + cudaGetErrorName(rc) + " (" + cudaGetErrorString(rc) + ")");
    }
    return out;
  });
}

}  // namespace

}  // namespace damacy::detail

TORCH_LIBRARY_IMPL(damacy, CUDA, m) { m.impl("augment", &damacy::detail::augment_cuda); }
