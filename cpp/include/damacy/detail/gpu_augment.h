// Private: host launcher of the fused augmentation kernel (cpp/src/cuda/augment.cu), behind
// the op damacy::augment (cpp/src/device/augment.cpp; contract in dev/ops.md) that
// python/damacy/transforms.py's Augment calls on CUDA tensors.
//
// One launch, one pass over the output: per output element, the source element through the
// sample's axis map (flips and 90-degree turns), then for floating tensors `x * scale + shift`
// and Gaussian noise (the counter-based draw of the transforms module docstring). No torch in
// here; the op allocates and checks, the launcher enqueues on the caller's stream and never
// synchronises.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace damacy::gpu {

/// Most sample dims (batch dim excluded) the kernel takes; also the axis-map slots of a
/// parameter row.
inline constexpr int kAugmentMaxDims = 8;

/// Int64 words per sample in the parameter tensor ([batch, kAugmentParamWords], row-major):
///   word 0: bits 0-31 the float32 bits of `scale`, bits 32-63 those of `shift`;
///   word 1: bits 0-31 the noise counter's multiplier g (odd), bits 32-63 its offset b;
///   word 2: the axis map, one byte per output axis counted from the last (byte e-1 for axis
///           -e, e = 1..8): bits 0-3 the source axis counted from the last (1..8; 0: axis -e
///           itself), bit 4 set when the output runs backwards along it. A map that is not a
///           permutation of the sample's axes, or pairs axes of different extents, is applied
///           as the identity (so a bad row gives wrong values, never an out-of-bounds read).
inline constexpr int kAugmentParamWords = 3;

/// Batches of at most this many samples may pass their parameter rows by value, inside the
/// launch's arguments (3 KiB: within the 4 KiB every CUDA device takes), so the call needs
/// no device copy of them.
inline constexpr int kAugmentArgRows = 128;

/// The parameter rows passed by value (rows [0, batch) used).
struct AugmentArgRows {
  int64_t w[kAugmentArgRows * kAugmentParamWords];
};

/// Storage codes of launch_augment: the floating types (intensity or geometry), and the
/// element sizes for geometry only (any dtype of that size: the bits are copied).
enum AugmentDtype : int {
  kAugF32 = 0,
  kAugF16 = 1,
  kAugBf16 = 2,
  kAugF64 = 3,
  kAugBits8 = 4,
  kAugBits16 = 5,
  kAugBits32 = 6,
  kAugBits64 = 7,
};

/// Extents and element strides of input and output (logical dims, batch dim first); any
/// strides (the output is typically empty_like(input)).
struct AugmentShape {
  uint64_t batch;
  uint32_t ndim;        // sample dims, <= kAugmentMaxDims
  uint32_t per_sample;  // product of size[0..ndim) (the noise counter's range: < 2**32)
  uint32_t size[kAugmentMaxDims];
  int64_t in_stride[kAugmentMaxDims + 1];
  int64_t out_stride[kAugmentMaxDims + 1];
};

/// out[r, i..] = f(x[r, map_r(i..)]) for every sample r of the batch, in one launch on
/// `stream`. d_params: [batch, kAugmentParamWords] int64 on the device (layout above).
/// `intensity` (floating dtypes only): y = float(x) * scale + shift, two roundings (no fma),
/// then, when noise_factor != 0, y + r * cos / sin(theta) of the contract's Box-Muller pair
/// with r = sqrt(ln(u) * noise_factor), noise_factor = float(-2 * noise_std**2); stored back
/// in the input's type (round to nearest). cudaErrorInvalidValue for a bad dtype code,
/// intensity on a bit code, or ndim > kAugmentMaxDims.
/// `h_rows`: when not null, the rows by value (batch <= kAugmentArgRows; d_params unused);
/// the launch copies them, so they may go as soon as it returns.
cudaError_t launch_augment(const void* d_x, void* d_out, const int64_t* d_params,
                           const AugmentShape& shape, int dtype, bool intensity,
                           float noise_factor, cudaStream_t stream,
                           const AugmentArgRows* h_rows = nullptr);

}  // namespace damacy::gpu
