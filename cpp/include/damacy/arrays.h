// Array-level helpers of the C++ API (no torch): facts about an array, example volumes.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace damacy {

/// Facts about a Zarr array.
struct ArrayInfo {
  std::string uri;
  std::vector<std::uint64_t> shape;
  /// The Zarr data type name ("uint16", "float32", ...).
  std::string data_type;
  /// The read unit: the inner chunk of a sharded array, else the chunk.
  std::vector<std::uint64_t> chunk_shape;
  /// Empty for an unsharded array.
  std::vector<std::uint64_t> shard_shape;
  bool index_at_start = false;
  /// The codec chain as stored in `zarr.json` (a JSON array).
  std::string codecs_json;
  std::vector<std::string> dimension_names;
  /// Stored objects and their bytes; 0 unless asked for (`usage`: lists the whole array).
  std::uint64_t files = 0;
  std::uint64_t bytes_stored = 0;
  /// Bytes of the whole array decoded.
  std::uint64_t bytes_decoded = 0;
};

/// Facts about the Zarr array at `uri`; `usage` also counts its stored objects and bytes
/// (lists the whole array). @throws NotFound, StorageError, InvalidArgument.
ArrayInfo array_info(std::string_view uri, bool usage = false);

/// The same as a JSON object (what Python's `damacy.array_info` returns).
std::string array_info_json(std::string_view uri, bool usage = false);

/// Writes a synthetic microscopy-like uint16 Zarr v3 array (smooth blobs plus noise) at
/// `path`. `codec`: "zstd" or "blosc-zstd"; an empty `shard_shape` means unsharded.
/// @throws InvalidArgument, StorageError.
void write_example_volume(std::string_view path, const std::vector<std::uint64_t>& shape,
                          const std::vector<std::uint64_t>& chunk_shape,
                          const std::vector<std::uint64_t>& shard_shape, std::string_view codec,
                          std::uint64_t seed);

/// What this build can do on the GPU, as a JSON object: {"cuda_built", "nvcomp_available",
/// "nvcomp_path", "nvcomp_version" (major*1000 + minor*100 + patch), "nvcomp_major" (6 or 5;
/// 0 when not loaded), "why"}. Loads nvCOMP once, searching the `:`-separated
/// folders in `search_path` (e.g. Python's sys.path) for the nvidia-libnvcomp-cu13 wheel.
std::string gpu_info_json(std::string_view search_path);

}  // namespace damacy
