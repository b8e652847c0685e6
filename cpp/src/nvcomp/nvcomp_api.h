// Private: the shape of the part of nvCOMP's C API that damacy calls, declared here so that
// the build needs no nvCOMP headers (libnvcomp is dlopen'ed at run time, see nvcomp_loader.h).
//
// Everything is copied by hand from the headers of the `nvidia-libnvcomp-cu13` wheels
// (include/ under nvidia/libnvcomp/):
//   5.x: nvidia-libnvcomp-cu13==5.1.0.21 (nvcomp/shared_types.h, nvcomp.h, nvcomp/zstd.h,
//        nvcomp/lz4.h; NVCOMP_VER 5.1.0, build 21)
//   6.x: nvidia-libnvcomp-cu13==6.0.0.12 (the same four files; NVCOMP_VER 6.0.0, build 12)
// Names are ours (namespace damacy::nvcomp::api), so this header can sit next to the real
// ones without clashing; the C ABI (argument order, sizes, by-value structs) is theirs.
// Only the decompression side of zstd and LZ4 is declared.
//
// What differs between the majors, for the calls below:
//   - temp size: 5.x `nvcompBatched{Zstd,LZ4}DecompressGetTempSizeAsync(num_chunks,
//     max_chunk, opts, &temp, max_total)`; 6.x renames it `...DecompressGetTempSize` and
//     adds a trailing `cudaStream_t` (host-side; "does not enqueue asynchronous work").
//     The 5.x name is not exported by libnvcomp.so.6.
//   - LZ4 decompression options: 6.x adds `data_type` and `bitshuffle_mode` after
//     `sort_before_hw_decompress` (reserved shrinks 56 -> 48 bytes; still 64 bytes in all);
//     their defaults are zero (NVCOMP_TYPE_CHAR, NVCOMP_BITSHUFFLE_NONE).
//   - statuses: 6.x adds 22..24 (SubChunkCountTooLarge/TooSmall,
//     OutputBufferAlignmentTooSmall); 6.x exports `nvcompGetStatusString`.
//   - nvcompType_t: 6.x renumbers NVCOMP_TYPE_FLOAT16 (9 -> 10) and adds float types; damacy
//     only passes NVCOMP_TYPE_CHAR (0), which did not move.
//   - unchanged: nvcompGetProperties, nvcompProperties_t, nvcompAlignmentRequirements_t,
//     nvcompDecompressBackend_t, the zstd decompression options, the
//     `...DecompressGetRequiredAlignments` and `...DecompressAsync` signatures.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>  // cudaStream_t

namespace damacy::nvcomp::api {

/// nvcompStatus_t (nvcomp/shared_types.h, 5.x and 6.x). A C enum: int-sized, passed and
/// returned as int. Values 22..24 exist from 6.0 on; any int32 may come back.
enum class Status : int32_t {
  Success = 0,
  ErrorInvalidValue = 10,
  ErrorNotSupported = 11,
  ErrorCannotDecompress = 12,
  ErrorBadChecksum = 13,
  ErrorCannotVerifyChecksums = 14,
  ErrorOutputBufferTooSmall = 15,
  ErrorWrongHeaderLength = 16,
  ErrorAlignment = 17,
  ErrorChunkSizeTooLarge = 18,
  ErrorCannotCompress = 19,
  ErrorWrongInputLength = 20,
  ErrorBatchSizeTooLarge = 21,
  ErrorSubChunkCountTooLarge = 22,          // 6.x
  ErrorSubChunkCountTooSmall = 23,          // 6.x
  ErrorOutputBufferAlignmentTooSmall = 24,  // 6.x
  ErrorCudaError = 1000,
  ErrorInternal = 10000,
};

/// nvcompType_t (nvcomp/shared_types.h): only the value damacy passes (the same in 5.x and
/// 6.x; other values were renumbered in 6.0).
enum class DataType : int32_t { Char = 0 };

/// nvcompDecompressBackend_t (nvcomp/shared_types.h, 5.x and 6.x).
enum class DecompressBackend : int32_t { Default = 0, Hardware = 1, Cuda = 2 };

/// nvcompBitshuffleMode_t (nvcomp/shared_types.h, 6.x only).
enum class BitshuffleMode : int32_t { None = 0, MsbFirst = 1, LsbFirst = 2 };

/// nvcompProperties_t (nvcomp/shared_types.h, 5.x and 6.x). `version` is
/// major*1000 + minor*100 + patch (nvcomp/version.h MAKE_SEMANTIC_VERSION).
struct Properties {
  uint32_t version;
  uint32_t cudart_version;
};

/// nvcompAlignmentRequirements_t (nvcomp/shared_types.h, 5.x and 6.x).
struct AlignmentRequirements {
  size_t input;
  size_t output;
  size_t temp;
};

/// nvcompGetProperties (nvcomp.h, 5.x and 6.x): how the loader learns the major version.
using GetPropertiesFn = Status (*)(Properties* properties);

/// nvcompBatched{Zstd,LZ4}DecompressGetRequiredAlignments (nvcomp/{zstd,lz4}.h, the same in
/// 5.1.0 and 6.0.0 but for the options type `Opts` of the major).
template <class Opts>
using AlignFn = Status (*)(Opts decompress_opts, AlignmentRequirements* alignment_requirements);

/// nvcompBatched{Zstd,LZ4}DecompressAsync (nvcomp/{zstd,lz4}.h, the same in 5.1.0 and 6.0.0
/// but for the options type `Opts` of the major).
template <class Opts>
using DecompressFn = Status (*)(const void* const* device_compressed_chunk_ptrs,
                                const size_t* device_compressed_chunk_bytes,
                                const size_t* device_uncompressed_buffer_bytes,
                                size_t* device_uncompressed_chunk_bytes, size_t num_chunks,
                                void* const device_temp_ptr, size_t temp_bytes,
                                void* const* device_uncompressed_chunk_ptrs,
                                Opts decompress_opts, Status* device_statuses,
                                cudaStream_t stream);

namespace v5 {

/// nvcompBatchedZstdDecompressOpts_t (nvcomp/zstd.h 5.1.0).
struct ZstdDecompressOpts {
  DecompressBackend backend;
  char reserved[60];
};

/// nvcompBatchedLZ4DecompressOpts_t (nvcomp/lz4.h 5.1.0).
struct Lz4DecompressOpts {
  DecompressBackend backend;
  int sort_before_hw_decompress;
  char reserved[56];
};

/// nvcompBatched{Zstd,LZ4}DecompressGetTempSizeAsync (nvcomp/{zstd,lz4}.h 5.1.0).
template <class Opts>
using TempSizeFn = Status (*)(size_t num_chunks, size_t max_uncompressed_chunk_bytes,
                              Opts decompress_opts, size_t* temp_bytes,
                              size_t max_total_uncompressed_bytes);

}  // namespace v5

namespace v6 {

/// nvcompBatchedZstdDecompressOpts_t (nvcomp/zstd.h 6.0.0; unchanged from 5.1.0).
struct ZstdDecompressOpts {
  DecompressBackend backend;
  char reserved[60];
};

/// nvcompBatchedLZ4DecompressOpts_t (nvcomp/lz4.h 6.0.0).
struct Lz4DecompressOpts {
  DecompressBackend backend;
  int sort_before_hw_decompress;
  DataType data_type;              // new in 6.0: inverse-bitshuffle element type
  BitshuffleMode bitshuffle_mode;  // new in 6.0
  char reserved[48];
};

/// nvcompBatched{Zstd,LZ4}DecompressGetTempSize (nvcomp/{zstd,lz4}.h 6.0.0): the 5.x
/// ...GetTempSizeAsync renamed, with a trailing stream.
template <class Opts>
using TempSizeFn = Status (*)(size_t num_chunks, size_t max_uncompressed_chunk_bytes,
                              Opts decompress_opts, size_t* temp_bytes,
                              size_t max_total_uncompressed_bytes, cudaStream_t stream);

/// nvcompGetStatusString (nvcomp.h 6.0.0; not in 5.x).
using GetStatusStringFn = const char* (*)(Status status);

}  // namespace v6

// The layouts the C ABI passes by value (x86-64 / aarch64: structs over 16 bytes go in
// memory, so only the size and member offsets must match nvCOMP's).
static_assert(sizeof(Status) == 4 && sizeof(DecompressBackend) == 4 && sizeof(DataType) == 4 &&
              sizeof(BitshuffleMode) == 4);
static_assert(sizeof(Properties) == 8);
static_assert(sizeof(AlignmentRequirements) == 3 * sizeof(size_t));
static_assert(sizeof(v5::ZstdDecompressOpts) == 64 && sizeof(v5::Lz4DecompressOpts) == 64);
static_assert(sizeof(v6::ZstdDecompressOpts) == 64 && sizeof(v6::Lz4DecompressOpts) == 64);
static_assert(offsetof(v6::Lz4DecompressOpts, bitshuffle_mode) == 12 &&
              offsetof(v6::Lz4DecompressOpts, reserved) == 16);

/// The default options (nvcompBatched{Zstd,LZ4}DecompressDefaultOpts of each header): all
/// zero, i.e. backend DEFAULT (nvCOMP chooses), no HW sort, CHAR data, no bitshuffle.
template <class Opts>
constexpr Opts default_opts() {
  return Opts{};
}

}  // namespace damacy::nvcomp::api
