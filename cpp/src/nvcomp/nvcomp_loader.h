// Private: nvCOMP found and bound at run time (dlopen), never linked, and compiled without
// nvCOMP's headers (the API shape is declared in nvcomp_api.h).
//
// Owns: one process-wide handle to libnvcomp (major 5 or 6, chosen at run time) and the few
// batched-decompression entry points the GPU decode path needs (zstd and LZ4). Callers see
// one interface whatever the major; the per-major differences (the temp-size entry point,
// the LZ4 options layout) stay in nvcomp_loader.cpp. Nothing here allocates device memory
// or synchronises; every call runs on the stream it is given.
//
// Where the library comes from, first hit wins; at each place libnvcomp.so.6 is tried before
// libnvcomp.so.5 (the newest major damacy knows first):
//   1. env DAMACY_NVCOMP_LIBRARY: a path to the .so (any major damacy supports), or a
//      folder holding libnvcomp.so.6 or libnvcomp.so.5. When set and unusable, nvCOMP stays
//      unavailable (no silent fallback to another copy).
//   2. the `nvidia-libnvcomp-cu13` wheel: for each folder given to `load` (the wheel's package
//      folder `nvidia/libnvcomp`, or `sys.path`-like site-packages folders), in that order,
//      tries <dir>/{lib64,lib}/libnvcomp.so.{6,5} and
//      <dir>/nvidia/libnvcomp/{lib64,lib}/libnvcomp.so.{6,5}. Folder order beats version
//      order: the first folder on sys.path wins, as for a Python import.
//   3. the loader's own search: dlopen("libnvcomp.so.6"), dlopen("libnvcomp.so.5"), then
//      dlopen("libnvcomp.so").
// A file is usable when nvcompGetProperties reports major 5 or 6 and every entry point of
// that major's table resolves; the major comes from nvcompGetProperties, not the file name.
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

#include "nvcomp/nvcomp_api.h"

namespace damacy::nvcomp {

/// Codec ids, equal to `GpuDecodeOp::codec` (0 = plain copy, not an nvCOMP codec).
enum class Codec : uint32_t { Zstd = 1, Lz4 = 2 };

/// nvCOMP's status codes (nvcompStatus_t: the codes both majors have share their numbers;
/// 6.x adds 22..24).
using Status = api::Status;

/// Minimum alignments of input, output and temp buffers (nvcompAlignmentRequirements_t).
using Alignments = api::AlignmentRequirements;

/// The majors this loader can bind, newest first (the search order of the file comment).
inline constexpr uint32_t kSupportedMajors[] = {6, 5};

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

/// The loaded library's major version (5 or 6), or 0 when unavailable.
uint32_t library_major();

/// Minimum alignments of input, output and temp buffers for `codec` (the planner aligns staged
/// and decoded chunk offsets to these). ErrorNotSupported when unavailable.
Status required_alignments(Codec codec, Alignments* out);

/// Temp bytes for one `batched_decompress` of `num_chunks` chunks, host-side and without a
/// sync (5.x: ...DecompressGetTempSizeAsync, which takes no stream; 6.x:
/// ...DecompressGetTempSize, given `stream`, which it documents as not enqueuing work).
/// Call it with the device current that the decompression will run on.
/// `max_total_uncompressed_bytes` is the sum of the chunks' output sizes.
Status decompress_temp_bytes(Codec codec, size_t num_chunks, size_t max_uncompressed_chunk_bytes,
                             size_t max_total_uncompressed_bytes, size_t* temp_bytes,
                             cudaStream_t stream);

/// One batched decompression on `stream` (nvcompBatched{Zstd,LZ4}DecompressAsync with the
/// default options: backend chosen by nvCOMP). All arrays are device-accessible, length `n`.
/// `d_actual` receives each chunk's decompressed size and `d_statuses` each chunk's status
/// (both required here, so the caller can check them). `d_temp` must be aligned per
/// `required_alignments` and hold `temp_bytes` from `decompress_temp_bytes`.
/// Returns the launch status (Status::Success when enqueued); per-chunk failures appear only
/// in `d_statuses`. ErrorNotSupported when unavailable or for an unknown codec.
/// nvCOMP documents corrupt input as undefined behaviour: only feed it bytes whose framing
/// was checked on the host.
Status batched_decompress(Codec codec, const void* const* d_src_ptrs, const size_t* d_src_bytes,
                          const size_t* d_dst_bytes_capacity, size_t* d_actual,
                          void* const* d_dst_ptrs, size_t n, void* d_temp, size_t temp_bytes,
                          Status* d_statuses, cudaStream_t stream);

/// nvCOMP's enumerator name, e.g. "nvcompErrorCannotDecompress" (for a code this file does
/// not know: nvcompGetStatusString where the library has it, else "nvcompError(unknown)").
const char* status_name(Status status);

/// The codec's name ("zstd", "lz4"), or "unknown".
const char* codec_name(Codec codec);

}  // namespace damacy::nvcomp
