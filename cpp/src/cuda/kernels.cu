// CUDA kernels of the GPU batch path: assemble (copy + cast + fill), blosc unshuffle, the
// raw-chunk copy, the decode status check and the zstd content checksum (XXH64). The per-thread work lives in kernels_impl.cuh (shared with the host-side
// emulation in kernels_test.cu); this file owns the grids, shared memory and launches.
#include <algorithm>
#include <climits>
#include <type_traits>

#include "damacy/detail/gpu_kernels.h"
#include "kernels_impl.cuh"

namespace damacy::gpu {
namespace {

using detail::AsmPlan;
using detail::ChecksumOpView;
using detail::CopyOpView;
using detail::DecodeOpView;
using detail::SampleGeom;
using detail::SampleTransformView;
using detail::UnshuffleOpView;
using detail::kAsmMaxTileOps;
using detail::kAsmThreads;
using detail::kAsmTile;

constexpr int kByteThreads = 256;
constexpr uint64_t kDefaultMaxOpBytes = 256 << 10;
constexpr int kMaxGridY = 65535;
constexpr int kChecksumThreads = 128;  // 4 warps, one checksum op each

/// Largest k in [0, n) with prefix[k] <= v: a 32-ary search by one warp (each step probes 32
/// entries and ballots), ceil(log32 n) dependent loads instead of log2 n. Warp-uniform.
__device__ int warp_find_op(const uint64_t* __restrict__ prefix, int n, uint64_t v) {
  const int lane = threadIdx.x & 31;
  int lo = 0, hi = n;  // answer in [lo, hi)
  while (hi - lo > 1) {
    const int step = (hi - lo + 31) / 32;
    const int probe = lo + lane * step;
    const bool le = probe < hi && __ldg(prefix + probe) <= v;
    const unsigned mask = __ballot_sync(0xffffffffu, le);
    if (mask == 0) break;  // v < prefix[lo]: only when v < prefix[0]
    lo += (31 - __clz(static_cast<int>(mask))) * step;
    hi = min(hi, lo + step);
  }
  return lo;
}

template <class OutT, bool kIntensity>
__global__ void __launch_bounds__(kAsmThreads)
    assemble_kernel(const CopyOpView* __restrict__ ops, int n_ops,
                    const uint64_t* __restrict__ prefix, uint64_t total,
                    const uint8_t* __restrict__ decoded, OutT* __restrict__ out,
                    SampleGeom geom, const SampleTransformView* __restrict__ transforms) {
  __shared__ AsmPlan plans[kAsmMaxTileOps];
  __shared__ uint64_t firsts[kAsmMaxTileOps + 1];
  __shared__ int range[2];
  const uint64_t tile_begin = uint64_t(blockIdx.x) * kAsmTile;
  const uint64_t tile_end = min(tile_begin + kAsmTile, total);
  const int warp = threadIdx.x / 32;
  if (warp < 2) {
    const int k = warp_find_op(prefix, n_ops, warp == 0 ? tile_begin : tile_end - 1);
    if ((threadIdx.x & 31) == 0) range[warp] = k;
  }
  __syncthreads();
  const int lo = range[0];
  const int hi = range[1];
  // Usually one group (a tile touches few ops); more only where many tiny ops meet.
  for (int g = lo; g <= hi; g += kAsmMaxTileOps) {
    const int cnt = min(kAsmMaxTileOps, hi - g + 1);
    if (static_cast<int>(threadIdx.x) < cnt) {
      const CopyOpView op = ops[g + threadIdx.x];
      plans[threadIdx.x] = detail::make_asm_plan(op, geom, transforms ? transforms + op.sample : nullptr);
    }
    if (static_cast<int>(threadIdx.x) <= cnt) firsts[threadIdx.x] = prefix[g + threadIdx.x];
    __syncthreads();
    detail::assemble_thread<OutT, kIntensity>(threadIdx.x, tile_begin, tile_end, plans, firsts, cnt,
                                              decoded, out);
    __syncthreads();
  }
}

/// One CTA row (blockIdx.y) per op, gridDim.x CTAs share an op's bytes (grid-stride).
__global__ void __launch_bounds__(kByteThreads)
    unshuffle_kernel(const UnshuffleOpView* __restrict__ ops, int n,
                     const uint8_t* __restrict__ src, uint8_t* __restrict__ dst,
                     uint32_t kind_filter) {
  const uint64_t w = uint64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const uint64_t nw = uint64_t(gridDim.x) * blockDim.x;
  for (int i = blockIdx.y; i < n; i += gridDim.y) {
    const UnshuffleOpView op = ops[i];
    detail::unshuffle_op(op, src, dst, kind_filter, w, nw);
  }
}

__global__ void __launch_bounds__(kByteThreads)
    decode_copy_kernel(const DecodeOpView* __restrict__ ops, int n,
                       const uint8_t* __restrict__ staging, uint8_t* __restrict__ arena) {
  const uint64_t w = uint64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const uint64_t nw = uint64_t(gridDim.x) * blockDim.x;
  for (int i = blockIdx.y; i < n; i += gridDim.y) {
    const DecodeOpView op = ops[i];
    detail::decode_copy_op(op, staging, arena, w, nw);
  }
}

/// Per chunk of one nvCOMP call: failed when its status is not nvcompSuccess (0) or its size
/// differs from the expected one. d_result = {failed count, smallest failed index}.
__global__ void decode_status_kernel(const int32_t* __restrict__ statuses,
                                     const size_t* __restrict__ actual,
                                     const size_t* __restrict__ expected, size_t n,
                                     uint32_t* __restrict__ result) {
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    if (statuses[i] != 0 || actual[i] != expected[i]) {
      atomicAdd(result, 1u);
      atomicMin(result + 1, static_cast<uint32_t>(min(i, size_t(UINT32_MAX - 1))));
    }
  }
}

/// One warp per checksum op (kernels_impl.cuh, "Warp per frame"): d_result = {mismatches,
/// smallest mismatching op index}.
__global__ void __launch_bounds__(kChecksumThreads)
    checksum_kernel(const ChecksumOpView* __restrict__ ops, size_t n,
                    const DecodeOpView* __restrict__ decode, const uint8_t* __restrict__ arena,
                    uint32_t* __restrict__ result) {
  constexpr int kWarps = kChecksumThreads / 32;
  __shared__ __align__(16) uint64_t rings[kWarps][detail::kXxhRingWords];
  const uint32_t lane = threadIdx.x & 31;
  uint64_t* const ring = rings[threadIdx.x / 32];
  const size_t warps = size_t(gridDim.x) * kWarps;
  for (size_t i = size_t(blockIdx.x) * kWarps + threadIdx.x / 32; i < n; i += warps) {
    const ChecksumOpView op = ops[i];
    const DecodeOpView d = decode[op.decode_op];
    const uint8_t* const p = arena + d.dst_offset;
    const detail::XxhWarpFrame f = detail::xxh_warp_frame(p, d.dst_len);
    uint64_t acc = detail::xxh_acc_init(lane & 3);
    // Step k: tile k from registers into the ring, tile k + 1's loads issued, tile k - 1
    // consumed (the ring then holds tiles k - 1 and k) while those loads are in flight.
    ulonglong2 regs[detail::kXxhLaneVecs];
    if (f.tiles > 0) {
#pragma unroll
      for (int r = 0; r < detail::kXxhLaneVecs; ++r) {
        const uint64_t v = uint64_t(r) * 32 + lane;
        if (v < f.vecs) regs[r] = detail::xxh_load_vec(f, v);
      }
    }
    for (uint64_t k = 0; k <= f.tiles && f.tiles > 0; ++k) {
      if (k < f.tiles) {
#pragma unroll
        for (int r = 0; r < detail::kXxhLaneVecs; ++r) {
          const uint64_t v = k * detail::kXxhTileVecs + uint64_t(r) * 32 + lane;
          if (v < f.vecs) detail::xxh_ring_put(ring, v, regs[r]);
        }
      }
      __syncwarp();
      if (k + 1 < f.tiles) {
#pragma unroll
        for (int r = 0; r < detail::kXxhLaneVecs; ++r) {
          const uint64_t v = (k + 1) * detail::kXxhTileVecs + uint64_t(r) * 32 + lane;
          if (v < f.vecs) regs[r] = detail::xxh_load_vec(f, v);
        }
      }
      if (k > 0 && lane < 4) acc = detail::xxh_consume_tile(acc, ring, f, lane, k - 1);
      __syncwarp();
    }
    const uint64_t v2 = __shfl_sync(0xffffffffu, acc, 1);
    const uint64_t v3 = __shfl_sync(0xffffffffu, acc, 2);
    const uint64_t v4 = __shfl_sync(0xffffffffu, acc, 3);
    if (lane == 0) {
      const uint64_t h = detail::xxh_warp_finish(f, p, d.dst_len, acc, v2, v3, v4);
      if (static_cast<uint32_t>(h) != op.expected) {
        atomicAdd(result, 1u);
        atomicMin(result + 1, static_cast<uint32_t>(min(i, size_t(UINT32_MAX - 1))));
      }
    }
  }
}

/// Grid of the per-op kernels: enough CTAs per op for its bytes at ~16 bytes per thread.
dim3 per_op_grid(int n, uint64_t max_op_bytes) {
  if (max_op_bytes == 0) max_op_bytes = kDefaultMaxOpBytes;
  const uint64_t per_cta = uint64_t(kByteThreads) * 16;
  const uint64_t x = std::clamp<uint64_t>((max_op_bytes + per_cta - 1) / per_cta, 1, 4096);
  return dim3(static_cast<unsigned>(x), static_cast<unsigned>(std::min(n, kMaxGridY)), 1);
}

cudaError_t launch_unshuffle_kind(const ffi::GpuUnshuffleOp* d_ops, int n,
                                  const uint8_t* d_src_arena, uint8_t* d_dst_arena,
                                  cudaStream_t stream, uint64_t max_op_bytes,
                                  uint32_t kind_filter) {
  if (n < 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  unshuffle_kernel<<<per_op_grid(n, max_op_bytes), kByteThreads, 0, stream>>>(
      reinterpret_cast<const UnshuffleOpView*>(d_ops), n, d_src_arena, d_dst_arena,
      kind_filter);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_assemble(const ffi::GpuCopyOp* d_ops, int n_ops,
                            const uint64_t* d_op_voxel_prefix, uint64_t total_voxels,
                            const uint8_t* d_decoded, void* d_out, int out_dtype,
                            uint64_t sample_voxels, const uint32_t sample_shape[4],
                            cudaStream_t stream, const ffi::SampleTransform* d_transforms,
                            bool intensity) {
  if (n_ops < 0 || (out_dtype != kOutF32 && out_dtype != kOutBf16)) return cudaErrorInvalidValue;
  if (n_ops == 0 || total_voxels == 0) return cudaSuccess;
  const uint64_t tiles = (total_voxels + kAsmTile - 1) / kAsmTile;
  if (tiles > uint64_t(INT_MAX)) return cudaErrorInvalidValue;
  SampleGeom geom{};
  geom.sample_voxels = sample_voxels;
  for (int d = 0; d < 4; ++d) geom.shape[d] = sample_shape[d];
  const auto* ops = reinterpret_cast<const CopyOpView*>(d_ops);
  const auto* tfs = reinterpret_cast<const SampleTransformView*>(d_transforms);
  const dim3 grid(static_cast<unsigned>(tiles));
  const bool with = intensity && tfs != nullptr;
  auto launch = [&](auto* out, auto intensity_tag) {
    using OutT = std::remove_pointer_t<decltype(out)>;
    assemble_kernel<OutT, decltype(intensity_tag)::value><<<grid, kAsmThreads, 0, stream>>>(
        ops, n_ops, d_op_voxel_prefix, total_voxels, d_decoded, out, geom, tfs);
  };
  if (out_dtype == kOutF32) {
    auto* out = static_cast<float*>(d_out);
    with ? launch(out, std::true_type{}) : launch(out, std::false_type{});
  } else {
    auto* out = static_cast<__nv_bfloat16*>(d_out);
    with ? launch(out, std::true_type{}) : launch(out, std::false_type{});
  }
  return cudaGetLastError();
}

cudaError_t launch_byte_unshuffle(const ffi::GpuUnshuffleOp* d_ops, int n,
                                  const uint8_t* d_src_arena, uint8_t* d_dst_arena,
                                  cudaStream_t stream, uint64_t max_op_bytes) {
  return launch_unshuffle_kind(d_ops, n, d_src_arena, d_dst_arena, stream, max_op_bytes,
                               detail::kByteShuffle);
}

cudaError_t launch_bit_unshuffle(const ffi::GpuUnshuffleOp* d_ops, int n,
                                 const uint8_t* d_src_arena, uint8_t* d_dst_arena,
                                 cudaStream_t stream, uint64_t max_op_bytes) {
  return launch_unshuffle_kind(d_ops, n, d_src_arena, d_dst_arena, stream, max_op_bytes,
                               detail::kBitShuffle);
}

cudaError_t launch_unshuffle(const ffi::GpuUnshuffleOp* d_ops, int n,
                             const uint8_t* d_src_arena, uint8_t* d_dst_arena,
                             cudaStream_t stream, uint64_t max_op_bytes) {
  return launch_unshuffle_kind(d_ops, n, d_src_arena, d_dst_arena, stream, max_op_bytes, 0);
}

cudaError_t launch_decode_copy(const ffi::GpuDecodeOp* d_ops, int n, const uint8_t* d_staging,
                               uint8_t* d_arena, cudaStream_t stream, uint64_t max_op_bytes) {
  if (n < 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  decode_copy_kernel<<<per_op_grid(n, max_op_bytes), kByteThreads, 0, stream>>>(
      reinterpret_cast<const DecodeOpView*>(d_ops), n, d_staging, d_arena);
  return cudaGetLastError();
}

cudaError_t launch_decode_status_check(const int32_t* d_statuses, const size_t* d_actual,
                                       const size_t* d_expected, size_t n, uint32_t* d_result,
                                       cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const unsigned blocks = static_cast<unsigned>(std::min<size_t>((n + 255) / 256, 1024));
  decode_status_kernel<<<blocks, 256, 0, stream>>>(d_statuses, d_actual, d_expected, n, d_result);
  return cudaGetLastError();
}

cudaError_t launch_checksum_check(const ffi::GpuChecksumOp* d_ops, size_t n,
                                  const ffi::GpuDecodeOp* d_decode_ops, const uint8_t* d_arena,
                                  uint32_t* d_result, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  // A warp per op, up to 8192 CTAs (32768 warps, ~10x what an H200 holds at once); past
  // that the warps loop over the ops.
  constexpr size_t kWarps = kChecksumThreads / 32;
  const unsigned blocks = static_cast<unsigned>(std::min<size_t>((n + kWarps - 1) / kWarps, 8192));
  checksum_kernel<<<blocks, kChecksumThreads, 0, stream>>>(reinterpret_cast<const ChecksumOpView*>(d_ops), n,
                                              reinterpret_cast<const DecodeOpView*>(d_decode_ops),
                                              d_arena, d_result);
  return cudaGetLastError();
}

}  // namespace damacy::gpu
