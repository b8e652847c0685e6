// Private: plain mirrors of the bridge's GPU op records (rust/src/ffi/records.rs), for device code.
//
// The kernels read the ops through these views so that device code never touches cxx types
// (std::array's accessors are host-only constexpr). gpu_plan.cpp static_asserts that every
// field has the same offset and size as in the generated damacy::ffi structs, and every code below equals its ffi enum value, so a change of
// the bridge breaks the build instead of the data.
#pragma once

#include <cstdint>

namespace damacy::gpu::detail {

/// Mirror of ffi::GpuDecodeOp.
struct DecodeOpView {
  uint32_t codec;
  uint64_t src_offset;
  uint64_t src_len;
  uint64_t dst_offset;
  uint64_t dst_len;
};

/// Mirror of ffi::GpuChecksumOp.
struct ChecksumOpView {
  uint32_t decode_op;  // index into the batch's decode ops
  uint32_t expected;   // lower 32 bits of XXH64 (seed 0) of that op's dst_len decoded bytes
};

/// Mirror of ffi::GpuUnshuffleOp.
struct UnshuffleOpView {
  uint64_t offset;
  uint64_t len;
  uint32_t typesize;
  uint32_t kind;
};

/// Mirror of ffi::GpuCopyOp. Shapes padded to rank 4 (leading 1s / 0s).
struct CopyOpView {
  uint64_t chunk_offset;  // byte offset of the decoded chunk in the decoded arena
  uint32_t src_dtype;     // SrcDtype code
  uint32_t sample;        // sample index in the batch
  bool fill;              // write fill_bits instead of reading the chunk
  uint64_t fill_bits;     // one source element, little endian, zero-extended
  uint32_t chunk_shape[4];
  uint32_t chunk_start[4];
  uint32_t sample_start[4];
  uint32_t extent[4];
};

/// Mirror of ffi::SampleTransform: a sample's flips, turns and intensity change, applied by
/// the assemble kernel (Augment fused into assemble; dev/ops.md, `push` with a transform).
struct SampleTransformView {
  uint64_t map;          // axis map, damacy::augment's word 2 (0: identity)
  float scale;           // y = float(x) * scale + shift (intensity only)
  float shift;
  uint32_t noise_g;      // the noise counter's odd multiplier and offset
  uint32_t noise_b;
  float noise_factor;    // float(-2 * noise_std**2); 0: no noise
  bool intensity;        // scale, shift and noise applied (else geometry alone)
};

/// Source dtype codes of GpuCopyOp::src_dtype.
enum SrcDtype : uint32_t {
  kBool = 0,
  kU8 = 1,
  kI8 = 2,
  kU16 = 3,
  kI16 = 4,
  kU32 = 5,
  kI32 = 6,
  kU64 = 7,
  kI64 = 8,
  kF16 = 9,
  kBf16 = 10,
  kF32 = 11,
  kF64 = 12,
  kNumSrcDtypes = 13,
};

/// GpuUnshuffleOp::kind values.
enum UnshuffleKind : uint32_t { kByteShuffle = 1, kBitShuffle = 2 };

/// GpuDecodeOp::codec values.
enum DecodeCodec : uint32_t { kCodecCopy = 0, kCodecZstd = 1, kCodecLz4 = 2 };

}  // namespace damacy::gpu::detail
