// Private: nvCOMP found and bound at run time (dlopen), never linked.
//
// Owns: one process-wide handle to libnvcomp.so.5 and the few batched-decompression entry
// points the GPU decode path needs (zstd and LZ4). Nothing here allocates device memory or
// synchronises; every call runs on the stream it is given.
//
// Where the library comes from, first hit wins:
//   1. env DAMACY_NVCOMP_LIBRARY: a path to the .so, or a folder holding libnvcomp.so.5.
//      When set and unusable, nvCOMP stays unavailable (no silent fallback to another copy).
//   2. the `nvidia-libnvcomp-cu13` wheel: for each folder given to `load` (the wheel's package
//      folder `nvidia/libnvcomp`, or `sys.path`-like site-packages folders), tries
//      <dir>/{lib64,lib}/libnvcomp.so.5 and <dir>/nvidia/libnvcomp/{lib64,lib}/libnvcomp.so.5.
//   3. the loader's own search: dlopen("libnvcomp.so.5"), then dlopen("libnvcomp.so").
// The library must report major version 5 (the options structs below are 5.x layouts).
//
// Thread safety: every function may be called from any thread. Loading happens once (the
// first successful `load`/`available` wins; a failed attempt may be retried with other
// folders); the bound entry points are immutable afterwards.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "nvcomp/shared_types.h"

namespace damacy::nvcomp {

/// Codec ids, equal to `GpuDecodeOp::codec` (0 = plain copy, not an nvCOMP codec).
enum class Codec : uint32_t { Zstd = 1, Lz4 = 2 };

/// Loads nvCOMP if not loaded yet, searching `search_dirs` at step 2 (see the file comment).
/// Returns `available()`. Cheap once loaded (a mutex and a flag).
bool load(const std::vector<std::string>& search_dirs = {});

/// Same, with the folders as one string separated by ':' (like PATH or os.pathsep-joined
/// sys.path).
bool load_pathlist(const std::string& pathsep_joined);

/// Whether nvCOMP is loaded and usable; loads with the default search (steps 1 and 3) when no
/// load was attempted yet.
bool available();

/// Why nvCOMP is not available (every location tried and the dlopen/dlsym error), ending with
/// the fix; empty when available.
std::string why_unavailable();

/// The file the library was loaded from (as dlopen resolved it), or "" when unavailable.
std::string library_path();

/// The loaded library's version as major*1000 + minor*100 + patch (nvcompGetProperties), or 0.
uint32_t library_version();

/// Minimum alignments of input, output and temp buffers for `codec` (the planner aligns staged
/// and decoded chunk offsets to these). nvcompErrorNotSupported when unavailable.
nvcompStatus_t required_alignments(Codec codec, nvcompAlignmentRequirements_t* out);

/// Temp bytes for one `batched_decompress` of `num_chunks` chunks (GetTempSizeAsync: host-side,
/// no stream, no sync). `max_total_uncompressed_bytes` is the sum of the chunks' output sizes.
nvcompStatus_t decompress_temp_bytes(Codec codec, size_t num_chunks,
                                     size_t max_uncompressed_chunk_bytes,
                                     size_t max_total_uncompressed_bytes, size_t* temp_bytes);

/// One batched decompression on `stream` (nvcompBatched{Zstd,LZ4}DecompressAsync with the
/// default options: backend chosen by nvCOMP). All arrays are device-accessible, length `n`.
/// `d_actual` receives each chunk's decompressed size and `d_statuses` each chunk's status
/// (both required here, so the caller can check them). `d_temp` must be aligned per
/// `required_alignments` and hold `temp_bytes` from `decompress_temp_bytes`.
/// Returns the launch status (nvcompSuccess when enqueued); per-chunk failures appear only in
/// `d_statuses`. nvcompErrorNotSupported when unavailable or for an unknown codec.
/// nvCOMP documents corrupt input as undefined behaviour: only feed it bytes whose framing
/// was checked on the host.
nvcompStatus_t batched_decompress(Codec codec, const void* const* d_src_ptrs,
                                  const size_t* d_src_bytes,
                                  const size_t* d_dst_bytes_capacity, size_t* d_actual,
                                  void* const* d_dst_ptrs, size_t n, void* d_temp,
                                  size_t temp_bytes, nvcompStatus_t* d_statuses,
                                  cudaStream_t stream);

/// The enumerator's name, e.g. "nvcompErrorCannotDecompress".
const char* status_name(nvcompStatus_t status);

/// The codec's name ("zstd", "lz4"), or "unknown".
const char* codec_name(Codec codec);

}  // namespace damacy::nvcomp
