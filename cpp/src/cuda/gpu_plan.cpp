// Host-side preparation of a GPU batch; see damacy/detail/gpu_plan.h.
#include "damacy/detail/gpu_plan.h"

#include <array>
#include <cstddef>
#include <cstring>
#include <string>
#include <type_traits>

#include "damacy/src/ffi/records.rs.h"  // cargo: $CARGO_TARGET_DIR/cxxbridge
#include "op_views.h"

namespace damacy::gpu {
namespace {

using u128 = unsigned __int128;

// The kernels read the bridge records through op_views.h: same offsets, same sizes.
#define DAMACY_SAME_FIELD(A, B, f)                                                     \
  static_assert(offsetof(A, f) == offsetof(B, f) && sizeof(A::f) == sizeof(B::f), \
                #A "::" #f " differs from its device view")
using ffi::GpuChecksumOp;
using ffi::GpuCopyOp;
using ffi::GpuDecodeOp;
using ffi::GpuUnshuffleOp;
using detail::ChecksumOpView;
using detail::CopyOpView;
using detail::DecodeOpView;
using detail::UnshuffleOpView;
static_assert(sizeof(GpuCopyOp) == sizeof(CopyOpView) && alignof(GpuCopyOp) == alignof(CopyOpView));
static_assert(sizeof(ffi::SampleTransform) == sizeof(detail::SampleTransformView) &&
              alignof(ffi::SampleTransform) == alignof(detail::SampleTransformView));
DAMACY_SAME_FIELD(ffi::SampleTransform, detail::SampleTransformView, map);
DAMACY_SAME_FIELD(ffi::SampleTransform, detail::SampleTransformView, scale);
DAMACY_SAME_FIELD(ffi::SampleTransform, detail::SampleTransformView, shift);
DAMACY_SAME_FIELD(ffi::SampleTransform, detail::SampleTransformView, noise_g);
DAMACY_SAME_FIELD(ffi::SampleTransform, detail::SampleTransformView, noise_b);
DAMACY_SAME_FIELD(ffi::SampleTransform, detail::SampleTransformView, noise_factor);
DAMACY_SAME_FIELD(ffi::SampleTransform, detail::SampleTransformView, intensity);
DAMACY_SAME_FIELD(GpuCopyOp, CopyOpView, chunk_offset);
DAMACY_SAME_FIELD(GpuCopyOp, CopyOpView, src_dtype);
DAMACY_SAME_FIELD(GpuCopyOp, CopyOpView, sample);
DAMACY_SAME_FIELD(GpuCopyOp, CopyOpView, fill);
DAMACY_SAME_FIELD(GpuCopyOp, CopyOpView, fill_bits);
DAMACY_SAME_FIELD(GpuCopyOp, CopyOpView, chunk_shape);
DAMACY_SAME_FIELD(GpuCopyOp, CopyOpView, chunk_start);
DAMACY_SAME_FIELD(GpuCopyOp, CopyOpView, sample_start);
DAMACY_SAME_FIELD(GpuCopyOp, CopyOpView, extent);
static_assert(sizeof(GpuDecodeOp) == sizeof(DecodeOpView) && alignof(GpuDecodeOp) == alignof(DecodeOpView));
DAMACY_SAME_FIELD(GpuDecodeOp, DecodeOpView, codec);
DAMACY_SAME_FIELD(GpuDecodeOp, DecodeOpView, src_offset);
DAMACY_SAME_FIELD(GpuDecodeOp, DecodeOpView, src_len);
DAMACY_SAME_FIELD(GpuDecodeOp, DecodeOpView, dst_offset);
DAMACY_SAME_FIELD(GpuDecodeOp, DecodeOpView, dst_len);
static_assert(sizeof(GpuChecksumOp) == sizeof(ChecksumOpView) && alignof(GpuChecksumOp) == alignof(ChecksumOpView));
DAMACY_SAME_FIELD(GpuChecksumOp, ChecksumOpView, decode_op);
DAMACY_SAME_FIELD(GpuChecksumOp, ChecksumOpView, expected);
static_assert(sizeof(GpuUnshuffleOp) == sizeof(UnshuffleOpView) && alignof(GpuUnshuffleOp) == alignof(UnshuffleOpView));
DAMACY_SAME_FIELD(GpuUnshuffleOp, UnshuffleOpView, offset);
DAMACY_SAME_FIELD(GpuUnshuffleOp, UnshuffleOpView, len);
DAMACY_SAME_FIELD(GpuUnshuffleOp, UnshuffleOpView, typesize);
DAMACY_SAME_FIELD(GpuUnshuffleOp, UnshuffleOpView, kind);
#undef DAMACY_SAME_FIELD
static_assert(std::is_same_v<decltype(GpuCopyOp::chunk_shape), std::array<uint32_t, 4>>);

// The codes the kernels switch on are the bridge enums' values (rust/src/ffi/records.rs).
#define DAMACY_SAME_CODE(E, v, k) \
  static_assert(static_cast<uint32_t>(ffi::E::v) == detail::k, "ffi::" #E "::" #v " differs from " #k)
DAMACY_SAME_CODE(DecodeCodec, Copy, kCodecCopy);
DAMACY_SAME_CODE(DecodeCodec, Zstd, kCodecZstd);
DAMACY_SAME_CODE(DecodeCodec, Lz4, kCodecLz4);
DAMACY_SAME_CODE(ShuffleKind, Byte, kByteShuffle);
DAMACY_SAME_CODE(ShuffleKind, Bit, kBitShuffle);
DAMACY_SAME_CODE(SrcDtype, Bool, kBool);
DAMACY_SAME_CODE(SrcDtype, U8, kU8);
DAMACY_SAME_CODE(SrcDtype, I8, kI8);
DAMACY_SAME_CODE(SrcDtype, U16, kU16);
DAMACY_SAME_CODE(SrcDtype, I16, kI16);
DAMACY_SAME_CODE(SrcDtype, U32, kU32);
DAMACY_SAME_CODE(SrcDtype, I32, kI32);
DAMACY_SAME_CODE(SrcDtype, U64, kU64);
DAMACY_SAME_CODE(SrcDtype, I64, kI64);
DAMACY_SAME_CODE(SrcDtype, F16, kF16);
DAMACY_SAME_CODE(SrcDtype, Bf16, kBf16);
DAMACY_SAME_CODE(SrcDtype, F32, kF32);
DAMACY_SAME_CODE(SrcDtype, F64, kF64);
#undef DAMACY_SAME_CODE

std::string box4(const std::array<uint32_t, 4>& a) {
  std::string s = "[";
  for (int d = 0; d < 4; ++d) {
    s += std::to_string(a[d]);
    s += d < 3 ? ", " : "]";
  }
  return s;
}

std::string box4(const uint32_t* a) {
  return box4(std::array<uint32_t, 4>{a[0], a[1], a[2], a[3]});
}

u128 product4(const std::array<uint32_t, 4>& a) { return u128(a[0]) * a[1] * a[2] * a[3]; }

}  // namespace

uint32_t src_dtype_size(uint32_t code) {
  switch (code) {
    case detail::kBool: case detail::kU8: case detail::kI8: return 1;
    case detail::kU16: case detail::kI16: case detail::kF16: case detail::kBf16: return 2;
    case detail::kU32: case detail::kI32: case detail::kF32: return 4;
    case detail::kU64: case detail::kI64: case detail::kF64: return 8;
    default: return 0;
  }
}

bool pad_shape4(const int64_t* shape, size_t rank, uint32_t out[4]) {
  if (rank == 0 || rank > 4) return false;
  for (size_t d = 0; d < 4; ++d) out[d] = 1;
  for (size_t i = 0; i < rank; ++i) {
    const int64_t v = shape[i];
    if (v < 0 || uint64_t(v) > UINT32_MAX) return false;
    out[4 - rank + i] = static_cast<uint32_t>(v);
  }
  return true;
}

uint64_t copy_op_voxel_prefix(const ffi::GpuCopyOp* ops, size_t n, uint64_t* prefix) {
  uint64_t sum = 0;
  for (size_t i = 0; i < n; ++i) {
    prefix[i] = sum;
    sum += static_cast<uint64_t>(product4(ops[i].extent));
  }
  prefix[n] = sum;
  return sum;
}

std::string check_copy_ops(const ffi::GpuCopyOp* ops, size_t n, uint64_t decoded_bytes,
                           uint32_t samples_per_batch, const uint32_t sample_shape[4]) {
  u128 total = 0;
  for (size_t i = 0; i < n; ++i) {
    const GpuCopyOp& op = ops[i];
    const std::string who = "copy op " + std::to_string(i) + " of " + std::to_string(n);
    const uint32_t size = src_dtype_size(op.src_dtype);
    if (size == 0) {
      return who + ": src_dtype code " + std::to_string(op.src_dtype) + ", expected 0..12";
    }
    if (op.sample >= samples_per_batch) {
      return who + ": sample " + std::to_string(op.sample) + ", expected < samples_per_batch " +
             std::to_string(samples_per_batch);
    }
    for (int d = 0; d < 4; ++d) {
      if (uint64_t(op.sample_start[d]) + op.extent[d] > sample_shape[d]) {
        return who + ": box at " + box4(op.sample_start) + " of extent " + box4(op.extent) +
               " leaves the sample shape " + box4(sample_shape);
      }
    }
    total += product4(op.extent);
    if (op.fill) continue;
    for (int d = 0; d < 4; ++d) {
      if (uint64_t(op.chunk_start[d]) + op.extent[d] > op.chunk_shape[d]) {
        return who + ": box at " + box4(op.chunk_start) + " of extent " + box4(op.extent) +
               " leaves the chunk shape " + box4(op.chunk_shape);
      }
    }
    const u128 chunk_end = u128(op.chunk_offset) + product4(op.chunk_shape) * size;
    if (chunk_end > decoded_bytes) {
      return who + ": decoded chunk at byte " + std::to_string(op.chunk_offset) + " of shape " +
             box4(op.chunk_shape) + " x " + std::to_string(size) + " B ends past the arena's " +
             std::to_string(decoded_bytes) + " bytes";
    }
  }
  const u128 out_voxels = u128(samples_per_batch) * sample_shape[0] * sample_shape[1] *
                          sample_shape[2] * sample_shape[3];
  if (total > out_voxels) {
    return "copy ops cover " + std::to_string(static_cast<uint64_t>(total)) +
           " voxels, more than the batch's " + std::to_string(static_cast<uint64_t>(out_voxels));
  }
  return {};
}

std::string check_unshuffle_ops(const ffi::GpuUnshuffleOp* ops, size_t n,
                                uint64_t decoded_bytes) {
  for (size_t i = 0; i < n; ++i) {
    const GpuUnshuffleOp& op = ops[i];
    const std::string who = "unshuffle op " + std::to_string(i) + " of " + std::to_string(n);
    if (op.kind != detail::kByteShuffle && op.kind != detail::kBitShuffle) {
      return who + ": kind " + std::to_string(op.kind) + ", expected 1 (byte) or 2 (bit)";
    }
    if (op.typesize == 0) return who + ": typesize 0, expected >= 1";
    if (u128(op.offset) + op.len > decoded_bytes) {
      return who + ": bytes [" + std::to_string(op.offset) + ", +" + std::to_string(op.len) +
             ") end past the arena's " + std::to_string(decoded_bytes) + " bytes";
    }
  }
  return {};
}

std::string check_decode_ops(const ffi::GpuDecodeOp* ops, size_t n, uint64_t staging_bytes,
                             uint64_t decoded_bytes) {
  for (size_t i = 0; i < n; ++i) {
    const GpuDecodeOp& op = ops[i];
    const std::string who = "decode op " + std::to_string(i) + " of " + std::to_string(n);
    if (op.codec > detail::kCodecLz4) {
      return who + ": codec " + std::to_string(op.codec) + ", expected 0 (copy), 1 (zstd), 2 (lz4)";
    }
    if (u128(op.src_offset) + op.src_len > staging_bytes) {
      return who + ": staged bytes [" + std::to_string(op.src_offset) + ", +" +
             std::to_string(op.src_len) + ") end past the staging's " +
             std::to_string(staging_bytes) + " bytes";
    }
    if (u128(op.dst_offset) + op.dst_len > decoded_bytes) {
      return who + ": decoded bytes [" + std::to_string(op.dst_offset) + ", +" +
             std::to_string(op.dst_len) + ") end past the arena's " +
             std::to_string(decoded_bytes) + " bytes";
    }
    if (op.codec == detail::kCodecCopy && op.src_len != op.dst_len) {
      return who + ": raw chunk of " + std::to_string(op.src_len) + " bytes, expected " +
             std::to_string(op.dst_len);
    }
  }
  return {};
}

std::string check_checksum_ops(const ffi::GpuChecksumOp* ops, size_t n,
                               const ffi::GpuDecodeOp* decode, size_t n_decode) {
  for (size_t i = 0; i < n; ++i) {
    const GpuChecksumOp& op = ops[i];
    if (op.decode_op >= n_decode || decode[op.decode_op].codec != detail::kCodecZstd) {
      return "checksum op " + std::to_string(i) + " of " + std::to_string(n) + ": decode op " +
             std::to_string(op.decode_op) + " is not one of the " + std::to_string(n_decode) +
             " decode ops with codec 1 (zstd)";
    }
  }
  return {};
}

size_t count_decode_ops(const ffi::GpuDecodeOp* ops, size_t n, uint32_t codec) {
  size_t c = 0;
  for (size_t i = 0; i < n; ++i) c += ops[i].codec == codec ? 1 : 0;
  return c;
}

size_t decompress_args_bytes(size_t count) {
  return 5 * 8 * count + ((4 * count + 7) & ~size_t(7));
}

DecompressArgs pack_decompress_args(const ffi::GpuDecodeOp* ops, size_t n_ops, uint32_t codec,
                                    const uint8_t* d_staging, uint8_t* d_arena, void* host_buf,
                                    void* device_buf) {
  DecompressArgs a;
  const size_t count = count_decode_ops(ops, n_ops, codec);
  a.n = count;
  a.op_index.reserve(count);
  auto* h = static_cast<uint8_t*>(host_buf);
  auto* d = static_cast<uint8_t*>(device_buf);
  auto* h_src = reinterpret_cast<const void**>(h);
  auto* h_dst = reinterpret_cast<void**>(h + 8 * count);
  auto* h_src_bytes = reinterpret_cast<size_t*>(h + 16 * count);
  auto* h_dst_bytes = reinterpret_cast<size_t*>(h + 24 * count);
  size_t j = 0;
  for (size_t i = 0; i < n_ops; ++i) {
    const GpuDecodeOp& op = ops[i];
    if (op.codec != codec) continue;
    h_src[j] = d_staging + op.src_offset;
    h_dst[j] = d_arena + op.dst_offset;
    h_src_bytes[j] = op.src_len;
    h_dst_bytes[j] = op.dst_len;
    a.max_dst_bytes = op.dst_len > a.max_dst_bytes ? op.dst_len : a.max_dst_bytes;
    a.total_dst_bytes += op.dst_len;
    a.op_index.push_back(static_cast<uint32_t>(i));
    ++j;
  }
  // The output arrays (actual sizes, statuses) travel too; zero them so a stale value never
  // reads as a result.
  std::memset(h + 32 * count, 0, decompress_args_bytes(count) - 32 * count);
  a.d_src_ptrs = reinterpret_cast<const void* const*>(d);
  a.d_dst_ptrs = reinterpret_cast<void* const*>(d + 8 * count);
  a.d_src_bytes = reinterpret_cast<const size_t*>(d + 16 * count);
  a.d_dst_bytes = reinterpret_cast<const size_t*>(d + 24 * count);
  a.d_actual = reinterpret_cast<size_t*>(d + 32 * count);
  a.d_statuses = reinterpret_cast<int32_t*>(d + 40 * count);
  return a;
}

}  // namespace damacy::gpu
